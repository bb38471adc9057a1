#!/usr/bin/env python3
"""Write the seed corpus for fuzz_transcode into a directory.

Seeds are fuzz inputs: one selector byte (see fuzz_transcode.c: bits 0-2
compressor, bit 6 64 KiB pages, bit 7 payload only), then a package stream.

* synthetic packages whose cpio archive matches the harness's fixed file
  table exactly (so a seed transcodes successfully and mutations start deep
  in the layout code): every compressor, newc and stripped (07070X) archives,
  with and without a prologue, single and concatenated compressed streams;
* a few small real packages from the shared corpus (their archives do not
  match the table, but they exercise the prologue framing and the decoders).

Only the standard library is needed; zstd seeds use the `zstd` command when
it is installed.  Usage: make_seeds.py OUTDIR [--corpus DIR] [--max-real N]
"""
import argparse
import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import struct
import subprocess
import sys

NONE, GZIP, BZIP2, XZ, LZMA, ZSTD = range(6)
COMPRESSOR_NUMBER = {"none": NONE, "gzip": GZIP, "bzip2": BZIP2, "xz": XZ,
                     "lzma": LZMA, "zstd": ZSTD, "(none)": GZIP}
PAYLOAD_ONLY = 0x80
BIG_PAGES = 0x40
TEE = 0x20
COPY_THROUGH = 0x10
BIG_SIZE = 5000


def big_content():
    """opt/f/big: the same generator as fuzz_transcode.c."""
    x = 12345
    out = bytearray(BIG_SIZE)
    for i in range(BIG_SIZE):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


# (file index in the harness's table, archive name, mode, nlink, content,
#  stripped content); archive order as rpm writes it
def entries():
    big = big_content()
    return [
        (1, "./opt/f", 0o040755, 2, b"", b""),
        (2, "./opt/f/a", 0o100644, 1, b"hello\n", b"hello\n"),
        (3, "./opt/f/dup", 0o100644, 1, b"hello\n", b"hello\n"),
        (4, "./opt/f/empty", 0o100644, 1, b"", b""),
        (5, "./opt/f/link", 0o100644, 2, b"", b""),     # hardlink: content on the last
        (6, "./opt/f/big", 0o100644, 2, big, big),
        (7, "./opt/f/nodigest", 0o100644, 1, b"0123456789", b"0123456789"),
        (0, "./opt/f/sym", 0o120777, 1, b"a", b"a"),
    ]


def pad4(n):
    return b"\0" * (-n % 4)


def newc_entry(ino, name, mode, nlink, data, offset):
    nameb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, 0x5f000000, len(data), 0, 0, 0, 0, len(nameb), 0]
    hdr = b"070701" + b"".join(b"%08x" % f for f in fields)
    out = hdr + nameb
    out += pad4(offset + len(out))
    out += data
    out += pad4(offset + len(out))
    return out


def newc_archive(trailing_zeros=0):
    out = b""
    for fx, name, mode, nlink, data, _ in entries():
        out += newc_entry(100 + fx, name, mode, nlink, data, len(out))
    out += newc_entry(0, "TRAILER!!!", 0, 1, b"", len(out))
    return out + b"\0" * trailing_zeros


def stripped_archive():
    out = b""
    for fx, _, _, _, _, data in entries():
        out += b"07070X" + b"%08x" % fx
        out += pad4(len(out))
        out += data
        out += pad4(len(out))
    out += b"07070X" + b"ffffffff"
    return out + pad4(len(out))


def header(entries_, data):
    index = b"".join(struct.pack(">iiii", *e) for e in entries_)
    return b"\x8e\xad\xe8\x01\0\0\0\0" + struct.pack(">II", len(entries_), len(data)) + index + data


def prologue():
    lead = bytearray(96)
    lead[0:4] = b"\xed\xab\xee\xdb"
    lead[4] = 3                       # major
    lead[10:16] = b"fuzzed"
    lead[78:80] = b"\x00\x05"         # RPMSIGTYPE_HEADERSIG
    sig = header([(1000, 4, 0, 1)], struct.pack(">I", 4242))     # SIZE
    sig += b"\0" * (-len(sig) % 8)
    main = header([(1000, 6, 0, 1), (1125, 6, 7, 1)], b"fuzzed\0zstd\0")
    return bytes(lead) + sig + main


def have_zstd():
    return shutil.which("zstd") is not None


def compress(kind, data):
    if kind == NONE:
        return data
    if kind == GZIP:
        return gzip.compress(data, mtime=0)
    if kind == BZIP2:
        return bz2.compress(data)
    if kind == XZ:
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    if kind == LZMA:
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == ZSTD:
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    raise ValueError(kind)


def synthetic_seeds():
    """{name: bytes}"""
    seeds = {}
    kinds = [NONE, GZIP, BZIP2, XZ, LZMA] + ([ZSTD] if have_zstd() else [])
    archives = {"newc": newc_archive(), "stripped": stripped_archive(),
                "newc-pad": newc_archive(trailing_zeros=508)}
    names = {NONE: "none", GZIP: "gzip", BZIP2: "bzip2", XZ: "xz", LZMA: "lzma", ZSTD: "zstd"}
    for kind in kinds:
        for aname, arch in archives.items():
            body = compress(kind, arch)
            seeds["syn-%s-%s" % (names[kind], aname)] = bytes([kind]) + prologue() + body
            seeds["syn-%s-%s-payload" % (names[kind], aname)] = bytes([kind | PAYLOAD_ONLY]) + body
        if kind not in (NONE, LZMA):
            # two concatenated streams (rpm's readers accept them)
            arch = archives["newc"]
            cut = len(arch) // 2
            body = compress(kind, arch[:cut]) + compress(kind, arch[cut:])
            seeds["syn-%s-2streams" % names[kind]] = bytes([kind | BIG_PAGES]) + prologue() + body
        body = compress(kind, archives["newc"])
        seeds["syn-%s-tee" % names[kind]] = bytes([kind | TEE]) + prologue() + body
    seeds["syn-copy-through"] = bytes([COPY_THROUGH]) + prologue() + archives["newc"]
    return seeds


def real_seeds(corpus, max_real):
    """Small packages of the shared corpus, with the selector of their compressor."""
    manifest = os.path.join(corpus, "MANIFEST.tsv")
    seeds = {}
    if not os.path.isfile(manifest):
        return seeds
    per_kind = {}
    with open(manifest) as f:
        next(f, None)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 2 or cols[1] not in COMPRESSOR_NUMBER:
                continue
            path = os.path.join(corpus, cols[0])
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            if size > 64 * 1024:
                continue
            per_kind.setdefault(cols[1], []).append((size, path))
    chosen = []
    for kind, items in sorted(per_kind.items()):
        items.sort()
        chosen += [(kind, p) for _, p in items[:max(1, max_real // max(1, len(per_kind)))]]
    for kind, path in chosen[:max_real]:
        with open(path, "rb") as f:
            data = f.read()
        seeds["real-" + os.path.basename(path)] = bytes([COMPRESSOR_NUMBER[kind]]) + data
    return seeds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--corpus", default=os.environ.get("RPMCOW_CORPUS", "/work/shared/corpus"))
    ap.add_argument("--max-real", type=int, default=12)
    args = ap.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    seeds = synthetic_seeds()
    seeds.update(real_seeds(args.corpus, args.max_real))
    for name, data in sorted(seeds.items()):
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(args.outdir, "%s-%s" % (name, digest)), "wb") as f:
            f.write(data)
    print("make_seeds: %d seeds in %s" % (len(seeds), args.outdir), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

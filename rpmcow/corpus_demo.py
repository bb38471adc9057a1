"""A short tour of the transcoder (``python -m rpmcow.corpus_demo [CORPUS]``).

Transcodes a handful of real packages from a corpus directory -- the
checkout's ``tests/corpus``, or ``$RPMCOW_CORPUS`` -- (every payload
compressor, hardlinks, duplicates, a source package), checks each result
against rpm's own extraction, and prints what happened.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import extents, transcode
from .errors import RpmcowError

PACKAGES = [
    "real/ruby-libs-2.7.0-1.fc32.x86_64.rpm",          # xz, many files
    "real/cyrus-imapd-2.4.17-9.fc22.x86_64.rpm",       # xz, large
    "real/mc-4.8.21-2.1.x86_64.rpm",                   # openSUSE build
    "real/autofs-5.0.7-28.fc19.i686.rpm",
    "rpm-testdata/hlinktest-1.0-1.noarch.rpm",         # hardlinks, duplicates
    "rpm-testdata/hello-2.0-1.x86_64.rpm",             # gzip
    "rpm-testdata/hello-1.0-1.src.rpm",                # source package
    "upstream-extents/edge-1.0-1.noarch.rpm",          # empty files, dups, ghost
]


def _mib(n):
    return "%.2f MiB" % (n / 1048576.0)


def _check_roundtrip(rpm_path, rpme_path):
    """Every regular file rpm2cpio extracts is in the extents file's table
    at the offset its digest names, byte for byte.  Returns files checked."""
    with tempfile.TemporaryDirectory() as tmp:
        # rpm2cpio's exit status is unreliable (Debian's 4.18 exits 1 after a
        # complete archive for some packages): cpio checks the archive
        cpio = subprocess.run(["rpm2cpio", str(rpm_path)], capture_output=True)
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=cpio.stdout,
                       cwd=tmp, check=True, capture_output=True)
        fd = os.open(rpme_path, os.O_RDONLY)
        try:
            sec = extents.read_sections(fd)
            checked = 0
            for dirpath, _, names in os.walk(tmp):
                for n in names:
                    p = os.path.join(dirpath, n)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    data = open(p, "rb").read()
                    algo = {16: "md5", 20: "sha1", 32: "sha256", 48: "sha384",
                            64: "sha512"}[sec.keysize]
                    off = sec.lookup(hashlib.new(algo, data).digest())
                    if off is None or os.pread(fd, len(data), off) != data:
                        raise RpmcowError("round trip failed for %s" % p)
                    checked += 1
            return checked
        finally:
            os.close(fd)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    where = argv[0] if argv else os.environ.get("RPMCOW_CORPUS")
    if not where:
        print("usage: python -m rpmcow.corpus_demo CORPUS_DIR (in a checkout: tests/corpus; "
              "or set RPMCOW_CORPUS)", file=sys.stderr)
        return 2
    corpus = Path(where)
    if not (corpus / "real").is_dir():
        print("demo: %s: not a package corpus (no real/ in it)" % corpus, file=sys.stderr)
        return 1
    print("rpmcow demo: transcoding real packages into extents files\n")
    row = "%-44s %-6s %6s %6s %6s %11s %11s %8s %6s"
    print(row % ("package", "comp", "files", "blobs", "dups", "rpm", "extents",
                 "time", "check"))
    with tempfile.TemporaryDirectory() as out:
        for rel in PACKAGES:
            src = corpus / rel
            if not src.exists():
                continue
            dst = os.path.join(out, src.name + ".rpme")
            t0 = time.perf_counter()
            try:
                r = transcode.transcode_path(str(src), dst)
            except RpmcowError as exc:
                print("%-44s error: %s" % (src.name[:44], exc))
                continue
            dt = time.perf_counter() - t0
            checked = _check_roundtrip(src, dst)
            print(row % (r.nevra[:44], r.compressor, r.files, r.blobs, r.dup_files,
                         _mib(r.input_len), _mib(r.output_len), "%.3fs" % dt,
                         "%d ok" % checked))
        print()
        last = os.path.join(out, "edge-1.0-1.noarch.rpm.rpme")
        if os.path.exists(last):
            print("$ rpmcow inspect edge-1.0-1.noarch.rpm.rpme")
            from . import inspect
            sys.stdout.write(inspect.format_report(inspect.inspect_path(last, with_table=True),
                                                   with_table=True))
    print("\nEvery regular file extracted by rpm2cpio was found in the extents file "
          "at the offset its digest names ('check').")
    return 0


if __name__ == "__main__":
    sys.exit(main())

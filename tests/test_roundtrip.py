"""The round-trip property of `rpmcow transcode`.

For every regular, non-%ghost file of a package's header that has a digest,
the extents file holds the file's content at ``s.lookup(digest)`` with the
header's file size -- byte for byte what ``rpm2cpio PKG | cpio -idm`` extracts.
Checked for the whole corpus, for hand-picked edge cases per compressor and
digest algorithm, for hypothesis-generated packages built with rpmbuild, and
(marked slow) for a > 4 GiB file, which rpm stores in the stripped "07070X"
cpio format that rpm2cpio refuses: there librpm's own archive reader is the
reference, compared by streaming digests.

Alongside, the layout invariants of the extents format
(shared/reference/extents-format.md): blobs page-aligned, densely packed in
archive order without overlap, zero padding between them, table sorted and
unique, key size = the file digest size, one blob per distinct content, S
right after the last blob, lead and headers kept byte for byte.
"""
import hashlib
import json
import os
import random
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import rpm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pkgbuild
from conftest import list_real_packages, list_testdata_packages, unbound
from pkgbuild import (COMPRESSORS, DIGEST_ALGOS, device, directory, empty,
                      fifo, generated, ghost, hardlink, regular, symlink)
from rpmcow import extents, transcode
from rpmcow.errors import RpmcowError, VerificationError

PAGE = os.sysconf("SC_PAGESIZE")
# packages of the corpus that must not transcode at all, and why
BROKEN = {"rpm-testdata/hello-2.0-1.x86_64-corrupted.rpm": "payload is corrupt (rpm's test case)"}
# packages rpm itself refuses at the default %_pkgverify_level (digest), so the
# transcoder must too -- their contents still round-trip with level "none"
REFUSED = {"real/hello-2.0-1.x86_64-signed.rpm":
           "malformed header signature: rpmkeys -K says BAD, rpm -i refuses it"}
# sizes around page and buffer boundaries
EDGE_SIZES = (0, 1, 2, 511, 4095, 4096, 4097, 8191, 8192, 8193, 65535, 65536, 65537)


# ---------------------------------------------------------------- helpers

def read_header(path):
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)
    fd = os.open(path, os.O_RDONLY)
    try:
        return ts.hdrFromFdno(fd)
    finally:
        os.close(fd)


def digest_size(h):
    """File digest size the header's FILEDIGESTALGO implies (MD5 if absent)."""
    return DIGEST_ALGOS[h[rpm.RPMTAG_FILEDIGESTALGO] or 1][1]


def hashlib_name(h):
    return DIGEST_ALGOS[h[rpm.RPMTAG_FILEDIGESTALGO] or 1][0]


def keyed_files(h):
    """Regular, non-ghost files with a (non-zero) digest: those with a blob."""
    out = []
    for f in rpm.files(h):
        if not stat.S_ISREG(f.mode) or f.fflags & rpm.RPMFILE_GHOST:
            continue
        if f.digest and f.digest.strip("0"):
            out.append(f)
    return out


def headers_end(path):
    """Offset just past the main header (lead, signature header + pad, header)."""
    with open(path, "rb") as fp:
        head = fp.read(96 + 16)
        sil, sdl = struct.unpack(">II", head[104:112])
        sig = 16 + 16 * sil + sdl
        hoff = 96 + sig + (-sig) % 8
        fp.seek(hoff)
        hh = fp.read(16)
        il, dl = struct.unpack(">II", hh[8:16])
        return hoff + 16 + 16 * il + dl


def rpm2cpio_cpio(pkg, cpio_args, cwd=None):
    """Run `rpm2cpio PKG | cpio ARGS`, checking both ends; cpio's stdout."""
    r2c = subprocess.Popen(["rpm2cpio", str(pkg)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        cp = subprocess.run(["cpio", *cpio_args], stdin=r2c.stdout, cwd=cwd,
                            capture_output=True, timeout=300)
    finally:
        r2c.stdout.close()
        r2c_err = r2c.stderr.read()
        r2c.stderr.close()
        r2c.wait(timeout=300)
    assert r2c.returncode == 0, "rpm2cpio failed: %s" % r2c_err.decode(errors="replace")
    assert cp.returncode == 0, "cpio failed: %s" % cp.stderr.decode(errors="replace")
    return cp.stdout


def extract_reference(pkg, dest):
    """What `rpm2cpio PKG | cpio -idm --no-absolute-filenames` extracts."""
    dest.mkdir()
    rpm2cpio_cpio(pkg, ["-idm", "--no-absolute-filenames", "--quiet"], cwd=dest)
    return dest


def extracted_path(dest, name):
    # binary packages: "/usr/bin/x" -> dest/usr/bin/x; source packages: "x.spec"
    return os.path.join(os.fsencode(str(dest)), os.fsencode(name).lstrip(b"/"))


def transcode_and_read(pkg, out, page_size=None, **kw):
    transcode.transcode_path(str(pkg), str(out), page_size=page_size, **kw)
    fd = os.open(out, os.O_RDONLY)
    try:
        return extents.read_sections(fd)
    finally:
        os.close(fd)


def check_layout(pkg, out, s, h, page=PAGE):
    """The extents-format invariants that do not need file contents."""
    files = rpm.files(h)
    keyed = keyed_files(h)
    digests = [d for d, _ in s.table]
    assert digests == sorted(set(digests)), "table is not sorted and unique"
    if len(files):
        assert s.keysize == digest_size(h), "key size does not match FILEDIGESTALGO"
    else:
        assert s.keysize in (0, digest_size(h))   # upstream writes 0 for no files at all
    assert all(len(d) == s.keysize for d in digests)

    size_of = {}
    for f in keyed:
        d = bytes.fromhex(f.digest)
        assert size_of.setdefault(d, f.size) == f.size, "one digest, two sizes: %s" % f.name
    assert set(digests) == set(size_of), "table digests != distinct digests of regular files"
    assert len(s.table) == len(size_of), "duplicate contents not stored once"

    # blobs: page-aligned, in order, packed densely, no overlap, zero padding
    hend = headers_end(pkg)
    with open(pkg, "rb") as a, open(out, "rb") as b:
        assert a.read(hend) == b.read(hend), "lead/signature/header not kept byte for byte"
    entries = sorted((off, size_of[d]) for d, off in s.table)
    fd = os.open(out, os.O_RDONLY)
    try:
        pos = hend
        for off, size in entries:
            assert off % page == 0, "blob offset %d not page aligned" % off
            assert off >= pos, "blob at %d overlaps what ends at %d" % (off, pos)
            assert off == pos + (-pos) % page, "gap before the blob at %d" % off
            assert os.pread(fd, off - pos, pos) == bytes(off - pos), "padding is not zeros"
            pos = off + size
        if entries:
            assert s.s_offset == pos, "S section does not follow the last blob"
        else:   # no blob: no padding either
            assert s.s_offset == hend, "padding without a blob after it"
    finally:
        os.close(fd)
    return keyed


def cpio_contents(pkg, h, dest):
    """{header name: bytes} of the regular files `rpm2cpio | cpio -idm` extracts."""
    extract_reference(pkg, dest)
    out = {}
    for f in rpm.files(h):
        p = extracted_path(dest, f.name)
        if stat.S_ISREG(f.mode) and os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as fp:
                out[f.name] = fp.read()
    # nothing extracted that the header does not list as a regular file
    extracted = set()
    for dirpath, _dirs, names in os.walk(os.fsencode(str(dest))):
        for n in names:
            p = os.path.join(dirpath, n)
            if stat.S_ISREG(os.lstat(p).st_mode):
                extracted.add(p)
    assert extracted == {extracted_path(dest, name) for name in out}
    return out


def librpm_archive(pkg, h, read=True):
    """Walk the payload with librpm's archive reader: ({header name: bytes} of
    the regular files (hardlink members get their set's content), [names of
    the regular files carrying content, in archive order]). The reference
    where rpm2cpio refuses (LONGFILESIZES, stripped cpio)."""
    out, links, order = {}, {}, []
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)
    fd = rpm.fd.open(str(pkg))
    try:
        ts.hdrFromFdno(fd)
        payload = rpm.fd.open(fd, flags=h[rpm.RPMTAG_PAYLOADCOMPRESSOR] or "gzip")
        archive = rpm.files(h).archive(payload)
        for f in archive:
            if not stat.S_ISREG(f.mode):
                continue
            if archive.hascontent():
                order.append(f.name)
                if read:
                    out[f.name] = archive.read()
            else:
                links[f.name] = [l.name for l in f.links]
        archive.close()
    finally:
        fd.close()
    for name, members in links.items():      # hardlink members without the content
        carriers = [m for m in members if m in out]
        if carriers:
            out[name] = out[carriers[0]]
    return out, order


def check_archive_order(s, keyed, order):
    """Blobs are laid out in the order their content first appears in the archive."""
    digest_of = {f.name: bytes.fromhex(f.digest) for f in keyed}
    seen, offsets = set(), []
    for name in order:
        d = digest_of.get(name)
        if d is not None and d not in seen:
            seen.add(d)
            offsets.append(s.lookup(d))
    assert seen == {d for d, _ in s.table}
    assert offsets == sorted(offsets), "blobs are not in archive order"


def check_roundtrip(pkg, tmp, expected=None, page_size=None, **transcode_kw):
    """Transcode `pkg` in directory `tmp` and compare with rpm's extraction
    (rpm2cpio | cpio; librpm's archive reader where rpm2cpio refuses).

    expected: optional {path: bytes} of what the package should contain (for
    packages we built ourselves), checked as well.
    page_size: passed to the transcoder (default: this machine's page size,
    4096 on x86_64 -- the offsets must then be multiples of 4096).
    transcode_kw: more transcode_path() arguments (e.g. level="none").
    Returns (sections, header).
    """
    tmp = Path(tmp)
    out = tmp / "out.rpme"
    h = read_header(pkg)
    s = transcode_and_read(pkg, out, page_size, **transcode_kw)
    if page_size is None:
        assert all(off % 4096 == 0 for _, off in s.table)
    keyed = check_layout(pkg, out, s, h, page_size or PAGE)
    if h[rpm.RPMTAG_LONGFILESIZES]:
        ref, order = librpm_archive(pkg, h)
    else:
        ref = cpio_contents(pkg, h, tmp / "ref")
        order = librpm_archive(pkg, h, read=False)[1]
    check_archive_order(s, keyed, order)

    fd = os.open(out, os.O_RDONLY)
    try:
        for f in keyed:
            off = s.lookup(bytes.fromhex(f.digest))
            assert off is not None, "%s: digest not in the table" % f.name
            blob = os.pread(fd, f.size, off)
            assert f.name in ref, "%s: rpm's extraction lacks it" % f.name
            assert len(ref[f.name]) == f.size, "%s: reference has the wrong size" % f.name
            assert blob == ref[f.name], "%s: extents content differs from rpm's" % f.name
            assert hashlib.new(hashlib_name(h), blob).hexdigest() == f.digest
            if expected is not None and f.name in expected:
                assert blob == expected[f.name], "%s: not the content we packaged" % f.name
    finally:
        os.close(fd)
    if expected is not None:
        assert {f.name for f in keyed} == set(expected), "header lists other files"
    return s, h


def expected_contents(files):
    """{package path: bytes} for the regular files of a FileSpec list."""
    by_path = {f.path: f for f in files}
    out = {}
    for f in files:
        if f.ghost:
            continue
        if f.kind == "file":
            out[f.path] = f.content()
        elif f.kind == "hardlink":
            out[f.path] = by_path[f.target].content()
    return out


# ---------------------------------------------------------------- the corpus

def _corpus_id(path):
    # pytest calls ids with a placeholder when the list is empty (no corpus)
    return "%s/%s" % (path.parent.name, path.name) if isinstance(path, Path) else str(path)


CORPUS = [p for p in list_real_packages() + list_testdata_packages()
          if _corpus_id(p) not in BROKEN]


def refused_here(pkg):
    """Why this host's rpm refuses pkg at %_pkgverify_level digest (rpmkeys'
    items, judged by that level), or None.  rpm 6 checks neither the header
    SHA1 nor the MD5 by default (%_pkgverify_flags 0x20100): a package with
    no other digest is refused there."""
    from rpmcow import verify
    r = subprocess.run(["rpmkeys", "-Kv", str(pkg)], capture_output=True, text=True)
    return verify.policy_failure(verify.parse_items(r.stdout), "digest")


@pytest.mark.parametrize("pkg", CORPUS, ids=_corpus_id)
def test_corpus_roundtrip(pkg, tmp_path):
    if _corpus_id(pkg) in REFUSED or refused_here(pkg):
        with pytest.raises(VerificationError):
            transcode.transcode_path(str(pkg), str(tmp_path / "refused.rpme"))
        assert list(tmp_path.iterdir()) == [], "a refused transcode left files behind"
        check_roundtrip(pkg, tmp_path, level="none")
    else:
        check_roundtrip(pkg, tmp_path)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_corpus_broken_package_does_not_transcode(name, corpus_dir, tmp_path):
    pkg = corpus_dir / name
    if not pkg.exists():
        pytest.skip("%s not in the corpus" % name)
    for level in (None, "none"):
        with pytest.raises(RpmcowError):
            transcode.transcode_path(str(pkg), str(tmp_path / "out.rpme"), level=level)
        assert list(tmp_path.iterdir()) == [], "a failed transcode left files behind"


def test_corpus_is_there(corpus_dir, real_packages, testdata_packages):
    assert len(real_packages) > 100 and len(testdata_packages) > 10
    ids = {_corpus_id(p) for p in real_packages + testdata_packages}
    assert ids >= set(BROKEN) | set(REFUSED)


def test_v3_package_with_legacy_md5_transcodes_at_digest_level(corpus_dir, tmp_path,
                                                               monkeypatch):
    """rpm 4.18 installs a v3 package whose only digest is the legacy
    header+payload MD5 at %_pkgverify_level digest (rpmkeys -K: "MD5 digest:
    OK", exit 0; rpm -i succeeds), so the transcoder must take it too."""
    pkg = corpus_dir / "rpm-testdata" / "hello-1.0-1.x86_64.rpm-v3"
    # where the host checks the MD5: rpm 4 by default; rpm 6 turns it off
    # (%_pkgverify_flags 0x20100) and refuses the package (test_corpus_roundtrip)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_pkgverify_flags 0\n")
    monkeypatch.setenv("HOME", str(home))
    r = subprocess.run(["rpmkeys", "-Kv", str(pkg)], capture_output=True, text=True)
    assert r.returncode == 0 and "MD5 digest: OK" in r.stdout, r.stdout
    check_roundtrip(pkg, tmp_path, level="digest")


# ---------------------------------------------------------------- hand-picked edge cases

def _rand(size, seed):
    return random.Random("%d/%s" % (size, seed)).randbytes(size)


def edge_files():
    files = [directory("/opt/edge"), directory("/opt/edge/sub", mode=0o700)]
    for size in EDGE_SIZES:
        files.append(regular("/opt/edge/r%05d" % size, _rand(size, "a")))
        files.append(regular("/opt/edge/z%05d" % size, bytes(size)))
    files += [
        # duplicates: same content under other names, modes and directories
        regular("/opt/edge/sub/dup-r04097", _rand(4097, "a"), mode=0o755),
        regular("/opt/edge/sub/dup-z08192", bytes(8192)),
        empty("/opt/edge/sub/empty1"),
        empty("/opt/edge/sub/empty2", mode=0o600),
        # a hardlink set whose members sort before and after other files
        regular("/opt/edge/m-link", _rand(4096, "hl"), mode=0o755),
        hardlink("/opt/edge/a-link", "/opt/edge/m-link"),
        hardlink("/opt/edge/sub/z-link", "/opt/edge/m-link"),
        # a hardlink set sharing content with a plain file
        regular("/opt/edge/hl2", _rand(65537, "a")),
        hardlink("/opt/edge/hl2b", "/opt/edge/hl2"),
        # an empty hardlink set
        empty("/opt/edge/hl-empty"),
        hardlink("/opt/edge/hl-empty2", "/opt/edge/hl-empty"),
        symlink("/opt/edge/s-rel", "r04096"),
        symlink("/opt/edge/s-abs", "/opt/edge/r00001"),
        symlink("/opt/edge/s-dangling", "nowhere/at/all"),
        symlink("/opt/edge/s-utf8", "t\u00e4rget-\u00fcn\u00efc\u00f6de"),
        fifo("/opt/edge/fifo"),
        device("/opt/edge/null", "c", 1, 3),
        device("/opt/edge/disk", "b", 8, 0, mode=0o600),
        ghost("/opt/edge/ghost-missing"),
        ghost("/opt/edge/ghost-present", data=_rand(5000, "g")),
        pkgbuild.config("/etc/edge.conf", b"key = value\n"),
        pkgbuild.config("/etc/edge-plain.conf", _rand(4097, "a"), noreplace=False),
        regular("/opt/edge/with space", b"spaces survive\n"),
        regular("/opt/edge/\u00fcn\u00efc\u00f6de", b"utf-8 names survive\n"),
        regular("/opt/edge/setuid", b"#!/bin/sh\n", mode=0o4755),
        generated("/opt/edge/generated", lambda: (bytes([i]) * 3000 for i in range(40))),
        # hardlink sets with a %ghost member (rpm leaves ghosts out of the set)
        regular("/opt/edge/gl-a", _rand(3000, "gl")),
        hardlink("/opt/edge/gl-b", "/opt/edge/gl-a", ghost=True),
        hardlink("/opt/edge/gl-c", "/opt/edge/gl-a"),
        regular("/opt/edge/gl2-a", _rand(3001, "gl")),
        hardlink("/opt/edge/gl2-z", "/opt/edge/gl2-a", ghost=True),
        # content around the transcoder's 1 MiB payload buffer, cpio headers
        # straddling it, and a deep, long path
        regular("/opt/edge/mib-1", _text((1 << 20) - 1, 1)),
        regular("/opt/edge/mib-2", _text((1 << 20) + 1, 2)),
        regular("/opt/edge/mib-3", _text((1 << 20) - 110 - 20, 3)),
        regular("/opt/edge/" + "/".join(["d%02d-%s" % (i, "x" * 20) for i in range(12)])
                + "/deep", b"deep\n"),
    ]
    return files


def _text(size, seed):
    line = b"%d: the quick brown fox jumps over the lazy dog\n" % seed
    return (line * (size // len(line) + 1))[:size]


@pytest.mark.parametrize("compressor,algo", [
    ("zstd", 8), ("xz", 8), ("gzip", 2), ("bzip2", 9), ("lzma", 1), ("none", 10),
    ("zstd", 1), ("gzip", 9), ("zstd", 11),
    # multi-threaded compressors (xz: several blocks), zstd long mode
    ("w19T2.zstdio", 8), ("w19L.zstdio", 8), ("w6T2.xzdio", 8),
])
def test_edge_cases_roundtrip(compressor, algo, pkgbuilder, tmp_path):
    files = edge_files()
    pkg = pkgbuilder.build("edge", files, compressor=compressor, digest_algo=algo,
                           level={"zstd": 10, "xz": 6, "lzma": 6}.get(compressor),
                           sections="%post\n/bin/true\n")
    h = read_header(pkg)
    assert h[rpm.RPMTAG_PAYLOADCOMPRESSOR] == pkgbuild.header_compressor(compressor)
    assert (h[rpm.RPMTAG_FILEDIGESTALGO] or 1) == algo
    s, h = check_roundtrip(pkg, tmp_path, expected_contents(files))
    # the file set really has the shape we meant
    distinct = {f.digest for f in keyed_files(h)}
    assert len(s.table) == len(distinct) < len(keyed_files(h))
    by_name = {f.name: f for f in rpm.files(h)}
    assert by_name["/opt/edge/ghost-present"].fflags & rpm.RPMFILE_GHOST
    assert by_name["/opt/edge/a-link"].nlink == 3


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_pkgbuild_payload_tags(compressor, pkgbuilder):
    """What tests/pkgbuild.py documents about rpm 4.18's payload tags."""
    pkg = pkgbuilder.build("tags", [regular("/opt/t/a", b"a\n")], compressor=compressor,
                           digest_algo=1)
    h = read_header(pkg)
    assert h[rpm.RPMTAG_PAYLOADCOMPRESSOR] == pkgbuild.HEADER_COMPRESSOR[compressor]
    level = pkgbuild.DEFAULT_LEVEL[compressor]
    assert h[rpm.RPMTAG_PAYLOADFLAGS] == ("" if level is None else str(level))
    assert h[rpm.RPMTAG_FILEDIGESTALGO] is None     # MD5: no tag


@pytest.fixture(scope="module")
def edge_package(pkgbuilder):
    return pkgbuilder.build("edgeshared", edge_files(), compressor="zstd", level=3)


@pytest.mark.parametrize("page_size", [512, 4096, 16384, 65536])
def test_edge_cases_roundtrip_other_page_sizes(page_size, edge_package, tmp_path):
    s, _ = check_roundtrip(edge_package, tmp_path, expected_contents(edge_files()),
                           page_size=page_size)
    assert all(off % page_size == 0 for _, off in s.table)


def test_archive_names_without_dot_prefix(pkgbuilder, tmp_path):
    """%_noPayloadPrefix: archive members named "/usr/..." instead of "./usr/..."."""
    files = edge_files()
    # a v4 package: v6 packages (rpm 6's default) have no names in their
    # archive; and rpm 6's rpm2cpio writes names of its own: the listing
    # is of the package's own (gzip) payload
    pkg = pkgbuilder.build("noprefix", files, compressor="gzip", level=1,
                           defines={"_noPayloadPrefix": "1", "_rpmformat": "4"})
    import gzip
    payload = gzip.decompress(pkg.read_bytes()[headers_end(pkg):])
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=payload, capture_output=True,
                             check=True, timeout=300).stdout.splitlines()
    assert listing and all(n.startswith(b"/") for n in listing)
    check_roundtrip(pkg, tmp_path, expected_contents(files))


def test_many_files_roundtrip(pkgbuilder, tmp_path):
    files = [regular("/opt/many/d%02d/f%04d" % (i % 37, i), b"%d\n" % (i % 300) * (i % 7))
             for i in range(1500)]
    pkg = pkgbuilder.build("many", files, compressor="gzip", level=1)
    s, _ = check_roundtrip(pkg, tmp_path, expected_contents(files))
    assert len(s.table) == len({f.content() for f in files})


def test_cli_matches_python_api(edge_package, rpmcow_cli, tmp_path):
    pkg = edge_package
    s = transcode_and_read(pkg, tmp_path / "api.rpme")
    r = subprocess.run([*rpmcow_cli, "transcode", str(pkg), "-o", str(tmp_path / "cli.rpme"),
                        "-q"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert unbound((tmp_path / "cli.rpme").read_bytes()) == \
        unbound((tmp_path / "api.rpme").read_bytes())       # the record binds the file
    r = subprocess.run([*rpmcow_cli, "inspect", str(tmp_path / "cli.rpme"), "--json"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["table"]["keysize"] == s.keysize
    assert [(bytes.fromhex(e["digest"]), e["offset"]) for e in report["table"]["entries"]] \
        == s.table


def test_package_without_files_roundtrip(pkgbuilder, tmp_path):
    pkg = pkgbuilder.build("nofiles", [])
    s, h = check_roundtrip(pkg, tmp_path)
    assert s.table == []


def test_package_with_only_empty_files(pkgbuilder, tmp_path):
    files = [empty("/opt/e/a"), empty("/opt/e/b"), directory("/opt/e")]
    pkg = pkgbuilder.build("onlyempty", files)
    s, h = check_roundtrip(pkg, tmp_path, expected_contents(files))
    assert len(s.table) == 1


# ---------------------------------------------------------------- generated packages

CONTENT_KINDS = ("random", "zeros", "text")


def make_content(size, kind, seed):
    if kind == "zeros":
        return bytes(size)
    if kind == "text":
        line = b"line %d of a compressible file\n" % seed
        return (line * (size // len(line) + 1))[:size]
    return _rand(size, seed)


contents = st.tuples(
    st.one_of(st.sampled_from(EDGE_SIZES + (12289, 100000)), st.integers(0, 20000)),
    st.sampled_from(CONTENT_KINDS),
    st.integers(0, 2),     # few seeds: equal contents (duplicates) come up often
)
names = st.text(alphabet="abcxyz019._-", min_size=1, max_size=8)
subdirs = st.sampled_from(["", "a/", "a/b/", "zz/"])
modes = st.sampled_from([0o644, 0o755, 0o600, 0o444, 0o4755])
entries = st.one_of(
    st.tuples(st.just("file"), contents, modes, st.sampled_from([None, None, "noreplace"])),
    st.tuples(st.just("empty")),
    st.tuples(st.just("symlink"), names),
    st.tuples(st.just("hardlink"), contents, modes,
              st.lists(st.tuples(subdirs, st.sampled_from([False] * 4 + [True])),  # ghost?
                       min_size=1, max_size=3)),
    st.tuples(st.just("ghost"), st.one_of(st.none(), contents)),
    st.tuples(st.just("dir")),
)


@st.composite
def packages(draw):
    files = []
    spec = draw(st.lists(st.tuples(entries, subdirs, names), max_size=12))
    for i, (entry, sub, name) in enumerate(spec):
        path = "/opt/gen/%s%s-%d" % (sub, name, i)
        kind = entry[0]
        if kind == "file":
            _, c, mode, conf = entry
            files.append(regular(path, make_content(*c), mode=mode, config=conf))
        elif kind == "empty":
            files.append(empty(path))
        elif kind == "symlink":
            files.append(symlink(path, entry[1]))
        elif kind == "hardlink":
            _, c, mode, link_dirs = entry
            files.append(regular(path, make_content(*c), mode=mode))
            for j, (d, is_ghost) in enumerate(link_dirs):
                files.append(hardlink("/opt/gen/%s%s-%d-l%d" % (d, name, i, j), path,
                                      ghost=is_ghost))
        elif kind == "ghost":
            data = None if entry[1] is None else make_content(*entry[1])
            files.append(ghost(path, data=data))
        else:
            files.append(directory(path))
    compressor = draw(st.sampled_from(COMPRESSORS))
    algo = draw(st.sampled_from(sorted(DIGEST_ALGOS)))
    return files, compressor, algo


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(packages())
def test_generated_packages_roundtrip(pkgbuilder, example):
    files, compressor, algo = example
    work = pkgbuilder.workdir("gen")
    try:
        # fast levels: the property does not depend on the level
        level = {"zstd": 3, "xz": 1, "lzma": 1}.get(compressor)
        pkg = pkgbuild.build_rpm(work / "build", "gen", "1", "1", files,
                                 compressor=compressor, level=level, digest_algo=algo)
        check = work / "check"
        check.mkdir()
        try:
            check_roundtrip(pkg, check, expected_contents(files))
        except AssertionError as exc:
            raise AssertionError("%s\ncompressor=%s digest_algo=%d files:\n%s"
                                 % (exc, compressor, algo, pkgbuild.manifest(files))) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- > 4 GiB: stripped cpio

def _stream_digest(read, algo, chunk=1 << 20):
    h = hashlib.new(algo)
    while True:
        b = read(chunk)
        if not b:
            return h.hexdigest()
        h.update(b)


@pytest.mark.slow
def test_file_over_4gib_roundtrip(pkgbuilder, tmp_path):
    """A 4 GiB + 1 byte file (sparse in the build root): rpm writes LONGFILESIZES
    and the stripped 07070X cpio format, which rpm2cpio cannot convert, so the
    reference is librpm's archive reader; contents are compared by streaming
    SHA-256, never held in memory."""
    big = (1 << 32) + 1
    files = [
        directory("/opt/big"),
        regular("/opt/big/huge", hole=big - 1, data=b"\x01"),
        regular("/opt/big/small", b"small file after the huge one\n"),
        regular("/opt/big/a-small-dup", b"small file after the huge one\n"),
        empty("/opt/big/empty"),
        symlink("/opt/big/link", "huge"),
        # what the stripped format gets from the header instead of the archive:
        # symlink target length in bytes, hardlink members without content, ghosts
        symlink("/opt/big/link-utf8", "h\u00fcge-\u00e4"),
        regular("/opt/big/hl-a", _rand(5000, "big")),
        hardlink("/opt/big/hl-b", "/opt/big/hl-a"),
        hardlink("/opt/big/hl-g", "/opt/big/hl-a", ghost=True),
        hardlink("/opt/big/hl-z", "/opt/big/hl-a"),
        empty("/opt/big/hl-empty"),
        hardlink("/opt/big/hl-empty2", "/opt/big/hl-empty"),
        ghost("/opt/big/ghost", data=b"not in the payload"),
        fifo("/opt/big/fifo"),
        regular("/opt/big/z-last", _rand(4097, "big")),
    ]
    expected = expected_contents(files)
    pkg = pkgbuilder.build("bigfile", files, compressor="zstd", level=1, digest_algo=8)
    out = tmp_path / "big.rpme"
    try:
        h = read_header(pkg)
        assert h[rpm.RPMTAG_LONGFILESIZES], "rpm did not use LONGFILESIZES"
        fd = rpm.fd.open(str(pkg))
        ts = rpm.TransactionSet()
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)
        ts.hdrFromFdno(fd)
        payload = rpm.fd.open(fd, flags=h[rpm.RPMTAG_PAYLOADCOMPRESSOR])
        assert payload.read(6) == b"07070X", "payload is not in the stripped cpio format"
        payload.close()
        fd.close()

        # reference: librpm's own reading of the payload
        ref = {}
        fd = rpm.fd.open(str(pkg))
        ts.hdrFromFdno(fd)
        payload = rpm.fd.open(fd, flags=h[rpm.RPMTAG_PAYLOADCOMPRESSOR])
        archive = rpm.files(h).archive(payload)
        links, order = {}, []
        for f in archive:
            if stat.S_ISREG(f.mode) and archive.hascontent():
                order.append(f.name)
                ref[f.name] = _stream_digest(archive.read, "sha256")
            elif stat.S_ISREG(f.mode):
                links[f.name] = [l.name for l in f.links]
        archive.close()
        fd.close()
        for name, members in links.items():
            ref[name] = next(ref[m] for m in members if m in ref)
        assert set(ref) == set(expected)

        s = transcode_and_read(pkg, out)
        keyed = check_layout(pkg, out, s, h)
        assert {f.name for f in keyed} == set(expected)
        check_archive_order(s, keyed, order)
        huge_off = None
        with open(out, "rb") as fp:
            for f in keyed:
                off = s.lookup(bytes.fromhex(f.digest))
                assert off is not None, f.name
                fp.seek(off)
                left = f.size

                def read(n):
                    nonlocal left
                    b = fp.read(min(n, left))
                    left -= len(b)
                    return b
                got = _stream_digest(read, "sha256")
                assert left == 0, "%s: extents file ends inside the blob" % f.name
                assert got == f.digest, "%s: blob does not match the header digest" % f.name
                assert got == ref[f.name], "%s: blob differs from librpm's reading" % f.name
                if f.size < (1 << 20):
                    fp.seek(off)
                    assert fp.read(f.size) == expected[f.name], f.name
                if f.name == "/opt/big/huge":
                    huge_off = off
                    assert f.size == big
        assert huge_off is not None
        assert s.s_offset >= huge_off + big
    finally:
        if out.exists():
            out.unlink()


# ---- every file's content against its header digest ------------------------
# The sink hashes files two at a time when a batch of the layout's work holds
# them whole, one lane for those that span batches (large files); the
# decompressing thread hashes files itself while the sink is behind.  A
# changed byte must be caught on every path, and named.  The payload is uncompressed, so
# the byte can be changed in place; --verify-level none keeps the payload
# digest out of it: only the file digest can notice.

@pytest.fixture(scope="module", params=[8, 10], ids=["sha256", "sha512"])
def content_package(pkgbuilder, request):
    """SHA-256 file digests are hashed ahead on lanes (on CPUs with the SHA
    extensions); SHA-512 ones go through OpenSSL, one file at a time."""
    files = [regular("/opt/c/small%03d" % i, _rand(700 + 37 * i, i)) for i in range(300)]
    files.insert(150, regular("/opt/c/large", _rand(3 << 20, 999)))
    files.append(regular("/opt/c/zlast", _rand(5000, 1000)))
    return pkgbuilder.build("content", files, compressor="none",
                            digest_algo=request.param), files


@pytest.mark.parametrize("hasher", ["sink", "reader"])
@pytest.mark.parametrize("victim", ["/opt/c/small120", "/opt/c/large", "/opt/c/zlast",
                                    "/opt/c/small000"])
def test_changed_file_content_is_caught(victim, hasher, content_package, tmp_path,
                                        request):
    """hasher: who hashes the files -- the sink, or the decompressing thread
    (which takes files over while the sink is behind); each forced here
    through the C core's setter (no environment variable reaches it)."""
    from rpmcow import native
    native.force_hasher(hasher)
    request.addfinalizer(lambda: native.force_hasher(None))
    pkg, files = content_package
    data = bytearray(pkg.read_bytes())
    content = next(f.data for f in files if f.path == victim)
    at = data.index(content, headers_end(pkg))
    data[at + len(content) // 2] ^= 0x40
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.rpme"
    with pytest.raises(RpmcowError, match="file %s: content does not match its header "
                       "digest" % victim):
        transcode.transcode_path(str(bad), str(out), level="none")
    assert not out.exists()
    # unchanged, the same package transcodes
    transcode.transcode_path(str(pkg), str(out), level="none")
    assert out.exists()

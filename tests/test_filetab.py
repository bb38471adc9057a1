"""The C file table (csrc/filetab.c) against librpm's own view of the files.

For every corpus package, what rc_ftable_build reads from the main header's
file tags must agree with ``rpm.files(h)`` (librpm's rpmfiles): archive
names, sizes, kinds, digests, symlink targets and hardlink sets; and the
archive order must be the order of the real payload (``rpm2cpio | cpio -t``).
Headers librpm refuses never reach the table; damaged ones that it accepts
are the fuzzer's business (tests/fuzz).
"""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import corpus_path
import rpm

from rpmcow import native, package
from rpmcow.errors import RpmcowError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = corpus_path()
S_IFMT, S_IFREG, S_IFDIR, S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000


def _packages():
    return sorted(p for d in ("real", "rpm-testdata") for p in (CORPUS / d).glob("*.rpm*"))


def _load(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        pro = native.Input(fd, []).read_prologue()
    finally:
        os.close(fd)
    return pro, package.load_header(pro.data)


def _table(path):
    """(C file table, librpm header) of a package, or skip where librpm
    refuses the header (the table is never built for those)."""
    try:
        pro, h = _load(path)
    except RpmcowError:
        pytest.skip("librpm refuses this header")
    return native.FileTable(pro.main_header), h


def _enc(text):
    return text.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("path", _packages(), ids=lambda p: p.name)
def test_table_agrees_with_librpm(path):
    t, h = _table(path)
    files = list(rpm.files(h))
    assert t.count == len(files)
    ghost = rpm.RPMFILE_GHOST
    sets = {}
    for i, f in enumerate(files):
        assert t.paths[i] == _enc(f.name).lstrip(b"/"), i
        assert t.sizes[i] == f.size
        mode = f.mode & S_IFMT
        is_ghost = bool(f.fflags & ghost)
        kind = (t.KIND_GHOST if is_ghost else t.KIND_REG if mode == S_IFREG else
                t.KIND_DIR if mode == S_IFDIR else t.KIND_LINK if mode == S_IFLNK else
                t.KIND_OTHER)
        assert t.kinds[i] == kind, f.name
        keyed = mode == S_IFREG and not is_ghost and f.digest and f.digest.strip("0")
        assert t.digests[i] == (bytes.fromhex(f.digest) if keyed else b""), f.name
        assert bool(t.flags[i] & t.KEYED) == bool(keyed)
        assert t.linktos[i] == (_enc(f.linkto) if mode == S_IFLNK else b"")
        if kind == t.KIND_REG and len(f.links) > 1:
            sets.setdefault(frozenset(_enc(x.name) for x in f.links), []).append(i)
    # hardlink sets: content travels with the last member only
    for members in sets.values():
        assert [bool(t.flags[i] & t.NOCONTENT) for i in members] == \
            [True] * (len(members) - 1) + [False]
    # the same content is one group
    by_digest = {}
    for i, d in enumerate(t.digests):
        if d:
            assert by_digest.setdefault(d, t.groups[i]) == t.groups[i]
    assert len(by_digest) == t.ngroups
    assert t.group_digest() == sorted(by_digest, key=by_digest.get)


@pytest.mark.parametrize("path", [p for p in _packages() if not p.name.endswith(".src.rpm")
                                  and "corrupted" not in p.name], ids=lambda p: p.name)
def test_archive_order_is_the_payloads(path):
    t, _ = _table(path)
    r = subprocess.run("rpm2cpio '%s' | cpio -t --quiet" % path, shell=True,
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("rpm2cpio cannot read it: %s" % r.stderr.decode(errors="replace")[-200:])
    names = [n[2:] if n.startswith(b"./") else n.lstrip(b"/") for n in r.stdout.splitlines()]
    order = [t.paths[fx] for fx in t.archive_order()]
    # old payloads may carry %ghost entries, which the table leaves out
    ghosts = {t.paths[i] for i in range(t.count) if t.kinds[i] == t.KIND_GHOST}
    assert [n for n in names if n not in ghosts] == order


def test_bad_headers_give_one_line_errors():
    pro, _ = _load(CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64.rpm")
    hdr = bytearray(pro.main_header)
    for cut in (0, 8, 15, 16, 100, len(hdr) // 2, len(hdr) - 1):
        with pytest.raises(RpmcowError) as exc:
            native.FileTable(bytes(hdr[:cut]))
        assert "\n" not in str(exc.value) and str(exc.value)
    # an index entry pointing outside the data store
    bad = bytearray(hdr)
    il = int.from_bytes(bad[8:12], "big")
    for k in range(il):
        e = 16 + 16 * k
        if int.from_bytes(bad[e:e + 4], "big") == 1117:          # BASENAMES
            bad[e + 8:e + 12] = (0x7FFFFFF0).to_bytes(4, "big")
    with pytest.raises(RpmcowError, match="outside the header"):
        native.FileTable(bytes(bad))


def _string_spans(hdr, tag):
    """[(start, end)] of each string of a string-array tag in a raw main
    header (end: its terminating NUL)."""
    il = int.from_bytes(hdr[8:12], "big")
    store = 16 + 16 * il
    for k in range(il):
        e = 16 + 16 * k
        if int.from_bytes(hdr[e:e + 4], "big") == tag:
            spans, at = [], store + int.from_bytes(hdr[e + 8:e + 12], "big")
            for _ in range(int.from_bytes(hdr[e + 12:e + 16], "big")):
                end = hdr.index(0, at)
                spans.append((at, end))
                at = end + 1
            return spans
    raise AssertionError("no tag %d in the header" % tag)


def _same_digest_prefixes(hdr, prefix):
    """The main header with every file digest's first hex digits replaced by
    `prefix` (same lengths: the header stays valid)."""
    hdr = bytearray(hdr)
    for at, end in _string_spans(hdr, rpm.RPMTAG_FILEDIGESTS):
        if end - at > len(prefix):
            hdr[at:at + len(prefix)] = prefix
    return bytes(hdr)


class _Placed:
    """A layout result that placed every group, at offsets 4096 * group."""
    def __init__(self, ngroups):
        self.group_offsets = native.ffi.new("uint64_t[]", [4096 * g for g in range(ngroups)])


@pytest.mark.parametrize("prefix", [b"", b"0123456789abcdef", b"0123456789abcdef0123"],
                         ids=["as-is", "8-equal-bytes", "10-equal-bytes"])
def test_t_entries_sorted_by_whole_digest(prefix):
    """The T section lists every placed group once, by digest, with its
    offset -- also where digests agree in the first 8 bytes the sort keys on."""
    pro, _ = _load(CORPUS / "real" / "ruby-libs-2.7.0-1.fc32.x86_64.rpm")
    t = native.FileTable(_same_digest_prefixes(pro.main_header, prefix))
    assert t.ngroups > 10
    n, raw = t.t_entries(_Placed(t.ngroups))
    size = t.keysize + 8
    entries = [(raw[i * size:i * size + t.keysize],
                int.from_bytes(raw[i * size + t.keysize:(i + 1) * size], "little"))
               for i in range(n)]
    groups = t.group_digest()
    assert n == t.ngroups
    assert entries == sorted((d, 4096 * g) for g, d in enumerate(groups))
    if prefix:
        assert all(d.hex().startswith(prefix.decode()) for d, _ in entries)


def _swapped_basenames(hdr):
    """The main header with two files' basenames of equal length swapped, so
    that its file list is no longer sorted by path (rpm's always is)."""
    hdr = bytearray(hdr)
    spans = _string_spans(hdr, rpm.RPMTAG_BASENAMES)
    for (a, b), (c, d) in zip(spans, spans[1:]):
        if b - a == d - c and hdr[a:b] != hdr[c:d]:
            hdr[a:b], hdr[c:d] = hdr[c:d], hdr[a:b]
            return bytes(hdr)
    raise AssertionError("no two neighbouring basenames of equal length")


@pytest.mark.parametrize("reorder", [False, True], ids=["rpm-order", "out-of-order"])
def test_names_sorted_for_the_cpio_lookup(reorder):
    """The cpio lookup bisects the names: sorted, each mapped to its file --
    whether the header lists them in order (the sort is skipped) or not."""
    pro, _ = _load(CORPUS / "real" / "ruby-libs-2.7.0-1.fc32.x86_64.rpm")
    hdr = _swapped_basenames(pro.main_header) if reorder else bytes(pro.main_header)
    t = native.FileTable(hdr)
    paths = t.paths
    assert (paths == sorted(paths)) is not reorder
    ft = t.c_filetab
    names = [native.ffi.string(ft.names[i]) for i in range(t.count)]
    assert names == sorted(paths)
    assert [paths[ft.name_fx[i]] for i in range(t.count)] == names

"""Regressions of the C layout found by the fuzzer (tests/fuzz/crashes/), as
packages through the public API.

``crash-regular-file-as-directory-entry``: the layout returned success for an
archive whose entry for a regular file of the header was a directory (with
the file's bytes): take_entry() (csrc/layout.c) skipped the content as a
directory's, the other hardlink member came empty, and the extents file had
no blob for either.  ``crash-hardlink-set-without-content``: the same with
every member an empty regular entry.  Either way the transcoder must refuse
the package (it never reports success for an extents file that lacks the
content of a regular file of the header).

The package is rpm's hlinktest (uncompressed cpio; every file has the same
content: /foo/copyllo alone, /foo/aaaa + /foo/zzzz and four /foo/hello*
hardlinked, the content on the last member of each set).  The payload is
edited, so its payload digest no longer matches: these run with
``--verify-level none`` (level="none"), where only the transcoder's own
checks stand between the archive and the output -- as for a package without
a payload digest.  Helpers: tests/test_bad_input.py.
"""
import struct

import pytest

from test_bad_input import (CORPUS, archive, assert_clean_failure, assert_outcome,
                            command, cpio_entries, package, run, sections, set_field,
                            strip_header_digests, transcode_isolated)

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(),
                                reason="package corpus not found at %s" % CORPUS)

S_IFMT, S_IFREG, S_IFDIR = 0o170000, 0o100000, 0o040000


def _carriers(entries):
    """The regular-file entries that carry content."""
    return [e for e in entries if (e.fields[1] & S_IFMT) == S_IFREG and e.size > 0]


def _edited(edit):
    """The hardlink package with its archive edited by edit(arch, entries)."""
    prologue, arch, compress = archive("hardlink")
    new = edit(arch, cpio_entries(arch))
    assert new != arch
    return prologue + compress(new)


def _as_directories(names=None):
    """Content-carrying entries (those named, else all) given a directory's
    mode; their size and bytes stay (as in the fuzzer's input)."""
    def edit(arch, entries):
        for e in _carriers(entries):
            if names is None or e.name in names:
                arch = set_field(arch, e, "mode", S_IFDIR | 0o755)
        return arch
    return _edited(edit)


def _emptied(names=None):
    """Content-carrying entries (those named, else all) as empty regular
    files: filesize 0 and their bytes cut out."""
    def edit(arch, entries):
        for e in reversed(_carriers(entries)):      # from the end: offsets stay valid
            if names is None or e.name in names:
                arch = set_field(arch, e, "filesize", 0)
                arch = arch[:e.data_off] + arch[e.end:]
        return arch
    return _edited(edit)


def _refused(data, expect):
    o = transcode_isolated(data, level="none")
    assert_outcome(o, data, must_fail=True, what=expect)
    assert expect in o.msg, o.msg
    return o.msg


def test_unedited_package_transcodes():
    """The package itself, at the same level: hardlink members whose content
    travels with the last one are fine."""
    data = package("hardlink")[0]
    o = transcode_isolated(data, level="none")
    assert_outcome(o, data, what="hlinktest as it is")
    assert o.kind == "ok", o


def test_regular_files_as_directory_entries():
    """The fuzzer's input, as a package: every entry with content has a
    directory's mode -- before the fix: success, and no blob at all."""
    _refused(_as_directories(), "is not a regular file, the header says it is")


def test_last_hardlink_member_as_directory_entry():
    """Only /foo/zzzz (last of aaaa + zzzz) as a directory: its content
    would have come from /foo/copyllo's identical blob, never checked."""
    _refused(_as_directories({b"./foo/zzzz"}),
             "archive entry /foo/zzzz is not a regular file, the header says it is")


def test_hardlink_sets_without_content():
    """Every entry empty: an empty entry for a non-empty file was taken for a
    hardlink member whose content comes with another."""
    _refused(_emptied(), "has 0 bytes, the header says 29")


def test_file_outside_a_hardlink_set_empty():
    """/foo/copyllo (no hardlinks) empty: its content is not somewhere else,
    even if an identical file's blob would have stood in for it."""
    _refused(_emptied({b"./foo/copyllo"}),
             "archive entry /foo/copyllo has 0 bytes, the header says 29")


def _other_digest(data, fx, digit=b"f"):
    """data (header digests renamed away) with file fx's FILEDIGESTS entry
    starting with another hex digit."""
    data = bytearray(strip_header_digests(data))
    s = sections(data)
    store = s.sig_pad_end + 16 + 16 * s.hdr_il
    for i in range(s.hdr_il):
        e = s.sig_pad_end + 16 + 16 * i
        tag, typ, off, count = struct.unpack(">IIII", data[e:e + 16])
        if tag == 1035:                        # RPMTAG_FILEDIGESTS, a string array
            p = store + off
            for _ in range(fx):
                p = data.index(b"\0", p) + 1
            assert data[p:p + 1] != digit
            data[p:p + 1] = digit
            return bytes(data)
    raise AssertionError("no FILEDIGESTS")


def test_hardlink_member_with_a_digest_of_its_own():
    """/foo/aaaa (index 1; content with /foo/zzzz) given another digest in
    the header: nothing in the archive carries content for it, and the
    layout's last check (every file with a digest has a blob) says so."""
    data = _other_digest(package("hardlink")[0], 1)
    _refused(data, "payload carries no content for /foo/aaaa")


def test_cli_refuses_with_one_line(tmp_path):
    """The CLI: exit 1, one line, nothing at the output path."""
    src = tmp_path / "in.rpm"
    src.write_bytes(_as_directories())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run(command("rpmcow") + ["transcode", "--verify-level", "none", str(src), "-o",
                                    str(out_dir / "pkg.rpme")])
    msg = assert_clean_failure(proc, "rpmcow")
    assert "is not a regular file, the header says it is" in msg, msg
    assert list(out_dir.iterdir()) == []

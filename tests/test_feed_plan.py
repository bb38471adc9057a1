"""The feed's table, made in C (csrc/feed.c, rc_feed_plan): what rpm is fed
for each file of a real package, checked against the same table worked out
in Python from the file table and the T section -- and refused where the
extents file does not hold a file's content."""
import os
import re

import pytest

from conftest import corpus_path
from rpmcow import extents, feeder, native, transcode
from rpmcow.errors import BadExtentsError

CORPUS = corpus_path()
PACKAGES = [
    "rpm-testdata/hlinktest-1.0-1.noarch.rpm",      # hard links: content on one member
    "rpm-testdata/hello-2.0-1.x86_64.rpm",
    "real/cyrus-imapd-2.4.17-9.fc22.x86_64.rpm",    # hundreds of files, symlinks
    "real/autofs-5.0.7-28.fc19.i686.rpm",
]


@pytest.fixture(scope="module", params=PACKAGES)
def extents_file(request, tmp_path_factory):
    src = CORPUS / request.param
    if not src.exists():
        pytest.skip("%s is not in the corpus" % request.param)
    out = tmp_path_factory.mktemp("plan") / (src.name + ".rpme")
    transcode.transcode_path(str(src), str(out), level="none")
    return str(out)


def _open(path):
    fd = os.open(path, os.O_RDONLY)
    return fd


def _python_plan(feed):
    """The table as the feeder described it in Python before it was C."""
    ft, sec = feed.package.files, feed.sections
    limit = sec.s_offset if sec.version >= 2 else None
    out = []
    for fx, (kind, size, flags) in enumerate(zip(ft.kinds, ft.sizes, ft.flags)):
        if kind == ft.KIND_REG and size and not flags & ft.NOCONTENT:
            off = sec.lookup(ft.digests[fx])
            assert flags & ft.KEYED and off is not None
            assert limit is None or off + size <= limit
            out.append((native.FEED_REG, size, off, b""))
        elif kind == ft.KIND_LINK:
            link = ft.linktos[fx]
            out.append((native.FEED_LINK, len(link), 0, link))
        else:
            out.append((native.FEED_NONE, 0, 0, b""))
    return out


def test_plan_matches_the_file_table(extents_file):
    fd = _open(extents_file)
    try:
        feed = feeder.PackageFeed(fd, extents_file)
        files, order = feed.plan()
        want = _python_plan(feed)
        assert files == want
        assert order == feed.package.files.archive_order()
        pos = start = 0
        for fx in order:
            start = (pos + 3) & ~3
            pos = start + 16 + want[fx][1]
        assert feed.gate_at == start
        assert feed.last == (order[-1] if order else None)
        biggest = max([s for k, s, _, _ in want if k == native.FEED_REG] or [0])
        assert feed.clones(biggest) and not feed.clones(biggest + 1)
    finally:
        os.close(fd)


def _feed_with(extents_file, change):
    fd = _open(extents_file)
    try:
        sec = extents.read_sections(fd)
        change(sec)
        sec._index = None
        return feeder.PackageFeed(fd, extents_file, sections=sec)
    finally:
        os.close(fd)


def _regular_files(extents_file):
    fd = _open(extents_file)
    try:
        feed = feeder.PackageFeed(fd, extents_file)
        return [(fx, f) for fx, f in enumerate(feed.plan()[0]) if f[0] == native.FEED_REG], \
            feed.package.files
    finally:
        os.close(fd)


def test_a_file_whose_blob_is_missing_is_refused(extents_file):
    regs, ft = _regular_files(extents_file)
    fx, (_, _, _, _) = regs[-1]
    digest = ft.digests[fx]
    entry = len(digest) + 8

    def drop(sec):
        raw = sec.t_raw
        keep = [raw[i:i + entry] for i in range(0, len(raw), entry)
                if raw[i:i + len(digest)] != digest]
        assert len(keep) == len(raw) // entry - 1
        sec.t_raw = b"".join(keep)
    # named: the first file (by index) whose content that was -- another may share it
    first = next(i for i, _ in regs if ft.digests[i] == digest)
    path = ft.paths[first].decode()
    with pytest.raises(BadExtentsError, match="has no content for /%s$" % re.escape(path)):
        _feed_with(extents_file, drop)


def test_a_blob_past_the_blobs_is_refused(extents_file):
    regs, ft = _regular_files(extents_file)
    end = max(off + size for _, (_, size, off, _) in regs)

    def shrink(sec):
        assert sec.version >= 2
        sec.s_offset = end - 1
    with pytest.raises(BadExtentsError, match="has no content for /"):
        _feed_with(extents_file, shrink)


def test_a_table_of_another_digest_size_is_refused(extents_file):
    def other_keysize(sec):
        sec.keysize = 20 if sec.keysize != 20 else 32
    with pytest.raises(BadExtentsError, match="has no content for /"):
        _feed_with(extents_file, other_keysize)

"""What the feed (csrc/feed.c) gives rpm, decoded: every file's bytes where
they belong -- read from the extents file in spans, with the kernel asked
for what comes next -- and, for xz, the whole blocks of every regular file
as LZMA2 chunks of zeros (csrc/xzzeros.c), checked with liblzma itself
(Python's lzma module) against the gzip feed of the same table, whose
stored blocks are plainly the bytes."""
import lzma
import os
import random
import zlib

import pytest

from pkgbuild import directory, hardlink, regular
from rpmcow import feeder, native, transcode
from rpmcow._core import ffi, lib

RAW_LZMA2 = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]


def uncompressed_chunk(data, reset_dictionary):
    return bytes([1 if reset_dictionary else 2, (len(data) - 1) >> 8,
                  (len(data) - 1) & 0xFF]) + data


def zero_chunk(n):
    buf = ffi.new("uint8_t[]", 1 << 16)
    size = lib.rc_xz_zeros(buf, len(buf), n)
    return bytes(ffi.buffer(buf, size))


@pytest.mark.parametrize("n", [547, 548, 549, 550, 819, 820, 821, 4096, 4097, 12288,
                               65536 + 3, 1 << 20, (1 << 21) - 1, 1 << 21])
def test_an_lzma_chunk_of_zeros_decodes_to_exactly_n_zeros(n):
    chunk = zero_chunk(n)
    assert len(chunk) < 400
    # after data that is not zeros, and before more: the chunk depends on neither
    stream = uncompressed_chunk(b"\xffdata\xff", True) + chunk + \
        uncompressed_chunk(b"tail", False) + chunk + b"\x00"
    out = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=RAW_LZMA2).decompress(stream)
    assert out == b"\xffdata\xff" + bytes(n) + b"tail" + bytes(n)


@pytest.mark.parametrize("n", [0, 1, 546, (1 << 21) + 1])
def test_no_chunk_for_what_one_chunk_cannot_hold(n):
    assert zero_chunk(n) == b""


def test_a_chunk_that_would_not_fit_is_not_written():
    buf = ffi.new("uint8_t[]", 16)
    assert lib.rc_xz_zeros(buf, len(buf), 1 << 20) == 0


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


# whole blocks from one to beyond one chunk (2 MiB), with and without a tail
SIZES = [4096, 4096 + 1, 3 * 4096 + 100, 100000, (2 << 20) - 1, 2 << 20, (2 << 20) + 4096,
         (2 << 20) + 4095, 5 << 20]


@pytest.fixture(scope="module")
def xz_extents(pkgbuilder, tmp_path_factory):
    files = [directory("/opt/xzf")]
    files += [regular("/opt/xzf/f%02d" % i, pattern(n, i)) for i, n in enumerate(SIZES)]
    files.append(regular("/opt/xzf/small", b"small\n"))
    pkg = pkgbuilder.build("xzfeed", files, compressor="xz")
    out = tmp_path_factory.mktemp("xzfeed") / "xzfeed.rpme"
    transcode.transcode_path(str(pkg), str(out), level="none")
    return str(out)


def _feed(extents_file, compressor, tmp_path):
    """The payload stream (after the prologue) the feed writes for rpm."""
    fd = os.open(extents_file, os.O_RDONLY)
    out = tmp_path / ("feed." + compressor)
    try:
        feed = feeder.PackageFeed(fd, extents_file)
        assert feed.package.compressor == "xz"
        with open(out, "wb") as f:
            native.feed_write(fd, compressor, 4096, b"", feed._table, f.fileno())
    finally:
        os.close(fd)
    return out.read_bytes()


def test_the_xz_feed_sends_whole_blocks_as_lzma_chunks_of_zeros(xz_extents, tmp_path):
    xz = _feed(xz_extents, "xz", tmp_path)
    gz = _feed(xz_extents, "gzip", tmp_path)
    archive = zlib.decompress(gz, wbits=31)         # stored blocks: the bytes as they are
    # liblzma checks the container (block, index, footer) and every chunk
    assert lzma.decompress(xz, format=lzma.FORMAT_XZ) == archive
    zeros = sum(n - n % 4096 for n in SIZES)
    assert archive.count(bytes(4096)) >= zeros // 4096
    # the zeros crossed the pipe as a few hundred bytes a chunk, not as zeros
    assert len(xz) < len(archive) - zeros + 64 * 1024, (len(xz), len(archive), zeros)


# Pieces the feed reads: runs of small files whose blobs follow each other
# (one read), copies whose blob lies before the current span, a hard link,
# files of whole blocks only (nothing read), and files larger than a read
# (1 MiB) between them, so that the next small file is far away.
def content_files():
    files = [directory("/opt/span")]
    small = [pattern(1 + (i * 37) % 4000, 1000 + i) for i in range(300)]
    files += [regular("/opt/span/a%03d" % i, d) for i, d in enumerate(small)]
    files.append(regular("/opt/span/big1", pattern(3 * (1 << 20) + 123, 7)))
    files += [regular("/opt/span/b%03d" % i, pattern(100 + i, 2000 + i)) for i in range(50)]
    files += [regular("/opt/span/c%03d" % i, small[i * 7]) for i in range(20)]   # copies
    files.append(regular("/opt/span/blocks", pattern(8192, 8)))
    files.append(regular("/opt/span/big2", pattern((1 << 20) + 4096 * 3, 9)))
    files.append(hardlink("/opt/span/link-a005", "/opt/span/a005"))
    files += [regular("/opt/span/d%03d" % i, pattern(4096 + i, 3000 + i)) for i in range(30)]
    return files


@pytest.fixture(scope="module")
def span_extents(pkgbuilder, tmp_path_factory):
    files = content_files()
    pkg = pkgbuilder.build("feedspan", files, compressor="zstd")
    out = tmp_path_factory.mktemp("feedspan") / "feedspan.rpme"
    transcode.transcode_path(str(pkg), str(out), level="none")
    data = {f.path: f.data for f in files if f.kind == "file"}
    data["/opt/span/link-a005"] = data["/opt/span/a005"]
    return str(out), data


def _read_calls():
    """read(2)-family calls this thread has made (the kernel's count)."""
    with open("/proc/thread-self/io") as f:
        return int(next(line for line in f if line.startswith("syscr:")).split()[1])


def _fed_members(extents_file, blk, tmp_path, reads=None):
    """{path: bytes} of the regular files' members in the gzip feed at
    block size blk; reads: a list that gets the number of read calls the
    feed made."""
    fd = os.open(extents_file, os.O_RDONLY)
    out = tmp_path / ("feed-%d" % blk)
    try:
        feed = feeder.PackageFeed(fd, extents_file)
        table, order = feed.plan()
        paths = feed.package.files.paths
        with open(out, "wb") as f:
            before = _read_calls()
            native.feed_write(fd, "gzip", blk, b"", feed._table, f.fileno())
            if reads is not None:
                reads.append(_read_calls() - before)
    finally:
        os.close(fd)
    archive = zlib.decompress(out.read_bytes(), wbits=31)
    pos, members = 0, {}
    for fx in order:
        pos += -pos % 4
        assert archive[pos:pos + 14] == b"07070X%08x" % fx
        pos += 14
        pos += -pos % 4
        kind, size = table[fx][0], table[fx][1]
        if kind == native.FEED_REG:
            members["/" + paths[fx].decode()] = archive[pos:pos + size]
        pos += size if kind in (native.FEED_REG, native.FEED_LINK) else 0
    pos += -pos % 4
    assert archive[pos:pos + 6] == b"070701" and b"TRAILER!!!" in archive[pos:]
    return members


@pytest.mark.parametrize("blk", [0, 4096, 16384])
def test_every_file_is_fed_its_own_bytes(span_extents, blk, tmp_path):
    extents_file, data = span_extents
    members = _fed_members(extents_file, blk, tmp_path)
    # one member of the hard-linked pair carries the content
    assert len(members) == len(data) - 1
    for path, fed in members.items():
        want = data[path]
        head = len(want) - len(want) % blk if blk and len(want) >= blk else 0
        assert fed == bytes(head) + want[head:], path


def test_the_feed_reads_pieces_that_follow_each_other_at_once(span_extents, tmp_path):
    """Each read takes the extents file's I/O lock, which the plugin's
    clones hold exclusively: one read per file made the feed wait behind
    clones (and the disk) once per file."""
    extents_file, data = span_extents
    reads = []
    members = _fed_members(extents_file, 4096, tmp_path, reads)
    pieces = sum(1 for d in members.values() if len(d) % 4096)
    assert pieces >= 300
    assert reads[0] < pieces // 20, (reads[0], pieces)

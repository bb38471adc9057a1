"""The xz feed's zeros (csrc/xzzeros.c, csrc/feed.c): the whole blocks of
every regular file go to rpm as LZMA2 chunks of zeros, not as uncompressed
chunks -- checked with liblzma itself (Python's lzma module), against the
gzip feed of the same table, whose stored blocks are plainly the bytes."""
import lzma
import os
import random
import zlib

import pytest

from pkgbuild import directory, regular
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

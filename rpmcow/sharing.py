"""Which bytes of a file share their blocks with another file (FIEMAP's
"shared" flag), as ``rpmcow cache`` judges extents files and stored tails.

XFS releases the blocks of a removed file in the background (its inode
inactivation is deferred, kernel 5.19 and later): right after ``rm -rf`` of
a root, or ``dnf remove``, the blocks its files shared still count as
shared for a while -- 99 of 100 tails cloned and unlinked just before still
did, measured on loop XFS.  ``settle`` waits for those releases first, so
that a clean right after a removal removes what it made unused.  btrfs
accounts for removals at once (0 of 100)."""
import fcntl
import os
import struct

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
_FM_HEAD = struct.Struct("=QQIIII")
_FM_EXT = struct.Struct("=QQQQQI12x")

# XFS_IOC_FREE_EOFBLOCKS: _IOR('X', 58, struct xfs_fs_eofblocks) (128
# bytes: version 1, no filter).  Besides trimming speculative preallocation
# past the end of files, it flushes XFS's queue of inodes to inactivate and
# waits for it (xfs_blockgc_free_space -> xfs_inodegc_flush).  Root only.
XFS_IOC_FREE_EOFBLOCKS = (2 << 30) | (128 << 16) | (ord("X") << 8) | 58
_EOFBLOCKS = struct.Struct("=IIIIIIQ96x")
XFS_EOFBLOCKS_VERSION = 1


def settle(fd):
    """Let the filesystem of fd (any file or directory on it) finish
    releasing the files removed so far.  Best effort: a filesystem that
    releases at once, or a caller that may not ask, is left as it is."""
    buf = bytearray(_EOFBLOCKS.pack(XFS_EOFBLOCKS_VERSION, 0, 0, 0, 0, 0, 0))
    try:
        fcntl.ioctl(fd, XFS_IOC_FREE_EOFBLOCKS, buf)
    except OSError:
        pass


def settle_path(path):
    """settle, on the filesystem of the directory `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        settle(fd)
    finally:
        os.close(fd)


def shared_bytes(fd):
    """Bytes of the file at fd in extents shared with another file (FIEMAP);
    0 where the filesystem cannot say."""
    total, start, batch = 0, 0, 128
    while True:
        buf = bytearray(_FM_HEAD.pack(start, (1 << 64) - 1 - start, 0, 0, batch, 0)
                        + bytes(_FM_EXT.size * batch))
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        except OSError:
            return total
        mapped = _FM_HEAD.unpack_from(buf)[3]
        last, end = False, start
        for i in range(mapped):
            logical, _phys, length, _r1, _r2, flags = _FM_EXT.unpack_from(
                buf, _FM_HEAD.size + i * _FM_EXT.size)
            if flags & FIEMAP_EXTENT_SHARED:
                total += length
            last = last or bool(flags & FIEMAP_EXTENT_LAST)
            end = logical + length
        if mapped == 0 or last:
            return total
        start = end

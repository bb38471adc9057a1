"""A private copy of a package, so that what is judged is what is installed.

A file that someone else can write (its owner, a group, anyone holding a
writable descriptor) may change between the moment rpmcow checks it and the
moment rpm or the cow plugin reads it.  ``take`` gives a descriptor on an
anonymous file -- no name in any directory, mode 0600, owned by this process's
user -- holding the file's bytes as they were at one instant; every later
step (rpmkeys, the header parse, the blob check, the feed, the plugin's
clones) reads that descriptor and nothing else.

On a filesystem that clones (XFS with reflink=1, btrfs) the snapshot is a
reflink of the whole file: metadata only, and the plugin's clones from it
share the same blocks.  Elsewhere the bytes are copied, which only files
that others could change need (``private``).
"""
import errno
import fcntl
import os
import stat

FICLONE = 0x40049409

CLONED, COPIED = "cloned", "copied"


class Snapshot:
    """fd: the descriptor to read (the snapshot's, or the original's where
    none was needed); how: CLONED, COPIED, or None (the original itself);
    origin: os.stat_result of the original, taken after the snapshot."""

    def __init__(self, fd, how, origin):
        self.fd = fd
        self.how = how
        self.origin = origin

    def close(self):
        if self.how is not None and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def private(st, euid=None):
    """Whether only this process's user (or root) can change the file of
    stat_result `st`: owned by root or by us, a regular file, with no group
    or other write permission.  (Whoever else can change such a file is root
    already.)"""
    euid = os.geteuid() if euid is None else euid
    return (stat.S_ISREG(st.st_mode) and st.st_uid in (0, euid)
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _anonymous_file(near):
    """An unnamed 0600 file on the filesystem of directory `near` (else in
    the default temporary directory): O_TMPFILE where the filesystem has
    it, else a new name unlinked at once."""
    dirs = [near] if near else []
    dirs.append("/var/tmp")          # not $TMPDIR: the environment chooses nothing here
    last = None
    for d in dirs:
        try:
            return os.open(d, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600), d
        except OSError as exc:
            last = exc
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                continue
        for _ in range(20):
            path = os.path.join(d, ".rpmcow-snapshot.%s" % os.urandom(8).hex())
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                last = exc
                break
            try:
                os.unlink(path)
            except OSError:
                pass                 # someone renamed it: the name is theirs, the fd ours
            return fd, d
    raise last or OSError(errno.ENOSPC, "no place for a snapshot")


def _copy(src, dst, size):
    off = 0
    while off < size:
        try:
            n = os.copy_file_range(src, dst, size - off, off, off)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            n = -1
        if n <= 0:
            break
        off += n
    while off < size:              # copy_file_range refused: plain copy
        chunk = os.pread(src, min(1 << 20, size - off), off)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            w = os.pwrite(dst, view, off)
            off += w
            view = view[w:]
    return off


def take(fd, path):
    """A Snapshot of the file open at fd (found at path, in whose directory
    a clone can be made) -- or the file itself where it is private(): then
    nobody but root can change it, and nothing needs to be taken.  A copy
    that the file changed during is an error (OSError ESTALE)."""
    before = os.fstat(fd)
    if private(before):
        return Snapshot(fd, None, before)
    snap, _ = _anonymous_file(os.path.dirname(os.path.abspath(path)))
    try:
        try:
            fcntl.ioctl(snap, FICLONE, fd)
            return Snapshot(snap, CLONED, os.fstat(fd))
        except OSError:
            pass                     # another filesystem, or no reflinks: copy
        size = before.st_size
        if _copy(fd, snap, size) != size:
            raise OSError(errno.ESTALE, "the file changed while it was copied")
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
                (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
            raise OSError(errno.ESTALE, "the file changed while it was copied")
        return Snapshot(snap, COPIED, after)
    except BaseException:
        os.close(snap)
        raise


def clones(src_dir, dst_dir):
    """Whether a file in src_dir can be cloned into dst_dir (same filesystem,
    reflink support): tried for real, not guessed from the fs name."""
    import tempfile
    try:
        os.makedirs(src_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=src_dir) as src, \
                tempfile.TemporaryFile(dir=dst_dir) as dst:
            src.write(b"\0" * 4096)
            src.flush()
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:
        return False

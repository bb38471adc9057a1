"""Files named on the command line: opened once, and told apart clearly.

Every command opens the files it is given here, so that a directory, an
empty file, a file that is no package at all, or an extents file where a
package is expected gets the same one-line error naming the file -- never a
traceback, never a decompressor's complaint about bytes that were not a
payload to begin with.
"""
import os
import stat

from .errors import BadPackageError, RpmcowError

RPM_LEAD_MAGIC = b"\xed\xab\xee\xdb"
PACKAGE, EXTENTS = "package", "extents file"


def named(path, exc):
    """exc (an RpmcowError) with its message prefixed by path, unless it
    names the path already."""
    msg = str(exc)
    if path in ("-", None) or msg.startswith(str(path)):
        return exc
    new = type(exc)("%s: %s" % (path, msg))
    new.__cause__ = exc.__cause__
    return new


def open_file(path):
    """A read-only descriptor on path; RpmcowError naming it if it cannot
    be opened or is a directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RpmcowError("%s: cannot open: %s" % (path, exc.strerror)) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise RpmcowError("%s: cannot read: %s" % (path, exc.strerror)) from None
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise RpmcowError("%s: is a directory, not a package" % path)
    return fd


def kind(fd, path):
    """PACKAGE or EXTENTS for a regular file (an extents file is a package
    too: it starts with the lead); None for a stream, which cannot be
    looked at ahead.  BadPackageError naming path for anything else."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_size == 0:
        raise BadPackageError("%s: not an RPM package (empty file)" % path)
    head = os.pread(fd, 4, 0)
    if head != RPM_LEAD_MAGIC:
        if len(head) < 4 and RPM_LEAD_MAGIC.startswith(head):
            raise BadPackageError("%s: truncated package: input ends inside the lead (at byte "
                                  "%d)" % (path, len(head)))
        raise BadPackageError("%s: not an RPM package (it does not start with an RPM lead)"
                              % path)
    from . import extents
    return EXTENTS if extents.is_transcoded(fd) else PACKAGE

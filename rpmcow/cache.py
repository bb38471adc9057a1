"""``rpmcow cache status|clean``: what the extents files on this host cost and save.

An extents file whose package is installed copy-on-write shares its blobs
with the installed files: keeping it costs only its unshared blocks
(headers, sections, blobs of files changed or removed since).  One whose
package is no longer installed (``dnf remove``, an upgrade with
``keep=always``) shares nothing and costs its full size.  ``status`` says
which is which and what the shared blocks save; ``clean`` removes the
extents files no installed package uses, and ".part" files a killed
transcode left behind.

Where extents files are: dnf's package caches (``/var/cache/dnf``, dnf5's
``/var/cache/libdnf5``, inside ``--root``), or the directories given.
"""
import os
import stat
import time

from . import extents, sharing
from .errors import RpmcowError
from .units import size

CACHE_DIRS = ("var/cache/dnf", "var/cache/libdnf5", "var/cache/yum")
PART_MAX_AGE = 3600        # as rpmcow.transcode: older ".part" files are a killed transcode's

class Entry:
    """One extents file: its path, package, allocated and shared bytes, and
    whether an installed package is the one it was made from."""

    def __init__(self, path, nevra, key, allocated, shared, installed):
        self.path, self.nevra, self.key = path, nevra, key
        self.allocated, self.shared, self.installed = allocated, shared, installed

    @property
    def exclusive(self):
        """Bytes removing the file would give back."""
        return max(0, self.allocated - self.shared)

    def as_dict(self):
        return {"path": self.path, "package": self.nevra, "installed": self.installed,
                "allocated_bytes": self.allocated, "shared_bytes": self.shared,
                "exclusive_bytes": self.exclusive}


# The package file an extents file was found made from, kept on the extents
# file (a "trusted." attribute: only root reads or writes those): "v2 DEV INO
# SIZE MTIME_NS CTIME_NS BOOT_ID SHA256HEX".  While the package file keeps
# that inode, size, modification and change time -- and only root can
# change it -- its bytes are the ones hashed, and made_from need not read
# its 100 MiB again (every image root of a shared cache did, ~0.2 s each).
# Only in the boot that hashed it: after a crash a file can keep all of
# those and have lost blocks (rpmcow.record).  (v1 had no change time or
# boot: a file rewritten in place with its modification time set back
# passed for the one hashed.  A v1 record is not trusted.)
SOURCE_XATTR = "trusted.rpmcow.source"
SOURCE_VERSION = "v2"
SETTLED_NS = 2 * 10**9      # a file modified less than this ago is not bound
BIND_MARGIN_NS = 10**9      # before the end of the record's ctime slack


def made_from(extents_path, package_path):
    """Whether the extents file at `extents_path` (one only root can change)
    was made from exactly the bytes the package file holds now: the SHA-256
    of its input, as its C section records it, is the package file's.  The
    dnf plugins use a kept extents file again only then; anything else is
    transcoded again from the package dnf verified.  A package file only root
    can change, unchanged since made_from last hashed it (SOURCE_XATTR), is
    not hashed again."""
    from . import snapshot
    try:
        fd = os.open(extents_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not snapshot.private(os.fstat(fd)):
            return False
        recorded = dict(extents.read_sections(fd).input_digests).get("SHA256")
        if recorded is None:
            return False
        try:
            pkg = os.open(package_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            before = os.fstat(pkg)
            if _bound(fd, before, recorded):
                return True
            digest = _sha256(pkg)
            if digest != recorded:
                return False
            _bind(fd, before, os.fstat(pkg), recorded)
            return True
        finally:
            os.close(pkg)
    except Exception:               # noqa: BLE001 - no usable extents file: transcode
        return False
    finally:
        os.close(fd)


def _identity(st):
    """The package file as it is, in this boot: its inode, size, and
    modification and change times.  The change time is the kernel's:
    nothing sets it back (a download that keeps the server's modification
    time can; an inode number is reused), and every write, chmod, chown or
    time change moves it.  None where the kernel names no boot."""
    from . import record
    boot = record.boot_id()
    if boot is None:
        return None
    return "%d %d %d %d %d %s" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                  st.st_ctime_ns, boot.decode("ascii", "replace"))


def _bound(fd, st, digest):
    """The extents file records the package file as it is now (and only root
    can change that file)."""
    from . import snapshot
    identity = _identity(st)
    if identity is None or not snapshot.private(st, euid=0):
        return False
    try:
        value = os.getxattr(fd, SOURCE_XATTR).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return False
    return value == "%s %s %s" % (SOURCE_VERSION, identity, digest.hex())


def _bind(fd, before, after, digest):
    """Record the package file hashed (best effort): only one only root can
    change, unchanged while it was hashed, and settled -- modified long
    enough ago that a write now would give it another modification time.
    Not where recording it would void the transcoder's record (rpmcow.record
    vouches for the blobs only while the extents file's ctime, which the
    attribute moves, is near the mtime the transcoder gave it): hashing the
    package at each check costs less than hashing every blob at each
    install."""
    from . import record, snapshot
    now = time.time_ns()
    identity = _identity(after)
    if (identity is None or _identity(before) != identity
            or not snapshot.private(after, euid=0)
            or now - max(after.st_mtime_ns, after.st_ctime_ns) < SETTLED_NS
            or now - os.fstat(fd).st_mtime_ns > record.CTIME_SLACK_NS - BIND_MARGIN_NS):
        return
    try:
        os.setxattr(fd, SOURCE_XATTR, ("%s %s %s" % (SOURCE_VERSION, identity,
                                                     digest.hex())).encode())
    except OSError:
        pass


def _sha256(fd):
    from .digests import BY_NAME, fd_hexdigests
    sha256 = BY_NAME["SHA256"].rpm_id
    return bytes.fromhex(fd_hexdigests(fd, [sha256])[sha256])


def default_dirs(root):
    return [os.path.join(root, d) for d in CACHE_DIRS if os.path.isdir(os.path.join(root, d))]


def _installed_keys(root, dbpath=None):
    """{SHA256HEADER or SHA1HEADER: NEVRA} of the packages installed in root."""
    import rpm
    if dbpath:
        rpm.addMacro("_dbpath", dbpath)
    try:
        ts = rpm.TransactionSet(root)
        out = {}
        for h in ts.dbMatch():
            key = h[rpm.RPMTAG_SHA256HEADER] or h[rpm.RPMTAG_SHA1HEADER]
            if key:
                out[key] = h["nevra"]
        ts.closeDB()
        return out
    finally:
        if dbpath:
            rpm.delMacro("_dbpath")


def _header_key(fd):
    """(key, NEVRA) of the package whose headers start the file."""
    import rpm

    from . import native, package
    os.lseek(fd, 0, os.SEEK_SET)
    pro = native.Input(fd, []).read_prologue()
    h = package.load_header(pro)
    key = h[rpm.RPMTAG_SHA256HEADER] or h[rpm.RPMTAG_SHA1HEADER]
    return key, package.nevra(h)


def _candidates(dirs):
    for d in dirs:
        for top, _subdirs, names in os.walk(d):
            for name in names:
                if name.endswith(".rpm") or name.endswith(".rpme"):
                    yield os.path.join(top, name)


def scan(dirs, root="/", dbpath=None):
    """([Entry] of every extents file under dirs, [stale .part paths])."""
    installed = _installed_keys(root, dbpath)
    entries, parts = [], []
    now = time.time()
    for d in dirs:
        sharing.settle_path(d)
        for top, _subdirs, names in os.walk(d):
            for name in names:
                if name.startswith(".") and name.endswith(".part"):
                    path = os.path.join(top, name)
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) and now - st.st_mtime > PART_MAX_AGE:
                        parts.append(path)
    for path in _candidates(dirs):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not extents.is_transcoded(fd):
                continue
            try:
                key, nevra = _header_key(fd)
            except RpmcowError:
                key, nevra = None, None
            entries.append(Entry(path, nevra, key, st.st_blocks * 512, sharing.shared_bytes(fd),
                                 key in installed))
        finally:
            os.close(fd)
    return entries, parts


def status_lines(entries, parts):
    used = [e for e in entries if e.installed]
    unused = [e for e in entries if not e.installed]
    lines = ["%d extents files: %d of installed packages, %d of packages no longer installed"
             % (len(entries), len(used), len(unused)),
             "  shared with installed files: %s (what copy-on-write saves: without it these "
             "bytes would be written and stored twice)" % size(sum(e.shared for e in used)),
             "  kept only by the cache: %s in extents files of installed packages, %s in "
             "unused ones" % (size(sum(e.exclusive for e in used)),
                              size(sum(e.allocated for e in unused)))]
    for e in sorted(unused, key=lambda e: -e.allocated):
        lines.append("  unused: %s (%s, %s)" % (e.path, e.nevra or "unreadable headers",
                                                size(e.allocated)))
    if parts:
        lines.append("  %d stale .part files of killed transcodes" % len(parts))
    if unused or parts:
        lines.append("'rpmcow cache clean' removes the unused files (%s)"
                     % size(sum(e.allocated for e in unused) +
                           sum(os.lstat(p).st_blocks * 512 for p in parts if os.path.exists(p))))
    return lines


def clean(entries, parts, everything=False, dry_run=False):
    """Remove the unused extents files (every one with everything) and the
    stale .part files; returns [(path, bytes freed)]."""
    removed = []
    for e in entries:
        if e.installed and not everything:
            continue
        if not dry_run:
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                continue
        removed.append((e.path, e.exclusive if e.installed else e.allocated))
    for p in parts:
        try:
            size = os.lstat(p).st_blocks * 512
            if not dry_run:
                os.unlink(p)
        except OSError:
            continue
        removed.append((p, size))
    return removed

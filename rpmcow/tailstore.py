"""Shared tails: the last, partial block of every installed file, kept once
for all the roots an image build installs from one package cache.

A clone (FICLONERANGE) shares whole blocks only, unless its range ends at
the source's end of file.  So every root writes again each file's last,
partial block, and all of every file smaller than a block: on a system
image that is most files and about a quarter of its disk use.  With a tail
store the rpm plugin keeps each distinct tail as a file of its own, named by
the SHA-256 of its bytes, and clones it from there into the next root (see
csrc/rpm_plugin_cow.c, "shared tails", for what it trusts).

Each shared tail costs a clone instead of a write, which XFS makes slower
than writing 4 KiB: worth it where the same packages go into many roots,
not for one root.  So it is used where the package cache is outside the
root being installed (the image-build case: ``auto``), or where asked.

This module picks the directory, makes it (mode 0700: only root goes in)
and cleans it: ``rpmcow cache clean`` removes the tails no installed file
shares any more, and the temporary files of a store that was interrupted.
"""
import os
import stat
import time

from . import rpmconfig, sharing
from .errors import RpmcowError
from .units import size

DIRNAME = "rpmcow-tails"
MODES = ("auto", "yes", "no")
TEMP_MAX_AGE = 3600          # an older temporary file is an interrupted store's


def prepare(path):
    """Make the tail store at `path` (mode 0700) or check the one there:
    a directory, not a symbolic link, of this user, that nobody else can
    open.  Returns its absolute path; raises RpmcowError naming the problem."""
    path = os.path.abspath(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RpmcowError("cannot make the tail store %s: %s" % (path, exc.strerror)) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RpmcowError("the tail store %s: %s" % (
            path, "not a directory" if exc.errno in (20, 40) else exc.strerror)) from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o077:
        raise RpmcowError("the tail store %s must be a directory only its owner (root) can "
                          "open (mode 0700)" % path)
    return path


def for_package_dirs(mode, pkg_dirs, root):
    """The tail store for installs into `root` from the package cache
    directories `pkg_dirs` (dnf's ``<cachedir>/<repo>/packages``), made or
    checked (prepare), or None.  mode: ``no``; ``yes``; ``auto`` -- only
    where the cache is outside the root, i.e. shared by the roots of an
    image build.  The store goes into the cache: ``<cachedir>/rpmcow-tails``.
    Raises RpmcowError naming the problem."""
    if mode not in MODES:
        raise RpmcowError("share_tails must be one of %s, not %r" % (", ".join(MODES), mode))
    dirs = sorted({os.path.realpath(d) for d in pkg_dirs})
    if mode == "no" or not dirs:
        return None
    if mode == "auto" and any(rpmconfig.Target(root).contains(d) for d in dirs):
        return None
    return prepare(os.path.join(os.path.dirname(os.path.dirname(dirs[0])), DIRNAME))


def stores_in(cache_dir):
    """The tail store of a package cache directory tree, if it has one."""
    path = os.path.join(cache_dir, DIRNAME)
    return path if os.path.isdir(path) and not os.path.islink(path) else None


def _entries(dfd):
    """(name, lstat) of the regular files in the store open at dfd."""
    for name in os.listdir(dfd):
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield name, st


def _shared(dfd, name):
    """Bytes of the tail `name` some other file shares (0 if unreadable)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dfd)
    except OSError:
        return 0
    try:
        return sharing.shared_bytes(fd)
    finally:
        os.close(fd)


def _open_store(path):
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def status(path):
    """What the store at `path` holds: its tails, the bytes they take, and
    those still shared with installed files (once the filesystem has
    released the files removed so far: sharing.settle)."""
    count = allocated = shared = 0
    dfd = _open_store(path)
    try:
        sharing.settle(dfd)
        for name, st in _entries(dfd):
            if name.startswith("."):
                continue
            count += 1
            allocated += st.st_blocks * 512
            shared += _shared(dfd, name)
    finally:
        os.close(dfd)
    return {"path": path, "tails": count, "allocated_bytes": allocated,
            "shared_bytes": shared}


def status_line(t):
    return ("tail store %s: %d tails, %s, %s of it shared with installed files"
            % (t["path"], t["tails"], size(t["allocated_bytes"]), size(t["shared_bytes"])))


def clean(path, dry_run=False, now=None):
    """Remove the tails at `path` that no file shares any more (their root
    was removed -- just now included: sharing.settle -- or the file
    changed), and temporary files older than an hour.  Returns (files
    removed, bytes given back)."""
    now = time.time() if now is None else now
    removed = freed = 0
    dfd = _open_store(path)
    try:
        sharing.settle(dfd)
        for name, st in _entries(dfd):
            if name.startswith("."):
                if now - st.st_mtime < TEMP_MAX_AGE:
                    continue            # a store under way
            elif _shared(dfd, name) > 0:
                continue                # some installed file still shares it
            if not dry_run:
                try:
                    os.unlink(name, dir_fd=dfd)
                except FileNotFoundError:
                    continue
            removed += 1
            freed += st.st_blocks * 512
    finally:
        os.close(dfd)
    return removed, freed

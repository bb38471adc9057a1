"""Feed plans: what the rpm plugin needs to serve a payload itself.

Front ends that hand rpm the package file themselves (dnf5; ``rpm -i``)
cannot be asked to read a feed.  For them the cow plugin serves the cheap
payload itself: when a package's psm starts, it finds rpm's descriptor of
the package (positioned at the payload, after rpm's verification pass has
read and checked the whole original), puts a socket in its place and writes
the feed into it (csrc/rpm_plugin_cow.c, "Serving").  What to write --
which file is a symlink, which content is at which blob, in which order, in
which container -- is described here, in Python, once
(``feeder.PackageFeed``), and written to a *feed plan* file after the
extents file has been judged; the plugin finds it through
``%_rpmcow_serve`` ("KEY=PLAN ...").

A plan binds the extents file it was made for (inode, mtime to the
nanosecond) and the package file rpm will read (device, inode, payload
offset).  Plans and extents files live where only root can change them
(the plugin refuses anything else).

Layout (little-endian)::

    "RCFEED01"  u32 compressor (RC_COMP_*)  u32 block size
    u64 extents inode  u64 extents mtime (ns)
    u64 package device  u64 package inode  u64 payload offset
    u32 files  u32 archive entries  u16 path length, the extents file's path
    per file: u8 kind (RC_FEED_*), u64 size, u64 blob offset, u32 n, n bytes
              (a symlink's target)
    per archive entry: u32 file index
"""
import os
import struct

from . import native
from .errors import RpmcowError

MAGIC = b"RCFEED01"
SERVE_MACRO = "_rpmcow_serve"
# the NEVRAs of the packages served, as rpm names its transaction elements
# (csrc/rpm_plugin_cow.c: rpmcow_plugin_served_only)
SERVED_MACRO = "_rpmcow_served"
# "1": the plugin removes a served package's extents file once the package
# is installed (the cache does not keep them)
DISCARD_MACRO = "_rpmcow_discard"


def plan_bytes(feed, extents_path, extents_st, package_st, blk):
    """The plan for serving `feed` (a feeder.PackageFeed of the extents file
    at extents_path, stat extents_st) to rpm reading the package file of
    stat package_st, with whole blocks of `blk` bytes fed as zeros."""
    path = os.fsencode(extents_path)
    if not path.startswith(b"/") or len(path) >= 4096:
        raise RpmcowError("%s: cannot be served (not an absolute path)" % extents_path)
    files, order = feed.plan()
    out = [MAGIC, struct.pack("<II", native.COMPRESSORS[feed.package.compressor], blk),
           struct.pack("<QQQQQ", extents_st.st_ino, extents_st.st_mtime_ns,
                       package_st.st_dev, package_st.st_ino, len(feed.prologue.data)),
           struct.pack("<IIH", len(files), len(order), len(path)), path]
    for kind, size, blob, link in files:
        out.append(struct.pack("<BQQI", kind, size, blob, len(link)))
        out.append(link)
    out.append(struct.pack("<%dI" % len(order), *order))
    return b"".join(out)


def write_plan(path, data):
    """Write a plan (root-only: 0600), atomically."""
    tmp = path + ".part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        native.write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def serve_entries(entries):
    """The value of %_rpmcow_serve for {header key: plan path}."""
    for key, plan in entries.items():
        if any(c.isspace() for c in key + plan):
            raise RpmcowError("%s: a path with blanks cannot be served" % plan)
    return " ".join("%s=%s" % kv for kv in entries.items())

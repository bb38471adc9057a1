"""``rpmcow cache status|clean`` on a real loop XFS: extents files of
installed packages share their blocks, those of removed packages do not."""
import fcntl
import hashlib
import json
import os
import struct
import time

import pytest

from conftest import corpus_path
from rpmcow import cache as rpmcow_cache, sharing, tailstore
from loopfs import xfs_fs  # noqa: F401  (fixture)
from test_install import DB, pair, rpmcow_argv, run, xfs_site  # noqa: F401

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not corpus_path().is_dir(), reason="no corpus")]


FICLONERANGE = 0x4020940D


def cache(site, *args):
    return run(rpmcow_argv() + ["cache", *args, "--root", site.cow, "--dbpath", DB, site.cache])


def test_cache_status_and_clean(xfs_site, pair):
    site = xfs_site
    fa, fb = site.transcode(pair("fa")), site.transcode(pair("fb"))
    site.install("--nodeps", "--noscripts", fb)            # fb installed, fa not
    stale = site.cache / ".x.cow.rpm.0123456789ab.part"
    stale.write_bytes(b"x" * 8192)
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = site.cache / ".y.cow.rpm.0123456789ab.part"    # a transcode running now
    fresh.write_bytes(b"y")
    r = cache(site, "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    files = {os.path.basename(f["path"]): f for f in st["files"]}
    assert files[fb.name]["installed"] and not files[fa.name]["installed"]
    assert files[fb.name]["shared_bytes"] >= 3 << 20           # fb's 3 MiB file is cloned
    assert files[fa.name]["shared_bytes"] == 0
    assert st["stale_parts"] == [str(stale)]
    text = cache(site, "status").stdout
    assert "2 extents files: 1 of installed packages, 1 of packages no longer installed" in text
    assert "unused: %s (fa-1.0-1.noarch" % fa in text
    r = cache(site, "clean", "--dry-run")
    assert "would remove %s" % fa in r.stdout and fa.exists()
    r = cache(site, "clean")
    assert r.returncode == 0, r.stderr
    assert not fa.exists() and not stale.exists()
    assert fb.exists() and fresh.exists()
    assert "rpmcow: 2 files," in r.stdout


def _clone_and_remove(src, where, copies=20):
    """Clone the whole of `src` into `copies` files under `where`, then
    remove them: what removing a root (or a package) does to the blocks."""
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        names = []
        for i in range(copies):
            name = os.path.join(where, "copy-%d" % i)
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.ioctl(out, FICLONERANGE, struct.pack("=qQQQ", fd, 0, size, 0))
            finally:
                os.close(out)
            names.append(name)
        assert sharing.shared_bytes(fd) > 0
    finally:
        os.close(fd)
    for name in names:
        os.unlink(name)


def test_what_was_removed_just_now_is_not_counted_as_shared(xfs_site, pair):
    """XFS releases a removed file's blocks in the background: FIEMAP
    still says "shared" right after the removal (almost always, here).
    `cache` status and clean wait for those releases (sharing.settle): an
    extents file and a tail whose only sharers were removed just now are
    unused, and clean removes them."""
    site = xfs_site
    fa = site.transcode(pair("fa"))
    store = site.cache / tailstore.DIRNAME
    tailstore.prepare(store)
    tail = store / hashlib.sha256(b"t" * 700).hexdigest()
    tail.write_bytes(b"t" * 700)
    os.chmod(tail, 0o600)
    where = site.base / "removed-root"
    where.mkdir()
    for _round in range(3):
        _clone_and_remove(fa, where)
        _clone_and_remove(tail, where)
        entries, _parts = rpmcow_cache.scan([str(site.cache)], str(site.cow), DB)
        assert [(e.path, e.shared) for e in entries] == [(str(fa), 0)]
        assert tailstore.status(str(store))["shared_bytes"] == 0
    _clone_and_remove(tail, where)
    blocks = os.stat(tail).st_blocks
    assert tailstore.clean(str(store)) == (1, blocks * 512)
    assert os.listdir(store) == []

"""``rpmcow cache status|clean`` on a real loop XFS: extents files of
installed packages share their blocks, those of removed packages do not."""
import json
import os
import time

import pytest

from conftest import corpus_path
from loopfs import xfs_fs  # noqa: F401  (fixture)
from test_install import DB, pair, rpmcow_argv, run, xfs_site  # noqa: F401

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not corpus_path().is_dir(), reason="no corpus")]


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

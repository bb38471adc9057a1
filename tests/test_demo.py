"""``make demo`` end to end, on a small package set: its three scenarios
run against real dnf, rpm and a loop-mounted XFS, each says what the user
gains, the charts are written, and nothing is left mounted."""
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rpmcow import scenario

ROOT = Path(__file__).resolve().parents[1]


def _missing():
    need = ["rpmbuild", "createrepo_c", "mkfs.xfs", scenario.dnf4_executable()]
    return [t for t in need if shutil.which(t) is None]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts)")
def test_make_demo_tells_the_story(tmp_path):
    if _missing():
        pytest.skip("missing: %s" % ", ".join(_missing()))
    charts = tmp_path / "charts"
    r = subprocess.run([sys.executable, "-m", "rpmcow.demo", "--mib", "24", "--packages", "3",
                        "--roots", "2", "--charts", str(charts)],
                       capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    gains = out[out.index("What you gain:"):]
    assert "1. Over a 100 Mbit/s link, dnf + cow finished in" in gains, out
    assert "2. With the cache kept, each package's extents file stays beside it" in gains, out
    assert "3. Building 2 roots from one cache took" in gains, out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no charts" in out
    else:
        assert sorted(p.name for p in charts.iterdir()) == ["1-network.png", "2-keepcache.png",
                                                           "3-images.png"]
    with open("/proc/mounts") as f:
        assert "rpmcow-xfs-" not in f.read()


def test_the_link_is_shared_by_parallel_downloads(tmp_path):
    """scenario.Link: one rate for all connections, as on a real link --
    two parallel downloads of 1 MiB each at 4 MiB/s cannot finish in less
    than half a second (with a rate per connection they took a quarter),
    and arrive whole."""
    for name in ("a.rpm", "b.rpm"):
        (tmp_path / name).write_bytes(os.urandom(1 << 20))
    server = scenario.Server(tmp_path, rate=4 << 20)
    try:
        got = {}

        def fetch(name):
            got[name] = urllib.request.urlopen(server.url + name).read()

        t0 = time.monotonic()
        threads = [threading.Thread(target=fetch, args=(n,)) for n in ("a.rpm", "b.rpm")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert got["a.rpm"] == (tmp_path / "a.rpm").read_bytes()
    assert got["b.rpm"] == (tmp_path / "b.rpm").read_bytes()
    assert elapsed >= 0.45, elapsed         # 2 MiB through a 4 MiB/s link


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts)")
def test_scratch_xfs_goes_even_when_something_keeps_it_busy():
    """The benchmarks' and the demo's loop XFS (scenario.LoopXFS) is
    unmounted and removed even when a descriptor is still open in it (a
    killed run's, a script's): detached lazily, never left mounted -- and
    its files are never removed through the mount."""
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("no mkfs.xfs")
    xfs = scenario.LoopXFS(1)
    busy = os.open(xfs.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        xfs.close()
        with open("/proc/mounts") as f:
            assert xfs.path not in f.read()
        assert not os.path.exists(xfs.tmp)
    finally:
        os.close(busy)

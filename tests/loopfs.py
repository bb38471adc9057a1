"""Loop-mounted scratch filesystems (XFS with reflink, btrfs, ext4) for tests.

    with LoopFS("xfs", size=4 << 30) as fs:       # a sparse image, mkfs, mount -o loop
        area = fs.area("mytest")                    # a fresh directory inside the mount
        ...

or, in a test module, import the session-scoped fixtures (importing a fixture
function into a module is how pytest registers it there):

    from loopfs import xfs_fs, btrfs_fs, ext4_fs   # noqa: F401

    def test_x(xfs_fs):
        with xfs_fs.area_ctx("x") as area: ...     # removed again afterwards

Everything is cleaned up -- unmounted (with retries, lazily as the last
resort), loop device detached, image and directories removed -- when the
``with`` block or the session ends, whatever happened inside: a failing
mkfs or mount, an exception, a KeyboardInterrupt, interpreter exit (atexit)
and SIGTERM (turned into KeyboardInterrupt where no handler was installed).
Mounts left by a run that was killed outright (SIGKILL) are reaped by the
next one: every mount lives under ``<tmp>/rpmcow-loopfs-<fstype>-<pid>-*``
and is only touched by another process once that pid is gone.

Without root, or without the filesystem's mkfs, the fixtures skip with the
reason; where the kernel cannot loop-mount at all, they skip too and say why.
"""
import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

PREFIX = "rpmcow-loopfs-"
MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"],
}
# image sizes (sparse: only what is written costs disk space)
DEFAULT_SIZE = {"xfs": 8 << 30, "btrfs": 8 << 30, "ext4": 2 << 30}
REFLINK = {"xfs": True, "btrfs": True, "ext4": False}

_active = {}                 # id -> LoopFS, everything not cleaned up yet
_lock = threading.Lock()
_hooks_installed = False


class LoopFSUnavailable(Exception):
    """This machine cannot give us the filesystem (not root, no mkfs, no loop)."""


def unavailable_reason(fstype):
    """Why a `fstype` loop mount cannot be made here, or None."""
    if fstype not in MKFS:
        return "unknown filesystem type %r" % fstype
    if os.geteuid() != 0:
        return "loop-mounting a %s image needs root" % fstype
    if shutil.which(MKFS[fstype][0]) is None:
        return "%s is not installed (needed for a %s loop mount)" % (MKFS[fstype][0], fstype)
    for tool in ("mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            return "%s is not installed" % tool
    return None


def _run(cmd, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _unescape_mount_path(text):
    # /proc/mounts escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts():
    """[(source, mountpoint, fstype)] from /proc/self/mounts."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((_unescape_mount_path(parts[0]), _unescape_mount_path(parts[1]),
                            parts[2]))
    return out


def is_mounted(path):
    path = os.path.realpath(path)
    return any(mp == path for _, mp, _ in mounts())


def loop_devices_of(image):
    """Loop devices backed by `image` (losetup -j)."""
    r = _run(["losetup", "-j", str(image)])
    return [line.split(":", 1)[0] for line in r.stdout.splitlines() if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LoopFS:
    """One loop-mounted filesystem in a private temporary directory.

    Attributes once mounted: ``mountpoint`` (Path), ``image``, ``device``
    (the loop device), ``fstype``, ``reflink`` (True where FICLONERANGE works).
    """

    def __init__(self, fstype, size=None, parent=None, mkfs_args=(), mount_opts=()):
        if fstype not in MKFS:
            raise ValueError("unknown filesystem type %r" % fstype)
        self.fstype = fstype
        self.size = size or DEFAULT_SIZE[fstype]
        self.parent = parent
        self.mkfs_args = list(mkfs_args)
        self.mount_opts = list(mount_opts)
        self.reflink = REFLINK[fstype]
        self.base = None
        self.image = None
        self.mountpoint = None
        self.device = None
        self._areas = 0

    # -- life cycle -----------------------------------------------------------

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def setup(self):
        reason = unavailable_reason(self.fstype)
        if reason:
            raise LoopFSUnavailable(reason)
        _install_hooks()
        reap_stale()
        self.base = Path(tempfile.mkdtemp(prefix="%s%s-%d-" % (PREFIX, self.fstype, os.getpid()),
                                          dir=self.parent))
        with _lock:
            _active[id(self)] = self
        try:
            self.image = self.base / "image"
            self.mountpoint = self.base / "mnt"
            self.mountpoint.mkdir()
            with open(self.image, "wb") as f:
                f.truncate(self.size)
            r = _run(MKFS[self.fstype] + self.mkfs_args + [str(self.image)], timeout=300)
            if r.returncode != 0:
                raise LoopFSUnavailable("%s failed (exit %d): %s" % (
                    " ".join(MKFS[self.fstype]), r.returncode, (r.stderr or r.stdout).strip()))
            cmd = ["mount", "-t", self.fstype, "-o", ",".join(["loop"] + self.mount_opts),
                   str(self.image), str(self.mountpoint)]
            r = _run(cmd)
            if r.returncode != 0:
                raise LoopFSUnavailable("cannot loop-mount a %s image (%s): %s" % (
                    self.fstype, " ".join(cmd), (r.stderr or r.stdout).strip()))
            for src, mp, _ in mounts():
                if mp == str(self.mountpoint):
                    self.device = src
            os.chmod(self.mountpoint, 0o755)
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self):
        """Unmount, detach, remove. Safe to call more than once; raises only
        if the filesystem stays mounted after every attempt."""
        with _lock:
            _active.pop(id(self), None)
        if self.base is None:
            return
        _teardown(self.base)
        self.base = None

    # -- areas: one fresh directory per test ----------------------------------

    def area(self, name="area"):
        """A new empty directory on this filesystem (not removed automatically)."""
        if self.mountpoint is None:
            raise RuntimeError("%s loop filesystem is not mounted" % self.fstype)
        self._areas += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "area"
        path = self.mountpoint / ("%03d-%s" % (self._areas, safe))
        path.mkdir()
        return path

    @contextlib.contextmanager
    def area_ctx(self, name="area"):
        """area() that is removed again (with everything in it) afterwards."""
        path = self.area(name)
        try:
            yield path
        finally:
            remove_tree(path)

    def __repr__(self):
        return "<LoopFS %s at %s>" % (self.fstype, self.mountpoint)


def remove_tree(path):
    """rm -rf that never crosses into another mount and copes with
    read-only or immutable leftovers."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    for _, mp, _ in mounts():
        if mp.startswith(str(path) + "/"):
            _umount(mp)

    def onerror(func, p, exc_info):
        with contextlib.suppress(OSError):
            subprocess.run(["chattr", "-R", "-i", "-a", p], capture_output=True)
            os.chmod(os.path.dirname(p), 0o755)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o755)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def _umount(mountpoint, attempts=5):
    """umount with retries for EBUSY; lazy as the last resort. True if gone."""
    for i in range(attempts):
        if not is_mounted(mountpoint):
            return True
        r = _run(["umount", str(mountpoint)])
        if r.returncode == 0 and not is_mounted(mountpoint):
            return True
        time.sleep(0.05 * (2 ** i))
    if is_mounted(mountpoint):
        _run(["umount", "-l", str(mountpoint)])
    return not is_mounted(mountpoint)


def _teardown(base):
    base = Path(base)
    mnt = base / "mnt"
    image = base / "image"
    gone = _umount(mnt)
    if image.exists():
        # mount -o loop sets autoclear: the device normally goes with the
        # umount. losetup -d detaches what is left, or (device still busy
        # after a lazy umount) marks it to go when its last user closes it.
        for attempt in range(4):
            devs = loop_devices_of(image)
            if not devs:
                break
            for dev in devs:
                _run(["losetup", "-d", dev])
            time.sleep(0.05 * (2 ** attempt))
    if not gone:
        raise RuntimeError("cannot unmount %s (still busy after lazy umount)" % mnt)
    # the mount point is empty now; never rmtree through a live mount
    with contextlib.suppress(FileNotFoundError):
        image.unlink()
    with contextlib.suppress(OSError):
        mnt.rmdir()
    if not is_mounted(mnt):
        shutil.rmtree(base, ignore_errors=True)


def cleanup_all():
    """Tear down every LoopFS of this process (atexit, signal)."""
    with _lock:
        pending = list(_active.values())
    for fs in pending:
        with contextlib.suppress(Exception):
            fs.cleanup()


_STALE = re.compile(r"^%s(\w+)-(\d+)-[^/]+$" % re.escape(PREFIX))


def reap_stale(parent=None):
    """Remove loop mounts and images of earlier runs whose process is gone."""
    parent = Path(parent or tempfile.gettempdir())
    candidates = set()
    for _, mp, _ in mounts():
        p = Path(mp)
        if p.name == "mnt" and _STALE.match(p.parent.name):
            candidates.add(p.parent)
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if _STALE.match(entry.name):
                candidates.add(entry)
    for base in sorted(candidates):
        pid = int(_STALE.match(base.name).group(2))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(Exception):
            _teardown(base)


def our_mounts():
    """Mount points of this process's loop filesystems still in /proc/mounts."""
    tag = re.compile(r"/%s\w+-%d-[^/]+/mnt$" % (re.escape(PREFIX), os.getpid()))
    return [mp for _, mp, _ in mounts() if tag.search(mp)]


def _install_hooks():
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(cleanup_all)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                def on_term(signum, frame):
                    # unwinds through every `with`/fixture finalizer, then atexit
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    raise KeyboardInterrupt("SIGTERM")
                signal.signal(signal.SIGTERM, on_term)
            if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
                def on_hup(signum, frame):
                    signal.signal(signal.SIGHUP, signal.SIG_DFL)
                    raise KeyboardInterrupt("SIGHUP")
                signal.signal(signal.SIGHUP, on_hup)


# ---- pytest fixtures -----------------------------------------------------------

try:
    import pytest
except ImportError:                  # usable without pytest too
    pytest = None


def _session_fs(fstype):
    reason = unavailable_reason(fstype)
    if reason:
        pytest.skip(reason)
    fs = LoopFS(fstype)
    try:
        fs.setup()
    except LoopFSUnavailable as exc:
        pytest.skip(str(exc))
    return fs


if pytest is not None:
    @pytest.fixture(scope="session")
    def xfs_fs():
        """A loop-mounted XFS with reflink=1 for the whole session."""
        fs = _session_fs("xfs")
        try:
            yield fs
        finally:
            fs.cleanup()

    @pytest.fixture(scope="session")
    def btrfs_fs():
        """A loop-mounted btrfs for the whole session."""
        fs = _session_fs("btrfs")
        try:
            yield fs
        finally:
            fs.cleanup()

    @pytest.fixture(scope="session")
    def ext4_fs():
        """A loop-mounted ext4 (no reflink: the copy fallback) for the whole session."""
        fs = _session_fs("ext4")
        try:
            yield fs
        finally:
            fs.cleanup()

    @pytest.fixture(scope="session")
    def reflink_fs(request):
        """The session's XFS or btrfs, by name: ``reflink_fs("xfs")``."""
        def get(fstype):
            if fstype not in ("xfs", "btrfs"):
                raise ValueError(fstype)
            return request.getfixturevalue(fstype + "_fs")
        return get

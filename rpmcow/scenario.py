"""A realistic dnf scenario on this machine, for ``make demo`` and bench/.

* ``build_packages``: packages made with rpmbuild from files this machine
  already has (Python's standard library, documentation, shared libraries),
  split into packages of a few MiB to tens of MiB, alternating xz and zstd
  payloads; no dependencies, so they install into an empty root.  Built
  once and cached by recipe.
* ``Repository``: createrepo_c + an HTTP server on 127.0.0.1 (dnf then
  downloads through librepo, as it does from a mirror).
* ``LoopXFS``: a reflink-capable XFS in a loop-mounted image.
* ``run_dnf``: dnf with an installroot on it, the cow plugin on or off.
Everything is cleaned up on exit, failures included.
"""
import glob
import hashlib
import http.server
import json
import re
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
MiB = 1 << 20
MAX_FILE = 32 * MiB        # keeps packages regular in size

SOURCES = ["/usr/lib/python3", "/usr/share/doc", "/usr/share/man", "/usr/lib/x86_64-linux-gnu",
           "/usr/lib64", "/usr/share/locale", "/usr/share/perl", "/usr/lib/gcc"]

SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: rpmcow scenario package {name}
License: Various
Vendor: rpmcow scenario
AutoReqProv: no
%define _build_id_links none
%define __os_install_post %{{nil}}
%define debug_package %{{nil}}
%description
Files copied from this machine, for rpmcow's demo and benchmarks.
%install
cp -a {stage}/. %{{buildroot}}/
%files
%defattr(-,root,root,-)
/opt/rpmcow-scenario/{name}
"""


@dataclass
class Plan:
    name: str
    compressor: str              # rpm _binary_payload
    files: list = field(default_factory=list)   # absolute source paths
    size: int = 0


def _candidates():
    seen = set()
    for top in SOURCES:
        top = os.path.realpath(top)
        if not os.path.isdir(top) or top in seen:
            continue
        seen.add(top)
        for d, dirs, files in os.walk(top):
            # bytecode caches change whenever Python runs: keep the set stable
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for n in sorted(files):
                if n.endswith((".pyc", ".pyo")):
                    continue
                p = os.path.join(d, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if os.path.isfile(p) and not os.path.islink(p) and os.access(p, os.R_OK) \
                        and 0 < st.st_size <= MAX_FILE:
                    yield p, st.st_size


def plan(total_mib, count, prefix="rpmcow-scenario"):
    """Split up to total_mib of this machine's files into `count` packages."""
    target = total_mib * MiB // count
    plans, cur = [], None
    for path, size in _candidates():
        if cur is None:
            i = len(plans)
            cur = Plan("%s-%02d" % (prefix, i), "w19T2.zstdio" if i % 2 else "w6T2.xzdio")
        cur.files.append(path)
        cur.size += size
        if cur.size >= target:
            plans.append(cur)
            cur = None
            if len(plans) == count:
                break
    if cur is not None and len(plans) < count:
        plans.append(cur)
    return plans


def _recipe(p, version):
    h = hashlib.sha256()
    for f in p.files:
        st = os.stat(f)
        h.update(("%s %d %d\n" % (f, st.st_size, int(st.st_mtime))).encode())
    h.update((p.name + p.compressor + version).encode())
    return h.hexdigest()[:16]


def build_packages(workdir, total_mib=300, count=16, version="1.0", log=print, empty=False):
    """Build (or reuse) the scenario's packages; returns their paths.
    empty: their twins with every file emptied -- the same names, paths,
    modes and directories, no content: what installing them costs is the
    per-file work of stock rpm and dnf, the floor of any install through
    them (bench/image_bench.py)."""
    os.makedirs(workdir, exist_ok=True)
    out = []
    for p in plan(total_mib, count):
        key = _recipe(p, version) + ("-empty" if empty else "")
        dest = os.path.join(workdir, "%s-%s-1.%s.rpm" % (p.name, version, key))
        if not os.path.exists(dest):
            log("building %s (%d files, %.0f MiB, %s%s)" % (
                p.name, len(p.files), p.size / MiB, p.compressor, ", emptied" if empty else ""))
            _build(p, version, dest, empty)
        out.append(dest)
    return out


def _build(p, version, dest, empty=False):
    tmp = tempfile.mkdtemp(prefix="rpmcow-build-")
    try:
        stage = os.path.join(tmp, "stage")
        base = os.path.join(stage, "opt", "rpmcow-scenario", p.name)
        for i, src in enumerate(p.files):
            d = os.path.join(base, "%03d" % (i // 500))
            os.makedirs(d, exist_ok=True)
            dst = os.path.join(d, "%05d-%s" % (i, os.path.basename(src)))
            shutil.copy2(src, dst)
            if empty and not os.path.islink(dst):
                st = os.stat(dst)
                os.truncate(dst, 0)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        spec = os.path.join(tmp, p.name + ".spec")
        with open(spec, "w") as f:
            f.write(SPEC.format(name=p.name, version=version, stage=stage))
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--nodeps",
                        "--define", "_topdir " + os.path.join(tmp, "top"),
                        "--define", "_binary_payload " + p.compressor,
                        "--define", "_buildhost rpmcow", spec],
                       check=True, env=dict(os.environ, HOME=tmp),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        built = glob.glob(os.path.join(tmp, "top", "RPMS", "*", "%s-%s-1.*.rpm" % (p.name, version)))
        shutil.move(built[0], dest + ".part")
        os.rename(dest + ".part", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Link:
    """A network link's rate shared by every connection (bytes per second):
    each chunk sent takes its slot of the link's time, as on a real link
    where parallel downloads share the bandwidth."""

    def __init__(self, rate):
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def send(self, dst, chunk):
        with self._lock:
            now = time.monotonic()
            start = max(self._free_at, now)
            self._free_at = start + len(chunk) / self.rate
            done = self._free_at
        dst.write(chunk)
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# network rates the benchmarks and `make demo` use, bytes per second
MBIT = 1000 * 1000 // 8
RATES = {"100 Mbit/s": 100 * MBIT, "1 Gbit/s": 1000 * MBIT}


class Server:
    """A directory over HTTP on 127.0.0.1; rate: bytes per second for the
    package files (*.rpm; metadata at full speed), shared by all
    connections (Link), None for no limit."""

    def __init__(self, directory, rate=None):
        self.set_rate(rate)
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def copyfile(self, src, dst):
                link = server.link
                if link is None or not self.path.endswith(".rpm"):
                    return super().copyfile(src, dst)
                while True:
                    chunk = src.read(64 << 10)
                    if not chunk:
                        break
                    link.send(dst, chunk)

        handler = lambda *a, **kw: Handler(*a, directory=str(directory), **kw)  # noqa: E731
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_rate(self, rate):
        """The rate for the requests that follow (None: no limit)."""
        self.link = Link(rate) if rate else None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Repository:
    """createrepo_c over some packages, served on 127.0.0.1."""

    def __init__(self, packages, rate=None):
        self.dir = tempfile.mkdtemp(prefix="rpmcow-repo-")
        for p in packages:
            name = os.path.basename(p).rsplit(".", 2)[0] + ".rpm"
            _link_or_copy(p, os.path.join(self.dir, name))
        subprocess.run(["createrepo_c", "-q", self.dir], check=True)
        self._server = Server(self.dir, rate)
        self.url = self._server.url

    def set_rate(self, rate):
        """Serve the packages at `rate` bytes per second from now on (None:
        no limit)."""
        self._server.set_rate(rate)

    def close(self):
        self._server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _link_or_copy(src, dst):
    """A hard link where one can be made (not across mounts, even of one
    file system: a bind mount refuses with EXDEV), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


class LoopXFS:
    """A reflink-capable XFS image, loop-mounted (root only)."""

    def __init__(self, size_gib=4):
        self.tmp = tempfile.mkdtemp(prefix="rpmcow-xfs-")
        self.image = os.path.join(self.tmp, "xfs.img")
        self.path = os.path.join(self.tmp, "mnt")
        os.mkdir(self.path)
        with open(self.image, "wb") as f:
            f.truncate(size_gib << 30)
        self.mounted = False
        try:
            subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", self.image], check=True)
            subprocess.run(["mount", "-o", "loop", self.image, self.path], check=True)
            self.mounted = True
            self.device = _loop_device(self.path)
        except BaseException:
            self.close()
            raise

    def written_bytes(self):
        """Bytes written to the loop device so far (after a sync)."""
        subprocess.run(["sync"], check=True)
        with open("/sys/block/%s/stat" % os.path.basename(self.device)) as f:
            return int(f.read().split()[6]) * 512

    def used_bytes(self, settled=False):
        """Bytes in use; settled: once XFS has released every file removed
        so far (rpmcow.sharing.settle), not while it still does."""
        if settled:
            from . import sharing
            sharing.settle_path(self.path)
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def close(self):
        if self.mounted:
            for _ in range(20):
                if subprocess.run(["umount", self.path], stderr=subprocess.DEVNULL).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                # still busy (a descriptor left open in it): detach it from
                # the tree now, the kernel frees it when the last one closes
                subprocess.run(["umount", "--lazy", self.path], stderr=subprocess.DEVNULL)
            self.mounted = False
        if os.path.ismount(self.path):
            return                      # never remove files through a mount
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _loop_device(mountpoint):
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt = line.split()[:2]
            if mnt == mountpoint:
                return dev
    raise RuntimeError("%s is not mounted" % mountpoint)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def dnf_plugin_dirs():
    """(pluginpath, pluginconfpath) with the cow plugin: this checkout's
    dnf-plugins/ where rpmcow runs from a checkout, else dnf's own (where
    python3-dnf-plugin-cow installs it)."""
    here = os.path.join(CHECKOUT, "dnf-plugins")
    if os.path.isfile(os.path.join(here, "cow.py")):
        return here, here
    import dnf.const
    return dnf.const.PLUGINPATH, dnf.const.PLUGINCONFPATH


def dnf4_executable():
    """dnf 4's command: ``dnf-3`` (every dnf 4 ships it; on Fedora 41 and
    later ``dnf`` is dnf5), else ``dnf4``, else ``dnf``."""
    for name in ("/usr/bin/dnf-3", "/usr/bin/dnf4", "/usr/bin/dnf"):
        if os.access(name, os.X_OK):
            return name
    return "/usr/bin/dnf-3"


def run_dnf(root, repo_url, args, cow=True, keepcache=True, extra_pluginpath=None,
            cachedir=None, cow_conf=None):
    """Run the system dnf against the scenario repository.  Returns
    (returncode, output, wall seconds).  cachedir: a package cache shared by
    several roots, on the root's file system (dnf 4 keeps its cache inside
    --installroot: the root's var/cache/dnf is made a symbolic link to it).
    cow_conf: {option: value} set in a copy of cow.conf."""
    conf_dir = tempfile.mkdtemp(prefix="rpmcow-dnfconf-")
    try:
        reposd = os.path.join(conf_dir, "repos.d")
        os.mkdir(reposd)
        with open(os.path.join(reposd, "scenario.repo"), "w") as f:
            f.write("[scenario]\nname=rpmcow scenario\nbaseurl=%s\ngpgcheck=0\n" % repo_url)
        pluginpath, pluginconfpath = dnf_plugin_dirs()
        if cow_conf:
            with open(os.path.join(pluginconfpath, "cow.conf")) as f:
                text = f.read()
            for key, value in cow_conf.items():
                text = re.sub(r"(?m)^%s\s*=.*$" % re.escape(key), "", text)
                text += "\n%s = %s\n" % (key, value)
            pluginconfpath = os.path.join(conf_dir, "pluginconf")
            os.mkdir(pluginconfpath)
            with open(os.path.join(pluginconfpath, "cow.conf"), "w") as f:
                f.write(text)
        if extra_pluginpath:
            pluginpath += "," + extra_pluginpath
        cmd = [dnf4_executable(), "-y", "--installroot", root, "--releasever", "1",
               "--setopt=reposdir=" + reposd, "--setopt=pluginpath=" + pluginpath,
               "--setopt=pluginconfpath=" + pluginconfpath,
               "--setopt=keepcache=%d" % keepcache, "--setopt=install_weak_deps=0"]
        if cachedir:
            link = os.path.join(root, "var", "cache", "dnf")
            if not os.path.islink(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(cachedir, link)
        # the scenario measures cow alone (the module's name: dnf 4.5 matches no other)
        cmd.append("--disableplugin=sticky_vendor")
        if not cow:
            cmd.append("--disableplugin=cow")
        t0 = time.perf_counter()
        r = subprocess.run(cmd + list(args), capture_output=True, text=True,
                           env=dict(os.environ, HOME="/root", LC_ALL="C.UTF-8"))
        return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0
    finally:
        shutil.rmtree(conf_dir, ignore_errors=True)


TIMING_PLUGINS = os.path.join(HERE, "scenario_plugins")


class Usage:
    """What a command does to `xfs` while the block runs: bytes written to
    its device, and the peak and final disk use above the start (peak
    sampled every 20 ms).  Caches are dropped before and after."""

    def __init__(self, xfs):
        self.xfs = xfs

    def __enter__(self):
        drop_caches()
        self.w0, self.u0 = self.xfs.written_bytes(), self.xfs.used_bytes(settled=True)
        self._peak = self.u0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, self.xfs.used_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.written = self.xfs.written_bytes() - self.w0
        self.peak = max(self._peak, self.xfs.used_bytes()) - self.u0
        drop_caches()
        self.final = self.xfs.used_bytes(settled=True) - self.u0


def measure_install(xfs, repo, names, cow, root_name, keepcache=False):
    """``dnf install`` of `names` into a fresh root on `xfs`, caches dropped
    first.  Returns wall seconds, the rpm transaction's seconds (marked by
    the rpmtiming plugin at dnf's pre_transaction and transaction hooks; for
    cow after cow's own pre_transaction), bytes written to the device, peak
    and final disk use (bytes above the start; peak sampled every 20 ms),
    dnf's output and its cow summary line."""
    root = os.path.join(xfs.path, root_name)
    timing = tempfile.NamedTemporaryFile(prefix="rpmcow-timing-", delete=False).name
    os.environ["RPMCOW_BENCH_TIMING"] = timing
    try:
        with Usage(xfs) as use:
            rc, out, wall = run_dnf(root, repo.url, ["install"] + list(names), cow=cow,
                                    keepcache=keepcache, extra_pluginpath=TIMING_PLUGINS)
    finally:
        del os.environ["RPMCOW_BENCH_TIMING"]
    with open(timing) as f:
        marks = dict(line.split() for line in f if line.strip())
    os.unlink(timing)
    if rc != 0:
        raise RuntimeError("dnf failed (%s):\n%s" % ("cow" if cow else "stock", out[-3000:]))
    summary = [l for l in out.splitlines() if "packages installed copy-on-write" in l]
    rpm_s = float(marks["end"]) - float(marks["start"]) if len(marks) == 2 else float("nan")
    return {"wall": wall, "rpm": rpm_s, "written": use.written, "peak": use.peak,
            "final": use.final, "output": out, "cow_summary": summary[0] if summary else ""}


def image_builds(xfs, repo, names, cow, n_roots, log=None, share_tails="auto", label=None):
    """The image-build use case (many roots from one package cache, as mkosi
    builds them; rpm's reflink proposals #4265, #4294): `names` installed
    into `n_roots` fresh installroots one after the other, from one cache
    with keepcache=1 -- the first install downloads (and, with cow,
    transcodes), the others take the packages (and extents files) from the
    cache.  Returns one dict per root: wall seconds, bytes written, disk use
    added by that install (after sync and dropping caches)."""
    variant = label or (("cow" if share_tails != "no" else "cow-no-tails") if cow else "stock")
    base = os.path.join(xfs.path, "images-" + variant)
    cache = os.path.join(base, "cache")
    os.makedirs(cache)
    steps = []
    for i in range(n_roots):
        root = os.path.join(base, "root-%02d" % (i + 1))
        os.makedirs(root)
        with Usage(xfs) as use:
            rc, out, wall = run_dnf(root, repo.url, ["install"] + list(names), cow=cow,
                                    keepcache=True, cachedir=cache,
                                    cow_conf={"share_tails": share_tails})
        if rc != 0:
            raise RuntimeError("dnf failed (%s, root %d):\n%s" % (variant, i + 1, out[-3000:]))
        if cow and "packages installed copy-on-write" not in out:
            raise RuntimeError("dnf + cow installed nothing copy-on-write (root %d):\n%s"
                               % (i + 1, out[-3000:]))
        steps.append({"wall": wall, "written": use.written, "added": use.final})
        if log:
            log("%s root %d: %.2f s, %.0f MiB written, %.0f MiB more disk used"
                % (variant, i + 1, wall, use.written / MiB, use.final / MiB))
    return steps


def cumulative(steps, key):
    out, total = [], 0
    for s in steps:
        total += s[key]
        out.append(total)
    return out


def package_names(paths):
    return [os.path.basename(p).split("-1.0-1.")[0] for p in paths]


def dump(obj, path):
    with open(path + ".part", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.rename(path + ".part", path)


if __name__ == "__main__":
    print(json.dumps([p.__dict__ | {"files": len(p.files)} for p in plan(300, 16)], indent=1),
          file=sys.stderr)

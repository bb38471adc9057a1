"""dnf5 with the libdnf5 cow plugin (dnf-plugins/libdnf5/cow.cpp), against
stock dnf5, on loop-mounted XFS and btrfs (copy-on-write) and ext4 (the
stock fallback): real dnf5, real rpm, a real repository.

Each scenario runs dnf5 twice from one repository: into root ``stock``
without the plugin and into root ``cow`` with it (its cache under the root,
as dnf5 keeps it with --installroot), then compares the trees and rpmdbs,
checks ``rpm -V`` and which installed files share blocks with an extents
file.  The C++ plugin is built here against the suite's libdnf5 and loaded
through --setopt=pluginpath/pluginconfpath, with ``path`` in its cow.conf
pointing at this checkout; rpm loads the checkout's cow.so through the
private plugin directory rpmcow's ``activate`` step makes.

Needs dnf5, libdnf5's headers and g++ (Debian sid here: the compatibility
matrix); elsewhere every test skips, saying so."""
import shutil
import subprocess
from pathlib import Path

import pytest

from loopfs import btrfs_fs, ext4_fs, xfs_fs  # noqa: F401  (fixtures)
from pkgbuild import directory, regular, symlink
from rootcheck import DB, ENV, opt_tree, rpm_v, shared

from rpmcow import _build, scenario

ROOT = Path(__file__).resolve().parents[1]
DNF5 = shutil.which("dnf5")


def _missing():
    if DNF5 is None:
        return "dnf5 is not installed (dnf5 runs on Fedora 41 and later; here: Debian sid)"
    if not _build.dnf5_available():
        return "libdnf5's headers (libdnf5-dev) or g++ are missing: the plugin cannot be built"
    for tool in ("rpmbuild", "createrepo_c", "filefrag"):
        if shutil.which(tool) is None:
            return "%s is not installed" % tool
    return None


pytestmark = [pytest.mark.root, pytest.mark.skipif(_missing() is not None,
                                                   reason=_missing() or "")]


def data(n, seed):
    import random
    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def plugin_dirs(tmp_path_factory):
    """(pluginpath, pluginconfpath) with the freshly built plugin."""
    d = tmp_path_factory.mktemp("dnf5plugin")
    _build.build_dnf5_plugin(str(d / "lib"))
    conf = d / "conf"
    conf.mkdir()
    (conf / "cow.conf").write_text("[main]\nname = cow\nenabled = 1\npath = %s\n" % ROOT)
    return d / "lib", conf


@pytest.fixture(scope="module")
def repo_pkgs(pkgbuilder):
    """Packages by name-version: alpha 1.0/2.0, beta 1.0 (requires alpha)."""
    out = {}

    def files(name, seed, big):
        return [directory("/opt/" + name), regular("/opt/%s/big" % name, data(big, seed)),
                regular("/opt/%s/mid" % name, data(9000, seed + 1)),
                regular("/opt/%s/small" % name, b"hello %d" % seed),
                symlink("/opt/%s/ln" % name, "big")]
    out["alpha-1.0"] = pkgbuilder.build("alpha", files("alpha", 10, 3 << 20), version="1.0")
    out["alpha-2.0"] = pkgbuilder.build("alpha", files("alpha", 20, 3 << 20), version="2.0")
    out["beta-1.0"] = pkgbuilder.build("beta", files("beta", 30, 1 << 20), version="1.0",
                                       preamble="Requires: alpha")
    # fails to unpack where /opt/gamma/d is a directory already (the test makes it one)
    out["gamma-1.0"] = pkgbuilder.build("gamma", [directory("/opt/gamma"),
                                                  regular("/opt/gamma/big", data(2 << 20, 40)),
                                                  regular("/opt/gamma/d", b"a file")],
                                        version="1.0")
    # its %pretrans (lua, inside the root) rewrites the extents file of
    # "victim" in the cache between rpmcow's check and rpm's unpacking
    out["attacker-1.0"] = pkgbuilder.build(
        "attacker", [directory("/opt/attacker"), regular("/opt/attacker/f", b"x")],
        version="1.0", sections="""
%pretrans -p <lua>
for _, d in ipairs(posix.dir("/var/cache/libdnf5") or {}) do
  local dir = "/var/cache/libdnf5/" .. d .. "/packages/"
  for _, f in ipairs(posix.dir(dir) or {}) do
    if f:match("^victim.*%.cow%.rpm$") then
      local h = io.open(dir .. f, "r+b")
      if h then h:seek("end", -100); h:write("tampered"); h:close() end
    end
  end
end
""")
    # the same NEVRA as alpha-1.0, other content: a rebuild the cache may
    # still hold an extents file of the first build for
    out["alpha-1.0-rebuilt"] = pkgbuilder.build("alpha", files("alpha", 60, 3 << 20),
                                                version="1.0")
    out["victim-1.0"] = pkgbuilder.build("victim", [directory("/opt/victim"),
                                                    regular("/opt/victim/big",
                                                            data(2 << 20, 50))],
                                         version="1.0", preamble="Requires: attacker")
    # its %pretrans (lua, inside the root) overwrites victim2's package file
    # in the cache, after rpm's test run, with /swap/victim2.rpm (a rebuild of
    # the same NEVRA the test puts there)
    out["swapper-1.0"] = pkgbuilder.build(
        "swapper", [directory("/opt/swapper"), regular("/opt/swapper/f", b"x")],
        version="1.0", sections="""
%pretrans -p <lua>
local src = io.open("/swap/victim2.rpm", "rb")
if src then
  local data = src:read("a")
  src:close()
  for _, d in ipairs(posix.dir("/var/cache/libdnf5") or {}) do
    local dir = "/var/cache/libdnf5/" .. d .. "/packages/"
    for _, f in ipairs(posix.dir(dir) or {}) do
      if f:match("^victim2.*%.rpm$") and not f:match("%.cow%.rpm$") then
        local h = io.open(dir .. f, "wb")
        if h then h:write(data); h:close() end
      end
    end
  end
end
""")
    # its %posttrans (lua, inside the root) lists the extents files in the
    # cache once every package is installed, before dnf5's post_transaction
    out["observer-1.0"] = pkgbuilder.build(
        "observer", [directory("/opt/observer"), regular("/opt/observer/f", data(9000, 90))],
        version="1.0", sections="""
%posttrans -p <lua>
local seen = io.open("/var/cache/extents-seen", "w")
for _, d in ipairs(posix.dir("/var/cache/libdnf5") or {}) do
  local dir = "/var/cache/libdnf5/" .. d .. "/packages/"
  for _, f in ipairs(posix.dir(dir) or {}) do
    if f:match("%.cow%.rpm$") then seen:write(f .. "\\n") end
  end
end
seen:close()
""")
    for tag, seed in (("victim2-1.0", 70), ("victim2-1.0-rebuilt", 80)):
        out[tag] = pkgbuilder.build("victim2", [directory("/opt/victim2"),
                                                regular("/opt/victim2/big",
                                                        data(2 << 20, seed))],
                                    version="1.0", preamble="Requires: swapper")
    return out


class World:
    """A repository and two roots (stock, cow) in one area of a loop fs."""

    def __init__(self, fs, base, plugin_dirs, pkgs):
        self.fs = fs
        self.base = Path(base)
        self.repo = self.base / "repo"
        self.repo.mkdir()
        self.reposdir = self.base / "repos.d"
        self.reposdir.mkdir()
        self.pluginpath, self.pluginconf = plugin_dirs
        self.pkgs = pkgs

    def publish(self, *names, gpgcheck=False, url=None):
        for p in self.repo.glob("*.rpm"):
            p.unlink()
        for n in names:
            shutil.copy(self.pkgs[n], self.repo)
        subprocess.run(["createrepo_c", "-q", str(self.repo)], check=True)
        (self.reposdir / "t.repo").write_text(
            "[t]\nname=t\nbaseurl=%s\ngpgcheck=%d\nenabled=1\n"
            "metadata_expire=0\n" % (url or "file://%s" % self.repo, int(gpgcheck)))

    def root(self, which):
        r = self.base / which
        r.mkdir(exist_ok=True)
        return r

    def dnf5(self, which, *args, cow=None, keepcache=True):
        cow = which == "cow" if cow is None else cow
        argv = [DNF5, "-y", "--installroot=%s" % self.root(which), "--use-host-config",
                "--setopt=reposdir=%s" % self.reposdir, "--releasever=1",
                "--setopt=keepcache=%d" % int(keepcache)]
        if cow:
            argv += ["--setopt=pluginpath=%s" % self.pluginpath,
                     "--setopt=pluginconfpath=%s" % self.pluginconf]
        else:
            argv += ["--setopt=plugins=0"]
        return subprocess.run(argv + list(args), capture_output=True, text=True, env=ENV,
                              timeout=600)

    def both(self, *args, ok=True, **kw):
        rs = self.dnf5("stock", *args, **kw), self.dnf5("cow", *args, **kw)
        if ok:
            for r in rs:
                assert r.returncode == 0, r.stdout + r.stderr
        return rs

    def extents_files(self, which="cow"):
        return sorted(self.root(which).glob("var/cache/libdnf5/*/packages/*.cow.rpm"))


def rpmdb(root):
    r = subprocess.run(["rpm", "--root", str(root), "--dbpath", DB, "-qa", "--qf",
                        "%{NEVRA} %{SHA256HEADER} [%{PACKAGEDIGESTS} ]\n"],
                       capture_output=True, text=True, env=ENV)
    return sorted(r.stdout.splitlines())


def assert_same(w):
    assert opt_tree(w.root("cow")) == opt_tree(w.root("stock"))
    assert rpmdb(w.root("cow")) == rpmdb(w.root("stock"))
    v = rpm_v(w.root("cow"))
    assert (v.returncode, v.stdout) == (0, "")


@pytest.fixture(params=["xfs", "btrfs"])
def world(request, plugin_dirs, repo_pkgs):
    fs = request.getfixturevalue(request.param + "_fs")
    with fs.area_ctx(request.node.name) as base:
        yield World(fs, base, plugin_dirs, repo_pkgs)


@pytest.fixture
def xfs_world(request, plugin_dirs, repo_pkgs, xfs_fs):
    with xfs_fs.area_ctx(request.node.name) as base:
        yield World(xfs_fs, base, plugin_dirs, repo_pkgs)


def test_install_upgrade_downgrade_reinstall_distro_sync(world):
    """Every kind of inbound package goes copy-on-write; the result is
    stock dnf5's, file for file, in the rpmdb (rpm 6's package digests of
    the very packages included) and for rpm -V."""
    w = world
    w.publish("alpha-1.0", "alpha-2.0", "beta-1.0")
    _, r = w.both("install", "alpha-1.0", "beta")
    assert "cow: transcoded alpha-1.0-1.noarch" in r.stderr, r.stderr
    assert "cow: 2 of 2 packages installed copy-on-write, 4.0 MiB of file data shared" \
        in r.stderr, r.stderr
    assert shared(w.root("cow") / "opt/alpha/big") and shared(w.root("cow") / "opt/beta/big")
    assert not shared(w.root("stock") / "opt/alpha/big")
    assert_same(w)
    _, r = w.both("upgrade")
    assert "cow: transcoded alpha-2.0-1.noarch" in r.stderr, r.stderr
    assert shared(w.root("cow") / "opt/alpha/big")
    assert_same(w)
    w.both("downgrade", "alpha")
    assert shared(w.root("cow") / "opt/alpha/big")
    assert_same(w)
    w.both("reinstall", "beta")
    assert shared(w.root("cow") / "opt/beta/big")
    assert_same(w)
    _, r = w.both("distro-sync")
    # alpha 2.0 is in the cache with its extents file (keepcache=1): made
    # from these very bytes, it is used again, not made again
    assert "cow: transcoded" not in r.stderr, r.stderr
    assert "cow: 1 of 1 packages installed copy-on-write" in r.stderr, r.stderr
    assert shared(w.root("cow") / "opt/alpha/big")
    assert_same(w)


@pytest.mark.parametrize("keepcache", [True, False])
def test_keepcache(xfs_world, keepcache):
    """keepcache=1 keeps the extents files (sharing their blocks with the
    installed files); keepcache=0 removes each once its package is
    installed (seen by a %posttrans, after every package's install), so
    the cache never holds them all beside the root."""
    w = xfs_world
    w.publish("alpha-1.0", "observer-1.0")
    _, r = w.both("install", "alpha", "observer", keepcache=keepcache)
    seen = (w.root("cow") / "var/cache/extents-seen").read_text().split()
    assert len(seen) == (2 if keepcache else 0), seen
    assert ("cow: 2 of 2 packages installed copy-on-write, 3.0 MiB of file data %s"
            % ("shared with the cache" if keepcache else "cloned, not written again")) \
        in r.stderr, r.stderr
    assert bool(w.extents_files()) == keepcache
    assert not list(w.root("cow").glob("var/cache/libdnf5/*/packages/*.cow.plan"))
    assert shared(w.root("cow") / "opt/alpha/big") == keepcache
    assert_same(w)


def test_ext4_goes_the_stock_way(request, plugin_dirs, repo_pkgs, ext4_fs):
    with ext4_fs.area_ctx(request.node.name) as base:
        w = World(ext4_fs, base, plugin_dirs, repo_pkgs)
        w.publish("alpha-1.0")
        _, r = w.both("install", "alpha")
        assert "not on one filesystem that clones" in r.stderr, r.stderr
        assert not w.extents_files()
        assert_same(w)


def test_extents_file_changed_before_rpm_unpacks_goes_stock(xfs_world):
    """A %pretrans of another package rewrites victim's extents file after
    rpmcow judged it: the rpm plugin sees the change and rpm installs victim
    from the original package (rpm -V clean), with a warning."""
    w = xfs_world
    w.publish("attacker-1.0", "victim-1.0")
    _, r = w.both("install", "victim")
    assert "victim-1.0-1.noarch: installing the stock way: the extents file changed" \
        in r.stderr + r.stdout, r.stderr
    assert not shared(w.root("cow") / "opt/victim/big")
    assert_same(w)


def test_a_package_failing_to_unpack_fails_like_stock(xfs_world):
    """gamma cannot unpack (a directory where it has a file): dnf5 fails the
    transaction with the plugin as without it, and rpm leaves nothing of
    gamma behind."""
    w = xfs_world
    w.publish("gamma-1.0")
    for which in ("stock", "cow"):
        (w.root(which) / "opt/gamma/d/sub").mkdir(parents=True)
    rs, rc = w.both("install", "gamma", ok=False)
    assert rs.returncode != 0 and rc.returncode != 0
    assert rpmdb(w.root("cow")) == rpmdb(w.root("stock")) == []
    assert opt_tree(w.root("cow")) == opt_tree(w.root("stock"))


def test_gpgcheck_without_the_key_refuses_like_stock(xfs_world):
    """dnf5's own GPG check runs before anything of ours is used: a
    repository that asks for signatures it cannot check is refused the same
    way with the plugin."""
    w = xfs_world
    w.publish("alpha-1.0", gpgcheck=True)
    rs, rc = w.both("install", "alpha", ok=False)
    assert rs.returncode != 0 and rc.returncode != 0
    assert rpmdb(w.root("cow")) == rpmdb(w.root("stock")) == []


def test_denylist_and_downloadonly(xfs_world, tmp_path):
    w = xfs_world
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "cow.conf").write_text("[main]\nname = cow\nenabled = 1\npath = %s\n"
                                   "denylist = beta*\n" % ROOT)
    w.pluginconf = conf
    w.publish("alpha-1.0", "beta-1.0")
    r = w.dnf5("cow", "install", "--downloadonly", "alpha", "beta")
    assert r.returncode == 0, r.stderr
    assert not w.extents_files() and opt_tree(w.root("cow")) == {}
    _, r = w.both("install", "alpha", "beta")
    assert "beta-1.0-1.noarch.rpm installs the stock way: denied by 'beta*'" in r.stderr, \
        r.stderr
    assert shared(w.root("cow") / "opt/alpha/big")
    assert not shared(w.root("cow") / "opt/beta/big")
    assert_same(w)


def test_an_extents_file_of_other_bytes_is_never_used(xfs_world):
    """The cache keeps an extents file of alpha-1.0 (keepcache=1); the
    repository then serves a rebuild of the same NEVRA with other content.
    The old extents file records the digest of other input bytes: it is
    made again from the package dnf5 verified, and the root gets the
    rebuild's content (as stock dnf5 installs it)."""
    w = xfs_world
    w.publish("alpha-1.0")
    w.both("install", "alpha")
    old = w.extents_files()
    assert len(old) == 1
    old_mtime = old[0].stat().st_mtime_ns
    w.both("remove", "alpha")
    w.publish("alpha-1.0-rebuilt")
    for which in ("stock", "cow"):
        for p in w.root(which).glob("var/cache/libdnf5/*/packages/alpha-*.noarch.rpm"):
            p.unlink()        # a fresh download (the stock root has none kept)
        for p in w.root(which).glob("var/cache/libdnf5/*/repodata"):
            shutil.rmtree(p, ignore_errors=True)
    _, r = w.both("install", "alpha", "--refresh")
    assert "cow: transcoded alpha-1.0-1.noarch" in r.stderr, r.stderr
    assert w.extents_files()[0].stat().st_mtime_ns != old_mtime
    assert shared(w.root("cow") / "opt/alpha/big")
    assert_same(w)


def test_transcoding_follows_the_downloads(xfs_world):
    """Packages downloaded one at a time at 2 MiB/s: each is transcoded while
    the next downloads (dnf5 has no hook per download; librepo writes in
    place, and a package is taken once it has its full size): some extents
    file is complete before the last package's download is."""
    w = xfs_world
    server = scenario.Server(w.repo, rate=2 << 20)
    try:
        w.publish("alpha-1.0", "beta-1.0", "gamma-1.0", url=server.url)
        _, r = w.both("install", "alpha", "beta", "gamma",
                      "--setopt=max_parallel_downloads=1")
    finally:
        server.close()
    cache = w.root("cow") / "var/cache/libdnf5"
    pkgs = [p for p in cache.glob("*/packages/*.rpm") if not p.name.endswith(".cow.rpm")]
    ext = w.extents_files()
    assert len(pkgs) == 3 and len(ext) == 3, (pkgs, ext, r.stderr)
    last_download = max(p.stat().st_mtime for p in pkgs)
    first_extents = min(p.stat().st_mtime for p in ext)
    assert first_extents < last_download, (first_extents, last_download)
    assert r.stderr.count("cow: transcoded ") == 3, r.stderr
    assert_same(w)


def test_a_package_changed_after_the_test_run_is_refused(xfs_world):
    """Every package is served, so rpm's real run does not read and verify
    the originals a second time (rpm's test run on the same transaction set
    did; csrc/rpm_plugin_cow.c, "One verification pass, not two").  A
    %pretrans then overwrites victim2's package file in the cache with a
    rebuild of the same NEVRA, which nothing verified: rpm reads its header
    to install it, the rpm plugin finds it is not the header rpmcow judged,
    and refuses it.  Nothing of the rebuild is installed."""
    w = xfs_world
    w.publish("swapper-1.0", "victim2-1.0")
    swap = w.root("cow") / "swap"
    swap.mkdir()
    shutil.copy(w.pkgs["victim2-1.0-rebuilt"], swap / "victim2.rpm")
    r = w.dnf5("cow", "install", "victim2")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    # dnf5 writes rpm's errors into its log and says the transaction failed;
    # the refusal is on the terminal too (the rpm plugin writes it to stderr)
    log = "".join(p.read_text(errors="replace") for p in w.root("cow").glob("var/log/dnf5*.log"))
    assert "Transaction failed" in out, out
    assert "cow: victim2-1.0-1.noarch: not the package rpmcow checked" in log, log[-6000:]
    assert "cow: victim2-1.0-1.noarch: not the package rpmcow checked" in r.stderr, r.stderr
    big = w.root("cow") / "opt/victim2/big"
    assert not big.exists() or big.read_bytes() != data(2 << 20, 80)
    assert not [line for line in rpmdb(w.root("cow")) if line.startswith("victim2")]

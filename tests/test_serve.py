"""The rpm plugin serving payloads itself (rpmcow.serve, csrc/rpm_plugin_cow.c
"Serving"): stock ``rpm -i`` of the *original* package, with the plugin
enabled by macros and a feed plan, installs copy-on-write -- the path dnf5
takes (tests/test_dnf5_cow.py), tried here with the plain rpm command on
every rpm generation.  rpm's verification pass reads the original; at the
package's turn the plugin puts the feed in place of rpm's descriptor.
Anything wrong before that (a changed extents file, a damaged plan) leaves
rpm reading the original: the stock way, with a warning."""
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from loopfs import btrfs_fs, ext4_fs, xfs_fs  # noqa: F401  (fixtures)
from pkgbuild import directory, hardlink, regular, symlink
from rootcheck import DB, ENV, opt_tree, rpm_v, shared

from rpmcow import cache, feeder, rpmconfig, rpmplugin, serve, transcode

pytestmark = [pytest.mark.root]


def data(n, seed):
    import random
    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def pkgs(pkgbuilder):
    return {
        "sv": pkgbuilder.build("sv", [
            directory("/opt/sv"), regular("/opt/sv/big", data(3 << 20, 1)),
            regular("/opt/sv/mid", data(10000, 2)), regular("/opt/sv/small", b"hello"),
            symlink("/opt/sv/ln", "big"), hardlink("/opt/sv/big2", "/opt/sv/big"),
            regular("/opt/sv/empty", b"")]),
        "plain": pkgbuilder.build("plain", [
            directory("/opt/plain"), regular("/opt/plain/f", data(200000, 3))]),
    }


class Area:
    def __init__(self, fs, base):
        self.fs = fs
        self.base = Path(base)
        self.root = self.base / "root"
        self.stock = self.base / "stock"
        self.cache = self.base / "cache"
        self.plugins = self.base / "plugins"
        for d in (self.root, self.stock, self.cache, self.plugins):
            d.mkdir()
        so = rpmplugin.plugin_path()
        (self.plugins / "cow.so").symlink_to(so)

    def transcode(self, pkg):
        ext = self.cache / (Path(pkg).name[:-4] + ".cow.rpm")
        transcode.transcode_path(str(pkg), str(ext), target=rpmconfig.Target(str(self.root), DB))
        return ext

    def plan(self, pkg, ext, blk=4096, edit=None):
        fd = os.open(ext, os.O_RDONLY)
        try:
            feed = feeder.PackageFeed(fd, str(ext))
            if edit:
                edit(feed)
            plan = self.cache / (Path(pkg).name[:-4] + ".cow.plan")
            serve.write_plan(str(plan), serve.plan_bytes(feed, str(ext), os.fstat(fd),
                                                         os.stat(pkg), blk))
            return rpmplugin.header_key(feed.header), plan
        finally:
            os.close(fd)

    def rpm_i(self, *pkgs, serve_list=None, root=None):
        argv = ["rpm", "--root", str(root or self.root), "--dbpath", DB, "-i", "--nodeps"]
        if serve_list is not None:
            argv += ["--define", "__plugindir %s" % self.plugins,
                     "--define", "__transaction_cow %s/cow.so" % self.plugins,
                     "--define", "_rpmcow_serve %s" % serve.serve_entries(serve_list)]
        return subprocess.run(argv + [str(p) for p in pkgs], capture_output=True, text=True,
                              env=ENV, timeout=300)


@pytest.fixture(params=["xfs", "btrfs"])
def area(request):
    fs = request.getfixturevalue(request.param + "_fs")
    with fs.area_ctx(request.node.name) as base:
        yield Area(fs, base)


@pytest.fixture
def xfs_area(request, xfs_fs):
    with xfs_fs.area_ctx(request.node.name) as base:
        yield Area(xfs_fs, base)


def assert_like_stock(a, *pkgs):
    r = a.rpm_i(*pkgs, root=a.stock)
    assert r.returncode == 0, r.stderr
    assert opt_tree(a.root) == opt_tree(a.stock)
    v = rpm_v(a.root)
    assert v.returncode == 0 and not v.stdout, v.stdout + v.stderr


def test_rpm_i_of_the_original_installs_copy_on_write(area, pkgs):
    """The served package's files share their blocks with the extents file;
    the plain package beside it installs the stock way (rpm's own file-digest
    check on) -- both exactly as stock rpm installs them."""
    sv, plain = pkgs["sv"], pkgs["plain"]
    key, plan = area.plan(sv, area.transcode(sv))
    r = area.rpm_i(sv, plain, serve_list={key: str(plan)})
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    assert shared(area.root / "opt/sv/big")
    assert not shared(area.root / "opt/plain/f")
    assert_like_stock(area, sv, plain)


def test_ext4_copies_and_says_so(request, ext4_fs, pkgs):
    with ext4_fs.area_ctx(request.node.name) as base:
        a = Area(ext4_fs, base)
        sv = pkgs["sv"]
        key, plan = a.plan(sv, a.transcode(sv))
        r = a.rpm_i(sv, serve_list={key: str(plan)})
        assert r.returncode == 0, r.stderr
        assert "copying file data instead of cloning" in r.stderr, r.stderr
        assert_like_stock(a, sv)


@pytest.mark.parametrize("change", ["touched", "others-can-write", "replaced"])
def test_extents_file_changed_after_the_plan_goes_stock(xfs_area, pkgs, change):
    """The plan binds the extents file judged (inode, mtime, root-only): a
    change since means rpm reads the original -- never content nobody
    checked."""
    a = xfs_area
    sv = pkgs["sv"]
    ext = a.transcode(sv)
    key, plan = a.plan(sv, ext)
    if change == "touched":
        os.utime(ext, ns=(1, 1))
    elif change == "others-can-write":
        os.chmod(ext, 0o666)
    else:
        tmp = ext.with_suffix(".new")
        shutil.copyfile(ext, tmp)
        os.replace(tmp, ext)
    r = a.rpm_i(sv, serve_list={key: str(plan)})
    assert r.returncode == 0, r.stderr
    assert "installing the stock way" in r.stderr, r.stderr
    assert not shared(a.root / "opt/sv/big")
    assert_like_stock(a, sv)


@pytest.mark.parametrize("damage", ["truncated", "magic", "order", "kind", "not-root-only"])
def test_damaged_plan_goes_stock(xfs_area, pkgs, damage):
    a = xfs_area
    sv = pkgs["sv"]
    key, plan = a.plan(sv, a.transcode(sv))
    b = bytearray(plan.read_bytes())
    if damage == "truncated":
        b = b[:-3]
    elif damage == "magic":
        b[0] ^= 1
    elif damage == "order":
        b[-4:] = struct.pack("<I", 0xFFFFFF)      # an archive entry past the files
    elif damage == "kind":
        plen = struct.unpack_from("<H", b, 64)[0]
        b[66 + plen] = 0x80                      # the first file's kind: the gate
    plan.write_bytes(bytes(b))
    if damage == "not-root-only":
        os.chmod(plan, 0o666)
    r = a.rpm_i(sv, serve_list={key: str(plan)})
    assert r.returncode == 0, r.stderr
    assert "installing the stock way" in r.stderr, r.stderr
    assert_like_stock(a, sv)


def test_a_feed_rpm_cannot_read_fails_the_package_and_rpm_rolls_back(xfs_area, pkgs):
    """Past the point of no return (rpm reads the feed), a feed rpm cannot
    unpack -- here a plan naming another container than the header's, which
    no check before the swap looks at -- fails the package: nothing of it
    stays, the rpmdb does not have it."""
    a = xfs_area
    sv = pkgs["sv"]
    key, plan = a.plan(sv, a.transcode(sv))
    b = bytearray(plan.read_bytes())
    b[8:12] = struct.pack("<I", 1 if struct.unpack_from("<I", b, 8)[0] != 1 else 5)
    plan.write_bytes(bytes(b))
    r = a.rpm_i(sv, serve_list={key: str(plan)})
    assert r.returncode != 0, r.stderr
    q = subprocess.run(["rpm", "--root", str(a.root), "--dbpath", DB, "-q", "sv"],
                       capture_output=True, text=True)
    assert q.returncode != 0
    assert not (a.root / "opt/sv/small").exists()
    assert not (a.root / "opt/sv/big").exists()


def test_a_package_not_in_the_list_is_not_served(xfs_area, pkgs):
    a = xfs_area
    sv, plain = pkgs["sv"], pkgs["plain"]
    key, plan = a.plan(sv, a.transcode(sv))
    r = a.rpm_i(plain, serve_list={key: str(plan)})
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert_like_stock(a, plain)


def test_no_plugin_symbols_but_the_hooks(tmp_path):
    """The plugin links the feed writer in: nothing of it is exported (it
    shares processes with rpmcow's own C core)."""
    so = rpmplugin.plugin_path()
    r = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True)
    names = {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}
    assert names <= {"cow_hooks", "rpmcow_plugin_drain", "rpmcow_plugin_result",
                     "rpmcow_plugin_clear_results", "rpmcow_plugin_served_only"}, names
    assert "cow_hooks" in names


def _cached_and_transcoded(a, pkgs, name):
    """(package, extents file) in the area's cache, as dnf would have them."""
    from rpmcow import dnf5cow
    pkg = Path(a.cache) / (name + ".rpm")
    shutil.copyfile(pkgs[name], pkg)
    ext = Path(dnf5cow.extents_path(str(pkg)))
    transcode.transcode_path(str(pkg), str(ext), target=rpmconfig.Target(str(a.root), DB))
    return pkg, ext


def test_prepare_uses_an_extents_file_only_of_the_very_bytes(xfs_area, pkgs, pkgbuilder):
    """The dnf plugins (dnf5's prepare step, dnf 4's transcoding) take an
    extents file made earlier (while downloading, or kept in the cache) only
    if the input digest it records is the digest of the package file now;
    one someone else can change, never."""
    a = xfs_area
    sv, ext = _cached_and_transcoded(a, pkgs, "sv")
    assert cache.made_from(str(ext), str(sv))
    # the same name, other bytes (a rebuild, a download restarted elsewhere)
    other = pkgbuilder.build("sv", [directory("/opt/sv"), regular("/opt/sv/big", data(4096, 9))])
    shutil.copyfile(other, sv)
    assert not cache.made_from(str(ext), str(sv))
    shutil.copyfile(pkgs["sv"], sv)
    assert cache.made_from(str(ext), str(sv))
    os.chmod(ext, 0o664)
    assert not cache.made_from(str(ext), str(sv))
    ext.unlink()
    assert not cache.made_from(str(ext), str(sv))




def _made_from_without_hashing(monkeypatch, ext, package):
    """made_from with the package's hashing failing: True only where the
    extents file's binding (cache.SOURCE_XATTR) stood in for it."""
    def no_hashing(fd):
        raise AssertionError("the package was hashed")
    with monkeypatch.context() as m:
        m.setattr(cache, "_sha256", no_hashing)
        return cache.made_from(str(ext), str(package))


def test_made_from_binds_a_settled_root_only_package(xfs_area, pkgs, monkeypatch):
    """Every image root made_from hashed the whole package again.  The first
    hash of a package file only root can change, modified long enough ago
    (cache.SETTLED_NS), is recorded on the extents file: later checks of the
    same inode, size and modification time need not read it; any other
    package file, or a changed one, is hashed again."""
    a = xfs_area
    sv, ext = _cached_and_transcoded(a, pkgs, "sv")
    # modified just now: hashed, not bound
    assert cache.made_from(str(ext), str(sv))
    assert not _made_from_without_hashing(monkeypatch, ext, sv)
    monkeypatch.setattr(cache, "SETTLED_NS", 0)
    assert cache.made_from(str(ext), str(sv))              # hashed, and bound
    assert os.getxattr(str(ext), cache.SOURCE_XATTR).startswith(b"v2 ")
    assert _made_from_without_hashing(monkeypatch, ext, sv)
    # changed in place (same size), its modification time then set back, as
    # a download that keeps the server's time does: the inode's change time
    # cannot be set back, so it is hashed again, and not the bytes recorded
    before = os.stat(sv)
    raw = bytearray(sv.read_bytes())
    raw[-1] ^= 0xFF
    with open(sv, "r+b") as f:
        f.write(raw)
    os.utime(sv, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(sv).st_mtime_ns == before.st_mtime_ns
    assert not _made_from_without_hashing(monkeypatch, ext, sv)
    assert not cache.made_from(str(ext), str(sv))
    # bound in another boot (a crash may have cost the file blocks since):
    # hashed again
    shutil.copyfile(pkgs["sv"], sv)
    assert cache.made_from(str(ext), str(sv))
    assert _made_from_without_hashing(monkeypatch, ext, sv)
    from rpmcow import record
    monkeypatch.setattr(record, "boot_id", lambda: b"00000000-0000-4000-8000-000000000000")
    assert not _made_from_without_hashing(monkeypatch, ext, sv)
    monkeypatch.undo()
    monkeypatch.setattr(cache, "SETTLED_NS", 0)
    # the same bytes again, in a new inode: hashed, then bound to that one
    sv.unlink()
    shutil.copyfile(pkgs["sv"], sv)
    assert not _made_from_without_hashing(monkeypatch, ext, sv)
    assert cache.made_from(str(ext), str(sv))
    assert _made_from_without_hashing(monkeypatch, ext, sv)
    # a package file someone else could change is hashed every time
    os.chown(sv, 65534, 65534)
    assert not _made_from_without_hashing(monkeypatch, ext, sv)
    assert cache.made_from(str(ext), str(sv))
    os.chown(sv, 0, 0)
    os.chmod(sv, 0o666)
    assert not _made_from_without_hashing(monkeypatch, ext, sv)
    os.chmod(sv, 0o644)
    assert cache.made_from(str(ext), str(sv))
    # another extents file's binding names another package's digest
    _, other = _cached_and_transcoded(a, pkgs, "plain")
    os.setxattr(str(other), cache.SOURCE_XATTR, os.getxattr(str(ext), cache.SOURCE_XATTR))
    assert not _made_from_without_hashing(monkeypatch, other, sv)
    assert not cache.made_from(str(other), str(sv))

def _vouched(a, ext):
    """Whether the extents file's record still vouches for its blobs: its
    install check hashes none of them."""
    from rpmcow import checksig
    with open(ext, "rb") as f:
        ev = checksig.require_for_install(f.fileno(), rpmconfig.Target(str(a.root), DB),
                                          "digest")
    return "File digests" not in [it.label for it in ev.items]


def test_made_from_does_not_bind_where_it_would_void_the_record(xfs_area, pkgs, monkeypatch):
    """Recording the binding changes the extents file's attributes, hence
    its ctime; the transcoder's record vouches for the blobs only while the
    ctime is within record.CTIME_SLACK_NS of the mtime it gave the file.
    Bound later than that (an image build a day after the first), every
    later install would hash every blob to save hashing the package: the
    binding is then left out, and the package hashed each time."""
    from rpmcow import record
    a = xfs_area
    sv, ext = _cached_and_transcoded(a, pkgs, "sv")
    assert _vouched(a, ext)
    monkeypatch.setattr(cache, "SETTLED_NS", 0)
    monkeypatch.setattr(record, "CTIME_SLACK_NS", 2 * 10**9)
    time.sleep(2.5)
    assert cache.made_from(str(ext), str(sv))
    with pytest.raises(OSError):
        os.getxattr(str(ext), cache.SOURCE_XATTR)
    assert _vouched(a, ext)
    assert not _made_from_without_hashing(monkeypatch, ext, sv)


@pytest.mark.parametrize("lie", ["small-file-blob", "symlink", "size"])
def test_a_plan_that_disagrees_with_the_header_goes_stock(xfs_area, pkgs, lie):
    """The plan says what to feed; with rpm's file-digest check off for a
    served package, every entry must match the header rpm verified: a small
    file's blob (fed as is, not cloned) must be the one its digest names, a
    symlink's target and a file's size the header's.  A plan that says
    otherwise -- here pointing /opt/sv/small at another blob of the file --
    would install other content; the plugin refuses it and rpm installs the
    original."""
    a = xfs_area
    sv = pkgs["sv"]

    def edit(feed):
        files, order = feed.plan()
        paths = [p.decode() for p in feed.package.files.paths]
        out = []
        for fx, (k, size, blob, link) in enumerate(files):
            name = paths[fx].rsplit("/", 1)[-1]
            if lie == "small-file-blob" and name == "small":
                mid = files[paths.index(next(p for p in paths if p.endswith("/mid")))]
                blob = mid[2]
            elif lie == "symlink" and name == "ln":
                link = b"mid"
                size = len(link)
            elif lie == "size" and name == "mid":
                size -= 1
            out.append((k, size, blob, link))
        feed.plan = lambda: (out, order)

    key, plan = a.plan(sv, a.transcode(sv), edit=edit)
    r = a.rpm_i(sv, serve_list={key: str(plan)})
    assert r.returncode == 0, r.stderr
    assert "installing the stock way: the feed plan does not match the package's header" \
        in r.stderr, r.stderr
    assert (a.root / "opt/sv/small").read_bytes() == b"hello"
    assert os.readlink(a.root / "opt/sv/ln") == "big"
    assert_like_stock(a, sv)

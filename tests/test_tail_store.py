"""Shared tails (rpmcow.tailstore, csrc/rpm_plugin_cow.c "shared tails"):
the image-build case, one package installed into several roots from one
cache.  With --share-tails the second root's files share every block with
the cache -- the last, partial one and small files included -- and hold the
same bytes as stock rpm's; an entry of the store that is not root's alone
is never cloned from; `rpmcow cache` reports and cleans the store."""
import hashlib
import os
import shutil
import stat

import pytest

from pkgbuild import directory, regular
from test_install import (BLK, DB, ENV, Site, assert_same_tree, db_files, installed, pattern,
                          rpm_verify, run, rpmcow_argv, shared_bytes)
from loopfs import btrfs_fs, xfs_fs  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.root]

FILES = {
    "/opt/tails/big": pattern(3 * BLK + 1000, 61),     # whole blocks and a tail
    "/opt/tails/blocks": pattern(2 * BLK, 62),         # whole blocks only
    "/opt/tails/small": pattern(700, 63),              # smaller than a block
    "/opt/tails/one": b"1",
    "/opt/tails/same-small": pattern(700, 63),         # the same content: one tail
    "/opt/tails/sub/text": b"text\n" * 300,
}


@pytest.fixture(scope="module")
def tails_pkg(pkgbuilder):
    files = [directory("/opt/tails"), directory("/opt/tails/sub")]
    files += [regular(path, data) for path, data in FILES.items()]
    return pkgbuilder.build("tails", files)


def tails_of():
    """{store name: bytes} the store must hold for FILES."""
    out = {}
    for data in FILES.values():
        tail = data[len(data) - len(data) % BLK:]
        if tail:
            out[hashlib.sha256(tail).hexdigest()] = tail
    return out


class Roots(Site):
    """The Site's stock root and extents file cache, and roots cow-1, cow-2
    installed with one tail store in the cache (outside every root)."""

    def __init__(self, fs, base):
        super().__init__(fs, base)
        self.store = self.cache / "rpmcow-tails"

    def root(self, i):
        return self.base / ("cow-%d" % i)

    def install_into(self, i, ext, ok=True, store=None):
        return self.install("--nodeps", "--noscripts", "--share-tails", store or self.store,
                            ext, root=self.root(i), ok=ok)


def _roots(request, fstype):
    fs = request.getfixturevalue(fstype + "_fs")
    with fs.area_ctx(request.node.name) as base:
        yield Roots(fs, base)


@pytest.fixture(params=["xfs", "btrfs"])
def roots(request):
    yield from _roots(request, request.param)


@pytest.fixture
def xfs_roots(request):
    yield from _roots(request, "xfs")


def fully_shared(root):
    """{path: shared bytes} of the package's files that are not shared to
    their last byte."""
    out = {}
    for path, mode, size, *_ in db_files(root):
        if stat.S_ISREG(mode) and size:
            got = shared_bytes(str(root) + path, size)
            if got < size:
                out[path] = "%d of %d" % (got, size)
    return out


def same_as_stock(r, root):
    assert_same_tree(r.stock, root)
    assert rpm_verify(root) == (0, ""), rpm_verify(root)


def test_second_root_shares_every_block(roots, tails_pkg):
    r = roots
    r.rpm("-i", "--nodeps", "--noscripts", tails_pkg)
    ext = r.transcode(tails_pkg, root=r.root(1))
    r.install_into(1, ext)
    same_as_stock(r, r.root(1))
    # the first root wrote its tails and stored them: root's, 0700/0600
    assert stat.S_IMODE(os.stat(r.store).st_mode) == 0o700
    stored = {n: (r.store / n).read_bytes() for n in os.listdir(r.store)}
    assert stored == tails_of()
    for n in stored:
        st = os.lstat(r.store / n)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    r.install_into(2, ext)
    same_as_stock(r, r.root(2))
    if r.fs.fstype == "xfs":          # (btrfs keeps files this small inline: no extents)
        assert fully_shared(r.root(2)) == {}
        # the first root wrote each distinct tail once (rpm goes in path
        # order), and cloned it for a later file with the same one
        first = {}
        for p in sorted(FILES):
            d = FILES[p]
            if len(d) % BLK:
                first.setdefault(d[len(d) - len(d) % BLK:], p)
        assert set(fully_shared(r.root(1))) == set(first.values())
    # the first root is untouched by the second
    same_as_stock(r, r.root(1))


BAD_ENTRIES = {
    "writable by others": lambda p, data: (p.write_bytes(data), os.chmod(p, 0o666)),
    "a symbolic link": lambda p, data: (p.with_name("decoy").write_bytes(data),
                                        os.chmod(p.with_name("decoy"), 0o600),
                                        os.symlink("decoy", p)),
    "a second link": lambda p, data: (p.write_bytes(data), os.chmod(p, 0o600),
                                      os.link(p, p.with_name("elsewhere"))),
    "another user's": lambda p, data: (p.write_bytes(data), os.chmod(p, 0o600),
                                       os.chown(p, 65534, 65534)),
}


@pytest.mark.parametrize("how", sorted(BAD_ENTRIES))
def test_a_tail_only_root_could_not_have_written_is_not_used(xfs_roots, tails_pkg, how):
    """Each entry holds other bytes of the right size under the right name:
    cloning from it would install them.  The plugin judges the descriptor it
    would clone from, ignores the entry, writes the file's own bytes, and
    replaces the entry."""
    r = xfs_roots
    r.rpm("-i", "--nodeps", "--noscripts", tails_pkg)
    ext = r.transcode(tails_pkg, root=r.root(1))
    r.store.mkdir(mode=0o700)
    victim = FILES["/opt/tails/big"][3 * BLK:]
    name = hashlib.sha256(victim).hexdigest()
    BAD_ENTRIES[how](r.store / name, b"X" * len(victim))
    r.install_into(1, ext)
    same_as_stock(r, r.root(1))
    assert (r.root(1) / "opt/tails/big").read_bytes()[3 * BLK:] == victim
    entry = os.lstat(r.store / name)
    assert stat.S_ISREG(entry.st_mode) and entry.st_nlink == 1 and entry.st_uid == 0
    assert (r.store / name).read_bytes() == victim


def test_store_that_others_can_open_is_refused(xfs_roots, tails_pkg):
    r = xfs_roots
    ext = r.transcode(tails_pkg, root=r.root(1))
    r.store.mkdir(mode=0o755)
    os.chmod(r.store, 0o755)
    res = r.install_into(1, ext, ok=False)
    assert res.returncode != 0
    assert "tail store %s must be a directory only its owner" % r.store in res.stderr
    assert installed(r.root(1)) == []
    link = r.cache / "link"
    os.symlink(r.store, link)
    res = r.install_into(1, ext, ok=False, store=link)
    assert res.returncode != 0 and "not a directory" in res.stderr, res.stderr
    assert installed(r.root(1)) == []


def test_plugin_checks_the_store_itself(xfs_roots, tails_pkg):
    """The plugin judges the directory it is given on its own descriptor:
    one anybody can write (here named by the host's ~/.rpmmacros, which
    rpmcow does not check) gets a warning, and the tails are written."""
    r = xfs_roots
    r.rpm("-i", "--nodeps", "--noscripts", tails_pkg)
    ext = r.transcode(tails_pkg, root=r.root(1))
    r.store.mkdir(mode=0o777)
    os.chmod(r.store, 0o777)
    home = r.base / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%%_rpmcow_tails %s\n" % r.store)
    res = r.install("--nodeps", "--noscripts", ext, root=r.root(1),
                    env=dict(ENV, HOME=str(home)))
    assert "%s: not a directory only root can open: tails are written, not shared" \
        % r.store in res.stderr, res.stderr
    assert os.listdir(r.store) == []
    same_as_stock(r, r.root(1))


def test_cache_reports_and_cleans_the_store(xfs_roots, tails_pkg):
    r = xfs_roots
    ext = r.transcode(tails_pkg, root=r.root(1))
    r.install_into(1, ext)
    r.install_into(2, ext)
    n = len(tails_of())
    st = run(rpmcow_argv() + ["cache", "status", "--root", r.root(2), "--dbpath", DB,
                              r.cache], check=True)
    assert "tail store %s: %d tails" % (r.store, n) in st.stdout, st.stdout
    # root 2 shares every tail: nothing to clean
    c = run(rpmcow_argv() + ["cache", "clean", "--root", r.root(2), "--dbpath", DB,
                             r.cache], check=True)
    assert len(os.listdir(r.store)) == n, c.stdout
    # root 2 goes (root 1 wrote its own tails): every tail can go
    shutil.rmtree(r.root(2))
    stale = r.store / (".%s.1.1" % ("0" * 64))
    stale.write_bytes(b"interrupted")
    os.utime(stale, (1, 1))
    c = run(rpmcow_argv() + ["cache", "clean", "--root", r.root(1), "--dbpath", DB,
                             r.cache], check=True)
    # root 1 cloned the tail its two files with one content share
    dup = hashlib.sha256(FILES["/opt/tails/small"]).hexdigest()
    assert os.listdir(r.store) == [dup], c.stdout
    assert "%d tails no installed file shares" % n in c.stdout, c.stdout
    shutil.rmtree(r.root(1))
    run(rpmcow_argv() + ["cache", "clean", "--root", r.stock, "--dbpath", DB, r.cache],
        check=True)
    assert os.listdir(r.store) == []


def test_store_on_another_filesystem_is_left_alone(xfs_roots, request, tails_pkg):
    """No clone from it could reach the root: the plugin neither stores
    there nor tries, and the files are right."""
    r = xfs_roots
    btrfs = request.getfixturevalue("btrfs_fs")
    r.rpm("-i", "--nodeps", "--noscripts", tails_pkg)
    ext = r.transcode(tails_pkg, root=r.root(1))
    with btrfs.area_ctx("elsewhere") as elsewhere:
        store = elsewhere / "tails"
        for i in (1, 2):
            r.install_into(i, ext, store=store)
            same_as_stock(r, r.root(i))
        assert os.listdir(store) == []

"""End to end: stock dnf 4 with the ``cow`` plugin from this checkout, against a
signed repository served over HTTP on 127.0.0.1 (tests/dnfrepo.py), into
install roots on loop-mounted XFS and btrfs (copy-on-write) and ext4 (the
stock path).

Each transaction is checked from outside: the NEVRAs rpm has installed,
``rpm -Va`` clean, the plugin's summary ("N of M packages installed
copy-on-write"), and -- with the extents files kept in the cache -- that every
whole block of every installed regular file of at least one block is in a
"shared" extent that physically lies inside its package's extents file.
"""
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from dnfrepo import chroot_delay, dnf_repo  # noqa: F401  (fixtures)
from dnfrepo import (RPMFILE_CONFIG, chroot_delay_env, extents, installed_regular_files,
                     rpm_import_key, rpm_qa, rpm_va, stock_messages, stray_host_tree, summary,
                     transcoded, unshared_blocks)
from loopfs import btrfs_fs, ext4_fs, xfs_fs  # noqa: F401
from test_install import FAULT, _rpm_before_417, fault_plugin, needs_worker  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
COW_FS = ["xfs", "btrfs"]

DEMO_10 = "cowdemo-1.0-1.noarch"
DEMO_11 = "cowdemo-1.1-1.noarch"
GZ = "cowgz-1.0-1.noarch"
NONE = "cownone-1.0-1.noarch"
BZ2 = "cowbz2-1.0-1.noarch"
BROKEN = "cowbroken-1.0-1.noarch"


@pytest.fixture(params=COW_FS)
def cow_area(request):
    """A fresh directory on the session's loop XFS or btrfs, removed afterwards."""
    fs = request.getfixturevalue(request.param + "_fs")
    with fs.area_ctx(request.node.name) as area:
        yield area


@pytest.fixture
def ext4_area(ext4_fs):
    with ext4_fs.area_ctx("ext4") as area:
        yield area


def all_cow(repo):
    """Packages every one of which installs copy-on-write: ours and the corpus's."""
    return [DEMO_10, GZ, NONE] + repo.corpus


def corpus_pick(repo, name):
    hits = [n for n in repo.corpus if repo.name_of(n) == name]
    if not hits:
        pytest.skip("corpus package %s is not in the test repository: %s"
                    % (name, repo.skipped_corpus))
    return hits[0]


# ---- checks -------------------------------------------------------------------

def check_state(d, expected):
    """The root holds exactly `expected` (besides gpg-pubkey) and verifies clean."""
    got = rpm_qa(d.root)
    assert got == set(expected), ("installed %s, expected %s\n%s"
                                  % (sorted(got), sorted(expected), d.transcript()))
    rc, out = rpm_va(d.root)
    assert (rc, out) == (0, ""), "rpm -Va in %s:\n%s\n%s" % (d.root, out, d.transcript())
    junk = stray_host_tree(d.root)
    assert junk is None, "%s was made inside the root (by host path while chrooted)" % junk


def check_cow(d, text, nevras, n=None, m=None):
    """The transaction whose output is `text` installed `nevras` copy-on-write:
    the summary says n of m (default: all of them), and their files share
    blocks with their extents files in the cache."""
    n = len(nevras) if n is None else n
    m = len(nevras) if m is None else m
    assert summary(text) == (n, m), "expected 'cow: %d of %d ...':\n%s" % (n, m, text)
    for nevra in nevras:
        check_shared(d, nevra)


def check_shared(d, nevra):
    cache = d.extents_file_of(nevra)
    assert cache is not None, "no extents file for %s in %s: %s" % (
        nevra, d.cachedir, d.cache_files())
    name = d.repo.name_of(nevra)
    bs = os.statvfs(d.root).f_bsize
    checked = 0
    for path, size, flags in installed_regular_files(d.root, name, with_flags=True):
        if size < bs:
            continue
        if flags & RPMFILE_CONFIG and d.kept(path):
            continue          # rpm leaves an unchanged %config file alone (FA_TOUCH)
        problems = unshared_blocks(d.root / path.lstrip("/"), cache)
        assert not problems, "%s of %s (%d bytes) does not share its data with %s: %s" % (
            path, nevra, size, cache.name, problems)
        checked += 1
    assert checked, "%s has no regular file of a block or more to check" % nevra


def check_not_shared(d, nevra):
    """No block of the package's files of a block or more is in a shared extent
    (a stock install)."""
    bs = os.statvfs(d.root).f_bsize
    for path, size in installed_regular_files(d.root, d.repo.name_of(nevra)):
        if size < bs:
            continue
        _, ext = extents(d.root / path.lstrip("/"))
        shared = [e for e in ext if e.shared]
        assert not shared, "%s of %s has shared extents %s" % (path, nevra, shared)


def no_cow_messages(text):
    return summary(text) is None and not transcoded(text) and "copy-on-write" not in text


# ---- transactions on a reflink filesystem ----------------------------------------

def _private_plugin_dirs():
    import glob
    import tempfile
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "rpmcow-plugins.*")))


def test_install(dnf_repo, cow_area):
    d = dnf_repo.dnf(cow_area / "root")
    want = all_cow(dnf_repo)
    before = _private_plugin_dirs()
    out = d.ok("install", *want)
    check_state(d, want)
    assert transcoded(out) == set(want), out
    check_cow(d, out, want)
    assert stock_messages(out) == {}, out
    # the private plugin directory is gone, though rpm chrooted dnf meanwhile
    assert _private_plugin_dirs() <= before


def test_upgrade_downgrade_reinstall(dnf_repo, cow_area):
    d = dnf_repo.dnf(cow_area / "root")
    etc = corpus_pick(dnf_repo, "binary-in-etc")

    out = d.ok("install", DEMO_10, etc)
    check_state(d, [DEMO_10, etc])
    check_cow(d, out, [DEMO_10, etc])

    out = d.ok("upgrade")
    check_state(d, [DEMO_11, etc])
    check_cow(d, out, [DEMO_11])
    assert (d.root / "opt/cowdemo/big").read_bytes().endswith(b"cowdemo big 1.1")

    out = d.ok("downgrade", "cowdemo")
    check_state(d, [DEMO_10, etc])
    check_cow(d, out, [DEMO_10])
    assert (d.root / "opt/cowdemo/big").read_bytes().endswith(b"cowdemo big 1.0")

    # cowdemo 1.0 is in the cache since the first install: nothing is downloaded
    out = d.ok("reinstall", "cowdemo")
    check_state(d, [DEMO_10, etc])
    check_cow(d, out, [DEMO_10])


def test_remove_and_history_undo(dnf_repo, cow_area):
    d = dnf_repo.dnf(cow_area / "root")
    etc = corpus_pick(dnf_repo, "binary-in-etc")
    others = [n for n in dnf_repo.corpus if n != etc]

    out = d.ok("install", DEMO_10, etc)                     # transaction 1
    check_cow(d, out, [DEMO_10, etc])
    out = d.ok("install", GZ, *others)                      # transaction 2
    check_state(d, [DEMO_10, etc, GZ] + others)
    check_cow(d, out, [GZ] + others)

    out = d.ok("remove", etc)                               # transaction 3
    check_state(d, [DEMO_10, GZ] + others)
    assert summary(out) is None, out
    assert not (d.root / "etc/hello").exists()

    out = d.ok("history", "undo", "2")                      # undo the install
    check_state(d, [DEMO_10])
    assert summary(out) is None, out

    out = d.ok("history", "undo", "3")                      # undo the remove: installs
    check_state(d, [DEMO_10, etc])
    check_cow(d, out, [etc])


def test_denylisted_package_installs_the_stock_way(dnf_repo, cow_area):
    go = corpus_pick(dnf_repo, "go-package")
    conf = (ROOT / "dnf-plugins" / "cow.conf").read_text()
    conf = conf.replace("\ndenylist =", "\ndenylist = kernel*, go-*")
    assert "go-*" in conf
    d = dnf_repo.dnf(cow_area / "root", plugin_conf=conf)
    want = all_cow(dnf_repo)
    out = d.ok("install", *want)
    check_state(d, want)
    cow = [n for n in want if n != go]
    check_cow(d, out, cow, len(cow), len(want))
    assert stock_messages(out) == {
        dnf_repo.files[go]: "denied by 'go-*' in cow.conf"}, out
    assert go not in transcoded(out), out
    assert d.extents_file_of(go) is None
    check_not_shared(d, go)


def test_bzip2_package_installs_the_stock_way_beside_cow_ones(dnf_repo, cow_area):
    """bzip2 has no stored mode, so there is no cheap feed: that package installs
    from its original file, the others copy-on-write, in one transaction."""
    d = dnf_repo.dnf(cow_area / "root")
    out = d.ok("install", BZ2, DEMO_10, GZ)
    check_state(d, [BZ2, DEMO_10, GZ])
    check_cow(d, out, [DEMO_10, GZ], 2, 3)
    stock = stock_messages(out)
    assert list(stock) == [dnf_repo.files[BZ2]], out
    assert "bzip2" in stock[dnf_repo.files[BZ2]], out
    check_not_shared(d, BZ2)


def _gpgcheck_reads_payload():
    """dnf's gpgcheck runs rpmkeys on the whole package; dnf 4.5 (Debian 11)
    checks the header's signature alone (dnf.rpm.miscutils.checkSig)."""
    import dnf.rpm.miscutils
    return hasattr(dnf.rpm.miscutils, "_verifyPackageUsingRpmkeys")


def test_corrupted_package_fails_as_without_the_plugin(dnf_repo, cow_area):
    """cowbroken's payload was corrupted before createrepo_c: the download
    checks pass, dnf's gpgcheck (rpmkeys, payload digest) fails."""
    etc = corpus_pick(dnf_repo, "binary-in-etc")
    results = {}
    before = _private_plugin_dirs()
    for plugin in (True, False):
        d = dnf_repo.dnf(cow_area / ("root-%s" % ("cow" if plugin else "stock")))
        rc, out, err = d("install", BROKEN, etc, plugin=plugin)
        results[plugin] = (rc, err, rpm_qa(d.root, keys=True), d)
    (rc, err, qa, d), (rc0, err0, qa0, d0) = results[True], results[False]
    assert rc0 != 0, "stock dnf installed a corrupted package:\n" + d0.transcript()
    if _gpgcheck_reads_payload():
        assert "GPG check FAILED" in err0, d0.transcript()
    else:               # dnf 4.5: rpm's test transaction finds it
        assert re.search(r"cowbroken\S* does not verify: Payload \S+( ALT)? digest: BAD",
                         err0), d0.transcript()
    assert rc == rc0, "exit %d with the plugin, %d without\n%s" % (rc, rc0, d.transcript())
    assert err.replace(str(d.root), "ROOT") == err0.replace(str(d0.root), "ROOT")
    # nothing but the imported key, in both
    assert {n for n in qa if not n.startswith("gpg-pubkey-")} == set(), qa
    assert qa == qa0
    assert summary(d.transcript()) is None
    assert d.extents_file_of(BROKEN) is None
    rc, out = rpm_va(d.root)
    assert (rc, out) == (0, "")
    # no hook ran after the failure: the private plugin directory went at exit
    assert _private_plugin_dirs() <= before


# ---- the cache ----------------------------------------------------------------------

def test_keepcache_0_leaves_no_extents_files(dnf_repo, cow_area):
    d = dnf_repo.dnf(cow_area / "root", keepcache=0)
    etc = corpus_pick(dnf_repo, "binary-in-etc")
    out = d.ok("install", DEMO_10, etc)
    check_state(d, [DEMO_10, etc])
    assert summary(out) == (2, 2), out
    # nothing stays shared with a cache that goes: say what was saved instead
    assert "cloned, not written again (the cache is not kept)" in out, out
    assert "shared with the cache" not in out, out
    assert d.extents_files() == [] and d.cache_files() == [], d.cache_files()
    out = d.ok("upgrade")
    check_state(d, [DEMO_11, etc])
    assert summary(out) == (1, 1), out
    assert d.cache_files() == [], d.cache_files()


def test_keepcache_1_keeps_extents_files_until_clean(dnf_repo, cow_area):
    d = dnf_repo.dnf(cow_area / "root", keepcache=1)
    want = all_cow(dnf_repo)
    out = d.ok("install", *want)
    check_state(d, want)
    check_cow(d, out, want)
    assert "of file data shared with the cache" in out, out
    assert sorted(p.name for p in d.extents_files()) == sorted(
        dnf_repo.files[n][:-4] + ".cow.rpm" for n in want)
    d.ok("clean", "packages")
    assert d.cache_files() == [], d.cache_files()
    check_state(d, want)            # the installed files keep their data


def test_keepcache_1_uses_a_kept_extents_file_again(dnf_repo, cow_area):
    """A reinstall from the cache (keepcache=1) takes the extents file made
    the first time from the very same bytes (cache.made_from): nothing is
    transcoded again, and the files of both installs share its blocks."""
    d = dnf_repo.dnf(cow_area / "root", keepcache=1)
    out = d.ok("install", DEMO_10)
    assert transcoded(out), out
    ext = d.extents_file_of(DEMO_10)
    before = ext.stat()
    out = d.ok("reinstall", DEMO_10)
    check_state(d, [DEMO_10])
    assert not transcoded(out), out
    after = d.extents_file_of(DEMO_10).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    check_cow(d, out, [DEMO_10])


@pytest.mark.parametrize("keepcache,keep,kept", [(0, "always", True), (1, "never", False)])
def test_keep_option_overrides_keepcache(dnf_repo, cow_area, keepcache, keep, kept):
    conf = (ROOT / "dnf-plugins" / "cow.conf").read_text().replace(
        "\nkeep = auto", "\nkeep = %s" % keep)
    assert "\nkeep = %s" % keep in conf
    d = dnf_repo.dnf(cow_area / "root", keepcache=keepcache, plugin_conf=conf)
    want = [DEMO_10, GZ]
    out = d.ok("install", *want)
    check_state(d, want)
    assert summary(out) == (2, 2), out
    names = sorted(p.name for p in d.extents_files())
    assert names == (sorted(dnf_repo.files[n][:-4] + ".cow.rpm" for n in want) if kept else [])
    # dnf's own keepcache still decides about the downloaded packages
    plain = sorted(p.name for p in d.cache_files() if not p.name.endswith(".cow.rpm"))
    assert plain == (sorted(dnf_repo.files[n] for n in want) if keepcache else [])
    if kept:
        d.ok("clean", "packages")
        assert d.cache_files() == []


def test_downloadonly_does_not_transcode(dnf_repo, cow_area):
    d = dnf_repo.dnf(cow_area / "root", keepcache=0)
    want = all_cow(dnf_repo)
    out = d.ok("install", "--downloadonly", *want)
    assert no_cow_messages(out), out
    assert d.extents_files() == []
    assert sorted(p.name for p in d.cache_files()) == sorted(dnf_repo.files[n] for n in want)
    check_state(d, [])


# ---- no reflink: the stock path ------------------------------------------------------

def test_ext4_installs_the_stock_way(dnf_repo, ext4_area):
    d = dnf_repo.dnf(ext4_area / "root", keepcache=1)
    want = all_cow(dnf_repo)
    out = d.ok("install", *want)
    check_state(d, want)
    assert no_cow_messages(out), out
    assert d.extents_files() == []
    assert len(d.cache_files()) == len(want)
    log = (d.root / "var/log/dnf.log").read_text(errors="replace")
    assert "cow: not used:" in log and "not on one filesystem that clones" in log
    out = d.ok("upgrade")
    check_state(d, [n for n in want if n != DEMO_10] + [DEMO_11])
    assert no_cow_messages(out), out
    assert d.extents_files() == []


def test_cache_on_another_filesystem_installs_the_stock_way(dnf_repo, xfs_fs, btrfs_fs):
    """Root on XFS, dnf's cache bind-mounted from btrfs: both clone, but not
    into each other, so the plugin stays out."""
    with xfs_fs.area_ctx("xdev-root") as area, btrfs_fs.area_ctx("xdev-cache") as cache:
        d = dnf_repo.dnf(area / "root")
        d.cachedir.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(cache), str(d.cachedir)], check=True)
        try:
            want = [DEMO_10, GZ]
            out = d.ok("install", *want)
            check_state(d, want)
            assert no_cow_messages(out), out
            assert d.extents_files() == []
            assert len(d.cache_files()) == len(want)
            log = (d.root / "var/log/dnf.log").read_text(errors="replace")
            assert "not on one filesystem that clones" in log
        finally:
            subprocess.run(["umount", str(d.cachedir)], check=True)


# ---- transcoding in the background while rpm works ----------------------------------

def test_transcoding_survives_rpms_chroot(dnf_repo, cow_area, chroot_delay):
    """The plugin transcodes in worker threads while dnf goes on with gpgcheck and
    rpm's transaction check and test. librpm chroot()s the whole process into the
    install root for parts of those (rpmtsPrepare), for a few milliseconds each.
    A worker that opens, creates, renames or execs anything by path meanwhile
    resolves it inside the root. Here the first such window is held open for
    0.5 s (an LD_PRELOADed chroot() that sleeps after chrooting) while one worker
    still has packages queued: every package must still install copy-on-write,
    and nothing may appear in the root that no package put there."""
    conf = (ROOT / "dnf-plugins" / "cow.conf").read_text()
    conf = conf.replace("\nworkers = 0", "\nworkers = 1")
    assert "\nworkers = 1" in conf
    d = dnf_repo.dnf(cow_area / "root", plugin_conf=conf)
    rpm_import_key(d.root, dnf_repo.key.pubkey)   # dnf's import would let the worker catch up
    want = all_cow(dnf_repo)
    out = d.ok("install", *want, env=chroot_delay_env(chroot_delay, 500))
    assert stray_host_tree(d.root) is None, "made inside the root: %s" % sorted(
        str(p.relative_to(d.root)) for p in stray_host_tree(d.root).rglob("*"))
    assert stock_messages(out) == {}, out
    check_state(d, want)
    check_cow(d, out, want)



def _tampered_local_package(pkgbuilder, tmp_path):
    """(genuine bytes, tampered bytes) of an unsigned package with an
    uncompressed payload, one byte of a file's content flipped inside the
    .rpm: it unpacks, but neither its payload digest nor the file's digest
    matches."""
    from pkgbuild import directory, regular
    data = bytes((i * 7 + 13) % 251 for i in range(40000))
    pkg = pkgbuilder.build("cowtampered", [directory("/opt/cowtampered"),
                                           regular("/opt/cowtampered/data", data)],
                           compressor="none")
    genuine = pkg.read_bytes()
    raw = bytearray(genuine)
    at = raw.find(data[:256])
    assert at > 0
    raw[at + 20000] ^= 0xFF
    return genuine, bytes(raw)


TAMPER_PLUGIN = """
import os
import dnf


class Tamper(dnf.Plugin):
    # the attacker, between rpm's test run (which checks the payload digest)
    # and the real one: rewrites the command-line package in place
    name = "tamper"

    def pre_transaction(self):
        src, dst = os.environ.get("TAMPER_SRC"), os.environ.get("TAMPER_DST")
        if src and dst:
            with open(src, "rb") as f:
                data = f.read()
            with open(dst, "r+b") as f:
                f.write(data)
"""


def test_local_package_rewritten_after_rpms_test_run(dnf_repo, cow_area, pkgbuilder, tmp_path):
    """A command-line package goes the stock way beside copy-on-write ones, and
    is rewritten in place after rpm's test run checked it.  rpm's file-digest
    and payload checks are off for the whole real run while extents files are
    fed; the plugin must still refuse that package's changed content, as
    stock dnf (rpm's file-digest check) does."""
    genuine, tampered = _tampered_local_package(pkgbuilder, tmp_path)
    bad = tmp_path / "tampered.bytes"
    bad.write_bytes(tampered)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tamper.py").write_text(TAMPER_PLUGIN)
    results = {}
    for plugin in (True, False):
        pkg = tmp_path / ("cow" if plugin else "stock") / "cowtampered-1.0-1.noarch.rpm"
        pkg.parent.mkdir()
        pkg.write_bytes(genuine)
        d = dnf_repo.dnf(cow_area / ("root-%s" % ("cow" if plugin else "stock")))
        rc, out, err = d("--setopt=pluginpath=%s,%s" % (ROOT / "dnf-plugins", plugins),
                         "install", pkg, DEMO_10, plugin=plugin,
                         env={"TAMPER_SRC": str(bad), "TAMPER_DST": str(pkg)})
        assert pkg.read_bytes() == tampered, "the attacker did not run:\n" + d.transcript()
        results[plugin] = (rc, rpm_qa(d.root), d)
    (rc, qa, d), (rc0, qa0, d0) = results[True], results[False]
    assert rc0 != 0, "stock dnf installed a tampered package:\n" + d0.transcript()
    assert not any(n.startswith("cowtampered-") for n in qa0), (qa0, d0.transcript())
    # the real run fed cowdemo from its extents file (rpm's checks off) ...
    assert summary(d.transcript()) == (1, 2), d.transcript()
    # ... and the plugin refused cowtampered's changed file
    assert "Digest mismatch" in d.transcript(), d.transcript()
    assert rc != 0, "the tampered package was installed with the cow plugin:\n" + d.transcript()
    assert not any(n.startswith("cowtampered-") for n in qa), (qa, d.transcript())
    assert not (d.root / "opt" / "cowtampered" / "data").exists()


READ_METER_PLUGIN = """
import os
import dnf
import dnf.yum.rpmtrans


class ReadMeter(dnf.Plugin):
    # how far rpm's test run read each package: its descriptor's offset as the
    # test run closes it (rpm reads through a dup, which shares the offset)
    name = "readmeter"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        out = os.open(os.environ["READMETER_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        cls = dnf.yum.rpmtrans.RPMTransaction
        close_file = cls._instCloseFile

        def _instCloseFile(cb, key):
            if cb.test and cb.fd is not None:
                fd = cb.fd.fileno()
                name = cb._extract_cbkey(key)[0].pkg.name
                os.write(out, ("%s %d %d\\n" % (name, os.lseek(fd, 0, os.SEEK_CUR),
                                                os.fstat(fd).st_size)).encode())
            return close_file(cb, key)
        cls._instCloseFile = _instCloseFile
"""


def _test_run_reads(d, tmp_path, *args, plugin_conf=None):
    """Install args; {package name: (bytes rpm's test run read of it at most, size)}."""
    plugins = tmp_path / "meter"
    plugins.mkdir(exist_ok=True)
    (plugins / "readmeter.py").write_text(READ_METER_PLUGIN)
    out = tmp_path / "reads.txt"
    if out.exists():
        out.unlink()
    text = d.ok("--setopt=pluginpath=%s,%s" % (ROOT / "dnf-plugins", plugins), "install",
                *args, env={"READMETER_OUT": str(out)})
    reads = {}         # the test run opens each package more than once: the most it read
    for line in out.read_text().splitlines():
        name, offset, size = line.split()
        reads[name] = (max(int(offset), reads.get(name, (0, 0))[0]), int(size))
    return text, reads


SPAWN_METER_PLUGIN = """
import os
import dnf


class SpawnMeter(dnf.Plugin):
    # every rpmkeys the dnf process starts: its file arguments, a line each
    name = "spawnmeter"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        out = os.open(os.environ["SPAWNMETER_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        spawn = os.posix_spawnp

        def posix_spawnp(path, argv, *args, **kwargs):
            if path == "rpmkeys":
                files = [a for a in argv if a == "-" or a.startswith("/dev/fd/")]
                os.write(out, (" ".join(files) + "\\n").encode())
            return spawn(path, argv, *args, **kwargs)
        os.posix_spawnp = posix_spawnp
"""


def test_one_rpmkeys_judges_every_extents_file_of_a_transaction(dnf_repo, cow_area, tmp_path):
    """Judging each extents file before rpm runs started an rpmkeys per
    package (~40 ms each, most of it rpmkeys' own start): one now checks
    the headers of every package of the transaction (up to
    verify.HeaderChecks.LIMIT a process)."""
    plugins = tmp_path / "meter"
    plugins.mkdir()
    (plugins / "spawnmeter.py").write_text(SPAWN_METER_PLUGIN)
    out = tmp_path / "spawns.txt"
    d = dnf_repo.dnf(cow_area / "root")
    want = all_cow(dnf_repo)
    text = d.ok("--setopt=pluginpath=%s,%s" % (ROOT / "dnf-plugins", plugins), "install", *want,
                env={"SPAWNMETER_OUT": str(out)})
    check_state(d, want)
    check_cow(d, text, want)
    runs = [line.split() for line in out.read_text().splitlines()]
    batched = [r for r in runs if r and r[0].startswith("/dev/fd/")]
    assert len(want) > 1 and len(batched) == 1 and len(batched[0]) == len(want), runs


def test_rpms_test_run_reads_headers_only_when_every_package_is_fed(dnf_repo, cow_area,
                                                                     tmp_path):
    """Every package fed from its extents file (whose transcode checked the
    payload and file digests, and which is bound to the bytes dnf verified):
    rpm's test run checks the headers only, as the real run does, and reads no
    original's payload -- where rpm can (4.18 to 6.0); elsewhere, whole."""
    from rpmcow import rpmplugin
    d = dnf_repo.dnf(cow_area / "root")
    want = all_cow(dnf_repo)
    out, reads = _test_run_reads(d, tmp_path, *want)
    check_state(d, want)
    check_cow(d, out, want)
    names = {dnf_repo.name_of(n) for n in want}
    assert set(reads) == names, (reads, d.transcript())
    for name, (offset, size) in reads.items():
        if rpmplugin.PAYLOADLESS_VERIFY_PASS:
            assert offset < size, "rpm's test run read all of %s (%d bytes)" % (name, size)
        else:
            assert offset == size, (name, offset, size)


def test_rpms_test_run_reads_everything_when_a_package_goes_stock(dnf_repo, cow_area,
                                                                  tmp_path):
    """One package denied (it installs from its original file, and rpm's test
    run is its only payload-digest check): the test run verifies every package
    whole, as stock dnf's does."""
    go = corpus_pick(dnf_repo, "go-package")
    conf = (ROOT / "dnf-plugins" / "cow.conf").read_text()
    conf = conf.replace("\ndenylist =", "\ndenylist = kernel*, go-*")
    d = dnf_repo.dnf(cow_area / "root", plugin_conf=conf)
    want = all_cow(dnf_repo)
    out, reads = _test_run_reads(d, tmp_path, *want)
    check_state(d, want)
    assert stock_messages(out) == {dnf_repo.files[go]: "denied by 'go-*' in cow.conf"}, out
    assert set(reads) == {dnf_repo.name_of(n) for n in want}, (reads, d.transcript())
    for name, (offset, size) in reads.items():
        assert offset == size, "rpm's test run read %d of %d bytes of %s" % (offset, size, name)


# ---- image builds: roots from one shared cache ----------------------------------------

def _shared_cache_roots(repo, area, n, plugin_conf=None):
    """n roots whose var/cache/dnf is one cache outside all of them."""
    cache = area / "cache"
    cache.mkdir()
    roots = []
    for i in range(n):
        d = repo.dnf(area / ("root-%d" % (i + 1)), keepcache=1, plugin_conf=plugin_conf)
        d.cachedir.parent.mkdir(parents=True)
        d.cachedir.symlink_to(cache)
        roots.append(d)
    return cache, roots


def _unshared_tails(d, nevra):
    """Files of the package (of any size) not shared to their last byte."""
    out = []
    for path, size in installed_regular_files(d.root, d.repo.name_of(nevra)):
        bs, ext = extents(d.root / path.lstrip("/"))
        covered = sum(min((e.logical + e.length) * bs, size) - e.logical * bs
                      for e in ext if e.shared and e.logical * bs < size)
        if size and covered < size:
            out.append(path)
    return out


def test_roots_sharing_a_cache_share_their_tails(dnf_repo, xfs_fs):
    """share_tails=auto: the cache is outside the installroots, so the tails
    go to <cache>/rpmcow-tails and the second root clones them all."""
    with xfs_fs.area_ctx("image-tails") as area:
        cache, (one, two) = _shared_cache_roots(dnf_repo, area, 2)
        want = [DEMO_10, GZ, NONE]
        for d in (one, two):
            out = d.ok("install", *want)
            check_state(d, want)
            check_cow(d, out, want)
        store = cache / "rpmcow-tails"
        assert store.is_dir() and stat.S_IMODE(store.stat().st_mode) == 0o700
        assert len(os.listdir(store)) > 0
        assert any(_unshared_tails(one, n) for n in want)   # the first root wrote them
        for nevra in want:
            assert _unshared_tails(two, nevra) == [], nevra


def test_share_tails_no(dnf_repo, xfs_fs):
    conf = (ROOT / "dnf-plugins" / "cow.conf").read_text()
    conf = conf.replace("\nshare_tails = auto", "\nshare_tails = no")
    assert "\nshare_tails = no" in conf
    with xfs_fs.area_ctx("image-no-tails") as area:
        cache, (one, two) = _shared_cache_roots(dnf_repo, area, 2, plugin_conf=conf)
        for d in (one, two):
            out = d.ok("install", DEMO_10)
            check_cow(d, out, [DEMO_10])
        assert not (cache / "rpmcow-tails").exists()
        assert _unshared_tails(two, DEMO_10)


# ---- the rpm plugin's worker thread under dnf -----------------------------------------
# Where no other plugin reads file content (rpmplugin.Activation.worker_ok) the
# rpm plugin clones on a thread of its own while rpm goes on; dnf's callbacks
# release the feed's gate once rpm has read the last entry's header
# (feeder.Stream.release_after).  A failed clone must fail the package, and
# rpm roll it back, also where rpm skips the last entry (tsflags=nodocs).

DOC = "cowdoc-1.0-1.noarch"


@pytest.mark.parametrize("pkg,fault,opts", [
    (DEMO_10, "/opt/cowdemo/big", []),
    (DOC, "/opt/cowdoc/b", ["--setopt=tsflags=nodocs"]),
])
def test_worker_failure_fails_the_package(dnf_repo, xfs_fs, fault_plugin, pkg, fault, opts):
    needs_worker()
    with xfs_fs.area_ctx("worker-fault") as area:
        d = dnf_repo.dnf(area / "root")
        rc, out, err = d("install", pkg, *opts, env={FAULT: fault, "RPMCOW_PLUGIN": fault_plugin})
        assert rc != 0, d.transcript()
        assert "cannot clone (fault injected by RPMCOW_TEST_FAULT_PATH)" in out + err, \
            d.transcript()
        assert pkg not in rpm_qa(d.root)
        if not _rpm_before_417():
            top = d.root / fault.lstrip("/").rsplit("/", 1)[0]
            left = [p for p in top.rglob("*") if not p.is_dir()] if top.exists() else []
            assert not left, left


def test_worker_with_the_last_entry_skipped(dnf_repo, cow_area):
    """rpm skips the %doc file the archive ends with: the gate is released
    from dnf's progress callback, and the package installs copy-on-write."""
    needs_worker()
    d = dnf_repo.dnf(cow_area / "root")
    out = d.ok("install", DOC, "--setopt=tsflags=nodocs")
    check_state(d, [DOC])
    assert summary(out) == (1, 1), out
    assert not (d.root / "opt/cowdoc/zz-README").exists()
    cache = d.extents_file_of(DOC)
    for c in "abcd":
        assert unshared_blocks(d.root / "opt/cowdoc" / c, cache) == [], c

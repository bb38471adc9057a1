"""What `rpmcow install` trusts, attacked by a local unprivileged user.

Root runs ``rpmcow install --root ROOT ...``; the attacker (uid ``nobody``)
owns a package or extents file that root installs, or simply has a copy of
root's own extents file put under another name.  Every test plays one attack
and asserts the *safe* outcome, which is either of:

* refused: rpmcow exits non-zero, names the package, and nothing of the
  package is installed (other packages of the transaction may be);
* the genuine content: the package is installed, ``rpm -V`` of the root is
  clean, and the attacked file holds exactly the bytes the signed header
  describes (for the signature attack: the installed header is signed).

Installed tampered content fails the test with a message saying so.

Where the attacker's write has to land between rpmcow's check and rpm's use
of the file, a wrapper named ``rpmkeys`` first in PATH runs the real
``/usr/bin/rpmkeys`` and, after it has judged the package, rewrites the
package file in place (same inode) -- as ``nobody``, who owns it.  The
wrapper only makes the timing deterministic; the attacker could race for it.
The attacker's processes drop to ``nobody`` with setuid; the loop areas live
under a root-only (0700) temporary directory, so they reach their own files
through directory descriptors root opened for them (that bypasses only the
search permission on the ancestors, not the file's own permissions).
"""
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from conftest import corpus_path
from loopfs import xfs_fs  # noqa: F401  (fixture)
from pkgbuild import directory, regular
from test_install import (DB, installed, pattern, rpm_verify, rpmcow_argv,  # noqa: F401
                          run, xfs_site)

CORPUS = corpus_path()
TESTDATA = CORPUS / "rpm-testdata"
SIGNED = TESTDATA / "hello-2.0-1.x86_64-signed.rpm"
UNSIGNED = TESTDATA / "hello-2.0-1.x86_64.rpm"
KEY = TESTDATA / "rpm.org-rsa-2048-test.pub"
SIGNED_OTHER = TESTDATA / "hlinktest-1.0-1.noarch-v3sig.rpm"     # signed with KEY too

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not all(p.is_file()
                                         for p in (SIGNED, UNSIGNED, KEY, SIGNED_OTHER)),
                                 reason="package corpus not found at %s" % CORPUS)]

NOBODY = 65534
NOGROUP = 65534
RPMKEYS = "/usr/bin/rpmkeys"
PY = "/usr/bin/python3"                 # what the attacker runs (no venv needed)
RECORD_PREFIX = "    rpmcow record: "

VICTIM = "/opt/victim/data"
VICTIM_DATA = pattern(40000, 201)
FLIP_AT = 20000                          # the byte of VICTIM the attacker changes
OTHER_DATA = pattern(20000, 301)


# ---------------------------------------------------------------- packages

@pytest.fixture(scope="module")
def pkgs(pkgbuilder):
    """victim (uncompressed payload: its file content lies in the package
    as it is), its tampered copy (one content byte flipped: decompression
    still works, the payload and file digests do not match), other (the
    extents file that makes a transaction mixed), swap (two files of one
    size)."""
    out = {}
    out["victim"] = pkgbuilder.build("victim", [
        directory("/opt/victim"),
        regular(VICTIM, VICTIM_DATA),
        regular("/opt/victim/small", b"small\n"),
    ], compressor="none")
    raw = bytearray(out["victim"].read_bytes())
    at = raw.find(VICTIM_DATA[:256])
    assert at > 0 and raw.find(VICTIM_DATA[:256], at + 1) < 0, "victim content not found once"
    out["victim_flip"] = at + FLIP_AT        # offset of the flipped byte in the .rpm
    raw[at + FLIP_AT] ^= 0xFF
    out["victim_tampered_bytes"] = bytes(raw)
    out["other"] = pkgbuilder.build("other", [
        directory("/opt/other"),
        regular("/opt/other/data", OTHER_DATA),
        regular("/opt/other/small", b"other\n"),
    ])
    out["swap"] = pkgbuilder.build("swap", [
        directory("/opt/swap"),
        regular("/opt/swap/a", pattern(16384, 401)),
        regular("/opt/swap/b", pattern(16384, 402)),
    ])
    return out


def tampered_victim():
    data = bytearray(VICTIM_DATA)
    data[FLIP_AT] ^= 0xFF
    return bytes(data)


def header_files(pkg):
    """{path: file digest bytes} of a package's regular files."""
    import rpm as rpmlib
    ts = rpmlib.TransactionSet()
    ts.setVSFlags(rpmlib._RPMVSF_NOSIGNATURES)
    with open(pkg, "rb") as f:
        h = ts.hdrFromFdno(f.fileno())
    return {f.name: bytes.fromhex(f.digest) for f in rpmlib.files(h) if f.digest}


def sections(path):
    from rpmcow import extents
    fd = os.open(path, os.O_RDONLY)
    try:
        return extents.read_sections(fd)
    finally:
        os.close(fd)


def blob_offset(ext, digest):
    off = sections(ext).lookup(digest)
    assert off is not None, "%s: no blob for %s" % (ext, digest.hex())
    return off


def patch(path, offset, data):
    """Overwrite bytes of a file in place."""
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


def give_to_nobody(path):
    os.chown(path, NOBODY, NOGROUP)
    os.chmod(path, 0o644)


# ---------------------------------------------------------------- outcomes

def _read(root, path):
    p = Path(str(root) + path)
    return p.read_bytes() if p.is_file() else None


def assert_safe(site, r, name, nevra, genuine, attack):
    """Refused (non-zero, names `name`, nothing of the package in the root)
    or installed with exactly the genuine content.  genuine: {path: bytes}."""
    got = {p: _read(site.cow, p) for p in genuine}
    tampered = sorted(p for p in genuine if got[p] is not None and got[p] != genuine[p])
    assert not tampered, (
        "%s: tampered content installed at %s (rpmcow install exit %d, %s in the rpmdb: %s; "
        "rpm -V: %r)\nrpmcow stderr:\n%s" % (
            attack, ", ".join(tampered), r.returncode, nevra,
            nevra in installed(site.cow), rpm_verify(site.cow), r.stderr.strip()))
    if nevra in installed(site.cow):
        missing = sorted(p for p in genuine if got[p] is None)
        assert not missing, "%s: %s installed without %s" % (attack, nevra, missing)
        assert rpm_verify(site.cow) == (0, ""), "%s: rpm -V of the root: %r" % (
            attack, rpm_verify(site.cow))
    else:
        assert r.returncode != 0, "%s: exit 0 but %s is not installed:\n%s" % (
            attack, nevra, r.stderr)
        assert name in r.stderr, "%s: refused without naming %s:\n%s" % (attack, name, r.stderr)
        left = sorted(p for p in genuine if got[p] is not None)
        assert not left, "%s: refused, but files of %s are in the root: %s" % (
            attack, nevra, left)


def stock_refuses(site, pkg, level):
    """Stock rpm -i at %_pkgverify_level `level` refuses the package."""
    r = site.rpm("--define", "_pkgverify_level %s" % level, "-i", "--nodeps", "--noscripts",
                 pkg, ok=False)
    assert r.returncode != 0, "stock rpm at level %s installed %s" % (level, pkg)
    assert installed(site.stock) == [], installed(site.stock)
    return r


# ---------------------------------------------------------------- the attacker's rpmkeys

WRAPPER = r'''#!/usr/bin/python3
# rpmkeys, then -- once the real one has judged the target package, whether
# rpmcow named its path or handed it a descriptor on stdin (the file itself,
# or a copy with the same bytes) -- the attacker (nobody) rewrites the
# target file in place: same inode, new bytes.
import hashlib, os, stat, subprocess, sys
CONF = %(conf)r
rc = subprocess.call([CONF["rpmkeys"]] + sys.argv[1:])


def is_target(fd):
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return False
    t = os.stat(CONF["target"])
    if (st.st_dev, st.st_ino) == (t.st_dev, t.st_ino):
        return True
    return st.st_size == CONF["size"] and \
        hashlib.sha256(os.pread(fd, st.st_size, 0)).hexdigest() == CONF["sha256"]


def judged_target():
    if is_target(0):                       # rpmkeys ... - < package
        return True
    for arg in sys.argv[1:]:               # rpmkeys ... PATH (or /proc/self/fd/N)
        try:
            fd = os.open(arg, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if is_target(fd):
                return True
        finally:
            os.close(fd)
    return False


if os.path.exists(CONF["trigger"]) and judged_target():
    os.unlink(CONF["trigger"])
    dfd = os.open(os.path.dirname(CONF["target"]), os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(CONF["gid"])
            os.setuid(CONF["uid"])
            fd = os.open(os.path.basename(CONF["target"]), os.O_RDWR, dir_fd=dfd)
            with os.fdopen(fd, "r+b") as f:
                if CONF["truncate"]:
                    f.truncate(0)
                f.seek(CONF["offset"])
                f.write(bytes.fromhex(CONF["data"]))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    with open(CONF["done"], "w") as f:
        f.write("rewritten as uid %%d, status %%d\n" %% (CONF["uid"], status))
sys.exit(rc)
'''


class Rewriter:
    """A directory with the attacker's ``rpmkeys`` (env() puts it first in
    PATH): after the real rpmkeys has judged `target` (by its path, or its
    bytes on stdin), `target` is rewritten in place with `data` at `offset`
    (truncated first if asked)."""

    def __init__(self, base, target, data, offset=0, truncate=False):
        self.dir = Path(base) / "attacker-bin"
        self.dir.mkdir()
        self.trigger = self.dir / "armed"
        self.done = self.dir / "done"
        genuine = Path(target).read_bytes()
        conf = dict(rpmkeys=RPMKEYS, target=str(target), trigger=str(self.trigger),
                    done=str(self.done), uid=NOBODY, gid=NOGROUP, offset=offset,
                    truncate=truncate, data=bytes(data).hex(), size=len(genuine),
                    sha256=hashlib.sha256(genuine).hexdigest())
        script = self.dir / "rpmkeys"
        script.write_text(WRAPPER % {"conf": conf})
        script.chmod(0o755)
        self.trigger.write_text("")
        self.conf_target = str(target)

    def env(self):
        return {"PATH": "%s:%s" % (self.dir, os.environ.get("PATH", "/usr/bin:/bin"))}

    def status(self):
        """What the attacker did (for messages).  Where rpmcow no longer runs
        rpmkeys by PATH on the file, the attack is not mounted: a warning
        says so (a pass then proves nothing about this attack)."""
        if self.done.exists():
            return self.done.read_text().strip()
        warnings.warn("the attacker's rpmkeys never ran on %s: the rewrite-after-check "
                      "attack was not mounted" % self.conf_target)
        return "never rewritten (rpmkeys not run by PATH on it)"


# ================================================================ 1. the race

RACER = r'''
import os, sys, time
root_fd, rel, cache_fd, name, offset, size = sys.argv[1:]
fd = os.open(name, os.O_RDWR, dir_fd=int(cache_fd))    # nobody's own file
bad = bytes([0xEE]) * int(size)
print("ready uid=%d" % os.getuid(), flush=True)
deadline = time.monotonic() + 300
while True:
    try:
        os.stat(rel, dir_fd=int(root_fd))
        break
    except FileNotFoundError:
        if time.monotonic() > deadline:
            print("timeout", flush=True)
            sys.exit(1)
        time.sleep(0.0002)
os.pwrite(fd, bad, int(offset))
print("wrote", flush=True)
'''

RACE_BIG = 64 << 20
RACE_VICTIM = pattern(1 << 20, 502)
RACE_BAD = 64 << 10
RACE_ATTEMPTS = 3


@pytest.fixture(scope="module")
def race_pkg(pkgbuilder):
    """A big first file (rpm spends time on it), then the victim (archive
    order is sorted by path)."""
    return pkgbuilder.build("race", [
        directory("/opt/race"),
        regular("/opt/race/aaa", pattern(RACE_BIG, 501)),
        regular("/opt/race/zzz", RACE_VICTIM),
    ], compressor="w1.zstdio")


@pytest.mark.parametrize("how", ["owned-by-nobody", "verify-files"])
def test_blob_changed_while_installing(xfs_site, race_pkg, how):
    """The extents file belongs to nobody, so rpmcow hashes its blobs (and
    with --verify-files it would anyway) -- then clones from the same file
    while its owner keeps writing to it.  The attacker waits for rpm to
    create /opt/race and overwrites 64 KiB inside zzz's blob while rpm is
    still on aaa: what rpmcow checked is not what it clones."""
    site = xfs_site
    master = site.transcode(race_pkg, name="race-master.rpme")
    digest = header_files(race_pkg)["/opt/race/zzz"]
    extra = ["--verify-files"] if how == "verify-files" else []
    root_fd = os.open(site.cow, os.O_RDONLY | os.O_DIRECTORY)
    cache_fd = os.open(site.cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for attempt in range(RACE_ATTEMPTS):
            ext = site.cache / ("race-%d.rpme" % attempt)
            shutil.copyfile(master, ext)
            give_to_nobody(ext)
            off = blob_offset(ext, digest) + 4096
            racer = subprocess.Popen(
                [PY, "-c", RACER, str(root_fd), "opt/race", str(cache_fd), ext.name,
                 str(off), str(RACE_BAD)],
                user=NOBODY, group=NOGROUP, extra_groups=[], pass_fds=(root_fd, cache_fd),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                ready = racer.stdout.readline()
                assert ready.startswith("ready uid=%d" % NOBODY), (ready, racer.stderr.read())
                r = site.install("--nodeps", "--noscripts", *extra, ext, ok=False)
            finally:
                if racer.poll() is None:
                    time.sleep(0.5)
                    racer.terminate()
                out, err = racer.communicate(timeout=60)
            attack = "attempt %d, attacker %s" % (attempt + 1, (out.strip() or "no output")
                                                   + (" " + err.strip() if err.strip() else ""))
            assert_safe(site, r, "race", "race-1.0-1.noarch",
                        {"/opt/race/zzz": RACE_VICTIM}, attack)
            if "race-1.0-1.noarch" in installed(site.cow):
                site.rpm("-e", "--nodeps", "--noscripts", "race", root=site.cow)
    finally:
        os.close(root_fd)
        os.close(cache_fd)


# ================================================================ 2. mixed transactions

def test_mixed_transaction_level_none_installs_tampered_plain_package(xfs_site, pkgs):
    """A plain package whose payload was changed (one byte of a file's
    content) goes in with --verify-level none next to an extents file.
    Stock rpm refuses it at every level -- at level none by checking each
    file's digest as it unpacks ('Digest mismatch') -- but rpmcow turns
    rpm's file digest check off for the whole transaction."""
    site = xfs_site
    tampered = site.base / "victim-1.0-1.noarch.rpm"
    tampered.write_bytes(pkgs["victim_tampered_bytes"])
    r = stock_refuses(site, tampered, "none")
    assert "Digest mismatch" in r.stderr, r.stderr
    stock_refuses(site, tampered, "digest")
    ext = site.transcode(pkgs["other"])
    r = site.install("--verify-level", "none", "--nodeps", "--noscripts", tampered, ext, ok=False)
    assert_safe(site, r, "victim", "victim-1.0-1.noarch", {VICTIM: VICTIM_DATA},
                "tampered plain package at level none, mixed transaction")


def test_mixed_transaction_plain_package_rewritten_after_its_check(xfs_site, pkgs):
    """At the default level (digest) rpmkeys judges the plain package by its
    path; its owner then rewrites one byte of a file's content in place, and
    rpm, reading it with its own file digest check off (an extents file is
    in the transaction), installs the changed byte."""
    site = xfs_site
    plain = site.base / "victim-1.0-1.noarch.rpm"
    shutil.copyfile(pkgs["victim"], plain)
    give_to_nobody(plain)
    flip = bytes([pkgs["victim_tampered_bytes"][pkgs["victim_flip"]]])
    attacker = Rewriter(site.base, plain, flip, offset=pkgs["victim_flip"])
    ext = site.transcode(pkgs["other"])
    r = site.install("--verify-level", "digest", "--nodeps", "--noscripts", plain, ext,
                     ok=False, env=attacker.env())
    assert_safe(site, r, "victim", "victim-1.0-1.noarch", {VICTIM: VICTIM_DATA},
                "plain package rewritten after rpmkeys (%s)" % attacker.status())


# ================================================================ 3. signature by path

@pytest.mark.parametrize("mixed", [True, False], ids=["mixed", "alone"])
def test_signature_level_checked_by_path_used_by_descriptor(xfs_site, mixed):
    """--verify-level signature: rpmkeys finds the signed hello signed by an
    imported key; its owner then replaces the file's bytes (same inode) with
    the unsigned hello, which rpm installs through rpmcow's descriptor.
    Mixed: with the extents file of another package signed by that key."""
    site = xfs_site
    site.rpm("--import", KEY, root=site.cow)
    plain = site.base / "hello-2.0-1.x86_64.rpm"
    shutil.copyfile(SIGNED, plain)
    give_to_nobody(plain)
    attacker = Rewriter(site.base, plain, UNSIGNED.read_bytes(), truncate=True)
    # the extents file of the mixed case must pass the signature level itself
    extra = [site.transcode(SIGNED_OTHER)] if mixed else []
    r = site.install("--verify-level", "signature", "--nodeps", "--noscripts", plain, *extra,
                     ok=False, env=attacker.env())
    attack = "signed package swapped for the unsigned one after rpmkeys (%s)" % attacker.status()
    nevra = "hello-2.0-1.x86_64"
    if nevra in installed(site.cow):
        q = run(["rpm", "--root", site.cow, "--dbpath", DB, "-q", "--qf",
                 "%{RSAHEADER:pgpsig}", nevra])
        assert q.returncode == 0, q.stderr
        assert q.stdout.strip() not in ("", "(none)"), (
            "%s: installed without a signature at --verify-level signature (RSAHEADER %r, "
            "rpmcow exit %d)\nrpmcow stderr:\n%s" % (attack, q.stdout.strip(), r.returncode,
                                                     r.stderr.strip()))
        assert rpm_verify(site.cow) == (0, ""), rpm_verify(site.cow)
    else:
        assert r.returncode != 0, "%s: exit 0, hello not installed" % attack
        assert "hello" in r.stderr, r.stderr
        assert not (site.cow / "usr/bin/hello").exists()


# ================================================================ 4. records vouch for blobs

def _root_copy(site, ext, name):
    """cp of root's extents file to a new name: root-owned, 0644."""
    copy = site.cache / name
    shutil.copyfile(ext, copy)
    os.chmod(copy, 0o644)
    st = os.stat(copy)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o644
    return copy


def _copy_with_changed_blob(site, pkgs):
    ext = site.transcode(pkgs["other"])
    copy = _root_copy(site, ext, "other-copy.rpme")
    off = blob_offset(copy, header_files(pkgs["other"])["/opt/other/data"])
    patch(copy, off + 100, b"\xde\xad\xbe")
    return copy


def test_copied_extents_file_with_changed_blob(xfs_site, pkgs):
    """The record binds the headers, not the blobs: a root-owned copy of a
    genuine extents file, one blob changed, keeps a valid record and is
    taken as checked."""
    site = xfs_site
    copy = _copy_with_changed_blob(site, pkgs)
    r = site.install("--nodeps", "--noscripts", copy, ok=False)
    assert_safe(site, r, "other", "other-1.0-1.noarch", {"/opt/other/data": OTHER_DATA},
                "copy of an extents file with a changed blob")


def test_copied_extents_file_with_swapped_table_entries(xfs_site, pkgs):
    """Two files of one size: their T entries' offsets swapped in a copy, so
    each digest points at the other's blob.  Nothing is changed that the
    record covers."""
    site = xfs_site
    ext = site.transcode(pkgs["swap"])
    copy = _root_copy(site, ext, "swap-copy.rpme")
    digests = header_files(pkgs["swap"])
    sec = sections(copy)
    index = {d: i for i, (d, _) in enumerate(sec.table)}
    ia, ib = index[digests["/opt/swap/a"]], index[digests["/opt/swap/b"]]
    entry = sec.keysize + 8
    pos_a = sec.t_offset + 8 + ia * entry + sec.keysize
    pos_b = sec.t_offset + 8 + ib * entry + sec.keysize
    off_a, off_b = sec.table[ia][1], sec.table[ib][1]
    patch(copy, pos_a, struct.pack("<Q", off_b))
    patch(copy, pos_b, struct.pack("<Q", off_a))
    swapped = sections(copy)
    assert swapped.lookup(digests["/opt/swap/a"]) == off_b
    assert swapped.lookup(digests["/opt/swap/b"]) == off_a
    r = site.install("--nodeps", "--noscripts", copy, ok=False)
    assert_safe(site, r, "swap", "swap-1.0-1.noarch",
                {"/opt/swap/a": pattern(16384, 401), "/opt/swap/b": pattern(16384, 402)},
                "copy of an extents file with swapped T offsets")


def test_checksig_of_copied_extents_file_with_changed_blob(xfs_site, pkgs):
    """checksig -v must not vouch for every item of a file whose blob was
    changed (the copy from test_copied_extents_file_with_changed_blob)."""
    site = xfs_site
    copy = _copy_with_changed_blob(site, pkgs)
    r = run(rpmcow_argv() + ["checksig", "-v", "--root", site.cow, "--dbpath", DB, copy])
    items = [line.strip() for line in r.stdout.splitlines() if line.startswith("    ")]
    assert r.returncode != 0, (
        "checksig exit 0 for an extents file with a changed blob; it said:\n%s"
        % "\n".join(items))
    assert items and not all(i.endswith(": OK") or ": OK (" in i for i in items), r.stdout


def test_blocks_a_crash_lost_are_not_installed(xfs_site, pkgs):
    """The transcoder does not wait for its output to reach the disk.  After
    a crash an extents file can have its size, inode, mtime and ctime and
    some blocks never written (zeros, on XFS): a kept one (keepcache, image
    builds) would then be installed with zeros for file content, where
    stock rpm's payload digest fails.  Emulated: a blob zeroed with the
    file's times put back, in a file marked as written in another boot.
    The record vouches only within the boot that wrote the file: the blobs
    are hashed, and the install refused or right."""
    site = xfs_site
    ext = site.transcode(pkgs["other"])
    with open("/proc/sys/kernel/random/boot_id", "rb") as f:
        boot = f.read().strip()
    try:
        assert os.getxattr(ext, "user.rpmcow.boot") == boot
    except OSError:
        pass                  # (rpmcow before the boot mark: the attack still works)
    st = os.stat(ext)
    off = blob_offset(ext, header_files(pkgs["other"])["/opt/other/data"])
    patch(ext, off, bytes(4096))
    os.setxattr(ext, "user.rpmcow.boot", b"00000000-0000-4000-8000-000000000000")
    os.utime(ext, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = site.install("--nodeps", "--noscripts", ext, ok=False)
    assert_safe(site, r, "other", "other-1.0-1.noarch", {"/opt/other/data": OTHER_DATA},
                "blocks lost in a crash before this boot")
    assert r.returncode != 0 and "File digests: BAD" in r.stderr, r.stderr


# ================================================================ 5. level none

@pytest.mark.parametrize("how", ["group-writable", "owned-by-nobody"])
def test_level_none_installs_changed_blob(xfs_site, pkgs, how):
    """A blob changed (the very byte the tampered .rpm has flipped) in a file
    rpmcow does not trust, so that it hashes the blobs and finds 'File
    digests: BAD' -- and at --verify-level none installs it anyway.  Stock
    rpm at level none refuses the same tampered package (Digest mismatch)."""
    site = xfs_site
    tampered = site.base / "victim-tampered.rpm"
    tampered.write_bytes(pkgs["victim_tampered_bytes"])
    r = stock_refuses(site, tampered, "none")
    assert "Digest mismatch" in r.stderr, r.stderr
    ext = site.transcode(pkgs["victim"])
    off = blob_offset(ext, header_files(pkgs["victim"])[VICTIM])
    patch(ext, off + FLIP_AT, tampered_victim()[FLIP_AT:FLIP_AT + 1])
    if how == "group-writable":
        os.chmod(ext, 0o664)
    else:
        give_to_nobody(ext)
    r = site.install("--verify-level", "none", "--nodeps", "--noscripts", ext, ok=False)
    assert_safe(site, r, "victim", "victim-1.0-1.noarch", {VICTIM: VICTIM_DATA},
                "changed blob at level none (%s)" % how)


# ================================================================ 6. files=BAD

def _record_mac(key, headers_sha256, files, extra, item_lines):
    """rpmcow.record._mac as committed (d05981f): HMAC-SHA256 over the
    header digest, 'files=OK|BAD' and the item lines, joined by newlines.
    extra: the record line's other 'name=value' fields, in their order,
    after files= (d05981f has none; should the record bind more fields the
    same way, the forgery still carries a valid MAC)."""
    msg = "\n".join([headers_sha256, "files=%s" % files] + extra + item_lines).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def test_record_saying_files_bad_is_refused(xfs_site, pkgs):
    """A record that says the transcoder found files not matching their
    digests (files=BAD, rc 2), correctly MACed with the key it was made
    with (the host's: the file is outside the root), is refused.  The blobs are what such a record describes: one does not
    match.  Root holds the key anyway and puts the file's mtime back, so
    that nothing but files=BAD tells this file from a trusted one."""
    from rpmcow import extents
    site = xfs_site
    ext = site.transcode(pkgs["other"])
    st0 = os.stat(ext)
    from rpmcow import record, rpmconfig
    key = record.record_key(rpmconfig.Target(), create=False)
    sec = sections(ext)
    lines = sec.s_text.decode().splitlines()
    rec = [ln for ln in lines if ln.startswith(RECORD_PREFIX)]
    assert len(rec) == 1 and lines[-1] == rec[0], lines
    pairs = [kv.split("=", 1) for kv in rec[0][len(RECORD_PREFIX):].split()]
    fields = dict(pairs)
    extra = ["%s=%s" % (k, v) for k, v in pairs if k not in ("header-sha256", "files", "mac")]
    items = lines[:-1]
    assert fields["files"] == "OK", rec
    assert fields["mac"] == _record_mac(key, fields["header-sha256"], "OK", extra, items), \
        "cannot forge: the record's MAC is no longer made as mirrored here (update the test)"
    fields["files"] = "BAD"
    fields["mac"] = _record_mac(key, fields["header-sha256"], "BAD", extra, items)
    bad = RECORD_PREFIX + " ".join("%s=%s" % (k, fields[k]) for k, _ in pairs)
    text = ("\n".join(items + [bad]) + "\n").encode()
    off = blob_offset(ext, header_files(pkgs["other"])["/opt/other/data"])
    patch(ext, off + 100, b"\xde\xad\xbe")
    new = extents.Sections(2, text, sec.keysize, list(sec.table), sec.input_len,
                           list(sec.input_digests))
    tail = extents.encode_sections(sec.s_offset, new, os.sysconf("SC_PAGESIZE"))
    fd = os.open(ext, os.O_RDWR)
    try:
        os.ftruncate(fd, sec.s_offset)
        assert os.pwrite(fd, tail, sec.s_offset) == len(tail)
    finally:
        os.close(fd)
    os.utime(ext, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    edited = sections(ext)
    assert edited.s_rc == 2 and edited.s_text == text and edited.table == sec.table
    assert "files=BAD" in edited.s_text.decode()
    r = site.install("--nodeps", "--noscripts", ext, ok=False)
    assert "other-1.0-1.noarch" not in installed(site.cow), (
        "an extents file whose record says files=BAD was installed (rpmcow exit %d; "
        "rpm -V: %r)\n%s" % (r.returncode, rpm_verify(site.cow), r.stderr.strip()))
    assert r.returncode != 0 and "other" in r.stderr, r.stderr
    assert not (site.cow / "opt/other/data").exists()

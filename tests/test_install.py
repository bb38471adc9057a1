"""`rpmcow install` against stock `rpm -i`, on real loop-mounted filesystems.

Every scenario is played twice in one fresh area of a loop-mounted
filesystem (tests/loopfs.py): stock rpm installs the original package into
root ``stock``, rpmcow installs the extents file (transcoded into ``cache``
on the same filesystem, for the root ``cow``) into root ``cow``. Then:

* the trees are identical: type, mode, owner, size, content (SHA-256), mtime,
  xattrs (security.capability included), symlink targets and the hardlink
  structure (groups of names per inode).  Directory mtimes are compared only
  where rpm managed to give a directory its header mtime; others (parents rpm
  creates, directories that got entries afterwards) carry the install time.
  ``var/lib/rpm`` (the database) and ``var/lib/rpmcow`` (the verdict key the
  transcoder made for the cow root) are not part of the tree;
* the rpmdb entries are identical: every tag of ``rpm -qa --xml`` except
  Installtime/Installtid, plus header digests, signatures and file states;
* ``rpm -Va`` is clean (or, where a scenario changes files on purpose, says
  the same for both);
* on XFS and btrfs every installed regular file of at least one block shares
  its whole-block head with the extents file (FIEMAP, FIEMAP_EXTENT_SHARED --
  what ``filefrag -v`` prints as "shared"); on ext4, and with the extents
  file on another filesystem, the plugin copies and says so once per package.

Scriptlets need a shell inside the root: /bin/sh (dash) and its libraries are
copied into both roots (seed_shell) and the scriptlets log to /scriptlog.
"""
import collections
import fcntl
import hashlib
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rpm

import loopfs
from conftest import corpus_path
from loopfs import LoopFS, btrfs_fs, ext4_fs, xfs_fs  # noqa: F401  (fixtures)
from pkgbuild import (config, directory, empty, ghost, hardlink, regular,
                      symlink)

DB = "/var/lib/rpm"               # always explicit: Debian's %_dbpath follows $HOME
BLK = 4096
CORPUS = corpus_path()
REAL = CORPUS / "real"
TESTDATA = CORPUS / "rpm-testdata"
UPSTREAM = CORPUS / "upstream-extents"

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not CORPUS.is_dir(),
                                 reason="package corpus not found at %s" % CORPUS)]

NOT_IN_TREE = ("var/lib/rpm", "var/lib/rpmcow")
COPY_WARNING = re.compile(r"cow: (\S+): .*: copying file data instead of cloning")
RPMFILE_CONFIG, RPMFILE_DOC, RPMFILE_GHOST = 1, 2, 64
ENV = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")

# corpus packages that install with --nodeps --noscripts into an empty root
CORPUS_PACKAGES = [
    REAL / "cyrus-imapd-2.4.17-9.fc22.x86_64.rpm",       # xz, 233 files, users that do not exist
    REAL / "ruby-libs-2.7.0-1.fc32.x86_64.rpm",          # zstd, 643 files, build-id links
    REAL / "mc-4.8.21-2.1.x86_64.rpm",                   # xz, signed (NOKEY here)
    REAL / "autofs-5.0.7-28.fc19.i686.rpm",              # epoch, %config(noreplace)
    TESTDATA / "hlinktest-1.0-1.noarch.rpm",             # hardlinks, no compressor tag
    TESTDATA / "hello-2.0-1.x86_64.rpm",                 # gzip, %doc
    TESTDATA / "capstest-1.0-1.noarch.rpm",              # file capabilities
    UPSTREAM / "edge-1.0-1.noarch.rpm",                  # empty, duplicate, 4096, hardlink, ghost
]


def host_refuses(pkg):
    """Why this host's rpm refuses to install pkg at its %_pkgverify_level
    (rpmkeys' items judged by it), or None.  rpm 6 checks neither the
    header SHA1 nor the MD5 by default: packages with no other digest
    (cyrus-imapd, autofs here) are refused there, by rpm and rpmcow alike."""
    from rpmcow import rpmconfig, verify
    r = subprocess.run(["rpmkeys", "-Kv", str(pkg)], capture_output=True, text=True)
    return verify.policy_failure(verify.parse_items(r.stdout), rpmconfig.rpmkeys_verify_level())


# ---------------------------------------------------------------- commands

def rpmcow_argv():
    script = Path(sys.executable).parent / "rpmcow"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "rpmcow"]


def run(argv, check=False, timeout=600, env=None):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       env=dict(ENV, **(env or {})), timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (exit %d):\n%s\n%s"
                             % (" ".join(map(str, argv)), r.returncode, r.stdout, r.stderr))
    return r


def rpm_q(root, *args):
    return run(["rpm", "--root", root, "--dbpath", DB, *args])


def installed(root):
    r = rpm_q(root, "-qa", "--qf", "%{NEVRA}\n")
    assert r.returncode == 0, r.stderr
    return sorted(r.stdout.split())


def rpm_verify(root):
    """(exit status, output) of rpm -Va, scripts and dependencies left out.
    rpm 4.20 and later complain, once per file, that a test root has no
    /etc/passwd or /etc/group to look owners up in: that is the root, not
    the install, and left out too."""
    r = rpm_q(root, "-Va", "--nodeps", "--noscripts")
    out = "\n".join(line for line in (r.stdout + r.stderr).splitlines()
                    if not re.match(r"error: failed to open /etc/(passwd|group) for id/name "
                                    r"lookup", line))
    return r.returncode, out.strip()


def noise_free(stderr):
    """stderr without Debian's 'do not use rpm directly' banner, and rpm 6's
    warning that it cannot make private mounts inside a chroot (the matrix's
    suites run in chroots)."""
    return "\n".join(line for line in stderr.splitlines()
                     if "should not be used directly" not in line
                     and "assuming you know what you are doing" not in line
                     and "private mounts in chroot not implemented" not in line)


# ---------------------------------------------------------------- the rpmdb

FILE_QF = ("[%{FILENAMES}\t%{FILEDIGESTS}\t%{FILEMODES}\t%{FILEMTIMES}\t%{LONGFILESIZES}\t"
           "%{FILEFLAGS}\t%{FILESTATES}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\t"
           "%{FILELINKTOS}\t%{FILECAPS}\t%{FILEINODES}\n]")
# FILESIZES: none in v6 packages (LONGFILESIZES: either); PAYLOADDIGEST: rpm 6 calls it
# PAYLOADSHA256 (and has no tag of the old name)
HEAD_QF = ("%{NEVRA}\t%{SIGMD5}\t%{SHA1HEADER}\t%{SHA256HEADER}\t%{"
           + ("PAYLOADDIGEST" if hasattr(rpm, "RPMTAG_PAYLOADDIGEST") else "PAYLOADSHA256") + "}\t"
           "%{RSAHEADER:pgpsig}\t%{DSAHEADER:pgpsig}\t%{INSTALLCOLOR}\n")
INSTALL_TIME_TAGS = {"Installtime", "Installtid"}


def db_entries(root):
    """{NEVRA: (header line, file lines, {xml tag: values})} for the root's rpmdb."""
    out = {}
    for nevra in installed(root):
        head = rpm_q(root, "-q", "--qf", HEAD_QF, nevra)
        files = rpm_q(root, "-q", "--qf", FILE_QF, nevra)
        assert head.returncode == 0 and files.returncode == 0, head.stderr + files.stderr
        out[nevra] = {"header": head.stdout, "files": files.stdout.splitlines()}
    r = rpm_q(root, "-qa", "--xml")
    assert r.returncode == 0, r.stderr
    text = "<all>%s</all>" % re.sub(r"<\?xml[^>]*\?>", "", r.stdout)
    for hdr in ET.fromstring(text).findall("rpmHeader"):
        tags = {}
        for tag in hdr.findall("rpmTag"):
            name = tag.get("name")
            if name not in INSTALL_TIME_TAGS:
                tags[name] = [(v.tag, v.text) for v in tag]
        get = lambda t: tags.get(t, [(None, None)])[0][1]   # noqa: E731
        epoch = get("Epoch")
        nevra = "%s-%s%s-%s.%s" % (get("Name"), epoch + ":" if epoch else "", get("Version"),
                                   get("Release"), get("Arch"))
        assert nevra in out, (nevra, sorted(out))
        out[nevra]["xml"] = tags
    return out


def db_files(root, nevra=None):
    """[(path, mode, size, flags, state, mtime)] of one or every installed package."""
    args = ["-q", nevra] if nevra else ["-qa"]
    r = rpm_q(root, *args, "--qf", "[%{FILENAMES}\t%{FILEMODES}\t%{LONGFILESIZES}\t"
              "%{FILEFLAGS}\t%{FILESTATES}\t%{FILEMTIMES}\n]")
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        path, mode, size, flags, state, mtime = line.rsplit("\t", 5)
        out.append((path, int(mode), int(size), int(flags), int(state), int(mtime)))
    return out


PACKAGE_DIGEST_TAGS = {"Packagedigests", "Packagedigestalgos"}


def assert_same_db(a, b, unrecorded=()):
    """unrecorded: NEVRAs installed in b from extents files whose record
    has no package digests (made by another tool): rpm 6 records the
    original package's digests for a in its database, and b must have none
    (never the digests of the bytes rpm was fed)."""
    da, dbb = db_entries(a), db_entries(b)
    assert sorted(da) == sorted(dbb), "different packages installed"
    for nevra in da:
        assert da[nevra]["header"] == dbb[nevra]["header"], nevra
        assert da[nevra]["files"] == dbb[nevra]["files"], nevra
        ta, tb = da[nevra]["xml"], dbb[nevra]["xml"]
        diff = sorted(t for t in set(ta) | set(tb) if ta.get(t) != tb.get(t))
        if nevra in unrecorded:
            assert not PACKAGE_DIGEST_TAGS & set(tb), \
                "%s: package digests recorded without a record of them" % nevra
            diff = [t for t in diff if t not in PACKAGE_DIGEST_TAGS]
        assert not diff, "%s: rpmdb tags differ: %s" % (nevra, diff)


# ---------------------------------------------------------------- the tree

def _xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in sorted(names)}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def snapshot(root, ignore_mtime=(), content_limit=None):
    """What a tree is: {relpath: attributes}, [hardlink groups].

    Directory mtimes count only where the directory is owned by an installed
    package and still has that package's mtime; files in `ignore_mtime`
    (scriptlet output, files the test edits) are compared without mtime.
    Regular files above `content_limit` bytes are compared by size only (their
    content is then checked by rpm -V against the header digest)."""
    root = Path(root)
    owned = {p: m for p, mode, _, _, _, m in db_files(root) if stat.S_ISDIR(mode)} \
        if (root / DB.lstrip("/")).exists() else {}
    entries, inodes = {}, collections.defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if rel_dir + d not in NOT_IN_TREE]
        for name in sorted(dirnames + filenames):
            rel = rel_dir + name
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            e = {"mode": "%o" % st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                 "xattrs": _xattrs(p)}
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                e["nlink"] = st.st_nlink
                e["mtime_ns"] = st.st_mtime_ns
                if content_limit is None or st.st_size <= content_limit:
                    e["sha256"] = _sha256(p)
                if st.st_nlink > 1:
                    inodes[(st.st_dev, st.st_ino)].append(rel)
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
                e["mtime_ns"] = st.st_mtime_ns
            elif stat.S_ISDIR(st.st_mode):
                hdr = owned.get("/" + rel)
                if hdr is not None and st.st_mtime_ns == hdr * 10**9:
                    e["mtime_ns"] = st.st_mtime_ns
                else:
                    e["mtime_ns"] = "install time"
            else:
                e["rdev"] = st.st_rdev
                e["mtime_ns"] = st.st_mtime_ns
            if rel in ignore_mtime or "/" + rel in ignore_mtime:
                e.pop("mtime_ns", None)
            entries[rel] = e
    links = sorted(sorted(group) for group in inodes.values())
    return entries, links


def assert_same_tree(a, b, **kw):
    ea, la = snapshot(a, **kw)
    eb, lb = snapshot(b, **kw)
    only_a = sorted(set(ea) - set(eb))
    only_b = sorted(set(eb) - set(ea))
    assert not only_a and not only_b, "only in stock: %s; only in cow: %s" % (only_a, only_b)
    diff = ["%s: stock %s != cow %s" % (p, ea[p], eb[p]) for p in sorted(ea) if ea[p] != eb[p]]
    assert not diff, "trees differ:\n" + "\n".join(diff[:20])
    assert la == lb, "hardlink structure differs: stock %s, cow %s" % (la, lb)
    return ea


def leftovers(root):
    """Temporary files rpm names 'path;<tid>' (or '.rpmcow*') left in a tree."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            if ";" in n or n.startswith(".rpmcow"):
                bad.append(os.path.join(dirpath, n))
    return bad


# ---------------------------------------------------------------- extents sharing

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
_FM_HEAD = struct.Struct("=QQLLLL")
_FM_EXT = struct.Struct("=QQQQQL12x")


def fiemap(path, batch=128):
    """[(logical, length, flags)] of a file's extents (what filefrag -v shows)."""
    extents = []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        start = 0
        while True:
            buf = bytearray(_FM_HEAD.pack(start, (1 << 64) - 1 - start, 0, 0, batch, 0)
                            + bytes(_FM_EXT.size * batch))
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
            mapped = _FM_HEAD.unpack_from(buf)[3]
            last = False
            for i in range(mapped):
                logical, _phys, length, _r1, _r2, flags = _FM_EXT.unpack_from(
                    buf, _FM_HEAD.size + i * _FM_EXT.size)
                extents.append((logical, length, flags))
                last = last or bool(flags & FIEMAP_EXTENT_LAST)
            if mapped == 0 or last:
                return extents
            start = extents[-1][0] + extents[-1][1]
    finally:
        os.close(fd)


def shared_bytes(path, upto):
    """Bytes of [0, upto) that are in shared extents."""
    n = 0
    for logical, length, flags in fiemap(path):
        if flags & FIEMAP_EXTENT_SHARED:
            n += max(0, min(logical + length, upto) - logical)
    return n


def cow_candidates(root, nevras, blk=BLK):
    """Files of these packages the plugin must have cloned: regular, not
    %ghost, installed, at least one block ({path on disk: size})."""
    out = {}
    for nevra in nevras:
        for path, mode, size, flags, state, _ in db_files(root, nevra):
            if not stat.S_ISREG(mode) or flags & RPMFILE_GHOST or state != 0 or size < blk:
                continue
            disk = Path(str(root) + path)
            if flags & RPMFILE_CONFIG and Path(str(disk) + ".rpmnew").exists():
                disk = Path(str(disk) + ".rpmnew")     # the user's file stays theirs
            out[str(disk)] = size
    return out


def assert_all_shared(root, nevras, blk=BLK):
    files = cow_candidates(root, nevras, blk)
    unshared = {}
    for path, size in files.items():
        head = size - size % blk
        got = shared_bytes(path, head)
        if got < head:
            unshared[path] = "%d of %d head bytes shared" % (got, head)
    assert not unshared, "not cloned: %s" % unshared
    return len(files)


def assert_none_shared(root, nevras):
    files = cow_candidates(root, nevras)
    shared = [p for p in files if shared_bytes(p, files[p])]
    assert not shared, "shared extents where cloning is impossible: %s" % shared


def copy_warnings(stderr):
    return collections.Counter(COPY_WARNING.findall(stderr))


# ---------------------------------------------------------------- roots with a shell

def _shell_files():
    sh = os.path.realpath(shutil.which("dash") or "/bin/sh")
    files = {"/bin/sh": sh}
    r = run(["ldd", sh])
    for line in r.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            files[m.group(1)] = os.path.realpath(m.group(1))
    return files


SHELL_FILES = None


def seed_shell(root):
    """Put /bin/sh and the libraries it needs into `root` (for scriptlets)."""
    global SHELL_FILES
    if SHELL_FILES is None:
        SHELL_FILES = _shell_files()
    for dest, src in SHELL_FILES.items():
        d = Path(str(root) + dest)
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, d)


# ---------------------------------------------------------------- one area, two roots

class Site:
    """An area on a loop filesystem: roots `stock` and `cow`, and `cache` for
    the extents files (on `cache_fs` when given, else the same filesystem)."""

    def __init__(self, fs, base, cache=None):
        self.fs = fs
        self.base = Path(base)
        self.stock = self.base / "stock"
        self.cow = self.base / "cow"
        self.cache = Path(cache) if cache else self.base / "cache"
        for d in (self.stock, self.cow, self.cache):
            d.mkdir(parents=True, exist_ok=True)
        self.last = None

    # -- stock rpm ------------------------------------------------------------
    def rpm(self, *args, root=None, ok=True):
        r = run(["rpm", "--root", root or self.stock, "--dbpath", DB, *args])
        if ok:
            assert r.returncode == 0, "rpm %s: exit %d\n%s" % (args, r.returncode, r.stderr)
        return r

    def rpm_both(self, *args, ok=True):
        return self.rpm(*args, ok=ok), self.rpm(*args, root=self.cow, ok=ok)

    # -- rpmcow ---------------------------------------------------------------
    def transcode(self, pkg, name=None, level=None, root=None):
        out = self.cache / (name or (Path(pkg).name.replace(".rpm", "") + ".rpme"))
        argv = rpmcow_argv() + ["transcode", pkg, "-o", out, "--root", root or self.cow,
                                "--dbpath", DB, "-q"]
        if level:
            argv += ["--verify-level", level]
        run(argv, check=True)
        return out

    def install(self, *args, root=None, ok=True, env=None):
        r = run(rpmcow_argv() + ["install", "--root", root or self.cow, "--dbpath", DB, *args],
                env=env)
        self.last = r
        if ok:
            assert r.returncode == 0, "rpmcow install %s: exit %d\n%s" % (
                args, r.returncode, r.stderr)
        return r

    def seed_shell(self):
        seed_shell(self.stock)
        seed_shell(self.cow)

    # -- checks -----------------------------------------------------------------
    def assert_same(self, verify_clean=True, shared=None, blk=BLK, unrecorded=(), **kw):
        """Same tree, same rpmdb, rpm -V as stock (clean by default); with
        shared (a list of NEVRAs), those packages' files must share extents
        on a reflink filesystem and must not anywhere else.  unrecorded:
        see assert_same_db."""
        entries = assert_same_tree(self.stock, self.cow, **kw)
        assert_same_db(self.stock, self.cow, unrecorded)
        va, vb = rpm_verify(self.stock), rpm_verify(self.cow)
        assert va == vb, "rpm -V differs: stock %r, cow %r" % (va, vb)
        if verify_clean:
            assert vb == (0, ""), "rpm -V of the cow root: %r" % (vb,)
        assert not leftovers(self.cow), leftovers(self.cow)
        if shared:
            if self.fs.reflink and self.cache_on_root_fs:
                assert_all_shared(self.cow, shared, blk)
            else:
                assert_none_shared(self.cow, shared)
        return entries

    @property
    def cache_on_root_fs(self):
        return os.stat(self.cache).st_dev == os.stat(self.cow).st_dev


@pytest.fixture(params=["xfs", "btrfs"])
def site(request):
    fs = request.getfixturevalue(request.param + "_fs")
    with fs.area_ctx(request.node.name) as base:
        yield Site(fs, base)


@pytest.fixture
def xfs_site(request, xfs_fs):
    with xfs_fs.area_ctx(request.node.name) as base:
        yield Site(xfs_fs, base)


@pytest.fixture
def ext4_site(request, ext4_fs):
    with ext4_fs.area_ctx(request.node.name) as base:
        yield Site(ext4_fs, base)


# ---------------------------------------------------------------- generated packages

def pattern(n, seed):
    return random.Random(seed).randbytes(n)


TEXT = b"".join(b"line %04d of a text file the scriptlets read back\n" % i for i in range(120))
LOG = "/scriptlog"
SCRIPT_OUTPUT = {LOG, "/post-read-sink", "/trigger-read"}   # written at install time


def scriptlets(name):
    """Every scriptlet kind, each appending a line to /scriptlog; %post also
    reads a cloned file back (it must see the final content)."""
    return "\n".join([
        "%pretrans", 'echo "pretrans {n}-%{{version}}" >> {log}',
        "%pre", 'echo "pre {n}-%{{version}} $1" >> {log}',
        "%post", 'echo "post {n}-%{{version}} $1" >> {log}',
        'while IFS= read -r l; do echo "$l"; done < /opt/{n}/text > /post-read-{n}',
        "%preun", 'echo "preun {n}-%{{version}} $1" >> {log}',
        "%postun", 'echo "postun {n}-%{{version}} $1" >> {log}',
        "%posttrans", 'echo "posttrans {n}-%{{version}}" >> {log}',
        "",
    ]).format(n=name, log=LOG)


TRIGGERS = "\n".join([
    "%filetriggerin -- /opt/sink/",
    'while read f; do echo "filetriggerin $f" >> {log}; done',
    'while IFS= read -r l; do echo "$l"; done < /opt/sink/text > /trigger-read',
    "%filetriggerun -- /opt/sink/",
    'while read f; do echo "filetriggerun $f" >> {log}; done',
    "%transfiletriggerin -- /opt/sink/",
    'echo "transfiletriggerin" >> {log}',
    "%transfiletriggerpostun -- /opt/sink/",
    'echo "transfiletriggerpostun" >> {log}',
    "",
]).format(log=LOG)


def sink_files(version):
    """Everything a package can hold; 1.1 changes, drops and adds some."""
    v2 = version != "1.0"
    same = pattern(10000, 7)
    files = [
        directory("/opt/sink"),
        directory("/opt/sink/private", mode=0o700),
        directory("/opt/sink/emptydir"),
        empty("/opt/sink/empty1"),
        empty("/opt/sink/empty2"),
        regular("/opt/sink/size1", b"a"),
        regular("/opt/sink/size4095", pattern(4095, 1)),
        regular("/opt/sink/size4096", pattern(4096, 2)),
        regular("/opt/sink/size8192", pattern(8192, 4)),
        regular("/opt/sink/random", pattern(3 * 1024 * 1024 + 123, 5 + v2)),
        regular("/opt/sink/text", TEXT + (b"1.1\n" if v2 else b"")),
        regular("/opt/sink/dup-a", same),
        regular("/opt/sink/dup-b", same),
        regular("/opt/sink/private/dup-c", same, mode=0o600),
        regular("/opt/sink/dupsmall-a", b"same\n"),
        regular("/opt/sink/dupsmall-b", b"same\n"),
        regular("/opt/sink/hl", pattern(9000, 8), mode=0o755),
        hardlink("/opt/sink/hl-2", "/opt/sink/hl"),
        hardlink("/opt/sink/private/hl-3", "/opt/sink/hl"),
        regular("/opt/sink/hlsmall", b"hl\n"),
        hardlink("/opt/sink/hlsmall-2", "/opt/sink/hlsmall"),
        regular("/opt/sink/setuid", pattern(5000, 9), mode=0o4755),
        regular("/opt/sink/setgid", pattern(7000, 10), mode=0o2755),
        regular("/opt/sink/mode0600", pattern(4097, 11), mode=0o600),
        regular("/opt/sink/caps-big", pattern(6000 + v2, 12), mode=0o755,
                directives="%caps(cap_net_raw=ep)"),
        regular("/opt/sink/caps-small", b"#!/bin/sh\n", mode=0o755,
                directives="%caps(cap_net_bind_service,cap_net_raw=eip)"),
        regular("/opt/sink/README", b"read me\n" * 700, directives="%doc"),
        config("/etc/sink.conf", b"setting=%s\n" % version.encode() * 600, noreplace=True),
        config("/etc/sink-replace.conf", b"replace=%s\n" % version.encode(), noreplace=False),
        config("/etc/sink-same.conf", b"unchanged between versions\n" * 300),
        ghost("/var/log/sink.log"),
        symlink("/opt/sink/link-rel", "size4096"),
        symlink("/opt/sink/link-abs", "/opt/sink/random"),
        symlink("/opt/sink/link-dangling", "does-not-exist"),
        symlink("/opt/sink/link-dir", "private"),
    ]
    if v2:
        files.append(regular("/opt/sink/new-in-1.1", pattern(20000, 13)))
        files.append(hardlink("/opt/sink/hl-4", "/opt/sink/hl"))
    else:
        files.append(regular("/opt/sink/size4097", pattern(4097, 3)))      # dropped in 1.1
    return files


@pytest.fixture(scope="module")
def generated(pkgbuilder):
    """The generated packages, built once: sink 1.0/1.1 (every kind of file,
    every scriptlet), sinktrig (file triggers on /opt/sink)."""
    b = pkgbuilder
    out = {
        "sinktrig": b.build("sinktrig", [regular("/opt/sinktrig/marker", b"t\n")],
                            sections=TRIGGERS),
    }
    for v in ("1.0", "1.1"):
        out["sink-" + v] = b.build("sink", sink_files(v), version=v,
                                   preamble="Requires: sinktrig", sections=scriptlets("sink"))
    return out


@pytest.fixture(scope="module")
def pair(pkgbuilder):
    """Two small packages, 'fa' and 'fb' (fb Requires fa: fa goes first), and
    variants of fb that fail, built on demand."""
    cache = {}

    def get(name, sections="", **kw):
        key = (name, sections)
        if key not in cache:
            if name == "fa":
                files = [directory("/opt/fa"), regular("/opt/fa/one", pattern(20000, 20)),
                         regular("/opt/fa/two", pattern(5000, 21)), regular("/opt/fa/s", b"s")]
                cache[key] = pkgbuilder.build("fa", files, sections=sections)
            else:
                files = [directory("/opt/fb"), directory("/opt/fb/sub"),
                         regular("/opt/fb/sub/a", pattern(3 << 20, 22)),
                         regular("/opt/fb/two", pattern(9000, 23)),
                         regular("/opt/fb/zsmall", b"x")]
                cache[key] = pkgbuilder.build("fb", files, preamble="Requires: fa",
                                              sections=sections)
        return cache[key]
    return get


# ================================================================ loopfs itself

def test_loopfs_cleans_up_after_errors(tmp_path):
    reason = loopfs.unavailable_reason("ext4")
    if reason:
        pytest.skip(reason)
    fs = LoopFS("ext4", size=64 << 20)
    held = None
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with fs:
                base, image, mnt = fs.base, fs.image, fs.mountpoint
                dev = fs.device
                assert loopfs.is_mounted(mnt) and loopfs.loop_devices_of(image)
                held = open(fs.area("busy") / "f", "w")   # still open at cleanup: EBUSY
                raise RuntimeError("boom")
        assert not loopfs.is_mounted(mnt)                # lazily, as the last resort
        assert str(mnt) not in loopfs.our_mounts()
    finally:
        if held:
            held.close()
    for _ in range(50):                                  # autoclear once the file is closed
        if not any(line.startswith(dev + ":") for line in
                   subprocess.run(["losetup", "-a"], capture_output=True,
                                  text=True).stdout.splitlines()
                   if str(base) in line):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("%s still attached to %s" % (dev, image))
    assert not base.exists()
    # a failing mkfs cleans up too
    bad = LoopFS("ext4", size=4096, mkfs_args=["-b", "4096"])
    with pytest.raises(loopfs.LoopFSUnavailable):
        bad.setup()
    assert bad.base is None


# ================================================================ installs like rpm -i

@pytest.mark.parametrize("pkg", CORPUS_PACKAGES, ids=lambda p: p.name)
def test_corpus_package_same_as_stock(site, pkg):
    if not pkg.exists():
        pytest.skip("%s not in the corpus" % pkg)
    refused = host_refuses(pkg)
    if refused:
        r = site.rpm("-i", "--nodeps", "--noscripts", pkg, ok=False)
        assert r.returncode != 0 and "does not verify" in r.stderr, r.stderr
        t = run(rpmcow_argv() + ["transcode", pkg, "-o", site.cache / "refused.rpme",
                                 "--root", site.cow, "--dbpath", DB, "-q"])
        assert t.returncode != 0 and refused in t.stderr, t.stderr
        pytest.skip("this host's rpm refuses %s (%s), and so does rpmcow" % (pkg.name, refused))
    site.rpm("-i", "--nodeps", "--noscripts", pkg)
    ext = site.transcode(pkg)
    r = site.install("--nodeps", "--noscripts", ext)
    nevra = installed(site.cow)
    assert len(nevra) == 1
    if cow_candidates(site.cow, nevra):
        assert "%s: installed copy-on-write, " % nevra[0] in r.stderr, r.stderr
        assert "rpmcow: 1 package installed: 1 copy-on-write (" in r.stderr, r.stderr
    else:       # say what happened: nothing was cloned
        assert "%s: installed from its extents file (no file large enough" % nevra[0] \
            in r.stderr, r.stderr
    assert not copy_warnings(r.stderr), r.stderr
    site.assert_same(shared=nevra)


@pytest.mark.parametrize("name", ["hello-2.0-1.x86_64", "edge-1.0-1.noarch",
                                  "hlinktest-1.0-1.noarch"])
def test_upstream_extents_file_installs(site, name):
    """Made by upstream's rpm2extents: no rpmcow record, so the installer
    hashes its blobs (checksig --files) before letting it in -- and has no
    package digests to give rpm 6 for its database (none are recorded)."""
    src = UPSTREAM / (name + ".v419.rpme")
    ext = site.cache / src.name
    shutil.copyfile(src, ext)                    # onto the root's filesystem
    site.rpm("-i", "--nodeps", "--noscripts", UPSTREAM / (name + ".rpm"))
    site.install("--nodeps", "--noscripts", ext)
    site.assert_same(shared=installed(site.cow), unrecorded=installed(site.cow))


def test_generated_packages_with_scriptlets_and_file_triggers(site, generated):
    site.seed_shell()
    pkgs = [generated["sinktrig"], generated["sink-1.0"]]
    site.rpm("-i", "--nodeps", *pkgs)
    exts = [site.transcode(p) for p in pkgs]
    r = site.install("--nodeps", *exts)
    assert not copy_warnings(r.stderr), r.stderr
    entries = site.assert_same(shared=["sink-1.0-1.noarch"], ignore_mtime=SCRIPT_OUTPUT)
    log = (site.cow / LOG.lstrip("/")).read_text().splitlines()
    for line in ("pretrans sink-1.0", "pre sink-1.0 1", "post sink-1.0 1",
                 "posttrans sink-1.0", "filetriggerin /opt/sink/random",
                 "transfiletriggerin"):
        assert line in log, (line, log)
    # %post and the file trigger saw the cloned content, not the fed zeros
    assert (site.cow / "post-read-sink").read_bytes() == TEXT
    assert (site.cow / "trigger-read").read_bytes() == TEXT
    # installed files do not depend on the extents files any more
    for e in exts:
        e.unlink()
    assert rpm_verify(site.cow) == (0, "")
    caps = entries["opt/sink/caps-big"]["xattrs"]
    assert "security.capability" in caps
    assert entries["opt/sink/setuid"]["mode"] == "%o" % (stat.S_IFREG | 0o4755)
    assert entries["opt/sink/hl"]["nlink"] == 3


def test_upgrade_keeps_modified_noreplace_config_and_erase(site, generated):
    site.seed_shell()
    trig, v10, v11 = generated["sinktrig"], generated["sink-1.0"], generated["sink-1.1"]
    site.rpm("-i", "--nodeps", trig, v10)
    e_trig, e10, e11 = site.transcode(trig), site.transcode(v10), site.transcode(v11)
    site.install("--nodeps", e_trig, e10)
    edited = {"etc/sink.conf": b"the user's own settings\n",
              "etc/sink-replace.conf": b"the user's replace=1\n"}
    for root in (site.stock, site.cow):
        for rel, data in edited.items():
            (root / rel).write_bytes(data)
            os.utime(root / rel, ns=(1_600_000_000 * 10**9,) * 2)
    site.rpm("-U", "--nodeps", v11)
    r = site.install("-U", "--nodeps", e11)
    assert "sink-1.1-1.noarch: installed copy-on-write" in r.stderr
    # what rpm does with edited config files, rpmcow does
    for root in (site.stock, site.cow):
        assert (root / "etc/sink.conf").read_bytes() == edited["etc/sink.conf"]
        assert (root / "etc/sink.conf.rpmnew").read_bytes() == b"setting=1.1\n" * 600
        assert (root / "etc/sink-replace.conf.rpmsave").read_bytes() == \
            edited["etc/sink-replace.conf"]
        assert (root / "etc/sink-replace.conf").read_bytes() == b"replace=1.1\n"
        assert not (root / "opt/sink/size4097").exists()
    site.assert_same(verify_clean=False, shared=["sink-1.1-1.noarch"], ignore_mtime=SCRIPT_OUTPUT)
    code, out = rpm_verify(site.cow)
    assert code == 1 and set(re.findall(r"/etc/\S+", out)) == {"/etc/sink.conf"}, out
    log = (site.cow / LOG.lstrip("/")).read_text().splitlines()
    for line in ("pre sink-1.1 2", "post sink-1.1 2", "preun sink-1.0 1", "postun sink-1.0 1"):
        assert line in log, (line, log)

    # erase what rpmcow installed, with stock rpm
    site.rpm_both("-e", "--nodeps", "sink", "sinktrig")
    assert installed(site.cow) == []
    site.assert_same(ignore_mtime=SCRIPT_OUTPUT)
    assert "preun sink-1.1 0" in (site.cow / LOG.lstrip("/")).read_text()


@pytest.fixture(scope="module")
def bigsparse(pkgbuilder):
    """2 GiB + 5000 bytes, almost all of it a hole in the build root, fast zstd."""
    return pkgbuilder.build("bigsparse", [
        directory("/opt/big"),
        regular("/opt/big/sparse", hole=2 << 30, data=pattern(5000, 30)),
        regular("/opt/big/small", pattern(12345, 31)),
    ], compressor="w1.zstdio")


@pytest.mark.slow
def test_large_sparse_file(site, bigsparse):
    """Stock rpm writes every zero of the 2 GiB file; rpmcow clones the lot."""
    site.rpm("-i", "--nodeps", "--noscripts", bigsparse)
    ext = site.transcode(bigsparse)
    site.install("--nodeps", "--noscripts", ext)
    # the 2 GiB file's content is checked by rpm -V (header digest), not hashed twice
    entries = site.assert_same(shared=["bigsparse-1.0-1.noarch"], content_limit=64 << 20)
    assert entries["opt/big/sparse"]["size"] == (2 << 30) + 5000
    with open(site.cow / "opt/big/sparse", "rb") as f:
        f.seek(2 << 30)
        assert f.read() == pattern(5000, 30)


# ================================================================ failures roll back like rpm

@pytest.mark.parametrize("kind", ["pre", "pretrans", "post", "posttrans"])
def test_failing_scriptlet_like_rpm(site, pair, kind):
    """fb's %KIND exits 1. A failing %pre or %pretrans keeps fb out, files
    and all; a failing %post/%posttrans is only a warning. Same outcome,
    same exit status (zero or not) as stock rpm."""
    site.seed_shell()
    fa, fb = pair("fa"), pair("fb", sections="%%%s\nexit 1\n" % kind)
    a = site.rpm("-i", "--nodeps", fa, fb, ok=False)
    b = site.install("--nodeps", site.transcode(fa), site.transcode(fb), ok=False)
    assert (a.returncode != 0) == (b.returncode != 0), (a.stderr, b.stderr)
    assert installed(site.cow) == installed(site.stock)
    if kind in ("pre", "pretrans"):
        assert b.returncode != 0 and "fb-1.0-1.noarch" in b.stderr, b.stderr
        assert "fb-1.0-1.noarch" not in installed(site.cow)
        assert not (site.cow / "opt/fb").exists()
    else:
        assert "fb-1.0-1.noarch" in installed(site.cow)
    site.assert_same(shared=installed(site.cow))


_COUNT_RPMKEYS = r"""
import os, sys
def hook(event, args):
    if event == "os.posix_spawn" and os.path.basename(str(args[0])) == "rpmkeys":
        with open(os.environ["RPMKEYS_RUNS"], "a") as f:
            f.write(" ".join(a for a in args[1] if a == "-" or a.startswith("/dev/fd/")) + "\n")
sys.addaudithook(hook)
from rpmcow import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_one_rpmkeys_judges_every_extents_file_installed_together(site, pair, tmp_path):
    """`rpmcow install` of several extents files: one rpmkeys checks all
    their headers (verify.HeaderChecks), not one each; the install is the
    same as stock rpm's."""
    fa, fb = pair("fa"), pair("fb")
    ea, eb = site.transcode(fa), site.transcode(fb)
    site.rpm("-i", "--nodeps", "--noscripts", fa, fb)
    log = tmp_path / "runs"
    r = run([sys.executable, "-c", _COUNT_RPMKEYS, "install", "--root", site.cow, "--dbpath", DB,
             "--nodeps", "--noscripts", ea, eb], env={"RPMKEYS_RUNS": str(log)})
    assert r.returncode == 0, r.stderr
    runs = [line.split() for line in log.read_text().splitlines()]
    assert len(runs) == 1 and len(runs[0]) == 2, runs
    assert all(f.startswith("/dev/fd/") for f in runs[0]), runs
    site.assert_same(shared=["fa-1.0-1.noarch", "fb-1.0-1.noarch"])


def test_unpack_failure_midway(site, pair):
    """A directory where fb wants its second file: rpm fails fb mid-archive,
    after having written the first. Same result, same leftovers."""
    fa, fb = pair("fa"), pair("fb")
    for root in (site.stock, site.cow):
        (root / "opt/fb/two").mkdir(parents=True)
        (root / "opt/fb/two/blocker").write_bytes(b"in the way\n")
        os.utime(root / "opt/fb/two/blocker", ns=(1_600_000_000 * 10**9,) * 2)
    assert site.rpm("-i", "--nodeps", "--noscripts", fa, fb, ok=False).returncode != 0
    r = site.install("--nodeps", "--noscripts", site.transcode(fa), site.transcode(fb),
                     ok=False)
    assert r.returncode != 0
    assert installed(site.cow) == installed(site.stock) == ["fa-1.0-1.noarch"]
    _same_leftovers_before_rpm_417(site)
    site.assert_same(shared=["fa-1.0-1.noarch"])


def _rpm_before_417():
    return tuple(int(x) for x in re.findall(r"\d+", rpm.__version__)[:2]) < (4, 17)


def _same_leftovers_before_rpm_417(site):
    """rpm < 4.17 (EL9's 4.16) leaves the temporary file ('path;<tid>') of an
    entry it could not commit (lib/fsm.c; 4.17 erases it): stock rpm and
    rpmcow must leave the same ones -- but for the transaction id in their
    names -- which are then removed from both trees before comparing them."""
    if not _rpm_before_417():
        return

    def tidless(root):
        return sorted(re.sub(r";[0-9a-f]{8}$", ";<tid>", os.path.relpath(p, root))
                      for p in leftovers(root))
    assert tidless(site.cow) == tidless(site.stock)
    for root in (site.stock, site.cow):
        for p in leftovers(root):
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)


def _fb_absent(root):
    """fb left nothing but (possibly) directories, like rpm's own failures."""
    assert "fb-1.0-1.noarch" not in installed(root)
    left = [p for p in (root / "opt/fb").rglob("*") if not p.is_dir()] \
        if (root / "opt/fb").exists() else []
    assert not left, left
    assert not leftovers(root), leftovers(root)


def test_extents_file_unreadable_midway(site, pair):
    """fb's %pre empties fb's own extents file (the cache is inside the root):
    the feed and the plugin lose their data while fb unpacks. fb must fail and
    leave nothing; fa stays, intact. (Stock rpm, its package file emptied
    the same way, fails fb too.)"""
    site.seed_shell()
    cut = "%pre\n: > /cache/fb.rpm\n: > /cache/fb.rpme\n"
    fa, fb = pair("fa"), pair("fb", sections=cut)
    for root in (site.stock, site.cow):
        (root / "cache").mkdir()
    shutil.copy(fb, site.stock / "cache/fb.rpm")
    assert site.rpm("-i", "--nodeps", fa, site.stock / "cache/fb.rpm", ok=False).returncode
    ea = site.transcode(fa)
    eb = site.transcode(fb, name="../cow/cache/fb.rpme")
    r = site.install("--nodeps", ea, eb, ok=False)
    assert r.returncode != 0, r.stderr
    assert installed(site.cow) == installed(site.stock) == ["fa-1.0-1.noarch"]
    _fb_absent(site.stock)
    _fb_absent(site.cow)
    assert rpm_verify(site.cow) == (0, "")


def test_plugin_failure_before_unpack_fails_the_install(site, pair):
    """fa's %post empties fb's extents file before fb starts: the plugin
    cannot read its table, rpm fails fb (stock rpm, fb.rpm emptied the same
    way, fails it too and exits non-zero). rpmcow must not report success."""
    site.seed_shell()
    cut = "%post\n: > /cache/fb.rpm\n: > /cache/fb.rpme\n"
    fa, fb = pair("fa", sections=cut), pair("fb")
    for root in (site.stock, site.cow):
        (root / "cache").mkdir()
    shutil.copy(fb, site.stock / "cache/fb.rpm")
    a = site.rpm("-i", "--nodeps", fa, site.stock / "cache/fb.rpm", ok=False)
    assert a.returncode != 0
    ea = site.transcode(fa)
    eb = site.transcode(fb, name="../cow/cache/fb.rpme")
    r = site.install("--nodeps", ea, eb, ok=False)
    assert installed(site.cow) == installed(site.stock) == ["fa-1.0-1.noarch"]
    _fb_absent(site.cow)
    assert "fb-1.0-1.noarch: installed" not in r.stderr, r.stderr
    assert r.returncode != 0, "rpm failed fb, rpmcow exited 0:\n" + r.stderr


@pytest.mark.parametrize("how", ["group-writable", "verify-files"])
def test_damaged_blob_is_refused(site, pair, how):
    """Three bytes of one of fb's blobs flipped after transcoding. Stock rpm,
    given fb.rpm with a damaged payload, refuses it before the transaction
    and installs nothing.  rpmcow trusts blobs checked at transcode time only
    while the file belongs to root and nobody else may write it
    (docs/verification.md); otherwise -- or with --verify-files -- it hashes
    every blob and must refuse the damaged content."""
    import rpm as rpmlib
    from rpmcow import extents
    fa, fb = pair("fa"), pair("fb")
    damaged = site.base / "fb-damaged.rpm"
    data = bytearray(fb.read_bytes())
    data[-3000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert site.rpm("-i", "--nodeps", "--noscripts", fa, damaged, ok=False).returncode != 0

    ea, eb = site.transcode(fa), site.transcode(fb)
    ts = rpmlib.TransactionSet()
    ts.setVSFlags(rpmlib._RPMVSF_NOSIGNATURES)
    with open(fb, "rb") as f:
        h = ts.hdrFromFdno(f.fileno())
    digest = {f.name: bytes.fromhex(f.digest) for f in rpmlib.files(h)}["/opt/fb/two"]
    fd = os.open(eb, os.O_RDWR)
    try:
        off = extents.read_sections(fd).lookup(digest)
        assert off is not None
        os.pwrite(fd, b"\xde\xad\xbe", off + 100)
    finally:
        os.close(fd)
    extra = []
    if how == "group-writable":
        os.chmod(eb, 0o664)
    else:
        extra = ["--verify-files"]
    r = site.install("--nodeps", "--noscripts", *extra, ea, eb, ok=False)
    assert r.returncode != 0, "damaged blob installed (exit 0); rpm -V says %r" % (
        rpm_verify(site.cow),)
    assert "fb" in r.stderr and "File digests: BAD" in r.stderr
    assert installed(site.cow) == installed(site.stock)
    site.assert_same()


# ================================================================ where cloning is impossible

def test_ext4_copies_with_one_warning_per_package(ext4_site, generated):
    site = ext4_site
    site.seed_shell()
    pkgs = [REAL / "mc-4.8.21-2.1.x86_64.rpm", TESTDATA / "hello-2.0-1.x86_64.rpm",
            TESTDATA / "hlinktest-1.0-1.noarch.rpm", UPSTREAM / "edge-1.0-1.noarch.rpm",
            generated["sinktrig"], generated["sink-1.0"]]
    site.rpm("-i", "--nodeps", *pkgs)
    r = site.install("--nodeps", *[site.transcode(p) for p in pkgs])
    nevras = installed(site.cow)
    site.assert_same(shared=nevras, ignore_mtime=SCRIPT_OUTPUT)
    # one warning per package that has a file of at least one block
    expected = {n: 1 for n in nevras if cow_candidates(site.cow, [n])}
    assert copy_warnings(r.stderr) == expected, r.stderr
    assert "hlinktest-1.0-1.noarch" not in expected       # 29-byte files only: fed for real
    # what the user is told: copied, never "copy-on-write" (issue #20 item 4)
    assert "installed copy-on-write" not in r.stderr, r.stderr
    for n in expected:
        assert "%s: installed, file data copied (this filesystem cannot clone)" % n \
            in r.stderr, r.stderr
    assert "0 copy-on-write (0 B shared), %d copied" % len(expected) in r.stderr, r.stderr


def test_extents_file_on_another_filesystem(request, xfs_fs, ext4_fs, generated):
    with xfs_fs.area_ctx(request.node.name) as base, \
            ext4_fs.area_ctx(request.node.name) as cache:
        site = Site(xfs_fs, base, cache=cache)
        # a real package with many files (one this host's rpm installs: see host_refuses)
        real = next(p for p in (REAL / "cyrus-imapd-2.4.17-9.fc22.x86_64.rpm",
                                REAL / "ruby-libs-2.7.0-1.fc32.x86_64.rpm")
                    if not host_refuses(p))
        pkgs = [real, generated["sink-1.0"]]
        site.rpm("-i", "--nodeps", "--noscripts", *pkgs)
        r = site.install("--nodeps", "--noscripts", *[site.transcode(p) for p in pkgs])
        nevras = installed(site.cow)
        site.assert_same(shared=nevras)
        assert copy_warnings(r.stderr) == {real.name[:-len(".rpm")]: 1,
                                           "sink-1.0-1.noarch": 1}, r.stderr
        assert "another filesystem" in r.stderr


# ================================================================ mixed transactions, options

def test_plain_rpm_and_extents_file_in_one_transaction(site, pair):
    fa, fb = pair("fa"), pair("fb")
    site.rpm("-i", "--nodeps", "--noscripts", fa, fb)
    r = site.install("--nodeps", "--noscripts", fa, site.transcode(fb))
    assert "fa-1.0-1.noarch: installed the stock way\n" in r.stderr, r.stderr
    assert "fb-1.0-1.noarch: installed copy-on-write, " in r.stderr
    assert "rpmcow: 2 packages installed: 1 copy-on-write (" in r.stderr
    assert "0 copied, 1 the stock way" in r.stderr
    site.assert_same(shared=["fb-1.0-1.noarch"])
    # fa came in the stock way: its files are not shared with anything
    assert_none_shared(site.cow, ["fa-1.0-1.noarch"])


def _package_digest_algos():
    from rpmcow import rpmconfig
    return rpmconfig.package_digest_algos()


needs_package_digests = pytest.mark.skipif(
    not _package_digest_algos(),
    reason="this rpm records no package digests in its database (%_pkgverify_digests: rpm 6)")


def db_package_digests(root, nevra):
    """{PGPHASHALGO: hex} rpm recorded for an installed package."""
    r = rpm_q(root, "-q", nevra, "--qf", "[%{PACKAGEDIGESTALGOS} %{PACKAGEDIGESTS}\n]")
    assert r.returncode == 0, r.stderr
    return {int(a): d for a, d in (line.split() for line in r.stdout.splitlines()
                                   if line.strip() and "(none)" not in line)}


def file_digests(path):
    from rpmcow.digests import BY_ID
    data = Path(path).read_bytes()
    names = {8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224", 12: "sha3_256",
             14: "sha3_512", 1: "md5", 2: "sha1"}
    return {a: hashlib.new(names[a], data).hexdigest() for a in _package_digest_algos()
            if a in BY_ID}


@needs_package_digests
def test_rpmdb_has_the_original_package_digests(site, pair):
    """rpm 6 records digests of each package file it reads: for an extents
    file those of the original package (from the record), never of the feed
    rpm read; a plain package beside it keeps its own."""
    fa, fb = pair("fa"), pair("fb")
    site.install("--nodeps", "--noscripts", fa, site.transcode(fb))
    want_fa, want_fb = file_digests(fa), file_digests(fb)
    assert set(want_fb) == set(_package_digest_algos()) and want_fb
    assert db_package_digests(site.cow, "fa-1.0-1.noarch") == want_fa
    assert db_package_digests(site.cow, "fb-1.0-1.noarch") == want_fb
    # and what stock rpm records for the same packages
    site.rpm("-i", "--nodeps", "--noscripts", fa, fb)
    assert db_package_digests(site.stock, "fb-1.0-1.noarch") == want_fb


@needs_package_digests
def test_no_package_digests_without_a_record_of_them(xfs_site, pair):
    """An extents file made where rpm records no package digests (or by
    another tool) has none in its record: the rpmdb then has none for it --
    not digests of the bytes rpm was fed."""
    from rpmcow import rpmconfig, transcode
    fb = pair("fb")
    out = xfs_site.cache / "fb.rpme"
    rpm.addMacro("_pkgverify_digests", "%{nil}")
    try:
        transcode.transcode_path(str(fb), str(out),
                                 target=rpmconfig.Target(str(xfs_site.cow), DB))
    finally:
        rpm.delMacro("_pkgverify_digests")
    assert b"package-digests=" not in out.read_bytes()
    xfs_site.install("--nodeps", "--noscripts", out)
    assert db_package_digests(xfs_site.cow, "fb-1.0-1.noarch") == {}


@needs_package_digests
def test_package_digests_are_under_the_record_mac(xfs_site, pair):
    """Digests changed in the record make it 'altered': the install judges
    the content itself (every blob hashed, as for any file without a valid
    record) and the changed digests never reach the database."""
    fb = pair("fb")
    out = xfs_site.transcode(fb)
    data = bytearray(out.read_bytes())
    i = data.index(b"package-digests=8:") + len(b"package-digests=8:")
    data[i:i + 1] = b"0" if data[i:i + 1] != b"0" else b"1"
    out.write_bytes(bytes(data))
    r = run(rpmcow_argv() + ["checksig", "-v", "--root", xfs_site.cow, "--dbpath", DB, out])
    assert r.returncode != 0 and "record was altered" in r.stdout, r.stdout + r.stderr
    xfs_site.install("--nodeps", "--noscripts", out)
    assert db_package_digests(xfs_site.cow, "fb-1.0-1.noarch") == {}


def test_source_packages_are_refused(xfs_site):
    """rpm -i unpacks a source package into %_topdir; rpmcow install would
    have made it an installed package: it refuses, naming it, installing
    nothing of the transaction."""
    src = CORPUS / "rpm-testdata" / "hello-1.0-1.src.rpm"
    binary = CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64.rpm"
    for pkg in (src, xfs_site.transcode(src)):
        r = xfs_site.install("--nodeps", "--noscripts", binary, pkg, ok=False)
        assert r.returncode != 0
        assert "hello is a source package: install it with rpm -i" in r.stderr, r.stderr
        assert len(noise_free(r.stderr).strip().splitlines()) == 1, r.stderr
        assert installed(xfs_site.cow) == []


def test_noscripts_runs_no_scriptlets_and_no_triggers(site, generated):
    """rpm's --noscripts is --nopre --nopost ... and --notriggers: with the
    file-trigger package in the transaction, nothing at all may run."""
    site.seed_shell()
    pkgs = [generated["sinktrig"], generated["sink-1.0"]]
    site.rpm("-i", "--nodeps", "--noscripts", *pkgs)
    assert not (site.stock / LOG.lstrip("/")).exists()
    site.install("--nodeps", "--noscripts", *[site.transcode(p) for p in pkgs])
    log = site.cow / LOG.lstrip("/")
    assert not log.exists(), "scriptlets ran under --noscripts:\n%s..." % "\n".join(
        log.read_text().splitlines()[:3])
    site.assert_same(shared=["sink-1.0-1.noarch"])


def test_notriggers_like_rpm(site, generated):
    site.seed_shell()
    pkgs = [generated["sinktrig"], generated["sink-1.0"]]
    site.rpm("-i", "--nodeps", "--notriggers", *pkgs)
    site.install("--nodeps", "--notriggers", *[site.transcode(p) for p in pkgs])
    log = (site.cow / LOG.lstrip("/")).read_text()
    assert "pre sink-1.0 1" in log and "trigger" not in log, log
    site.assert_same(shared=["sink-1.0-1.noarch"], ignore_mtime=SCRIPT_OUTPUT)


def test_replacefiles_like_rpm(site, pkgbuilder):
    """Two packages owning one path with different content: a conflict
    without --replacefiles, the newcomer's file with it."""
    one = pkgbuilder.build("clash1", [regular("/opt/clash/f", pattern(9000, 40)),
                                      regular("/opt/clash/only1", pattern(5000, 41))])
    two = pkgbuilder.build("clash2", [regular("/opt/clash/f", pattern(9000, 42))])
    e1, e2 = site.transcode(one), site.transcode(two)
    site.rpm("-i", "--nodeps", "--noscripts", one)
    site.install("--nodeps", "--noscripts", e1)
    a = site.rpm("-i", "--nodeps", "--noscripts", two, ok=False)
    b = site.install("--nodeps", "--noscripts", e2, ok=False)
    assert a.returncode != 0 and b.returncode != 0
    assert "conflicts with file from package clash1" in b.stderr, b.stderr
    assert installed(site.cow) == ["clash1-1.0-1.noarch"]
    site.rpm("-i", "--replacefiles", "--nodeps", "--noscripts", two)
    site.install("--replacefiles", "--nodeps", "--noscripts", e2)
    assert (site.cow / "opt/clash/f").read_bytes() == pattern(9000, 42)
    site.assert_same(verify_clean=False, shared=installed(site.cow))
    assert rpm_verify(site.cow) == (0, ".........    /opt/clash/f (replaced)")


def test_downgrade_needs_oldpackage_like_rpm(site, generated):
    v10, v11 = generated["sink-1.0"], generated["sink-1.1"]
    e10, e11 = site.transcode(v10), site.transcode(v11)
    site.rpm("-i", "--nodeps", "--noscripts", v11)
    site.install("--nodeps", "--noscripts", e11)
    a = site.rpm("-U", "--nodeps", "--noscripts", v10, ok=False)
    b = site.install("-U", "--nodeps", "--noscripts", e10, ok=False)
    assert a.returncode != 0 and b.returncode != 0
    assert "newer" in b.stderr, b.stderr
    site.rpm("-U", "--oldpackage", "--nodeps", "--noscripts", v10)
    site.install("-U", "--oldpackage", "--nodeps", "--noscripts", e10)
    assert installed(site.cow) == ["sink-1.0-1.noarch"]
    site.assert_same(shared=installed(site.cow))


def test_xfs_with_1k_blocks_clones_from_one_block_up(tmp_path):
    """The feed's block size follows the root's filesystem: on XFS with 1 KiB
    blocks files from 1 KiB up are cloned, too."""
    reason = loopfs.unavailable_reason("xfs")
    if reason:
        pytest.skip(reason)
    with LoopFS("xfs", size=1 << 30, mkfs_args=["-b", "size=1024"]) as fs:
        site = Site(fs, fs.area("1k"))
        pkgs = [REAL / "mc-4.8.21-2.1.x86_64.rpm", UPSTREAM / "edge-1.0-1.noarch.rpm"]
        site.rpm("-i", "--nodeps", "--noscripts", *pkgs)
        site.install("--nodeps", "--noscripts", *[site.transcode(p) for p in pkgs])
        nevras = installed(site.cow)
        site.assert_same(shared=nevras, blk=1024)
        small = {p: n for p, n in cow_candidates(site.cow, nevras, 1024).items() if n < BLK}
        assert small                                        # there are some, and they are shared


def test_test_flag_installs_nothing(site, pair):
    fa, fb = pair("fa"), pair("fb")
    site.rpm("-i", "--test", "--nodeps", "--noscripts", fa, fb)
    site.install("--test", "--nodeps", "--noscripts", site.transcode(fa), site.transcode(fb))
    assert installed(site.cow) == installed(site.stock) == []
    assert not (site.cow / "opt").exists()
    site.assert_same()


@pytest.mark.parametrize("which", ["hello", "sink"])
def test_excludedocs_like_rpm(site, generated, which):
    pkg = TESTDATA / "hello-2.0-1.x86_64.rpm" if which == "hello" else generated["sink-1.0"]
    site.rpm("-i", "--excludedocs", "--nodeps", "--noscripts", pkg)
    site.install("--excludedocs", "--nodeps", "--noscripts", site.transcode(pkg))
    nevras = installed(site.cow)
    docs = [p for p, _, _, flags, _, _ in db_files(site.cow) if flags & RPMFILE_DOC]
    assert docs and not any(Path(str(site.cow) + p).exists() for p in docs
                            if not Path(str(site.cow) + p).is_dir())
    site.assert_same(shared=nevras)


def test_replacepkgs_reinstall(site):
    pkg = REAL / "mc-4.8.21-2.1.x86_64.rpm"
    ext = site.transcode(pkg)
    site.rpm("-i", "--nodeps", "--noscripts", pkg)
    site.install("--nodeps", "--noscripts", ext)
    victim = next(p for p, mode, size, flags, _, _ in db_files(site.cow)
                  if stat.S_ISREG(mode) and size >= BLK and not flags & RPMFILE_CONFIG)
    for root in (site.stock, site.cow):             # damage a file, reinstall repairs it
        Path(str(root) + victim).write_bytes(b"broken\n")
    again = site.rpm("-i", "--nodeps", "--noscripts", pkg, ok=False)
    r = site.install("--nodeps", "--noscripts", ext, ok=False)
    assert again.returncode != 0 and r.returncode != 0
    assert "already installed" in again.stderr and "already installed" in r.stderr
    site.rpm("-i", "--replacepkgs", "--nodeps", "--noscripts", pkg)
    site.install("--replacepkgs", "--nodeps", "--noscripts", ext)
    assert installed(site.cow) == ["mc-4.8.21-2.1.x86_64"]
    site.assert_same(shared=["mc-4.8.21-2.1.x86_64"])


# ================================================================ verification policy

def test_nokey_verdict_refused_at_signature_level(xfs_site):
    site = xfs_site
    pkg = TESTDATA / "hello-2.0-1.x86_64-signed.rpm"
    ext = site.transcode(pkg, level="digest")        # the verdict says NOKEY
    r = site.install("--verify-level", "signature", "--nodeps", "--noscripts", ext, ok=False)
    assert r.returncode != 0
    assert "hello-2.0-1.x86_64" in r.stderr and "NOKEY" in r.stderr, r.stderr
    # and how to fix it (issue #20)
    assert "rpmkeys --import KEYFILE" in r.stderr and "--verify-level digest" in r.stderr
    assert installed(site.cow) == []
    # the same file at level digest goes in
    site.install("--verify-level", "digest", "--nodeps", "--noscripts", ext)
    site.rpm("-i", "--nodeps", "--noscripts", pkg)
    site.assert_same(shared=installed(site.cow))


def test_nokey_verdict_accepted_once_the_key_is_imported(xfs_site):
    site = xfs_site
    pkg = TESTDATA / "hello-2.0-1.x86_64-signed.rpm"
    ext = site.transcode(pkg, level="digest")
    site.rpm("--import", TESTDATA / "rpm.org-rsa-2048-test.pub", root=site.cow)
    site.install("--verify-level", "signature", "--nodeps", "--noscripts", ext)
    assert "hello-2.0-1.x86_64" in installed(site.cow)


@pytest.mark.parametrize("name,level", [
    ("hello-2.0-1.x86_64-signed.NOKEY.v419.rpme", "signature"),
    ("hello-2.0-1.x86_64-signed.KEYOK.v419.rpme", "signature"),   # upstream's KEYOK is not trusted
    ("hello-2.0-1.x86_64-corrupted.v419.rpme", "digest"),
])
def test_upstream_extents_files_refused(xfs_site, name, level):
    site = xfs_site
    ext = site.cache / name
    shutil.copyfile(UPSTREAM / name, ext)
    r = site.install("--verify-level", level, "--nodeps", "--noscripts", ext, ok=False)
    assert r.returncode != 0
    assert "hello-2.0-1.x86_64" in r.stderr, r.stderr
    assert installed(site.cow) == []
    assert not (site.cow / "usr").exists()


# ================================================================ the plugin's worker thread
#
# On zstd and gzip payloads the plugin clones on a thread of its own, rpm
# moving on to the next file meanwhile (csrc/rpm_plugin_cow.c). A failed
# clone must still fail the package before rpm commits a file: reported at a
# later file's hook, done at once for the archive's last entry, and -- when
# rpm skips the last entry, so that no hook follows -- by the feed, which
# withholds the archive's trailer until the plugin's work is found done.
# RPMCOW_TEST_FAULT_PATH makes the plugin fail the file whose path holds it,
# RPMCOW_TEST_FAULT_DELAY_MS that many milliseconds late (so that rpm has
# moved on past every hook when the worker fails).

FAULT = "RPMCOW_TEST_FAULT_PATH"


@pytest.fixture(scope="session")
def fault_plugin(tmp_path_factory):
    """cow.so built with its test hooks (the default build has none), in a
    root-only directory (as $RPMCOW_PLUGIN must be for root)."""
    from rpmcow import _build
    return _build.build_plugin(str(tmp_path_factory.mktemp("faultplugin")), test_hooks=True)


def fault_env(plugin, where, delay_ms=0):
    env = {FAULT: where, "RPMCOW_PLUGIN": plugin}
    if delay_ms:
        env["RPMCOW_TEST_FAULT_DELAY_MS"] = str(delay_ms)
    return env


def worker_files(doc_last=False):
    """Cloneable files in archive order a..j (+ a %doc file sorting last)."""
    files = [directory("/opt/wt")]
    files += [regular("/opt/wt/f%s" % c, pattern(20000 + i * 4096 + 7, 40 + i))
              for i, c in enumerate("abcdefghij")]
    files.append(regular("/opt/wt/small", b"small\n"))
    if doc_last:
        files.append(regular("/opt/wt/zz-README", pattern(9000, 60), directives="%doc"))
    return files


@pytest.fixture(scope="module")
def worker_pkgs(pkgbuilder):
    return {
        "wt": pkgbuilder.build("wt", worker_files()),
        "wtdoc": pkgbuilder.build("wtdoc", worker_files(doc_last=True)),
        "wtgz": pkgbuilder.build("wtgz", worker_files(), compressor="gzip"),
        "wtxz": pkgbuilder.build("wtxz", worker_files(), compressor="xz"),
        "wtdocxz": pkgbuilder.build("wtdocxz", worker_files(doc_last=True), compressor="xz"),
    }


def _wt_absent(site, name):
    assert name not in " ".join(installed(site.cow))
    if _rpm_before_417():
        assert not leftovers(site.cow), leftovers(site.cow)
        pytest.skip("rpm %s keeps the files of a failed package that it had committed "
                    "already (lib/fsm.c commits each file as it unpacks it; rpm 4.17 erases "
                    "them): the package is not installed, no temporary file is left, the "
                    "rest is not checked" % rpm.__version__)
    left = [p for p in (site.cow / "opt/wt").rglob("*") if not p.is_dir()] \
        if (site.cow / "opt/wt").exists() else []
    assert not left, left
    assert not leftovers(site.cow), leftovers(site.cow)


def needs_worker():
    """Skip unless the plugin may clone on its worker thread here: not where
    rpm loads a plugin that reads file content (sid's rpm 6.1 loads
    fsverity in every transaction: test_no_worker_when_a_plugin_reads_content),
    nor with rpm < 4.18 (EL9's 4.16), whose hook gives the plugin no descriptor."""
    from rpmcow import rpmplugin
    if not rpmplugin.WORKER_ABI:
        pytest.skip("no worker thread with rpm %s: its fsm_file_prepare hook has no file "
                    "descriptor (rpm 4.18 added it); the plugin works in the hook"
                    % rpm.__version__)
    with rpmplugin.enabled() as act:
        if not act.worker_ok:
            pytest.skip("no worker thread on this host: rpm loads %s, which read file content"
                        % ", ".join(n for n in act.others if n not in rpmplugin.CONTENT_BLIND))


@pytest.mark.parametrize("pkg,fault", [
    ("wt", "/opt/wt/fc;"),          # midway: reported at a later file's hook
    ("wt", "/opt/wt/fa;"),          # the first file
    ("wt", "/opt/wt/fj;"),          # the last clone; the archive's last entry is 'small'
    ("wtgz", "/opt/wt/fe;"),        # gzip: gated too
    ("wtxz", "/opt/wt/fe;"),        # xz: gated by empty blocks
])
def test_worker_failure_rolls_back(xfs_site, worker_pkgs, pkg, fault, fault_plugin):
    needs_worker()
    site = xfs_site
    ext = site.transcode(worker_pkgs[pkg])
    r = site.install("--nodeps", "--noscripts", ext, ok=False,
                     env=fault_env(fault_plugin, fault))
    assert r.returncode != 0, r.stderr
    assert "fault injected" in r.stderr and fault.rstrip(";") in r.stderr, r.stderr
    # the work was queued: rpm learns of the failure at a later file's hook
    assert re.search(r"failed on file /opt/wt/", r.stderr), r.stderr
    assert "failed on file %s" % fault not in r.stderr, r.stderr
    _wt_absent(site, pkg)
    # and without the fault it goes in like stock rpm's
    site.install("--nodeps", "--noscripts", ext)
    site.rpm("-i", "--nodeps", "--noscripts", worker_pkgs[pkg])
    site.assert_same(shared=installed(site.cow))


def test_failure_on_the_last_entry_is_synchronous(xfs_site, worker_pkgs, fault_plugin):
    """The archive's last entry is cloned in its own hook, after every queued
    job: rpm fails the package on that very file."""
    site = xfs_site
    ext = site.transcode(worker_pkgs["wtdoc"])
    r = site.install("--nodeps", "--noscripts", ext, ok=False,
                     env=fault_env(fault_plugin, "/opt/wt/zz-README;"))
    assert r.returncode != 0, r.stderr
    assert "fault injected" in r.stderr, r.stderr
    assert "failed on file /opt/wt/zz-README;" in r.stderr, r.stderr
    _wt_absent(site, "wtdoc")


@pytest.mark.parametrize("name", ["wtdoc", "wtdocxz"])
def test_worker_failure_when_rpm_skips_the_last_entry(xfs_site, worker_pkgs, fault_plugin, name):
    """--excludedocs: rpm skips the archive's last entry (a %doc file) and
    calls no hook after the last clone's.  The feed's gate must fail it
    (zstd: a skippable frame; xz: empty blocks)."""
    needs_worker()
    site = xfs_site
    ext = site.transcode(worker_pkgs[name])
    r = site.install("--excludedocs", "--nodeps", "--noscripts", ext, ok=False,
                     env=fault_env(fault_plugin, "/opt/wt/small;"))     # not cloned: no failure
    assert r.returncode == 0, r.stderr
    site.rpm("-i", "--excludedocs", "--nodeps", "--noscripts", worker_pkgs[name])
    site.assert_same(shared=installed(site.cow))
    site.rpm("-e", "--nodeps", "--noscripts", name, root=site.cow)
    site.rpm("-e", "--nodeps", "--noscripts", name)
    # the last entry with a hook; the worker fails it only after rpm has
    # called the hook of 'small' (else that hook reports it, which is not
    # what this test is about: that happened once in CI)
    r = site.install("--excludedocs", "--nodeps", "--noscripts", ext, ok=False,
                     env=fault_env(fault_plugin, "/opt/wt/fj;", delay_ms=500))
    assert r.returncode != 0, r.stderr
    assert "fault injected" in r.stderr and "cut short" in r.stderr, r.stderr
    assert "failed on file /opt/wt/small" not in r.stderr, r.stderr
    _wt_absent(site, name)


def test_worker_failure_in_second_package_keeps_the_first(xfs_site, worker_pkgs, pair,
                                                          fault_plugin):
    needs_worker()
    site = xfs_site
    fa = pair("fa")
    r = site.install("--nodeps", "--noscripts", site.transcode(fa),
                     site.transcode(worker_pkgs["wt"]), ok=False,
                     env=fault_env(fault_plugin, "/opt/wt/fd;"))
    assert r.returncode != 0, r.stderr
    assert installed(site.cow) == ["fa-1.0-1.noarch"]
    _wt_absent(site, "wt")
    site.rpm("-i", "--nodeps", "--noscripts", fa)
    site.assert_same(shared=installed(site.cow))


def test_no_worker_when_a_plugin_reads_content(tmp_path):
    """ima and fsverity look at a file's content in their own hooks, which
    run while the worker may still be cloning it: no worker with them.  (rpm
    loads a plugin whose file is in %__plugindir and whose macro is set.)"""
    import rpm as rpmlib
    from rpmcow import rpmplugin
    if not rpmplugin.WORKER_ABI:
        pytest.skip("no worker thread at all with rpm %s (fsm_file_prepare has no file "
                    "descriptor before rpm 4.18)" % rpm.__version__)
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    for name in ("selinux", "fsverity", "syslog"):
        (plugdir / (name + ".so")).write_bytes(b"")
    pushed = ["__plugindir", "__transaction_selinux", "__transaction_syslog",
              "__transaction_fsverity"]
    for name, value in zip(pushed, [plugdir, plugdir / "selinux.so", plugdir / "syslog.so",
                                    "%{nil}"]):           # fsverity turned off
        rpmlib.addMacro(name, str(value))
    try:
        with rpmplugin.enabled() as act:
            assert act.others == ["selinux", "syslog"] and act.worker_ok
        rpmlib.addMacro("__transaction_fsverity", str(plugdir / "fsverity.so"))
        pushed.append("__transaction_fsverity")
        with rpmplugin.enabled() as act:
            assert act.others == ["fsverity", "selinux", "syslog"] and not act.worker_ok
    finally:
        for name in pushed:
            rpmlib.delMacro(name)


def test_uvh_like_rpm(xfs_site, pair):
    """rpmcow install -Uvh: a line per package with hash marks to 100%, as
    rpm -Uvh prints them, then what happened to each."""
    site = xfs_site
    fa, fb = pair("fa"), pair("fb")
    r = site.install("-Uvh", "--nodeps", "--noscripts", fa, site.transcode(fb))
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, r.stdout
    for line, nevra in zip(lines, ("fa-1.0-1.noarch", "fb-1.0-1.noarch")):
        assert line.split(":", 1)[1].startswith(nevra), lines
        assert line.endswith("#" * 40 + " [100%]"), lines
    assert "fb-1.0-1.noarch: installed copy-on-write" in r.stderr
    assert installed(site.cow) == ["fa-1.0-1.noarch", "fb-1.0-1.noarch"]
    r = site.install("-Uv", "--replacepkgs", "--nodeps", "--noscripts", site.transcode(fb))
    assert r.stdout.split() == ["fb-1.0-1.noarch"], r.stdout


@pytest.fixture
def syslog_socket(tmp_path):
    """A datagram socket where the system log would be: /dev/log itself
    where there is none (removed afterwards), else bound over it in a mount
    namespace of the command's own (see run_with_log)."""
    import socket
    path = tmp_path / "log.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    created = False
    if os.path.islink("/dev/log") and not os.path.exists("/dev/log"):
        s.close()      # a test run on the host (whose /dev a matrix chroot shares) made it
        pytest.skip("/dev/log is another test run's symlink, dangling here")
    if not os.path.exists("/dev/log"):
        os.symlink(path, "/dev/log")
        created = True
    try:
        yield s, path, created
    finally:
        if created:
            os.unlink("/dev/log")
        s.close()


def test_every_install_logs_one_line_to_the_journal(xfs_site, pair, syslog_socket):
    sock, path, created = syslog_socket
    site = xfs_site
    argv = rpmcow_argv() + ["install", "--root", site.cow, "--dbpath", DB, "--nodeps",
                            "--noscripts", pair("fa"), site.transcode(pair("fb"))]
    if not created:      # a real /dev/log: ours over it, for this command alone
        # (in a chroot "/" is no mount point, and unshare cannot make it
        # private: then /dev is, which the bind goes under)
        argv = ["unshare", "-m", "--propagation", "unchanged", "sh", "-c",
                '(mount --make-rprivate / || mount --make-rprivate /dev) 2>/dev/null && '
                'mount --bind "$0" /dev/log && exec "$@"',
                str(path)] + [str(a) for a in argv]
    r = run(argv)
    assert r.returncode == 0, r.stderr
    msg = sock.recv(4096).decode()
    assert "rpmcow[" in msg and "install into %s: 2 packages, 1 copy-on-write (" % site.cow in msg
    assert msg.startswith("<%d>" % (10 * 8 + 5)), msg        # authpriv.notice, as rpm's plugin
    assert ", 1 the stock way" in msg, msg

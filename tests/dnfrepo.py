"""A signed package repository served over HTTP on 127.0.0.1, and real dnf runs
against it, for end-to-end tests of the ``cow`` DNF plugin.

    from dnfrepo import dnf_repo               # noqa: F401  (session fixture)

    def test_x(dnf_repo, tmp_path):
        dnf = dnf_repo.dnf(tmp_path / "root", keepcache=1)
        rc, out, err = dnf("install", "cowdemo-1.0")
        assert rpm_qa(dnf.root) == {...}

What the session repository holds (``RepoSet``):

* ``cowdemo`` 1.0-1 and 1.1-1 -- built with rpmbuild (zstd): a multi-block
  file with a partial last block, a file of exactly whole blocks, a hard link
  pair, a small file, a %config(noreplace) file, a symlink, directories.
* ``cowgz`` 1.0-1 -- a multi-block and a small file, gzip payload.
* ``cownone`` 1.0-1 (payload not compressed) and ``cowbz2`` 1.0-1 (bzip2, which
  the plugin cannot feed cheaply, so it installs the stock way).
* ``cowbroken`` 1.0-1 -- built and signed like the others, then bytes of its
  (compressed) payload flipped *before* ``createrepo_c`` ran, so the
  repository's checksum matches and only rpm's payload digest (dnf's
  gpgcheck) can catch it.
* a few corpus packages (``corpus/real``) that require only ``rpmlib(...)``,
  have no scriptlets (the install roots have no shell) and an architecture
  this machine installs -- checked with ``rpm -qp``, not assumed.

Every package file is copied in as ``NAME-VERSION-RELEASE.ARCH.rpm`` and
(re-)signed with an RSA key generated for the session (``GpgKey``); the
repository is served by ``python3 -m http.server`` on a free loopback port
(``HttpServer``, always stopped), and the repo file says ``gpgcheck=1
gpgkey=file://<key>`` (dnf imports the key into each root on first use).

``Dnf`` runs dnf 4 (``dnf-3``: dnf4_executable) ``-c CONF --installroot R --releasever 1 -y
--setopt=reposdir=... --setopt=pluginpath=<checkout>/dnf-plugins
--setopt=pluginconfpath=...`` with HOME pinned to /root (Debian's rpm puts
the rpmdb at ``$HOME/.rpmdb`` inside the root) and returns (rc, stdout,
stderr). ``rpm_qa``/``rpm_va`` query a root with the same HOME.
"""
import atexit
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pkgbuild  # noqa: E402
from pkgbuild import config, directory, hardlink, regular, symlink  # noqa: E402
from rpmcow.scenario import dnf4_executable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "dnf-plugins"


DNF = dnf4_executable()
PIN_HOME = "/root"
REPO_ID = "cowtest"
KEY_UID = "rpmcow dnf test <rpmcow-dnf-test@example.invalid>"

# corpus packages tried for the repository; those that fail the checks in
# usable_corpus_package() are left out (at least MIN_CORPUS must remain)
CORPUS_CANDIDATES = (
    "go-package-1.0-0.x86_64.rpm",                       # zstd, two 1.4 MB binaries
    "texlive-codepage-doc-2018.151.svn21126-38.1.noarch.rpm",   # xz, signed by a foreign key
    "binary-in-etc-1.0-0.x86_64.rpm",                    # xz, one 20 KB file
    "lto-text-1.0-0.x86_64.rpm",                         # zstd, a 58 KB archive
)
MIN_CORPUS = 2

SUMMARY_RE = re.compile(r"cow: (\d+) of (\d+) packages installed copy-on-write, "
                        r"(.+?) of file data (?:shared with the cache|cloned, not written "
                        r"again \(the cache is not kept\))")
STOCK_RE = re.compile(r"cow: (\S+) installs the stock way: (.*)")
TRANSCODED_RE = re.compile(r"cow: transcoded (\S+) \(")


def _env(extra=None):
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": PIN_HOME,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    env.update(extra or {})
    return env


def _run(cmd, timeout=300, env=None, check=True, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       timeout=timeout, env=env or _env(), **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (exit %d):\n%s\n%s"
                           % (" ".join(map(str, cmd)), r.returncode, r.stdout, r.stderr))
    return r


def missing_tools():
    """Tools these tests need that this machine lacks."""
    need = ["rpmbuild", "rpmsign", "gpg", "gpgconf", "createrepo_c", "filefrag", "rpm"]
    out = [t for t in need if shutil.which(t) is None]
    if not os.access(DNF, os.X_OK):
        out.append(DNF)
    return out


# ---- gpg --------------------------------------------------------------------

class GpgKey:
    """An RSA 2048 signing key in a private GNUPGHOME; ``close()`` stops its agent."""

    def __init__(self, workdir, uid=KEY_UID):
        self.home = Path(workdir) / "gnupg"
        self.home.mkdir(mode=0o700, parents=True)
        self.uid = uid
        self.env = _env({"GNUPGHOME": str(self.home)})
        try:
            _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                  "--quick-gen-key", uid, "rsa2048", "sign", "never"], env=self.env)
            self.fingerprint = self._fingerprint()
            self.keyid = self.fingerprint[-8:].lower()
            self.pubkey = Path(workdir) / "RPM-GPG-KEY-rpmcow-test"
            r = _run(["gpg", "--batch", "--armor", "--export", self.fingerprint], env=self.env)
            self.pubkey.write_text(r.stdout)
        except BaseException:
            self.close()
            raise

    def _fingerprint(self):
        r = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys", self.uid],
                 env=self.env)
        for line in r.stdout.splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise RuntimeError("no fingerprint for the new key:\n" + r.stdout)

    def sign(self, paths):
        """rpmsign --resign: replaces any signature the packages had (rpm 4:
        the same as --addsign; rpm 6's --addsign refuses a package that has
        a signature of another kind: "already contains a legacy signature")."""
        _run(["rpmsign", "--resign",
              "--define", "_gpg_name %s" % self.fingerprint,
              "--define", "__gpg /usr/bin/gpg",
              "--define", "_gpg_path %s" % self.home] + [str(p) for p in paths],
             env=self.env, stdin=subprocess.DEVNULL)

    def close(self):
        if self.home.is_dir():
            subprocess.run(["gpgconf", "--kill", "all"], env=self.env,
                           capture_output=True, timeout=60)


# ---- package files ------------------------------------------------------------

def payload_offset(data):
    """Offset of the payload in an rpm file: lead, signature header (padded
    to 8), main header."""
    off = 96
    for pad in (True, False):
        if data[off:off + 3] != b"\x8e\xad\xe8":
            raise ValueError("no rpm header at offset %d" % off)
        il, dl = struct.unpack(">II", data[off + 8:off + 16])
        off += 16 + 16 * il + dl
        if pad:
            off += (-off) % 8
    return off


def corrupt_payload(path, nbytes=8):
    """Flip `nbytes` bytes in the middle of the payload of an rpm file."""
    data = bytearray(Path(path).read_bytes())
    start = payload_offset(data)
    if len(data) - start < 2 * nbytes:
        raise ValueError("%s: payload too small to corrupt" % path)
    mid = start + (len(data) - start) // 2
    for i in range(mid, mid + nbytes):
        data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def query(path, fmt):
    return _run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, path]).stdout


def nevra_of(path):
    """%{NEVRA} of a package file, as rpm -qa prints it."""
    return query(path, "%{NEVRA}")


def file_name_of(path):
    return query(path, "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm")


def installable_arches():
    """Architectures taken as installable here: noarch and the machine's own."""
    return {"noarch", os.uname().machine}


def usable_corpus_package(path):
    """None if `path` can be installed into an empty root by dnf, else why not."""
    reqs = [r for r in _run(["rpm", "-qpR", "--nosignature", "--nodigest", path]).stdout.splitlines()
            if r.strip() and not r.startswith("rpmlib(")]
    if reqs:
        return "requires %s" % ", ".join(reqs)
    scripts = _run(["rpm", "-qp", "--nosignature", "--nodigest", "--scripts", "--triggers",
                    "--filetriggers", path]).stdout.strip()
    if scripts:
        return "has scriptlets"
    if query(path, "%{ARCH}") not in installable_arches():
        return "architecture %s" % query(path, "%{ARCH}")
    if query(path, "%{SOURCERPM}") in ("", "(none)"):
        return "a source package"
    return None


def cowdemo_files(version):
    """cowdemo's tree; contents differ between versions."""
    tag = version.encode()
    pattern = bytes(range(256))
    big = (pattern * 16 * 21)[:83000] + b"cowdemo big " + tag          # 20 blocks + a tail
    exact = (b"E" + tag).ljust(64, b".") * 256                         # exactly 4 blocks
    return [
        directory("/opt/cowdemo"),
        directory("/opt/cowdemo/share"),
        regular("/opt/cowdemo/big", big),
        regular("/opt/cowdemo/exact", exact),
        regular("/opt/cowdemo/bin", (b"#!/bin/false\n" + tag) * 700, mode=0o755),
        hardlink("/opt/cowdemo/bin-link", "/opt/cowdemo/bin"),
        regular("/opt/cowdemo/share/small", b"small " + tag + b"\n"),
        regular("/opt/cowdemo/share/empty", b""),
        symlink("/opt/cowdemo/latest", "big"),
        config("/etc/cowdemo.conf", b"setting = " + tag + b"\n" + b"#" * 5000 + b"\n"),
    ]


def small_tree(name):
    """A package tree of one multi-block file and a small one."""
    return [
        directory("/opt/%s" % name),
        regular("/opt/%s/data" % name, (name.encode() + b" payload ") * 2000 + os.urandom(7000)),
        regular("/opt/%s/note" % name, b"note\n"),
    ]


def cowdoc_files():
    """Multi-block files, and a %doc file that sorts last in the archive
    (with tsflags=nodocs rpm skips the last entry: no hook follows it)."""
    return [directory("/opt/cowdoc")] + [
        regular("/opt/cowdoc/%s" % c, os.urandom(9000 + 4096 * i)) for i, c in enumerate("abcd")
    ] + [regular("/opt/cowdoc/zz-README", os.urandom(9000), directives="%doc")]


def cowbroken_files():
    return [
        directory("/opt/cowbroken"),
        regular("/opt/cowbroken/data", os.urandom(50000)),
    ]


# ---- the repository and its server -------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpServer:
    """``python3 -m http.server PORT --bind 127.0.0.1`` for one directory."""

    def __init__(self, directory, logfile):
        self.directory = Path(directory)
        self.logfile = Path(logfile)
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/" % self.port

    def start(self, attempts=5):
        for _ in range(attempts):
            self.port = free_port()
            log = open(self.logfile, "ab")
            try:
                self.proc = subprocess.Popen(
                    ["/usr/bin/python3", "-m", "http.server", str(self.port),
                     "--bind", "127.0.0.1", "--directory", str(self.directory)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_env())
            finally:
                log.close()
            if self._wait_ready():
                atexit.register(self.stop)      # should the fixture's finalizer not run
                return self
            self.stop()          # the port was taken meanwhile, or it died: try another
        raise RuntimeError("cannot start the HTTP server; log:\n%s"
                           % self.logfile.read_text(errors="replace"))

    def _wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "repodata/repomd.xml", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def createrepo(directory):
    _run(["createrepo_c", "-q", "--no-database", str(directory)], env=_env())


@dataclass
class RepoSet:
    """The session's repository (see the module docstring)."""
    workdir: Path
    directory: Path
    key: GpgKey
    server: HttpServer
    files: dict = field(default_factory=dict)     # NEVRA -> file name in the repo
    corpus: list = field(default_factory=list)    # NEVRAs of the corpus packages
    skipped_corpus: dict = field(default_factory=dict)   # file -> why left out

    @property
    def url(self):
        return self.server.url

    def name_of(self, nevra):
        return nevra.rsplit("-", 2)[0]

    def nevras(self, *names):
        """NEVRAs in the repo of the given package names (all if none)."""
        return {n for n in self.files if not names or self.name_of(n) in names}

    def write_repo_file(self, reposdir, gpgcheck=True):
        reposdir = Path(reposdir)
        reposdir.mkdir(parents=True, exist_ok=True)
        (reposdir / (REPO_ID + ".repo")).write_text(
            "[%s]\nname=rpmcow dnf test repository\nbaseurl=%s\nenabled=1\n"
            "gpgcheck=%d\nrepo_gpgcheck=0\ngpgkey=file://%s\nmetadata_expire=-1\n"
            % (REPO_ID, self.url, int(gpgcheck), self.key.pubkey))
        return reposdir

    def dnf(self, root, **kw):
        return Dnf(self, root, **kw)

    def close(self):
        """Stop the server and gpg's agent."""
        try:
            self.server.stop()
        finally:
            self.key.close()


def build_repo(workdir, corpus_dir):
    """Build, sign, corrupt, index and serve the session repository. The caller
    must close() it (stops the server and gpg's agent)."""
    workdir = Path(workdir)
    repo = workdir / "repo"
    repo.mkdir(parents=True)
    key = GpgKey(workdir)
    server = HttpServer(repo, workdir / "http.log")
    rs = RepoSet(workdir, repo, key, server)
    try:
        builder = pkgbuild.PackageBuilder(workdir / "build")
        built = [builder.build("cowdemo", cowdemo_files("1.0"), version="1.0"),
                 builder.build("cowdemo", cowdemo_files("1.1"), version="1.1"),
                 builder.build("cowgz", small_tree("cowgz"), compressor="gzip"),
                 builder.build("cownone", small_tree("cownone"), compressor="none"),
                 builder.build("cowbz2", small_tree("cowbz2"), compressor="bzip2"),
                 builder.build("cowbroken", cowbroken_files()),
                 builder.build("cowdoc", cowdoc_files())]
        for p in built:
            shutil.copy(p, repo / file_name_of(p))
        for name in CORPUS_CANDIDATES:
            src = Path(corpus_dir) / "real" / name
            if not src.is_file():
                rs.skipped_corpus[name] = "not in the corpus"
                continue
            why = usable_corpus_package(src)
            if why:
                rs.skipped_corpus[name] = why
                continue
            dst = repo / file_name_of(src)
            shutil.copy(src, dst)
            os.chmod(dst, 0o644)
            rs.corpus.append(nevra_of(dst))
        if len(rs.corpus) < MIN_CORPUS:
            raise RuntimeError("too few usable corpus packages: %r" % rs.skipped_corpus)
        key.sign(sorted(repo.glob("*.rpm")))
        corrupt_payload(repo / "cowbroken-1.0-1.noarch.rpm")
        createrepo(repo)
        for p in sorted(repo.glob("*.rpm")):
            rs.files[nevra_of(p)] = p.name
        server.start()
    except BaseException:
        rs.close()
        raise
    return rs


# ---- running dnf ----------------------------------------------------------------

class Dnf:
    """dnf for one install root: ``Dnf(repo, root)(*args) -> (rc, stdout, stderr)``.

    The root directory is created; dnf's cache, logs and history land inside it.
    keepcache: dnf's [main] keepcache. plugin_conf: text of a cow.conf to use
    instead of the checkout's (written to a private pluginconfpath).
    """

    def __init__(self, repo, root, keepcache=1, plugin_conf=None, gpgcheck=True,
                 extra_main=None):
        self.repo = repo
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.etc = self.root.parent / (self.root.name + ".host")
        self.etc.mkdir(exist_ok=True)
        self.conf = self.etc / "dnf.conf"
        main = {"gpgcheck": int(gpgcheck), "keepcache": keepcache, "best": "True",
                "install_weak_deps": "False", "installonly_limit": 3,
                "clean_requirements_on_remove": "False", "skip_if_unavailable": "False"}
        main.update(extra_main or {})
        self.conf.write_text("[main]\n" + "".join("%s=%s\n" % kv for kv in main.items()))
        self.reposdir = repo.write_repo_file(self.etc / "repos.d", gpgcheck=gpgcheck)
        if plugin_conf is None:
            self.pluginconfpath = PLUGIN_DIR
        else:
            self.pluginconfpath = self.etc / "pluginconf"
            self.pluginconfpath.mkdir(exist_ok=True)
            (self.pluginconfpath / "cow.conf").write_text(plugin_conf)
        self.log = []            # (argv, rc, stdout, stderr) of every run
        self.inodes_before = {}  # inodes() as the last run started

    def argv(self, *args, plugin=True):
        cmd = [DNF, "-c", str(self.conf), "--installroot", str(self.root),
               "--releasever", "1", "-y",
               "--setopt=reposdir=%s" % self.reposdir,
               "--setopt=pluginpath=%s" % PLUGIN_DIR,
               # the cow plugin alone: sticky-vendor (same directory) has its own tests
               # (named as its module: dnf 4.5, Debian 11, matches no other name)
               "--disableplugin=sticky_vendor",
               "--setopt=pluginconfpath=%s" % self.pluginconfpath]
        if not plugin:
            cmd.append("--disableplugin=cow")
        return cmd + [str(a) for a in args]

    def __call__(self, *args, plugin=True, timeout=300, env=None):
        """Run dnf; env: extra environment variables."""
        cmd = self.argv(*args, plugin=plugin)
        self.inodes_before = self.inodes()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=_env(env), stdin=subprocess.DEVNULL)
        self.log.append((cmd, r.returncode, r.stdout, r.stderr))
        return r.returncode, r.stdout, r.stderr

    def ok(self, *args, **kw):
        """Run and require exit 0; returns stdout + stderr."""
        rc, out, err = self(*args, **kw)
        assert rc == 0, "dnf %s failed (exit %d):\n%s\n%s" % (" ".join(args), rc, out, err)
        return out + err

    def inodes(self):
        """{path in the root: inode} of the regular files outside /var."""
        out = {}
        for top, dirs, files in os.walk(self.root):
            if top == str(self.root):
                dirs[:] = [x for x in dirs if x != "var"]
            for f in files:
                st = os.lstat(os.path.join(top, f))
                if stat.S_ISREG(st.st_mode):
                    out["/" + os.path.relpath(os.path.join(top, f), self.root)] = st.st_ino
        return out

    def kept(self, path):
        """Whether the file at `path` (in the root) is the same inode as before the
        last run: rpm left it alone (an unchanged %config file on reinstall)."""
        try:
            return self.inodes_before.get(path) == os.lstat(
                self.root / path.lstrip("/")).st_ino
        except FileNotFoundError:
            return False

    @property
    def cachedir(self):
        return self.root / "var" / "cache" / "dnf"

    def cache_files(self, pattern="*.rpm"):
        return sorted(self.cachedir.glob("*/packages/" + pattern))

    def extents_files(self):
        return self.cache_files("*.cow.rpm")

    def extents_file_of(self, nevra):
        """The cache's extents file of a repo package (None if there is none)."""
        fname = self.repo.files[nevra]
        hits = self.cache_files(fname[:-len(".rpm")] + ".cow.rpm")
        return hits[0] if hits else None

    def transcript(self):
        return "\n".join("$ %s\n[exit %d]\n%s%s" % (" ".join(c[-6:]), rc, o, e)
                         for c, rc, o, e in self.log)


# ---- inspecting a root ------------------------------------------------------------

_DBPATH = []


def _dbpath():
    """%_dbpath as rpm expands it here, HOME pinned (dnf's too).  Debian's is a
    shell expansion (%(bash -c 'echo ~/.rpmdb')) that rpm 4.16 (Debian 11)
    expands again once chrooted into the root to read the keyring for -V,
    where there is no shell: "reading of public key failed"."""
    if not _DBPATH:
        _DBPATH.append(_run(["rpm", "--eval", "%{_dbpath}"]).stdout.strip())
    return _DBPATH[0]


def rpm_cmd(root, *args):
    return ["rpm", "--root", str(root), "--dbpath", _dbpath()] + list(args)


def rpm_qa(root, keys=False):
    """Installed NEVRAs (without the gpg-pubkey pseudo packages unless keys)."""
    r = _run(rpm_cmd(root, "-qa", "--qf", "%{NEVRA}\n"))
    out = {line for line in r.stdout.splitlines() if line}
    if not keys:
        out = {n for n in out if not n.startswith("gpg-pubkey-")}
    return out


def rpm_import_key(root, pubkey):
    """rpm --import a public key into the root's rpmdb (what dnf does on first use)."""
    _run(rpm_cmd(root, "--import", str(pubkey)))


def rpm_va(root):
    """(rc, output) of rpm -Va in the root."""
    r = _run(rpm_cmd(root, "-Va"), check=False)
    return r.returncode, r.stdout + r.stderr


RPMFILE_CONFIG = 1 << 0
RPMFILE_GHOST = 1 << 6


def installed_regular_files(root, name, with_flags=False):
    """[(path inside root, size)] of the regular, non-ghost files of an installed
    package ([(path, size, fileflags)] with_flags)."""
    r = _run(rpm_cmd(root, "-q", "--qf", "[%{FILENAMES}\t%{LONGFILESIZES}\t%{FILEMODES}\t"
                     "%{FILEFLAGS}\n]", name))
    out = []
    for line in r.stdout.splitlines():
        path, size, mode, flags = line.rsplit("\t", 3)
        if stat.S_ISREG(int(mode)) and not int(flags) & RPMFILE_GHOST:
            out.append((path, int(size), int(flags)) if with_flags else (path, int(size)))
    return out


_EXTENT = re.compile(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+(\d+):"
                     r"(?:\s+(\d+):)?\s*(.*)$")
_BLOCKSIZE = re.compile(r"blocks? of (\d+) bytes")


@dataclass
class Extent:
    logical: int       # first block
    physical: int
    length: int        # blocks
    flags: tuple

    @property
    def shared(self):
        return "shared" in self.flags


def extents(path):
    """(block size, [Extent]) of a file from ``filefrag -s -v`` (synced first, so
    delayed allocations have their real place)."""
    r = _run(["filefrag", "-s", "-v", str(path)])
    m = _BLOCKSIZE.search(r.stdout)
    if not m:
        raise RuntimeError("unexpected filefrag output:\n" + r.stdout)
    out = []
    for line in r.stdout.splitlines():
        e = _EXTENT.match(line)
        if e:
            l0, l1, p0, p1, length = (int(e.group(i)) for i in range(1, 6))
            flags = tuple(f for f in e.group(7).replace(",", " ").split() if f)
            out.append(Extent(l0, p0, l1 - l0 + 1, flags))
    return int(m.group(1)), out


def unshared_blocks(path, cache_file):
    """Problems with `path` sharing its whole blocks with `cache_file`: every
    whole block must lie in an extent flagged "shared" whose physical blocks are
    inside the cache file's physical blocks. [] when it does."""
    bs, ext = extents(path)
    size = os.path.getsize(path)
    whole = size // bs
    _, cext = extents(cache_file)
    cache_ranges = [(e.physical, e.physical + e.length) for e in cext if e.physical]
    problems = []
    covered = 0
    for e in ext:
        lo, hi = e.logical, min(e.logical + e.length, whole)
        if lo >= whole:
            continue
        if not e.shared:
            problems.append("blocks %d..%d not shared (flags %s)" % (lo, hi - 1,
                                                                   ",".join(e.flags)))
        p_lo = e.physical
        p_hi = e.physical + (hi - lo)
        if not any(c0 <= p_lo and p_hi <= c1 for c0, c1 in cache_ranges):
            problems.append("blocks %d..%d at physical %d..%d are not the cache file's"
                            % (lo, hi - 1, p_lo, p_hi - 1))
        covered += hi - lo
    if covered != whole:
        problems.append("extents cover %d of %d whole blocks" % (covered, whole))
    return problems


def summary(text):
    """(n, m) of the plugin's summary line, or None."""
    hits = SUMMARY_RE.findall(text)
    if len(hits) > 1:
        raise AssertionError("more than one cow summary:\n" + text)
    return (int(hits[0][0]), int(hits[0][1])) if hits else None


def stock_messages(text):
    """{package file name: reason} of the "installs the stock way" messages."""
    return dict(STOCK_RE.findall(text))


def transcoded(text):
    return set(TRANSCODED_RE.findall(text))


def stray_host_tree(root):
    """The directory that path operations made by host path while the process
    was chroot()ed into `root` would create inside it (root + root's own host
    path, down to two levels), if it exists; else None."""
    parts = Path(os.path.abspath(root)).parts[1:3]
    junk = Path(root).joinpath(*parts)
    return junk if junk.exists() else None


# ---- fault injection: a wider chroot window ---------------------------------------

CHROOT_DELAY_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* rpmcow tests: LD_PRELOADed into dnf to hold the process's first chroot()
   into a root (not the chroot(".") back out) for $COWTEST_CHROOT_DELAY_MS. */
int chroot(const char *path)
{
    static int (*real)(const char *);
    static int delayed;
    if (!real)
        real = (int (*)(const char *))dlsym(RTLD_NEXT, "chroot");
    int rc = real(path);
    const char *ms = getenv("COWTEST_CHROOT_DELAY_MS");
    if (rc == 0 && ms && !delayed && strcmp(path, ".") != 0) {
        long v = atol(ms);
        struct timespec ts = { v / 1000, (v % 1000) * 1000000L };
        delayed = 1;
        nanosleep(&ts, NULL);
    }
    return rc;
}
"""


def build_chroot_delay(workdir):
    """Compile the chroot-delay preload library; returns its Path."""
    workdir = Path(workdir)
    src, so = workdir / "chroot_delay.c", workdir / "chroot_delay.so"
    src.write_text(CHROOT_DELAY_C)
    _run(["cc", "-shared", "-fPIC", "-O2", "-o", so, src, "-ldl"])
    return so


def chroot_delay_env(so, ms):
    """Extra dnf environment that holds rpm's first chroot into the root for `ms`."""
    return {"LD_PRELOAD": str(so), "COWTEST_CHROOT_DELAY_MS": str(int(ms))}


# ---- pytest fixtures ---------------------------------------------------------------

@pytest.fixture(scope="session")
def dnf_repo(tmp_path_factory, corpus_dir):
    """The session's RepoSet, served over HTTP until the session ends."""
    missing = missing_tools()
    if missing:
        pytest.skip("needs %s" % ", ".join(missing))
    rs = build_repo(tmp_path_factory.mktemp("dnfrepo"), corpus_dir)
    try:
        yield rs
    finally:
        rs.close()


@pytest.fixture(scope="session")
def chroot_delay(tmp_path_factory):
    """Path of the chroot-delay preload library (skips without a C compiler)."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (cc)")
    return build_chroot_delay(tmp_path_factory.mktemp("chroot-delay"))

"""Bad input: never a crash, a hang, a runaway allocation or a stray file.

Whatever bytes ``rpmcow transcode IN -o OUT`` or ``rpm2extents SHA256 <in >out``
are given -- empty, garbage, real packages truncated at every section
boundary, bit flips, trailing data, absurd counts and sizes in the header
intros and in cpio headers -- the result is either a complete, consistent
extents file or:

* a non-zero exit (not a signal), with exactly one line on stderr,
  ``rpmcow: <message>`` (``rpm2extents: <message>``), and no traceback;
* no file at the output path and no ``.NAME.*.part`` left in its directory
  (for rpm2extents writing to a regular file: an empty stdout);
* within TIMEOUT seconds, under an address-space limit of AS_LIMIT.

The CLI cases run the installed commands (concurrently, see CliRunner); the
hypothesis cases call the Python API (``rpmcow.transcode.transcode_path``) in
a forked child under the same limits, where anything but success or an
``RpmcowError`` is a bug.  Also here: headers nothing covers (the signature
header's digests renamed away, --verify-level none / rpm2extents), so that
librpm's parser and our header code see the damage; and allocation failure
at every point of a transcode (test_allocation_failure).

Section boundaries are computed here from the bytes (lead: 96 bytes; a
header: 16-byte intro with big-endian index count and data length at bytes
8..16, then 16 bytes per index entry and the data; the signature header is
padded to a multiple of 8).  Packages (shared corpus, read-only):

    xz        real/fPing-4.2~dev-1.2~.3.x86_64.rpm     payload digest, 6 files
    zstd      real/duplicates-0-0.x86_64.rpm           payload digest, dedupe
    gzip      rpm-testdata/hello-2.0-1.x86_64.rpm      payload digest
    hardlink  rpm-testdata/hlinktest-1.0-1.noarch.rpm  uncompressed cpio (no
              compressor tag: rpm's gzip reader passes it through), hardlinks
    xz-old    real/nodejs010-nodejs-oauth-sign-0.2.0-2.el6_4.noarch.rpm
              no payload digest (2013): only file digests protect its payload

RPMCOW_BAD_INPUT_EXAMPLES scales the hypothesis example counts (default 1.0).
"""
import collections
import gzip
import hashlib
import json
import lzma
import os
import random
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

from conftest import corpus_path
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
CORPUS = corpus_path()

AS_LIMIT = 1536 << 20          # address space of every child (at least)


def _vmsize():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
TIMEOUT = 60                   # seconds per transcode, far above the ~0.1 s they take
SCALE = float(os.environ.get("RPMCOW_BAD_INPUT_EXAMPLES", "1"))

PKGS = {
    "xz": ("real/fPing-4.2~dev-1.2~.3.x86_64.rpm", "xz"),
    "zstd": ("real/duplicates-0-0.x86_64.rpm", "zstd"),
    "gzip": ("rpm-testdata/hello-2.0-1.x86_64.rpm", "gzip"),
    "hardlink": ("rpm-testdata/hlinktest-1.0-1.noarch.rpm", "none"),
    "xz-old": ("real/nodejs010-nodejs-oauth-sign-0.2.0-2.el6_4.noarch.rpm", "xz"),
}
MAIN_PKGS = ("xz", "zstd", "gzip", "hardlink")
WITH_PAYLOAD_DIGEST = ("xz", "zstd", "gzip", "hardlink")

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(),
                                reason="package corpus not found at %s" % CORPUS)


def examples(n):
    return max(10, int(n * SCALE))


SETTINGS = dict(deadline=None, derandomize=False, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# ---- package anatomy ------------------------------------------------------

class Sections(collections.namedtuple(
        "Sections", "lead_end sig_il sig_dl sig_end sig_pad_end hdr_il hdr_dl hdr_end size")):
    """Byte offsets of a package's parts, computed from its bytes."""

    @property
    def main_header(self):
        return (self.sig_pad_end, self.hdr_end)

    def part(self, off):
        if off < self.lead_end:
            return "lead"
        if off < self.sig_end:
            return "signature header"
        if off < self.sig_pad_end:
            return "signature padding"
        if off < self.hdr_end:
            return "main header"
        return "payload"


def sections(data):
    lead = 96
    sig_il, sig_dl = struct.unpack(">II", data[lead + 8:lead + 16])
    sig_end = lead + 16 + 16 * sig_il + sig_dl
    pad_end = sig_end + (-sig_end % 8)
    hdr_il, hdr_dl = struct.unpack(">II", data[pad_end + 8:pad_end + 16])
    hdr_end = pad_end + 16 + 16 * hdr_il + hdr_dl
    return Sections(lead, sig_il, sig_dl, sig_end, pad_end, hdr_il, hdr_dl, hdr_end, len(data))


_cache = {}


def package(kind):
    """(bytes, Sections) of one of PKGS."""
    if kind not in _cache:
        data = (CORPUS / PKGS[kind][0]).read_bytes()
        _cache[kind] = (data, sections(data))
    return _cache[kind]


def _zstd(args, data):
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed")
    return subprocess.run(["zstd", "-q", "-c"] + args, input=data, stdout=subprocess.PIPE,
                          check=True).stdout


CODECS = {
    "none": (lambda b: b, lambda b: b),
    "gzip": (gzip.decompress, lambda b: gzip.compress(b, mtime=0)),
    "xz": (lzma.decompress, lambda b: lzma.compress(b, format=lzma.FORMAT_XZ)),
    "zstd": (lambda b: _zstd(["-d"], b), lambda b: _zstd(["-3"], b)),
}


def archive(kind):
    """(prologue bytes, decompressed cpio archive, recompress function)."""
    data, s = package(kind)
    decompress, compress = CODECS[PKGS[kind][1]]
    return data[:s.hdr_end], decompress(data[s.hdr_end:]), compress


class Entry(collections.namedtuple("Entry", "off name fields data_off size end")):
    """One newc cpio entry: header at off, content at data_off, next entry at end."""


NEWC_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor",
               "devminor", "rdevmajor", "rdevminor", "namesize", "check")


def cpio_entries(arch):
    out, off = [], 0
    while True:
        if arch[off:off + 6] not in (b"070701", b"070702"):
            raise ValueError("not a newc entry at %d" % off)
        fields = [int(arch[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
        namesize, size = fields[11], fields[6]
        name = arch[off + 110:off + 110 + namesize - 1]
        data_off = off + 110 + namesize
        data_off += -data_off % 4
        end = data_off + size
        end += -end % 4
        out.append(Entry(off, name, fields, data_off, size, end))
        if name == b"TRAILER!!!":
            return out
        off = end


def set_field(arch, entry, name, value):
    """The archive with one hex field of `entry` replaced (value: int or 8 raw bytes)."""
    raw = value if isinstance(value, bytes) else b"%08x" % value
    assert len(raw) == 8
    p = entry.off + 6 + 8 * NEWC_FIELDS.index(name)
    return arch[:p] + raw + arch[p + 8:]


def first_content_entry(entries):
    """The first regular-file entry that carries content."""
    return next(e for e in entries if (e.fields[1] & 0o170000) == 0o100000 and e.size > 1)


def strip_header_digests(data):
    """The package with every digest and signature tag of its signature header
    renamed to an unknown tag: the main header is then covered by nothing."""
    data = bytearray(data)
    s = sections(data)
    rename = {267: 1100, 268: 1101, 269: 1102, 273: 1103, 1002: 1104, 1004: 1105, 1005: 1106}
    for i in range(s.sig_il):
        e = s.lead_end + 16 + 16 * i
        tag, = struct.unpack(">I", data[e:e + 4])
        if tag in rename:
            data[e:e + 4] = struct.pack(">I", rename[tag])
    # (the index stays in data order: librpm reads it, unsorted, as it is)
    return bytes(data)


def edit_main_header_entry(data, tag, new_tag=None, count=None):
    """Rename a main-header index entry, or change its count."""
    data = bytearray(data)
    s = sections(data)
    for i in range(s.hdr_il):
        e = s.sig_pad_end + 16 + 16 * i
        t, = struct.unpack(">I", data[e:e + 4])
        if t == tag:
            if new_tag is not None:
                data[e:e + 4] = struct.pack(">I", new_tag)
            if count is not None:
                data[e + 12:e + 16] = struct.pack(">I", count)
            return bytes(data)
    raise AssertionError("tag %d not in the main header" % tag)


# ---- running the commands ---------------------------------------------------

def _limit_child():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def command(name):
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    entry = {"rpmcow": "main", "rpm2extents": "rpm2extents_main"}[name]
    return [sys.executable, "-c", "import sys; from rpmcow.cli import %s; sys.exit(%s())"
            % (entry, entry)]


def run(argv, stdin=b"", stdout=subprocess.PIPE):
    try:
        return subprocess.run(argv, input=stdin, stdout=stdout, stderr=subprocess.PIPE,
                              preexec_fn=_limit_child, timeout=TIMEOUT, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        pytest.fail("hang: %s did not finish in %d s" % (" ".join(argv), TIMEOUT))


def assert_clean_failure(proc, prog):
    """Non-zero exit, not a signal; one line `prog: message` on stderr; the message."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode >= 0, "killed by signal %d\n%s" % (-proc.returncode, err)
    assert proc.returncode != 0, "exit 0 on bad input; stderr: %r" % err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one line on stderr, got:\n%s" % err
    assert lines[0].startswith(prog + ": ") and len(lines[0]) > len(prog) + 2, lines[0]
    return lines[0][len(prog) + 2:]


def transcode_cli(work, data, extra=()):
    """`rpmcow transcode IN -o OUT`: nothing at OUT, nothing left in its directory."""
    src = work / "in.rpm"
    src.write_bytes(data)
    out_dir = work / "out"
    out_dir.mkdir()
    out = out_dir / "pkg.rpme"
    proc = run(command("rpmcow") + ["transcode"] + list(extra) + [str(src), "-o", str(out)])
    msg = assert_clean_failure(proc, "rpmcow")
    assert not out.exists(), "a file at the output path after: %s" % msg
    assert list(out_dir.iterdir()) == [], "left behind: %s" % list(out_dir.iterdir())
    return msg


def transcode_none_cli(work, data):
    """The same with --verify-level none: nothing but our own checks."""
    return transcode_cli(work, data, extra=("--verify-level", "none"))


def rpm2extents_cli(work, data):
    """`rpm2extents SHA256 <in >out` with out a regular file: it must stay empty."""
    out = work / "stdout.rpme"
    with open(out, "wb") as f:
        proc = run(command("rpm2extents") + ["SHA256"], stdin=data, stdout=f)
    msg = assert_clean_failure(proc, "rpm2extents")
    assert out.stat().st_size == 0, "rpm2extents left %d bytes on stdout" % out.stat().st_size
    return msg


def stdin_cli(work, data):
    """`rpmcow transcode - -o OUT` with the package on stdin."""
    out_dir = work / "out"
    out_dir.mkdir()
    out = out_dir / "pkg.rpme"
    proc = run(command("rpmcow") + ["transcode", "-", "-o", str(out)], stdin=data)
    msg = assert_clean_failure(proc, "rpmcow")
    assert list(out_dir.iterdir()) == [], "left behind: %s" % list(out_dir.iterdir())
    return msg


RUNNERS = {"transcode": transcode_cli, "transcode-none": transcode_none_cli,
           "rpm2extents": rpm2extents_cli, "stdin": stdin_cli}


# ---- CLI cases: a registry, run concurrently ----------------------------------
#
# Each CLI case costs a Python start (and usually an rpmkeys run), ~0.2-0.4 s,
# mostly waiting; the `cli` fixture runs every selected case on first use, four
# at a time, and each test then reports its own case.

class Case(collections.namedtuple("Case", "data runners expect")):
    """data: () -> bytes (None: case does not apply); runners: RUNNERS keys;
    expect: a substring the (lower-cased) message must contain, or None."""


CASES = {}


def case(group, cid, data, runners=("transcode",), expect=None):
    key = "%s:%s" % (group, cid)
    assert key not in CASES, key
    CASES[key] = Case(data, tuple(runners), expect)


def cases(group):
    return [pytest.param(k, id=k.split(":", 1)[1]) for k in CASES if k.startswith(group + ":")]


def _run_case(key, work):
    c = CASES[key]
    data = c.data()
    if data is None:
        pytest.skip("does not apply to this package")
    for name in c.runners:
        d = work / name
        d.mkdir()
        msg = RUNNERS[name](d, data)
        if c.expect:
            assert c.expect in msg.lower(), "%s: %r lacks %r" % (name, msg, c.expect)


class CliRunner:
    def __init__(self, session, tmp_factory):
        self._session = session
        self._tmp = tmp_factory
        self._results = {}

    def _run_all(self, first):
        import concurrent.futures
        keys = [item.callspec.params["case"] for item in self._session.items
                if "cli" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")]
        keys = [k for k in dict.fromkeys(keys + [first]) if k not in self._results]
        base = self._tmp.mktemp("cli")

        def one(i_key):
            i, key = i_key
            work = base / str(i)
            work.mkdir()
            try:
                _run_case(key, work)
                return key, None
            except BaseException as exc:     # assertion, pytest.fail/skip
                return key, exc

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for key, exc in pool.map(one, enumerate(keys)):
                self._results[key] = exc

    def check(self, key):
        if key not in self._results:
            self._run_all(key)
        exc = self._results[key]
        if exc is not None:
            raise exc


@pytest.fixture(scope="session")
def cli(request, tmp_path_factory):
    return CliRunner(request.session, tmp_path_factory)


# ---- running the Python API in a forked, limited child ----------------------

Outcome = collections.namedtuple("Outcome", "kind type msg tb output leftovers")


def transcode_isolated(data, **kw):
    """transcode_path(in, out, **kw) in a forked child with RLIMIT_AS.

    kind: "ok", "error" (an RpmcowError), "bug" (any other exception), "crash"
    (killed by a signal), "hang" (killed after TIMEOUT s) or "exit" (the child
    left without reporting, e.g. a library called exit()).
    """
    from rpmcow import transcode
    from rpmcow.errors import RpmcowError

    work = tempfile.mkdtemp(prefix="rpmcow-bad-input-")
    try:
        src = os.path.join(work, "in.rpm")
        out_dir = os.path.join(work, "out")
        os.mkdir(out_dir)
        dst = os.path.join(out_dir, "pkg.rpme")
        with open(src, "wb") as f:
            f.write(data)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:   # pragma: no cover - the child
            try:
                os.close(r)
                # above what this (forked, possibly large by now) process maps already
                limit = max(AS_LIMIT, _vmsize() + (1 << 30))
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                try:
                    transcode.transcode_path(src, dst, **kw)
                    res = {"kind": "ok"}
                except RpmcowError as exc:
                    res = {"kind": "error", "type": type(exc).__name__, "msg": str(exc)}
                except BaseException as exc:
                    res = {"kind": "bug", "type": type(exc).__name__, "msg": str(exc),
                           "tb": traceback.format_exc()}
                os.write(w, json.dumps(res).encode())
            finally:
                os._exit(0)
        os.close(w)
        buf, deadline, hung = b"", time.monotonic() + TIMEOUT, False
        while True:
            left = deadline - time.monotonic()
            ready = select.select([r], [], [], max(0, left))[0] if left > 0 else []
            if not ready:
                hung = True
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if hung:
            res = {"kind": "hang"}
        elif os.WIFSIGNALED(status):
            res = {"kind": "crash", "msg": "signal %d" % os.WTERMSIG(status)}
        elif not buf:
            res = {"kind": "exit", "msg": "exit status %d" % os.WEXITSTATUS(status)}
        else:
            res = json.loads(buf)
        output = Path(dst).read_bytes() if os.path.exists(dst) else None
        leftovers = sorted(set(os.listdir(out_dir)) - {"pkg.rpme"})
        return Outcome(res["kind"], res.get("type"), res.get("msg"), res.get("tb"),
                       output, leftovers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


DIGEST_BY_RPM_ID = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}


def assert_consistent(data, out):
    """A successful output is a complete extents file for exactly `data`."""
    import rpm
    from rpmcow import extents

    assert out is not None, "success but no output file"
    assert out.endswith(b"KWTSH100"), "success but no KWTSH100 footer"
    with tempfile.TemporaryFile() as f:
        f.write(out)
        f.flush()
        sec = extents.read_sections(f.fileno())
    assert sec.input_len == len(data)
    assert dict(sec.input_digests).get("SHA256") == hashlib.sha256(data).digest()
    s = sections(data)
    assert out[:s.hdr_end] == data[:s.hdr_end], "headers not kept byte for byte"
    # every file content the header describes is in the table, and each blob
    # hashes to its digest
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    with tempfile.TemporaryFile() as f:
        f.write(data[:s.hdr_end])
        f.flush()
        f.seek(0)
        rpm.setVerbosity(rpm.RPMLOG_EMERG)
        try:
            h = ts.hdrFromFdno(f.fileno())
        finally:
            rpm.setVerbosity(rpm.RPMLOG_WARNING)
    algo = DIGEST_BY_RPM_ID[h[rpm.RPMTAG_FILEDIGESTALGO] or 1]
    table = dict(sec.table)
    def has_content(fi):
        return (fi.mode & 0o170000) == 0o100000 and not fi.fflags & rpm.RPMFILE_GHOST

    for fi in rpm.files(h):
        if not has_content(fi) or not fi.digest or not fi.digest.strip("0"):
            continue
        if fi.nlink > 1 and fi.fx != max(l.fx for l in fi.links if has_content(l)):
            continue    # a hardlink set's content travels with its last member
        d = bytes.fromhex(fi.digest)
        assert d in table, "no blob for %s" % fi.name
        blob = out[table[d]:table[d] + fi.size]
        assert hashlib.new(algo, blob).digest() == d, "blob of %s does not match" % fi.name


def assert_outcome(o, data, must_fail=False, what=""):
    detail = "%s\n%s: %s\n%s" % (what, o.type, o.msg, o.tb or "")
    assert o.kind in ("ok", "error"), "%s on bad input: %s" % (o.kind, detail)
    assert not o.leftovers, "left behind %s: %s" % (o.leftovers, detail)
    if o.kind == "error":
        assert o.output is None, "an output file after an error: %s" % detail
        assert o.msg and "\n" not in o.msg.strip(), "not a one-line message: %r" % o.msg
    else:
        assert not must_fail, "accepted: %s" % what
        assert_consistent(data, o.output)


# ---- sanity: the packages themselves transcode -------------------------------

@pytest.mark.parametrize("kind", sorted(PKGS))
def test_reference_packages_transcode(kind):
    """Each reference package transcodes -- at level digest, except where
    this host's rpm itself refuses it there (rpm 6 checks neither the header
    SHA1 nor the MD5 by default: an old package with no other digest), which
    rpmcow must refuse too, and then transcodes at level none."""
    from rpmcow import verify
    data, s = package(kind)
    assert s.hdr_end < s.size and s.sig_pad_end % 8 == 0
    r = subprocess.run(["rpmkeys", "-Kv", str(CORPUS / PKGS[kind][0])], capture_output=True,
                       text=True)
    refused = verify.policy_failure(verify.parse_items(r.stdout), "digest")
    if refused:
        o = transcode_isolated(data, level="digest")
        assert o.kind == "error" and o.type == "VerificationError", (refused, o)
    o = transcode_isolated(data, **({"level": "none"} if refused else {}))
    assert o.kind == "ok", o
    assert_consistent(data, o.output)


# ---- empty and garbage --------------------------------------------------------

def _random(n, seed=20240601):
    return random.Random(seed).randbytes(n)


def _headers(kind):
    data, s = package(kind)
    return data[:s.hdr_end]


def _transcoded(kind):
    """An extents file, made by the CLI (no fork from a worker thread)."""
    work = Path(tempfile.mkdtemp(prefix="rpmcow-bad-input-"))
    try:
        out = work / "out.rpme"
        proc = run(command("rpmcow") + ["transcode", "-q", str(CORPUS / PKGS[kind][0]),
                                        "-o", str(out)])
        assert proc.returncode == 0, proc.stderr
        return out.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


GARBAGE = {
    "empty": lambda: b"",
    "one-byte": lambda: b"\xed",
    "zeros": lambda: bytes(4096),
    "text": lambda: b"this is not a package\n" * 50,
    "random": lambda: _random(20000),
    "lead-magic-then-random": lambda: b"\xed\xab\xee\xdb" + _random(5000),
    "lead-only": lambda: package("zstd")[0][:96],
    "lead-then-zeros": lambda: package("zstd")[0][:96] + bytes(10000),
    "headers-only": lambda: _headers("zstd"),
    "headers-then-random": lambda: _headers("zstd") + _random(3000),
    "headers-then-zeros": lambda: _headers("zstd") + bytes(3000),
    "elf": lambda: Path(sys.executable).resolve().read_bytes()[:65536],
    "gzip-file": lambda: gzip.compress(b"x" * 1000),
    "extents-file": lambda: _transcoded("zstd"),
}
for _name, _fn in GARBAGE.items():
    case("garbage", _name, _fn, runners=("transcode", "rpm2extents", "stdin")
         if _name in ("empty", "random", "lead-then-zeros", "headers-then-random",
                      "extents-file") else ("transcode",))


@pytest.mark.parametrize("case", cases("garbage"))
def test_garbage(cli, case):
    cli.check(case)


# ---- truncation at every section boundary -------------------------------------

CUTS = {
    "empty": lambda s: 0,
    "inside-lead": lambda s: 50,
    "after-lead": lambda s: s.lead_end,
    "inside-sig-intro": lambda s: s.lead_end + 8,
    "inside-sig-index": lambda s: s.lead_end + 16 + 8,
    "inside-sig-data": lambda s: s.sig_end - 1,
    "sig-end-before-padding": lambda s: s.sig_end if s.sig_pad_end > s.sig_end else None,
    "inside-padding": lambda s: s.sig_end + 1 if s.sig_pad_end > s.sig_end + 1 else None,
    "after-padding": lambda s: s.sig_pad_end,
    "inside-main-intro": lambda s: s.sig_pad_end + 12,
    "inside-main-index": lambda s: s.sig_pad_end + 16 + 16 * s.hdr_il - 5,
    "inside-main-data": lambda s: s.hdr_end - 1,
    "payload-start": lambda s: s.hdr_end,
    "payload-first-byte": lambda s: s.hdr_end + 1,
    "inside-payload": lambda s: (s.hdr_end + s.size) // 2,
    "last-byte-missing": lambda s: s.size - 1,
}


def _cut(kind, cut):
    data, s = package(kind)
    n = CUTS[cut](s)
    return None if n is None else data[:n]


for _kind in MAIN_PKGS:
    for _cut_name in CUTS:
        _runners = ["transcode"]
        if _kind == "zstd" and _cut_name in ("empty", "inside-sig-data", "after-padding",
                                             "payload-start", "inside-payload",
                                             "last-byte-missing"):
            _runners.append("rpm2extents")
        if _kind == "xz" and _cut_name in ("inside-main-data", "inside-payload"):
            _runners.append("stdin")
        # an empty named file is "not an RPM package (empty file)": test_empty_file
        case("truncated", "%s-%s" % (_kind, _cut_name),
             lambda k=_kind, c=_cut_name: _cut(k, c), runners=_runners,
             expect=None if _cut_name == "empty" else "truncated")


@pytest.mark.parametrize("case", cases("truncated"))
def test_truncated_at_boundary(cli, case):
    cli.check(case)


def test_files_that_are_no_package_are_named(tmp_path):
    """Errors a user reads first: the file's name and what it is."""
    empty, text, dirpath = tmp_path / "empty.rpm", tmp_path / "notes.rpm", tmp_path / "dir.rpm"
    empty.write_bytes(b"")
    text.write_text("not a package\n")
    dirpath.mkdir()
    ext = tmp_path / "x.rpme"
    src = CORPUS / PKGS["zstd"][0]
    assert run(command("rpmcow") + ["transcode", "-q", str(src), "-o", str(ext)]).returncode == 0
    for path, want in ((empty, "not an RPM package (empty file)"),
                       (text, "not an RPM package"),
                       (dirpath, "is a directory"),
                       (ext, "already an extents file")):
        proc = run(command("rpmcow") + ["transcode", str(path), "-o", str(tmp_path / "out")])
        err = proc.stderr.decode()
        assert proc.returncode != 0 and err.startswith("rpmcow: %s: %s" % (path, want)), err
        assert "Traceback" not in err
        assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.rpm", "empty.rpm", "notes.rpm",
                                                          "x.rpme"]


def test_output_that_is_the_input_is_refused(tmp_path):
    """'rpmcow transcode self.rpm -o self.rpm' (or a hard link of it) would
    replace the signed original: refused, the original untouched."""
    src = tmp_path / "self.rpm"
    shutil.copyfile(CORPUS / PKGS["zstd"][0], src)
    link = tmp_path / "link.rpm"
    os.link(src, link)
    before = src.read_bytes()
    for out in (src, link):
        proc = run(command("rpmcow") + ["transcode", str(src), "-o", str(out)])
        assert proc.returncode != 0 and b"is the input file itself" in proc.stderr, proc.stderr
        assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.rpm", "self.rpm"]


# cuts of the decompressed archive, recompressed: the decoder sees a complete
# stream and the cpio reader finds the archive short
ARCHIVE_CUTS = {
    "inside-cpio-header": lambda ents: ents[1].off + 50,
    "inside-file-name": lambda ents: ents[1].off + 112,
    "inside-a-file": lambda ents: (lambda e: e.data_off + e.size // 2)(
        first_content_entry(ents)),
    "before-trailer": lambda ents: ents[-1].off,
    "inside-trailer": lambda ents: ents[-1].off + 60,
}


def _archive_cut(kind, cut):
    prologue, arch, compress = archive(kind)
    return prologue + compress(arch[:ARCHIVE_CUTS[cut](cpio_entries(arch))])


for _kind in MAIN_PKGS:
    for _cut_name in ARCHIVE_CUTS:
        case("archive-cut", "%s-%s" % (_kind, _cut_name),
             lambda k=_kind, c=_cut_name: _archive_cut(k, c), expect="truncated")


@pytest.mark.parametrize("case", cases("archive-cut"))
def test_truncated_archive(cli, case):
    cli.check(case)


# ---- trailing data -----------------------------------------------------------

TRAILERS = {
    "four-zeros": lambda d: b"\0" * 4,      # xz stream padding
    "512-zeros": lambda d: b"\0" * 512,
    "one-byte": lambda d: b"x",
    "the-package-again": lambda d: d,
}
for _kind in ("xz", "zstd", "gzip", "hardlink", "xz-old"):
    for _t in TRAILERS:
        case("trailing", "%s-%s" % (_kind, _t),
             lambda k=_kind, t=_t: package(k)[0] + TRAILERS[t](package(k)[0]),
             runners=("transcode", "rpm2extents") if _kind == "xz-old" else ("transcode",))


@pytest.mark.parametrize("case", cases("trailing"))
def test_trailing_data(cli, case):
    cli.check(case)


# ---- absurd header intros, magics, lead fields --------------------------------

def with_intro(data, off, il=None, dl=None, magic=None):
    data = bytearray(data)
    if magic is not None:
        data[off:off + 4] = magic
    if il is not None:
        data[off + 8:off + 12] = struct.pack(">I", il)
    if dl is not None:
        data[off + 12:off + 16] = struct.pack(">I", dl)
    return bytes(data)


INTROS = {
    "zero-entries": lambda il, dl: (0, 0),
    "all-ones": lambda il, dl: (0xFFFFFFFF, 0xFFFFFFFF),
    "max-entries-max-data": lambda il, dl: (0x00FFFFFF, 0x3FFFFFFF),
    "max-entries": lambda il, dl: (0x00FFFFFF, dl),
    "max-data": lambda il, dl: (il, 0x3FFFFFFF),
    "just-over-rpm-limits": lambda il, dl: (0x01000000, 0x40000000),
    "255MiB-below-limit": lambda il, dl: (0x100000, 0x0EF00000),
    "63MiB": lambda il, dl: (0x10000, 0x03E00000),
    "one-entry-more": lambda il, dl: (il + 1, dl),
    "one-byte-more": lambda il, dl: (il, dl + 1),
    "one-byte-less": lambda il, dl: (il, dl - 1),
    "one-entry-no-data": lambda il, dl: (1, 0),
    "int32-negative": lambda il, dl: (0x80000000, 0x80000000),
}


def _intro(which, name):
    data, s = package("zstd")
    off = s.lead_end if which == "signature" else s.sig_pad_end
    il, dl = (s.sig_il, s.sig_dl) if which == "signature" else (s.hdr_il, s.hdr_dl)
    return with_intro(data, off, *INTROS[name](il, dl))


for _which in ("signature", "main"):
    for _name in INTROS:
        case("intro", "%s-%s" % (_which, _name), lambda w=_which, n=_name: _intro(w, n),
             runners=("transcode", "rpm2extents") if _name == "all-ones" else ("transcode",))


@pytest.mark.parametrize("case", cases("intro"))
def test_absurd_header_intro(cli, case):
    cli.check(case)


def _magic(where):
    data, s = package("gzip")
    off = {"lead": 0, "signature": s.lead_end, "main": s.sig_pad_end}[where]
    return with_intro(data, off, magic=b"\0\0\0\0")


def _lead_byte(pos, value):
    d = bytearray(package("gzip")[0])
    d[pos] = value
    return bytes(d)


for _where in ("lead", "signature", "main"):
    case("magic", "bad-%s-magic" % _where, lambda w=_where: _magic(w))
# the lead's version and signature type are checked (the rest is free)
for _cid, _pos, _value in (("major-9", 4, 9), ("major-0", 4, 0), ("sigtype-high", 78, 0xFF),
                           ("sigtype-0", 79, 0)):
    case("magic", _cid, lambda p=_pos, v=_value: _lead_byte(p, v))


@pytest.mark.parametrize("case", cases("magic"))
def test_bad_magic_and_lead(cli, case):
    cli.check(case)


# ---- absurd cpio headers -----------------------------------------------------

def _special_entry(ents):
    """A directory entry, else a symlink: content the layout skips."""
    for kind in (0o040000, 0o120000):
        for e in ents:
            if (e.fields[1] & 0o170000) == kind:
                return e
    return None


def _set_special(a, es, value):
    e = _special_entry(es)
    return None if e is None else set_field(a, e, "filesize", value)


CPIO_CASES = {
    "filesize-4GiB-regular": lambda a, es: set_field(a, first_content_entry(es), "filesize",
                                                     0xFFFFFFFF),
    "filesize-4GiB-dir-or-symlink": lambda a, es: _set_special(a, es, 0xFFFFFFFF),
    "filesize-2GiB-dir-or-symlink": lambda a, es: _set_special(a, es, 0x7FFFFFFF),
    "filesize-plus-one": lambda a, es: set_field(
        a, first_content_entry(es), "filesize", first_content_entry(es).size + 1),
    "filesize-zero": lambda a, es: set_field(a, first_content_entry(es), "filesize", 0),
    "namesize-4GiB": lambda a, es: set_field(a, es[0], "namesize", 0xFFFFFFFF),
    "namesize-zero": lambda a, es: set_field(a, es[0], "namesize", 0),
    "namesize-one": lambda a, es: set_field(a, es[0], "namesize", 1),
    "namesize-4097": lambda a, es: set_field(a, es[0], "namesize", 4097),
    "namesize-4098": lambda a, es: set_field(a, es[0], "namesize", 4098),
    "namesize-short": lambda a, es: set_field(a, es[0], "namesize", es[0].fields[11] - 1),
    "namesize-long": lambda a, es: set_field(a, es[0], "namesize", es[0].fields[11] + 1),
    "not-hex": lambda a, es: set_field(a, es[0], "mode", b"0000g1ed"),
    "hex-with-sign": lambda a, es: set_field(a, es[1], "filesize", b"-0000001"),
    "nlink-4G": lambda a, es: set_field(a, first_content_entry(es), "nlink", 0xFFFFFFFF),
    "mode-directory-for-file": lambda a, es: set_field(
        a, first_content_entry(es), "mode", 0o040755),
    "mode-zero": lambda a, es: set_field(a, first_content_entry(es), "mode", 0),
    "odc-magic": lambda a, es: b"070707" + a[6:],
    "stripped-magic-huge-index": lambda a, es: b"07070Xfffffff0" + a[14:],
    "stripped-trailer-first": lambda a, es: b"07070Xffffffff" + bytes(2) + a,
    "only-the-trailer": lambda a, es: a[es[-1].off:],
    "trailer-first-then-archive": lambda a, es: a[es[-1].off:] + a[:es[-1].off],
    "entry-twice": lambda a, es: (lambda e: a[:e.end] + a[e.off:])(first_content_entry(es)),
    "name-not-in-header": lambda a, es: (lambda e: a[:e.off + 110] + b"X" + a[e.off + 111:])(
        first_content_entry(es)),
    "name-without-nul": lambda a, es: (lambda e: a[:e.off + 110 + e.fields[11] - 1] + b"Z"
                                       + a[e.off + 110 + e.fields[11]:])(es[0]),
    "garbage-after-trailer": lambda a, es: a + b"junk" * 100,
    "zeros-after-trailer": lambda a, es: a + bytes(4096),
}
# for a compressed payload, a few: the rest only repeats the same cpio code
CPIO_COMPRESSED = ("filesize-4GiB-regular", "filesize-plus-one", "namesize-4GiB",
                   "only-the-trailer", "entry-twice", "garbage-after-trailer",
                   "zeros-after-trailer")


def _cpio(kind, name):
    prologue, arch, compress = archive(kind)
    new = CPIO_CASES[name](arch, cpio_entries(arch))
    if new is None:
        return None
    assert new != arch
    return prologue + compress(new)


for _kind, _names in (("hardlink", list(CPIO_CASES)), ("zstd", CPIO_COMPRESSED)):
    for _name in _names:
        case("cpio", "%s-%s" % (_kind, _name), lambda k=_kind, n=_name: _cpio(k, n))


@pytest.mark.parametrize("case", cases("cpio"))
def test_absurd_cpio(cli, case):
    cli.check(case)


# ---- inputs that are not regular files ------------------------------------------

@pytest.mark.parametrize("source", ["directory", "missing", "dev-zero", "dev-urandom"])
def test_input_not_a_package_file(tmp_path, source):
    path = {"directory": tmp_path, "missing": tmp_path / "missing.rpm",
            "dev-zero": Path("/dev/zero"), "dev-urandom": Path("/dev/urandom")}[source]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run(command("rpmcow") + ["transcode", str(path), "-o", str(out_dir / "x.rpme")])
    assert_clean_failure(proc, "rpmcow")
    assert list(out_dir.iterdir()) == []


# ---- stdout is a pipe ---------------------------------------------------------

@pytest.mark.parametrize("what", ["truncated-payload", "bad-file-content", "trailing-data"])
def test_pipe_output_never_looks_complete(what):
    """rpm2extents writing into a pipe (librepo's way) cannot take back what it
    wrote before it found the problem; what it wrote must never end in the
    KWTSH100 footer (a reader would take it for a complete extents file)."""
    data, s = package("zstd")
    if what == "truncated-payload":
        bad = data[:(s.hdr_end + s.size) // 2]
    elif what == "bad-file-content":
        prologue, arch, compress = archive("zstd")
        e = first_content_entry(cpio_entries(arch))
        arch = arch[:e.data_off] + bytes([arch[e.data_off] ^ 1]) + arch[e.data_off + 1:]
        bad = prologue + compress(arch)
    else:
        bad = data + data
    proc = run(command("rpm2extents") + ["SHA256"], stdin=bad)
    assert_clean_failure(proc, "rpm2extents")
    assert not proc.stdout.endswith(b"KWTSH100"), "a complete-looking extents file on stdout"


# ---- the header without digests: librpm and our header code see the edits -----

def test_stripped_header_digests_still_transcode():
    """Harness check: with its header digests renamed away the package still
    transcodes when no verification is asked for."""
    data = strip_header_digests(package("hardlink")[0])
    o = transcode_isolated(data, level="none")
    assert o.kind == "ok", o
    assert_consistent(data, o.output)


@pytest.mark.parametrize("back", [1, 2, 40])
def test_bad_header_digest_fails_without_verification(back):
    """--verify-level none lets rpmkeys' BAD header digest pass the policy,
    so librpm must still check the header digests then (the transcoder
    skips that only where rpmkeys found them all OK): a changed byte in the
    main header's data is refused, naming the header."""
    data, s = package("hardlink")
    bad = _flip(data, s.hdr_end - back, 0)
    o = transcode_isolated(bad, level="none")
    assert_outcome(o, bad, must_fail=True, what="last main header byte - %d" % back)
    assert "header" in o.msg, o.msg


# RPMTAG_DIRINDEXES missing; FILEINODES, FILEMODES, FILESIZES with 2 of 8 entries
HEADER_EDITS = {
    "no-dirindexes": dict(tag=1116, new_tag=9999),
    "short-fileinodes": dict(tag=1096, count=2),
    "short-filemodes": dict(tag=1030, count=2),
    "short-filesizes": dict(tag=1028, count=2),
}
# A header (not covered by a digest) whose file tags disagree is a bad package,
# not a traceback: both with --verify-level none and in rpm2extents, which
# judges only BAD items (the librepo path).
for _name, _edit in HEADER_EDITS.items():
    case("file-tags", _name, lambda e=_edit: edit_main_header_entry(
        strip_header_digests(package("hardlink")[0]), **e),
        runners=("transcode-none", "rpm2extents"))


@pytest.mark.parametrize("case", cases("file-tags"))
def test_inconsistent_file_tags(cli, case):
    cli.check(case)


# ---- hypothesis: bit flips, truncations, values (Python API, forked) ----------

def _flip(data, off, bit):
    d = bytearray(data)
    d[off] ^= 1 << bit
    return bytes(d)


@st.composite
def flip_in(draw, kind):
    data, s = package(kind)
    part = draw(st.sampled_from(["lead", "signature header", "main header", "payload",
                                 "payload", "payload"]))
    lo, hi = {"lead": (0, s.lead_end), "signature header": (s.lead_end, s.sig_pad_end),
              "main header": s.main_header, "payload": (s.hdr_end, s.size)}[part]
    return draw(st.integers(lo, hi - 1)), draw(st.integers(0, 7))


def _bitflip_test(kind):
    @settings(max_examples=examples(150), **SETTINGS)
    @given(flip=flip_in(kind))
    def check(flip):
        data, s = package(kind)
        off, bit = flip
        bad = _flip(data, off, bit)
        o = transcode_isolated(bad)
        part = s.part(off)
        # the main header is covered by the header digests, the payload by
        # the file digests and the payload digest
        must_fail = part == "main header" or (part == "payload" and kind in WITH_PAYLOAD_DIGEST)
        assert_outcome(o, bad, must_fail=must_fail,
                       what="%s: bit %d of byte %d (%s)" % (kind, bit, off, part))
    return check


@pytest.mark.parametrize("kind", MAIN_PKGS)
def test_bitflips(kind):
    _bitflip_test(kind)()


@settings(max_examples=examples(200), **SETTINGS)
@given(off=st.integers(0, 10 ** 6), bit=st.integers(0, 7))
def test_bitflips_digestless_main_header(off, bit):
    """Flips in a main header nothing covers reach librpm's parser and our
    header code (with --verify-level none): error or success, nothing else."""
    data = strip_header_digests(package("hardlink")[0])
    s = sections(data)
    off = s.sig_pad_end + off % (s.hdr_end - s.sig_pad_end)
    bad = _flip(data, off, bit)
    assert_outcome(transcode_isolated(bad, level="none"), bad,
                   what="bit %d of byte %d (main header, no digests)" % (bit, off))


@settings(max_examples=examples(60), **SETTINGS)
@given(kind=st.sampled_from(MAIN_PKGS), frac=st.floats(0, 1, exclude_max=True))
def test_truncated_anywhere(kind, frac):
    data, s = package(kind)
    n = int(frac * s.size)
    o = transcode_isolated(data[:n])
    assert_outcome(o, data[:n], must_fail=True, what="%s cut at %d" % (kind, n))
    assert ("truncated" if n else "empty file") in o.msg.lower(), o.msg


U32 = st.one_of(st.sampled_from([0, 1, 2, 15, 16, 0x7F, 0xFF, 0xFFFF, 0x10000, 0x00FFFFFF,
                                 0x01000000, 0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000,
                                 0xFFFFFFFE, 0xFFFFFFFF]),
                st.integers(0, 0xFFFFFFFF))


@settings(max_examples=examples(100), **SETTINGS)
@given(which=st.sampled_from(["signature", "main"]), il=U32, dl=U32)
def test_header_intro_values(which, il, dl):
    data, s = package("zstd")
    off = s.lead_end if which == "signature" else s.sig_pad_end
    assume((il, dl) != ((s.sig_il, s.sig_dl) if which == "signature" else (s.hdr_il, s.hdr_dl)))
    bad = with_intro(data, off, il, dl)
    # a signature header grown into its own padding leaves the main header
    # where it was: librpm may or may not accept that, both are fine
    sig_end = s.lead_end + 16 + 16 * il + dl
    same_frame = which == "signature" and sig_end + (-sig_end % 8) == s.sig_pad_end
    assert_outcome(transcode_isolated(bad), bad, must_fail=not same_frame,
                   what="%s header intro il=%#x dl=%#x" % (which, il, dl))


@settings(max_examples=examples(60), **SETTINGS)
@given(kind=st.sampled_from(["hardlink", "zstd"]), index=st.integers(0, 1000),
       field=st.sampled_from(NEWC_FIELDS), value=U32)
def test_cpio_field_values(kind, index, field, value):
    prologue, arch, compress = archive(kind)
    ents = cpio_entries(arch)
    e = ents[index % len(ents)]
    new = set_field(arch, e, field, value)
    assume(new != arch)
    bad = prologue + compress(new)
    # every byte of the archive is covered by the payload digest
    assert_outcome(transcode_isolated(bad), bad, must_fail=True,
                   what="%s: entry %s field %s = %#x" % (kind, e.name, field, value))


@settings(max_examples=examples(40), **SETTINGS)
@given(kind=st.sampled_from(MAIN_PKGS), junk=st.binary(min_size=1, max_size=4096))
def test_random_payload(kind, junk):
    """Valid headers, then anything as the payload."""
    data, s = package(kind)
    bad = data[:s.hdr_end] + junk
    assert_outcome(transcode_isolated(bad), bad, must_fail=True,
                   what="%s with a %d-byte random payload" % (kind, len(junk)))


@settings(max_examples=examples(40), **SETTINGS)
@given(junk=st.binary(max_size=2048))
def test_random_input(junk):
    assert_outcome(transcode_isolated(junk), junk, must_fail=True, what="random bytes")


# ---- allocation failure ------------------------------------------------------

OOM_SWEEP = r"""
import json, os, resource, sys, tempfile, traceback
from rpmcow import extents, transcode
from rpmcow.errors import RpmcowError
src, warm, start, stop, step = sys.argv[1], sys.argv[2] == "warm", *map(int, sys.argv[3:6])
kw = {} if sys.argv[6] == "-" else {"level": sys.argv[6]}
work = tempfile.mkdtemp(prefix="rpmcow-oom-")
# the modules a transcode imports lazily are byte-compiled first: a child
# compiling a just-edited one under the limit crashes inside CPython 3.11
# (memcpy in its compiler), which is not what this sweeps
import compileall
compileall.compile_dir(os.path.dirname(transcode.__file__), quiet=2)
if warm:   # a process that transcoded before: thread stacks and arenas cached
    transcode.transcode_path(src, os.path.join(work, "warm.rpme"), **kw)
def vmsize():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
results = []
for extra in range(start, stop, step):
    dst = os.path.join(work, "out-%d.rpme" % extra)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            res = {"extra": extra}
            try:
                lim = vmsize() + extra
                resource.setrlimit(resource.RLIMIT_AS, (lim, resource.RLIM_INFINITY))
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                transcode.transcode_path(src, dst, **kw)
                res["kind"] = "ok"
            except RpmcowError as exc:
                res.update(kind="error", msg=str(exc))
            except MemoryError:
                res.update(kind="memoryerror")
            except BaseException as exc:
                res.update(kind="bug", msg=repr(exc), tb=traceback.format_exc())
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    buf = b""
    while True:
        c = os.read(r, 65536)
        if not c:
            break
        buf += c
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        res = {"extra": extra, "kind": "crash", "msg": "signal %d" % os.WTERMSIG(status)}
    elif not buf:
        res = {"extra": extra, "kind": "exit", "msg": "status %d" % os.WEXITSTATUS(status)}
    else:
        res = json.loads(buf)
    if res["kind"] == "ok":
        try:
            fd = os.open(dst, os.O_RDONLY)
            sec = extents.read_sections(fd)
            os.close(fd)
            res["table"] = len(sec.table)
            res["input_len"] = sec.input_len
        except Exception as exc:
            res["kind"], res["msg"] = "broken-output", repr(exc)
    res["leftovers"] = [n for n in os.listdir(work) if n.startswith(".out-%d." % extra)]
    for name in os.listdir(work):
        if name.startswith("out-") or name.startswith(".out-"):
            os.unlink(os.path.join(work, name))
    results.append(res)
import shutil
shutil.rmtree(work, ignore_errors=True)
print(json.dumps(results))
"""


@pytest.mark.parametrize("kind,warm,level,start,stop,step", [
    ("xz-old", "cold", "-", 0, 4 << 20, 64 << 10),
    ("xz-old", "cold", "none", 0, 4 << 20, 64 << 10),
    ("zstd", "warm", "-", 0, 1 << 20, 16 << 10),
])
def test_allocation_failure(kind, warm, level, start, stop, step):
    """Run out of address space at every point of a transcode: each run ends
    in an error (or librpm's own exit) or a complete, correct file -- never a
    crash, and never a "successful" incomplete file.  "cold": a fresh process;
    "warm": one that transcoded before (cached thread stack and arenas move
    the failures to other allocations).  Level "none": no verification that
    would notice a payload the layout never read."""
    data, _ = package(kind)
    if level == "-":
        from rpmcow import verify
        r = subprocess.run(["rpmkeys", "-Kv", str(CORPUS / PKGS[kind][0])],
                           capture_output=True, text=True)
        refused = verify.policy_failure(verify.parse_items(r.stdout), "digest")
        if refused:
            pytest.skip("this host's rpm refuses %s at its default level (%s): the 'none' "
                        "variant sweeps it" % (PKGS[kind][0], refused))
    reference = transcode_isolated(data, **({} if level == "-" else {"level": level}))
    assert reference.kind == "ok", reference
    from rpmcow import extents
    with tempfile.TemporaryFile() as f:
        f.write(reference.output)
        f.flush()
        want = len(extents.read_sections(f.fileno()).table)
    proc = subprocess.run([sys.executable, "-c", OOM_SWEEP, str(CORPUS / PKGS[kind][0]), warm,
                           str(start), str(stop), str(step), level], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    results = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    bad = []
    for r in results:
        if r["kind"] in ("error", "memoryerror") and not r["leftovers"]:
            continue
        if r["kind"] == "exit":     # librpm's exit(1) when its malloc fails: no cleanup
            continue
        if r["kind"] == "ok" and r["table"] == want and r["input_len"] == len(data):
            continue
        bad.append(r)
    kinds = collections.Counter(r["kind"] for r in results)
    assert not bad, "%s (outcomes: %s)" % (bad[:3], dict(kinds))


def test_out_of_memory_is_not_a_bad_package(tmp_path):
    """Run out of address space in the middle of a transcode: the error says
    so (exit 3), never that a good package is bad."""
    src = CORPUS / PKGS["xz"][0]
    code = ("import resource, sys\n"
            "from rpmcow import cli, native, transcode, package, verify, extents, record\n"
            "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status')\n"
            "          if l.startswith('VmSize:'))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + %d, resource.RLIM_INFINITY))\n"
            "sys.exit(cli.main(['transcode', '-q', sys.argv[1], '-o', sys.argv[2]]))\n")
    seen = set()
    for extra in (1 << 20, 4 << 20, 16 << 20, 40 << 20, 80 << 20, 160 << 20, 400 << 20):
        proc = subprocess.run([sys.executable, "-c", code % extra, str(src),
                               str(tmp_path / "o.rpme")], capture_output=True)
        err = proc.stderr.decode()
        if proc.returncode == 0:
            seen.add("ok")
            continue
        assert "Traceback" not in err, err
        if proc.returncode == 3:
            assert "out of memory" in err and "nothing was judged" in err, err
            seen.add("oom")
        else:
            # librpm or Python may die otherwise, but never call the package bad
            assert "not a valid" not in err and "corrupt" not in err and "BAD" not in err, err
    assert "oom" in seen and "ok" in seen, seen

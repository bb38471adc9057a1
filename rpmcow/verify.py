"""Verification of a package while it is transcoded, and of that verdict later.

Everything cryptographic is librpm's, run as ``rpmkeys -Kv`` against the
keyring of the target root: no OpenPGP code of ours.

Order of work while transcoding (nothing untrusted reaches a decompressor
before the header is checked):

1. ``HeaderCheck``: rpmkeys checks the lead, signature header and main
   header alone (header signatures, header digests).  A BAD item, or an
   unmet signature requirement, stops the transcode here.  The same run
   lists every item rpmkeys would report for the whole package, and the
   expected value of each payload digest (which it finds missing).
2. Payload items.  rpmkeys computes the payload digests (PAYLOADDIGEST and,
   in rpm 4.18, ALT too) and the legacy MD5 over the *compressed* bytes: the
   C input stage computes exactly those digests while the payload is
   transcoded (``PayloadPlan``), and ``payload_items`` applies rpmkeys' own
   rules for which items it reports and how (``rpmvsVerify``: a failed digest
   with a verified alternative is not reported; a NOTFOUND item only when
   its range is otherwise unverified).  A package with a legacy
   header+payload *signature* needs OpenPGP over the whole package: then a
   second rpmkeys (``Check``) reads the original stream from the input
   stage's tee and reports every item itself.
3. The C layout checks every file's content against its header digest.

The verdict is stored in the S section in upstream's layout (rc, the
``rpmkeys -Kv`` lines) plus one line of ours, the *record*: the SHA-256 of
the headers it belongs to and an HMAC over the verdict with a key private to
the target root.  A section copied from another package, or edited, is
detected; a key imported later is honoured because header signatures are
always re-checked against the current keyring (``rpmcow.checksig``).
"""
import hashlib
import hmac
import os
import re
import select
import signal
from collections import namedtuple

from . import rpmconfig
from .errors import RpmcowError, VerificationError

# Every transcode starts a HeaderCheck first, and only then imports the rest
# of what it needs while rpmkeys runs: so this module stays cheap to import
# (no dataclasses, no subprocess; tempfile only where a rare path needs it).

RC_OK = 0
RC_FAIL = 2

_LINE = re.compile(r"^    (?P<label>.*?): (?P<result>OK|BAD|NOKEY|NOTTRUSTED|NOTFOUND|UNKNOWN)"
                   r"(?: \((?P<detail>.*)\))?$")
RECORD_PREFIX = "    rpmcow record: "
KEY_PATH = "var/lib/rpmcow/verdict.key"


class Item(namedtuple("Item", "label result detail", defaults=("",))):
    """One line of ``rpmkeys -Kv``: "    label: result (detail)"."""
    __slots__ = ()

    @property
    def is_signature(self):
        return "ignature" in self.label

    @property
    def header_only(self):
        return self.label.startswith("Header ")

    @property
    def covers_payload(self):
        return not self.header_only

    @property
    def line(self):
        return "    %s: %s%s" % (self.label, self.result,
                                 " (%s)" % self.detail if self.detail else "")


def parse_items(text):
    """Items from ``rpmkeys -Kv`` output (or an S section's text)."""
    items = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not line.startswith(RECORD_PREFIX):
            items.append(Item(m["label"], m["result"], m["detail"] or ""))
    return items


def policy_failure(items, level, header_only=False):
    """The first reason `items` do not satisfy %_pkgverify_level `level`,
    or None.  header_only: judge only what a header check can show."""
    if level == "none":
        return None
    for it in items:
        if it.result == "BAD":
            return it.line.strip()
    digests_ok = [it for it in items if not it.is_signature and it.result == "OK"]
    sigs = [it for it in items if it.is_signature]
    if level in ("digest", "all") and not header_only:
        # digests that cover the payload (and the legacy MD5, which also
        # covers the header) are only known after the full check
        if not any(it.header_only or it.label == "MD5 digest" for it in digests_ok):
            return "no header digest verified"
        if not any(it.covers_payload for it in digests_ok):
            return "no payload digest verified"
    if level in ("signature", "all"):
        if not any(it.result == "OK" for it in sigs):
            if header_only and any(it.covers_payload for it in sigs) \
                    and not any(it.header_only for it in sigs):
                return None    # only a header+payload signature: judged later
            bad = [it for it in sigs if it.result != "NOTFOUND"]
            return bad[0].line.strip() if bad else "package is not signed"
    return None


def header_digests_ok(header_items):
    """Whether rpmkeys verified the header's digests and found none bad."""
    digests = [it for it in header_items if not it.is_signature and it.result != "NOTFOUND"]
    return bool(digests) and all(it.result == "OK" for it in digests)


def _rpmkeys(target):
    return ["rpmkeys", "-Kv", *target.rpm_args(), "-"]


class _Rpmkeys:
    """A running ``rpmkeys -Kv`` for the target root, reading stdin (a
    descriptor), its stdout and stderr going to memory files.

    Spawned directly (posix_spawn): the subprocess module costs ~7 ms to
    import, and the header check's start is on the critical path of every
    transcode.  Like subprocess, the child gets SIGPIPE and SIGXFSZ back at
    their defaults and no descriptor but its standard three."""

    def __init__(self, target, stdin):
        self._pid = None
        self._out = self._err = -1
        try:
            self._out = os.memfd_create("rpmkeys-out", os.MFD_CLOEXEC)
            self._err = os.memfd_create("rpmkeys-err", os.MFD_CLOEXEC)
            self._pid = os.posix_spawnp(
                "rpmkeys", _rpmkeys(target), os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0),
                              (os.POSIX_SPAWN_DUP2, self._out, 1),
                              (os.POSIX_SPAWN_DUP2, self._err, 2)] + _close_inherited(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            self._close()
            raise VerificationError("cannot run rpmkeys: %s" % exc) from None

    def _finish(self):
        """(exit code, stdout, stderr) once rpmkeys has exited (waits)."""
        rc = _reap(self._pid)
        self._pid = None
        out, err = self._read(self._out), self._read(self._err)
        self._close()
        return rc, out, err

    def _exited(self, timeout):
        try:
            pidfd = os.pidfd_open(self._pid)
        except OSError:        # reaped already, or a kernel without pidfds (< 5.3)
            return True
        try:
            return bool(select.select([pidfd], [], [], timeout)[0])
        finally:
            os.close(pidfd)

    def abort(self):
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(self._pid)
            self._pid = None
        self._close()

    @staticmethod
    def _read(fd):
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0).decode("utf-8", "replace") if size else ""

    def _close(self):
        for fd in (self._out, self._err):
            if fd >= 0:
                os.close(fd)
        self._out = self._err = -1


class HeaderCheck(_Rpmkeys):
    """rpmkeys -Kv on lead + signature header + header alone, running in the
    background from construction until ``wait``."""

    TIMEOUT = 120       # seconds; a header check takes milliseconds

    def __init__(self, target, prologue):
        self.items = None
        stdin = os.memfd_create("rpmcow-prologue", os.MFD_CLOEXEC)
        try:
            os.write(stdin, prologue)
            os.lseek(stdin, 0, os.SEEK_SET)
            super().__init__(target, stdin)
        finally:
            os.close(stdin)

    def wait(self):
        """Every item rpmkeys printed (payload items judged on no payload)."""
        if self.items is None:
            if not self._exited(self.TIMEOUT):
                self.abort()
                raise VerificationError("cannot run rpmkeys: no verdict after %d s"
                                        % self.TIMEOUT)
            _, out, err = self._finish()
            self.items = parse_items(out)
            if not any(it.header_only for it in self.items):
                raise VerificationError("rpmkeys could not read the package header: %s"
                                        % err.strip())
        return self.items

    @property
    def header_items(self):
        return [it for it in self.wait() if it.header_only]


def _close_inherited():
    """posix_spawn actions closing, in the child, every descriptor above 2
    that would survive exec (Python's own never do; a host's C libraries
    may leave some)."""
    actions = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:          # the listing's own descriptor, closed by now
            pass
    return actions


def _reap(pid):
    """pid's exit code (0 where this process ignores SIGCHLD: the kernel
    reaped it already, as subprocess assumes too)."""
    try:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:
        return 0


# ---- payload items, computed by the C input stage --------------------------

_PAYLOAD_DIGEST = re.compile(r"^Payload (?P<algo>[A-Z0-9]+)(?P<alt> ALT)? digest$")
_EXPECTED = re.compile(r"^Expected (?P<want>[0-9a-fA-F]+) != [0-9a-fA-F]*$")
_DIG, _SIG = 1, 2                   # rpmvs item types
_HEADER, _PAYLOAD = 1, 2            # rpmvs ranges
_LEVEL_BITS = {"none": 0, "digest": _DIG, "signature": _SIG, "all": _DIG | _SIG}


def _range(item):
    if item.label.startswith("Header "):
        return _HEADER
    if item.label.startswith("Payload "):
        return _PAYLOAD
    return _HEADER | _PAYLOAD


def _type(item):
    return _SIG if item.is_signature else _DIG


class PayloadPlan:
    """Which digests of the compressed input stand in for rpmkeys' payload
    items, judged from the prologue-only rpmkeys run.

    digests: {label: (algorithm name, "payload" | "header+payload")}.
    full_check: True if some item needs rpmkeys itself over the whole
    package (a legacy header+payload signature, or anything unexpected).
    """

    def __init__(self, items):
        self.items = list(items)
        self.digests = {}
        self.expected = {}
        self.full_check = False
        for it in self.items:
            if it.header_only or it.result == "NOTFOUND":
                continue
            m = _PAYLOAD_DIGEST.match(it.label)
            if m:
                what = (m["algo"], "payload")
            elif it.label == "MD5 digest":
                what = ("MD5", "header+payload")
            else:
                self.full_check = True      # a signature over header+payload
                continue
            want = _EXPECTED.match(it.detail) if it.result == "BAD" else None
            if want is None:
                self.full_check = True      # not what an absent payload gives
                continue
            self.digests[it.label] = what
            self.expected[it.label] = want["want"].lower()


def payload_items(plan, computed, level):
    """Every item, as ``rpmkeys -Kv`` prints them for the whole package.

    computed: {label: hex digest} for plan.digests; level: rpmkeys'
    %_pkgverify_level.  The reporting rules are rpmvsVerify's."""
    judged = []
    for it in plan.items:
        if it.label in plan.digests:
            want, got = plan.expected[it.label], computed[it.label].lower()
            it = Item(it.label, "OK") if want == got else \
                Item(it.label, "BAD", "Expected %s != %s" % (want, got))
        judged.append(it)
    verified = {_DIG: 0, _SIG: 0}
    strengths, ranges = [], 0
    for it in judged:
        strength = _type(it)
        # digests inside a header whose signature verified count as signed
        if it.label.startswith("Payload ") and verified[_SIG] & _HEADER:
            strength = _SIG
        strengths.append(strength)
        if it.result == "OK":
            verified[_type(it)] |= _range(it)
            verified[strength] |= _range(it)
        ranges |= _range(it)
    vfylevel = _LEVEL_BITS.get(level, _DIG) | (_SIG if verified[_SIG] else 0)
    out = []
    for it, strength in zip(judged, strengths):
        if it.result == "BAD" and it.label.startswith("Payload "):
            # PAYLOADDIGEST and its ALT stand in for each other
            alt = it.label.replace(" ALT digest", " digest") if " ALT " in it.label \
                else it.label.replace(" digest", " ALT digest")
            if any(o.label == alt and o.result == "OK" for o in judged):
                it = Item(it.label, "NOTFOUND")
        bits = _type(it) | strength
        required = 0
        if vfylevel & bits & _DIG:
            required |= ranges & ~verified[_DIG] & _range(it)
        if vfylevel & bits & _SIG:
            required |= ranges & ~verified[_SIG] & _range(it)
        if not required and it.result == "NOTFOUND":
            continue
        out.append(it)
    return out


class Check(_Rpmkeys):
    """A running rpmkeys that reads the whole original package from a pipe
    (``fd``: the input stage tees the package into it)."""

    def __init__(self, target):
        r, self._w = os.pipe()
        try:
            import fcntl     # legacy header+payload signatures only
            fcntl.fcntl(self._w, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        try:
            super().__init__(target, r)
        except VerificationError:
            os.close(self._w)
            raise
        finally:
            os.close(r)

    @property
    def fd(self):
        return self._w

    def feed(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._w, view):]
        except BrokenPipeError:
            pass   # rpmkeys stopped reading; finish() reports what it said

    def finish(self):
        """(rpmkeys exit code, items)."""
        self._close_pipe()
        rc, out, err = self._finish()
        items = parse_items(out)
        if not items:
            raise VerificationError("rpmkeys could not verify the package: %s" % err.strip())
        return rc, items

    def abort(self):
        self._close_pipe()
        super().abort()

    def _close_pipe(self):
        if self._w >= 0:
            os.close(self._w)
            self._w = -1


# ---- the record ------------------------------------------------------------

def headers_digest(prologue):
    """SHA-256 of signature header + main header (bytes 96 to the header's
    end): what a verdict belongs to."""
    return hashlib.sha256(prologue[96:]).hexdigest()


def _key_file(target):
    return os.path.join(target.root, KEY_PATH)


def record_key(target, create=True):
    """The root's private key for verdict MACs (created on first use), or
    None where it cannot be read or made (e.g. not root)."""
    path = _key_file(target)
    try:
        with open(path, "rb") as f:
            key = f.read()
        return key if len(key) == 32 else None
    except FileNotFoundError:
        if not create:
            return None
    except OSError:
        return None
    try:
        import tempfile      # once per root
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".verdict.key.")
        try:
            os.write(fd, os.urandom(32))
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)       # first writer wins; others read its key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return record_key(target, create=False)
    except OSError:
        return None


def _mac(key, headers_sha256, items, files_ok):
    msg = "\n".join([headers_sha256, "files=%s" % ("OK" if files_ok else "BAD")]
                    + [it.line for it in items]).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


class Verdict:
    """The items of a package's check, the SHA-256 of the headers they belong
    to, whether every file matched its digest, and rpmkeys' exit code."""

    def __init__(self, items, headers_sha256, files_ok=True, rpmkeys_rc=0):
        self.items = items
        self.headers_sha256 = headers_sha256
        self.files_ok = files_ok
        self.rpmkeys_rc = rpmkeys_rc

    @property
    def rc(self):
        ok = self.rpmkeys_rc == 0 and self.files_ok and all(i.result == "OK" for i in self.items)
        return RC_OK if ok else RC_FAIL

    def s_text(self, key):
        mac = _mac(key, self.headers_sha256, self.items, self.files_ok) if key else "none"
        lines = [it.line for it in self.items]
        lines.append("%sheader-sha256=%s files=%s mac=%s" % (
            RECORD_PREFIX, self.headers_sha256, "OK" if self.files_ok else "BAD", mac))
        return ("\n".join(lines) + "\n").encode()


def parse_record(text):
    for line in text.splitlines():
        if line.startswith(RECORD_PREFIX):
            return dict(kv.split("=", 1) for kv in line[len(RECORD_PREFIX):].split()
                        if "=" in kv)
    return None


def record_keys(target):
    """The keys a record of this host may be MACed with: the target root's
    and the host's (both root-only secrets of this machine; a package
    transcoded for one root may be installed into another)."""
    keys = [record_key(target, create=False)]
    if os.path.realpath(target.root) != "/":
        keys.append(record_key(rpmconfig.Target(), create=False))
    return [k for k in keys if k]


def check_record(s_text, prologue, keys):
    """('valid' | 'missing' | 'foreign' | 'altered' | 'unkeyed', items) for a
    stored S text; keys: the record keys to accept (record_keys)."""
    text = s_text.decode("utf-8", "replace")
    items = parse_items(text)
    rec = parse_record(text)
    if rec is None:
        return "missing", items
    if rec.get("header-sha256") != headers_digest(prologue):
        return "foreign", items
    if not keys or rec.get("mac") in (None, "none"):
        return "unkeyed", items
    for key in keys:
        expected = _mac(key, rec["header-sha256"], items, rec.get("files") == "OK")
        if hmac.compare_digest(expected, rec.get("mac", "")):
            return "valid", items
    return "altered", items


RECORD_PROBLEMS = {
    "missing": "NOTTRUSTED (no rpmcow record, made by another tool: check with --files)",
    "foreign": "BAD (the record belongs to another package)",
    "altered": "BAD (the record was altered)",
    "unkeyed": "NOTTRUSTED (no key to check the record with)",
}


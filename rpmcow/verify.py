"""Verification of a package while it is transcoded, and of that verdict later.

Everything cryptographic is librpm's, run as ``rpmkeys -Kv`` against the
keyring of the target root: no OpenPGP code of ours.

Order of work while transcoding (nothing untrusted reaches a decompressor
before the header is checked):

1. ``header_items``: rpmkeys checks the lead, signature header and main
   header alone (header signatures, header digests).  A BAD item, or an
   unmet signature requirement, stops the transcode here.
2. ``Check``: a second rpmkeys reads the whole original stream, fed by the
   C input stage's tee while the payload is transcoded, and reports every
   item (payload digests, legacy header+payload signatures and MD5).
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
import subprocess
import tempfile
from dataclasses import dataclass

from . import rpmconfig
from .errors import RpmcowError, VerificationError

RC_OK = 0
RC_FAIL = 2

_LINE = re.compile(r"^    (?P<label>.*?): (?P<result>OK|BAD|NOKEY|NOTTRUSTED|NOTFOUND|UNKNOWN)"
                   r"(?: \((?P<detail>.*)\))?$")
RECORD_PREFIX = "    rpmcow record: "
KEY_PATH = "var/lib/rpmcow/verdict.key"


@dataclass(frozen=True)
class Item:
    label: str
    result: str
    detail: str = ""

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


def _rpmkeys(target):
    return ["rpmkeys", "-Kv", *target.rpm_args(), "-"]


def header_items(target, prologue):
    """Items rpmkeys can judge from lead + signature header + header alone."""
    try:
        r = subprocess.run(_rpmkeys(target), input=prologue, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise VerificationError("cannot run rpmkeys: %s" % exc) from None
    items = [it for it in parse_items(r.stdout.decode("utf-8", "replace")) if it.header_only]
    if not items:
        raise VerificationError("rpmkeys could not read the package header: %s"
                                % r.stderr.decode("utf-8", "replace").strip())
    return items


class Check:
    """A running rpmkeys that reads the whole original package from a pipe."""

    def __init__(self, target):
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(_rpmkeys(target), stdin=subprocess.PIPE,
                                          stdout=self._out, stderr=self._err)
        except OSError as exc:
            raise VerificationError("cannot run rpmkeys: %s" % exc) from None
        try:
            import fcntl
            fcntl.fcntl(self._proc.stdin.fileno(), 1031, 1 << 20)   # F_SETPIPE_SZ
        except OSError:
            pass

    @property
    def fd(self):
        return self._proc.stdin.fileno()

    def feed(self, data):
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass   # rpmkeys stopped reading; finish() reports what it said

    def finish(self):
        """(rpmkeys exit code, items)."""
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self._proc.wait()
        self._out.seek(0)
        text = self._out.read().decode("utf-8", "replace")
        items = parse_items(text)
        if not items:
            self._err.seek(0)
            raise VerificationError("rpmkeys could not verify the package: %s"
                                    % self._err.read().decode("utf-8", "replace").strip())
        return rc, items

    def abort(self):
        try:
            self._proc.kill()
            self._proc.stdin.close()
        except (OSError, ValueError):
            pass
        self._proc.wait()


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


@dataclass
class Verdict:
    items: list
    headers_sha256: str
    files_ok: bool = True
    rpmkeys_rc: int = 0

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


"""The record of a verdict: what makes an S section trustworthy later.

The verdict is stored in the S section in upstream's layout (rc, the
``rpmkeys -Kv`` lines) plus one line of ours, the *record*: the SHA-256 of
the headers it belongs to and an HMAC over the verdict with a key private to
the target root.  A section copied from another package, or edited, is
detected; a key imported later is honoured because header signatures are
always re-checked against the current keyring (``rpmcow.checksig``).

Apart from ``rpmcow.verify`` (which every transcode imports before its
header check starts); the digests are the C core's, because hashlib and
hmac cost ~3 ms to import, in the window where a transcode waits for
rpmkeys.
"""
import os

from . import native, rpmconfig
from .verify import RC_FAIL, RC_OK, RECORD_PREFIX, parse_items

KEY_PATH = "var/lib/rpmcow/verdict.key"


def headers_digest(prologue):
    """SHA-256 of signature header + main header (bytes 96 to the header's
    end): what a verdict belongs to."""
    return native.sha256(memoryview(prologue)[96:]).hex()


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
    return native.hmac_sha256(key, msg).hex()


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
    import hmac        # compare_digest: checking only (a transcode never needs it)
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


"""The record of a verdict: what makes an S section trustworthy later.

The verdict is stored in the S section in upstream's layout (rc, the
``rpmkeys -Kv`` lines) plus one line of ours, the *record*: the SHA-256 of
the headers it belongs to, whether every file matched its digest, the
SHA-256 of the T section (which blob each file digest points at), the
identity of the file the transcoder wrote (inode number and the mtime it
gave the file, to the nanosecond), and an HMAC over all of it with a key
private to the target root (the host's, for a file written outside that
root: transcode._record_target).  A section copied from another package, or
edited, is detected; a key imported later is honoured because header
signatures are always re-checked against the current keyring
(``rpmcow.checksig``).

The record proves two different things:

* the *verdict* (payload digests and signatures over the original package)
  belongs to these headers: true wherever the section is copied; so do the
  digests of the whole original package (``package-digests``, where the
  transcoding host's rpm records them: rpm 6), which an install hands rpm
  for its database in place of the digests of the bytes it was fed;
* the *blobs* are the ones the transcoder checked (``vouches_for_blobs``):
  only for the very file it wrote, while that file is unchanged -- the same
  inode, the mtime it was given, a ctime no later than the write's end
  allows (any write, chmod, chown, link or rename since moves the ctime, and
  only root can set the clock), owned by root (or the installing user) with
  no group or other write permission -- and only in the boot that wrote
  it (``BOOT_XATTR``).  A copy, an edit or a move makes the installer hash
  every blob instead.

Why the boot: the transcoder does not wait for its output to reach the
disk (that would cost a large write of what, with dnf's keepcache=0, is
removed moments later).  After a crash, a file renamed into place can have
its full size and some of its blocks never written -- zeros, on XFS -- with
its inode, mtime and ctime intact.  Cloned into a root, those zeros would be
installed as file content where stock rpm's payload digest would have
failed.  A file the kernel has had since it was written holds what was
written; one kept across a reboot (a crash, or not) is checked blob by blob.

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
    None where it cannot be read or made (e.g. not root).  A key file of
    another size than a key -- a crash before its block reached the disk
    leaves one of 0 bytes -- is replaced: taken as no key, every record made
    after it would be unkeyed, and every install would hash every blob."""
    path = _key_file(target)
    try:
        with open(path, "rb") as f:
            key = f.read(33)
        if len(key) == 32:
            return key
        if not create:
            return None
        replace = True
    except FileNotFoundError:
        if not create:
            return None
        replace = False
    except OSError:
        return None
    try:
        import tempfile      # once per root
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".verdict.key.")
        try:
            try:
                os.write(fd, os.urandom(32))
                os.fchmod(fd, 0o600)
                os.fsync(fd)           # on the disk before any record uses it
            finally:
                os.close(fd)
            if replace:
                os.rename(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # first writer wins; others read its key
                except FileExistsError:
                    pass
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass                   # renamed
        return record_key(target, create=False)
    except OSError:
        return None


# how long after the mtime the transcoder gave a file its ctime may be: the
# sections' write, the chmod and the rename into place come after it
CTIME_SLACK_NS = 60 * 10**9
# a ctime may be that much earlier than the mtime: earlier rpmcow builds took
# the mtime from time.time_ns(), finer than the kernel's coarse clock for
# inode times, so its files' ctimes came out up to a tick earlier
CLOCK_TICK_NS = 20 * 10**6
# record fields under the MAC besides header-sha256 and files, in this
# order: the whole package's digests, and those that bind the blobs
BINDING = ("package-digests", "table-sha256", "file")


def _mac(key, headers_sha256, items, files_ok, binding=()):
    """binding: "name=value" strings of the BINDING fields present."""
    msg = "\n".join([headers_sha256, "files=%s" % ("OK" if files_ok else "BAD")]
                    + list(binding) + [it.line for it in items]).encode()
    return native.hmac_sha256(key, msg).hex()


def file_id(ino, mtime_ns):
    """The record's file field; fixed width, so that two transcodes of one
    package differ only in these bytes and the MAC, never in length."""
    return "%020d:%020d" % (ino, mtime_ns)


NO_FILE = file_id(0, 0)      # written to a stream: no file to bind (no inode is 0)


class Verdict:
    """The items of a package's check, the SHA-256 of the headers they belong
    to, whether every file matched its digest, and rpmkeys' exit code."""

    def __init__(self, items, headers_sha256, files_ok=True, rpmkeys_rc=0,
                 package_digests=None):
        self.items = items
        self.headers_sha256 = headers_sha256
        self.files_ok = files_ok
        self.rpmkeys_rc = rpmkeys_rc
        # {PGPHASHALGO: hex} of the original package file (rpm 6 records them)
        self.package_digests = package_digests or {}

    @property
    def rc(self):
        """rpmkeys' verdict (rpm 4: every item OK; rpm 6.1 ignores a
        NOTTRUSTED item: verify.rpmkeys_outcome) and the files'."""
        ok = self.rpmkeys_rc == 0 and self.files_ok and \
            not any(i.result in ("BAD", "NOKEY") for i in self.items)
        return RC_OK if ok else RC_FAIL

    def s_text(self, key, table_sha256=None, file=None):
        """The S text; table_sha256 (hex) and file (file_id) bind the
        blobs of the file being written, where known."""
        binding = []
        if self.package_digests:
            binding.append("package-digests=%s" % format_package_digests(self.package_digests))
        if table_sha256:
            binding.append("table-sha256=%s" % table_sha256)
        if table_sha256 and file:
            binding.append("file=%s" % file)
        mac = _mac(key, self.headers_sha256, self.items, self.files_ok, binding) \
            if key else "none"
        lines = [it.line for it in self.items]
        lines.append("%sheader-sha256=%s files=%s%s mac=%s" % (
            RECORD_PREFIX, self.headers_sha256, "OK" if self.files_ok else "BAD",
            "".join(" " + b for b in binding), mac))
        return ("\n".join(lines) + "\n").encode()


def format_package_digests(digests):
    """{PGPHASHALGO: hex} as the record's field: "8:HEX,10:HEX"."""
    return ",".join("%d:%s" % (algo, hexd) for algo, hexd in digests.items())


def package_digests(rec):
    """The record's package digests as {PGPHASHALGO: hex} (only what is well
    formed: a known algorithm and a lowercase hex digest of its size); {}
    where it has none.  Trust them only from a valid record."""
    from .digests import BY_ID
    out = {}
    for field in rec.get("package-digests", "").split(","):
        algo, _, hexd = field.partition(":")
        if not algo.isdigit() or int(algo) not in BY_ID or int(algo) in out:
            continue
        if len(hexd) == 2 * BY_ID[int(algo)].size and \
                all(c in "0123456789abcdef" for c in hexd):
            out[int(algo)] = hexd
    return out


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
    return check(s_text, prologue, keys)[:2]


def check(s_text, prologue, keys):
    """check_record's (status, items) and the record's fields ({} where
    there is no record): fields are vouched for only when status is 'valid'."""
    import hmac        # compare_digest: checking only (a transcode never needs it)
    text = s_text.decode("utf-8", "replace")
    items = parse_items(text)
    rec = parse_record(text)
    if rec is None:
        return "missing", items, {}
    if rec.get("header-sha256") != headers_digest(prologue):
        return "foreign", items, rec
    if not keys or rec.get("mac") in (None, "none"):
        return "unkeyed", items, rec
    binding = ["%s=%s" % (name, rec[name]) for name in BINDING if name in rec]
    for key in keys:
        expected = _mac(key, rec["header-sha256"], items, rec.get("files") == "OK", binding)
        if hmac.compare_digest(expected, rec.get("mac", "")):
            return "valid", items, rec
    return "altered", items, rec


# The boot an extents file was written in: /proc/sys/kernel/random/boot_id's,
# set by the transcoder before it gives the file its mtime.  A "user."
# attribute: only who may write the file may set one, and the record vouches
# only for a file nobody but its owner (root, or the installing user) may
# write; unlike "trusted." it is there for a user's own transcodes too.
BOOT_XATTR = "user.rpmcow.boot"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


_boot = []


def boot_id():
    """This boot's id (bytes), or None where the kernel does not say.  Kept
    once read: a process outlives no boot, and may later be in a chroot
    without /proc (rpm's, during a transaction)."""
    if not _boot:
        try:
            with open(_BOOT_ID, "rb") as f:
                value = f.read(64).strip()
        except OSError:
            return None
        if not value:
            return None
        _boot.append(value)
    return _boot[0]


def mark_boot(fd):
    """Record on the file at fd that this boot wrote it (best effort: a
    file without the mark has its blobs hashed when installed)."""
    value = boot_id()
    if value:
        try:
            os.setxattr(fd, BOOT_XATTR, value)
        except OSError:
            pass


def written_this_boot(fd):
    """Whether the file at fd is marked as written in this boot."""
    value = boot_id()
    try:
        return value is not None and os.getxattr(fd, BOOT_XATTR) == value
    except OSError:
        return False


def vouches_for_blobs(status, rec, table_sha256, origin, this_boot=True):
    """None if a record of `status` with fields `rec` proves that the blobs
    of the file (os.stat_result `origin`, its T section hashing to
    table_sha256; this_boot: written_this_boot of it) are the ones the
    transcoder checked; else why not."""
    from . import snapshot
    if status != "valid":
        return "no valid record"
    if rec.get("files") != "OK":
        return "the transcoder found files that do not match their digests"
    if rec.get("table-sha256") is None or rec.get("file") is None:
        return "the record does not bind the blobs (made by an older rpmcow, or to a stream)"
    if rec["table-sha256"] != table_sha256:
        return "the T section is not the one the record was made with"
    ino, _, mtime = rec["file"].partition(":")
    if rec["file"] == NO_FILE:
        return "the record was made for a stream, not for this file"
    if not (ino.isdigit() and mtime.isdigit()) or int(ino) != origin.st_ino:
        return "the record belongs to another file (a copy?)"
    if int(mtime) != origin.st_mtime_ns or \
            not -CLOCK_TICK_NS <= origin.st_ctime_ns - origin.st_mtime_ns <= CTIME_SLACK_NS:
        return "the file was changed, moved or had its attributes changed since it was written"
    if not snapshot.private(origin):
        return "the file can be changed by someone other than root"
    if not this_boot:
        return "the file was written before this boot (a crash may have lost some of its blocks)"
    return None


RECORD_PROBLEMS = {
    "missing": "NOTTRUSTED (no rpmcow record, made by another tool: check with --files)",
    "foreign": "BAD (the record belongs to another package)",
    "altered": "BAD (the record was altered)",
    "unkeyed": "NOTTRUSTED (no key to check the record with)",
}


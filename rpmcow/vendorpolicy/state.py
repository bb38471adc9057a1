"""Persistent state of sticky-vendor: the toggle, pins, recorded switches, audit log.

Lives in one directory (``/var/lib/dnf/sticky-vendor`` inside the install
root by default):

    state.json   {"version": 1, "enforce": true|false|null, "pins": [...],
                  "switches": [...]}   -- replaced atomically (temp + rename)
    audit.log    one JSON object per line: when, who, uid, action, details
    .lock        flock()ed while state.json is read-modified-written

Who is ``SUDO_USER``, else ``LOGNAME``/``USER``, else the uid's name.
"""
import contextlib
import datetime
import fcntl
import json
import os
import pwd
import tempfile

from . import match
from .errors import StateError
from .policy import Pin

STATE_FILE = "state.json"
AUDIT_FILE = "audit.log"
LOCK_FILE = ".lock"
VERSION = 1


def who():
    """(name, uid) of the person behind this command."""
    uid = os.getuid()
    for var in ("SUDO_USER", "LOGNAME", "USER"):
        name = os.environ.get(var)
        if name:
            return name, uid
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write(path, data):
    """Write bytes to `path` via a temp file in the same directory + rename."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class State:
    def __init__(self, directory):
        self.dir = directory
        self.path = os.path.join(directory, STATE_FILE)
        self.audit_path = os.path.join(directory, AUDIT_FILE)
        self.data = self._empty()
        self.load()

    @staticmethod
    def _empty():
        return {"version": VERSION, "enforce": None, "pins": [], "switches": []}

    def load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            self.data = self._empty()
            return
        except (OSError, ValueError) as exc:
            raise StateError("%s: cannot read the sticky-vendor state: %s" % (self.path, exc)) \
                from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise StateError("%s: not a sticky-vendor state file of version %d"
                             % (self.path, VERSION))
        base = self._empty()
        base.update(data)
        self.data = base

    # -- reading --
    @property
    def enforce(self):
        return self.data.get("enforce")

    @property
    def pins(self):
        return list(self.data.get("pins", []))

    def pin_objects(self):
        out = []
        for p in self.pins:
            out.append(Pin(match.glob_list_matcher([p["package"]]), p["package"],
                           p.get("vendor"), p.get("repo"),
                           "%s (dnf vendor pin, %s by %s)" % (self.path, p.get("when", "?"),
                                                              p.get("who", "?"))))
        return out

    def audit_entries(self, last=None):
        try:
            with open(self.audit_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines[-last:] if last else lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # -- changing (each change: locked, atomic, audited) --
    @contextlib.contextmanager
    def _locked(self):
        try:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(os.path.join(self.dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError("%s: cannot create the state directory: %s" % (self.dir, exc)) \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.load()
            yield
        finally:
            os.close(fd)

    def _save(self):
        try:
            atomic_write(self.path, (json.dumps(self.data, indent=1, sort_keys=True) + "\n")
                         .encode())
        except OSError as exc:
            raise StateError("%s: cannot write: %s" % (self.path, exc)) from None

    def audit(self, action, **details):
        name, uid = who()
        entry = {"when": now(), "who": name, "uid": uid, "action": action}
        entry.update(details)
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError("%s: cannot write the audit log: %s" % (self.audit_path, exc)) \
                from None
        return entry

    def set_enforce(self, value):
        with self._locked():
            old = self.data.get("enforce")
            self.data["enforce"] = bool(value)
            self._save()
        return self.audit("enable" if value else "disable", previous=old)

    def pin(self, package, vendor=None, repo=None):
        name, _ = who()
        with self._locked():
            pins = [p for p in self.data["pins"] if p["package"] != package]
            entry = {"package": package, "when": now(), "who": name}
            if repo is not None:
                entry["repo"] = repo
            else:
                entry["vendor"] = vendor
            pins.insert(0, entry)
            replaced = len(pins) == len(self.data["pins"])
            self.data["pins"] = pins
            self._save()
        details = {"package": package, "replaced": replaced}
        details.update({"repo": repo} if repo is not None else {"vendor": vendor})
        return self.audit("pin", **details)

    def unpin(self, package):
        with self._locked():
            before = self.data["pins"]
            removed = [p for p in before if p["package"] == package]
            self.data["pins"] = [p for p in before if p["package"] != package]
            if removed:
                self._save()
        if removed:
            self.audit("unpin", package=package, was=removed[0])
        return removed

    def record_switch(self, changes, transaction_id=None):
        """changes: [{"package", "from_vendor", "to_vendor", "from", "to"}]."""
        name, _ = who()
        with self._locked():
            self.data["switches"].append({"when": now(), "who": name, "changes": changes,
                                          "transaction": transaction_id})
            self._save()
        return self.audit("switch", changes=changes, transaction=transaction_id)

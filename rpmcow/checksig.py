"""``rpmcow checksig``: ``rpmkeys -K``/``-Kv`` for plain packages and extents files.

Plain packages go to rpmkeys itself.  For an extents file the header items
are checked again, now, against the current keyring (cheap: the header is
all it reads); the payload items come from the stored verdict, and count only
if its record is valid: bound to this header and MACed with this root's key.
A legacy header+payload signature that said NOKEY at transcode time is
judged by the header signature of the same key: the payload it covers was
verified then (its digest is in the signed header).  With ``files=True``
every blob is hashed against the header's file digests as well, which is
also how an extents file without a valid record can still be trusted.

``evaluate`` is shared with the installer, which enforces the policy.
"""
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

from . import extents, native, package, record, verify
from .errors import RpmcowError, VerificationError
from .verify import Item

_KEYID = re.compile(r"key ID ([0-9a-f]+)")


@dataclass
class Evaluation:
    items: list
    record: str           # check_record status
    prologue: object = field(default=None, repr=False)
    package: object = None   # the parsed package, if the evaluation needed it
    sections: object = field(default=None, repr=False)
    hashed: bool = False     # every blob was hashed against the header
    unvouched: str = None    # why the record did not vouch for the blobs

    @property
    def nevra(self):
        return _nevra(self.prologue, self.package)


def _refresh_legacy(it, fresh):
    if not (it.is_signature and it.result in ("NOKEY", "NOTTRUSTED")):
        return it
    m = _KEYID.search(it.label)
    same = [f for f in fresh if f.is_signature and m and m.group(0) in f.label]
    if not same:
        return it
    return Item(it.label, same[0].result, same[0].detail)


def _file_digests_item(fd, pkg, sections):
    """Hash every blob the header's regular files point at."""
    ft = pkg.files
    algo = ft.algo.name.lower()
    bad = []
    for digest, size, flags in zip(ft.digests, ft.sizes, ft.flags):
        if not flags & ft.KEYED:
            continue
        off = sections.lookup(digest)
        h = hashlib.new(algo)
        left = size
        pos = off if off is not None else -1
        while off is not None and left > 0:
            chunk = os.pread(fd, min(left, 1 << 20), pos)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
            left -= len(chunk)
        if off is None or left or h.digest() != digest:
            bad.append(digest.hex())
    if bad:
        return Item("File digests", "BAD", "%d of the files do not match, first %s"
                    % (len(bad), bad[0][:16]))
    return Item("File digests", "OK")


def _check(fd, target, prologue, sections):
    """(prologue, sections, header items judged now, record status, stored
    items, record fields); rpmkeys runs while the sections and the record
    are read."""
    if prologue is None:
        os.lseek(fd, 0, os.SEEK_SET)
        prologue = native.Input(fd, []).read_prologue()
    check = verify.HeaderCheck(target, prologue)
    try:
        sections = sections or extents.read_sections(fd)
        status, stored, rec = record.check(sections.s_text, prologue.data,
                                           record.record_keys(target))
        fresh = check.header_items
    except BaseException:
        check.abort()
        raise
    return prologue, sections, fresh, status, stored, rec


def evaluate(fd, target, files=False, pkg=None, prologue=None, sections=None, origin=None):
    """Items for an extents file open at fd, judged now.  pkg: the parsed
    package, if the caller has it; prologue, sections: what the caller has
    read of the file already; origin: os.stat_result of the file the record
    must vouch for (default: fd's).  The blobs are hashed when asked to
    (files=True) and whenever the record does not vouch for them."""
    origin = origin or os.fstat(fd)
    return _evaluate(fd, files, pkg, origin, *_check(fd, target, prologue, sections))


def _evaluate(fd, files, pkg, origin, pro, sections, fresh, status, stored, rec,
              install=False):
    """The judgement: fresh header items; the stored payload items where the
    record is valid; and every blob hashed against the header when asked
    (files), or where the record does not vouch for the blobs of this very
    file -- for an install always, for a report (checksig) where the record
    is valid (a copy, or a changed file) or cannot be checked (no key): a
    missing or tampered record is reported as such there.  Without a valid
    record the stored items are not needed: the content is judged itself."""
    unvouched = record.vouches_for_blobs(status, rec, sections.t_sha256, origin)
    if unvouched is not None and (install or status in ("valid", "unkeyed")):
        files = True
    items = list(fresh)
    trusted = status == "valid"
    for it in stored:
        if it.header_only:
            continue
        if trusted:
            items.append(_refresh_legacy(it, fresh))
        elif not files:
            items.append(it)
    if not trusted and not files:
        label, _, rest = record.RECORD_PROBLEMS[status].partition(" ")
        items.append(Item("rpmcow record", label, rest.strip("()")))
    if files:
        pkg = pkg or package.parse(pro)
        items.append(_file_digests_item(fd, pkg, sections))
    ev = Evaluation(items, status, pro, pkg, sections)
    ev.hashed = files
    ev.unvouched = unvouched
    return ev


def _nevra(pro, pkg):
    return pkg.nevra if pkg else package.nevra(package.load_header(pro))


class InstallCheck:
    """``require_for_install`` in two steps.  The constructor reads the
    headers and the sections, starts rpmkeys on the headers in the
    background and checks the record; ``require`` waits for rpmkeys and
    judges.  In between the caller may parse the header (as the transcoder
    does while rpmkeys runs) -- but must not act on the package.

    fd: what is judged and then installed from -- a private snapshot
    (rpmcow.snapshot) wherever anyone else could change the file; origin:
    os.stat_result of the file itself, taken after the snapshot, for the
    record to vouch for (default: fd's)."""

    def __init__(self, fd, target, prologue=None, sections=None, origin=None):
        self.fd = fd
        self.origin = origin or os.fstat(fd)
        if prologue is None:
            os.lseek(fd, 0, os.SEEK_SET)
            prologue = native.Input(fd, []).read_prologue()
        self.prologue = prologue
        self._hcheck = verify.HeaderCheck(target, prologue)
        try:
            self.sections = sections or extents.read_sections(fd)
            self._status, self._stored, self._rec = record.check(
                self.sections.s_text, prologue.data, record.record_keys(target))
        except BaseException:
            self._hcheck.abort()
            raise

    def require(self, level, files=False, pkg=None):
        """Raise VerificationError unless the file satisfies `level`; returns
        the Evaluation (with the prologue and sections read, and the package
        if it was parsed here).  pkg: the parsed package, if the caller has it.

        Blobs are hashed against the signed header (as ``checksig --files``)
        when asked to, and whenever the record does not vouch for them
        (record.vouches_for_blobs: no valid record, or not this very file
        unchanged since the transcoder wrote it, or a file someone other
        than root could change); a mismatch fails at every level."""
        try:
            fresh = self._hcheck.header_items
        except BaseException:
            self._hcheck.abort()
            raise
        ev = _evaluate(self.fd, files, pkg, self.origin, self.prologue, self.sections, fresh,
                       self._status, self._stored, self._rec, install=True)
        failure = verify.policy_failure(ev.items, level)
        if failure:
            raise VerificationError("%s: %s (verification level %s)" % (ev.nevra, failure, level))
        return ev

    def abort(self):
        self._hcheck.abort()


def require_for_install(fd, target, level, files=False, pkg=None, prologue=None,
                        sections=None, origin=None):
    """Raise VerificationError unless the extents file satisfies `level`;
    returns the Evaluation (see InstallCheck.require)."""
    return InstallCheck(fd, target, prologue, sections, origin).require(level, files, pkg)


def summary(items):
    """rpmkeys -K's one-line form: 'digests signatures OK' and so on."""
    found = [i for i in items if i.result != "NOTFOUND"]
    digests = [i for i in found if not i.is_signature]
    sigs = [i for i in found if i.is_signature]
    words = []
    for name, group in (("digests", digests), ("signatures", sigs)):
        if group or name == "digests":
            words.append(name.upper() if any(i.result != "OK" for i in group) else name)
    ok = all(i.result == "OK" for i in found)
    return " ".join(words) + (" OK" if ok else " NOT OK")


def checksig(paths, target, verbose=False, files=False, out=None, err=None):
    """Check each path; returns the number that failed (rpmkeys' exit code)."""
    out = out or sys.stdout
    err = err or sys.stderr
    failed = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            print("rpmcow: cannot open %s: %s" % (path, exc.strerror), file=err)
            failed += 1
            continue
        try:
            if not extents.is_transcoded(fd):
                out.flush()
                r = subprocess.run(["rpmkeys", "-Kv" if verbose else "-K",
                                    *target.rpm_args(), path], stdout=subprocess.PIPE)
                out.write(r.stdout.decode("utf-8", "replace"))
                failed += r.returncode != 0
                continue
            ev = evaluate(fd, target, files=files)
            ev.nevra                # a header librpm cannot load is an error here
        except RpmcowError as exc:
            print("rpmcow: %s: %s" % (path, exc), file=err)
            failed += 1
            continue
        finally:
            os.close(fd)
        ok = all(i.result in ("OK", "NOTFOUND") for i in ev.items)
        if verbose:
            out.write("%s:\n" % path + "".join(i.line + "\n" for i in ev.items))
        else:
            out.write("%s: %s\n" % (path, summary(ev.items)))
        failed += not ok
    return min(failed, 255)



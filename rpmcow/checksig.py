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
import os
import re
import sys

from . import extents, inputs, native, package, record, rpmconfig, verify
from .errors import RpmcowError
from .verify import Item

# rpm 4: "key ID <8 hex>"; rpm 6: "key ID <16 hex>" (NOKEY), or ", key
# fingerprint: <40 or 64 hex>" where the key was found (lib/rpmvs.cc rpmsinfoMsg)
_KEYID = re.compile(r"key ID ([0-9a-f]+)")
_FINGERPRINT = re.compile(r", key fingerprint: ([0-9a-f]+)$")


def _key_of(label):
    m = _KEYID.search(label) or _FINGERPRINT.search(label)
    return m.group(1) if m else None


class Evaluation:
    """What evaluate() found (a plain class: see install._Fields)."""
    record = None            # check_record status
    prologue = None
    package = None           # the parsed package, if the evaluation needed it
    sections = None
    hashed = False           # every blob was hashed against the header
    unvouched = None         # why the record did not vouch for the blobs

    def __init__(self, items, record, prologue=None, package=None, sections=None):
        self.items = items
        self.record = record
        self.prologue = prologue
        self.package = package
        self.sections = sections
        # {PGPHASHALGO: hex} of the original package, from a valid record only
        self.package_digests = {}

    @property
    def nevra(self):
        return _nevra(self.prologue, self.package)


def _refresh_legacy(it, fresh):
    if not (it.is_signature and it.result in ("NOKEY", "NOTTRUSTED")):
        return it
    key = _key_of(it.label)
    same = [f for f in fresh if f.is_signature and key and _key_of(f.label)
            and (_key_of(f.label).endswith(key) or key.endswith(_key_of(f.label)))]
    if not same:
        return it
    label, fpr = it.label, _FINGERPRINT.search(same[0].label)
    if fpr and ", key ID " in label:     # as rpm 6 names a key it found
        label = label.split(", key ID ", 1)[0] + fpr.group(0)
    return Item(label, same[0].result, same[0].detail)


def _file_digests_item(fd, pkg, sections):
    """Hash every blob the header's regular files point at."""
    import hashlib
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


def read_prologue(fd):
    """The lead and headers of the extents file at fd (read from its start)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return native.Input(fd, []).read_prologue()


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
    unvouched = record.vouches_for_blobs(status, rec, sections.t_sha256, origin,
                                         record.written_this_boot(fd))
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
    if trusted:
        ev.package_digests = record.package_digests(rec)
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
    record to vouch for (default: fd's).  hcheck: the header check of
    `prologue` already under way (verify.HeaderChecks.of: one rpmkeys for
    many packages); by default one is started here."""

    def __init__(self, fd, target, prologue=None, sections=None, origin=None, hcheck=None):
        self.fd = fd
        self.origin = origin or os.fstat(fd)
        if prologue is None:
            prologue = read_prologue(fd)
        self.prologue = prologue
        self._hcheck = hcheck or verify.HeaderCheck(target, prologue)
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
            raise verify.refusal(ev.nevra, failure, level)
        return ev

    def abort(self):
        self._hcheck.abort()


def require_for_install(fd, target, level, files=False, pkg=None, prologue=None,
                        sections=None, origin=None):
    """Raise VerificationError unless the extents file satisfies `level`;
    returns the Evaluation (see InstallCheck.require)."""
    return InstallCheck(fd, target, prologue, sections, origin).require(level, files, pkg)


_OWN_ITEMS = ("rpmcow record", "File digests")     # ours, not rpmkeys'


def outcome(items):
    """(bad, failed) as ``rpmkeys -K`` concludes from these items
    (verify.rpmkeys_outcome: the rules of this host's librpm, at its
    %_pkgverify_level); an item of rpmcow's own (the record, the files)
    that is not OK is a bad digest and fails; the files found OK verify the
    payload (as its digest would)."""
    theirs = [i for i in items if i.label not in _OWN_ITEMS]
    if any(i.label == "File digests" and i.result == "OK" for i in items):
        # every file checked against the header: the payload is verified
        theirs.append(Item("Payload file digests", "OK"))
    bad, failed = verify.rpmkeys_outcome(theirs, rpmconfig.rpmkeys_verify_level())
    if any(i.result != "OK" for i in items if i.label in _OWN_ITEMS):
        bad, failed = bad | {verify.DIGEST}, True
    return bad, failed


def summary(items):
    """rpmkeys -K's one-line form: 'digests signatures OK' and so on."""
    bad, failed = outcome(items)
    words = []
    for name, kind in (("digests", verify.DIGEST), ("signatures", verify.SIGNATURE)):
        seen = any((i.is_signature) == (kind == verify.SIGNATURE) for i in items)
        if seen or name == "digests":
            words.append(name.upper() if kind in bad else name)
    return " ".join(words) + (" NOT OK" if failed else " OK")


def checksig(paths, target, verbose=False, files=False, out=None, err=None, as_json=False):
    """Check each path; returns the number that failed (rpmkeys' exit code).
    Plain packages are judged by rpmkeys (through the descriptor opened
    here, like every rpmkeys run of rpmcow: verify.check_fd), extents files
    by evaluate(); the output is rpmkeys -K's (-Kv's with verbose), or, with
    as_json, one JSON list of {path, kind, ok, items, note}."""
    out = out or sys.stdout
    err = err or sys.stderr
    failed = 0
    results = []
    for path in paths:
        note = None
        try:
            fd = inputs.open_file(path)
        except RpmcowError as exc:
            print("rpmcow: %s" % exc, file=err)
            failed += 1
            results.append({"path": path, "error": str(exc), "ok": False})
            continue
        try:
            kind = inputs.kind(fd, path)
            if kind != inputs.EXTENTS:
                items = verify.check_fd(target, fd)
            else:
                ev = evaluate(fd, target, files=files)
                ev.nevra                # a header librpm cannot load is an error here
                items = ev.items
                if ev.hashed and not files and ev.record == "unkeyed":
                    note = ("the record cannot be checked without the root's record key (%s): "
                            "every file was hashed against the signed header instead"
                            % record.KEY_PATH)
        except RpmcowError as exc:
            msg = str(inputs.named(path, exc))
            print("rpmcow: %s" % msg, file=err)
            failed += 1
            results.append({"path": path, "error": msg, "ok": False})
            continue
        finally:
            os.close(fd)
        ok = not outcome(items)[1]
        failed += not ok
        if as_json:
            results.append({"path": path, "kind": kind or inputs.PACKAGE, "ok": ok,
                            "summary": summary(items), "note": note,
                            "items": [{"item": i.label, "result": i.result, "detail": i.detail}
                                      for i in items]})
            continue
        if note:
            print("rpmcow: %s: %s" % (path, note), file=err)
        if verbose:
            out.write("%s:\n" % path + "".join(i.line + "\n" for i in items))
        else:
            out.write("%s: %s\n" % (path, summary(items)))
    if as_json:
        import json
        json.dump(results, out, indent=2, sort_keys=True)
        out.write("\n")
    return min(failed, 255)

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

The verdict is stored in the S section with a record that binds it to the
headers and to this machine (``rpmcow.record``).
"""
import os
import re
from collections import namedtuple

from .errors import VerificationError
from .rpmkeys import Rpmkeys

# Every transcode starts a HeaderCheck first, and only then imports the rest
# of what it needs while rpmkeys runs: so this module stays cheap to import
# (no dataclasses, no subprocess; tempfile only where a rare path needs it).

RC_OK = 0
RC_FAIL = 2
RECORD_PREFIX = "    rpmcow record: "     # the S text's last line (rpmcow.record)
# rpm 6 names the header+payload range "Legacy" (rpmvs.cc: rangeName)
_MD5_LABELS = ("MD5 digest", "Legacy MD5 digest")

_LINE = re.compile(r"^    (?P<label>.*?): (?P<result>OK|BAD|NOKEY|NOTTRUSTED|NOTFOUND|UNKNOWN)"
                   r"(?: \((?P<detail>.*)\))?$")


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
    def is_legacy_md5(self):
        """The header+payload MD5: "MD5 digest" (rpm 4), "Legacy MD5 digest" (rpm 6)."""
        return self.label in _MD5_LABELS

    @property
    def line(self):
        return "    %s: %s%s" % (self.label, self.result,
                                 " (%s)" % self.detail if self.detail else "")

    @property
    def reason(self):
        """The item on one line, for a message: a detail over several lines
        (rpm 6's OpenPGP errors) has its lines joined, their indentation
        dropped."""
        return " ".join(part.strip() for part in self.line.splitlines() if part.strip())


# rpm 6's OpenPGP messages (rpm-sequoia's) run over several lines:
# "    Header OpenPGP RSA signature: BAD (package tag 268: invalid OpenPGP
# signature: Parsing an OpenPGP packet:\n  Failed to parse ...\n ... (0))"
_OPENED = re.compile(r"^    (?P<label>.*?): (?P<result>OK|BAD|NOKEY|NOTTRUSTED|NOTFOUND|UNKNOWN)"
                     r" \((?P<detail>.*)$")


def _closes(detail):
    """Whether a detail (the text after its opening parenthesis) ends with
    the parenthesis closing it."""
    depth = 0
    for c in detail:
        depth += (c == "(") - (c == ")")
    return depth < 0 and detail.endswith(")")


def parse_items(text):
    """Items from ``rpmkeys -Kv`` output (or an S section's text).  A detail
    over several lines is kept whole (its lines joined with newlines) up to
    its closing parenthesis, or up to the next item's line (four spaces,
    then text; rpm's continuation lines are indented otherwise)."""
    items = []
    pending = None                        # [label, result, detail lines] of an open item
    for line in text.splitlines():
        starts = line[:4] == "    " and line[4:5] not in ("", " ", "\t")
        if pending is not None:
            if not starts:
                pending[2].append(line)
                detail = "\n".join(pending[2])
                if _closes(detail):
                    items.append(Item(pending[0], pending[1], detail[:-1]))
                    pending = None
                continue
            items.append(Item(pending[0], pending[1], "\n".join(pending[2])))   # never closed
            pending = None
        if not starts or line.startswith(RECORD_PREFIX):
            continue
        m = _LINE.match(line)
        if m:
            items.append(Item(m["label"], m["result"], m["detail"] or ""))
            continue
        m = _OPENED.match(line)
        if m:
            pending = [m["label"], m["result"], [m["detail"]]]
    if pending is not None:
        items.append(Item(pending[0], pending[1], "\n".join(pending[2])))
    return items


def policy_failure(items, level, header_only=False):
    """The first reason `items` do not satisfy %_pkgverify_level `level`,
    or None.  header_only: judge only what a header check can show.

    A BAD item fails at every level, `none` included, as in rpm: the level
    says what must be *present* (a digest, a signature); rpm's verification
    of a package refuses anything that is there and wrong, and its unpacking
    refuses a file whose content does not match its digest."""
    for it in items:
        if it.result == "BAD":
            return it.reason
    if level == "none":
        return None
    digests_ok = [it for it in items if not it.is_signature and it.result == "OK"]
    sigs = [it for it in items if it.is_signature]
    if level in ("digest", "all") and not header_only:
        # digests that cover the payload (and the legacy MD5, which also
        # covers the header) are only known after the full check
        if not any(it.header_only or it.is_legacy_md5 for it in digests_ok):
            return "no header digest verified"
        if not any(it.covers_payload for it in digests_ok):
            return "no payload digest verified"
    if level in ("signature", "all"):
        if not any(it.result == "OK" for it in sigs):
            if header_only and any(it.covers_payload for it in sigs) \
                    and not any(it.header_only for it in sigs):
                return None    # only a header+payload signature: judged later
            bad = [it for it in sigs if it.result != "NOTFOUND"]
            return bad[0].reason if bad else "package is not signed"
    return None


def refusal(what, failure, level):
    """The VerificationError for `what` (a NEVRA or a path) failing `level`
    with `failure` (policy_failure's reason), saying how to fix what can be
    fixed: a missing key, a level the package cannot meet."""
    msg = "%s: %s (verification level %s)" % (what, failure, level)
    if "NOKEY" in failure:
        msg += ("; import the signing key into the target root's keyring "
                "('rpmkeys --import KEYFILE', with --root for another root), or accept "
                "unverified signatures with --verify-level digest")
    elif "NOTTRUSTED" in failure or "not signed" in failure:
        msg += "; --verify-level digest accepts packages without a trusted signature"
    return VerificationError(msg)


def header_digests_ok(header_items):
    """Whether rpmkeys verified the header's digests and found none bad."""
    digests = [it for it in header_items if not it.is_signature and it.result != "NOTFOUND"]
    return bool(digests) and all(it.result == "OK" for it in digests)



# The header check has rpmkeys skip the legacy MD5.  It covers header and
# payload, so on the headers alone it can only come out BAD, and hashing the
# (megabytes of) header for it took a quarter of rpmkeys' time, on the
# critical path of every transcode.  RPMVSF_NOMD5 is added to the host's own
# %_pkgverify_flags (every other flag stays as the host has it), and rpmkeys
# prints those flags first: where the host checks the MD5, the C input stage
# computes it over header + payload and PayloadPlan expects the value of the
# signature header's MD5 tag.
_RPMVSF_NOMD5 = 1 << 17
_SKIP_MD5 = ("%%{lua: local f = tonumber(rpm.expand('%%{?_pkgverify_flags}')) or 0 "
             "print('rpmcow-host-vsflags ' .. f) "
             "if math.floor(f / %d) %% 2 == 0 then "
             "rpm.define('_pkgverify_flags ' .. (f + %d)) end}" % (_RPMVSF_NOMD5, _RPMVSF_NOMD5))
_HOST_FLAGS = re.compile(r"^rpmcow-host-vsflags (\d+)$", re.M)


class HeaderCheck(Rpmkeys):
    """rpmkeys -Kv on lead + signature header + header alone, running in the
    background from construction until ``wait``.

    prologue: a native.Prologue (rpmkeys reads its memory file), or the
    bytes of one; or None, to start rpmkeys before the prologue has been
    read: it starts up (loads, reads its configuration and the keyring's
    database path) meanwhile, and provide() gives it the prologue."""

    TIMEOUT = 120       # seconds; a header check takes milliseconds

    def __init__(self, target, prologue=None):
        self.items = None
        self.md5_skipped = False
        if prologue is None:
            super().__init__(target, None, ["--eval", _SKIP_MD5])
            return
        from .native import open_prologue
        stdin = open_prologue(prologue)
        try:
            super().__init__(target, stdin, ["--eval", _SKIP_MD5])
        finally:
            os.close(stdin)

    def provide(self, prologue):
        """The prologue's bytes, for a check started without them: written
        to rpmkeys by a C thread, so that the caller goes on while rpmkeys
        may still be starting up."""
        from .native import BackgroundWrite
        feeder = BackgroundWrite.start(self._w, prologue)
        if feeder is None:                      # no thread to be had: write it here
            self.feed(prologue)
            self._close_pipe()
        else:
            self._w, self._feeder = -1, feeder  # the feeder's to close

    def wait(self):
        """Every item rpmkeys printed (payload items judged on no payload)."""
        if self.items is None:
            if not self._exited(self.TIMEOUT):
                self.abort()
                raise VerificationError("cannot run rpmkeys: no verdict after %d s"
                                        % self.TIMEOUT)
            _, out, err = self._finish()
            self.items = parse_items(out)
            flags = _HOST_FLAGS.search(out)
            self.md5_skipped = bool(flags) and not int(flags[1]) & _RPMVSF_NOMD5
            if not any(it.header_only for it in self.items):
                raise VerificationError("rpmkeys could not read the package header: %s"
                                        % err.strip())
        return self.items

    @property
    def header_items(self):
        return [it for it in self.wait() if it.header_only]


class HeaderChecks:
    """HeaderCheck for many packages by one rpmkeys.  Its start -- loading,
    reading its configuration, opening the keyring -- is most of a header
    check's ~40 ms, and a dnf transaction judges an extents file for every
    package it installs.  Each prologue is a memory file rpmkeys reads as
    /dev/fd/N (the same bytes as HeaderCheck's pipe: what is judged is what
    is installed).  The report is split at those names, which must each
    come once, in the order given: otherwise none of it is believed, and
    every package's check fails (VerificationError), to go the stock way.
    Up to LIMIT packages a process, the processes started at once;
    ``of(i)`` is package i's check, with HeaderCheck's wait, header_items,
    md5_skipped and abort (the owner ends them all: ``close``)."""

    LIMIT = 64

    def __init__(self, target, prologues):
        self._runs = []
        try:
            for at in range(0, len(prologues), self.LIMIT):
                self._runs.append(_HeaderRun(target, prologues[at:at + self.LIMIT]))
        except BaseException:
            self.close()
            raise

    def of(self, i):
        return _OneHeaderCheck(self._runs[i // self.LIMIT], i % self.LIMIT)

    def close(self):
        """End the runs (rpmkeys is stopped where it has not finished)."""
        for run in self._runs:
            run.close()


class _HeaderRun:
    """One rpmkeys of a HeaderChecks: up to LIMIT prologues."""

    _NAME = re.compile(r"^/dev/fd/\d+:$")

    def __init__(self, target, prologues):
        import threading
        from .native import open_prologue
        self._lock = threading.Lock()     # packages may be judged on several threads
        self._fds = []
        self._run = None
        self._sections = self._error = None
        self._stderr = ""
        self.md5_skipped = False
        try:
            for p in prologues:
                self._fds.append(open_prologue(p))
            self._names = ["/dev/fd/%d" % fd for fd in self._fds]
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self._run = Rpmkeys(target, null, ["--eval", _SKIP_MD5], files=self._names,
                                    pass_fds=self._fds)
            finally:
                os.close(null)
        finally:
            self._close_fds()       # the child has its own (posix_spawn returns after exec)

    def _close_fds(self):
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def _report(self):
        """[section text or None] per package, once rpmkeys is done."""
        with self._lock:
            return self._report_locked()

    def _report_locked(self):
        if self._sections is None and self._error is None:
            run, self._run = self._run, None
            if not run._exited(HeaderCheck.TIMEOUT):
                run.abort()
                self._error = "cannot run rpmkeys: no verdict after %d s" % HeaderCheck.TIMEOUT
            else:
                _, out, self._stderr = run._finish()
                flags = _HOST_FLAGS.search(out)
                self.md5_skipped = bool(flags) and not int(flags[1]) & _RPMVSF_NOMD5
                try:
                    self._sections = split_report(out, self._names)
                except VerificationError as exc:
                    self._error = str(exc)
        if self._error is not None:
            raise VerificationError(self._error)
        return self._sections

    def _items(self, i):
        section = self._report()[i]
        items = parse_items(section or "")
        if not any(it.header_only for it in items):
            said = [line for line in self._stderr.splitlines() if self._names[i] + ":" in line]
            raise VerificationError("rpmkeys could not read the package header: %s"
                                    % "; ".join(said).replace(self._names[i] + ": ", ""))
        return items

    def close(self):
        """End the run (rpmkeys is stopped if it has not finished)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self):
        if self._run is not None:
            self._run.abort()
            self._run = None
            if self._sections is None and self._error is None:
                self._error = "the header check was stopped"
        self._close_fds()


class _OneHeaderCheck:
    """One package's part of a HeaderChecks run."""

    def __init__(self, run, i):
        self._run, self._i = run, i
        self._items = None

    def wait(self):
        if self._items is None:
            self._items = self._run._items(self._i)
        return self._items

    @property
    def header_items(self):
        return [it for it in self.wait() if it.header_only]

    @property
    def md5_skipped(self):
        self.wait()
        return self._run.md5_skipped

    def abort(self):
        """(the run is the owner's to close)"""


def split_report(out, names):
    """rpmkeys -Kv's report on the files `names`, split into one text per
    file (None where it printed no section).  Every line naming a file
    (/dev/fd/N:) must be the next name asked for: a name out of place, or
    twice, means the report cannot be told apart, and nothing of it is
    taken (VerificationError)."""
    sections = [None] * len(names)
    k, lines = -1, []
    for line in out.splitlines():
        if _HeaderRun._NAME.match(line):
            if k + 1 >= len(names) or line != names[k + 1] + ":":
                raise VerificationError("rpmkeys' report on %d packages names them out of "
                                        "order: %r" % (len(names), line))
            if k >= 0:
                sections[k] = "\n".join(lines)
            k, lines = k + 1, []
        elif k >= 0:
            lines.append(line)
    if k >= 0:
        sections[k] = "\n".join(lines)
    return sections


# ---- payload items, computed by the C input stage --------------------------

# rpm 4: SHA256 (PAYLOADDIGESTALGO's); rpm 6: SHA256, SHA512, SHA3-256, each with an ALT
_PAYLOAD_DIGEST = re.compile(r"^Payload (?P<algo>[A-Z0-9-]+)(?P<alt> ALT)? digest$")
_EXPECTED = re.compile(r"^Expected (?P<want>[0-9a-fA-F]+) != [0-9a-fA-F]*$")
_DIG, _SIG = 1, 2                   # rpmvs item types
DIGEST, SIGNATURE = _DIG, _SIG
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
    items, judged from the prologue-only rpmkeys run (and sigmd5, the
    signature header's MD5, where that run skipped it).

    digests: {label: (algorithm name, "payload" | "header+payload")}.
    full_check: True if some item needs rpmkeys itself over the whole
    package (a legacy header+payload signature, or anything unexpected).
    """

    def __init__(self, items, sigmd5=None):
        self.items = list(items)
        self.digests = {}
        self.expected = {}
        self.full_check = False
        if sigmd5 is not None:
            self._plan_md5(sigmd5)
        for it in self.items:
            if it.header_only or it.result == "NOTFOUND" or it.label in self.digests:
                continue
            m = _PAYLOAD_DIGEST.match(it.label)
            if m:
                what = (m["algo"], "payload")
            elif it.is_legacy_md5:
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

    def _plan_md5(self, sigmd5):
        """The MD5 item where the header check skipped it (HeaderCheck.md5_skipped):
        rpmkeys lists it in its place, NOTFOUND (or not at all); its expected
        value is the signature header's MD5 tag, sigmd5."""
        if len(sigmd5) != 16:
            self.full_check = True          # rpmkeys judges a malformed tag itself
            return
        where = [i for i, it in enumerate(self.items) if it.is_legacy_md5]
        if where:
            label = self.items[where[0]].label
            self.items[where[0]] = Item(label, "NOTFOUND")
        else:       # rpm >= 6.1 lists no disabled item; the legacy range sorts last
            label = _legacy_md5_label()
            self.items.append(Item(label, "NOTFOUND"))
        self.digests[label] = ("MD5", "header+payload")
        self.expected[label] = sigmd5.hex()


def _legacy_md5_label():
    """What this librpm calls the header+payload MD5 item (rpm 6 names that
    range "Legacy": lib/rpmvs.cc rangeName; rpm 4 leaves it unnamed)."""
    import rpm
    try:
        major = int(str(rpm.__version_info__[0]))
    except (AttributeError, IndexError, ValueError):
        major = 4
    return _MD5_LABELS[1] if major >= 6 else _MD5_LABELS[0]


def _rpm_version():
    import rpm
    try:
        return tuple(int(str(x)) for x in rpm.__version_info__[:3])
    except (AttributeError, TypeError, ValueError):
        return (4, 0, 0)


def rpmkeys_outcome(items, level):
    """What ``rpmkeys -K`` concludes from the items it printed, at
    %_pkgverify_level `level`: (bad, failed).  bad: the item types (_DIG,
    _SIG) its one-line form writes in capitals ("DIGESTS", "SIGNATURES");
    failed: whether it exits non-zero ("NOT OK").  librpm's rules changed
    twice (lib/rpmvs.cc rpmvsVerify, lib/rpmchecksig.cc):

    * rpm 4 and 6.0.0: any printed item not OK fails, and is bad;
    * 6.0.1: NOTTRUSTED is neither a success nor a failure (NOTFOUND still
      fails); at least one item must be OK.  Bad: as before;
    * 6.1: only BAD and NOKEY fail, and at a level above none the whole
      package (header and payload) must be covered by verified digests
      (digest) or signatures (signature; also wherever a signature
      verified).  Bad: the failed types."""
    items = reported(items, level)         # e.g. a header check's NOTFOUND, covered by the MD5
    notok = {_type(it) for it in items if it.result != "OK"}
    version = _rpm_version()
    if version < (6, 0, 1):
        return notok, bool(notok)
    if version < (6, 1, 0):
        success = sum(it.result == "OK" for it in items)
        failures = sum(it.result in ("BAD", "NOKEY", "NOTFOUND") for it in items)
        return notok, not (success >= 1 and failures == 0)
    failed = {_type(it) for it in items if it.result in ("BAD", "NOKEY")}
    verified = {_DIG: 0, _SIG: 0}
    for it in items:
        if it.result == "OK":
            verified[_type(it)] |= _range(it)
            # digests inside a header whose signature verified count as signed
            if it.label.startswith("Payload ") and verified[_SIG] & _HEADER:
                verified[_SIG] |= _range(it)
    level_bits = _LEVEL_BITS.get(level, _DIG)
    # at level none the range is that of the items (those not printed --
    # NOTFOUND, not required -- are not known here)
    whole = (_HEADER | _PAYLOAD) if level_bits else 0
    for it in items:
        whole |= _range(it)
    vfylevel = level_bits | (_SIG if verified[_SIG] else 0)
    for kind in (_DIG, _SIG):
        if vfylevel & kind and verified[kind] != whole:
            failed.add(kind)
    return failed, bool(failed)


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
    return reported(judged, level)


def reported(judged, level):
    """Of every item judged, those ``rpmkeys -Kv`` prints, as it prints them
    (rpmvsVerify's rules): a failed payload digest whose alternative
    verified is NOTFOUND; a NOTFOUND item only where its range is not
    otherwise verified as the level requires.  Items rpmkeys printed come
    out unchanged."""
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


def check_fd(target, fd):
    """Every item ``rpmkeys -Kv`` reports for the whole package read from fd
    (from its start; the offset moves): the bytes judged are those of that
    descriptor, not of whatever a path names later."""
    os.lseek(fd, 0, os.SEEK_SET)
    rc, out, err = Rpmkeys(target, stdin=fd)._finish()
    items = parse_items(out)
    if not items:
        raise VerificationError("rpmkeys could not read the package: %s"
                                % (err.strip() or "exit code %d" % rc))
    return items


class Check(Rpmkeys):
    """A running rpmkeys that reads the whole original package from a pipe
    (``fd``: the input stage tees the package into it; feed() writes too)."""

    @property
    def fd(self):
        return self._w

    def finish(self):
        """(rpmkeys exit code, items)."""
        rc, out, err = self._finish()
        items = parse_items(out)
        if not items:
            raise VerificationError("rpmkeys could not verify the package: %s" % err.strip())
        return rc, items


"""``rpmcow install``: ``rpm -i``/``-U`` for extents files, on stock rpm.

A real rpm transaction through librpm's Python bindings -- dependencies,
ordering, scriptlets, triggers, file triggers, config files and the rpmdb
all stay rpm's.  For an extents file rpm is handed a cheap payload
(rpmcow.feeder) and the ``cow`` plugin clones file data from the extents
file; plain .rpm files in the same transaction install the stock way.

Verification: the effective %_pkgverify_level is enforced before rpm runs,
for extents files by their verdict (rpmcow.checksig), for plain packages by
rpmkeys.  What is judged is exactly what is installed: each package is
opened once, and a file anyone but root could change is first taken as a
private snapshot (rpmcow.snapshot); rpmkeys, librpm, the blob check, the
feed and the plugin all read that one descriptor, never the path again.
rpm itself then checks every header again.  Where extents files are in the
transaction it is told not to read payload digests or file digests (flags
that are transaction-wide), which the fed payload does not match; the plain
packages beside them then had their payload digest judged by rpmkeys on the
very bytes rpm reads, and the plugin checks every file rpm writes for them
against its header digest, as rpm would have (``_rpmcow_verify``).

rpm 6 records digests of each package file it reads in its database
(RPMTAG_PACKAGEDIGESTS): for a feed, the installer withholds
%_pkgverify_digests while rpm reads it and the plugin puts the original
package's digests instead, from the transcoder's record where it is valid
(none where it is not: never digests of the feed); a plain package beside
extents files gets its own, computed here (rpm's pass that would record
them does not run then).

The plugin clones on a thread of its own where it may (rpmplugin.worker_ok):
each such package's feed then withholds the archive's trailer until the
progress callback, once rpm has read the last entry's header, has waited
for the plugin's work and found it done (feeder.Stream).
"""
import contextlib
import os

import rpm

from . import (checksig, extents, feeder, inputs, rpmconfig, rpmplugin, snapshot, tailstore,
               verify)
from .errors import RpmcowError


class InstallError(RpmcowError):
    """rpm refused or failed the transaction."""


class _Fields:
    """Keyword fields over class defaults -- a plain class, not a dataclass:
    dataclasses (through inspect) costs ~13 ms to import, on every install's
    start before rpm runs (caches dropped: more)."""

    def __init__(self, **fields):
        for name, value in fields.items():
            if name.startswith("_") or not hasattr(type(self), name):
                raise TypeError("%s has no field %r" % (type(self).__name__, name))
            setattr(self, name, value)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (k, v) for k, v in sorted(vars(self).items())))


class Options(_Fields):
    root = "/"
    dbpath = None
    upgrade = False
    nodeps = False
    noscripts = False
    notriggers = False
    test = False
    replacepkgs = False
    replacefiles = False
    oldpackage = False
    excludedocs = False
    level = None                 # override of %_pkgverify_level
    verify_files = False         # hash every blob even when the verdict is trusted
    block_size = None            # feed granularity (default: the root fs's)
    share_tails = None           # a tail store (rpmcow.tailstore): image builds
    # report(event, nevra, amount, total): "start" when rpm begins to unpack a
    # package, "progress" as it does (amount of total archive bytes)
    report = None


class Result(_Fields):
    shared_bytes = 0             # file data cloned by the plugin
    copied_bytes = 0             # file data the plugin had to copy

    def __init__(self, **fields):
        self.cow = []            # NEVRAs installed from extents files
        self.plain = []          # NEVRAs installed the stock way
        # per extents file, what the plugin did: {NEVRA: rpmplugin.PackageResult}
        self.plugin = {}
        super().__init__(**fields)


class _Package:
    """One package of the transaction: its fd and how rpm gets a payload."""

    def __init__(self, path):
        self.path = path
        self.nevra = path               # until the header is read
        fd = inputs.open_file(path)
        try:
            inputs.kind(fd, path)        # a clear error for what is no package
            self.snap = snapshot.take(fd, path)
        except OSError as exc:
            os.close(fd)
            raise RpmcowError("%s: cannot take a private copy to check and install: %s"
                              % (path, exc.strerror)) from None
        except BaseException:
            os.close(fd)
            raise
        self._orig_fd = fd
        self.fd = self.snap.fd          # what is judged, fed and cloned from
        self.feed = None
        self.blk = 0
        self.gated = False           # the plugin works on its thread: gate the feed
        self.plugin = None           # the rpmplugin.Activation (drain(), feeding())
        self.package_digests = {}    # of the original package file (rpm 6 records them)
        self.header = None
        self.stream = None
        self.gate_at = feeder.NO_GATE
        self._open = []

    @property
    def is_extents(self):
        return self.feed is not None

    def open_payload(self):
        if self.plugin is not None:
            self.plugin.feeding(self.feed is not None)
        if self.feed is None:
            fd = os.dup(self.fd)
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            self.stream = self.feed.open_stream(self.blk, gated=self.gated)
            self.gate_at = self.stream.gate_at
            fd = self.stream.fd
        self._open.append(fd)
        return fd

    def release_gate(self):
        """rpm has read the last entry's header: the plugin's work on every
        file before it must be done, or the stream is cut short.  Never
        raises (rpm's Python bindings exit the process when a callback does)."""
        self.gate_at = feeder.NO_GATE
        self.stream.release_after(self.plugin.drain)

    def close_payload(self):
        self.gate_at = feeder.NO_GATE
        if self.stream is not None:
            self.stream.close_gate()
            self.stream = None
        while self._open:
            os.close(self._open.pop())

    def close(self):
        self.close_payload()
        if self.feed is not None:
            self.feed.join()
        self.snap.close()
        os.close(self._orig_fd)


def _block_size(root, override):
    if override:
        return override
    try:
        bs = os.statvfs(root).f_bsize
    except OSError:
        bs = 4096
    return bs if 512 <= bs <= 65536 and not bs & (bs - 1) else 4096


_key = rpmplugin.header_key


def _trans_flags(opts, any_cow):
    flags = 0
    if any_cow:
        flags |= rpm.RPMTRANS_FLAG_NOFILEDIGEST
    if opts.test:
        flags |= rpm.RPMTRANS_FLAG_TEST
    if opts.excludedocs:
        flags |= rpm.RPMTRANS_FLAG_NODOCS
    if opts.noscripts:
        # as stock rpm --noscripts: no scriptlets, and no triggers either
        for f in ("NOPRE", "NOPOST", "NOPREUN", "NOPOSTUN", "NOPRETRANS", "NOPOSTTRANS"):
            flags |= getattr(rpm, "RPMTRANS_FLAG_" + f)
        flags |= rpm.RPMTRANS_FLAG_NOTRIGGERS
    if opts.notriggers:
        flags |= rpm.RPMTRANS_FLAG_NOTRIGGERS
    return flags


def _prob_filter(opts):
    f = 0
    if opts.replacepkgs:
        f |= rpm.RPMPROB_FILTER_REPLACEPKG
    if opts.replacefiles:
        f |= rpm.RPMPROB_FILTER_REPLACENEWFILES | rpm.RPMPROB_FILTER_REPLACEOLDFILES
    if opts.oldpackage:
        f |= rpm.RPMPROB_FILTER_OLDPACKAGE
    return f


def _callback(errors, report=None):
    """rpm's callback; called after every archive entry of every package,
    so INST_PROGRESS comes first and costs one comparison."""
    progress = rpm.RPMCALLBACK_INST_PROGRESS
    open_file, close_file = rpm.RPMCALLBACK_INST_OPEN_FILE, rpm.RPMCALLBACK_INST_CLOSE_FILE
    unpack_errors = (rpm.RPMCALLBACK_UNPACK_ERROR, rpm.RPMCALLBACK_CPIO_ERROR)
    script_error = rpm.RPMCALLBACK_SCRIPT_ERROR
    start = getattr(rpm, "RPMCALLBACK_INST_START", None)

    def callback(what, amount, total, key, data):
        if what == progress:
            try:
                gate_at = key.gate_at
            except AttributeError:     # not one of our packages
                return None
            if amount > gate_at:
                key.release_gate()
            if report is not None:
                report("progress", key.nevra, amount, total)
            return None
        if what == start and report is not None and key is not None:
            report("start", key.nevra, 0, total)
            return None
        if what == open_file:
            return key.open_payload()
        if what == close_file:
            # rpm closes its own copy after we return: never join a feeder here
            key.close_payload()
        elif what in unpack_errors:
            cause = getattr(key.feed, "error", None) if key and key.feed else None
            errors.append("%s: unpacking failed%s" % (key.path if key else "?",
                                                     " (%s)" % cause if cause else ""))
        elif what == script_error and total:   # total: fatal scriptlet
            errors.append("%s: scriptlet failed" % (key.path if key else "?"))
        return None
    return callback


def install(paths, opts=None):
    """Install (or upgrade) the packages at `paths` into opts.root."""
    opts = opts or Options()
    target = rpmconfig.Target(opts.root, opts.dbpath)
    level = rpmconfig.verify_level(target, opts.level)
    blk = _block_size(opts.root, opts.block_size)
    pkgs, run = [], None
    try:
        for path in paths:
            pkgs.append(_Package(path))
        # one rpmkeys checks the headers of every extents file given
        # (verify.HeaderChecks: its start is most of a check's ~40 ms)
        ext = [p for p in pkgs if extents.is_transcoded(p.fd)]
        prologues = [checksig.read_prologue(p.fd) for p in ext]
        run = verify.HeaderChecks(target, prologues) if len(ext) > 1 else None
        checks = {p: (pro, run.of(i) if run else None)
                  for i, (p, pro) in enumerate(zip(ext, prologues))}
        for p in pkgs:
            if p in checks:
                p.feed = _checked_feed(p, target, level, opts.verify_files, *checks[p])
                p.blk = blk
            else:
                _require_plain(p, target, level)
        return _run(pkgs, opts, target)
    finally:
        if run is not None:
            run.close()
        for p in pkgs:
            p.close()


def _checked_feed(p, target, level, verify_files, prologue=None, hcheck=None):
    """The feed of an extents file that satisfies the policy.  rpmkeys judges
    its headers in the background (hcheck: a check under way of `prologue`)
    while librpm parses them for us and the feed is described -- nothing is
    read of the blobs, and rpm runs only after the verdict.  A failed
    verification is the error to report, even where the header could not be
    parsed either."""
    check = checksig.InstallCheck(p.fd, target, prologue=prologue, origin=p.snap.origin,
                                  hcheck=hcheck)
    try:
        feed = feeder.PackageFeed(p.fd, p.path, prologue=check.prologue,
                                  sections=check.sections)
    except RpmcowError:
        check.require(level, files=verify_files)
        raise
    except BaseException:
        check.abort()
        raise
    ev = check.require(level, files=verify_files, pkg=feed.package)
    p.package_digests = ev.package_digests
    return feed


def _require_plain(p, target, level):
    """rpmkeys judges the package through the descriptor rpm will read."""
    items = verify.check_fd(target, p.fd)
    failure = verify.policy_failure(items, level) if items else "cannot be read by rpmkeys"
    if failure:
        raise verify.refusal(p.path, failure, level)


def _read_header(ts, p):
    if p.is_extents:
        return p.feed.header
    os.lseek(p.fd, 0, os.SEEK_SET)
    try:
        return ts.hdrFromFdno(p.fd)
    except rpm.error as exc:
        raise InstallError("%s: %s" % (p.path, exc)) from None


def _plugin_map(pkgs, act):
    """The plugin's entries; packages it may work on in its thread get the
    archive's last entry and a gated feed.  The plain packages beside them
    get their files checked by the plugin (rpm's own check is off)."""
    act.verify_others(any(not p.is_extents for p in pkgs))
    entries = {}
    for p in pkgs:
        p.plugin = act
        if not p.is_extents:
            continue
        p.gated = act.worker_ok and p.feed.gateable and p.feed.clones(p.blk)
        entries[_key(p.feed.header)] = (p.fd, p.blk, p.feed.last) if p.gated else (p.fd, p.blk)
    act.set_map(entries)


def _run(pkgs, opts, target):
    any_cow = any(p.is_extents for p in pkgs)
    macros = {}
    if opts.dbpath:
        macros["_dbpath"] = opts.dbpath
    for name, value in macros.items():
        rpm.addMacro(name, value)
    try:
        with rpmplugin.enabled() if any_cow else contextlib.nullcontext() as act:
            if any_cow:
                _plugin_map(pkgs, act)
                if opts.share_tails:
                    act.share_tails(tailstore.prepare(opts.share_tails))
                act.clear_results()
            ts = rpm.TransactionSet(opts.root)
            try:
                result = _transact(ts, pkgs, opts, act)
            finally:
                ts.closeDB()
            if any_cow:
                result.plugin = act.package_results()
                result.shared_bytes = sum(r.cloned for r in result.plugin.values())
                result.copied_bytes = sum(r.copied for r in result.plugin.values())
                act.clear_results()
            if not opts.test:
                from . import journal
                journal.log(journal.install_line(result, opts.root))
            return result
    finally:
        for name in macros:
            rpm.delMacro(name)


def _package_digests(pkgs, act):
    """The plugin puts the original package files' digests into the headers
    rpm 6 adds to its database: an extents file's from its record, a plain
    package's computed here from the descriptor rpm reads (rpm's own pass
    that records them does not run where extents files are fed:
    rpmplugin.verify_headers_only)."""
    algos = rpmconfig.package_digest_algos()
    if not algos:
        return
    from .digests import fd_hexdigests
    for p in pkgs:
        if not p.is_extents:
            p.package_digests = fd_hexdigests(p.fd, algos)
    act.set_package_digests({_key(p.header): p.package_digests for p in pkgs})


def _transact(ts, pkgs, opts, act):
    any_cow = act is not None
    result = Result()
    # rpm checks every header (digests, signature, at its own level) when it
    # reads it; the fed payload and its files do not match the header's
    # digests, which the transcoder and our policy check stood in for
    # (rpm < 4.18 cannot check headers alone: see rpmplugin.verify_headers_only)
    rpmplugin.verify_headers_only(ts)
    ts.setFlags(_trans_flags(opts, any_cow))
    ts.setProbFilter(_prob_filter(opts))
    for p in pkgs:
        h = _read_header(ts, p)
        if h[rpm.RPMTAG_SOURCEPACKAGE]:
            # rpm -i unpacks these into %_topdir, outside any transaction
            raise InstallError("%s: %s is a source package: install it with rpm -i"
                               % (p.path, h[rpm.RPMTAG_NAME]))
        p.nevra = h["nevra"]
        p.header = h
        ts.addInstall(h, p, "u" if opts.upgrade else "i")
        (result.cow if p.is_extents else result.plain).append(h["nevra"])
    if not opts.nodeps:
        unresolved = ts.check()
        if unresolved:
            raise InstallError("Failed dependencies:\n" + "\n".join(
                "\t%s" % pr for pr in ts.problems()))
    ts.order()
    if any_cow:
        _package_digests(pkgs, act)
    errors = []
    rpm.setVerbosity(rpm.RPMLOG_WARNING)   # rpm's and the plugin's messages go to stderr
    problems = ts.run(_callback(errors, opts.report), None)
    # rpm's answer: None when all went well, a list of problems when the
    # transaction could not start, an empty list when elements failed
    if problems:
        raise InstallError("\n".join(str(pr[0]) if isinstance(pr, tuple) else str(pr)
                                     for pr in problems))
    if problems is not None or errors:
        raise InstallError("; ".join(errors) or
                           "rpm failed to install some packages (see its messages above)")
    return result


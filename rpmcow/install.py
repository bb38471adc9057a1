"""``rpmcow install``: ``rpm -i``/``-U`` for extents files, on stock rpm.

A real rpm transaction through librpm's Python bindings -- dependencies,
ordering, scriptlets, triggers, file triggers, config files and the rpmdb
all stay rpm's.  For an extents file rpm is handed a cheap payload
(rpmcow.feeder) and the ``cow`` plugin clones file data from the extents
file; plain .rpm files in the same transaction install the stock way.

Verification: the effective %_pkgverify_level is enforced before rpm runs,
for extents files by their verdict (rpmcow.checksig), for plain packages by
rpmkeys.  rpm itself then checks every header again; it is told not to read
payload digests or file digests, which the fed payload does not match.
"""
import contextlib
import os
from dataclasses import dataclass, field

import rpm

from . import checksig, extents, feeder, rpmconfig, rpmplugin, verify
from .errors import RpmcowError, VerificationError


class InstallError(RpmcowError):
    """rpm refused or failed the transaction."""


@dataclass
class Options:
    root: str = "/"
    dbpath: str = None
    upgrade: bool = False
    nodeps: bool = False
    noscripts: bool = False
    notriggers: bool = False
    test: bool = False
    replacepkgs: bool = False
    replacefiles: bool = False
    oldpackage: bool = False
    excludedocs: bool = False
    level: str = None            # override of %_pkgverify_level
    verify_files: bool = False   # hash every blob even when the verdict is trusted
    block_size: int = None       # feed granularity (default: the root fs's)


@dataclass
class Result:
    cow: list = field(default_factory=list)      # NEVRAs installed from extents files
    plain: list = field(default_factory=list)    # NEVRAs installed the stock way
    shared_bytes: int = 0                        # file data cloned or copied by the plugin


class _Package:
    """One package of the transaction: its fd and how rpm gets a payload."""

    def __init__(self, path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RpmcowError("cannot open %s: %s" % (path, exc.strerror)) from None
        self.feed = None
        self.blk = 0
        self._open = []

    @property
    def is_extents(self):
        return self.feed is not None

    def open_payload(self):
        if self.feed is None:
            fd = os.dup(self.fd)
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            fd = self.feed.open(self.blk)
        self._open.append(fd)
        return fd

    def close_payload(self):
        while self._open:
            os.close(self._open.pop())

    def close(self):
        self.close_payload()
        if self.feed is not None:
            self.feed.join()
        os.close(self.fd)


def _block_size(root, override):
    if override:
        return override
    try:
        bs = os.statvfs(root).f_bsize
    except OSError:
        bs = 4096
    return bs if 512 <= bs <= 65536 and not bs & (bs - 1) else 4096


def _key(h):
    return h[rpm.RPMTAG_SHA256HEADER] or h[rpm.RPMTAG_SHA1HEADER] or h["nevra"]


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


class _Callback:
    def __init__(self):
        self.errors = []

    def __call__(self, what, amount, total, key, data):
        if what == rpm.RPMCALLBACK_INST_OPEN_FILE:
            return key.open_payload()
        if what == rpm.RPMCALLBACK_INST_CLOSE_FILE:
            # rpm closes its own copy after we return: never join a feeder here
            key.close_payload()
        elif what in (rpm.RPMCALLBACK_UNPACK_ERROR, rpm.RPMCALLBACK_CPIO_ERROR):
            cause = getattr(key.feed, "error", None) if key and key.feed else None
            self.errors.append("%s: unpacking failed%s" % (key.path if key else "?",
                                                          " (%s)" % cause if cause else ""))
        elif what == rpm.RPMCALLBACK_SCRIPT_ERROR and total:   # total: fatal scriptlet
            self.errors.append("%s: scriptlet failed" % (key.path if key else "?"))
        return None


def install(paths, opts=None):
    """Install (or upgrade) the packages at `paths` into opts.root."""
    opts = opts or Options()
    target = rpmconfig.Target(opts.root, opts.dbpath)
    level = rpmconfig.verify_level(target, opts.level)
    blk = _block_size(opts.root, opts.block_size)
    pkgs = []
    try:
        for path in paths:
            p = _Package(path)
            pkgs.append(p)
            if extents.is_transcoded(p.fd):
                # the policy first (rpmkeys on the headers), then our parse
                checksig.require_for_install(p.fd, target, level, files=opts.verify_files)
                p.feed = feeder.PackageFeed(p.fd, path)
                p.blk = blk
            else:
                _require_plain(p, target, level)
        return _run(pkgs, opts, target)
    finally:
        for p in pkgs:
            p.close()


def _require_plain(p, target, level):
    import subprocess
    r = subprocess.run(["rpmkeys", "-Kv", *target.rpm_args(), p.path], capture_output=True)
    items = verify.parse_items(r.stdout.decode("utf-8", "replace"))
    failure = verify.policy_failure(items, level) if items else "cannot be read by rpmkeys"
    if failure:
        raise VerificationError("%s: %s (verification level %s)" % (p.path, failure, level))


def _read_header(ts, p):
    if p.is_extents:
        return p.feed.header
    os.lseek(p.fd, 0, os.SEEK_SET)
    try:
        return ts.hdrFromFdno(p.fd)
    except rpm.error as exc:
        raise InstallError("%s: %s" % (p.path, exc)) from None


def _run(pkgs, opts, target):
    cow = {_key(p.feed.header): (p.fd, p.blk) for p in pkgs if p.is_extents}
    macros = {}
    if opts.dbpath:
        macros["_dbpath"] = opts.dbpath
    for name, value in macros.items():
        rpm.addMacro(name, value)
    try:
        with rpmplugin.enabled(cow) if cow else contextlib.nullcontext():
            ts = rpm.TransactionSet(opts.root)
            try:
                return _transact(ts, pkgs, opts, bool(cow))
            finally:
                ts.closeDB()
    finally:
        for name in macros:
            rpm.delMacro(name)


def _transact(ts, pkgs, opts, any_cow):
    result = Result()
    # rpm checks every header (digests, signature, at its own level) when it
    # reads it; the fed payload and its files do not match the header's
    # digests, which the transcoder and our policy check stood in for
    ts.setVfyFlags(rpm.RPMVSF_NEEDPAYLOAD)
    ts.setFlags(_trans_flags(opts, any_cow))
    ts.setProbFilter(_prob_filter(opts))
    for p in pkgs:
        h = _read_header(ts, p)
        ts.addInstall(h, p, "u" if opts.upgrade else "i")
        (result.cow if p.is_extents else result.plain).append(h["nevra"])
    if not opts.nodeps:
        unresolved = ts.check()
        if unresolved:
            raise InstallError("Failed dependencies:\n" + "\n".join(
                "\t%s" % pr for pr in ts.problems()))
    ts.order()
    cb = _Callback()
    rpm.setVerbosity(rpm.RPMLOG_WARNING)   # rpm's and the plugin's messages go to stderr
    problems = ts.run(cb, None)
    # rpm's answer: None when all went well, a list of problems when the
    # transaction could not start, an empty list when elements failed
    if problems:
        raise InstallError("\n".join(str(pr[0]) if isinstance(pr, tuple) else str(pr)
                                     for pr in problems))
    if problems is not None or cb.errors:
        raise InstallError("; ".join(cb.errors) or
                           "rpm failed to install some packages (see its messages above)")
    return result


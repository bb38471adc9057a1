"""Finding and enabling the ``cow`` rpm plugin for one transaction.

rpm loads ``<name>.so`` from ``%__plugindir`` when ``%__transaction_<name>``
is set.  rpmcow sets ``%__transaction_cow`` only inside its own process, for
the transaction it drives, so no other rpm run ever loads the plugin.

Where the plugin is not installed in the system's plugin directory (a
checkout, or Debian, whose ``%__plugindir`` does not exist), a private
plugin directory is made with links to every plugin of the system directory
and ours, so the system's plugins (SELinux, IMA, fs-verity, fapolicyd) still
load exactly as they would.

The plugin may do its work on a thread of its own (the map's LAST field,
see csrc/rpm_plugin_cow.c) -- only where no other enabled plugin looks at a
file's content in its own hooks (``worker_ok``), and only for a driver that
calls ``drain()`` before letting rpm read an archive's trailer.

``$RPMCOW_PLUGIN`` names the cow.so to load.  In a process whose effective
uid is 0 (``sudo -E`` keeps a user's environment) it is honoured only for a
file that only root can change: the file and every directory above it
(symlinks resolved) owned by root, none writable by group or others -- a
directory writable by others only if it is sticky, like /tmp, the entry
inside it then being root's.  Otherwise plugin_path() refuses it; nothing
else ever loads a cow.so (rpm, or ``ctypes`` for the drain function) but
the one plugin_path() returned.
"""
import contextlib
import ctypes
import os
import stat

import rpm

from .errors import RpmcowError

NAME = "cow"
MAP_MACRO = "_rpmcow_map"
VERIFY_MACRO = "_rpmcow_verify"
DIGESTS_MACRO = "_rpmcow_pkgdigests"
TAILS_MACRO = "_rpmcow_tails"
# rpm 6: the digests of each package file it reads in its verification pass,
# recorded in its database (csrc/rpm_plugin_cow.c: put_package_digests)
RPM_DIGESTS_MACRO = "_pkgverify_digests"
HERE = os.path.dirname(os.path.abspath(__file__))
# plugins whose hooks do not read or sign file content (rpm 4.16-4.20): ours
# may still be cloning a file when theirs run.  ima (signatures of the
# content) and fsverity (hashes it), and any plugin not known here, are not.
CONTENT_BLIND = {"audit", "dbus_announce", "fapolicyd", "prioreset", "selinux", "syslog",
                 "systemd_inhibit", "unshare"}


def _rpm_version():
    v = []
    for part in rpm.__version__.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        v.append(int(digits or 0))
    return tuple(v)


# rpm before 4.18 requires payload digests in its verification pass even
# with RPMVSF_NEEDPAYLOAD: lib/rpmvs.c (rpmvsVerify) counts the payload items
# that flag disables in the range it requires, so at every level but none a
# package fails with "does not verify: no digest" (4.18: "Cannot verify
# payload if RPMVSF_NEEDPAYLOAD is set").  librpm offers nothing to ask.
# rpm 6.1 requires the whole package again, by design ("mixing enforcing mode
# with RPMVSF_NEEDPAYLOAD needs to fail": lib/rpmvs.cc, rpmvsVerify).
PAYLOADLESS_VERIFY_PASS = (4, 18) <= _rpm_version() < (6, 1)


# rpm 4.18 added the descriptor of the file being written to the plugin's
# fsm_file_prepare hook; before, the plugin opens the file itself and does
# all its work in the hook (csrc/rpm_plugin_cow.c: cow_pick_abi)
WORKER_ABI = _rpm_version() >= (4, 18)


def verify_headers_only(ts):
    """Tell rpm's transaction set `ts` not to read payload digests, which a
    fed payload does not match: rpm checks every header at its own level.
    rpm < 4.18 cannot (above): its verification pass is skipped (level
    none) -- the caller has judged every package at the level already
    (rpmcow.install, dnf's test transaction and the cow plugin), and rpm
    still fails a package whose header digest or signature is BAD when it
    reads the header to install it (lib/rpmte.c, rpmteFDHeader)."""
    ts.setVfyFlags(rpm.RPMVSF_NEEDPAYLOAD)
    if not PAYLOADLESS_VERIFY_PASS:
        ts.setVfyLevel(0)


def header_key(h):
    """The key the plugin finds a package by (csrc/rpm_plugin_cow.c: te_key)."""
    return h[rpm.RPMTAG_SHA256HEADER] or h[rpm.RPMTAG_SHA1HEADER] or h["nevra"]


def package_digests_value(entries):
    """The value of %_rpmcow_pkgdigests for {header key: {PGPHASHALGO: hex}}
    ("KEY=ALGO:HEX,ALGO:HEX ..."; csrc/rpm_plugin_cow.c: put_package_digests)."""
    return " ".join("%s=%s" % (k, ",".join("%d:%s" % kv for kv in d.items()))
                    for k, d in entries.items() if d)


def plugin_path():
    """The cow.so to load: $RPMCOW_PLUGIN (as root: only a file only root
    can change), the system's, or the one built beside this package."""
    env = os.environ.get("RPMCOW_PLUGIN")
    if env and os.path.isfile(env):
        path = _root_only(env) if os.geteuid() == 0 else os.path.abspath(env)
        _APPROVED.add(path)
        return path
    candidates = [rpm.expandMacro("%{?_rpmcow_plugin}"),     # rpm-plugin-cow's macros file
                  os.path.join(rpm.expandMacro("%{__plugindir}"), NAME + ".so"),
                  os.path.join(HERE, "plugins", NAME + ".so")]
    for path in candidates:
        if path and os.path.isfile(path):
            path = os.path.abspath(path)
            _APPROVED.add(path)
            return path
    raise RpmcowError("the cow rpm plugin is not installed (looked in: %s); "
                      "run 'make build' or install rpm-plugin-cow"
                      % ", ".join(([env] if env else []) + candidates))


# the paths plugin_path() has returned: the only ones _drain_fn loads
_APPROVED = set()


class PackageResult:
    """What the plugin did for one package: bytes cloned, bytes copied
    (and why it could not clone), whether the package went in."""

    def __init__(self, nevra, cloned, copied, copy_why, ok):
        self.nevra, self.cloned, self.copied = nevra, cloned, copied
        self.copy_why, self.ok = copy_why, ok

    def __repr__(self):
        return "PackageResult(%r, cloned=%d, copied=%d, copy_why=%r, ok=%r)" % (
            self.nevra, self.cloned, self.copied, self.copy_why, self.ok)


def _root_only(path):
    """realpath of `path` if it is a regular file only root can change
    (itself and every directory above it: owned by root, not writable by
    group or others, except a sticky directory such as /tmp, whose entry
    must then be root's); RpmcowError saying what is wrong otherwise."""
    real = os.path.realpath(path)
    parts = real.split("/")[1:]
    current = "/"
    for i, name in enumerate([""] + parts):
        current = os.path.join(current, name)
        is_file = i == len(parts)
        try:
            st = os.lstat(current)
        except OSError as exc:
            why = "cannot be checked (%s)" % exc.strerror
        else:
            why = _not_roots(st, is_file)
        if why:
            what = current if current == real else "%s (above %s)" % (current, real)
            if real != os.path.abspath(path):
                what += ", which %s names," % path
            raise RpmcowError("%s %s; $RPMCOW_PLUGIN must name a root-owned file that only "
                              "root can change" % (what, why))
    return real


def _not_roots(st, is_file):
    """Why an entry on the way to the plugin is not root's alone, or None.
    A sticky directory writable by others is root's: none of them can
    replace the entry inside it, which must be root's (checked next)."""
    if st.st_uid != 0:
        return "is owned by uid %d" % st.st_uid
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (it changed while being checked)"
    if is_file and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not is_file and not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and (is_file or not st.st_mode & stat.S_ISVTX):
        return "is writable by %s" % ("others" if st.st_mode & stat.S_IWOTH else "its group")
    return None


_UNWINDER = []


def _load_unwinder():
    """glibc < 2.34 loads libgcc_s.so.1 the first time a thread ends through
    pthread_exit -- as Python < 3.10 ends every thread of its own -- and
    aborts the process ("libgcc_s.so.1 must be installed for pthread_cancel
    to work") where it cannot: inside rpm's chroot into a root without it.
    Loaded now, before any transaction, it is found loaded then."""
    if not _UNWINDER:
        try:
            _UNWINDER.append(ctypes.CDLL("libgcc_s.so.1"))
        except OSError:
            _UNWINDER.append(None)


def _remove_private(name, parent_fd):
    """rm -rf NAME in the directory open as `parent_fd`, errors ignored.
    shutil.rmtree takes dir_fd from Python 3.11; before (EL9: 3.9) the
    private plugin directory, which holds only links, is emptied by hand."""
    import shutil
    try:
        shutil.rmtree(name, dir_fd=parent_fd, ignore_errors=True)
        return
    except TypeError:              # Python < 3.11: no dir_fd
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent_fd)
    except OSError:
        return
    try:
        for entry in os.listdir(fd):
            try:
                os.unlink(entry, dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        pass


def _listdir(path):
    """The names in path, sorted; none where it does not exist (Debian's
    %__plugindir).  Not glob: one module less on every install's start."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def activation_macros():
    """(cow.so, {macro: value}, the other plugins rpm loads, private plugin
    directory or None): what makes rpm load the plugin.  rpm loads only
    plugins in %{__plugindir} whose %__transaction_NAME is set, so a cow.so
    elsewhere (a checkout's) gets a private directory of links to it and to
    every plugin of the system's directory (removed by the caller:
    remove_private)."""
    so = plugin_path()
    sysdir = rpm.expandMacro("%{__plugindir}")
    values = {"__transaction_" + NAME: so, MAP_MACRO: ""}
    others = [os.path.join(sysdir, n) for n in _listdir(sysdir)
              if n.endswith(".so") and not n.startswith(".") and n != NAME + ".so"]
    # what rpm will load besides us: a plugin file whose macro is set
    loaded = sorted(os.path.basename(p)[:-3] for p in others if rpm.expandMacro(
        "%%{?__transaction_%s}" % os.path.basename(p)[:-3]).strip())
    private = None
    if os.path.dirname(so) != os.path.abspath(sysdir):
        import tempfile        # only for a plugin outside the system's directory
        private = tempfile.mkdtemp(prefix="rpmcow-plugins.")
        for other in others:
            os.symlink(other, os.path.join(private, os.path.basename(other)))
        os.symlink(so, os.path.join(private, NAME + ".so"))
        values["__plugindir"] = private
    return so, values, loaded, private


def remove_private(path):
    """Remove a private plugin directory activation_macros() made (links only)."""
    if os.path.basename(path).startswith("rpmcow-plugins."):
        parent = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _remove_private(os.path.basename(path), parent)
        finally:
            os.close(parent)


class Activation:
    """The macros (and private plugin directory) that let rpm load the
    plugin into transaction sets created -- or first given a package --
    while it is active.  ``set_map`` may change the packages later: the
    plugin reads the map when each package starts."""

    def __init__(self):
        _load_unwinder()
        self.so, values, self.others, self.private = activation_macros()
        if self.private:
            # removed through its parent's fd: rpm may have chrooted the
            # process by the time close() runs (dnf's transaction does)
            self._parent_fd = os.open(os.path.dirname(self.private),
                                      os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.names = list(values)
        for name, value in values.items():
            rpm.addMacro(name, value)
        self._withheld = False

    @property
    def worker_ok(self):
        """Whether the plugin may work on a thread of its own: no other
        plugin rpm loads looks at file content, this cow.so has the
        worker (a plugin older than this module would not), and rpm hands
        the hook the file's descriptor (WORKER_ABI)."""
        return all(name in CONTENT_BLIND for name in self.others) and \
            self._drain_fn() is not None and WORKER_ABI

    def _drain_fn(self):
        """rpmcow_plugin_drain of cow.so -- the instance rpm loads: the
        dynamic loader hands out one copy of a library per file.  Only ever
        the file plugin_path() approved."""
        fn = self._function("rpmcow_plugin_drain")
        if fn is not None:
            fn.restype = ctypes.c_int
            fn.argtypes = []
        return fn

    def _function(self, name):
        if self.so not in _APPROVED:
            return None
        try:
            return getattr(ctypes.CDLL(self.so), name)
        except (OSError, AttributeError):
            return None

    def results(self):
        """What the plugin did for each package of the map it installed, in
        order: [PackageResult]; [] where this cow.so cannot say."""
        fn = self._function("rpmcow_plugin_result")
        if fn is None:
            return []
        u64 = ctypes.c_uint64
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(u64),
                       ctypes.POINTER(u64), ctypes.POINTER(ctypes.c_char_p),
                       ctypes.POINTER(ctypes.c_int)]
        out, i = [], 0
        nevra, why = ctypes.c_char_p(), ctypes.c_char_p()
        cloned, copied, ok = u64(), u64(), ctypes.c_int()
        while fn(i, ctypes.byref(nevra), ctypes.byref(cloned), ctypes.byref(copied),
                 ctypes.byref(why), ctypes.byref(ok)):
            out.append(PackageResult(nevra.value.decode("utf-8", "replace"), cloned.value,
                                     copied.value,
                                     why.value.decode() if why.value else None, bool(ok.value)))
            i += 1
        return out

    def package_results(self):
        """{NEVRA: PackageResult} summed over rpm's runs of each package
        (rpm runs a package's psm once per stage -- %pretrans, install,
        %posttrans -- and the plugin reports each; only the install moves
        data)."""
        out = {}
        for r in self.results():
            seen = out.get(r.nevra)
            if seen is None:
                out[r.nevra] = r
            else:
                seen.cloned += r.cloned
                seen.copied += r.copied
                seen.copy_why = seen.copy_why or r.copy_why
                seen.ok = seen.ok and r.ok
        return out

    def clear_results(self):
        fn = self._function("rpmcow_plugin_clear_results")
        if fn is not None:
            fn.restype = None
            fn()

    def set_map(self, entries):
        """entries: {header key: (extents fd, feed block size)}, or (fd,
        block size, file index of the archive's last entry) for the worker
        thread (the driver then owes the plugin a drain() per package)."""
        rpm.delMacro(MAP_MACRO)
        rpm.addMacro(MAP_MACRO, " ".join("%s=%s" % (k, ":".join("%d" % v for v in value))
                                         for k, value in entries.items()))

    def set_package_digests(self, entries):
        """entries: {header key: {PGPHASHALGO: hex}} -- the digests of the
        original package files, from valid records (checksig.Evaluation):
        the plugin puts them into the header rpm adds to its database."""
        self._define(DIGESTS_MACRO, package_digests_value(entries) or "%{nil}")

    def _define(self, name, value):
        """Set one of the plugin's macros (again); close() removes it."""
        rpm.delMacro(name)
        rpm.addMacro(name, value)
        if name not in self.names:
            self.names.append(name)

    def feeding(self, fed):
        """Call when rpm opens a package file (its open-file callback):
        fed, whether it gets a feed.  rpm 6 digests the whole file it reads
        for its database right after that callback, which for a feed would
        be digests of bytes no one published: %_pkgverify_digests is
        withheld while it reads a feed (the plugin puts the original's in
        instead), and restored for the next package that is not one."""
        if self._withheld:
            rpm.delMacro(RPM_DIGESTS_MACRO)
            self._withheld = False
        if fed and rpm.expandMacro("%%{?%s}" % RPM_DIGESTS_MACRO).strip():
            rpm.addMacro(RPM_DIGESTS_MACRO, "%{nil}")
            self._withheld = True

    def verify_others(self, on):
        """Whether the plugin checks every file rpm writes for the packages
        not in the map against its header digest (rpm's own check is off
        while extents files are fed: see csrc/rpm_plugin_cow.c)."""
        self._define(VERIFY_MACRO, "1" if on else "0")

    def share_tails(self, path):
        """Let the plugin keep the files' last partial blocks in the tail
        store at `path` (tailstore.prepare made it) and clone them from
        there; None: write them (rpmcow.tailstore)."""
        self._define(TAILS_MACRO, path or "%{nil}")

    def drain(self):
        """Wait for the plugin's work on the package rpm is installing; False
        if any of it failed (the plugin has said why)."""
        fn = self._drain_fn()
        return fn is not None and fn() == 0

    def close(self):
        self.feeding(False)
        for name in self.names:
            rpm.delMacro(name)
        self.names = []
        if self.private:
            try:
                _remove_private(os.path.basename(self.private), self._parent_fd)
            finally:
                os.close(self._parent_fd)
            self.private = None


@contextlib.contextmanager
def enabled(entries=None):
    """Enable the plugin while the block runs (for the packages in
    `entries`, or those given to set_map later); the caller creates its
    transaction set inside.  Yields the Activation."""
    act = Activation()
    try:
        if entries is not None:
            act.set_map(entries)
        yield act
    finally:
        act.close()

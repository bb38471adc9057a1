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
"""
import contextlib
import ctypes
import glob
import os
import shutil
import tempfile

import rpm

from .errors import RpmcowError

NAME = "cow"
MAP_MACRO = "_rpmcow_map"
HERE = os.path.dirname(os.path.abspath(__file__))
# plugins whose hooks do not read or sign file content (rpm 4.16-4.20): ours
# may still be cloning a file when theirs run.  ima (signatures of the
# content) and fsverity (hashes it), and any plugin not known here, are not.
CONTENT_BLIND = {"audit", "dbus_announce", "fapolicyd", "prioreset", "selinux", "syslog",
                 "systemd_inhibit", "unshare"}


def plugin_path():
    """The cow.so to load: $RPMCOW_PLUGIN, the system's, or the one built
    beside this package."""
    env = os.environ.get("RPMCOW_PLUGIN")
    candidates = [env] if env else []
    candidates += [rpm.expandMacro("%{?_rpmcow_plugin}"),     # rpm-plugin-cow's macros file
                   os.path.join(rpm.expandMacro("%{__plugindir}"), NAME + ".so"),
                   os.path.join(HERE, "plugins", NAME + ".so")]
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    raise RpmcowError("the cow rpm plugin is not installed (looked in: %s); "
                      "run 'make build' or install rpm-plugin-cow" % ", ".join(candidates))


class Activation:
    """The macros (and private plugin directory) that let rpm load the
    plugin into transaction sets created -- or first given a package --
    while it is active.  ``set_map`` may change the packages later: the
    plugin reads the map when each package starts."""

    def __init__(self):
        self.so = plugin_path()
        sysdir = rpm.expandMacro("%{__plugindir}")
        self.private = None
        values = {"__transaction_" + NAME: self.so, MAP_MACRO: ""}
        others = [p for p in glob.glob(os.path.join(sysdir, "*.so"))
                  if os.path.basename(p) != NAME + ".so"]
        # what rpm will load besides us: a plugin file whose macro is set
        self.others = sorted(os.path.basename(p)[:-3] for p in others if rpm.expandMacro(
            "%%{?__transaction_%s}" % os.path.basename(p)[:-3]).strip())
        if os.path.dirname(self.so) != os.path.abspath(sysdir):
            self.private = tempfile.mkdtemp(prefix="rpmcow-plugins.")
            # removed through its parent's fd: rpm may have chrooted the
            # process by the time close() runs (dnf's transaction does)
            self._parent_fd = os.open(os.path.dirname(self.private),
                                      os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            for other in others:
                os.symlink(other, os.path.join(self.private, os.path.basename(other)))
            os.symlink(self.so, os.path.join(self.private, NAME + ".so"))
            values["__plugindir"] = self.private
        self.names = list(values)
        for name, value in values.items():
            rpm.addMacro(name, value)

    @property
    def worker_ok(self):
        """Whether the plugin may work on a thread of its own: no other
        plugin rpm loads looks at file content, and this cow.so has the
        worker (a plugin older than this module would not)."""
        return all(name in CONTENT_BLIND for name in self.others) and \
            self._drain_fn() is not None

    def _drain_fn(self):
        """rpmcow_plugin_drain of cow.so -- the instance rpm loads: the
        dynamic loader hands out one copy of a library per file."""
        try:
            fn = ctypes.CDLL(self.so).rpmcow_plugin_drain
        except (OSError, AttributeError):
            return None
        fn.restype = ctypes.c_int
        fn.argtypes = []
        return fn

    def set_map(self, entries):
        """entries: {header key: (extents fd, feed block size)}, or (fd,
        block size, file index of the archive's last entry) for the worker
        thread (the driver then owes the plugin a drain() per package)."""
        rpm.delMacro(MAP_MACRO)
        rpm.addMacro(MAP_MACRO, " ".join("%s=%s" % (k, ":".join("%d" % v for v in value))
                                         for k, value in entries.items()))

    def drain(self):
        """Wait for the plugin's work on the package rpm is installing; False
        if any of it failed (the plugin has said why)."""
        fn = self._drain_fn()
        return fn is not None and fn() == 0

    def close(self):
        for name in self.names:
            rpm.delMacro(name)
        self.names = []
        if self.private:
            try:
                shutil.rmtree(os.path.basename(self.private), dir_fd=self._parent_fd,
                              ignore_errors=True)
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

"""Finding and enabling the ``cow`` rpm plugin for one transaction.

rpm loads ``<name>.so`` from ``%__plugindir`` when ``%__transaction_<name>``
is set.  rpmcow sets ``%__transaction_cow`` only inside its own process, for
the transaction it drives, so no other rpm run ever loads the plugin.

Where the plugin is not installed in the system's plugin directory (a
checkout, or Debian, whose ``%__plugindir`` does not exist), a private
plugin directory is made with links to every plugin of the system directory
and ours, so the system's plugins (SELinux, IMA, fs-verity, fapolicyd) still
load exactly as they would.
"""
import contextlib
import glob
import os
import shutil
import tempfile

import rpm

from .errors import RpmcowError

NAME = "cow"
MAP_MACRO = "_rpmcow_map"
HERE = os.path.dirname(os.path.abspath(__file__))


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
        if os.path.dirname(self.so) != os.path.abspath(sysdir):
            self.private = tempfile.mkdtemp(prefix="rpmcow-plugins.")
            for other in glob.glob(os.path.join(sysdir, "*.so")):
                if os.path.basename(other) != NAME + ".so":
                    os.symlink(other, os.path.join(self.private, os.path.basename(other)))
            os.symlink(self.so, os.path.join(self.private, NAME + ".so"))
            values["__plugindir"] = self.private
        self.names = list(values)
        for name, value in values.items():
            rpm.addMacro(name, value)

    def set_map(self, entries):
        """entries: {header key: (extents fd, feed block size)}"""
        rpm.delMacro(MAP_MACRO)
        rpm.addMacro(MAP_MACRO, " ".join("%s=%d:%d" % (k, fd, blk)
                                         for k, (fd, blk) in entries.items()))

    def close(self):
        for name in self.names:
            rpm.delMacro(name)
        self.names = []
        if self.private:
            shutil.rmtree(self.private, ignore_errors=True)
            self.private = None


@contextlib.contextmanager
def enabled(entries):
    """Enable the plugin for the packages in `entries` while the block runs;
    the caller creates its transaction set inside."""
    act = Activation()
    try:
        act.set_map(entries)
        yield act.so
    finally:
        act.close()

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
    candidates += [os.path.join(rpm.expandMacro("%{__plugindir}"), NAME + ".so"),
                   os.path.join(HERE, "plugins", NAME + ".so")]
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    raise RpmcowError("the cow rpm plugin is not installed (looked in: %s); "
                      "run 'make build' or install rpm-plugin-cow" % ", ".join(candidates))


@contextlib.contextmanager
def enabled(entries):
    """Enable the plugin for the packages in `entries` ({key: (fd, blk)})
    while the block runs; the caller creates its transaction set inside."""
    so = plugin_path()
    sysdir = rpm.expandMacro("%{__plugindir}")
    private = None
    saved = {}
    if os.path.dirname(so) != os.path.abspath(sysdir):
        private = tempfile.mkdtemp(prefix="rpmcow-plugins.")
        for other in glob.glob(os.path.join(sysdir, "*.so")):
            if os.path.basename(other) != NAME + ".so":
                os.symlink(other, os.path.join(private, os.path.basename(other)))
        os.symlink(so, os.path.join(private, NAME + ".so"))
    values = {
        "__transaction_" + NAME: so,
        MAP_MACRO: " ".join("%s=%d:%d" % (k, fd, blk) for k, (fd, blk) in entries.items()),
    }
    if private:
        values["__plugindir"] = private
    try:
        for name, value in values.items():
            saved[name] = rpm.expandMacro("%%{?%s}" % name)
            rpm.addMacro(name, value)
        yield so
    finally:
        for name in values:
            rpm.delMacro(name)
        if private:
            shutil.rmtree(private, ignore_errors=True)

"""rpm configuration of a target root, read in one place.

rpm reads its macro files from the host even with ``--root``; the policy
that should apply to packages installed *into* a root is the root's own.
So for a root other than "/" that has an rpm configuration, its macro files
are evaluated; otherwise the host's.
"""
import os
from collections import namedtuple

from .errors import UsageError

LEVELS = ("none", "digest", "signature", "all")

# rpm's default macro path, relative to a root (rpmrc.c: macrofiles)
_MACROFILES = [
    "usr/lib/rpm/macros", "usr/lib/rpm/macros.d/macros.*", "usr/lib/rpm/platform/%{_target}/macros",
    "usr/lib/rpm/fileattrs/*.attr", "usr/lib/rpm/redhat/macros", "etc/rpm/macros.*",
    "etc/rpm/macros", "etc/rpm/%{_target}/macros",
]


# A named tuple, not a dataclass (see digests.Algo): every transcode makes
# one before its header check starts.
class Target(namedtuple("Target", "root dbpath", defaults=("/", None))):
    """Where packages go: a root, and the rpm database inside it (None:
    rpm's configured %_dbpath)."""
    __slots__ = ()

    def rpm_args(self):
        args = ["--root", self.root]
        if self.dbpath:
            args += ["--dbpath", self.dbpath]
        return args


def _root_macro_args(root):
    if root in ("/", "") or not os.path.exists(os.path.join(root, "usr/lib/rpm/macros")):
        return []
    return ["--macros", ":".join(os.path.join(root, m) for m in _MACROFILES)]


def eval_macro(target, expr):
    """Expand an rpm macro expression with the target root's configuration."""
    import subprocess      # only for a root with its own configuration
    cmd = ["rpm", *_root_macro_args(target.root), "--eval", expr]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UsageError("cannot read rpm configuration: %s" % exc) from None
    return out.strip()


def check_level(level):
    """UsageError unless level is empty (the root's) or a level rpm knows."""
    if level and level not in LEVELS:
        raise UsageError("unknown verification level %r (one of: %s)" % (level, ", ".join(LEVELS)))


def verify_level(target, override=None):
    """The effective %_pkgverify_level: the override, else the root's."""
    if override:
        level = override
    elif not _root_macro_args(target.root):
        level = rpmkeys_verify_level()      # the host's: read in-process
    else:
        level = eval_macro(target, "%{?_pkgverify_level}") or "digest"
    check_level(level)
    return level


def rpmkeys_verify_level():
    """The %_pkgverify_level rpmkeys applies (rpm reads the host's macro
    files even with --root), read by librpm in this process."""
    import rpm
    return rpm.expandMacro("%{?_pkgverify_level}") or "digest"

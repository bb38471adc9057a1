"""sticky-vendor.conf: every option, its default and its parsing -- here only.

The plugin hands the ``[main]`` section (strings, as dnf's ConfigParser reads
them) to ``Settings.from_mapping``; everything else reads ``Settings``.
Directories in the file are host paths; the default policy and state
locations are inside the install root (``root`` below).
"""
import os
from dataclasses import dataclass, field
from typing import List

from .errors import PolicyError

# default locations, relative to the install root
OUR_DIRS = ("/etc/dnf/sticky-vendor.d",)
DNF5_DIRS = ("/etc/dnf/vendors.d", "/usr/share/dnf5/vendors.d")
ZYPP_DIRS = ("/etc/zypp/vendors.d",)
STATE_DIR = "/var/lib/dnf/sticky-vendor"

TRUE = ("1", "yes", "true", "on")
FALSE = ("0", "no", "false", "off")


def _bool(key, value):
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise PolicyError("sticky-vendor.conf: %s = %r is not a boolean (yes/no)" % (key, value))


def _dirs(value):
    return [d for d in value.replace(",", " ").split() if d]


def _choice(key, value, choices):
    v = value.strip().lower()
    if v not in choices:
        raise PolicyError("sticky-vendor.conf: %s = %r: use one of %s"
                          % (key, value, ", ".join(choices)))
    return v


@dataclass
class Settings:
    enforce: bool = True             # default of the toggle (`dnf vendor enable/disable`)
    normalize: bool = True           # compare vendors ignoring case and spacing
    commandline: str = "sticky"      # sticky | allow: local .rpm files may change vendor
    report: bool = True              # print held-back updates
    hold_dependents: bool = True     # also hold updates that need a held one
    read_dnf5: bool = True
    read_zypp: bool = True
    policy_dirs: List[str] = field(default_factory=list)   # extra, host paths
    dnf5_dirs: List[str] = field(default_factory=list)
    zypp_dirs: List[str] = field(default_factory=list)
    state_dir: str = ""              # host path; "" = STATE_DIR under the root

    KEYS = ("enabled", "enforce", "normalize", "commandline", "report", "hold_dependents",
            "read_dnf5", "read_zypp", "policy_dirs", "dnf5_dirs", "zypp_dirs", "state_dir")

    @classmethod
    def from_mapping(cls, values):
        s = cls()
        for key, value in values.items():
            key = key.strip().lower()
            if key not in cls.KEYS:
                raise PolicyError("sticky-vendor.conf: unknown option %r (known: %s)"
                                  % (key, ", ".join(cls.KEYS)))
            if key == "enabled":          # dnf's own switch for loading the plugin
                continue
            if key in ("enforce", "normalize", "report", "hold_dependents", "read_dnf5",
                       "read_zypp"):
                setattr(s, key, _bool(key, value))
            elif key == "commandline":
                s.commandline = _choice(key, value, ("sticky", "allow"))
            elif key in ("policy_dirs", "dnf5_dirs", "zypp_dirs"):
                setattr(s, key, _dirs(value))
            elif key == "state_dir":
                s.state_dir = value.strip()
        return s

    # -- locations for an install root --
    def our_dirs(self, root):
        return [under(root, d) for d in OUR_DIRS] + list(self.policy_dirs)

    def dnf5_dir_list(self, root):
        if not self.read_dnf5:
            return list(self.dnf5_dirs)
        return [under(root, d) for d in DNF5_DIRS] + list(self.dnf5_dirs)

    def zypp_dir_list(self, root):
        if not self.read_zypp:
            return list(self.zypp_dirs)
        return [under(root, d) for d in ZYPP_DIRS] + list(self.zypp_dirs)

    def state_path(self, root):
        return self.state_dir or under(root, STATE_DIR)


def under(root, path):
    """`path` inside install root `root`."""
    root = root or "/"
    return os.path.join(root, path.lstrip("/"))

"""What rpmcow needs from the system, checked with a message a user can act
on: rpm's Python bindings for this Python, an rpm in the range rpmcow is
tested on (docs/compatibility.md).  Called by the commands that need rpm,
before they touch a package."""
import sys

from .errors import RpmcowError

OLDEST_RPM = (4, 16)          # CentOS Stream / RHEL 9
NEWEST_RPM = (6, 1)           # Debian sid's, standing in for Fedora 43-45


class UnsupportedError(RpmcowError):
    """The system lacks something rpmcow needs."""


def _version(text):
    out = []
    for part in str(text).split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out + [0] * (2 - len(out)))


def rpm_module():
    """rpm's Python bindings, or UnsupportedError saying how to get them."""
    try:
        import rpm
    except ImportError as exc:
        raise UnsupportedError(
            "rpm's Python bindings are not available to %s (%s): install python3-rpm, and "
            "run rpmcow with the system's Python (a virtual environment needs "
            "--system-site-packages)" % (sys.executable, exc)) from None
    return rpm


def check_rpm(warn=None):
    """The rpm version as a tuple; UnsupportedError where it is older than
    rpmcow supports, a warning (through warn) where it is newer than tested."""
    rpm = rpm_module()
    version = _version(getattr(rpm, "__version__", "0"))
    if version < OLDEST_RPM:
        raise UnsupportedError("rpm %s is older than %d.%d, the oldest rpmcow supports"
                               % (rpm.__version__, *OLDEST_RPM))
    if version > NEWEST_RPM and warn is not None:
        warn("rpm %s is newer than %d.%d, the newest rpmcow was tested with: report what "
             "does not work" % (rpm.__version__, *NEWEST_RPM))
    return version

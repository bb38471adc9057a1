"""The one exception hierarchy of rpmcow, and the exit code of each kind.

Every failure a user can see is an ``RpmcowError`` with a one-line message;
``rpmcow.cli`` turns it into ``rpmcow: <message>`` and the exit code below.
"""


class RpmcowError(Exception):
    """Base of every error rpmcow reports to a user."""

    exit_code = 1


class UsageError(RpmcowError):
    """The command line or an option value is wrong."""

    exit_code = 2


class BadPackageError(RpmcowError):
    """The input is not a valid package (format, truncation, trailing data)."""


class DigestMismatchError(BadPackageError):
    """A file's content, or the payload, does not match the header's digest."""


class VerificationError(RpmcowError):
    """A package, or a stored verdict, fails verification or policy."""


class OutputError(RpmcowError):
    """The output could not be written."""


class NotTranscodedError(RpmcowError):
    """A file that should be an extents file is not one."""


class ResourceError(RpmcowError):
    """The machine ran out of memory (or threads) while working on a file:
    nothing is said about the file itself, which may be perfectly good."""

    exit_code = 3


class BadExtentsError(RpmcowError):
    """An extents file is damaged or inconsistent."""


class InternalError(RpmcowError):
    """A bug in rpmcow: please report it with the command that caused it."""

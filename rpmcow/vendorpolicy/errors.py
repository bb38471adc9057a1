"""Errors of the vendor policy engine (part of rpmcow's one hierarchy).

The dnf plugin turns every one of them into ``dnf.exceptions.Error`` so that
dnf aborts (fails closed) instead of logging and carrying on.
"""
from rpmcow.errors import RpmcowError, UsageError


class PolicyError(RpmcowError):
    """A vendor policy cannot be used."""


class PolicyFileError(PolicyError):
    """A policy file is invalid; the message starts with ``FILE:LINE:``."""

    def __init__(self, path, line, message):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = "%s:%d" % (self.path, line) if line else self.path
        super().__init__("%s: %s" % (where, message))


class StateError(PolicyError):
    """The persistent state (toggle, pins, audit log) cannot be read or written."""


class CommandError(PolicyError):
    """A `vendor` subcommand cannot do what it was asked (exit 1, as dnf's
    own command errors)."""


class VendorUsageError(UsageError):
    """A `dnf vendor` command line is wrong."""

"""The transcoding deny list: packages that are passed through unchanged.

Upstream reads ``LIBREPO_TRANSCODE_RPMS_DENYLIST="a,b"`` and matches each
entry as a *substring* of the package name, so ``kernel`` also hits
``kernel-core`` and ``mykernel-tools``.  We match whole package names, and
shell globs where the entry has glob characters: ``kernel*`` hits both,
``kernel`` hits only ``kernel``.
"""
import fnmatch
import os

ENV = "LIBREPO_TRANSCODE_RPMS_DENYLIST"


def parse(text):
    """Entries of a comma (or whitespace) separated list."""
    return [e for e in text.replace(",", " ").split() if e]


def from_env(environ=None):
    return parse((environ if environ is not None else os.environ).get(ENV, ""))


def matches(name, patterns):
    """The first pattern that denies package `name`, or None."""
    for pat in patterns:
        if fnmatch.fnmatchcase(name, pat):
            return pat
    return None

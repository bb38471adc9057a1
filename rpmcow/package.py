"""What a package's header says, as read by librpm.

The C core frames the prologue (lead, signature header, main header); this
module hands those bytes to librpm -- rpm's own header parser and checks, not
a reimplementation -- for the package's identity and payload compressor.
The file table (digest, size, kind and archive name of every file) is then
read by the C core from the same, accepted, header (csrc/filetab.c).
"""
import contextlib
import os
from dataclasses import dataclass

import rpm

from . import native
from .errors import BadPackageError

# PAYLOADCOMPRESSOR values rpm writes; a missing tag means gzip (rpm's default)
_COMPRESSORS = {
    None: "gzip", "gzip": "gzip", "bzip2": "bzip2", "xz": "xz", "lzma": "lzma",
    "zstd": "zstd", "identity": "none", "ufdio": "none",
}


@contextlib.contextmanager
def quiet_rpm():
    """librpm logs its own complaints to stderr; ours are reported once, by us."""
    rpm.setVerbosity(rpm.RPMLOG_EMERG)
    try:
        yield
    finally:
        rpm.setVerbosity(rpm.RPMLOG_WARNING)


def load_header(prologue_bytes, vsflags=None):
    """librpm's header object for lead+signature+header bytes.

    vsflags: which header checks librpm makes while reading (default: header
    digests, no signatures; the verify stage decides about signatures).
    """
    if vsflags is None:
        vsflags = rpm._RPMVSF_NOSIGNATURES
    fd = os.memfd_create("rpmcow-header", os.MFD_CLOEXEC)
    try:
        os.write(fd, prologue_bytes)
        os.lseek(fd, 0, os.SEEK_SET)
        ts = rpm.TransactionSet()
        ts.setVSFlags(vsflags)
        with quiet_rpm():
            try:
                return ts.hdrFromFdno(fd)
            except rpm.error as exc:
                raise BadPackageError("bad package header: %s" % exc) from None
    finally:
        os.close(fd)


# the file table is built in C from the header's own file tags
FileTable = native.FileTable


@dataclass
class Package:
    header: object
    name: str
    nevra: str
    compressor: str
    files: FileTable


def check_files(h):
    """librpm's own checks of the file tags (rpm.files: every per-file array,
    user and group names, classes, dependencies...): a header rpm could not
    install is refused, even where the C file table needs less of it."""
    if h[rpm.RPMTAG_BASENAMES] or h[rpm.RPMTAG_OLDFILENAMES]:
        try:
            rpm.files(h)
        except (ValueError, TypeError) as exc:
            raise BadPackageError("inconsistent file information in the header (%s)"
                                  % exc) from None


def nevra(h):
    """name-[epoch:]version-release.arch, with arch "src" for source packages
    (their header's arch is the build host's)."""
    if h[rpm.RPMTAG_SOURCEPACKAGE]:
        return "%s-%s.src" % (h[rpm.RPMTAG_NAME], h["evr"])
    return h["nevra"]


def parse(prologue, header=None, files_checked=True):
    """Package facts from a native.Prologue (and its header, if loaded).
    files_checked=False leaves check_files to the caller."""
    h = header if header is not None else load_header(prologue.data)
    if files_checked:
        check_files(h)
    fmt = h[rpm.RPMTAG_PAYLOADFORMAT]
    if fmt not in (None, "cpio"):
        raise BadPackageError("unsupported payload format %r" % fmt)
    comp_tag = h[rpm.RPMTAG_PAYLOADCOMPRESSOR]
    compressor = _COMPRESSORS.get(comp_tag)
    if compressor is None:
        raise BadPackageError("unsupported payload compressor %r" % comp_tag)
    return Package(
        header=h,
        name=h[rpm.RPMTAG_NAME],
        nevra=nevra(h),
        compressor=compressor,
        files=native.FileTable(prologue.main_header),
    )

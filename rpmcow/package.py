"""What a package's header says, as read by librpm.

The C core frames the prologue (lead, signature header, main header); this
module hands those bytes to librpm -- rpm's own header parser and checks, not
a reimplementation -- for the package's identity and payload compressor.
The file table (digest, size, kind and archive name of every file) is read
by the C core from the same bytes (csrc/filetab.c), while rpmkeys judges
them; librpm's checks of the file tags (check_files) follow while the
payload streams.
"""
import contextlib
import os
import struct
from collections import namedtuple

import rpm

from . import native
from .errors import BadPackageError

# tags read from the raw headers before librpm has read them (header_facts)
_TAG_NAME, _TAG_PAYLOADFORMAT, _TAG_PAYLOADCOMPRESSOR = 1000, 1124, 1125
# PAYLOADDIGESTALGO (rpm < 6), renamed PAYLOADSHA256ALGO in rpm 6, whose
# Python bindings have no RPMTAG_PAYLOADDIGESTALGO: by number (rpmtag.h)
_TAG_PAYLOADDIGESTALGO = 5093
_SIGTAG_MD5 = 1004
_TAG_RPMFORMAT = 5114        # rpm 6: the package format (6 for v6 packages)
# librpm 6 ignores the signature header's legacy tags (>= 1000: the MD5
# among them) in v6 packages (lib/package.cc headerMergeLegacySigs); a
# librpm that knows the tag knows the format
_DROPS_V6_LEGACY = hasattr(rpm, "RPMTAG_RPMFORMAT")
_TYPE_INT32, _TYPE_STRING, _TYPE_BIN = 4, 6, 7

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


def load_header(prologue, vsflags=None, digests=True):
    """librpm's header object for a native.Prologue (librpm reads its memory
    file), or the lead+signature+header bytes of one.

    vsflags: which header checks librpm makes while reading (default: header
    digests, no signatures; the verify stage decides about signatures).
    digests=False: no header digests either, for bytes whose header digests
    rpmkeys has just verified (4 MB of hashing for a large package).
    """
    if vsflags is None:
        vsflags = rpm._RPMVSF_NOSIGNATURES | (0 if digests else rpm._RPMVSF_NODIGESTS)
    fd = native.open_prologue(prologue)
    try:
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


# Named tuples, not dataclasses: this module is imported while rpmkeys' header
# check runs, and dataclasses (through inspect) costs ~6 ms to import and
# ~2 ms at every interpreter exit.
class Package(namedtuple("Package", "header name nevra compressor files")):
    """What librpm read: the header, and the facts the transcoder uses
    (files: the FileTable)."""
    __slots__ = ()


# rpmfiles.h: RPMFI_NOFILEDIGESTS (not exported by the Python binding)
_RPMFI_NOFILEDIGESTS = 1 << 10


def check_files(h):
    """librpm's own checks of the file tags (rpm.files: every per-file array,
    user and group names, classes, dependencies...): a header rpm could not
    install is refused, even where the C file table needs less of it.

    All but the file digests: the C file table has checked their count and
    every hex digit already, and decoding 25k of them again was 40% of this
    check's time (which runs during the layout, competing for the CPU)."""
    if rpm.RPMTAG_BASENAMES in h or rpm.RPMTAG_OLDFILENAMES in h:   # not h[...]: 25k strings
        try:
            rpm.files(h, rpm.RPMTAG_BASENAMES, _RPMFI_NOFILEDIGESTS)
        except (ValueError, TypeError) as exc:
            raise BadPackageError("inconsistent file information in the header (%s)"
                                  % exc) from None


def nevra(h):
    """name-[epoch:]version-release.arch, with arch "src" for source packages
    (their header's arch is the build host's)."""
    if h[rpm.RPMTAG_SOURCEPACKAGE]:
        return "%s-%s.src" % (h[rpm.RPMTAG_NAME], h["evr"])
    return h["nevra"]


class HeaderFacts(namedtuple("HeaderFacts", "name compressor payload_digest_algo sigmd5")):
    """What the transcoder needs before librpm has read the header, read from
    the raw headers' index (the header check by rpmkeys runs meanwhile, and
    librpm reads the header while the payload streams; cross_check then
    requires librpm to read the same).  payload_digest_algo: PGPHASHALGO_*
    or None; sigmd5: the legacy header+payload MD5 (bytes) or None."""
    __slots__ = ()


def _index(data, start, length):
    """The index of the header blob data[start:start + length] (magic, il,
    dl, index, store): {tag: (type, data offset, count)} (first entry of a
    tag), and where its data store is in `data`, as (begin, end).  Offsets,
    not slices: the main header is megabytes, and this runs before the
    payload may start."""
    if length < 16:
        raise BadPackageError("bad package header: header too short")
    il, dl = struct.unpack_from(">II", data, start + 8)
    end = 16 + 16 * il
    if end + dl > length:
        raise BadPackageError("bad package header: index or data beyond the header")
    entries = {}
    for tag, typ, off, count in struct.iter_unpack(
            ">IIII", memoryview(data)[start + 16:start + end]):
        entries.setdefault(tag, (typ, off, count))
    return entries, (start + end, start + end + dl)


def _string(data, entries, store, tag):
    if tag not in entries:
        return None
    typ, off, _ = entries[tag]
    begin, end = store
    nul = data.find(b"\0", begin + off, end) \
        if typ == _TYPE_STRING and off < end - begin else -1
    if nul < 0:
        raise BadPackageError("bad package header: tag %d is not a string" % tag)
    return data[begin + off:nul].decode("utf-8", "surrogateescape")


def _int32(data, entries, store, tag):
    if tag not in entries:
        return None
    typ, off, count = entries[tag]
    begin, end = store
    if typ != _TYPE_INT32 or count < 1 or off + 4 > end - begin:
        raise BadPackageError("bad package header: tag %d is not an integer" % tag)
    return struct.unpack_from(">I", data, begin + off)[0]


def _bin(data, entries, store, tag):
    if tag not in entries:
        return None
    typ, off, count = entries[tag]
    begin, end = store
    if typ != _TYPE_BIN or off + count > end - begin:
        raise BadPackageError("bad package header: tag %d is not binary data" % tag)
    return data[begin + off:begin + off + count]


def _compressor(comp_tag):
    compressor = _COMPRESSORS.get(comp_tag)
    if compressor is None:
        raise BadPackageError("unsupported payload compressor %r" % comp_tag)
    return compressor


def header_facts(prologue):
    """HeaderFacts of a native.Prologue, from its raw bytes."""
    data = prologue.data
    main, store = _index(data, prologue.hdr_off, prologue.hdr_len)
    sig, sig_store = _index(data, prologue.sig_off, prologue.sig_len)
    fmt = _string(data, main, store, _TAG_PAYLOADFORMAT)
    if fmt not in (None, "cpio"):
        raise BadPackageError("unsupported payload format %r" % fmt)
    sigmd5 = _bin(data, sig, sig_store, _SIGTAG_MD5)
    if sigmd5 is not None and _DROPS_V6_LEGACY and \
            (_int32(data, main, store, _TAG_RPMFORMAT) or 0) >= 6:
        sigmd5 = None
    return HeaderFacts(
        name=_string(data, main, store, _TAG_NAME) or "",
        compressor=_compressor(_string(data, main, store, _TAG_PAYLOADCOMPRESSOR)),
        payload_digest_algo=_int32(data, main, store, _TAG_PAYLOADDIGESTALGO),
        sigmd5=sigmd5)


def cross_check(facts, pkg):
    """librpm must read the header as header_facts did."""
    h = pkg.header
    librpm = HeaderFacts(name=pkg.name, compressor=pkg.compressor,
                         payload_digest_algo=h[_TAG_PAYLOADDIGESTALGO],
                         sigmd5=h[rpm.RPMTAG_SIGMD5] or None)
    if librpm != facts:
        raise BadPackageError("bad package header: librpm reads it differently (%s, not %s)"
                              % (librpm, facts))


def parse(prologue, header=None, files_checked=True, files=None):
    """Package facts from a native.Prologue (and its header, if loaded).
    files_checked=False leaves check_files to the caller; files: its
    FileTable, if built already."""
    h = header if header is not None else load_header(prologue)
    if files_checked:
        check_files(h)
    fmt = h[rpm.RPMTAG_PAYLOADFORMAT]
    if fmt not in (None, "cpio"):
        raise BadPackageError("unsupported payload format %r" % fmt)
    return Package(
        header=h,
        name=h[rpm.RPMTAG_NAME],
        nevra=nevra(h),
        compressor=_compressor(h[rpm.RPMTAG_PAYLOADCOMPRESSOR]),
        files=files if files is not None else native.FileTable(prologue.main_header),
    )

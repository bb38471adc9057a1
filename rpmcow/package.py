"""What a package's header says, as read by librpm.

The C core frames the prologue (lead, signature header, main header); this
module hands those bytes to librpm -- rpm's own header parser and checks, not
a reimplementation -- and derives what the transcoder needs: the payload
compressor and the file table (digest, size, kind and archive name of every
file).
"""
import contextlib
import os
import stat
from dataclasses import dataclass, field

import rpm

from . import digests
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


@dataclass
class FileTable:
    """Per-file facts for the C layout, in header order."""
    count: int = 0
    algo: digests.Algo = digests.DEFAULT_FILE_ALGO
    digests: list = field(default_factory=list)        # bytes (b"" if none)
    sizes: list = field(default_factory=list)
    stripped_sizes: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    ngroups: int = 0
    paths: list = field(default_factory=list)           # archive names (bytes)
    kinds: list = field(default_factory=list)           # KIND_* of each file
    linktos: list = field(default_factory=list)         # symlink targets (bytes)
    link_sets: list = field(default_factory=list)       # hardlink sets: sorted fx lists

    REG, KEYED, NOCONTENT, GHOST = 1, 2, 4, 8
    KIND_GHOST, KIND_REG, KIND_DIR, KIND_LINK, KIND_OTHER = range(5)

    def archive_order(self):
        """File indices in the order rpm's own writer puts them in the
        archive: files outside hardlink sets by index, then each set (by its
        first member) with its members in order, the content on the last."""
        in_set = {fx for s in self.link_sets for fx in s}
        order = [fx for fx in range(self.count)
                 if self.kinds[fx] != self.KIND_GHOST and fx not in in_set]
        for s in sorted(self.link_sets):
            order.extend(s)
        return order

    @property
    def keysize(self):
        # upstream writes key size 0 for a package without files
        return self.algo.size if self.count else 0

    def to_c(self, ffi, ft):
        """Fill the cffi struct `ft`; returns what must stay alive meanwhile."""
        order = sorted(range(self.count), key=lambda i: self.paths[i])
        names = [ffi.new("char[]", self.paths[i]) for i in order]
        keep = {
            "digest_name": ffi.new("char[]", self.algo.openssl.encode()),
            "digests": ffi.new("uint8_t[]", b"".join(
                d if d else bytes(self.keysize) for d in self.digests) or b"\0"),
            "sizes": ffi.new("uint64_t[]", self.sizes or [0]),
            "stripped_sizes": ffi.new("uint64_t[]", self.stripped_sizes or [0]),
            "flags": ffi.new("uint8_t[]", self.flags or [0]),
            "groups": ffi.new("int32_t[]", self.groups or [0]),
            "names": ffi.new("const char *[]", names or [ffi.NULL]),
            "name_fx": ffi.new("uint32_t[]", order or [0]),
        }
        ft.count = self.count
        ft.keysize = self.keysize
        ft.ngroups = self.ngroups
        for key, value in keep.items():
            setattr(ft, key, value)
        keep["strings"] = names
        return keep

    def group_digest(self):
        """digest bytes of each group, by group number."""
        out = [None] * self.ngroups
        for d, g in zip(self.digests, self.groups):
            if g >= 0 and out[g] is None:
                out[g] = d
        return out


@dataclass
class Package:
    header: object
    name: str
    nevra: str
    compressor: str
    files: FileTable
    payload_digest_algo: object = None   # digests.Algo or None
    payload_digests: tuple = ()          # hex strings from the header

    @property
    def is_source(self):
        return bool(self.header[rpm.RPMTAG_SOURCEPACKAGE])


def _archive_name(f):
    # rpm names archive members "./" + dirname + basename ("basename" for
    # source packages); the C side strips the "./" and "/" the same way
    return f.name.lstrip("/").encode("utf-8", "surrogateescape")


def _file_table(h):
    algo_id = h[rpm.RPMTAG_FILEDIGESTALGO] or 1
    algo = digests.by_id(algo_id)
    try:
        files = rpm.files(h)
    except (ValueError, TypeError) as exc:
        raise BadPackageError("inconsistent file information in the header (%s)" % exc) \
            from None
    table = FileTable(count=len(files), algo=algo or digests.DEFAULT_FILE_ALGO)
    if algo is None and len(files):
        raise BadPackageError("unsupported file digest algorithm %d" % algo_id)
    group_of = {}
    sets = set()
    for f in files:
        mode = f.mode
        ghost = bool(f.fflags & rpm.RPMFILE_GHOST)
        reg = stat.S_ISREG(mode) and not ghost
        hexdigest = f.digest or ""
        digest = b""
        if reg and hexdigest and hexdigest.strip("0"):
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                raise BadPackageError("bad file digest for %s" % f.name) from None
            if len(digest) != table.keysize:
                raise BadPackageError("file digest of %s has %d bytes, %s needs %d"
                                      % (f.name, len(digest), table.algo.name, table.keysize))
        flags = ((FileTable.REG if reg else 0) | (FileTable.KEYED if digest else 0)
                 | (FileTable.GHOST if ghost else 0))
        if reg and f.nlink > 1:
            members = [l.fx for l in f.links
                       if not (l.fflags & rpm.RPMFILE_GHOST) and stat.S_ISREG(l.mode)]
            last = max(members) if members else f.fx
            if len(members) > 1:
                sets.add(tuple(sorted(members)))
            if last != f.fx:
                flags |= FileTable.NOCONTENT
        if digest:
            group = group_of.setdefault(digest, len(group_of))
        else:
            group = -1
        size = f.size
        if stat.S_ISDIR(mode) or ghost:
            stripped = 0
        elif stat.S_ISLNK(mode):
            stripped = len((f.linkto or "").encode("utf-8", "surrogateescape"))
        elif stat.S_ISREG(mode):
            stripped = 0 if flags & FileTable.NOCONTENT else size
        else:
            stripped = 0
        table.digests.append(digest)
        table.sizes.append(size)
        table.stripped_sizes.append(stripped)
        table.flags.append(flags)
        table.groups.append(group)
        table.paths.append(_archive_name(f))
        table.kinds.append(FileTable.KIND_GHOST if ghost else
                           FileTable.KIND_REG if stat.S_ISREG(mode) else
                           FileTable.KIND_DIR if stat.S_ISDIR(mode) else
                           FileTable.KIND_LINK if stat.S_ISLNK(mode) else FileTable.KIND_OTHER)
        table.linktos.append((f.linkto or "").encode("utf-8", "surrogateescape")
                             if stat.S_ISLNK(mode) else b"")
    table.ngroups = len(group_of)
    table.link_sets = sorted(list(s) for s in sets)
    return table


def nevra(h):
    """name-[epoch:]version-release.arch, with arch "src" for source packages
    (their header's arch is the build host's)."""
    if h[rpm.RPMTAG_SOURCEPACKAGE]:
        return "%s-%s.src" % (h[rpm.RPMTAG_NAME], h["evr"])
    return h["nevra"]


def parse(prologue):
    """Package facts from a native.Prologue."""
    h = load_header(prologue.data)
    fmt = h[rpm.RPMTAG_PAYLOADFORMAT]
    if fmt not in (None, "cpio"):
        raise BadPackageError("unsupported payload format %r" % fmt)
    comp_tag = h[rpm.RPMTAG_PAYLOADCOMPRESSOR]
    compressor = _COMPRESSORS.get(comp_tag)
    if compressor is None:
        raise BadPackageError("unsupported payload compressor %r" % comp_tag)
    palgo = None
    if h[rpm.RPMTAG_PAYLOADDIGEST]:
        palgo = digests.by_id(h[rpm.RPMTAG_PAYLOADDIGESTALGO] or 8)
    return Package(
        header=h,
        name=h[rpm.RPMTAG_NAME],
        nevra=nevra(h),
        compressor=compressor,
        files=_file_table(h),
        payload_digest_algo=palgo,
        payload_digests=tuple(h[rpm.RPMTAG_PAYLOADDIGEST] or ()),
    )

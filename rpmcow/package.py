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


def _enc(text):
    return (text or "").encode("utf-8", "surrogateescape")


def _array(h, tag, n, default=None):
    v = h[tag]
    if v is None or (isinstance(v, (list, tuple)) and not v):
        if default is not None:
            return [default] * n
        raise BadPackageError("inconsistent file information in the header (no %s)"
                              % rpm.tagnames.get(tag, tag))
    if not isinstance(v, (list, tuple)):
        v = [v]
    if len(v) != n:
        raise BadPackageError("inconsistent file information in the header (%s has %d "
                              "entries for %d files)" % (rpm.tagnames.get(tag, tag), len(v), n))
    return v


def _file_table(h):
    """The file table from the header's arrays (one pass, no per-file
    objects: this runs before the payload starts, on every package)."""
    basenames = h[rpm.RPMTAG_BASENAMES] or []
    n = len(basenames)
    algo_id = h[rpm.RPMTAG_FILEDIGESTALGO] or 1
    algo = digests.by_id(algo_id)
    if algo is None and n:
        raise BadPackageError("unsupported file digest algorithm %d" % algo_id)
    table = FileTable(count=n, algo=algo or digests.DEFAULT_FILE_ALGO)
    if not n:
        return table
    try:
        rpm.files(h)        # librpm's own consistency checks of the file tags
    except (ValueError, TypeError) as exc:
        raise BadPackageError("inconsistent file information in the header (%s)" % exc) \
            from None
    dirnames = h[rpm.RPMTAG_DIRNAMES] or []
    dirindexes = _array(h, rpm.RPMTAG_DIRINDEXES, n)
    modes = _array(h, rpm.RPMTAG_FILEMODES, n)
    fflags = _array(h, rpm.RPMTAG_FILEFLAGS, n, 0)
    sizes = _array(h, rpm.RPMTAG_LONGFILESIZES, n)
    hexdigests = _array(h, rpm.RPMTAG_FILEDIGESTS, n, "")
    linktos = _array(h, rpm.RPMTAG_FILELINKTOS, n, "")
    inodes = _array(h, rpm.RPMTAG_FILEINODES, n, 0)
    devices = _array(h, rpm.RPMTAG_FILEDEVICES, n, 0)
    if any(not 0 <= d < len(dirnames) for d in dirindexes):
        raise BadPackageError("inconsistent file information in the header (bad DIRINDEXES)")
    ghost_flag = rpm.RPMFILE_GHOST
    keysize = table.keysize
    S_IFMT, REG, DIR, LNK = 0o170000, 0o100000, 0o040000, 0o120000

    # hardlink sets: regular, non-ghost files sharing (device, inode)
    by_inode = {}
    for i in range(n):
        if modes[i] & S_IFMT == REG and not fflags[i] & ghost_flag:
            by_inode.setdefault((devices[i], inodes[i]), []).append(i)
    sets = [m for m in by_inode.values() if len(m) > 1]
    not_last = {fx for m in sets for fx in m[:-1]}

    group_of = {}
    paths = table.paths
    for i in range(n):
        mode = modes[i] & S_IFMT
        ghost = bool(fflags[i] & ghost_flag)
        reg = mode == REG and not ghost
        digest = b""
        hexdigest = hexdigests[i]
        if reg and hexdigest and hexdigest.strip("0"):
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                raise BadPackageError("bad file digest for %s%s" % (
                    dirnames[dirindexes[i]], basenames[i])) from None
            if len(digest) != keysize:
                raise BadPackageError("file digest of %s%s has %d bytes, %s needs %d" % (
                    dirnames[dirindexes[i]], basenames[i], len(digest), table.algo.name,
                    keysize))
        flags = ((FileTable.REG if reg else 0) | (FileTable.KEYED if digest else 0)
                 | (FileTable.GHOST if ghost else 0)
                 | (FileTable.NOCONTENT if i in not_last else 0))
        if digest:
            group = group_of.setdefault(digest, len(group_of))
        else:
            group = -1
        link = _enc(linktos[i]) if mode == LNK else b""
        if ghost or mode == DIR:
            stripped = 0
        elif mode == LNK:
            stripped = len(link)
        elif mode == REG:
            stripped = 0 if i in not_last else sizes[i]
        else:
            stripped = 0
        table.digests.append(digest)
        table.stripped_sizes.append(stripped)
        table.flags.append(flags)
        table.groups.append(group)
        # rpm names archive members "./" + dirname + basename ("basename"
        # for source packages); the C side strips "./" and "/" the same way
        paths.append(_enc(dirnames[dirindexes[i]] + basenames[i]).lstrip(b"/"))
        table.kinds.append(FileTable.KIND_GHOST if ghost else
                           FileTable.KIND_REG if mode == REG else
                           FileTable.KIND_DIR if mode == DIR else
                           FileTable.KIND_LINK if mode == LNK else FileTable.KIND_OTHER)
        table.linktos.append(link)
    table.sizes = list(sizes)
    table.ngroups = len(group_of)
    table.link_sets = sorted(sets)
    return table


def nevra(h):
    """name-[epoch:]version-release.arch, with arch "src" for source packages
    (their header's arch is the build host's)."""
    if h[rpm.RPMTAG_SOURCEPACKAGE]:
        return "%s-%s.src" % (h[rpm.RPMTAG_NAME], h["evr"])
    return h["nevra"]


def parse(prologue, header=None):
    """Package facts from a native.Prologue (and its header, if loaded)."""
    h = header if header is not None else load_header(prologue.data)
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
        files=_file_table(h),
    )

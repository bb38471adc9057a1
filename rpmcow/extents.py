"""The extents file format ("KWTSH100"): its trailing sections and footer.

Layout (all integers little-endian; see docs/format.md):

    lead | signature header (+pad) | main header | pad | blobs...
    | S: int32 rc, uint64 len, text
    | T: uint32 count, uint32 keysize, count x (digest, uint64 offset)
    | C: int64 input_len, uint32 n, n x (uint32 name_len, uint32 digest_len, name, digest)
    | zero padding | footer: int64 S_offset, int64 T_offset, int64 C_offset, uint64 magic

This module writes the sections after the blobs and reads them back (both
our files and upstream's, V1 and V2), bounds-checking everything it reads.
"""
import operator
import os
import struct

from .errors import BadExtentsError, NotTranscodedError

MAGIC = b"KWTSH100"
MAGIC_INT = struct.unpack("<Q", MAGIC)[0]      # 3472329499408095051
FOOTER_V2 = struct.Struct("<qqqQ")
FOOTER_V1 = struct.Struct("<qqQ")
S_HEAD = struct.Struct("<iQ")
T_HEAD = struct.Struct("<II")
C_HEAD = struct.Struct("<qI")
C_ALGO = struct.Struct("<II")
OFFSET = struct.Struct("<Q")

VALID_KEYSIZES = (16, 20, 28, 32, 48, 64)
MAX_C_ALGOS = 16
MAX_S_TEXT = 1 << 20


class Sections:
    """What follows the blobs.

    s_rc, s_text: the S section (rc None in a V1 file); keysize and table:
    the T section, [(digest bytes, offset)] sorted by digest, or, when
    writing, the entries already encoded as (count, bytes); input_len and
    input_digests [(name str, digest bytes)]: the C section.  Where a file
    was read: its version (1 or 2), the sections' offsets and its size.

    A plain class, not a dataclass: the transcoder imports this module while
    rpmkeys' header check runs (see package.Package)."""

    def __init__(self, s_rc, s_text, keysize, table, input_len, input_digests,
                 version=2, s_offset=0, t_offset=0, c_offset=0, size=0):
        self.s_rc, self.s_text = s_rc, s_text
        self.keysize, self.table = keysize, table
        self.input_len, self.input_digests = input_len, input_digests
        self.version, self.size = version, size
        self.s_offset, self.t_offset, self.c_offset = s_offset, t_offset, c_offset
        self.t_sha256 = None         # hex SHA-256 of the T section as read
        self.t_raw = None            # the T section's entries as read (bytes)
        self._index = None

    def __repr__(self):
        return "Sections(version=%d, s_rc=%r, keysize=%d, %d table entries, input_len=%d)" % (
            self.version, self.s_rc, self.keysize,
            self.table[0] if isinstance(self.table, tuple) else len(self.table), self.input_len)

    def lookup(self, digest):
        """Offset of the blob whose content has file digest `digest`."""
        return self.index().get(digest)

    def t_entries(self):
        """The T section's entries as bytes (digest, little-endian offset;
        sorted by digest), as read or as they would be written."""
        if self.t_raw is not None:
            return self.t_raw
        return encode_t(self)[T_HEAD.size:]

    def index(self):
        """{file digest: blob offset}."""
        if self._index is None:
            self._index = dict(self.table)
        return self._index


def encode_t(sections):
    """Bytes of the T section (what the record's table-sha256 covers)."""
    if isinstance(sections.table, tuple):
        count, raw = sections.table
        return T_HEAD.pack(count, sections.keysize) + raw
    entries = sorted(sections.table)
    return T_HEAD.pack(len(entries), sections.keysize) + b"".join(
        d + OFFSET.pack(off) for d, off in entries)


def encode_sections(s_offset, sections, page_size, t=None):
    """Bytes of S, T, C, padding and footer for a file whose S starts at
    s_offset (t: encode_t's bytes, where the caller has them).  Padding
    follows upstream: S_end + 24 rounded up to a page."""
    text = sections.s_text
    s = S_HEAD.pack(sections.s_rc, len(text)) + text
    if t is None:
        t = encode_t(sections)
    c = C_HEAD.pack(sections.input_len, len(sections.input_digests)) + b"".join(
        C_ALGO.pack(len(name), len(dig)) + name.encode() + dig
        for name, dig in sections.input_digests)
    t_offset = s_offset + len(s)
    c_offset = t_offset + len(t)
    pad = -(t_offset + 24) % page_size
    footer = FOOTER_V2.pack(s_offset, t_offset, c_offset, MAGIC_INT)
    return s + t + c + bytes(pad) + footer


def is_transcoded(fd):
    """True if the file ends with the KWTSH100 magic (upstream's test)."""
    size = os.fstat(fd).st_size
    return size >= FOOTER_V1.size and os.pread(fd, 8, size - 8) == MAGIC


def _read(fd, offset, length, what):
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise BadExtentsError("extents file is truncated in the %s" % what)
    return data


def _parse_s(fd, s_offset, t_offset):
    if t_offset - s_offset < S_HEAD.size:
        raise BadExtentsError("S section is too short")
    rc, length = S_HEAD.unpack(_read(fd, s_offset, S_HEAD.size, "S section"))
    if length != t_offset - s_offset - S_HEAD.size or length > MAX_S_TEXT:
        raise BadExtentsError("S section length %d does not fit its place" % length)
    return rc, _read(fd, s_offset + S_HEAD.size, length, "S section")


def _parse_t(fd, t_offset, c_offset, blob_end):
    if c_offset - t_offset < T_HEAD.size:
        raise BadExtentsError("T section is too short")
    count, keysize = T_HEAD.unpack(_read(fd, t_offset, T_HEAD.size, "T section"))
    if keysize not in VALID_KEYSIZES and not (keysize == 0 and count == 0):
        raise BadExtentsError("T section key size %d is not a digest size" % keysize)
    entry = keysize + OFFSET.size
    if count * entry != c_offset - t_offset - T_HEAD.size:
        raise BadExtentsError("T section count %d does not fit its place" % count)
    raw = _read(fd, t_offset + T_HEAD.size, count * entry, "T section")
    import hashlib              # reading only: a transcode never gets here
    t_sha256 = hashlib.sha256(T_HEAD.pack(count, keysize) + raw).hexdigest()
    table = list(struct.iter_unpack("<%dsQ" % keysize, raw)) if count else []
    digests = [d for d, _ in table]
    offsets = [off for _, off in table]
    if count and max(offsets) > blob_end:
        i = next(i for i, off in enumerate(offsets) if off > blob_end)
        raise BadExtentsError("T entry %d points past the blobs" % i)
    if not all(map(operator.lt, digests, digests[1:])):
        raise BadExtentsError("T section is not sorted and unique")
    return keysize, table, t_sha256, raw


def _parse_c(fd, c_offset, end):
    if end - c_offset < C_HEAD.size:
        raise BadExtentsError("C section is too short")
    raw = _read(fd, c_offset, min(end - c_offset, 64 * 1024), "C section")
    input_len, n = C_HEAD.unpack_from(raw, 0)
    if n > MAX_C_ALGOS or input_len < 0:
        raise BadExtentsError("C section is corrupt")
    pos = C_HEAD.size
    out = []
    for _ in range(n):
        if pos + C_ALGO.size > len(raw):
            raise BadExtentsError("C section is truncated")
        nlen, dlen = C_ALGO.unpack_from(raw, pos)
        pos += C_ALGO.size
        if nlen > 64 or dlen > 64 or pos + nlen + dlen > len(raw):
            raise BadExtentsError("C section is corrupt")
        name = raw[pos:pos + nlen].decode("ascii", "replace")
        out.append((name, raw[pos + nlen:pos + nlen + dlen]))
        pos += nlen + dlen
    return input_len, out


def read_sections(fd):
    """Parse and check the sections of an extents file (V2, or V1)."""
    size = os.fstat(fd).st_size
    if not is_transcoded(fd):
        raise NotTranscodedError("not an extents file (no KWTSH100 footer)")
    if size >= FOOTER_V2.size:
        s_off, t_off, c_off, _ = FOOTER_V2.unpack(_read(fd, size - 32, 32, "footer"))
        if 0 < s_off < t_off < c_off <= size - FOOTER_V2.size:
            try:
                rc, text = _parse_s(fd, s_off, t_off)
                keysize, table, t_sha256, raw = _parse_t(fd, t_off, c_off, s_off)
                input_len, dig = _parse_c(fd, c_off, size - FOOTER_V2.size)
                sections = Sections(rc, text, keysize, table, input_len, dig, 2,
                                    s_off, t_off, c_off, size)
                sections.t_sha256 = t_sha256
                sections.t_raw = raw
                return sections
            except BadExtentsError:
                pass   # may be a V1 file whose last 32 bytes merely look like V2
    t_off, c_off, _ = FOOTER_V1.unpack(_read(fd, size - 24, 24, "footer"))
    if not 0 < t_off < c_off <= size - FOOTER_V1.size:
        raise BadExtentsError("footer offsets are inconsistent")
    keysize, table, t_sha256, raw = _parse_t(fd, t_off, c_off, t_off)
    input_len, dig = _parse_c(fd, c_off, size - FOOTER_V1.size)
    sections = Sections(None, b"", keysize, table, input_len, dig, 1, 0, t_off, c_off, size)
    sections.t_sha256 = t_sha256
    sections.t_raw = raw
    return sections

"""Python face of the C core (``rpmcow._core``).

No cffi object and no C error code leaves this module: failures become
``rpmcow.errors`` exceptions carrying the core's one-line message.
"""
import contextlib
import mmap
import os
import signal
from functools import cached_property

from . import digests as _digests, errors

try:
    from ._core import ffi, lib
except ImportError as exc:  # pragma: no cover - a broken install
    raise errors.InternalError(
        "the rpmcow C extension is not built (%s): run 'make setup'" % exc) from exc

_ERRORS = {
    lib.RC_E_IO: errors.OutputError,
    lib.RC_E_FORMAT: errors.BadPackageError,
    lib.RC_E_TRUNCATED: errors.BadPackageError,
    lib.RC_E_TRAILING: errors.BadPackageError,
    lib.RC_E_DIGEST: errors.DigestMismatchError,
    lib.RC_E_NOMEM: errors.ResourceError,
    lib.RC_E_LIMIT: errors.BadPackageError,
    lib.RC_E_INTERNAL: errors.InternalError,
}

# what feed_write() is told of each file (csrc/rpmcow.h: RC_FEED_*)
FEED_NONE, FEED_REG, FEED_LINK, FEED_GATE = (lib.RC_FEED_NONE, lib.RC_FEED_REG,
                                             lib.RC_FEED_LINK, lib.RC_FEED_GATE)


def force_hasher(who):
    """Who hashes file contents in later layouts: "reader", "sink", or None
    (the default: whichever is idle).  For the tests of both paths."""
    lib.rc_layout_force_hasher({"reader": 1, "sink": 0}.get(who, -1))


COMPRESSORS = {
    "none": lib.RC_COMP_NONE,
    "gzip": lib.RC_COMP_GZIP,
    "bzip2": lib.RC_COMP_BZIP2,
    "xz": lib.RC_COMP_XZ,
    "lzma": lib.RC_COMP_LZMA,
    "zstd": lib.RC_COMP_ZSTD,
}


def _raise(err):
    msg = ffi.string(err.msg).decode("utf-8", "replace")
    if err.code == lib.RC_E_NOMEM:
        msg += " -- this machine ran out of memory; nothing was judged about the package"
    raise _ERRORS.get(err.code, errors.InternalError)(msg)


def _check(rc, err):
    if rc != lib.RC_OK:
        _raise(err)


def link_unnamed(fd, path):
    """Name the unnamed (O_TMPFILE) file open at fd `path`; OSError as
    os.link raises it."""
    if lib.rc_link_unnamed(fd, os.fsencode(path)) != 0:
        e = ffi.errno
        raise OSError(e, os.strerror(e), path)


def write_all(fd, data):
    """Every byte of a bytes-like to fd (os.write may take fewer at a time);
    OSError as os.write raises it -- BrokenPipeError for a pipe whose reader
    is gone, whatever SIGPIPE's disposition (see ``sigpipe_held``)."""
    view = memoryview(data)
    with sigpipe_held():
        while view:
            view = view[os.write(fd, view):]


@contextlib.contextmanager
def sigpipe_held():
    """Writes in the block to a pipe whose reader is gone raise
    BrokenPipeError instead of killing the process.  Python ignores SIGPIPE,
    but dnf 4 sets it back to its default action (end the process) whenever
    its stdout is not a terminal (dnf/i18n.py: cron, Ansible, `dnf | tee`),
    and rpmcow writes from dnf's process to readers that may stop early
    (the transcoder, rpmkeys, a feed's gate).  SIGPIPE is blocked in this
    thread for the block; one a write raised is taken back before the old
    mask returns (csrc/util.c's rc_write_all does the same in C; Python's
    writes keep os.write, which runs Python's signal handlers -- Ctrl-C --
    when a blocked write is interrupted, where the C loop would retry)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        yield
    finally:
        if signal.SIGPIPE not in old and signal.SIGPIPE in signal.sigpending():
            signal.sigtimedwait({signal.SIGPIPE}, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def memory_file(data, name="rpmcow-prologue"):
    """A memory file holding `data`, its descriptor at offset 0."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Prologue:
    """Lead, signature header and main header, as read.

    data: their bytes -- read once, into a memory file, and mapped read-only
    (bytes-like: slicing gives bytes).  rpmkeys and librpm read that same
    file (open()): a large package's megabytes of header are not copied
    for them."""

    def __init__(self, data, sig_off, sig_len, hdr_off, hdr_len, fd=None):
        self.data = data
        self.sig_off, self.sig_len = sig_off, sig_len
        self.hdr_off, self.hdr_len = hdr_off, hdr_len
        self._fd = fd

    def __del__(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def open(self):
        """A new descriptor reading the prologue from its first byte (the
        caller closes it): the memory file reopened, or else a copy."""
        if self._fd is not None:
            try:
                return os.open("/proc/self/fd/%d" % self._fd, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass         # no /proc mounted
        return memory_file(self.data)

    @property
    def lead(self):
        return self.data[:lib.RC_LEAD_SIZE]

    @property
    def main_header(self):
        """A view, not a copy (megabytes for a large package)."""
        return memoryview(self.data)[self.hdr_off:self.hdr_off + self.hdr_len]


def open_prologue(prologue):
    """A new descriptor reading a prologue from its first byte (the caller
    closes it): a Prologue's own memory file, or one made of the bytes
    given."""
    return prologue.open() if isinstance(prologue, Prologue) else memory_file(prologue)


class LayoutResult:
    def __init__(self, res, group_offsets):
        self.out_pos = res.out_pos
        self.blobs = res.blobs
        self.blob_bytes = res.blob_bytes
        self.dup_files = res.dup_files
        self.payload_bytes = res.payload_bytes
        self.entries = res.entries
        self.reader_cpu = res.reader_cpu_ns / 1e9
        self.sink_cpu = res.sink_cpu_ns / 1e9
        self.group_offsets = group_offsets   # the C array: see FileTable.t_entries


def digest_backend():
    """"sha-ni" when SHA-256 and MD5 run on the core's own block functions
    (x86 SHA extensions), "openssl" otherwise."""
    return ffi.string(lib.rc_digest_backend()).decode()


class Digests:
    """Digests (OpenSSL names) of several byte streams, updated together the
    way the input digests are (one core, interleaved): update() takes one
    bytes-like per digest."""

    def __init__(self, names):
        self._err = ffi.new("rc_error *")
        self._ds = []
        for name in names:
            d = lib.rc_digest_new(name.encode(), self._err)
            if d == ffi.NULL:
                _raise(self._err)
            self._ds.append(ffi.gc(d, lib.rc_digest_free))

    def update(self, *chunks):
        if len(chunks) != len(self._ds):
            raise errors.InternalError("one chunk per digest")
        bufs = [ffi.from_buffer(c) for c in chunks]
        lib.rc_digest_update_together(ffi.new("rc_digest *[]", self._ds),
                                      ffi.new("const uint8_t *[]", bufs),
                                      ffi.new("size_t[]", [len(c) for c in chunks]),
                                      len(self._ds))

    def digests(self):
        out = ffi.new("uint8_t[]", lib.RC_MAX_DIGEST)
        result = []
        for d in self._ds:
            n = lib.rc_digest_final(d, out)
            result.append(bytes(ffi.buffer(out, n)))
        return result


def sha256(data):
    """SHA-256 of a bytes-like, by the core's digests (on the SHA extensions
    where the CPU has them)."""
    d = Digests(["SHA256"])
    d.update(data)
    return d.digests()[0]


def hmac_sha256(key, msg):
    """HMAC-SHA-256 (OpenSSL's), without importing hashlib and hmac."""
    out = ffi.new("uint8_t[32]")
    if lib.rc_hmac_sha256(ffi.from_buffer(key), len(key), ffi.from_buffer(msg), len(msg),
                          out) != lib.RC_OK:
        raise errors.InternalError("HMAC-SHA-256 failed")
    return bytes(out)


class BackgroundWrite:
    """Writing a buffer to a descriptor (a pipe) on a C thread of its own,
    which closes the descriptor when done; join() waits for that.  The
    caller goes on at once, whatever the reader's pace.

    start() returns None where no thread can be started: the descriptor is
    then still the caller's."""

    def __init__(self, writer, data):
        self._w, self._keep = writer, data

    @classmethod
    def start(cls, fd, data):
        buf = ffi.from_buffer(data)
        w = lib.rc_writer_start(fd, buf, len(buf))
        return None if w == ffi.NULL else cls(w, (data, buf))

    def join(self):
        if self._w is not None:
            lib.rc_writer_join(self._w)
            self._w = self._keep = None


class Input:
    """A package being read from an fd; every byte read feeds the input
    digests named in `algos` (the C section)."""

    def __init__(self, fd, algos):
        self._err = ffi.new("rc_error *")
        names = [ffi.new("char[]", a.encode()) for a in algos]
        self._algos = list(algos)
        self._names = ffi.new("const char *[]", names or [ffi.NULL])
        self._keep = names
        self._in = lib.rc_input_new(fd, self._names, len(names), self._err)
        if self._in == ffi.NULL:
            _raise(self._err)
        self._in = ffi.gc(self._in, lib.rc_input_free)

    def close(self):
        """Free the C input now, not when the garbage collector gets to it
        (the caller may close the fd)."""
        if self._in is not None:
            ffi.release(self._in)
            self._in = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_prologue(self):
        """The Prologue: framed by the C core, read straight into its memory
        file (the only copy made of it)."""
        pro = ffi.new("rc_prologue *")
        _check(lib.rc_prologue_frame(self._in, pro, self._err), self._err)
        try:
            fd = os.memfd_create("rpmcow-prologue", os.MFD_CLOEXEC)
            try:
                try:
                    os.ftruncate(fd, pro.len)
                    with mmap.mmap(fd, pro.len) as target:
                        _check(lib.rc_prologue_fill(self._in, pro, ffi.from_buffer(target),
                                                    self._err), self._err)
                    data = mmap.mmap(fd, pro.len, prot=mmap.PROT_READ)
                except (OSError, MemoryError) as exc:     # a header's claimed size, or no memory
                    raise errors.BadPackageError("cannot hold the package header (%d bytes): %s"
                                                 % (pro.len, getattr(exc, "strerror", None)
                                                    or "out of memory")) from None
            except BaseException:
                os.close(fd)
                raise
            return Prologue(data, pro.sig_off, pro.sig_len, pro.hdr_off, pro.hdr_len, fd)
        finally:
            lib.rc_prologue_free(pro)

    def hold_hashing(self):
        """Hash nothing read from here (byte 0) until provide_held gives
        those bytes again: they are then hashed later, with the rest."""
        lib.rc_input_hold(self._in)

    def provide_held(self, data):
        """The bytes read while holding (they must stay alive: kept here)."""
        self._held = data
        _check(lib.rc_input_provide_held(self._in, ffi.from_buffer(data), len(data),
                                         self._err), self._err)

    def set_tee(self, fd):
        lib.rc_input_set_tee(self._in, fd)

    def copy_to(self, fd):
        _check(lib.rc_input_copy_to(self._in, fd, self._err), self._err)

    @property
    def total(self):
        return lib.rc_input_total(self._in)

    def progress(self):
        """Bytes read so far: callable from any thread while the layout runs."""
        return lib.rc_input_progress(self._in)

    @property
    def algos(self):
        """The names of the input digests, in the order finish() gives them."""
        return list(self._algos)

    def add_range_digest(self, name, start, prefix):
        """Add a digest of the input from absolute offset `start` to its end;
        prefix: the bytes from `start` already read.  Returns its index."""
        buf = ffi.from_buffer(prefix) if prefix else ffi.NULL
        rc = lib.rc_input_add_range_digest(self._in, name.encode(), start, buf, len(prefix),
                                           self._err)
        if rc < 0:
            _raise(self._err)
        self._nranges = rc + 1
        return rc

    def finish(self):
        """(input digests as [(name, bytes)], range digests as [bytes])."""
        n = len(self._algos)
        out = ffi.new("uint8_t[]", max(n, 1) * lib.RC_MAX_DIGEST)
        lens = ffi.new("int[]", max(n, 1))
        rout = ffi.new("uint8_t[]", lib.RC_MAX_RANGES * lib.RC_MAX_DIGEST)
        rlens = ffi.new("int[]", lib.RC_MAX_RANGES)
        _check(lib.rc_input_finish(self._in, out, lens, rout, rlens, self._err), self._err)
        buf = ffi.buffer(out)
        digests = [(name, bytes(buf[i * lib.RC_MAX_DIGEST:i * lib.RC_MAX_DIGEST + lens[i]]))
                   for i, name in enumerate(self._algos)]
        rbuf = ffi.buffer(rout)
        ranges = [bytes(rbuf[i * lib.RC_MAX_DIGEST:i * lib.RC_MAX_DIGEST + rlens[i]])
                  for i in range(getattr(self, "_nranges", 0))]
        return digests, ranges

    def layout_payload(self, compressor, table, out_fd, out_pos, page_size):
        """Run the C layout over the payload; `table` is a FileTable."""
        return self.start_layout(compressor, table, out_fd, out_pos, page_size).wait()

    def start_layout(self, compressor, table, out_fd, out_pos, page_size):
        """The C layout on a thread of its own (see LayoutJob)."""
        return LayoutJob(self, compressor, table, out_fd, out_pos, page_size)


class LayoutJob:
    """The payload being laid out by C threads while Python goes on; wait()
    must be called (it joins them) before the input or output is touched."""

    def __init__(self, inp, compressor, table, out_fd, out_pos, page_size):
        self._keep = (inp, table)
        self._offsets = ffi.new("uint64_t[]", max(table.ngroups, 1))
        self._res = ffi.new("rc_layout_result *")
        self._err = ffi.new("rc_error *")
        job = ffi.new("rc_layout_job **")
        _check(lib.rc_layout_start(inp._in, COMPRESSORS[compressor], table.c_filetab, out_fd,
                                   out_pos, page_size, self._offsets, self._res, job,
                                   self._err), self._err)
        self._job = job[0]

    def wait(self):
        """The LayoutResult, or the layout's error (None if already waited for)."""
        if self._job is None:
            return None
        job, self._job = self._job, None
        _check(lib.rc_layout_wait(job, self._err), self._err)
        return LayoutResult(self._res, self._offsets)


class FileTable:
    """What the main header says about each file, in header order: built in
    C from the header's file tags (csrc/filetab.c); the per-file lists are
    made on first use only (the transcoder needs none of them)."""

    REG, KEYED, NOCONTENT, GHOST = lib.RC_FT_REG, lib.RC_FT_KEYED, lib.RC_FT_NOCONTENT, \
        lib.RC_FT_GHOST
    KIND_GHOST, KIND_REG, KIND_DIR, KIND_LINK, KIND_OTHER = lib.RC_KIND_GHOST, \
        lib.RC_KIND_REG, lib.RC_KIND_DIR, lib.RC_KIND_LINK, lib.RC_KIND_OTHER

    def __init__(self, main_header):
        err = ffi.new("rc_error *")
        out = ffi.new("rc_ftable **")
        _check(lib.rc_ftable_build(ffi.from_buffer(main_header), len(main_header), out, err),
               err)
        self._t = ffi.gc(out[0], lib.rc_ftable_free)
        self.count = self._t.ft.count
        self.ngroups = self._t.ft.ngroups
        self.keysize = self._t.ft.keysize        # 0 for a package without files
        self.algo = _digests.by_id(self._t.algo) or _digests.DEFAULT_FILE_ALGO

    @property
    def c_filetab(self):
        return ffi.addressof(self._t[0], "ft")

    def _ints(self, array):
        return ffi.unpack(array, self.count) if self.count else []

    @cached_property
    def sizes(self):
        return self._ints(self._t.sizes)

    @cached_property
    def flags(self):
        return self._ints(self._t.flags)

    @cached_property
    def kinds(self):
        return self._ints(self._t.kinds)

    @cached_property
    def groups(self):
        return self._ints(self._t.groups)

    @cached_property
    def digests(self):
        """Binary digest of each file (b"" where it has none)."""
        size = self.algo.size
        raw = ffi.buffer(self._t.digests, self.count * size)[:] if self.count else b""
        return [raw[i * size:(i + 1) * size] if f & self.KEYED else b""
                for i, f in enumerate(self.flags)]

    @cached_property
    def paths(self):
        """Archive names (bytes, no leading "/")."""
        return [ffi.string(self._t.paths[i]) for i in range(self.count)]

    @cached_property
    def linktos(self):
        return [ffi.string(self._t.linktos[i]) for i in range(self.count)]

    def archive_order(self):
        """File indices in the order rpm's writer puts them in the archive."""
        return ffi.unpack(self._t.order, self._t.norder) if self._t.norder else []

    def t_entries(self, layout):
        """(count, bytes) of the T section's entries for a LayoutResult:
        (digest, offset) of every placed group, sorted by digest."""
        cap = max(self.ngroups, 1) * (self.keysize + 8)
        out = ffi.new("uint8_t[]", cap)
        n = lib.rc_ftable_t_entries(self._t, layout.group_offsets, out, cap)
        if n == 2 ** 64 - 1:
            raise errors.BadPackageError("out of memory building the table")
        return n, ffi.buffer(out, n * (self.keysize + 8))[:]

    def group_digest(self):
        """The digest of each distinct-content group, by group number."""
        n, size = self.ngroups, self.keysize
        raw = ffi.buffer(self._t.group_digests, n * size)[:] if n else b""
        return [raw[i * size:(i + 1) * size] for i in range(n)]


class FeedTable:
    """A feed's files and archive order as C arrays (rc_feed_plan), made
    once and used by every stream of the package."""

    @classmethod
    def plan(cls, ft, t_entries, keysize, limit):
        """The table of FileTable ft's package fed from the blobs the T
        section's raw entries (bytes, sorted) place, each ending by limit
        (None: no limit), and its rc_feed_plan_info; info.bad < 2**32 - 1
        names the first regular file without content (info.why: 1 no file
        digest, 2 no blob).  Symlink targets point into ft (kept alive)."""
        g = cls.__new__(cls)
        g._links = ft          # the symlink targets live in the file table
        n = ft.count
        g.files = ffi.new("rc_feed_file[]", max(n, 1))
        g.nfiles = n
        g.order = ft._t.order if ft._t.norder else ffi.new("uint32_t[]", 1)
        g.count = ft._t.norder
        g.last = g.order[g.count - 1] if g.count else None   # file index, or None
        info = ffi.new("rc_feed_plan_info *")
        entries = ffi.from_buffer(t_entries)
        nt = len(t_entries) // (keysize + 8) if keysize else 0
        lib.rc_feed_plan(ft._t, entries, nt, keysize, limit or 0, g.files, info)
        return g, info

    def lists(self):
        """(files, order) as Python lists (rpmcow.serve's feed plan)."""
        files = []
        for i in range(self.nfiles):
            f = self.files[i]
            files.append((f.kind, f.size, f.blob, ffi.string(f.link) if f.link else b""))
        return files, ffi.unpack(self.order, self.count) if self.count else []

    def gated(self, gate_fd):
        """A copy whose archive ends with the gate entry (kind FEED_GATE,
        its blob the gate's fd): one per gated stream, as streams of one
        package may overlap (a pass's feeder still ending as the next starts)."""
        g = FeedTable.__new__(FeedTable)
        g._links, g.last = self._links, self.last
        g.files = ffi.new("rc_feed_file[]", self.nfiles + 1)
        ffi.memmove(g.files, self.files, self.nfiles * ffi.sizeof("rc_feed_file"))
        g.files[self.nfiles].kind = FEED_GATE
        g.files[self.nfiles].blob = gate_fd
        g.nfiles = self.nfiles + 1
        g.order = ffi.new("uint32_t[]", self.count + 1)
        ffi.memmove(g.order, self.order, self.count * 4)
        g.order[self.count] = self.nfiles
        g.count = self.count + 1
        return g


def feed_write(extents_fd, compressor, blk, prologue, table, out_fd):
    """Write the payload stream for rpm (see csrc/feed.c) of the files in
    `table` (a FeedTable)."""
    err = ffi.new("rc_error *")
    f = ffi.new("rc_feed *")
    cfiles, corder = table.files, table.order
    cpro = ffi.from_buffer(prologue)
    f.extents_fd = extents_fd
    f.compressor = COMPRESSORS[compressor]
    f.blk = blk
    f.prologue = cpro
    f.prologue_len = len(prologue)
    f.nfiles = table.nfiles
    f.files = cfiles
    f.count = table.count
    f.order = corder
    rc = lib.rc_feed_write(f, out_fd, err)
    if rc != lib.RC_OK:
        _raise(err)

"""The payload rpm reads when installing from an extents file.

An extents file has no compressed payload any more; rpm still wants one.
``PackageFeed`` describes, for the C feeder (csrc/feed.c), what to write:
the original headers, then a stripped cpio archive in rpm's own order whose
regular files carry zeros for whole blocks -- which the cow plugin replaces
by clones -- inside a container matching the header's PAYLOADCOMPRESSOR
that costs next to nothing to decode.

Each ``open()`` gives a fresh stream (rpm opens a package once per pass:
verification, %pretrans, install), written by a thread into a pipe: the
headers first, from here -- rpm reads them while the C feeder is set up,
and a pass that wants only the headers ends there -- then the archive.

A *gated* stream (``open_stream(blk, gated=True)``) withholds the archive's
trailer until ``Stream.release(ok)``: the installer's check that the cow
plugin, which may still be working on earlier files in a thread of its own,
has finished them all -- see csrc/rpm_plugin_cow.c.  ``gate_at`` is the
archive offset (rpm's progress ``amount``) past which rpm has read the last
entry's header.
"""
import fcntl
import os
import threading

from . import extents, native, package
from .errors import BadExtentsError

F_SETPIPE_SZ = 1031
CHEAP = ("zstd", "xz", "gzip", "none")      # containers with a stored mode
GATED = ("zstd", "xz", "gzip")               # containers a gate can pause (feed.c)
NO_GATE = float("inf")


class Stream:
    """One stream of a package's payload: the fd rpm reads, and the gate."""

    def __init__(self, fd, gate_fd=None, gate_at=NO_GATE):
        self.fd = fd
        self._gate = gate_fd
        self.gate_at = gate_at if gate_fd is not None else NO_GATE

    def release(self, ok):
        """Let the feed write the archive's trailer (ok) or cut it short."""
        self.gate_at = NO_GATE
        if self._gate is not None:
            try:
                native.write_all(self._gate, b"y" if ok else b"n")
            except OSError:
                pass                  # the feed is gone already (EPIPE: never SIGPIPE)
            self.close_gate()

    def release_after(self, drain):
        """rpm has read the last entry's header: drain() -- the cow plugin's
        work on every file before it, True if all went well -- decides
        whether the feed writes the trailer or cuts the stream short.  Never
        raises (rpm's Python bindings exit the process when a callback does)."""
        self.gate_at = NO_GATE
        try:
            ok = drain()
        except Exception:              # noqa: BLE001 - fail the package, not the process
            ok = False
        self.release(ok)

    def close_gate(self):
        """No verdict: the feed ends quietly (rpm is done with the stream)."""
        self.gate_at = NO_GATE
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None


class PackageFeed:
    """What is needed to feed rpm one package from its extents file.
    prologue, sections, pkg: what the caller has read and parsed already."""

    def __init__(self, fd, path="extents file", prologue=None, sections=None, pkg=None):
        self.fd = fd
        self.path = path
        if prologue is None:
            os.lseek(fd, 0, os.SEEK_SET)
            prologue = native.Input(fd, []).read_prologue()
        self.prologue = prologue
        self.package = pkg or package.parse(self.prologue)
        self.sections = sections or extents.read_sections(fd)
        self.header = self.package.header
        self._table, info = self._describe()
        self.last = self._table.last
        self.gate_at = info.gate_at
        self._max_reg = info.max_reg
        self._threads = []
        self.error = None            # what failed a feeder thread, for rpm's error report

    @property
    def nevra(self):
        return self.package.nevra

    @property
    def cheap(self):
        return self.package.compressor in CHEAP

    @property
    def gateable(self):
        return self.package.compressor in GATED

    def _describe(self):
        """What the feed writes for each file, as C arrays (native.FeedTable:
        25k entries took ~70 ms in Python, on every install's start), and
        where the last entry's header starts; BadExtentsError for a regular
        file the extents file has no content for."""
        ft, sections = self.package.files, self.sections
        limit = sections.s_offset if sections.version >= 2 else None
        table, info = native.FeedTable.plan(ft, sections.t_entries(), sections.keysize, limit)
        if info.bad != 0xFFFFFFFF:
            path = ft.paths[info.bad].decode("utf-8", "replace")
            if info.why == 1:
                raise BadExtentsError(
                    "%s: /%s has no file digest, so its content is not in the extents "
                    "file; install the original package" % (self.nevra, path))
            raise BadExtentsError("%s: the extents file has no content for /%s"
                                  % (self.nevra, path))
        return table, info

    def plan(self):
        """(files, order) as the C feeder takes them: per file index (RC_FEED_*
        kind, size, blob offset, symlink target), and the archive order --
        for a feed plan (rpmcow.serve)."""
        return self._table.lists()

    def clones(self, blk):
        """Whether the plugin has work for this package at feed block size blk."""
        return self._max_reg >= blk

    def write(self, out_fd, blk, gate_fd=None):
        """Write the whole payload stream to out_fd (blocking)."""
        try:
            native.write_all(out_fd, self.prologue.data)
        except BrokenPipeError:
            return                    # rpm wanted the headers only
        table = self._table if gate_fd is None else self._table.gated(gate_fd)
        native.feed_write(self.fd, self.package.compressor, blk, b"", table, out_fd)

    def open(self, blk):
        """A read fd on a fresh stream, filled by a thread."""
        return self.open_stream(blk).fd

    def open_stream(self, blk, gated=False):
        """A fresh stream, filled by a thread; gated: see the module's doc."""
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        gate_r = gate_w = None
        if gated and self.last is not None:
            if not self.gateable:
                raise BadExtentsError("%s: a %s payload cannot be gated"
                                      % (self.nevra, self.package.compressor))
            gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
        t = threading.Thread(target=self._run, args=(w, blk, gate_r), daemon=True,
                             name="rpmcow-feed-%s" % self.nevra)
        t.start()
        self._threads.append(t)
        return Stream(r, gate_w, self.gate_at)

    def _run(self, w, blk, gate_r):
        try:
            self.write(w, blk, gate_r)
        except Exception as exc:       # noqa: BLE001 - reported with rpm's failure
            self.error = exc           # (rpm then sees a short stream and fails the package)
        finally:
            os.close(w)
            if gate_r is not None:
                os.close(gate_r)

    def join(self):
        for t in self._threads:
            t.join()
        self._threads = []

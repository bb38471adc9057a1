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
                os.write(self._gate, b"y" if ok else b"n")
            except OSError:
                pass                  # the feed is gone already
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
        self._files = self._describe()
        self._order = self.package.files.archive_order()
        self.last = self._order[-1] if self._order else None
        self.gate_at = self._last_header_offset()
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
        """Per file index: (RC_FEED_* kind, size, blob offset, symlink target)."""
        ft = self.package.files
        link_kind, reg_kind, none_kind = native.FEED_LINK, native.FEED_REG, native.FEED_NONE
        KIND_LINK, KIND_REG, NOCONTENT, KEYED = ft.KIND_LINK, ft.KIND_REG, ft.NOCONTENT, ft.KEYED
        lookup = self.sections.lookup
        limit = self.sections.s_offset if self.sections.version >= 2 else None
        nothing = (none_kind, 0, 0, b"")
        out = []
        append = out.append
        for fx, (kind, size, flags) in enumerate(zip(ft.kinds, ft.sizes, ft.flags)):
            if kind == KIND_REG and size and not flags & NOCONTENT:
                if not flags & KEYED:
                    raise BadExtentsError(
                        "%s: /%s has no file digest, so its content is not in the extents "
                        "file; install the original package"
                        % (self.nevra, ft.paths[fx].decode("utf-8", "replace")))
                off = lookup(ft.digests[fx])
                if off is None or limit is not None and off + size > limit:
                    raise BadExtentsError("%s: the extents file has no content for /%s"
                                          % (self.nevra, ft.paths[fx].decode("utf-8", "replace")))
                append((reg_kind, size, off, b""))
            elif kind == KIND_LINK:
                link = ft.linktos[fx]
                append((link_kind, len(link), 0, link))
            else:
                append(nothing)
        return out

    def _last_header_offset(self):
        """Archive offset where the last entry's header starts (feed.c's
        layout: 4-aligned 14-byte headers, content, no other padding)."""
        files, pos, start = self._files, 0, 0
        for fx in self._order:
            start = (pos + 3) & ~3
            pos = start + 16 + files[fx][1]        # NONE entries have size 0
        return start

    def plan(self):
        """(files, order) as the C feeder takes them: per file index (RC_FEED_*
        kind, size, blob offset, symlink target), and the archive order --
        for a feed plan (rpmcow.serve)."""
        return list(self._files), list(self._order)

    def clones(self, blk):
        """Whether the plugin has work for this package at feed block size blk."""
        return any(k == native.FEED_REG and size >= blk
                   for k, size, _, _ in self._files)

    def write(self, out_fd, blk, gate_fd=None):
        """Write the whole payload stream to out_fd (blocking)."""
        try:
            native.write_all(out_fd, self.prologue.data)
        except BrokenPipeError:
            return                    # rpm wanted the headers only
        files, order = self._files, self._order
        if gate_fd is not None:
            files = files + [(native.FEED_GATE, 0, gate_fd, b"")]
            order = order + [len(files) - 1]
        native.feed_write(self.fd, self.package.compressor, blk, b"", files, order, out_fd)

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
        if gated and self._order:
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

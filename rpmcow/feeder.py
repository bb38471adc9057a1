"""The payload rpm reads when installing from an extents file.

An extents file has no compressed payload any more; rpm still wants one.
``PackageFeed`` describes, for the C feeder (csrc/feed.c), what to write:
the original headers, then a stripped cpio archive in rpm's own order whose
regular files carry zeros for whole blocks -- which the cow plugin replaces
by clones -- inside a container matching the header's PAYLOADCOMPRESSOR
that costs next to nothing to decode.

Each ``open()`` gives a fresh stream (rpm opens a package once per pass:
verification, %pretrans, install), written by a thread into a pipe.
"""
import fcntl
import os
import threading

from . import extents, native, package
from .errors import BadExtentsError

F_SETPIPE_SZ = 1031
CHEAP = ("zstd", "xz", "gzip", "none")      # containers with a stored mode


class PackageFeed:
    """What is needed to feed rpm one package from its extents file."""

    def __init__(self, fd, path="extents file"):
        self.fd = fd
        self.path = path
        os.lseek(fd, 0, os.SEEK_SET)
        self.prologue = native.Input(fd, []).read_prologue()
        self.package = package.parse(self.prologue)
        self.sections = extents.read_sections(fd)
        self.header = self.package.header
        self._files = self._describe()
        self._threads = []
        self.error = None            # what failed a feeder thread, for rpm's error report

    @property
    def nevra(self):
        return self.package.nevra

    @property
    def cheap(self):
        return self.package.compressor in CHEAP

    def _describe(self):
        ft = self.package.files
        out = []
        for fx in range(ft.count):
            kind = ft.kinds[fx]
            if kind == ft.KIND_LINK:
                out.append((native.lib.RC_FEED_LINK, len(ft.linktos[fx]), 0, ft.linktos[fx]))
            elif kind == ft.KIND_REG and not ft.flags[fx] & ft.NOCONTENT and ft.sizes[fx]:
                if not ft.flags[fx] & ft.KEYED:
                    raise BadExtentsError(
                        "%s: /%s has no file digest, so its content is not in the extents "
                        "file; install the original package"
                        % (self.nevra, ft.paths[fx].decode("utf-8", "replace")))
                off = self.sections.lookup(ft.digests[fx])
                if off is None or off + ft.sizes[fx] > self.sections.s_offset and \
                        self.sections.version >= 2:
                    raise BadExtentsError("%s: the extents file has no content for /%s"
                                          % (self.nevra, ft.paths[fx].decode("utf-8", "replace")))
                out.append((native.lib.RC_FEED_REG, ft.sizes[fx], off, b""))
            else:
                out.append((native.lib.RC_FEED_NONE, 0, 0, b""))
        return out

    def write(self, out_fd, blk):
        """Write the whole payload stream to out_fd (blocking)."""
        native.feed_write(self.fd, self.package.compressor, blk, self.prologue.data,
                          self._files, self.package.files.archive_order(), out_fd)

    def open(self, blk):
        """A read fd on a fresh stream, filled by a thread."""
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        t = threading.Thread(target=self._run, args=(w, blk), daemon=True,
                             name="rpmcow-feed-%s" % self.nevra)
        t.start()
        self._threads.append(t)
        return r

    def _run(self, w, blk):
        try:
            self.write(w, blk)
        except Exception as exc:       # noqa: BLE001 - reported with rpm's failure
            self.error = exc           # (rpm then sees a short stream and fails the package)
        finally:
            os.close(w)

    def join(self):
        for t in self._threads:
            t.join()
        self._threads = []

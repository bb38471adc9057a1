"""Transcoding a package while its download writes it.

librepo writes each package in place, in the cache, as its bytes arrive
(dnf 4 and dnf5 alike).  ``transcode_while_written`` starts on the first
bytes: a thread copies what the download has written so far into a pipe
the transcoder reads, waiting for more at the end of what is there, until
the package has the size the repository announced.  The transcoder keeps
up with the download and finishes moments after it.

Nothing is trusted from this.  The file may be rewritten under the reader
(a restarted or resumed download, another mirror) or never completed: the
reader gives up when the file shrinks, is replaced or removed, stalls, or
the caller says the downloads are over (``stop``), and the transcode
fails.  And an extents file made this way is used only if the SHA-256 of
its input, as its C section records it, is the SHA-256 of the package file
once librepo has verified its checksum (cache.made_from): the dnf plugins
check that before rpm runs, and transcode again from the final file
otherwise.
"""
import os
import threading
import time

POLL = 0.02          # seconds between looks at a file that has no new bytes
STALL = 120.0        # no new byte for this long: the download is not going on
CHUNK = 1 << 20


def pool_size(cpus):
    """Threads for transcodes that follow downloads: more than CPUs, since
    such a transcode waits for its bytes most of the time (dnf downloads
    several packages at once)."""
    return 2 * cpus + 2


def watch_starts(waiting, over, started, poll=0.05):
    """Call started(path, item) for each {path: item} of `waiting` once its
    file has bytes (its download has begun), until every one has or `over`
    is set (the downloads are over)."""
    waiting = dict(waiting)
    while waiting and not over.wait(poll):
        for path, item in list(waiting.items()):
            try:
                begun = os.stat(path).st_size > 0
            except OSError:
                continue
            if begun:
                del waiting[path]
                started(path, item)


class Abandoned(Exception):
    """The file stopped being the download it was (see the module's doc)."""


def transcode_while_written(path, size, out_path, stop=None, poll=POLL, stall=STALL, **kw):
    """Transcode the package file at `path`, which will have `size` bytes,
    into `out_path` (written under a temporary name, renamed when complete)
    while a download writes it; kw: transcode_fd's options.  Returns the
    transcode's result; raises Abandoned (or the transcoder's error) if the
    file did not become `size` bytes in one piece.  stop: a threading.Event
    set when the downloads are over (a file still short then never
    completes)."""
    from . import transcode
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except BaseException:
        os.close(fd)
        raise
    why = []

    def pump():
        try:
            why.append(_copy_growing(fd, path, size, w, stop, poll, stall))
        except OSError as exc:          # EPIPE: the transcoder stopped reading
            why.append("%s: %s" % (path, exc.strerror))
        finally:
            os.close(w)
            os.close(fd)

    thread = threading.Thread(target=pump, name="rpmcow-growing", daemon=True)
    thread.start()
    try:
        result = transcode.transcode_to_path(r, out_path, **kw)
    except Exception:
        os.close(r)
        r = -1
        thread.join()
        if why and why[0]:
            raise Abandoned(why[0]) from None
        raise
    finally:
        if r >= 0:
            os.close(r)
    thread.join()
    if why and why[0]:
        # the transcoder was content with a prefix: not the whole package
        try:
            os.unlink(out_path)
        except OSError:
            pass
        raise Abandoned(why[0])
    return result


def _copy_growing(fd, path, size, w, stop, poll, stall):
    """Copy fd's bytes to w until there are `size` of them; None when done,
    else why not."""
    from .native import write_all
    ino = os.fstat(fd).st_ino
    pos, last = 0, time.monotonic()
    while pos < size:
        chunk = os.read(fd, min(CHUNK, size - pos))
        if chunk:
            write_all(w, chunk)        # EPIPE, never SIGPIPE: the transcoder stopped reading
            pos += len(chunk)
            last = time.monotonic()
            continue
        try:
            st = os.stat(path)
        except OSError:
            return "%s: removed while it was downloaded" % path
        if st.st_ino != ino or st.st_size < pos:
            return "%s: rewritten while it was downloaded" % path
        if st.st_size > pos:
            continue                    # written meanwhile
        if stop is not None and stop.is_set():
            return "%s: the downloads ended with %d of its %d bytes" % (path, pos, size)
        if time.monotonic() - last > stall:
            return "%s: no new byte for %d s" % (path, stall)
        time.sleep(poll)
    return None

"""The one way rpmcow runs ``rpmkeys -Kv``: spawned directly, for a target
root, reading a descriptor (or a pipe fed by the caller), its output going
to memory files.  rpmcow.verify builds its checks on it (HeaderCheck for
the headers, Check for a whole stream, check_fd for a package file); nothing
else spawns rpmkeys.

Spawned with posix_spawn, not subprocess: the subprocess module costs ~7 ms
to import, and the header check's start is on the critical path of every
transcode.  Like subprocess, the child gets SIGPIPE and SIGXFSZ back at
their defaults and no descriptor but its standard three."""
import os
import select
import signal

from .errors import VerificationError


def _rpmkeys(target, options=(), files=("-",)):
    return ["rpmkeys", "-Kv", *target.rpm_args(), *options, *files]


class Rpmkeys:
    """A running ``rpmkeys -Kv`` for the target root, its stdout and stderr
    going to memory files.  It reads stdin from a descriptor given, or else
    from a pipe that feed() writes to.

    Spawned directly (posix_spawn): the subprocess module costs ~7 ms to
    import, and the header check's start is on the critical path of every
    transcode.  Like subprocess, the child gets SIGPIPE and SIGXFSZ back at
    their defaults and no descriptor but its standard three."""

    def __init__(self, target, stdin=None, options=(), files=("-",), pass_fds=()):
        """files: what rpmkeys reads (default: its stdin); pass_fds:
        descriptors the child keeps, under the same numbers (for files
        named /dev/fd/N)."""
        self._pid = None
        self._feeder = None       # a native.BackgroundWrite to the pipe (provide)
        self._out = self._err = self._w = -1
        r = -1
        try:
            if stdin is None:
                r, self._w = os.pipe()
                stdin = r
                try:
                    import fcntl
                    # fewer wake-ups; Python < 3.10 has no name for it (Linux: 1031)
                    fcntl.fcntl(self._w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
                except OSError:
                    pass
            self._out = os.memfd_create("rpmkeys-out", os.MFD_CLOEXEC)
            self._err = os.memfd_create("rpmkeys-err", os.MFD_CLOEXEC)
            # the descriptors passed last: dup2 of a descriptor to its own
            # number clears its close-on-exec flag
            self._pid = os.posix_spawnp(
                "rpmkeys", _rpmkeys(target, options, files), os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0),
                              (os.POSIX_SPAWN_DUP2, self._out, 1),
                              (os.POSIX_SPAWN_DUP2, self._err, 2)] + _close_inherited(pass_fds)
                + [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            self._close()
            raise VerificationError("cannot run rpmkeys: %s" % exc) from None
        finally:
            if r >= 0:
                os.close(r)

    def feed(self, data):
        """Write data to rpmkeys' stdin pipe."""
        from .native import write_all
        try:
            write_all(self._w, data)
        except BrokenPipeError:
            pass   # rpmkeys stopped reading; what it says is reported when it is waited for

    def _finish(self):
        """(exit code, stdout, stderr) once rpmkeys has exited (waits)."""
        self._close_pipe()
        rc = _reap(self._pid)
        self._pid = None
        self._join_feeder()
        out, err = self._read(self._out), self._read(self._err)
        self._close()
        return rc, out, err

    def _exited(self, timeout):
        try:
            pidfd = os.pidfd_open(self._pid)
        except OSError:        # reaped already, or a kernel without pidfds (< 5.3)
            return True
        try:
            return bool(select.select([pidfd], [], [], timeout)[0])
        finally:
            os.close(pidfd)

    # SIGTERM first: rpm exits on it through its signal queue, closing its
    # database, where SIGKILL can leave a Berkeley DB environment (rpm's
    # usual backend before 4.17: Debian 11) with a dead holder of a lock:
    # every later rpm run that opens the database then hangs or cannot read
    # the keyring.  SIGKILL only if rpmkeys has not exited after this long.
    ABORT_GRACE = 2.0

    def abort(self):
        if self._pid is not None:
            self._close_pipe()    # rpmkeys reading stdin sees its end
            try:
                os.kill(self._pid, signal.SIGTERM)
                if not self._exited(self.ABORT_GRACE):
                    os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(self._pid)
            self._pid = None
        self._join_feeder()       # rpmkeys is gone: its pipe no longer blocks the feeder
        self._close()

    def _join_feeder(self):
        if self._feeder is not None:
            self._feeder.join()
            self._feeder = None

    @staticmethod
    def _read(fd):
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0).decode("utf-8", "replace") if size else ""

    def _close_pipe(self):
        """End rpmkeys' stdin (it has everything)."""
        if self._w >= 0:
            os.close(self._w)
            self._w = -1

    def _close(self):
        self._close_pipe()
        for fd in (self._out, self._err):
            if fd >= 0:
                os.close(fd)
        self._out = self._err = -1


def _close_inherited(keep=()):
    """posix_spawn actions closing, in the child, every descriptor above 2
    that would survive exec (Python's own never do; a host's C libraries
    may leave some), but those to keep."""
    actions = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and fd not in keep and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:          # the listing's own descriptor, closed by now
            pass
    return actions


def _reap(pid):
    """pid's exit code (0 where this process ignores SIGCHLD: the kernel
    reaped it already, as subprocess assumes too)."""
    try:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:
        return 0

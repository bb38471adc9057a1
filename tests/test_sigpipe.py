"""Writes to a pipe whose reader is gone fail with EPIPE, even where SIGPIPE
kills: dnf 4 sets SIGPIPE back to its default action whenever its stdout is
not a terminal (dnf/i18n.py: cron, Ansible, `dnf ... | tee`), and the cow
plugin writes from dnf's process to readers that may stop early -- the
transcoder (the copy of a package still downloading), rpmkeys (the copy of
the package it checks), rpm (a feed, its gate).  Before, such a write killed
dnf without a word: during the downloads, or in the middle of rpm's
transaction.  Each case runs in a child process with SIGPIPE's default
action, as in dnf."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = textwrap.dedent("""\
    import os, signal, sys, threading
    sys.path.insert(0, %r)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)      # as dnf does
    from rpmcow import feeder, growing, native
    r, w = os.pipe()
    os.close(r)                                        # the reader is gone
    """ % REPO)

CHECK_MASK = textwrap.dedent("""\
    assert signal.SIGPIPE not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.SIGPIPE not in signal.sigpending()
    print("survived")
    """)

CASES = {
    # Python: the helper every rpmcow write to a pipe goes through
    "python write": """
        try:
            native.write_all(w, b"x" * 100000)
        except BrokenPipeError:
            pass
        """,
    # C: rc_write_all, on a thread of its own (the copy to rpmkeys)
    "C thread": """
        native.BackgroundWrite.start(w, b"x" * 100000).join()
        """,
    # a feed's gate, released from rpm's thread after the feed has ended
    "feed gate": """
        feeder.Stream(os.open("/dev/null", os.O_RDONLY), w, 0).release(True)
        """,
    # the copy of a package still downloading, to a transcoder that stopped
    "growing copy": """
        import tempfile
        f = tempfile.NamedTemporaryFile()
        f.write(b"y" * 300000); f.flush()
        fd = os.open(f.name, os.O_RDONLY)
        why = None
        try:
            why = growing._copy_growing(fd, f.name, 300000, w, None, 0.01, 1)
        except BrokenPipeError:
            why = "EPIPE"
        assert why == "EPIPE", why
        """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_write_to_a_gone_reader_does_not_kill_the_process(case):
    code = PRELUDE + textwrap.dedent(CASES[case]) + CHECK_MASK
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.strip() == "survived"


def test_sigpipe_stays_pending_where_the_thread_blocked_it():
    """A thread that blocks SIGPIPE itself keeps what its writes raised."""
    code = PRELUDE + textwrap.dedent("""\
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        try:
            native.write_all(w, b"x")
        except BrokenPipeError:
            pass
        assert signal.SIGPIPE in signal.sigpending()
        assert signal.SIGPIPE in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        print("survived")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])

"""What an admin sees first: errors that name the file, no tracebacks, no
false "NOT OK" for a user who cannot read the record key."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import corpus_path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = corpus_path()
HELLO = CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64.rpm"
SIGNED = CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64-signed.rpm"

pytestmark = pytest.mark.skipif(not HELLO.is_file(),
                                reason="package corpus not found at %s" % CORPUS)


def rpmcow(*args, user=None, env=None):
    """The CLI from this checkout with the system Python (rpm's bindings);
    user: run as that user."""
    preexec = None
    if user is not None:
        pw = pwd.getpwnam(user)

        def preexec():
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
    e = dict(os.environ, PYTHONPATH=str(ROOT), LC_ALL="C.UTF-8", HOME="/nonexistent")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "rpmcow", *map(str, args)], capture_output=True,
                          text=True, env=e, preexec_fn=preexec, cwd="/")


@pytest.fixture
def public_dir():
    """A directory anyone can read (tmp_path's parents are root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="rpmcow-admin."))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.parametrize("argv", [["checksig"], ["checksig", "-v"], ["inspect"],
                                  ["install", "--test", "--nodeps"]])
def test_a_directory_is_named_not_a_traceback(argv, tmp_path):
    d = tmp_path / "some.dir"
    d.mkdir()
    r = rpmcow(*argv, d)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "IsADirectoryError" not in r.stderr, r.stderr
    assert "%s: is a directory" % d in r.stderr, r.stderr


@pytest.mark.parametrize("content,why", [(b"", "empty file"), (b"hello\n" * 20, "RPM lead")])
def test_checksig_of_a_non_package_says_why(content, why, tmp_path):
    f = tmp_path / "x.rpm"
    f.write_bytes(content)
    r = rpmcow("checksig", f)
    assert r.returncode == 1
    assert r.stderr.startswith("rpmcow: %s: not an RPM package" % f) and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.root
def test_checksig_as_a_user_without_the_record_key(public_dir):
    """root transcodes (the record is MACed with root's key); a user who
    cannot read the key gets the verdict of the content itself, with a note,
    never a false NOT OK.  A file transcoded by that user is checked the
    same way, by root too."""
    if os.geteuid() != 0:
        pytest.skip("needs root to transcode with the record key and to become nobody")
    ext = public_dir / "hello.rpme"
    r = rpmcow("transcode", HELLO, "-o", ext, "-q")
    assert r.returncode == 0, r.stderr
    os.chmod(ext, 0o644)
    root_view = rpmcow("checksig", ext)
    assert root_view.returncode == 0 and root_view.stdout.endswith("digests OK\n"), root_view
    user_view = rpmcow("checksig", ext, user="nobody")
    assert user_view.returncode == 0, user_view.stdout + user_view.stderr
    assert "NOT OK" not in user_view.stdout and user_view.stdout.endswith("digests OK\n")
    assert "record cannot be checked" in user_view.stderr, user_view.stderr
    verbose = rpmcow("checksig", "-v", ext, user="nobody")
    assert "File digests: OK" in verbose.stdout, verbose.stdout
    # transcoded by the user (no key: an unkeyed record), checked by root
    mine = public_dir / "mine"
    mine.mkdir()
    shutil.chown(mine, "nobody")
    own = mine / "hello.rpme"
    r = rpmcow("transcode", HELLO, "-o", own, "-q", user="nobody")
    assert r.returncode == 0, r.stderr
    for who in (None, "nobody"):
        r = rpmcow("checksig", own, user=who)
        assert r.returncode == 0 and "NOT OK" not in r.stdout, (who, r.stdout, r.stderr)

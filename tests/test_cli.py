"""The command-line contracts: rpmcow transcode/inspect and rpm2extents."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import corpus_path, unbound
from rpmcow import cli, denylist, extents, transcode

ROOT = Path(__file__).resolve().parents[1]
CORPUS = corpus_path()
HELLO = CORPUS / "rpm-testdata" / "hello-2.0-1.x86_64.rpm"
MC = CORPUS / "real" / "mc-4.8.21-2.1.x86_64.rpm"
GOLD_NOKEY = CORPUS / "upstream-extents" / "hello-2.0-1.x86_64-signed.NOKEY.v419.rpme"


def run(prog, *args, stdin=None, env=None):
    cmd = [sys.executable, "-c",
           "import sys; from rpmcow.cli import %s as m; sys.exit(m())" % prog, *args]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, input=stdin, capture_output=True, env=full_env, timeout=120)


def rpmcow(*args, **kw):
    return run("main", *args, **kw)


def rpm2extents(*args, **kw):
    return run("rpm2extents_main", *args, **kw)


def test_transcode_writes_extents_file(tmp_path):
    out = tmp_path / "mc.rpme"
    r = rpmcow("transcode", str(MC), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert b"mc-4.8.21-2.1.x86_64" in r.stderr
    assert extents.is_transcoded(os.open(out, os.O_RDONLY))
    assert [p.name for p in tmp_path.iterdir()] == ["mc.rpme"]


def test_transcode_stdin_to_stdout_equals_file_output(tmp_path):
    out = tmp_path / "a.rpme"
    assert rpmcow("transcode", str(MC), "-o", str(out), "-q").returncode == 0
    r = rpmcow("transcode", "-", "-o", "-", "-q", stdin=MC.read_bytes())
    assert r.returncode == 0 and r.stderr == b""
    # a pipe has no identity for the record to bind (rpmcow.record)
    assert unbound(r.stdout) == unbound(out.read_bytes())


def test_rpm2extents_matches_transcode_with_same_algorithms(tmp_path):
    out = tmp_path / "a.rpme"
    transcode.transcode_path(str(MC), str(out), algos=["SHA256", "MD5"])
    r = rpm2extents("SHA256", "MD5", stdin=MC.read_bytes())
    assert r.returncode == 0, r.stderr
    # a pipe has no identity for the record to bind (rpmcow.record)
    assert unbound(r.stdout) == unbound(out.read_bytes())
    with open(out, "rb") as f:
        names = [n for n, _ in extents.read_sections(f.fileno()).input_digests]
    assert names == ["SHA256", "MD5"]


@pytest.mark.parametrize("args,msg", [
    ((), b"no digest algorithm"),
    (("SHA257",), b"unknown digest algorithm"),
])
def test_rpm2extents_argument_errors(args, msg):
    r = rpm2extents(*args, stdin=MC.read_bytes())
    assert r.returncode == 1
    assert r.stdout == b""
    assert msg in r.stderr


def test_rpm2extents_fails_on_truncated_input_with_nonzero_exit():
    # upstream exits 0 here and leaves a complete-looking file
    r = rpm2extents("SHA256", stdin=MC.read_bytes()[:-100])
    assert r.returncode == 1
    assert r.stderr.startswith(b"rpm2extents: ")
    assert len(r.stderr.splitlines()) == 1


def test_rpm2extents_fails_on_trailing_data():
    r = rpm2extents("SHA256", stdin=MC.read_bytes() + b"junk")
    assert r.returncode == 1
    assert b"trailing" in r.stderr or b"corrupt" in r.stderr


def test_failed_transcode_to_stdout_file_leaves_it_empty(tmp_path):
    out = tmp_path / "out"
    with open(out, "wb") as f:
        cmd = [sys.executable, "-m", "rpmcow", "transcode", "-", "-o", "-"]
        r = subprocess.run(cmd, input=MC.read_bytes()[:-5000], stdout=f,
                           stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 1
    assert out.stat().st_size == 0


def test_failed_transcode_leaves_no_file(tmp_path):
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(MC.read_bytes()[:-5000])
    out = tmp_path / "out.rpme"
    r = rpmcow("transcode", str(bad), "-o", str(out))
    assert r.returncode == 1
    assert r.stderr.startswith(b"rpmcow: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.rpm"]


def test_output_errors_are_clear(tmp_path):
    r = rpmcow("transcode", str(MC), "-o", str(tmp_path))
    assert r.returncode == 2 and b"is a directory" in r.stderr
    r = rpmcow("transcode", str(MC), "-o", str(tmp_path / "missing" / "x"))
    assert r.returncode == 1 and b"cannot create" in r.stderr
    r = rpmcow("transcode", str(tmp_path / "nope.rpm"), "-o", str(tmp_path / "x"))
    assert r.returncode == 1 and b"cannot open" in r.stderr
    r = rpmcow("transcode", str(MC))
    assert r.returncode == 2 and b"-o" in r.stderr


# ---- deny list ---------------------------------------------------------

@pytest.mark.parametrize("entries,name,hit", [
    ("kernel", "kernel", "kernel"),
    ("kernel", "kernel-core", None),        # upstream: substring, would hit
    ("kernel*", "kernel-core", "kernel*"),
    ("a, b ,mc", "mc", "mc"),
    ("m?", "mc", "m?"),
    ("", "mc", None),
])
def test_denylist_matches_whole_names_and_globs(entries, name, hit):
    assert denylist.matches(name, denylist.parse(entries)) == hit


def test_denylisted_package_is_copied_unchanged():
    env = {denylist.ENV: "foo,mc"}
    r = rpm2extents("SHA256", stdin=MC.read_bytes(), env=env)
    assert r.returncode == 0
    assert r.stdout == MC.read_bytes()
    env = {denylist.ENV: "m"}       # a substring of "mc": not denied
    r = rpm2extents("SHA256", stdin=MC.read_bytes(), env=env)
    assert r.stdout.endswith(b"KWTSH100")


# ---- inspect -----------------------------------------------------------

def test_inspect_reports_our_file(tmp_path):
    out = tmp_path / "hello.rpme"
    transcode.transcode_path(str(HELLO), str(out))
    r = rpmcow("inspect", str(out), "--json")
    assert r.returncode == 0
    rep = json.loads(r.stdout)
    assert rep["transcoded"] and rep["format_version"] == 2
    assert rep["package"] == "hello-2.0-1.x86_64"
    assert rep["table"]["count"] == 4 and rep["table"]["keysize"] == 32
    assert len(rep["table"]["entries"]) == 4
    assert rep["input"]["length"] == HELLO.stat().st_size
    assert rep["verification"]["ok"]


def test_inspect_reads_upstream_file():
    r = rpmcow("inspect", str(GOLD_NOKEY))
    assert r.returncode == 0
    text = r.stdout.decode()
    assert "hello-2.0-1.x86_64" in text
    assert "NOT every item OK when transcoded (rc 2)" in text
    assert "key ID 1964c5fc: NOKEY" in text


def test_inspect_table_names_files_and_json_through_head(tmp_path):
    out = tmp_path / "h.rpme"
    assert rpmcow("transcode", str(HELLO), "-o", str(out), "-q").returncode == 0
    text = rpmcow("inspect", "--table", str(out)).stdout.decode()
    assert "7120 bytes at 8192       /usr/bin/hello  c89fa87a" in text, text
    assert "4 distinct contents" in text
    doc = json.loads(rpmcow("inspect", "--json", str(out)).stdout)
    entry = next(e for e in doc["table"]["entries"] if e["files"] == ["/usr/bin/hello"])
    assert entry["size"] == 7120 and entry["offset"] == 8192
    for mode in ("--json", "--table"):
        r = subprocess.run("%s -c 'import sys; from rpmcow.cli import main; sys.exit(main())' "
                           "inspect %s %s | head -1 >/dev/null; echo ${PIPESTATUS[0]}"
                           % (sys.executable, mode, out), shell=True, capture_output=True,
                           executable="/bin/bash")
        assert r.stdout.strip() == b"0" and r.stderr == b"", (mode, r)


def test_inspect_plain_rpm_says_not_transcoded():
    r = rpmcow("inspect", str(HELLO))
    assert r.returncode == 1
    assert b"not an extents file" in r.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_a_command_alone_parses_as_its_subparser(name, monkeypatch):
    """`rpmcow NAME ...` is parsed by NAME's parser alone (not built with every
    other command's): same help, same namespace."""
    monkeypatch.setenv("COLUMNS", "100")
    full = cli.build_parser()
    subs = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    alone = cli.build_command_parser(name)
    assert alone.format_help() == subs.choices[name].format_help()
    argv = {"transcode": ["x.rpm", "-o", "y", "--digest", "SHA1", "--root", "/r", "-q"],
            "checksig": ["a", "b", "-v", "--files"],
            "install": ["a.rpme", "-U", "--nodeps", "--verify-level", "all"],
            "inspect": ["f", "--json"],
            "cache": ["status", "/var/cache/x", "--json", "--root", "/r"],
            "vendor": ["held", "--json", "--installroot", "/r", "--setopt", "best=0"]}[name]
    assert vars(alone.parse_args(argv)) == vars(full.parse_args([name] + argv))
    # an unknown option is reported with the command's usage (the subparser
    # left it to the top level: "rpmcow: error", and rpmcow's usage)
    r = rpmcow(name, *argv, "--no-such-option")
    assert r.returncode == 2
    assert b"usage: rpmcow %s " % name.encode() in r.stderr
    assert b"rpmcow %s: error: unrecognized arguments: --no-such-option" % name.encode() \
        in r.stderr


def test_only_the_program_spares_the_collector_at_exit():
    """Run as the program (argv from sys.argv), main leaves every object to
    the process's exit (gc.freeze); called with argv, as a library, it does
    not touch the collector."""
    code = ("import atexit, gc, sys\n"
            "from rpmcow.cli import main\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "print('rc', main() if sys.argv[1] == 'inspect' else main(sys.argv[2:]))\n")
    for args, frozen in ((["inspect", str(HELLO)], True),
                         (["--as-library", "inspect", str(HELLO)], False)):
        r = subprocess.run([sys.executable, "-c", code, *args],
                           capture_output=True, text=True, timeout=60)
        assert "rc 1" in r.stdout, r.stderr          # a plain .rpm: not an extents file
        assert ("frozen %s" % frozen) in r.stdout


def test_no_way_to_skip_verification_through_the_api(tmp_path):
    """The unverified transcode exists for one benchmark only: the public
    functions take no option that skips rpmkeys."""
    import inspect
    for fn in (transcode.transcode_fd, transcode.transcode_path):
        assert not any("verify" in p for p in inspect.signature(fn).parameters), fn
    with pytest.raises(TypeError):
        transcode.transcode_path(str(HELLO), str(tmp_path / "x.rpme"), _verify=False)
    assert not (tmp_path / "x.rpme").exists()


def test_batch_transcode_into_a_directory(tmp_path):
    """rpmcow transcode *.rpm -d DIR: names as the dnf plugin's; one bad
    package does not stop the others; the summary says the signature."""
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(b"no package")
    out = tmp_path / "out"
    out.mkdir()
    r = rpmcow("transcode", str(MC), str(HELLO), str(bad), "-d", str(out))
    assert r.returncode == 1
    names = sorted(p.name for p in out.iterdir())
    assert names == ["hello-2.0-1.x86_64.cow.rpm", "mc-4.8.21-2.1.x86_64.cow.rpm"], names
    err = r.stderr.decode()
    assert "rpmcow: %s: not an RPM package" % bad in err
    assert "1 of 3 packages failed" in err
    assert "hello-2.0-1.x86_64: 5 files," in err and "; unsigned" in err, err
    # several inputs without -d, -o naming a directory: clear usage errors
    r = rpmcow("transcode", str(MC), str(HELLO), "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and b"-d DIR" in r.stderr
    r = rpmcow("transcode", str(MC), "-o", str(out))
    assert r.returncode == 2 and b"is a directory" in r.stderr and b"-d" in r.stderr


def test_transcode_and_checksig_json(tmp_path):
    out = tmp_path / "h.rpme"
    r = rpmcow("transcode", str(HELLO), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["package"] == "hello-2.0-1.x86_64" and rep["files"] == 5
    assert rep["signature"] == "unsigned" and rep["output"] == str(out)
    assert any(i["item"].startswith("Header SHA256") and i["result"] == "OK"
               for i in rep["verdict"])
    r = rpmcow("checksig", "--json", str(out), str(HELLO))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [x["kind"] for x in res] == ["extents file", "package"]
    assert all(x["ok"] for x in res) and res[1]["summary"] == "digests OK"


def test_version_everywhere():
    for prog in ("main", "rpm2extents_main"):
        r = subprocess.run([sys.executable, "-c", "import sys; from rpmcow.cli import %s as m; "
                            "sys.exit(m())" % prog, "--version"], capture_output=True)
        assert r.returncode == 0 and b"0." in r.stdout, (prog, r)


def _slow_writer(fd, data, pieces=8, pause=0.15):
    import threading
    import time

    def run():
        try:
            step = len(data) // pieces + 1
            for i in range(0, len(data), step):
                os.write(fd, data[i:i + step])
                time.sleep(pause)
        finally:
            os.close(fd)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_progress_reports_while_the_payload_streams(tmp_path):
    r, w = os.pipe()
    seen = []
    t = _slow_writer(w, MC.read_bytes())
    with open(tmp_path / "out.rpme", "wb") as out:
        res = transcode.transcode_fd(r, out.fileno(), progress=lambda d, n: seen.append((d, n)))
    os.close(r)
    t.join()
    assert res.nevra.startswith("mc-")
    assert len(seen) >= 2, seen
    assert all(n is None for _, n in seen)                    # a pipe has no size
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] > 0


def test_progress_line_on_a_terminal_only(tmp_path):
    """On a terminal: a percentage line, erased before the summary; in a
    pipe (as here, for the other tests): nothing but the summary."""
    import pty
    import select
    master, slave = pty.openpty()
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from rpmcow.cli import main; "
                             "sys.exit(main())", "transcode", "-", "-o",
                             str(tmp_path / "o.rpme")], stdin=r, stderr=slave,
                            stdout=subprocess.DEVNULL)
    os.close(r)
    os.close(slave)
    t = _slow_writer(w, MC.read_bytes())
    got = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    proc.wait(30)
    t.join()
    os.close(master)
    assert proc.returncode == 0, got
    text = got.decode("utf-8", "replace")
    assert "\r\x1b[K-: " in text and "read" in text, repr(text)
    assert text.rstrip().endswith("; unsigned") or "signed" in text.splitlines()[-1], repr(text)
    quiet = rpmcow("transcode", str(MC), "-o", str(tmp_path / "p.rpme"))
    assert b"\r" not in quiet.stderr and b"%" not in quiet.stderr


@pytest.mark.parametrize("words,want,unwanted", [
    (["rpmcow", "tr"], ["transcode"], ["install"]),
    (["rpmcow", ""], ["transcode", "checksig", "install", "inspect", "cache"], []),
    (["rpmcow", "install", "--verify-"], ["--verify-level", "--verify-files"], ["--json"]),
    (["rpmcow", "transcode", "x.rpm", "--verify-level", ""], ["none", "digest", "all"], []),
    (["rpmcow", "cache", ""], ["status", "clean"], []),
    (["rpm2extents", "SHA"], ["SHA256", "SHA1"], ["MD5"]),
])
def test_bash_completion(words, want, unwanted, tmp_path):
    from rpmcow import completion
    script = tmp_path / "rpmcow.bash"
    script.write_text(completion.render())
    line = "source /usr/share/bash-completion/bash_completion 2>/dev/null; source %s; " % script
    line += "COMP_WORDS=(%s); COMP_CWORD=%d; _rpmcow; printf '%%s\\n' \"${COMPREPLY[@]}\"" % (
        " ".join("'%s'" % w for w in words), len(words) - 1)
    r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path)
    got = r.stdout.split()
    assert r.returncode == 0, r.stderr
    assert all(w in got for w in want) and not any(w in got for w in unwanted), got


def test_an_internal_error_is_one_line(tmp_path):
    """A bug (here: the C core's module swapped for one that raises) is one
    line naming it and where to go from there; RPMCOW_DEBUG=1 shows the
    traceback."""
    code = ("import sys; from rpmcow import cli, transcode\n"
            "def boom(*a, **k): raise KeyError('surprise')\n"
            "transcode.transcode_path = boom\n"
            "sys.exit(cli.main(['transcode', sys.argv[1], '-o', sys.argv[2]]))\n")
    args = [sys.executable, "-c", code, str(HELLO), str(tmp_path / "o")]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 70, r
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "internal error: KeyError: 'surprise'" in r.stderr and "report it" in r.stderr
    r = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, RPMCOW_DEBUG="1"))
    assert "Traceback" in r.stderr and r.returncode == 1


def test_without_rpms_python_bindings_one_clear_line(tmp_path):
    """A Python without rpm's bindings (a venv made without
    --system-site-packages): one line saying what to install."""
    fake = tmp_path / "rpm"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named rpm (test)')\n")
    r = subprocess.run([sys.executable, "-c", "import sys; from rpmcow.cli import main; "
                        "sys.exit(main())", "checksig", str(HELLO)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH="%s:%s" % (tmp_path, ROOT)))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "install python3-rpm" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_rpm_versions_supported():
    from rpmcow import support
    assert support._version("4.16.1.2") == (4, 16) and support._version("6.1.0") == (6, 1)
    assert support._version("4.20.1~rc1") == (4, 20)
    import rpm
    assert support.check_rpm() == support._version(rpm.__version__) >= support.OLDEST_RPM
    with pytest.raises(support.UnsupportedError, match="older than 4.16"):
        old, rpm.__version__ = rpm.__version__, "4.14.3"
        try:
            support.check_rpm()
        finally:
            rpm.__version__ = old


UMASK_PROBE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
/* create and check files in a loop until *stop, outside Python's lock, as
 * librepo's download threads do in dnf; returns how many came out
 * group- or world-writable */
int probe(const char *dir, volatile int *stop)
{
    char path[4096];
    int loose = 0;
    for (unsigned i = 0; !*stop; i++) {
        snprintf(path, sizeof(path), "%s/p%u", dir, i % 64);
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0666);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & 022))
            loose++;
        close(fd);
        unlink(path);
    }
    return loose;
}
"""


def test_transcodes_never_change_the_process_umask(tmp_path):
    """The dnf plugin transcodes on worker threads while librepo's threads
    create files: a transcode must never set the umask, even for a moment
    (it used to set it to 0 to read it).  A C loop plays the downloads."""
    import ctypes
    import threading
    src = tmp_path / "probe.c"
    src.write_text(UMASK_PROBE)
    lib = tmp_path / "probe.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    probe = ctypes.CDLL(str(lib)).probe
    probe.restype = ctypes.c_int
    probe.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    work = tmp_path / "downloads"
    work.mkdir()
    old = os.umask(0o022)
    stop = ctypes.c_int(0)
    result = []
    t = threading.Thread(target=lambda: result.append(probe(str(work).encode(),
                                                             ctypes.byref(stop))))
    t.start()
    try:
        import time
        time.sleep(0.05)                            # the loop is running
        for i in range(20000):
            transcode._umask()                      # what every transcode's output asks
        for i in range(10):
            transcode.transcode_path(str(HELLO), str(tmp_path / ("h%d.rpme" % (i % 2))))
        assert os.umask(0o022) == 0o022
    finally:
        stop.value = 1
        t.join()
        os.umask(old)
    assert result == [0], "files created group- or world-writable: %s" % result
    assert (os.stat(tmp_path / "h0.rpme").st_mode & 0o777) == 0o644


def test_vendor_without_its_package_says_which_to_install(monkeypatch, capsys):
    """rpmcow vendor is packaged apart (rpmcow-vendor-dnf5): without it, one
    line naming the package, exit 2 -- and every other command still works."""
    import sys
    from rpmcow import cli
    monkeypatch.setitem(sys.modules, "rpmcow.vendor_dnf5", None)
    assert cli.main(["vendor", "status", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "rpmcow: " + cli.MSG_NO_VENDOR_DNF5
    assert "rpmcow-vendor-dnf5" in err and "\n" not in err.strip()
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0

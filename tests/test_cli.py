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
    assert "rc 2 (NOT OK)" in text
    assert "key ID 1964c5fc: NOKEY" in text


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
            "inspect": ["f", "--json"]}[name]
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

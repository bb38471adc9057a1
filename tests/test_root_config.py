"""A target root's rpm configuration is data, and so is the environment of a
root process: rpmcow evaluates no macro of a root (--root) and loads no
cow.so from $RPMCOW_PLUGIN that anyone but root could have written.

Real files in tmp_path and the real ``rpmcow`` command; no mocks, except one
monkeypatched euid for the unprivileged rule.
"""
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pkgbuild import regular
from rpmcow import rpmconfig, rpmplugin
from rpmcow.errors import RpmcowError, UsageError

ROOT = Path(__file__).resolve().parents[1]


def _rpmcow_bin():
    script = Path(sys.executable).parent / "rpmcow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rpmcow"]


def _run(*args):
    return subprocess.run([*_rpmcow_bin(), *args], capture_output=True, text=True, timeout=120)


# ---- A: the root's %_pkgverify_level, read without evaluating anything ---------------

def _root(tmp_path, name="root", files=None):
    """A root with an rpm configuration (usr/lib/rpm/macros) and `files`
    ({path in the root: text})."""
    root = tmp_path / name
    (root / "usr/lib/rpm").mkdir(parents=True)
    (root / "usr/lib/rpm/macros").write_text("%_usrlibrpm /usr/lib/rpm\n")
    for rel, text in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _level(root):
    return rpmconfig.verify_level(rpmconfig.Target(root=str(root)))


@pytest.fixture(scope="module")
def unsigned_pkg(pkgbuilder):
    return pkgbuilder.build("rc", [regular("/opt/rc/f", b"x" * 5000)])


def test_shell_macro_in_the_roots_configuration_runs_nothing(tmp_path, unsigned_pkg):
    marker = tmp_path / "marker"
    root = _root(tmp_path, files={"etc/rpm/macros.evil": (
        "# looks harmless\n"
        "%%_pkgverify_level %%(id > %s; echo none)\n" % marker)})
    out = tmp_path / "out.rpme"
    r = _run("transcode", str(unsigned_pkg), "-o", str(out), "--root", str(root))
    assert not marker.exists(), "a macro of the target root ran a shell command"
    assert r.returncode != 0, r.stderr
    assert "%s: line 2:" % (root / "etc/rpm/macros.evil") in r.stderr, r.stderr
    assert "does not evaluate" in r.stderr and "--verify-level" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert not out.exists()
    # an explicit level needs nothing from the root's files
    r = _run("transcode", str(unsigned_pkg), "-o", str(out), "--root", str(root),
             "--verify-level", "digest", "-q")
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_lua_macro_in_the_roots_configuration_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    root = _root(tmp_path, files={"usr/lib/rpm/macros.d/macros.evil": (
        '%%_pkgverify_level %%{lua: io.open("%s", "w"):write("x"); print("none")}\n'
        % marker)})
    with pytest.raises(UsageError) as exc:
        _level(root)
    assert not marker.exists()
    msg = str(exc.value)
    assert "%s: line 1:" % (root / "usr/lib/rpm/macros.d/macros.evil") in msg
    assert "does not evaluate" in msg and "--verify-level" in msg


@pytest.mark.parametrize("value", ["%{?foo}", "%{?_pkgverify_level_default}", "%%none",
                                   "sig%{nil}nature", "signatures", "signature # policy",
                                   "none \\\n%(true)", "\\\nnone", "{%(true)}"])
def test_anything_but_a_literal_level_is_refused(tmp_path, value):
    root = _root(tmp_path, files={"etc/rpm/macros.x": "%%_pkgverify_level %s\n" % value})
    with pytest.raises(UsageError, match=r"macros\.x: line 1: .*--verify-level"):
        _level(root)
    # --verify-level is the way out
    assert rpmconfig.verify_level(rpmconfig.Target(root=str(root)), "all") == "all"


def test_plain_level_in_the_root_is_honoured(tmp_path, unsigned_pkg):
    root = _root(tmp_path, files={"etc/rpm/macros.local": "%_pkgverify_level signature\n"})
    assert _level(root) == "signature"
    r = _run("transcode", str(unsigned_pkg), "-o", str(tmp_path / "a.rpme"),
             "--root", str(root))
    assert r.returncode != 0 and "not signed (verification level signature)" in r.stderr, \
        r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run("transcode", str(unsigned_pkg), "-o", str(tmp_path / "b.rpme"),
             "--root", str(empty), "-q")
    assert r.returncode == 0, r.stderr


def test_no_definition_means_digest(tmp_path):
    assert _level(_root(tmp_path)) == "digest"


def test_last_definition_wins_in_rpms_order(tmp_path):
    import rpm
    target = rpm.expandMacro("%{_target}")
    root = _root(tmp_path, files={
        "usr/lib/rpm/macros": "%_pkgverify_level none\n",
        "usr/lib/rpm/macros.d/macros.zz": "%_pkgverify_level all\n",
        "etc/rpm/macros.b": "%_pkgverify_level signature\n",
        "etc/rpm/macros.a": "%_pkgverify_level none\n",
        "etc/rpm/macros.c.rpmnew": "%_pkgverify_level none\n",    # rpm skips these
    })
    assert _level(root) == "signature"          # etc/rpm/macros.b: the last of them
    (root / "etc/rpm/macros").write_text("%_pkgverify_level all\n")
    assert _level(root) == "all"                # etc/rpm/macros comes after macros.*
    (root / "etc/rpm" / target).mkdir()
    (root / "etc/rpm" / target / "macros").write_text("%_pkgverify_level digest\n"
                                                       "%_pkgverify_level none\n")
    assert _level(root) == "none"               # etc/rpm/%{_target}/macros: last of all
    # a second definition in the same file: the later one
    (root / "etc/rpm" / target / "macros").write_text("%_pkgverify_level none\n"
                                                       "  %_pkgverify_level\tsignature\n")
    assert _level(root) == "signature"


def test_continuation_lines_belong_to_the_definition_they_continue(tmp_path):
    marker = tmp_path / "marker"
    root = _root(tmp_path, files={"etc/rpm/macros.local": (
        "%_pkgverify_level signature\n"
        "%__rpmcow_test first \\\n"
        "%_pkgverify_level none\n"                  # part of %__rpmcow_test's body
        "%__rpmcow_test2 %{expand:\n"
        "%_pkgverify_level none\n"                  # inside an open %{ : still the body
        "}\n"
        "%__rpmcow_test3 %(touch " + str(marker) + ")\n")})
    assert _level(root) == "signature"
    assert not marker.exists()
    # a continued definition of the level itself is refused where it starts
    with open(root / "etc/rpm/macros.local", "a") as f:
        f.write("\n%_pkgverify_level none \\\n  %(true)\n")
    with pytest.raises(UsageError, match=r"macros\.local: line 9:"):
        _level(root)


def test_comment_lines_define_nothing(tmp_path):
    marker = tmp_path / "marker"
    root = _root(tmp_path, files={"etc/rpm/macros.local": (
        "# %_pkgverify_level none\n"
        "   #%_pkgverify_level none\n"
        "%_pkgverify_level signature\n"
        "#%_pkgverify_level %(touch " + str(marker) + ")\n"
        "%define _pkgverify_level none\n"          # not a form of macro files
        "%global _pkgverify_level none\n")})
    assert _level(root) == "signature"
    assert not marker.exists()


def test_the_host_level_applies_to_a_root_without_configuration(tmp_path):
    empty = tmp_path / "empty"
    (empty / "etc/rpm").mkdir(parents=True)
    (empty / "etc/rpm/macros.x").write_text("%_pkgverify_level %(exit 1)\n")
    assert _level(empty) == rpmconfig.rpmkeys_verify_level()


def test_no_rpm_is_run_for_a_roots_level():
    assert not hasattr(rpmconfig, "eval_macro")


# ---- B: $RPMCOW_PLUGIN in a root process ---------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the rule is for uid 0")

EVIL_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void evil(void)
{
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("ran\n", f); fclose(f); }
}
int rpmcow_plugin_drain(void) { return 0; }
"""


@pytest.fixture
def evil_so(tmp_path):
    """(a shared object whose constructor writes `marker`, marker)"""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    marker = tmp_path / "marker"
    src = tmp_path / "evil.c"
    src.write_text(EVIL_C)
    so = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-DMARKER=\"%s\"" % marker, "-o", str(so),
                    str(src)], check=True, capture_output=True)
    return so, marker


def _in_dir(so, d, mode=0o755, owner=0):
    d.mkdir()
    os.chmod(d, mode)
    copy = d / "cow.so"
    shutil.copy(so, copy)
    os.chmod(copy, 0o755)
    os.chown(copy, owner, owner)
    return copy


def _nobody():
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user nobody")


def _activate_in_subprocess(so):
    code = ("import sys\n"
            "from rpmcow import rpmplugin\n"
            "from rpmcow.errors import RpmcowError\n"
            "try:\n"
            "    act = rpmplugin.Activation()\n"
            "    print('worker_ok', act.worker_ok)\n"
            "    act.close()\n"
            "except RpmcowError as exc:\n"
            "    print('error', exc)\n"
            "    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, RPMCOW_PLUGIN=str(so)), cwd=str(ROOT),
                          timeout=60)


@needs_root
def test_user_owned_plugin_is_not_loaded_by_root(evil_so, tmp_path, monkeypatch):
    so, marker = evil_so
    uid = _nobody()
    bad = _in_dir(so, tmp_path / "plugins", owner=uid)
    monkeypatch.setenv("RPMCOW_PLUGIN", str(bad))
    with pytest.raises(RpmcowError) as exc:
        rpmplugin.plugin_path()
    assert str(bad) in str(exc.value) and "owned by uid %d" % uid in str(exc.value)
    r = _activate_in_subprocess(bad)
    assert not marker.exists(), "root loaded a user's cow.so: " + r.stdout + r.stderr
    assert r.returncode == 1 and str(bad) in r.stdout, r.stdout + r.stderr


@needs_root
@pytest.mark.parametrize("how", ["dir owned by nobody", "group-writable dir",
                                 "writable file", "sticky dir, user's file"])
def test_plugin_someone_else_could_change_is_refused(evil_so, tmp_path, monkeypatch, how):
    so, marker = evil_so
    uid = _nobody()
    if how == "dir owned by nobody":
        path = _in_dir(so, tmp_path / "d")
        os.chown(tmp_path / "d", uid, uid)
        culprit = tmp_path / "d"
    elif how == "group-writable dir":
        path = _in_dir(so, tmp_path / "d", mode=0o775)
        culprit = tmp_path / "d"
    elif how == "writable file":
        path = _in_dir(so, tmp_path / "d")
        os.chmod(path, 0o757)
        culprit = path
    else:       # like /tmp: a sticky world-writable dir, but the file inside is a user's
        path = _in_dir(so, tmp_path / "d", mode=0o1777, owner=uid)
        culprit = path
    monkeypatch.setenv("RPMCOW_PLUGIN", str(path))
    with pytest.raises(RpmcowError, match="RPMCOW_PLUGIN") as exc:
        rpmplugin.plugin_path()
    assert str(culprit) in str(exc.value)
    assert _activate_in_subprocess(path).returncode == 1
    assert not marker.exists()


@needs_root
def test_root_owned_plugin_is_accepted(evil_so, tmp_path, monkeypatch):
    so, marker = evil_so
    good = _in_dir(so, tmp_path / "plugins")
    # tmp_path's parents: /tmp (root, sticky 1777), root-owned directories
    assert stat.S_IMODE(os.stat("/tmp").st_mode) & stat.S_ISVTX
    monkeypatch.setenv("RPMCOW_PLUGIN", str(good))
    assert rpmplugin.plugin_path() == str(good)
    # a root-owned file in a sticky directory is root's too
    sticky = _in_dir(so, tmp_path / "sticky", mode=0o1777)
    monkeypatch.setenv("RPMCOW_PLUGIN", str(sticky))
    assert rpmplugin.plugin_path() == str(sticky)
    # a symlink is judged by what it names
    link = tmp_path / "link.so"
    link.symlink_to(good)
    monkeypatch.setenv("RPMCOW_PLUGIN", str(link))
    assert rpmplugin.plugin_path() == str(good)


def test_unprivileged_process_takes_plugin_from_environment(evil_so, tmp_path, monkeypatch):
    """Not root: the environment is the user's own, as before."""
    so, _ = evil_so
    mine = _in_dir(so, tmp_path / "d", mode=0o777, owner=os.getuid())
    monkeypatch.setattr(rpmplugin.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("RPMCOW_PLUGIN", str(mine))
    assert rpmplugin.plugin_path() == str(mine)

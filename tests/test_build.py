"""Build hardening: warnings are errors, no executable stack, RELRO."""
import subprocess
from pathlib import Path

import pytest

from rpmcow import _build, native

ROOT = Path(__file__).resolve().parents[1]


def _program_headers(path):
    return subprocess.run(["readelf", "-lW", path], capture_output=True, text=True,
                          check=True).stdout


def test_extension_has_no_executable_stack():
    import rpmcow._core
    so = rpmcow._core.__file__
    stack = [l for l in _program_headers(so).splitlines() if "GNU_STACK" in l]
    assert len(stack) == 1, "no GNU_STACK header: the stack defaults to executable"
    assert "RWE" not in stack[0] and stack[0].split()[-2] == "RW"
    assert "GNU_RELRO" in _program_headers(so)


def test_build_flags_make_warnings_errors():
    assert "-Werror" in _build.CFLAGS and "-Wall" in _build.CFLAGS
    assert "-Wl,-z,noexecstack" in _build.LDFLAGS


@pytest.mark.parametrize("source", _build.SOURCES)
def test_each_source_compiles_without_warnings(source):
    inc = subprocess.run(["/usr/bin/python3", "-c",
                          "import sysconfig; print(sysconfig.get_paths()['include'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    cmd = ["gcc", "-fsyntax-only", "-I", str(ROOT / "csrc"), "-I", inc,
           *[f for f in _build.CFLAGS if f != "-O2"], "-O2",
           str(ROOT / "csrc" / source)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_shipped_builds_carry_no_test_hooks(tmp_path):
    """The default builds read no test variable: neither the extension nor
    the plugin (which runs in every copy-on-write install, as root) has
    their names in them; only a test build of the plugin does."""
    import rpmcow._core
    sos = [rpmcow._core.__file__]
    plugin = ROOT / "rpmcow" / "plugins" / "cow.so"
    if plugin.is_file():             # a checkout's build (rpmbuild's %check has it elsewhere)
        sos.append(str(plugin))
    for so in sos:
        data = Path(so).read_bytes()
        assert b"RPMCOW_TEST" not in data, so
        assert b"fault injected" not in data, so
    if plugin.is_file():
        hooked = _build.build_plugin(str(tmp_path), test_hooks=True)
        assert b"RPMCOW_TEST_FAULT_PATH" in Path(hooked).read_bytes()


def test_cffi_declarations_come_from_the_header():
    """One source of truth: every function and constant of csrc/rpmcow.h is
    what the extension offers -- nothing declared twice by hand."""
    import re
    header = (ROOT / "csrc" / "rpmcow.h").read_text()
    functions = set(re.findall(r"^\w[\w\s\*]*?\b(rc_\w+)\s*\(", header, re.M))
    constants = set(re.findall(r"^#define\s+(RC_\w+)\s", header, re.M))
    assert functions and constants
    missing = [n for n in sorted(functions | constants) if not hasattr(native.lib, n)]
    assert not missing, missing
    assert "cdef_from_header()" in (ROOT / "rpmcow" / "_build.py").read_text()

"""``rpmcow inspect`` of an extents file whose headers cannot be read: one
line on stderr naming the file and what is wrong, and a non-zero exit."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pkgbuild import regular

SIG_START = 96                  # after the lead: magic 8e ad e8 01, 4 reserved, il, dl


def _rpmcow(*args):
    script = Path(sys.executable).parent / "rpmcow"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "rpmcow"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def extents_file(pkgbuilder, tmp_path_factory):
    pkg = pkgbuilder.build("rcinspect", [regular("/opt/rc/f", b"x" * 5000)])
    out = tmp_path_factory.mktemp("inspect") / "good.rpme"
    r = _rpmcow("transcode", str(pkg), "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data[SIG_START:SIG_START + 4] == b"\x8e\xad\xe8\x01"
    return out


def _corrupt(src, dst, how):
    data = bytearray(src.read_bytes())
    il, dl = struct.unpack_from(">II", data, SIG_START + 8)
    if how == "entry count":
        struct.pack_into(">I", data, SIG_START + 8, 0x7fffffff)
    elif how == "no entries":
        struct.pack_into(">I", data, SIG_START + 8, 0)
    elif how == "tag offset":            # first index entry: tag, type, offset, count
        struct.pack_into(">I", data, SIG_START + 16 + 8, dl + 0x10000)
    else:
        raise ValueError(how)
    dst.write_bytes(bytes(data))
    return dst


def test_valid_file_still_inspects(extents_file):
    r = _rpmcow("inspect", str(extents_file))
    assert r.returncode == 0, r.stderr
    assert "package:      rcinspect-1.0-1.noarch" in r.stdout
    r = _rpmcow("inspect", "--json", str(extents_file))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["package"] == "rcinspect-1.0-1.noarch"


@pytest.mark.parametrize("how", ["entry count", "no entries", "tag offset"])
@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["text", "json"])
def test_corrupt_signature_header_fails(extents_file, tmp_path, how, fmt):
    bad = _corrupt(extents_file, tmp_path / "bad.rpme", how)
    r = _rpmcow("inspect", *fmt, str(bad))
    assert r.returncode != 0, r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rpmcow: %s: " % bad), r.stderr
    assert "header" in lines[0], r.stderr
    assert r.stdout == ""


def test_corrupt_main_header_fails(extents_file, tmp_path):
    data = bytearray(extents_file.read_bytes())
    il, dl = struct.unpack_from(">II", data, SIG_START + 8)
    sig_end = SIG_START + 16 + 16 * il + dl
    hdr = sig_end + (-sig_end % 8)
    assert data[hdr:hdr + 4] == b"\x8e\xad\xe8\x01"
    struct.pack_into(">I", data, hdr + 8, 0)
    bad = tmp_path / "bad.rpme"
    bad.write_bytes(bytes(data))
    r = _rpmcow("inspect", str(bad))
    assert r.returncode != 0, r.stdout
    assert r.stderr.startswith("rpmcow: %s: " % bad) and len(r.stderr.splitlines()) == 1, \
        r.stderr


def test_not_a_package_is_still_just_not_an_extents_file(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello, world\n" * 100)
    r = _rpmcow("inspect", str(junk))
    assert r.returncode == 1
    assert "not an extents file" in r.stdout

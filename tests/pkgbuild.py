"""Build test RPMs with the system's rpmbuild, fast and hermetically.

    from pkgbuild import build_rpm, regular, directory, symlink, hardlink, ghost
    path = build_rpm(tmp_path, "demo", "1.0", "1", [
        directory("/opt/demo"),
        regular("/opt/demo/a", b"hello\\n", mode=0o755),
        hardlink("/opt/demo/b", "/opt/demo/a"),
        symlink("/opt/demo/c", "a"),
        regular("/etc/demo.conf", b"x=1\\n", config="noreplace"),
        ghost("/var/log/demo.log"),
        regular("/opt/demo/big", hole=1 << 32, data=b"!"),      # sparse, 4 GiB + 1
    ], compressor="xz", level=2, digest_algo=10)

One rpmbuild call per package. The file tree is staged by Python in
``workdir/root`` and %install just renames it into the build root (same file
system, so sparse and large files cost nothing to "copy"). The environment is
pinned: HOME and %_topdir inside workdir (no ~/.rpmmacros), no
__os_install_post (no strip/brp scripts), no build-id links, no debuginfo,
no automatic dependencies, ``--nodeps``.

Payload settings, as checked with Debian 12's rpm 4.18.0 (every one builds;
the header's PAYLOADCOMPRESSOR / PAYLOADFLAGS come out as):

    compressor  %_binary_payload   PAYLOADCOMPRESSOR   PAYLOADFLAGS
    zstd        w19.zstdio         "zstd"              "19"
    xz          w9.xzdio           "xz"                "9"
    gzip        w9.gzdio           "gzip"              "9"
    bzip2       w9.bzdio           "bzip2"             "9"
    lzma        w9.lzdio           "lzma"              "9"   (legacy .lzma / lzma_alone)
    none        w.ufdio            (tag absent)        ""  -- rpm reads a missing compressor
                                                       tag as gzip, and its gzip reader
                                                       passes data that is not gzip through

``w0.ufdio`` gives PAYLOADFLAGS "0" and still no compressor tag. Raw values with
threads or long mode build too and land verbatim in PAYLOADFLAGS: ``w19T2.zstdio``
-> "19T2", ``w19L.zstdio`` -> "19L", ``w9T2.xzdio`` -> "9T2", ``w6e.xzdio`` -> "6e".
``w3L30.zstdio`` builds, but its 1 GiB zstd window is more than rpm 4.18's own
reader accepts (rpm2cpio and rpm -i fail on it).

A file of 4 GiB or more makes rpm use LONGFILESIZES and the stripped "07070X"
cpio format, which ``rpm2cpio`` refuses ("files over 4GB not supported by
cpio"); read such payloads with ``rpm.files(h).archive(fd)``.
"""
import hashlib
import json
import os
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

PAYLOAD_IO = {
    "zstd": "zstdio", "xz": "xzdio", "gzip": "gzdio",
    "bzip2": "bzdio", "lzma": "lzdio", "none": "ufdio",
}
DEFAULT_LEVEL = {"zstd": 19, "xz": 9, "gzip": 9, "bzip2": 9, "lzma": 9, "none": None}
# what rpm 4.18 writes as RPMTAG_PAYLOADCOMPRESSOR for each (None: no tag)
HEADER_COMPRESSOR = {
    "zstd": "zstd", "xz": "xz", "gzip": "gzip",
    "bzip2": "bzip2", "lzma": "lzma", "none": None,
}
COMPRESSORS = tuple(PAYLOAD_IO)

# rpm's _binary_filedigest_algorithm numbers (PGPHASHALGO_*) -> hashlib name, size
DIGEST_ALGOS = {1: ("md5", 16), 2: ("sha1", 20), 8: ("sha256", 32),
                9: ("sha384", 48), 10: ("sha512", 64), 11: ("sha224", 28)}

# characters rpm's %files parser would glob, unescape or choke on
_BAD_PATH_CHARS = set('"\\*?[]{}\n\r\t')

CHUNK = 1 << 20


class BuildError(Exception):
    """rpmbuild failed; the message carries its output."""


@dataclass
class FileSpec:
    """One %files entry and what to put in the build root for it.

    kind: "file", "dir", "symlink", "hardlink", "fifo" or "dev".
      file     -- content is ``hole`` zero bytes (a sparse hole) followed by
                  ``data``, or whatever ``chunks()`` yields if given (a callable, so
                  the content can be produced again for checking).
      symlink  -- ``target`` is the link's target text.
      hardlink -- ``target`` is the package path of the FileSpec (kind "file") this
                  name is a hard link to; mode and content are that file's.
      fifo     -- a named pipe (made with mkfifo in the build root).
      dev      -- a device node rpm makes up (%dev, not in the build root);
                  ``target`` is "c,MAJOR,MINOR" or "b,MAJOR,MINOR".
    ghost:  listed as %ghost. A ghost "file" with data=None is not created at all.
    config: None, "config" or "noreplace" (%config / %config(noreplace)).
    directives: extra %files directives, e.g. "%doc" or "%verify(not md5)".
    """
    path: str
    kind: str = "file"
    data: Optional[bytes] = b""
    chunks: Optional[Callable[[], Iterable[bytes]]] = None
    hole: int = 0
    target: str = ""
    mode: Optional[int] = None
    ghost: bool = False
    config: Optional[str] = None
    directives: str = ""

    def __post_init__(self):
        if self.kind not in ("file", "dir", "symlink", "hardlink", "fifo", "dev"):
            raise ValueError("unknown FileSpec kind %r" % self.kind)
        if not self.path.startswith("/") or self.path.endswith("/") or "//" in self.path:
            raise ValueError("FileSpec path must be absolute and normalized: %r" % self.path)
        if _BAD_PATH_CHARS & set(self.path) or "/./" in self.path or "/../" in self.path:
            raise ValueError("FileSpec path has characters rpm's %%files mangles: %r"
                             % self.path)
        if self.config not in (None, "config", "noreplace"):
            raise ValueError("config must be None, 'config' or 'noreplace'")
        if self.mode is None:
            self.mode = 0o755 if self.kind == "dir" else 0o644

    @property
    def size(self):
        """Content size of a regular file (computed by generating it if needed)."""
        if self.chunks is not None:
            return sum(len(c) for c in self.chunks())
        return self.hole + len(self.data or b"")

    def content_chunks(self):
        """The file's content, in pieces (the hole as zero-filled pieces)."""
        if self.chunks is not None:
            yield from self.chunks()
            return
        left = self.hole
        zeros = bytes(min(left, CHUNK))
        while left:
            n = min(left, CHUNK)
            yield zeros[:n]
            left -= n
        if self.data:
            yield self.data

    def content(self):
        return b"".join(self.content_chunks())

    def hexdigest(self, algo=8):
        """Hex digest of the content with rpm digest algorithm number `algo`."""
        h = hashlib.new(DIGEST_ALGOS[algo][0])
        for c in self.content_chunks():
            h.update(c)
        return h.hexdigest()


def regular(path, data=b"", mode=0o644, **kw):
    return FileSpec(path, "file", data=data, mode=mode, **kw)


def empty(path, mode=0o644, **kw):
    return FileSpec(path, "file", data=b"", mode=mode, **kw)


def generated(path, chunks, mode=0o644, **kw):
    """A regular file whose content is ``b"".join(chunks())`` (for large files)."""
    return FileSpec(path, "file", data=None, chunks=chunks, mode=mode, **kw)


def directory(path, mode=0o755, **kw):
    return FileSpec(path, "dir", data=None, mode=mode, **kw)


def symlink(path, target, **kw):
    return FileSpec(path, "symlink", data=None, target=target, mode=0o777, **kw)


def hardlink(path, target, **kw):
    return FileSpec(path, "hardlink", data=None, target=target, **kw)


def ghost(path, data=None, mode=0o644, **kw):
    return FileSpec(path, "file", data=data, mode=mode, ghost=True, **kw)


def config(path, data, noreplace=True, mode=0o644, **kw):
    return FileSpec(path, "file", data=data, mode=mode,
                    config="noreplace" if noreplace else "config", **kw)


def fifo(path, mode=0o644, **kw):
    return FileSpec(path, "fifo", data=None, mode=mode, **kw)


def device(path, devtype="c", major=1, minor=3, mode=0o666, **kw):
    return FileSpec(path, "dev", data=None, target="%s,%d,%d" % (devtype, major, minor),
                    mode=mode, **kw)


def header_compressor(compressor):
    """PAYLOADCOMPRESSOR rpm writes for a compressor name or a raw payload macro."""
    if "." in compressor:
        io = compressor.rsplit(".", 1)[1]
        compressor = {v: k for k, v in PAYLOAD_IO.items()}[io]
    return HEADER_COMPRESSOR[compressor]


def payload_macro(compressor="zstd", level=None):
    """The %_binary_payload value for a compressor name and level."""
    if compressor not in PAYLOAD_IO:
        raise ValueError("unknown compressor %r (one of %s)" % (compressor, ", ".join(COMPRESSORS)))
    if compressor == "none":
        return "w.ufdio"
    if level is None:
        level = DEFAULT_LEVEL[compressor]
    return "w%s.%s" % (level, PAYLOAD_IO[compressor])


def _stage(root, files):
    """Create the build root tree for `files` under `root`."""
    by_path = {}
    for f in files:
        if f.path in by_path:
            raise ValueError("duplicate FileSpec path %s" % f.path)
        by_path[f.path] = f
    root.mkdir()
    root.chmod(0o755)

    def place(f):
        p = root / f.path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    for f in files:                      # directories first: their modes stick
        if f.kind == "dir":
            p = place(f)
            p.mkdir(exist_ok=True)
    for f in files:
        if f.kind == "file":
            if f.ghost and f.data is None and f.chunks is None:
                continue
            p = place(f)
            with open(p, "wb") as out:
                if f.chunks is not None:
                    for c in f.chunks():
                        out.write(c)
                else:
                    if f.hole:
                        out.truncate(f.hole)
                        out.seek(f.hole)
                    out.write(f.data or b"")
            os.chmod(p, f.mode)
        elif f.kind == "symlink":
            os.symlink(f.target, place(f))
        elif f.kind == "fifo":
            os.mkfifo(place(f))
            os.chmod(root / f.path.lstrip("/"), f.mode)
        elif f.kind == "dev":
            place(f)             # rpm makes the node up: only its directory exists
    for f in files:
        if f.kind == "hardlink":
            src = by_path.get(f.target)
            if src is None or src.kind != "file":
                raise ValueError("hardlink %s: target %s is not a regular FileSpec"
                                 % (f.path, f.target))
            f.mode = src.mode
            os.link(root / src.path.lstrip("/"), place(f))
    for f in files:
        if f.kind == "dir":
            os.chmod(root / f.path.lstrip("/"), f.mode)


def _files_line(f):
    quoted = '"%s"' % f.path.replace("%", "%%")
    parts = []
    if f.kind == "dir":
        parts.append("%dir")
    elif f.kind == "dev":
        parts.append("%%dev(%s)" % f.target)
    if f.ghost:
        parts.append("%ghost")
    if f.config == "config":
        parts.append("%config")
    elif f.config == "noreplace":
        parts.append("%config(noreplace)")
    if f.directives:
        parts.append(f.directives)
    if f.kind == "symlink":
        parts.append("%attr(-,root,root)")
    else:
        parts.append("%%attr(%04o,root,root)" % stat.S_IMODE(f.mode))
    parts.append(quoted)
    return " ".join(parts)


def _macro_escape(text):
    return text.replace("%", "%%")


def spec_text(name, version, release, files, staged_root, arch="noarch", vendor=None,
              preamble="", sections=""):
    lines = [
        "Name: %s" % name,
        "Version: %s" % version,
        "Release: %s" % release,
        "Summary: rpmcow test package %s" % name,
        "License: MIT",
        "AutoReqProv: no",
    ]
    if arch:
        lines.append("BuildArch: %s" % arch)
    if vendor is not None:
        lines.append("Vendor: %s" % vendor)
    if preamble:
        lines.append(preamble.rstrip("\n"))
    lines += [
        "",
        "%description",
        "Built by rpmcow's tests (tests/pkgbuild.py).",
        "",
        "%install",
        'rmdir "$RPM_BUILD_ROOT"',
        'mv %s "$RPM_BUILD_ROOT"' % _macro_escape(shlex.quote(str(staged_root))),
        "",
        "%files",
        "%defattr(-,root,root,-)",
    ]
    lines += [_files_line(f) for f in files]
    if sections:
        lines += ["", sections.rstrip("\n")]
    return "\n".join(lines) + "\n"


def build_rpm(workdir, name, version="1.0", release="1", files=(), compressor="zstd",
              level=None, digest_algo=8, preamble="", sections="", vendor=None,
              arch="noarch", defines=None, timeout=600):
    """Build one binary package; returns the Path of the .rpm.

    workdir: an empty (or new) directory of our own; the staged tree, the spec
      and rpmbuild's %_topdir live there.
    files: FileSpec list (see regular/empty/generated/directory/symlink/hardlink/
      ghost/config). Parent directories not listed are created but not packaged.
    compressor: zstd, xz, gzip, bzip2, lzma or none; level: its level (default
      DEFAULT_LEVEL) -- or pass compressor="w3T0.zstdio"-style raw macro values.
    digest_algo: %_binary_filedigest_algorithm (1 MD5, 2 SHA1, 8 SHA256,
      9 SHA384, 10 SHA512, 11 SHA224). With 1 rpm writes no FILEDIGESTALGO tag
      (MD5 is what a missing tag means).
    preamble: extra spec tags (Requires:, Provides: ...); sections: extra spec
      sections such as scriptlets ("%post\\n/bin/true\\n").
    defines: extra {macro: value} passed with --define.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = list(files)
    if digest_algo not in DIGEST_ALGOS:
        raise ValueError("unknown digest algorithm %r" % digest_algo)
    payload = compressor if "." in compressor else payload_macro(compressor, level)
    top = workdir / "rpmbuild"
    staged = workdir / "root"
    for sub in ("BUILD", "BUILDROOT", "RPMS", "SOURCES", "SPECS", "SRPMS", "tmp"):
        (top / sub).mkdir(parents=True, exist_ok=True)
    _stage(staged, files)
    spec = top / "SPECS" / ("%s.spec" % name)
    spec.write_text(spec_text(name, version, release, files, staged, arch=arch, vendor=vendor,
                              preamble=preamble, sections=sections))
    macros = {
        "_topdir": str(top),
        "_tmppath": str(top / "tmp"),
        "__os_install_post": "%{nil}",
        "_build_id_links": "none",
        "debug_package": "%{nil}",
        "_binary_payload": payload,
        "_source_payload": payload,
        "_binary_filedigest_algorithm": str(digest_algo),
        "_source_filedigest_algorithm": str(digest_algo),
        "_buildhost": "rpmcow-tests",
    }
    macros.update(defines or {})
    cmd = ["rpmbuild", "-bb", "--quiet", "--nodeps"]
    for k, v in macros.items():
        cmd += ["--define", "%s %s" % (k, v)]
    cmd.append(str(spec))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(top / "tmp"),
    }
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                           cwd=str(workdir))
    except subprocess.TimeoutExpired:
        raise BuildError("rpmbuild of %s timed out after %ss" % (name, timeout)) from None
    rpms = sorted((top / "RPMS").glob("*/*.rpm"))
    if r.returncode != 0 or len(rpms) != 1:
        raise BuildError("rpmbuild of %s failed (exit %d, %d packages):\n%s\n%s\n--- spec ---\n%s"
                         % (name, r.returncode, len(rpms), r.stdout, r.stderr,
                            spec.read_text()))
    return rpms[0]


class PackageBuilder:
    """Builds packages in fresh subdirectories of `basedir` (one per build)."""

    def __init__(self, basedir):
        self.basedir = Path(basedir)
        self.basedir.mkdir(parents=True, exist_ok=True)

    def workdir(self, name="pkg"):
        return Path(tempfile.mkdtemp(prefix=name + "-", dir=str(self.basedir)))

    def build(self, name="rpmcowtest", files=(), version="1.0", release="1", **kw):
        """build_rpm() in a new work directory; returns the .rpm Path."""
        return build_rpm(self.workdir(name), name, version, release, files, **kw)


def manifest(files):
    """A JSON-able description of `files` (for failure messages)."""
    out = []
    for f in files:
        d = {"path": f.path, "kind": f.kind, "mode": oct(f.mode)}
        if f.kind == "file":
            d["size"] = f.size
        if f.target:
            d["target"] = f.target
        if f.ghost:
            d["ghost"] = True
        if f.config:
            d["config"] = f.config
        out.append(d)
    return json.dumps(out, indent=1)

"""Build large, realistic RPMs out of whatever this machine has installed.

    build_large_package(workdir, "w19T2.zstdio")          -> path of the .rpm

A *profile* names source trees on this machine (Python standard libraries,
documentation, man pages, executables, shared libraries) and how many bytes
to take from each.  Files are taken in sorted order until a source's cap is
reached, so the selection is a fixed function of the machine's contents.  To
the selection the builder adds byte-identical copies (separate inodes) and
hard links, the two cases a transcoder has to deduplicate.  The tree is
staged under ``workdir``, packaged with rpmbuild (no dependency generation,
no stripping or byte-compiling, no build-id links, fixed build time and host)
and the package is cached as ``workdir/NAME-COMPRESSOR-KEY.rpm``, where KEY
hashes the whole recipe: the profile, every selected path with its size and
mtime, the compressor, the spec and the rpm version.  A rerun on an unchanged
machine reuses the package; any change to the recipe builds a new one.

Next to each package a ``.json`` sidecar records what went into it; read it
with ``package_info(path)``.
"""
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field

# Bump when the way a tree is staged or packaged changes (invalidates caches).
RECIPE_VERSION = 1

MiB = 1024 * 1024
SOURCE_DATE_EPOCH = 1700000000          # fixed build time and file mtimes
DUP_EVERY = 40                          # every Nth selected file is also copied
LINK_EVERY = 61                         # every Nth selected file gets a hard link
LINK3_EVERY = 305                       # ... and every Nth of those gets a second
PREFIX = "opt/rpmcow-bench"             # where the tree lands in the package


@dataclass(frozen=True)
class Source:
    """One tree on this machine: ``root`` (a path, or a glob whose
    version-sorted last match is used), copied to ``dest`` under the package
    prefix, at most ``cap`` bytes of it; ``match`` (a regex on the file name)
    limits which files count, ``skip_dirs`` prunes directory names."""
    root: str
    dest: str
    cap: int
    match: str = ""
    skip_dirs: tuple = ()


@dataclass(frozen=True)
class Profile:
    """``sources`` are always taken (each up to its cap); ``topup`` sources
    only while the selection is still under ``min_bytes`` or ``min_files``."""
    name: str
    sources: tuple
    topup: tuple = ()
    min_bytes: int = 0
    min_files: int = 0


_SO = r"\.so(\.[0-9.]+)?$"
_PYENV_STDLIB = "/root/.pyenv/versions/3.*/lib/python3.*"

PROFILES = {
    # >= 300 MiB installed, >= 10,000 files on a stock Debian 12 + pyenv box.
    "large": Profile(
        name="large",
        sources=(
            Source("/usr/lib/python3.11", "python3.11", 64 * MiB,
                   skip_dirs=("site-packages", "dist-packages")),
            Source(_PYENV_STDLIB, "pyenv-stdlib", 160 * MiB,
                   skip_dirs=("site-packages", "test")),
            Source("/usr/share/man", "man", 24 * MiB),
            Source("/usr/share/doc", "doc", 32 * MiB),
            Source("/usr/bin", "bin", 48 * MiB),
            Source("/usr/lib/x86_64-linux-gnu", "lib", 64 * MiB, match=_SO),
        ),
        topup=(
            Source("/usr/share/locale", "locale", 256 * MiB),
            Source("/usr/include", "include", 256 * MiB),
            Source("/usr/lib/python3/dist-packages", "dist-packages", 512 * MiB),
            Source("/usr/share", "share", 1024 * MiB, skip_dirs=("doc", "man", "locale")),
        ),
        min_bytes=330 * MiB,
        min_files=12000,
    ),
    # The profile of the package behind ../shared/reference/stock-rpm-cow.md
    # (10,812 entries, 353 MB): fewer, larger files than "large" -- mostly
    # shared libraries, executables and a JDK; no content repeated at scale.  An extents install's new disk space
    # is about one block per file (the last, partial block is the file's
    # own), so it depends on the file count as much as on the bytes.
    "reference": Profile(
        name="reference",
        sources=(
            # dri/: Mesa's drivers are hard links of one 25 MiB library, which
            # a transcoder stores once: not the shape of a typical package
            Source("/usr/lib/x86_64-linux-gnu", "lib", 200 * MiB, match=_SO,
                   skip_dirs=("dri",)),
            Source("/usr/bin", "bin", 90 * MiB),
            Source("/usr/lib/jvm", "jvm", 80 * MiB),
            Source("/usr/lib/python3.11", "python3.11", 40 * MiB,
                   skip_dirs=("site-packages", "dist-packages")),
            Source("/usr/share/man", "man", 12 * MiB),
            Source("/usr/share/doc", "doc", 10 * MiB),
        ),
    ),
    # A few MiB: the same kinds of content, for "does memory grow with size".
    "small": Profile(
        name="small",
        sources=(
            Source("/usr/lib/python3.11", "python3.11", 3 * MiB,
                   skip_dirs=("site-packages", "dist-packages", "__pycache__")),
            Source("/usr/share/man/man1", "man", 256 * 1024),
            Source("/usr/bin", "bin", 1 * MiB),
        ),
    ),
}


@dataclass
class Entry:
    src: str          # absolute path on this machine
    rel: str          # path under the package prefix
    kind: str         # "f" regular file, "l" symlink
    size: int
    mtime_ns: int
    target: str = ""  # symlink target


@dataclass
class Selection:
    profile: str
    roots: list = field(default_factory=list)     # resolved Source roots
    entries: list = field(default_factory=list)
    bytes: int = 0

    @property
    def files(self):
        return len(self.entries)


# -- selecting --------------------------------------------------------------

def _version_key(path):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def resolve_root(root):
    """A Source root as a directory on this machine, or None if absent."""
    if any(c in root for c in "*?["):
        hits = [h for h in glob.glob(root) if os.path.isdir(h)]
        return sorted(hits, key=_version_key)[-1] if hits else None
    return root if os.path.isdir(root) else None


def _walk(top, skip_dirs):
    """(path, lstat) of every regular file and symlink under top, sorted by
    byte-wise path, without following symlinks."""
    try:
        with os.scandir(top) as it:
            names = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError:
        return
    for e in names:
        if "\n" in e.name:
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if e.name not in skip_dirs:
                yield from _walk(e.path, skip_dirs)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            yield e.path, st


def _take(sel, src, root, budget_bytes=None):
    """Add files of one source to sel, in sorted order, until its cap."""
    pat = re.compile(src.match) if src.match else None
    taken = 0
    for path, st in _walk(root, set(src.skip_dirs)):
        if pat and not pat.search(os.path.basename(path)):
            continue
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        if taken + size > src.cap:
            break
        if budget_bytes is not None and budget_bytes():
            break
        rel = os.path.join(src.dest, os.path.relpath(path, root))
        if stat.S_ISLNK(st.st_mode):
            sel.entries.append(Entry(path, rel, "l", 0, st.st_mtime_ns, os.readlink(path)))
        else:
            sel.entries.append(Entry(path, rel, "f", size, st.st_mtime_ns))
        taken += size
        sel.bytes += size


def select(profile):
    """The fixed file list of a profile on this machine."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    sel = Selection(profile=prof.name)
    for src in prof.sources:
        root = resolve_root(src.root)
        sel.roots.append(root)
        if root:
            _take(sel, src, root)

    def enough():
        return sel.bytes >= prof.min_bytes and sel.files >= prof.min_files

    for src in prof.topup:
        if enough():
            break
        root = resolve_root(src.root)
        if root:
            sel.roots.append(root)
            _take(sel, src, root, budget_bytes=enough)
    return sel


def extras(sel):
    """(copies, links): deterministic picks among the selected regular
    files. copies: [(rel_src, rel_copy)], links: [(rel_src, rel_link)]."""
    regular = [e for e in sel.entries if e.kind == "f" and e.size > 0]
    copies, links = [], []
    for i, e in enumerate(regular):
        base = os.path.basename(e.rel)
        if i % DUP_EVERY == DUP_EVERY - 1:
            copies.append((e.rel, "dup/%06d-%s" % (i, base)))
        if i % LINK_EVERY == LINK_EVERY - 1:
            links.append((e.rel, "links/%06d-%s" % (i, base)))
            if i % LINK3_EVERY == LINK3_EVERY - 1:
                links.append((e.rel, "links/%06d-%s.2" % (i, base)))
    return copies, links


# -- the spec -----------------------------------------------------------------

SPEC = """\
Name:           {name}
Version:        1.0
Release:        1
Summary:        rpmcow benchmark package ({profile})
License:        Various (copies of files installed on the build machine)
AutoReqProv:    no

%define _build_id_links none
%define debug_package %{{nil}}
%define __os_install_post %{{nil}}
%define __arch_install_post %{{nil}}

%description
Copies of files found on the machine that built this package, for
benchmarking: profile {profile}, recipe {key}.

%install
cp -a '{stage}/.' '%{{buildroot}}/'

%files
%defattr(-,root,root,-)
/{prefix}
"""


def rpm_version():
    out = subprocess.run(["rpm", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def recipe_key(sel, compressor_define, name):
    """Hash of everything that decides the package's contents and build."""
    h = hashlib.sha256()
    recipe = {
        "recipe_version": RECIPE_VERSION,
        "profile": sel.profile,
        "name": name,
        "roots": sel.roots,
        "compressor": compressor_define,
        "rpm": rpm_version(),
        "spec": SPEC,
        "extras": [DUP_EVERY, LINK_EVERY, LINK3_EVERY, PREFIX, SOURCE_DATE_EPOCH],
    }
    h.update(json.dumps(recipe, sort_keys=True).encode())
    for e in sel.entries:
        h.update(("%s\0%s\0%d\0%d\0%s\n" % (e.rel, e.kind, e.size, e.mtime_ns, e.target))
                 .encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


# -- staging and building -------------------------------------------------------

def stage_tree(sel, stage):
    """Copy the selection under stage/PREFIX and add the copies and links."""
    if os.path.exists(stage):
        shutil.rmtree(stage)
    top = os.path.join(stage, PREFIX)
    made = set()
    for e in sel.entries:
        dst = os.path.join(top, e.rel)
        d = os.path.dirname(dst)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        if e.kind == "l":
            os.symlink(e.target, dst)
        else:
            shutil.copyfile(e.src, dst)
            os.chmod(dst, os.stat(e.src).st_mode & 0o7777 & ~0o6000)
    copies, links = extras(sel)
    for sub in ("dup", "links"):
        os.makedirs(os.path.join(top, sub), exist_ok=True)
    for src, dst in copies:
        shutil.copy(os.path.join(top, src), os.path.join(top, dst))
    for src, dst in links:
        os.link(os.path.join(top, src), os.path.join(top, dst))
    # fixed mtimes everywhere (clamping would do it too; this is belt and braces)
    for dirpath, dirnames, filenames in os.walk(stage):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), ns=(SOURCE_DATE_EPOCH * 10**9,) * 2,
                     follow_symlinks=False)
    return copies, links


_IO_NAMES = {"zstdio": "zstd", "xzdio": "xz", "lzdio": "lzma", "gzdio": "gz", "bzdio": "bz2",
             "ufdio": "none"}


def _rewrite_files(stage, zeros):
    """Empty every regular file of the staged tree, or (zeros) fill it with
    zeros of its own size -- each inode once (hard links share it) --
    keeping the fixed mtimes."""
    seen = set()
    for dirpath, _dirs, filenames in os.walk(stage):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if os.path.islink(p) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            if not zeros:
                os.truncate(p, 0)
            else:
                with open(p, "r+b") as f:
                    for at in range(0, st.st_size, 1 << 20):
                        f.write(bytes(min(1 << 20, st.st_size - at)))
            os.utime(p, ns=(SOURCE_DATE_EPOCH * 10**9,) * 2)


def compressor_tag(compressor_define):
    """'w19T2.zstdio' -> 'zstd19', 'w9T2.xzdio' -> 'xz9'."""
    m = re.match(r"w(\d*)(?:T\d*)?\.(\w+)$", compressor_define)
    if not m or m.group(2) not in _IO_NAMES:
        return re.sub(r"[^A-Za-z0-9]+", "_", compressor_define)
    return _IO_NAMES[m.group(2)] + m.group(1)


def _log(msg):
    print("largepkg: " + msg, file=sys.stderr, flush=True)


def build_large_package(workdir, compressor_define, name="rpmcow-bench-large",
                        profile="large", verbose=True, empty=False, zeroed=False):
    """Build (or reuse from the cache in workdir) the package of ``profile``
    compressed with ``compressor_define`` (an rpm ``_binary_payload`` value
    such as ``w19T2.zstdio`` or ``w9T2.xzdio``). Returns the package path.

    empty: the package's twin with every regular file emptied (same paths,
    modes, links and directories, no content): what installing it costs is
    rpm's own per-file work, the floor of any install through stock rpm.
    zeroed: the twin whose every regular file holds zeros of its own size:
    rpm reads and writes every byte the header declares, but (in a zstd
    payload: run-length blocks) decompresses next to nothing -- installed
    with --nofiledigest, the floor of any install that feeds stock rpm the
    declared bytes (rpmcow install's)."""
    if empty and zeroed:
        raise ValueError("a package is either emptied or zeroed")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    sel = select(profile)
    if empty:
        name += "-empty"
    if zeroed:
        name += "-zeroed"
    key = recipe_key(sel, compressor_define, name)
    out = os.path.join(workdir, "%s-%s-%s.rpm" % (name, compressor_tag(compressor_define), key))
    if os.path.exists(out) and os.path.exists(out + ".json"):
        if verbose:
            _log("cached %s" % os.path.relpath(out))
        return out

    stage = os.path.join(workdir, "stage-%s" % key)
    topdir = os.path.join(workdir, "rpmbuild-%s" % key)
    if verbose:
        _log("building %s: %d files, %.1f MiB selected, payload %s (slow for high levels)"
             % (os.path.basename(out), sel.files, sel.bytes / MiB, compressor_define))
    try:
        copies, links = stage_tree(sel, stage)
        if empty or zeroed:
            _rewrite_files(stage, zeros=zeroed)
        os.makedirs(os.path.join(topdir, "SPECS"), exist_ok=True)
        spec = os.path.join(topdir, "SPECS", name + ".spec")
        with open(spec, "w") as f:
            f.write(SPEC.format(name=name, profile=sel.profile, key=key, stage=stage,
                                prefix=PREFIX))
        env = dict(os.environ, HOME=topdir, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH),
                   LC_ALL="C")
        cmd = ["rpmbuild", "-bb", "--nodeps", "--quiet",
               "--define", "_topdir " + topdir,
               "--define", "_binary_payload " + compressor_define,
               "--define", "_buildhost rpmcow-bench",
               "--define", "use_source_date_epoch_as_buildtime 1",
               "--define", "clamp_mtime_to_source_epoch 1",
               "--define", "__os_install_post %{nil}",
               "--define", "_build_id_links none",
               spec]
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, errors="replace")
        if r.returncode != 0:
            raise RuntimeError("rpmbuild failed (%d):\n%s" % (r.returncode, r.stderr[-4000:]))
        built = glob.glob(os.path.join(topdir, "RPMS", "*", name + "-1.0-1.*.rpm"))
        if len(built) != 1:
            raise RuntimeError("rpmbuild made %r, expected one package" % built)
        info = {
            "name": name,
            "profile": sel.profile,
            "recipe_key": key,
            "compressor_define": compressor_define,
            "roots": sel.roots,
            "selected_files": sel.files,
            "selected_regular": sum(1 for e in sel.entries if e.kind == "f"),
            "selected_symlinks": sum(1 for e in sel.entries if e.kind == "l"),
            "selected_bytes": sel.bytes,
            "duplicate_copies": len(copies),
            "extra_hardlinks": len(links),
            "rpm": rpm_version(),
        }
        os.replace(built[0], out)
        with open(out + ".json", "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(topdir, ignore_errors=True)
    if verbose:
        _log("built %s (%.1f MiB)" % (os.path.relpath(out), os.path.getsize(out) / MiB))
    return out


def package_info(path):
    """The sidecar written by build_large_package for the package at path."""
    with open(path + ".json") as f:
        return json.load(f)


if __name__ == "__main__":
    # Quick look at a profile's selection: python bench/largepkg.py [large|small]
    s = select(sys.argv[1] if len(sys.argv) > 1 else "large")
    c, l = extras(s)
    print("profile %s: %d entries (%d symlinks), %.1f MiB; %d copies, %d links; roots %s"
          % (s.profile, s.files, sum(1 for e in s.entries if e.kind == "l"), s.bytes / MiB,
             len(c), len(l), s.roots))

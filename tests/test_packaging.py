"""The RPM packaging: `make rpm` (packaging/build-rpm.sh + packaging/rpmcow.spec),
the packages it builds, the man pages, and -- as root, on a loop-mounted XFS --
the built packages installed by dnf with our own ``cow`` plugin into an install
root, and the installed tools run from there.

The packages are built once per session, from the work tree's files as
``git add -A`` would take them (``RPM_FROM=worktree``; in CI's fresh clone
that is HEAD), with the spec's own %check (unit tests and
packaging/smoke-test.sh) running inside rpmbuild.

What the end-to-end test proves on Debian, and what it cannot: Debian's rpm
database knows none of the packages the built ones require (python3, librpm,
python3-dnf, ...), so a stub package built here provides exactly those
capabilities; dnf then resolves, downloads, checks the signatures of,
transcodes and installs the four packages copy-on-write, and rpm -V of the
root is clean.  The installed Python code and C extension run with the
host's Python and libraries (reading the root's site-packages through
PYTHONPATH) -- they were built against those, so this says nothing about
running on a Fedora userland.  A second dnf transaction uses only what was
installed: the root's dnf plugin, the root's rpmcow and the root's rpm plugin.
"""
import argparse
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dnfrepo import (Dnf, GpgKey, HttpServer, RepoSet, createrepo, missing_tools, rpm_qa,
                     rpm_va, summary, transcoded, unshared_blocks)
from loopfs import xfs_fs  # noqa: F401
import pkgbuild
import rpmcow
from conftest import corpus_path
from rpmcow import cli

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "rpmcow.spec"
MAN_DIR = ROOT / "docs" / "man"
MAN_PAGES = sorted(MAN_DIR.glob("*.8"))
VERSION = rpmcow.__version__
RELEASE = "1"
VR = "%s-%s" % (VERSION, RELEASE)
ARCH = os.uname().machine
PACKAGES = {             # name -> arch
    "python3-rpmcow": ARCH,
    "rpm-plugin-cow": ARCH,
    "python3-dnf-plugin-cow": "noarch",
    "python3-dnf-plugin-sticky-vendor": "noarch",
    "rpmcow-vendor-dnf5": ARCH,
}
# the libdnf5 plugin is built where libdnf5's headers are (--with dnf5)
WITH_DNF5 = shutil.which("pkg-config") is not None and shutil.which("g++") is not None and \
    subprocess.run(["pkg-config", "--exists", "libdnf5"]).returncode == 0
if WITH_DNF5:
    PACKAGES["libdnf5-plugin-cow"] = ARCH
RPMFILE_CONFIG, RPMFILE_DOC, RPMFILE_NOREPLACE, RPMFILE_LICENSE = 1, 2, 16, 128


def _run(cmd, check=True, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (exit %d):\n%s\n%s"
                             % (" ".join(map(str, cmd)), r.returncode, r.stdout, r.stderr))
    return r


def rpm_eval(expr):
    return _run(["rpm", "--eval", expr]).stdout.strip()


def qp(path, fmt):
    return _run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, path]).stdout


def deps(path, kind):
    """Dependencies of a package file: kind is requires, provides, recommends..."""
    out = _run(["rpm", "-qp", "--nosignature", "--nodigest", "--" + kind, path]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


@dataclass
class PkgFile:
    path: Path
    name: str
    arch: str
    files: list = field(default_factory=list)      # (path, mode, flags, linkto)

    @property
    def paths(self):
        return {f[0] for f in self.files}

    def flags(self, path):
        return next(f[2] for f in self.files if f[0] == path)


@dataclass
class Build:
    topdir: Path
    log: str
    srpm: Path
    rpms: dict                  # name -> PkgFile


def _pkgfile(path):
    name, arch = qp(path, "%{NAME} %{ARCH}").split()
    out = qp(path, "[%{FILENAMES}\t%{FILEMODES}\t%{FILEFLAGS}\t%{FILELINKTOS}\n]")
    files = []
    for line in out.splitlines():
        p, mode, flags, link = line.split("\t")
        files.append((p, int(mode), int(flags), link))
    return PkgFile(Path(path), name, arch, files)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """`make rpm`'s script, once per session, into a private %_topdir."""
    for tool in ("git", "rpmbuild", "rpmspec", "rpm"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    work = tmp_path_factory.mktemp("rpm")
    env = dict(os.environ, RPM_TOPDIR=str(work / "top"), RPM_FROM="worktree",
               HOME=str(work))          # no ~/.rpmmacros; Debian's rpmdb is $HOME/.rpmdb
    if WITH_DNF5:
        env["RPMBUILD_OPTS"] = (env.get("RPMBUILD_OPTS", "") + " --with dnf5").strip()
    r = subprocess.run(["sh", str(ROOT / "packaging" / "build-rpm.sh")], cwd=str(ROOT),
                       capture_output=True, text=True, env=env, timeout=900)
    log = r.stdout + r.stderr
    (work / "build.log").write_text(log)
    assert r.returncode == 0, "make rpm failed (exit %d):\n%s" % (r.returncode, log[-6000:])
    top = work / "top"
    srpms = sorted((top / "SRPMS").glob("*.src.rpm"))
    assert len(srpms) == 1, srpms
    rpms = {}
    for p in sorted((top / "RPMS").glob("*/*.rpm")):
        pf = _pkgfile(p)
        # rpm's own debug packages (rpmbuild makes them where the build
        # root's macros say so: Fedora's, rpm 4.20 and later) are not ours
        if pf.name.endswith(("-debuginfo", "-debugsource")):
            continue
        rpms[pf.name] = pf
    return Build(top, log, srpms[0], rpms)


# ---- make rpm ------------------------------------------------------------------

def test_make_rpm_builds_source_and_binary_packages(built):
    assert {n: p.arch for n, p in built.rpms.items()} == PACKAGES
    for name, p in built.rpms.items():
        assert p.path.name == "%s-%s.%s.rpm" % (name, VR, p.arch)
        assert qp(p.path, "%{VERSION}-%{RELEASE}") == VR
    assert built.srpm.name == "rpmcow-%s.src.rpm" % VR
    assert "make rpm: built:" in built.log


def test_spec_version_is_the_package_version():
    spec = SPEC.read_text()
    assert re.search(r"^Version:\s+%s$" % re.escape(VERSION), spec, re.M)
    setup = (ROOT / "setup.py").read_text()
    assert 'version="%s"' % VERSION in setup


def test_check_section_ran_inside_rpmbuild(built):
    """%check ran the unit tests and the smoke test against the build root."""
    assert re.search(r"\d+ passed", built.log), built.log[-3000:]
    assert "smoke: OK" in built.log
    assert re.search(r"smoke: imported \d+ modules from \S*/BUILDROOT/", built.log)


def test_nodeps_only_where_rpm_cannot_see_the_build_requires(built):
    reqs = _run(["rpmspec", "-q", "--buildrequires", SPEC]).stdout.split("\n")
    names = {re.split(r"[ <>=]", r.strip())[0] for r in reqs if r.strip()}
    seen = [n for n in names if subprocess.run(
        ["rpm", "-q", "--whatprovides", n], capture_output=True,
        env=dict(os.environ, HOME=str(built.topdir.parent))).returncode == 0]
    said = "rpmbuild runs with --nodeps" in built.log
    assert said == (not seen), built.log[:2000]


def test_source_package_holds_a_clean_tree(built):
    """The SRPM holds the spec and a tarball of the tree without build products."""
    files = set(_run(["rpm", "-qpl", built.srpm]).stdout.split())
    tarball = "rpmcow-%s.tar.gz" % VERSION
    assert files == {tarball, "rpmcow.spec"}
    tar = built.topdir / "SOURCES" / tarball
    names = _run(["tar", "-tzf", tar]).stdout.split("\n")
    prefix = "rpmcow-%s/" % VERSION
    assert all(n.startswith(prefix) for n in names if n)
    rel = {n[len(prefix):] for n in names if n}
    for need in ("LICENSE", "setup.py", "packaging/rpmcow.spec", "packaging/macros.rpmcow",
                 "csrc/rpm_plugin_cow.c", "dnf-plugins/cow.py", "docs/man/rpmcow.8"):
        assert need in rel
    junk = [n for n in rel if n.endswith((".so", ".pyc", ".o")) or "__pycache__" in n
            or n.split("/")[0] in (".venv", "build", ".pytest_cache", ".hypothesis")]
    assert not junk, junk


# ---- what the packages hold ------------------------------------------------------

def _sitedirs(built):
    core = next(p for p in built.rpms["python3-rpmcow"].paths
                if re.search(r"/rpmcow/_core[^/]*\.so$", p))
    sitearch = core.rsplit("/rpmcow/", 1)[0]
    plugin = next(p for p in built.rpms["python3-dnf-plugin-cow"].paths
                  if p.endswith("/dnf-plugins/cow.py"))
    sitelib = plugin.rsplit("/dnf-plugins/", 1)[0]
    return sitearch, sitelib


def _doc_dirs(name):
    return ("/usr/share/doc/%s" % name, "/usr/share/licenses/%s" % name)


def test_file_lists(built):
    sitearch, sitelib = _sitedirs(built)
    plugindir = rpm_eval("%{__plugindir}")
    macrodir = rpm_eval("%{_rpmmacrodir}")
    assert re.match(r"^/usr/lib(64)?/python3\.\d+/site-packages$", sitearch), sitearch
    assert re.match(r"^/usr/lib/python3\.\d+/site-packages$", sitelib), sitelib

    lib = built.rpms["python3-rpmcow"].paths
    for p in ("/usr/bin/rpmcow", "/usr/bin/rpm2extents",
              sitearch + "/rpmcow/__init__.py", sitearch + "/rpmcow/cli.py",
              sitearch + "/rpmcow/rpmplugin.py", sitearch + "/rpmcow/vendorpolicy/policy.py",
              sitearch + "/rpmcow/vendorpolicy/formats.py", "/var/lib/rpmcow",
              # make demo's machinery, complete (issue #15): its dnf timing plugin
              sitearch + "/rpmcow/scenario_plugins/rpmtiming.py",
              "/usr/share/bash-completion/completions/rpmcow"):
        assert p in lib, p
    assert any(re.match(r"/usr/share/man/man8/rpmcow\.8(\.gz)?$", p) for p in lib)
    assert any(re.match(r"/usr/share/man/man8/rpm2extents\.8(\.gz)?$", p) for p in lib)
    assert any(re.match(sitearch + r"/rpmcow-%s.*\.(dist|egg)-info$" % re.escape(VERSION), p)
               for p in lib)
    assert any(p.startswith(sitearch + "/rpmcow/__pycache__/cli.") for p in lib)
    assert not any(p.endswith("/cow.so") for p in lib), "the rpm plugin is rpm-plugin-cow's"

    plug = built.rpms["rpm-plugin-cow"].paths
    assert plugindir + "/cow.so" in plug
    assert macrodir + "/macros.rpmcow" in plug
    assert sitearch + "/rpmcow/dnf5cow.py" in lib and sitearch + "/rpmcow/serve.py" in lib
    if WITH_DNF5:
        d5 = built.rpms["libdnf5-plugin-cow"]
        assert rpm_eval("%{_libdir}") + "/libdnf5/plugins/cow.so" in d5.paths
        conf = "/etc/dnf/libdnf5-plugins/cow.conf"
        assert conf in d5.paths
        assert d5.flags(conf) & RPMFILE_CONFIG and d5.flags(conf) & RPMFILE_NOREPLACE

    cow = built.rpms["python3-dnf-plugin-cow"]
    sticky = built.rpms["python3-dnf-plugin-sticky-vendor"]
    for pkg, module, conf, man in (
            (cow, "cow", "cow.conf", "dnf-cow"),
            (sticky, "sticky_vendor", "sticky-vendor.conf", "dnf-vendor")):
        assert sitelib + "/dnf-plugins/%s.py" % module in pkg.paths
        assert any(p.startswith(sitelib + "/dnf-plugins/__pycache__/%s.cpython-" % module)
                   for p in pkg.paths)
        conf = "/etc/dnf/plugins/" + conf
        assert conf in pkg.paths
        assert pkg.flags(conf) & RPMFILE_CONFIG and pkg.flags(conf) & RPMFILE_NOREPLACE
        # dnf-cow(8) covers both dnf generations' plugins: python3-rpmcow has it
        holder = lib if man == "dnf-cow" else pkg.paths
        assert any(re.match(r"/usr/share/man/man8/%s\.8(\.gz)?$" % man, p) for p in holder)
        shipped = (ROOT / "dnf-plugins" / conf.rsplit("/", 1)[1]).read_bytes()
        assert _extract(pkg.path, conf) == shipped
    assert "/etc/dnf/sticky-vendor.d" in sticky.paths
    assert "/var/lib/dnf/sticky-vendor" in sticky.paths
    docs = {p.rsplit("/", 1)[1] for p in lib if built.rpms["python3-rpmcow"].flags(p)
            & RPMFILE_DOC}
    assert {"README.md", "quickstart.md", "architecture.md", "troubleshooting.md",
            "format.md", "install.md", "verification.md"} <= docs, docs


def test_no_file_outside_the_package_directories(built):
    """Every file lies where its package may put files, no two packages ship
    the same file, and no package claims a directory that belongs to the
    system (/usr/bin, dnf's plugin directories, rpm's plugin directory...)."""
    sitearch, sitelib = _sitedirs(built)
    plugindir = rpm_eval("%{__plugindir}")
    macrodir = rpm_eval("%{_rpmmacrodir}")
    man = "/usr/share/man/man8/"
    allowed = {
        "python3-rpmcow": ("/usr/bin/rpmcow", "/usr/bin/rpm2extents", sitearch + "/rpmcow", man + "rpmcow.8", man + "rpm2extents.8",
                           man + "dnf-cow.8",
                           "/var/lib/rpmcow", "/usr/lib/.build-id",
                           "/usr/share/bash-completion/completions/rpmcow",
                           "/usr/share/bash-completion/completions/rpm2extents"),
        "rpm-plugin-cow": (plugindir + "/cow.so", macrodir + "/macros.rpmcow",
                           "/usr/lib/.build-id"),
        "python3-dnf-plugin-cow": (sitelib + "/dnf-plugins/cow.py",
                                   sitelib + "/dnf-plugins/__pycache__/cow.",
                                   "/etc/dnf/plugins/cow.conf"),
        "rpmcow-vendor-dnf5": (sitearch + "/rpmcow/vendor_dnf5.py",
                               sitearch + "/rpmcow/__pycache__/vendor_dnf5.",
                               sitearch + "/rpmcow/vendorpolicy/dnf5.py",
                               sitearch + "/rpmcow/vendorpolicy/__pycache__/dnf5.",
                               rpm_eval("%{_libdir}") + "/libdnf5/plugins/sticky-vendor.so",
                               "/etc/dnf/libdnf5-plugins/sticky-vendor.conf",
                               "/usr/lib/.build-id"),
        "libdnf5-plugin-cow": (rpm_eval("%{_libdir}") + "/libdnf5/plugins/cow.so",
                               "/etc/dnf/libdnf5-plugins/cow.conf", "/usr/lib/.build-id"),
        "python3-dnf-plugin-sticky-vendor": (
            sitelib + "/dnf-plugins/sticky_vendor.py",
            sitelib + "/dnf-plugins/__pycache__/sticky_vendor.",
            "/etc/dnf/plugins/sticky-vendor.conf", "/etc/dnf/sticky-vendor.d",
            "/var/lib/dnf/sticky-vendor", man + "dnf-vendor.8"),
    }
    system_dirs = {"/usr/bin", sitearch, sitelib, sitelib + "/dnf-plugins",
                   sitelib + "/dnf-plugins/__pycache__", plugindir, macrodir,
                   "/etc/dnf", "/etc/dnf/plugins", "/var/lib/dnf", "/usr/share/man/man8",
                   "/usr/share/bash-completion", "/usr/share/bash-completion/completions"}
    # (rpm itself adds /usr/lib/.build-id and its links to every package with ELF files)
    owner = {}
    for name, pkg in built.rpms.items():
        for path, mode, flags, _ in pkg.files:
            ok = path.startswith(allowed[name] + _doc_dirs(name))
            assert ok, "%s ships %s, outside its directories" % (name, path)
            assert path not in system_dirs, "%s claims the system directory %s" % (name, path)
            assert not path.startswith("/usr/local/"), path
            if not path.startswith("/usr/lib/.build-id/") and not (mode & 0o40000):
                assert path not in owner, "%s is in %s and %s" % (path, owner.get(path), name)
                owner[path] = name


def _archive(rpm_path):
    """The package's payload as a cpio archive (rpm2cpio into a file: cpio
    stops reading at the archive's trailer, and rpm2cpio writing the padding
    after it into a pipe already closed died of SIGPIPE now and then)."""
    import tempfile
    f = tempfile.TemporaryFile()
    r = subprocess.run(["rpm2cpio", str(rpm_path)], stdout=f, stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    f.seek(0)
    return f


def _extract(rpm_path, member):
    """The content of one file of a package (rpm2cpio, cpio)."""
    with _archive(rpm_path) as f:
        r = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "." + member],
                           stdin=f, capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _unpack(rpm_path, dest):
    dest.mkdir(parents=True, exist_ok=True)
    with _archive(rpm_path) as f:
        r = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                           stdin=f, cwd=str(dest), capture_output=True)
    assert r.returncode == 0, r.stderr
    return dest


# ---- dependencies ----------------------------------------------------------------

def test_requires_and_provides(built):
    isa = "(%s)" % rpm_eval("%{_isa}").strip("()") if rpm_eval("%{?_isa}") else ""
    r = {n: set(deps(p.path, "requires")) for n, p in built.rpms.items()}
    pv = {n: set(deps(p.path, "provides")) for n, p in built.rpms.items()}
    rec = {n: set(deps(p.path, "recommends")) for n, p in built.rpms.items()}

    lib = r["python3-rpmcow"]
    assert {"python3-rpm", "rpm >= 4.16"} <= lib
    assert any(d.startswith("python3-cffi") or "dist(cffi)" in d for d in lib), lib
    assert "rpm-plugin-cow%s = %s" % (isa, VR) in rec["python3-rpmcow"]
    assert "python3-rpmcow%s = %s" % (isa, VR) in pv["python3-rpmcow"]

    plug = r["rpm-plugin-cow"]
    assert "python3-rpmcow%s = %s" % (isa, VR) in plug
    assert "rpm-libs%s >= 4.16" % isa in plug
    assert any(d.startswith("librpm.so") for d in plug), "no automatic librpm dependency"

    cow = r["python3-dnf-plugin-cow"]
    assert {"python3-dnf", "python3-rpmcow = " + VR, "rpm-plugin-cow = " + VR} <= cow
    assert "dnf-plugin-cow = " + VR in pv["python3-dnf-plugin-cow"]

    sticky = r["python3-dnf-plugin-sticky-vendor"]
    assert {"python3-dnf", "python3-rpmcow = " + VR} <= sticky
    assert "rpm-plugin-cow = " + VR not in sticky
    assert {"dnf-command(vendor)", "dnf-plugin-sticky-vendor = " + VR} <= \
        pv["python3-dnf-plugin-sticky-vendor"]

    # between our packages: always this exact version-release
    ours = set(PACKAGES)
    for name, reqs in r.items():
        for d in reqs | rec[name]:
            target = re.split(r"[ (]", d)[0]
            if target in ours:
                assert d.endswith(" = " + VR), "%s: %s is not pinned to %s" % (name, d, VR)


# ---- rpmlint-style basics --------------------------------------------------------

LICENSE_TEXT = (ROOT / "LICENSE").read_text()


def test_license_tag_and_file_in_every_package(built):
    assert "Permission is hereby granted, free of charge" in LICENSE_TEXT
    assert "Copyright (c) 2026 the rpmcow authors" in LICENSE_TEXT
    for name, pkg in list(built.rpms.items()) + [("src", _pkgfile(built.srpm))]:
        assert qp(pkg.path, "%{LICENSE}") == "MIT", name
        if name == "src":
            continue
        lic = [f[0] for f in pkg.files if f[2] & RPMFILE_LICENSE]
        assert len(lic) == 1 and lic[0].endswith("/LICENSE"), (name, lic)
        assert _extract(pkg.path, lic[0]).decode() == LICENSE_TEXT


def test_tags_rpmlint_checks(built):
    for name, pkg in built.rpms.items():
        summary_ = qp(pkg.path, "%{SUMMARY}")
        desc = qp(pkg.path, "%{DESCRIPTION}")
        assert summary_ and not summary_.endswith(".") and len(summary_) < 80, summary_
        assert summary_[0].isupper(), summary_
        assert len(desc) > 20
        for line in qp(pkg.path, "%{DESCRIPTION}").splitlines():
            assert len(line) <= 79, "description line too long: %r" % line
        assert qp(pkg.path, "%{CHANGELOGTEXT}"), "no %changelog"
        assert qp(pkg.path, "%{SOURCERPM}") == built.srpm.name
        for tag in ("PACKAGER", "VENDOR"):
            assert qp(pkg.path, "%%{%s}" % tag) == "(none)", "%s set in %s" % (tag, name)


def test_no_buildroot_paths_bad_modes_or_env_shebangs(built, tmp_path):
    """rpmlint's file-contains-buildroot, non-standard-executable-perm,
    world-writable, env-script-interpreter, and a hashbang on every script."""
    for name, pkg in built.rpms.items():
        root = _unpack(pkg.path, tmp_path / name)
        for path, mode, flags, link in pkg.files:
            if link or mode & 0o40000:
                continue
            assert not mode & 0o002, "%s: %s is world-writable" % (name, path)
            data = (root / path.lstrip("/")).read_bytes()
            assert b"/BUILDROOT/" not in data and b"/rpmbuild/BUILD" not in data and \
                str(built.topdir).encode() not in data, "%s: %s names the build root" % (
                    name, path)
            if path.startswith("/usr/bin/"):
                assert mode & 0o777 == 0o755, (path, oct(mode))
                first = data.split(b"\n", 1)[0]
                assert re.match(rb"#!/usr/bin/python3( -\w+)?$", first), (path, first)
            if path.endswith(".so"):
                assert mode & 0o777 == 0o755, (path, oct(mode))
            if path.endswith(".py"):
                assert not data.startswith(b"#!/usr/bin/env"), path


def test_rpmlint(built):
    """rpmlint itself, where installed, with packaging/rpmcow.rpmlintrc (whose
    filters say why each one does not apply): no error, no badness."""
    if shutil.which("rpmlint") is None:
        pytest.skip("rpmlint is not installed (packaging/install-build-deps.sh installs it "
                    "where the release has it: not Debian 11)")
    files = [p.path for p in built.rpms.values()] + [built.srpm, SPEC]
    r = _run(["rpmlint", "-r", ROOT / "packaging" / "rpmcow.rpmlintrc", *files], check=False,
             env=dict(os.environ, HOME=str(built.topdir.parent)), timeout=600)
    m = re.search(r"(\d+) packages and (\d+) specfiles checked; (\d+) errors, (\d+) warnings"
                  r"(?:, (\d+) badness)?", r.stdout)
    assert m, r.stdout + r.stderr
    assert (m.group(1), m.group(2)) == (str(len(files) - 1), "1"), r.stdout
    # every error but a filter this rpmlint has no use for: packaging/rpmcow.rpmlintrc
    # serves rpmlint 2.4 (Debian 12) to 2.8 (Debian 13, Fedora), and each calls the
    # others' filters unused
    errors = [line for line in r.stdout.splitlines()
              if ": E: " in line and "unused-rpmlintrc-filter" not in line]
    assert not errors, r.stdout


def test_plugin_macro_file_names_the_plugin_and_never_enables_it(built):
    pkg = built.rpms["rpm-plugin-cow"]
    macrodir = rpm_eval("%{_rpmmacrodir}")
    text = _extract(pkg.path, macrodir + "/macros.rpmcow").decode()
    assert text == (ROOT / "packaging" / "macros.rpmcow").read_text()
    defined = re.findall(r"^%(\w+)", text, re.M)
    assert defined == ["_rpmcow_plugin"], defined
    assert not re.search(r"^\s*%__transaction", text, re.M)
    value = _run(["rpm", "--load", ROOT / "packaging" / "macros.rpmcow",
                  "--eval", "%{_rpmcow_plugin}"]).stdout.strip()
    assert value == rpm_eval("%{__plugindir}") + "/cow.so"
    assert _run(["rpm", "--load", ROOT / "packaging" / "macros.rpmcow",
                 "--eval", "%{?__transaction_cow}"]).stdout.strip() == ""


def test_built_binaries_are_hardened(built, tmp_path):
    """The packaged C extension and rpm plugin: no executable stack, RELRO,
    linked against librpm (the plugin) -- built with the project's flags."""
    for name, pattern in (("python3-rpmcow", r"/rpmcow/_core[^/]*\.so$"),
                          ("rpm-plugin-cow", r"/cow\.so$")):
        pkg = built.rpms[name]
        root = _unpack(pkg.path, tmp_path / name)
        so = next(p for p in pkg.paths if re.search(pattern, p))
        headers = _run(["readelf", "-lW", root / so.lstrip("/")]).stdout
        stack = [line for line in headers.splitlines() if "GNU_STACK" in line]
        assert len(stack) == 1 and stack[0].split()[-2] == "RW", stack
        assert "GNU_RELRO" in headers
        # no test hook in what we ship (issue #15): the strings of the binary
        text = (root / so.lstrip("/")).read_bytes()
        assert b"RPMCOW_TEST" not in text and b"fault injected" not in text, so
    dyn = _run(["readelf", "-dW", tmp_path / "rpm-plugin-cow" /
                (rpm_eval("%{__plugindir}") + "/cow.so").lstrip("/")]).stdout
    assert "librpm.so" in dyn and "BIND_NOW" in dyn


# ---- man pages --------------------------------------------------------------------

def test_the_spec_installs_every_man_page(built):
    shipped = set()
    for pkg in built.rpms.values():
        shipped |= {re.sub(r"\.gz$", "", p.rsplit("/", 1)[1]) for p in pkg.paths
                    if p.startswith("/usr/share/man/man8/")}
    assert {p.name for p in MAN_PAGES} | {"rpm2extents.8"} == shipped
    assert {"rpmcow.8", "dnf-cow.8", "dnf-vendor.8"} <= shipped


@pytest.mark.parametrize("page", MAN_PAGES, ids=[p.name for p in MAN_PAGES])
def test_man_page_renders_without_warnings(page):
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="80", LANG="C.UTF-8", LC_ALL="C.UTF-8"),
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout) > 500
    assert re.search(r"^NAME$", r.stdout, re.M) and re.search(r"^SYNOPSIS$", r.stdout, re.M)


def _unescape(roff):
    text = re.sub(r"\\f[BIRP]", "", roff)
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\c", "")
    text = text.replace('\\(dq', '"')
    return text


def _roff_sections(text, macro):
    """{title: [lines]} of the .SH or .SS sections of a man page."""
    out, title = {}, None
    for line in text.splitlines():
        if line.startswith(macro + " ") or line.startswith(".SH ") or line == ".SH":
            title = line.split(" ", 1)[1].strip('"') if line.startswith(macro + " ") else None
            if title is not None:
                out[title] = []
            continue
        if title is not None:
            out[title].append(line)
    return out


def _tagged_options(lines):
    """{option string: tag text} of the .TP items of a section."""
    out = {}
    for i, line in enumerate(lines[:-1]):
        if line.strip() == ".TP":
            tag = _unescape(re.sub(r'^\.(B|I|BR|BI|IR|RB|IB)\s+', "", lines[i + 1]))
            for opt in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", tag):
                out[opt] = tag
    return out


def _argparse_options(parser):
    """{option string: metavar or None} of a parser, without -h/--help."""
    out = {}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if not action.option_strings:
            continue
        if action.nargs == 0:
            meta = None
        elif action.choices:
            meta = "{%s}" % ",".join(action.choices)
        else:
            meta = action.metavar or action.dest.upper()
        for opt in action.option_strings:
            out[opt] = meta
    return out


def _positionals(parser):
    return [a.metavar or a.dest for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def rpm2extents_parser(monkeypatch=None):
    """The parser of rpm2extents (its own builder in rpmcow.cli)."""
    return cli.build_rpm2extents_parser()


def _check_section(where, lines, parser):
    documented = _tagged_options(lines)
    real = _argparse_options(parser)
    assert set(documented) == set(real), (
        "%s: man page documents %s, --help shows %s" % (where, sorted(documented), sorted(real)))
    for opt, meta in real.items():
        tag = documented[opt]
        if meta is None:
            assert not re.search(r"\b[A-Z][A-Z_]+\b|\{", tag), "%s %s takes no value: %r" % (
                where, opt, tag)
        else:
            assert meta in tag.replace(" ", ""), "%s %s: --help says %s, man page %r" % (
                where, opt, meta, tag)


def test_rpmcow_man_page_documents_every_command_and_option(monkeypatch):
    text = (MAN_DIR / "rpmcow.8").read_text()
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sections = _roff_sections(text, ".SS")
    commands = {t.split()[1] for t in sections if t.startswith("rpmcow ") and
                not t.split()[1].startswith("\\-")}
    assert commands == set(subs.choices)
    synopsis = _unescape("\n".join(_roff_sections(text, ".SH")["SYNOPSIS"]))
    entries = [e.replace("\n", " ") for e in re.split(r"\n\.br\n", synopsis)]
    for name, sub in subs.choices.items():
        _check_section("rpmcow " + name, sections["rpmcow " + name], sub)
        entry = next(e for e in entries if re.match(r"\.B rpmcow %s\b" % name, e))
        for pos in _positionals(sub):
            assert re.search(r"\b%s\b" % re.escape(pos), entry), (name, pos, entry)
    # the top level: --version and -h/--help
    assert set(_argparse_options(parser)) == {"--version"}
    assert "--version" in synopsis and "-h" in synopsis
    assert re.search(r"\\fB\\-h\\fR|\.BR \\-h \", \" \\-\\-help", text)

    r2e = rpm2extents_parser(monkeypatch)
    _check_section("rpm2extents", _roff_sections(text, ".SH")["RPM2EXTENTS"], r2e)
    entry = next(e for e in entries if e.startswith(".B rpm2extents"))
    assert _positionals(r2e) == ["DIGESTALGO"] and "DIGESTALGO" in entry


def test_rpmcow_man_page_agrees_with_help_texts():
    """Facts --help states that the man page must state too."""
    text = _unescape((MAN_DIR / "rpmcow.8").read_text())
    flat = re.sub(r"\s+", " ", text)
    from rpmcow.digests import ALGOS
    for a in ALGOS:
        assert a.name in flat
    for level in ("none", "digest", "signature", "all"):
        assert level in flat
    assert "%_pkgverify_level" in flat
    assert "power of two from 512 to 65536" in flat
    assert "Exit status" in flat or "EXIT STATUS" in flat
    assert "number of files that failed" in flat


def _conf_keys(path):
    return set(re.findall(r"^(\w+)\s*=", path.read_text(), re.M))


def test_dnf_cow_man_page_documents_cow_conf_and_messages():
    text = (MAN_DIR / "dnf-cow.8").read_text()
    conf_section = "\n".join(_roff_sections(text, ".SH")["CONFIGURATION"])
    documented = set(re.findall(r"^\.B[IR]? (\w+) \" = \"", conf_section, re.M))
    read = set(re.findall(r'has_option\("main", "(\w+)"\)',
                          (ROOT / "dnf-plugins" / "cow.py").read_text()))
    shipped = _conf_keys(ROOT / "dnf-plugins" / "cow.conf")
    assert read == shipped - {"enabled"} or read == shipped, (read, shipped)
    assert documented == shipped | read, (documented, shipped, read)

    rendered = subprocess.run(["man", "-l", str(MAN_DIR / "dnf-cow.8")], capture_output=True,
                              text=True, env=dict(os.environ, MANWIDTH="1000", LANG="C.UTF-8",
                                                  LC_ALL="C.UTF-8")).stdout
    flat = re.sub(r"\s+", " ", rendered.replace("\u2010", "-"))
    # the messages of both dnf plugins (dnf 4's, and dnf5's Python steps) and
    # their shared summary
    src = "\n".join((ROOT / f).read_text() for f in (
        "dnf-plugins/cow.py", "rpmcow/dnf5cow.py", "rpmcow/journal.py"))
    messages = [m for m in re.findall(r'^(MSG_\w+) = \(?((?:"[^"]*"\s*)+)\)?', src, re.M)
                if m[0] != "MSG_JOURNAL"]         # the journal line is not shown
    assert len(messages) >= 7
    for name, literal in messages:
        msg = "".join(re.findall(r'"([^"]*)"', literal))
        for fragment in re.split(r"%[-.\d]*[sdf]", msg):
            fragment = fragment.strip()
            if len(fragment) >= 4:
                assert fragment in flat, "%s: %r is not in dnf-cow(8)" % (name, fragment)
    # dnf5's plugin: its cow.conf keys and those its C++ side reads are documented
    dnf5_keys = _conf_keys(ROOT / "dnf-plugins" / "libdnf5" / "cow.conf")
    cpp_keys = set(re.findall(r'get\("(\w+)"', (ROOT / "dnf-plugins" / "libdnf5" /
                                                  "cow.cpp").read_text()))
    dnf5_section = "\n".join(_roff_sections(text, ".SS").get("dnf5", []))
    dnf5_documented = set(re.findall(r"^\.B[IR]? (\w+) \" = \"", dnf5_section, re.M))
    assert cpp_keys <= documented | dnf5_documented, (cpp_keys, dnf5_documented)
    assert dnf5_keys - {"name"} <= documented | dnf5_documented, dnf5_keys
    c_src = (ROOT / "csrc" / "rpm_plugin_cow.c").read_text()
    assert "copying file data instead of cloning" in c_src
    for reason in ("the extents file is on another filesystem", "this filesystem cannot clone"):
        assert reason in c_src and reason in flat


# ---- end to end: dnf + cow installs the built packages into an installroot ----------

@dataclass
class Installed:
    root: Path
    dnf: Dnf
    repo: RepoSet
    text: str
    sitearch: str
    sitelib: str
    env: dict


def _stub_preamble(rpms):
    """Provides: lines for what the built packages need from outside themselves."""
    provided = set()
    for p in rpms:
        provided |= {d.split(" ")[0] for d in deps(p, "provides")}
        provided |= set(_run(["rpm", "-qpl", "--nosignature", p]).stdout.split())
    lines = set()
    for p in rpms:
        for d in deps(p, "requires"):
            name = d.split(" ")[0]
            if name.startswith("rpmlib(") or name in provided:
                continue
            m = re.match(r"^(\S+) (>=|=|<=) (\S+)$", d)
            lines.add("Provides: %s = %s" % (m.group(1), m.group(3)) if m else
                      "Provides: %s" % d)
    return "\n".join(sorted(lines))


@pytest.fixture(scope="session")
def installed(built, xfs_fs, tmp_path_factory):
    """The four built packages installed by dnf (cow plugin from the checkout)
    from a signed repository on 127.0.0.1 into a root on the session's XFS."""
    missing = missing_tools()
    if missing:
        pytest.skip("needs %s" % ", ".join(missing))
    work = tmp_path_factory.mktemp("rpm-e2e")
    repo_dir = work / "repo"
    repo_dir.mkdir()
    rpms = [p.path for p in built.rpms.values()]
    stub = pkgbuild.build_rpm(work / "stub", "rpmcow-host-stub", "1.0", "1", [],
                              compressor="gzip", preamble=_stub_preamble(rpms))
    for p in rpms + [stub]:
        shutil.copy(p, repo_dir / p.name)
    key = GpgKey(work)
    server = HttpServer(repo_dir, work / "http.log")
    repo = RepoSet(work, repo_dir, key, server)
    try:
        key.sign(sorted(repo_dir.glob("*.rpm")))
        createrepo(repo_dir)
        server.start()
        area = xfs_fs.area("packaging-e2e")
        d = Dnf(repo, area / "root")
        rc, out, err = d("install", *PACKAGES)
        text = out + err
        assert rc == 0, "dnf install of the built packages failed:\n%s" % text
        sitearch, sitelib = _sitedirs(built)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8",
               "PYTHONPATH": "%s:%s" % (d.root / sitearch.lstrip("/"),
                                        d.root / sitelib.lstrip("/"))}
        yield Installed(d.root, d, repo, text, sitearch, sitelib, env)
    finally:
        repo.close()


@pytest.mark.root
@pytest.mark.slow
def test_built_packages_install_copy_on_write(installed, built):
    d, text = installed.dnf, installed.text
    n_m = summary(text)
    assert n_m is not None, "no cow summary line:\n" + text
    n, m = n_m
    assert m == len(PACKAGES) + 1, text         # ours and the stub
    assert n == m, "not every package installed copy-on-write:\n" + text
    names = {"%s-%s.%s" % (name, VR, arch) for name, arch in PACKAGES.items()}
    assert names <= transcoded(text), text
    assert rpm_qa(d.root) == names | {"rpmcow-host-stub-1.0-1.noarch"}
    rc, out = rpm_va(d.root)
    assert (rc, out) == (0, ""), out

    # the rpm plugin of the built rpm-plugin-cow package, in the root's plugin dir
    so = d.root / (rpm_eval("%{__plugindir}") + "/cow.so").lstrip("/")
    assert so.is_file()
    owner = _run(["rpm", "--root", d.root, "-qf", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}",
                  "/" + str(so.relative_to(d.root))], env=installed.env).stdout
    assert owner == "rpm-plugin-cow-" + VR
    # and our own C extension shares its blocks with the extents file in the cache
    core = next(p for p in built.rpms["python3-rpmcow"].paths
                if re.search(r"/rpmcow/_core[^/]*\.so$", p))
    cache = d.cache_files("python3-rpmcow-%s.%s.cow.rpm" % (VR, ARCH))
    assert len(cache) == 1, d.cache_files()
    assert not unshared_blocks(d.root / core.lstrip("/"), cache[0])


@pytest.mark.root
@pytest.mark.slow
def test_installed_tools_run_from_the_root(installed, built, tmp_path):
    root, env = installed.root, installed.env
    py = ["/usr/bin/python3", "-c", "import rpmcow, rpmcow.vendorpolicy; print(rpmcow.__file__)"]
    where = _run(py, env=env, cwd=str(tmp_path)).stdout.strip()
    assert where.startswith(str(root) + "/"), where

    rpmcow_bin = root / "usr/bin/rpmcow"
    r = _run([rpmcow_bin, "--version"], env=env, cwd=str(tmp_path))
    assert r.stdout.strip() == "rpmcow " + VERSION

    # a corpus package (someone else's build), else one of ours
    src = corpus_path() / "real" / "go-package-1.0-0.x86_64.rpm"
    if not src.is_file():
        src = built.rpms["python3-rpmcow"].path
    out = tmp_path / "out.cow.rpm"
    r = _run([rpmcow_bin, "transcode", src, "-o", out, "--verify-level", "none"],
             env=env, cwd=str(tmp_path))
    assert "distinct contents" in r.stderr
    r = _run([rpmcow_bin, "inspect", out], env=env, cwd=str(tmp_path))
    assert "extents" in r.stdout.lower()
    # rpm2extents (upstream's contract) writes the same file as transcode
    with open(src, "rb") as fin, open(tmp_path / "r2e.rpm", "wb") as fout:
        r = subprocess.run([str(root / "usr/bin/rpm2extents"), "SHA256"], stdin=fin,
                           stdout=fout, stderr=subprocess.PIPE, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr


@pytest.mark.root
@pytest.mark.slow
def test_dnf_vendor_status_from_the_installed_plugin(installed):
    """Host dnf with the root's installed plugin directory and configuration."""
    d, root = installed.dnf, installed.root
    plugin = root / installed.sitelib.lstrip("/") / "dnf-plugins" / "sticky_vendor.py"
    if not plugin.is_file():
        pytest.skip("the sticky-vendor plugin is not in the package")
    argv = _with_root_plugins(d.argv("vendor", "status"), installed)
    assert str(ROOT) not in " ".join(argv) + " ".join(installed.env.values()), argv
    r = _run(argv, check=False, env=installed.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"Vendor policy (enforced|DISABLED)", r.stdout + r.stderr), r.stdout


def _with_root_plugins(argv, installed):
    """dnf argv with the plugins and their configuration of the install root."""
    out = []
    for a in argv:
        if a.startswith("--setopt=pluginpath="):
            a = "--setopt=pluginpath=%s" % (installed.root / installed.sitelib.lstrip("/")
                                             / "dnf-plugins")
        elif a.startswith("--setopt=pluginconfpath="):
            a = "--setopt=pluginconfpath=%s" % (installed.root / "etc/dnf/plugins")
        elif a == "--disableplugin=sticky_vendor":
            continue
        out.append(a)
    return out


@pytest.mark.root
@pytest.mark.slow
def test_installed_dnf_plugin_and_rpm_plugin_install_copy_on_write(installed):
    """A second transaction with nothing from the checkout: the root's dnf
    plugin, the root's rpmcow and the root's rpm plugin (RPMCOW_PLUGIN: the
    host's %{__plugindir} is not the root's)."""
    d, root = installed.dnf, installed.root
    so = root / (rpm_eval("%{__plugindir}") + "/cow.so").lstrip("/")
    env = dict(installed.env, RPMCOW_PLUGIN=str(so))
    argv = _with_root_plugins(d.argv("reinstall", "python3-dnf-plugin-cow"), installed)
    argv.append("--disableplugin=sticky_vendor")
    assert str(ROOT) not in " ".join(argv) + " ".join(env.values()), argv
    r = _run(argv, check=False, env=env)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert summary(text) == (1, 1), text
    rc, out = rpm_va(root)
    assert (rc, out) == (0, ""), out


# ---- documentation -------------------------------------------------------------------

USER_DOCS = ("quickstart.md", "architecture.md", "troubleshooting.md")


def _anchors(md):
    """GitHub-style anchors of a markdown file's headings."""
    out = set()
    for line in md.splitlines():
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            title = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(title.replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", USER_DOCS)
def test_doc_links_resolve(doc):
    text = (ROOT / "docs" / doc).read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"^[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (ROOT / "docs" / path) if path else ROOT / "docs" / doc
        assert target.is_file(), "%s links to missing %s" % (doc, link)
        if anchor:
            assert anchor in _anchors(target.read_text()), "%s: no #%s in %s" % (
                doc, anchor, target.name)

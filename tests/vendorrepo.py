"""Fixtures for the sticky-vendor tests: local repositories whose packages
carry different vendors, install roots, and a `dnf` runner that loads the
plugin from this checkout.

    world = build_world(tmpdir)          # packages + repositories, once
    root = world.new_root(tmpdir / "r")  # a copy of the installed baseline
    r = world.dnf(root, "upgrade")       # real dnf, offline, --installroot
    world.installed(root)                # {name: (nevra, vendor)}

The baseline installed set comes from the repository ``alpha`` (vendor
"Alpha Corp") plus the vendor-less and Gamma packages; the repository
``beta`` (vendor "Beta Inc") offers newer builds of most of them.  The
scenarios (name: what it exercises):

    foo     Alpha 1.0 installed; Alpha 1.1 and Beta 2.0 offered (held-back upgrade)
    bar     Alpha 1.0 installed; only Beta 2.0 offered (nothing to take)
    nov     no vendor 1.0 installed; Beta 2.0 offered (explicit no-vendor rules)
    casey   "Alpha Corp" 1.0 installed; "  alpha  CORP " 2.0 offered (case/space)
    gam     "Gamma Ltd" 1.0 installed; "Gamma Labs" 2.0 offered (equivalent pair)
    app     Alpha 1.0 installed; Alpha 2.0 needs libdep >= 2 (dependency)
    libdep  Alpha 1.0 installed; libdep 2.0 exists only at Beta
    old     Alpha 1.0 installed; Beta's "new" obsoletes it (obsoletes)
    same    Alpha 1.0-1 installed; the same NEVRA is also shipped by Beta (reinstall)
    down    Alpha 2.0 installed; Alpha 1.0 and Beta 1.5 offered (downgrade)
    ds      Alpha 1.0 installed; Alpha 2.0 and Beta 3.0 offered (distro-sync)
    fresh   not installed; only Beta 1.0 (fresh installs are unaffected)
    needy   not installed; Alpha 1.0 needs libdep >= 2 (dependency at another vendor)
"""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import pkgbuild  # noqa: E402
import dnfrepo  # noqa: E402

ALPHA = "Alpha Corp"
BETA = "Beta Inc"
ALPHA_VARIANT = "  alpha  CORP "
GAMMA_LTD = "Gamma Ltd"
GAMMA_LABS = "Gamma Labs"

# (repo, name, version, vendor, preamble)
PACKAGES = [
    ("alpha", "foo", "1.0", ALPHA, ""),
    ("alpha", "foo", "1.1", ALPHA, ""),
    ("beta", "foo", "2.0", BETA, ""),
    ("alpha", "bar", "1.0", ALPHA, ""),
    ("beta", "bar", "2.0", BETA, ""),
    ("alpha", "nov", "1.0", None, ""),
    ("beta", "nov", "2.0", BETA, ""),
    ("alpha", "casey", "1.0", ALPHA, ""),
    ("beta", "casey", "2.0", ALPHA_VARIANT, ""),
    ("alpha", "gam", "1.0", GAMMA_LTD, ""),
    ("beta", "gam", "2.0", GAMMA_LABS, ""),
    ("alpha", "app", "1.0", ALPHA, "Requires: libdep"),
    ("alpha", "app", "2.0", ALPHA, "Requires: libdep >= 2"),
    ("alpha", "libdep", "1.0", ALPHA, ""),
    ("beta", "libdep", "2.0", BETA, ""),
    ("alpha", "old", "1.0", ALPHA, ""),
    ("beta", "new", "1.0", BETA, "Obsoletes: old < 2\nProvides: old = 2"),
    ("alpha", "same", "1.0", ALPHA, ""),
    ("beta", "same", "1.0", BETA, ""),
    ("alpha", "down", "1.0", ALPHA, ""),
    ("alpha", "down", "2.0", ALPHA, ""),
    ("beta", "down", "1.5", BETA, ""),
    ("alpha", "ds", "1.0", ALPHA, ""),
    ("alpha", "ds", "2.0", ALPHA, ""),
    ("beta", "ds", "3.0", BETA, ""),
    ("beta", "fresh", "1.0", BETA, ""),
    ("alpha", "needy", "1.0", ALPHA, "Requires: libdep >= 2"),
]

# what the baseline root has installed (all from the repo "alpha")
BASELINE = ["foo-1.0", "bar-1.0", "nov-1.0", "casey-1.0", "gam-1.0", "app-1.0",
            "libdep-1.0", "old-1.0", "same-1.0", "down-2.0", "ds-1.0"]

REPOS = ("alpha", "beta")

PLUGIN_DIR = ROOT / "dnf-plugins"


def sticky_conf(extra=""):
    """The text of a sticky-vendor.conf for tests."""
    return "[main]\nenabled = 1\n" + extra


@dataclass
class World:
    base: Path
    rpms: dict = field(default_factory=dict)     # (repo, name, version) -> Path
    template: Path = None

    @property
    def reposdir(self):
        return self.base / "repos.d"

    @property
    def dnf_conf(self):
        return self.base / "dnf.conf"

    def rpm(self, repo, name, version):
        return self.rpms[(repo, name, version)]

    def env(self, root):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/root",                 # Debian's rpm keeps the rpmdb in ~/.rpmdb
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "SUDO_USER": "vendor-tester",
        }
        return env

    def dnf(self, root, *args, confdir=None, repos=REPOS, cow=False, plugin=True,
            check=None, timeout=300):
        """Run the system dnf (system python) on `root`; returns CompletedProcess
        with text stdout/stderr.  `confdir` holds sticky-vendor.conf."""
        cmd = [dnfrepo.DNF, "-c", str(self.dnf_conf),
               "--installroot", str(root), "--releasever", "1", "-y",
               "--setopt=reposdir=%s" % self.reposdir,
               "--setopt=pluginpath=%s" % PLUGIN_DIR,
               "--setopt=cachedir=%s" % (Path(root) / "var/cache/dnf"),
               "--disablerepo=*", "--enablerepo=%s" % ",".join(repos)]
        if confdir is not None:
            cmd.append("--setopt=pluginconfpath=%s" % confdir)
        if not cow:
            cmd.append("--disableplugin=cow")
        if not plugin:
            # the module's name: dnf 4.5 (Debian 11) matches no other
            cmd.append("--disableplugin=sticky_vendor")
        cmd += list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env(root),
                           timeout=timeout)
        r.cmd = cmd
        if check is not None and r.returncode != check:
            raise AssertionError("dnf %s: exit %d (wanted %d)\n--- stdout\n%s\n--- stderr\n%s"
                                 % (" ".join(args), r.returncode, check, r.stdout, r.stderr))
        return r

    def installed(self, root):
        """{name: (nevra, vendor)} of the packages installed in `root`."""
        fmt = "%{NAME}\t%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\t%{VENDOR}\n"
        r = subprocess.run(["rpm", "--root", str(root), "-qa", "--qf", fmt],
                           capture_output=True, text=True, env=self.env(root), check=True)
        out = {}
        for line in r.stdout.splitlines():
            name, nevra, vendor = line.split("\t")
            out[name] = (nevra, "" if vendor == "(none)" else vendor)
        return out

    def new_root(self, path):
        """A fresh install root holding the baseline packages (a copy of the
        template made once)."""
        path = Path(path)
        shutil.copytree(self.template, path, symlinks=True)
        return path


# security advisories (for upgrade-minimal): repo -> [(id, [(name, version)])]
ADVISORIES = {
    "alpha": [("ALPHA-2026:1", [("foo", "1.1")])],
    "beta": [("BETA-2026:1", [("foo", "2.0"), ("bar", "2.0")])],
}

UPDATEINFO = """<?xml version="1.0" encoding="UTF-8"?>
<updates>
%s</updates>
"""
ADVISORY = """  <update from="tests@example.com" status="stable" type="security" version="1">
    <id>%(id)s</id>
    <title>%(id)s</title>
    <issued date="2026-01-01 00:00:00"/>
    <severity>Important</severity>
    <description>test advisory</description>
    <pkglist>
      <collection short="c">
        <name>c</name>
%(pkgs)s      </collection>
    </pkglist>
  </update>
"""
ADV_PKG = """        <package name="%(n)s" version="%(v)s" release="1" epoch="0" arch="noarch"
                 src="%(n)s-%(v)s-1.src.rpm"><filename>%(n)s-%(v)s-1.noarch.rpm</filename></package>
"""


def _createrepo(directory, repo):
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(directory)],
                   check=True, capture_output=True)
    advisories = ADVISORIES.get(repo)
    if advisories:
        xml = UPDATEINFO % "".join(
            ADVISORY % {"id": aid, "pkgs": "".join(ADV_PKG % {"n": n, "v": v} for n, v in pkgs)}
            for aid, pkgs in advisories)
        path = directory / "updateinfo.xml"
        path.write_text(xml)
        subprocess.run(["modifyrepo_c", "--mdtype=updateinfo", str(path),
                        str(directory / "repodata")], check=True, capture_output=True)


def build_world(base):
    """Build every package and repository under `base`, and the baseline root."""
    base = Path(base)
    world = World(base)
    work = base / "build"
    for repo, name, version, vendor, preamble in PACKAGES:
        rpm = pkgbuild.build_rpm(work / ("%s-%s-%s" % (repo, name, version)), name, version,
                                 "1", [pkgbuild.regular("/usr/share/vt/%s" % name,
                                                        ("%s %s %s\n" % (name, version, vendor))
                                                        .encode())],
                                 compressor="gzip", level=1, vendor=vendor, preamble=preamble)
        dest = base / "repos" / repo
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / rpm.name
        shutil.copy2(rpm, target)
        world.rpms[(repo, name, version)] = target
    world.reposdir.mkdir()
    for repo in REPOS:
        _createrepo(base / "repos" / repo, repo)
        (world.reposdir / ("%s.repo" % repo)).write_text(
            "[%s]\nname=%s\nbaseurl=file://%s\nenabled=1\ngpgcheck=0\nmetadata_expire=-1\n"
            % (repo, repo, base / "repos" / repo))
    world.dnf_conf.write_text("[main]\ngpgcheck=0\ninstall_weak_deps=0\nkeepcache=0\n"
                              "cachedir=/var/cache/dnf\nlogdir=/var/log\n")
    template = base / "template"
    template.mkdir()
    r = world.dnf(template, "install", *BASELINE, repos=("alpha",), plugin=False)
    if r.returncode != 0:
        raise RuntimeError("baseline install failed:\n%s\n%s" % (r.stdout, r.stderr))
    world.template = template
    return world

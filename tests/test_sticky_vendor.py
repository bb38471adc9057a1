"""End to end: the sticky-vendor plugin in the real dnf 4, offline, in install roots.

The repositories and the baseline root come from tests/vendorrepo.py (read
its docstring for the scenarios).  Each test copies the baseline root, runs
dnf with the plugin loaded from this checkout, and checks what is installed
(NEVRA and vendor) and what was printed.
"""
import json
import shutil
import subprocess
import textwrap

import pytest

import vendorrepo
from vendorrepo import ALPHA, BETA, GAMMA_LABS, GAMMA_LTD

pytestmark = [pytest.mark.slow, pytest.mark.root]

SWITCH_TO_BETA = "vendor switch %s --to 'Beta Inc'"


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    for tool in ("rpmbuild", "createrepo_c", "modifyrepo_c", vendorrepo.dnfrepo.DNF):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    return vendorrepo.build_world(tmp_path_factory.mktemp("vendorworld"))


@pytest.fixture
def confdir(tmp_path):
    d = tmp_path / "pluginconf"
    d.mkdir()
    (d / "sticky-vendor.conf").write_text(vendorrepo.sticky_conf())
    return d


@pytest.fixture
def root(world, tmp_path):
    return world.new_root(tmp_path / "root")


class Run:
    """dnf on one root with one plugin configuration."""

    def __init__(self, world, root, confdir):
        self.world, self.root, self.confdir = world, root, confdir

    def __call__(self, *args, check=None, **kw):
        return self.world.dnf(self.root, *args, confdir=self.confdir, check=check, **kw)

    def installed(self):
        return self.world.installed(self.root)

    def nevra_vendor(self, name):
        return self.installed().get(name)

    def policy(self, text, name="test.conf", where="etc/dnf/sticky-vendor.d"):
        d = self.root / where
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(textwrap.dedent(text))
        return d / name

    def conf(self, extra):
        (self.confdir / "sticky-vendor.conf").write_text(vendorrepo.sticky_conf(extra))

    @property
    def state_dir(self):
        return self.root / "var/lib/dnf/sticky-vendor"

    def audit(self):
        path = self.state_dir / "audit.log"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def dnf(world, root, confdir):
    return Run(world, root, confdir)


def out(r):
    return r.stdout + r.stderr


# ---- upgrade and the reports that must agree with it -------------------------

def test_upgrade_stays_with_vendor_and_reports_held(dnf):
    r = dnf("upgrade", check=0)
    inst = dnf.installed()
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)          # Alpha's update, not Beta's 2.0
    assert inst["bar"] == ("bar-1.0-1.noarch", ALPHA)          # only Beta has one: held
    assert inst["nov"] == ("nov-1.0-1.noarch", "")             # no vendor stays no vendor
    assert inst["casey"][0] == "casey-2.0-1.noarch"            # same vendor after normalising
    assert inst["gam"] == ("gam-1.0-1.noarch", GAMMA_LTD)      # no class defined: sticky
    assert inst["app"] == ("app-1.0-1.noarch", ALPHA)          # needs Beta's libdep
    assert inst["libdep"] == ("libdep-1.0-1.noarch", ALPHA)
    assert "old" in inst and "new" not in inst                 # obsoleter of another vendor
    assert inst["ds"] == ("ds-2.0-1.noarch", ALPHA)
    text = r.stdout
    assert "Held back by vendor policy" in text
    assert "foo    1.0-1 -> 2.0-1  'Alpha Corp' -> 'Beta Inc'  (taking 1.1-1 instead)" in text
    assert "bar    1.0-1 -> 2.0-1  'Alpha Corp' -> 'Beta Inc'" in text
    assert "app    1.0-1 -> 2.0-1  needs libdep 'Alpha Corp' -> 'Beta Inc'" in text
    assert "nov    1.0-1 -> 2.0-1  (no vendor) -> 'Beta Inc'" in text
    assert "old    1.0-1 would be replaced by new-1.0-1.noarch" in text
    assert "casey" not in text.split("Held back")[1].split("Dependencies")[0]


def test_without_the_plugin_dnf_switches_vendor(dnf):
    """The contrast: stock dnf 4 takes the other vendor's builds."""
    dnf("upgrade", plugin=False, check=0)
    inst = dnf.installed()
    assert inst["foo"] == ("foo-2.0-1.noarch", BETA)
    assert inst["libdep"] == ("libdep-2.0-1.noarch", BETA)
    assert "new" in inst and "old" not in inst


def test_check_update_list_repoquery_agree_with_upgrade(dnf):
    r = dnf("check-update", check=100)
    listed = {line.split()[0] for line in r.stdout.splitlines()
              if line.rstrip().endswith(("alpha", "beta")) and "." in line.split()[0]}
    assert listed == {"foo.noarch", "casey.noarch", "ds.noarch"}
    assert "update(s) held back by vendor policy are not listed" in r.stderr
    r = dnf("list", "--upgrades", check=0)
    rows = {tuple(line.split()[:2]) for line in r.stdout.splitlines() if ".noarch" in line}
    assert rows == {("casey.noarch", "2.0-1"), ("ds.noarch", "2.0-1"), ("foo.noarch", "1.1-1")}
    r = dnf("repoquery", "--upgrades", "--qf", "%{name}-%{version} %{vendor}", check=0)
    assert sorted(x for x in r.stdout.splitlines() if x.strip()) == [
        "casey-2.0 alpha  CORP", "ds-2.0 Alpha Corp", "foo-1.1 Alpha Corp"]
    dnf("upgrade", check=0)
    r = dnf("check-update", check=0)                            # nothing left that upgrade takes
    assert "held back" in r.stderr


def test_upgrade_minimal_stays_with_vendor(dnf):
    dnf("upgrade-minimal", check=0)
    inst = dnf.installed()
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)
    assert inst["bar"] == ("bar-1.0-1.noarch", ALPHA)


def test_upgrade_named_package_reports_only_it(dnf):
    r = dnf("upgrade", "bar", check=0)
    assert dnf.nevra_vendor("bar") == ("bar-1.0-1.noarch", ALPHA)
    assert "bar    1.0-1 -> 2.0-1" in r.stdout or "bar 1.0-1 -> 2.0-1" in r.stdout
    assert "foo" not in r.stdout.split("Held back")[1].split("Why")[0]


# ---- explicit requests: explained refusals -----------------------------------

def test_install_other_vendor_build_is_explained(dnf):
    r = dnf("install", "foo-2.0-1", check=1)
    err = r.stderr
    assert "foo-2.0-1.noarch (vendor 'Beta Inc') would replace foo-1.0-1.noarch " \
           "(vendor 'Alpha Corp')" in err
    assert "Rule: installed packages keep their vendor ('Alpha Corp')" in err
    assert "--installroot=%s vendor switch foo --to 'Beta Inc'" % dnf.root in err
    assert "cannot install both" not in out(r)
    assert dnf.nevra_vendor("foo") == ("foo-1.0-1.noarch", ALPHA)


def test_obsoleting_package_is_explained(dnf):
    r = dnf("install", "new", check=1)
    assert "new-1.0-1.noarch (vendor 'Beta Inc') would replace old-1.0-1.noarch " \
           "(vendor 'Alpha Corp')" in r.stderr
    assert "vendor switch old --to 'Beta Inc'" in r.stderr
    assert "old" in dnf.installed() and "new" not in dnf.installed()


def test_dependency_only_at_other_vendor_is_explained(dnf):
    r = dnf("install", "needy", check=1)
    assert "the request needs vendor changes that the policy refuses" in r.stderr
    assert "libdep-2.0-1.noarch (vendor 'Beta Inc') would replace libdep-1.0-1.noarch" in r.stderr
    assert "vendor switch libdep --to 'Beta Inc'" in r.stderr
    assert "filtered out by exclude filtering" not in r.stderr
    assert "needy" not in dnf.installed()


def test_command_line_package_refused_then_allowed(dnf, world):
    rpm = world.rpm("beta", "foo", "2.0")
    r = dnf("install", str(rpm), check=1)
    assert "foo-2.0-1.noarch from vendor 'Beta Inc' would replace the installed " \
           "foo-1.0-1.noarch from vendor 'Alpha Corp'" in r.stderr
    assert "vendor switch %s --to 'Beta Inc'" % rpm in r.stderr
    assert dnf.nevra_vendor("foo") == ("foo-1.0-1.noarch", ALPHA)
    dnf.conf("commandline = allow\n")
    dnf("install", str(rpm), check=0)
    assert dnf.nevra_vendor("foo") == ("foo-2.0-1.noarch", BETA)


def test_fresh_install_is_unaffected(dnf):
    dnf("install", "fresh", check=0)
    assert dnf.nevra_vendor("fresh") == ("fresh-1.0-1.noarch", BETA)


# ---- reinstall, downgrade, distro-sync ---------------------------------------

def test_reinstall_takes_the_same_vendors_copy(dnf):
    r = dnf("reinstall", "same", check=0)
    assert "Reinstalled" in r.stdout
    assert dnf.nevra_vendor("same") == ("same-1.0-1.noarch", ALPHA)


def test_reinstall_explained_when_only_other_vendor_has_it(dnf):
    r = dnf("reinstall", "same", repos=("beta",), check=1)
    assert "same-1.0-1.noarch (vendor 'Beta Inc') would replace same-1.0-1.noarch " \
           "(vendor 'Alpha Corp')" in r.stderr
    assert dnf.nevra_vendor("same") == ("same-1.0-1.noarch", ALPHA)


def test_downgrade_stays_with_vendor(dnf):
    dnf("downgrade", "down", check=0)
    assert dnf.nevra_vendor("down") == ("down-1.0-1.noarch", ALPHA)   # not Beta's 1.5


def test_downgrade_explained_when_only_other_vendor_has_one(dnf):
    r = dnf("downgrade", "down", repos=("beta",), check=1)
    assert "down-1.5-1.noarch (vendor 'Beta Inc') would replace down-2.0-1.noarch" in r.stderr
    assert dnf.nevra_vendor("down") == ("down-2.0-1.noarch", ALPHA)


def test_distro_sync_stays_with_vendor(dnf):
    r = dnf("distro-sync", check=0)
    inst = dnf.installed()
    assert inst["ds"] == ("ds-2.0-1.noarch", ALPHA)            # not Beta's 3.0
    assert inst["bar"] == ("bar-1.0-1.noarch", ALPHA)
    assert "ds     1.0-1 -> 3.0-1  'Alpha Corp' -> 'Beta Inc'  (taking 2.0-1 instead)" in r.stdout


# ---- dnf vendor ---------------------------------------------------------------

def test_vendor_held_and_explain(dnf):
    r = dnf("vendor", "held", check=0)
    assert "Held back by vendor policy (8):" in r.stdout
    r = dnf("vendor", "explain", "foo", check=0)
    assert "foo-1.0-1.noarch: installed from vendor 'Alpha Corp'" in r.stdout
    assert "refused  foo-2.0-1.noarch  vendor 'Beta Inc'  repo beta" in r.stdout
    assert "allowed  foo-1.1-1.noarch  vendor 'Alpha Corp'  repo alpha" in r.stdout
    assert "vendor switch foo --to 'Beta Inc'" in r.stdout
    r = dnf("vendor", "explain", "fresh", check=0)
    assert "fresh installs are not restricted" in r.stdout


def test_explain_and_pin_of_unknown_packages(dnf):
    """Nothing matched: explain exits non-zero; a pin of a package nowhere to
    be seen warns (it may be installed later) and is recorded."""
    r = dnf("vendor", "explain", "nosuchpkg", check=1)
    assert "No package nosuchpkg installed or available." in r.stdout
    assert "No package to explain: nosuchpkg" in r.stderr
    r = dnf("vendor", "explain", "nosuchpkg", "foo", check=0)     # one matched
    assert "foo-1.0-1.noarch: installed from vendor 'Alpha Corp'" in r.stdout
    r = dnf("vendor", "pin", "nosuchpkg", "Zeta", check=0)
    assert "no package nosuchpkg is installed or available" in r.stdout + r.stderr
    assert [e["action"] for e in dnf.audit()] == ["pin"]


def test_status_and_held_as_json(dnf):
    held = json.loads(dnf("-q", "vendor", "held", "--json", check=0).stdout)
    assert held["enforced"] and len(held["held"]) == 8
    foo = next(h for h in held["held"] if h["name"] == "foo")
    assert foo["installed_vendor"] == ALPHA and foo["candidate_vendor"] == BETA
    assert foo["candidate"] == "foo-2.0-1.noarch" and foo["rule"]
    dnf("vendor", "pin", "bar", BETA, check=0)
    st = json.loads(dnf("-q", "vendor", "status", "--json", check=0).stdout)
    assert st["enforced"] and st["pins"][0]["package"] == "bar"
    assert st["recent"][-1]["action"] == "pin" and st["errors"] == []


def test_vendor_list(dnf):
    r = dnf("vendor", "list", check=0)
    lines = r.stdout.splitlines()
    assert "'Alpha Corp' (9)" in lines and "(no vendor) (1)" in lines
    assert "'Gamma Ltd' (1)" in lines and "  gam-1.0-1.noarch" in lines


def test_switch_is_intended_recorded_and_sticks(dnf):
    r = dnf(*("vendor switch foo --to".split() + [BETA]), check=0)
    assert "recorded vendor switch: foo 'Alpha Corp' -> 'Beta Inc'" in r.stdout
    assert dnf.nevra_vendor("foo") == ("foo-2.0-1.noarch", BETA)
    entry = dnf.audit()[-1]
    assert entry["action"] == "switch" and entry["who"] == "vendor-tester"
    assert entry["changes"][0]["from_vendor"] == ALPHA
    assert isinstance(entry["transaction"], int), entry          # dnf's history ID
    r = dnf("vendor", "status", check=0)
    assert ("switched foo from 'Alpha Corp' to 'Beta Inc' (dnf history %d)"
            % entry["transaction"]) in r.stdout, r.stdout
    state = json.loads((dnf.state_dir / "state.json").read_text())
    assert state["switches"][0]["changes"][0]["to"] == "foo-2.0-1.noarch"
    # the package now sticks to its new vendor
    r = dnf("vendor", "explain", "foo", check=0)
    assert "refused  foo-1.1-1.noarch  vendor 'Alpha Corp'" in r.stdout


def test_switch_with_dependency_and_downgrade(dnf):
    r = dnf(*("vendor switch app libdep --to".split() + [BETA]), check=1)
    assert "no package app from vendor 'Beta Inc'" in r.stderr
    dnf(*("vendor switch libdep --to".split() + [BETA]), check=0)
    assert dnf.nevra_vendor("libdep") == ("libdep-2.0-1.noarch", BETA)
    dnf("upgrade", check=0)                    # app 2.0 (Alpha) is possible now
    assert dnf.nevra_vendor("app") == ("app-2.0-1.noarch", ALPHA)
    dnf(*("vendor switch down --to".split() + [BETA]), check=0)
    assert dnf.nevra_vendor("down") == ("down-1.5-1.noarch", BETA)


def test_switch_local_file(dnf, world):
    dnf("vendor", "switch", str(world.rpm("beta", "bar", "2.0")), check=0)
    assert dnf.nevra_vendor("bar") == ("bar-2.0-1.noarch", BETA)
    assert dnf.audit()[-1]["changes"][0]["to_vendor"] == BETA


def test_disable_and_enable_toggle(dnf):
    r = dnf("vendor", "disable", check=0)
    assert "Vendor policy disabled" in r.stdout
    r = dnf("vendor", "status", check=0)
    assert "DISABLED (by dnf vendor disable" in r.stdout
    r = dnf("check-update", check=100)
    assert "bar.noarch" in r.stdout                            # stock behaviour again
    dnf("vendor", "enable", check=0)
    r = dnf("check-update", check=100)
    assert "bar.noarch" not in r.stdout
    actions = [(e["action"], e["who"]) for e in dnf.audit()]
    assert actions == [("disable", "vendor-tester"), ("enable", "vendor-tester")]
    assert not list(dnf.state_dir.glob(".state.json.*"))      # no temp file left over
    # state lives inside the install root
    assert (dnf.root / "var/lib/dnf/sticky-vendor/state.json").is_file()


def test_pins(dnf):
    dnf("vendor", "pin", "bar", BETA, check=0)                 # stay with vendor V
    dnf("vendor", "pin", "foo", "--follow-repo", "beta", check=0)   # follow repository R
    dnf("vendor", "pin", "ds", check=0)                        # its current vendor
    r = dnf("vendor", "status", check=0)
    assert "bar -> 'Beta Inc'" in r.stdout and "foo -> repository 'beta'" in r.stdout
    dnf("upgrade", check=0)
    inst = dnf.installed()
    assert inst["bar"] == ("bar-2.0-1.noarch", BETA)
    assert inst["foo"] == ("foo-2.0-1.noarch", BETA)
    assert inst["ds"] == ("ds-2.0-1.noarch", ALPHA)
    dnf("vendor", "unpin", "foo", check=0)
    r = dnf("vendor", "unpin", "foo", check=1)
    assert "no pin" in r.stderr
    assert [e["action"] for e in dnf.audit()] == ["pin", "pin", "pin", "unpin"]
    # the audit log as a person reads it, not as Python's reprs
    r = dnf("vendor", "status", check=0)
    recent = r.stdout.split("Recent changes", 1)[1]
    assert "vendor-tester  pinned bar to vendor 'Beta Inc'" in recent, recent
    assert "unpinned foo (was repository 'beta')" in recent, recent
    assert "{" not in recent and "[" not in recent, recent


# ---- policy files: three formats, one result ----------------------------------

OURS = """\
    [vendor gamma]
    vendors = Gamma Ltd
              Gamma Labs
    """
DNF5 = """\
    version = "1.1"

    [[equivalent_vendors]]
    vendor = "Gamma Ltd"

    [[equivalent_vendors]]
    vendor = "Gamma Labs"
    """
ZYPP = """\
    [main]
    vendors = Gamma Ltd,Gamma Labs
    """


@pytest.mark.parametrize("fmt", ["ours", "dnf5", "zypp", "dnf5-usr-share", "extra-dir"])
def test_equivalent_vendors_in_every_format(dnf, fmt, tmp_path):
    if fmt == "ours":
        dnf.policy(OURS)
    elif fmt == "dnf5":
        dnf.policy(DNF5, "gamma.conf", "etc/dnf/vendors.d")
    elif fmt == "dnf5-usr-share":
        dnf.policy(DNF5, "gamma.conf", "usr/share/dnf5/vendors.d")
    elif fmt == "zypp":
        dnf.policy(ZYPP, "gamma", "etc/zypp/vendors.d")
    else:
        extra = tmp_path / "extra"
        extra.mkdir()
        (extra / "gamma.conf").write_text(textwrap.dedent(DNF5))
        dnf.conf("dnf5_dirs = %s\n" % extra)
    r = dnf("vendor", "held", check=0)
    assert "gam" not in r.stdout
    assert "Held back by vendor policy (7):" in r.stdout
    dnf("upgrade", check=0)
    assert dnf.nevra_vendor("gam") == ("gam-2.0-1.noarch", GAMMA_LABS)
    assert dnf.nevra_vendor("foo") == ("foo-1.1-1.noarch", ALPHA)


def test_our_rules_allow_no_vendor_and_repo_lists(dnf):
    dnf.policy("""\
        [allow alpha-to-beta-for-bar]
        from = Alpha Corp
        to = Beta Inc
        packages = bar

        [no-vendor]
        gain = Beta Inc

        [repo beta]
        vendors = Beta Inc
        """)
    r = dnf("upgrade", check=0)
    inst = dnf.installed()
    assert inst["bar"] == ("bar-2.0-1.noarch", BETA)           # the allowed change
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)          # not covered by it
    assert inst["nov"] == ("nov-2.0-1.noarch", BETA)           # [no-vendor] gain
    assert inst["casey"] == ("casey-1.0-1.noarch", ALPHA)      # beta may not ship "alpha CORP"
    assert "nov" not in r.stdout.split("Held back")[1].split("Why:")[0]


def test_dnf5_package_filters_and_exclusions(dnf):
    dnf.policy("""\
        version = "1.2"

        [[outgoing_vendors]]
        vendor = "Alpha*"
        comparator = "GLOB"

        [[incoming_vendors]]
        vendor = "beta inc"
        comparator = "IEXACT"

        [[outgoing_packages]]
        filters = [{ filter = "name", value = "foo", comparator = "NOT_EXACT" }]
        """, "beta.conf", "etc/dnf/vendors.d")
    dnf("upgrade", check=0)
    inst = dnf.installed()
    assert inst["bar"] == ("bar-2.0-1.noarch", BETA)
    assert inst["libdep"] == ("libdep-2.0-1.noarch", BETA)
    assert inst["app"] == ("app-2.0-1.noarch", ALPHA)
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)          # excluded by the package filter


def test_invalid_policy_fails_closed_with_file_and_line(dnf):
    path = dnf.policy("""\
        [vendor gamma]
        vendors = Gamma Ltd
        vendorz = Gamma Labs
        """)
    r = dnf("upgrade", check=1)
    assert "%s:3: unknown key 'vendorz'" % path in r.stderr
    assert dnf.nevra_vendor("foo") == ("foo-1.0-1.noarch", ALPHA)
    r = dnf("vendor", "check", check=1)
    assert "%s:3: unknown key 'vendorz'" % path in r.stdout
    bad = dnf.policy('version = "1.1"\n\n[[incoming_vendors]]\nvendro = "x"\n', "bad.conf",
                     "etc/dnf/vendors.d")
    r = dnf("vendor", "check", check=1)
    assert "%s:4: unknown key 'vendro'" % bad in r.stdout


def test_damaged_state_fails_closed(dnf):
    dnf.state_dir.mkdir(parents=True)
    (dnf.state_dir / "state.json").write_text("{not json")
    r = dnf("upgrade", check=1)
    assert "cannot read the sticky-vendor state" in r.stderr
    assert dnf.nevra_vendor("foo") == ("foo-1.0-1.noarch", ALPHA)


def test_dnf_vendor_check_ok(dnf):
    dnf.policy(OURS)
    dnf.policy(ZYPP, "gamma", "etc/zypp/vendors.d")
    r = dnf("vendor", "check", check=0)
    assert "2 policy file(s) OK." in r.stdout


# ---- trust binding: a vendor tied to its signing key ------------------------------

def _gpg_key(home, name):
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "%s <%s@example.invalid>" % (name, name.lower()), "rsa2048", "sign", "never"],
                   check=True, capture_output=True, env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"})
    r = subprocess.run(["gpg", "--list-keys", "--with-colons", name], check=True,
                       capture_output=True, text=True, env={"GNUPGHOME": str(home)})
    return [l.split(":")[4] for l in r.stdout.splitlines() if l.startswith("pub")][0]


def _sign(home, name, rpm):
    subprocess.run(["rpmsign", "--addsign", "--define", "_gpg_name %s" % name,
                    "--define", "_gpg_path %s" % home, "--define", "__gpg /usr/bin/gpg",
                    str(rpm)], check=True, capture_output=True,
                   env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home)})


@pytest.fixture(scope="session")
def trust_world(world, tmp_path_factory):
    """tru-1.0 signed by the vendor's key (installed from a file), and two
    repositories offering tru-1.1: one signed by the vendor's key, one by an
    impostor's key that merely claims the vendor."""
    if shutil.which("gpg") is None or shutil.which("rpmsign") is None:
        pytest.skip("gpg or rpmsign missing")
    base = tmp_path_factory.mktemp("trust")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    good = _gpg_key(home, "Trusted")
    bad = _gpg_key(home, "Impostor")
    rpms = {}
    for version, signer in (("1.0", "Trusted"), ("1.1", "Trusted"), ("1.1-bad", "Impostor")):
        v = version.split("-")[0]
        rpm = vendorrepo.pkgbuild.build_rpm(base / ("tru-" + version), "tru", v, "1",
                                            [vendorrepo.pkgbuild.regular("/usr/share/vt/tru", b"x\n")],
                                            compressor="gzip", level=1, vendor="Trust Co")
        _sign(home, signer, rpm)
        rpms[version] = rpm
    for repo, key in (("trusted", "1.1"), ("impostor", "1.1-bad")):
        d = base / "repos" / repo
        d.mkdir(parents=True)
        shutil.copy2(rpms[key], d / rpms[key].name)
        subprocess.run(["createrepo_c", "--quiet", str(d)], check=True, capture_output=True)
    pub = base / "impostor.asc"
    pub.write_text(subprocess.run(["gpg", "--armor", "--export", "Impostor"], check=True,
                                  capture_output=True, text=True,
                                  env={"GNUPGHOME": str(home)}).stdout)
    yield {"base": base, "good": good, "bad": bad, "rpms": rpms, "impostor_key": pub}
    # gpg started an agent for this home: stop it with the session
    subprocess.run(["gpgconf", "--kill", "all"], capture_output=True,
                   env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"})


def _trust_setup(dnf, tw, repo, gpgkey=None):
    extra = "gpgkey=file://%s\n" % gpgkey if gpgkey else ""
    (dnf.world.reposdir / ("%s.repo" % repo)).write_text(
        "[%s]\nname=%s\nbaseurl=file://%s\nenabled=1\ngpgcheck=0\nmetadata_expire=-1\n%s"
        % (repo, repo, tw["base"] / "repos" / repo, extra))
    dnf("install", str(tw["rpms"]["1.0"]), check=0)
    dnf.policy("""\
        [vendor trust]
        vendors = Trust Co
        keys = %s
        """ % tw["good"])


def test_trust_binding_accepts_the_vendors_key(dnf, trust_world):
    _trust_setup(dnf, trust_world, "trusted")
    dnf("upgrade", "tru", repos=("alpha", "trusted"), check=0)
    assert dnf.nevra_vendor("tru") == ("tru-1.1-1.noarch", "Trust Co")


def test_trust_binding_refuses_an_impostor_after_download(dnf, trust_world):
    _trust_setup(dnf, trust_world, "impostor")
    r = dnf("upgrade", "tru", repos=("alpha", "impostor"), check=1)
    assert "the new package claims vendor 'Trust Co' but is signed by key %s" \
        % trust_world["bad"] in r.stderr
    assert dnf.nevra_vendor("tru") == ("tru-1.0-1.noarch", "Trust Co")


def test_trust_binding_hides_an_impostor_repo_by_its_key(dnf, trust_world):
    _trust_setup(dnf, trust_world, "impostor", gpgkey=trust_world["impostor_key"])
    r = dnf("vendor", "held", repos=("alpha", "impostor"), check=0)
    assert "tru 1.0-1 -> 1.1-1  'Trust Co' -> 'Trust Co'  (not signed by the vendor's key)" \
        in r.stdout
    r = dnf("vendor", "explain", "tru", repos=("alpha", "impostor"), check=0)
    assert "signed by key %s" % trust_world["bad"] in r.stdout
    dnf("upgrade", repos=("alpha", "impostor"), check=0)
    assert dnf.nevra_vendor("tru") == ("tru-1.0-1.noarch", "Trust Co")


def test_hooks_fail_closed():
    """Any exception in a hook becomes dnf.exceptions.Error (dnf would log and
    swallow anything else and go on without the policy)."""
    import importlib.util

    import dnf.exceptions
    spec = importlib.util.spec_from_file_location("sticky_vendor_under_test",
                                                  vendorrepo.PLUGIN_DIR / "sticky_vendor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Boom:
        @mod._guarded
        def sack(self):
            raise KeyError("oops")

        @mod._guarded
        def resolved(self):
            raise mod.errors_mod.StateError("state broken")

    with pytest.raises(dnf.exceptions.Error, match="internal error, refusing to continue"):
        Boom().sack()
    with pytest.raises(dnf.exceptions.Error, match="state broken"):
        Boom().resolved()

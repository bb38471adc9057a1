"""Sticky vendor on dnf5: `rpmcow vendor` through python3-libdnf5, and the
vendors.d files it generates, with the real dnf5 (5.4+), offline, in install
roots.

The repositories and the baseline root are tests/vendorrepo.py's (read its
docstring for the scenarios).  The end-to-end tests need dnf5 and
python3-libdnf5 (Debian sid in `make test-matrix`) and skip elsewhere; the
first tests are pure Python and run everywhere: the generated files, read
back the way libdnf5 reads them, allow what our policy allows.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import vendorrepo
from vendorrepo import ALPHA, ALPHA_VARIANT, BETA, GAMMA_LABS, GAMMA_LTD

from rpmcow.vendorpolicy import dnf5 as gen
from rpmcow.vendorpolicy import formats
from rpmcow.vendorpolicy.policy import Pkg

DNF5 = "/usr/bin/dnf5"


def _has_libdnf5():
    try:
        import libdnf5  # noqa: F401
    except ImportError:
        return False
    return True


needs_dnf5 = pytest.mark.skipif(
    not (os.access(DNF5, os.X_OK) and _has_libdnf5()),
    reason="needs dnf5 and python3-libdnf5 (dnf5 >= 5.4; `make test-matrix` runs this on "
    "Debian sid)")

POLICY = """\
[vendor gamma]
vendors = Gamma Ltd
          Gamma Labs
"""


# ---- generation, pure Python -------------------------------------------------------

def _policy(tmp_path, text, commandline="sticky"):
    d = tmp_path / "ours"
    d.mkdir(exist_ok=True)
    (d / "p.conf").write_text(textwrap.dedent(text))
    return formats.load([str(d)], commandline=commandline)


def _dnf5_view(tmp_path, pol):
    files = gen.render(*gen.generate(pol, None), pol, "x", "test")
    d = tmp_path / "vendors.d"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return gen.Dnf5View([str(d)]), files


def test_generated_rules_allow_what_the_policy_allows(tmp_path):
    pol = _policy(tmp_path, """\
        [vendor gamma]
        vendors = Gamma Ltd
                  Gamma Labs
        [vendor delta]
        vendors = Delta*
        match = glob
        [allow cbs]
        from = CentOS
        to = @gamma
        packages = systemd systemd-*
        [no-vendor]
        gain = Beta Inc
        """)
    view, files = _dnf5_view(tmp_path, pol)
    # one rule a file: libdnf5 ANDs the lists of one file
    assert len(files) == 4
    cases = [("foo", GAMMA_LTD, GAMMA_LABS), ("foo", " gamma  LABS", GAMMA_LTD),
             ("foo", GAMMA_LTD, "Delta One"), ("foo", "Delta One", "DELTA two"),
             ("systemd", "CentOS", GAMMA_LABS), ("systemd-udev", "centos", GAMMA_LTD),
             ("bash", "CentOS", GAMMA_LABS), ("systemd", GAMMA_LABS, "CentOS"),
             ("nov", "", BETA), ("nov", BETA, ""), ("foo", ALPHA, BETA)]
    for name, vi, vc in cases:
        inst, cand = Pkg(name, vi, "@System"), Pkg(name, vc, "beta")
        want = pol.decide(inst, cand).allowed
        assert view.allows(inst, cand)[0] == want, (name, vi, vc, want)


def test_what_dnf5_cannot_express_is_reported(tmp_path):
    pol = _policy(tmp_path, """\
        [vendor sig]
        vendors = SIG
        keys = 0123456789ABCDEF
        [pin kernel]
        vendor = CentOS
        [repo hs-*]
        vendors = SIG
        [vendor rx]
        vendors = Rx.*
        match = regex
        """)
    rules, notes = gen.generate(pol, None)
    text = "\n".join(notes)
    assert rules == []
    assert "[vendor sig] keys = (0123456789ABCDEF): not enforced on dnf5" in text
    assert re.search(r"pin kernel \(.*p\.conf:\d+\): not enforced on dnf5", text)
    assert "[repo hs-*]" in text and "[vendor rx]" in text


def test_generated_files_are_not_read_back_as_policy(tmp_path):
    pol = _policy(tmp_path, POLICY)
    _, files = _dnf5_view(tmp_path, pol)
    again = formats.load([str(tmp_path / "ours")], [str(tmp_path / "vendors.d")])
    assert again.dnf5 == [] and again.sources == pol.sources
    assert next(iter(files.values())).startswith(formats.GENERATED_MARKER)


def test_rpmcow_vendor_without_libdnf5_says_so(tmp_path):
    if _has_libdnf5():
        pytest.skip("python3-libdnf5 is installed here")
    r = subprocess.run([sys.executable, "-m", "rpmcow", "vendor", "held",
                        "--installroot", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "needs dnf5's Python bindings (python3-libdnf5)" in r.stderr
    assert "dnf vendor" in r.stderr


# ---- real dnf5 ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def world(tmp_path_factory):
    for tool in ("rpmbuild", "createrepo_c", "modifyrepo_c", vendorrepo.dnfrepo.DNF):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    return vendorrepo.build_world(tmp_path_factory.mktemp("vendorworld5"))


class Dnf5Run:
    """dnf5 and `rpmcow vendor` on one root."""

    def __init__(self, world, root, confdir):
        self.world, self.root, self.confdir = world, root, confdir
        self.common = ["-c", str(world.dnf_conf), "--installroot=%s" % root,
                       "--releasever=1", "--setopt=reposdir=%s" % world.reposdir,
                       "--setopt=best=0"]

    def _run(self, cmd, check):
        env = dict(self.world.env(self.root))
        env["PYTHONPATH"] = str(vendorrepo.ROOT)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if check is not None and r.returncode != check:
            raise AssertionError("%s: exit %d (wanted %d)\n--- stdout\n%s\n--- stderr\n%s"
                                 % (" ".join(cmd), r.returncode, check, r.stdout, r.stderr))
        return r

    def dnf5(self, *args, check=0):
        return self._run([DNF5, "-y"] + self.common +
                         ["--setopt=cachedir=%s" % (self.root / "var/cache/dnf")] + list(args),
                         check)

    def vendor(self, *args, check=0):
        return self._run([sys.executable, "-m", "rpmcow", "vendor"] + list(args) + self.common +
                         ["--vendor-conf=%s" % (self.confdir / "sticky-vendor.conf")], check)

    def installed(self):
        return self.world.installed(self.root)

    def policy(self, text, name="test.conf"):
        d = self.root / "etc/dnf/sticky-vendor.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(textwrap.dedent(text))
        return d / name

    @property
    def vendors_d(self):
        return self.root / "etc/dnf/vendors.d"

    def generated(self):
        """{name: text} of the files in vendors.d and libdnf5.conf.d."""
        out = {}
        for d in (self.vendors_d, self.root / "etc/dnf/libdnf5.conf.d"):
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    out[str(p.relative_to(self.root))] = p.read_text()
        return out

    def audit(self):
        p = self.root / "var/lib/dnf/sticky-vendor/audit.log"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@pytest.fixture
def d5(world, tmp_path):
    confdir = tmp_path / "pluginconf"
    confdir.mkdir()
    (confdir / "sticky-vendor.conf").write_text(vendorrepo.sticky_conf())
    return Dnf5Run(world, world.new_root(tmp_path / "root"), confdir)


SKIPPED = re.compile(r'Skipping (\d+) packages? due to vendor change restriction: '
                     r'"(.*)" -> "(.*)"\.')


@needs_dnf5
def test_upgrade_holds_back_and_held_agrees_with_dnf5(d5):
    d5.policy(POLICY)
    d5.vendor("enable")
    held = json.loads(d5.vendor("held", "--json").stdout)
    assert held["enforced"] is True
    by_name = {h["name"]: h for h in held["held"]}
    assert set(by_name) == {"app", "casey", "ds", "foo", "libdep", "nov", "old", "bar"}
    assert by_name["app"]["kind"] == "dependency"
    assert by_name["foo"]["taken"] == "foo-1.1-1.noarch"
    r = d5.dnf5("upgrade")
    # dnf5's own report, per vendor pair, equals ours
    theirs = {}
    for n, a, b in SKIPPED.findall(r.stdout + r.stderr):
        theirs[(a, b)] = theirs.get((a, b), 0) + int(n)
    ours = {}
    for h in held["held"]:
        if h["kind"] != "dependency":
            pair = (h["installed_vendor"] or "(none)", h["candidate_vendor"].strip())
            ours[pair] = ours.get(pair, 0) + 1
    assert theirs == ours, (r.stdout, r.stderr)
    inst = d5.installed()
    for name in ("bar", "libdep", "nov", "app", "old", "casey"):
        assert inst[name][0] == "%s-1.0-1.noarch" % name, inst[name]
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)
    assert inst["ds"] == ("ds-2.0-1.noarch", ALPHA)
    assert inst["gam"] == ("gam-2.0-1.noarch", GAMMA_LABS)      # our class, enforced by dnf5
    # what remains held after the upgrade: the same refusals, nothing taken any more
    again = {h["name"] for h in json.loads(d5.vendor("held", "--json").stdout)["held"]}
    assert again == {"app", "bar", "casey", "ds", "foo", "libdep", "nov", "old"}


@needs_dnf5
def test_explain_says_what_dnf5_decides(d5):
    d5.policy(POLICY)
    d5.vendor("enable")
    out = d5.vendor("explain", "foo", "gam", "casey").stdout
    assert "refused  foo-2.0-1.noarch  vendor 'Beta Inc'  repo beta" in out
    assert "allow: rpmcow vendor switch foo --to 'Beta Inc' --installroot=" in out
    assert "allowed  gam-2.0-1.noarch  vendor 'Gamma Labs'" in out
    # same vendor after normalisation: ours allows it, dnf5 compares names exactly
    assert re.search(r"refused  casey-2\.0-1\.noarch .*\n.*rule: same vendor after "
                     r"normalisation.*\n.*on dnf5: refused", out)
    r = d5.vendor("explain", "nothere", check=1)
    assert "No package nothere installed or available." in r.stdout
    assert "No package to explain: nothere" in r.stderr
    r = d5.vendor("explain", check=1)
    assert "`rpmcow vendor explain` needs PACKAGE" in r.stderr


@needs_dnf5
def test_switch_is_intended_recorded_and_sticks(d5):
    d5.vendor("enable")
    r = d5.vendor("switch", "foo", "--to", BETA, "-y")
    assert "Switching foo-1.0-1.noarch -> foo-2.0-1.noarch  'Alpha Corp' -> 'Beta Inc'" \
        in r.stdout
    assert d5.installed()["foo"] == ("foo-2.0-1.noarch", BETA)
    assert d5.installed()["bar"] == ("bar-1.0-1.noarch", ALPHA)   # only what was named
    entry = d5.audit()[-1]
    assert entry["action"] == "switch" and entry["who"] == "vendor-tester"
    assert entry["changes"][0]["to_vendor"] == BETA
    d5.dnf5("upgrade")
    assert d5.installed()["foo"] == ("foo-2.0-1.noarch", BETA)     # sticks to Beta now
    r = d5.vendor("switch", "foo", "--to", BETA, "-y", check=1)
    assert "foo is already from vendor 'Beta Inc'" in r.stderr
    r = d5.vendor("switch", "fresh", "--to", BETA, "-y", check=1)
    assert "fresh is not installed" in r.stderr


@needs_dnf5
def test_disable_and_enable_toggle_the_generated_files(d5):
    d5.policy(POLICY)
    d5.vendors_d.mkdir(parents=True)
    admins = d5.vendors_d / "10-admin.conf"
    admins.write_text('version = "1.1"\n')
    r = d5.vendor("enable")
    files = d5.generated()
    main = "etc/dnf/vendors.d/50-rpmcow-sticky-vendor.conf"
    drop_in = "etc/dnf/libdnf5.conf.d/50-rpmcow-sticky-vendor.conf"
    assert files[main].startswith(formats.GENERATED_MARKER)
    assert str(d5.root / "etc/dnf/sticky-vendor.d/test.conf") in files[main]
    assert "allow_vendor_change = 0" in files[drop_in]
    assert "Vendor policy enforced" in r.stdout
    assert "up to date" in d5.vendor("status").stdout
    r = d5.vendor("disable")
    assert "removed %s" % (d5.root / main) in r.stdout
    assert set(d5.generated()) == {"etc/dnf/vendors.d/10-admin.conf"}
    assert admins.read_text() == 'version = "1.1"\n'               # never ours to touch
    assert "Vendor policy DISABLED" in d5.vendor("status").stdout
    assert json.loads(d5.vendor("held", "--json").stdout) == {"enforced": False, "held": []}
    d5.dnf5("upgrade")                                             # dnf5's default: switch
    assert d5.installed()["bar"] == ("bar-2.0-1.noarch", BETA)
    d5.vendor("enable")
    assert d5.generated() == files
    assert [e["action"] for e in d5.audit()] == ["enable", "disable", "enable"]
    # a file of our name that we did not write is the admin's: refused, left alone
    d5.vendor("disable")
    (d5.vendors_d / "50-rpmcow-sticky-vendor.conf").write_text('version = "1.0"\n')
    r = d5.vendor("enable", check=1)
    assert "was not generated by rpmcow: refusing to replace it" in r.stderr
    assert (d5.vendors_d / "50-rpmcow-sticky-vendor.conf").read_text() == 'version = "1.0"\n'


@needs_dnf5
def test_malformed_policy_keeps_the_last_good_files(d5):
    d5.policy(POLICY)
    d5.vendor("enable")
    before = d5.generated()
    audit = d5.audit()
    bad = d5.policy("[vendor x]\nvendorz = A\n", name="bad.conf")
    for args in (("enable",), ("pin", "foo", BETA), ("check",)):
        r = d5.vendor(*args, check=1)
        assert "%s:2: unknown key 'vendorz' in [vendor x]" % bad in r.stderr + r.stdout, args
        assert d5.generated() == before, args
    assert d5.audit() == audit                  # no toggle, no pin recorded
    assert "unknown key 'vendorz'" in r.stdout  # check lists the error itself
    # dnf5 still enforces the last good policy
    d5.dnf5("upgrade")
    assert d5.installed()["bar"] == ("bar-1.0-1.noarch", ALPHA)
    assert d5.installed()["gam"] == ("gam-2.0-1.noarch", GAMMA_LABS)
    # a broken dnf5 file is linted too
    bad.unlink()
    (d5.vendors_d / "20-broken.conf").write_text('version = "1.1"\n[[incoming_vendors]]\n'
                                                 'vendr = "X"\n')
    r = d5.vendor("check", check=1)
    assert "20-broken.conf:3: unknown key 'vendr'" in r.stdout


@needs_dnf5
def test_check_reports_a_pin_as_not_enforced_on_dnf5(d5):
    d5.vendor("enable")
    r = d5.vendor("pin", "foo", BETA)
    assert "Pinned foo to vendor 'Beta Inc'." in r.stdout
    r = d5.vendor("check")
    assert "Not enforced on dnf5:" in r.stdout
    assert re.search(r"pin foo \(.*state\.json.*\): not enforced on dnf5", r.stdout)
    assert "up to date" in r.stdout                 # the pin regenerated the files
    main = (d5.vendors_d / "50-rpmcow-sticky-vendor.conf").read_text()
    assert "pin foo" in main and "NOT enforced on dnf5" in main
    r = d5.vendor("unpin", "foo")
    assert "Unpinned foo." in r.stdout
    assert "pin foo" not in d5.vendor("check").stdout
    r = d5.vendor("unpin", "foo", check=1)
    assert "foo has no pin made with `rpmcow vendor pin`" in r.stderr


@needs_dnf5
def test_list_and_status(d5):
    out = d5.vendor("list").stdout
    assert out.startswith("'Alpha Corp' (9)\n")
    assert "(no vendor) (1)\n  nov-1.0-1.noarch" in out
    out = d5.vendor("status").stdout
    assert "dnf5 rule files: missing (run `rpmcow vendor enable`)" in out
    assert "dnf5: allow_vendor_change = True" in out
    d5.vendor("enable")
    assert "dnf5: allow_vendor_change = False" in d5.vendor("status").stdout
    d5.policy(POLICY)
    assert "STALE" in d5.vendor("status").stdout


# ---- downgrade, distro-sync, reinstall, obsoletes: what dnf5 does with our rules ---
#
# Each: the generated policy on (the package stays with its vendor, or moves
# where an [allow] rule or `rpmcow vendor switch` allows it) against the same
# world with vendor changes allowed (dnf5's default: it moves).

ALLOW = """\
[allow ab]
from = Alpha Corp
to = Beta Inc
packages = old down same
"""


def _root(world, tmp_path, name, policy=None, enable=True):
    """Another root on the same world: our files generated from `policy`
    (enable), or dnf5 as shipped (vendor changes allowed)."""
    confdir = tmp_path / ("conf-" + name)
    confdir.mkdir()
    (confdir / "sticky-vendor.conf").write_text(vendorrepo.sticky_conf())
    d = Dnf5Run(world, world.new_root(tmp_path / name), confdir)
    if policy:
        d.policy(policy)
    if enable:
        d.vendor("enable")
    else:
        assert "dnf5: allow_vendor_change = True" in d.vendor("status").stdout
    return d


def _skipped(r):
    """{(from vendor, to vendor): count} of dnf5's "Skipping N packages due to
    vendor change restriction" lines."""
    out = {}
    for n, a, b in SKIPPED.findall(r.stdout + r.stderr):
        out[(a, b)] = out.get((a, b), 0) + int(n)
    return out


@needs_dnf5
def test_downgrade_stays_with_the_vendor_or_moves_where_allowed(d5, world, tmp_path):
    d5.vendor("enable")
    before = d5.installed()
    # best = True (dnf5's default): the best downgrade is Beta's 1.5 -- refused,
    # and the command fails instead of taking Alpha's 1.0
    r = d5.dnf5("downgrade", "down", "--setopt=best=1", check=1)
    assert "cannot install the best candidate for the job" in r.stdout + r.stderr
    assert _skipped(r) == {(ALPHA, BETA): 1}
    assert d5.installed() == before
    # --no-best: the next older build of its own vendor
    r = d5.dnf5("downgrade", "down")
    assert d5.installed()["down"] == ("down-1.0-1.noarch", ALPHA)
    assert _skipped(r) == {(ALPHA, BETA): 1}
    # only Beta's offered: refused, nothing changes
    d5.dnf5("upgrade", "down")
    assert d5.installed()["down"] == ("down-2.0-1.noarch", ALPHA)
    r = d5.dnf5("downgrade", "down", "--repo=beta", check=1)
    assert d5.installed()["down"] == ("down-2.0-1.noarch", ALPHA)
    # a switch is a downgrade to the other vendor's build, recorded
    r = d5.vendor("switch", "down", "--to", BETA, "-y")
    assert "Switching down-2.0-1.noarch -> down-1.5-1.noarch" in r.stdout
    assert d5.installed()["down"] == ("down-1.5-1.noarch", BETA)
    # vendor changes allowed (stock dnf5): Beta's 1.5, the best downgrade
    stock = _root(world, tmp_path, "stock", enable=False)
    r = stock.dnf5("downgrade", "down", "--setopt=best=1")
    assert stock.installed()["down"] == ("down-1.5-1.noarch", BETA)
    # an [allow] rule for `down`: dnf5 takes it with the policy on
    allowed = _root(world, tmp_path, "allowed", ALLOW)
    r = allowed.dnf5("downgrade", "down", "--setopt=best=1")
    assert allowed.installed()["down"] == ("down-1.5-1.noarch", BETA)
    assert _skipped(r) == {}


@needs_dnf5
def test_distro_sync_stays_with_the_vendor_or_fails(d5, world, tmp_path):
    d5.policy(POLICY)
    d5.vendor("enable")
    before = d5.installed()
    # best = True: app 2.0 needs Beta's libdep -- the whole distro-sync fails
    r = d5.dnf5("distro-sync", "--setopt=best=1", check=1)
    assert "cannot install the best update candidate for package app-1.0-1.noarch" \
        in r.stdout + r.stderr
    assert d5.installed() == before
    # --no-best: each package syncs to its own vendor's newest; classes move
    r = d5.dnf5("distro-sync")
    inst = d5.installed()
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)
    assert inst["ds"] == ("ds-2.0-1.noarch", ALPHA)
    assert inst["gam"] == ("gam-2.0-1.noarch", GAMMA_LABS)         # [vendor gamma]
    for name in ("bar", "nov", "casey", "app", "libdep", "old", "same"):
        assert inst[name] == before[name], name
    assert "new" not in inst
    # dnf5's report: the same refusals as `dnf5 upgrade` (casey: the same
    # vendor to us, ignoring case and spacing; dnf5 compares names exactly)
    assert _skipped(r) == {(ALPHA, BETA): 5, ("(none)", BETA): 1,
                           (ALPHA, ALPHA_VARIANT.strip()): 1}
    # the limitation: where a package's only sync target is another vendor's,
    # dnf5 refuses it but does not hold it back -- the command fails, also
    # with --skip-broken (the dnf 4 plugin leaves the package as it is)
    for extra in ((), ("--skip-broken",)):
        r = d5.dnf5("distro-sync", "--repo=beta", *extra, check=1)
        assert "problem with installed package" in r.stdout + r.stderr
        assert d5.installed() == inst
    r = d5.dnf5("distro-sync", "--repo=beta", "same", "down", "old")
    assert "Nothing to do." in r.stdout + r.stderr
    assert d5.installed() == inst
    # ... and `rpmcow vendor check` / `status` say so
    for sub in ("check", "status"):
        out = d5.vendor(sub).stdout
        assert "dnf5 refuses the vendor change but does not hold back" in out
        assert re.search(r"dnf5 distro-sync: an installed package whose only sync target is "
                         r"another vendor's build makes the whole distro-sync fail", out)
        assert "(here: best = False)" in out
    # vendor changes allowed: everything moves to Beta's newer builds
    stock = _root(world, tmp_path, "stock", enable=False)
    stock.dnf5("distro-sync")
    inst = stock.installed()
    assert inst["ds"] == ("ds-3.0-1.noarch", BETA)
    assert inst["foo"] == ("foo-2.0-1.noarch", BETA)
    assert inst["new"] == ("new-1.0-1.noarch", BETA) and "old" not in inst
    # what an [allow] rule allows, distro-sync moves (downgrade, reinstall, obsolete)
    allowed = _root(world, tmp_path, "allowed", ALLOW)
    allowed.dnf5("distro-sync", "--repo=beta", "same", "down", "old")
    inst = allowed.installed()
    assert inst["down"] == ("down-1.5-1.noarch", BETA)
    assert inst["same"] == ("same-1.0-1.noarch", BETA)
    assert inst["new"] == ("new-1.0-1.noarch", BETA) and "old" not in inst
    assert inst["foo"] == ("foo-1.0-1.noarch", ALPHA)


@needs_dnf5
def test_reinstall_keeps_the_vendor_or_moves_where_allowed(d5, world, tmp_path):
    d5.vendor("enable")
    # the same NEVRA from both vendors: dnf5 reinstalls its own vendor's
    d5.dnf5("reinstall", "same")
    assert d5.installed()["same"] == ("same-1.0-1.noarch", ALPHA)
    # only Beta's build offered: refused, the command fails
    r = d5.dnf5("reinstall", "same", "--repo=beta", check=1)
    assert "cannot install both same-1.0-1.noarch from beta" in r.stdout + r.stderr
    assert _skipped(r) == {(ALPHA, BETA): 1}
    assert d5.installed()["same"] == ("same-1.0-1.noarch", ALPHA)
    # a switch is a reinstall from the other vendor, recorded
    d5.vendor("switch", "same", "--to", BETA, "-y")
    assert d5.installed()["same"] == ("same-1.0-1.noarch", BETA)
    assert d5.audit()[-1]["changes"][0]["package"] == "same"
    # vendor changes allowed, or allowed by a rule: Beta's build
    for d in (_root(world, tmp_path, "stock", enable=False),
              _root(world, tmp_path, "allowed", ALLOW)):
        d.dnf5("reinstall", "same", "--repo=beta")
        assert d.installed()["same"] == ("same-1.0-1.noarch", BETA)


@needs_dnf5
def test_obsoletes_across_vendors(d5, world, tmp_path):
    from rpmcow.vendorpolicy.sack import OBSOLETE
    d5.vendor("enable")
    held = {h["name"]: h for h in json.loads(d5.vendor("held", "--json").stdout)["held"]}
    assert held["old"]["kind"] == OBSOLETE
    assert held["old"]["candidate"].startswith("new-1.0-1")
    # upgrade leaves `old`; asking for `new` by name fails: it would replace `old`
    d5.dnf5("upgrade")
    assert d5.installed()["old"] == ("old-1.0-1.noarch", ALPHA)
    assert "new" not in d5.installed()
    r = d5.dnf5("install", "new", check=1)
    assert "package new-1.0-1.noarch from beta obsoletes old < 2" in r.stdout + r.stderr
    assert _skipped(r) == {(ALPHA, BETA): 1}
    assert d5.installed()["old"] == ("old-1.0-1.noarch", ALPHA)
    # vendor changes allowed: `new` replaces `old`
    stock = _root(world, tmp_path, "stock", enable=False)
    stock.dnf5("install", "new")
    assert stock.installed()["new"] == ("new-1.0-1.noarch", BETA)
    assert "old" not in stock.installed()
    # an [allow] rule for `old`: held no longer lists it, upgrade replaces it
    allowed = _root(world, tmp_path, "allowed", ALLOW)
    held = {h["name"] for h in json.loads(allowed.vendor("held", "--json").stdout)["held"]}
    assert "old" not in held and "foo" in held
    allowed.dnf5("upgrade")
    inst = allowed.installed()
    assert inst["new"] == ("new-1.0-1.noarch", BETA) and "old" not in inst
    assert inst["foo"] == ("foo-1.1-1.noarch", ALPHA)               # the rule names old only


def _nevras_in(text, names):
    """package NEVRAs (name-version-release) of `names` that a dnf5 listing shows."""
    out = set()
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].rsplit(".", 1)[0] in names:
            out.add((f[0].rsplit(".", 1)[0], f[1]))
    return out


@needs_dnf5
def test_check_upgrade_and_upgrade_tell_one_story_through_held(d5):
    """dnf5 check-upgrade ignores the vendor policy (it lists the newest
    build of any vendor) while dnf5 upgrade applies it: every listed update
    that upgrade does not take as listed is named by `rpmcow vendor held`,
    and check says so."""
    d5.policy(POLICY)
    d5.vendor("enable")
    before = d5.installed()
    listed = _nevras_in(d5.dnf5("check-upgrade", check=None).stdout, set(before))
    held = {h["name"] for h in json.loads(d5.vendor("held", "--json").stdout)["held"]}
    assert "check-upgrade lists other vendors' updates" in d5.vendor("check").stdout
    d5.dnf5("upgrade")
    after = d5.installed()
    changed = {n for n in before if after.get(n) != before[n]}
    assert changed <= {n for n, _ in listed}
    not_as_listed = {n for n, vr in listed if after[n][0] != "%s-%s.noarch" % (n, vr)}
    assert not_as_listed, "this world has updates the policy holds back"
    assert not_as_listed <= held, (sorted(not_as_listed), sorted(held))


@pytest.fixture(scope="module")
def sticky_plugin(tmp_path_factory):
    """The libdnf5 sticky-vendor plugin, built here, and its .conf."""
    from rpmcow import _build
    if not _build.dnf5_available():
        pytest.skip("libdnf5's headers (libdnf5-dev) or g++ are missing")
    d = tmp_path_factory.mktemp("stickyplugin")
    _build.build_dnf5_plugin(str(d / "lib"), source=_build.DNF5_STICKY_SOURCE,
                             name="sticky-vendor")
    return d / "lib"


@needs_dnf5
def test_hand_edited_policy_is_in_force_at_the_next_dnf5_run(d5, sticky_plugin, tmp_path):
    """An admin edits a policy file by hand: the libdnf5 sticky-vendor plugin
    regenerates dnf5's rules before dnf5 reads them; an invalid edit keeps
    the last good rules (one line says why) and dnf5 runs; turned off, the
    plugin leaves everything alone."""
    conf = tmp_path / "d5conf"
    conf.mkdir()
    (conf / "sticky-vendor.conf").write_text(
        "[main]\nname = sticky-vendor\nenabled = 1\npath = %s\nvendor_conf = %s\n"
        % (vendorrepo.ROOT, d5.confdir / "sticky-vendor.conf"))
    plug = ["--setopt=pluginpath=%s" % sticky_plugin, "--setopt=pluginconfpath=%s" % conf]
    d5.policy(POLICY)
    d5.vendor("enable")
    first = d5.generated()
    # nothing changed: nothing regenerated, nothing said
    r = d5.dnf5("repoquery", "--installed", *plug)
    assert "sticky-vendor:" not in r.stderr and d5.generated() == first
    # a hand edit (a new class): in force at the next run
    time.sleep(0.02)
    d5.policy("""
        [vendor handedit]
        vendors = Alpha Corp, Beta Inc
        """, name="hand.conf")
    r = d5.dnf5("repoquery", "--installed", *plug)
    assert "dnf5's rules regenerated" in r.stderr, r.stderr
    second = d5.generated()
    assert second != first
    assert len(second) == len(first) + 1          # one more rule: the new class
    assert re.search(r"Beta\S*Inc", "".join(second.values()))
    assert "STALE" not in d5.vendor("status").stdout
    # an invalid edit: the last good rules stay, dnf5 runs
    time.sleep(0.02)
    bad = d5.policy("[vendor broken]\nvendorz = x\n", name="zz-broken.conf")
    r = d5.dnf5("repoquery", "--installed", *plug)
    assert "keeps the last good rules" in r.stderr and "zz-broken.conf" in r.stderr, r.stderr
    assert d5.generated() == second
    bad.unlink()
    # turned off: the plugin does nothing (the files are gone with disable)
    d5.vendor("disable")
    time.sleep(0.02)
    d5.policy("[vendor later]\nvendors = Alpha Corp, Gamma Ltd\n", name="later.conf")
    r = d5.dnf5("repoquery", "--installed", *plug)
    assert "sticky-vendor:" not in r.stderr
    assert not any("vendors.d" in k for k in d5.generated())

"""Unit tests of the vendor policy engine (rpmcow.vendorpolicy): parsing the three
formats, the decision and its explanation, settings, state, keys."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from rpmcow.vendorpolicy import config, explain, formats, inifile, keys, match, state
from rpmcow.vendorpolicy.errors import PolicyError, PolicyFileError, StateError
from rpmcow.vendorpolicy.policy import Pkg, Policy

A, B = "Alpha Corp", "Beta Inc"


def P(name="foo", vendor=A, repo="r", **kw):
    return Pkg(name, vendor, repo, **kw)


def I(name="foo", vendor=A, **kw):       # noqa: E743 - an installed package
    return Pkg(name, vendor, "@System", **kw)


def load(tmp_path, ours=None, dnf5=None, zypp=None, **kw):
    dirs = {}
    for kind, files in (("ours", ours), ("dnf5", dnf5), ("zypp", zypp)):
        d = tmp_path / kind
        d.mkdir(exist_ok=True)
        for name, text in (files or {}).items():
            (d / name).write_text(textwrap.dedent(text))
        dirs[kind] = [str(d)]
    return formats.load(dirs["ours"], dirs["dnf5"], dirs["zypp"], **kw)


# ---- matching -------------------------------------------------------------------

@pytest.mark.parametrize("raw,norm", [
    ("  alpha  CORP ", "alpha corp"), ("<NULL>", ""), ("(none)", ""), (None, ""),
    ("Alpha\tCorp", "alpha corp")])
def test_normalize(raw, norm):
    assert match.normalize(raw) == norm


@pytest.mark.parametrize("cmp,pattern,value,result", [
    ("EXACT", "Fedora", "Fedora", True), ("EXACT", "Fedora", "fedora", False),
    ("IEXACT", "Fedora", "FEDORA", True), ("GLOB", "Fed*", "Fedora Project", True),
    ("IGLOB", "fed*", "Fedora Project", True), ("REGEX", "Fed.*", "Fedora", True),
    ("REGEX", "Fed", "Fedora", False), ("IREGEX", "fed.*", "FEDORA", True),
    ("CONTAINS", "dor", "Fedora", True), ("ICONTAINS", "DOR", "Fedora", True),
    ("STARTSWITH", "Fe", "Fedora", True), ("ENDSWITH", "ra", "Fedora", True),
    ("NOT_EXACT", "Fedora", "CentOS", True), ("NOT_IGLOB", "c*", "CentOS", False),
    ("NOT_REGEX", "C.*", "CentOS", False), ("NOT_ISTARTSWITH", "cent", "Fedora", True)])
def test_comparators(cmp, pattern, value, result):
    assert match.compile_comparator(cmp, pattern)(value) is result


# ---- the decision ---------------------------------------------------------------

def test_default_is_sticky_and_normalised():
    pol = Policy()
    assert pol.decide(I(), P(vendor=A)).allowed
    d = pol.decide(I(), P(vendor="  alpha  CORP "))
    assert d.allowed and d.kind == "same" and "normalisation" in d.rule
    d = pol.decide(I(), P(vendor=B))
    assert not d.allowed and d.kind == "sticky"
    assert "'Alpha Corp'" in d.rule and "'Beta Inc'" in d.rule
    assert not Policy(normalize=False).decide(I(), P(vendor="alpha corp")).allowed


def test_no_vendor_is_a_vendor_of_its_own():
    pol = Policy()
    assert pol.decide(I(vendor="<NULL>"), P(vendor="")).allowed
    d = pol.decide(I(vendor="<NULL>"), P(vendor=B))
    assert not d.allowed and d.kind == "novendor" and "gain" in d.rule
    d = pol.decide(I(), P(vendor=""))
    assert not d.allowed and "lose" in d.rule


def test_our_format_rules(tmp_path):
    pol = load(tmp_path, ours={"10-a.conf": """\
        [vendor gamma]
        vendors = Gamma Ltd
                  Gamma Labs

        [vendor fedora]
        match = prefix
        vendors = Fedora

        [allow cbs-to-hyperscale]
        from = CentOS
        to = @hs

        [vendor hs]
        vendors = CentOS Hyperscale SIG

        [pin kernel]
        packages = kernel kernel-*
        vendor = CentOS

        [pin follow]
        packages = tool*
        repo = tools-*

        [repo hs-*]
        vendors = CentOS Hyperscale SIG

        [no-vendor]
        gain = yes
        lose = Fedora Project
        """})
    d = pol.decide(I(vendor="Gamma Ltd"), P(vendor="gamma LABS"))
    assert d.allowed and d.kind == "class" and d.where.endswith("10-a.conf:1")
    assert pol.decide(I(vendor="Fedora Project"), P(vendor="Fedora Copr - user x")).allowed
    d = pol.decide(I(vendor="CentOS"), P(vendor="CentOS Hyperscale SIG"))
    assert d.allowed and d.kind == "allow" and d.where.endswith(":9")
    assert not pol.decide(I(vendor="CentOS Hyperscale SIG"), P(vendor="CentOS")).allowed
    d = pol.decide(I("kernel-core", vendor="CentOS Hyperscale SIG"),
                   P("kernel-core", vendor="CentOS"))
    assert d.allowed and d.kind == "pin"                 # pinned: switching to V is allowed
    assert not pol.decide(I("kernel", vendor="CentOS"),
                          P("kernel", vendor="CentOS Hyperscale SIG")).allowed
    assert pol.decide(I("toolx", vendor=A), P("toolx", vendor=B, repo="tools-1")).allowed
    assert not pol.decide(I("toolx", vendor=A), P("toolx", vendor=A, repo="other")).allowed
    assert pol.decide(I(vendor=""), P(vendor=B)).allowed
    assert pol.decide(I(vendor="Fedora Project"), P(vendor="")).allowed
    assert not pol.decide(I(vendor=A), P(vendor="")).allowed
    ra = pol.repo_allows_pkg(P(vendor="Evil", repo="hs-main"))
    assert ra is not None and ra.label == "hs-*"
    assert pol.repo_allows_pkg(P(vendor="centos hyperscale sig", repo="hs-main")) is None
    assert pol.repo_allows_pkg(P(vendor="Evil", repo="other")) is None


def test_switch_and_commandline():
    pol = Policy(commandline="allow")
    c = P(vendor=B)
    c.cmdline = True
    d = pol.decide(I(), c)
    assert d.allowed and d.kind == "commandline"
    pol = Policy()
    assert not pol.decide(I(), c).allowed
    pol.add_switch("foo", "beta inc")
    d = pol.decide(I(), P(vendor=B))
    assert d.allowed and d.kind == "switch"
    assert not pol.decide(I("bar"), P("bar", vendor=B)).allowed


@pytest.mark.parametrize("text,line,msg", [
    ("[vendor x]\nvendors = A\nvendorz = B\n", 3, "unknown key 'vendorz'"),
    ("[vendors x]\nvendors = A\n", 1, "unknown section"),
    ("[vendor x]\nmatch = fuzzy\nvendors = A\n", 2, "match = 'fuzzy'"),
    ("[vendor x]\n", 1, "needs vendors ="),
    ("[pin x]\nvendor = A\nrepo = r\n", 1, "exactly one of"),
    ("[vendor x]\nvendors = A\nkeys = DEADBEEF\n", 3, "16-hex-digit key ID"),
    ("vendors = A\n", 1, "outside of a section"),
    ("[vendor x]\nvendors = A\nvendors = B\n", 3, "given twice"),
    ("[allow x]\nfrom = A\nto = @nosuch\n", 3, "@nosuch: no [vendor nosuch]"),
    ("[vendor x]\nmatch = regex\nvendors = (\n", 3, "vendors:"),
    ("[vendor x\n", 1, "malformed section header"),
])
def test_our_format_errors_name_file_and_line(tmp_path, text, line, msg):
    with pytest.raises(PolicyFileError) as ei:
        load(tmp_path, ours={"bad.conf": text})
    assert ei.value.line == line and msg in str(ei.value)
    assert str(ei.value).startswith("%s:%d: " % (tmp_path / "ours" / "bad.conf", line))


# ---- dnf5 -----------------------------------------------------------------------

def test_dnf5_equivalent_and_directional(tmp_path):
    pol = load(tmp_path, dnf5={"a.conf": """\
        version = '1.0'
        [[equivalent_vendors]]
        vendor = 'Gamma Ltd'
        [[equivalent_vendors]]
        vendor = 'Gamma Labs'
        """, "b.conf": """\
        version = "1.1"
        [[outgoing_vendors]]
        vendor = "Alpha*"
        comparator = "GLOB"
        [[outgoing_vendors]]
        vendor = "Alpha Legacy"
        exclude = true
        [[incoming_vendors]]
        vendor = "Beta Inc"
        [[incoming_packages]]
        filters = [{filter = "repoid", value = "beta"}]
        """})
    assert pol.decide(I(vendor="Gamma Ltd"), P(vendor="Gamma Labs")).kind == "dnf5"
    assert pol.decide(I(vendor=A), P(vendor=B, repo="beta")).allowed
    assert not pol.decide(I(vendor=A), P(vendor=B, repo="other")).allowed
    assert not pol.decide(I(vendor=B), P(vendor=A, repo="beta")).allowed
    # first match decides: "Alpha Legacy" matches the glob first, so it is outgoing
    assert pol.decide(I(vendor="Alpha Legacy"), P(vendor=B, repo="beta")).allowed


def test_dnf5_exclusion_order_and_package_filters(tmp_path):
    pol = load(tmp_path, dnf5={"a.conf": """\
        version = "1.2"
        [[outgoing_vendors]]
        vendor = "Alpha Legacy"
        exclude = true
        [[outgoing_vendors]]
        vendor = "Alpha"
        comparator = "STARTSWITH"
        [[outgoing_packages]]
        filters = [{filter = "name", value = "kernel*", comparator = "GLOB"}]
        exclude = true
        [[outgoing_packages]]
        filters = [{filter = "evr", value = "2.0-1", comparator = "LT"},
                   {filter = "arch", value = "noarch"}]
        [[incoming_packages]]
        filters = [{filter = "cmdline_repo", value = "false"}]
        """})
    assert pol.decide(I(vendor=A, version="1.0", release="1"), P(vendor=B)).allowed
    assert not pol.decide(I(vendor="Alpha Legacy", version="1.0"), P(vendor=B)).allowed
    assert not pol.decide(I("kernel", vendor=A, version="1.0"), P("kernel", vendor=B)).allowed
    assert not pol.decide(I(vendor=A, version="3.0", release="1"), P(vendor=B)).allowed
    c = P(vendor=B)
    c.cmdline = True
    assert not pol.decide(I(vendor=A, version="1.0"), c).allowed


@pytest.mark.parametrize("text,line,msg", [
    ('version = "2.0"\n', 1, "unsupported version"),
    ('[[incoming_vendors]]\nvendor = "x"\n', 1, "missing \"version\""),
    ('version = "1.1"\n[[incoming_vendors]]\nvendro = "x"\n', 3, "unknown key 'vendro'"),
    ('version = "1.1"\nfoo = 1\n', 2, "unknown key 'foo'"),
    ('version = "1.1"\n\n[[incoming_vendors]]\ncomparator = "GLOB"\n', 3, "missing 'vendor'"),
    ('version = "1.1"\n[[incoming_vendors]]\nvendor = "x"\ncomparator = "NOT_REGEX"\n', 4,
     "needs version \"1.2\""),
    ('version = "1.1"\n[[incoming_vendors]]\nvendor = "x"\ncomparator = "FUZZY"\n', 4,
     "unsupported comparator"),
    ('version = "1.0"\n[[outgoing_vendors]]\nvendor = "x"\n', 2, "needs both"),
    ('version = "1.0"\n[[equivalent_vendors]]\nvendor = "x"\n[[outgoing_vendors]]\n'
     'vendor = "y"\n[[incoming_vendors]]\nvendor = "z"\n', 2, "together with"),
    ('version = "1.0"\n[[outgoing_packages]]\nfilters = [{filter="name", value="x"}]\n', 2,
     "does not support"),
    ('version = "1.1"\n[[outgoing_packages]]\nfilters = [{filter="cmdline_repo", '
     'value="1"}]\n', 2, "only allowed in 'incoming_packages'"),
    ('version = "1.1"\n[[incoming_packages]]\nfilters = [{filter="evr", value="1", '
     'comparator="GLOB"}]\n', 2, "unsupported comparator"),
    ('version = "1.1"\n[[incoming_packages]]\nfilters = [{filter="color", value="1"}]\n', 2,
     "unknown filter"),
    ('version = "1.1"\n[[incoming_packages]]\nexclude = true\n', 2,
     "missing package filter"),
    ('version = "1.1"\n[[incoming_vendors]\n', 2, "invalid TOML"),
])
def test_dnf5_errors_name_file_and_line(tmp_path, text, line, msg):
    with pytest.raises(PolicyFileError) as ei:
        load(tmp_path, dnf5={"bad.conf": text})
    assert msg in str(ei.value)
    assert ei.value.line == line, str(ei.value)


def test_dnf5_etc_overrides_usr_share(tmp_path):
    etc, usr = tmp_path / "etc", tmp_path / "usr"
    etc.mkdir()
    usr.mkdir()
    (usr / "a.conf").write_text('version = "1.1"\n[[equivalent_vendors]]\nvendor = "X"\n'
                                '[[equivalent_vendors]]\nvendor = "Y"\n')
    (usr / "b.conf").write_text('version = "1.1"\n')
    (etc / "a.conf").write_text('version = "1.1"\n')
    pol = formats.load([], [str(etc), str(usr)], [])
    assert pol.sources == [str(etc / "a.conf"), str(usr / "b.conf")]
    assert not pol.decide(I(vendor="X"), P(vendor="Y")).allowed


# ---- zypper -----------------------------------------------------------------------

def test_zypper_groups_prefix_case_and_merge(tmp_path):
    pol = load(tmp_path, zypp={"one": "[main]\nvendors = Gamma,Delta Labs\n",
                               "two": "[main]\nvendors = delta labs, Epsilon\n",
                               "three": "[main]\nvendors = openSUSE\n"})
    assert pol.decide(I(vendor="Gamma Ltd"), P(vendor="GAMMA labs")).kind in ("zypp", "same")
    d = pol.decide(I(vendor="Gamma Ltd"), P(vendor="Epsilon Inc"))   # merged through delta
    assert d.allowed and d.kind == "zypp"
    assert not pol.decide(I(vendor="Gamma Ltd"), P(vendor="Zeta")).allowed
    # no prefix matching in the opensuse namespace
    assert not pol.decide(I(vendor="openSUSE Build Service"), P(vendor="openSUSE")).allowed


def test_zypper_file_without_vendors_warns(tmp_path):
    warnings = []
    load(tmp_path, zypp={"x": "[main]\nother = 1\n"}, warnings=warnings)
    assert "zypper ignores this file" in warnings[0]
    with pytest.raises(PolicyFileError) as ei:
        load(tmp_path, zypp={"y": "[main]\nvendors\n"})
    assert ei.value.line == 2


def test_three_formats_same_decisions(tmp_path):
    for sub in "123":
        (tmp_path / sub).mkdir()
    ours = load(tmp_path / "1", ours={"g.conf": "[vendor g]\nvendors = Gamma Ltd\n  Gamma Labs\n"})
    dnf5 = load(tmp_path / "2", dnf5={"g.conf": 'version = "1.0"\n[[equivalent_vendors]]\nvendor = "Gamma Ltd"'
                      '\n[[equivalent_vendors]]\nvendor = "Gamma Labs"\n'})
    zypp = load(tmp_path / "3", zypp={"g": "[main]\nvendors = Gamma Ltd,Gamma Labs\n"})
    cases = [("Gamma Ltd", "Gamma Labs"), ("Gamma Labs", "Gamma Ltd"), ("Gamma Ltd", B),
             (A, "Gamma Labs"), ("", "Gamma Ltd")]
    for vi, vc in cases:
        got = {pol.decide(I(vendor=vi), P(vendor=vc)).allowed for pol in (ours, dnf5, zypp)}
        assert len(got) == 1, (vi, vc)


# ---- trust binding ------------------------------------------------------------------

def test_trust_binding(tmp_path):
    pol = load(tmp_path, ours={"k.conf": """\
        [vendor hs]
        vendors = CentOS Hyperscale SIG
        keys = 0123456789ABCDEF
        """})
    hs = "CentOS Hyperscale SIG"
    good = "0123456789abcdef"
    assert pol.decide(I(vendor=hs, keyid=good), P(vendor=hs, keyid=good)).allowed
    assert pol.decide(I(vendor=hs, keyid=good), P(vendor=hs, keyid=None)).allowed  # not known yet
    d = pol.decide(I(vendor=hs, keyid=good), P(vendor=hs, keyid="FEDCBA9876543210"))
    assert not d.allowed and d.kind == "untrusted" and "FEDCBA9876543210" in d.rule
    d = pol.decide(I(vendor=hs, keyid=good), P(vendor=hs, keyid=""))
    assert not d.allowed and "is not signed" in d.rule
    # an impostor installed: real packages may not replace it silently either way
    assert not pol.decide(I(vendor=hs, keyid="FEDCBA9876543210"), P(vendor=hs, keyid=good)).allowed


def test_key_ids_of_real_key_files(tmp_path):
    """gpg reads the key files: primary key and subkey IDs of rpm.org's test
    key (what `gpg --show-keys` lists for it), and a distribution key."""
    from conftest import corpus_path
    corpus = corpus_path()
    rsa = corpus / "rpm-testdata" / "rpm.org-rsa-2048-test.pub"
    hs = corpus / "keys" / "centos__RPM-GPG-KEY-CentOS-SIG-HyperScale"
    if not rsa.is_file() or not hs.is_file():
        pytest.skip("package corpus not found at %s" % corpus)
    assert keys.key_ids(rsa.read_text()) == {"4344591E1964C5FC", "185E6146F00650F8"}
    assert keys.key_ids(rsa.read_bytes()) == {"4344591E1964C5FC", "185E6146F00650F8"}
    hs_ids = keys.key_ids(hs.read_bytes())
    assert hs_ids and all(len(k) == 16 for k in hs_ids)
    assert keys.repo_key_ids(["file://%s" % rsa, "file://%s" % hs]) == \
        {"4344591E1964C5FC", "185E6146F00650F8"} | hs_ids
    assert keys.repo_key_ids([]) is None
    assert keys.repo_key_ids(["https://example.invalid/key"]) is None
    junk = tmp_path / "junk.asc"
    junk.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n"
                    "-----END PGP PUBLIC KEY BLOCK-----\n")
    with pytest.raises(ValueError):
        keys.key_ids(junk.read_text())
    assert keys.repo_key_ids(["file://%s" % junk]) is None


# ---- settings, state, ini, explain ------------------------------------------------

def test_settings_parsing():
    s = config.Settings.from_mapping({"enabled": "1", "normalize": "no", "commandline": "Allow",
                                      "policy_dirs": "/a /b,/c"})
    assert not s.normalize and s.commandline == "allow" and s.policy_dirs == ["/a", "/b", "/c"]
    assert s.our_dirs("/r") == ["/r/etc/dnf/sticky-vendor.d", "/a", "/b", "/c"]
    assert s.dnf5_dir_list("/r")[:2] == ["/r/etc/dnf/vendors.d", "/r/usr/share/dnf5/vendors.d"]
    assert s.state_path("/r") == "/r/var/lib/dnf/sticky-vendor"
    with pytest.raises(PolicyError, match="unknown option 'normalise'"):
        config.Settings.from_mapping({"normalise": "yes"})
    with pytest.raises(PolicyError, match="not a boolean"):
        config.Settings.from_mapping({"report": "maybe"})


def test_state_atomic_audited(tmp_path, monkeypatch):
    monkeypatch.setenv("SUDO_USER", "alice")
    st = state.State(str(tmp_path / "s"))
    assert st.enforce is None and st.pins == []
    st.set_enforce(False)
    st.pin("foo", vendor=A)
    st.pin("bar", repo="beta")
    st.pin("foo", vendor=B)                         # replaces, newest first
    assert [p["package"] for p in st.pins] == ["foo", "bar"] and st.pins[0]["vendor"] == B
    assert st.unpin("bar") and not st.unpin("bar")
    st.record_switch([{"package": "x", "from_vendor": A, "to_vendor": B}])
    again = state.State(str(tmp_path / "s"))
    assert again.enforce is False and again.data["switches"][0]["who"] == "alice"
    log = [json.loads(x) for x in (tmp_path / "s" / "audit.log").read_text().splitlines()]
    assert [e["action"] for e in log] == ["disable", "pin", "pin", "pin", "unpin", "switch"]
    assert all(e["who"] == "alice" and "when" in e and e["uid"] == os.getuid() for e in log)
    assert sorted(os.listdir(tmp_path / "s")) == [".lock", "audit.log", "state.json"]
    pins = again.pin_objects()
    assert pins[0].packages("foo") and pins[0].vendor == B


def test_state_damaged_is_an_error(tmp_path):
    (tmp_path / "state.json").write_text("[]")
    with pytest.raises(StateError, match="not a sticky-vendor state file"):
        state.State(str(tmp_path))


def test_ini_continuations_and_comments():
    secs = inifile.parse("f", "# c\n[a]\nk = 1\n  2\n; c\nj: x\n")
    assert secs[0].values == {"k": "1\n2", "j": "x"} and secs[0].line_of("j") == 6


def test_allow_command_quotes():
    assert explain.allow_command("foo", "Beta Inc") == "dnf vendor switch foo --to 'Beta Inc'"
    assert explain.allow_command("foo", "", "/r") == \
        "dnf --installroot=/r vendor switch foo --to ''"


def test_without_a_toml_parser_only_dnf5_files_cannot_be_read(tmp_path):
    """EL 9's Python 3.9 has no tomllib; where neither tomli nor toml is
    installed the policy engine still loads, reads INI and zypper files, and
    names the missing parser for a dnf5 TOML file (before: ImportError on
    import, and no vendor policy at all)."""
    (tmp_path / "dnf5").mkdir()
    (tmp_path / "dnf5" / "a.conf").write_text('version = "1.1"\n')
    (tmp_path / "zypp").mkdir()
    (tmp_path / "zypp" / "one").write_text("[main]\nvendors = Gamma,Delta\n")
    code = textwrap.dedent("""
        import sys
        for name in ("tomllib", "tomli", "toml"):
            sys.modules[name] = None          # as if not installed
        from rpmcow.vendorpolicy import formats
        from rpmcow.vendorpolicy.errors import PolicyFileError
        formats.load([], [], [sys.argv[1] + "/zypp"])
        try:
            formats.load([], [sys.argv[1] + "/dnf5"], [])
        except PolicyFileError as exc:
            print("refused:", exc)
        else:
            print("read it")
    """)
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "a.conf" in r.stdout, r.stdout
    assert "no tomllib" in r.stdout and "python3-tomli" in r.stdout, r.stdout

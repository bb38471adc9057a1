"""Reading policy files: ours (INI), dnf5's vendors.d (TOML), zypper's vendors.d (INI).

Every invalid file raises ``PolicyFileError`` naming the file and the line.

Our format (``/etc/dnf/sticky-vendor.d/*.conf``; lists of vendors are one per
line, since vendor names may contain commas; package and key lists are
separated by spaces or commas)::

    [vendor hyperscale]            # one vendor under several names (a class)
    vendors = CentOS Hyperscale SIG
              CentOS Hyperscale
    match = exact                  # exact | prefix | glob | regex
    keys = 0123456789ABCDEF        # optional: only packages signed by these

    [allow cbs-to-hyperscale]      # a one-way change that is allowed
    from = CentOS
    to = @hyperscale               # @NAME: the vendors of [vendor NAME]
    packages = *                   # optional package-name globs

    [pin kernel]                   # stay with a vendor, or follow a repository
    packages = kernel kernel-*
    vendor = CentOS                # or: repo = baseos

    [repo hyperscale-*]            # the only vendors these repositories may provide
    vendors = CentOS Hyperscale SIG

    [no-vendor]                    # packages without a vendor
    gain = no                      # may one be replaced by a package with a vendor?
    lose = no                      # may a vendor's package be replaced by one without?
"""
import os
import re
import sys

from . import inifile, match
from .errors import PolicyFileError
from .policy import (Dnf5Policy, NoVendorRules, Pin, Policy, RepoAllow, Transition,
                     VendorClass)

METHODS = ("exact", "prefix", "glob", "regex")
SECTION_KEYS = {
    "vendor": {"vendors", "match", "keys"},
    "allow": {"from", "to", "match", "packages"},
    "pin": {"packages", "vendor", "repo"},
    "repo": {"vendors", "match"},
    "no-vendor": {"gain", "lose"},
}
HEX = re.compile(r"^(0x)?([0-9A-Fa-f]{16}|[0-9A-Fa-f]{40})$")


def _where(path, line):
    return "%s:%d" % (path, line)


def _unquote(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def _vendor_lines(value):
    return [_unquote(x) for x in value.split("\n") if x.strip()]


def _words(value):
    return [w for w in value.replace(",", " ").split() if w]


class _AnyOf:
    """Vendor matcher over a VendorSet and @class references."""

    def __init__(self, policy, vset, refs):
        self.policy, self.vset, self.refs = policy, vset, refs

    def matches(self, norm):
        if self.vset is not None and self.vset.matches(norm):
            return True
        for ref in self.refs:
            for c in self.policy.classes:
                if c.name == ref and c.vendors.matches(norm):
                    return True
        return False


def parse_ours(policy, path, text):
    """Add the rules of one of our files to `policy`."""
    refs = []
    for sec in inifile.parse(path, text):
        if sec.name is None:
            raise PolicyFileError(path, sec.line, "key outside of a section")
        kind, _, name = sec.name.partition(" ")
        kind, name = kind.strip().lower(), name.strip()
        if kind not in SECTION_KEYS:
            raise PolicyFileError(path, sec.line, "unknown section [%s] (use [vendor NAME], "
                                  "[allow NAME], [pin NAME], [repo ID] or [no-vendor])"
                                  % sec.name)
        if kind != "no-vendor" and not name:
            raise PolicyFileError(path, sec.line, "[%s] needs a name: [%s NAME]" % (kind, kind))
        for key in sec.values:
            if key not in SECTION_KEYS[kind]:
                raise PolicyFileError(path, sec.line_of(key), "unknown key %r in [%s] (known: "
                                      "%s)" % (key, sec.name, ", ".join(sorted(SECTION_KEYS[kind]))))
        where = _where(path, sec.line)
        method = sec.get("match", "exact").strip().lower()
        if method not in METHODS:
            raise PolicyFileError(path, sec.line_of("match"), "match = %r: use one of %s"
                                  % (method, ", ".join(METHODS)))

        def vset(key, required=True, allow_refs=False):
            value = sec.get(key)
            if value is None or not value.strip():
                if required:
                    raise PolicyFileError(path, sec.line, "[%s] needs %s =" % (sec.name, key))
                return None
            items = _vendor_lines(value)
            plain = [v for v in items if not (allow_refs and v.startswith("@"))]
            named = [v[1:] for v in items if allow_refs and v.startswith("@")]
            for n in named:
                refs.append((n, sec.line_of(key)))
            try:
                vs = policy.vendor_set(plain, method) if plain else None
            except Exception as exc:     # bad regex
                raise PolicyFileError(path, sec.line_of(key), "%s: %s" % (key, exc)) from None
            return _AnyOf(policy, vs, named) if allow_refs else vs

        if kind == "vendor":
            keys = set()
            for k in _words(sec.get("keys", "")):
                m = HEX.match(k)
                if not m:
                    raise PolicyFileError(path, sec.line_of("keys"), "keys: %r is not a 16-hex-"
                                          "digit key ID or a 40-hex-digit fingerprint" % k)
                keys.add(m.group(2).upper()[-16:])
            policy.classes.append(VendorClass(name, vset("vendors"), frozenset(keys), where))
        elif kind == "allow":
            pk = sec.get("packages")
            pred = match.glob_list_matcher(_words(pk)) if pk and pk.strip() not in ("*",) else None
            policy.transitions.append(Transition(name, vset("from", allow_refs=True),
                                                 vset("to", allow_refs=True), pred, where))
        elif kind == "pin":
            vendor, repo = sec.get("vendor"), sec.get("repo")
            if (vendor is None) == (repo is None):
                raise PolicyFileError(path, sec.line, "[pin %s] needs exactly one of vendor = "
                                      "or repo =" % name)
            pats = _words(sec.get("packages", "")) or [name]
            policy.pins.append(Pin(match.glob_list_matcher(pats), " ".join(pats),
                                   _unquote(vendor) if vendor is not None else None,
                                   repo.strip() if repo is not None else None, where))
        elif kind == "repo":
            policy.repo_allows.append(RepoAllow(match.compile_comparator("GLOB", name), name,
                                                vset("vendors"), where))
        elif kind == "no-vendor":
            rules = NoVendorRules(where=where)
            for key in ("gain", "lose"):
                value = sec.get(key)
                if value is None:
                    continue
                low = value.strip().lower()
                if low in ("no", "0", "false", "never", ""):
                    setattr(rules, key, None)
                elif low in ("yes", "1", "true", "any"):
                    setattr(rules, key, True)
                else:
                    setattr(rules, key, vset(key))
            policy.novendor = rules
    policy._pending_refs.extend((path, n, line) for n, line in refs)


# ---- dnf5 ---------------------------------------------------------------------

DNF5_VERSIONS = ("1.0", "1.1", "1.2")
DNF5_FILTERS = ("name", "source_name", "evr", "epoch", "version", "release", "arch",
                "repoid", "cmdline_repo")


class _TomlLines:
    """Finds the line of a top-level key, of the i-th [[array]] table, or of a key
    inside it (tomllib does not keep positions)."""

    HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-]+)\s*\]\]")
    TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
    KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")

    def __init__(self, text):
        self.top = {}        # key -> line
        self.arrays = {}     # name -> [ (line, {key: line}) ]
        current = None
        for number, line in enumerate(text.splitlines(), 1):
            m = self.HEADER.match(line)
            if m:
                entry = (number, {})
                self.arrays.setdefault(m.group(1), []).append(entry)
                self.top.setdefault(m.group(1).split(".")[0], number)
                current = entry
                continue
            m = self.TABLE.match(line)
            if m:
                self.top.setdefault(m.group(1), number)
                current = (number, {})
                continue
            m = self.KEY.match(line)
            if m:
                if current is None:
                    self.top.setdefault(m.group(1), number)
                else:
                    current[1].setdefault(m.group(1), number)
        self.inline = text.splitlines()

    def key(self, name):
        return self.top.get(name, 0)

    def entry(self, array, index, key=None):
        entries = self.arrays.get(array, [])
        if index < len(entries):
            line, keys = entries[index]
            return keys.get(key, line) if key else line
        # inline arrays: `outgoing_vendors = [ {vendor = ...}, ... ]`: count braces
        start = self.top.get(array, 0)
        if not start:
            return 0
        seen = -1
        for number in range(start, len(self.inline) + 1):
            seen += self.inline[number - 1].count("{")
            if seen >= index:
                return number
        return start


def _comparator(path, line, value, version, allowed):
    if not isinstance(value, str):
        raise PolicyFileError(path, line, "'comparator' must be a string")
    if value in match.NOT_SINCE_1_2 and version != "1.2":
        raise PolicyFileError(path, line, "comparator %r needs version \"1.2\" (file says %r)"
                              % (value, version))
    if value not in allowed:
        raise PolicyFileError(path, line, "unsupported comparator %r here (use one of %s)"
                              % (value, ", ".join(allowed)))
    return value


def _evr_tuple(text):
    epoch, _, vr = text.rpartition(":")
    version, _, release = vr.partition("-")
    return (epoch or "0", version, release or None)


def _label_compare(a, b):
    import rpm
    return rpm.labelCompare(a, b)


def _relational(kind, comparator, value):
    if kind == "epoch":
        want = int(value)

        def get(p):
            return p.epoch
        cmpf = (lambda a, b: (a > b) - (a < b))
    else:
        if kind == "evr":
            want = _evr_tuple(value)

            def get(p):
                return (str(p.epoch), p.version, p.release)
        elif kind == "version":
            want = ("0", value, None)

            def get(p):
                return ("0", p.version, None)
        else:  # release
            want = ("0", "0", value.lstrip("-"))

            def get(p):
                return ("0", "0", p.release)
        cmpf = _label_compare
    ops = {"EXACT": lambda c: c == 0, "NOT_EXACT": lambda c: c != 0, "GT": lambda c: c > 0,
           "GTE": lambda c: c >= 0, "LT": lambda c: c < 0, "LTE": lambda c: c <= 0}
    op = ops[comparator]
    return lambda p: op(cmpf(get(p), want))


def _package_filter(path, line, table, version, incoming):
    if not isinstance(table, dict):
        raise PolicyFileError(path, line, "each entry of 'filters' must be a table")
    for key in table:
        if key not in ("filter", "value", "comparator"):
            raise PolicyFileError(path, line, "unknown key %r in a package filter" % key)
    if "filter" not in table:
        raise PolicyFileError(path, line, "missing 'filter' key in a package filter")
    if "value" not in table:
        raise PolicyFileError(path, line, "missing 'value' key in a package filter")
    kind, value = table["filter"], table["value"]
    if kind not in DNF5_FILTERS:
        raise PolicyFileError(path, line, "unknown filter %r (use one of %s)"
                              % (kind, ", ".join(DNF5_FILTERS)))
    if not isinstance(value, str):
        raise PolicyFileError(path, line, "'value' must be a string")
    comparator = table.get("comparator", "EXACT")
    if kind == "cmdline_repo":
        if not incoming:
            raise PolicyFileError(path, line, "filter \"cmdline_repo\" is only allowed in "
                                  "'incoming_packages'")
        if comparator != "EXACT":
            raise PolicyFileError(path, line, "filter \"cmdline_repo\" only takes the EXACT "
                                  "comparator")
        if value not in ("1", "true", "0", "false"):
            raise PolicyFileError(path, line, "cmdline_repo value %r: use true, 1, false or 0"
                                  % value)
        want = value in ("1", "true")
        return lambda p: bool(p.cmdline) == want
    if kind in ("evr", "epoch", "version", "release"):
        comparator = _comparator(path, line, comparator, version, match.RELATIONAL)
        if kind == "epoch" and not value.isdigit():
            raise PolicyFileError(path, line, "epoch value %r is not a number" % value)
        return _relational(kind, comparator, value)
    string_cmps = match.STRING_COMPARATORS + match.NOT_FORMS_1_0 + match.NOT_SINCE_1_2
    comparator = _comparator(path, line, comparator, version, string_cmps)
    try:
        test = match.compile_comparator(comparator, value)
    except Exception as exc:
        raise PolicyFileError(path, line, "invalid pattern %r: %s" % (value, exc)) from None
    getter = {"name": lambda p: p.name, "source_name": lambda p: p.source_name,
              "arch": lambda p: p.arch, "repoid": lambda p: p.repoid}[kind]
    return lambda p: test(getter(p))


def _toml_parser():
    """(loads, its decode error): tomllib (Python >= 3.11), tomli (the same
    parser, packaged for older Pythons: EL 9's python3-tomli) or the older
    toml (Debian 11); None if none is installed.  Looked up when a TOML
    file is read, so that without one only dnf5's files cannot be."""
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            try:
                import toml
            except ImportError:
                return None
            return toml.loads, toml.TomlDecodeError
    return tomllib.loads, tomllib.TOMLDecodeError


def parse_dnf5(policy, path, text):
    """Add one dnf5 vendors.d TOML file (version 1.0, 1.1 or 1.2) to `policy`."""
    parser = _toml_parser()
    if parser is None:
        raise PolicyFileError(path, 0, "cannot read TOML: this Python (%d.%d) has no tomllib, "
                              "and neither tomli nor toml is installed (python3-tomli)"
                              % sys.version_info[:2])
    loads, decode_error = parser
    try:
        data = loads(text)
    except decode_error as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise PolicyFileError(path, int(m.group(1)) if m else 0,
                              "invalid TOML: %s" % exc) from None
    lines = _TomlLines(text)
    version = data.get("version")
    if version is None:
        raise PolicyFileError(path, 1, "missing \"version\" key")
    if version not in DNF5_VERSIONS:
        raise PolicyFileError(path, lines.key("version"), "unsupported version %r (supported: "
                              "%s)" % (version, ", ".join(DNF5_VERSIONS)))
    groups = ("outgoing_vendors", "incoming_vendors", "equivalent_vendors")
    pkgs = ("outgoing_packages", "incoming_packages")
    for key in data:
        if key != "version" and key not in groups + pkgs:
            raise PolicyFileError(path, lines.key(key), "unknown key %r" % key)
    if version == "1.0":
        if "equivalent_vendors" in data and ("outgoing_vendors" in data or
                                             "incoming_vendors" in data):
            raise PolicyFileError(path, lines.key("equivalent_vendors"), "version \"1.0\" "
                                  "does not allow 'equivalent_vendors' together with "
                                  "'outgoing_vendors'/'incoming_vendors'")
        if ("outgoing_vendors" in data) != ("incoming_vendors" in data):
            key = "outgoing_vendors" if "outgoing_vendors" in data else "incoming_vendors"
            raise PolicyFileError(path, lines.key(key), "version \"1.0\" needs both "
                                  "'outgoing_vendors' and 'incoming_vendors' (or neither)")
        for key in pkgs:
            if key in data:
                raise PolicyFileError(path, lines.key(key), "version \"1.0\" does not "
                                      "support %r (use \"1.1\")" % key)
    pol = Dnf5Policy(source=str(path), version=version)
    string_cmps = match.STRING_COMPARATORS + match.NOT_FORMS_1_0 + match.NOT_SINCE_1_2
    # vendor entries in file order (libdnf5 evaluates them in the order written)
    order = sorted((k for k in groups if k in data), key=lambda k: lines.key(k))
    for key in order:
        entries = data[key]
        if not isinstance(entries, list):
            raise PolicyFileError(path, lines.key(key), "%r must be an array of tables" % key)
        for i, entry in enumerate(entries):
            line = lines.entry(key, i)
            if not isinstance(entry, dict):
                raise PolicyFileError(path, line, "%r entries must be tables" % key)
            for k in entry:
                if k not in ("vendor", "comparator", "exclude"):
                    raise PolicyFileError(path, lines.entry(key, i, k), "unknown key %r" % k)
            if "vendor" not in entry:
                raise PolicyFileError(path, line, "missing 'vendor' key")
            if not isinstance(entry["vendor"], str):
                raise PolicyFileError(path, lines.entry(key, i, "vendor"),
                                      "'vendor' must be a string")
            comparator = _comparator(path, lines.entry(key, i, "comparator"),
                                     entry.get("comparator", "EXACT"), version, string_cmps)
            exclude = entry.get("exclude", False)
            if not isinstance(exclude, bool):
                raise PolicyFileError(path, lines.entry(key, i, "exclude"),
                                      "'exclude' must be true or false")
            try:
                pred = match.compile_comparator(comparator, entry["vendor"])
            except Exception as exc:
                raise PolicyFileError(path, line, "invalid vendor pattern %r: %s"
                                      % (entry["vendor"], exc)) from None
            pol.vendor_entries.append((key.split("_")[0], pred, exclude, line))
    for key in pkgs:
        for i, entry in enumerate(data.get(key, [])):
            line = lines.entry(key, i)
            if not isinstance(entry, dict):
                raise PolicyFileError(path, line, "%r entries must be tables" % key)
            for k in entry:
                if k not in ("filters", "exclude"):
                    raise PolicyFileError(path, lines.entry(key, i, k), "unknown key %r" % k)
            filters = entry.get("filters") or []
            if not isinstance(filters, list) or not filters:
                raise PolicyFileError(path, line, "missing package filter definition")
            exclude = entry.get("exclude", False)
            if not isinstance(exclude, bool):
                raise PolicyFileError(path, line, "'exclude' must be true or false")
            funcs = [_package_filter(path, line, f, version, key == "incoming_packages")
                     for f in filters]
            target = pol.outgoing_packages if key == "outgoing_packages" else pol.incoming_packages
            target.append((funcs, exclude, line))
    if pol.vendor_entries or pol.outgoing_packages or pol.incoming_packages:
        policy.dnf5.append(pol)          # a file without lists defines no rule


# ---- zypper -------------------------------------------------------------------

def parse_zypp(policy, path, text, warnings=None):
    """Add one zypper vendors.d file (``[main] vendors = a,b,c``) to `policy`."""
    sections = inifile.parse(path, text, allow_duplicates=True)
    for sec in sections:
        if sec.name == "main" and "vendors" in sec.values:
            vendors = [v.strip() for v in sec.values["vendors"].replace("\n", ",").split(",")]
            vendors = [v for v in vendors if v]
            if vendors:
                policy.zypp.add_list(vendors, _where(path, sec.line_of("vendors")))
            return
    if warnings is not None:
        warnings.append("%s: no 'vendors =' in [main]: zypper ignores this file" % path)


# ---- loading everything -------------------------------------------------------

def _files(dirs, pattern_conf=True, override=False):
    """Policy files of `dirs` in name order.  override: a name in an earlier
    directory hides the same name in later ones (dnf5's /etc over /usr)."""
    seen = {}
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PolicyFileError(d, 0, "cannot list directory: %s" % exc) from None
        for n in names:
            if n.startswith(".") or (pattern_conf and not n.endswith(".conf")):
                continue
            p = os.path.join(d, n)
            if not os.path.isfile(p):
                continue
            key = n if override else p
            if key not in seen:
                seen[key] = p
    if override:
        return [seen[k] for k in sorted(seen)]
    return list(seen.values())


GENERATED_MARKER = "# Generated by rpmcow (sticky-vendor) -- do not edit"


def is_generated(path):
    """Is this a vendors.d file rpmcow generated from our policy (first line
    GENERATED_MARKER, see vendorpolicy.dnf5)?  Those are the policy again, in
    dnf5's words: load() does not read them."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n") == GENERATED_MARKER
    except OSError:
        return False


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(path, 0, "cannot read: %s" % exc) from None


def load(our_dirs=(), dnf5_dirs=(), zypp_dirs=(), normalize=True, commandline="sticky",
         pins=(), errors=None, warnings=None):
    """Read every policy file; returns a Policy.

    pins: extra Pins placed first (the state's `dnf vendor pin` entries).
    errors: a list to collect PolicyFileErrors into (lint) instead of raising.
    """
    policy = Policy(normalize=normalize, commandline=commandline)
    policy._pending_refs = []
    policy.pins.extend(pins)
    jobs = ([(p, parse_ours) for p in _files(our_dirs)]
            + [(p, parse_dnf5) for p in _files(dnf5_dirs, override=True)
               if not is_generated(p)]
            + [(p, parse_zypp) for p in _files(zypp_dirs, pattern_conf=False)])
    for path, parser in jobs:
        try:
            text = _read(path)
            if parser is parse_zypp:
                parser(policy, path, text, warnings)
            else:
                parser(policy, path, text)
            policy.sources.append(path)
        except PolicyFileError as exc:
            if errors is None:
                raise
            errors.append(exc)
    names = {c.name for c in policy.classes}
    for path, name, line in policy._pending_refs:
        if name not in names:
            exc = PolicyFileError(path, line, "@%s: no [vendor %s] is defined" % (name, name))
            if errors is None:
                raise exc
            errors.append(exc)
    return policy

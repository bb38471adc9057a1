"""The policy as dnf5 enforces it: generated vendors.d files, and dnf5's own verdict.

dnf5 (5.3+) has no Python plugin hook; it enforces vendor stickiness itself
when ``allow_vendor_change = 0``, allowing a change only when the vendor is
exactly the same or a ``vendors.d`` policy file allows it.  libdnf5 reads each
TOML file as ONE rule (its outgoing, incoming and package lists are combined
with AND), so independent rules need one file each.  What dnf5 can express of
our policy is therefore written to files we own::

    /etc/dnf/vendors.d/50-rpmcow-sticky-vendor.conf      header + rule 1
    /etc/dnf/vendors.d/50-rpmcow-sticky-vendor.NN.conf   rule NN (2, 3, ...)
    /etc/dnf/libdnf5.conf.d/50-rpmcow-sticky-vendor.conf allow_vendor_change = 0

(inside the install root).  Each starts with ``MARKER``; a file of these
names without it is the admin's and is never touched.  Every file is
written to a temporary name and renamed; the rule files go first, the main
file (whose header names the inputs and their digest) last, then stale rule
files are removed.

What dnf5 cannot express is listed by ``generate`` as notes ("not enforced
on dnf5"): pins, trust binding (keys), per-repository vendor lists,
``match = regex`` vendor lists, and name normalisation of vendors the
policy does not name.  A vendor class bound to keys is left out (stricter:
its vendors are not equivalent on dnf5).

``Dnf5View`` answers, without solving, what dnf5 decides for one replacement
(libdnf5's VendorChangeManager: the same vendor string, else any policy
file that allows it) over every dnf5 file, ours included.
"""
import contextlib
import hashlib
import json
import os
import re

from . import config, formats, match
from .errors import PolicyError, PolicyFileError
from .policy import Policy
from .state import atomic_write

MARKER = formats.GENERATED_MARKER
STEM = "50-rpmcow-sticky-vendor"
VENDORS_DIR = "/etc/dnf/vendors.d"
CONF_DIR = "/etc/dnf/libdnf5.conf.d"
TOML_VERSION = "1.1"
RULE_NAME = re.compile(r"^%s(\.\d+)?\.conf$" % re.escape(STEM))

NOTE_PIN = "pin %s (%s): not enforced on dnf5 (dnf5 has no pins)"
NOTE_KEYS = ("[vendor %s] keys = (%s): not enforced on dnf5 (dnf5 cannot check signing "
             "keys); its vendors are not treated as equivalent on dnf5")
NOTE_REPO = ("[repo %s] (%s): not enforced on dnf5 (dnf5 cannot restrict which vendors a "
             "repository provides)")
NOTE_REGEX = ("%s (%s): match = regex: not enforced on dnf5 (Python regular expressions "
              "are not translated)")
NOTE_NORMALIZE = ("normalize = yes: on dnf5 only the vendors named in the policy are "
                  "compared ignoring case and spacing; other vendor names must match exactly")


is_generated = formats.is_generated


def vendors_dir(root):
    return config.under(root, VENDORS_DIR)


def main_file(root):
    return os.path.join(vendors_dir(root), STEM + ".conf")


def conf_file(root):
    return os.path.join(config.under(root, CONF_DIR), STEM + ".conf")


def owned_files(root):
    """Our files in the install root (rule files and the config drop-in)."""
    out = []
    d = vendors_dir(root)
    with contextlib.suppress(FileNotFoundError):
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            if RULE_NAME.match(n) and is_generated(p):
                out.append(p)
    if is_generated(conf_file(root)):
        out.append(conf_file(root))
    return out


# ---- vendor patterns as dnf5 comparators -----------------------------------------

_REGEX_SYNTAX = set("^$\\.*+?()[]{}|/")


def _rx_char(c):
    if c.isalnum() or ord(c) > 127:
        return c
    if c in _REGEX_SYNTAX:
        return "\\" + c
    return "[%s]" % c


def _rx_words(text, glob=False):
    """A regular expression (ECMAScript, as libdnf5's std::regex) for normalised
    text: words joined by runs of white space, white space around allowed."""
    parts = []
    for word in text.split():
        out, i = [], 0
        while i < len(word):
            c = word[i]
            if glob and c == "*":
                out.append(".*")
            elif glob and c == "?":
                out.append(".")
            elif glob and c == "[" and "]" in word[i + 2:]:
                end = word.index("]", i + 2)
                body = word[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[%s]" % body.replace("\\", "\\\\"))
                i = end
            else:
                out.append(_rx_char(c))
            i += 1
        parts.append("".join(out))
    return "\\s*" + "\\s+".join(parts) + "\\s*"


def vendor_entries(vset):
    """[(comparator, pattern)] matching what VendorSet `vset` matches, or None
    when dnf5 cannot express it (match = regex)."""
    if vset.method == "regex":
        return None
    cmp = "IREGEX" if vset.fold else "REGEX"
    out = []
    for p in vset.patterns:
        if not p.strip():
            out.append(("EXACT", ""))
        elif vset.method == "exact":
            out.append((cmp, _rx_words(p)))
        elif vset.method == "prefix":
            out.append((cmp, _rx_words(p)[:-len("\\s*")] + ".*"))
        else:                                        # glob
            out.append((cmp, _rx_words(p, glob=True)))
    return out


# ---- generation -------------------------------------------------------------------

def _toml_str(s):
    return json.dumps(s, ensure_ascii=False)


class _Rule:
    def __init__(self, title):
        self.title = title
        self.lists = []          # (table name, [lines])

    def vendors(self, table, entries, excludes=()):
        for cmp, pat in excludes:
            self.lists.append((table, ["vendor = %s" % _toml_str(pat),
                                       "comparator = %s" % _toml_str(cmp), "exclude = true"]))
        for cmp, pat in entries:
            self.lists.append((table, ["vendor = %s" % _toml_str(pat),
                                       "comparator = %s" % _toml_str(cmp)]))

    def packages(self, table, filters, exclude=False):
        inner = ", ".join("{ filter = %s, value = %s, comparator = %s }" % (
            _toml_str(f), _toml_str(v), _toml_str(c)) for f, v, c in filters)
        lines = ["filters = [ %s ]" % inner]
        if exclude:
            lines.append("exclude = true")
        self.lists.append((table, lines))

    def text(self):
        out = ["# %s" % self.title]
        for table, lines in self.lists:
            out.append("")
            out.append("[[%s]]" % table)
            out.extend(lines)
        return "\n".join(out) + "\n"


def _anyof_entries(policy, anyof):
    """Entries for an [allow] side (_AnyOf: a VendorSet and @class names);
    None if not expressible."""
    out = []
    if anyof.vset is not None:
        e = vendor_entries(anyof.vset)
        if e is None:
            return None
        out += e
    for ref in anyof.refs:
        for c in policy.classes:
            if c.name == ref:
                e = vendor_entries(c.vendors)
                if e is None:
                    return None
                out += e
    return out


def _zypp_rules(policy):
    """One rule per zypper group: a vendor belongs to the group of its longest
    listed prefix (case-insensitive; "opensuse*" only by its exact name)."""
    groups = {}
    for entry, gid in policy.zypp.group_of.items():
        groups.setdefault(gid, []).append(entry)

    def entry_cmp(entry):
        return ("IEXACT" if entry.startswith("opensuse") else "ISTARTSWITH", entry)
    rules = []
    for gid in sorted(groups):
        mine = sorted(groups[gid])
        # longer prefixes of other groups win over ours: exclude them first
        longer = sorted({e for e, g in policy.zypp.group_of.items() if g != gid and
                         not e.startswith("opensuse") and
                         any(e.startswith(m) and len(e) > len(m) for m in mine)})
        r = _Rule("zypper vendors.d group (%s)" % ", ".join(policy.zypp.where.get(gid, [])))
        r.vendors("equivalent_vendors", [entry_cmp(e) for e in mine],
                  excludes=[("ISTARTSWITH", e) for e in longer])
        rules.append(r)
    return rules


def generate(policy, settings):
    """(rules, notes): the _Rules dnf5 can enforce of `policy` (read WITHOUT our
    generated files), and what it cannot ("not enforced on dnf5")."""
    rules, notes = [], []
    for pin in policy.pins:
        notes.append(NOTE_PIN % (pin.label, pin.where))
    for ra in policy.repo_allows:
        notes.append(NOTE_REPO % (ra.label, ra.where))
    for c in policy.classes:
        if c.keys:
            notes.append(NOTE_KEYS % (c.name, " ".join(sorted(c.keys))))
            continue
        e = vendor_entries(c.vendors)
        if e is None:
            notes.append(NOTE_REGEX % ("[vendor %s]" % c.name, c.where))
            continue
        r = _Rule("[vendor %s] (%s): equivalent vendors" % (c.name, c.where))
        r.vendors("equivalent_vendors", e)
        rules.append(r)
    if policy.zypp:
        rules += _zypp_rules(policy)
    for t in policy.transitions:
        src, dst = _anyof_entries(policy, t.sources), _anyof_entries(policy, t.targets)
        if src is None or dst is None:
            notes.append(NOTE_REGEX % ("[allow %s]" % t.name, t.where))
            continue
        r = _Rule("[allow %s] (%s): allowed change" % (t.name, t.where))
        r.vendors("outgoing_vendors", src)
        r.vendors("incoming_vendors", dst)
        if t.packages is not None:
            for pat in getattr(t.packages, "patterns", ()):
                r.packages("outgoing_packages", [("name", pat, "GLOB")])
        rules.append(r)
    if policy.commandline == "allow":
        r = _Rule("commandline = allow (sticky-vendor.conf): local package files may "
                  "change vendor")
        r.packages("incoming_packages", [("cmdline_repo", "true", "EXACT")])
        rules.append(r)
    nv = policy.novendor
    for key, table, other in (("gain", "incoming_vendors", "outgoing_vendors"),
                              ("lose", "outgoing_vendors", "incoming_vendors")):
        rule = getattr(nv, key)
        if rule is None or rule is False:
            continue
        r = _Rule("[no-vendor] %s (%s)" % (key, nv.where))
        r.vendors(other, [("EXACT", "")])
        if rule is not True:
            e = vendor_entries(rule)
            if e is None:
                notes.append(NOTE_REGEX % ("[no-vendor] %s" % key, nv.where))
                continue
            r.vendors(table, e)
        rules.append(r)
    if policy.fold:
        notes.append(NOTE_NORMALIZE)
    return rules, notes


def inputs_digest(policy, settings, enforce):
    """A digest of everything the generated files are made from."""
    h = hashlib.sha256()
    h.update(repr((sorted(vars(settings).items()), bool(enforce))).encode())
    for path in policy.sources:
        h.update(path.encode() + b"\0")
        with contextlib.suppress(OSError):
            with open(path, "rb") as f:
                h.update(f.read())
    for pin in policy.pins:
        h.update(repr((pin.label, pin.vendor, pin.repo)).encode())
    return h.hexdigest()[:16]


def render(rules, notes, policy, digest, who):
    """{file name: text} of the vendors.d files."""
    head = [MARKER,
            "# Made by `%s` from:" % who]
    head += ["#   %s" % s for s in policy.sources] or ["#   (no policy files)"]
    head += ["# inputs digest: %s" % digest,
             "# dnf5 reads one rule per file: %d rule file(s) %s*.conf" % (max(len(rules), 1),
                                                                         STEM)]
    if notes:
        head.append("# NOT enforced on dnf5 (rpmcow vendor check):")
        head += ["#   %s" % n for n in notes]
    files = {}
    for i, r in enumerate(rules or [None], 1):
        name = STEM + (".conf" if i == 1 else ".%02d.conf" % i)
        lines = list(head) if i == 1 else [MARKER, "# rule %d of %d, see %s.conf" % (
            i, len(rules), STEM)]
        lines += ["", "version = %s" % _toml_str(TOML_VERSION), ""]
        text = "\n".join(lines) + "\n"
        if r is not None:
            text += r.text()
        files[name] = text
    return files


def read_digest(root):
    """The inputs digest recorded in our main file, or None."""
    path = main_file(root)
    if not is_generated(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("# inputs digest: "):
                return line.split(":", 1)[1].strip()
    return None


def _check_not_admins(root, names):
    for n in names:
        p = os.path.join(vendors_dir(root), n)
        if os.path.exists(p) and not is_generated(p):
            raise PolicyError("%s exists and was not generated by rpmcow: refusing to replace "
                              "it (rename it, or merge it into /etc/dnf/sticky-vendor.d)" % p)
    p = conf_file(root)
    if os.path.exists(p) and not is_generated(p):
        raise PolicyError("%s exists and was not generated by rpmcow: refusing to replace it"
                          % p)


def write(root, files, who):
    """Put the generated files in place (rule files, then the main file, then
    the allow_vendor_change drop-in); remove our stale rule files."""
    _check_not_admins(root, files)
    d = vendors_dir(root)
    main = STEM + ".conf"
    for name in sorted(files, key=lambda n: n == main):
        atomic_write(os.path.join(d, name), files[name].encode())
    for p in owned_files(root):
        if os.path.dirname(p) == d and os.path.basename(p) not in files:
            os.unlink(p)
    atomic_write(conf_file(root), ("%s\n# Made by `%s`: dnf5 enforces its vendor policy "
                                   "(%s/%s*.conf).\n# `rpmcow vendor disable` removes it.\n"
                                   "[main]\nallow_vendor_change = 0\n"
                                   % (MARKER, who, VENDORS_DIR, STEM)).encode())


def remove(root):
    """Remove every file we own; returns their paths."""
    gone = []
    for p in owned_files(root):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
            gone.append(p)
    return gone


# ---- dnf5's verdict ---------------------------------------------------------------

class Dnf5View:
    """What dnf5 decides: the same vendor string, else any vendors.d rule."""

    def __init__(self, dnf5_dirs, errors=None):
        self.policy = Policy(normalize=False)
        for path in formats._files(dnf5_dirs, override=True):
            try:
                formats.parse_dnf5(self.policy, path, formats._read(path))
            except PolicyFileError as exc:
                if errors is None:
                    raise
                errors.append(exc)

    def allows(self, inst, cand):
        """(allowed?, the file that allows it or "")"""
        if match.raw_vendor(inst.vendor) == match.raw_vendor(cand.vendor):
            return True, ""
        for p in self.policy.dnf5:
            if p.allows(inst, cand):
                return True, p.source
        return False, ""

"""The vendor policy and the one decision it makes.

``Policy.decide(installed, candidate)`` answers: may ``candidate`` replace
``installed`` (upgrade, downgrade, reinstall, obsolete)?  Fresh installs never
ask.  The answer is a ``Decision`` that names the rule and where it was
written, so every refusal can be explained.  Rules, first match decides:

1. an intended switch for this command (``dnf vendor switch``);
2. a pin of the package (state pins, then file pins in file order):
   "stay with vendor V" or "follow repository R";
3. a command-line package, when ``commandline = allow``;
4. the same vendor (after normalisation) -- unless trust binding says one of
   them only claims it;
5. equivalent vendors: our ``[vendor]`` classes, zypper ``vendors.d`` groups;
6. allowed changes: our ``[allow]`` transitions, dnf5 ``vendors.d`` policies;
7. the ``[no-vendor]`` rules for packages without a vendor;
8. otherwise refused: the package sticks to its vendor.

Per-repository vendor allow-lists are not a replacement decision: they say
which packages of a repository are usable at all (``Policy.repo_allows``).
"""
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from . import match


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str            # what decided, in words
    where: str = ""      # "FILE:LINE", "state" or "" (built-in)
    kind: str = ""       # same | switch | pin | commandline | class | zypp | allow |
    #                      dnf5 | novendor | sticky | untrusted | disabled

    def __str__(self):
        return "%s (%s)" % (self.rule, self.where) if self.where else self.rule


class Pkg:
    """What the engine needs to know about one package."""
    __slots__ = ("name", "vendor", "repoid", "epoch", "version", "release", "arch",
                 "sourcerpm", "cmdline", "keyid", "_hawkey")

    def __init__(self, name, vendor="", repoid="", epoch=0, version="0", release="0",
                 arch="noarch", sourcerpm="", cmdline=False, keyid=None):
        self.name = name
        self.vendor = match.raw_vendor(vendor)
        self.repoid = repoid
        self.epoch = int(epoch or 0)
        self.version = version
        self.release = release
        self.arch = arch
        self.sourcerpm = sourcerpm or ""
        self.cmdline = cmdline
        self.keyid = keyid
        self._hawkey = None

    @classmethod
    def from_hawkey(cls, p, keyid=None):
        obj = cls(p.name, p.vendor, p.reponame, p.epoch, p.version, p.release, p.arch,
                  p.sourcerpm, p.reponame == "@commandline", keyid)
        obj._hawkey = p
        return obj

    @classmethod
    def from_libdnf5(cls, p, keyid=None):
        """From a libdnf5.rpm.Package (installed ones are in repo "@System")."""
        obj = cls(p.get_name(), p.get_vendor(), p.get_repo_id(), p.get_epoch() or 0,
                  p.get_version(), p.get_release(), p.get_arch(), p.get_sourcerpm(),
                  p.get_repo_id() == "@commandline", keyid)
        obj._hawkey = p
        return obj

    def __str__(self):
        """NEVRA as dnf prints it (no epoch 0)."""
        return "%s-%s.%s" % (self.name, self.evr, self.arch)

    @property
    def evr(self):
        if self.epoch:
            return "%d:%s-%s" % (self.epoch, self.version, self.release)
        return "%s-%s" % (self.version, self.release)

    @property
    def source_name(self):
        if not self.sourcerpm:
            return self.name
        return self.sourcerpm.rsplit("-", 2)[0]

    @property
    def installed(self):
        return self.repoid == "@System"

    def __repr__(self):
        return "<Pkg %s-%s.%s %r @%s>" % (self.name, self.evr, self.arch, self.vendor,
                                          self.repoid)


def vendor_label(vendor):
    """How a vendor is shown to users."""
    return "'%s'" % vendor if vendor else "(no vendor)"


# ---- building blocks the parsers produce -------------------------------------

class VendorSet:
    """A list of vendor patterns compared with one method on normalised text.

    method: exact | prefix | glob | regex.  ``fold``: compare case-insensitively
    (the ``normalize`` setting).
    """

    def __init__(self, patterns, method="exact", fold=True):
        self.patterns = list(patterns)
        self.method = method
        self.fold = fold
        norm = [match.normalize(p, fold) for p in self.patterns]
        self._exact = set(norm) if method == "exact" else set()
        if method == "prefix":
            self._tests = [lambda v, p=p: v.startswith(p) for p in norm]
        elif method == "glob":
            self._tests = [match.compile_comparator("GLOB", p) for p in norm]
        elif method == "regex":
            import re
            flags = re.IGNORECASE if fold else 0
            rxs = [re.compile(p, flags) for p in (" ".join(x.split()) for x in self.patterns)]
            self._tests = [lambda v, rx=rx: rx.fullmatch(v) is not None for rx in rxs]
        elif method == "exact":
            self._tests = []
        else:
            raise ValueError("unknown match method %r (exact, prefix, glob, regex)" % method)

    def matches(self, norm_vendor):
        return norm_vendor in self._exact or any(t(norm_vendor) for t in self._tests)


@dataclass
class VendorClass:
    """``[vendor NAME]``: vendors that are one vendor; optional signing keys."""
    name: str
    vendors: VendorSet
    keys: frozenset = frozenset()     # 16-hex key IDs, upper case
    where: str = ""


@dataclass
class Transition:
    """``[allow NAME]``: packages may move from these vendors to those."""
    name: str
    sources: VendorSet
    targets: VendorSet
    packages: Optional[Callable] = None     # name predicate, None = every package
    where: str = ""


@dataclass
class Pin:
    """Stay with vendor V, or follow repository R (``[pin]`` or ``dnf vendor pin``)."""
    packages: Callable                 # name predicate
    label: str                         # the package patterns as written
    vendor: Optional[str] = None
    repo: Optional[str] = None
    where: str = ""


@dataclass
class RepoAllow:
    """``[repo ID]``: the only vendors repository ID may provide."""
    repo: Callable                     # repo id predicate
    label: str
    vendors: VendorSet
    where: str = ""


@dataclass
class NoVendorRules:
    """``[no-vendor]``: may a vendorless package gain / lose a vendor?

    gain / lose: None (no), True (any vendor) or a VendorSet."""
    gain: object = None
    lose: object = None
    where: str = ""


@dataclass
class Dnf5Policy:
    """One dnf5 ``vendors.d`` TOML file, evaluated as libdnf5 does."""
    source: str
    version: str
    # (group, predicate, exclude, line); group in outgoing/incoming/equivalent
    vendor_entries: list = field(default_factory=list)
    outgoing_packages: list = field(default_factory=list)   # [(filters, exclude, line)]
    incoming_packages: list = field(default_factory=list)

    def _vendor_ok(self, vendor, direction):
        groups = (direction, "equivalent")
        relevant = [e for e in self.vendor_entries if e[0] in groups]
        if not relevant:
            return True
        for group, pred, exclude, _ in relevant:
            if pred(vendor):
                return not exclude
        return False

    @staticmethod
    def _packages_ok(defs, pkg):
        if not defs:
            return True
        for filters, exclude, _ in defs:
            if all(f(pkg) for f in filters):
                return not exclude
        return False

    def allows(self, inst, cand):
        return (self._vendor_ok(inst.vendor, "outgoing")
                and self._vendor_ok(cand.vendor, "incoming")
                and self._packages_ok(self.outgoing_packages, inst)
                and self._packages_ok(self.incoming_packages, cand))

    @property
    def has_package_filters(self):
        return bool(self.outgoing_packages or self.incoming_packages)


class ZyppGroups:
    """zypper's vendor equivalence (libzypp VendorAttr): lower-cased vendor
    strings; a vendor belongs to the group of the longest listed prefix (an
    "opensuse*" vendor only by exact name); lists that share a vendor merge."""

    def __init__(self):
        self.group_of = {}         # lower-cased list entry -> group id
        self.where = {}            # group id -> [source]
        self._next = 0

    def add_list(self, vendors, where):
        vendors = [v.lower() for v in vendors if v]
        target = None
        for v in vendors:
            gid = self.group_of.get(v)
            if gid is None:
                continue
            if target is None:
                target = gid
            elif gid != target:
                for k, g in list(self.group_of.items()):
                    if g == gid:
                        self.group_of[k] = target
                self.where.setdefault(target, []).extend(self.where.pop(gid, []))
        if target is None:
            self._next += 1
            target = self._next
        for v in vendors:
            self.group_of[v] = target
        self.where.setdefault(target, []).append(where)

    def group(self, vendor):
        lv = vendor.lower()
        if lv.startswith("opensuse"):
            return self.group_of.get(lv)
        best = None
        for entry, gid in self.group_of.items():
            if lv.startswith(entry) and (best is None or len(entry) > len(best[0])):
                best = (entry, gid)
        return best[1] if best else None

    def __bool__(self):
        return bool(self.group_of)


# ---- the policy ---------------------------------------------------------------

class Policy:
    """Everything that was read, ready to decide.  Build with ``Policy()`` and
    the ``add_*`` methods (the parsers in ``formats`` do), or ``formats.load``."""

    def __init__(self, normalize=True, commandline="sticky"):
        self.fold = normalize
        self.commandline = commandline
        self.classes: List[VendorClass] = []
        self.transitions: List[Transition] = []
        self.pins: List[Pin] = []            # state pins first, then files in order
        self.repo_allows: List[RepoAllow] = []
        self.novendor = NoVendorRules()
        self.dnf5: List[Dnf5Policy] = []
        self.zypp = ZyppGroups()
        self.sources: List[str] = []         # files read, in order
        self.switches = {}                   # name -> VendorSet (this command only)
        self._class_cache = {}
        self._pending_refs = []              # (@class references to check)

    # -- construction helpers --
    def vendor_set(self, patterns, method="exact"):
        return VendorSet(patterns, method, self.fold)

    def add_switch(self, name, vendor):
        self.switches[name] = self.vendor_set([vendor])

    # -- lookups --
    def norm(self, vendor):
        return match.normalize(vendor, self.fold)

    def classes_of(self, vendor):
        """Indexes of our [vendor] classes a vendor (raw) belongs to."""
        hit = self._class_cache.get(vendor)
        if hit is None:
            n = self.norm(vendor)
            hit = frozenset(i for i, c in enumerate(self.classes) if c.vendors.matches(n))
            self._class_cache[vendor] = hit
        return hit

    def keys_for(self, vendor):
        """The key IDs a vendor is bound to (empty: no trust binding)."""
        keys = set()
        for i in self.classes_of(vendor):
            keys |= self.classes[i].keys
        return keys

    def has_trust_binding(self):
        return any(c.keys for c in self.classes)

    def trusted(self, pkg):
        """False when pkg claims a vendor bound to keys and is known to be signed
        by none of them (an unknown signer -- keyid None -- is trusted here and
        checked again once the package file is there)."""
        if pkg.keyid is None:
            return True
        keys = self.keys_for(pkg.vendor)
        if not keys:
            return True
        return bool(pkg.keyid) and pkg.keyid.upper()[-16:] in keys

    def pin_for(self, name):
        for pin in self.pins:
            if pin.packages(name):
                return pin
        return None

    def in_vendor(self, vendor, target):
        """Is `vendor` the vendor `target` or one equivalent to it?"""
        if self.norm(vendor) == self.norm(target):
            return True
        return bool(self.classes_of(vendor) & self.classes_of(target))

    def name_specific(self, name):
        """Whether decisions for this package name depend on more than the two
        vendors (callers may cache by vendor pair otherwise)."""
        return (name in self.switches or self.pin_for(name) is not None
                or any(t.packages is not None for t in self.transitions)
                or any(p.has_package_filters for p in self.dnf5))

    def repo_allows_pkg(self, pkg):
        """None if usable; else the RepoAllow that rejects it."""
        for ra in self.repo_allows:
            if ra.repo(pkg.repoid):
                if not ra.vendors.matches(self.norm(pkg.vendor)):
                    return ra
                return None
        return None

    # -- the decision --
    def decide(self, inst, cand):
        vi, vc = inst.vendor, cand.vendor
        sw = self.switches.get(cand.name) or self.switches.get(inst.name)
        if sw is not None:
            if sw.matches(self.norm(vc)):
                return Decision(True, "intended switch of %s to %s" % (
                    inst.name, vendor_label(vc)), "dnf vendor switch", "switch")
        pin = self.pin_for(inst.name)
        if pin is not None:
            if pin.repo is not None:
                ok = match.compile_comparator("GLOB", pin.repo)(cand.repoid)
                return Decision(ok, "%s follows repository '%s'" % (pin.label, pin.repo)
                                if ok else "%s is pinned to repository '%s'; %s is from '%s'"
                                % (pin.label, pin.repo, cand.name, cand.repoid),
                                pin.where, "pin")
            ok = self.in_vendor(vc, pin.vendor) and self.trusted(cand)
            return Decision(ok, "%s is pinned to vendor %s" % (pin.label, vendor_label(pin.vendor)),
                            pin.where, "pin")
        if cand.cmdline and self.commandline == "allow":
            return Decision(True, "command-line packages may change vendor "
                            "(commandline = allow)", "sticky-vendor.conf", "commandline")
        ti, tc = self.trusted(inst), self.trusted(cand)
        if not tc or not ti:
            if not tc and not ti and vi == vc and inst.keyid == cand.keyid:
                return Decision(True, "same (unverified) vendor and key", "", "same")
            bad = cand if not tc else inst
            signer = ("is signed by key %s" % bad.keyid.upper()[-16:] if bad.keyid
                      else "is not signed")
            return Decision(False, "the %s package claims vendor %s but %s, not by one of "
                            "that vendor's keys" % ("new" if bad is cand else "installed",
                                                    vendor_label(bad.vendor), signer),
                            self._class_where(bad.vendor), "untrusted")
        if self.norm(vi) == self.norm(vc):
            if vi == vc:
                return Decision(True, "same vendor", "", "same")
            return Decision(True, "same vendor after normalisation (%s = %s)"
                            % (vendor_label(vi), vendor_label(vc)), "", "same")
        common = self.classes_of(vi) & self.classes_of(vc)
        if common:
            c = self.classes[min(common)]
            return Decision(True, "equivalent vendors [vendor %s]" % c.name, c.where, "class")
        if self.zypp:
            gi, gc = self.zypp.group(vi), self.zypp.group(vc)
            if gi is not None and gi == gc:
                return Decision(True, "equivalent vendors (zypper vendors.d)",
                                ", ".join(self.zypp.where.get(gi, [])), "zypp")
        ni, nc = self.norm(vi), self.norm(vc)
        for t in self.transitions:
            if t.sources.matches(ni) and t.targets.matches(nc) and (
                    t.packages is None or t.packages(inst.name)):
                return Decision(True, "allowed change [allow %s]" % t.name, t.where, "allow")
        for p in self.dnf5:
            if p.allows(inst, cand):
                return Decision(True, "allowed by dnf5 vendor policy", p.source, "dnf5")
        if not vi or not vc:
            nv = self.novendor
            if not vi:
                rule = nv.gain
                ok = rule is True or (rule not in (None, False) and rule.matches(nc))
                what = "a package without vendor may not gain vendor %s" % vendor_label(vc)
            else:
                rule = nv.lose
                ok = rule is True or (rule not in (None, False) and rule.matches(ni))
                what = "a package of vendor %s may not lose its vendor" % vendor_label(vi)
            if ok:
                return Decision(True, "[no-vendor] rule", nv.where, "novendor")
            return Decision(False, what, nv.where, "novendor")
        return Decision(False, "installed packages keep their vendor (%s), and no rule allows "
                        "a change to %s" % (vendor_label(vi), vendor_label(vc)), "", "sticky")

    def _class_where(self, vendor):
        for i in sorted(self.classes_of(vendor)):
            if self.classes[i].keys:
                return self.classes[i].where
        return ""

    def summary(self):
        """Counts for `dnf vendor status`."""
        return {
            "files": len(self.sources),
            "classes": len(self.classes),
            "allow": len(self.transitions),
            "pins": len(self.pins),
            "repos": len(self.repo_allows),
            "dnf5": len(self.dnf5),
            "zypp_groups": len(set(self.zypp.group_of.values())),
        }

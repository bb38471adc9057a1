"""Applying a Policy to a hawkey sack, in bulk.

``compute(sack, policy)`` walks the available packages once per installed
package name (hawkey's name grouping), asks the policy about every candidate
whose vendor differs (same-vendor candidates of names without special rules
are taken without a Decision), and returns a ``Plan``:

* ``excluded``  -- packages to hide from dnf (add them to the sack's excludes):
  other-vendor candidates of installed names, obsoleters that would switch an
  installed package's vendor, packages a per-repository allow-list rejects;
* ``blocked``   -- {package: Block} why each of them is hidden;
* ``held``      -- {name: Held}: updates that policy holds back.

``hold_dependents`` then finds, by solving an upgrade of everything with and
without the policy's excludes, the updates that are only possible through a
vendor change (an update needing another vendor's dependency), so that
check-update, list --upgrades and upgrade agree.
"""
import copy
from dataclasses import dataclass, field
from typing import List, Optional

from .policy import Decision, Pkg

UPGRADE, SYNC, OBSOLETE, DEPENDENCY = "upgrade", "sync", "obsolete", "dependency"


@dataclass
class Block:
    pkg: object                  # hawkey package hidden
    installed: object            # hawkey package it would replace (None: repo allow-list)
    decision: Decision


@dataclass
class Held:
    name: str
    installed: object            # hawkey installed package
    candidate: object            # the best update the policy refused
    decision: Decision
    kind: str = UPGRADE          # upgrade | obsolete | dependency
    taken: Optional[object] = None   # the best allowed update, if any
    needs: List[tuple] = field(default_factory=list)   # [(installed, candidate)] (dependency)


@dataclass
class Plan:
    excluded: list = field(default_factory=list)
    blocked: dict = field(default_factory=dict)
    held: dict = field(default_factory=dict)
    checked: int = 0             # candidates that needed a decision

    def block(self, pkg, installed, decision):
        if pkg not in self.blocked:
            self.excluded.append(pkg)
            self.blocked[pkg] = Block(pkg, installed, decision)


def _pkg(p, keyids):
    return Pkg.from_hawkey(p, keyids(p) if keyids else None)


def _newest(pkgs):
    best = pkgs[0]
    for p in pkgs[1:]:
        if p.evr_cmp(best) > 0:
            best = p
    return best


def compute(sack, policy, keyids=None, repo_keys=None, scope="all"):
    """The Plan for this sack.  keyids(p) -> key ID or None for a hawkey package
    (installed ones from the rpmdb); repo_keys: {repoid: set of key IDs} known
    for repositories (their packages count as signed by one of those keys only
    if the vendor's keys are among them).  scope "upgrades": judge only the
    packages that upgrade an installed one (enough for upgrade, check-update,
    list/repoquery --upgrades); "all": every package of an installed name."""
    plan = Plan()
    q = sack.query()
    installed = q.installed()
    inst_by_name = installed._name_dict()
    if not inst_by_name and not policy.repo_allows:
        return plan
    available = q.available()

    def cand_keyid(p):
        if repo_keys is None:
            return None
        ks = repo_keys.get(p.reponame)
        if ks is None:
            return None
        bound = policy.keys_for(p.vendor)
        if not bound:
            return None
        hit = ks & bound
        return sorted(hit)[0] if hit else (sorted(ks)[0] if ks else "")

    def cand_pkg(p):
        return Pkg.from_hawkey(p, cand_keyid(p))

    # per-repository vendor allow-lists: over every available package
    if policy.repo_allows:
        for p in available:
            ra = policy.repo_allows_pkg(Pkg.from_hawkey(p))
            if ra is not None:
                plan.block(p, None, Decision(
                    False, "repository '%s' may only provide vendors %s" % (
                        p.reponame, ", ".join("'%s'" % v for v in ra.vendors.patterns)),
                    ra.where, "repo"))

    trust = policy.has_trust_binding()
    cache = {}
    inst_vendors = {}            # name -> [(hawkey pkg, raw vendor, Pkg or None)]

    def installed_of(name):
        got = inst_vendors.get(name)
        if got is None:
            got = inst_vendors[name] = [
                [i, "" if i.vendor == "<NULL>" else i.vendor, None] for i in inst_by_name[name]]
        return got

    def judge(name, p, specific, vc):
        """(decision or None, installed hawkey pkg) -- None when allowed."""
        insts = installed_of(name)
        if not specific and not trust:
            for entry in insts:
                if entry[1] == vc:
                    return None, entry[0]
        first = None
        cp = None
        for entry in insts:
            if not specific and not trust:     # the two vendors decide: cache first
                key = (entry[1], vc)
                d = cache.get(key)
                if d is not None:
                    if d.allowed:
                        return None, entry[0]
                    if first is None:
                        first = (d, entry[0])
                    continue
            if entry[2] is None:
                entry[2] = _pkg(entry[0], keyids)
            ip = entry[2]
            if cp is None:
                cp = cand_pkg(p)
            key = None if specific else (
                (entry[1], vc) if not trust else (entry[1], vc, ip.keyid, cp.keyid))
            d = cache.get(key) if key else None
            if d is None:
                d = policy.decide(ip, cp)
                plan.checked += 1
                if key:
                    cache[key] = d
            if d.allowed:
                return None, entry[0]
            if first is None:
                first = (d, entry[0])
        return first

    names = list(inst_by_name)
    if scope == "upgrades":
        cands = available.upgrades()     # an upgrade can only pick these
    else:
        cands = available.filter(name=names)
    blocked = plan.blocked
    for name, pkgs in cands._name_dict().items():
        specific = policy.name_specific(name)
        refused = None
        for p in pkgs:
            if p in blocked:
                continue
            d, i = judge(name, p, specific, p.vendor)
            if d is not None:
                plan.block(p, i, d)
                if refused is None:
                    refused = []
                refused.append(p)
        if refused is None:
            continue
        inst = _newest(inst_by_name[name])
        best_refused = _newest(refused)
        if best_refused.evr_cmp(inst) <= 0:
            continue
        allowed = [p for p in pkgs if p not in blocked]
        best_allowed = _newest(allowed) if allowed else None
        if best_allowed is not None and best_allowed.evr_cmp(best_refused) >= 0:
            continue
        taken = best_allowed if best_allowed is not None and best_allowed.evr_cmp(inst) > 0 \
            else None
        plan.held[name] = Held(name, inst, best_refused, blocked[best_refused].decision,
                               UPGRADE, taken)

    # obsoleters that would replace an installed package of another vendor
    for o in available.filter(obsoletes=installed):
        if o in plan.blocked:
            continue
        victims = installed.filter(provides=o.obsoletes)
        for v in victims:
            if v.name == o.name:
                continue
            d = policy.decide(_pkg(v, keyids), cand_pkg(o))
            plan.checked += 1
            if not d.allowed:
                plan.block(o, v, d)
                if v.name not in plan.held:
                    plan.held[v.name] = Held(v.name, v, o, d, OBSOLETE)
                break
    return plan


def _upgrade_all(sack):
    import hawkey
    g = hawkey.Goal(sack)
    g.upgrade_all()
    if not g.run(allow_uninstall=False, force_best=False):
        return None
    return g


def _changes(goal):
    """{installed hawkey pkg: new hawkey pkg} of a solved goal's replacements."""
    out = {}
    for p in goal.list_upgrades() + goal.list_downgrades() + goal.list_reinstalls() + \
            goal.list_installs():
        for old in goal.obsoleted_by_package(p):
            out[old] = p
    return out


def _dependency_holds(sack, plan, a, b, suspects=None):
    """Held entries for packages that the relaxed solution `b` upgrades further
    than the policy's solution `a` does ({old: new} maps).  Their newer
    candidates are excluded.  Returns how many were held."""
    a_by_name = {old.name: new for old, new in a.items()}
    switches = [(old, new) for old, new in b.items() if new in plan.blocked]
    if not switches:
        return 0
    extra = []
    count = 0
    for old, new in b.items():
        if new in plan.blocked or old.name in plan.held:
            continue
        if suspects is not None and old.name not in suspects:
            continue
        got = a_by_name.get(old.name)
        if got is not None and got.evr_cmp(new) >= 0:
            continue
        floor = got if got is not None else old
        q = sack.query().available().filter(name=old.name, arch=new.arch)
        newer = [p for p in q if p.evr_cmp(floor) > 0 and p not in plan.blocked]
        if not newer:
            continue
        needs = _needed_switches(sack, new, switches)
        what = ", ".join("%s %s -> %s" % (o.name, _vl(o.vendor), _vl(n.vendor))
                         for o, n in needs)
        d = Decision(False, "the update needs a vendor change: %s" % what, "", DEPENDENCY)
        for p in newer:
            plan.block(p, old, d)
            extra.append(p)
        plan.held[old.name] = Held(old.name, old, new, d, DEPENDENCY, got, needs)
        count += 1
    if extra:
        sack.add_excludes(extra)
    return count


def hold_dependents(sack, plan, policy, base_excludes, keyids=None):
    """Also hold the updates that only a vendor change makes possible (before
    solving: check-update, list/repoquery --upgrades, `dnf vendor held`).

    Solves "upgrade everything" with the plan's excludes (A) and without them
    (B).  A package B upgrades further than A is held: its newer candidates
    are excluded and it is reported with the vendor changes B needed.
    Returns the number of packages held this way."""
    if not plan.excluded:
        return 0
    with_policy = _upgrade_all(sack)
    sack.set_excludes(base_excludes)
    try:
        without = _upgrade_all(sack)
    finally:
        sack.set_excludes(list(base_excludes) + list(plan.excluded))
    if with_policy is None or without is None:
        return 0
    return _dependency_holds(sack, plan, _changes(with_policy), _changes(without))


def holds_after_solve(goal, sack, plan, base_excludes):
    """Dependency holds found from a solved upgrade goal (after solving: upgrade,
    upgrade-minimal, distro-sync).  Cheap when nothing is suspect: only the
    latest allowed updates that the transaction does not take are looked at,
    and only then is a relaxed copy of the goal solved."""
    if not plan.excluded:
        return 0
    # the latest allowed update of each name, less those the transaction takes:
    # set operations in hawkey, so the usual case costs no Python loop
    latest = sack.query().available().upgrades().latest()
    new = goal.list_upgrades() + goal.list_downgrades() + goal.list_installs()
    rest = latest.difference(sack.query().filter(pkg=new)) if new else latest
    suspects = {p.name for p in rest if p.name not in plan.held}
    if not suspects:
        return 0
    relaxed = relaxed_solve(goal, sack, base_excludes, plan)
    if relaxed is None:
        return 0
    return _dependency_holds(sack, plan, _changes(goal), _changes(relaxed), suspects)


def _needed_switches(sack, pkg, switches):
    """The vendor changes among `switches` whose new package provides something
    `pkg` requires (all of them when the need is indirect)."""
    import hawkey
    reqs = pkg.requires
    if reqs:
        q = sack.query(flags=hawkey.IGNORE_EXCLUDES).filter(pkg=[n for _, n in switches])
        providers = set(q.filter(provides=reqs))
        direct = [(o, n) for o, n in switches if n in providers]
        if direct:
            return direct
    return list(switches)


def _vl(vendor):
    from .match import raw_vendor
    v = raw_vendor(vendor)
    return "'%s'" % v if v else "(no vendor)"


def violations(goal, policy, keyids=None, cand_keyid=None):
    """[(installed, new, Decision)] of a solved goal's refused replacements."""
    out = []
    for old, new in _changes(goal).items():
        ip = Pkg.from_hawkey(old, keyids(old) if keyids else None)
        cp = Pkg.from_hawkey(new, cand_keyid(new) if cand_keyid else None)
        d = policy.decide(ip, cp)
        if not d.allowed:
            out.append((old, new, d))
    return out


def relaxed_solve(goal, sack, base_excludes, plan, allow_erasing=False):
    """Solve a copy of `goal` without the policy's excludes (to explain a
    failure); returns the solved copy or None."""
    g = copy.deepcopy(goal)
    sack.set_excludes(base_excludes)
    try:
        ok = g.run(allow_uninstall=allow_erasing, force_best=False)
    finally:
        sack.set_excludes(list(base_excludes) + list(plan.excluded))
    return g if ok else None

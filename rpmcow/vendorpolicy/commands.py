"""The `vendor` subcommands, written once for both front ends.

``dnf vendor ...`` (the dnf 4 plugin, dnf-plugins/sticky_vendor.py) and
``rpmcow vendor ...`` (dnf5, rpmcow/vendor_dnf5.py) print the same things
and fail the same way; each front end gives these functions what only it can
know (packages from hawkey or from libdnf5, what its solver holds back).
Errors are ``CommandError`` (exit 1; the dnf 4 plugin turns them into
``dnf.exceptions.Error``).

Packages handed in are ``policy.Pkg`` objects (``Pkg.from_hawkey``,
``Pkg.from_libdnf5``): ``str(pkg)`` is the NEVRA as dnf prints it.
"""
import json
import sys

from . import explain as explain_mod
from .errors import CommandError

SUBCOMMANDS = ("status", "list", "held", "explain", "pin", "unpin", "switch", "enable",
               "disable", "check")

def add_arguments(parser, args_help="package names, a vendor (pin)"):
    """The arguments every front end's `vendor` command takes (argparse)."""
    parser.add_argument("subcommand", nargs="?", default="status", choices=SUBCOMMANDS,
                        help="what to do (default: status)")
    parser.add_argument("args", nargs="*", metavar="ARG", help=args_help)
    parser.add_argument("--to", dest="to_vendor", metavar="VENDOR",
                        help="switch: the vendor to move the packages to")
    parser.add_argument("--follow-repo", dest="pin_repo", metavar="REPO",
                        help="pin: follow this repository instead of a vendor")
    parser.add_argument("--json", dest="vendor_json", action="store_true",
                        help="status, held: machine-readable output")


MSG_DISABLED = ("Vendor policy DISABLED (by %s): packages may change vendor as dnf's "
                "allow_vendor_change says (%s).")
MSG_ENABLED = "Vendor policy enforced (by %s): installed packages keep their vendor."
MSG_NOT_INSTALLED = "%s is not installed: fresh installs are not restricted by vendor."
MSG_UNKNOWN = "No package %s installed or available."
MSG_NOTHING_MATCHED = "No package to explain: %s"
MSG_PIN_UNKNOWN = ("Warning: no package %s is installed or available in the enabled "
                   "repositories; the pin applies once one is.")
MSG_PIN_NEEDS_VENDOR = "sticky-vendor: %s is not installed: give the vendor to pin it to"
MSG_PINNED = "Pinned %s to %s."
MSG_UNPINNED = "Unpinned %s."
MSG_NOT_PINNED = "sticky-vendor: %s has no pin made with `%s vendor pin`"
MSG_TOGGLED = "Vendor policy %s (recorded in %s by %s)."
MSG_CHECK_OK = "%d policy file(s) OK."
MSG_CHECK_BAD = "sticky-vendor: %d error(s) in the vendor policy"
MSG_NOTHING_HELD = "Nothing is held back by vendor policy."
MSG_HELD_OFF = "The vendor policy is disabled: nothing is held back."
MSG_NEEDS_ARG = "sticky-vendor: `%s vendor %s` needs %s"
MSG_SWITCH_NONE = "sticky-vendor: no package %s from vendor %s in the enabled repositories"
MSG_SWITCH_SAME = "sticky-vendor: %s is already from vendor %s"
MSG_SWITCH_NOTINST = "sticky-vendor: %s is not installed: fresh installs need no switch"
MSG_SWITCH_TO = "sticky-vendor: switch needs --to VENDOR (or a local package file)"


def needs(prog, sub, what):
    return CommandError(MSG_NEEDS_ARG % (prog, sub, what))


def print_json(doc):
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def status(st, enforce, by, pol, settings, errors, warnings, off_note, as_json, extra=(),
           prog="dnf"):
    """`vendor status`.  off_note: what applies while disabled (dnf's own
    allow_vendor_change); extra: lines only this front end has to say."""
    if as_json:
        print_json({"enforced": bool(enforce), "by": by,
                    "policy_files": list(pol.sources), "rules": pol.summary(),
                    "normalize": bool(settings.normalize),
                    "commandline": settings.commandline,
                    "errors": [str(e) for e in errors],
                    "warnings": [str(w) for w in warnings],
                    "pins": st.pins, "recent": st.audit_entries(last=5)})
        return
    print(MSG_ENABLED % by if enforce else MSG_DISABLED % (by, off_note))
    s = pol.summary()
    print("Policy files read: %d" % s["files"])
    for f in pol.sources:
        print("  %s" % f)
    print("Rules: %(classes)d vendor classes, %(allow)d allowed changes, %(pins)d pins, "
          "%(repos)d repository vendor lists, %(dnf5)d dnf5 policies, %(zypp_groups)d zypper "
          "groups" % s)
    print("Normalise vendor names: %s; command-line packages: %s" % (
        "yes" if settings.normalize else "no", settings.commandline))
    for e in errors:
        print("ERROR %s" % e)
    for w in warnings:
        print("warning: %s" % w)
    if st.pins:
        print("Pins (%s vendor pin):" % prog)
        for pin in st.pins:
            print("  %s -> %s" % (pin["package"], "repository '%s'" % pin["repo"]
                                  if "repo" in pin else explain_mod.vendor(pin["vendor"])))
    for line in extra:
        print(line)
    recent = st.audit_entries(last=5)
    if recent:
        print("Recent changes (%s):" % st.audit_path)
        for e in recent:
            print("  " + explain_mod.audit_line(e))


def list_vendors(installed):
    """`vendor list`: installed Pkgs grouped by vendor, largest group first."""
    groups = {}
    for pkg in installed:
        groups.setdefault(pkg.vendor, []).append(pkg)
    for v in sorted(groups, key=lambda x: (-len(groups[x]), x)):
        pkgs = sorted(groups[v], key=lambda x: x.name)
        print("%s (%d)" % (explain_mod.vendor(v), len(pkgs)))
        for pkg in pkgs:
            print("  %s" % pkg)


def held(active, held_map, as_json, prog="dnf"):
    """`vendor held`: {name: sack.Held}."""
    if as_json:
        print_json({"enforced": bool(active), "held": [
            {"name": name, "kind": h.kind,
             "installed": str(h.installed), "installed_vendor": h.installed.vendor,
             "candidate": str(h.candidate), "candidate_vendor": h.candidate.vendor,
             "taken": str(h.taken) if getattr(h, "taken", None) is not None else None,
             "rule": str(h.decision)}
            for name, h in sorted(held_map.items())]})
        return
    if not active:
        print(MSG_HELD_OFF)
        return
    lines = explain_mod.held_report(held_map, prog=prog)
    print("\n".join(lines) if lines else MSG_NOTHING_HELD)


def explain(names, pkgs, pol, enforce, by, off_note, root, prog="dnf"):
    """`vendor explain NAME...`.

    pkgs(name) -> (installed, candidates_of, known): installed Pkgs of that
    name; candidates_of(ip) -> [(Pkg, Decision, allowed, note)] (note: a
    line the front end adds, or None); known: any package of that name
    available."""
    if not names:
        raise needs(prog, "explain", "PACKAGE")
    if not enforce:
        print(MSG_DISABLED % (by, off_note))
    unknown = []
    for name in names:
        installed, candidates_of, known = pkgs(name)
        if not installed:
            if known:
                print(MSG_NOT_INSTALLED % name)
            else:
                print(MSG_UNKNOWN % name)
                unknown.append(name)
            continue
        for ip in installed:
            classes = [pol.classes[c].name for c in sorted(pol.classes_of(ip.vendor))]
            print("%s: installed from vendor %s%s" % (ip, explain_mod.vendor(ip.vendor),
                                                      " [vendor %s]" % ", ".join(classes)
                                                      if classes else ""))
            pin = pol.pin_for(ip.name)
            if pin is not None:
                print("  pinned: %s (%s)" % ("repository '%s'" % pin.repo if pin.repo
                                             else explain_mod.vendor(pin.vendor), pin.where))
            cands = candidates_of(ip)
            if not cands:
                print("  no package of this name in the enabled repositories")
            for c, d, allowed, note in cands:
                verb = "allowed" if allowed and enforce else \
                    ("refused" if not allowed else "allowed (policy disabled)")
                if not enforce and not allowed:
                    verb = "would be refused (policy disabled)"
                print("  %-8s %s  vendor %s  repo %s" % (verb, c, explain_mod.vendor(c.vendor),
                                                        c.repoid))
                print("           rule: %s" % d)
                if note:
                    print("           %s" % note)
                if not allowed:
                    print("           allow: %s" % explain_mod.allow_command(
                        name, c.vendor, root, prog))
    if unknown and len(unknown) == len(names):
        raise CommandError(MSG_NOTHING_MATCHED % ", ".join(unknown))


def pin(st, args, repo, known, installed_vendor, warn, prog="dnf"):
    """`vendor pin PACKAGE [VENDOR]` / `--follow-repo REPO`.  known: is the
    package installed or available; installed_vendor(name) -> vendor or None."""
    if not args:
        raise needs(prog, "pin", "PACKAGE [VENDOR] or PACKAGE --repo REPO")
    package = args[0]
    if not known:
        warn(MSG_PIN_UNKNOWN % package)
    if repo:
        st.pin(package, repo=repo)
        print(MSG_PINNED % (package, "repository '%s'" % repo))
        return
    if len(args) > 1:
        vendor = " ".join(args[1:])
    else:
        vendor = installed_vendor(package)
        if vendor is None:
            raise CommandError(MSG_PIN_NEEDS_VENDOR % package)
    st.pin(package, vendor=vendor)
    print(MSG_PINNED % (package, "vendor %s" % explain_mod.vendor(vendor)))


def unpin(st, args, prog="dnf"):
    if not args:
        raise needs(prog, "unpin", "PACKAGE")
    for package in args:
        if not st.unpin(package):
            raise CommandError(MSG_NOT_PINNED % (package, prog))
        print(MSG_UNPINNED % package)


def toggle(st, value):
    entry = st.set_enforce(value)
    print(MSG_TOGGLED % ("enforced" if value else "disabled", st.path, entry["who"]))


def check(pol, errors, warnings, extra=()):
    """`vendor check`: every error at once; extra: lines of this front end
    (dnf5: what it does not enforce)."""
    for w in warnings:
        print("warning: %s" % w)
    for e in errors:
        print("%s" % e)
    if errors:
        raise CommandError(MSG_CHECK_BAD % len(errors))
    print(MSG_CHECK_OK % len(pol.sources))
    for f in pol.sources:
        print("  %s" % f)
    for line in extra:
        print(line)


def switch_target(pol, name, installed, cands, vendor, evr_cmp):
    """The package `vendor switch` moves `name` to: (installed, best, cmp)
    with cmp > 0 upgrade, < 0 downgrade, 0 reinstall.  installed / cands:
    [(Pkg, handle)] of the front end; evr_cmp(a, b) compares two handles."""
    import functools
    if not installed:
        raise CommandError(MSG_SWITCH_NOTINST % name)
    key = functools.cmp_to_key(lambda a, b: evr_cmp(a[1], b[1]))
    ip, ih = max(installed, key=key)
    if pol.in_vendor(ip.vendor, vendor):
        raise CommandError(MSG_SWITCH_SAME % (name, explain_mod.vendor(vendor)))
    mine = [c for c in cands if pol.in_vendor(c[0].vendor, vendor)]
    if not mine:
        raise CommandError(MSG_SWITCH_NONE % (name, explain_mod.vendor(vendor)))
    best = max(mine, key=key)
    return ih, best[1], evr_cmp(best[1], ih)

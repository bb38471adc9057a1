"""Every explanation sticky-vendor prints, written once.

The plugin and ``dnf vendor`` format held-back reports, refusals and
``explain`` output here; each names the package, both vendors, the rule
(and the file and line it comes from) and the command that allows the change.
"""
import shlex

from .match import raw_vendor

HELD_HEADER = "Held back by vendor policy (%d):"
HELD_LINE = "  %-*s %s -> %s  %s -> %s%s"
HELD_TAKEN = "  (taking %s instead)"
HELD_OBSOLETE = "  %-*s %s would be replaced by %s  %s -> %s"
HELD_DEPENDENCY = "  %-*s %s -> %s  needs %s"
HELD_UNTRUSTED = "  (not signed by the vendor's key)"
HELD_MORE = "  ... and %d more (all of them: %s vendor held)"
HELD_FOOTER = ("  Why: %(p)s vendor explain NAME.  Allow a change: %(p)s vendor switch NAME "
               "--to VENDOR.")
CHECK_HELD_NOTE = ("sticky-vendor: %d update(s) held back by vendor policy are not listed "
                   "(dnf vendor held)")

REFUSAL = ("sticky-vendor: %(new)s from vendor %(newv)s would replace the installed "
           "%(old)s from vendor %(oldv)s.\n"
           "  Rule: %(rule)s\n"
           "  To allow this change: %(cmd)s")
REFUSAL_CMDLINE_HINT = "  Or set commandline = allow in sticky-vendor.conf for local packages."
NOT_OFFERED = ("sticky-vendor: %(spec)s: every match is held back by vendor policy:\n%(lines)s")
NOT_OFFERED_LINE = ("  %(new)s (vendor %(newv)s) would replace %(old)s (vendor %(oldv)s)\n"
                    "    Rule: %(rule)s\n"
                    "    To allow it: %(cmd)s")
DEPSOLVE = ("sticky-vendor: the request needs vendor changes that the policy refuses:\n"
            "%(lines)s")
UNTRUSTED = ("sticky-vendor: %(pkg)s claims vendor %(v)s but %(signer)s, not by one of that "
             "vendor's keys (%(keys)s, %(where)s); refusing the transaction.")


def vendor(v):
    v = raw_vendor(v)
    return "'%s'" % v if v else "(no vendor)"


def nevra(p):
    return str(p)


def allow_command(name, new_vendor, installroot="/", prog="dnf"):
    """The exact command that performs this change as an intended switch
    (prog: "dnf" for dnf 4's `dnf vendor`, "rpmcow" for `rpmcow vendor` on dnf5)."""
    prefix, suffix = prog, ""
    if installroot and installroot != "/":
        if prog == "dnf":
            prefix += " --installroot=%s" % shlex.quote(installroot)
        else:                       # rpmcow's options follow the command
            suffix = " --installroot=%s" % shlex.quote(installroot)
    return "%s vendor switch %s --to %s%s" % (prefix, shlex.quote(name),
                                             shlex.quote(raw_vendor(new_vendor)), suffix)


def evr(p):
    return "%s-%s" % (p.version, p.release) if not p.epoch else \
        "%s:%s-%s" % (p.epoch, p.version, p.release)


def held_report(held, limit=None, prog="dnf"):
    """Lines for a {name: Held} mapping (sorted by name), at most `limit` entries."""
    if not held:
        return []
    names = sorted(held)
    shown = names if limit is None or len(names) <= limit else names[:limit]
    width = max(len(n) for n in shown)
    lines = [HELD_HEADER % len(held)]
    for name in shown:
        h = held[name]
        if h.kind == "obsolete":
            lines.append(HELD_OBSOLETE % (width, name, evr(h.installed), nevra(h.candidate),
                                          vendor(h.installed.vendor), vendor(h.candidate.vendor)))
        elif h.kind == "dependency":
            lines.append(HELD_DEPENDENCY % (width, name, evr(h.installed), evr(h.candidate),
                                            ", ".join("%s %s -> %s" % (o.name, vendor(o.vendor),
                                                                       vendor(n.vendor))
                                                      for o, n in h.needs)))
        else:
            taken = HELD_TAKEN % evr(h.taken) if h.taken is not None else ""
            if h.decision.kind == "untrusted":
                taken += HELD_UNTRUSTED
            lines.append(HELD_LINE % (width, name, evr(h.installed), evr(h.candidate),
                                      vendor(h.installed.vendor), vendor(h.candidate.vendor),
                                      taken))
    if len(shown) < len(names):
        lines.append(HELD_MORE % (len(names) - len(shown), prog))
    lines.append(HELD_FOOTER % {"p": prog})
    return lines


def refusal(old, new, decision, installroot="/", target=None, cmdline=False, prog="dnf"):
    """A refused replacement.  target: what `dnf vendor switch` takes (the
    package name, or the path of a command-line package)."""
    text = REFUSAL % {"new": nevra(new), "newv": vendor(new.vendor), "old": nevra(old),
                      "oldv": vendor(old.vendor), "rule": str(decision),
                      "cmd": allow_command(target or old.name, new.vendor, installroot, prog)}
    if cmdline:
        text += "\n" + REFUSAL_CMDLINE_HINT
    return text


def not_offered(spec, blocks, installroot="/"):
    lines = []
    for b in blocks:
        name = b.installed.name if b.installed is not None else b.pkg.name
        lines.append(NOT_OFFERED_LINE % {
            "new": nevra(b.pkg), "newv": vendor(b.pkg.vendor),
            "old": nevra(b.installed) if b.installed is not None else "(nothing)",
            "oldv": vendor(b.installed.vendor) if b.installed is not None else "-",
            "rule": str(b.decision),
            "cmd": allow_command(name, b.pkg.vendor, installroot)
            if b.decision.kind != "repo" else "edit %s" % b.decision.where})
    return NOT_OFFERED % {"spec": spec, "lines": "\n".join(lines)}


def depsolve(violations, installroot="/"):
    lines = []
    for old, new, d in violations:
        lines.append(NOT_OFFERED_LINE % {
            "new": nevra(new), "newv": vendor(new.vendor), "old": nevra(old),
            "oldv": vendor(old.vendor), "rule": str(d),
            "cmd": allow_command(old.name, new.vendor, installroot)})
    return DEPSOLVE % {"lines": "\n".join(lines)}


def _where(entry):
    return "repository '%s'" % entry["repo"] if entry.get("repo") is not None \
        else "vendor %s" % vendor(entry.get("vendor"))


def audit_line(entry):
    """One audit log entry as a person reads it: when, who, what -- and the
    dnf history ID of the transaction where there is one."""
    action = entry.get("action", "?")
    when = str(entry.get("when", "?")).replace("T", " ").replace("Z", " UTC")
    if action == "pin":
        what = "pinned %s to %s%s" % (entry.get("package"), _where(entry),
                                      " (replacing an earlier pin)" if entry.get("replaced")
                                      else "")
    elif action == "unpin":
        was = entry.get("was") or {}
        what = "unpinned %s (was %s)" % (entry.get("package"), _where(was))
    elif action in ("enable", "disable"):
        prev = entry.get("previous")
        what = "%s the policy%s" % ("enforced" if action == "enable" else "disabled",
                                    "" if prev is None else " (was %s)" %
                                    ("enforced" if prev else "disabled"))
    elif action == "switch":
        what = "switched " + ", ".join(
            "%s from %s to %s" % (c.get("package"), vendor(c.get("from_vendor")),
                                  vendor(c.get("to_vendor")))
            for c in entry.get("changes") or ())
    else:
        what = action
    tid = entry.get("transaction")
    return "%s  %-8s  %s%s" % (when, entry.get("who", "?"), what,
                               " (dnf history %s)" % tid if tid is not None else "")

"""``rpmcow vendor ...``: the sticky-vendor commands on dnf5, through python3-libdnf5.

dnf5 runs no Python plugins, so on dnf5 the policy is enforced by dnf5
itself from files we generate (rpmcow.vendorpolicy.dnf5); this module is the
front end: it reads packages and repositories with libdnf5 exactly as dnf5
would (same configuration, install root, repositories), and hands them to
rpmcow.vendorpolicy.commands, which prints what ``dnf vendor`` prints on
dnf 4.  ``held`` and ``explain`` say what dnf5 does: ``held`` solves
"upgrade everything" as ``dnf5 upgrade`` does and again with vendor changes
allowed (libdnf5's own way of finding what it skipped), ``explain`` judges
each replacement as libdnf5's vendor change manager does.
"""
import argparse
import configparser
import os
import sys

from .vendorpolicy import commands, config, dnf5 as gen, explain as explain_mod, formats
from .vendorpolicy import state as state_mod
from .vendorpolicy.errors import CommandError, PolicyError, PolicyFileError, VendorUsageError
from .vendorpolicy.policy import Decision, Pkg
from .vendorpolicy.sack import DEPENDENCY, OBSOLETE, UPGRADE, Held

PROG = "rpmcow"
DEFAULT_CONF = "/etc/dnf/plugins/sticky-vendor.conf"      # the dnf 4 plugin's, shared
MSG_POLICY = "sticky-vendor: invalid vendor policy: %s"
MSG_NO_LIBDNF5 = ("`rpmcow vendor` needs dnf5's Python bindings (python3-libdnf5): %s; "
                  "on dnf 4 use `dnf vendor`")
MSG_NOT_ENFORCED = ("dnf5 does not enforce the vendor policy: allow_vendor_change = 1 in its "
                    "configuration (%s)")
MSG_GENERATED = "dnf5 rule files: %s (%s)"
MSG_REGENERATED = "dnf5: wrote %d rule file(s) %s/%s*.conf and %s"
MSG_REMOVED = "dnf5: removed %s"
ACTIONS_IN = ("Install", "Upgrade", "Downgrade", "Reinstall")
# Where dnf5 (5.4) refuses a vendor change but does not hold the package back
# as the dnf 4 plugin does: the command fails instead (tests/test_sticky_vendor_dnf5.py).
MSG_LIMITS = "dnf5 refuses the vendor change but does not hold back (the command fails):"
MSG_LIMIT_DISTRO_SYNC = (
    "dnf5 distro-sync: an installed package whose only sync target is another vendor's "
    "build makes the whole distro-sync fail (\"problem with installed package\"), also with "
    "--no-best or --skip-broken; use `dnf5 upgrade`, or allow the change (`%s vendor "
    "switch`, an [allow] rule)" % PROG)
# dnf5 check-upgrade lists the newest builds whatever their vendor: the updates
# the policy holds back too (tests/test_sticky_vendor_dnf5.py)
MSG_LIMIT_CHECK_UPGRADE = (
    "dnf5 check-upgrade lists other vendors' updates that `dnf5 upgrade` then skips: "
    "`%s vendor held` names each of them and why" % PROG)
MSG_LIMIT_BEST = (
    "dnf5 upgrade, downgrade, distro-sync with best = True (here: best = %s): the command "
    "fails (\"cannot install the best candidate\") when the best candidate, or a dependency "
    "of it, is another vendor's; with --no-best dnf5 keeps the vendor and skips it")


def arguments(p):
    commands.add_arguments(p)
    p.add_argument("--installroot", default="/", metavar="DIR",
                   help="the system to work on (default /)")
    p.add_argument("-c", "--config", metavar="FILE", help="dnf5's configuration file")
    p.add_argument("--setopt", action="append", default=[], metavar="KEY=VALUE",
                   help="a dnf5 main option, as dnf5 --setopt (repeatable)")
    p.add_argument("--releasever", metavar="VERSION", help="as dnf5 --releasever")
    p.add_argument("--repo", action="append", default=[], metavar="ID",
                   help="only these repositories (repeatable)")
    p.add_argument("--vendor-conf", default=DEFAULT_CONF, metavar="FILE",
                   help="sticky-vendor.conf (default %s)" % DEFAULT_CONF)
    p.add_argument("-y", "--assumeyes", action="store_true",
                   help="switch: do not ask for confirmation")


def _libdnf5():
    try:
        import libdnf5
    except ImportError as exc:
        raise PolicyError(MSG_NO_LIBDNF5 % exc) from None
    return libdnf5


def read_settings(path):
    """sticky-vendor.conf's [main] (a missing file: the defaults)."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f)
    except FileNotFoundError:
        return config.Settings()
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise PolicyError("%s: %s" % (path, str(exc).splitlines()[0])) from None
    return config.Settings.from_mapping(dict(cp["main"]) if cp.has_section("main") else {})


def _nevra_glob(vendor):
    """A literal vendor as a libdnf5 GLOB pattern."""
    return "".join("[%s]" % c if c in "*?[]" else c for c in vendor)


class Dnf5:
    """One libdnf5 Base set up as dnf5 would be for these options."""

    def __init__(self, args, repos=True):
        self.args = args
        self.root = os.path.abspath(args.installroot)
        self.settings = read_settings(args.vendor_conf)
        self.lib = _libdnf5()
        self._base = None
        self.repos = repos

    @property
    def base(self):
        if self._base is None:
            self._base = self._setup()
        return self._base

    def _setup(self):
        libdnf5, a = self.lib, self.args
        base = libdnf5.base.Base()
        cfg = base.get_config()
        if a.config:
            cfg.get_config_file_path_option().set(a.config)
        cfg.get_installroot_option().set(self.root)
        base.load_config()
        prio = libdnf5.conf.Option.Priority_COMMANDLINE
        for item in a.setopt:
            key, sep, value = item.partition("=")
            if not sep or "." in key:
                raise VendorUsageError("--setopt %r: use KEY=VALUE (main options only)" % item)
            try:
                cfg.opt_binds().at(key.strip()).new_string(prio, value)
            except Exception as exc:      # noqa: BLE001 - libdnf5's own message
                raise VendorUsageError("--setopt %s: %s" % (item, exc)) from None
        if a.releasever:
            base.get_vars().set("releasever", a.releasever)
        base.setup()
        if self.repos:
            rs = base.get_repo_sack()
            rs.create_repos_from_system_configuration()
            if a.repo:
                q = libdnf5.repo.RepoQuery(base)
                for repo in q:
                    if repo.get_id() in a.repo:
                        repo.enable()
                    else:
                        repo.disable()
            rs.load_repos()
        return base

    # -- what dnf5 enforces --
    def allow_vendor_change(self):
        return bool(self.base.get_config().get_allow_vendor_change_option().get_value())

    def dnf5_view(self, errors=None):
        return gen.Dnf5View(self.settings.dnf5_dir_list(self.root), errors)

    # -- policy and state --
    def state(self):
        return state_mod.State(self.settings.state_path(self.root))

    def enforcing(self, st=None):
        st = st or self.state()
        if st.enforce is not None:
            return st.enforce, "%s vendor %s, %s" % (PROG, "enable" if st.enforce else "disable",
                                                     st.path)
        return self.settings.enforce, "enforce = %s in sticky-vendor.conf" % (
            "yes" if self.settings.enforce else "no")

    def load_policy(self, st=None, errors=None, warnings=None):
        st = st or self.state()
        s = self.settings
        try:
            return formats.load(s.our_dirs(self.root), s.dnf5_dir_list(self.root),
                                s.zypp_dir_list(self.root), s.normalize, s.commandline,
                                pins=st.pin_objects(), errors=errors, warnings=warnings)
        except PolicyFileError as exc:
            raise PolicyError(MSG_POLICY % exc) from None

    def off_note(self):
        return "allow_vendor_change = %s" % self.allow_vendor_change()

    # -- packages --
    def query(self):
        return self.lib.rpm.PackageQuery(self.base)

    def installed(self, name=None):
        q = self.query()
        q.filter_installed()
        if name is not None:
            q.filter_name([name])
        return list(q)

    def available(self, name=None):
        q = self.query()
        q.filter_available()
        if name is not None:
            q.filter_name([name])
        return list(q)

    @staticmethod
    def evr_cmp(a, b):
        import rpm
        return rpm.labelCompare((a.get_epoch() or "0", a.get_version(), a.get_release()),
                                (b.get_epoch() or "0", b.get_version(), b.get_release()))

    def solve_upgrade_all(self, allow_vendor_change=None):
        cfg = self.base.get_config()
        opt = cfg.get_allow_vendor_change_option()
        old = opt.get_value()
        if allow_vendor_change is not None:
            opt.set(self.lib.conf.Option.Priority_RUNTIME, allow_vendor_change)
        try:
            g = self.lib.base.Goal(self.base)
            g.add_rpm_upgrade()
            return g.resolve()
        finally:
            opt.set(self.lib.conf.Option.Priority_RUNTIME, old)

    def changes(self, transaction):
        """[(incoming libdnf5 package, [replaced installed packages])]."""
        tr = self.lib.base.transaction.transaction_item_action_to_string
        out = []
        for tp in transaction.get_transaction_packages():
            if tr(tp.get_action()) in ACTIONS_IN:
                out.append((tp.get_package(), list(tp.get_replaces())))
        return out


# ---- held: what `dnf5 upgrade` skips ----------------------------------------------

def held_back(d, pol, view):
    """{name: Held}: what `dnf5 upgrade` leaves because of vendor, found as
    libdnf5 finds it: solve with vendor changes allowed; what that takes and
    dnf5's own solve does not is held back -- a refused vendor change, or an
    update needing one (kind "dependency")."""
    strict = d.changes(d.solve_upgrade_all())
    relaxed = d.changes(d.solve_upgrade_all(allow_vendor_change=True))
    taken = {p.get_nevra() for p, _ in strict}
    taken_by_name = {p.get_name(): p for p, _ in strict}
    held, rest, switches = {}, [], []
    for new, olds in relaxed:
        if new.get_nevra() in taken:
            continue
        cp = Pkg.from_libdnf5(new)
        refused = False
        for old in olds:
            ip = Pkg.from_libdnf5(old)
            ok, _ = view.allows(ip, cp)
            if ok:
                continue
            refused = True
            switches.append((ip, cp))
            kind = UPGRADE if ip.name == cp.name else OBSOLETE
            t = taken_by_name.get(ip.name) if kind == UPGRADE else None
            held.setdefault(ip.name, Held(ip.name, ip, cp, _dnf5_decision(pol, ip, cp), kind,
                                          Pkg.from_libdnf5(t) if t is not None else None))
        if not refused:
            rest.append((new, olds))
    for new, olds in rest:
        for old in olds:
            if old.get_name() in held:
                continue
            ip, cp = Pkg.from_libdnf5(old), Pkg.from_libdnf5(new)
            t = taken_by_name.get(ip.name)
            needs = _needed(d, new, switches)
            what = ", ".join("%s %s -> %s" % (o.name, explain_mod.vendor(o.vendor),
                                              explain_mod.vendor(n.vendor)) for o, n in needs)
            held[ip.name] = Held(ip.name, ip, cp, Decision(
                False, "the update needs a vendor change: %s" % what, "", DEPENDENCY),
                DEPENDENCY, Pkg.from_libdnf5(t) if t is not None else None, needs)
    return held


def _needed(d, pkg, switches):
    """The refused vendor changes whose new package provides something `pkg`
    requires (all of them when the need is indirect)."""
    q = d.query()
    q.filter_provides(pkg.get_requires())
    providers = {p.get_nevra() for p in q}
    direct = [(o, n) for o, n in switches if str(n) in providers]
    return direct or list(switches)


def _dnf5_decision(pol, ip, cp):
    """Why dnf5 refuses: our rule, or -- when our policy would allow it -- that
    dnf5 cannot express that rule."""
    d = pol.decide(ip, cp)
    if not d.allowed:
        return d
    return Decision(False, "dnf5's vendor policy does not allow it; ours would (%s), but that "
                    "rule is not enforced on dnf5 (rpmcow vendor check)" % d, "", "dnf5")


# ---- the subcommands ---------------------------------------------------------------

def _dnf5_lines(d, pol, enforce):
    """What only the dnf5 front end has to say: is the policy in force in dnf5,
    are the generated files there and current, what dnf5 does not enforce."""
    lines = []
    files = [p for p in gen.owned_files(d.root)
             if os.path.dirname(p) == gen.vendors_dir(d.root)]
    digest = gen.read_digest(d.root)
    if enforce:
        want = gen.inputs_digest(pol, d.settings, True)
        if digest is None:
            lines.append(MSG_GENERATED % ("missing", "run `%s vendor enable`" % PROG))
        elif digest != want:
            lines.append(MSG_GENERATED % (gen.main_file(d.root),
                                          "STALE: the policy changed; run `%s vendor enable`"
                                          % PROG))
        else:
            lines.append(MSG_GENERATED % (gen.main_file(d.root), "up to date, %d file(s)"
                                          % len(files)))
    _, notes = gen.generate(pol, d.settings)
    if notes:
        lines.append("Not enforced on dnf5:")
        lines += ["  %s" % n for n in notes]
    lines.append(MSG_LIMITS)
    lines.append("  " + MSG_LIMIT_DISTRO_SYNC)
    lines.append("  " + MSG_LIMIT_BEST % bool(d.base.get_config().get_best_option().get_value()))
    lines.append("dnf5 does not apply the policy everywhere:")
    lines.append("  " + MSG_LIMIT_CHECK_UPGRADE)
    return lines


def regenerate(d, st=None):
    """Write dnf5's files from the policy (strict: an invalid policy raises
    before anything is written -- the last good files stay)."""
    st = st or d.state()
    pol = d.load_policy(st)
    rules, notes = gen.generate(pol, d.settings)
    who = "%s vendor" % PROG
    files = gen.render(rules, notes, pol, gen.inputs_digest(pol, d.settings, True), who)
    gen.write(d.root, files, who)
    return files


def run(args):
    sub = args.subcommand
    needs_repos = sub in ("list", "held", "explain", "pin", "switch")
    d = Dnf5(args, repos=needs_repos)
    st = d.state()
    if sub == "status":
        enforce, by = d.enforcing(st)
        errors, warnings = [], []
        pol = d.load_policy(st, errors, warnings)
        extra = ["dnf5: allow_vendor_change = %s" % d.allow_vendor_change()]
        extra += _dnf5_lines(d, pol, enforce) if not errors else []
        commands.status(st, enforce, by, pol, d.settings, errors, warnings, d.off_note(),
                        args.vendor_json, extra, prog=PROG)
    elif sub == "list":
        commands.list_vendors(Pkg.from_libdnf5(p) for p in d.installed())
    elif sub == "held":
        enforce, _ = d.enforcing(st)
        active = not d.allow_vendor_change()
        if enforce and not active:
            print(MSG_NOT_ENFORCED % "rpmcow vendor status", file=sys.stderr)
        held = held_back(d, d.load_policy(st), d.dnf5_view()) if active else {}
        commands.held(active, held, args.vendor_json, prog=PROG)
    elif sub == "explain":
        _explain(d, st, args)
    elif sub == "pin":
        _pin(d, st, args)
    elif sub == "unpin":
        d.load_policy(st)                 # refuse early on an invalid policy
        commands.unpin(st, args.args, prog=PROG)
        if d.enforcing(st)[0]:
            regenerate(d, st)
    elif sub in ("enable", "disable"):
        _toggle(d, st, sub == "enable")
    elif sub == "check":
        errors, warnings = [], []
        pol = d.load_policy(st, errors, warnings)
        d.dnf5_view(errors)               # the generated files too: dnf5 reads them
        enforce, _ = d.enforcing(st)
        commands.check(pol, errors, warnings, _dnf5_lines(d, pol, enforce) if not errors
                       else ())
    elif sub == "switch":
        _switch(d, st, args)
    return 0


def _explain(d, st, args):
    if not args.args:
        raise commands.needs(PROG, "explain", "PACKAGE")
    pol = d.load_policy(st)
    enforce, by = d.enforcing(st)
    on_dnf5 = enforce and not d.allow_vendor_change()
    view = d.dnf5_view()

    def pkgs(name):
        inst = d.installed(name)
        known = bool(d.available(name))

        def candidates_of(ip):
            cands = d.available(name)
            q = d.query()
            q.filter_available()
            iq = d.query()
            iq.filter_installed()
            iq.filter_name([name])
            q.filter_obsoletes(iq)
            cands += [o for o in q if o.get_name() != name]
            out = []
            for c in sorted(cands, key=lambda c: (c.get_name(), c.get_evr(), c.get_repo_id()),
                            reverse=True):
                cp = Pkg.from_libdnf5(c)
                ours = pol.decide(ip, cp)
                ok, source = view.allows(ip, cp)
                note = None
                if on_dnf5 and ok != ours.allowed:
                    note = ("on dnf5: allowed by %s (this rule of ours is not enforced on dnf5)"
                            % (source or "the same vendor name") if ok else
                            "on dnf5: refused (dnf5 cannot express this rule: rpmcow vendor "
                            "check)")
                out.append((cp, ours, ok if on_dnf5 else ours.allowed, note))
            return out
        return [Pkg.from_libdnf5(i) for i in inst], candidates_of, known
    commands.explain(args.args, pkgs, pol, enforce, by, d.off_note(), d.root, prog=PROG)


def _pin(d, st, args):
    d.load_policy(st)                     # refuse early on an invalid policy
    package = args.args[0] if args.args else None

    def installed_vendor(name):
        inst = d.installed(name)
        return Pkg.from_libdnf5(inst[0]).vendor if inst else None
    known = bool(d.installed(package) or d.available(package)) if package else True
    commands.pin(st, args.args, args.pin_repo, known, installed_vendor,
                 lambda msg: print(msg, file=sys.stderr), prog=PROG)
    if d.enforcing(st)[0]:
        regenerate(d, st)


def _toggle(d, st, value):
    if value:
        pol = d.load_policy(st)           # invalid: nothing changes, the last good files stay
        gen.generate(pol, d.settings)
    commands.toggle(st, value)
    if value:
        files = regenerate(d, st)
        print(MSG_REGENERATED % (len(files), gen.vendors_dir(d.root), gen.STEM,
                                 gen.conf_file(d.root)))
    else:
        for p in gen.remove(d.root):
            print(MSG_REMOVED % p)


def _switch(d, st, args):
    if not args.args:
        raise commands.needs(PROG, "switch", "PACKAGE... --to VENDOR")
    if args.to_vendor is None:
        raise CommandError(commands.MSG_SWITCH_TO)
    if any(a.endswith(".rpm") for a in args.args):
        raise VendorUsageError("`%s vendor switch` takes package names; for a local package "
                               "file use `dnf5 install --from-vendor=VENDOR FILE`" % PROG)
    lib = d.lib
    pol = d.load_policy(st)
    for n in args.args:
        pol.add_switch(n, args.to_vendor)
    goal = lib.base.Goal(d.base)
    for name in args.args:
        def pairs(pkgs):
            return [(Pkg.from_libdnf5(x), x) for x in pkgs]
        _, best, c = commands.switch_target(pol, name, pairs(d.installed(name)),
                                            pairs(d.available(name)), args.to_vendor,
                                            lambda a, b: d.evr_cmp(a, b))
        settings = lib.base.GoalJobSettings()
        settings.set_to_vendors([_nevra_glob(best.get_vendor())])
        nevra = best.get_nevra()
        if c > 0:
            goal.add_upgrade(nevra, settings)
        elif c < 0:
            goal.add_downgrade(nevra, settings)
        else:
            goal.add_reinstall(nevra, settings)
    t = goal.resolve()
    if t.get_problems() != lib.base.GoalProblem_NO_PROBLEM:
        raise CommandError("sticky-vendor: cannot switch: %s" % "; ".join(
            " ".join(x.split()) for x in t.get_resolve_logs_as_strings()))
    changes = []
    refused = []
    for new, olds in d.changes(t):
        cp = Pkg.from_libdnf5(new)
        for old in olds:
            ip = Pkg.from_libdnf5(old)
            dec = pol.decide(ip, cp)
            if not dec.allowed:
                refused.append(explain_mod.refusal(ip, cp, dec, d.root, prog=PROG))
            if ip.vendor != cp.vendor:
                changes.append({"package": ip.name, "from": str(ip), "to": str(cp),
                                "from_vendor": ip.vendor, "to_vendor": cp.vendor})
    if refused:
        raise CommandError("\n".join(refused))
    for ch in changes:
        print("Switching %s -> %s  %s -> %s" % (ch["from"], ch["to"],
                                                explain_mod.vendor(ch["from_vendor"]),
                                                explain_mod.vendor(ch["to_vendor"])))
    if not args.assumeyes:
        if not sys.stdin.isatty():
            raise CommandError("sticky-vendor: not confirmed (use -y)")
        if input("Is this ok [y/N]: ").strip().lower() not in ("y", "yes"):
            raise CommandError("Operation aborted.")
    t.download()
    t.set_description("%s vendor switch %s --to %s" % (PROG, " ".join(args.args),
                                                       args.to_vendor))
    rc = t.run()
    if rc != lib.base.Transaction.TransactionRunResult_SUCCESS:
        raise CommandError("sticky-vendor: the transaction failed: %s %s" % (
            lib.base.Transaction.transaction_result_to_string(rc),
            "; ".join(t.get_transaction_problems())))
    entry = st.record_switch(changes, None)
    print("sticky-vendor: recorded vendor switch: %s" % ", ".join(
        "%s %s -> %s" % (c["package"], explain_mod.vendor(c["from_vendor"]),
                         explain_mod.vendor(c["to_vendor"])) for c in entry["changes"]))


def build_parser():
    p = argparse.ArgumentParser(prog="%s vendor" % PROG)
    arguments(p)
    return p


# ---- refresh: the libdnf5 sticky-vendor plugin's one step -------------------------

MSG_REFRESHED = "sticky-vendor: the vendor policy changed: dnf5's rules regenerated (%s)"
MSG_KEPT = "sticky-vendor: invalid vendor policy: %s; dnf5 keeps the last good rules"


def refresh(argv=None):
    """Run by the libdnf5 sticky-vendor plugin before dnf5 reads vendors.d,
    when a policy file is newer than our rules (dnf-plugins/libdnf5/
    sticky_vendor.cpp): regenerate them where the policy is enforced and
    they are stale.  An invalid policy leaves the last good rules in force
    (one line says why), as the dnf 4 plugin does.  Never fails dnf5: 0."""
    p = argparse.ArgumentParser(prog="python3 -I -m rpmcow.vendor_dnf5 refresh")
    p.add_argument("--installroot", default="/")
    p.add_argument("--vendor-conf", default=DEFAULT_CONF)
    a = p.parse_args(argv)
    args = argparse.Namespace(installroot=a.installroot, vendor_conf=a.vendor_conf,
                              config=None, setopt=[], releasever=None, repo=[])
    try:
        d = Dnf5(args, repos=False)
        st = d.state()
        if not d.enforcing(st)[0] or gen.read_digest(d.root) is None:
            return 0                   # not enforced, or turned off: nothing of ours to keep
        pol = d.load_policy(st)
        if gen.read_digest(d.root) == gen.inputs_digest(pol, d.settings, True):
            return 0
        regenerate(d, st)
        print(MSG_REFRESHED % gen.main_file(d.root), file=sys.stderr)
    except (PolicyFileError, PolicyError) as exc:
        print(MSG_KEPT % exc, file=sys.stderr)
    except Exception as exc:          # noqa: BLE001 - never fails dnf5
        print(MSG_KEPT % ("internal error: %r" % exc), file=sys.stderr)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["refresh"]:
        sys.exit(refresh(sys.argv[2:]))
    sys.exit("usage: python3 -m rpmcow.vendor_dnf5 refresh [--installroot R] [--vendor-conf F]")

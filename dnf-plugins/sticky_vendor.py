# sticky_vendor.py -- DNF plugin: keep installed packages with their vendor.
"""Keep installed packages with their vendor, explain it, let admins steer.

When enforcing, every command keeps installed packages with their vendor:
another vendor's builds of an installed package (and packages obsoleting it)
are hidden from dnf, so upgrade, upgrade-minimal, distro-sync, downgrade and
reinstall stay within the vendor and check-update / list --upgrades /
repoquery --upgrades do not offer what upgrade will not take.  Updates held
back are reported; requests that only another vendor could satisfy fail with
an explanation naming the rule and the command that allows the change.  The
transaction is checked once more after solving and after download (trust
binding); any internal error aborts it (fails closed).

The policy (vendor classes, allowed changes, pins, per-repository vendor
lists, rules for packages without vendor, signing keys) is read from our
files, dnf5's vendors.d and zypper's vendors.d: see rpmcow/vendorpolicy and
`man dnf-vendor`.  ``dnf vendor`` shows and changes it.
"""
import logging
import os
import sys
import time

import dnf
import dnf.cli
import dnf.exceptions
import dnf.subject
import hawkey

logger = logging.getLogger("dnf.plugin")

MSG_INTERNAL = ("sticky-vendor: internal error, refusing to continue (no vendor change "
                "is let through): %s")
MSG_POLICY = "sticky-vendor: invalid vendor policy: %s"
MSG_TIMING = "sticky-vendor: %d decisions, %d packages hidden, %d held back (%.1f ms)"
MSG_TAKEOVER = ("sticky-vendor: enforcing the vendor policy (dnf's allow_vendor_change is "
                "handled by sticky-vendor)")
MSG_SWITCH_NONE = "sticky-vendor: no package %s from vendor %s in the enabled repositories"
MSG_SWITCH_SAME = "sticky-vendor: %s is already from vendor %s"
MSG_SWITCH_NOTINST = "sticky-vendor: %s is not installed: fresh installs need no switch"
MSG_SWITCH_TO = "sticky-vendor: switch needs --to VENDOR (or a local package file)"
MSG_SWITCHED = "sticky-vendor: recorded vendor switch: %s"
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
MSG_NOT_PINNED = "sticky-vendor: %s has no pin made with `dnf vendor pin`"
MSG_TOGGLED = "Vendor policy %s (recorded in %s by %s)."
MSG_CHECK_OK = "%d policy file(s) OK."
MSG_CHECK_BAD = "sticky-vendor: %d error(s) in the vendor policy"
MSG_NOTHING_HELD = "Nothing is held back by vendor policy."
MSG_HELD_OFF = "The vendor policy is disabled: nothing is held back."
MSG_NEEDS_ARG = "sticky-vendor: `dnf vendor %s` needs %s"

REPORT_LIMIT = 40            # held-back lines in upgrade output; `dnf vendor held` shows all
SUBCOMMANDS = ("status", "list", "held", "explain", "pin", "unpin", "switch", "enable",
               "disable", "check")
UPGRADING = ("upgrade", "upgrade-minimal", "distro-sync")
LISTING = ("check-update", "list", "repoquery", "info")
NEEDS_POLICY = ("held", "explain", "switch")


def _engine():
    """rpmcow.vendorpolicy from the system, or from the checkout this plugin is in."""
    try:
        import rpmcow.vendorpolicy  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rpmcow.vendorpolicy import config, errors, explain, formats, keys, policy, sack, state
    return config, errors, explain, formats, keys, policy, sack, state


(config_mod, errors_mod, explain_mod, formats_mod, keys_mod, policy_mod, sack_mod,
 state_mod) = _engine()


def _guarded(func):
    """Hooks fail closed: only dnf.exceptions.Error leaves them."""
    def hook(self, *args, **kw):
        try:
            return func(self, *args, **kw)
        except dnf.exceptions.Error:
            raise
        except errors_mod.RpmcowError as exc:
            raise dnf.exceptions.Error(str(exc)) from exc
        except Exception as exc:          # noqa: BLE001 - fail closed
            logger.debug("sticky-vendor internal error", exc_info=True)
            raise dnf.exceptions.Error(MSG_INTERNAL % exc) from exc
    hook.__name__ = func.__name__
    return hook


class StickyVendor(dnf.Plugin):
    name = "sticky-vendor"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        self.base = base
        self.cli = cli
        self.settings = config_mod.Settings()
        self.policy = None
        self.plan = None
        self.active = False
        self.base_excludes = []
        self.switch_request = {}      # name -> vendor (`dnf vendor switch`)
        self.switch_changes = []
        self.spec_matches = {}
        self._keyids = None
        self._repo_keys = None
        if cli is not None:
            cli.register_command(VendorCommand)
        VendorCommand.plugin = self

    # ---- configuration -------------------------------------------------------
    @_guarded
    def config(self):
        conf = self.read_config(self.base.conf)
        values = {}
        if conf.has_section("main"):
            for key in conf.options("main"):
                values[key] = conf.get("main", key)
        self.settings = config_mod.Settings.from_mapping(values)

    @property
    def root(self):
        return self.base.conf.installroot or "/"

    def state(self):
        return state_mod.State(self.settings.state_path(self.root))

    def enforcing(self, st=None):
        """(enforce?, who decided) from the state's toggle, else the conf."""
        st = st or self.state()
        if st.enforce is not None:
            return st.enforce, "dnf vendor %s, %s" % ("enable" if st.enforce else "disable",
                                                     st.path)
        return self.settings.enforce, "enforce = %s in sticky-vendor.conf" % (
            "yes" if self.settings.enforce else "no")

    def load_policy(self, st=None, errors=None, warnings=None):
        st = st or self.state()
        s = self.settings
        try:
            return formats_mod.load(s.our_dirs(self.root), s.dnf5_dir_list(self.root),
                                    s.zypp_dir_list(self.root), s.normalize, s.commandline,
                                    pins=st.pin_objects(), errors=errors, warnings=warnings)
        except errors_mod.PolicyFileError as exc:
            raise dnf.exceptions.Error(MSG_POLICY % exc) from None

    def _command(self):
        cmd = getattr(self.cli, "command", None) if self.cli is not None else None
        if cmd is None:
            return None, None
        return cmd.aliases[0], getattr(cmd, "opts", None)

    # ---- hide what the policy refuses -----------------------------------------
    @_guarded
    def sack(self):
        name, opts = self._command()
        if name == "vendor" and getattr(opts, "subcommand", None) not in NEEDS_POLICY:
            return
        st = self.state()
        enforce, _ = self.enforcing(st)
        if not enforce:
            return
        self.policy = self.load_policy(st)
        for pkg_name, vendor in self.switch_request.items():
            self.policy.add_switch(pkg_name, vendor)
        sack = self.base.sack
        sack.allow_vendor_change = True         # our classes decide, not exact equality
        logger.debug(MSG_TAKEOVER)
        self.base_excludes = list(sack.get_excludes())
        if self.policy.has_trust_binding():
            self._setup_keys()
        specs = self._explicit_specs(name, opts)
        for spec in specs:
            self.spec_matches[spec] = self._matches(spec)
        listing = self._lists_upgrades(name, opts) or (
            name == "vendor" and opts.subcommand == "held")
        scope = "upgrades" if listing or name in ("upgrade", "upgrade-minimal") else "all"
        started = time.perf_counter()
        self.plan = sack_mod.compute(sack, self.policy, self._keyids, self._repo_keys, scope)
        if self.plan.excluded:
            sack.add_excludes(self.plan.excluded)
        if self.settings.hold_dependents and listing:
            sack_mod.hold_dependents(sack, self.plan, self.policy, self.base_excludes,
                                     self._keyids)
        logger.debug(MSG_TIMING, self.plan.checked, len(self.plan.excluded),
                     len(self.plan.held), (time.perf_counter() - started) * 1000)
        self.active = True
        self._check_specs(name)
        if self._lists_upgrades(name, opts) and self.plan.held and self.settings.report:
            logger.warning(explain_mod.CHECK_HELD_NOTE, len(self.plan.held))
        self._wrap_resolve()

    def _setup_keys(self):
        q = self.base.sack.query().installed()
        bound = sorted({p.name for p in q if self.policy.keys_for(p.vendor)})
        table = keys_mod.installed_key_ids(self.root, bound)

        def keyid(p):
            if p.reponame != "@System":
                return None
            evr = ("%d:" % p.epoch if p.epoch else "") + "%s-%s" % (p.version, p.release)
            return table.get((p.name, evr, p.arch))
        self._keyids = keyid
        self._repo_keys = {}
        for repo in self.base.repos.iter_enabled():
            ids = keys_mod.repo_key_ids(list(repo.gpgkey))
            if ids is not None:
                self._repo_keys[repo.id] = ids

    @staticmethod
    def _lists_upgrades(name, opts):
        if name == "check-update":
            return True
        if name in LISTING and opts is not None:
            return "upgrades" in (getattr(opts, "packages_action", None),
                                  getattr(opts, "_packages_action", None),
                                  getattr(opts, "list", None))      # repoquery --upgrades
        return False

    @staticmethod
    def _explicit_specs(name, opts):
        if name not in ("install", "reinstall", "downgrade") or opts is None:
            return []
        return list(getattr(opts, "pkg_specs", []) or [])

    def _matches(self, spec):
        subj = dnf.subject.Subject(spec)
        q = subj.get_best_query(self.base.sack, with_nevra=True, with_provides=True,
                                with_filenames=True)
        return list(q.available())

    def _check_specs(self, name):
        """An explicit request that only refused packages match: explain it."""
        installed = self.base.sack.query().installed()
        for spec, matches in self.spec_matches.items():
            if not matches:
                continue
            blocked = [p for p in matches if p in self.plan.blocked]
            if not blocked:
                continue
            allowed = [p for p in matches if p not in self.plan.blocked]
            if name in ("downgrade", "reinstall"):
                want = (lambda p, i: p.evr_cmp(i) < 0) if name == "downgrade" else \
                    (lambda p, i: p.evr_cmp(i) == 0)

                def useful(p):
                    return any(want(p, i) for i in installed.filter(name=p.name, arch=p.arch))
                if any(useful(p) for p in allowed) or not any(useful(p) for p in blocked):
                    continue
                blocked = [p for p in blocked if useful(p)]
            elif allowed:
                continue
            blocks = [self.plan.blocked[p] for p in blocked]
            raise dnf.exceptions.Error(explain_mod.not_offered(spec, blocks, self.root))

    def _wrap_resolve(self):
        base, plugin = self.base, self
        original = base.resolve

        def resolve(allow_erasing=False):
            try:
                try:
                    return original(allow_erasing)
                except dnf.exceptions.DepsolveError:
                    # best=True: an update that needs a vendor change makes the
                    # whole upgrade fail; hold it back and solve again, once
                    if not plugin._hold_for_retry():
                        raise
                    return original(allow_erasing)
            except dnf.exceptions.DepsolveError as exc:
                msg = plugin._explain_failure(allow_erasing)
                if msg is None:
                    raise
                logger.debug("dnf's own problem report: %s", exc)
                raise dnf.exceptions.DepsolveError(msg) from None
        base.resolve = resolve

    def _hold_for_retry(self):
        name, _ = self._command()
        if name not in UPGRADING or not self.settings.hold_dependents:
            return False
        try:
            return sack_mod.hold_dependents(self.base.sack, self.plan, self.policy,
                                            self.base_excludes, self._keyids) > 0
        except Exception:                 # noqa: BLE001 - then explain the failure
            logger.debug("sticky-vendor: cannot hold dependents", exc_info=True)
            return False

    def _explain_failure(self, allow_erasing):
        try:
            g = sack_mod.relaxed_solve(self.base._goal, self.base.sack, self.base_excludes,
                                       self.plan, allow_erasing)
            if g is None:
                return None
            viol = sack_mod.violations(g, self.policy, self._keyids)
            return explain_mod.depsolve(viol, self.root) if viol else None
        except Exception:                 # noqa: BLE001 - keep dnf's own message then
            logger.debug("sticky-vendor: cannot explain the failure", exc_info=True)
            return None

    # ---- check the solved transaction, report ---------------------------------
    @_guarded
    def resolved(self):
        if not self.active:
            return
        self._guard(after_download=False)
        name, opts = self._command()
        if name in UPGRADING and self.settings.hold_dependents:
            sack_mod.holds_after_solve(self.base._goal, self.base.sack, self.plan,
                                       self.base_excludes)
        if name in UPGRADING and self.settings.report:
            held = self._held_for(opts)
            for line in explain_mod.held_report(held, limit=REPORT_LIMIT):
                logger.info(line)

    def _held_for(self, opts):
        held = dict(self.plan.held)
        specs = list(getattr(opts, "pkg_specs", []) or []) + \
            list(getattr(opts, "package", []) or [])
        if not specs:
            return held
        names = set()
        for spec in specs:
            q = dnf.subject.Subject(spec).get_best_query(self.base.sack, with_provides=False,
                                                         with_filenames=False)
            names |= {p.name for p in q.installed()}
        return {n: h for n, h in held.items() if n in names}

    def _guard(self, after_download):
        goal = self.base._goal
        cmd_keyids = {}

        def cand_keyid(p):
            if not self.policy.has_trust_binding() or not self.policy.keys_for(p.vendor):
                return None
            if p.reponame == "@commandline" or after_download:
                path = p.localPkg()
                if path not in cmd_keyids:
                    cmd_keyids[path] = keys_mod.file_key_id(path, self.root)
                return cmd_keyids[path]
            return None
        refused = sack_mod.violations(goal, self.policy, self._keyids, cand_keyid)
        if refused:
            texts = []
            for old, new, d in refused:
                cmdline = new.reponame == "@commandline"
                texts.append(explain_mod.refusal(
                    old, new, d, self.root, target=new.localPkg() if cmdline else old.name,
                    cmdline=cmdline))
            raise dnf.exceptions.Error("\n".join(texts))
        if self.switch_request:
            self.switch_changes = [
                {"package": old.name, "from": str(old), "to": str(new),
                 "from_vendor": policy_mod.Pkg.from_hawkey(old).vendor,
                 "to_vendor": policy_mod.Pkg.from_hawkey(new).vendor}
                for old, new in sack_mod._changes(goal).items()]

    @_guarded
    def pre_transaction(self):
        """After download and gpgcheck: trust binding sees the real signatures."""
        if self.active and self.policy.has_trust_binding() and self.base.transaction:
            self._guard(after_download=True)

    @_guarded
    def transaction(self):
        if self.active and self.switch_request and self.switch_changes:
            entry = self.state().record_switch(self.switch_changes, _history_id(self.base))
            logger.info(MSG_SWITCHED, ", ".join("%s %s -> %s" % (
                c["package"], explain_mod.vendor(c["from_vendor"]),
                explain_mod.vendor(c["to_vendor"])) for c in entry["changes"]))


class VendorCommand(dnf.cli.Command):
    aliases = ("vendor",)
    summary = "show and steer the sticky vendor policy (status, held, explain, pin, switch...)"
    plugin = None

    @staticmethod
    def set_argparser(parser):
        parser.add_argument("subcommand", nargs="?", default="status", choices=SUBCOMMANDS,
                            help="what to do (default: status)")
        parser.add_argument("args", nargs="*", metavar="ARG",
                            help="package names, a vendor (pin), package files (switch)")
        parser.add_argument("--to", dest="to_vendor", metavar="VENDOR",
                            help="switch: the vendor to move the packages to")
        parser.add_argument("--follow-repo", dest="pin_repo", metavar="REPO",
                            help="pin: follow this repository instead of a vendor")
        parser.add_argument("--json", dest="vendor_json", action="store_true",
                            help="status, held: machine-readable output")

    def configure(self):
        sub = self.opts.subcommand
        d = self.cli.demands
        if sub in ("list", "pin"):
            d.sack_activation = True
        if sub in ("held", "explain"):
            d.sack_activation = True
            d.available_repos = True
        if sub == "switch":
            d.sack_activation = True
            d.available_repos = True
            d.resolving = True
            d.root_user = True
            self._prepare_switch()
        if sub in ("pin", "unpin", "enable", "disable"):
            d.root_user = True

    def _prepare_switch(self):
        if not self.opts.args:
            raise dnf.cli.CliError(MSG_NEEDS_ARG % ("switch", "PACKAGE... --to VENDOR"))
        self.files = [a for a in self.opts.args if a.endswith(".rpm")]
        self.names = [a for a in self.opts.args if not a.endswith(".rpm")]
        request = {}
        for path in self.files:
            hdr = _read_header(path)
            vendor = self.opts.to_vendor if self.opts.to_vendor is not None else \
                (hdr["vendor"] or "")
            request[hdr["name"]] = vendor
        if self.names and self.opts.to_vendor is None:
            raise dnf.cli.CliError(MSG_SWITCH_TO)
        for n in self.names:
            request[n] = self.opts.to_vendor
        self.plugin.switch_request = request

    def run(self):
        sub = self.opts.subcommand
        getattr(self, "_run_" + sub)()

    # -- subcommands --
    def _run_status(self):
        p = self.plugin
        st = p.state()
        enforce, by = p.enforcing(st)
        if self.opts.vendor_json:
            errors, warnings = [], []
            pol = p.load_policy(st, errors, warnings)
            _print_json({"enforced": bool(enforce), "by": by,
                         "policy_files": list(pol.sources), "rules": pol.summary(),
                         "normalize": bool(p.settings.normalize),
                         "commandline": p.settings.commandline,
                         "errors": [str(e) for e in errors],
                         "warnings": [str(w) for w in warnings],
                         "pins": st.pins, "recent": st.audit_entries(last=5)})
            return
        if enforce:
            print(MSG_ENABLED % by)
        else:
            print(MSG_DISABLED % (by, "allow_vendor_change = %s" %
                                  self.base.conf.allow_vendor_change))
        errors, warnings = [], []
        pol = p.load_policy(st, errors, warnings)
        s = pol.summary()
        print("Policy files read: %d" % s["files"])
        for f in pol.sources:
            print("  %s" % f)
        print("Rules: %(classes)d vendor classes, %(allow)d allowed changes, %(pins)d pins, "
              "%(repos)d repository vendor lists, %(dnf5)d dnf5 policies, %(zypp_groups)d zypper "
              "groups" % s)
        print("Normalise vendor names: %s; command-line packages: %s" % (
            "yes" if p.settings.normalize else "no", p.settings.commandline))
        for e in errors:
            print("ERROR %s" % e)
        for w in warnings:
            print("warning: %s" % w)
        if st.pins:
            print("Pins (dnf vendor pin):")
            for pin in st.pins:
                print("  %s -> %s" % (pin["package"], "repository '%s'" % pin["repo"]
                                      if "repo" in pin else explain_mod.vendor(pin["vendor"])))
        recent = st.audit_entries(last=5)
        if recent:
            print("Recent changes (%s):" % st.audit_path)
            for e in recent:
                print("  " + explain_mod.audit_line(e))

    def _run_list(self):
        groups = {}
        for pkg in self.base.sack.query().installed():
            v = policy_mod.Pkg.from_hawkey(pkg).vendor
            groups.setdefault(v, []).append(pkg)
        for v in sorted(groups, key=lambda x: (-len(groups[x]), x)):
            pkgs = sorted(groups[v], key=lambda x: x.name)
            print("%s (%d)" % (explain_mod.vendor(v), len(pkgs)))
            for pkg in pkgs:
                print("  %s" % pkg)

    def _run_held(self):
        p = self.plugin
        if self.opts.vendor_json:
            held = p.plan.held if p.active else {}
            _print_json({"enforced": bool(p.active), "held": [
                {"name": name, "kind": h.kind,
                 "installed": str(h.installed), "installed_vendor": h.installed.vendor,
                 "candidate": str(h.candidate), "candidate_vendor": h.candidate.vendor,
                 "taken": str(h.taken) if getattr(h, "taken", None) is not None else None,
                 "rule": str(h.decision)}
                for name, h in sorted(held.items())]})
            return
        if not p.active:
            print(MSG_HELD_OFF)
            return
        lines = explain_mod.held_report(p.plan.held)
        print("\n".join(lines) if lines else MSG_NOTHING_HELD)

    def _run_explain(self):
        p = self.plugin
        if not self.opts.args:
            raise dnf.cli.CliError(MSG_NEEDS_ARG % ("explain", "PACKAGE"))
        pol = p.policy or p.load_policy()
        enforce, by = p.enforcing()
        if not enforce:
            print(MSG_DISABLED % (by, "allow_vendor_change = %s" %
                                  self.base.conf.allow_vendor_change))
        q = self.base.sack.query(flags=hawkey.IGNORE_EXCLUDES)
        unknown = []
        for name in self.opts.args:
            inst = q.installed().filter(name=name)
            if not inst:
                if q.available().filter(name=name):
                    print(MSG_NOT_INSTALLED % name)
                else:
                    print(MSG_UNKNOWN % name)
                    unknown.append(name)
                continue
            for i in inst:
                ip = policy_mod.Pkg.from_hawkey(i, p._keyids(i) if p._keyids else None)
                classes = [pol.classes[c].name for c in sorted(pol.classes_of(ip.vendor))]
                print("%s: installed from vendor %s%s" % (i, explain_mod.vendor(ip.vendor),
                                                          " [vendor %s]" % ", ".join(classes)
                                                          if classes else ""))
                pin = pol.pin_for(i.name)
                if pin is not None:
                    print("  pinned: %s (%s)" % ("repository '%s'" % pin.repo if pin.repo
                                                 else explain_mod.vendor(pin.vendor), pin.where))
                cands = list(q.available().filter(name=name)) + \
                    [o for o in q.available().filter(obsoletes=[i]) if o.name != name]
                if not cands:
                    print("  no package of this name in the enabled repositories")
                for c in sorted(cands, key=lambda c: (c.name, c.evr, c.reponame),
                                reverse=True):
                    block = p.plan.blocked.get(c) if p.plan else None
                    d = block.decision if block is not None else \
                        pol.decide(ip, policy_mod.Pkg.from_hawkey(c))
                    verb = "allowed" if d.allowed and enforce else \
                        ("refused" if not d.allowed else "allowed (policy disabled)")
                    if not enforce and not d.allowed:
                        verb = "would be refused (policy disabled)"
                    print("  %-8s %s  vendor %s  repo %s" % (verb, c, explain_mod.vendor(c.vendor),
                                                            c.reponame))
                    print("           rule: %s" % d)
                    if not d.allowed:
                        print("           allow: %s" % explain_mod.allow_command(
                            name, c.vendor, p.root))
        if unknown and len(unknown) == len(self.opts.args):
            raise dnf.exceptions.Error(MSG_NOTHING_MATCHED % ", ".join(unknown))

    def _run_pin(self):
        st = self.plugin.state()
        if not self.opts.args:
            raise dnf.cli.CliError(MSG_NEEDS_ARG % ("pin", "PACKAGE [VENDOR] or PACKAGE --repo REPO"))
        package = self.opts.args[0]
        q = self.base.sack.query(flags=hawkey.IGNORE_EXCLUDES).filter(name=package)
        if not q:
            logger.warning(MSG_PIN_UNKNOWN, package)
        if self.opts.pin_repo:
            st.pin(package, repo=self.opts.pin_repo)
            print(MSG_PINNED % (package, "repository '%s'" % self.opts.pin_repo))
            return
        if len(self.opts.args) > 1:
            vendor = " ".join(self.opts.args[1:])
        else:
            inst = self.base.sack.query().installed().filter(name=package)
            if not inst:
                raise dnf.exceptions.Error(MSG_PIN_NEEDS_VENDOR % package)
            vendor = policy_mod.Pkg.from_hawkey(inst[0]).vendor
        st.pin(package, vendor=vendor)
        print(MSG_PINNED % (package, "vendor %s" % explain_mod.vendor(vendor)))

    def _run_unpin(self):
        if not self.opts.args:
            raise dnf.cli.CliError(MSG_NEEDS_ARG % ("unpin", "PACKAGE"))
        st = self.plugin.state()
        for package in self.opts.args:
            if not st.unpin(package):
                raise dnf.exceptions.Error(MSG_NOT_PINNED % package)
            print(MSG_UNPINNED % package)

    def _run_enable(self):
        self._toggle(True)

    def _run_disable(self):
        self._toggle(False)

    def _toggle(self, value):
        st = self.plugin.state()
        entry = st.set_enforce(value)
        print(MSG_TOGGLED % ("enforced" if value else "disabled", st.path, entry["who"]))

    def _run_check(self):
        errors, warnings = [], []
        pol = self.plugin.load_policy(errors=errors, warnings=warnings)
        for w in warnings:
            print("warning: %s" % w)
        for e in errors:
            print("%s" % e)
        if errors:
            raise dnf.exceptions.Error(MSG_CHECK_BAD % len(errors))
        print(MSG_CHECK_OK % len(pol.sources))
        for f in pol.sources:
            print("  %s" % f)

    def _run_switch(self):
        p = self.plugin
        base = self.base
        pol = p.policy
        if pol is None:                 # policy disabled: a plain, still recorded, change
            pol = p.load_policy()
            for n, v in p.switch_request.items():
                pol.add_switch(n, v)
        installed = base.sack.query().installed()
        for path in self.files:
            for pkg in base.add_remote_rpms([path], strict=True):
                self._switch_one(pkg.name, installed, [pkg], p.switch_request[pkg.name], pol)
        for name in self.names:
            cands = list(base.sack.query().available().filter(name=name))
            self._switch_one(name, installed, cands, p.switch_request[name], pol)

    def _switch_one(self, name, installed, cands, vendor, pol):
        inst = installed.filter(name=name)
        if not inst:
            raise dnf.exceptions.Error(MSG_SWITCH_NOTINST % name)
        i = max(inst, key=_evr_key(self.base))
        if pol.in_vendor(policy_mod.Pkg.from_hawkey(i).vendor, vendor):
            raise dnf.exceptions.Error(MSG_SWITCH_SAME % (name, explain_mod.vendor(vendor)))
        mine = [c for c in cands if pol.in_vendor(policy_mod.Pkg.from_hawkey(c).vendor, vendor)]
        if not mine:
            raise dnf.exceptions.Error(MSG_SWITCH_NONE % (name, explain_mod.vendor(vendor)))
        best = max(mine, key=_evr_key(self.base))
        c = best.evr_cmp(i)
        if c > 0:
            self.base.package_upgrade(best)
        elif c < 0:
            self.base.package_downgrade(best)
        else:
            self.base.package_reinstall(best)


def _evr_key(base):
    import functools

    def cmp(a, b):
        return a.evr_cmp(b)
    return functools.cmp_to_key(cmp)


def _read_header(path):
    import rpm
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise dnf.exceptions.Error("sticky-vendor: %s: %s" % (path, exc.strerror)) from None
    try:
        return ts.hdrFromFdno(fd)
    except rpm.error as exc:
        raise dnf.exceptions.Error("sticky-vendor: %s: not a package (%s)" % (path, exc)) \
            from None
    finally:
        os.close(fd)




def _history_id(base):
    """dnf's history ID of the transaction that just ran, or None."""
    try:
        last = base.history.last()
        return getattr(last, "tid", None)
    except Exception:             # noqa: BLE001 - an ID is a nicety, never a failure
        return None


def _print_json(doc):
    import json
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")

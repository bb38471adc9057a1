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
MSG_SWITCHED = "sticky-vendor: recorded vendor switch: %s"

REPORT_LIMIT = 40            # held-back lines in upgrade output; `dnf vendor held` shows all
UPGRADING = ("upgrade", "upgrade-minimal", "distro-sync")
LISTING = ("check-update", "list", "repoquery", "info")
NEEDS_POLICY = ("held", "explain", "switch")


def _engine():
    """rpmcow.vendorpolicy from the system, or from the checkout this plugin is in."""
    try:
        import rpmcow.vendorpolicy  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rpmcow.vendorpolicy import (commands, config, errors, explain, formats, keys, policy,
                                     sack, state)
    return commands, config, errors, explain, formats, keys, policy, sack, state


(commands_mod, config_mod, errors_mod, explain_mod, formats_mod, keys_mod, policy_mod, sack_mod,
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
        commands_mod.add_arguments(
            parser, args_help="package names, a vendor (pin), package files (switch)")

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
            raise dnf.cli.CliError(commands_mod.MSG_NEEDS_ARG % ("dnf", "switch",
                                                                 "PACKAGE... --to VENDOR"))
        self.files = [a for a in self.opts.args if a.endswith(".rpm")]
        self.names = [a for a in self.opts.args if not a.endswith(".rpm")]
        request = {}
        for path in self.files:
            hdr = _read_header(path)
            vendor = self.opts.to_vendor if self.opts.to_vendor is not None else \
                (hdr["vendor"] or "")
            request[hdr["name"]] = vendor
        if self.names and self.opts.to_vendor is None:
            raise dnf.cli.CliError(commands_mod.MSG_SWITCH_TO)
        for n in self.names:
            request[n] = self.opts.to_vendor
        self.plugin.switch_request = request

    def run(self):
        sub = self.opts.subcommand
        try:
            getattr(self, "_run_" + sub)()
        except errors_mod.RpmcowError as exc:
            raise dnf.exceptions.Error(str(exc)) from None

    # -- subcommands: rpmcow.vendorpolicy.commands, with what hawkey knows --
    def _off_note(self):
        return "allow_vendor_change = %s" % self.base.conf.allow_vendor_change

    def _run_status(self):
        p = self.plugin
        st = p.state()
        enforce, by = p.enforcing(st)
        errors, warnings = [], []
        pol = p.load_policy(st, errors, warnings)
        commands_mod.status(st, enforce, by, pol, p.settings, errors, warnings,
                            self._off_note(), self.opts.vendor_json)

    def _run_list(self):
        commands_mod.list_vendors(policy_mod.Pkg.from_hawkey(pkg)
                                  for pkg in self.base.sack.query().installed())

    def _run_held(self):
        p = self.plugin
        commands_mod.held(p.active, p.plan.held if p.active else {}, self.opts.vendor_json)

    def _run_explain(self):
        p = self.plugin
        if not self.opts.args:
            raise commands_mod.needs("dnf", "explain", "PACKAGE")
        pol = p.policy or p.load_policy()
        enforce, by = p.enforcing()
        q = self.base.sack.query(flags=hawkey.IGNORE_EXCLUDES)

        def pkgs(name):
            inst = q.installed().filter(name=name)
            known = bool(q.available().filter(name=name))

            def candidates_of(ip):
                i = ip._hawkey
                cands = list(q.available().filter(name=name)) + \
                    [o for o in q.available().filter(obsoletes=[i]) if o.name != name]
                out = []
                for c in sorted(cands, key=lambda c: (c.name, c.evr, c.reponame),
                                reverse=True):
                    cp = policy_mod.Pkg.from_hawkey(c)
                    block = p.plan.blocked.get(c) if p.plan else None
                    d = block.decision if block is not None else pol.decide(ip, cp)
                    out.append((cp, d, d.allowed, None))
                return out
            return ([policy_mod.Pkg.from_hawkey(i, p._keyids(i) if p._keyids else None)
                     for i in inst], candidates_of, known)
        commands_mod.explain(self.opts.args, pkgs, pol, enforce, by, self._off_note(), p.root)

    def _run_pin(self):
        q = self.base.sack.query(flags=hawkey.IGNORE_EXCLUDES)
        package = self.opts.args[0] if self.opts.args else None

        def installed_vendor(name):
            inst = self.base.sack.query().installed().filter(name=name)
            return policy_mod.Pkg.from_hawkey(inst[0]).vendor if inst else None
        commands_mod.pin(self.plugin.state(), self.opts.args, self.opts.pin_repo,
                         bool(q.filter(name=package)) if package else True, installed_vendor,
                         logger.warning)

    def _run_unpin(self):
        commands_mod.unpin(self.plugin.state(), self.opts.args)

    def _run_enable(self):
        commands_mod.toggle(self.plugin.state(), True)

    def _run_disable(self):
        commands_mod.toggle(self.plugin.state(), False)

    def _run_check(self):
        errors, warnings = [], []
        pol = self.plugin.load_policy(errors=errors, warnings=warnings)
        commands_mod.check(pol, errors, warnings)

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
        def pairs(pkgs):
            return [(policy_mod.Pkg.from_hawkey(x), x) for x in pkgs]
        _, best, c = commands_mod.switch_target(pol, name, pairs(installed.filter(name=name)),
                                                pairs(cands), vendor,
                                                lambda a, b: a.evr_cmp(b))
        if c > 0:
            self.base.package_upgrade(best)
        elif c < 0:
            self.base.package_downgrade(best)
        else:
            self.base.package_reinstall(best)


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

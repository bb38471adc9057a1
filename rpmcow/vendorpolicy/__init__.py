"""The vendor policy engine behind the sticky-vendor dnf plugin.

    from rpmcow.vendorpolicy import config, formats, state, sack, explain
    settings = config.Settings.from_mapping({"normalize": "yes"})
    policy = formats.load(settings.our_dirs(root), settings.dnf5_dir_list(root),
                          settings.zypp_dir_list(root), settings.normalize)
    policy.decide(installed_pkg, candidate_pkg)      # -> policy.Decision
    plan = sack.compute(base.sack, policy)            # bulk, with hawkey

Modules: ``match`` (vendor normalisation, comparators), ``inifile`` (INI with
line numbers), ``policy`` (the model and the decision), ``formats`` (our
files, dnf5 TOML, zypper INI), ``config`` (sticky-vendor.conf), ``state``
(toggle, pins, switches, audit log), ``keys`` (signing key IDs), ``sack``
(hawkey bulk computation), ``explain`` (every message), ``commands`` (the
`vendor` subcommands of both front ends: ``dnf vendor`` on dnf 4,
``rpmcow vendor`` on dnf5), ``dnf5`` (the vendors.d files generated for dnf5
and dnf5's own verdict).
"""

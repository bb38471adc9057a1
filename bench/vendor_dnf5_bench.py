#!/usr/bin/env python3
"""Benchmark: dnf5 resolution with the sticky-vendor policy vs stock dnf5.

The world is bench/vendor_bench.py's generator (built once, cached in
--workdir): repo alpha has NAMES names at 1.0 and 1.1 (vendor "Alpha Corp"),
repo beta BETA names at 2.0 ("Beta Inc"), every package requires another;
the first INSTALLED names are installed at 1.0.  With the defaults that is
20,000 repository packages and 2,000 installed, each with an update at both
vendors -- the worst case for the policy: every installed package has a
vendor change to refuse (dnf5 then solves a second time to report them).

Two install roots with the same rpmdb:
  stock   dnf5 as shipped: no vendors.d rules, allow_vendor_change = 1
  policy  `rpmcow vendor enable` from a sticky-vendor policy: our generated
          vendors.d rule files and the allow_vendor_change = 0 drop-in

Measured, alternating policy/stock in the same run (medians of --runs):
  * cli: wall time of `dnf5 upgrade --assumeno -C` (start, configuration,
    repositories from the solv cache, the rpmdb, the solve, the table)
  * resolve: in one python3-libdnf5 process per run, Goal(add_rpm_upgrade)
    .resolve() alone, the sack already loaded (the policy root's Base;
    stock = the same solve with allow_vendor_change = 1 at run time)

Runs where dnf5 is (Debian sid in `make bench-vendor-dnf5`):

    python3 bench/vendor_dnf5_bench.py [--runs 5] [--names 8000 --beta 4000]

Writes $BENCH_RESULTS (default bench/results)/vendor_dnf5.{json,md}.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402
import vendor_bench  # noqa: E402

DNF5 = "/usr/bin/dnf5"
POLICY = """\
# a policy like a real one: a class, an allowed change, a no-vendor rule
[vendor alpha]
vendors = Alpha Corp
          Alpha Labs
[allow gamma-to-beta]
from = Gamma Ltd
to = Beta Inc
[no-vendor]
gain = Alpha Corp
"""

# Resolution alone, in-process: the sack is loaded once; alternating solves.
INPROC = r'''
import json, sys, time
import libdnf5
root, work, runs = %(root)r, %(work)r, %(runs)d
base = libdnf5.base.Base()
cfg = base.get_config()
cfg.get_config_file_path_option().set(work + "/dnf.conf")
cfg.get_installroot_option().set(root)
base.load_config()
P = libdnf5.conf.Option.Priority_COMMANDLINE
for k, v in (("reposdir", work + "/repos.d"), ("cachedir", root + "/var/cache/dnf"),
             ("cacheonly", "all"), ("best", "0")):
    cfg.opt_binds().at(k).new_string(P, v)
base.get_vars().set("releasever", "1")
base.setup()
rs = base.get_repo_sack()
rs.create_repos_from_system_configuration()
rs.load_repos()
avc = cfg.get_allow_vendor_change_option()
R = libdnf5.conf.Option.Priority_RUNTIME
act = libdnf5.base.transaction.transaction_item_action_to_string
out = {"policy": [], "stock": []}
for i in range(runs):
    for mode in ("policy", "stock"):
        avc.set(R, mode == "stock")
        t0 = time.perf_counter()
        g = libdnf5.base.Goal(base)
        g.add_rpm_upgrade()
        t = g.resolve()
        out[mode].append(time.perf_counter() - t0)
        ups = [tp for tp in t.get_transaction_packages() if act(tp.get_action()) == "Upgrade"]
        out["upgrades_" + mode] = len(ups)
        out["beta_" + mode] = sum(tp.get_package().get_vendor() == "Beta Inc" for tp in ups)
print(json.dumps(out))
'''


def env():
    return dict(os.environ, HOME="/root", LC_ALL="C.UTF-8", LANG="C.UTF-8",
                PYTHONPATH=str(ROOT))


def dnf5_cmd(work, root, *args):
    return [DNF5, "-c", str(work / "dnf.conf"), "--installroot=%s" % root, "--releasever=1",
            "--setopt=reposdir=%s" % (work / "repos.d"),
            "--setopt=cachedir=%s" % (root / "var/cache/dnf"), "--setopt=best=0"] + list(args)


def make_roots(work):
    """roots/stock and roots/policy: copies of the world's root; the policy
    root gets our generated files (rpmcow vendor enable)."""
    roots = {}
    for mode in ("stock", "policy"):
        r = work / "roots" / mode
        if r.exists():
            shutil.rmtree(r)
        shutil.copytree(work / "root", r, symlinks=True)
        roots[mode] = r
    pol = roots["policy"]
    (pol / "etc/dnf/sticky-vendor.d").mkdir(parents=True)
    (pol / "etc/dnf/sticky-vendor.d/bench.conf").write_text(POLICY)
    conf = work / "sticky-vendor.conf"
    conf.write_text("[main]\nenabled = 1\n")
    subprocess.run([sys.executable, "-m", "rpmcow", "vendor", "enable",
                    "--installroot=%s" % pol, "-c", str(work / "dnf.conf"), "--releasever=1",
                    "--setopt=reposdir=%s" % (work / "repos.d"), "--vendor-conf=%s" % conf],
                   check=True, capture_output=True, env=env())
    rules = sorted(p.name for p in (pol / "etc/dnf/vendors.d").iterdir())
    for mode, r in roots.items():
        subprocess.run(dnf5_cmd(work, r, "makecache"), check=True, capture_output=True,
                       env=env())
    return roots, rules


def cli_run(work, root):
    t0 = time.perf_counter()
    p = subprocess.run(dnf5_cmd(work, root, "-C", "upgrade", "--assumeno"),
                       capture_output=True, text=True, env=env())
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    if "Upgrading:" not in out:
        raise RuntimeError("dnf5 upgrade resolved nothing (exit %d):\n%s" % (p.returncode,
                                                                           out[-3000:]))
    return wall, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names", type=int, default=8000)
    ap.add_argument("--beta", type=int, default=4000)
    ap.add_argument("--installed", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default="/var/tmp/rpmcow-vendor-dnf5-bench")
    ap.add_argument("--machine-note", default=os.environ.get("BENCH_MACHINE_NOTE", ""),
                    help="what else the machine was doing (goes into the table)")
    a = ap.parse_args(argv)
    for tool in (DNF5, "rpmbuild", "createrepo_c"):
        if shutil.which(tool) is None:
            sys.exit("vendor_dnf5_bench: %s is not installed (run it through "
                     "`make bench-vendor-dnf5`)" % tool)
    work = Path(a.workdir)
    vendor_bench.build(work, a.names, a.beta, a.installed, makecache=False)
    roots, rules = make_roots(work)
    benchlib.compile_bytecode()

    cli = {"policy": [], "stock": []}
    outs = {}
    cli_run(work, roots["stock"])                 # warm the page cache, both roots
    cli_run(work, roots["policy"])
    for i in range(a.runs):
        for mode in ("policy", "stock"):
            wall, outs[mode] = cli_run(work, roots[mode])
            cli[mode].append(wall)
            print("cli", mode, i + 1, round(wall, 3), file=sys.stderr, flush=True)
    skipped = sum(int(w.split()[1]) for w in outs["policy"].splitlines()
                  if w.startswith("Skipping") and "vendor change restriction" in w)

    p = subprocess.run([sys.executable, "-c", INPROC % {"root": str(roots["policy"]),
                                                         "work": str(work), "runs": a.runs}],
                       capture_output=True, text=True, env=env())
    if p.returncode:
        raise RuntimeError("the in-process resolve failed:\n" + p.stderr[-3000:])
    inproc = json.loads(p.stdout.strip().splitlines()[-1])
    for k in ("policy", "stock"):
        print("resolve", k, [round(x, 3) for x in inproc[k]], file=sys.stderr, flush=True)
    if inproc["beta_policy"] or not inproc["beta_stock"]:
        raise RuntimeError("the policy did not hold anything back: %r" % inproc)

    dnf5v = subprocess.run([DNF5, "--version"], capture_output=True, text=True).stdout
    med = {m: statistics.median(cli[m]) for m in cli}
    rmed = {m: statistics.median(inproc[m]) for m in ("policy", "stock")}
    res = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
           "machine_note": a.machine_note, "dnf5": dnf5v.split("\n")[0].strip(),
           "runs": a.runs, "packages": a.names * 2 + a.beta, "installed": a.installed,
           "rule_files": rules, "policy": POLICY,
           "cli_s": cli, "cli_median_s": med, "cli_ratio": med["policy"] / med["stock"],
           "resolve_s": {m: inproc[m] for m in ("policy", "stock")},
           "resolve_median_s": rmed, "resolve_ratio": rmed["policy"] / rmed["stock"],
           "upgrades": {m: inproc["upgrades_" + m] for m in ("policy", "stock")},
           "to_beta": {m: inproc["beta_" + m] for m in ("policy", "stock")},
           "skipped_vendor_change": skipped, "target_ratio": 1.2}
    write(res)
    return 0


def write(res):
    out = os.environ.get("BENCH_RESULTS") or str(HERE / "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vendor_dnf5.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
        f.write("\n")
    m, c, r = res["machine"], res["cli_median_s"], res["resolve_median_s"]

    def ok(ratio):
        return "met" if ratio <= res["target_ratio"] else "NOT met"
    lines = [
        "# sticky-vendor on dnf5: resolution with the policy vs stock dnf5", "",
        "Date %s. Machine: %d CPUs (%s), %d MiB RAM, kernel %s%s; %s, %s (Debian sid chroot). "
        "%d repository packages, %d installed; every installed package has an update at its "
        "own vendor and a newer one at another vendor. Policy: our generated vendors.d rules "
        "(%d file(s)) + allow_vendor_change = 0; stock: no rules, vendor change allowed. "
        "Medians of %d alternating runs." % (
            res["date"], m["cpus"], m["cpu"], m["memory_mib"], m["kernel"],
            (", " + res["machine_note"]) if res["machine_note"] else "", m["rpm"],
            res["dnf5"], res["packages"], res["installed"], len(res["rule_files"]),
            res["runs"]), "",
        "| measure | stock dnf5 | with the policy | ratio (target ≤ %.1f×) |" % res["target_ratio"],
        "|---|---|---|---|",
        "| `dnf5 upgrade --assumeno -C` wall time | %.0f ms | %.0f ms | **%.2f×** (%s) |" % (
            c["stock"] * 1000, c["policy"] * 1000, res["cli_ratio"], ok(res["cli_ratio"])),
        "| libdnf5 `Goal.resolve()` of upgrade-all (sack loaded) | %.1f ms | %.1f ms | "
        "**%.2f×** (%s) |" % (r["stock"] * 1000, r["policy"] * 1000, res["resolve_ratio"],
                               ok(res["resolve_ratio"])), "",
        "Upgrades: stock %d (%d to Beta Inc), policy %d (%d to Beta Inc); dnf5 reported %d "
        "package(s) skipped for a vendor change. With the policy and vendor changes blocked, "
        "libdnf5 solves a second time (vendor changes allowed) to name what it skipped; that "
        "is in the policy's time." % (
            res["upgrades"]["stock"], res["to_beta"]["stock"], res["upgrades"]["policy"],
            res["to_beta"]["policy"], res["skipped_vendor_change"])]
    with open(os.path.join(out, "vendor_dnf5.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

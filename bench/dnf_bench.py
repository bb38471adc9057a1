#!/usr/bin/env python3
"""dnf benchmark: ``dnf install`` of a realistic package set from a loopback
repository, stock dnf against dnf with the cow plugin, in the same run.

    .venv/bin/python bench/dnf_bench.py [--runs 3] [--mib 600] [--packages 32]
                                        [--rates "unlimited,1 Gbit/s,100 Mbit/s"]

The packages (rpmcow.scenario: files of this machine, xz and zstd payloads,
no dependencies) are served over HTTP on 127.0.0.1, at each network rate in
turn (one link shared by dnf's parallel downloads: scenario.Link); each run
installs all of them into a fresh installroot on one loop-mounted XFS, with
dnf's default keepcache=0 and caches dropped before.  Measured per run: total wall time,
the rpm transaction's time (a measuring plugin, rpmcow/scenario_plugins,
marks dnf's pre_transaction and transaction hooks; for cow its
pre_transaction runs after cow's), bytes written to the loop device, peak disk use (sampled
every 20 ms) and final disk use.
Targets: total <= 1.0x stock unlimited and <= 0.85x at the network rates
(issue #16), rpm transaction <= 0.5x stock, peak disk <= stock.
Results: bench/results/dnf.{md,json,png}.
"""
import argparse
import datetime
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from rpmcow import scenario  # noqa: E402

CACHE = os.path.join(os.path.dirname(HERE), "build", "scenario")


def one_run(xfs, repo, names, variant, n):
    root = "root-%s-%s" % (variant, n)
    r = scenario.measure_install(xfs, repo, names, variant == "cow", root, keepcache=False)
    del r["output"]
    # each run starts from the same free space (18 roots of the default set
    # do not fit the loop XFS: a full disk once stopped the run)
    shutil.rmtree(os.path.join(xfs.path, root))
    return r


KEYS = ("wall", "rpm", "written", "peak", "final")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=600)
    ap.add_argument("--packages", type=int, default=32)
    ap.add_argument("--rates", default="unlimited,1 Gbit/s,100 Mbit/s",
                    help="comma-separated: unlimited, or names of scenario.RATES")
    ap.add_argument("--replot", metavar="JSON", help="only write the tables and chart again")
    args = ap.parse_args()
    if benchlib.replot(args.replot, write):
        return
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    for r in rates:
        if r != "unlimited" and r not in scenario.RATES:
            sys.exit("dnf_bench: unknown rate %r (unlimited, %s)" % (r, ", ".join(scenario.RATES)))
    benchlib.compile_bytecode()
    pkgs = scenario.build_packages(CACHE, args.mib, args.packages,
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
    names = scenario.package_names(pkgs)
    installed = sum(p.size for p in scenario.plan(args.mib, args.packages))
    comp = [p.compressor for p in scenario.plan(args.mib, args.packages)]
    res = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
           "runs": args.runs, "packages": len(pkgs), "installed_bytes": installed,
           "rpm_bytes": sum(os.path.getsize(p) for p in pkgs),
           "xz": sum("xz" in c for c in comp), "zstd": sum("zstd" in c for c in comp),
           "rates": {}}
    with scenario.Repository(pkgs) as repo, scenario.LoopXFS(8) as xfs:
        for rate in rates:
            repo.set_rate(scenario.RATES.get(rate))
            at = res["rates"][rate] = {"results": {"stock": [], "cow": []}}
            for n in range(args.runs):
                for variant in ("stock", "cow"):
                    r = one_run(xfs, repo, names, variant, "%s-%d" % (rate.split()[0], n))
                    at["results"][variant].append(r)
                    print(rate, variant, n + 1, {k: round(v, 3) if isinstance(v, float) else v
                                                 for k, v in r.items()},
                          file=sys.stderr, flush=True)
            med = {v: {k: benchlib.median([r[k] for r in rs]) for k in KEYS}
                   for v, rs in at["results"].items()}
            at["median"] = med
            at["ratio"] = {k: med["cow"][k] / med["stock"][k] for k in KEYS}
    write(res)


def wall_target(rate):
    return "1.0" if rate == "unlimited" else "0.85"


def write(res):
    out = os.environ.get("BENCH_RESULTS") or os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    scenario.dump(res, os.path.join(out, "dnf.json"))
    m = res["machine"]
    mib = benchlib.MiB
    lines = [
        "# dnf benchmark: stock dnf vs dnf with the cow plugin", "",
        "Date %s. Machine: %d CPUs (%s), %d MiB RAM, kernel %s, %s, dnf 4. "
        "%d packages (%d xz, %d zstd; %.0f MiB of .rpm, %.0f MiB installed) served over HTTP on "
        "127.0.0.1 at each rate below (one link shared by dnf's parallel downloads), installed "
        "into a fresh installroot on a loop-mounted XFS (reflink=1), keepcache=0, caches "
        "dropped before each run; medians of %d alternating runs per rate." % (
            res["date"], m["cpus"], m["cpu"], m["memory_mib"], m["kernel"], m["rpm"],
            res["packages"], res["xz"], res["zstd"], res["rpm_bytes"] / mib,
            res["installed_bytes"] / mib, res["runs"])]
    # fastest first (the JSON keeps its keys sorted)
    rates = sorted(res["rates"], key=lambda r: -scenario.RATES.get(r, float("inf")))
    for rate in rates:
        at = res["rates"][rate]
        lines += ["", "## %s" % ("no rate limit (loopback)" if rate == "unlimited"
                                 else "network at " + rate), ""]
        lines += benchlib.install_table(at["median"], at["ratio"], ("stock dnf", "dnf + cow"),
                                        wall_target(rate))
        cs = [x["cow_summary"] for x in at["results"]["cow"] if x["cow_summary"]]
        if cs:
            lines += ["", "cow plugin: `%s`" % cs[-1]]
    with open(os.path.join(out, "dnf.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    benchlib.plot_bars(os.path.join(out, "dnf.png"),
                       "dnf install, %d packages: total wall time (s)" % res["packages"],
                       rates,
                       {"stock dnf": [res["rates"][r]["median"]["stock"]["wall"] for r in rates],
                        "dnf + cow": [res["rates"][r]["median"]["cow"]["wall"] for r in rates]},
                       "seconds")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

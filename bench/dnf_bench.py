#!/usr/bin/env python3
"""dnf benchmark: ``dnf install`` of a realistic package set from a loopback
repository, stock dnf against dnf with the cow plugin, in the same run.

    .venv/bin/python bench/dnf_bench.py [--runs 3] [--mib 600] [--packages 32]

The packages (rpmcow.scenario: files of this machine, xz and zstd payloads,
no dependencies) are served over HTTP on 127.0.0.1; each run installs all of
them into a fresh installroot on one loop-mounted XFS, with dnf's default
keepcache=0 and caches dropped before.  Measured per run: total wall time,
the rpm transaction's time (a measuring plugin, rpmcow/scenario_plugins,
marks dnf's pre_transaction and transaction hooks; for cow its
pre_transaction runs after cow's), bytes written to the loop device, peak disk use (sampled
every 20 ms) and final disk use.
Targets: total <= 1.0x stock, rpm transaction <= 0.5x stock, peak disk <= stock.
Results: bench/results/dnf.{md,json,png}.
"""
import argparse
import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from rpmcow import scenario  # noqa: E402

CACHE = os.path.join(os.path.dirname(HERE), "build", "scenario")


def one_run(xfs, repo, names, variant, n):
    r = scenario.measure_install(xfs, repo, names, variant == "cow",
                                 "root-%s-%d" % (variant, n), keepcache=False)
    del r["output"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=600)
    ap.add_argument("--packages", type=int, default=32)
    args = ap.parse_args()
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
           "results": {"stock": [], "cow": []}}
    with scenario.Repository(pkgs) as repo, scenario.LoopXFS(8) as xfs:
        for n in range(args.runs):
            for variant in ("stock", "cow"):
                r = one_run(xfs, repo, names, variant, n)
                res["results"][variant].append(r)
                print(variant, n + 1, {k: round(v, 3) if isinstance(v, float) else v
                                       for k, v in r.items()}, file=sys.stderr, flush=True)
    med = {v: {k: benchlib.median([r[k] for r in rs]) for k in ("wall", "rpm", "written",
                                                                   "peak", "final")}
           for v, rs in res["results"].items()}
    res["median"] = med
    res["ratio"] = {k: med["cow"][k] / med["stock"][k] for k in med["cow"]}
    write(res)


def write(res):
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    scenario.dump(res, os.path.join(out, "dnf.json"))
    m, md, r = res["machine"], res["median"], res["ratio"]
    mib = benchlib.MiB
    lines = [
        "# dnf benchmark: stock dnf vs dnf with the cow plugin", "",
        "Date %s. Machine: %d CPUs (%s), %d MiB RAM, kernel %s, %s, dnf 4. "
        "%d packages (%d xz, %d zstd; %.0f MiB of .rpm, %.0f MiB installed) served over HTTP on "
        "127.0.0.1, installed into a fresh installroot on a loop-mounted XFS (reflink=1), "
        "keepcache=0, caches dropped before each run; medians of %d alternating runs." % (
            res["date"], m["cpus"], m["cpu"], m["memory_mib"], m["kernel"], m["rpm"],
            res["packages"], res["xz"], res["zstd"], res["rpm_bytes"] / mib,
            res["installed_bytes"] / mib, res["runs"]), ""]
    lines += benchlib.install_table(md, r, ("stock dnf", "dnf + cow"))
    cs = [x["cow_summary"] for x in res["results"]["cow"] if x["cow_summary"]]
    if cs:
        lines += ["", "cow plugin: `%s`" % cs[-1]]
    with open(os.path.join(out, "dnf.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    benchlib.plot_bars(os.path.join(out, "dnf.png"), "dnf install, %d packages" % res["packages"],
                       ["total wall (s)", "rpm transaction (s)"],
                       {"stock dnf": [md["stock"]["wall"], md["stock"]["rpm"]],
                        "dnf + cow": [md["cow"]["wall"], md["cow"]["rpm"]]}, "seconds")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

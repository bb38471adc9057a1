#!/usr/bin/env python3
"""dnf5 benchmark: ``dnf5 install`` of a realistic package set from a
loopback repository, stock dnf5 against dnf5 with the libdnf5 cow plugin, in
the same run.

    python3 bench/dnf5_bench.py [--runs 3] [--mib 300] [--packages 16]

Needs dnf5, libdnf5's headers and g++ (Fedora 41+; here Debian sid, run
through ``make bench-dnf5``, which uses the compatibility matrix's sid
chroot).  The packages (rpmcow.scenario: files of this machine, xz and zstd
payloads) are served over HTTP on 127.0.0.1; each run installs all of them
into a fresh installroot on one loop-mounted XFS (the cache under the root,
dnf5 --use-host-config), with keepcache=0 and caches dropped before.
Measured per run: total wall time; the rpm transaction (a measuring libdnf5
plugin, bench/dnf5_timing.cpp, marks pre_transaction and post_transaction:
for cow its marks come after cow's transcoding, which the total includes);
the transcoding (cow: from dnf5's start of the transaction to the end of
cow's prepare step, as the difference); bytes written to the loop device;
peak and final disk use.  Targets (issue #17): rpm transaction <= 0.5x,
total <= 1.0x, peak disk <= 1.0x stock.  Results:
bench/results/dnf5.{md,json,png} (or $BENCH_RESULTS).
"""
import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
sys.path.insert(0, CHECKOUT)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from rpmcow import _build, scenario  # noqa: E402

CACHE = os.path.join(CHECKOUT, "build", "scenario")


def build_plugins(work):
    """(pluginpath with cow + rpmtiming, pluginpath with rpmtiming alone)."""
    both, timing_only = os.path.join(work, "both"), os.path.join(work, "timing")
    _build.build_dnf5_plugin(both)
    os.makedirs(timing_only)
    _build.build_dnf5_plugin(timing_only, source=os.path.join(HERE, "dnf5_timing.cpp"),
                             name="rpmtiming")
    os.symlink(os.path.join(timing_only, "rpmtiming.so"), os.path.join(both, "rpmtiming.so"))
    return both, timing_only


def run_dnf5(root, repo_url, names, pluginpath, conf, keepcache=False):
    reposd = os.path.join(conf, "repos.d")
    os.makedirs(reposd, exist_ok=True)
    with open(os.path.join(reposd, "scenario.repo"), "w") as f:
        f.write("[scenario]\nname=rpmcow scenario\nbaseurl=%s\ngpgcheck=0\n" % repo_url)
    cmd = ["dnf5", "-y", "--installroot=%s" % root, "--use-host-config", "--releasever=1",
           "--setopt=reposdir=" + reposd, "--setopt=pluginpath=" + pluginpath,
           "--setopt=pluginconfpath=" + conf, "--setopt=keepcache=%d" % keepcache,
           "--setopt=install_weak_deps=0", "install"] + list(names)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(os.environ, LC_ALL="C.UTF-8"))
    return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0


def one_run(xfs, repo, names, variant, n, plugins, work):
    root = os.path.join(xfs.path, "root-%s-%d" % (variant, n))
    conf = tempfile.mkdtemp(prefix="dnf5conf-", dir=work)
    timing = os.path.join(conf, "timing")
    with open(os.path.join(conf, "rpmtiming.conf"), "w") as f:
        f.write("[main]\nname = rpmtiming\nenabled = 1\nfile = %s\n" % timing)
    if variant == "cow":
        with open(os.path.join(conf, "cow.conf"), "w") as f:
            f.write("[main]\nname = cow\nenabled = 1\npath = %s\n" % CHECKOUT)
    with scenario.Usage(xfs) as use:
        rc, out, wall = run_dnf5(root, repo.url, names,
                                 plugins[0] if variant == "cow" else plugins[1], conf)
    if rc != 0:
        raise RuntimeError("dnf5 failed (%s):\n%s" % (variant, out[-3000:]))
    with open(timing) as f:
        marks = dict(line.split() for line in f if line.strip())
    summary = [line for line in out.splitlines() if "packages installed copy-on-write" in line]
    if variant == "cow" and not summary:
        raise RuntimeError("dnf5 + cow installed nothing copy-on-write:\n" + out[-3000:])
    return {"wall": wall, "rpm": float(marks["end"]) - float(marks["start"]),
            "written": use.written, "peak": use.peak, "final": use.final,
            "cow_summary": summary[0] if summary else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=300)
    ap.add_argument("--packages", type=int, default=16)
    ap.add_argument("--replot", metavar="JSON",
                    help="only write the table and chart again from a results file "
                         "(make bench-dnf5 does, on the host, which has matplotlib)")
    args = ap.parse_args()
    if benchlib.replot(args.replot, write):
        return
    for need in ("dnf5", "rpmbuild", "createrepo_c"):
        if shutil.which(need) is None:
            sys.exit("dnf5_bench: %s is not installed (run it through `make bench-dnf5`)" % need)
    if not _build.dnf5_available():
        sys.exit("dnf5_bench: libdnf5's headers or g++ are missing")
    pkgs = scenario.build_packages(CACHE, args.mib, args.packages,
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
    names = scenario.package_names(pkgs)
    installed = sum(p.size for p in scenario.plan(args.mib, args.packages))
    comp = [p.compressor for p in scenario.plan(args.mib, args.packages)]
    dnf5 = subprocess.run(["dnf5", "--version"], capture_output=True, text=True).stdout
    res = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
           "dnf5": dnf5.split("\n")[0].strip(), "runs": args.runs, "packages": len(pkgs),
           "installed_bytes": installed, "rpm_bytes": sum(os.path.getsize(p) for p in pkgs),
           "xz": sum("xz" in c for c in comp), "zstd": sum("zstd" in c for c in comp),
           "results": {"stock": [], "cow": []}}
    work = tempfile.mkdtemp(prefix="rpmcow-dnf5bench-")
    try:
        plugins = build_plugins(work)
        with scenario.Repository(pkgs) as repo, scenario.LoopXFS(8) as xfs:
            for n in range(args.runs):
                for variant in ("stock", "cow"):
                    r = one_run(xfs, repo, names, variant, n, plugins, work)
                    res["results"][variant].append(r)
                    print(variant, n + 1, {k: round(v, 3) if isinstance(v, float) else v
                                           for k, v in r.items()}, file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {v: {k: benchlib.median([r[k] for r in rs]) for k in ("wall", "rpm", "written",
                                                                   "peak", "final")}
           for v, rs in res["results"].items()}
    res["median"] = med
    res["ratio"] = {k: med["cow"][k] / med["stock"][k] for k in med["cow"]}
    write(res)


def write(res):
    out = os.environ.get("BENCH_RESULTS") or os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    scenario.dump(res, os.path.join(out, "dnf5.json"))
    m, md, r = res["machine"], res["median"], res["ratio"]
    mib = benchlib.MiB
    lines = [
        "# dnf5 benchmark: stock dnf5 vs dnf5 with the libdnf5 cow plugin", "",
        "Date %s. Machine: %d CPUs (%s), %d MiB RAM, kernel %s, %s, %s (Debian sid stand-in). "
        "%d packages (%d xz, %d zstd; %.0f MiB of .rpm, %.0f MiB installed) served over HTTP on "
        "127.0.0.1, installed into a fresh installroot on a loop-mounted XFS (reflink=1), "
        "keepcache=0, caches dropped before each run; medians of %d alternating runs." % (
            res["date"], m["cpus"], m["cpu"], m["memory_mib"], m["kernel"], m["rpm"],
            res["dnf5"], res["packages"], res["xz"], res["zstd"], res["rpm_bytes"] / mib,
            res["installed_bytes"] / mib, res["runs"]), ""]
    lines += benchlib.install_table(md, r, ("stock dnf5", "dnf5 + cow"))
    lines += ["", "The rpm transaction is pre_transaction to post_transaction: for cow it "
              "starts after cow's prepare step (judging, and transcoding what the background "
              "step did not finish while the packages downloaded), which the total includes."]
    cs = [x["cow_summary"] for x in res["results"]["cow"] if x["cow_summary"]]
    if cs:
        lines += ["", "cow plugin: `%s`" % cs[-1]]
    with open(os.path.join(out, "dnf5.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if not benchlib.plot_bars(os.path.join(out, "dnf5.png"),
                              "dnf5 install, %d packages" % res["packages"],
                              ["total wall (s)", "rpm transaction (s)"],
                              {"stock dnf5": [md["stock"]["wall"], md["stock"]["rpm"]],
                               "dnf5 + cow": [md["cow"]["wall"], md["cow"]["rpm"]]}, "seconds"):
        print("dnf5_bench: no matplotlib here: no chart (the table is in dnf5.md)",
              file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

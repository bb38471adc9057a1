#!/usr/bin/env python3
"""What verification costs the transcoder: the same transcode with and
without the rpmkeys checks, alternating, same run, on the large packages.

    .venv/bin/python bench/verify_bench.py [--runs 5]

Target: verification adds at most 10% to transcode wall time.
Results: bench/results/verify.{md,json}.
"""
import argparse
import datetime
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import benchlib  # noqa: E402
import largepkg  # noqa: E402
from rpmcow import transcode  # noqa: E402

PACKAGES = [("zstd-19", "w19T2.zstdio"), ("xz-9", "w9T2.xzdio")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default=os.path.join(HERE, "work"))
    args = ap.parse_args()
    benchlib.compile_bytecode()
    res = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
           "runs": args.runs, "packages": {}}
    out = os.path.join(args.workdir, "verify-bench.rpme")
    for label, define in PACKAGES:
        pkg = largepkg.build_large_package(args.workdir, define)
        with open(pkg, "rb") as f:            # warm the page cache
            while f.read(1 << 24):
                pass
        times = {"verified": [], "unverified": []}
        for _ in range(args.runs):
            for variant in ("unverified", "verified"):
                os.sync()
                t0 = time.perf_counter()
                fd_fn = transcode.transcode_fd if variant == "verified" else \
                    transcode._unverified_fd        # private: for this measurement only
                transcode._via_path(pkg, out, fd_fn, {"level": "none"})
                times[variant].append(time.perf_counter() - t0)
                os.unlink(out)
        med = {k: benchlib.median(v) for k, v in times.items()}
        res["packages"][label] = {"runs": times, "median": med,
                                  "overhead": med["verified"] / med["unverified"] - 1}
        print(label, med, file=sys.stderr)
    write_results(res)


def write_results(res):
    m = res["machine"]
    lines = ["# Verification overhead of the transcoder", "",
             "Date %s. %d CPUs (%s), %s. In-process `transcode_path`, input in the page "
             "cache, output on the same disk; medians of %d alternating runs." % (
                 res["date"], m["cpus"], m["cpu"], m["rpm"], res["runs"]), "",
             "| package | without verification | with verification | overhead (target ≤ 10%) |",
             "|---|---|---|---|"]
    for label, p in res["packages"].items():
        lines.append("| %s | %.2f s | %.2f s | %+.1f%% |" % (
            label, p["median"]["unverified"], p["median"]["verified"], 100 * p["overhead"]))
    benchlib.save_results("verify", res, lines)


if __name__ == "__main__":
    main()

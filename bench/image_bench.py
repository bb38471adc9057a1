#!/usr/bin/env python3
"""Image-build benchmark: one package set installed into N installroots from
one package cache, stock dnf against dnf with the cow plugin, N = 1..10.

    .venv/bin/python bench/image_bench.py [--roots 10] [--mib 300] [--packages 16]

The use case behind rpm's own reflink proposals (rpm #4265, #4294): image
builders (mkosi) install the same packages into many roots on one file
system.  The packages (rpmcow.scenario: files of this machine, xz and zstd
payloads) are served over HTTP on 127.0.0.1; the roots and the shared cache
(keepcache=1: the first install downloads, the others take the packages --
and, with cow, the extents files -- from the cache) are on one loop-mounted
XFS, a fresh one for each series; caches are dropped before each install.
Measured per install: wall time, bytes written to the loop device, disk use it added (after sync and
dropping caches).  Targets (issue #16) at N = 10: disk used <= 0.25x stock,
time <= 0.5x stock.  Results: bench/results/image.{md,json,png}.
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
# (result key, cow.conf share_tails): stock dnf; dnf + cow writing each root's
# partial blocks; dnf + cow as it installs by default here (auto: the cache is
# outside the roots, so tails are shared from <cache>/rpmcow-tails)
VARIANTS = (("stock", None), ("cow-no-tails", "no"), ("cow", "auto"))
LABELS = {"stock": "stock dnf", "cow-no-tails": "dnf + cow, tails written",
          "cow": "dnf + cow, tails shared", "floor": "floor: stock dnf, files emptied"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roots", type=int, default=10)
    ap.add_argument("--mib", type=int, default=300)
    ap.add_argument("--packages", type=int, default=16)
    ap.add_argument("--replot", metavar="JSON", help="only write the table and chart again")
    args = ap.parse_args()
    if benchlib.replot(args.replot, write):
        return
    benchlib.compile_bytecode()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    pkgs = scenario.build_packages(CACHE, args.mib, args.packages, log=log)
    names = scenario.package_names(pkgs)
    # the floor: the same packages with every file emptied, installed by stock
    # dnf -- dnf's and rpm's own work per root, which no install through them skips
    empty = scenario.build_packages(CACHE, args.mib, args.packages, log=log, empty=True)
    plan = scenario.plan(args.mib, args.packages)
    res = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
           "roots": args.roots, "packages": len(pkgs),
           "installed_bytes": sum(p.size for p in plan),
           "rpm_bytes": sum(os.path.getsize(p) for p in pkgs),
           "xz": sum("xz" in p.compressor for p in plan),
           "zstd": sum("zstd" in p.compressor for p in plan), "results": {}}
    res["unshareable"] = unshareable(plan)
    # stock's roots hold N full copies: room for them all
    gib = max(4, (args.roots + 2) * res["installed_bytes"] * 2 // (1 << 30) + 2)
    # each series on a file system of its own, made fresh: one that earlier
    # series filled (and freed) is slower, which favoured whichever ran first
    with scenario.Repository(pkgs) as repo, scenario.Repository(empty) as erepo:
        for variant, tails in VARIANTS:
            with scenario.LoopXFS(gib) as xfs:
                res["results"][variant] = scenario.image_builds(
                    xfs, repo, names, variant != "stock", args.roots, log=log,
                    share_tails=tails)
        with scenario.LoopXFS(gib) as xfs:
            res["floor"] = scenario.image_builds(xfs, erepo, names, False, args.roots,
                                                 log=log, label="floor")
    write(res)


def unshareable(plan, blk=4096):
    """What no clone can share (a clone moves whole blocks): the blocks of
    the files smaller than one block, and the last partial block of the
    others -- every root holds its own."""
    small = tails = nfiles = nsmall = 0
    for p in plan:
        for f in p.files:
            try:
                st = os.lstat(f)
            except OSError:
                continue
            if not os.path.isfile(f) or os.path.islink(f):
                continue
            nfiles += 1
            if st.st_size < blk:
                nsmall += 1
                small += -(-st.st_size // blk) * blk
            elif st.st_size % blk:
                tails += blk
    return {"files": nfiles, "small_files": nsmall, "small_bytes": small, "tail_bytes": tails}


def series(res):
    """{variant: {"time": cumulative seconds, "disk": cumulative bytes,
    "written": cumulative bytes}} per number of roots."""
    return {v: {"time": scenario.cumulative(steps, "wall"),
                "disk": scenario.cumulative(steps, "added"),
                "written": scenario.cumulative(steps, "written")}
            for v, steps in res["results"].items()}


def write(res):
    out = os.environ.get("BENCH_RESULTS") or os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    scenario.dump(res, os.path.join(out, "image.json"))
    m, mib, n = res["machine"], benchlib.MiB, res["roots"]
    s = series(res)
    st = s["stock"]
    lines = [
        "# Image builds: N installroots from one package cache, stock dnf vs dnf + cow", "",
        "Date %s. Machine: %d CPUs (%s), %d MiB RAM, kernel %s, %s, dnf 4. "
        "%d packages (%d xz, %d zstd; %.0f MiB of .rpm, %.0f MiB installed) served over HTTP "
        "on 127.0.0.1, installed into %d fresh installroots one after the other, all on one "
        "loop-mounted XFS (reflink=1, made fresh for each series) with one shared package "
        "cache (keepcache=1); caches "
        "dropped before each install; one run per N (each N is one more install of the same "
        "series)." % (res["date"], m["cpus"], m["cpu"], m["memory_mib"], m["kernel"], m["rpm"],
                      res["packages"], res["xz"], res["zstd"], res["rpm_bytes"] / mib,
                      res["installed_bytes"] / mib, n), "",
        "Variants: stock dnf; dnf + cow with `share_tails = no` (each root writes its files' "
        "last partial blocks, and small files, again); dnf + cow as it installs by default "
        "here (`share_tails = auto`: the cache is outside the roots, so the first root stores "
        "those tails in the cache and every later root clones them).", ""]
    cows = [v for v in ("cow-no-tails", "cow") if v in s]
    head = "| roots | stock: time | " + " | ".join(
        "%s: time | ratio" % LABELS[v] for v in cows) + " | stock: disk used | " + " | ".join(
        "%s: disk used | ratio" % LABELS[v] for v in cows) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for i in range(n):
        if i + 1 not in (1, 2, 3, 5, n):
            continue
        bold = (lambda x: "**%s**" % x) if i + 1 == n else (lambda x: x)
        row = ["%d" % (i + 1), "%.1f s" % st["time"][i]]
        row += sum((["%.1f s" % s[v]["time"][i], bold("%.2f×" % (s[v]["time"][i] / st["time"][i]))]
                    for v in cows), [])
        row += ["%.0f MiB" % (st["disk"][i] / mib)]
        row += sum((["%.0f MiB" % (s[v]["disk"][i] / mib),
                     bold("%.2f×" % (s[v]["disk"][i] / st["disk"][i]))] for v in cows), [])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Targets at N = %d: time ≤ 0.5×, disk used ≤ 0.25×. " % n + "; ".join(
        "%s: time %.2f×, disk %.2f×" % (LABELS[v], s[v]["time"][-1] / st["time"][-1],
                                        s[v]["disk"][-1] / st["disk"][-1]) for v in cows) +
        ". Time and disk are totals over the N installs (the cache included: its packages, "
        "and with cow its extents files, whose blocks every root shares, and the tail store)."]
    lines += ["", "Bytes written to the device over the N installs: stock %.0f MiB; " % (
        st["written"][-1] / mib) + "; ".join("%s %.0f MiB" % (LABELS[v], s[v]["written"][-1] / mib)
                                              for v in cows) + "."]
    later = {v: [x["wall"] for x in res["results"][v][1:]] for v in ["stock"] + cows}
    added = {v: [x["added"] for x in res["results"][v][1:]] for v in ["stock"] + cows}
    if later["stock"]:
        lines += ["", "Each install after the first (the cache full), median: stock %.2f s, "
                  "%.0f MiB more disk; " % (benchlib.median(later["stock"]),
                                             benchlib.median(added["stock"]) / mib) +
                  "; ".join("%s %.2f s (%.2f×), %.0f MiB (%.2f×)" % (
                      LABELS[v], benchlib.median(later[v]),
                      benchlib.median(later[v]) / benchlib.median(later["stock"]),
                      benchlib.median(added[v]) / mib,
                      benchlib.median(added[v]) / benchlib.median(added["stock"]))
                      for v in cows) + "."]
    fl = res.get("floor")
    if fl:
        ft = scenario.cumulative(fl, "wall")
        flater = [x["wall"] for x in fl[1:]]
        lines += ["", "The floor: stock dnf installing the same packages with every file emptied "
                  "(the same names, paths, modes and directories, no content), one more series "
                  "of %d roots in the same run. It is dnf's and rpm's own work per root -- "
                  "start, depsolve, the transaction check and test, creating %s files, the "
                  "rpmdb -- which every install through stock dnf and rpm does, cow's included: "
                  "at N = %d it took %.1f s (%.2f× stock)%s. A time ratio below that cannot be "
                  "reached without changing dnf or rpm."
                  % (n, res.get("unshareable", {}).get("files", "their"), n, ft[-1],
                     ft[-1] / st["time"][-1],
                     ("; each root after the first %.2f s (%.2f× stock's)"
                      % (benchlib.median(flater), benchlib.median(flater) /
                         benchlib.median(later["stock"]))) if flater and later["stock"] else "")]
    u = res.get("unshareable")
    if u:
        lines += ["", "Why tails matter: of the %d regular files, %d are smaller than one 4 KiB "
                  "block (%.0f MiB of blocks) and the others end in %.0f MiB of partial last "
                  "blocks. A clone (FICLONERANGE) shares whole blocks only unless it ends at "
                  "its source's end of file, so without a tail store every root writes those "
                  "again; with one, each distinct tail is a file of its own in the cache that "
                  "every later root clones (docs/install.md, \"Image builds: shared tails\"). "
                  "Cloning one block costs XFS more time than writing it."
                  % (u["files"], u["small_files"], u["small_bytes"] / mib,
                     u["tail_bytes"] / mib)]
    with open(os.path.join(out, "image.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    chart(os.path.join(out, "image.png"), s, res)
    print("\n".join(lines))


def chart(path, s, res):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("image_bench: no matplotlib here: no chart", file=sys.stderr)
        return
    xs = list(range(1, res["roots"] + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, div, title in ((axes[0], "time", 1, "total time, seconds"),
                                (axes[1], "disk", benchlib.MiB, "disk used, MiB")):
        for variant, color in (("stock", "#888888"), ("cow-no-tails", "#8fbfe0"),
                               ("cow", "#2a7ab0")):
            if variant in s:
                ax.plot(xs, [v / div for v in s[variant][key]], marker="o",
                        label=LABELS[variant], color=color)
        if key == "time" and res.get("floor"):
            ax.plot(xs, scenario.cumulative(res["floor"], "wall"), linestyle="--",
                    color="#444444", label=LABELS["floor"])
        ax.set_xlabel("installroots built from one cache")
        ax.set_title(title)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Image builds: %d packages (%.0f MiB installed) into N roots"
                 % (res["packages"], res["installed_bytes"] / benchlib.MiB))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

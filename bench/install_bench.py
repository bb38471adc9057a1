#!/usr/bin/env python3
"""Install benchmark: stock ``rpm -i`` of the original against ``rpmcow
install`` of the extents file, in the same run, on a loop-mounted XFS.

    .venv/bin/python bench/install_bench.py [--runs 3]

For each large package (zstd-19 and xz-9, of the "large" and "reference"
profiles, built by bench/largepkg.py):
transcode once onto the XFS (timed separately), then alternate N runs of
each install into a fresh root on the same XFS, with caches dropped before
every run.  Reported per variant (medians): wall, CPU (user+sys of the
command and its children), wall including ``sync``, and new disk space
(``df`` after sync and dropping caches, so XFS's speculative preallocation
is gone).  The extents file is kept (it is what the installed files share
their blocks with).  A third variant, the floor, is stock ``rpm -i`` of the
same package with every file emptied: rpm's own per-file work, below which
no install through stock rpm can go.  A fourth, the write floor, is stock
``rpm -i --nofiledigest`` of the same files zeroed, in a zstd payload: rpm
reads and writes every byte its header declares, as it must for any payload
fed to it (rpmcow's too), but decompresses next to nothing.  Results:
bench/results/install.{md,json,png}.
"""
import argparse
import datetime
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import largepkg  # noqa: E402

# (label, payload, largepkg profile): "large" has 25.8k entries in 337 MiB;
# "reference" has the shape of the package measured in
# ../shared/reference/stock-rpm-cow.md (10.9k entries, 332 MiB).  New disk
# space is about one block per file, so it is the file count that decides it.
PACKAGES = [("zstd-19", "w19T2.zstdio", "large"), ("xz-9", "w9T2.xzdio", "large"),
            ("reference zstd-19", "w19T2.zstdio", "reference"),
            ("reference xz-9", "w9T2.xzdio", "reference")]
TARGETS = {"zstd-19": 0.55, "xz-9": 0.30, "reference zstd-19": 0.55, "reference xz-9": 0.30}  # #16
NAMES = {"large": "rpmcow-bench-large", "reference": "rpmcow-bench-reference"}
RPMCOW = os.path.join(benchlib.REPO, ".venv", "bin", "rpmcow")
VARIANT_NAMES = {"stock": "stock rpm -i", "cow": "rpmcow install",
                 "floor": "floor: stock rpm -i, files emptied",
                 "write_floor": "write floor: stock rpm -i --nofiledigest, files zeroed"}
VARIANTS = ("stock", "cow", "write_floor", "floor")
WRITE_FLOOR_PAYLOAD = "w19T2.zstdio"


def install_cmd(variant, pkg, root):
    common = ["--root", root, "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts"]
    if variant in ("stock", "floor"):
        return ["rpm", "-i", *common, pkg]
    if variant == "write_floor":
        # rpmcow install turns rpm's file digests off too (its feed is not
        # the files' content); the zeroed files' digests would cost it time
        return ["rpm", "-i", *common, "--nofiledigest", pkg]
    return [RPMCOW, "install", "-q", *common, "--verify-level", "digest", pkg]


def one_run(variant, pkg, mnt, n):
    """pkg: the original for "stock", the extents file for "cow", the
    emptied twin for "floor" and the zeroed one for "write_floor" (both
    installed by stock rpm)."""
    root = os.path.join(mnt, "root-%s-%d" % (variant, n))
    benchlib.drop_caches()
    used0 = benchlib.used_bytes(mnt)
    wall, cpu, wall_sync = benchlib.run_timed(install_cmd(variant, pkg, root),
                                              env=dict(os.environ, HOME="/root"))
    benchlib.drop_caches()
    new = benchlib.used_bytes(mnt) - used0
    shutil.rmtree(root)
    return {"wall": wall, "cpu": cpu, "wall_sync": wall_sync, "new_disk": new}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(HERE, "work"))
    ap.add_argument("--replot", metavar="JSON", help="only write the tables and chart again")
    args = ap.parse_args()
    if benchlib.replot(args.replot, write_results):
        return
    benchlib.compile_bytecode()
    results = {"date": datetime.date.today().isoformat(), "machine": benchlib.machine(),
               "runs": args.runs, "packages": {}}
    with benchlib.loop_xfs(6) as xfs:
        mnt = xfs.path
        for label, define, profile in PACKAGES:
            src = largepkg.build_large_package(args.workdir, define, name=NAMES[profile],
                                               profile=profile)
            info = largepkg.package_info(src)
            pkg = os.path.join(mnt, os.path.basename(src))
            shutil.copyfile(src, pkg)
            # the floor: the same files with no content, installed by stock rpm --
            # rpm's own per-file work, which no install through stock rpm skips
            empty = largepkg.build_large_package(args.workdir, define, name=NAMES[profile],
                                                 profile=profile, empty=True)
            floor_pkg = os.path.join(mnt, os.path.basename(empty))
            shutil.copyfile(empty, floor_pkg)
            # zstd whatever the package's payload: its zeros are run-length
            # blocks, which decode at memset speed (xz's long matches do not:
            # ~1 s for these 333 MiB, more than rpmcow's own zero chunks cost)
            zeroed = largepkg.build_large_package(args.workdir, WRITE_FLOOR_PAYLOAD,
                                                  name=NAMES[profile], profile=profile,
                                                  zeroed=True)
            write_floor_pkg = os.path.join(mnt, os.path.basename(zeroed))
            shutil.copyfile(zeroed, write_floor_pkg)
            ext = pkg[:-4] + ".cow.rpm"
            t0 = time.perf_counter()
            benchlib.run_timed([RPMCOW, "transcode", "-q", pkg, "-o", ext])
            transcode_s = time.perf_counter() - t0
            runs = {v: [] for v in VARIANTS}
            paths = {"stock": pkg, "cow": ext, "floor": floor_pkg,
                     "write_floor": write_floor_pkg}
            for n in range(args.runs):
                for variant in VARIANTS:
                    path = paths[variant]
                    runs[variant].append(one_run(variant, path, mnt, n))
                    print("%s %s run %d: %s" % (label, variant, n + 1, runs[variant][-1]),
                          file=sys.stderr, flush=True)
            med = {v: {k: benchlib.median([r[k] for r in rs]) for k in rs[0]}
                   for v, rs in runs.items()}
            results["packages"][label] = {
                "package": os.path.basename(src), "rpm_bytes": os.path.getsize(src),
                "extents_bytes": os.path.getsize(ext), "files": info.get("selected_files"),
                "installed_bytes": info.get("selected_bytes"), "transcode_s": transcode_s,
                "runs": runs, "median": med,
                "ratio": {k: med["cow"][k] / med["stock"][k] for k in med["cow"]},
                "floor_ratio": {k: med["floor"][k] / med["stock"][k] for k in med["floor"]},
                "write_floor_ratio": {k: med["write_floor"][k] / med["stock"][k]
                                      for k in med["write_floor"]},
                "target_wall_ratio": TARGETS[label],
            }
            os.unlink(pkg)
            os.unlink(ext)
            os.unlink(floor_pkg)
            os.unlink(write_floor_pkg)
    write_results(results)


def _in_order(packages):
    """The packages in PACKAGES' order (the JSON file keeps its keys sorted)."""
    order = [label for label, _, _ in PACKAGES]
    return sorted(packages.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                    else len(order), kv[0]))


def write_results(res):
    m = res["machine"]
    lines = [
        "# Install benchmark: stock `rpm -i` vs `rpmcow install`",
        "",
        "Date %s. Machine: %d CPUs (%s), %d MiB RAM, kernel %s, %s. Loop-mounted XFS "
        "(reflink=1) holding the package, its extents file and the roots; caches dropped "
        "before every run; medians of %d alternating runs; `--nodeps --noscripts`."
        % (res["date"], m["cpus"], m["cpu"], m["memory_mib"], m["kernel"], m["rpm"],
           res["runs"]),
        "",
        "| package | variant | wall | CPU | wall incl. sync | new disk |",
        "|---|---|---|---|---|---|",
    ]
    for label, p in _in_order(res["packages"]):
        for v in VARIANTS:
            md = p["median"].get(v)
            if md is None:
                continue
            lines.append("| %s | %s | %.2f s | %.2f s | %.2f s | %.1f MiB |" % (
                label, VARIANT_NAMES[v], md["wall"],
                md["cpu"], md["wall_sync"], md["new_disk"] / benchlib.MiB))
        r = p["ratio"]
        lines.append("| %s | **ratio** | **%.2f×** (target ≤ %.2f×) | %.2f× | %.2f× | "
                     "**%.1f%%** (target ≤ 15%%) |" % (label, r["wall"], p["target_wall_ratio"],
                                                       r["cpu"], r["wall_sync"],
                                                       100 * r["new_disk"]))
        f = p.get("write_floor_ratio")
        if f:
            lines.append("| %s | write floor / stock | %.2f× | %.2f× | %.2f× | |"
                         % (label, f["wall"], f["cpu"], f["wall_sync"]))
        f = p.get("floor_ratio")
        if f:
            lines.append("| %s | floor / stock | %.2f× | %.2f× | %.2f× | |"
                         % (label, f["wall"], f["cpu"], f["wall_sync"]))
    lines += ["", "The floor is stock `rpm -i` of the same package with every file emptied "
              "(bench/largepkg.py, `empty=True`): the same paths, modes, links and "
              "directories, no content -- rpm's own work per file (create, owner, mode, "
              "times, rename, the rpmdb), which every install through stock rpm does, "
              "rpmcow's included. A wall ratio below floor / stock cannot be reached "
              "without changing rpm.",
              "", "The write floor is stock `rpm -i --nofiledigest` of the same files with "
              "every one zeroed (`zeroed=True`), in a zstd payload whatever the package's own: "
              "rpm reads and writes every byte its header declares, as it must for any payload "
              "fed to it -- rpmcow install's included, which turns file digests off too -- but "
              "zstd's run-length blocks of zeros decode at memset speed. It still lacks what a "
              "real install must also do: read the small files' real bytes from disk, check "
              "the package, clone. A wall ratio below write floor / stock cannot be reached by "
              "an install that feeds stock rpm.",
              "", "| package | .rpm | extents file | files | installed | transcode (separate) |",
              "|---|---|---|---|---|---|"]
    for label, p in _in_order(res["packages"]):
        lines.append("| %s | %.1f MiB | %.1f MiB | %s | %.1f MiB | %.2f s |" % (
            label, p["rpm_bytes"] / benchlib.MiB, p["extents_bytes"] / benchlib.MiB,
            p["files"], (p["installed_bytes"] or 0) / benchlib.MiB, p["transcode_s"]))
    out = benchlib.save_results("install", res, lines)
    labels = [label for label, _ in _in_order(res["packages"])]
    # wall time, as the targets are: with sync, the write floor would also
    # count the writeback of its zeros, which no cloned install has
    benchlib.plot_bars(os.path.join(out, "install.png"), "Install wall time", labels, {
        "stock rpm -i": [res["packages"][l]["median"]["stock"]["wall"] for l in labels],
        "rpmcow install": [res["packages"][l]["median"]["cow"]["wall"] for l in labels],
        "write floor (files zeroed)": [
            res["packages"][l]["median"].get("write_floor", {}).get("wall", 0) for l in labels],
        "floor (files emptied)": [
            res["packages"][l]["median"].get("floor", {}).get("wall", 0) for l in labels]},
        "seconds")


if __name__ == "__main__":
    main()

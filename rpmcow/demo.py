"""``make demo``: the main job on a built-in default.

On a loop-mounted XFS it creates, with a local repository served on
127.0.0.1 holding realistic packages it builds from this machine's files
(xz and zstd payloads), it runs a stock ``dnf install`` and then the same
install through the cow plugin, each into a fresh installroot, and shows a
table of times, data written and disk used, and a PNG chart.  Everything it
creates is removed at the end (the built packages are cached in build/).
"""
import argparse
import os
import sys

from . import scenario

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(HERE), "build", "scenario")


def _mib(n):
    return "%.1f MiB" % (n / scenario.MiB)


def measure(xfs, repo, names, variant):
    root = os.path.join(xfs.path, "root-" + variant)
    scenario.drop_caches()
    w0, u0 = xfs.written_bytes(), xfs.used_bytes()
    rc, out, wall = scenario.run_dnf(root, repo.url, ["install"] + names, cow=(variant == "cow"))
    if rc != 0:
        raise SystemExit("demo: dnf failed (%s):\n%s" % (variant, out[-3000:]))
    w1 = xfs.written_bytes()
    scenario.drop_caches()
    u1 = xfs.used_bytes()
    summary = [l for l in out.splitlines() if l.startswith("cow: ") and "of file data" in l]
    return {"wall": wall, "written": w1 - w0, "used": u1 - u0,
            "summary": summary[0] if summary else ""}


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    labels = ["stock dnf", "dnf + cow"]
    metrics = [("wall", "seconds", 1), ("written", "MiB written", scenario.MiB),
               ("used", "MiB of disk used", scenario.MiB)]
    for ax, (key, unit, div) in zip(axes, metrics):
        vals = [results["stock"][key] / div, results["cow"][key] / div]
        bars = ax.bar(labels, vals, color=["#888888", "#2a7ab0"])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_title(unit)
    fig.suptitle("dnf install of %d packages (%s installed)" % (
        results["packages"], _mib(results["installed_bytes"])))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=240, help="installed size of the package set")
    ap.add_argument("--packages", type=int, default=12)
    ap.add_argument("--chart", default=os.path.join(os.getcwd(), "demo.png"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (it mounts a loop XFS image)", file=sys.stderr)
        return 1
    print("rpmcow demo: stock dnf vs copy-on-write dnf, same packages, same XFS\n")
    pkgs = scenario.build_packages(CACHE, args.mib, args.packages,
                                   log=lambda m: print("  " + m, flush=True))
    names = scenario.package_names(pkgs)
    installed = sum(p.size for p in scenario.plan(args.mib, args.packages))
    with scenario.Repository(pkgs) as repo, scenario.LoopXFS(4) as xfs:
        print("  repository %s, %d packages; XFS (reflink) at %s\n" % (repo.url, len(pkgs),
                                                                      xfs.path))
        results = {"packages": len(pkgs), "installed_bytes": installed}
        for variant in ("stock", "cow"):
            print("  dnf install (%s) ..." % variant, flush=True)
            results[variant] = measure(xfs, repo, names, variant)
    s, c = results["stock"], results["cow"]
    row = "  %-26s %12s %12s %8s"
    print()
    print(row % ("", "stock dnf", "dnf + cow", "ratio"))
    print(row % ("wall time (download+install)", "%.2f s" % s["wall"], "%.2f s" % c["wall"],
                 "%.2f" % (c["wall"] / s["wall"])))
    print(row % ("data written to disk", _mib(s["written"]), _mib(c["written"]),
                 "%.2f" % (c["written"] / max(s["written"], 1))))
    print(row % ("disk used (cache + root)", _mib(s["used"]), _mib(c["used"]),
                 "%.2f" % (c["used"] / max(s["used"], 1))))
    if c["summary"]:
        print("\n  " + c["summary"])
    if chart(results, args.chart):
        print("\n  chart: %s" % args.chart)
    print("\n  Both runs kept dnf's cache (keepcache=1): with copy-on-write the cached "
          "extents files and the installed files share their data blocks.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

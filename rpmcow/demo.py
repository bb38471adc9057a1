"""``make demo``: the main job on a built-in default.

On a loop-mounted XFS it creates, with a local repository served on
127.0.0.1 holding realistic packages it builds from this machine's files
(xz and zstd payloads), it runs a stock ``dnf install`` and then the same
install through the cow plugin, each into a fresh installroot, and shows a
table of times, data written and peak/final disk use (dnf's default
keepcache=0), and a PNG chart.  Everything it
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


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    labels = ["stock dnf", "dnf + cow"]
    metrics = [("rpm", "rpm transaction, seconds", 1),
               ("written", "MiB written", scenario.MiB),
               ("peak", "MiB of disk, peak", scenario.MiB)]
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
            results[variant] = scenario.measure_install(xfs, repo, names, variant == "cow",
                                                        "root-" + variant)
    s, c = results["stock"], results["cow"]
    row = "  %-26s %12s %12s %8s"
    print()
    print(row % ("", "stock dnf", "dnf + cow", "ratio"))
    print(row % ("wall time (download+install)", "%.2f s" % s["wall"], "%.2f s" % c["wall"],
                 "%.2f" % (c["wall"] / s["wall"])))
    print(row % ("rpm transaction", "%.2f s" % s["rpm"], "%.2f s" % c["rpm"],
                 "%.2f" % (c["rpm"] / s["rpm"])))
    for key, label in (("written", "data written to disk"), ("peak", "disk used, peak"),
                       ("final", "disk used, at the end")):
        print(row % (label, _mib(s[key]), _mib(c[key]), "%.2f" % (c[key] / max(s[key], 1))))
    if c["cow_summary"]:
        print("\n  " + c["cow_summary"])
    if chart(results, args.chart):
        print("\n  chart: %s" % args.chart)
    print("\n  Both runs use dnf's default keepcache=0.  With copy-on-write the installed "
          "files'\n  data blocks were cloned from the extents files, which dnf then removed "
          "with its cache.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

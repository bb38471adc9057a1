"""``make demo``: the main job on a built-in default.

On a loop-mounted XFS it creates, with a local repository served on
127.0.0.1 holding realistic packages it builds from this machine's files
(xz and zstd payloads), it compares stock ``dnf install`` with the same
install through the cow plugin in three scenarios a user meets:

1. a host installing over the network (the packages served at 100 Mbit/s,
   one link shared by dnf's parallel downloads; dnf's default keepcache=0);
2. a host that keeps its package cache (keepcache=1);
3. image builds: the same packages installed into several roots from one
   cache, as image builders (mkosi) do.

For each: a table, a chart (PNG) and one sentence saying what the user
gains.  Everything it creates is removed at the end (the built packages
are cached in build/).
"""
import argparse
import os
import sys

from . import scenario

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(HERE), "build", "scenario")
LABELS = ("stock dnf", "dnf + cow")
COLORS = ("#888888", "#2a7ab0")


def _mib(n):
    return "%.0f MiB" % (n / scenario.MiB)


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def bars_chart(path, title, s, c):
    plt = _plt()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (key, unit, div) in zip(axes, (("wall", "total time, s", 1),
                                           ("rpm", "rpm transaction, s", 1),
                                           ("peak", "peak disk use, MiB", scenario.MiB),
                                           ("final", "disk use at the end, MiB", scenario.MiB))):
        bars = ax.bar(LABELS, [s[key] / div, c[key] / div], color=COLORS)
        ax.bar_label(bars, fmt="%.1f")
        ax.set_title(unit)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def images_chart(path, title, stock, cow):
    plt = _plt()
    if plt is None:
        return False
    xs = list(range(1, len(stock) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, div, unit in ((axes[0], "wall", 1, "total time, s"),
                               (axes[1], "added", scenario.MiB, "disk used, MiB")):
        for steps, label, color in ((stock, LABELS[0], COLORS[0]), (cow, LABELS[1], COLORS[1])):
            ax.plot(xs, [v / div for v in scenario.cumulative(steps, key)], marker="o",
                    label=label, color=color)
        ax.set_xlabel("roots built from one cache")
        ax.set_xticks(xs)
        ax.set_title(unit)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def table(rows):
    """rows: (label, stock value, cow value, ratio) -> printed lines."""
    fmt = "    %-28s %12s %12s %8s"
    out = [fmt % ("", LABELS[0], LABELS[1], "ratio")]
    for label, s, c, r in rows:
        out.append(fmt % (label, s, c, "%.2f×" % r))
    return out


def install_rows(s, c):
    rows = [("total time", "%.1f s" % s["wall"], "%.1f s" % c["wall"], c["wall"] / s["wall"]),
            ("rpm transaction", "%.1f s" % s["rpm"], "%.1f s" % c["rpm"], c["rpm"] / s["rpm"])]
    for key, label in (("written", "data written to disk"), ("peak", "disk use, peak"),
                       ("final", "disk use, at the end")):
        rows.append((label, _mib(s[key]), _mib(c[key]), c[key] / max(s[key], 1)))
    return rows


def scenario_install(xfs, repo, names, rate, keepcache, tag):
    repo.set_rate(scenario.RATES.get(rate))
    out = {}
    for variant in ("stock", "cow"):
        print("    dnf install (%s) ..." % LABELS[variant == "cow"], flush=True)
        out[variant] = scenario.measure_install(xfs, repo, names, variant == "cow",
                                                "root-%s-%s" % (tag, variant),
                                                keepcache=keepcache)
    return out["stock"], out["cow"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=240, help="installed size of the package set")
    ap.add_argument("--packages", type=int, default=12)
    ap.add_argument("--rate", default="100 Mbit/s", choices=sorted(scenario.RATES),
                    help="network rate of the first scenario")
    ap.add_argument("--roots", type=int, default=5, help="image roots in the third scenario")
    ap.add_argument("--charts", default=os.path.join(os.getcwd(), "demo"),
                    help="directory for the charts (PNG)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (it mounts a loop XFS image)", file=sys.stderr)
        return 1
    print("rpmcow demo: stock dnf vs copy-on-write dnf, same packages, same XFS\n")
    pkgs = scenario.build_packages(CACHE, args.mib, args.packages,
                                   log=lambda m: print("  " + m, flush=True))
    names = scenario.package_names(pkgs)
    installed = sum(p.size for p in scenario.plan(args.mib, args.packages))
    what = "%d packages, %s of .rpm, %s installed" % (
        len(pkgs), _mib(sum(os.path.getsize(p) for p in pkgs)), _mib(installed))
    os.makedirs(args.charts, exist_ok=True)
    charts, story = [], []
    gib = max(4, (args.roots + 4) * installed * 2 // (1 << 30) + 2)
    with scenario.Repository(pkgs) as repo, scenario.LoopXFS(gib) as xfs:
        print("  repository %s (%s); XFS (reflink) at %s\n" % (repo.url, what, xfs.path))

        print("  1. Installing over a %s network (keepcache=0, dnf's default)" % args.rate)
        s, c = scenario_install(xfs, repo, names, args.rate, False, "net")
        print("\n".join(table(install_rows(s, c))))
        path = os.path.join(args.charts, "1-network.png")
        if bars_chart(path, "dnf install over %s, keepcache=0 (%s)" % (args.rate, what), s, c):
            charts.append(path)
        story.append("Over a %s link, dnf + cow finished in %.1f s instead of %.1f s (%.2f×; "
                     "it transcodes each package while it downloads); rpm's part took "
                     "%.2f× as long, with %.2f× the peak disk use."
                     % (args.rate, c["wall"], s["wall"], c["wall"] / s["wall"],
                        c["rpm"] / s["rpm"], c["peak"] / s["peak"]))
        print("    " + story[-1] + "\n")

        print("  2. Keeping the package cache (keepcache=1), local repository")
        s, c = scenario_install(xfs, repo, names, None, True, "keep")
        print("\n".join(table(install_rows(s, c))))
        path = os.path.join(args.charts, "2-keepcache.png")
        if bars_chart(path, "dnf install, keepcache=1 (%s)" % what, s, c):
            charts.append(path)
        story.append("With the cache kept, each package's extents file stays beside it and "
                     "the root shares its blocks: root and cache take %s instead of %s (%.2f×), "
                     "rpm's part %.2f× the time -- and the next install of these packages "
                     "(a reinstall, another root) starts from them."
                     % (_mib(c["final"]), _mib(s["final"]), c["final"] / s["final"],
                        c["rpm"] / s["rpm"]))
        print("    " + story[-1] + "\n")

        print("  3. Image builds: %d roots from one package cache (keepcache=1)" % args.roots)
        repo.set_rate(None)
        runs = {}
        for variant in ("stock", "cow"):
            print("    %s ..." % LABELS[variant == "cow"], flush=True)
            runs[variant] = scenario.image_builds(xfs, repo, names, variant == "cow", args.roots)
        st, cw = runs["stock"], runs["cow"]
        ts, tc = scenario.cumulative(st, "wall")[-1], scenario.cumulative(cw, "wall")[-1]
        ds, dc = scenario.cumulative(st, "added")[-1], scenario.cumulative(cw, "added")[-1]
        ws, wc = scenario.cumulative(st, "written")[-1], scenario.cumulative(cw, "written")[-1]
        print("\n".join(table([("total time, %d roots" % args.roots, "%.1f s" % ts,
                                "%.1f s" % tc, tc / ts),
                               ("data written", _mib(ws), _mib(wc), wc / ws),
                               ("disk used (roots + cache)", _mib(ds), _mib(dc), dc / ds)])))
        path = os.path.join(args.charts, "3-images.png")
        if images_chart(path, "%d image roots from one cache (%s each)" % (args.roots, what),
                        st, cw):
            charts.append(path)
        story.append("Building %d roots from one cache took %.1f s instead of %.1f s (%.2f×) "
                     "and %s of disk instead of %s (%.2f×): every root shares the cached file "
                     "data, and after the first one even the files under one block and last "
                     "partial blocks, from the cache's tail store (share_tails)."
                     % (args.roots, tc, ts, tc / ts, _mib(dc), _mib(ds), dc / ds))
        print("    " + story[-1] + "\n")
    print("  What you gain:")
    for i, line in enumerate(story, 1):
        print("    %d. %s" % (i, line))
    if charts:
        print("\n  charts: %s" % ", ".join(charts))
    else:
        print("\n  (no matplotlib: no charts; `make setup` installs it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

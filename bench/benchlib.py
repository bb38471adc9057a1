"""Shared pieces of the benchmarks: machine description, timing, loop XFS."""
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rpmcow import scenario  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MiB = 1024 * 1024


def machine():
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mib": mem,
            "kernel": platform.release(), "rpm": out(["rpm", "--version"]),
            "python": platform.python_version()}


def compile_bytecode():
    """Compile rpmcow's modules, as an installed rpmcow has them (the RPM
    ships .pyc files).  A source tree edited since its last run, in an
    environment with PYTHONDONTWRITEBYTECODE set, would otherwise compile
    the edited modules again at every command's start (milliseconds per
    module: timing the compiler, not rpmcow)."""
    import compileall
    import rpmcow
    if not compileall.compile_dir(os.path.dirname(rpmcow.__file__), quiet=1):
        raise SystemExit("cannot compile rpmcow's modules")


# one implementation of the machinery, shared with make demo
drop_caches = scenario.drop_caches


def used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def run_timed(argv, env=None, cwd=None):
    """(wall seconds, cpu seconds (children user+sys), wall incl. sync)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    t1 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    t2 = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[0], r.returncode, r.stderr[-2000:]))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return t1 - t0, cpu, t2 - t0


def save_results(name, res, lines):
    """bench/results/NAME.json (res) and NAME.md (lines); prints the table.
    Returns the results directory (for a plot beside them)."""
    import json
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def replot(path, write):
    """--replot JSON: a benchmark's table and chart written again from its
    results file (write: the benchmark's writer).  False when not asked."""
    if not path:
        return False
    import json
    with open(path) as f:
        write(json.load(f))
    return True


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def loop_xfs(size_gib):
    """A reflink-capable XFS, loop-mounted; always unmounted and removed."""
    return scenario.LoopXFS(size_gib)


def plot_bars(path, title, groups, series, ylabel):
    """groups: labels on x; series: {name: [values per group]}.  Returns
    False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def install_table(med, ratio, labels, wall_target="1.0"):
    """The dnf benchmarks' table (markdown lines): medians of stock and cow
    (labels: (stock label, cow label)) and their ratio against the targets."""
    lines = ["| | total wall | rpm transaction | written to disk | peak disk use | final disk use |",
             "|---|---|---|---|---|---|"]
    for v, label in zip(("stock", "cow"), labels):
        lines.append("| %s | %.2f s | %.2f s | %.0f MiB | %.0f MiB | %.0f MiB |" % (
            label, med[v]["wall"], med[v]["rpm"], med[v]["written"] / MiB, med[v]["peak"] / MiB,
            med[v]["final"] / MiB))
    lines.append("| **ratio** (target) | **%.2f×** (≤ %s) | **%.2f×** (≤ 0.5) | %.2f× | "
                 "**%.2f×** (≤ 1.0) | %.2f× |" % (ratio["wall"], wall_target, ratio["rpm"],
                                                  ratio["written"], ratio["peak"],
                                                  ratio["final"]))
    return lines

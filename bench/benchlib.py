"""Shared pieces of the benchmarks: machine description, timing, loop XFS."""
import contextlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

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


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


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


def median(xs):
    return statistics.median(xs) if xs else float("nan")


@contextlib.contextmanager
def loop_xfs(size_gib, where=None):
    """A reflink-capable XFS, loop-mounted; always unmounted and removed."""
    tmp = tempfile.mkdtemp(prefix="rpmcow-bench-", dir=where)
    img, mnt = os.path.join(tmp, "xfs.img"), os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    mounted = False
    try:
        with open(img, "wb") as f:
            f.truncate(size_gib << 30)
        subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", img], check=True)
        subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
        mounted = True
        yield mnt
    finally:
        if mounted:
            for _ in range(10):
                if subprocess.run(["umount", mnt]).returncode == 0:
                    break
                time.sleep(0.5)
        shutil.rmtree(tmp, ignore_errors=True)


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

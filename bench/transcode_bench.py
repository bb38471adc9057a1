#!/usr/bin/env python3
"""Transcoder benchmark: ``rpmcow transcode`` against the decompression floor.

    .venv/bin/python bench/transcode_bench.py [--runs 5]      (or: make bench)

1. Build (or reuse from bench/work/) two large realistic packages with
   rpmbuild, zstd level 19 and xz level 9 payloads (bench/largepkg.py), and a
   small one of each for the memory comparison.
2. Cut each payload out of its package (everything after the main header).
3. Time, alternating, N runs each: the floor -- single-threaded
   ``zstd -dc -T1`` / ``xz -dc -T1`` of the payload to /dev/null -- and
   ``rpmcow transcode PKG -o OUT`` writing to bench/work (same disk), OUT
   removed between runs.  ``sync`` before every timed run; inputs are read
   from the page cache (warmed before timing).  Peak RSS and CPU time come
   from /usr/bin/time around each command, wall time from the script.
4. Write bench/results/transcode.{md,json,png}.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
import largepkg  # noqa: E402

MiB = 1024 * 1024

# (label, rpm _binary_payload, floor command).  Compression threads (T2) only
# speed up building; the payload is still one zstd frame / one xz stream and
# decompressing it is single-threaded either way.
COMPRESSORS = [
    ("zstd-19", "w19T2.zstdio", ["zstd", "-dc", "-T1"]),
    ("xz-9", "w9T2.xzdio", ["xz", "-dc", "-T1"]),
]

PAYLOAD_MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz"}

# rpmcow's peak RSS above the floor's may be larger on the large package than
# on the small one by this much before we call it "grows with package size".
RSS_GROWTH_SLACK_KB = 8 * 1024


# -- machine ------------------------------------------------------------------

def _cmd_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        return (r.stdout or r.stderr).strip()
    except OSError:
        return "unavailable"


def describe_machine(workdir):
    base = benchlib.machine()
    fs = _cmd_out(["df", "--output=fstype,source", workdir]).splitlines()
    commit = _cmd_out(["git", "rev-parse", "--short", "HEAD"])
    dirty = _cmd_out(["git", "status", "--porcelain", "--", "rpmcow", "csrc"])
    return {
        "nproc": int(_cmd_out(["nproc"]) or 0),
        "cpu": base["cpu"],
        "memory_gib": round(base["memory_mib"] / 1024, 1),
        "kernel": platform.release(),
        "os": _os_release(),
        "rpm": _cmd_out(["rpm", "--version"]),
        "zstd": _cmd_out(["zstd", "--version"]).splitlines()[0].strip("* "),
        "xz": _cmd_out(["xz", "--version"]).splitlines()[0],
        "python": platform.python_version(),
        "rpmcow": _cmd_out([rpmcow_exe(), "--version"]),
        "rpmcow_commit": commit + (" (rpmcow/ or csrc/ modified)" if dirty else ""),
        "workdir_fs": fs[-1] if fs else "unknown",
        "loadavg_start": "%.2f %.2f %.2f" % os.getloadavg(),
    }


def _os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def rpmcow_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "rpmcow")
    return exe if os.path.exists(exe) else shutil.which("rpmcow") or "rpmcow"


# -- packages -----------------------------------------------------------------

def build_packages(workdir):
    """{(profile, label): path} for the large and small package of each
    compressor, built or taken from the cache."""
    pkgs = {}
    for profile in ("small", "reference", "large"):
        for label, define, _ in COMPRESSORS:
            pkgs[profile, label] = largepkg.build_large_package(
                workdir, define, name="rpmcow-bench-" + profile, profile=profile)
    return pkgs


def describe_package(path):
    """Sizes and file counts as the package header states them."""
    q = ["rpm", "-qp", "--nosignature", "--nodigest"]
    head = subprocess.run(q + ["--qf", "%{LONGSIZE} %{PAYLOADCOMPRESSOR} %{PAYLOADFLAGS}\\n",
                               path], capture_output=True, text=True, check=True).stdout.split()
    rows = subprocess.run(q + ["--qf", "[%{FILEMODES} %{FILENLINKS} %{FILEDIGESTS}\\n]", path],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    counts = {"regular": 0, "dirs": 0, "symlinks": 0, "hardlinked": 0}
    digests = set()
    for row in rows:
        parts = row.split()
        mode, nlink = int(parts[0]), int(parts[1])
        fmt = mode & 0o170000
        if fmt == 0o100000:
            counts["regular"] += 1
            counts["hardlinked"] += nlink > 1
            if len(parts) > 2:
                digests.add(parts[2])
        elif fmt == 0o040000:
            counts["dirs"] += 1
        elif fmt == 0o120000:
            counts["symlinks"] += 1
    info = largepkg.package_info(path)
    return dict(
        path=os.path.relpath(path, REPO), rpm_bytes=os.path.getsize(path),
        payload_bytes=os.path.getsize(path) - payload_offset(path),
        installed_bytes=int(head[0]), compressor="%s %s" % (head[1], head[2]),
        header_files=len(rows), distinct_contents=len(digests),
        duplicate_copies=info["duplicate_copies"], extra_hardlinks=info["extra_hardlinks"],
        recipe_key=info["recipe_key"], roots=info["roots"], **counts)


def payload_offset(path):
    """Offset of the payload: lead (96 bytes), signature header padded to 8,
    then the main header; each header is 16 bytes of intro (magic, reserved,
    big-endian index count il and data length dl) + 16*il + dl."""
    with open(path, "rb") as f:
        if f.read(4) != b"\xed\xab\xee\xdb":
            raise ValueError("%s: not an rpm (bad lead magic)" % path)
        off = 96
        for pad in (True, False):
            f.seek(off)
            intro = f.read(16)
            if intro[:3] != b"\x8e\xad\xe8":
                raise ValueError("%s: bad header magic at %d" % (path, off))
            il, dl = struct.unpack(">II", intro[8:16])
            off += 16 + 16 * il + dl
            if pad:
                off += -off % 8
    return off


def extract_payload(pkg, workdir):
    """Write the payload bytes of pkg to a file in workdir (cached) and
    return (path, kind) with kind "zstd" or "xz"."""
    off = payload_offset(pkg)
    with open(pkg, "rb") as f:
        f.seek(off)
        magic = f.read(6)
    kind = next((k for m, k in PAYLOAD_MAGIC.items() if magic.startswith(m)), None)
    if kind is None:
        raise ValueError("%s: unknown payload magic %r" % (pkg, magic))
    dest = os.path.join(workdir, os.path.basename(pkg) + ".payload." + kind)
    want = os.path.getsize(pkg) - off
    if not (os.path.exists(dest) and os.path.getsize(dest) == want):
        with open(pkg, "rb") as src, open(dest + ".tmp", "wb") as dst:
            src.seek(off)
            shutil.copyfileobj(src, dst, 4 * MiB)
        os.replace(dest + ".tmp", dest)
    return dest, kind


# -- timing -------------------------------------------------------------------

@dataclass
class Run:
    wall_s: float
    rss_kb: int
    cpu_s: float      # user + system


TIME = "/usr/bin/time"


def time_command(argv, stdout=os.devnull):
    """Run argv once after sync, under GNU time for peak RSS and CPU time
    (wait4() in this process would not do: Linux folds the RSS of the forking
    parent into the child's ru_maxrss); wall time measured here."""
    subprocess.run(["sync"], check=True)
    with open(stdout, "wb") as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rep:
        t0 = time.perf_counter()
        rc = subprocess.run([TIME, "-o", rep.name, "-f", "%M %U %S"] + argv,
                            stdout=out, stderr=err).returncode
        wall = time.perf_counter() - t0
        if rc != 0:
            err.seek(0)
            raise RuntimeError("%s exited %d: %s" % (" ".join(argv), rc,
                                                    err.read().decode(errors="replace")[-2000:]))
        rss, user, sys_ = rep.read().split()[-3:]
    return Run(wall, int(rss), float(user) + float(sys_))


# The dnf plugin transcodes in dnf's own process: no interpreter start and
# no imports per package.  This worker measures that: it imports rpmcow once,
# transcodes once untimed, then times transcode_path() per request (after
# sync, like every other timed run).
INPROCESS_WORKER = r"""
import os, sys, time
from rpmcow import transcode
for line in sys.stdin:
    pkg, out = line.rstrip("\n").split("\t")
    os.sync()
    t0 = time.perf_counter()
    transcode.transcode_path(pkg, out)
    print("%.6f" % (time.perf_counter() - t0), flush=True)
    os.unlink(out)
"""


class InProcess:
    """A Python process with rpmcow imported that transcodes on request."""

    def __init__(self):
        py = os.path.join(os.path.dirname(rpmcow_exe()), "python")
        self.proc = subprocess.Popen([py if os.path.exists(py) else sys.executable, "-c",
                                      INPROCESS_WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=REPO)

    def transcode(self, pkg, out):
        """Wall time of one transcode_path(pkg, out), in seconds."""
        self.proc.stdin.write("%s\t%s\n" % (pkg, out))
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the in-process worker died (see its stderr above)")
        return float(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def warm(path):
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def summarize(runs):
    return {
        "wall_s_median": statistics.median(r.wall_s for r in runs),
        "wall_s_min": min(r.wall_s for r in runs),
        "rss_kb_median": int(statistics.median(r.rss_kb for r in runs)),
        "cpu_s_median": statistics.median(r.cpu_s for r in runs),
        "runs": [asdict(r) for r in runs],
    }


def _ratio(a, b):
    return a / b if b else None


def _x(ratio):
    return "n/a" if ratio is None else "%.2fx" % ratio


def measure(pkg, floor_cmd, workdir, runs):
    """Floor and rpmcow, alternating, `runs` times each."""
    payload, _ = extract_payload(pkg, workdir)
    out = os.path.join(workdir, "out-" + os.path.basename(pkg) + "e")
    warm(pkg)
    warm(payload)
    floor, ours, inproc = [], [], []
    load = os.getloadavg()[0]
    worker = InProcess()
    try:
        worker.transcode(pkg, out + ".warmup")      # imports, first-use costs: untimed
        for i in range(runs):
            floor.append(time_command(floor_cmd + [payload]))
            if os.path.exists(out):
                os.unlink(out)
            ours.append(time_command([rpmcow_exe(), "transcode", pkg, "-o", out, "-q"]))
            inproc.append(worker.transcode(pkg, out + ".inprocess"))
            print("  run %d/%d: floor %.2fs %d KiB, rpmcow %.2fs %d KiB, in-process %.2fs"
                  % (i + 1, runs, floor[-1].wall_s, floor[-1].rss_kb, ours[-1].wall_s,
                     ours[-1].rss_kb, inproc[-1]), file=sys.stderr, flush=True)
    finally:
        worker.close()
    out_bytes = os.path.getsize(out)
    os.unlink(out)
    f, o = summarize(floor), summarize(ours)
    ip = {"wall_s_median": statistics.median(inproc), "wall_s_min": min(inproc),
          "runs": inproc}
    return {
        "floor_cmd": " ".join(floor_cmd + ["PAYLOAD"]) + " > /dev/null",
        "rpmcow_cmd": "rpmcow transcode PKG -o OUT",
        "floor": f, "rpmcow": o, "inprocess": ip,
        "ratio_wall": _ratio(o["wall_s_median"], f["wall_s_median"]),
        "ratio_wall_inprocess": _ratio(ip["wall_s_median"], f["wall_s_median"]),
        "ratio_wall_best": _ratio(o["wall_s_min"], f["wall_s_min"]),
        "ratio_cpu": _ratio(o["cpu_s_median"], f["cpu_s_median"]),   # GNU time: 10 ms steps
        "ratio_rss": _ratio(o["rss_kb_median"], f["rss_kb_median"]),
        "output_bytes": out_bytes,
        "loadavg_1m_before": load,
    }


def interpreter_baseline():
    """Peak RSS of just starting rpmcow's interpreter and importing it."""
    py = os.path.join(os.path.dirname(rpmcow_exe()), "python")
    r = time_command([py if os.path.exists(py) else sys.executable, "-c",
                      "import rpmcow.cli, rpmcow.transcode"])
    return r.rss_kb


# -- results ------------------------------------------------------------------

def _mib(n):
    return "%.1f MiB" % (n / MiB)


def _kib(kb):
    return "%.1f MiB" % (kb / 1024)


def render_markdown(res):
    m = res["machine"]
    L = ["# Transcoder benchmark: `rpmcow transcode` vs. decompression floor", "",
         "Generated by `bench/transcode_bench.py` on %s, median of %d runs."
         % (res["date"], res["runs"]), "",
         "## Machine", "", "| | |", "|---|---|"]
    for k, label in [("cpu", "CPU"), ("nproc", "nproc"), ("memory_gib", "memory (GiB)"),
                     ("kernel", "kernel"), ("os", "OS"), ("rpm", "rpm"), ("zstd", "zstd"),
                     ("xz", "xz"), ("python", "python"), ("rpmcow", "rpmcow"),
                     ("rpmcow_commit", "rpmcow commit"), ("workdir_fs", "bench/work fs"),
                     ("loadavg_start", "load average at start"),
                     ("loadavg_end", "load average at end")]:
        L.append("| %s | %s |" % (label, m.get(k, "")))
    L += ["", "## Packages", "",
          "Built by `bench/largepkg.py` from copies of files on this machine (roots: %s), "
          "plus byte-identical copies and extra hard links." % ", ".join(
              "`%s`" % r for r in res["packages"]["large/zstd-19"]["roots"] if r), "",
          "| package | payload | .rpm size | payload size | installed | header entries "
          "| regular | dirs | symlinks | hardlinked | distinct contents |",
          "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key, p in res["packages"].items():
        L.append("| %s | %s | %s | %s | %s | %d | %d | %d | %d | %d | %d |" % (
            key, p["compressor"], _mib(p["rpm_bytes"]), _mib(p["payload_bytes"]),
            _mib(p["installed_bytes"]), p["header_files"], p["regular"], p["dirs"],
            p["symlinks"], p["hardlinked"], p["distinct_contents"]))
    L += ["", "## Wall time and memory (large packages)", "",
          "`large`: 25.8k header entries in 337 MiB (many small files); `reference`: 10.9k "
          "entries in 332 MiB, the shape of the package measured in "
          "`../shared/reference/stock-rpm-cow.md`.", "",
          "| payload | floor wall | rpmcow wall | wall ratio | best-run ratio "
          "| in-process wall | in-process ratio | floor CPU "
          "| rpmcow CPU | CPU ratio | floor peak RSS | rpmcow peak RSS | output |",
          "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for label, r in res["results"].items():
        if label.startswith("small/"):
            continue
        f, o, ip = r["floor"], r["rpmcow"], r["inprocess"]
        L.append("| %s | %.2f s | %.2f s | **%s** | %s | %.2f s | **%s** | %.2f s | %.2f s "
                 "| %s | %s | %s | %s |" % (
                     label, f["wall_s_median"], o["wall_s_median"],
                     _x(r["ratio_wall"]), _x(r["ratio_wall_best"]),
                     ip["wall_s_median"], _x(r["ratio_wall_inprocess"]),
                     f["cpu_s_median"], o["cpu_s_median"],
                     _x(r["ratio_cpu"]),
                     _kib(f["rss_kb_median"]), _kib(o["rss_kb_median"]),
                     _mib(r["output_bytes"])))
    L += ["", "Floor: `zstd -dc -T1` / `xz -dc -T1` of the payload bytes (cut out after the "
          "main header) to /dev/null. rpmcow: `rpmcow transcode PKG -o OUT`, OUT on the same "
          "disk and removed between runs. Ratio = rpmcow / floor of the medians; best-run "
          "ratio = of the fastest runs. CPU = user + system time. In-process: "
          "`transcode_path(PKG, OUT)` in a Python process that has rpmcow imported already, "
          "as the dnf plugin runs it (no interpreter start, no imports), timed in that "
          "process; same verification, same output. Every run is in the JSON.", "",
          "## Peak RSS vs. package size", "",
          "| payload | rpmcow small | rpmcow large | growth | floor small | floor large "
          "| floor growth | rpmcow − floor, small → large | grows with size? |",
          "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for label, g in res["rss_growth"].items():
        L.append("| %s | %s | %s | %+.1f MiB | %s | %s | %+.1f MiB | %s → %s | %s |" % (
            label, _kib(g["rpmcow_small_kb"]), _kib(g["rpmcow_large_kb"]), g["growth_kb"] / 1024,
            _kib(g["floor_small_kb"]), _kib(g["floor_large_kb"]), g["floor_growth_kb"] / 1024,
            _kib(g["overhead_small_kb"]), _kib(g["overhead_large_kb"]),
            "**YES**" if g["grows"] else "no"))
    L += ["", "The floor itself grows: the decoder's window (zstd) or dictionary (xz) is sized "
          "from the payload, and a small payload declares a small one. What rpmcow adds on "
          "top of the floor (rpmcow − floor) is what must stay flat in the payload's size; "
          "it does grow with the number of header entries (the header itself, librpm's "
          "parsed copy and the C file table):", "",
          "| payload | rpmcow − floor: small / reference / large | per 1,000 header entries "
          "| peak RSS, largest (target ≤ 64 MiB) |", "|---|---|--:|--:|"]
    for label, g in res["rss_growth"].items():
        L.append("| %s | %s / %s / %s | %.2f MiB | %s |" % (
            label, _kib(g["overhead_small_kb"]), _kib(g["overhead_reference_kb"]),
            _kib(g["overhead_large_kb"]), g["per_1000_entries_kb"] / 1024,
            _kib(max(g["rpmcow_large_kb"], g["rpmcow_reference_kb"]))))
    L += ["", "Small packages: %s. Starting rpmcow's interpreter and importing it alone "
          "peaks at %s." % (", ".join(
              "%s %s installed in %d entries" % (k, _mib(p["installed_bytes"]), p["header_files"])
              for k, p in res["packages"].items() if k.startswith("small/")),
              _kib(res["interpreter_rss_kb"])),
          "", "## Method", ""]
    L += ["* %s" % n for n in res["notes"]]
    L.append("")
    return "\n".join(L)


def render_plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plot written (install it with "
              "`.venv/bin/pip install -r bench/requirements.txt`); md and json are written",
              file=sys.stderr)
        return False
    labels = [k.split("/", 1)[1] for k in res["results"] if k.startswith("large/")]
    rows = [res["results"]["large/" + k] for k in labels]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    x = range(len(labels))
    w = 0.27
    floor = [r["floor"]["wall_s_median"] for r in rows]
    ax.bar([i - w for i in x], floor, w, label="floor: single-threaded decompress",
           color="#9aa7b1")
    for off, key, ratio, label, color in (
            (0, "rpmcow", "ratio_wall", "rpmcow transcode (CLI)", "#2b6cb0"),
            (w, "inprocess", "ratio_wall_inprocess", "in-process (as the dnf plugin)",
             "#6baed6")):
        bars = ax.bar([i + off for i in x], [r[key]["wall_s_median"] for r in rows], w,
                      label=label, color=color)
        for b, r in zip(bars, rows):
            ax.annotate(_x(r[ratio]), (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", xytext=(0, 2), textcoords="offset points",
                        fontweight="bold", fontsize=8)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("wall time, median of %d (s)" % res["runs"])
    ax.set_title("Large package (%s installed)" % _mib(
        res["packages"]["large/zstd-19"]["installed_bytes"]))
    ax.legend(loc="upper left", fontsize=8)
    ax.margins(y=0.15)

    groups = list(res["rss_growth"])
    sizes = [("small", "#c6dbef"), ("large", "#2b6cb0")]
    for j, (size, color) in enumerate(sizes):
        vals = [res["rss_growth"][g]["rpmcow_%s_kb" % size] / 1024 for g in groups]
        bs = ax2.bar([i + (j - 0.5) * w for i in range(len(groups))], vals, w,
                     label="rpmcow, %s package" % size, color=color)
        for b, v in zip(bs, vals):
            ax2.annotate("%.0f" % v, (b.get_x() + b.get_width() / 2, v), ha="center",
                         va="bottom", xytext=(0, 2), textcoords="offset points", fontsize=8)
    for i, g in enumerate(groups):
        for j, (size, _) in enumerate(sizes):
            fl = res["rss_growth"][g]["floor_%s_kb" % size] / 1024
            xc = i + (j - 0.5) * w
            ax2.plot([xc - w / 2, xc + w / 2], [fl, fl], color="#d9480f", lw=2,
                     label="floor, same package" if i == j == 0 else None)
    ax2.set_xticks(range(len(groups)), groups)
    ax2.set_ylabel("peak RSS, median (MiB)")
    ax2.set_title("Peak memory: small vs. large package")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.margins(y=0.15)
    fig.suptitle("rpmcow transcode vs. decompression floor — %s, %d CPUs, %s"
                 % (res["machine"]["cpu"], res["machine"]["nproc"], res["date"][:10]),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ---------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    ap.add_argument("--workdir", default=os.path.join(HERE, "work"),
                    help="package cache and scratch space (default bench/work)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"),
                    help="where transcode.{md,json,png} go (default bench/results)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if not os.access(TIME, os.X_OK):
        ap.error("%s is missing: install GNU time (apt-get install time)" % TIME)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    os.makedirs(args.results, exist_ok=True)

    benchlib.compile_bytecode()
    machine = describe_machine(workdir)
    pkgs = build_packages(workdir)
    packages = {"%s/%s" % k: describe_package(p) for k, p in pkgs.items()}

    results = {}
    for (profile, label), pkg in sorted(pkgs.items(), key=lambda kv: kv[0][0] != "large"):
        floor_cmd = next(c for lbl, _, c in COMPRESSORS if lbl == label)
        print("measuring %s/%s (%s)" % (profile, label, os.path.basename(pkg)),
              file=sys.stderr, flush=True)
        results["%s/%s" % (profile, label)] = measure(pkg, floor_cmd, workdir, args.runs)

    rss_growth = {}
    for label, _, _ in COMPRESSORS:
        s, g = results["small/" + label], results["large/" + label]
        growth = g["rpmcow"]["rss_kb_median"] - s["rpmcow"]["rss_kb_median"]
        over_s = s["rpmcow"]["rss_kb_median"] - s["floor"]["rss_kb_median"]
        over_g = g["rpmcow"]["rss_kb_median"] - g["floor"]["rss_kb_median"]
        rss_growth[label] = {
            "rpmcow_small_kb": s["rpmcow"]["rss_kb_median"],
            "rpmcow_large_kb": g["rpmcow"]["rss_kb_median"],
            "growth_kb": growth,
            "floor_small_kb": s["floor"]["rss_kb_median"],
            "floor_large_kb": g["floor"]["rss_kb_median"],
            "floor_growth_kb": g["floor"]["rss_kb_median"] - s["floor"]["rss_kb_median"],
            "overhead_small_kb": over_s,
            "overhead_large_kb": over_g,
            "grows": over_g - over_s > max(RSS_GROWTH_SLACK_KB, over_s // 10),
        }
        r = results["reference/" + label]
        over_r = r["rpmcow"]["rss_kb_median"] - r["floor"]["rss_kb_median"]
        n_s = packages["small/" + label]["header_files"]
        n_g = packages["large/" + label]["header_files"]
        rss_growth[label].update(
            rpmcow_reference_kb=r["rpmcow"]["rss_kb_median"], overhead_reference_kb=over_r,
            per_1000_entries_kb=(over_g - over_s) * 1000.0 / max(n_g - n_s, 1))

    machine["loadavg_end"] = "%.2f %.2f %.2f" % os.getloadavg()
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": args.runs,
        "machine": machine,
        "packages": packages,
        "results": results,
        "rss_growth": rss_growth,
        "interpreter_rss_kb": interpreter_baseline(),
        "notes": [
            "Each timed run is preceded by `sync`; the page cache is not dropped: the "
            "package and payload files are read once before timing, so inputs come from "
            "the page cache.",
            "Floor and rpmcow runs alternate, so background load affects both alike. The "
            "machine may be shared with other jobs (see the load averages above; the 1-minute "
            "load before each package is `loadavg_1m_before` in the JSON): wall times then "
            "scatter, CPU times much less. CPU = user + system time of the process and its "
            "children.",
            "rpmcow's modules are compiled to bytecode before the runs, as an installed "
            "rpmcow ships them (an edited source tree under PYTHONDONTWRITEBYTECODE would "
            "otherwise compile its edited modules at every start).",
            "Peak RSS (%M) and CPU time (%U + %S) come from GNU time wrapped around each "
            "command; wall time is measured around it by the script (includes the ~1 ms of "
            "starting GNU time). rpmcow's RSS includes its Python interpreter.",
            "Packages are built with rpmbuild --nodeps, AutoReqProv off, no "
            "__os_install_post/__arch_install_post, `_build_id_links none`, "
            "SOURCE_DATE_EPOCH, and cached in bench/work keyed by a hash of the recipe "
            "(selected files with sizes and mtimes, compressor, spec, rpm version).",
            "Payloads: `w19T2.zstdio` and `w9T2.xzdio`. The T2 only speeds up building; "
            "decompression is single-threaded for both, floor and rpmcow alike.",
            "\"grows with size?\" is YES when rpmcow's peak RSS above the floor's (rpmcow − "
            "floor) is larger on the large package than on the small one by more than "
            "max(%d KiB, 10%%)." % RSS_GROWTH_SLACK_KB,
        ],
    }

    base = os.path.join(args.results, "transcode")
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=2, sort_keys=False)
        f.write("\n")
    with open(base + ".md", "w") as f:
        f.write(render_markdown(res))
    plotted = render_plot(res, base + ".png")
    print("wrote %s.md, %s.json%s" % (base, base, ", %s.png" % base if plotted else ""),
          file=sys.stderr)
    for label, r in results.items():
        print("%-14s floor %6.2fs %7d KiB | rpmcow %6.2fs %7d KiB | wall %s"
              % (label, r["floor"]["wall_s_median"], r["floor"]["rss_kb_median"],
                 r["rpmcow"]["wall_s_median"], r["rpmcow"]["rss_kb_median"], _x(r["ratio_wall"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

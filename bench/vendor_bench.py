#!/usr/bin/env python3
"""Benchmark: `dnf upgrade` resolution with and without the sticky-vendor plugin.

Builds (once, cached in --workdir) a synthetic world with real packages:
  repo alpha: NAMES names x versions 1.0 and 1.1, vendor "Alpha Corp"
  repo beta:  BETA names x version 2.0, vendor "Beta Inc"   (newer: held back)
  root:       the first INSTALLED names at 1.0 (Alpha), installed with rpm --justdb
Every package requires another one, so the solver has work to do.  With the
defaults that is 25,000 repository packages, 2,000 installed, and every
installed package has an update at both vendors (the worst case for the
plugin: 2,000 held-back updates, so it also runs its two extra solves).

Measures, alternating with/without the plugin in the same run:
  * resolve: in one process, sack loaded once: stock = upgrade_all solve;
    plugin = plan (policy decisions, excludes) + the solve + the check for
    updates held back through a dependency (what the plugin does for upgrade)
  * dnf API: fill_sack + upgrade_all + resolve in a fresh process, with the
    plugin's real hooks (a stub CLI says the command is `upgrade`) -- dnf's
    resolution of `dnf upgrade` as a user waits for it, without the output
  * cli: wall time of `dnf upgrade --assumeno` (python start, config, sack
    load from the solv cache, plugin hooks, solve, transaction table)

    .venv/bin/python bench/vendor_bench.py [--runs 5] [--names 10000 ...]

Writes bench/results/vendor.json and bench/results/vendor.md.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# dnf 4 (on Fedora 41 and later `dnf` is dnf5)
DNF = next((p for p in ("/usr/bin/dnf-3", "/usr/bin/dnf4") if os.access(p, os.X_OK)),
           "/usr/bin/dnf")
SYS_PY = "/usr/bin/python3"


def spec(name, version, vendor, names, n_names, n_installed):
    lines = ["Name: %s" % name, "Version: %s" % version, "Release: 1", "Summary: bench",
             "License: MIT", "Vendor: %s" % vendor, "BuildArch: noarch", "%description",
             "bench", "%files"]
    for i in names:
        # installed names depend on installed names, so an upgrade pulls in nothing new
        dep = (i * 7 + 3) % (n_installed if i < n_installed else n_names)
        lines += ["%%package -n p%05d" % i, "Summary: bench package %d" % i,
                  "Version: %s" % version]
        if dep != i:
            lines.append("Requires: p%05d" % dep)
        lines += ["%%description -n p%05d" % i, "bench", "%%files -n p%05d" % i]
    return "\n".join(lines) + "\n"


def rpmbuild(work, name, text):
    top = work / ("build-" + name)
    for sub in ("BUILD", "RPMS", "SOURCES", "SPECS", "SRPMS", "BUILDROOT"):
        (top / sub).mkdir(parents=True, exist_ok=True)
    path = top / "SPECS" / (name + ".spec")
    path.write_text(text)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--nodeps", "--define", "_topdir %s" % top,
                    "--define", "_build_id_links none", "--define", "__os_install_post %{nil}",
                    "--define", "_binary_payload w1.gzdio", str(path)],
                   check=True, capture_output=True, env=dict(os.environ, HOME=str(top)))
    return sorted((top / "RPMS" / "noarch").glob("p*.rpm"))


def build(work, names, beta, installed, makecache=True):
    """Build the world in `work` (cached: a stamp records the parameters):
    repositories alpha and beta, repos.d/, dnf.conf, and root/ with the
    first `installed` names at 1.0 (rpm --justdb).  makecache: also fill dnf
    4's cache and its plugin configuration (bench/vendor_dnf5_bench.py, on
    dnf5, does not).  Shared by both vendor benchmarks."""
    stamp = work / "done.json"
    params = {"names": names, "beta": beta, "installed": installed, "v": 3}
    if not makecache:
        params["makecache"] = False          # (the dnf 4 bench's cached worlds stay valid)
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    repos = {"alpha": [], "beta": []}
    repos["alpha"] += rpmbuild(work, "a10", spec("a10", "1.0", "Alpha Corp", range(names), names,
                                                 installed))
    repos["alpha"] += rpmbuild(work, "a11", spec("a11", "1.1", "Alpha Corp", range(names), names,
                                                 installed))
    repos["beta"] += rpmbuild(work, "b20", spec("b20", "2.0", "Beta Inc", range(beta), names,
                                               installed))
    for repo, rpms in repos.items():
        d = work / "repos" / repo
        d.mkdir(parents=True)
        for r in rpms:
            os.link(r, d / r.name)
        subprocess.run(["createrepo_c", "--quiet", "--no-database", "--workers", "2", str(d)],
                       check=True)
    (work / "repos.d").mkdir()
    for repo in repos:
        (work / "repos.d" / (repo + ".repo")).write_text(
            "[%s]\nname=%s\nbaseurl=file://%s\ngpgcheck=0\nmetadata_expire=-1\n"
            % (repo, repo, work / "repos" / repo))
    (work / "dnf.conf").write_text("[main]\ngpgcheck=0\ninstall_weak_deps=0\nbest=False\n")
    rootdir = work / "root"
    rootdir.mkdir()
    inst = [work / "repos" / "alpha" / ("p%05d-1.0-1.noarch.rpm" % i) for i in range(installed)]
    subprocess.run(["rpm", "--root", str(rootdir), "-i", "--justdb", "--nodeps", "--noscripts"]
                   + [str(p) for p in inst], check=True, env=env(), capture_output=True)
    if makecache:
        conf = work / "pluginconf"
        conf.mkdir()
        shutil.copy(ROOT / "dnf-plugins" / "sticky-vendor.conf", conf / "sticky-vendor.conf")
        subprocess.run(dnf_cmd(work, "makecache", cacheonly=False), check=True,
                       capture_output=True, env=env())
    stamp.write_text(json.dumps(params))
    print("built the world in %.0f s" % (time.monotonic() - t0), file=sys.stderr)


def env():
    return dict(os.environ, HOME="/root", LC_ALL="C.UTF-8", LANG="C.UTF-8")


def dnf_cmd(work, *args, plugin=True, cacheonly=True):
    cmd = [DNF, "-c", str(work / "dnf.conf"), "--installroot", str(work / "root"),
           "--releasever", "1", "--setopt=reposdir=%s" % (work / "repos.d"),
           "--setopt=pluginpath=%s" % (ROOT / "dnf-plugins"),
           "--setopt=pluginconfpath=%s" % (work / "pluginconf"),
           "--setopt=cachedir=%s" % (work / "root" / "var/cache/dnf"),
           "--disableplugin=cow"] + (["-C"] if cacheonly else [])
    if not plugin:
        cmd.append("--disableplugin=sticky-vendor")
    return cmd + list(args)


# A dnf.Base on the benchmark's world, offline (shared by both scripts below).
BASE = r'''
b = dnf.Base()
b.conf.read(os.path.join(work, "dnf.conf"))
b.conf.installroot = os.path.join(work, "root")
b.conf.reposdir = [os.path.join(work, "repos.d")]
b.conf.cachedir = os.path.join(work, "root", "var/cache/dnf")
b.conf.cacheonly = True
b.conf.substitutions["releasever"] = "1"
'''


# dnf's own resolution through its API, with the real plugin hooks (a stub
# CLI says the command is `upgrade`): fill_sack (sack hook) + upgrade_all +
# resolve (solve, transaction, resolved hook).  One process per mode and run.
API = r'''
import argparse, json, logging, os, sys, time
import dnf
work, plugin = %(work)r, %(plugin)r
class Cmd:
    aliases = ("upgrade",)
    opts = argparse.Namespace(pkg_specs=[], filenames=[], grp_specs=[])
class Cli:
    command = Cmd()
    def register_command(self, c):
        pass
''' + BASE + r'''
b.conf.pluginpath = [%(plugins)r]
b.conf.pluginconfpath = [os.path.join(work, "pluginconf")]
b.init_plugins(["cow"] + ([] if plugin else ["sticky-vendor"]), [], Cli())
b.read_all_repos()
logging.getLogger("dnf").setLevel(logging.WARNING)
t0 = time.perf_counter()
b.fill_sack(load_system_repo=True, load_available_repos=True)
t1 = time.perf_counter()
b.upgrade_all()
b.resolve()
t2 = time.perf_counter()
print(json.dumps({"sack": t1 - t0, "resolve": t2 - t1, "total": t2 - t0,
                  "upgrades": len(b.transaction)}))
'''


# In-process timing, run with the system python (dnf's bindings).
INPROC = r'''
import json, os, sys, time
sys.path.insert(0, %(root)r)
import dnf, hawkey
from rpmcow.vendorpolicy import formats, sack as sack_mod
work = %(work)r
''' + BASE + r'''
b.read_all_repos()
t = time.perf_counter(); b.fill_sack(); load = time.perf_counter() - t
sack = b.sack
base_ex = list(sack.get_excludes())
out = {"load": load, "stock": [], "plugin": [], "plan": [], "hold": []}

def solve():
    g = hawkey.Goal(sack)
    g.upgrade_all()
    assert g.run(allow_uninstall=False, force_best=False)
    return g

for i in range(%(runs)d):
    sack.set_excludes(base_ex)
    sack.allow_vendor_change = True
    t = time.perf_counter(); g = solve(); out["stock"].append(time.perf_counter() - t)
    n_stock = len(g.list_upgrades())
    # what the plugin does for `dnf upgrade`: plan (upgrade candidates), hide,
    # solve, then look for updates held back through a dependency
    t = time.perf_counter()
    pol = formats.load([], [], [])
    plan = sack_mod.compute(sack, pol, scope="upgrades")
    sack.add_excludes(plan.excluded)
    t1 = time.perf_counter()
    g = solve()
    t2 = time.perf_counter()
    sack_mod.holds_after_solve(g, sack, plan, base_ex)
    t3 = time.perf_counter()
    n_plugin = len(g.list_upgrades())
    out["plan"].append(t1 - t); out["hold"].append(t3 - t2); out["plugin"].append(t3 - t)
out.update(upgrades_stock=n_stock, upgrades_plugin=n_plugin, held=len(plan.held),
           hidden=len(plan.excluded), decisions=plan.checked,
           packages=len(sack.query()), installed=len(sack.query().installed()))
print(json.dumps(out))
'''


def median_ms(xs):
    return round(statistics.median(xs) * 1000, 1)


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dnfv = subprocess.run([DNF, "--version"], capture_output=True, text=True).stdout.split()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "dnf": dnfv, "kernel": platform.release()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names", type=int, default=10000)
    ap.add_argument("--beta", type=int, default=5000)
    ap.add_argument("--installed", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default="/var/tmp/rpmcow-vendor-bench")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    build(work, a.names, a.beta, a.installed)

    r = subprocess.run([SYS_PY, "-c", INPROC % {"root": str(ROOT), "work": str(work),
                                                "runs": a.runs}],
                       capture_output=True, text=True, env=env(), check=True)
    inproc = json.loads(r.stdout.strip().splitlines()[-1])

    api = {"plugin": [], "stock": []}
    for _ in range(a.runs):
        for mode in ("plugin", "stock"):
            p = subprocess.run([SYS_PY, "-c", API % {"work": str(work), "plugin": mode == "plugin",
                                                     "plugins": str(ROOT / "dnf-plugins")}],
                               capture_output=True, text=True, env=env(), check=True)
            api[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))

    cli = {"plugin": [], "stock": []}
    for _ in range(a.runs):
        for mode in ("plugin", "stock"):
            t = time.perf_counter()
            p = subprocess.run(dnf_cmd(work, "upgrade", "--assumeno", plugin=mode == "plugin"),
                               capture_output=True, text=True, env=env())
            cli[mode].append(time.perf_counter() - t)
            if p.returncode not in (0, 1) or "Upgrade" not in p.stdout:
                raise SystemExit("dnf upgrade failed:\n%s\n%s" % (p.stdout, p.stderr))

    res = {
        "packages": inproc["packages"], "installed": inproc["installed"],
        "held_back": inproc["held"], "hidden": inproc["hidden"],
        "decisions": inproc["decisions"],
        "upgrades": {"stock": inproc["upgrades_stock"], "plugin": inproc["upgrades_plugin"]},
        "resolve_ms": {"stock": median_ms(inproc["stock"]), "plugin": median_ms(inproc["plugin"]),
                       "plan": median_ms(inproc["plan"]), "hold_dependents":
                       median_ms(inproc["hold"])},
        "cli_ms": {"stock": median_ms(cli["stock"]), "plugin": median_ms(cli["plugin"])},
        "dnf_api_ms": {mode: {k: median_ms([r[k] for r in api[mode]])
                              for k in ("sack", "resolve", "total")} for mode in api},
        "sack_load_ms": round(inproc["load"] * 1000, 1),
        "runs": a.runs, "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    res["resolve_ratio"] = round(res["resolve_ms"]["plugin"] / res["resolve_ms"]["stock"], 2)
    res["cli_ratio"] = round(res["cli_ms"]["plugin"] / res["cli_ms"]["stock"], 2)
    res["dnf_api_ratio"] = round(res["dnf_api_ms"]["plugin"]["total"] /
                                 res["dnf_api_ms"]["stock"]["total"], 2)
    text = json.dumps(res, indent=1)
    print(text)
    if not a.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "vendor.json").write_text(text + "\n")
        m = res["machine"]
        (RESULTS / "vendor.md").write_text(
            "# sticky-vendor: `dnf upgrade` with and without the plugin\n\n"
            "%(packages)d packages in the sack (%(installed)d installed), %(held_back)d updates "
            "held back, %(hidden)d packages hidden, %(decisions)d policy decisions; median of "
            "%(runs)d runs, alternating.\n\n"
            "| measure | stock dnf | with sticky-vendor | ratio |\n|---|---|---|---|\n"
            % res
            + "| solver only: plan + solve + hold check vs solve | %.1f ms | %.1f ms | %.2f |\n" % (
                res["resolve_ms"]["stock"], res["resolve_ms"]["plugin"], res["resolve_ratio"])
            + "| dnf API: fill_sack + upgrade_all + resolve (real hooks) | %.1f ms | %.1f ms | "
              "%.2f |\n" % (res["dnf_api_ms"]["stock"]["total"], res["dnf_api_ms"]["plugin"]["total"],
                            res["dnf_api_ratio"])
            + "| `dnf upgrade --assumeno` wall time | %.1f ms | %.1f ms | %.2f |\n\n" % (
                res["cli_ms"]["stock"], res["cli_ms"]["plugin"], res["cli_ratio"])
            + "Plugin share of resolution: plan %.1f ms, dependency-hold check %.1f ms.  Sack load "
              "(not included above): %.1f ms.\n\n" % (
                res["resolve_ms"]["plan"], res["resolve_ms"]["hold_dependents"],
                res["sack_load_ms"])
            + "Machine: %s, %d cores, dnf %s, Python %s, kernel %s (%s).\n" % (
                m["cpu"], m["cores"], m["dnf"], m["python"], m["kernel"], res["date"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The libFuzzer harness of the C core (tests/fuzz/, see its Makefile).

* the harness builds (clang -fsanitize=fuzzer,address,undefined, straight from
  csrc/*.c) -- skipped only when clang or its libFuzzer runtime is missing;
* every saved input in tests/fuzz/crashes/ runs clean (regression inputs);
* the seed corpus runs without a leak;
* a bounded fuzzing run (RPMCOW_FUZZ_SECONDS, default 30) finds nothing: no
  sanitizer report, no contract violation (the harness aborts on those), no
  input slower than 25 s or needing more than 2 GiB.  Leak detection is off
  in this run so that one known leak does not stop the search (the seeds test
  reports leaks).  Executions/s, edge coverage and csrc/ line coverage are
  printed (pytest -s) and recorded as junit properties.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUZZ_DIR = ROOT / "tests" / "fuzz"
CRASHES = FUZZ_DIR / "crashes"
SECONDS = int(os.environ.get("RPMCOW_FUZZ_SECONDS", "30"))
RSS_LIMIT_MB = 2048
SAVED_PREFIXES = ("crash-", "leak-", "timeout-", "oom-", "slow-unit-")

ASAN = "abort_on_error=1:detect_leaks=%d"
UBSAN = "print_stacktrace=1:halt_on_error=1"


def _env(leaks):
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ASAN % leaks
    env["UBSAN_OPTIONS"] = UBSAN
    return env


def _tail(text, n=60):
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    """(build dir, harness binary)"""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (packaging/install-build-deps.sh installs it)")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    build = tmp_path_factory.mktemp("fuzz-build")
    probe = build / "probe.c"
    probe.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                     "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
                     "{ (void)d; (void)n; return 0; }\n")
    r = subprocess.run(["clang", "-fsanitize=fuzzer,address,undefined", str(probe), "-o",
                        str(build / "probe")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        pytest.skip("clang has no libFuzzer runtime (Debian: libclang-rt-N-dev for clang N; "
                    "Fedora: compiler-rt; packaging/install-build-deps.sh installs it): %s"
                    % r.stdout.decode(errors="replace").strip().splitlines()[-1:])
    r = subprocess.run(["make", "-s", "-C", str(FUZZ_DIR), "build", "seeds", "BUILD=%s" % build],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert r.returncode == 0, "the fuzz harness does not build:\n" + _tail(r.stdout.decode(
        errors="replace"))
    return build, build / "fuzz_transcode"


def test_saved_inputs_run_clean(fuzzer):
    """Inputs that once crashed the core (tests/fuzz/crashes/) must not any more."""
    _, binary = fuzzer
    saved = sorted(p for p in CRASHES.glob("*") if p.name.startswith(SAVED_PREFIXES))
    if not saved:
        pytest.skip("no saved inputs in %s" % CRASHES)
    failures = []
    for path in saved:
        r = subprocess.run([str(binary), "-rss_limit_mb=%d" % RSS_LIMIT_MB, "-timeout=25",
                            str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=_env(leaks=1), timeout=120)
        if r.returncode != 0:
            report = [l for l in r.stdout.decode(errors="replace").splitlines()
                      if "ERROR" in l or "SUMMARY" in l or re.match(r"\s+#[0-4] ", l)]
            failures.append("%s (exit %d):\n  %s" % (path.name, r.returncode,
                                                     "\n  ".join(report[:12])))
    assert not failures, "saved fuzz inputs still fail:\n" + "\n".join(failures)


def test_seeds_leak_nothing(fuzzer):
    """One pass over the seed corpus with LeakSanitizer on."""
    build, binary = fuzzer
    r = subprocess.run([str(binary), "-runs=0", "-detect_leaks=1",
                        "-rss_limit_mb=%d" % RSS_LIMIT_MB, "-artifact_prefix=%s/" % build,
                        str(build / "seeds")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=_env(leaks=1), timeout=300)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, "the seeds fail:\n" + _tail(out, 40)


def test_fuzz(fuzzer, record_property):
    """Fuzz for SECONDS; fail on anything the harness or a sanitizer reports."""
    build, _ = fuzzer
    crashes = build / "crashes"
    crashes.mkdir(exist_ok=True)
    cmd = ["make", "-s", "-C", str(FUZZ_DIR), "run", "BUILD=%s" % build,
           "CORPUS=%s" % (build / "corpus"), "CRASHES=%s" % crashes,
           "FUZZ_SECONDS=%d" % SECONDS, "RSS_LIMIT_MB=%d" % RSS_LIMIT_MB,
           "FUZZ_FLAGS=-detect_leaks=0"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=_env(leaks=0), timeout=SECONDS + 300)
    out = r.stdout.decode(errors="replace")
    found = sorted(p.name for p in crashes.iterdir())
    assert r.returncode == 0 and not found, (
        "the fuzzer found a bug; inputs in %s (copy them to tests/fuzz/crashes/ to keep "
        "them): %s\n%s" % (crashes, found, _tail(out)))

    stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", out, re.M))
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", out)
    summary = {"executions": int(stats.get("number_of_executed_units", 0)),
               "exec_per_sec": int(stats.get("average_exec_per_sec", 0)),
               "edges": int(cov[-1][0]) if cov else 0,
               "features": int(cov[-1][1]) if cov else 0,
               "corpus": int(cov[-1][2]) if cov else 0}
    # line coverage of csrc/ by the corpus this run grew (optional: llvm-cov)
    if shutil.which("llvm-cov") and shutil.which("llvm-profdata"):
        c = subprocess.run(["make", "-s", "-C", str(FUZZ_DIR), "coverage", "BUILD=%s" % build,
                            "CORPUS=%s" % (build / "corpus")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        m = re.search(r"^TOTAL\s+.*?(\d+\.\d+)%\s+\d+\s+\d+\s+\S+\s+\d+\s+\d+\s+(\d+\.\d+)%",
                      c.stdout.decode(errors="replace"), re.M)
        if m:
            summary["csrc_region_cover"] = float(m.group(1))
            summary["csrc_line_cover"] = float(m.group(2))
    for k, v in summary.items():
        record_property(k, v)
    print("\nfuzz_transcode, %d s: %s" % (SECONDS, summary))
    assert summary["executions"] > 0, _tail(out)

#!/bin/sh
# Runs INSIDE a matrix chroot (tests/matrix/matrix.sh puts it there): build
# rpmcow in place with this suite's compilers and libraries, without pip
# (PyPI is not reachable from a chroot, and the point is Debian's own
# Python packages), record the versions of what the suite provides, then run
# the test suite.  Everything lands in $OUT (a directory of the chroot that
# the host reads afterwards).
#
#   SRC   the project copy (also on PYTHONPATH)      default /rpmcow-matrix/src
#   OUT   results: build.log, versions.env, pytest.log, junit.xml, status.env
#   MATRIX_PYTEST_ARGS  extra pytest arguments (word-split)
#   MATRIX_DESELECT     node-id prefixes to deselect (host-only tests; word-split)
#   MATRIX_PYTEST_TIMEOUT  seconds before pytest is interrupted (default 1500)
set -u
SRC=${SRC:-/rpmcow-matrix/src}
OUT=${OUT:-/rpmcow-matrix/out}
mkdir -p "$OUT"
cd "$SRC" || exit 2

now() { date +%s; }

# ---- versions of what this suite ships -----------------------------------------
deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "-"; }
{
    echo "suite_codename=$(. /etc/os-release; echo "${VERSION_CODENAME:-unknown}")"
    echo "os_pretty=\"$(. /etc/os-release; echo "$PRETTY_NAME")\""
    echo "rpm_version=$(rpm --version 2>/dev/null | awk '{print $NF}')"
    echo "rpm_deb=$(deb_version rpm)"
    # dnf 4 prints its version on the first line of --version
    echo "dnf_version=$(dnf --version 2>/dev/null | head -n1 | tr -d '[:space:]')"
    if command -v dnf5 >/dev/null 2>&1; then
        echo "dnf5_version=$(dpkg-query -W -f='${Version}' dnf5 2>/dev/null | sed 's/-[^-]*$//')"
    else
        echo "dnf5_version="
    fi
    echo "python_version=$(python3 -c 'import platform; print(platform.python_version())')"
    echo "openssl_version=\"$(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)')\""
    echo "gcc_version=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
    echo "pytest_version=$(python3 -c 'import pytest; print(pytest.__version__)' 2>/dev/null)"
    echo "hypothesis_version=$(python3 -c 'import hypothesis; print(hypothesis.__version__)' 2>/dev/null)"
    echo "setuptools_version=$(python3 -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null)"
    echo "cffi_version=$(python3 -c 'import cffi; print(cffi.__version__)' 2>/dev/null)"
} > "$OUT/versions.env"

# ---- build: the cffi extension and the rpm plugin (setup.py's build_ext does both)
t0=$(now)
build_rc=0
rm -f rpmcow/_core*.so rpmcow/_core.c
rm -rf rpmcow/plugins build
python3 setup.py build_ext --inplace --force > "$OUT/build.log" 2>&1 || build_rc=$?
if [ ! -e rpmcow/plugins/cow.so ] && [ "$build_rc" = 0 ]; then
    # an older setup.py without the plugin step: build it the way _build does
    python3 -c 'from rpmcow import _build; _build.build_plugin()' >> "$OUT/build.log" 2>&1 \
        || build_rc=$?
fi
t1=$(now)
have_core=0
ls rpmcow/_core*.so >/dev/null 2>&1 && have_core=1
have_plugin=0
[ -e rpmcow/plugins/cow.so ] && have_plugin=1

# ---- or a command instead (matrix.sh --run: benchmarks on this suite) ------------
if [ -n "${MATRIX_COMMAND:-}" ]; then
    [ "$build_rc" = 0 ] || { cat "$OUT/build.log"; exit 3; }
    command_rc=0
    sh -c "$MATRIX_COMMAND" > "$OUT/command.log" 2>&1 || command_rc=$?
    cat "$OUT/command.log"
    exit "$command_rc"
fi

# ---- the test suite ------------------------------------------------------------
# (also when the build failed: the tests that need no C core still say
# something, and the table says "build failed" anyway)
t2=$(now)
deselect=""
for d in ${MATRIX_DESELECT:-}; do
    deselect="$deselect --deselect $d"
done
# -p no:cacheprovider: nothing written next to the tests; -rfEs: the reasons
# of failures, errors and skips in the log; a module that does not import on
# this suite is an error, and the other modules still run; junit for the
# counts.  Interrupted
# (SIGINT) at the time limit: pytest then still writes its summary and the
# junit file for what ran.
# shellcheck disable=SC2086
timeout -s INT -k 120 "${MATRIX_PYTEST_TIMEOUT:-1500}" \
    python3 -m pytest -p no:cacheprovider -rfEs --continue-on-collection-errors \
    --junitxml="$OUT/junit.xml" \
    -o junit_suite_name="rpmcow-$(. /etc/os-release; echo "${VERSION_CODENAME:-unknown}")" \
    $deselect ${MATRIX_PYTEST_ARGS:-} > "$OUT/pytest.log" 2>&1
pytest_rc=$?
if [ "$pytest_rc" = 124 ]; then
    echo "test-matrix: pytest interrupted after ${MATRIX_PYTEST_TIMEOUT:-1500}s" >> "$OUT/pytest.log"
fi
t3=$(now)

{
    echo "build_rc=$build_rc"
    echo "have_core=$have_core"
    echo "have_plugin=$have_plugin"
    echo "pytest_rc=$pytest_rc"
    echo "build_seconds=$((t1 - t0))"
    echo "pytest_seconds=$((t3 - t2))"
} > "$OUT/status.env"
[ "$build_rc" = 0 ] || exit 3
exit "$pytest_rc"

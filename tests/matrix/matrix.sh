#!/bin/bash
# `make test-matrix`: the real test suite on other Debian generations, each a
# stand-in for an rpm/dnf/Python/OpenSSL generation our users run
# (docs/compatibility.md).  For each suite: a cached mmdebstrap chroot, a fresh
# copy of this tree in it, a build with that suite's compilers and libraries,
# and pytest over tests/ inside it -- real rpm, real dnf, loop-mounted
# XFS/btrfs, the corpus.  Then a table, printed and written into
# docs/compatibility.md between its markers.  Run as root.
#
#   MATRIX_SUITES="bullseye trixie sid"  which suites, in order
#   MATRIX_CACHE=/var/tmp/rpmcow-matrix  chroots: <cache>/<suite>/root, rebuilt
#                                        when their package list changes
#   MATRIX_MIRROR=http://deb.debian.org/debian
#   MATRIX_TIMEOUT=1500                  seconds of pytest per suite (then it is
#                                        interrupted; what ran is counted)
#   MATRIX_RESULTS=build/matrix          logs, junit, versions per suite
#   MATRIX_DOC=docs/compatibility.md     where the table goes ("" = nowhere)
#   MATRIX_PYTEST_ARGS=...               more pytest arguments (e.g. -x, -k expr)
#   MATRIX_HOST_ONLY=...                 node-id prefixes run on the host only
#                                        (deselected in the chroots; see below)
#   MATRIX_ALLOW_FAIL="sid"              suites whose failures are reported but
#                                        do not make the exit status non-zero
#   MATRIX_HOST_JUNIT=FILE               junit of the host's own `make test`:
#                                        adds the host's row to the table
#   MATRIX_JOBS=3                        suites run side by side (1: one by one)
#   MATRIX_REBUILD=1                     rebuild the chroots even if cached
#   RPMCOW_CORPUS                        the corpus, as tests/conftest.py finds
#                                        it (default tests/corpus; older trees:
#                                        ../shared/corpus): in the tree it is
#                                        copied, outside bind-mounted read-only;
#                                        RPMCOW_CORPUS points there in the chroot
#
# `matrix.sh --clean` removes the cached chroots (make test-matrix-clean).
# Internal: `matrix.sh __ns ROOT CORPUS NEWPID` is the part that runs in a
# private mount + PID namespace (unshare): mounts, chroot, unmounts.
set -euo pipefail
# The whole script is one compound command, parsed before any of it runs: a
# checkout that changes while a run is under way does not change the run.
{

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# bump to force every cached chroot to be rebuilt (part of the cache key)
FORMAT=2
# in the chroot: the project, its results, the corpus
INNER=/rpmcow-matrix
PATH_IN="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { printf 'test-matrix: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

# ---- mount hygiene ----------------------------------------------------------------
# mount points at or below $1 in this mount namespace, deepest first
mounts_under() {
    local prefix=${1%/}
    awk -v p="$prefix" '{ m = $5; gsub(/\\040/, " ", m);
        if (m == p || index(m, p "/") == 1) print length(m) "\t" m }' /proc/self/mountinfo \
        | sort -rn | cut -f2-
}

unmount_under() {
    local m
    while read -r m; do
        [ -n "$m" ] || continue
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
    done < <(mounts_under "$1")
}

assert_no_mounts() {
    if [ -n "$(mounts_under "$1")" ]; then
        die "refusing to touch $1: something is mounted below it: $(mounts_under "$1" | tr '\n' ' ')"
    fi
}

# loop devices whose backing file lives below $1 (what a killed test left)
detach_loops_under() {
    local prefix=${1%/} dev file
    command -v losetup >/dev/null 2>&1 || return 0
    while read -r dev file; do
        [ -n "$dev" ] || continue
        case "$file" in
        "$prefix"/*)
            log "detaching $dev (left behind: $file)"
            losetup -d "$dev" 2>/dev/null || log "cannot detach $dev" ;;
        esac
    done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true)
}

# processes left running with their root in the chroot (only ever ours: the
# chroot is private to this script) -- with the PID namespace there are none
kill_procs_in() {
    local root=$1 p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        case "$r" in
        "$root"|"$root"/*)
            log "killing leftover process ${p#/proc/} ($(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-80))"
            kill -9 "${p#/proc/}" 2>/dev/null || true ;;
        esac
    done
}

# ---- inside the private namespace: mount, chroot, run, unmount ----------------------
if [ "${1:-}" = __ns ]; then
    root=$2 corpus=$3 newpid=$4
    shift 4
    cleanup() {
        local rc=$?
        trap - EXIT INT TERM
        unmount_under "$root/proc"
        unmount_under "$root/sys"
        unmount_under "$root/dev"
        unmount_under "$root$INNER/shared/corpus"
        unmount_under "$root"          # anything a test left mounted
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ "$newpid" = 1 ]; then
        # a procfs of this PID namespace: ps, kill, /proc/self all agree
        mount -t proc proc "$root/proc"
    else
        mount --rbind /proc "$root/proc"; mount --make-rslave "$root/proc"
    fi
    mount --rbind /sys "$root/sys"; mount --make-rslave "$root/sys"
    mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev"
    extra_env=()
    [ -n "${RPMCOW_BAD_INPUT_EXAMPLES:-}" ] \
        && extra_env+=("RPMCOW_BAD_INPUT_EXAMPLES=$RPMCOW_BAD_INPUT_EXAMPLES")
    case "$corpus" in
    bind:*)     # read-only: the corpus is shared, tests never write into it
        mkdir -p "$root$INNER/shared/corpus"
        mount --bind "${corpus#bind:}" "$root$INNER/shared/corpus"
        mount -o remount,bind,ro "$root$INNER/shared/corpus"
        extra_env+=("RPMCOW_CORPUS=$INNER/shared/corpus") ;;
    tree:*)     # copied with the tree
        extra_env+=("RPMCOW_CORPUS=$INNER/src/${corpus#tree:}") ;;
    esac
    rc=0
    chroot "$root" /usr/bin/env -i \
        PATH="$PATH_IN" HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb COLUMNS=200 \
        CI="${CI:-}" PYTHONPATH="$INNER/src" SRC="$INNER/src" OUT="$INNER/out" \
        MATRIX_PYTEST_TIMEOUT="$MATRIX_PYTEST_TIMEOUT" \
        MATRIX_PYTEST_ARGS="${MATRIX_PYTEST_ARGS:-}" MATRIX_DESELECT="${MATRIX_DESELECT:-}" \
        MATRIX_COMMAND="${MATRIX_COMMAND:-}" \
        "${extra_env[@]}" \
        /bin/sh "$INNER/src/tests/matrix/in-chroot.sh" || rc=$?
    exit "$rc"
fi

# ---- configuration ----------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot, loop mounts)"
SUITES=${MATRIX_SUITES:-bullseye trixie sid}
CACHE=${MATRIX_CACHE:-/var/tmp/rpmcow-matrix}
MIRROR=${MATRIX_MIRROR:-http://deb.debian.org/debian}
TIMEOUT=${MATRIX_TIMEOUT:-1500}
RESULTS=${MATRIX_RESULTS:-$ROOT/build/matrix}
DOC=${MATRIX_DOC-$ROOT/docs/compatibility.md}
ALLOW_FAIL=${MATRIX_ALLOW_FAIL:-}
# Version-independent and heavy: run by the host's `make test` only.
#  * tests/test_fuzz.py -- the libFuzzer run (clang + compiler-rt, 30 s of
#    fuzzing plus an ASan/UBSan build of csrc/): it exercises the C core,
#    which is the same C on every suite; the sanitizers are clang's, not the suite's.
#  * tests/test_bad_input.py's hypothesis sweeps keep running, scaled down by
#    RPMCOW_BAD_INPUT_EXAMPLES (below): they feed rpm's header parser, which
#    differs per rpm version.
HOST_ONLY=${MATRIX_HOST_ONLY-tests/test_fuzz.py}
BAD_INPUT_SCALE=${MATRIX_BAD_INPUT_EXAMPLES:-0.25}
case "$RESULTS" in /*) ;; *) RESULTS=$ROOT/$RESULTS ;; esac
case "$DOC" in ""|/*) ;; *) DOC=$ROOT/$DOC ;; esac

# What the suite needs, by Debian package name (packaging/install-build-deps.sh
# installs the same on the host; clang/compiler-rt are left out: the fuzzer
# runs on the host only; pip/venv too: nothing is installed with pip here).
BASE_PKGS="rpm python3-rpm dnf python3-dnf createrepo-c librpm-dev rpm2cpio cpio
 xfsprogs btrfs-progs e2fsprogs util-linux mount libzstd-dev liblzma-dev zlib1g-dev
 libbz2-dev libssl-dev python3-cffi python3-dev python3-setuptools python3-pytest
 python3-hypothesis gcc make pkg-config gnupg zstd xz-utils bzip2 man-db rpmlint
 time file binutils git procps"
suite_pkgs() {
    local extra="" drop="-"
    case "$1" in
    # no python3-tomli before bookworm (only the older toml); no rpmlint
    # (its test skips)
    bullseye) extra="python3-toml"; drop="rpmlint" ;;
    # dnf5 and its Python bindings, for the dnf5 work (C++ plugins: g++)
    sid|unstable|forky) extra="dnf5 python3-libdnf5 libdnf5-dev python3-libdnf5-python-plugins-loader g++" ;;
    esac
    echo $BASE_PKGS $extra | tr ' ' '\n' | grep -vx -- "$drop" | sort -u | tr '\n' ' '
}

now() { date +%s; }

# ---- the chroots ------------------------------------------------------------------
# shellcheck disable=SC2046  # the package list is word-split on purpose
chroot_key() {
    printf '%s\n' "$FORMAT" "$1" "$MIRROR" $(suite_pkgs "$1") | sha256sum | cut -c1-16
}

# ensure_chroot SUITE: (re)build <cache>/SUITE/root unless its key matches.
# Prints the seconds it took (0 when cached).
ensure_chroot() {
    local suite=$1 dir=$CACHE/$1 key t0 pkgs
    key=$(chroot_key "$suite")
    mkdir -p "$dir" "$RESULTS/$suite"
    if [ -z "${MATRIX_REBUILD:-}" ] && [ -f "$dir/key" ] && [ "$(cat "$dir/key")" = "$key" ] \
            && [ -x "$dir/root/usr/bin/python3" ]; then
        echo 0
        return 0
    fi
    t0=$(now)
    pkgs=$(suite_pkgs "$suite")
    log "$suite: creating the chroot (mmdebstrap, $(echo $pkgs | wc -w) packages; log: $RESULTS/$suite/mmdebstrap.log)"
    assert_no_mounts "$dir"
    rm -rf --one-file-system "$dir/root.new"
    if ! mmdebstrap --variant=apt \
            --aptopt='Acquire::Check-Valid-Until "false"' \
            --aptopt='Acquire::Retries "3"' \
            --include="$(echo $pkgs | tr ' ' ',')" \
            "$suite" "$dir/root.new" "$MIRROR" > "$RESULTS/$suite/mmdebstrap.log" 2>&1; then
        tail -n 20 "$RESULTS/$suite/mmdebstrap.log" >&2
        assert_no_mounts "$dir"
        rm -rf --one-file-system "$dir/root.new"
        return 1
    fi
    # tests bind 127.0.0.1 and may name localhost
    grep -qs '^127\.0\.0\.1[[:space:]].*localhost' "$dir/root.new/etc/hosts" \
        || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
            >> "$dir/root.new/etc/hosts"
    mkdir -p "$dir/root.new$INNER"
    assert_no_mounts "$dir"
    rm -rf --one-file-system "$dir/root"
    mv "$dir/root.new" "$dir/root"
    echo "$key" > "$dir/key"
    echo $(( $(now) - t0 ))
}

# The corpus, found the way tests/conftest.py's corpus_path() finds it:
# $RPMCOW_CORPUS, else tests/corpus in the tree (copied with it), else (older
# trees) ../shared/corpus beside it.  Prints "tree:PATH-IN-TREE",
# "bind:HOST-PATH" or nothing.
host_corpus() {
    local c
    if [ -n "${RPMCOW_CORPUS:-}" ]; then
        c=$RPMCOW_CORPUS
    elif [ -d "$ROOT/tests/corpus" ]; then
        echo "tree:tests/corpus"
        return 0
    else
        c=$ROOT/../shared/corpus
    fi
    if [ -d "$c" ]; then
        c=$(cd "$c" && pwd -P)
        case "$c/" in
        "$ROOT"/*) echo "tree:${c#"$ROOT"/}" ;;
        *) echo "bind:$c" ;;
        esac
    fi
}

# a fresh copy of the working tree (tracked and untracked-but-not-ignored
# files, as they are now: uncommitted edits included; no .venv, build, *.so)
copy_tree() {
    local dest=$1
    mkdir -p "$dest"
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -co --exclude-standard -z \
            | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$dest"
        # a checkout for the packaging tests (`git add -A` into a private index)
        if [ -d "$ROOT/.git" ]; then
            cp -a "$ROOT/.git" "$dest/.git"
        else
            git -C "$dest" init -q && git -C "$dest" add -A \
                && git -C "$dest" -c user.name=matrix -c user.email=matrix@invalid \
                    commit -q -m "test-matrix copy"
        fi
    else
        (cd "$ROOT" && tar --exclude=./.venv --exclude=./build --exclude='__pycache__' \
            --exclude='*.so' --exclude=./.hypothesis --exclude=./.pytest_cache -cf - .) \
            | tar -xf - -C "$dest"
    fi
}

# run_suite SUITE CREATE_SECONDS
run_suite() {
    local suite=$1 create=$2 root=$CACHE/$1/root out=$RESULTS/$1 t0 t1 t2 rc=0 corpus
    local newpid=1 timed_out=0
    t0=$(now)
    # what an interrupted earlier run may have left (the suite's lock is ours:
    # nothing else of ours uses this chroot now)
    unmount_under "$root"
    kill_procs_in "$root"
    detach_loops_under "$root"
    assert_no_mounts "$root$INNER"
    assert_no_mounts "$root/tmp"
    rm -rf --one-file-system "$root$INNER/src" "$root$INNER/out"
    find "$root/tmp" "$root/var/tmp" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} + \
        2>/dev/null || true
    mkdir -p "$root$INNER/out" "$root$INNER/shared"
    copy_tree "$root$INNER/src"
    # the runner itself as this checkout has it (even if not yet tracked)
    mkdir -p "$root$INNER/src/tests/matrix"
    cp "$HERE/in-chroot.sh" "$root$INNER/src/tests/matrix/in-chroot.sh"
    corpus=$(host_corpus)
    [ -n "$corpus" ] || log "$suite: no corpus (RPMCOW_CORPUS, tests/corpus, ../shared/corpus): its tests will skip"
    find "$out" -mindepth 1 -maxdepth 1 ! -name mmdebstrap.log -exec rm -rf {} + 2>/dev/null || true
    t1=$(now)

    local deselect="" p
    for p in $HOST_ONLY; do deselect="$deselect $p"; done
    local -a ns=(unshare --mount --pid --fork --kill-child --propagation private)
    if ! unshare --mount --pid --fork --propagation private true 2>/dev/null; then
        log "$suite: unshare does not work here: mounting in the host's namespace"
        ns=(); newpid=0
    fi
    log "$suite: build + pytest in the chroot (pytest timeout ${TIMEOUT}s; log: $out/pytest.log)"
    # the hard limit: pytest's own limit (it is interrupted, and reports what
    # ran), plus the build, plus a margin; then the namespace is killed whole
    MATRIX_PYTEST_TIMEOUT=$TIMEOUT MATRIX_DESELECT="$deselect" \
        RPMCOW_BAD_INPUT_EXAMPLES="$BAD_INPUT_SCALE" \
        timeout -k 30 $((TIMEOUT + 300)) "${ns[@]}" bash "$HERE/matrix.sh" __ns "$root" "$corpus" "$newpid" \
        || rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        timed_out=1
    fi
    t2=$(now)
    # whatever the run left: it must not outlive it
    unmount_under "$root"
    kill_procs_in "$root"
    sleep 1
    detach_loops_under "$root"
    cp -a "$root$INNER/out/." "$out/" 2>/dev/null || true
    # pytest keeps its last temporary directories: not in the cache
    if [ -z "$(mounts_under "$root/tmp")" ]; then
        find "$root/tmp" "$root/var/tmp" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} + \
            2>/dev/null || true
    fi
    {
        echo "suite=$suite"
        echo "create_seconds=$create"
        echo "prepare_seconds=$((t1 - t0))"
        echo "run_seconds=$((t2 - t1))"
        echo "rc=$rc"
        echo "hard_timeout=$timed_out"
        echo "host_only=\"$HOST_ONLY\""
        echo "chroot_bytes=$(du -sxb "$CACHE/$suite/root" 2>/dev/null | cut -f1)"
    } > "$out/times.env"
    log "$suite: done in $((t2 - t0))s (exit $rc)"
    return 0
}

# ---- main ---------------------------------------------------------------------------
if [ "${1:-}" = --clean ]; then
    [ -d "$CACHE" ] || exit 0
    assert_no_mounts "$CACHE"
    detach_loops_under "$CACHE"
    log "removing $CACHE ($(du -sxh "$CACHE" 2>/dev/null | cut -f1))"
    rm -rf --one-file-system "$CACHE"
    exit 0
fi

# `matrix.sh --run SUITE COMMAND`: COMMAND (sh -c, in the tree, after the build)
# instead of the test suite, in SUITE's chroot -- benchmarks that need that
# suite's dnf5 (make bench-dnf5).  Its output is printed and kept in
# RESULTS/SUITE/command.log; the exit status is its own.
if [ "${1:-}" = --run ]; then
    [ $# -ge 3 ] || die "usage: matrix.sh --run SUITE COMMAND"
    SUITES=$2
    export MATRIX_COMMAND=$3
    DOC=""
fi

command -v mmdebstrap >/dev/null 2>&1 || {
    log "installing mmdebstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
} || die "mmdebstrap is needed (apt-get install mmdebstrap)"

mkdir -p "$CACHE" "$RESULTS"
start=$(now)

# one suite: its chroot (created or cached), then build + tests in it
suite_job() {
    local s=$1 secs
    exec 9>"$CACHE/.$s.lock"
    flock 9
    rm -f "$RESULTS/$s"/{times.env,status.env,versions.env,junit.xml,pytest.log,build.log}
    secs=$(ensure_chroot "$s") || secs=fail
    [ -n "$secs" ] || secs=fail
    case "$secs" in
    0) log "$s: cached chroot $CACHE/$s/root" ;;
    fail)
        log "$s: the chroot could not be created (see $RESULTS/$s/mmdebstrap.log)"
        printf 'suite=%s\ncreate_failed=1\n' "$s" > "$RESULTS/$s/times.env"
        return 0 ;;
    *) log "$s: chroot created in ${secs}s" ;;
    esac
    run_suite "$s" "$secs"
}

# The suites side by side (MATRIX_JOBS at a time): the suite spends most of
# its time waiting on loop devices, mkfs, rpm and dnf (on 2 cores: ~1/3 of
# the wall time is CPU), so running them together takes about as long as
# the slowest one; chroot creation is mostly downloads and dpkg.
JOBS=${MATRIX_JOBS:-3}
running=0
for s in $SUITES; do
    mkdir -p "$RESULTS/$s"
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    ( suite_job "$s" ) || log "$s: the run could not be set up (exit $?)" &
    running=$((running + 1))
done
wait || true
total=$(( $(now) - start ))
if [ -n "${MATRIX_COMMAND:-}" ]; then
    # shellcheck disable=SC1090
    . "$RESULTS/$SUITES/times.env" 2>/dev/null || rc=2
    exit "${rc:-2}"
fi

report=(python3 "$HERE/report.py" --results "$RESULTS" --total-seconds "$total"
        --allow-fail "$ALLOW_FAIL" --host-only "$HOST_ONLY")
[ -n "$DOC" ] && report+=(--doc "$DOC")
[ -n "${MATRIX_HOST_JUNIT:-}" ] && report+=(--host-junit "$MATRIX_HOST_JUNIT")
# shellcheck disable=SC2086
exec "${report[@]}" $SUITES
exit
}

#!/bin/sh
# Install the system packages rpmcow needs to build, test and run.
# Idempotent: installs only what is missing.  Debian 11-13/sid and Ubuntu
# (apt), Fedora and CentOS Stream / RHEL 9-10 (dnf).  Run as root.
#
# Package names differ between releases; nothing here names one release's:
#  * apt: a package this release does not have is reported and left out
#    (nothing in the lists below is essential on a release that lacks it).
#    The libFuzzer runtime is found for the clang that got installed:
#    libclang-rt-N-dev (LLVM 14 and later) or libclang-common-N-dev (up to 13).
#  * dnf: the build and test essentials are installed together and must all
#    exist; the rest (btrfs-progs and rpmlint are not in CentOS Stream/RHEL,
#    python3-pytest is in CRB there, dnf4 exists only where dnf is dnf5, ...)
#    one by one, each reported if unavailable.
# Where the fuzzer's runtime cannot be had, tests/test_fuzz.py skips with the
# reason; the rest of the suite does not need clang.
set -eu

DEB="rpm python3-rpm dnf python3-dnf createrepo-c librpm-dev rpm2cpio cpio
 xfsprogs btrfs-progs e2fsprogs util-linux mount libzstd-dev liblzma-dev zlib1g-dev
 libbz2-dev libssl-dev python3-cffi python3-dev python3-venv python3-pip
 gcc make pkg-config clang gnupg zstd xz-utils bzip2 lzma man-db
 python3-pytest rpmlint time git file binutils"
# needed to build and to run the suite: all must be there
RPM="rpm rpm-build rpm-sign python3-rpm dnf python3-dnf createrepo_c rpm-devel cpio
 xfsprogs e2fsprogs util-linux libzstd-devel xz-devel zlib-devel bzip2-devel
 openssl-devel python3-cffi python3-devel python3-pip gcc make pkgconf-pkg-config
 gnupg2 zstd xz bzip2 time git-core file binutils"
# optional (tests that need them skip): btrfs (not in EL), the fuzzer, man
# pages, rpmlint/pytest (EPEL/CRB on EL), dnf 4's command where dnf is dnf5
RPM_OPTIONAL="btrfs-progs clang compiler-rt man-db rpmlint python3-pytest dnf4"

if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

say() { printf 'install-build-deps: %s\n' "$*"; }

# can clang link a libFuzzer target? (tests/test_fuzz.py probes the same way)
fuzzer_works() {
    command -v clang >/dev/null 2>&1 || return 1
    d=$(mktemp -d)
    printf '%s\n' '#include <stdint.h>' '#include <stddef.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        > "$d/probe.c"
    if clang -fsanitize=fuzzer,address,undefined "$d/probe.c" -o "$d/probe" >/dev/null 2>&1; then
        rm -rf "$d"; return 0
    fi
    rm -rf "$d"; return 1
}

clang_major() {
    clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9][0-9]*\)\..*/\1/p' | head -n1
}

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

# does apt know an installable version of $1?
deb_available() {
    c=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    [ -n "$c" ] && [ "$c" != "(none)" ]
}

apt_updated=
apt_update() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $DEB; do
        deb_installed "$p" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        apt_update
        install="" unavailable=""
        for p in $missing; do
            if deb_available "$p"; then install="$install $p"; else unavailable="$unavailable $p"; fi
        done
        [ -z "$unavailable" ] || say "not in this release, left out:$unavailable"
        if [ -n "$install" ]; then
            say "installing:$install"
            # shellcheck disable=SC2086
            apt_install $install
        fi
    fi
    # the libFuzzer runtime of the installed clang
    if command -v clang >/dev/null 2>&1 && ! fuzzer_works; then
        v=$(clang_major)
        apt_update
        done_one=
        for p in "libclang-rt-$v-dev" "libclang-common-$v-dev"; do
            [ -n "$v" ] || break
            if ! deb_installed "$p" && deb_available "$p"; then
                say "installing the fuzzer runtime of clang $v: $p"
                apt_install "$p"
                done_one=1
                break
            fi
        done
        if ! fuzzer_works; then
            say "clang ${v:-?} cannot link a libFuzzer target${done_one:+ even with its runtime}: tests/test_fuzz.py will skip"
        fi
    fi
elif command -v dnf >/dev/null 2>&1; then
    missing=""
    for p in $RPM; do
        rpm -q --whatprovides "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        say "installing:$missing"
        # shellcheck disable=SC2086
        $SUDO dnf install -y $missing
    fi
    unavailable=""
    for p in $RPM_OPTIONAL; do
        # dnf4 only where the system dnf is dnf5 (Fedora 41 and later)
        if [ "$p" = dnf4 ] && ! { command -v dnf5 >/dev/null 2>&1 && [ "$(readlink -f "$(command -v dnf)")" = "$(readlink -f "$(command -v dnf5)")" ]; }; then
            continue
        fi
        rpm -q --whatprovides "$p" >/dev/null 2>&1 && continue
        say "installing: $p"
        $SUDO dnf install -y "$p" >/dev/null 2>&1 || unavailable="$unavailable $p"
    done
    if [ -n "$unavailable" ]; then
        say "not available from the enabled repositories, left out:$unavailable"
        if [ -r /etc/os-release ] && grep -qiE '^ID(_LIKE)?=.*(rhel|centos)' /etc/os-release; then
            say "on CentOS Stream / RHEL, CRB and EPEL have some of them:" \
                "dnf config-manager --set-enabled crb && dnf install epel-release"
        fi
    fi
    if command -v clang >/dev/null 2>&1 && ! fuzzer_works; then
        say "clang cannot link a libFuzzer target (compiler-rt): tests/test_fuzz.py will skip"
    fi
else
    echo "install-build-deps: neither apt-get nor dnf found; install by hand:" >&2
    echo "  $RPM $RPM_OPTIONAL" >&2
    exit 1
fi

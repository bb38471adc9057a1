#!/bin/sh
# Install the system packages rpmcow needs to build, test and run.
# Idempotent: installs only what is missing.  Debian/Ubuntu (apt) and
# Fedora/CentOS (dnf).  Run as root.
set -eu

DEB="rpm python3-rpm dnf python3-dnf createrepo-c librpm-dev rpm2cpio cpio
 xfsprogs btrfs-progs e2fsprogs util-linux libzstd-dev liblzma-dev zlib1g-dev
 libbz2-dev libssl-dev python3-cffi python3-dev python3-venv python3-pip
 gcc make pkg-config clang libclang-rt-14-dev gnupg zstd xz-utils bzip2 lzma man-db
 python3-pytest rpmlint time"
RPM="rpm rpm-build python3-rpm dnf python3-dnf createrepo_c rpm-devel cpio
 xfsprogs btrfs-progs e2fsprogs util-linux libzstd-devel xz-devel zlib-devel
 bzip2-devel openssl-devel python3-cffi python3-devel python3-pip gcc make
 pkgconf-pkg-config clang compiler-rt gnupg2 zstd xz bzip2 man-db python3-pytest
 rpmlint time"

if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $DEB; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "installing:$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
    fi
elif command -v dnf >/dev/null 2>&1; then
    missing=""
    for p in $RPM; do
        rpm -q --whatprovides "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "installing:$missing"
        $SUDO dnf install -y $missing
    fi
else
    echo "install-build-deps: neither apt-get nor dnf found; install by hand:" >&2
    echo "  $RPM" >&2
    exit 1
fi

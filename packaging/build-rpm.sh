#!/bin/sh
# `make rpm`: rpmcow's source and binary packages, built with rpmbuild from a
# clean tree -- never from the work directory with its build products.
#
#   RPM_TOPDIR=DIR     rpmbuild's %_topdir (default build/rpm); emptied first
#   RPM_FROM=head      the tree: `git archive HEAD` (default), or
#   RPM_FROM=worktree  the files as they are now, uncommitted changes and new
#                      files included (what `git add -A` would take: nothing
#                      that .gitignore names, such as build products)
#   RPMBUILD_OPTS=...  more rpmbuild options (e.g. --nocheck, --without pyproject)
#   RPM_NODEPS=auto|yes|no   pass --nodeps (default auto, see below)
#
# BuildRequires: rpmbuild checks them against rpm's database.  Where that
# database is not the system's package database (Debian, Ubuntu: the build
# tools come from apt, see packaging/install-build-deps.sh), rpm sees none of
# them, and this script adds --nodeps and says so.  Where rpm sees some but
# not all of them (a Fedora/CentOS host missing a few), it stops and names
# them: install them with `dnf builddep packaging/rpmcow.spec`.
set -eu
cd "$(dirname "$0")/.."

SPEC=packaging/rpmcow.spec
TOP=${RPM_TOPDIR:-$PWD/build/rpm}
FROM=${RPM_FROM:-head}
NODEPS=${RPM_NODEPS:-auto}

say() { printf 'make rpm: %s\n' "$*"; }
die() { printf 'make rpm: %s\n' "$*" >&2; exit 1; }

for tool in git rpmbuild rpmspec rpm; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (packaging/install-build-deps.sh)"
done
git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: the tarball is made with git"

case "$FROM" in
head)
    tree=HEAD
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        say "building HEAD: uncommitted changes are not included (RPM_FROM=worktree includes them)"
    fi ;;
worktree)
    # what `git add -A` would commit, through a private copy of the index:
    # git's own index and refs stay untouched
    index=$(mktemp)
    cp "$(git rev-parse --git-path index)" "$index" 2>/dev/null || :
    GIT_INDEX_FILE=$index git add -A
    tree=$(GIT_INDEX_FILE=$index git write-tree)
    rm -f "$index" ;;
*)
    die "RPM_FROM must be head or worktree, not '$FROM'" ;;
esac

name=$(rpmspec -q --srpm --qf '%{name}' "$SPEC")
version=$(rpmspec -q --srpm --qf '%{version}' "$SPEC")
pyversion=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' rpmcow/__init__.py)
[ "$version" = "$pyversion" ] || die "$SPEC says Version $version, rpmcow/__init__.py says $pyversion"

case "$TOP" in /*) ;; *) TOP=$PWD/$TOP ;; esac
rm -rf "$TOP"
mkdir -p "$TOP/SOURCES" "$TOP/SPECS" "$TOP/BUILD" "$TOP/BUILDROOT" "$TOP/RPMS" "$TOP/SRPMS"
tarball=$TOP/SOURCES/$name-$version.tar.gz
git archive --format=tar --prefix="$name-$version/" "$tree" | gzip -n >"$tarball"
# the spec from the same tree as the sources
tar -xzOf "$tarball" "$name-$version/$SPEC" >"$TOP/SPECS/$name.spec"
say "sources: $tarball (from $FROM: $(git rev-parse --short "$tree"))"

nodeps=
case "$NODEPS" in
yes) nodeps=--nodeps ;;
no) ;;
auto)
    seen=0 missing=
    reqs=$(rpmspec -q --buildrequires "$TOP/SPECS/$name.spec")
    for req in $(printf '%s\n' "$reqs" | sed 's/[ <>=].*//' | sort -u); do
        if rpm -q --whatprovides "$req" >/dev/null 2>&1; then
            seen=$((seen + 1))
        else
            missing="$missing $req"
        fi
    done
    if [ "$seen" = 0 ]; then
        nodeps=--nodeps
        say "rpm's database has none of the BuildRequires (this system's packages are not"
        say "rpm packages: Debian?), so rpmbuild runs with --nodeps; the build tools come"
        say "from the system's own packages (packaging/install-build-deps.sh)"
    elif [ -n "$missing" ]; then
        die "missing BuildRequires:$missing -- install them: dnf builddep $SPEC (or RPM_NODEPS=yes)"
    fi ;;
*)
    die "RPM_NODEPS must be auto, yes or no, not '$NODEPS'" ;;
esac

rc=0
# shellcheck disable=SC2086
rpmbuild -ba $nodeps ${RPMBUILD_OPTS:-} --define "_topdir $TOP" "$TOP/SPECS/$name.spec" || rc=$?
if [ "$rc" = 11 ]; then
    # %generate_buildrequires (the pyproject macros) asked for more than is installed
    die "more build dependencies are needed (listed above): dnf builddep $TOP/SRPMS/*.buildreqs.nosrc.rpm, then make rpm again"
fi
[ "$rc" = 0 ] || die "rpmbuild failed (exit $rc)"

say "built:"
find "$TOP/SRPMS" "$TOP/RPMS" -name '*.rpm' | sort | sed 's/^/  /'

#!/bin/sh
# Smoke test of an installed rpmcow, run by the spec's %check (and usable on
# any host): needs rpmbuild and rpm, no root, no network, no package corpus.
#
#   RPMCOW_BIN=DIR          where rpmcow and rpm2extents are (default: $PATH)
#   RPMCOW_DNF_PLUGINS=DIR  also load the DNF plugins from DIR (needs dnf's
#                           Python bindings); PYTHONPATH must reach rpmcow
#   RPMCOW_PLUGIN=FILE      also check this rpm plugin (cow.so) with readelf
#
# Imports every module, builds a tiny package with rpmbuild, transcodes it
# with `rpmcow transcode` and `rpm2extents` (the two must agree byte for
# byte), then `rpmcow inspect` and `rpmcow checksig` the result.
set -eu

abs() { case "$1" in /*|'') printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
bin=$(abs "${RPMCOW_BIN:-}")
bin=${bin:+$bin/}
plugins=$(abs "${RPMCOW_DNF_PLUGINS:-}")
plugin=$(abs "${RPMCOW_PLUGIN:-}")
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/rpmcow-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
# away from any source tree: `python -` imports from the current directory
cd "$work"

say() { printf 'smoke: %s\n' "$*"; }

say "modules"
"$python" - <<'PY'
import importlib, pkgutil
import rpmcow, rpmcow.vendorpolicy
skip = {"rpmcow.__main__", "rpmcow.demo", "rpmcow.corpus_demo", "rpmcow.scenario", "rpmcow._build"}
names = [m.name for m in pkgutil.walk_packages(rpmcow.__path__, "rpmcow.")]
for name in names:
    if name not in skip:
        importlib.import_module(name)
assert "rpmcow.vendorpolicy.policy" in names, names
print("smoke: imported %d modules from %s" % (len(names) - len(skip & set(names)),
                                                 rpmcow.__path__[0]))
PY

if [ -n "$plugins" ]; then
    say "DNF plugins in $plugins"
    RPMCOW_DNF_PLUGINS=$plugins "$python" - <<'PY'
import importlib.util, os
d = os.environ["RPMCOW_DNF_PLUGINS"]
for mod, cls in (("cow", "Cow"), ("sticky_vendor", None)):
    spec = importlib.util.spec_from_file_location("smoke_" + mod, os.path.join(d, mod + ".py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    plugins = [v for v in vars(m).values()
               if isinstance(v, type) and getattr(v, "name", None) and v.__module__ == m.__name__]
    assert plugins, "%s.py defines no dnf plugin" % mod
PY
fi

say "binaries"
# the C extension and the rpm plugin: a GNU_STACK header that is not
# executable, and RELRO (rpmcow/_build.py's linker flags)
so=$("$python" -c 'import rpmcow._core as c; print(c.__file__)')
for f in "$so" ${plugin:+"$plugin"}; do
    headers=$(readelf -lW "$f")
    printf '%s\n' "$headers" | grep -q 'GNU_RELRO' || { echo "smoke: $f: no RELRO" >&2; exit 1; }
    printf '%s\n' "$headers" | grep 'GNU_STACK' | grep -q ' RW  *0x' ||
        { echo "smoke: $f: executable or missing GNU_STACK" >&2; exit 1; }
done

say "commands"
"${bin}rpmcow" --version
"${bin}rpmcow" --help >/dev/null
for sub in transcode checksig install inspect; do
    "${bin}rpmcow" "$sub" --help >/dev/null
done
"${bin}rpm2extents" --help >/dev/null

say "a tiny package"
mkdir -p "$work/top/SPECS" "$work/top/tmp"
cat >"$work/top/SPECS/smoke.spec" <<'SPEC'
Name: rpmcow-smoke
Version: 1.0
Release: 1
Summary: rpmcow smoke test package
License: MIT
BuildArch: noarch
%description
Built by rpmcow's packaging/smoke-test.sh.
%install
mkdir -p %{buildroot}/opt/smoke
i=0; while [ $i -lt 3000 ]; do echo "line $i of the big file"; i=$((i+1)); done > %{buildroot}/opt/smoke/big
echo small > %{buildroot}/opt/smoke/small
ln %{buildroot}/opt/smoke/big %{buildroot}/opt/smoke/big-link
ln -s big %{buildroot}/opt/smoke/latest
%files
/opt/smoke
SPEC
HOME=$work rpmbuild -bb --quiet --nodeps \
    --define "_topdir $work/top" --define "_tmppath $work/top/tmp" \
    --define "__os_install_post %{nil}" --define "debug_package %{nil}" \
    "$work/top/SPECS/smoke.spec" >"$work/rpmbuild.log" 2>&1 || {
    cat "$work/rpmbuild.log" >&2; exit 1; }
pkg=$(ls "$work"/top/RPMS/noarch/rpmcow-smoke-1.0-1.noarch.rpm)

say "transcode"
"${bin}rpmcow" transcode "$pkg" -o "$work/smoke.cow.rpm" --verify-level digest
"${bin}rpm2extents" SHA256 <"$pkg" >"$work/smoke.r2e.rpm"
# equal but for the record's file identity and MAC (a pipe has no file to bind)
"$python" - "$work/smoke.cow.rpm" "$work/smoke.r2e.rpm" <<'PY'
import re, sys
def unbound(data):
    return re.sub(rb"(file=)\d{20}:\d{20}( mac=)[0-9a-f]{64}",
                  lambda m: m[1] + b"0" * 41 + m[2] + b"0" * 64, data)
a, b = (open(p, "rb").read() for p in sys.argv[1:])
assert unbound(a) == unbound(b), "transcode and rpm2extents outputs differ"
PY

say "inspect"
"${bin}rpmcow" inspect "$work/smoke.cow.rpm" --json >"$work/inspect.json"
"$python" - "$work/inspect.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["transcoded"] and r["package"] == "rpmcow-smoke-1.0-1.noarch", r
assert r["verification"]["ok"], r["verification"]
assert r["table"]["count"] == 2, r["table"]          # big (and its link), small
assert list(r["input"]["digests"]) == ["SHA256"], r["input"]
PY
if "${bin}rpmcow" inspect "$pkg" >/dev/null; then
    echo "smoke: inspect calls a plain package an extents file" >&2; exit 1
fi

say "checksig"
"${bin}rpmcow" checksig "$work/smoke.cow.rpm"
say "OK"

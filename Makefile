# rpmcow developer entry points.  `make setup` once on a fresh machine,
# then `make demo` (the main job on a built-in default) or `make test`.
PYTHON  ?= /usr/bin/python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup deps venv build test demo fuzz bench bench-transcode bench-verify bench-install \
	bench-dnf bench-dnf5 bench-image bench-image-phases bench-vendor bench-vendor-dnf5 bench-tail-block clean \
	test-matrix test-matrix-clean

setup: deps venv build

deps:
	sh packaging/install-build-deps.sh

# rpm's and dnf's Python bindings exist only for the system Python.  The
# editable install is a plain path entry ("compat"): setuptools' default
# import finder costs ~9 ms of every rpmcow start (pathlib, importlib.util),
# which an installed rpmcow does not pay and the benchmarks should not.
# setuptools calls that mode transitional: where it is gone, the default.
PIP_INSTALL := $(VPY) -m pip install -q --disable-pip-version-check -e '.[test,demo]'
venv:
	test -x $(VPY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PIP_INSTALL) --config-settings editable_mode=compat || $(PIP_INSTALL)

# The cffi extension and the rpm plugin, rebuilt whole (--force) whenever a
# C source or header is newer: setuptools alone tracks no headers, and it
# kept a stale extension when a source changed within the second the
# extension was written (after switching commits to compare them).
CORE := rpmcow/_core.abi3.so
build: $(CORE)
$(CORE): $(wildcard csrc/*.c csrc/*.h) rpmcow/_build.py setup.py
	$(VPY) setup.py -q build_ext --inplace --force
	touch $@

test: setup
	$(VPY) -m pytest $(PYTEST_ARGS)

# the suite on the other Debian generations (bullseye, trixie, sid) in cached
# mmdebstrap chroots; prints the table and writes it to docs/compatibility.md.
# Needs root and the Debian registry; not `setup` (nothing of the host's build
# is used).  MATRIX_SUITES="bullseye sid" picks; see tests/matrix/matrix.sh.
test-matrix:
	bash tests/matrix/matrix.sh

# the cached chroots (/var/tmp/rpmcow-matrix), only when nothing is mounted there
test-matrix-clean:
	bash tests/matrix/matrix.sh --clean

demo: setup
	$(VPY) -m rpmcow.demo

fuzz: setup
	$(MAKE) -C tests/fuzz run

# every benchmark (tens of minutes: large packages are built once, cached in
# bench/work and build/scenario); results land in bench/results/
bench: bench-transcode bench-verify bench-install bench-dnf bench-image bench-vendor bench-tail-block

bench-transcode: setup
	$(VPY) bench/transcode_bench.py

bench-verify: setup
	$(VPY) bench/verify_bench.py

bench-install: setup
	$(VPY) bench/install_bench.py

bench-dnf: setup
	$(VPY) bench/dnf_bench.py

# N installroots from one package cache (image builds)
bench-image: setup
	$(VPY) bench/image_bench.py

# where a later image root's time goes: dnf's phases, stock vs cow vs the floor
bench-image-phases: setup
	$(VPY) bench/image_phases.py

# dnf5 lives in the compatibility matrix's sid chroot: the benchmark runs there
# (tests/matrix/matrix.sh --run), its table and chart are made here
bench-dnf5: setup
	MATRIX_TIMEOUT=3600 bash tests/matrix/matrix.sh --run sid \
	    'BENCH_RESULTS=$$OUT python3 bench/dnf5_bench.py $(BENCH_ARGS)'
	cp build/matrix/sid/dnf5.json bench/results/dnf5.json
	$(VPY) bench/dnf5_bench.py --replot bench/results/dnf5.json

bench-vendor: setup
	$(VPY) bench/vendor_bench.py

# sticky vendor on dnf5 (dnf5 enforces our generated vendors.d rules) vs stock
# dnf5, 20,000 packages, in the matrix's sid chroot; BENCH_NOTE says what else
# the machine was doing
bench-vendor-dnf5: setup
	MATRIX_TIMEOUT=3600 bash tests/matrix/matrix.sh --run sid \
	    'BENCH_RESULTS=$$OUT python3 bench/vendor_dnf5_bench.py --machine-note "$(BENCH_NOTE)" $(BENCH_ARGS)'
	cp build/matrix/sid/vendor_dnf5.json build/matrix/sid/vendor_dnf5.md bench/results/

bench-tail-block: setup
	$(VPY) bench/tail_block.py

clean:
	rm -rf build dist *.egg-info rpmcow/_core*.so rpmcow/_core.c .pytest_cache

# source and binary RPMs from a clean tree (git archive HEAD) in build/rpm;
# RPM_FROM=worktree includes uncommitted changes (packaging/build-rpm.sh)
.PHONY: rpm
rpm:
	sh packaging/build-rpm.sh

"""Shared fixtures for the rpmcow tests.

* ``corpus_dir``        -- Path of the package corpus: ``$RPMCOW_CORPUS`` if set, else
                           ``tests/corpus`` in this repository (see its README). Tests
                           using it are skipped, with a reason, when it is missing.
* ``real_packages``     -- sorted Paths of ``corpus/real/*.rpm``.
* ``testdata_packages`` -- sorted Paths of ``corpus/rpm-testdata/*.rpm*`` (rpm's own
                           test packages, including a ``.rpm-v3`` and a corrupted one).
* ``rpmcow_cli``        -- argv prefix that runs the ``rpmcow`` command: the venv's
                           script if installed, else ``[python, -m, rpmcow]``.
* ``pkgbuilder``        -- session-wide ``tests.pkgbuild.PackageBuilder``: builds RPMs
                           with rpmbuild from ``FileSpec`` lists (skips without rpmbuild).

The corpus is read-only: never write into it, use ``tmp_path``.  ``corpus_path()`` is
the one place that knows where it is.
"""
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))   # `import pkgbuild`

import pkgbuild  # noqa: E402


def corpus_path():
    """Where the corpus is (also usable at collection time, e.g. in parametrize)."""
    env = os.environ.get("RPMCOW_CORPUS")
    return Path(env) if env else ROOT / "tests" / "corpus"


def list_real_packages():
    return sorted((corpus_path() / "real").glob("*.rpm"))


def list_testdata_packages():
    return sorted((corpus_path() / "rpm-testdata").glob("*.rpm*"))


_RECORD_BINDING = re.compile(rb"(file=)\d{20}:\d{20}( mac=)[0-9a-f]{64}")


def unbound(data):
    """An extents file's bytes with the record's file identity and MAC
    masked: two transcodes of one package differ only there (the record
    binds the very file written, rpmcow.record), in those bytes alone."""
    return _RECORD_BINDING.sub(lambda m: m[1] + b"0" * 41 + m[2] + b"0" * 64, data)


@pytest.fixture(scope="session")
def corpus_dir():
    path = corpus_path()
    if not path.is_dir():
        pytest.skip("package corpus not found at %s (set RPMCOW_CORPUS)" % path)
    return path


@pytest.fixture(scope="session")
def real_packages(corpus_dir):
    return list_real_packages()


@pytest.fixture(scope="session")
def testdata_packages(corpus_dir):
    return list_testdata_packages()


@pytest.fixture(scope="session")
def rpmcow_cli():
    script = Path(sys.executable).parent / "rpmcow"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "rpmcow"]


@pytest.fixture(scope="session")
def pkgbuilder(tmp_path_factory):
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed")
    return pkgbuild.PackageBuilder(tmp_path_factory.mktemp("pkgbuild"))

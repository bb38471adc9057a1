"""rpmcow: copy-on-write package installs for RPM/DNF systems.

The C core (csrc/) is built as the cffi extension rpmcow._core, see
rpmcow/_build.py.  System libraries needed: libzstd, liblzma, zlib, libbz2,
libcrypto (OpenSSL) and their headers; rpm's Python bindings at run time.
"""
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildWithPlugin(build_ext):
    """Also build the rpm plugin (csrc/rpm_plugin_cow.c -> rpmcow/plugins/cow.so)."""

    def run(self):
        super().run()
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "rpmcow"))
        import _build
        out_dir = _build.PLUGIN_DIR if self.inplace else os.path.join(
            self.build_lib, "rpmcow", "plugins")
        _build.build_plugin(out_dir)


setup(
    name="rpmcow",
    version="0.1.0",
    description="Copy-on-write package installs for RPM/DNF systems",
    license="MIT",
    python_requires=">=3.9",
    packages=["rpmcow", "rpmcow.vendorpolicy"],
    # the demo's timing plugin for dnf (rpmcow.scenario): make demo works
    # from an installed rpmcow too
    package_data={"rpmcow": ["scenario_plugins/*.py"]},
    setup_requires=["cffi>=1.14"],
    install_requires=["cffi>=1.14", 'tomli; python_version < "3.11"'],
    cffi_modules=["rpmcow/_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithPlugin},
    extras_require={"test": ["pytest>=7", "hypothesis>=6"], "demo": ["matplotlib>=3.5"]},
    entry_points={"console_scripts": [
        "rpmcow = rpmcow.cli:main",
        "rpm2extents = rpmcow.cli:rpm2extents_main",
    ]},
    zip_safe=False,
)

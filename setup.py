"""rpmcow: copy-on-write package installs for RPM/DNF systems.

The C core (csrc/) is built as the cffi extension rpmcow._core, see
rpmcow/_build.py.  System libraries needed: libzstd, liblzma, zlib, libbz2,
libcrypto (OpenSSL) and their headers; rpm's Python bindings at run time.
"""
from setuptools import setup

setup(
    name="rpmcow",
    version="0.1.0",
    description="Copy-on-write package installs for RPM/DNF systems",
    license="MIT",
    python_requires=">=3.9",
    packages=["rpmcow"],
    setup_requires=["cffi>=1.15"],
    install_requires=["cffi>=1.15"],
    cffi_modules=["rpmcow/_build.py:ffibuilder"],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": [
        "rpmcow = rpmcow.cli:main",
        "rpm2extents = rpmcow.cli:rpm2extents_main",
    ]},
    zip_safe=False,
)

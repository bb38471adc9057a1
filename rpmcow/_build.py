"""Builds the ``rpmcow._core`` cffi extension from ``csrc/`` (API mode).

The declarations are csrc/rpmcow.h's own (cdef_from_header): the header is
the one place the C core's API is written down.  The extension links the
system compression libraries and OpenSSL's libcrypto (every digest's EVP);
on x86-64 CPUs with the SHA
extensions, SHA-256 and MD5 run on blockhash.c's own block functions,
several streams at once (RPMCOW_DIGESTS=openssl turns that off).
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")

def cdef_from_header(path=os.path.join(CSRC, "rpmcow.h")):
    """The cffi declarations, read from csrc/rpmcow.h itself -- the one
    source of truth for the C core's API (no copy by hand to drift): its
    comments, attributes and preprocessor lines go; each ``#define RC_*``
    becomes ``#define RC_* ...`` (cffi takes the value from the compiler)."""
    import re
    with open(path) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)", "", text)
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            m = re.match(r"#\s*define\s+(RC_\w+)\s+\S", stripped)
            if m:
                out.append("#define %s ..." % m.group(1))
            continue
        if stripped:
            out.append(line.rstrip())
    return "\n".join(out) + "\n"


SOURCES = ["util.c", "digest.c", "blockhash.c", "input.c", "header.c", "payload.c", "cpio.c", "filetab.c",
           "layout.c", "feed.c", "xzzeros.c"]

# warnings are errors; hardening flags; no executable stack
CFLAGS = [
    "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
    "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-D_GNU_SOURCE", "-fno-strict-aliasing", "-pthread",
]
LDFLAGS = ["-pthread", "-Wl,-z,noexecstack", "-Wl,-z,relro", "-Wl,-z,now"]
LIBRARIES = ["zstd", "lzma", "z", "bz2", "crypto"]

ffibuilder = FFI()
if os.path.isdir(CSRC):         # a source tree (an installed rpmcow has no csrc/)
    ffibuilder.cdef(cdef_from_header())
ffibuilder.set_source(
    "rpmcow._core",
    '#include "rpmcow.h"',
    sources=[os.path.join(CSRC, s) for s in SOURCES],
    include_dirs=[CSRC],
    libraries=LIBRARIES,
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

# ---- the rpm plugin: a plain shared object loaded by librpm, not by Python
PLUGIN_SOURCES = ["rpm_plugin_cow.c", "feed.c", "xzzeros.c", "util.c"]
PLUGIN_DIR = os.path.join(HERE, "plugins")


def build_plugin(out_dir=PLUGIN_DIR, cc=None, test_hooks=False):
    """Compile csrc/rpm_plugin_cow.c (with the feed writer) against the system librpm into
    out_dir/cow.so; returns its path.  test_hooks: a build for the tests
    alone, with $RPMCOW_TEST_FAULT_PATH and _DELAY_MS (the default build, and so every
    package, has no test hook)."""
    import subprocess
    import sysconfig
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "cow.so")
    cc = cc or os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"
    # -pthread: the plugin runs a worker thread (glibc < 2.34 needs libpthread)
    # the feed writer (and what it needs of util.c) is linked in: the plugin
    # serves payloads itself for front ends that hand rpm the package
    # (csrc/rpm_plugin_cow.c, "Serving"); nothing but the hooks is exported
    cmd = [cc, "-shared", "-fPIC", "-fvisibility=hidden", *CFLAGS,
           *(["-DRPMCOW_TEST_HOOKS"] if test_hooks else []), *LDFLAGS, "-o", out + ".tmp",
           *[os.path.join(CSRC, f) for f in PLUGIN_SOURCES],
           "-lrpm", "-lrpmio", "-llzma", "-lz", "-lbz2"]
    subprocess.run(cmd, check=True)
    os.replace(out + ".tmp", out)
    return out


# ---- the libdnf5 plugin (C++): built only where libdnf5's headers are
DNF5_PLUGIN_SOURCE = os.path.join(HERE, os.pardir, "dnf-plugins", "libdnf5", "cow.cpp")


def dnf5_available():
    """Whether libdnf5's development files are here (pkg-config libdnf5)."""
    import shutil
    import subprocess
    return shutil.which("pkg-config") is not None and shutil.which("g++") is not None and \
        subprocess.run(["pkg-config", "--exists", "libdnf5"]).returncode == 0


DNF5_STICKY_SOURCE = os.path.join(HERE, os.pardir, "dnf-plugins", "libdnf5", "sticky_vendor.cpp")


def build_dnf5_plugin(out_dir, source=DNF5_PLUGIN_SOURCE, cxx=None, name="cow"):
    """Compile a libdnf5 plugin into out_dir/NAME.so (the file's name is the
    plugin's: cow, or sticky-vendor from DNF5_STICKY_SOURCE); returns its path."""
    import shlex
    import subprocess
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, name + ".so")
    flags = shlex.split(subprocess.run(["pkg-config", "--cflags", "--libs", "libdnf5"],
                                       check=True, capture_output=True, text=True).stdout)
    cxx = cxx or os.environ.get("CXX") or "g++"
    cmd = [cxx, "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden", "-O2", "-Wall", "-Wextra",
           "-Werror", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", *LDFLAGS,
           "-o", out + ".tmp", source, *flags, "-lrpm", "-lrpmio"]
    subprocess.run(cmd, check=True)
    os.replace(out + ".tmp", out)
    return out


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    build_plugin()

"""Builds the ``rpmcow._core`` cffi extension from ``csrc/`` (API mode).

Declarations are grouped by stage of the data path, each mirroring a part of
``csrc/rpmcow.h``.  The extension links the system compression libraries and
OpenSSL's libcrypto (every digest's EVP); on x86-64 CPUs with the SHA
extensions, SHA-256 and MD5 run on blockhash.c's own block functions,
several streams at once (RPMCOW_DIGESTS=openssl turns that off).
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")

ERRORS = """
#define RC_OK ...
#define RC_E_IO ...
#define RC_E_FORMAT ...
#define RC_E_TRUNCATED ...
#define RC_E_DIGEST ...
#define RC_E_NOMEM ...
#define RC_E_TRAILING ...
#define RC_E_INTERNAL ...
#define RC_E_LIMIT ...
typedef struct rc_error { int code; char msg[512]; } rc_error;
"""

DIGEST = """
typedef struct rc_digest rc_digest;
rc_digest *rc_digest_new(const char *name, rc_error *err);
int rc_digest_update(rc_digest *d, const void *p, size_t n);
int rc_digest_final(rc_digest *d, uint8_t *out);
void rc_digest_free(rc_digest *d);
void rc_digest_update_together(rc_digest *const *ds, const uint8_t *const *ps,
                               const size_t *ns, int k);
const char *rc_digest_backend(void);
typedef struct rc_writer rc_writer;
rc_writer *rc_writer_start(int fd, const uint8_t *p, size_t n);
void rc_writer_join(rc_writer *w);
int rc_link_unnamed(int fd, const char *path);
int rc_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t n,
                   uint8_t *out);
"""

INPUT = """
#define RC_MAX_DIGEST ...
#define RC_MAX_ALGOS ...
#define RC_MAX_RANGES ...
typedef struct rc_input rc_input;
rc_input *rc_input_new(int fd, const char *const *algos, int nalgos, rc_error *err);
void rc_input_free(rc_input *in);
void rc_input_set_tee(rc_input *in, int fd);
uint64_t rc_input_total(const rc_input *in);
uint64_t rc_input_progress(const rc_input *in);
int rc_input_copy_to(rc_input *in, int fd, rc_error *err);
int rc_input_add_range_digest(rc_input *in, const char *name, uint64_t start,
                              const uint8_t *prefix, size_t prefix_len, rc_error *err);
void rc_input_hold(rc_input *in);
int rc_input_provide_held(rc_input *in, const uint8_t *p, size_t n, rc_error *err);
int rc_input_finish(rc_input *in, uint8_t *out, int *lens,
                    uint8_t *range_out, int *range_lens, rc_error *err);
"""

HEADER = """
#define RC_LEAD_SIZE ...
typedef struct rc_prologue {
    uint8_t *data; size_t len;
    size_t sig_off, sig_len;
    size_t hdr_off, hdr_len;
} rc_prologue;
int rc_read_prologue(rc_input *in, rc_prologue *pro, rc_error *err);
int rc_prologue_frame(rc_input *in, rc_prologue *pro, rc_error *err);
int rc_prologue_fill(rc_input *in, const rc_prologue *pro, uint8_t *dst, rc_error *err);
void rc_prologue_free(rc_prologue *pro);
"""

PAYLOAD = """
enum rc_compressor {
    RC_COMP_NONE, RC_COMP_GZIP, RC_COMP_BZIP2, RC_COMP_XZ, RC_COMP_LZMA, RC_COMP_ZSTD
};
"""

FILETAB = """
#define RC_KIND_GHOST ...
#define RC_KIND_REG ...
#define RC_KIND_DIR ...
#define RC_KIND_LINK ...
#define RC_KIND_OTHER ...
typedef struct rc_filetab rc_filetab;
typedef struct rc_ftable {
    rc_filetab ft;
    int algo;
    uint64_t *sizes;
    uint64_t *stripped;
    uint8_t *flags;
    uint8_t *kinds;
    uint8_t *digests;
    int32_t *groups;
    uint8_t *group_digests;
    const char **linktos;
    char *link_pool;
    const char **paths;
    char *path_pool;
    uint32_t *order;
    uint32_t norder;
} rc_ftable;
int rc_ftable_build(const uint8_t *hdr, size_t len, rc_ftable **out, rc_error *err);
void rc_ftable_free(rc_ftable *t);
size_t rc_ftable_t_entries(const rc_ftable *t, const uint64_t *offsets, uint8_t *out,
                           size_t cap);
"""

LAYOUT = """
#define RC_FT_REG ...
#define RC_FT_KEYED ...
#define RC_FT_NOCONTENT ...
#define RC_FT_GHOST ...
typedef struct rc_filetab {
    uint32_t count;
    uint32_t keysize;
    const char *digest_name;
    const uint8_t *digests;
    const uint64_t *sizes;
    const uint64_t *stripped_sizes;
    const uint8_t *flags;
    const int32_t *groups;
    uint32_t ngroups;
    const char *const *names;
    const uint32_t *name_fx;
} rc_filetab;
typedef struct rc_layout_result {
    uint64_t out_pos, blobs, blob_bytes, dup_files, payload_bytes, entries;
    uint64_t reader_cpu_ns, sink_cpu_ns;
} rc_layout_result;
int rc_layout_payload(rc_input *in, int compressor, const rc_filetab *ft,
                      int out_fd, uint64_t out_pos, uint32_t page_size,
                      uint64_t *group_offsets, rc_layout_result *res, rc_error *err);
typedef struct rc_layout_job rc_layout_job;
int rc_layout_start(rc_input *in, int compressor, const rc_filetab *ft,
                    int out_fd, uint64_t out_pos, uint32_t page_size,
                    uint64_t *group_offsets, rc_layout_result *res,
                    rc_layout_job **job, rc_error *err);
int rc_layout_wait(rc_layout_job *job, rc_error *err);
void rc_layout_force_hasher(int who);
"""

FEED = """
#define RC_FEED_NONE ...
#define RC_FEED_REG ...
#define RC_FEED_LINK ...
#define RC_FEED_GATE ...
typedef struct rc_feed_file { uint8_t kind; uint64_t size; uint64_t blob; const char *link; } rc_feed_file;
typedef struct rc_feed {
    int extents_fd; int compressor; uint32_t blk;
    const uint8_t *prologue; size_t prologue_len;
    uint32_t nfiles; const rc_feed_file *files;
    uint32_t count; const uint32_t *order;
} rc_feed;
int rc_feed_write(const rc_feed *f, int out_fd, rc_error *err);
"""

SOURCES = ["util.c", "digest.c", "blockhash.c", "input.c", "header.c", "payload.c", "cpio.c", "filetab.c",
           "layout.c", "feed.c"]

# warnings are errors; hardening flags; no executable stack
CFLAGS = [
    "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
    "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-D_GNU_SOURCE", "-fno-strict-aliasing", "-pthread",
]
LDFLAGS = ["-pthread", "-Wl,-z,noexecstack", "-Wl,-z,relro", "-Wl,-z,now"]
LIBRARIES = ["zstd", "lzma", "z", "bz2", "crypto"]

ffibuilder = FFI()
ffibuilder.cdef(ERRORS + DIGEST + INPUT + HEADER + PAYLOAD + LAYOUT + FILETAB + FEED)
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
PLUGIN_SOURCE = "rpm_plugin_cow.c"
PLUGIN_DIR = os.path.join(HERE, "plugins")


def build_plugin(out_dir=PLUGIN_DIR, cc=None, test_hooks=False):
    """Compile csrc/rpm_plugin_cow.c against the system librpm into
    out_dir/cow.so; returns its path.  test_hooks: a build for the tests
    alone, with $RPMCOW_TEST_FAULT_PATH (the default build, and so every
    package, has no test hook)."""
    import subprocess
    import sysconfig
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "cow.so")
    cc = cc or os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"
    # -pthread: the plugin runs a worker thread (glibc < 2.34 needs libpthread)
    cmd = [cc, "-shared", "-fPIC", *CFLAGS, *(["-DRPMCOW_TEST_HOOKS"] if test_hooks else []),
           *LDFLAGS, "-o", out + ".tmp", os.path.join(CSRC, PLUGIN_SOURCE), "-lrpm", "-lrpmio"]
    subprocess.run(cmd, check=True)
    os.replace(out + ".tmp", out)
    return out


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    build_plugin()

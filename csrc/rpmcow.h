/*
 * rpmcow C core: the hot path of the transcoder.
 *
 * Data path, one file per stage:
 *   input.c    bytes in: buffered reads from an fd, input and payload digests
 *   header.c   framing of lead, signature header and main header (sizes only)
 *   payload.c  decompression of the payload (zstd, xz, lzma, gzip, bzip2, none)
 *   cpio.c     cpio archive entries (newc and rpm's stripped form)
 *   filetab.c  the file table, from the main header's file tags
 *   layout.c   extents layout: dedupe, page alignment, file digests, writes
 *   digest.c   digest contexts (OpenSSL EVP; SHA-256 and MD5 on blockhash.c)
 *   blockhash.c SHA-256 (x86 SHA extensions) and MD5 block functions, stitched
 *
 * Every function that can fail returns RC_OK (0) or a negative RC_E_* code
 * and leaves a one-line message in the rc_error it was given.
 * Everything read from the input is untrusted and bounds-checked.
 */
#ifndef RPMCOW_H
#define RPMCOW_H

#include <stddef.h>
#include <stdint.h>

/* ---- errors --------------------------------------------------------- */
#define RC_OK            0
#define RC_E_IO         -1   /* read or write failed (errno in message) */
#define RC_E_FORMAT     -2   /* input is not a valid package */
#define RC_E_TRUNCATED  -3   /* input ended early */
#define RC_E_DIGEST     -4   /* content does not match its header digest */
#define RC_E_NOMEM      -5   /* out of memory (or threads): says nothing of the package */
#define RC_E_TRAILING   -6   /* data after the end of the package */
#define RC_E_INTERNAL   -7   /* invalid arguments from the caller */
#define RC_E_LIMIT      -8   /* the package exceeds one of rpmcow's limits */

typedef struct rc_error {
    int code;
    char msg[512];
} rc_error;

/* ---- digests (digest.c) --------------------------------------------- */
#define RC_MAX_DIGEST 64
#define RC_MAX_ALGOS  8
#define RC_MAX_RANGES 8

typedef struct rc_digest rc_digest;
/* name: OpenSSL digest name ("MD5", "SHA1", "SHA224", "SHA256", ...) */
rc_digest *rc_digest_new(const char *name, rc_error *err);
int rc_digest_update(rc_digest *d, const void *p, size_t n);
/* writes the digest to out (RC_MAX_DIGEST bytes); returns its length */
int rc_digest_final(rc_digest *d, uint8_t *out);
int rc_digest_reset(rc_digest *d);
void rc_digest_free(rc_digest *d);
/* Update ds[i] with ps[i][0, ns[i]) for each i < k: the same result as k
 * rc_digest_update calls, but MD5 and SHA-256 streams are hashed together,
 * interleaved on one core.  For streams over the same bytes that start at
 * different offsets (whole input, payload, header + payload). */
void rc_digest_update_together(rc_digest *const *ds, const uint8_t *const *ps,
                               const size_t *ns, int k);
/* 1 if rc_digest_update_together interleaves d with others (and its
 * updates cannot fail) */
int rc_digest_interleaves(const rc_digest *d);
/* "sha-ni" when SHA-256 and MD5 use blockhash.c, else "openssl" */
/* HMAC-SHA-256 of msg with key (OpenSSL's): 32 bytes into out. */
int rc_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t n,
                   uint8_t *out);
const char *rc_digest_backend(void);

/* ---- block functions (blockhash.c) ----------------------------------- */
/* 1 if this CPU runs them (x86-64 with the SHA extensions, SSSE3, SSE4.1) */
int rc_blockhash_available(void);
/* Advance chaining states by nblocks 64-byte blocks each, one core
 * interleaving them: md5 (4 words; NULL: none) over pm, and nsha (at most
 * RC_BLOCKHASH_MAX_SHA) SHA-256 states h[i] (8 words) over p[i].  Needs
 * rc_blockhash_available. */
#define RC_BLOCKHASH_MAX_SHA 4
void rc_blockhash(uint32_t *md5, const uint8_t *pm, int nsha, uint32_t *const *h,
                  const uint8_t *const *p, size_t nblocks);

/* ---- input (input.c) ------------------------------------------------ */
typedef struct rc_input rc_input;

/* Reads from fd (not owned). algos: names of the input-stream digests
 * recorded in the C section. */
rc_input *rc_input_new(int fd, const char *const *algos, int nalgos, rc_error *err);
void rc_input_free(rc_input *in);
/* Copy exactly n bytes; RC_E_TRUNCATED if the input ends first. */
int rc_input_read(rc_input *in, uint8_t *dst, size_t n, const char *what, rc_error *err);
/* Zero-copy access to buffered bytes: *n == 0 means end of input. */
int rc_input_peek(rc_input *in, const uint8_t **p, size_t *n, rc_error *err);
void rc_input_consume(rc_input *in, size_t n);
/* Add a digest of the input from absolute offset `start` to its end (the
 * payload digest, the legacy header+payload MD5).  prefix: the bytes from
 * `start` to the current position, already consumed.  Returns the digest's
 * index (0, 1, ...) or a negative RC_E_*. */
int rc_input_add_range_digest(rc_input *in, const char *name, uint64_t start,
                              const uint8_t *prefix, size_t prefix_len, rc_error *err);
/* Copy every byte consumed from now on to fd (e.g. a verifier's pipe). */
void rc_input_set_tee(rc_input *in, int fd);
/* Deferred hashing: while set, each consumed block is handed to `handoff`
 * instead of being hashed; whoever receives it must call
 * rc_input_release_block() (from any one thread) to hash and release it. */
typedef void (*rc_input_handoff)(void *arg, int idx, uint64_t base, size_t from, size_t to);
void rc_input_defer(rc_input *in, rc_input_handoff handoff, void *arg);
/* hand off the rest of the current block and return to immediate mode */
void rc_input_undefer(rc_input *in);
/* Hold hashing (at byte 0 only): consumed bytes are not hashed until
 * rc_input_provide_held gives them again (all of them, in a buffer that
 * stays valid until they are hashed: by the next hashing, rc_input_finish,
 * or the sink via rc_input_held_chunks).  Lets the prologue be hashed
 * later, off the critical path, together with everything else. */
void rc_input_hold(rc_input *in);
int rc_input_provide_held(rc_input *in, const uint8_t *p, size_t n, rc_error *err);
int rc_input_held_chunks(rc_input *in, rc_digest **ds, const uint8_t **ps, size_t *ns);
/* Copy bytes [from, to) of block idx (its byte 0 at absolute offset base)
 * to the tee, hash them unless `hashed`, and release the block. */
void rc_input_release_block(rc_input *in, int idx, uint64_t base, size_t from, size_t to,
                            int hashed);
/* The digests those bytes feed, and each one's part of them (a range digest
 * starts at its offset): fills ds, ps, ns (RC_MAX_ALGOS + RC_MAX_RANGES
 * entries), returns how many.  Whoever hashes them so passes hashed=1. */
int rc_input_block_chunks(rc_input *in, int idx, uint64_t base, size_t from, size_t to,
                          rc_digest **ds, const uint8_t **ps, size_t *ns);
uint64_t rc_input_total(const rc_input *in);
/* Bytes read from the input so far; safe to call from any thread while
 * the layout runs (a progress report's). */
uint64_t rc_input_progress(const rc_input *in);
/* Copy the rest of the input to fd unchanged (deny-listed packages). */
int rc_input_copy_to(rc_input *in, int fd, rc_error *err);
/* Finalise the digests; out must hold nalgos * RC_MAX_DIGEST bytes, lens
 * nalgos ints; range_out RC_MAX_RANGES * RC_MAX_DIGEST bytes and range_lens
 * RC_MAX_RANGES ints (both may be NULL). */
int rc_input_finish(rc_input *in, uint8_t *out, int *lens,
                    uint8_t *range_out, int *range_lens, rc_error *err);

/* ---- lead and headers (header.c) ------------------------------------ */
#define RC_LEAD_SIZE 96
#define RC_SIGHDR_MAX  (64u << 20)     /* signature header limit */
#define RC_HDR_MAX     (256u << 20)    /* main header limit (rpm's own) */

typedef struct rc_prologue {
    uint8_t *data;          /* lead + signature header (+pad) + main header */
    size_t len;
    size_t sig_off, sig_len; /* sig_len excludes the padding */
    size_t hdr_off, hdr_len;
} rc_prologue;

/* Read and frame the lead and both headers; data is malloc'd. */
int rc_read_prologue(rc_input *in, rc_prologue *pro, rc_error *err);
/* The same in two steps, for a caller that holds the prologue in memory of
 * its own: frame reads and checks the lead, the signature header (+pad) and
 * the main header's 16-byte intro (data: those bytes, malloc'd; len: the
 * whole prologue's length); fill copies them to dst and reads the rest of
 * the main header after them (dst: len bytes). */
int rc_prologue_frame(rc_input *in, rc_prologue *pro, rc_error *err);
int rc_prologue_fill(rc_input *in, const rc_prologue *pro, uint8_t *dst, rc_error *err);
void rc_prologue_free(rc_prologue *pro);

/* ---- payload decompression (payload.c) ------------------------------ */
enum rc_compressor {
    RC_COMP_NONE = 0, RC_COMP_GZIP, RC_COMP_BZIP2, RC_COMP_XZ,
    RC_COMP_LZMA, RC_COMP_ZSTD
};
typedef struct rc_decoder rc_decoder;
rc_decoder *rc_decoder_new(int compressor, rc_input *in, rc_error *err);
void rc_decoder_free(rc_decoder *d);
/* Produce up to cap bytes; returns the count, 0 at the end of the payload
 * (all streams ended and the input exhausted), or a negative RC_E_*. */
long rc_decoder_read(rc_decoder *d, uint8_t *out, size_t cap, rc_error *err);

/* ---- the file table ---------------------------------------------------- */
/* What the header says about each file, read by filetab.c from the header's
 * own tags (rc_ftable_build); librpm checks the same tags meanwhile. */
#define RC_FT_REG        1   /* regular file (not %ghost) */
#define RC_FT_KEYED      2   /* has a header digest: gets a table entry */
#define RC_FT_NOCONTENT  4   /* hardlink member whose content travels with another */
#define RC_FT_GHOST      8   /* %ghost: rpm skips it if an old payload has it */

typedef struct rc_filetab {
    uint32_t count;
    uint32_t keysize;            /* digest length (0 if no digests) */
    const char *digest_name;     /* OpenSSL name of the file digest algo */
    const uint8_t *digests;      /* count * keysize */
    const uint64_t *sizes;       /* header file sizes */
    const uint64_t *stripped_sizes; /* content size in a stripped archive */
    const uint8_t *flags;        /* RC_FT_* */
    const int32_t *groups;       /* distinct-digest group of each file, -1 */
    uint32_t ngroups;
    /* archive names (no leading "./" or "/"), sorted bytewise */
    const char *const *names;
    const uint32_t *name_fx;     /* file index of names[i] */
} rc_filetab;

/* ---- the file table from the main header (filetab.c) ----------------- */
#define RC_MAX_FILES (1u << 24)
enum rc_kind { RC_KIND_GHOST = 0, RC_KIND_REG, RC_KIND_DIR, RC_KIND_LINK, RC_KIND_OTHER };

typedef struct rc_ftable {
    rc_filetab ft;               /* what the layout reads */
    int algo;                    /* PGPHASHALGO_* of the file digests */
    uint64_t *sizes;             /* header file sizes */
    uint64_t *stripped;          /* content size in a stripped archive */
    uint8_t *flags;              /* RC_FT_* */
    uint8_t *kinds;              /* RC_KIND_* */
    uint8_t *digests;            /* count * digest size, zeros where none */
    int32_t *groups;             /* distinct-digest group, -1 */
    uint8_t *group_digests;      /* ngroups * keysize */
    const char **linktos;        /* symlink target ("" for others) */
    char *link_pool;
    const char **paths;          /* archive name by file index */
    char *path_pool;
    uint32_t *order;             /* archive order (file indices, no ghosts) */
    uint32_t norder;
} rc_ftable;

/* Build the file table from the main header (magic, il, dl, index, data)
 * as read from the package; the table does not point into it. */
int rc_ftable_build(const uint8_t *hdr, size_t len, rc_ftable **out, rc_error *err);
void rc_ftable_free(rc_ftable *t);
/* The T section's entries for the groups placed at `offsets` (ngroups of
 * them, UINT64_MAX: not placed): (digest, little-endian uint64 offset),
 * sorted by digest, into out (cap bytes).  Returns their count, or
 * SIZE_MAX if out is too small or memory runs out. */
size_t rc_ftable_t_entries(const rc_ftable *t, const uint64_t *offsets, uint8_t *out,
                           size_t cap);

/* ---- extents layout (layout.c) -------------------------------------- */
typedef struct rc_layout_result {
    uint64_t out_pos;            /* output offset after the last blob */
    uint64_t blobs;              /* distinct contents written */
    uint64_t blob_bytes;         /* their content bytes */
    uint64_t dup_files;          /* files sharing an earlier blob */
    uint64_t payload_bytes;      /* decompressed payload size */
    uint64_t entries;            /* archive entries */
    uint64_t reader_cpu_ns;      /* CPU time of the reading (decompressing) thread */
    uint64_t sink_cpu_ns;        /* CPU time of the hashing/writing thread */
} rc_layout_result;

/* Stream the payload from `in`, writing page-aligned deduplicated blobs to
 * out_fd (whose current offset is out_pos).  group_offsets (ngroups) receives
 * each group's blob offset (UINT64_MAX if never seen). */
int rc_layout_payload(rc_input *in, int compressor, const rc_filetab *ft,
                      int out_fd, uint64_t out_pos, uint32_t page_size,
                      uint64_t *group_offsets, rc_layout_result *res,
                      rc_error *err);

/* The same on a thread of its own, so that the caller can go on (e.g. let
 * librpm check the header) meanwhile: rc_layout_wait joins it, returns its
 * result and frees the job.  Every pointer must stay valid until then. */
typedef struct rc_layout_job rc_layout_job;
int rc_layout_start(rc_input *in, int compressor, const rc_filetab *ft,
                    int out_fd, uint64_t out_pos, uint32_t page_size,
                    uint64_t *group_offsets, rc_layout_result *res,
                    rc_layout_job **job, rc_error *err);
int rc_layout_wait(rc_layout_job *job, rc_error *err);
/* Who hashes file contents from now on: 1 the decompressing thread, 0 the
 * sink, -1 (the default) whichever is idle.  For tests of both paths. */
void rc_layout_force_hasher(int who);

/* ---- payload feeding (feed.c) -------------------------------------- */
#define RC_FEED_NONE 0      /* no content: directory, device, hardlink member */
#define RC_FEED_REG  1      /* content from the extents file at blob */
#define RC_FEED_LINK 2      /* content: the symlink target in link */
#define RC_FEED_GATE 0x80   /* the gate: its blob field is the gate's fd (feed.c) */

typedef struct rc_feed_file {
    uint8_t kind;
    uint64_t size;
    uint64_t blob;
    const char *link;
} rc_feed_file;

typedef struct rc_feed {
    int extents_fd;
    int compressor;           /* RC_COMP_*: the container to write */
    uint32_t blk;             /* whole blocks of files >= blk go as zeros; 0: all real */
    const uint8_t *prologue;  /* lead + signature header + header, as is */
    size_t prologue_len;
    uint32_t nfiles;
    const rc_feed_file *files;   /* by file index */
    uint32_t count;
    const uint32_t *order;       /* archive order (file indices) */
} rc_feed;

/* Write the whole payload stream for rpm to out_fd (a pipe). */
int rc_feed_write(const rc_feed *f, int out_fd, rc_error *err);

typedef struct rc_feed_plan_info {
    uint32_t bad;             /* first regular file without content; UINT32_MAX: none */
    int why;                  /* for bad: 1 it has no file digest, 2 no blob holds it */
    uint64_t max_reg;         /* the largest regular file fed from a blob */
    uint64_t gate_at;         /* archive offset where the last entry's header starts */
} rc_feed_plan_info;

/* What the feed writes for each file of table t (out: t->ft.count entries,
 * by file index): a regular file's content from the blob its digest names
 * in the T section's entries `tents` (nt of them: keysize-byte digest and
 * little-endian 64-bit offset, sorted by digest), which must end by limit
 * (0: no limit); a symlink's target (pointing into t); nothing for the
 * rest.  Returns RC_OK, or RC_E_FORMAT with info->bad set (nothing else
 * in out is to be used then). */
int rc_feed_plan(const rc_ftable *t, const uint8_t *tents, uint64_t nt, uint32_t keysize,
                 uint64_t limit, rc_feed_file *out, rc_feed_plan_info *info);

/* An LZMA2 chunk (header included) that decodes to n zeros, for the xz feed
 * (xzzeros.c): its length, or 0 when n is out of range or it would not fit
 * in cap bytes.  It resets the LZMA state and sets its own properties, so it
 * may follow any chunk of a block that has reset its dictionary. */
#define RC_XZ_ZEROS_MIN 547
#define RC_XZ_ZEROS_MAX 2097152
size_t rc_xz_zeros(uint8_t *out, size_t cap, uint32_t n);

/* ---- internal helpers ----------------------------------------------- */
int rc_fail(rc_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int rc_write_all(int fd, const void *p, size_t n, rc_error *err);
/* Buffer memory on huge pages where the kernel has them (util.c); free with
 * the size it was allocated with.  NULL when out of memory. */
void *rc_big_alloc(size_t n);
void rc_big_free(void *p, size_t n);

/* Write p[0, n) to fd on a thread of its own (no Python lock needed: the
 * caller goes on at once), then close fd; p must stay valid until
 * rc_writer_join.  NULL when no thread can be started (fd is then still
 * the caller's). */
typedef struct rc_writer rc_writer;
rc_writer *rc_writer_start(int fd, const uint8_t *p, size_t n);
void rc_writer_join(rc_writer *w);

/* Give the unnamed file open at fd (O_TMPFILE) the name path: linkat with
 * AT_EMPTY_PATH, else through /proc/self/fd.  0, or -1 with errno set. */
int rc_link_unnamed(int fd, const char *path);

#endif

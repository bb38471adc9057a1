/* Payload feeding: the cheap payload rpm reads while the cow plugin clones.
 *
 * Writes the original lead + signature header + header, then a cpio archive
 * in rpm's stripped form ("07070X" + file index, sizes from the header) in
 * the order rpm's own writer uses, wrapped in a container the header's
 * PAYLOADCOMPRESSOR names but that costs (almost) nothing to decode:
 *
 *   zstd   raw blocks for data, RLE blocks for zero runs (4 bytes / 128 KiB)
 *   xz     uncompressed LZMA2 chunks for data, LZMA chunks for zero runs
 *          (xzzeros.c: ~350 bytes / 2 MiB, matches liblzma copies with
 *          memcpy), check type none
 *   gzip   stored deflate blocks, pre-encoded full-flushed blocks of zeros
 *   bzip2, lzma (legacy)   no stored mode: the real encoder at its fastest
 *   none   as is
 *
 * Regular files of at least `blk` bytes are fed as zeros for their whole
 * blocks and real bytes for the last partial block; the plugin replaces the
 * zeros by cloning the blob.  Smaller files are fed for real.
 *
 * The gate: an entry of kind RC_FEED_GATE in the order (private to the
 * feeder and rpmcow/feeder.py; its `blob` is a file descriptor) writes no
 * archive member.  It ends the container's current frame (zstd) or member
 * (gzip) and writes a filler that decodes to nothing -- a skippable frame,
 * a member header with a long comment -- so that rpm, whose decompressors
 * read their input in fixed-size chunks and wait until a chunk is full,
 * can unpack every archive member written so far.  Then the feed waits for
 * one byte on that descriptor: 'y' goes on in a new frame/member (the
 * installer has checked that the cow plugin's work for every member so far
 * succeeded), anything else ends the stream there, short of the archive's
 * trailer, so that rpm fails the package before committing any file; end
 * of file ends the stream quietly (rpm stopped reading it).  xz: rpm's
 * reader takes one stream, but a stream may hold many blocks, and a block
 * may be empty: the filler is empty blocks with the longest header xz
 * allows (1 KiB), all listed in the index.  bzip2 and lzma have no gate. */
#include <bzlib.h>
#include <errno.h>
#include <fcntl.h>
#include <lzma.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "rpmcow.h"

#define OUT_CAP (256u << 10)
#define ZSTD_BLOCK (128u << 10)
#define XZ_CHUNK (64u << 10)
#define GZ_STORED 65535u
#define STAGE_CAP (128u << 10)

static const uint8_t ZEROS[1u << 16];
static const uint8_t ZSTD_FRAME_HEADER[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38};  /* window 128 KiB */
static const uint8_t GZIP_HEADER[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v & 0xff; p[1] = (v >> 8) & 0xff; p[2] = (v >> 16) & 0xff; p[3] = v >> 24;
}

/* ---- pre-encoded zero runs (built once per process) ------------------ */

struct zrun {
    uint8_t *data;
    size_t len;
    uint64_t n;          /* zeros it decodes to */
    uint32_t crc;        /* crc32 of those zeros (gzip) */
};

static struct {
    pthread_once_t once;
    struct zrun gz[2];   /* 64 KiB, 4 KiB */
    int gz_ok;
    uint8_t xz_header[12];    /* the header of each xz block of data */
    uint8_t xz_empty[1028];   /* an xz block that decodes to nothing (the gate) */
} Z = {PTHREAD_ONCE_INIT, {{0}}, 0, {0}, {0}};

#define XZ_DICT_PROP 16     /* LZMA2 dictionary property: 1 MiB */
#define XZ_EMPTY_BLOCK sizeof(Z.xz_empty)
#define XZ_EMPTY_UNPADDED 1025        /* its 1 KiB header and LZMA2's end marker */

/* An xz block header of `size` bytes (a multiple of 4, 8 to 1024): one
 * LZMA2 filter, no sizes (so no check of them), header padding, CRC32. */
static void make_xz_block_header(uint8_t *b, size_t size)
{
    memset(b, 0, size);
    b[0] = (uint8_t)(size / 4 - 1);
    b[1] = 0x00;               /* one filter, no sizes */
    b[2] = 0x21;               /* LZMA2 */
    b[3] = 0x01;
    b[4] = XZ_DICT_PROP;
    put_le32(b + size - 4, (uint32_t)crc32(0, b, (uInt)(size - 4)));
}

static int make_gz_run(struct zrun *z, uint64_t n)
{
    z_stream s;
    memset(&s, 0, sizeof(s));
    if (deflateInit2(&s, 1, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    size_t cap = deflateBound(&s, (uLong)n) + 64;
    uint8_t *zeros = calloc(1, n), *out = malloc(cap);
    int ok = 0;
    if (zeros && out) {
        s.next_in = zeros;
        s.avail_in = (uInt)n;
        s.next_out = out;
        s.avail_out = (uInt)cap;
        ok = deflate(&s, Z_FULL_FLUSH) == Z_OK && s.avail_in == 0;
    }
    z->len = cap - s.avail_out;
    deflateEnd(&s);
    if (ok)
        z->crc = (uint32_t)crc32(0, zeros, (uInt)n);
    free(zeros);
    if (!ok) {
        free(out);
        return -1;
    }
    z->data = out;
    z->n = n;
    return 0;
}

static void make_runs(void)
{
    Z.gz_ok = !make_gz_run(&Z.gz[0], 1u << 16) && !make_gz_run(&Z.gz[1], 1u << 12);
    make_xz_block_header(Z.xz_header, sizeof(Z.xz_header));
    /* the longest header xz allows, then LZMA2's end marker at once and the
     * block's padding: an empty block */
    make_xz_block_header(Z.xz_empty, 1024);
    Z.xz_empty[1024] = 0x00;
}

/* ---- the container encoder -------------------------------------------- */

#define XZ_ZERO_SLOTS (RC_XZ_ZEROS_MAX / 4096)

struct enc {
    int kind;
    int fd;
    rc_error *err;
    int failed;
    int closed;               /* the reader closed the pipe: it has what it needs */
    uint8_t *out;
    size_t olen;
    uint8_t *stage;           /* data not yet framed (zstd, xz, gzip) */
    size_t slen;
    uint64_t total;           /* uncompressed bytes */
    uint64_t xz_block;        /* xz: block header + chunk bytes so far */
    uint64_t xz_block_total;  /* xz: `total` where the current block began */
    int xz_first;             /* xz: the next chunk must reset the dictionary */
    struct xz_record *xz_recs;    /* xz: the blocks ended so far, for the index */
    size_t xz_nrecs, xz_caprecs;
    uint8_t *xz_zeros[XZ_ZERO_SLOTS];   /* xz: LZMA chunks of k * 4 KiB zeros, */
    size_t xz_zeros_len[XZ_ZERO_SLOTS]; /* made when first needed */
    uint32_t crc;             /* gzip */
    uint64_t member_start;    /* gzip: `total` where the current member began */
    bz_stream bz;
    lzma_stream lz;
};

/* rpm reads only the headers in some passes and closes the pipe: EPIPE
 * ends the stream quietly; any other write error is the feed's failure */
static int out_write(struct enc *e, const void *p, size_t n)
{
    if (e->failed)
        return RC_E_IO;
    if (rc_write_all(e->fd, p, n, NULL) == RC_OK)
        return RC_OK;
    e->failed = 1;
    if (errno == EPIPE) {
        e->closed = 1;
        return RC_E_IO;
    }
    return rc_fail(e->err, RC_E_IO, "cannot write the payload for rpm: %s", strerror(errno));
}

static int out_flush(struct enc *e)
{
    if (e->olen)
        out_write(e, e->out, e->olen);
    e->olen = 0;
    return e->failed ? RC_E_IO : RC_OK;
}

static int out_put(struct enc *e, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0 && !e->failed) {
        if (e->olen == OUT_CAP && out_flush(e))
            break;
        size_t k = OUT_CAP - e->olen < n ? OUT_CAP - e->olen : n;
        memcpy(e->out + e->olen, b, k);
        e->olen += k;
        b += k;
        n -= k;
    }
    return e->failed ? RC_E_IO : RC_OK;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        p[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

/* frame `n` staged bytes as one block/chunk */
static int frame_data(struct enc *e, const uint8_t *p, size_t n)
{
    uint8_t h[8];
    switch (e->kind) {
    case RC_COMP_ZSTD: {
        uint32_t bh = (uint32_t)(n << 3);          /* raw block, not last */
        h[0] = bh & 0xff; h[1] = (bh >> 8) & 0xff; h[2] = (bh >> 16) & 0xff;
        out_put(e, h, 3);
        return out_put(e, p, n);
    }
    case RC_COMP_XZ:
        h[0] = e->xz_first ? 0x01 : 0x02;
        h[1] = (uint8_t)((n - 1) >> 8);
        h[2] = (uint8_t)((n - 1) & 0xff);
        e->xz_first = 0;
        e->xz_block += 3 + n;
        out_put(e, h, 3);
        return out_put(e, p, n);
    case RC_COMP_GZIP:
        h[0] = 0x00;
        h[1] = n & 0xff; h[2] = (uint8_t)(n >> 8);
        h[3] = ~n & 0xff; h[4] = (uint8_t)((~n >> 8) & 0xff);
        e->crc = (uint32_t)crc32(e->crc, p, (uInt)n);
        out_put(e, h, 5);
        return out_put(e, p, n);
    }
    return RC_OK;
}

static size_t stage_cap(int kind)
{
    return kind == RC_COMP_ZSTD ? ZSTD_BLOCK : kind == RC_COMP_XZ ? XZ_CHUNK : GZ_STORED;
}

static int stage_flush(struct enc *e)
{
    if (e->slen) {
        frame_data(e, e->stage, e->slen);
        e->slen = 0;
    }
    return e->failed ? RC_E_IO : RC_OK;
}

static int stream_code(struct enc *e, const uint8_t *p, size_t n, int finish)
{
    uint8_t buf[1u << 16];
    if (e->kind == RC_COMP_BZIP2) {
        e->bz.next_in = (char *)p;
        e->bz.avail_in = (unsigned)n;
        for (;;) {
            e->bz.next_out = (char *)buf;
            e->bz.avail_out = sizeof(buf);
            int r = BZ2_bzCompress(&e->bz, finish ? BZ_FINISH : BZ_RUN);
            out_put(e, buf, sizeof(buf) - e->bz.avail_out);
            if (r == BZ_STREAM_END || (!finish && e->bz.avail_in == 0 && r == BZ_RUN_OK))
                break;
            if (r != BZ_RUN_OK && r != BZ_FINISH_OK)
                return rc_fail(e->err, RC_E_INTERNAL, "bzip2 encoder failed (%d)", r);
        }
    } else {
        e->lz.next_in = p;
        e->lz.avail_in = n;
        for (;;) {
            e->lz.next_out = buf;
            e->lz.avail_out = sizeof(buf);
            lzma_ret r = lzma_code(&e->lz, finish ? LZMA_FINISH : LZMA_RUN);
            out_put(e, buf, sizeof(buf) - e->lz.avail_out);
            if (r == LZMA_STREAM_END || (!finish && e->lz.avail_in == 0 && r == LZMA_OK))
                break;
            if (r != LZMA_OK)
                return rc_fail(e->err, RC_E_INTERNAL, "lzma encoder failed (%d)", (int)r);
        }
    }
    return e->failed ? RC_E_IO : RC_OK;
}

static int enc_data(struct enc *e, const uint8_t *p, size_t n)
{
    e->total += n;
    switch (e->kind) {
    case RC_COMP_NONE:
        return out_put(e, p, n);
    case RC_COMP_BZIP2:
    case RC_COMP_LZMA:
        return stream_code(e, p, n, 0);
    }
    size_t cap = stage_cap(e->kind);
    while (n > 0 && !e->failed) {
        if (e->slen == 0 && n >= cap) {      /* whole blocks straight from p */
            frame_data(e, p, cap);
            p += cap;
            n -= cap;
            continue;
        }
        size_t k = cap - e->slen < n ? cap - e->slen : n;
        memcpy(e->stage + e->slen, p, k);
        e->slen += k;
        p += k;
        n -= k;
        if (e->slen == cap)
            stage_flush(e);
    }
    return e->failed ? RC_E_IO : RC_OK;
}

/* an LZMA chunk of k zeros (xz); RC_E_INTERNAL if there is none for k */
static int xz_zero_chunk(struct enc *e, uint32_t k)
{
    uint8_t buf[16u << 10];
    const uint8_t *chunk = buf;
    size_t len;
    size_t slot = k % 4096 == 0 ? k / 4096 - 1 : XZ_ZERO_SLOTS;
    if (slot < XZ_ZERO_SLOTS && e->xz_zeros[slot]) {
        chunk = e->xz_zeros[slot];
        len = e->xz_zeros_len[slot];
    } else {
        len = rc_xz_zeros(buf, sizeof(buf), k);
        if (len == 0)
            return RC_E_INTERNAL;
        if (slot < XZ_ZERO_SLOTS && (e->xz_zeros[slot] = malloc(len)) != NULL) {
            memcpy(e->xz_zeros[slot], buf, len);
            e->xz_zeros_len[slot] = len;
        }
    }
    /* first in its block: also reset the dictionary */
    uint8_t control = (uint8_t)(chunk[0] | (e->xz_first ? 0x20 : 0x00));
    out_put(e, &control, 1);
    out_put(e, chunk + 1, len - 1);
    e->xz_first = 0;
    e->xz_block += len;
    e->total += k;
    return e->failed ? RC_E_IO : RC_OK;
}

static int enc_zeros(struct enc *e, uint64_t n)
{
    if (e->kind == RC_COMP_ZSTD) {
        stage_flush(e);
        e->total += n;
        while (n > 0) {
            uint64_t k = n > ZSTD_BLOCK ? ZSTD_BLOCK : n;
            uint32_t bh = (uint32_t)(k << 3) | (1u << 1);     /* RLE block */
            uint8_t h[4] = {bh & 0xff, (bh >> 8) & 0xff, (bh >> 16) & 0xff, 0};
            out_put(e, h, 4);
            n -= k;
        }
        return e->failed ? RC_E_IO : RC_OK;
    }
    if (e->kind == RC_COMP_GZIP && Z.gz_ok) {
        stage_flush(e);
        for (int i = 0; i < 2; i++) {
            while (n >= Z.gz[i].n) {
                out_put(e, Z.gz[i].data, Z.gz[i].len);
                e->crc = (uint32_t)crc32_combine(e->crc, Z.gz[i].crc, (z_off_t)Z.gz[i].n);
                e->total += Z.gz[i].n;
                n -= Z.gz[i].n;
            }
        }
    }
    if (e->kind == RC_COMP_XZ) {
        stage_flush(e);
        while (n >= RC_XZ_ZEROS_MIN && !e->failed) {
            uint32_t k = n > RC_XZ_ZEROS_MAX ? RC_XZ_ZEROS_MAX : (uint32_t)n;
            if (n - k > 0 && n - k < RC_XZ_ZEROS_MIN)
                k -= RC_XZ_ZEROS_MIN;            /* leave the last chunk enough */
            if (xz_zero_chunk(e, k) != RC_OK)
                break;                           /* (written as data below) */
            n -= k;
        }
    }
    while (n > 0 && !e->failed) {
        size_t k = n > sizeof(ZEROS) ? sizeof(ZEROS) : (size_t)n;
        enc_data(e, ZEROS, k);
        n -= k;
    }
    return e->failed ? RC_E_IO : RC_OK;
}

struct xz_record {
    uint64_t unpadded;        /* header + compressed data (+ check: none here) */
    uint64_t size;            /* what it decodes to */
};

/* the index's record of a block that ends here */
static int xz_record(struct enc *e, uint64_t unpadded, uint64_t size)
{
    if (e->xz_nrecs == e->xz_caprecs) {
        size_t cap = e->xz_caprecs ? 2 * e->xz_caprecs : 16;
        struct xz_record *r = realloc(e->xz_recs, cap * sizeof(*r));
        if (r == NULL) {
            e->failed = 1;
            return rc_fail(e->err, RC_E_NOMEM, "out of memory");
        }
        e->xz_recs = r;
        e->xz_caprecs = cap;
    }
    e->xz_recs[e->xz_nrecs++] = (struct xz_record){unpadded, size};
    return RC_OK;
}

/* end the current block: LZMA2's end marker, padding, its index record */
static int xz_end_block(struct enc *e)
{
    stage_flush(e);
    uint8_t end = 0x00;
    out_put(e, &end, 1);
    uint64_t unpadded = e->xz_block + 1;
    uint8_t pad[4] = {0};
    out_put(e, pad, (size_t)((4 - (unpadded & 3)) & 3));
    return xz_record(e, unpadded, e->total - e->xz_block_total);
}

/* begin a block: the header (one LZMA2 filter, no sizes, no check) */
static int xz_begin_block(struct enc *e)
{
    e->xz_block = sizeof(Z.xz_header);
    e->xz_block_total = e->total;
    e->xz_first = 1;
    return out_put(e, Z.xz_header, sizeof(Z.xz_header));
}

static int enc_start(struct enc *e, rc_error *err)
{
    e->err = err;
    e->out = malloc(OUT_CAP);
    e->stage = malloc(STAGE_CAP);
    if (!e->out || !e->stage)
        return rc_fail(err, RC_E_NOMEM, "out of memory");
    switch (e->kind) {
    case RC_COMP_ZSTD:
        return out_put(e, ZSTD_FRAME_HEADER, sizeof(ZSTD_FRAME_HEADER));
    case RC_COMP_XZ: {
        uint8_t sh[12] = {0xfd, '7', 'z', 'X', 'Z', 0x00, 0x00, 0x00};
        put_le32(sh + 8, (uint32_t)crc32(0, sh + 6, 2));
        out_put(e, sh, 12);
        return xz_begin_block(e);
    }
    case RC_COMP_GZIP:
        e->crc = (uint32_t)crc32(0, NULL, 0);
        return out_put(e, GZIP_HEADER, sizeof(GZIP_HEADER));
    case RC_COMP_BZIP2:
        if (BZ2_bzCompressInit(&e->bz, 1, 0, 0) != BZ_OK)
            return rc_fail(err, RC_E_NOMEM, "cannot start the bzip2 encoder");
        return RC_OK;
    case RC_COMP_LZMA: {
        lzma_options_lzma opt;
        lzma_stream init = LZMA_STREAM_INIT;
        e->lz = init;
        if (lzma_lzma_preset(&opt, 0) || lzma_alone_encoder(&e->lz, &opt) != LZMA_OK)
            return rc_fail(err, RC_E_NOMEM, "cannot start the lzma encoder");
        return RC_OK;
    }
    }
    return RC_OK;
}

static int enc_finish(struct enc *e)
{
    switch (e->kind) {
    case RC_COMP_ZSTD: {
        stage_flush(e);
        static const uint8_t last[3] = {0x01, 0, 0};          /* empty raw last block */
        out_put(e, last, 3);
        break;
    }
    case RC_COMP_XZ: {
        if (xz_end_block(e))
            break;
        /* the index: indicator, count, (unpadded, size) per block, padding
         * to 4 bytes, CRC32 of all that */
        uint8_t rec[24];
        uint32_t crc = (uint32_t)crc32(0, NULL, 0);
        uint64_t idx_len = 0;
        for (size_t i = 0; i <= e->xz_nrecs; i++) {
            size_t n = 0;
            if (i == 0) {
                rec[n++] = 0x00;
                n += put_varint(rec + n, e->xz_nrecs);
            } else {
                n += put_varint(rec + n, e->xz_recs[i - 1].unpadded);
                n += put_varint(rec + n, e->xz_recs[i - 1].size);
            }
            crc = (uint32_t)crc32(crc, rec, (uInt)n);
            out_put(e, rec, n);
            idx_len += n;
        }
        size_t pad = (size_t)((4 - (idx_len & 3)) & 3);
        memset(rec, 0, 4);
        crc = (uint32_t)crc32(crc, rec, (uInt)pad);
        put_le32(rec + pad, crc);
        out_put(e, rec, pad + 4);
        idx_len += pad + 4;
        uint8_t foot[12];
        put_le32(foot + 4, (uint32_t)(idx_len / 4 - 1));
        foot[8] = 0x00;
        foot[9] = 0x00;
        put_le32(foot, (uint32_t)crc32(0, foot + 4, 6));
        foot[10] = 'Y';
        foot[11] = 'Z';
        out_put(e, foot, 12);
        break;
    }
    case RC_COMP_GZIP: {
        stage_flush(e);
        uint8_t t[13] = {0x01, 0x00, 0x00, 0xff, 0xff};      /* final empty stored block */
        put_le32(t + 5, e->crc);
        put_le32(t + 9, (uint32_t)(e->total - e->member_start));
        out_put(e, t, 13);
        break;
    }
    case RC_COMP_BZIP2:
    case RC_COMP_LZMA:
        stream_code(e, NULL, 0, 1);
        break;
    }
    return out_flush(e);
}

static void enc_free(struct enc *e)
{
    if (e->kind == RC_COMP_BZIP2)
        BZ2_bzCompressEnd(&e->bz);
    if (e->kind == RC_COMP_LZMA)
        lzma_end(&e->lz);
    free(e->out);
    free(e->stage);
    free(e->xz_recs);
    for (size_t i = 0; i < XZ_ZERO_SLOTS; i++)
        free(e->xz_zeros[i]);
}

/* ---- the stripped cpio archive ----------------------------------------- */

static int cpio_pad(struct enc *e)
{
    size_t pad = (size_t)((4 - (e->total & 3)) & 3);
    return pad ? enc_data(e, ZEROS, pad) : RC_OK;
}

static int cpio_header(struct enc *e, uint32_t fx)
{
    char h[16];
    static const char hex[] = "0123456789abcdef";
    cpio_pad(e);
    memcpy(h, "07070X", 6);
    for (int i = 0; i < 8; i++)
        h[6 + i] = hex[(fx >> (28 - 4 * i)) & 0xf];
    enc_data(e, (const uint8_t *)h, 14);
    return cpio_pad(e);
}

static int cpio_trailer(struct enc *e)
{
    char h[110 + 11 + 3];
    memset(h, '0', 110);
    memcpy(h, "070701", 6);
    memcpy(h + 6 + 8 * 4, "00000001", 8);       /* nlink */
    memcpy(h + 6 + 8 * 11, "0000000b", 8);      /* namesize */
    memcpy(h + 110, "TRAILER!!!", 11);
    cpio_pad(e);
    enc_data(e, (const uint8_t *)h, 121);
    return cpio_pad(e);
}

/* ---- reading the extents file ------------------------------------------ */

/* The feed reads the extents file in small pieces -- each file's last
 * partial block, all of each small file -- skipping the whole blocks in
 * between, while the plugin's worker clones from the same file.  Read one
 * piece at a time, with a cold cache, that took an image root of 28k files
 * 1.1-1.4 s of waiting in pread (one disk read at a time, each also waiting
 * for the file's I/O lock, which a clone holds exclusively), and rpm waited
 * for the feed.  So:
 *   - one read takes in the pieces that follow each other in the file
 *     (small files' blobs do, page-aligned), up to SPAN bytes: 1.2k reads
 *     instead of 31k;
 *   - the feed asks the kernel (POSIX_FADV_WILLNEED) for the pieces of the
 *     files ahead of it, up to PREFETCH bytes, nearby pieces in one request:
 *     the reads then find them in the page cache (0.2 s of waiting left).
 * The hint reads nothing into the stream: what is fed is what pread read. */
#define SPAN (1u << 20)
#define SPAN_GAP (64u << 10)     /* bytes read across to take in the next piece */
#define PREFETCH (16u << 20)

struct span {
    uint8_t *buf;             /* SPAN bytes */
    uint64_t a, b;            /* it holds the extents file's bytes [a, b) */
};

/* the piece of file ff the feed reads from the extents file: its length,
 * and its offset in *off (the whole blocks before it go as zeros) */
static uint64_t real_part(const rc_feed *f, const rc_feed_file *ff, uint64_t *off)
{
    uint64_t head = f->blk && ff->size >= f->blk ? ff->size - ff->size % f->blk : 0;
    *off = ff->blob + head;
    return ff->size - head;
}

struct prefetch {
    uint32_t next;            /* the next place in the order not asked for */
    uint64_t asked;           /* bytes of pieces asked for so far */
    uint64_t a, b;            /* a range not asked for yet */
};

static void prefetch_range(int fd, struct prefetch *p)
{
    if (p->b > p->a)
        (void)posix_fadvise(fd, (off_t)p->a, (off_t)(p->b - p->a), POSIX_FADV_WILLNEED);
    p->a = p->b = 0;
}

/* fed: bytes of pieces fed so far; asks for more once less than half of
 * PREFETCH is asked for ahead of it */
static void prefetch(const rc_feed *f, struct prefetch *p, uint64_t fed)
{
    if (p->asked >= fed + PREFETCH / 2)
        return;
    while (p->next < f->count && p->asked < fed + PREFETCH) {
        uint32_t fx = f->order[p->next++];
        if (fx >= f->nfiles || f->files[fx].kind != RC_FEED_REG)
            continue;
        uint64_t off, len = real_part(f, &f->files[fx], &off);
        if (len == 0)
            continue;
        if (p->b > p->a && (off < p->a || off > p->b + SPAN_GAP))
            prefetch_range(f->extents_fd, p);
        if (p->b == p->a)
            p->a = off;
        if (off + len > p->b)
            p->b = off + len;
        p->asked += len;
    }
    prefetch_range(f->extents_fd, p);
}

/* where one read at off ends that takes in the pieces of the order's
 * places i, i + 1, ... (place i's piece starts at off), as long as each
 * starts at most SPAN_GAP after the last and all fit in SPAN bytes */
static uint64_t span_end(const rc_feed *f, uint32_t i, uint64_t off)
{
    uint64_t end = off;
    for (; i < f->count; i++) {
        uint32_t fx = f->order[i];
        if (fx >= f->nfiles || f->files[fx].kind != RC_FEED_REG)
            continue;
        uint64_t o, len = real_part(f, &f->files[fx], &o);
        if (len == 0)
            continue;
        if (o < off || o > end + SPAN_GAP || o + len > off + SPAN)
            break;
        if (o + len > end)
            end = o + len;
    }
    return end;
}

/* feed the piece [off, off + n) of the file at place i of the order, SPAN
 * bytes at most per read (a piece that large takes in no other) */
static int feed_piece(struct enc *e, const rc_feed *f, struct span *sp, uint32_t i,
                      uint64_t off, uint64_t n, rc_error *err)
{
    while (n > 0) {
        uint64_t k = n < SPAN ? n : SPAN;
        if (off < sp->a || off + k > sp->b) {
            uint64_t end = span_end(f, i, off);
            if (end < off + k)
                end = off + k;
            sp->a = sp->b = 0;
            for (uint64_t got = 0; got < end - off;) {
                ssize_t r = pread(f->extents_fd, sp->buf + got, (size_t)(end - off - got),
                                  (off_t)(off + got));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    return rc_fail(err, RC_E_IO, "cannot read the extents file at %llu: %s",
                                   (unsigned long long)(off + got),
                                   r < 0 ? strerror(errno) : "end of file");
                got += (uint64_t)r;
            }
            sp->a = off;
            sp->b = end;
        }
        int rc = enc_data(e, sp->buf + (off - sp->a), (size_t)k);
        if (rc)
            return rc;
        off += k;
        n -= k;
    }
    return RC_OK;
}

#define GATE_FILLER (512u << 10)   /* > any decompressor's input chunk, with margin */


static int out_filler(struct enc *e, uint8_t byte, size_t n)
{
    uint8_t buf[4096];
    memset(buf, byte, sizeof(buf));
    while (n > 0 && !e->failed) {
        size_t k = n > sizeof(buf) ? sizeof(buf) : n;
        out_put(e, buf, k);
        n -= k;
    }
    return e->failed ? RC_E_IO : RC_OK;
}

/* end the frame/member, write everything out with a filler behind it, and
 * wait for the installer's verdict (see the comment at the top) */
static int feed_gate(struct enc *e, int gate_fd, rc_error *err)
{
    stage_flush(e);
    if (e->kind == RC_COMP_ZSTD) {
        static const uint8_t last[3] = {0x01, 0, 0};          /* empty raw last block */
        uint8_t skip[8] = {0x50, 0x2a, 0x4d, 0x18};          /* skippable frame */
        put_le32(skip + 4, GATE_FILLER);
        out_put(e, last, 3);
        out_put(e, skip, 8);
        out_filler(e, 0, GATE_FILLER);
    } else if (e->kind == RC_COMP_GZIP) {
        uint8_t t[13] = {0x01, 0x00, 0x00, 0xff, 0xff};      /* final empty stored block */
        put_le32(t + 5, e->crc);
        put_le32(t + 9, (uint32_t)(e->total - e->member_start));
        uint8_t h[sizeof(GZIP_HEADER)];
        memcpy(h, GZIP_HEADER, sizeof(h));
        h[3] = 0x10;                                          /* FCOMMENT */
        out_put(e, t, 13);
        out_put(e, h, sizeof(h));
        out_filler(e, 'x', GATE_FILLER);
        out_filler(e, 0, 1);                                  /* the comment's end */
        e->crc = (uint32_t)crc32(0, NULL, 0);
        e->member_start = e->total;
    } else if (e->kind == RC_COMP_XZ) {
        if (xz_end_block(e))
            return RC_E_IO;
        for (size_t k = 0; k < GATE_FILLER / XZ_EMPTY_BLOCK; k++) {
            out_put(e, Z.xz_empty, XZ_EMPTY_BLOCK);
            if (xz_record(e, XZ_EMPTY_UNPADDED, 0))
                return RC_E_NOMEM;
        }
    } else {
        return rc_fail(err, RC_E_INTERNAL, "a gate needs a zstd, xz or gzip container");
    }
    if (out_flush(e) != RC_OK)
        return RC_E_IO;
    char c = 0;
    ssize_t r;
    do
        r = read(gate_fd, &c, 1);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        e->closed = 1;      /* no verdict: rpm is not reading this stream any more */
        return RC_E_IO;
    }
    if (r != 1 || c != 'y')
        return rc_fail(err, RC_E_IO, "the cow plugin failed on a file of this package: "
                       "the payload was cut short so that rpm fails it");
    if (e->kind == RC_COMP_ZSTD)
        return out_put(e, ZSTD_FRAME_HEADER, sizeof(ZSTD_FRAME_HEADER));
    if (e->kind == RC_COMP_XZ)
        return xz_begin_block(e);
    return RC_OK;           /* gzip: the member has begun */
}

int rc_feed_write(const rc_feed *f, int out_fd, rc_error *err)
{
    if (f->compressor < RC_COMP_NONE || f->compressor > RC_COMP_ZSTD)
        return rc_fail(err, RC_E_INTERNAL, "unknown compressor %d", f->compressor);
    pthread_once(&Z.once, make_runs);
    struct enc e;
    memset(&e, 0, sizeof(e));
    e.kind = f->compressor;
    e.fd = out_fd;
    uint8_t *buf = malloc(SPAN);
    struct span span = {buf, 0, 0};
    struct prefetch ahead = {0, 0, 0, 0};
    uint64_t fed = 0;
    int rc = buf ? RC_OK : rc_fail(err, RC_E_NOMEM, "out of memory");
    /* the prologue is not compressed: it goes before the container */
    e.err = err;
    if (rc == RC_OK)
        rc = out_write(&e, f->prologue, f->prologue_len);
    if (rc == RC_OK)
        rc = enc_start(&e, err);
    for (uint32_t i = 0; rc == RC_OK && i < f->count; i++) {
        uint32_t fx = f->order[i];
        if (fx >= f->nfiles) {
            rc = rc_fail(err, RC_E_INTERNAL, "feed order names file %u of %u", fx, f->nfiles);
            break;
        }
        const rc_feed_file *ff = &f->files[fx];
        if (ff->kind == RC_FEED_GATE) {
            rc = feed_gate(&e, (int)ff->blob, err);
            continue;
        }
        if ((rc = cpio_header(&e, fx)) != RC_OK)
            break;
        if (ff->kind == RC_FEED_LINK) {
            rc = enc_data(&e, (const uint8_t *)ff->link, (size_t)ff->size);
        } else if (ff->kind == RC_FEED_REG && ff->size > 0) {
            uint64_t off, len = real_part(f, ff, &off);
            if (ff->size > len)
                rc = enc_zeros(&e, ff->size - len);
            prefetch(f, &ahead, fed);
            if (rc == RC_OK && len)
                rc = feed_piece(&e, f, &span, i, off, len, err);
            fed += len;
        }
    }
    if (rc == RC_OK)
        rc = cpio_trailer(&e);
    if (rc == RC_OK)
        rc = enc_finish(&e);
    if (e.closed)
        rc = RC_OK;         /* rpm stopped reading early: not an error */
    enc_free(&e);
    free(buf);
    return rc;
}

/* ---- the feed's table ------------------------------------------------ */

static uint64_t rd_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The offset the T entries give digest d, or UINT64_MAX. */
static uint64_t t_lookup(const uint8_t *tents, uint64_t nt, uint32_t ks, const uint8_t *d)
{
    uint64_t lo = 0, hi = nt;
    const size_t step = (size_t)ks + 8;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const uint8_t *e = tents + mid * step;
        int c = memcmp(e, d, ks);
        if (c == 0)
            return rd_le64(e + ks);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return UINT64_MAX;
}

int rc_feed_plan(const rc_ftable *t, const uint8_t *tents, uint64_t nt, uint32_t keysize,
                 uint64_t limit, rc_feed_file *out, rc_feed_plan_info *info)
{
    const uint32_t n = t->ft.count, ks = t->ft.keysize;
    info->bad = UINT32_MAX;
    info->why = 0;
    info->max_reg = 0;
    info->gate_at = 0;
    for (uint32_t fx = 0; fx < n; fx++) {
        rc_feed_file *f = &out[fx];
        f->kind = RC_FEED_NONE;
        f->size = 0;
        f->blob = 0;
        f->link = NULL;
        if (t->kinds[fx] == RC_KIND_REG && t->sizes[fx] && !(t->flags[fx] & RC_FT_NOCONTENT)) {
            uint64_t size = t->sizes[fx], off = UINT64_MAX;
            if (!(t->flags[fx] & RC_FT_KEYED)) {
                info->bad = fx;
                info->why = 1;
                return RC_E_FORMAT;
            }
            if (ks && ks == keysize)
                off = t_lookup(tents, nt, ks, t->digests + (size_t)fx * ks);
            if (off == UINT64_MAX || (limit && (off > limit || size > limit - off))) {
                info->bad = fx;
                info->why = 2;
                return RC_E_FORMAT;
            }
            f->kind = RC_FEED_REG;
            f->size = size;
            f->blob = off;
            if (size > info->max_reg)
                info->max_reg = size;
        } else if (t->kinds[fx] == RC_KIND_LINK) {
            f->kind = RC_FEED_LINK;
            f->link = t->linktos[fx];
            f->size = strlen(f->link);
        }
    }
    /* archive layout (rc_feed_write): 4-aligned 16-byte entry headers,
     * content, no other padding */
    uint64_t pos = 0, start = 0;
    for (uint32_t i = 0; i < t->norder; i++) {
        uint32_t fx = t->order[i];
        if (fx >= n)
            return RC_E_FORMAT;
        start = (pos + 3) & ~(uint64_t)3;
        pos = start + 16 + out[fx].size;
    }
    info->gate_at = start;
    return RC_OK;
}

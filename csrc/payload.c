/* Payload decompression.  One pull interface over every compressor rpm can
 * write; concatenated streams are accepted (rpm's readers accept them), a
 * stream cut short is an error, and anything after the last stream that is
 * not another valid stream is reported by the decoder as corrupt data. */
#include <bzlib.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
/* ZSTD_createDCtx_advanced and ZSTD_customMem: in zstd's "static linking"
 * section, but exported by libzstd and unchanged since zstd 1.0 */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "rpmcow.h"

/* memory a decoder may use: xz -9 needs 65 MiB, zstd's default window
 * limit is 128 MiB; nothing rpm writes by default comes near this */
#define DECODER_MEMLIMIT (512ull << 20)

struct rc_decoder {
    int kind;
    rc_input *in;
    int started;       /* a stream has begun and not yet ended */
    int ended;         /* at least one stream ended and no new one started */
    int done;
    int streams;       /* streams completed */
    uint64_t made;     /* bytes produced by the current stream */
    ZSTD_DCtx *zstd;
    lzma_stream xz;
    int xz_init;
    z_stream gz;
    int gz_init;
    bz_stream bz;
    int bz_init;
};

static const char *const NAMES[] = {
    [RC_COMP_NONE] = "uncompressed", [RC_COMP_GZIP] = "gzip", [RC_COMP_BZIP2] = "bzip2",
    [RC_COMP_XZ] = "xz", [RC_COMP_LZMA] = "lzma", [RC_COMP_ZSTD] = "zstd",
};

/* Decoder windows -- zstd's (8 MiB at level 19), xz's dictionary (64 MiB at
 * -9) -- are written from their first byte on and read back at random:
 * allocations that large go on huge pages (rc_big_alloc), like the layout's
 * buffers, which saves the faults and most TLB misses of their 4 KiB pages.
 * A header before each block says how to free it. */
#define ZA_HDR 64u                   /* keeps zstd's blocks 16-byte aligned */
#define ZA_BIG (1u << 20)

static void *window_alloc(void *opaque, size_t size)
{
    (void)opaque;
    if (size > SIZE_MAX - ZA_HDR)
        return NULL;
    size_t total = size + ZA_HDR;
    size_t *p = size >= ZA_BIG ? rc_big_alloc(total) : malloc(total);
    if (p == NULL)
        return NULL;
    p[0] = total;
    p[1] = size >= ZA_BIG;
    return (uint8_t *)p + ZA_HDR;
}

static void window_free(void *opaque, void *ptr)
{
    (void)opaque;
    if (ptr == NULL)
        return;
    size_t *p = (size_t *)(void *)((uint8_t *)ptr - ZA_HDR);
    if (p[1])
        rc_big_free(p, p[0]);
    else
        free(p);
}

/* xz's dictionary (64 MiB at -9) likewise */
static void *xz_alloc(void *opaque, size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    return window_alloc(opaque, nmemb * size);
}

static const lzma_allocator XZ_ALLOCATOR = {xz_alloc, window_free, NULL};

static int stream_init(rc_decoder *d, rc_error *err)
{
    switch (d->kind) {
    case RC_COMP_XZ:
    case RC_COMP_LZMA: {
        if (d->xz_init)
            lzma_end(&d->xz);
        lzma_stream init = LZMA_STREAM_INIT;
        d->xz = init;
        d->xz.allocator = &XZ_ALLOCATOR;
        lzma_ret r = d->kind == RC_COMP_XZ
            ? lzma_stream_decoder(&d->xz, DECODER_MEMLIMIT, 0)
            : lzma_alone_decoder(&d->xz, DECODER_MEMLIMIT);
        if (r != LZMA_OK)
            return rc_fail(err, RC_E_NOMEM, "cannot start the %s decoder", NAMES[d->kind]);
        d->xz_init = 1;
        return RC_OK;
    }
    case RC_COMP_GZIP:
        if (d->gz_init)
            return inflateReset(&d->gz) == Z_OK ? RC_OK
                : rc_fail(err, RC_E_INTERNAL, "cannot reset the gzip decoder");
        memset(&d->gz, 0, sizeof(d->gz));
        if (inflateInit2(&d->gz, 15 + 16) != Z_OK)
            return rc_fail(err, RC_E_NOMEM, "cannot start the gzip decoder");
        d->gz_init = 1;
        return RC_OK;
    case RC_COMP_BZIP2:
        if (d->bz_init)
            BZ2_bzDecompressEnd(&d->bz);
        memset(&d->bz, 0, sizeof(d->bz));
        if (BZ2_bzDecompressInit(&d->bz, 0, 0) != BZ_OK)
            return rc_fail(err, RC_E_NOMEM, "cannot start the bzip2 decoder");
        d->bz_init = 1;
        return RC_OK;
    case RC_COMP_ZSTD:
        if (d->zstd == NULL) {
            d->zstd = ZSTD_createDCtx_advanced((ZSTD_customMem){window_alloc, window_free, NULL});
            if (d->zstd == NULL)
                return rc_fail(err, RC_E_NOMEM, "cannot start the zstd decoder");
            ZSTD_DCtx_setParameter(d->zstd, ZSTD_d_windowLogMax, 27); /* 128 MiB */
        }
        return RC_OK;
    default:
        return RC_OK;
    }
}

rc_decoder *rc_decoder_new(int compressor, rc_input *in, rc_error *err)
{
    if (compressor < RC_COMP_NONE || compressor > RC_COMP_ZSTD) {
        rc_fail(err, RC_E_INTERNAL, "unknown compressor %d", compressor);
        return NULL;
    }
    rc_decoder *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    d->kind = compressor;
    d->in = in;
    if (compressor == RC_COMP_GZIP) {
        /* rpm reads gzip payloads through zlib's gzread, which passes data
         * that is not gzip through unchanged: do the same */
        const uint8_t *p;
        size_t n;
        if (rc_input_peek(in, &p, &n, err) != RC_OK) {
            free(d);
            return NULL;
        }
        if (n >= 1 && (p[0] != 0x1f || (n >= 2 && p[1] != 0x8b)))
            d->kind = RC_COMP_NONE;
    }
    if (stream_init(d, err) != RC_OK) {
        rc_decoder_free(d);
        return NULL;
    }
    return d;
}

void rc_decoder_free(rc_decoder *d)
{
    if (d == NULL)
        return;
    if (d->zstd)
        ZSTD_freeDCtx(d->zstd);
    if (d->xz_init)
        lzma_end(&d->xz);
    if (d->gz_init)
        inflateEnd(&d->gz);
    if (d->bz_init)
        BZ2_bzDecompressEnd(&d->bz);
    free(d);
}

/* One decoder step: consumes from (p, n), produces into (out, cap). Sets
 * *end when the current stream ended. */
static int step(rc_decoder *d, const uint8_t *p, size_t n, int eof, uint8_t *out,
                size_t cap, size_t *used, size_t *made, int *end, rc_error *err)
{
    *end = 0;
    switch (d->kind) {
    case RC_COMP_NONE: {
        size_t k = n < cap ? n : cap;
        memcpy(out, p, k);
        *used = *made = k;
        return RC_OK;
    }
    case RC_COMP_ZSTD: {
        ZSTD_inBuffer ib = {p, n, 0};
        ZSTD_outBuffer ob = {out, cap, 0};
        size_t r = ZSTD_decompressStream(d->zstd, &ob, &ib);
        if (ZSTD_isError(r))
            return rc_fail(err, RC_E_FORMAT, "corrupt zstd payload: %s", ZSTD_getErrorName(r));
        *used = ib.pos;
        *made = ob.pos;
        *end = (r == 0);
        return RC_OK;
    }
    case RC_COMP_XZ:
    case RC_COMP_LZMA: {
        d->xz.next_in = p;
        d->xz.avail_in = n;
        d->xz.next_out = out;
        d->xz.avail_out = cap;
        lzma_ret r = lzma_code(&d->xz, eof ? LZMA_FINISH : LZMA_RUN);
        *used = n - d->xz.avail_in;
        *made = cap - d->xz.avail_out;
        if (r == LZMA_STREAM_END) {
            *end = 1;
            return RC_OK;
        }
        if (r == LZMA_OK)
            return RC_OK;
        if (r == LZMA_BUF_ERROR && eof)
            return rc_fail(err, RC_E_TRUNCATED, "truncated %s payload", NAMES[d->kind]);
        if (r == LZMA_MEMLIMIT_ERROR)
            return rc_fail(err, RC_E_LIMIT, "%s payload needs more than %llu MiB to decompress",
                           NAMES[d->kind], DECODER_MEMLIMIT >> 20);
        if (r == LZMA_MEM_ERROR)
            return rc_fail(err, RC_E_NOMEM, "out of memory decompressing the %s payload",
                           NAMES[d->kind]);
        return rc_fail(err, RC_E_FORMAT, "corrupt %s payload (liblzma error %d)",
                       NAMES[d->kind], (int)r);
    }
    case RC_COMP_GZIP: {
        d->gz.next_in = (Bytef *)p;
        d->gz.avail_in = (uInt)(n > 0x40000000 ? 0x40000000 : n);
        uInt avail = (uInt)d->gz.avail_in;
        d->gz.next_out = out;
        d->gz.avail_out = (uInt)cap;
        int r = inflate(&d->gz, Z_NO_FLUSH);
        *used = avail - d->gz.avail_in;
        *made = cap - d->gz.avail_out;
        if (r == Z_STREAM_END) {
            *end = 1;
            return RC_OK;
        }
        if (r == Z_OK || (r == Z_BUF_ERROR && !eof))
            return RC_OK;
        if (r == Z_BUF_ERROR)
            return rc_fail(err, RC_E_TRUNCATED, "truncated gzip payload");
        return rc_fail(err, RC_E_FORMAT, "corrupt gzip payload: %s",
                       d->gz.msg ? d->gz.msg : "inflate failed");
    }
    case RC_COMP_BZIP2: {
        unsigned int avail = (unsigned int)(n > 0x40000000 ? 0x40000000 : n);
        d->bz.next_in = (char *)p;
        d->bz.avail_in = avail;
        d->bz.next_out = (char *)out;
        d->bz.avail_out = (unsigned int)cap;
        int r = BZ2_bzDecompress(&d->bz);
        *used = avail - d->bz.avail_in;
        *made = cap - d->bz.avail_out;
        if (r == BZ_STREAM_END) {
            *end = 1;
            return RC_OK;
        }
        if (r == BZ_OK)
            return RC_OK;
        if (r == BZ_MEM_ERROR)
            return rc_fail(err, RC_E_NOMEM, "out of memory decompressing bzip2");
        return rc_fail(err, RC_E_FORMAT, "corrupt bzip2 payload (libbz2 error %d)", r);
    }
    }
    return rc_fail(err, RC_E_INTERNAL, "unknown compressor");
}

long rc_decoder_read(rc_decoder *d, uint8_t *out, size_t cap, rc_error *err)
{
    if (cap > 0x40000000)
        cap = 0x40000000;
    int stalls = 0;
    while (!d->done) {
        const uint8_t *p;
        size_t n;
        int rc = rc_input_peek(d->in, &p, &n, err);
        if (rc)
            return rc;
        int eof = (n == 0);
        if (eof && d->kind == RC_COMP_NONE) {
            d->done = 1;
            break;
        }
        if (eof && d->ended && !d->started) {
            d->done = 1;
            break;
        }
        if (eof && !d->started)
            return rc_fail(err, RC_E_TRUNCATED, "truncated package: no payload");
        if (d->ended && !eof) {
            /* more input after a complete stream: another stream, or junk */
            if (d->kind == RC_COMP_LZMA)
                return rc_fail(err, RC_E_TRAILING, "trailing data after the lzma payload");
            if (d->kind != RC_COMP_ZSTD && (rc = stream_init(d, err)) != RC_OK)
                return rc;
            d->ended = 0;
        }
        size_t used = 0, made = 0;
        int end = 0;
        rc_error serr = {0, ""};
        rc = step(d, p, n, eof, out, cap, &used, &made, &end, &serr);
        if (rc) {
            /* a "stream" after a complete one that fails before producing
             * anything is not a stream: say what it is */
            if (d->streams > 0 && d->made == 0)
                return rc_fail(err, RC_E_TRAILING, "trailing data after the %s payload",
                               NAMES[d->kind]);
            return rc_fail(err, rc, "%s", serr.msg);
        }
        rc_input_consume(d->in, used);
        d->made += made;
        if (used)
            d->started = 1;
        if (end) {
            d->ended = 1;
            d->started = 0;
            d->streams++;
            d->made = 0;
        }
        if (made)
            return (long)made;
        if (used == 0 && !end) {
            if (eof && d->streams > 0 && d->made == 0)
                return rc_fail(err, RC_E_TRAILING, "trailing data after the %s payload",
                               NAMES[d->kind]);
            if (eof)
                return rc_fail(err, RC_E_TRUNCATED, "truncated %s payload", NAMES[d->kind]);
            if (++stalls > 4)
                return rc_fail(err, RC_E_FORMAT, "%s decoder makes no progress", NAMES[d->kind]);
        } else {
            stalls = 0;
        }
    }
    return 0;
}

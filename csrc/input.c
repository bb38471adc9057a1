/* Bytes in: reads from the package fd into a ring of fixed blocks.
 *
 * Every consumed byte goes through the input digests (the C section) and
 * the range digests (verification: the payload digest from the payload's
 * start, the legacy MD5 from the main header's start), and to the optional
 * tee fd.  In immediate mode that happens as bytes are consumed.  In
 * deferred mode (while the layout's sink thread runs) each block is handed
 * to a callback once consumed, and the sink hashes it -- together with the
 * file digests, on one core (layout.c) -- and releases it: the reading
 * thread only decompresses. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpmcow.h"

#define IN_BLOCK (256u << 10)
#define IN_NBLOCKS 8

struct range_digest {
    rc_digest *md;
    uint64_t start;                 /* absolute offset of its first byte */
};

struct rc_input {
    int fd;
    int eof;
    int tee_fd;
    int tee_failed;
    uint8_t *blocks[IN_NBLOCKS];
    int busy[IN_NBLOCKS];           /* held by the sink (deferred mode) */
    int cur;
    size_t pos, len;                /* within the current block */
    size_t hashed;                  /* bytes of the current block hashed */
    uint64_t total;                 /* bytes consumed */
    uint64_t progress;              /* bytes read so far, for other threads (atomic) */
    uint64_t block_start;           /* absolute offset of block byte 0 */
    int nalgos;
    rc_digest *md[RC_MAX_ALGOS];
    int nranges;
    struct range_digest ranges[RC_MAX_RANGES];
    /* held: consumed bytes [0, held_len) not hashed yet; held_p: those
     * bytes, provided again (the prologue), hashed before anything else */
    int holding;
    uint64_t held_len;
    const uint8_t *held_p;
    /* deferred mode */
    rc_input_handoff handoff;
    void *handoff_arg;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

rc_input *rc_input_new(int fd, const char *const *algos, int nalgos, rc_error *err)
{
    if (nalgos < 0 || nalgos > RC_MAX_ALGOS) {
        rc_fail(err, RC_E_INTERNAL, "at most %d input digests", RC_MAX_ALGOS);
        return NULL;
    }
    rc_input *in = calloc(1, sizeof(*in));
    if (in == NULL) {
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->freed, NULL);
    in->fd = fd;
    in->tee_fd = -1;
    uint8_t *blocks = rc_big_alloc((size_t)IN_NBLOCKS * IN_BLOCK);
    if (blocks == NULL) {
        rc_input_free(in);
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < IN_NBLOCKS; i++)
        in->blocks[i] = blocks + (size_t)i * IN_BLOCK;
    for (int i = 0; i < nalgos; i++) {
        in->md[i] = rc_digest_new(algos[i], err);
        if (in->md[i] == NULL) {
            rc_input_free(in);
            return NULL;
        }
        in->nalgos = i + 1;
    }
    return in;
}

void rc_input_free(rc_input *in)
{
    if (in == NULL)
        return;
    for (int i = 0; i < in->nalgos; i++)
        rc_digest_free(in->md[i]);
    for (int i = 0; i < in->nranges; i++)
        rc_digest_free(in->ranges[i].md);
    rc_big_free(in->blocks[0], (size_t)IN_NBLOCKS * IN_BLOCK);
    pthread_mutex_destroy(&in->lock);
    pthread_cond_destroy(&in->freed);
    free(in);
}

/* Each digest's part of bytes p[0, n), whose first byte is at absolute
 * offset `at`: every input digest gets all of them, a range digest those
 * from its start.  Returns the number of digests. */
static int split(rc_input *in, const uint8_t *p, uint64_t at, size_t n,
                 rc_digest **ds, const uint8_t **ps, size_t *ns)
{
    int k = 0;
    for (int i = 0; i < in->nalgos; i++, k++) {
        ds[k] = in->md[i];
        ps[k] = p;
        ns[k] = n;
    }
    for (int i = 0; i < in->nranges; i++, k++) {
        uint64_t start = in->ranges[i].start;
        size_t skip = at >= start ? 0 : start - at >= n ? n : (size_t)(start - at);
        ds[k] = in->ranges[i].md;
        ps[k] = p + skip;
        ns[k] = n - skip;
    }
    return k;
}

static void hash_bytes(rc_input *in, const uint8_t *p, uint64_t at, size_t n)
{
    rc_digest *ds[RC_MAX_ALGOS + RC_MAX_RANGES];
    const uint8_t *ps[RC_MAX_ALGOS + RC_MAX_RANGES];
    size_t ns[RC_MAX_ALGOS + RC_MAX_RANGES];
    /* the same bytes through every digest: together, on one core */
    rc_digest_update_together(ds, ps, ns, split(in, p, at, n, ds, ps, ns));
}

/* the held bytes, if provided and not hashed yet: into ds, ps, ns */
int rc_input_held_chunks(rc_input *in, rc_digest **ds, const uint8_t **ps, size_t *ns)
{
    if (!in->held_p)
        return 0;
    const uint8_t *p = in->held_p;
    in->held_p = NULL;
    return split(in, p, 0, (size_t)in->held_len, ds, ps, ns);
}

/* the held bytes, if provided and not hashed yet, before anything else */
static void hash_held(rc_input *in)
{
    if (in->held_p) {
        const uint8_t *p = in->held_p;
        in->held_p = NULL;
        hash_bytes(in, p, 0, (size_t)in->held_len);
    }
}

void rc_input_hold(rc_input *in)
{
    in->holding = in->total == 0;   /* from byte 0 only */
}

int rc_input_provide_held(rc_input *in, const uint8_t *p, size_t n, rc_error *err)
{
    if (!in->holding || n != in->total || (n && !p))
        return rc_fail(err, RC_E_INTERNAL, "held input bytes do not match (%zu of %llu)",
                       n, (unsigned long long)in->total);
    in->holding = 0;
    in->held_len = n;
    in->held_p = n ? p : NULL;
    return RC_OK;
}

int rc_input_block_chunks(rc_input *in, int idx, uint64_t base, size_t from, size_t to,
                          rc_digest **ds, const uint8_t **ps, size_t *ns)
{
    return split(in, in->blocks[idx] + from, base + from, to > from ? to - from : 0,
                 ds, ps, ns);
}

/* Hash bytes [from, to) of block `idx`, whose byte 0 is at absolute offset
 * `base`, into every digest (unless `hashed`), and copy them to the tee. */
static void hash_range(rc_input *in, const uint8_t *p, uint64_t base, size_t from, size_t to,
                       int hashed)
{
    if (to <= from)
        return;
    if (!hashed && !in->holding) {
        hash_held(in);
        hash_bytes(in, p + from, base + from, to - from);
    }
    if (in->tee_fd >= 0 && !in->tee_failed) {
        /* the tee's reader may stop early (it saw enough): not our error */
        if (rc_write_all(in->tee_fd, p + from, to - from, NULL) != RC_OK)
            in->tee_failed = 1;
    }
}

void rc_input_release_block(rc_input *in, int idx, uint64_t base, size_t from, size_t to,
                            int hashed)
{
    hash_range(in, in->blocks[idx], base, from, to, hashed);
    pthread_mutex_lock(&in->lock);
    in->busy[idx] = 0;
    pthread_cond_signal(&in->freed);
    pthread_mutex_unlock(&in->lock);
}

/* Give the consumed, not yet hashed part of the current block away. */
static void hand_off(rc_input *in)
{
    if (in->pos > in->hashed) {
        pthread_mutex_lock(&in->lock);
        in->busy[in->cur] = 1;
        pthread_mutex_unlock(&in->lock);
        in->handoff(in->handoff_arg, in->cur, in->block_start, in->hashed, in->pos);
    }
    in->hashed = in->pos;
}

/* called only when the current block is fully consumed */
static int fill(rc_input *in, rc_error *err)
{
    if (in->eof)
        return RC_OK;
    if (in->handoff) {
        hand_off(in);
        pthread_mutex_lock(&in->lock);
        int next = -1;
        for (;;) {
            for (int k = 1; k <= IN_NBLOCKS && next < 0; k++) {
                int i = (in->cur + k) % IN_NBLOCKS;
                if (!in->busy[i])
                    next = i;
            }
            if (next >= 0)
                break;
            pthread_cond_wait(&in->freed, &in->lock);
        }
        pthread_mutex_unlock(&in->lock);
        in->cur = next;
    }
    in->block_start += in->len;
    in->pos = in->len = in->hashed = 0;
    for (;;) {
        ssize_t r = read(in->fd, in->blocks[in->cur], IN_BLOCK);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return rc_fail(err, RC_E_IO, "read failed: %s", strerror(errno));
        }
        if (r == 0)
            in->eof = 1;
        in->len = (size_t)r;
        __atomic_store_n(&in->progress, in->block_start + (uint64_t)r, __ATOMIC_RELAXED);
        return RC_OK;
    }
}

void rc_input_consume(rc_input *in, size_t n)
{
    if (!in->handoff) {
        hash_range(in, in->blocks[in->cur], in->block_start, in->pos, in->pos + n, 0);
        in->hashed = in->pos + n;
    }
    in->pos += n;
    in->total += n;
}

int rc_input_peek(rc_input *in, const uint8_t **p, size_t *n, rc_error *err)
{
    if (in->pos == in->len) {
        int rc = fill(in, err);
        if (rc)
            return rc;
    }
    *p = in->blocks[in->cur] + in->pos;
    *n = in->len - in->pos;
    return RC_OK;
}

/* A large read with the current block used up: straight from the fd into
 * dst (the prologue's megabytes of main header), hashed and teed like any
 * consumed bytes.  Returns the bytes read (0 at end of input) or -1. */
static ssize_t read_direct(rc_input *in, uint8_t *dst, size_t n, rc_error *err)
{
    ssize_t r;
    do
        r = read(in->fd, dst, n);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        rc_fail(err, RC_E_IO, "read failed: %s", strerror(errno));
        return -1;
    }
    in->block_start += in->len;
    in->pos = in->len = in->hashed = 0;
    if (r == 0) {
        in->eof = 1;
        return 0;
    }
    hash_range(in, dst, in->total, 0, (size_t)r, 0);
    in->total += (uint64_t)r;
    in->block_start = in->total;
    __atomic_store_n(&in->progress, in->total, __ATOMIC_RELAXED);
    return r;
}

int rc_input_read(rc_input *in, uint8_t *dst, size_t n, const char *what, rc_error *err)
{
    while (n > 0) {
        if (in->pos == in->len && n >= IN_BLOCK && !in->handoff && !in->eof) {
            ssize_t r = read_direct(in, dst, n, err);
            if (r < 0)
                return err->code;
            if (r > 0) {
                dst += r;
                n -= (size_t)r;
                continue;
            }
        }
        const uint8_t *p;
        size_t avail;
        int rc = rc_input_peek(in, &p, &avail, err);
        if (rc)
            return rc;
        if (avail == 0)
            return rc_fail(err, RC_E_TRUNCATED,
                           "truncated package: input ends inside the %s (at byte %llu)",
                           what, (unsigned long long)in->total);
        size_t k = avail < n ? avail : n;
        memcpy(dst, p, k);
        rc_input_consume(in, k);
        dst += k;
        n -= k;
    }
    return RC_OK;
}

void rc_input_defer(rc_input *in, rc_input_handoff handoff, void *arg)
{
    in->handoff = handoff;
    in->handoff_arg = arg;
}

void rc_input_undefer(rc_input *in)
{
    if (in->handoff)
        hand_off(in);
    in->handoff = NULL;
    in->handoff_arg = NULL;
}

int rc_input_add_range_digest(rc_input *in, const char *name, uint64_t start,
                              const uint8_t *prefix, size_t prefix_len, rc_error *err)
{
    if (in->nranges == RC_MAX_RANGES)
        return rc_fail(err, RC_E_INTERNAL, "at most %d range digests", RC_MAX_RANGES);
    if (start > in->total || in->total - start != prefix_len || (prefix_len && !prefix))
        return rc_fail(err, RC_E_INTERNAL, "range digest prefix does not reach the "
                       "current position");
    rc_digest *md = rc_digest_new(name, err);
    if (md == NULL)
        return err->code;
    /* held bytes still to be hashed cover the prefix (nothing was consumed
     * since they were provided: that would have hashed them) */
    if (prefix_len && !in->holding && !in->held_p)
        rc_digest_update(md, prefix, prefix_len);
    in->ranges[in->nranges].md = md;
    in->ranges[in->nranges].start = start;
    return in->nranges++;
}

void rc_input_set_tee(rc_input *in, int fd)
{
    in->tee_fd = fd;
}

int rc_input_copy_to(rc_input *in, int fd, rc_error *err)
{
    for (;;) {
        const uint8_t *p;
        size_t n;
        int rc = rc_input_peek(in, &p, &n, err);
        if (rc)
            return rc;
        if (n == 0)
            return RC_OK;
        if ((rc = rc_write_all(fd, p, n, err)) != RC_OK)
            return rc;
        rc_input_consume(in, n);
    }
}

uint64_t rc_input_total(const rc_input *in)
{
    return in->total;
}

uint64_t rc_input_progress(const rc_input *in)
{
    return __atomic_load_n(&in->progress, __ATOMIC_RELAXED);
}

int rc_input_finish(rc_input *in, uint8_t *out, int *lens,
                    uint8_t *range_out, int *range_lens, rc_error *err)
{
    if (in->holding)
        return rc_fail(err, RC_E_INTERNAL, "held input bytes were never provided");
    hash_held(in);
    for (int i = 0; i < in->nalgos; i++)
        lens[i] = rc_digest_final(in->md[i], out + (size_t)i * RC_MAX_DIGEST);
    for (int i = 0; range_out && range_lens && i < in->nranges; i++)
        range_lens[i] = rc_digest_final(in->ranges[i].md, range_out + (size_t)i * RC_MAX_DIGEST);
    return RC_OK;
}

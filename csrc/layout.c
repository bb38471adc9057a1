/* The extents layout: walk the cpio archive and write each distinct file
 * content once, page-aligned, after checking it against its header digest.
 * Later files with the same digest share the first one's blob (dedupe);
 * empty files get the aligned offset where the next blob would start.
 *
 * Two threads share the work.  The reader (the caller's thread) only
 * decompresses and parses cpio, and decides where everything goes; it
 * sends an ordered stream of operations to the sink thread, which hashes
 * (file digests, input and payload digests) and writes.  Buffers come from
 * fixed pools and are returned by the sink, so memory stays constant. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cpio.h"

#define OUT_BUFSIZE (1u << 20)
#define OUT_NBUFS 8
#define RING 16384
#define BATCH 256
#define SINK_FAILED (-100)
#define SINK_IOV 512              /* writes gathered into one writev */

static const uint8_t ZEROS[65536];

enum op_kind { OP_BEGIN, OP_DATA, OP_END, OP_PAD, OP_INBLOCK, OP_RELEASE, OP_STOP };

/* op.pre: hashed ahead by the sink (hash_batch) or by the reader; on END,
 * the file's verdict */
enum { PRE_NONE, PRE_HASHED, PRE_BY_READER, PRE_MATCH, PRE_MISMATCH };

struct op {
    uint8_t kind;
    uint8_t write;
    uint8_t pre;
    int32_t idx;
    uint32_t fx;
    const uint8_t *p;
    size_t n;
    uint64_t base;
    size_t from;
};

#define IN_STREAMS (RC_MAX_ALGOS + RC_MAX_RANGES)

struct in_chunk {                 /* each input digest's part of an input block */
    const uint8_t *p[IN_STREAMS];
    size_t n[IN_STREAMS];
};

struct layout {
    /* shared, read-only */
    const rc_filetab *ft;
    rc_input *in;
    int out_fd;
    uint32_t page_size;
    /* ring between the threads */
    pthread_mutex_t lock;
    pthread_cond_t can_put, can_get, buf_free;
    struct op ring[RING];
    size_t head, tail;
    int failed;                   /* set by the sink, under lock */
    rc_error sink_err;
    uint8_t *bufs[OUT_NBUFS];
    int buf_busy[OUT_NBUFS];
    /* reader only */
    struct op batch[BATCH];
    size_t nbatch;
    int cur_buf;
    uint64_t out_pos;
    rc_pstream ps;
    uint8_t *seen;
    uint64_t *group_offsets;
    rc_digest *rmd;               /* files the reader hashes itself */
    int reader_hashes;            /* -1: when the sink is behind; 0, 1 (tests) */
    rc_layout_result *res;
    /* sink only */
    rc_digest *fmd;
    rc_digest *lane_md[2];        /* whole files, two at a time (hash_batch) */
    struct in_chunk in_chunks[BATCH + 1];   /* + the held prologue */
    struct iovec iov[SINK_IOV];   /* output not yet written, in order */
    int niov;
};

static const char *file_name(const rc_filetab *ft, uint32_t fx)
{
    for (uint32_t i = 0; i < ft->count; i++)
        if (ft->name_fx[i] == fx)
            return ft->names[i];
    return "?";
}

/* ---- the sink thread -------------------------------------------------- */

static void sink_fail(struct layout *L, int code, const char *msg)
{
    pthread_mutex_lock(&L->lock);
    if (!L->failed) {
        L->failed = 1;
        rc_fail(&L->sink_err, code, "%s", msg);
    }
    pthread_mutex_unlock(&L->lock);
}

/* Write what was gathered.  Output is gathered, not written piece by piece
 * (a blob, then its padding: two small writes per file otherwise), and
 * written before the buffer it points into is released. */
static int sink_flush(struct layout *L, rc_error *err)
{
    struct iovec *v = L->iov;
    int n = L->niov;
    L->niov = 0;
    while (n > 0) {
        ssize_t w = writev(L->out_fd, v, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return rc_fail(err, RC_E_IO, "write failed: %s", strerror(errno));
        }
        while (n > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    return RC_OK;
}

static int sink_write(struct layout *L, const void *p, size_t n, rc_error *err)
{
    if (L->niov > 0) {
        struct iovec *last = &L->iov[L->niov - 1];
        if ((const uint8_t *)last->iov_base + last->iov_len == (const uint8_t *)p) {
            last->iov_len += n;         /* contiguous in the same buffer */
            return RC_OK;
        }
    }
    if (L->niov == SINK_IOV) {
        int rc = sink_flush(L, err);
        if (rc)
            return rc;
    }
    L->iov[L->niov].iov_base = (void *)p;
    L->iov[L->niov].iov_len = n;
    L->niov++;
    return RC_OK;
}

static int digest_matches(const rc_filetab *ft, uint32_t fx, const uint8_t *got, int len)
{
    return (uint32_t)len == ft->keysize &&
           memcmp(got, ft->digests + (size_t)fx * ft->keysize, ft->keysize) == 0;
}

/* ---- hashing a batch ahead ------------------------------------------------
 * Before a batch of ops is processed, every digest it feeds is computed in
 * one pass of interleaved streams (rc_digest_update_together: one core runs
 * one MD5 and up to four SHA-256 chains at once): the input digests over
 * the compressed blocks the batch hands over (C section, payload digest,
 * header + payload MD5), and the file digests on three lanes -- one for the
 * file that spans batches (the one open when the batch starts, then the one
 * left open at its end: L->fmd, as on the one-at-a-time path) and two for
 * the whole files in the batch (a lane that finishes takes the next).  The
 * verdicts wait on the files' END ops, so errors still come in op order. */

#define NO_OP SIZE_MAX

struct job {                      /* one file's ops within the batch */
    size_t begin, end;            /* its BEGIN and END op, NO_OP if outside */
    size_t from, to;              /* ops to scan for its DATA */
};

struct lane {
    rc_digest *md;
    const struct job *jobs;       /* the lane's own jobs, or a shared queue */
    size_t njobs, *next;
    const struct job *job;        /* current, NULL if idle */
    size_t at;                    /* next op to scan */
    const uint8_t *p;             /* what is left of the current DATA op */
    size_t n;
};

/* Give the lane its next chunk; when its file is done, record the verdict
 * on the END op and start the next job.  0: nothing left for it. */
static int lane_fill(struct layout *L, struct op *ops, struct lane *ln)
{
    for (;;) {
        if (ln->n)
            return 1;
        while (ln->job && ln->at < ln->job->to) {
            struct op *o = &ops[ln->at++];
            if (o->kind == OP_DATA && o->pre == PRE_NONE) {
                o->pre = PRE_HASHED;
                ln->p = o->p;
                ln->n = o->n;
                if (ln->n)
                    return 1;
            }
        }
        if (ln->job && ln->job->end != NO_OP) {
            uint8_t got[RC_MAX_DIGEST];
            int len = rc_digest_final(ln->md, got);
            struct op *e = &ops[ln->job->end];
            e->pre = digest_matches(L->ft, e->fx, got, len) ? PRE_MATCH : PRE_MISMATCH;
        }
        ln->job = NULL;
        if (*ln->next == ln->njobs)
            return 0;
        const struct job *j = &ln->jobs[(*ln->next)++];
        if (j->begin != NO_OP) {
            if (rc_digest_reset(ln->md) != RC_OK)
                return 0;         /* cannot happen for these digests */
            ops[j->begin].pre = PRE_HASHED;
        }
        ln->job = j;
        ln->at = j->from;
    }
}

static void hash_batch(struct layout *L, struct op *ops, size_t n)
{
    struct job whole[BATCH / 2 + 1], span[2];
    size_t nwhole = 0, nspan = 0, open = NO_OP;
    int seen = 0, inside = 0;         /* a file op seen; the batch starts inside a file */
    size_t nchunks = 0;
    rc_digest *ids[IN_STREAMS];
    int nin = 0;
    struct in_chunk *chunks = L->in_chunks;

    /* the prologue, if the input held it back: first, with everything else */
    nin = rc_input_held_chunks(L->in, ids, chunks[0].p, chunks[0].n);
    nchunks = nin > 0;
    for (size_t i = 0; i < n; i++) {
        struct op *o = &ops[i];
        if (o->kind == OP_INBLOCK) {
            nin = rc_input_block_chunks(L->in, o->idx, o->base, o->from, o->n, ids,
                                        chunks[nchunks].p, chunks[nchunks].n);
            o->pre = PRE_HASHED;
            nchunks++;
            continue;
        }
        if (!L->lane_md[0] || o->pre != PRE_NONE)
            continue;             /* not hashed ahead, or by the reader */
        if (o->kind == OP_DATA && !seen) {
            seen = inside = 1;
        } else if (o->kind == OP_BEGIN) {
            seen = 1;
            open = i;
        } else if (o->kind == OP_END) {
            seen = 1;
            if (open != NO_OP)
                whole[nwhole++] = (struct job){open, i, open + 1, i};
            else              /* the leading file ends */
                span[nspan++] = (struct job){NO_OP, i, 0, i};
            open = NO_OP;
        }
    }
    if (L->lane_md[0]) {
        if (inside && nspan == 0)                  /* all of the batch is in one file */
            span[nspan++] = (struct job){NO_OP, NO_OP, 0, n};
        if (open != NO_OP)                         /* the trailing file stays open */
            span[nspan++] = (struct job){open, NO_OP, open + 1, n};
    }

    size_t next_whole = 0, next_span = 0;
    struct lane lanes[3] = {
        {.md = L->fmd, .jobs = span, .njobs = nspan, .next = &next_span},
        {.md = L->lane_md[0], .jobs = whole, .njobs = nwhole, .next = &next_whole},
        {.md = L->lane_md[1], .jobs = whole, .njobs = nwhole, .next = &next_whole},
    };
    int nlanes = L->lane_md[0] ? 3 : 0;
    size_t chunk = 0;                 /* input streams: their chunk of INBLOCK op `chunk` */
    const uint8_t *ip[IN_STREAMS];
    size_t in_left[IN_STREAMS];
    for (int j = 0; j < nin; j++)
        in_left[j] = 0;
    for (;;) {
        rc_digest *ds[IN_STREAMS + 3];
        const uint8_t *ps[IN_STREAMS + 3];
        size_t ns[IN_STREAMS + 3];
        int k = 0, in_active = 0;
        /* the input streams advance together, one INBLOCK chunk at a time */
        for (int j = 0; j < nin; j++)
            in_active |= in_left[j] > 0;
        while (!in_active && chunk < nchunks) {
            for (int j = 0; j < nin; j++) {
                ip[j] = chunks[chunk].p[j];
                in_left[j] = chunks[chunk].n[j];
                in_active |= in_left[j] > 0;
            }
            chunk++;
        }
        for (int j = 0; j < nin; j++) {
            if (in_left[j]) {
                ds[k] = ids[j];
                ps[k] = ip[j];
                ns[k++] = in_left[j];
            }
        }
        int lane_of[3], nl = 0;
        for (int l = 0; l < nlanes; l++) {
            if (lane_fill(L, ops, &lanes[l])) {
                ds[k] = lanes[l].md;
                ps[k] = lanes[l].p;
                ns[k++] = lanes[l].n;
                lane_of[nl++] = l;
            }
        }
        if (k == 0)
            return;
        /* equal steps, whole blocks where they can be, so that the streams
         * stay interleaved: the shortest sets the step */
        size_t step = SIZE_MAX;
        for (int i = 0; i < k; i++)
            if (ns[i] < step)
                step = ns[i];
        step = step >= 64 ? step & ~(size_t)63 : 64;
        for (int i = 0; i < k; i++)
            if (ns[i] > step)
                ns[i] = step;
        rc_digest_update_together(ds, ps, ns, k);
        int i = 0;
        for (int j = 0; j < nin; j++) {
            if (in_left[j]) {
                ip[j] += ns[i];
                in_left[j] -= ns[i];
                i++;
            }
        }
        for (int l = 0; l < nl; l++, i++) {
            lanes[lane_of[l]].p += ns[i];
            lanes[lane_of[l]].n -= ns[i];
        }
    }
}

static void sink_do(struct layout *L, const struct op *o, int *failed)
{
    rc_error err = {0, ""};
    switch (o->kind) {
    case OP_BEGIN:
        if (o->pre != PRE_NONE)
            break;
        if (!*failed && rc_digest_reset(L->fmd) != RC_OK) {
            sink_fail(L, RC_E_NOMEM, "cannot start a file digest (out of memory?)");
            *failed = 1;
        }
        break;
    case OP_DATA:
        if (*failed)
            break;
        if (o->pre == PRE_NONE && rc_digest_update(L->fmd, o->p, o->n) != RC_OK) {
            sink_fail(L, RC_E_NOMEM, "file digest failed (out of memory?)");
            *failed = 1;
            break;
        }
        if (o->write && sink_write(L, o->p, o->n, &err) != RC_OK) {
            sink_fail(L, err.code, err.msg);
            *failed = 1;
        }
        break;
    case OP_END: {
        if (*failed)
            break;
        int match;
        if (o->pre != PRE_NONE) {
            match = o->pre == PRE_MATCH;
        } else {
            uint8_t got[RC_MAX_DIGEST];
            int len = rc_digest_final(L->fmd, got);
            match = digest_matches(L->ft, o->fx, got, len);
        }
        if (!match) {
            rc_fail(&err, RC_E_DIGEST, "file /%s: content does not match its header digest",
                    file_name(L->ft, o->fx));
            sink_fail(L, err.code, err.msg);
            *failed = 1;
        }
        break;
    }
    case OP_PAD:
        /* less than a page: ZEROS holds the largest page size */
        if (!*failed && sink_write(L, ZEROS, o->n, &err) != RC_OK) {
            sink_fail(L, err.code, err.msg);
            *failed = 1;
        }
        break;
    case OP_INBLOCK:
        /* always: it releases the block to the reader */
        rc_input_release_block(L->in, o->idx, o->base, o->from, o->n, o->pre == PRE_HASHED);
        break;
    case OP_RELEASE:
        if (!*failed && sink_flush(L, &err) != RC_OK) {
            sink_fail(L, err.code, err.msg);
            *failed = 1;
        }
        pthread_mutex_lock(&L->lock);
        __atomic_store_n(&L->buf_busy[o->idx], 0, __ATOMIC_RELAXED);
        pthread_cond_signal(&L->buf_free);
        pthread_mutex_unlock(&L->lock);
        break;
    }
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *sink_main(void *arg)
{
    struct layout *L = arg;
    struct op local[BATCH];
    int failed = 0;
    uint64_t cpu0 = thread_cpu_ns();
    for (;;) {
        pthread_mutex_lock(&L->lock);
        while (L->head == L->tail)
            pthread_cond_wait(&L->can_get, &L->lock);
        size_t n = 0;
        while (L->tail != L->head && n < BATCH)
            local[n++] = L->ring[L->tail++ % RING];
        pthread_cond_signal(&L->can_put);
        pthread_mutex_unlock(&L->lock);
        if (!failed)
            hash_batch(L, local, n);
        for (size_t i = 0; i < n; i++) {
            if (local[i].kind == OP_STOP) {
                rc_error err = {0, ""};
                if (!failed && sink_flush(L, &err) != RC_OK)
                    sink_fail(L, err.code, err.msg);
                L->res->sink_cpu_ns = thread_cpu_ns() - cpu0;
                return NULL;
            }
            sink_do(L, &local[i], &failed);
        }
    }
}

/* ---- the reader side -------------------------------------------------- */

static int flush(struct layout *L)
{
    size_t i = 0;
    pthread_mutex_lock(&L->lock);
    while (i < L->nbatch) {
        while (L->head - L->tail == RING)
            pthread_cond_wait(&L->can_put, &L->lock);
        while (i < L->nbatch && L->head - L->tail < RING)
            L->ring[L->head++ % RING] = L->batch[i++];
        pthread_cond_signal(&L->can_get);
    }
    int failed = L->failed;
    pthread_mutex_unlock(&L->lock);
    L->nbatch = 0;
    return failed ? SINK_FAILED : RC_OK;
}

static int put(struct layout *L, struct op o)
{
    L->batch[L->nbatch++] = o;
    return L->nbatch == BATCH ? flush(L) : RC_OK;
}

static void input_handoff(void *arg, int idx, uint64_t base, size_t from, size_t to)
{
    struct layout *L = arg;
    struct op o = {.kind = OP_INBLOCK, .idx = idx, .base = base, .from = from, .n = to};
    put(L, o);
    flush(L);   /* the reader may wait for this block next */
}

static int next_buffer(rc_pstream *ps, void *arg, rc_error *err)
{
    struct layout *L = arg;
    if (L->cur_buf >= 0) {
        struct op o = {.kind = OP_RELEASE, .idx = L->cur_buf};
        put(L, o);
    }
    int rc = flush(L);
    if (rc)
        return rc;
    pthread_mutex_lock(&L->lock);
    int next = -1;
    for (;;) {
        for (int k = 1; k <= OUT_NBUFS && next < 0; k++) {
            int i = (L->cur_buf + k + OUT_NBUFS) % OUT_NBUFS;
            if (!L->buf_busy[i])
                next = i;
        }
        if (next >= 0 || L->failed)
            break;
        pthread_cond_wait(&L->buf_free, &L->lock);
    }
    if (next >= 0)
        __atomic_store_n(&L->buf_busy[next], 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&L->lock);
    if (next < 0)
        return SINK_FAILED;
    L->cur_buf = next;
    ps->buf = L->bufs[next];
    (void)err;
    return RC_OK;
}

static int check_filetab(const rc_filetab *ft, rc_error *err)
{
    if (ft->keysize > RC_MAX_DIGEST)
        return rc_fail(err, RC_E_INTERNAL, "digest size %u too large", ft->keysize);
    if (ft->count && (!ft->sizes || !ft->stripped_sizes || !ft->flags || !ft->groups ||
                      !ft->names || !ft->name_fx || (ft->keysize && !ft->digests)))
        return rc_fail(err, RC_E_INTERNAL, "incomplete file table");
    for (uint32_t i = 0; i < ft->count; i++) {
        if (ft->name_fx[i] >= ft->count)
            return rc_fail(err, RC_E_INTERNAL, "file table index out of range");
        if ((ft->flags[i] & RC_FT_KEYED) &&
            (ft->groups[i] < 0 || (uint32_t)ft->groups[i] >= ft->ngroups || !ft->keysize))
            return rc_fail(err, RC_E_INTERNAL, "file table group out of range");
    }
    return RC_OK;
}

static int pad_to_page(struct layout *L)
{
    uint64_t rem = L->out_pos % L->page_size;
    if (rem == 0)
        return RC_OK;
    struct op o = {.kind = OP_PAD, .n = L->page_size - rem};
    L->out_pos += o.n;
    return put(L, o);
}

/* Who hashes file contents: -1 (the default) lets sink_behind() decide;
 * 1 or 0 force the reader or the sink, for the tests that check both ways
 * catch a changed file (rc_layout_force_hasher; nothing reads the
 * environment for it). */
static int forced_hasher = -1;

void rc_layout_force_hasher(int who)
{
    __atomic_store_n(&forced_hasher, who == 0 || who == 1 ? who : -1, __ATOMIC_RELAXED);
}

/* The sink is behind: all output buffers but one wait for it (a heuristic,
 * read without the lock), or the forced answer. */
static int sink_behind(struct layout *L)
{
    if (L->reader_hashes >= 0)
        return L->reader_hashes;
    int busy = 0;
    for (int i = 0; i < OUT_NBUFS; i++)
        busy += __atomic_load_n(&L->buf_busy[i], __ATOMIC_RELAXED);
    return busy >= OUT_NBUFS - 1;
}

/* Send `size` bytes of content of file fx to the sink: hashed, and copied
 * out if `write`. */

static int take_content(struct layout *L, uint32_t fx, uint64_t size, int write, rc_error *err)
{
    /* where the sink is the bottleneck (content that decompresses fast), the
     * reader hashes the file itself rather than wait for a free buffer */
    int mine = L->rmd && sink_behind(L) && rc_digest_reset(L->rmd) == RC_OK;
    uint8_t pre = mine ? PRE_BY_READER : PRE_NONE;
    struct op o = {.kind = OP_BEGIN, .fx = fx, .pre = pre};
    int rc = put(L, o);
    uint64_t left = size;
    while (rc == RC_OK && left > 0) {
        const uint8_t *p;
        size_t n;
        if ((rc = rc_ps_chunk(&L->ps, &p, &n, left, err)) != RC_OK)
            break;
        if (n == 0)
            return rc_fail(err, RC_E_TRUNCATED,
                           "truncated payload: archive ends inside the content of /%s",
                           file_name(L->ft, fx));
        struct op d = {.kind = OP_DATA, .fx = fx, .p = p, .n = n, .write = (uint8_t)write,
                       .pre = pre};
        if (mine && rc_digest_update(L->rmd, p, n) != RC_OK)
            return rc_fail(err, RC_E_NOMEM, "file digest failed (out of memory?)");
        rc_ps_consume(&L->ps, n);
        left -= n;
        rc = put(L, d);
    }
    if (rc)
        return rc;
    o.kind = OP_END;
    if (mine) {
        uint8_t got[RC_MAX_DIGEST];
        int len = rc_digest_final(L->rmd, got);
        o.pre = digest_matches(L->ft, fx, got, len) ? PRE_MATCH : PRE_MISMATCH;
    }
    if (write) {
        L->out_pos += size;
        L->res->blob_bytes += size;
    }
    return put(L, o);
}

static int take_entry(struct layout *L, const rc_cpio_entry *e, rc_error *err)
{
    const rc_filetab *ft = L->ft;
    long fxl;
    if (e->stripped) {
        if (e->fx >= ft->count)
            return rc_fail(err, RC_E_FORMAT, "cpio entry refers to file %u of %u",
                           e->fx, ft->count);
        fxl = e->fx;
    } else {
        fxl = rc_cpio_lookup(ft, rc_cpio_path(e));
        if (fxl < 0)
            return rc_fail(err, RC_E_FORMAT, "archive entry %s is not in the header", e->name);
    }
    uint32_t fx = (uint32_t)fxl;
    if (L->seen[fx])
        return rc_fail(err, RC_E_FORMAT, "archive has /%s twice", file_name(ft, fx));
    L->seen[fx] = 1;

    uint8_t flags = ft->flags[fx];
    uint64_t size = e->stripped ? ft->stripped_sizes[fx] : e->size;
    if (flags & RC_FT_GHOST)     /* rpm < 4.11 sometimes put ghosts in the payload */
        return rc_ps_skip(&L->ps, size, "file content", err);
    int is_reg = e->stripped ? (flags & RC_FT_REG) : S_ISREG(e->mode);
    if (is_reg && !(flags & RC_FT_REG))
        return rc_fail(err, RC_E_FORMAT, "archive entry /%s is a regular file, the header "
                       "says it is not", file_name(ft, fx));
    /* and the other way round: a regular file of the header must come as
     * one, or its content would be skipped as a directory's or a symlink's
     * and the file left without a blob */
    if (!is_reg && (flags & RC_FT_REG))
        return rc_fail(err, RC_E_FORMAT, "archive entry /%s is not a regular file, the "
                       "header says it is", file_name(ft, fx));
    if (!is_reg && size != ft->stripped_sizes[fx])
        /* directories carry nothing, symlinks their target: never more */
        return rc_fail(err, RC_E_FORMAT, "archive entry /%s has %llu bytes, the header "
                       "says %llu", file_name(ft, fx), (unsigned long long)size,
                       (unsigned long long)ft->stripped_sizes[fx]);
    if (!is_reg || !(flags & RC_FT_KEYED) ||
        (size == 0 && ft->sizes[fx] > 0 && (flags & RC_FT_NOCONTENT)))
        /* not content we keep: directory, symlink target, device, a file
         * without a digest, or a hardlink member whose content travels with
         * another member (only those the header says so: any other empty
         * entry for a non-empty file is refused below, and walk() checks
         * that the content did come) */
        return rc_ps_skip(&L->ps, size, "file content", err);
    if (size != ft->sizes[fx])
        return rc_fail(err, RC_E_FORMAT, "archive entry /%s has %llu bytes, the header says %llu",
                       file_name(ft, fx), (unsigned long long)size,
                       (unsigned long long)ft->sizes[fx]);

    int32_t g = ft->groups[fx];
    int write = (L->group_offsets[g] == UINT64_MAX);
    if (write) {
        int rc = pad_to_page(L);
        if (rc)
            return rc;
        L->group_offsets[g] = L->out_pos;
        L->res->blobs++;
    } else {
        L->res->dup_files++;
    }
    return take_content(L, fx, size, write, err);
}

/* after the trailer only zero padding may follow, up to the end of input;
 * rpm stops reading at the trailer, so a payload that goes on decompressing
 * far beyond it is refused instead of decompressed (a bomb) */
#define MAX_AFTER_TRAILER (64u << 10)

static int drain(struct layout *L, rc_error *err)
{
    uint64_t start = L->ps.offset;
    for (;;) {
        if (L->ps.offset - start > MAX_AFTER_TRAILER)
            return rc_fail(err, RC_E_TRAILING, "more than %u bytes after the end of the "
                           "cpio archive", MAX_AFTER_TRAILER);
        const uint8_t *p;
        size_t n;
        int rc = rc_ps_chunk(&L->ps, &p, &n, UINT64_MAX, err);
        if (rc)
            return rc;
        if (n == 0)
            return RC_OK;
        for (size_t i = 0; i < n; i++)
            if (p[i] != 0)
                return rc_fail(err, RC_E_TRAILING, "data after the end of the cpio archive");
        rc_ps_consume(&L->ps, n);
    }
}

static int walk(struct layout *L, rc_error *err)
{
    rc_cpio_entry *e = malloc(sizeof(*e));
    if (e == NULL)
        return rc_fail(err, RC_E_NOMEM, "out of memory");
    int rc;
    for (;;) {
        rc = rc_cpio_next(&L->ps, e, err);
        if (rc || e->trailer)
            break;
        L->res->entries++;
        if ((rc = take_entry(L, e, err)) != RC_OK)
            break;
    }
    free(e);
    if (rc == RC_OK)
        rc = drain(L, err);
    if (rc == RC_OK) {
        const rc_filetab *ft = L->ft;
        for (uint32_t i = 0; i < ft->count; i++) {
            if ((ft->flags[i] & RC_FT_REG) && !L->seen[i])
                return rc_fail(err, RC_E_FORMAT, "payload lacks /%s, which the header lists",
                               file_name(ft, i));
        }
        /* every file with a digest has its content in the output: a hardlink
         * member skipped above relies on another entry having carried it
         * (e.g. not so if the set's members disagree on their digest) */
        for (uint32_t i = 0; i < ft->count; i++) {
            if ((ft->flags[i] & RC_FT_REG) && (ft->flags[i] & RC_FT_KEYED) &&
                L->group_offsets[ft->groups[i]] == UINT64_MAX)
                return rc_fail(err, RC_E_FORMAT, "payload carries no content for /%s (a "
                               "hardlink set without its content?)", file_name(ft, i));
        }
    }
    return rc;
}

int rc_layout_payload(rc_input *in, int compressor, const rc_filetab *ft,
                      int out_fd, uint64_t out_pos, uint32_t page_size,
                      uint64_t *group_offsets, rc_layout_result *res,
                      rc_error *err)
{
    memset(res, 0, sizeof(*res));
    if (page_size < 512 || page_size > sizeof(ZEROS) || (page_size & (page_size - 1)))
        return rc_fail(err, RC_E_INTERNAL, "bad page size %u", page_size);
    int rc = check_filetab(ft, err);
    if (rc)
        return rc;

    struct layout *L = calloc(1, sizeof(*L));
    if (L == NULL)
        return rc_fail(err, RC_E_NOMEM, "out of memory");
    L->ft = ft;
    L->in = in;
    L->out_fd = out_fd;
    L->out_pos = out_pos;
    L->page_size = page_size;
    L->group_offsets = group_offsets;
    L->res = res;
    L->cur_buf = -1;
    for (uint32_t g = 0; g < ft->ngroups; g++)
        group_offsets[g] = UINT64_MAX;
    pthread_mutex_init(&L->lock, NULL);
    pthread_cond_init(&L->can_put, NULL);
    pthread_cond_init(&L->can_get, NULL);
    pthread_cond_init(&L->buf_free, NULL);

    rc_decoder *dec = NULL;
    int allocated = (L->seen = calloc(ft->count ? ft->count : 1, 1)) != NULL;
    uint8_t *bufs = rc_big_alloc((size_t)OUT_NBUFS * OUT_BUFSIZE);
    allocated &= bufs != NULL;
    for (int i = 0; bufs && i < OUT_NBUFS; i++)
        L->bufs[i] = bufs + (size_t)i * OUT_BUFSIZE;
    if (!allocated) {
        rc = rc_fail(err, RC_E_NOMEM, "out of memory");
        goto out;
    }
    if (ft->keysize && (L->fmd = rc_digest_new(ft->digest_name, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    if (L->fmd && (L->rmd = rc_digest_new(ft->digest_name, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    L->reader_hashes = __atomic_load_n(&forced_hasher, __ATOMIC_RELAXED);
    /* two lanes only where they are hashed together (SHA-256, MD5 on the
     * SHA extensions): elsewhere one at a time is as fast */
    if (L->fmd && rc_digest_interleaves(L->fmd)) {
        for (int k = 0; k < 2; k++) {
            if ((L->lane_md[k] = rc_digest_new(ft->digest_name, err)) == NULL) {
                rc = err->code;
                goto out;
            }
        }
    }
    pthread_t th;
    if (pthread_create(&th, NULL, sink_main, L) != 0) {
        rc = rc_fail(err, RC_E_NOMEM, "cannot start the writer thread");
        goto out;
    }
    uint64_t cpu0 = thread_cpu_ns();
    rc_input_defer(in, input_handoff, L);
    dec = rc_decoder_new(compressor, in, err);
    if (dec == NULL) {
        rc = err->code;
    } else if ((rc = rc_ps_init(&L->ps, dec, NULL, OUT_BUFSIZE, next_buffer, L, err)) == RC_OK
               && (rc = next_buffer(&L->ps, L, err)) == RC_OK) {
        rc = walk(L, err);
    }
    /* hand the last input block to the sink, stop it and wait for it */
    rc_input_undefer(in);
    struct op stop = {.kind = OP_STOP};
    put(L, stop);
    flush(L);
    res->reader_cpu_ns = thread_cpu_ns() - cpu0;
    pthread_join(th, NULL);
    if (L->failed) {
        *err = L->sink_err;     /* the sink is behind: its error came first */
        rc = err->code;
    } else if (rc == SINK_FAILED) {
        rc = rc_fail(err, RC_E_INTERNAL, "writer stopped without an error");
    }
    res->out_pos = L->out_pos;
    res->payload_bytes = L->ps.offset;
out:
    rc_ps_free(&L->ps);
    rc_decoder_free(dec);
    rc_digest_free(L->fmd);
    rc_digest_free(L->rmd);
    rc_digest_free(L->lane_md[0]);
    rc_digest_free(L->lane_md[1]);
    rc_big_free(L->bufs[0], (size_t)OUT_NBUFS * OUT_BUFSIZE);
    free(L->seen);
    pthread_mutex_destroy(&L->lock);
    pthread_cond_destroy(&L->can_put);
    pthread_cond_destroy(&L->can_get);
    pthread_cond_destroy(&L->buf_free);
    free(L);
    return rc;
}

/* ---- the layout on a thread of its own -------------------------------- */

struct rc_layout_job {
    pthread_t thread;
    rc_input *in;
    int compressor;
    const rc_filetab *ft;
    int out_fd;
    uint64_t out_pos;
    uint32_t page_size;
    uint64_t *group_offsets;
    rc_layout_result *res;
    int rc;
    rc_error err;
};

static void *job_main(void *arg)
{
    rc_layout_job *j = arg;
    j->rc = rc_layout_payload(j->in, j->compressor, j->ft, j->out_fd, j->out_pos,
                              j->page_size, j->group_offsets, j->res, &j->err);
    return NULL;
}

int rc_layout_start(rc_input *in, int compressor, const rc_filetab *ft,
                    int out_fd, uint64_t out_pos, uint32_t page_size,
                    uint64_t *group_offsets, rc_layout_result *res,
                    rc_layout_job **job, rc_error *err)
{
    rc_layout_job *j = calloc(1, sizeof(*j));
    *job = NULL;
    if (j == NULL)
        return rc_fail(err, RC_E_NOMEM, "out of memory");
    *j = (rc_layout_job){.in = in, .compressor = compressor, .ft = ft, .out_fd = out_fd,
                         .out_pos = out_pos, .page_size = page_size,
                         .group_offsets = group_offsets, .res = res};
    if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
        free(j);
        return rc_fail(err, RC_E_NOMEM, "cannot start the reader thread");
    }
    *job = j;
    return RC_OK;
}

int rc_layout_wait(rc_layout_job *job, rc_error *err)
{
    pthread_join(job->thread, NULL);
    int rc = job->rc;
    if (rc != RC_OK)
        *err = job->err;
    free(job);
    return rc;
}

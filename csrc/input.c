/* Bytes in: buffered reads from the package fd.  Every consumed byte goes
 * through the input digests (the C section); from the start of the payload
 * on, also through the payload digest and optionally a tee fd. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpmcow.h"

#define INPUT_BUFSIZE (256u << 10)

struct rc_input {
    int fd;
    int eof;
    int tee_fd;
    uint8_t *buf;
    size_t pos, len;
    uint64_t total;                 /* bytes consumed */
    int nalgos;
    rc_digest *md[RC_MAX_ALGOS];
    rc_digest *payload_md;
    int tee_failed;
};

rc_input *rc_input_new(int fd, const char *const *algos, int nalgos, rc_error *err)
{
    if (nalgos < 0 || nalgos > RC_MAX_ALGOS) {
        rc_fail(err, RC_E_INTERNAL, "at most %d input digests", RC_MAX_ALGOS);
        return NULL;
    }
    rc_input *in = calloc(1, sizeof(*in));
    if (in == NULL || (in->buf = malloc(INPUT_BUFSIZE)) == NULL) {
        free(in);
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    in->fd = fd;
    in->tee_fd = -1;
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
    rc_digest_free(in->payload_md);
    free(in->buf);
    free(in);
}

static int fill(rc_input *in, rc_error *err)
{
    if (in->pos > 0 && in->pos == in->len)
        in->pos = in->len = 0;
    while (!in->eof && in->len < INPUT_BUFSIZE) {
        if (in->pos > 0) {
            memmove(in->buf, in->buf + in->pos, in->len - in->pos);
            in->len -= in->pos;
            in->pos = 0;
        }
        ssize_t r = read(in->fd, in->buf + in->len, INPUT_BUFSIZE - in->len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return rc_fail(err, RC_E_IO, "read failed: %s", strerror(errno));
        }
        if (r == 0)
            in->eof = 1;
        in->len += (size_t)r;
        return RC_OK;   /* one read per fill keeps pipes streaming */
    }
    return RC_OK;
}

void rc_input_consume(rc_input *in, size_t n)
{
    const uint8_t *p = in->buf + in->pos;
    for (int i = 0; i < in->nalgos; i++)
        rc_digest_update(in->md[i], p, n);
    if (in->payload_md)
        rc_digest_update(in->payload_md, p, n);
    if (in->tee_fd >= 0 && !in->tee_failed) {
        /* the reader of the tee may stop early (it saw enough): not our error */
        if (rc_write_all(in->tee_fd, p, n, NULL) != RC_OK)
            in->tee_failed = 1;
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
    *p = in->buf + in->pos;
    *n = in->len - in->pos;
    return RC_OK;
}

int rc_input_read(rc_input *in, uint8_t *dst, size_t n, const char *what, rc_error *err)
{
    while (n > 0) {
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

int rc_input_begin_payload_digest(rc_input *in, const char *name, rc_error *err)
{
    rc_digest_free(in->payload_md);
    in->payload_md = rc_digest_new(name, err);
    return in->payload_md ? RC_OK : err->code;
}

void rc_input_set_tee(rc_input *in, int fd)
{
    in->tee_fd = fd;
}

int rc_input_expect_eof(rc_input *in, const char *after, rc_error *err)
{
    uint64_t extra = 0;
    for (;;) {
        const uint8_t *p;
        size_t n;
        int rc = rc_input_peek(in, &p, &n, err);
        if (rc)
            return rc;
        if (n == 0)
            break;
        extra += n;
        rc_input_consume(in, n);
    }
    if (extra)
        return rc_fail(err, RC_E_TRAILING, "%llu bytes of trailing data after the %s",
                       (unsigned long long)extra, after);
    return RC_OK;
}

uint64_t rc_input_total(const rc_input *in)
{
    return in->total;
}

int rc_input_finish(rc_input *in, uint8_t *out, int *lens,
                    uint8_t *payload_out, int *payload_len, rc_error *err)
{
    (void)err;
    for (int i = 0; i < in->nalgos; i++)
        lens[i] = rc_digest_final(in->md[i], out + (size_t)i * RC_MAX_DIGEST);
    if (payload_len)
        *payload_len = 0;
    if (in->payload_md && payload_out && payload_len)
        *payload_len = rc_digest_final(in->payload_md, payload_out);
    return RC_OK;
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

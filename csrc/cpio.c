/* cpio archive entries over the decompressed payload: newc ("070701",
 * "070702") and rpm's stripped form ("07070X" + file index, sizes from the
 * header).  Names are bounded, numbers must be hex, and every read is of
 * an exact, checked length. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cpio.h"

#define NEWC_HDR 110
#define STRIPPED_HDR 14

int rc_ps_init(rc_pstream *ps, rc_decoder *dec, uint8_t *buf, size_t cap,
               rc_ps_next_buffer next_buffer, void *arg, rc_error *err)
{
    memset(ps, 0, sizeof(*ps));
    ps->dec = dec;
    ps->cap = cap;
    ps->next_buffer = next_buffer;
    ps->arg = arg;
    ps->buf = buf;
    /* with a pool, next_buffer supplies the buffers: allocate nothing */
    if (buf == NULL && next_buffer == NULL && (ps->buf = malloc(cap)) == NULL)
        return rc_fail(err, RC_E_NOMEM, "out of memory");
    return RC_OK;
}

void rc_ps_free(rc_pstream *ps)
{
    if (ps->next_buffer == NULL)
        free(ps->buf);
    ps->buf = NULL;
}

/* make at least one byte available unless the payload has ended */
static int ps_fill(rc_pstream *ps, rc_error *err)
{
    if (ps->pos < ps->len || ps->eof)
        return RC_OK;
    if (ps->next_buffer) {
        int rc = ps->next_buffer(ps, ps->arg, err);
        if (rc)
            return rc;
    }
    ps->pos = ps->len = 0;
    long r = rc_decoder_read(ps->dec, ps->buf, ps->cap, err);
    if (r < 0)
        return (int)r;
    if (r == 0)
        ps->eof = 1;
    ps->len = (size_t)r;
    return RC_OK;
}

int rc_ps_chunk(rc_pstream *ps, const uint8_t **p, size_t *n, uint64_t max, rc_error *err)
{
    int rc = ps_fill(ps, err);
    if (rc)
        return rc;
    size_t avail = ps->len - ps->pos;
    if ((uint64_t)avail > max)
        avail = (size_t)max;
    *p = ps->buf + ps->pos;
    *n = avail;
    return RC_OK;
}

void rc_ps_consume(rc_pstream *ps, size_t n)
{
    ps->pos += n;
    ps->offset += n;
}

int rc_ps_read(rc_pstream *ps, uint8_t *dst, size_t n, const char *what, rc_error *err)
{
    while (n > 0) {
        const uint8_t *p;
        size_t k;
        int rc = rc_ps_chunk(ps, &p, &k, n, err);
        if (rc)
            return rc;
        if (k == 0)
            return rc_fail(err, RC_E_TRUNCATED,
                           "truncated payload: archive ends inside %s", what);
        if (dst) {
            memcpy(dst, p, k);
            dst += k;
        }
        rc_ps_consume(ps, k);
        n -= k;
    }
    return RC_OK;
}

int rc_ps_skip(rc_pstream *ps, uint64_t n, const char *what, rc_error *err)
{
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : (size_t)n;
        int rc = rc_ps_read(ps, NULL, k, what, err);
        if (rc)
            return rc;
        n -= k;
    }
    return RC_OK;
}

int rc_ps_align(rc_pstream *ps, rc_error *err)
{
    size_t pad = (size_t)((4 - (ps->offset & 3)) & 3);
    return rc_ps_read(ps, NULL, pad, "padding", err);
}

static int hex_field(const uint8_t *p, int len, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < len; i++) {
        uint8_t c = p[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int rc_cpio_next(rc_pstream *ps, rc_cpio_entry *e, rc_error *err)
{
    uint8_t h[NEWC_HDR];
    memset(e, 0, sizeof(*e));
    int rc = rc_ps_align(ps, err);
    if (rc == RC_OK)
        rc = rc_ps_read(ps, h, 6, "a cpio header", err);
    if (rc)
        return rc;
    if (memcmp(h, "07070X", 6) == 0) {
        uint64_t fx;
        rc = rc_ps_read(ps, h + 6, STRIPPED_HDR - 6, "a cpio header", err);
        if (rc)
            return rc;
        if (hex_field(h + 6, 8, &fx))
            return rc_fail(err, RC_E_FORMAT, "corrupt cpio header at payload offset %llu",
                           (unsigned long long)(ps->offset - STRIPPED_HDR));
        e->stripped = 1;
        e->fx = (uint32_t)fx;
        e->trailer = (fx == 0xffffffffu);
        return rc_ps_align(ps, err);
    }
    if (memcmp(h, "070701", 6) != 0 && memcmp(h, "070702", 6) != 0)
        return rc_fail(err, RC_E_FORMAT, "bad cpio magic at payload offset %llu",
                       (unsigned long long)(ps->offset - 6));
    rc = rc_ps_read(ps, h + 6, NEWC_HDR - 6, "a cpio header", err);
    if (rc)
        return rc;
    uint64_t f[13];
    for (int i = 0; i < 13; i++) {
        if (hex_field(h + 6 + 8 * i, 8, &f[i]))
            return rc_fail(err, RC_E_FORMAT, "corrupt cpio header at payload offset %llu",
                           (unsigned long long)(ps->offset - NEWC_HDR));
    }
    e->mode = (uint32_t)f[1];
    e->nlink = (uint32_t)f[4];
    e->size = f[6];
    uint64_t namesize = f[11];
    if (namesize < 2 || namesize > RC_CPIO_NAME_MAX + 1)
        return rc_fail(err, RC_E_FORMAT, "bad cpio name size %llu", (unsigned long long)namesize);
    rc = rc_ps_read(ps, (uint8_t *)e->name, (size_t)namesize, "a cpio file name", err);
    if (rc)
        return rc;
    if (e->name[namesize - 1] != '\0' || strlen(e->name) != namesize - 1)
        return rc_fail(err, RC_E_FORMAT, "corrupt cpio file name");
    e->namelen = (size_t)namesize - 1;
    e->trailer = (strcmp(e->name, "TRAILER!!!") == 0);
    return rc_ps_align(ps, err);
}

const char *rc_cpio_path(const rc_cpio_entry *e)
{
    const char *n = e->name;
    if (n[0] == '.' && n[1] == '/')
        n += 2;
    while (n[0] == '/')
        n++;
    return n;
}

static int cmp_name(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

long rc_cpio_lookup(const rc_filetab *ft, const char *path)
{
    const char *const *hit = bsearch(path, ft->names, ft->count, sizeof(ft->names[0]), cmp_name);
    if (hit == NULL)
        return -1;
    return (long)ft->name_fx[hit - ft->names];
}

/* Framing of the package prologue: the 96-byte lead, the signature header
 * (padded to 8 bytes) and the main header.  Only sizes and magics are read
 * here; the tags themselves are interpreted by librpm on the Python side.
 * A header that claims a huge size costs only the bytes actually present:
 * the buffer grows as data arrives. */
#include <stdlib.h>
#include <string.h>

#include "rpmcow.h"

static const uint8_t LEAD_MAGIC[4] = {0xed, 0xab, 0xee, 0xdb};
static const uint8_t HDR_MAGIC[4] = {0x8e, 0xad, 0xe8, 0x01};
#define RPMSIGTYPE_HEADERSIG 5
#define HDR_INTRO 16
#define MAX_INDEX_ENTRIES 0x00ffffffu   /* rpm's hdrchkTags limit */
#define MAX_DATA_LEN      0x3fffffffu   /* rpm's hdrchkData limit */

struct growbuf {
    uint8_t *p;
    size_t len, cap;
};

static int gb_reserve(struct growbuf *b, size_t extra, rc_error *err)
{
    if (b->len + extra <= b->cap)
        return RC_OK;
    size_t cap = b->cap ? b->cap : 64 << 10;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL)
        return rc_fail(err, RC_E_NOMEM, "out of memory reading the package header");
    b->p = p;
    b->cap = cap;
    return RC_OK;
}

/* append exactly n bytes from the input, growing in steps of at most 1 MiB */
static int gb_read(struct growbuf *b, rc_input *in, size_t n, const char *what, rc_error *err)
{
    while (n > 0) {
        size_t k = n < (1u << 20) ? n : (1u << 20);
        int rc = gb_reserve(b, k, err);
        if (rc == RC_OK)
            rc = rc_input_read(in, b->p + b->len, k, what, err);
        if (rc)
            return rc;
        b->len += k;
        n -= k;
    }
    return RC_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* the 16-byte intro of a header at the end of b: its whole size, checked */
static int read_intro(struct growbuf *b, rc_input *in, const char *what,
                      uint64_t limit, size_t *len, rc_error *err)
{
    size_t start = b->len;
    int rc = gb_read(b, in, HDR_INTRO, what, err);
    if (rc)
        return rc;
    const uint8_t *intro = b->p + start;
    if (memcmp(intro, HDR_MAGIC, 4) != 0)
        return rc_fail(err, RC_E_FORMAT, "bad %s: no header magic at byte %zu", what, start);
    uint32_t il = be32(intro + 8), dl = be32(intro + 12);
    if (il == 0 || il > MAX_INDEX_ENTRIES)
        return rc_fail(err, RC_E_FORMAT, "bad %s: %u index entries", what, il);
    if (dl > MAX_DATA_LEN)
        return rc_fail(err, RC_E_FORMAT, "bad %s: %u bytes of data", what, dl);
    uint64_t size = HDR_INTRO + (uint64_t)il * 16 + dl;
    if (size > limit)
        return rc_fail(err, RC_E_FORMAT, "bad %s: %llu bytes exceeds the %llu byte limit",
                       what, (unsigned long long)size, (unsigned long long)limit);
    *len = (size_t)size;
    return RC_OK;
}

int rc_prologue_frame(rc_input *in, rc_prologue *pro, rc_error *err)
{
    struct growbuf b = {0};
    memset(pro, 0, sizeof(*pro));

    int rc = gb_read(&b, in, RC_LEAD_SIZE, "lead", err);
    if (rc)
        goto fail;
    if (memcmp(b.p, LEAD_MAGIC, 4) != 0) {
        rc = rc_fail(err, RC_E_FORMAT, "not an rpm package (bad lead magic)");
        goto fail;
    }
    if (b.p[4] < 3 || b.p[4] > 4) {
        rc = rc_fail(err, RC_E_FORMAT, "unsupported rpm package version %u", b.p[4]);
        goto fail;
    }
    unsigned sigtype = ((unsigned)b.p[78] << 8) | b.p[79];
    if (sigtype != RPMSIGTYPE_HEADERSIG) {
        rc = rc_fail(err, RC_E_FORMAT, "unsupported signature type %u in the lead", sigtype);
        goto fail;
    }

    pro->sig_off = b.len;
    rc = read_intro(&b, in, "signature header", RC_SIGHDR_MAX, &pro->sig_len, err);
    if (rc == RC_OK)
        rc = gb_read(&b, in, pro->sig_len - HDR_INTRO, "signature header", err);
    if (rc)
        goto fail;
    size_t pad = (8 - (pro->sig_len % 8)) % 8;
    if (pad) {
        rc = gb_read(&b, in, pad, "signature header padding", err);
        if (rc)
            goto fail;
    }
    pro->hdr_off = b.len;
    rc = read_intro(&b, in, "main header", RC_HDR_MAX, &pro->hdr_len, err);
    if (rc)
        goto fail;
    pro->data = b.p;
    pro->len = pro->hdr_off + pro->hdr_len;
    return RC_OK;
fail:
    free(b.p);
    memset(pro, 0, sizeof(*pro));
    return rc;
}

int rc_prologue_fill(rc_input *in, const rc_prologue *pro, uint8_t *dst, rc_error *err)
{
    size_t framed = pro->hdr_off + HDR_INTRO;
    memcpy(dst, pro->data, framed);
    return rc_input_read(in, dst + framed, pro->len - framed, "main header", err);
}

int rc_read_prologue(rc_input *in, rc_prologue *pro, rc_error *err)
{
    int rc = rc_prologue_frame(in, pro, err);
    if (rc)
        return rc;
    /* the rest of the main header, into a buffer that grows as it arrives
     * (a header claiming a huge size costs only the bytes present) */
    struct growbuf b = {pro->data, pro->hdr_off + HDR_INTRO, pro->hdr_off + HDR_INTRO};
    size_t len = pro->len;
    pro->data = NULL;
    rc = gb_read(&b, in, len - b.len, "main header", err);
    if (rc) {
        free(b.p);
        rc_prologue_free(pro);
        return rc;
    }
    pro->data = b.p;
    return RC_OK;
}

void rc_prologue_free(rc_prologue *pro)
{
    free(pro->data);
    memset(pro, 0, sizeof(*pro));
}

/* The extents layout: walk the cpio archive and write each distinct file
 * content once, page-aligned, after checking it against its header digest.
 * Later files with the same digest share the first one's blob (dedupe);
 * empty files get the aligned offset where the next blob would start. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cpio.h"

#define PAYLOAD_BUFSIZE (1u << 20)

static const uint8_t ZEROS[65536];

struct layout {
    const rc_filetab *ft;
    int out_fd;
    uint64_t out_pos;
    uint32_t page_size;
    rc_pstream ps;
    rc_digest *fmd;
    uint8_t *seen;
    uint64_t *group_offsets;
    rc_layout_result *res;
};

static const char *file_name(const rc_filetab *ft, uint32_t fx)
{
    for (uint32_t i = 0; i < ft->count; i++)
        if (ft->name_fx[i] == fx)
            return ft->names[i];
    return "?";
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

static int pad_to_page(struct layout *L, rc_error *err)
{
    uint64_t rem = L->out_pos % L->page_size;
    if (rem == 0)
        return RC_OK;
    uint64_t pad = L->page_size - rem;
    while (pad > 0) {
        size_t k = pad > sizeof(ZEROS) ? sizeof(ZEROS) : (size_t)pad;
        int rc = rc_write_all(L->out_fd, ZEROS, k, err);
        if (rc)
            return rc;
        pad -= k;
        L->out_pos += k;
    }
    return RC_OK;
}

/* Hash (and if `write`, copy out) `size` bytes of content of file fx. */
static int take_content(struct layout *L, uint32_t fx, uint64_t size, int write, rc_error *err)
{
    const rc_filetab *ft = L->ft;
    rc_digest_reset(L->fmd);
    uint64_t left = size;
    while (left > 0) {
        const uint8_t *p;
        size_t n;
        int rc = rc_ps_chunk(&L->ps, &p, &n, left, err);
        if (rc)
            return rc;
        if (n == 0)
            return rc_fail(err, RC_E_TRUNCATED,
                           "truncated payload: archive ends inside the content of %s",
                           file_name(ft, fx));
        rc_digest_update(L->fmd, p, n);
        if (write && (rc = rc_write_all(L->out_fd, p, n, err)) != RC_OK)
            return rc;
        rc_ps_consume(&L->ps, n);
        left -= n;
    }
    uint8_t got[RC_MAX_DIGEST];
    int len = rc_digest_final(L->fmd, got);
    if ((uint32_t)len != ft->keysize ||
        memcmp(got, ft->digests + (size_t)fx * ft->keysize, ft->keysize) != 0)
        return rc_fail(err, RC_E_DIGEST, "file /%s: content does not match its header digest",
                       file_name(ft, fx));
    if (write) {
        L->out_pos += size;
        L->res->blob_bytes += size;
    }
    return RC_OK;
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
    int is_reg = e->stripped ? (flags & RC_FT_REG) : S_ISREG(e->mode);
    if (is_reg && !(flags & RC_FT_REG))
        return rc_fail(err, RC_E_FORMAT, "archive entry /%s is a regular file, the header "
                       "says it is not", file_name(ft, fx));
    if (!is_reg || !(flags & RC_FT_KEYED) || (size == 0 && ft->sizes[fx] > 0))
        /* not content we keep: directory, symlink target, device, a file
         * without a digest, or a hardlink member whose content comes later */
        return rc_ps_skip(&L->ps, size, "file content", err);
    if (size != ft->sizes[fx])
        return rc_fail(err, RC_E_FORMAT, "archive entry /%s has %llu bytes, the header says %llu",
                       file_name(ft, fx), (unsigned long long)size,
                       (unsigned long long)ft->sizes[fx]);

    int32_t g = ft->groups[fx];
    int write = (L->group_offsets[g] == UINT64_MAX);
    if (write) {
        int rc = pad_to_page(L, err);
        if (rc)
            return rc;
        L->group_offsets[g] = L->out_pos;
        L->res->blobs++;
    } else {
        L->res->dup_files++;
    }
    return take_content(L, fx, size, write, err);
}

/* after the trailer only zero padding may follow, up to the end of input */
static int drain(struct layout *L, rc_error *err)
{
    for (;;) {
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

int rc_layout_payload(rc_input *in, int compressor, const rc_filetab *ft,
                      int out_fd, uint64_t out_pos, uint32_t page_size,
                      uint64_t *group_offsets, rc_layout_result *res,
                      rc_error *err)
{
    struct layout L;
    memset(&L, 0, sizeof(L));
    memset(res, 0, sizeof(*res));
    if (page_size < 512 || page_size > sizeof(ZEROS) || (page_size & (page_size - 1)))
        return rc_fail(err, RC_E_INTERNAL, "bad page size %u", page_size);
    int rc = check_filetab(ft, err);
    if (rc)
        return rc;
    L.ft = ft;
    L.out_fd = out_fd;
    L.out_pos = out_pos;
    L.page_size = page_size;
    L.group_offsets = group_offsets;
    L.res = res;
    for (uint32_t g = 0; g < ft->ngroups; g++)
        group_offsets[g] = UINT64_MAX;

    rc_decoder *dec = rc_decoder_new(compressor, in, err);
    if (dec == NULL)
        return err->code;
    L.seen = calloc(ft->count ? ft->count : 1, 1);
    if (L.seen == NULL) {
        rc = rc_fail(err, RC_E_NOMEM, "out of memory");
        goto out;
    }
    if (ft->keysize && (L.fmd = rc_digest_new(ft->digest_name, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    if ((rc = rc_ps_init(&L.ps, dec, PAYLOAD_BUFSIZE, err)) != RC_OK)
        goto out;

    rc_cpio_entry *e = malloc(sizeof(*e));
    if (e == NULL) {
        rc = rc_fail(err, RC_E_NOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        rc = rc_cpio_next(&L.ps, e, err);
        if (rc || e->trailer)
            break;
        res->entries++;
        rc = take_entry(&L, e, err);
        if (rc)
            break;
    }
    free(e);
    if (rc == RC_OK)
        rc = drain(&L, err);
    if (rc == RC_OK) {
        for (uint32_t i = 0; i < ft->count; i++) {
            if ((ft->flags[i] & RC_FT_REG) && !L.seen[i]) {
                rc = rc_fail(err, RC_E_FORMAT, "payload lacks /%s, which the header lists",
                             file_name(ft, i));
                break;
            }
        }
    }
    res->out_pos = L.out_pos;
    res->payload_bytes = L.ps.offset;
out:
    rc_ps_free(&L.ps);
    rc_digest_free(L.fmd);
    free(L.seen);
    rc_decoder_free(dec);
    return rc;
}

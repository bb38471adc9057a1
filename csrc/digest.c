/* Digest contexts: a thin wrapper over OpenSSL's EVP (SHA-NI/AVX2 where the
 * CPU has them), so the rest of the core never touches OpenSSL directly. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "rpmcow.h"

struct rc_digest {
    EVP_MD_CTX *ctx;
    const EVP_MD *md;
};

rc_digest *rc_digest_new(const char *name, rc_error *err)
{
    const EVP_MD *md = EVP_get_digestbyname(name);
    if (md == NULL) {
        rc_fail(err, RC_E_INTERNAL, "unknown digest algorithm %s", name);
        return NULL;
    }
    rc_digest *d = calloc(1, sizeof(*d));
    if (d == NULL || (d->ctx = EVP_MD_CTX_new()) == NULL) {
        free(d);
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    d->md = md;
    if (!EVP_DigestInit_ex(d->ctx, md, NULL)) {
        rc_digest_free(d);
        rc_fail(err, RC_E_INTERNAL, "cannot initialise digest %s", name);
        return NULL;
    }
    return d;
}

int rc_digest_update(rc_digest *d, const void *p, size_t n)
{
    if (n && !EVP_DigestUpdate(d->ctx, p, n))
        return RC_E_NOMEM;
    return RC_OK;
}

int rc_digest_final(rc_digest *d, uint8_t *out)
{
    unsigned int len = 0;
    EVP_DigestFinal_ex(d->ctx, out, &len);
    return (int)len;
}

int rc_digest_size(const rc_digest *d)
{
    return EVP_MD_get_size(d->md);
}

int rc_digest_reset(rc_digest *d)
{
    return EVP_DigestInit_ex(d->ctx, d->md, NULL) ? RC_OK : RC_E_INTERNAL;
}

void rc_digest_free(rc_digest *d)
{
    if (d) {
        EVP_MD_CTX_free(d->ctx);
        free(d);
    }
}

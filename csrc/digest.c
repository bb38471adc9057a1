/* Digest contexts.  SHA-256 and MD5 run on our own block functions where
 * the CPU has the x86 SHA extensions (blockhash.c): faster than OpenSSL's for
 * one stream, and able to hash several streams over the same bytes at once
 * (rc_digest_update_together).  Every other algorithm, every other CPU, and
 * RPMCOW_DIGESTS=openssl in the environment use OpenSSL's EVP.  The rest of
 * the core never touches OpenSSL or the block functions directly. */
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <stdlib.h>
#include <string.h>

#include "rpmcow.h"

enum backend { BK_EVP, BK_MD5, BK_SHA256 };

struct rc_digest {
    enum backend kind;
    const EVP_MD *md;
    EVP_MD_CTX *ctx;                /* BK_EVP */
    uint32_t h[8];                  /* BK_MD5 (4 words), BK_SHA256 */
    uint8_t buf[64];                /* bytes of an incomplete block */
    size_t nbuf;
    uint64_t len;                   /* bytes hashed so far */
};

static const uint32_t SHA256_IV[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};
static const uint32_t MD5_IV[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};

static int native_ok = -1;          /* unknown; then 0 or 1, same for every thread */

static int use_native(void)
{
    int ok = __atomic_load_n(&native_ok, __ATOMIC_RELAXED);
    if (ok < 0) {
        const char *env = getenv("RPMCOW_DIGESTS");
        ok = rc_blockhash_available() && !(env && strcmp(env, "openssl") == 0);
        __atomic_store_n(&native_ok, ok, __ATOMIC_RELAXED);
    }
    return ok;
}

int rc_digest_interleaves(const rc_digest *d)
{
    return d->kind != BK_EVP;
}

const char *rc_digest_backend(void)
{
    return use_native() ? "sha-ni" : "openssl";
}

rc_digest *rc_digest_new(const char *name, rc_error *err)
{
    const EVP_MD *md = EVP_get_digestbyname(name);
    if (md == NULL) {
        rc_fail(err, RC_E_INTERNAL, "unknown digest algorithm %s", name);
        return NULL;
    }
    rc_digest *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    d->md = md;
    int type = EVP_MD_type(md);      /* OpenSSL 1.1 and 3 (there an alias of EVP_MD_get_type) */
    if (use_native() && type == NID_sha256)
        d->kind = BK_SHA256;
    else if (use_native() && type == NID_md5)
        d->kind = BK_MD5;
    else if ((d->ctx = EVP_MD_CTX_new()) == NULL) {
        free(d);
        rc_fail(err, RC_E_NOMEM, "out of memory");
        return NULL;
    }
    if (rc_digest_reset(d) != RC_OK) {
        rc_digest_free(d);
        rc_fail(err, RC_E_INTERNAL, "cannot initialise digest %s", name);
        return NULL;
    }
    return d;
}

static void blocks(rc_digest *d, const uint8_t *p, size_t n)
{
    uint32_t *h = d->h;
    if (d->kind == BK_MD5)
        rc_blockhash(d->h, p, 0, NULL, NULL, n);
    else
        rc_blockhash(NULL, NULL, 1, &h, &p, n);
}

static void native_update(rc_digest *d, const uint8_t *p, size_t n)
{
    d->len += n;
    if (d->nbuf) {
        size_t k = 64 - d->nbuf < n ? 64 - d->nbuf : n;
        memcpy(d->buf + d->nbuf, p, k);
        d->nbuf += k;
        p += k;
        n -= k;
        if (d->nbuf < 64)
            return;
        blocks(d, d->buf, 1);
        d->nbuf = 0;
    }
    if (n >= 64) {
        blocks(d, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
    }
    memcpy(d->buf, p, n);
    d->nbuf = n;
}

int rc_digest_update(rc_digest *d, const void *p, size_t n)
{
    if (d->kind != BK_EVP) {
        if (n)
            native_update(d, p, n);
        return RC_OK;
    }
    if (n && !EVP_DigestUpdate(d->ctx, p, n))
        return RC_E_NOMEM;
    return RC_OK;
}

#define TOGETHER_MAX (RC_MAX_ALGOS + RC_MAX_RANGES + 4)   /* input digests + file lanes */

void rc_digest_update_together(rc_digest *const *ds, const uint8_t *const *ps,
                               const size_t *ns, int k)
{
    const uint8_t *p[TOGETHER_MAX];
    size_t n[TOGETHER_MAX];
    for (int i = 0; i < k; i++) {
        if (i >= TOGETHER_MAX || ds[i]->kind == BK_EVP) {
            rc_digest_update(ds[i], ps[i], ns[i]);
            if (i < TOGETHER_MAX)
                n[i] = 0;
            continue;
        }
        p[i] = ps[i];
        n[i] = ns[i];
        if (ds[i]->nbuf && n[i]) {          /* complete the buffered block first */
            size_t head = 64 - ds[i]->nbuf < n[i] ? 64 - ds[i]->nbuf : n[i];
            native_update(ds[i], p[i], head);
            p[i] += head;
            n[i] -= head;
        }
    }
    if (k > TOGETHER_MAX)
        k = TOGETHER_MAX;
    /* whole blocks: one MD5 and up to RC_BLOCKHASH_MAX_SHA SHA-256 streams at
     * a time (each with nothing buffered: its head above emptied the buffer) */
    for (;;) {
        int m = -1, sha[RC_BLOCKHASH_MAX_SHA], nsha = 0;
        size_t nb = SIZE_MAX;
        for (int i = 0; i < k; i++) {
            if (n[i] < 64)
                continue;
            if (ds[i]->kind == BK_MD5 && m < 0)
                m = i;
            else if (ds[i]->kind == BK_SHA256 && nsha < RC_BLOCKHASH_MAX_SHA)
                sha[nsha++] = i;
            else
                continue;
            if (n[i] / 64 < nb)
                nb = n[i] / 64;
        }
        if (m < 0 && nsha == 0)
            break;
        uint32_t *h[RC_BLOCKHASH_MAX_SHA];
        const uint8_t *ph[RC_BLOCKHASH_MAX_SHA];
        for (int j = 0; j < nsha; j++) {
            h[j] = ds[sha[j]]->h;
            ph[j] = p[sha[j]];
        }
        rc_blockhash(m >= 0 ? ds[m]->h : NULL, m >= 0 ? p[m] : NULL, nsha, h, ph, nb);
        for (int j = -1; j < nsha; j++) {
            int i = j < 0 ? m : sha[j];
            if (i >= 0) {
                ds[i]->len += nb * 64;
                p[i] += nb * 64;
                n[i] -= nb * 64;
            }
        }
    }
    for (int i = 0; i < k; i++)
        if (n[i])
            native_update(ds[i], p[i], n[i]);     /* less than a block */
}

int rc_digest_final(rc_digest *d, uint8_t *out)
{
    if (d->kind == BK_EVP) {
        unsigned int len = 0;
        EVP_DigestFinal_ex(d->ctx, out, &len);
        return (int)len;
    }
    /* 0x80, zeros up to 56 mod 64, then the length in bits */
    uint64_t bits = d->len * 8;
    uint8_t pad[72] = {0x80};
    size_t npad = d->nbuf < 56 ? 56 - d->nbuf : 120 - d->nbuf;
    for (int i = 0; i < 8; i++)
        pad[npad + i] = (uint8_t)(d->kind == BK_MD5 ? bits >> (8 * i) : bits >> (56 - 8 * i));
    native_update(d, pad, npad + 8);
    if (d->kind == BK_MD5) {
        for (int i = 0; i < 16; i++)
            out[i] = (uint8_t)(d->h[i / 4] >> (8 * (i % 4)));
        return 16;
    }
    for (int i = 0; i < 32; i++)
        out[i] = (uint8_t)(d->h[i / 4] >> (24 - 8 * (i % 4)));
    return 32;
}

int rc_digest_reset(rc_digest *d)
{
    d->nbuf = 0;
    d->len = 0;
    if (d->kind == BK_MD5)
        memcpy(d->h, MD5_IV, sizeof(MD5_IV));
    else if (d->kind == BK_SHA256)
        memcpy(d->h, SHA256_IV, sizeof(SHA256_IV));
    else if (!EVP_DigestInit_ex(d->ctx, d->md, NULL))
        return RC_E_INTERNAL;
    return RC_OK;
}

void rc_digest_free(rc_digest *d)
{
    if (d) {
        EVP_MD_CTX_free(d->ctx);
        free(d);
    }
}

int rc_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t n,
                   uint8_t *out)
{
    unsigned int len = 0;
    if (keylen > INT_MAX || HMAC(EVP_sha256(), key, (int)keylen, msg, n, out, &len) == NULL ||
        len != 32)
        return RC_E_INTERNAL;
    return RC_OK;
}

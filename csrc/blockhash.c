/* Block functions for the two digests the data path computes most: SHA-256
 * with the x86 SHA extensions, and MD5; and both "stitched" over one byte
 * stream.
 *
 * Why: verifying a package hashes the same compressed bytes three times
 * (the C section's SHA-256 of the whole input, the payload's SHA-256, the
 * legacy MD5 of header + payload).  Each is a serial dependency chain, and
 * one chain leaves most of a core idle: MD5 waits on the integer ALUs' latency,
 * SHA-256 on the SHA unit's.  Interleaving them round group by round group
 * lets one core run all three in about the time MD5 alone takes (measured on
 * this project's bench machine: 0.14 s instead of 0.32 s for 104 MiB with
 * OpenSSL, one after another).
 *
 * These functions only transform chaining state with whole 64-byte blocks;
 * buffering, padding and output belong to digest.c.  Only x86-64 with the SHA
 * extensions gets them (rc_blockhash_available); everywhere else digest.c
 * uses OpenSSL for everything. */
#include <stdint.h>
#include <string.h>

#include "rpmcow.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <cpuid.h>
#include <immintrin.h>

int rc_blockhash_available(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    int sha = (b >> 29) & 1;
    return ssse3 && sse41 && sha;
}

/* ---- SHA-256 (FIPS 180-4) on the SHA extensions ------------------------ */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))
#define INLINE_SHA static inline __attribute__((always_inline, target("sha,sse4.1,ssse3")))

/* One SHA-256 stream: the state as the instructions want it (ABEF, CDGH),
 * the state at the block's start, and the last 16 message words. */
struct sha_lane {
    __m128i abef, cdgh, abef0, cdgh0, w[4];
};

INLINE_SHA void sha_lane_load(struct sha_lane *L, const uint32_t h[8])
{
    __m128i dcba = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&h[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    L->abef = _mm_alignr_epi8(cdab, efgh, 8);
    L->cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

INLINE_SHA void sha_lane_store(const struct sha_lane *L, uint32_t h[8])
{
    __m128i feba = _mm_shuffle_epi32(L->abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(L->cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(dchg, feba, 8));
}

INLINE_SHA void sha_lane_begin(struct sha_lane *L, const uint8_t *p)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    L->abef0 = L->abef;
    L->cdgh0 = L->cdgh;
    for (int i = 0; i < 4; i++)
        L->w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
}

/* Rounds 4g .. 4g+3.  From g = 4 on, the schedule's next four words
 * W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16] replace the oldest. */
INLINE_SHA void sha_lane_group(struct sha_lane *L, int g)
{
    __m128i w;
    if (g < 4) {
        w = L->w[g];
    } else {
        __m128i t = _mm_sha256msg1_epu32(L->w[g & 3], L->w[(g + 1) & 3]);
        t = _mm_add_epi32(t, _mm_alignr_epi8(L->w[(g + 3) & 3], L->w[(g + 2) & 3], 4));
        w = _mm_sha256msg2_epu32(t, L->w[(g + 3) & 3]);
        L->w[g & 3] = w;
    }
    __m128i wk = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&K256[4 * g]));
    L->cdgh = _mm_sha256rnds2_epu32(L->cdgh, L->abef, wk);
    L->abef = _mm_sha256rnds2_epu32(L->abef, L->cdgh, _mm_shuffle_epi32(wk, 0x0E));
}

INLINE_SHA void sha_lane_end(struct sha_lane *L)
{
    L->abef = _mm_add_epi32(L->abef, L->abef0);
    L->cdgh = _mm_add_epi32(L->cdgh, L->cdgh0);
}

/* ---- MD5 (RFC 1321) ----------------------------------------------------- */

static const uint32_t KMD5[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static const uint8_t RMD5[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

struct md5_lane {
    uint32_t a, b, c, d, a0, b0, c0, d0;
    uint32_t m[16];
};

#define ROTL32(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static inline __attribute__((always_inline)) void md5_lane_begin(struct md5_lane *M,
                                                                 const uint8_t *p)
{
    memcpy(M->m, p, 64);            /* x86 is little-endian, as MD5 is */
    M->a0 = M->a;
    M->b0 = M->b;
    M->c0 = M->c;
    M->d0 = M->d;
}

/* step i of 64 (i a constant once inlined and unrolled) */
static inline __attribute__((always_inline)) void md5_lane_step(struct md5_lane *M, int i)
{
    uint32_t f;
    int g;
    switch (i >> 4) {
    case 0:
        f = M->d ^ (M->b & (M->c ^ M->d));
        g = i;
        break;
    case 1:
        f = M->c ^ (M->d & (M->b ^ M->c));
        g = (5 * i + 1) & 15;
        break;
    case 2:
        f = M->b ^ M->c ^ M->d;
        g = (3 * i + 5) & 15;
        break;
    default:
        f = M->c ^ (M->b | ~M->d);
        g = (7 * i) & 15;
        break;
    }
    uint32_t x = M->a + f + KMD5[i] + M->m[g];
    M->a = M->d;
    M->d = M->c;
    M->c = M->b;
    M->b = M->b + ROTL32(x, RMD5[i >> 4][i & 3]);
}

static inline __attribute__((always_inline)) void md5_lane_end(struct md5_lane *M)
{
    M->a += M->a0;
    M->b += M->b0;
    M->c += M->c0;
    M->d += M->d0;
}

/* ---- the kernels ---------------------------------------------------------
 * One body, specialised by the constant arguments: MD5 or not, 0-4 SHA-256
 * lanes (named, not an array: the lanes stay in registers).  Round group g
 * of each SHA lane is interleaved with MD5 steps 4g .. 4g+3, so the core
 * has independent work for every unit. */
#define LANES(X) X(A, 0) X(B, 1) X(C, 2) X(D, 3)

INLINE_SHA void kernel(int with_md5, int nsha, uint32_t md5[4], const uint8_t *pm,
                       uint32_t *const *h, const uint8_t *const *pp, size_t nblocks)
{
    struct md5_lane M = {0};
    struct sha_lane A, B, C, D;
    const uint8_t *p[4] = {NULL, NULL, NULL, NULL};
    if (with_md5) {
        M.a = md5[0];
        M.b = md5[1];
        M.c = md5[2];
        M.d = md5[3];
    }
#define LOAD(L, i) if (nsha > i) { sha_lane_load(&L, h[i]); p[i] = pp[i]; }
    LANES(LOAD)
    for (; nblocks > 0; nblocks--) {
        if (with_md5)
            md5_lane_begin(&M, pm);
#define BEGIN(L, i) if (nsha > i) sha_lane_begin(&L, p[i]);
        LANES(BEGIN)
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
#define GROUP(L, i) if (nsha > i) sha_lane_group(&L, g);
            LANES(GROUP)
            if (with_md5) {
                md5_lane_step(&M, 4 * g);
                md5_lane_step(&M, 4 * g + 1);
                md5_lane_step(&M, 4 * g + 2);
                md5_lane_step(&M, 4 * g + 3);
            }
        }
        if (with_md5) {
            md5_lane_end(&M);
            pm += 64;
        }
#define END(L, i) if (nsha > i) { sha_lane_end(&L); p[i] += 64; }
        LANES(END)
    }
    if (with_md5) {
        md5[0] = M.a;
        md5[1] = M.b;
        md5[2] = M.c;
        md5[3] = M.d;
    }
#define STORE(L, i) if (nsha > i) sha_lane_store(&L, h[i]);
    LANES(STORE)
}

typedef void (*kernel_fn)(uint32_t *, const uint8_t *, uint32_t *const *,
                          const uint8_t *const *, size_t);

#define KERNEL(md, n)                                                              \
    SHA_TARGET static void k_##md##_##n(uint32_t *m, const uint8_t *pm,             \
                                        uint32_t *const *h, const uint8_t *const *p, \
                                        size_t nb)                                 \
    {                                                                              \
        kernel(md, n, m, pm, h, p, nb);                                            \
    }
KERNEL(0, 1) KERNEL(0, 2) KERNEL(0, 3) KERNEL(0, 4)
KERNEL(1, 0) KERNEL(1, 1) KERNEL(1, 2) KERNEL(1, 3) KERNEL(1, 4)

static const kernel_fn KERNELS[2][RC_BLOCKHASH_MAX_SHA + 1] = {
    {NULL, k_0_1, k_0_2, k_0_3, k_0_4},
    {k_1_0, k_1_1, k_1_2, k_1_3, k_1_4},
};

void rc_blockhash(uint32_t *md5, const uint8_t *pm, int nsha, uint32_t *const *h,
                  const uint8_t *const *p, size_t nblocks)
{
    if (nsha < 0 || nsha > RC_BLOCKHASH_MAX_SHA || (!md5 && nsha == 0) || nblocks == 0)
        return;
    KERNELS[md5 != NULL][nsha](md5, pm, h, p, nblocks);
}

#else  /* not x86-64: OpenSSL does all the hashing */

int rc_blockhash_available(void)
{
    return 0;
}

void rc_blockhash(uint32_t *md5, const uint8_t *pm, int nsha, uint32_t *const *h,
                  const uint8_t *const *p, size_t nblocks)
{
    (void)md5, (void)pm, (void)nsha, (void)h, (void)p, (void)nblocks;
}

#endif

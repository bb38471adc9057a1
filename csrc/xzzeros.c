/* LZMA2 chunks that decode to zeros, for the xz feed (feed.c).
 *
 * The feed gives rpm zeros for the whole blocks of every regular file (the
 * plugin clones the real blocks over them).  Sent as uncompressed LZMA2
 * chunks, every zero crosses the pipe and is copied three more times before
 * rpm writes it.  An LZMA chunk of zeros is a few hundred bytes for 2 MiB,
 * but only if liblzma decodes it quickly: it copies a match that overlaps
 * its source (distance shorter than the length) byte by byte.  So the chunk
 * says: one literal zero, 273 bytes at distance 1 (overlapping, once), then
 * matches of 273 bytes at distance 274, which liblzma copies with memcpy.
 *
 * The chunk resets the LZMA state and sets its own properties (lc = lp =
 * pb = 0), so what precedes it (uncompressed chunks, other LZMA chunks) does
 * not matter, and neither does the position in the stream: the same n
 * always gives the same bytes.  This is the LZMA range coder and the part
 * of its model these symbols use, written from the format's description
 * (the LZMA SDK's lzma-specification.txt). */
#include <stdint.h>
#include <string.h>

#include "rpmcow.h"

#define PROB_INIT 1024u          /* 1 << 10: probability one half, 11-bit */
#define MOVE_BITS 5
#define TOP (1u << 24)
#define MATCH_MAX 273u
#define FAR (MATCH_MAX + 1)      /* the distance that never overlaps a match */

struct rcenc {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t cache_size;
    uint8_t *out;
    size_t n, cap;
    int full;
};

static void put(struct rcenc *r, uint8_t b)
{
    if (r->n < r->cap)
        r->out[r->n++] = b;
    else
        r->full = 1;
}

static void shift_low(struct rcenc *r)
{
    if ((uint32_t)r->low < 0xFF000000u || (r->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(r->low >> 32);
        uint8_t temp = r->cache;
        do {
            put(r, (uint8_t)(temp + carry));
            temp = 0xFF;
        } while (--r->cache_size != 0);
        r->cache = (uint8_t)(r->low >> 24);
    }
    r->cache_size++;
    r->low = (r->low & 0x00FFFFFFu) << 8;
}

static void bit(struct rcenc *r, uint16_t *p, unsigned b)
{
    uint32_t bound = (r->range >> 11) * *p;
    if (b == 0) {
        r->range = bound;
        *p = (uint16_t)(*p + ((2048u - *p) >> MOVE_BITS));
    } else {
        r->low += bound;
        r->range -= bound;
        *p = (uint16_t)(*p - (*p >> MOVE_BITS));
    }
    while (r->range < TOP) {
        r->range <<= 8;
        shift_low(r);
    }
}

static void direct(struct rcenc *r, uint32_t v, int nbits)
{
    for (int i = nbits - 1; i >= 0; i--) {
        r->range >>= 1;
        if ((v >> i) & 1)
            r->low += r->range;
        while (r->range < TOP) {
            r->range <<= 8;
            shift_low(r);
        }
    }
}

/* a bit tree, most significant bit first; p[1..2^nbits-1] */
static void tree(struct rcenc *r, uint16_t *p, int nbits, uint32_t v)
{
    uint32_t m = 1;
    for (int i = nbits - 1; i >= 0; i--) {
        unsigned b = (v >> i) & 1;
        bit(r, &p[m], b);
        m = (m << 1) | b;
    }
}

/* a bit tree, least significant bit first */
static void reverse_tree(struct rcenc *r, uint16_t *p, int nbits, uint32_t v)
{
    uint32_t m = 1;
    for (int i = 0; i < nbits; i++) {
        unsigned b = v & 1;
        v >>= 1;
        bit(r, &p[m], b);
        m = (m << 1) | b;
    }
}

/* a length coder for one position state (pb = 0) */
struct lencoder {
    uint16_t choice, choice2, low[8], mid[8], high[256];
};

static void encode_len(struct rcenc *r, struct lencoder *c, uint32_t len)
{
    uint32_t l = len - 2;
    if (l < 8) {
        bit(r, &c->choice, 0);
        tree(r, c->low, 3, l);
    } else if (l < 16) {
        bit(r, &c->choice, 1);
        bit(r, &c->choice2, 0);
        tree(r, c->mid, 3, l - 8);
    } else {
        bit(r, &c->choice, 1);
        bit(r, &c->choice2, 1);
        tree(r, c->high, 8, l - 16);
    }
}

struct model {
    uint16_t is_match[12], is_rep[12], is_rep0[12], is_rep0_long[12];
    uint16_t literal[0x300];
    uint16_t dist_slot[64];          /* the slot tree for lengths of 5 and more */
    uint16_t align[16];
    struct lencoder match_len, rep_len;
};

static void model_init(struct model *m)
{
    uint16_t *p = (uint16_t *)m;
    for (size_t i = 0; i < sizeof(*m) / sizeof(uint16_t); i++)
        p[i] = PROB_INIT;
}

static unsigned after_rep(unsigned state) { return state < 7 ? 8 : 11; }

/* a "rep0" match: len bytes at the last distance used */
static void rep0(struct rcenc *r, struct model *m, unsigned *state, uint32_t len)
{
    bit(r, &m->is_match[*state], 1);
    bit(r, &m->is_rep[*state], 1);
    bit(r, &m->is_rep0[*state], 0);
    if (len == 1) {
        bit(r, &m->is_rep0_long[*state], 0);       /* a "short rep": one byte */
        *state = *state < 7 ? 9 : 11;
        return;
    }
    bit(r, &m->is_rep0_long[*state], 1);
    encode_len(r, &m->rep_len, len);
    *state = after_rep(*state);
}

size_t rc_xz_zeros(uint8_t *out, size_t cap, uint32_t n)
{
    if (n < RC_XZ_ZEROS_MIN || n > RC_XZ_ZEROS_MAX || cap < 6)
        return 0;
    struct model m;
    model_init(&m);
    struct rcenc r = {.range = 0xFFFFFFFFu, .cache_size = 1, .out = out + 6, .cap = cap - 6};
    unsigned state = 0;

    /* a literal 0: lc = 0, so no context; state stays 0 */
    bit(&r, &m.is_match[state], 0);
    tree(&r, m.literal, 8, 0);
    /* 273 bytes at distance 1 (the state reset made every rep distance 1) */
    rep0(&r, &m, &state, MATCH_MAX);
    /* a match at distance FAR: its distance - 1 = 273 = 0b100010001 is in slot 16
     * (2 * 8 for the top bit at 8, + 0 for the next bit), with 7 more bits
     * (00 10001): 3 direct bits (001), then 4 through the align tree (0001) */
    bit(&r, &m.is_match[state], 1);
    bit(&r, &m.is_rep[state], 0);
    encode_len(&r, &m.match_len, MATCH_MAX);
    const uint32_t dist = FAR - 1, slot = 16, footer = (slot >> 1) - 1;
    const uint32_t reduced = dist - ((2 | (slot & 1)) << footer);
    tree(&r, m.dist_slot, 6, slot);           /* the slot tree for length >= 5 */
    direct(&r, reduced >> 4, (int)footer - 4);
    reverse_tree(&r, m.align, 4, reduced & 15);
    state = state < 7 ? 7 : 10;
    /* the rest at distance FAR: no overlap, so memcpy for liblzma */
    uint32_t done = 1 + 2 * MATCH_MAX;
    while (done < n) {
        uint32_t len = n - done < MATCH_MAX ? n - done : MATCH_MAX;
        if (n - done - len == 1)
            len--;                               /* leave no single byte... */
        rep0(&r, &m, &state, len);               /* (...except as a short rep) */
        done += len;
    }
    for (int i = 0; i < 5; i++)
        shift_low(&r);
    if (r.full || r.n > 0x10000)
        return 0;

    /* the chunk's header: LZMA, state reset + new properties, sizes - 1 */
    uint32_t u = n - 1, c = (uint32_t)r.n - 1;
    out[0] = (uint8_t)(0xC0 | (u >> 16));
    out[1] = (uint8_t)(u >> 8);
    out[2] = (uint8_t)u;
    out[3] = (uint8_t)(c >> 8);
    out[4] = (uint8_t)c;
    out[5] = 0x00;                               /* (pb * 5 + lp) * 9 + lc = 0 */
    return 6 + r.n;
}

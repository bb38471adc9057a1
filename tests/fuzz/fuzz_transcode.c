/*
 * libFuzzer harness for the rpmcow C core (csrc/), built by tests/fuzz/Makefile:
 *
 *   clang -fsanitize=fuzzer,address,undefined -I csrc fuzz_transcode.c csrc/[every .c] \
 *         -lzstd -llzma -lz -lbz2 -lcrypto -lpthread
 *
 * Input layout:
 *   byte 0     selector: bits 0-2 compressor (value % 6: none, gzip, bzip2,
 *              xz, lzma, zstd); bit 4 "deny-listed": copy the rest through
 *              with rc_input_copy_to instead of the layout; bit 5 tee the
 *              input to /dev/null (as for the verifier); bit 6 page size
 *              64 KiB instead of 4 KiB; bit 7 "payload only" (skip
 *              rc_read_prologue).
 *   byte 1..   the package stream: lead + signature header + main header
 *              (framed by rc_read_prologue), then the payload, which
 *              rc_layout_payload decompresses and walks as cpio.
 *
 * The stream is fed through a memfd, like a package file.  The main header's
 * file tags go through rc_ftable_build (csrc/filetab.c), whose result is
 * checked for consistency; the payload, though, is checked against a small
 * fixed file table (FILES below, digests computed at start-up) instead of
 * the one the header gives, so that make_seeds.py can write archives
 * matching it and the fuzzer starts deep inside the layout code.  Output
 * goes to /dev/null.
 *
 * Besides the sanitizers, the harness checks the core's contract and aborts
 * (a crash for libFuzzer) when it is broken:
 *   - every failure returns a negative RC_E_* equal to err.code, with a
 *     non-empty one-line message (no newline);
 *   - RC_OK leaves err.code at RC_OK, and every blob offset handed back is
 *     page-aligned and inside the output; every file with a digest has a
 *     blob (its group's offset is set: a hardlink member's content travels
 *     with another member, but it must have come);
 *   - the prologue frames add up (lead 96 bytes, signature header padded to 8);
 *   - a file table built from the main header is consistent: names sorted,
 *     indices and groups in range, archive order a subset of the files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rpmcow.h"

static void check_error(const char *what, int rc, const rc_error *err);

/* rc_ftable_build on the main header: a clean error or a consistent table */
static void check_filetab_build(const uint8_t *hdr, size_t len)
{
    rc_ftable *t = NULL;
    rc_error err = {0, ""};
    int rc = rc_ftable_build(hdr, len, &t, &err);
    if (rc != RC_OK) {
        check_error("rc_ftable_build", rc, &err);
        if (t != NULL) {
            fprintf(stderr, "rc_ftable_build: failed but returned a table\n");
            abort();
        }
        return;
    }
    const rc_filetab *ft = &t->ft;
    for (uint32_t i = 0; i < ft->count; i++) {
        if (ft->name_fx[i] >= ft->count || ft->names[i] != t->paths[ft->name_fx[i]] ||
            (i > 0 && strcmp(ft->names[i - 1], ft->names[i]) > 0) ||
            ((ft->flags[i] & RC_FT_KEYED) &&
             (ft->groups[i] < 0 || (uint32_t)ft->groups[i] >= ft->ngroups)) ||
            t->kinds[i] > RC_KIND_OTHER || t->linktos[i] == NULL) {
            fprintf(stderr, "rc_ftable_build: inconsistent table at %u\n", i);
            abort();
        }
    }
    if (t->norder > ft->count || ft->ngroups > ft->count) {
        fprintf(stderr, "rc_ftable_build: inconsistent counts\n");
        abort();
    }
    for (uint32_t i = 0; i < t->norder; i++)
        if (t->order[i] >= ft->count) {
            fprintf(stderr, "rc_ftable_build: archive order out of range\n");
            abort();
        }
    /* the T entries of every group: all of them, sorted by digest */
    size_t entry = (size_t)ft->keysize + 8, cap = (ft->ngroups ? ft->ngroups : 1) * entry;
    uint64_t *offsets = malloc((ft->ngroups ? ft->ngroups : 1) * sizeof(*offsets));
    uint8_t *out = malloc(cap);
    if (offsets && out) {
        for (uint32_t g = 0; g < ft->ngroups; g++)
            offsets[g] = (uint64_t)g * 4096;
        size_t n = rc_ftable_t_entries(t, offsets, out, cap);
        if (n != ft->ngroups) {
            fprintf(stderr, "rc_ftable_t_entries: %zu of %u groups\n", n, ft->ngroups);
            abort();
        }
        for (size_t i = 1; i < n; i++)
            if (memcmp(out + (i - 1) * entry, out + i * entry, ft->keysize) >= 0) {
                fprintf(stderr, "rc_ftable_t_entries: not sorted\n");
                abort();
            }
    }
    free(offsets);
    free(out);
    rc_ftable_free(t);
}

/* ---- the fixed file table ------------------------------------------- */

#define NFILES 8
#define BIG_SIZE 5000

struct fixed_file {
    const char *name;      /* archive name without "./" */
    int kind;              /* 'd' dir, 'f' regular, 'l' symlink */
    uint8_t flags;         /* RC_FT_* */
    int32_t group;
    uint64_t size;         /* header size */
    uint64_t stripped;     /* size in a stripped (07070X) archive */
    const char *content;   /* NULL: BIG content (generated) */
};

/* header order (file index) deliberately differs from name order */
static const struct fixed_file FILES[NFILES] = {
    /* 0 */ {"opt/f/sym", 'l', 0, -1, 1, 1, "a"},
    /* 1 */ {"opt/f", 'd', 0, -1, 0, 0, ""},
    /* 2 */ {"opt/f/a", 'f', RC_FT_REG | RC_FT_KEYED, 0, 6, 6, "hello\n"},
    /* 3 */ {"opt/f/dup", 'f', RC_FT_REG | RC_FT_KEYED, 0, 6, 6, "hello\n"},
    /* 4 */ {"opt/f/empty", 'f', RC_FT_REG | RC_FT_KEYED, 2, 0, 0, ""},
    /* 5 */ {"opt/f/link", 'f', RC_FT_REG | RC_FT_KEYED | RC_FT_NOCONTENT, 1, BIG_SIZE, 0, NULL},
    /* 6 */ {"opt/f/big", 'f', RC_FT_REG | RC_FT_KEYED, 1, BIG_SIZE, BIG_SIZE, NULL},
    /* 7 */ {"opt/f/nodigest", 'f', RC_FT_REG, -1, 10, 10, "0123456789"},
};
#define NGROUPS 3

static uint8_t digests[NFILES * 32];
static uint64_t sizes[NFILES], stripped_sizes[NFILES];
static uint8_t flags[NFILES];
static int32_t groups[NFILES];
static const char *names[NFILES];
static uint32_t name_fx[NFILES];
static rc_filetab table;
static int devnull = -1;
static int verbose;      /* FUZZ_VERBOSE=1: print each input's outcome */

/* content of opt/f/big: the same generator as make_seeds.py */
static void big_content(uint8_t *out)
{
    uint32_t x = 12345;
    for (int i = 0; i < BIG_SIZE; i++) {
        x = x * 1103515245u + 12345u;
        out[i] = (uint8_t)(x >> 16);
    }
}

static int cmp_fx(const void *a, const void *b)
{
    return strcmp(FILES[*(const uint32_t *)a].name, FILES[*(const uint32_t *)b].name);
}

static void setup(void)
{
    static uint8_t big[BIG_SIZE];
    big_content(big);
    for (uint32_t i = 0; i < NFILES; i++) {
        const struct fixed_file *f = &FILES[i];
        sizes[i] = f->size;
        stripped_sizes[i] = f->stripped;
        flags[i] = f->flags;
        groups[i] = f->group;
        if (f->flags & RC_FT_KEYED) {
            rc_error err = {0, ""};
            rc_digest *d = rc_digest_new("SHA256", &err);
            if (d == NULL)
                abort();
            if (f->content)
                rc_digest_update(d, f->content, f->size);
            else
                rc_digest_update(d, big, BIG_SIZE);
            if (rc_digest_final(d, digests + i * 32) != 32)
                abort();
            rc_digest_free(d);
        }
        name_fx[i] = i;
    }
    qsort(name_fx, NFILES, sizeof(name_fx[0]), cmp_fx);
    for (uint32_t i = 0; i < NFILES; i++)
        names[i] = FILES[name_fx[i]].name;
    table.count = NFILES;
    table.keysize = 32;
    table.digest_name = "SHA256";
    table.digests = digests;
    table.sizes = sizes;
    table.stripped_sizes = stripped_sizes;
    table.flags = flags;
    table.groups = groups;
    table.ngroups = NGROUPS;
    table.names = names;
    table.name_fx = name_fx;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0)
        abort();
}

/* ---- contract checks --------------------------------------------------- */

static void check_error(const char *where, int rc, const rc_error *err)
{
    if (rc >= 0 || rc < RC_E_LIMIT) {           /* RC_E_LIMIT: the lowest code */
        fprintf(stderr, "%s: return code %d is not an RC_E_* code\n", where, rc);
        abort();
    }
    if (err->code != rc) {
        fprintf(stderr, "%s: returned %d but err.code is %d (%s)\n", where, rc, err->code,
                err->msg);
        abort();
    }
    size_t len = strnlen(err->msg, sizeof(err->msg));
    if (len == 0 || len == sizeof(err->msg) || memchr(err->msg, '\n', len)) {
        fprintf(stderr, "%s: error message is not one non-empty line: \"%.*s\"\n", where,
                (int)len, err->msg);
        abort();
    }
    if (rc == RC_E_INTERNAL) {
        /* the table and arguments are valid: an internal error is a bug */
        fprintf(stderr, "%s: internal error on valid arguments: %s\n", where, err->msg);
        abort();
    }
}

static int memfd_with(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    if (lseek(fd, 0, SEEK_SET) != 0)
        abort();
    return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    int compressor = (sel & 7) % 6;
    uint32_t page_size = (sel & 0x40) ? 65536 : 4096;
    int payload_only = (sel & 0x80) != 0;
    int copy_through = (sel & 0x10) != 0;
    int tee = (sel & 0x20) != 0;
    data++;
    size--;

    int fd = memfd_with(data, size);
    rc_error err = {0, ""};
    static const char *const algos[] = {"SHA256", "MD5"};
    rc_input *in = rc_input_new(fd, algos, 2, &err);
    if (in == NULL) {
        check_error("rc_input_new", err.code, &err);
        abort();   /* cannot fail on valid arguments except out of memory */
    }

    if (tee)
        rc_input_set_tee(in, devnull);
    uint64_t out_pos = 0;
    if (!payload_only) {
        rc_prologue pro;
        int rc = rc_read_prologue(in, &pro, &err);
        if (rc != RC_OK) {
            check_error("rc_read_prologue", rc, &err);
            if (verbose)
                fprintf(stderr, "fuzz_transcode: prologue: %s\n", err.msg);
            goto done;
        }
        if (err.code != RC_OK || pro.data == NULL || pro.sig_off != RC_LEAD_SIZE ||
            pro.hdr_off != pro.sig_off + pro.sig_len + (8 - pro.sig_len % 8) % 8 ||
            pro.len != pro.hdr_off + pro.hdr_len || pro.len > size ||
            rc_input_total(in) != pro.len || memcmp(pro.data, data, pro.len) != 0) {
            fprintf(stderr, "rc_read_prologue: inconsistent framing\n");
            abort();
        }
        out_pos = pro.len;
        check_filetab_build(pro.data + pro.hdr_off, pro.hdr_len);
        rc_prologue_free(&pro);
        if ((rc = rc_input_add_range_digest(in, "SHA256", out_pos, NULL, 0, &err)) < 0) {
            check_error("rc_input_add_range_digest", rc, &err);
            abort();
        }
    }

    if (copy_through) {
        int rc = rc_input_copy_to(in, devnull, &err);
        if (rc != RC_OK)
            check_error("rc_input_copy_to", rc, &err);
        else if (rc_input_total(in) != size) {
            fprintf(stderr, "rc_input_copy_to: RC_OK after %llu of %zu bytes\n",
                    (unsigned long long)rc_input_total(in), size);
            abort();
        }
        goto done;
    }

    uint64_t offsets[NGROUPS];
    rc_layout_result res;
    int rc = rc_layout_payload(in, compressor, &table, devnull, out_pos, page_size, offsets,
                               &res, &err);
    if (verbose)
        fprintf(stderr, "fuzz_transcode: compressor %d: %s\n", compressor,
                rc ? err.msg : "OK");
    if (rc != RC_OK) {
        check_error("rc_layout_payload", rc, &err);
    } else {
        if (err.code != RC_OK) {
            fprintf(stderr, "rc_layout_payload: RC_OK but err.code %d\n", err.code);
            abort();
        }
        if (res.out_pos < out_pos || res.blob_bytes > res.out_pos - out_pos ||
            res.blobs > NGROUPS) {
            fprintf(stderr, "rc_layout_payload: inconsistent result\n");
            abort();
        }
        for (int g = 0; g < NGROUPS; g++) {
            if (offsets[g] == UINT64_MAX)
                continue;
            if (offsets[g] % page_size != 0 || offsets[g] > res.out_pos) {
                fprintf(stderr, "rc_layout_payload: bad offset %llu for group %d\n",
                        (unsigned long long)offsets[g], g);
                abort();
            }
        }
        /* every regular file with a digest must have been placed */
        for (int i = 0; i < NFILES; i++) {
            if ((flags[i] & RC_FT_KEYED) && offsets[groups[i]] == UINT64_MAX) {
                fprintf(stderr, "rc_layout_payload: RC_OK but %s has no blob\n",
                        FILES[i].name);
                abort();
            }
        }
        uint8_t out[RC_MAX_ALGOS * RC_MAX_DIGEST], rout[RC_MAX_RANGES * RC_MAX_DIGEST];
        int lens[RC_MAX_ALGOS], rlens[RC_MAX_RANGES];
        rc_input_finish(in, out, lens, rout, rlens, &err);
        if (rc_input_total(in) != size) {
            fprintf(stderr, "rc_layout_payload: RC_OK after reading %llu of %zu bytes\n",
                    (unsigned long long)rc_input_total(in), size);
            abort();
        }
    }
done:
    rc_input_free(in);
    close(fd);
    return 0;
}

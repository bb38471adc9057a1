/* cpio entries and the decompressed-payload stream they are read from. */
#ifndef RPMCOW_CPIO_H
#define RPMCOW_CPIO_H

#include "rpmcow.h"

#define RC_CPIO_NAME_MAX 4096

typedef struct rc_pstream rc_pstream;
/* Called when the current buffer is fully consumed: release it and point
 * ps->buf at a buffer of ps->cap bytes that may be overwritten. */
typedef int (*rc_ps_next_buffer)(rc_pstream *ps, void *arg, rc_error *err);

struct rc_pstream {
    rc_decoder *dec;
    uint8_t *buf;
    size_t cap, pos, len;
    uint64_t offset;     /* decompressed bytes consumed */
    int eof;
    rc_ps_next_buffer next_buffer;   /* NULL: reuse one owned buffer */
    void *arg;
};

/* buf == NULL: allocate one owned buffer of cap bytes */
int rc_ps_init(rc_pstream *ps, rc_decoder *dec, uint8_t *buf, size_t cap,
               rc_ps_next_buffer next_buffer, void *arg, rc_error *err);
void rc_ps_free(rc_pstream *ps);
/* up to max buffered bytes; *n == 0 at the end of the payload */
int rc_ps_chunk(rc_pstream *ps, const uint8_t **p, size_t *n, uint64_t max, rc_error *err);
void rc_ps_consume(rc_pstream *ps, size_t n);
int rc_ps_read(rc_pstream *ps, uint8_t *dst, size_t n, const char *what, rc_error *err);
int rc_ps_skip(rc_pstream *ps, uint64_t n, const char *what, rc_error *err);
int rc_ps_align(rc_pstream *ps, rc_error *err);

typedef struct rc_cpio_entry {
    int stripped;        /* 07070X: fx is set, no name, no size */
    int trailer;
    uint32_t fx;
    uint32_t mode;
    uint32_t nlink;
    uint64_t size;
    size_t namelen;
    char name[RC_CPIO_NAME_MAX + 1];
} rc_cpio_entry;

/* Read the next entry header; the stream is then at the entry's data. */
int rc_cpio_next(rc_pstream *ps, rc_cpio_entry *e, rc_error *err);
/* The entry's path as the file table spells it (no "./" or "/" prefix). */
const char *rc_cpio_path(const rc_cpio_entry *e);
/* File index of a path, or -1. */
long rc_cpio_lookup(const rc_filetab *ft, const char *path);

#endif

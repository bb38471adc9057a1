/* Error reporting, write helpers and buffer memory shared by every stage. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE              /* AT_EMPTY_PATH */
#endif
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rpmcow.h"

int rc_fail(rc_error *err, int code, const char *fmt, ...)
{
    /* keep the first error: it names the cause, later ones are fallout */
    if (err && err->code == RC_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        /* one line, whatever a name from the input holds */
        for (char *c = err->msg; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        err->code = code;
    }
    return code;
}

/* A write to a pipe whose reader is gone fails with EPIPE here, whatever
 * SIGPIPE's disposition: dnf 4 sets it back to "kill the process" whenever
 * its stdout is not a terminal (dnf/i18n.py: cron, Ansible, `dnf | tee`),
 * and the feed, the transcoder's copy to rpmkeys and the rest write from
 * dnf's process to readers that may stop early (rpm, rpmkeys).  SIGPIPE is
 * blocked in this thread for the call; one the write raised is taken back
 * (sigtimedwait) before the old mask returns -- unless the thread had it
 * blocked already, where it stays pending as it would have. */
int rc_write_all(int fd, const void *p, size_t n, rc_error *err)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    int masked = pthread_sigmask(SIG_BLOCK, &pipe_set, &old) == 0;
    const uint8_t *b = p;
    int rc = RC_OK, e = 0;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            rc = rc_fail(err, RC_E_IO, "write failed: %s", strerror(e));
            break;
        }
        b += w;
        n -= (size_t)w;
    }
    if (masked) {
        if (e == EPIPE && !sigismember(&old, SIGPIPE)) {
            const struct timespec now = {0, 0};
            while (sigtimedwait(&pipe_set, NULL, &now) < 0 && errno == EINTR)
                ;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    errno = e;
    return rc;
}

/* ---- writing a buffer on a thread of its own -------------------------- */

struct rc_writer {
    pthread_t thread;
    int fd;
    const uint8_t *p;
    size_t n;
};

static void *writer_main(void *arg)
{
    struct rc_writer *w = arg;
    /* a reader that stops early (EPIPE) is the reader's business */
    rc_write_all(w->fd, w->p, w->n, NULL);
    close(w->fd);
    return NULL;
}

rc_writer *rc_writer_start(int fd, const uint8_t *p, size_t n)
{
    rc_writer *w = malloc(sizeof(*w));
    if (w == NULL)
        return NULL;
    *w = (rc_writer){.fd = fd, .p = p, .n = n};
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void rc_writer_join(rc_writer *w)
{
    if (w) {
        pthread_join(w->thread, NULL);
        free(w);
    }
}

/* Buffers that are written in full as soon as they are used (decoded data,
 * input blocks): mapped 2 MiB-aligned with transparent huge pages asked for,
 * so that a fresh process's first use of them costs a fault per 2 MiB rather
 * than one per 4 KiB page.  Where the kernel has no huge pages to give, they
 * are ordinary pages. */
#define HUGE_PAGE (2u << 20)

static size_t big_size(size_t n)
{
    return (n + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
}

void *rc_big_alloc(size_t n)
{
    if (n == 0 || n > SIZE_MAX - 2 * (size_t)HUGE_PAGE)
        return NULL;
    size_t size = big_size(n);
    uint8_t *p = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    size_t lead = (HUGE_PAGE - ((uintptr_t)p & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
    if (lead)
        munmap(p, lead);
    munmap(p + lead + size, HUGE_PAGE - lead);
#ifdef MADV_HUGEPAGE
    madvise(p + lead, size, MADV_HUGEPAGE);     /* advice: ignored where unsupported */
#endif
    return p + lead;
}

void rc_big_free(void *p, size_t n)
{
    if (p)
        munmap(p, big_size(n));
}

int rc_link_unnamed(int fd, const char *path)
{
    /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (root has it); the /proc
     * link works for anyone where /proc is mounted */
    if (linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH) == 0)
        return 0;
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
}

/* rpm plugin "cow": file data by cloning from an extents file.
 *
 * rpmcow's installer feeds rpm a payload whose regular files carry zeros
 * for their whole blocks (and real bytes for the last partial one).  After
 * rpm has written a file and set its metadata, fsm_file_prepare replaces
 * the zeros: read the tail from the extents file (cached: the feed has just
 * read it), open the file read-only, truncate it to 0 (which drops rpm's
 * dirty zero pages without writing them), close the read-only descriptor
 * (closing any descriptor of a file truncated down, while it has no
 * delayed-allocation blocks, clears XFS's flush-on-close flag without a
 * flush), FICLONERANGE the whole blocks from the extents file, write the
 * tail, restore file capabilities and mtime.
 * Where the filesystem cannot clone (other filesystem, no reflink, blocks
 * not aligned) the blocks are copied instead, with one warning per package.
 * Any other failure fails the package and rpm rolls it back.
 *
 * Loaded only when %__transaction_cow is defined -- rpmcow's installer does
 * that in its own process -- and active only for the packages listed in
 * %_rpmcow_map ("KEY=FD:BLK[:LAST] ...", KEY the header's SHA256HEADER,
 * else SHA1HEADER, else NEVRA; FD the open extents file; BLK the feed's
 * block size; LAST, see below).
 *
 * Worker thread.  With LAST (the file index of the archive's last entry)
 * the work of each file goes to a worker thread and rpm moves on to the
 * next file.  rpm ignores fsm_file_post's result, so a failure must reach
 * rpm through fsm_file_pre or fsm_file_prepare of a later file: every such
 * hook first reports a failed job, the last entry's hooks wait for all jobs
 * and its own work is done at once, and -- for the case where rpm skips
 * the last entry (no hook at all) -- the installer withholds the archive's
 * trailer until it has called rpmcow_plugin_drain() after rpm read the last
 * entry's header, and aborts the stream if that reports a failure: rpm then
 * fails the package before committing a single file, and rolls it back.
 * Without LAST (dnf5's serving mode, rpm < 4.18) everything happens in the hook.
 * The installer asks for LAST only where no other enabled plugin looks at
 * file content in its own fsm_file_prepare (ima, fsverity): with the worker
 * they would see it before the clone.
 *
 * Checking the other packages.  The installer turns rpm's file-digest check
 * off for the whole transaction (RPMTRANS_FLAG_NOFILEDIGEST: the fed zeros
 * do not match the header), which would also turn it off for the packages
 * that install the stock way beside the extents files.  With %_rpmcow_verify
 * set to 1, every package not in the map has each regular file it writes
 * hashed here, in fsm_file_prepare, against the header's digest, as rpm's
 * own check would have: a mismatch fails the package and rpm rolls it back.
 *
 * Everything is static except the hooks table and rpmcow_plugin_drain(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/fs.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <rpm/header.h>
#include <rpm/rpmfi.h>
#include <rpm/rpmpgp.h>          /* rpmDigest* (rpm >= 4.17: via rpmcrypto.h) */
#include <rpm/rpmlib.h>
#include <rpm/rpmlog.h>
#include <rpm/rpmmacro.h>
#include <rpm/rpmte.h>
#include <rpm/rpmts.h>

#include "rpmcow.h"              /* rc_feed_write (feed.c, linked in) */

/* ---- the plugin ABI, rpm 4.16 and later (rpmplugin.h is not public) ---- */
typedef struct rpmPlugin_s *rpmPlugin;
typedef rpmFlags rpmFsmOp;
#define XFA_ACTION(op) ((op) & 0x0000ffff)

typedef rpmRC (*init_fn)(rpmPlugin, rpmts);
typedef void (*cleanup_fn)(rpmPlugin);
typedef rpmRC (*tsm_pre_fn)(rpmPlugin, rpmts);
typedef rpmRC (*tsm_post_fn)(rpmPlugin, rpmts, int);
typedef rpmRC (*psm_pre_fn)(rpmPlugin, rpmte);
typedef rpmRC (*psm_post_fn)(rpmPlugin, rpmte, int);
typedef rpmRC (*scriptlet_pre_fn)(rpmPlugin, const char *, int);
typedef rpmRC (*scriptlet_fork_post_fn)(rpmPlugin, const char *, int);
typedef rpmRC (*scriptlet_post_fn)(rpmPlugin, const char *, int, int);
typedef rpmRC (*fsm_file_pre_fn)(rpmPlugin, rpmfi, const char *, mode_t, rpmFsmOp);
typedef rpmRC (*fsm_file_post_fn)(rpmPlugin, rpmfi, const char *, mode_t, rpmFsmOp, int);
/* 4.18 added the fd of the file being written */
typedef rpmRC (*fsm_file_prepare_fn)(rpmPlugin, rpmfi, int, const char *, const char *,
                                     mode_t, rpmFsmOp);
typedef rpmRC (*fsm_file_prepare_416_fn)(rpmPlugin, rpmfi, const char *, const char *,
                                         mode_t, rpmFsmOp);

struct rpmPluginHooks_s {
    init_fn init;
    cleanup_fn cleanup;
    tsm_pre_fn tsm_pre;
    tsm_post_fn tsm_post;
    psm_pre_fn psm_pre;
    psm_post_fn psm_post;
    scriptlet_pre_fn scriptlet_pre;
    scriptlet_fork_post_fn scriptlet_fork_post;
    scriptlet_post_fn scriptlet_post;
    fsm_file_pre_fn fsm_file_pre;
    fsm_file_post_fn fsm_file_post;
    void *fsm_file_prepare;          /* one of the two prepare types */
};

extern void *rpmPluginGetData(rpmPlugin plugin) __attribute__((weak));
extern void rpmPluginSetData(rpmPlugin plugin, void *data) __attribute__((weak));

/* ---- state ---------------------------------------------------------------- */
#define MAX_KEY 64
#define MAX_BLK (1u << 16)

struct pkg {
    int active;
    int verify;              /* not ours: check what rpm writes (see the top) */
    int fd;                  /* the extents file (the installer's fd, or ours: own_fd) */
    int own_fd;
    uint32_t blk;            /* whole blocks of this size were fed as zeros */
    int async;               /* work on the worker thread (LAST was given) */
    uint32_t last;           /* file index of the archive's last entry */
    uint32_t count, keysize;
    uint8_t *table;          /* count x (digest, le64 offset) */
    uint64_t fs_blk;         /* block size of the target filesystem */
    const char *copy_why;    /* cannot clone: copy (said once, by rpm's thread) */
    const char *serve_missed; /* listed to be served, but was not: why (said when
                                 rpm unpacks it nevertheless) */
    int copy_said;
    char *nevra;
#ifdef RPMCOW_TEST_HOOKS
    const char *fault;       /* $RPMCOW_TEST_FAULT_PATH: test builds only */
    long fault_delay_ms;     /* $RPMCOW_TEST_FAULT_DELAY_MS: fail that late */
#endif
    int tails;               /* %_rpmcow_tails: the shared tails' directory, or -1 */
    uint64_t cloned, copied;
    /* the first failure, written under the worker's lock */
    int failed, reported;
    char err[768];
};

/* the work for one file, done by the worker or in the hook */
struct job {
    int fd;                  /* the file being installed (worker: our dup) */
    uint64_t off, head, tail;
    time_t mtime;
    int caps;                /* the header gives it file capabilities */
    char *path;
};

#define QCAP 32u
#define BATCH 8u                 /* jobs queued before the worker is woken */

struct worker {
    pthread_t thread;
    int running, stop;
    pthread_mutex_t mu;
    pthread_cond_t work;     /* a job was queued, or stop */
    pthread_cond_t changed;  /* a job was taken or finished */
    struct job q[QCAP];
    unsigned head, count;
    int busy;
};

/* a payload this plugin serves rpm itself (see "Serving" below) */
struct serve {
    uint8_t *plan;           /* the plan file, whole; files/order/links point into it */
    rc_feed feed;
    rc_feed_file *files;
    uint32_t *order;
    char *discard;           /* the extents file, to remove once installed */
    uint64_t discard_dev, discard_ino;
    int sock;                /* the writing end (the feeder's) */
    int rpm_fd;              /* rpm's descriptor, now the reading end */
    pthread_t thread;
    int running, rc;
    rc_error err;
};

struct cow {
    struct pkg pkg;
    struct worker w;
    struct serve s;
    uint8_t tail[MAX_BLK];
    uint8_t copybuf[1u << 16];
    uint8_t readbuf[1u << 16];   /* verify_written */
};

/* the package being installed, for rpmcow_plugin_drain() */
static struct cow *active_cow;

/* What happened to each package of the map, for the installer's report
 * (rpmcow_plugin_result), kept until rpmcow_plugin_clear_results(). */
struct result {
    char *nevra;
    uint64_t cloned, copied;
    const char *copy_why;    /* static: why blocks were copied, or NULL */
    int ok;
};
static struct result *results;
static unsigned nresults, results_cap;

static struct cow *fallback_state;   /* rpm < 4.17 has no plugin data */
static int root_fd = -1, proc_fd = -1;  /* opened in init, before any chroot */

static struct cow *state(rpmPlugin plugin)
{
    return rpmPluginGetData ? rpmPluginGetData(plugin) : fallback_state;
}

static void pkg_reset(struct pkg *P)
{
    if (P->own_fd && P->fd >= 0)
        close(P->fd);
    free(P->table);
    free(P->nevra);
    if (P->tails >= 0)
        close(P->tails);
    memset(P, 0, sizeof(*P));
    P->fd = -1;
    P->tails = -1;
}

/* ---- the extents file's table ------------------------------------------ */

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int read_exact(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *b = buf;
    while (n > 0) {
        ssize_t r = pread(fd, b, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;         /* short file */
            return -1;
        }
        b += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

static int load_table(struct pkg *P)
{
    struct stat st;
    uint8_t foot[32], th[8];
    if (fstat(P->fd, &st) < 0 || st.st_size < 32 ||
        read_exact(P->fd, foot, 32, st.st_size - 32) < 0 || memcmp(foot + 24, "KWTSH100", 8))
        return -1;
    uint64_t t_off = le64(foot + 8), c_off = le64(foot + 16);
    if (t_off >= c_off || c_off > (uint64_t)st.st_size || c_off - t_off < 8 ||
        read_exact(P->fd, th, 8, (off_t)t_off) < 0)
        return -1;
    P->count = th[0] | th[1] << 8 | th[2] << 16 | (uint32_t)th[3] << 24;
    P->keysize = th[4] | th[5] << 8 | th[6] << 16 | (uint32_t)th[7] << 24;
    uint64_t len = (uint64_t)P->count * (P->keysize + 8);
    if (P->keysize > MAX_KEY || len > c_off - t_off - 8)
        return -1;
    P->table = malloc(len ? len : 1);
    if (P->table == NULL || read_exact(P->fd, P->table, len, (off_t)t_off + 8) < 0)
        return -1;
    return 0;
}

/* offset of the blob with this digest, or -1 (plain binary search: no
 * nested functions, no executable stack) */
static int64_t lookup(const struct pkg *P, const unsigned char *d, size_t len)
{
    if (len != P->keysize)
        return -1;
    size_t lo = 0, hi = P->count, entry = P->keysize + 8;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(P->table + mid * entry, d, len);
        if (c == 0)
            return (int64_t)le64(P->table + mid * entry + len);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- failures ------------------------------------------------------------ */

/* Record the first failure of this package (any thread); `e` is the errno. */
static void record_failure(struct cow *c, const char *path, const char *what, int e)
{
    struct pkg *P = &c->pkg;
    pthread_mutex_lock(&c->w.mu);
    if (!P->failed) {
        snprintf(P->err, sizeof(P->err), "cow: %s: %s: %s: %s\n", P->nevra, path, what,
                 strerror(e));
        __atomic_store_n(&P->failed, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&c->w.mu);
}

/* In rpm's thread: the warning that the package is copied, once. */
static void say_copying_now(struct pkg *P)
{
    const char *why = __atomic_load_n(&P->copy_why, __ATOMIC_ACQUIRE);
    if (why && !P->copy_said) {
        rpmlog(RPMLOG_WARNING, "cow: %s: %s: copying file data instead of cloning\n",
               P->nevra, why);
        P->copy_said = 1;
    }
}

/* In rpm's thread: say what the worker found (once), and whether the
 * package has failed. */
static rpmRC report(struct cow *c)
{
    struct pkg *P = &c->pkg;
    say_copying_now(P);
    if (!__atomic_load_n(&P->failed, __ATOMIC_ACQUIRE))
        return RPMRC_OK;
    if (!P->reported) {
        rpmlog(RPMLOG_ERR, "%s", P->err);
        P->reported = 1;
    }
    return RPMRC_FAIL;
}

/* ---- the work for one file ------------------------------------------------ */

static void say_copying(struct pkg *P, const char *why)
{
    const char *none = NULL;
    __atomic_compare_exchange_n(&P->copy_why, &none, why, 0, __ATOMIC_RELEASE,
                                __ATOMIC_RELAXED);
}

static int copy_blocks(struct cow *c, int fd, uint64_t off, uint64_t n)
{
    struct pkg *P = &c->pkg;
    loff_t src = (loff_t)off, dst = 0;
    while (n > 0) {
        ssize_t r = copy_file_range(P->fd, &src, fd, &dst, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n -= (uint64_t)r;
    }
    while (n > 0) {             /* copy_file_range refused: plain copy */
        size_t k = n > sizeof(c->copybuf) ? sizeof(c->copybuf) : (size_t)n;
        if (read_exact(P->fd, c->copybuf, k, src) < 0)
            return -1;
        ssize_t w = pwrite(fd, c->copybuf, k, dst);
        if (w != (ssize_t)k) {
            if (w >= 0)
                errno = EIO;
            return -1;
        }
        src += (loff_t)k;
        dst += (loff_t)k;
        n -= k;
    }
    P->copied += (uint64_t)dst;
    return 0;
}

static int cannot_clone(int e)
{
    return e == EXDEV || e == EOPNOTSUPP || e == EINVAL || e == ENOTTY || e == ENOSYS;
}

static int job_fail(struct cow *c, const struct job *j, const char *what)
{
    record_failure(c, j->path, what, errno ? errno : EIO);
    return -1;
}

/* open a host path read-only (flags: more of them, e.g. O_DIRECTORY):
 * through the front end's "/" (rpm may have chrooted) */
static int open_host(const char *path, int flags)
{
    flags |= O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
    if (path[0] != '/')
        return errno = EINVAL, -1;
    if (root_fd < 0)
        return open(path, flags);
    while (*path == '/')
        path++;
    return openat(root_fd, *path ? path : ".", flags);
}

/* ---- shared tails -------------------------------------------------------
 * A clone shares whole blocks only, unless its range ends at the source's
 * end of file: every root writes each file's last, partial block -- and all
 * of a file smaller than a block -- again.  Image builds install the same
 * packages into many roots; for them the installer names a directory in
 * %_rpmcow_tails.  There each distinct tail is kept as a file of its own,
 * named by the SHA-256 of its bytes, and every root clones it from there:
 * one block on disk for all of them.  The first root writes its tails as
 * usual and stores them (write to a temporary name, rename when complete).
 *
 * Trust: only root writes there, and only here.  The directory must be
 * root's (or this process's user's) and closed to everyone else (mode
 * 0700); an entry is used only if it is a regular file of one link, root's,
 * not writable by group or others, of exactly the tail's size -- judged on
 * the descriptor that is cloned from.  Anything else is ignored, and
 * replaced. */

#define TAIL_NAME 65

static void tail_name(const uint8_t *b, size_t n, char name[TAIL_NAME])
{
    static const char hex[] = "0123456789abcdef";
    DIGEST_CTX ctx = rpmDigestInit(PGPHASHALGO_SHA256, RPMDIGEST_NONE);
    void *d = NULL;
    size_t dlen = 0;
    name[0] = '\0';
    if (ctx == NULL)
        return;
    rpmDigestUpdate(ctx, b, n);
    rpmDigestFinal(ctx, &d, &dlen, 0);
    if (d && dlen == 32) {
        for (size_t i = 0; i < 32; i++) {
            name[2 * i] = hex[((const uint8_t *)d)[i] >> 4];
            name[2 * i + 1] = hex[((const uint8_t *)d)[i] & 15];
        }
        name[64] = '\0';
    }
    free(d);
}

/* the stored tail called `name`, if it can be trusted to hold n bytes */
static int open_tail(const struct pkg *P, const char *name, uint64_t n)
{
    if (P->tails < 0 || !name[0])
        return -1;
    int t = openat(P->tails, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (t >= 0 && (fstat(t, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
                   (st.st_uid != 0 && st.st_uid != geteuid()) ||
                   (st.st_mode & (S_IWGRP | S_IWOTH)) || (uint64_t)st.st_size != n)) {
        close(t);
        t = -1;
    }
    return t;
}

/* keep n bytes as the tail called `name` (best effort: a root that cannot
 * store a tail has written it, as without the directory).  An unnamed file
 * (O_TMPFILE) given its name once complete: one directory operation where a
 * temporary name and a rename are three (49 against 69 us a tail on XFS, for
 * the 24k tails the first root of an image build stores); the named way
 * where the filesystem or the process's capabilities do not allow it, or
 * an entry is to be replaced (linkat never replaces). */
static void store_tail(const struct pkg *P, const uint8_t *b, size_t n, const char *name)
{
    static unsigned long seq;
    char tmp[TAIL_NAME + 48];
    if (P->tails < 0 || !name[0])
        return;
    int u = openat(P->tails, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0600);
    if (u >= 0) {
        int ok = write(u, b, n) == (ssize_t)n;
        int linked = ok && linkat(u, "", P->tails, name, AT_EMPTY_PATH) == 0;
        close(u);
        /* an entry of that name (one open_tail refused, or another root's
         * just now) is replaced the named way: a rename */
        if (linked || !ok)
            return;
    }
    snprintf(tmp, sizeof(tmp), ".%s.%ld.%lu", name, (long)getpid(),
             __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    int t = openat(P->tails, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (t < 0)
        return;
    ssize_t w = write(t, b, n);
    int ok = w == (ssize_t)n;
    if (close(t) < 0)
        ok = 0;
    if (!ok || renameat(P->tails, tmp, P->tails, name) < 0)
        unlinkat(P->tails, tmp, 0);
}

/* %_rpmcow_tails, opened through the front end's "/": -1 if unset, not a
 * private directory (said once per package) or not on the extents file's
 * filesystem (where no clone from it could reach the root: said in rpm's
 * debug output) */
static int open_tails(const char *nevra, int extents_fd)
{
    char *v = rpmExpand("%{?_rpmcow_tails}", NULL);
    int fd = -1;
    if (v && v[0] == '/') {
        fd = open_host(v, O_DIRECTORY);
        struct stat st;
        if (fd >= 0 && (fstat(fd, &st) < 0 || (st.st_uid != 0 && st.st_uid != geteuid()) ||
                        (st.st_mode & 077))) {
            close(fd);
            fd = -1;
            errno = EPERM;
        }
        if (fd < 0) {
            rpmlog(RPMLOG_WARNING, "cow: %s: %s: %s: tails are written, not shared\n",
                   nevra, v, errno == EPERM ? "not a directory only root can open"
                                             : strerror(errno));
        } else {
            struct stat es;
            if (fstat(extents_fd, &es) == 0 && es.st_dev != st.st_dev) {
                rpmlog(RPMLOG_DEBUG, "cow: %s: %s: not on the extents file's filesystem: "
                       "tails are written, not shared\n", nevra, v);
                close(fd);
                fd = -1;
            }
        }
    }
    free(v);
    return fd;
}

/* Replace rpm's zeros by the blob: see the comment at the top.  Runs on the
 * worker, or in rpm's thread while the worker is idle; -1 on failure (then
 * recorded). */
static int run_job(struct cow *c, const struct job *j)
{
    struct pkg *P = &c->pkg;
    int fd = j->fd;
    errno = 0;
#ifdef RPMCOW_TEST_HOOKS
    if (P->fault && strstr(j->path, P->fault)) {
        if (P->fault_delay_ms > 0) {
            struct timespec d = {.tv_sec = P->fault_delay_ms / 1000,
                                 .tv_nsec = (P->fault_delay_ms % 1000) * 1000000L};
            while (nanosleep(&d, &d) < 0 && errno == EINTR)
                ;
        }
        errno = EIO;
        return job_fail(c, j, "cannot clone (fault injected by RPMCOW_TEST_FAULT_PATH)");
    }
#endif
    if (P->fs_blk == 0) {
        struct statfs sfs;
        P->fs_blk = fstatfs(fd, &sfs) == 0 && sfs.f_bsize > 0 ? (uint64_t)sfs.f_bsize : 4096;
    }
    uint8_t caps[256];
    ssize_t caplen = -1;
    if (j->caps)
        caplen = fgetxattr(fd, "security.capability", caps, sizeof(caps));

    int clone = __atomic_load_n(&P->copy_why, __ATOMIC_ACQUIRE) == NULL;
    if (clone && (j->off % P->fs_blk || j->head % P->fs_blk)) {
        say_copying(P, "blobs are not aligned to this filesystem's blocks");
        clone = 0;
    }
    if (clone) {
        /* the last block's bytes come from the extents file (the feed has
         * just read them: cached); the read-only descriptor is only there
         * to be closed after the truncation (see the comment at the top) */
        if (j->tail && read_exact(P->fd, c->tail, (size_t)j->tail, (off_t)(j->off + j->head)) < 0)
            return job_fail(c, j, "cannot read the last block from the extents file");
        char name[TAIL_NAME] = "";
        if (j->tail && P->tails >= 0)
            tail_name(c->tail, (size_t)j->tail, name);
        int stored = open_tail(P, name, j->tail);
        if (j->head == 0 && stored < 0) {
            /* a file smaller than a block, rpm wrote it from the feed: keep
             * it, and its bytes for the next root */
            store_tail(P, c->tail, (size_t)j->tail, name);
            return 0;
        }
        /* (a tail cloned from the store leaves no dirty page to flush) */
        int ro = j->tail && stored < 0 ? open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
        int tr = ftruncate(fd, 0), e = errno;
        if (ro >= 0)
            close(ro);               /* clears XFS's flush-on-close after truncation */
        errno = e;
        if (tr < 0) {
            if (stored >= 0)
                close(stored);
            return job_fail(c, j, "cannot truncate");
        }
        struct file_clone_range r = {.src_fd = P->fd, .src_offset = j->off,
                                     .src_length = j->head, .dest_offset = 0};
        if (j->head == 0) {
            /* nothing but the tail */
        } else if (ioctl(fd, FICLONERANGE, &r) == 0) {
            P->cloned += j->head;
        } else if (cannot_clone(errno)) {
            say_copying(P, errno == EXDEV ? "the extents file is on another filesystem"
                                          : "this filesystem cannot clone");
            if (copy_blocks(c, fd, j->off, j->head) < 0) {
                if (stored >= 0)
                    close(stored);
                return job_fail(c, j, "cannot copy");
            }
        } else {
            if (stored >= 0)
                close(stored);
            return job_fail(c, j, "cannot clone");
        }
        int shared = 0;
        if (stored >= 0) {
            struct file_clone_range t = {.src_fd = stored, .src_offset = 0,
                                         .src_length = j->tail, .dest_offset = j->head};
            shared = ioctl(fd, FICLONERANGE, &t) == 0;
            close(stored);
            if (shared)
                P->cloned += j->tail;
        }
        if (j->tail && !shared) {
            ssize_t w = pwrite(fd, c->tail, (size_t)j->tail, (off_t)j->head);
            if (w != (ssize_t)j->tail) {
                if (w >= 0)
                    errno = EIO;
                return job_fail(c, j, "cannot write the last block");
            }
            if (stored < 0)
                store_tail(P, c->tail, (size_t)j->tail, name);
        }
    } else if (copy_blocks(c, fd, j->off, j->head) < 0) {
        return job_fail(c, j, "cannot copy");
    }

    if (caplen > 0 && fsetxattr(fd, "security.capability", caps, (size_t)caplen, 0) < 0)
        return job_fail(c, j, "cannot restore file capabilities");
    struct timespec ts[2] = {{.tv_sec = j->mtime}, {.tv_sec = j->mtime}};
    if (futimens(fd, ts) < 0)
        return job_fail(c, j, "cannot restore mtime");
    return 0;
}

/* ---- the worker ------------------------------------------------------------ */

static void *worker_main(void *arg)
{
    struct cow *c = arg;
    struct worker *w = &c->w;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->count == 0 && !w->stop)
            pthread_cond_wait(&w->work, &w->mu);
        if (w->count == 0)
            break;                           /* stop, and nothing left */
        struct job j = w->q[w->head];
        w->head = (w->head + 1) % QCAP;
        w->count--;
        w->busy = 1;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->mu);
        /* after a failure rpm fails the package: the rest is not worth doing */
        if (!__atomic_load_n(&c->pkg.failed, __ATOMIC_ACQUIRE))
            run_job(c, &j);
        close(j.fd);
        free(j.path);
        pthread_mutex_lock(&w->mu);
        w->busy = 0;
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* queue a job (taking over j->fd and j->path); -1 if no worker can run */
static int enqueue(struct cow *c, struct job *j)
{
    struct worker *w = &c->w;
    pthread_mutex_lock(&w->mu);
    if (!w->running) {
        w->stop = 0;
        if (pthread_create(&w->thread, NULL, worker_main, c) != 0) {
            pthread_mutex_unlock(&w->mu);
            return -1;
        }
        w->running = 1;
    }
    while (w->count == QCAP) {
        pthread_cond_signal(&w->work);
        pthread_cond_wait(&w->changed, &w->mu);
    }
    w->q[(w->head + w->count) % QCAP] = *j;
    w->count++;
    if (w->count >= BATCH)       /* fewer wake-ups; drain() wakes it for the rest */
        pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* wait until every queued job is done, and end the worker */
static void drain(struct cow *c)
{
    struct worker *w = &c->w;
    pthread_mutex_lock(&w->mu);
    if (!w->running) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    w->stop = 1;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->running = 0;
    w->stop = 0;
}

/* The installer calls this (in rpm's thread, from its progress callback)
 * once rpm has read the header of the archive's last entry, before it lets
 * rpm read the trailer: 0 when every file so far was done, -1 after a
 * failure (logged here if no hook has reported it yet) -- or if no package
 * of the map is being installed, when the installer expected one. */
__attribute__((visibility("default"))) int rpmcow_plugin_drain(void)
{
    struct cow *c = active_cow;
    if (c == NULL) {
        rpmlog(RPMLOG_ERR, "cow: the package rpm is installing is not one of rpmcow's\n");
        return -1;
    }
    drain(c);
    return report(c) == RPMRC_OK ? 0 : -1;
}

/* the value of "KEY=VALUE" in a blank-separated list, or NULL */
static const char *list_lookup(const char *list, const char *key)
{
    size_t klen = strlen(key);
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (strncmp(p, key, klen) == 0 && p[klen] == '=')
            return p + klen + 1;
        p = strpbrk(p, " \t\n");
    }
    return NULL;
}

/* find "KEY=FD:BLK[:LAST]" in the map; returns the number of fields, or -1 */
static int map_lookup(const char *map, const char *key, int *fd, uint32_t *blk,
                      uint32_t *last)
{
    const char *v = list_lookup(map, key);
    unsigned f, b, l;
    int n = v ? sscanf(v, "%u:%u:%u", &f, &b, &l) : -1;
    if (n >= 2 && b <= MAX_BLK) {
        *fd = (int)f;
        *blk = b;
        *last = n == 3 ? l : 0;
        return n;
    }
    return -1;
}

/* rpm 6 records digests of the package file it read in its database
 * (RPMTAG_PACKAGEDIGESTS/ALGOS, from an auxiliary header that never
 * overrides a tag the package's header has).  It read the feed, not the
 * package: the installer gives the original's digests, which the
 * transcoder computed and its record vouches for, in %_rpmcow_pkgdigests
 * ("KEY=ALGO:HEX[,ALGO:HEX...] ..."), and withholds %_pkgverify_digests
 * while rpm reads a feed.  Where rpm's verification pass does not run
 * (rpm 6.1 with extents files in the transaction: rpmplugin.
 * verify_headers_only) the installer gives the plain packages' digests
 * too.  Put into the header rpm adds to the database, once (psm_pre runs
 * once per scriptlet stage too). */
#define TAG_PACKAGEDIGESTS 5118
#define TAG_PACKAGEDIGESTALGOS 5119
#define MAX_HEX 128                  /* SHA-512 */

static void put_package_digests(rpmte te, const char *key)
{
    char *list = rpmExpand("%{?_rpmcow_pkgdigests}", NULL);
    const char *v = list ? list_lookup(list, key) : NULL;
    Header h = v ? rpmteHeader(te) : NULL;
    if (h && !headerIsEntry(h, TAG_PACKAGEDIGESTS)) {
        while (*v && *v != ' ' && *v != '\t' && *v != '\n') {
            char hex[MAX_HEX + 1];
            unsigned algo = 0;
            size_t n = 0;
            while (*v >= '0' && *v <= '9' && algo < 1000)
                algo = algo * 10 + (unsigned)(*v++ - '0');
            if (*v++ != ':')
                break;
            while (n < MAX_HEX && ((*v >= '0' && *v <= '9') || (*v >= 'a' && *v <= 'f')))
                hex[n++] = *v++;
            hex[n] = '\0';
            if (algo == 0 || algo >= 1000 || n == 0 || (*v && *v != ',' && *v != ' '
                                                         && *v != '\t' && *v != '\n'))
                break;
            uint32_t a = algo;
            if (!headerPutString(h, TAG_PACKAGEDIGESTS, hex) ||
                !headerPutUint32(h, TAG_PACKAGEDIGESTALGOS, &a, 1))
                break;
            if (*v == ',')
                v++;
        }
    }
    headerFree(h);
    free(list);
}

/* ---- Serving the payload ------------------------------------------------------
 *
 * Front ends that hand rpm the package file themselves (dnf5, rpm -i, ...)
 * cannot be asked to read a feed instead.  For the packages listed in
 * %_rpmcow_serve ("KEY=PLAN ...", KEY as in the map, PLAN the path of a feed
 * plan rpmcow wrote after judging the extents file: rpmcow/serve.py) this
 * plugin serves the cheap payload itself: rpm's verification pass has read
 * and checked the original package; when the package's psm starts, rpm has
 * read its headers from its descriptor, which stands at the payload's first
 * byte.  That descriptor is found (the package file's inode, that offset),
 * a socket is put in its place (dup2) and a thread writes the feed into the
 * other end (feed.c, from the plan's description and the extents file);
 * rpm's file-digest check is turned off for this package alone (the fed
 * zeros do not match the header; the transaction set saved in tsm_pre).
 * Anything that fails before the dup2 leaves rpm reading the original: that
 * package installs the stock way, with a warning.
 *
 * Trust: the plan and the extents file are opened through the front end's
 * "/" (rpm may have chrooted since), must be regular files that only root
 * can change, and the extents file must be the very inode, unchanged (its
 * mtime to the nanosecond), that rpmcow judged when it wrote the plan.  The
 * plan's values are all bounds-checked; the blobs are found by the file
 * digests of the header rpm verified (lookup), whatever the plan says. */

static rpmts serve_ts;                  /* the real run's (tsm_pre) */
static rpmtransFlags serve_base_flags;

#define PLAN_MAGIC "RCFEED01"
#define PLAN_MAX (256u << 20)
#define PLAN_MAX_FILES (1u << 24)

struct cursor {
    const uint8_t *p, *end;
    int bad;
};

static const uint8_t *take(struct cursor *k, size_t n)
{
    if (k->bad || (size_t)(k->end - k->p) < n) {
        k->bad = 1;
        return NULL;
    }
    const uint8_t *at = k->p;
    k->p += n;
    return at;
}

static uint64_t take_u(struct cursor *k, size_t n)
{
    const uint8_t *p = take(k, n);
    uint64_t v = 0;
    for (size_t i = n; p && i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

/* a regular file only root (or this process's user) can change */
static int private_file(int fd, struct stat *st)
{
    if (fstat(fd, st) < 0)
        return -1;
    if (!S_ISREG(st->st_mode) || (st->st_uid != 0 && st->st_uid != geteuid()) ||
        (st->st_mode & (S_IWGRP | S_IWOTH)))
        return errno = EPERM, -1;
    return 0;
}

struct plan_ids {
    uint64_t ext_ino, ext_mtime_ns, pkg_dev, pkg_ino, payload_off;
    char ext_path[4096];
};

/* read and check the plan at path into s (files, order) and ids */
static const char *plan_load(struct serve *s, const char *path, struct plan_ids *ids)
{
    int fd = open_host(path, 0);
    struct stat st;
    if (fd < 0)
        return "cannot open the feed plan";
    if (private_file(fd, &st) < 0 || st.st_size < 8 || (uint64_t)st.st_size > PLAN_MAX) {
        close(fd);
        return "the feed plan is not a file only root can change";
    }
    s->plan = malloc((size_t)st.st_size);
    if (s->plan == NULL || read_exact(fd, s->plan, (size_t)st.st_size, 0) < 0) {
        close(fd);
        return "cannot read the feed plan";
    }
    close(fd);
    struct cursor k = {s->plan, s->plan + st.st_size, 0};
    const uint8_t *magic = take(&k, 8);
    if (magic == NULL || memcmp(magic, PLAN_MAGIC, 8))
        return "not a feed plan";
    s->feed.compressor = (int)take_u(&k, 4);
    s->feed.blk = (uint32_t)take_u(&k, 4);
    ids->ext_ino = take_u(&k, 8);
    ids->ext_mtime_ns = take_u(&k, 8);
    ids->pkg_dev = take_u(&k, 8);
    ids->pkg_ino = take_u(&k, 8);
    ids->payload_off = take_u(&k, 8);
    uint32_t nfiles = (uint32_t)take_u(&k, 4), count = (uint32_t)take_u(&k, 4);
    size_t plen = (size_t)take_u(&k, 2);
    const uint8_t *pp = take(&k, plen);
    if (k.bad || plen == 0 || plen >= sizeof(ids->ext_path) || memchr(pp, 0, plen) ||
        s->feed.compressor < RC_COMP_NONE || s->feed.compressor > RC_COMP_ZSTD ||
        s->feed.blk > MAX_BLK || (s->feed.blk & (s->feed.blk - 1)) ||
        nfiles > PLAN_MAX_FILES || count > nfiles)
        return "the feed plan is damaged";
    memcpy(ids->ext_path, pp, plen);
    ids->ext_path[plen] = '\0';
    s->files = calloc(nfiles ? nfiles : 1, sizeof(*s->files));
    s->order = calloc(count ? count : 1, sizeof(*s->order));
    if (s->files == NULL || s->order == NULL)
        return "out of memory";
    for (uint32_t i = 0; i < nfiles && !k.bad; i++) {
        rc_feed_file *f = &s->files[i];
        f->kind = (uint8_t)take_u(&k, 1);
        f->size = take_u(&k, 8);
        f->blob = take_u(&k, 8);
        uint32_t ll = (uint32_t)take_u(&k, 4);
        const uint8_t *link = take(&k, ll);
        if (f->kind == RC_FEED_LINK) {
            /* the target is written as is: its length is the entry's size */
            if (link == NULL || ll != f->size)
                k.bad = 1;
            f->link = (const char *)link;
        } else if ((f->kind != RC_FEED_NONE && f->kind != RC_FEED_REG) || ll != 0 ||
                   (f->kind == RC_FEED_NONE && f->size != 0)) {
            k.bad = 1;               /* no gate, nothing else, from a plan */
        }
    }
    for (uint32_t i = 0; i < count && !k.bad; i++) {
        s->order[i] = (uint32_t)take_u(&k, 4);
        if (s->order[i] >= nfiles)
            k.bad = 1;
    }
    if (k.bad || k.p != k.end)
        return "the feed plan is damaged";
    s->feed.nfiles = nfiles;
    s->feed.files = s->files;
    s->feed.count = count;
    s->feed.order = s->order;
    return NULL;
}

/* Every byte the feed will write must be what the header rpm verified
 * says: a regular file's entry its size and the blob its digest names (the
 * transcoder checked every blob against it), a symlink's its target, and
 * no regular file with content fed as nothing (rpm's stripped archive takes
 * sizes from the header: it would read the next entry as content).  With
 * rpm's file-digest check off for the package, nothing else would notice.
 * NULL, or what does not match. */
static const char *plan_matches_header(const struct serve *s, const struct pkg *P, rpmte te)
{
    rpmfiles files = rpmteFiles(te);
    if (files == NULL)
        return "rpm has no file list for the package";
    const char *why = NULL;
    int n = rpmfilesFC(files);
    if (n < 0 || (uint32_t)n != s->feed.nfiles)
        why = "the feed plan is not of this package (file count)";
    for (int fx = 0; why == NULL && fx < n; fx++) {
        const rc_feed_file *f = &s->files[fx];
        uint64_t size = (uint64_t)rpmfilesFSize(files, fx);
        mode_t mode = rpmfilesFMode(files, fx);
        if (f->kind == RC_FEED_REG) {
            size_t dlen = 0;
            const unsigned char *d = size ? rpmfilesFDigest(files, fx, NULL, &dlen) : NULL;
            int64_t off = d ? lookup(P, d, dlen) : 0;
            if (!S_ISREG(mode) || f->size != size || off < 0 || (size && (uint64_t)off != f->blob))
                why = "the feed plan does not match the package's header (file content)";
        } else if (f->kind == RC_FEED_LINK) {
            const char *link = rpmfilesFLink(files, fx);
            if (!S_ISLNK(mode) || link == NULL || strlen(link) != f->size ||
                memcmp(link, f->link, f->size) != 0)
                why = "the feed plan does not match the package's header (symlink)";
        } else if (S_ISREG(mode) && size > 0 &&
                   !(rpmfilesFFlags(files, fx) & RPMFILE_GHOST) &&
                   rpmfilesFLinks(files, fx, NULL) < 2) {
            why = "the feed plan does not match the package's header (a file without content)";
        }
    }
    rpmfilesFree(files);
    return why;
}

/* rpm's descriptor of the package: the file's inode, at the payload */
static int package_fd(uint64_t dev, uint64_t ino, uint64_t off)
{
    if (proc_fd < 0)
        return -1;
    int d = openat(proc_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = d >= 0 ? fdopendir(d) : NULL;
    if (dir == NULL) {
        if (d >= 0)
            close(d);
        return -1;
    }
    int found = -1, n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        struct stat st;
        if (*end || end == e->d_name || fd < 0 || fd == dirfd(dir) || fd > 1 << 30 ||
            fstat((int)fd, &st) < 0 || (uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino)
            continue;
        if ((uint64_t)lseek((int)fd, 0, SEEK_CUR) == off) {
            found = (int)fd;
            n++;
        }
    }
    closedir(dir);
    return n == 1 ? found : -1;      /* none, or not one we can tell apart */
}

static void *serve_main(void *arg)
{
    struct serve *s = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    s->rc = rc_feed_write(&s->feed, s->sock, &s->err);
    shutdown(s->sock, SHUT_WR);
    return NULL;
}

static void serve_reset(struct serve *s)
{
    if (s->running) {
        /* rpm is done with the payload (or failed): a feeder still
         * writing gets EPIPE and ends */
        shutdown(s->sock, SHUT_RDWR);
        pthread_join(s->thread, NULL);
        s->running = 0;
    }
    if (s->sock >= 0)
        close(s->sock);
    free(s->plan);
    free(s->files);
    free(s->order);
    free(s->discard);
    memset(s, 0, sizeof(*s));
    s->sock = s->rpm_fd = -1;
}

/* Serve the payload of te if its key is listed: 1 served (P set up), 0 not
 * listed, -1 listed but not servable (said; rpm reads the original). */
static int serve_start(struct cow *c, rpmte te, const char *key)
{
    char *list = rpmExpand("%{?_rpmcow_serve}", NULL);
    const char *v = list ? list_lookup(list, key) : NULL;
    if (v == NULL) {
        free(list);
        return 0;
    }
    size_t n = strcspn(v, " \t\n");
    char *planpath = strndup(v, n);
    free(list);
    struct serve *s = &c->s;
    struct pkg *P = &c->pkg;
    struct plan_ids ids;
    const char *why = planpath ? plan_load(s, planpath, &ids) : "out of memory";
    int efd = -1, pfd = -1, sv[2] = {-1, -1};
    struct stat st;
    /* rpm has the package open at its payload only when it is about to
     * unpack it (or run its %pretrans): not in the other stages' psm */
    if (why == NULL && (pfd = package_fd(ids.pkg_dev, ids.pkg_ino, ids.payload_off)) < 0) {
        P->serve_missed = "rpm's descriptor of the package was not found";
        free(planpath);
        serve_reset(s);
        return 0;
    }
    if (why == NULL) {
        efd = open_host(ids.ext_path, 0);
        if (efd < 0 || private_file(efd, &st) < 0)
            why = "cannot open the extents file as a file only root can change";
        else if ((uint64_t)st.st_ino != ids.ext_ino ||
                 (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec !=
                     ids.ext_mtime_ns)
            why = "the extents file changed since it was checked";
    }
    if (why == NULL) {
        P->fd = efd;                 /* the table, to check the plan against */
        if (load_table(P) < 0)
            why = "cannot read the extents file's table";
        else
            why = plan_matches_header(s, P, te);
        if (why != NULL) {
            free(P->table);
            P->table = NULL;
            P->fd = -1;
        }
    }
    if (why == NULL && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        why = "cannot create a socket";
    if (why == NULL) {
        int sz = 1 << 20;
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        s->feed.extents_fd = efd;
        s->sock = sv[1];
        if (pthread_create(&s->thread, NULL, serve_main, s) != 0)
            why = "cannot start the feeder";
        else
            s->running = 1;
    }
    /* the point of no return: rpm reads the feed from here on */
    if (why == NULL && dup3(sv[0], pfd, O_CLOEXEC) < 0)
        why = "cannot put the feed in place";
    if (sv[0] >= 0)
        close(sv[0]);
    if (why != NULL) {
        rpmlog(RPMLOG_WARNING, "cow: %s: installing the stock way: %s (%s)\n",
               rpmteNEVRA(te), why, planpath ? planpath : "?");
        free(planpath);
        serve_reset(s);
        if (efd >= 0)
            close(efd);
        free(P->table);
        P->table = NULL;
        P->fd = -1;
        return -1;
    }
    free(planpath);
    char *discard = rpmExpand("%{?_rpmcow_discard}", NULL);
    if (discard && strcmp(discard, "1") == 0) {
        s->discard = strdup(ids.ext_path);
        s->discard_dev = (uint64_t)st.st_dev;
        s->discard_ino = (uint64_t)st.st_ino;
    }
    free(discard);
    s->rpm_fd = pfd;
    P->fd = efd;
    P->own_fd = 1;
    P->blk = s->feed.blk;
    return 1;
}

/* rpm's file-digest check off for a served package, as it was for others */
static void serve_flags(int served)
{
    if (serve_ts)
        rpmtsSetFlags(serve_ts, served ? serve_base_flags | RPMTRANS_FLAG_NOFILEDIGEST
                                       : serve_base_flags);
}

/* ---- One verification pass, not two ---------------------------------------
 *
 * A front end that runs a test transaction before the real one (dnf5: its
 * GPG check, then rpm's test run, then pre_transaction, then the real run,
 * on one transaction set) has rpm read and verify every package twice:
 * each run starts with a verification pass that reads the whole package
 * and computes every payload digest (rpm 6: SHA-256, SHA-512, SHA3-256, and
 * the package digests it records) -- about 1.5 s for 93 MiB here, as long as
 * the rest of what cow leaves of the transaction.  For a package it serves,
 * the second pass checks a payload rpm never reads.
 *
 * rpmcow_plugin_served_only(), called by the front end once the served
 * packages are known, turns the real run's pass off (the transaction set's
 * verify level to none, restored in tsm_post) when, and only when:
 *   - this transaction set passed a test run (tsm_post with no problem) whose
 *     verification pass ran at the level it has now: rpm verified every
 *     original at the root's level, on this very transaction set;
 *   - every package it adds is to be served (its NEVRA is in %_rpmcow_served,
 *     which rpmcow sets beside %_rpmcow_serve);
 *   - rpm checks header digests when it reads a header to install it (not
 *     RPMVSF_NOSHA256HEADER);
 *   - where rpm records package digests (%_pkgverify_digests), the front end
 *     gave them for every served package (%_rpmcow_pkgdigests, from the
 *     extents files' records: digests of the same package files) -- rpmcow
 *     lists the packages in %_rpmcow_served only then.
 * Then, in the real run, psm_pre refuses a package whose header is not one
 * rpmcow judged (its SHA-256 digest, which rpm has just checked, is no key
 * of %_rpmcow_serve): nothing unverified in this run installs.  A judged
 * package whose serving falls through (its extents file changed) installs
 * from the original with rpm's file-digest check on, against the header
 * judged.  rpm keeps each package's "verified" status (the audit plugin logs
 * it) from the test run. */
static rpmts tested_ts;                 /* passed a test run at tested_level */
static int tested_level;
static rpmts unverified_ts;             /* its real run's pass is off: restore */
static int unverified_level;

/* 1: every package ts adds is listed in `nevras` (blank-separated) */
static int all_served(rpmts ts, const char *nevras)
{
    int n = 0, all = 1;
    rpmtsi pi = rpmtsiInit(ts);
    rpmte te;
    while (all && (te = rpmtsiNext(pi, TR_ADDED)) != NULL) {
        const char *nevra = rpmteNEVRA(te);
        size_t len = nevra ? strlen(nevra) : 0;
        const char *at = nevras;
        all = 0;
        while (len && (at = strstr(at, nevra)) != NULL) {
            if ((at == nevras || at[-1] == ' ') && (at[len] == ' ' || at[len] == '\0')) {
                all = 1;
                break;
            }
            at += len;
        }
        n++;
    }
    rpmtsiFree(pi);
    return all && n > 0;
}

__attribute__((visibility("default"))) int rpmcow_plugin_served_only(void)
{
    rpmts ts = tested_ts;
    if (ts == NULL || unverified_ts != NULL || rpmtsVfyLevel(ts) == 0 ||
        rpmtsVfyLevel(ts) != tested_level || (rpmtsVSFlags(ts) & RPMVSF_NOSHA256HEADER))
        return 0;
    char *served = rpmExpand("%{?_rpmcow_served}", NULL);
    int ok = served && *served && all_served(ts, served);
    free(served);
    if (!ok)
        return 0;
    unverified_ts = ts;
    unverified_level = rpmtsSetVfyLevel(ts, 0);
    rpmlog(RPMLOG_DEBUG, "cow: every package is served: no second verification pass\n");
    return 1;
}

/* the header with this key is one rpmcow judged (and plans to serve) */
static int judged(const char *key)
{
    char *list = key ? rpmExpand("%{?_rpmcow_serve}", NULL) : NULL;
    int yes = list && list_lookup(list, key) != NULL;
    free(list);
    return yes;
}

static rpmRC cow_tsm_pre(rpmPlugin plugin, rpmts ts)
{
    (void)plugin;
    serve_ts = NULL;
    if (!(rpmtsFlags(ts) & RPMTRANS_FLAG_TEST)) {
        serve_ts = ts;
        serve_base_flags = rpmtsFlags(ts);
        tested_ts = NULL;            /* one real run per test run */
    } else if (tested_ts == ts) {
        tested_ts = NULL;            /* tested again: wait for its outcome */
    }
    return RPMRC_OK;
}

static rpmRC cow_tsm_post(rpmPlugin plugin, rpmts ts, int res)
{
    (void)plugin;
    if (rpmtsFlags(ts) & RPMTRANS_FLAG_TEST) {
        if (res == 0 && rpmtsVfyLevel(ts) != 0) {
            tested_ts = ts;
            tested_level = rpmtsVfyLevel(ts);
        }
        return RPMRC_OK;
    }
    if (unverified_ts == ts) {
        rpmtsSetVfyLevel(ts, unverified_level);
        unverified_ts = NULL;
    }
    if (serve_ts == ts)
        serve_flags(0);
    serve_ts = NULL;
    return RPMRC_OK;
}

/* ---- hooks ------------------------------------------------------------- */

static rpmRC cow_init(rpmPlugin plugin, rpmts ts)
{
    (void)ts;
    struct cow *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return RPMRC_FAIL;
    c->pkg.fd = -1;
    c->pkg.tails = -1;
    c->s.sock = c->s.rpm_fd = -1;
    /* rpm may chroot into the root before the packages' turn: what serving
     * a payload needs of the front end's file system, opened now */
    if (root_fd < 0)
        root_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (proc_fd < 0)
        proc_fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    pthread_mutex_init(&c->w.mu, NULL);
    pthread_cond_init(&c->w.work, NULL);
    pthread_cond_init(&c->w.changed, NULL);
    if (rpmPluginSetData)
        rpmPluginSetData(plugin, c);
    else
        fallback_state = c;
    return RPMRC_OK;
}

static void cow_cleanup(rpmPlugin plugin)
{
    struct cow *c = state(plugin);
    if (c) {
        drain(c);
        serve_reset(&c->s);
        if (active_cow == c)
            active_cow = NULL;
        pkg_reset(&c->pkg);
        pthread_mutex_destroy(&c->w.mu);
        pthread_cond_destroy(&c->w.work);
        pthread_cond_destroy(&c->w.changed);
        free(c);
    }
    if (!rpmPluginSetData)
        fallback_state = NULL;
    if (root_fd >= 0)
        close(root_fd);
    if (proc_fd >= 0)
        close(proc_fd);
    root_fd = proc_fd = -1;
    serve_ts = NULL;
    if (unverified_ts != NULL)
        rpmtsSetVfyLevel(unverified_ts, unverified_level);
    tested_ts = unverified_ts = NULL;
}

static char *te_key(rpmte te)
{
    Header h = rpmteHeader(te);
    const char *k = h ? headerGetString(h, RPMTAG_SHA256HEADER) : NULL;
    if (!k && h)
        k = headerGetString(h, RPMTAG_SHA1HEADER);
    char *key = strdup(k ? k : rpmteNEVRA(te));
    headerFree(h);
    return key;
}

static int async_abi = 1;            /* cleared for rpm < 4.18 (no fd in the hook) */

static rpmRC cow_psm_pre(rpmPlugin plugin, rpmte te)
{
    struct cow *c = state(plugin);
    drain(c);
    serve_reset(&c->s);
    pkg_reset(&c->pkg);
    serve_flags(0);
    if (rpmteType(te) != TR_ADDED)
        return RPMRC_OK;
    char *map = rpmExpand("%{?_rpmcow_map}", NULL);
    char *key = te_key(te);
    struct pkg *P = &c->pkg;
    rpmRC rc = RPMRC_OK;
    if (unverified_ts != NULL && unverified_ts == serve_ts && !judged(key)) {
        /* the real run's verification pass did not run (served_only).  Only
         * dnf5 gets here, which keeps rpm's messages in its log and shows
         * none for a package failed before it unpacks: the terminal would
         * say no more than "Transaction failed".  Say it there too. */
#define REFUSED "cow: %s: not the package rpmcow checked (its header changed after " \
                "rpm's test run): refused\n"
        rpmlog(RPMLOG_ERR, REFUSED, rpmteNEVRA(te));
        fprintf(stderr, REFUSED, rpmteNEVRA(te));
#undef REFUSED
        free(map);
        free(key);
        return RPMRC_FAIL;
    }
    int n = map && key ? map_lookup(map, key, &P->fd, &P->blk, &P->last) : -1;
    if (n < 2 && key && serve_start(c, te, key) == 1) {
        n = 2;                       /* ours, without the worker (no gate) */
        serve_flags(1);
    }
    if (key)
        put_package_digests(te, key);
    if (n < 2) {
        char *v = rpmExpand("%{?_rpmcow_verify}", NULL);
        if (v && strcmp(v, "1") == 0)
            P->verify = 1;
        if (P->verify || P->serve_missed)
            P->nevra = strdup(rpmteNEVRA(te));
        free(v);
    } else {
        P->active = 1;
        P->async = n == 3 && async_abi;
        P->nevra = strdup(rpmteNEVRA(te));
        P->tails = open_tails(rpmteNEVRA(te), P->fd);
#ifdef RPMCOW_TEST_HOOKS
        P->fault = getenv("RPMCOW_TEST_FAULT_PATH");
        if (P->fault && !*P->fault)
            P->fault = NULL;
        const char *delay = getenv("RPMCOW_TEST_FAULT_DELAY_MS");
        P->fault_delay_ms = delay && *delay ? strtol(delay, NULL, 10) : 0;
        if (P->fault_delay_ms < 0 || P->fault_delay_ms > 10000)
            P->fault_delay_ms = 0;
#endif
        if (P->table == NULL && load_table(P) < 0) {    /* (served: loaded already) */
            rpmlog(RPMLOG_ERR, "cow: %s: cannot read the extents file's table\n",
                   rpmteNEVRA(te));
            rc = RPMRC_FAIL;
        }
        active_cow = c;
    }
    free(map);
    free(key);
    return rc;
}

static void record_result(const struct pkg *P, int ok)
{
    if (nresults == results_cap) {
        unsigned cap = results_cap ? 2 * results_cap : 16;
        struct result *r = realloc(results, cap * sizeof(*r));
        if (r == NULL)
            return;                  /* the report lacks a line; the install is fine */
        results = r;
        results_cap = cap;
    }
    char *nevra = strdup(P->nevra ? P->nevra : "?");
    if (nevra == NULL)
        return;
    results[nresults++] = (struct result){.nevra = nevra, .cloned = P->cloned,
                                          .copied = P->copied, .ok = ok,
                                          .copy_why = __atomic_load_n(&P->copy_why,
                                                                      __ATOMIC_ACQUIRE)};
}

/* The i-th result (0 <= i): 1 and its fields, or 0 past the last one. */
__attribute__((visibility("default"))) int rpmcow_plugin_result(unsigned i, const char **nevra,
                                                                uint64_t *cloned,
                                                                uint64_t *copied,
                                                                const char **copy_why, int *ok)
{
    if (i >= nresults)
        return 0;
    *nevra = results[i].nevra;
    *cloned = results[i].cloned;
    *copied = results[i].copied;
    *copy_why = results[i].copy_why;
    *ok = results[i].ok;
    return 1;
}

__attribute__((visibility("default"))) void rpmcow_plugin_clear_results(void)
{
    for (unsigned i = 0; i < nresults; i++)
        free(results[i].nevra);
    free(results);
    results = NULL;
    nresults = results_cap = 0;
}

/* The cache does not keep extents files (%_rpmcow_discard: dnf5 with
 * keepcache=0): remove a served package's once it is installed.  Its
 * blocks that the installed files share stay where they are; what goes
 * are the ones no file shares (small files and last partial blocks, which
 * were written again), so the cache and the root never hold both for the
 * whole transaction.  Only the very inode that was served, through the
 * front end's "/". */
static void discard_extents(const struct serve *s)
{
    if (s->discard == NULL || s->discard[0] != '/')
        return;
    const char *rel = s->discard;
    int dir = root_fd >= 0 ? root_fd : AT_FDCWD;
    if (root_fd >= 0)
        while (*rel == '/')
            rel++;
    struct stat st;
    if (fstatat(dir, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_dev == s->discard_dev && (uint64_t)st.st_ino == s->discard_ino)
        unlinkat(dir, rel, 0);       /* failing: finish removes it */
}

static rpmRC cow_psm_post(rpmPlugin plugin, rpmte te, int res)
{
    struct cow *c = state(plugin);
    struct pkg *P = &c->pkg;
    drain(c);
    if (c->s.running) {
        /* rpm is done with the payload: the feeder is stopped and joined;
         * where rpm failed the package, a feed that failed says why */
        shutdown(c->s.sock, SHUT_RDWR);
        pthread_join(c->s.thread, NULL);
        c->s.running = 0;
        if (c->s.rc != RC_OK && res != RPMRC_OK)
            rpmlog(RPMLOG_ERR, "cow: %s: feeding rpm failed: %s\n",
                   P->nevra ? P->nevra : rpmteNEVRA(te), c->s.err.msg);
        if (res == RPMRC_OK && !P->failed)
            discard_extents(&c->s);
        serve_reset(&c->s);
    }
    if (P->active) {
        say_copying_now(P);
        record_result(P, res == RPMRC_OK && !P->failed);
        /* a failure no hook could report: with the installer's trailer
         * check this cannot happen; say so loudly if it does */
        if (P->failed && !P->reported && res == RPMRC_OK)
            rpmlog(RPMLOG_ERR, "%scow: %s: that failure came too late to fail the package, "
                   "which is damaged\n", P->err, P->nevra);
        rpmlog(RPMLOG_DEBUG, "cow: %s: %llu bytes cloned, %llu copied\n", P->nevra,
               (unsigned long long)P->cloned, (unsigned long long)P->copied);
    }
    if (active_cow == c)
        active_cow = NULL;
    pkg_reset(P);
    return RPMRC_OK;
}

static rpmRC cow_file_pre(rpmPlugin plugin, rpmfi fi, const char *path, mode_t mode,
                          rpmFsmOp op)
{
    (void)path;
    (void)mode;
    (void)op;
    struct cow *c = state(plugin);
    if (!c->pkg.active || fi == NULL)
        return RPMRC_OK;
    if (c->pkg.async && (uint32_t)rpmfiFX(fi) == c->pkg.last)
        drain(c);                    /* the last entry: nothing may be left behind */
    return report(c);
}

/* ---- checking what rpm wrote for a package that is not ours --------------- */

/* The file rpm is writing, opened for reading: rpm 4.16/4.17 give its full
 * path, rpm 4.18 and later its name in its directory (rpm works through
 * directory descriptors; the process is chrooted into the root, so the
 * header's directory names it).  It must be the very inode of `fd` where
 * rpm gave one.  -1 with errno set otherwise. */
static int open_written(rpmfi fi, const char *path, int fd)
{
    char *full = NULL;
    if (path[0] != '/') {
        const char *dn = rpmfiDN(fi);
        size_t dl = dn ? strlen(dn) : 0, pl = strlen(path);
        full = malloc(dl + pl + 2);
        if (full == NULL)
            return -1;
        memcpy(full, dn, dl);
        if (dl == 0 || full[dl - 1] != '/')
            full[dl++] = '/';
        memcpy(full + dl, path, pl + 1);
        path = full;
    }
    int rfd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    int e = errno;
    free(full);
    if (rfd < 0) {
        errno = e;
        return -1;
    }
    struct stat a, b;
    if (fstat(rfd, &a) < 0 || !S_ISREG(a.st_mode) ||
        (fd >= 0 && (fstat(fd, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino))) {
        close(rfd);
        errno = ESTALE;              /* not the file rpm is writing */
        return -1;
    }
    return rfd;
}

/* rpm's own file-digest check, for a package installed the stock way in a
 * transaction without it: the file's content must have the header's digest. */
static rpmRC verify_written(struct cow *c, rpmfi fi, int fd, const char *path, mode_t mode,
                            rpmFsmOp op)
{
    struct pkg *P = &c->pkg;
    if (fi == NULL || !S_ISREG(mode) || XFA_ACTION(op) == FA_TOUCH)
        return RPMRC_OK;             /* nothing written (rpm checks nothing either) */
    int algo = 0;
    size_t want_len = 0;
    const unsigned char *want = rpmfiFDigest(fi, &algo, &want_len);
    if (want == NULL || want_len == 0)
        return RPMRC_OK;             /* no digest to check against (as rpm) */
    const char *what = "cannot read the file written";
    int e = 0;
    int rfd = open_written(fi, path, fd);
    if (rfd < 0) {
        e = errno;
        goto fail;
    }
    DIGEST_CTX ctx = rpmDigestInit(algo, RPMDIGEST_NONE);
    if (ctx == NULL) {
        close(rfd);
        what = "unknown file digest algorithm";
        e = ENOTSUP;
        goto fail;
    }
    for (;;) {
        ssize_t r = read(rfd, c->readbuf, sizeof(c->readbuf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = errno;
            break;
        }
        if (r == 0)
            break;
        rpmDigestUpdate(ctx, c->readbuf, (size_t)r);
    }
    close(rfd);
    void *got = NULL;
    size_t got_len = 0;
    rpmDigestFinal(ctx, &got, &got_len, 0);
    if (e == 0 && got != NULL && got_len == want_len && memcmp(got, want, want_len) == 0) {
        free(got);
        return RPMRC_OK;
    }
    free(got);
    if (e == 0) {
        rpmlog(RPMLOG_ERR, "cow: %s: %s: Digest mismatch (the file's content does not "
               "match its header digest)\n", P->nevra, rpmfiFN(fi));
        return RPMRC_FAIL;
    }
fail:
    rpmlog(RPMLOG_ERR, "cow: %s: %s: %s: %s\n", P->nevra, rpmfiFN(fi), what, strerror(e));
    return RPMRC_FAIL;
}

/* rpm unpacks a package that was to be served, from the original: say so */
static void say_not_served(struct pkg *P)
{
    if (P->serve_missed) {
        rpmlog(RPMLOG_WARNING, "cow: %s: installing the stock way: %s\n",
               P->nevra ? P->nevra : "?", P->serve_missed);
        P->serve_missed = NULL;
    }
}

static rpmRC prepare(struct cow *c, rpmfi fi, int fd, const char *path, mode_t mode,
                     rpmFsmOp op)
{
    struct pkg *P = &c->pkg;
    say_not_served(P);
    if (P->verify)
        return verify_written(c, fi, fd, path, mode, op);
    if (!P->active)
        return RPMRC_OK;
    if (report(c) != RPMRC_OK)
        return RPMRC_FAIL;
    int last = P->async && fi && (uint32_t)rpmfiFX(fi) == P->last;
    if (last)
        drain(c);
    if (fd < 0 || !S_ISREG(mode) || XFA_ACTION(op) == FA_TOUCH || P->blk == 0)
        return report(c);
    uint64_t size = (uint64_t)rpmfiFSize(fi);
    if (size == 0 || (size < P->blk && (P->tails < 0 ||
                                        __atomic_load_n(&P->copy_why, __ATOMIC_ACQUIRE))))
        return report(c);            /* fed for real (and no tail to share) */
    size_t dlen = 0;
    const unsigned char *digest = rpmfiFDigest(fi, NULL, &dlen);
    int64_t off = digest ? lookup(P, digest, dlen) : -1;
    if (off < 0 && size < P->blk)
        return report(c);            /* fed for real: nothing to share it from */
    if (off < 0) {
        record_failure(c, path, "no blob for this file in the extents file", ENOENT);
        return report(c);
    }
    const char *fcaps = rpmfiFCaps(fi);
    struct job j = {.fd = fd, .off = (uint64_t)off, .head = size - size % P->blk,
                    .tail = size % P->blk, .mtime = (time_t)rpmfiFMtime(fi),
                    .caps = fcaps && *fcaps, .path = (char *)path};
    if (P->async && !last) {
        /* rpm closes fd when we return: the worker gets its own */
        j.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        j.path = strdup(path);
        if (j.fd >= 0 && j.path && enqueue(c, &j) == 0)
            return RPMRC_OK;
        if (j.fd >= 0)
            close(j.fd);
        free(j.path);
        j.fd = fd;                   /* no worker: do it here */
        j.path = (char *)path;
        drain(c);
    }
    run_job(c, &j);
    return report(c);
}

static rpmRC cow_prepare(rpmPlugin plugin, rpmfi fi, int fd, const char *path,
                         const char *dest, mode_t mode, rpmFsmOp op)
{
    (void)dest;
    return prepare(state(plugin), fi, fd, path, mode, op);
}

/* rpm 4.16/4.17: no fd; open the file being written ourselves */
static rpmRC cow_prepare_416(rpmPlugin plugin, rpmfi fi, const char *path,
                             const char *dest, mode_t mode, rpmFsmOp op)
{
    (void)dest;
    struct cow *c = state(plugin);
    say_not_served(&c->pkg);
    if (c->pkg.verify)
        return verify_written(c, fi, -1, path, mode, op);
    if (!c->pkg.active || !S_ISREG(mode) || XFA_ACTION(op) == FA_TOUCH)
        return RPMRC_OK;
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        record_failure(c, path, "cannot open", errno);
        return report(c);
    }
    rpmRC rc = prepare(c, fi, fd, path, mode, op);
    close(fd);
    return rc;
}

__attribute__((visibility("default"))) struct rpmPluginHooks_s cow_hooks = {
    .init = cow_init,
    .cleanup = cow_cleanup,
    .tsm_pre = cow_tsm_pre,
    .tsm_post = cow_tsm_post,
    .psm_pre = cow_psm_pre,
    .psm_post = cow_psm_post,
    .fsm_file_pre = cow_file_pre,
    .fsm_file_prepare = (void *)cow_prepare,
};

/* pick the prepare hook matching the librpm that loaded us */
__attribute__((constructor)) static void cow_pick_abi(void)
{
    int major = 0, minor = 0;
    if (sscanf(RPMVERSION, "%d.%d", &major, &minor) == 2 && (major == 4 && minor < 18)) {
        cow_hooks.fsm_file_prepare = (void *)cow_prepare_416;
        async_abi = 0;
    }
}

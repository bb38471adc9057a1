/* rpm plugin "cow": file data by cloning from an extents file.
 *
 * rpmcow's installer feeds rpm a payload whose regular files carry zeros
 * for their whole blocks (and real bytes for the last partial one).  After
 * rpm has written a file and set its metadata, fsm_file_prepare replaces
 * the zeros: read the tail back from the page cache, truncate to 0 (which
 * drops rpm's dirty zero pages without writing them), close the read fd
 * (clears XFS's flush-on-close flag), FICLONERANGE the whole blocks from
 * the extents file, write the tail, restore file capabilities and mtime.
 * Where the filesystem cannot clone (other filesystem, no reflink, blocks
 * not aligned) the blocks are copied instead, with one warning per package.
 * Any other failure fails the package and rpm rolls it back.
 *
 * Loaded only when %__transaction_cow is defined -- rpmcow's installer does
 * that in its own process -- and active only for the packages listed in
 * %_rpmcow_map ("KEY=FD:BLK ...", KEY the header's SHA256HEADER, else
 * SHA1HEADER, else NEVRA; FD the open extents file; BLK the feed's block
 * size).  Everything is static except the hooks table at the bottom. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <rpm/header.h>
#include <rpm/rpmfi.h>
#include <rpm/rpmlib.h>
#include <rpm/rpmlog.h>
#include <rpm/rpmmacro.h>
#include <rpm/rpmte.h>
#include <rpm/rpmts.h>

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
    int fd;                  /* the extents file (the installer's fd) */
    uint32_t blk;            /* whole blocks of this size were fed as zeros */
    uint32_t count, keysize;
    uint8_t *table;          /* count x (digest, le64 offset) */
    uint64_t fs_blk;         /* block size of the target filesystem */
    int copying;             /* cannot clone: copy (said once) */
    char *nevra;
    uint64_t cloned, copied;
};

struct cow {
    struct pkg pkg;
    uint8_t tail[MAX_BLK];
    uint8_t copybuf[1u << 16];
};

static struct cow *fallback_state;   /* rpm < 4.17 has no plugin data */

static struct cow *state(rpmPlugin plugin)
{
    return rpmPluginGetData ? rpmPluginGetData(plugin) : fallback_state;
}

static void pkg_reset(struct pkg *P)
{
    free(P->table);
    free(P->nevra);
    memset(P, 0, sizeof(*P));
    P->fd = -1;
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
        if (r <= 0)
            return -1;
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

/* ---- hooks ------------------------------------------------------------- */

static rpmRC cow_init(rpmPlugin plugin, rpmts ts)
{
    (void)ts;
    struct cow *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return RPMRC_FAIL;
    c->pkg.fd = -1;
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
        pkg_reset(&c->pkg);
        free(c);
    }
    if (!rpmPluginSetData)
        fallback_state = NULL;
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

/* find "KEY=FD:BLK" in the map */
static int map_lookup(const char *map, const char *key, int *fd, uint32_t *blk)
{
    size_t klen = strlen(key);
    const char *p = map;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            unsigned f, b;
            if (sscanf(p + klen + 1, "%u:%u", &f, &b) == 2 && b <= MAX_BLK) {
                *fd = (int)f;
                *blk = b;
                return 0;
            }
            return -1;
        }
        p = strpbrk(p, " \t\n");
    }
    return -1;
}

static rpmRC cow_psm_pre(rpmPlugin plugin, rpmte te)
{
    struct cow *c = state(plugin);
    pkg_reset(&c->pkg);
    if (rpmteType(te) != TR_ADDED)
        return RPMRC_OK;
    char *map = rpmExpand("%{?_rpmcow_map}", NULL);
    char *key = te_key(te);
    struct pkg *P = &c->pkg;
    rpmRC rc = RPMRC_OK;
    if (map && key && map_lookup(map, key, &P->fd, &P->blk) == 0) {
        P->active = 1;
        P->nevra = strdup(rpmteNEVRA(te));
        if (load_table(P) < 0) {
            rpmlog(RPMLOG_ERR, "cow: %s: cannot read the extents file's table\n",
                   rpmteNEVRA(te));
            rc = RPMRC_FAIL;
        }
    }
    free(map);
    free(key);
    return rc;
}

static rpmRC cow_psm_post(rpmPlugin plugin, rpmte te, int res)
{
    (void)te;
    (void)res;
    struct cow *c = state(plugin);
    if (c->pkg.active)
        rpmlog(RPMLOG_DEBUG, "cow: %s: %llu bytes cloned, %llu copied\n", c->pkg.nevra,
               (unsigned long long)c->pkg.cloned, (unsigned long long)c->pkg.copied);
    pkg_reset(&c->pkg);
    return RPMRC_OK;
}

static void say_copying(struct pkg *P, const char *why)
{
    if (!P->copying)
        rpmlog(RPMLOG_WARNING, "cow: %s: %s: copying file data instead of cloning\n",
               P->nevra, why);
    P->copying = 1;
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
        if (read_exact(P->fd, c->copybuf, k, src) < 0 ||
            pwrite(fd, c->copybuf, k, dst) != (ssize_t)k)
            return -1;
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

static rpmRC fail(struct pkg *P, const char *path, const char *what)
{
    rpmlog(RPMLOG_ERR, "cow: %s: %s: %s: %s\n", P->nevra, path, what, strerror(errno));
    return RPMRC_FAIL;
}

static rpmRC prepare(struct cow *c, rpmfi fi, int fd, const char *path, mode_t mode,
                     rpmFsmOp op)
{
    struct pkg *P = &c->pkg;
    if (!P->active || fd < 0 || !S_ISREG(mode) || XFA_ACTION(op) == FA_TOUCH || P->blk == 0)
        return RPMRC_OK;
    uint64_t size = (uint64_t)rpmfiFSize(fi);
    if (size < P->blk)
        return RPMRC_OK;             /* fed for real */
    size_t dlen = 0;
    const unsigned char *digest = rpmfiFDigest(fi, NULL, &dlen);
    int64_t off = digest ? lookup(P, digest, dlen) : -1;
    if (off < 0) {
        errno = ENOENT;
        return fail(P, path, "no blob for this file in the extents file");
    }
    uint64_t head = size - size % P->blk, tail = size - head;

    if (P->fs_blk == 0) {
        struct statfs sfs;
        P->fs_blk = fstatfs(fd, &sfs) == 0 && sfs.f_bsize > 0 ? (uint64_t)sfs.f_bsize : 4096;
    }
    uint8_t caps[256];
    ssize_t caplen = -1;
    const char *fcaps = rpmfiFCaps(fi);
    if (fcaps && *fcaps)
        caplen = fgetxattr(fd, "security.capability", caps, sizeof(caps));

    int clone = !P->copying;
    if (clone && ((uint64_t)off % P->fs_blk || head % P->fs_blk)) {
        say_copying(P, "blobs are not aligned to this filesystem's blocks");
        clone = 0;
    }
    if (clone) {
        int ro = -1;
        if (tail) {
            ro = open(path, O_RDONLY | O_CLOEXEC);
            if (ro < 0 || read_exact(ro, c->tail, (size_t)tail, (off_t)head) < 0) {
                if (ro >= 0)
                    close(ro);
                return fail(P, path, "cannot read back the last block");
            }
        }
        int tr = ftruncate(fd, 0);
        if (ro >= 0)
            close(ro);               /* clears XFS's flush-on-close after truncation */
        if (tr < 0)
            return fail(P, path, "cannot truncate");
        struct file_clone_range r = {.src_fd = P->fd, .src_offset = (uint64_t)off,
                                     .src_length = head, .dest_offset = 0};
        if (ioctl(fd, FICLONERANGE, &r) == 0) {
            P->cloned += head;
        } else if (cannot_clone(errno)) {
            say_copying(P, errno == EXDEV ? "the extents file is on another filesystem"
                                          : "this filesystem cannot clone");
            if (copy_blocks(c, fd, (uint64_t)off, head) < 0)
                return fail(P, path, "cannot copy");
        } else {
            return fail(P, path, "cannot clone");
        }
        if (tail && pwrite(fd, c->tail, (size_t)tail, (off_t)head) != (ssize_t)tail)
            return fail(P, path, "cannot write the last block");
    } else if (copy_blocks(c, fd, (uint64_t)off, head) < 0) {
        return fail(P, path, "cannot copy");
    }

    if (caplen > 0 && fsetxattr(fd, "security.capability", caps, (size_t)caplen, 0) < 0)
        return fail(P, path, "cannot restore file capabilities");
    struct timespec ts[2] = {{.tv_sec = (time_t)rpmfiFMtime(fi)},
                             {.tv_sec = (time_t)rpmfiFMtime(fi)}};
    if (futimens(fd, ts) < 0)
        return fail(P, path, "cannot restore mtime");
    return RPMRC_OK;
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
    if (!c->pkg.active || !S_ISREG(mode) || XFA_ACTION(op) == FA_TOUCH)
        return RPMRC_OK;
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return fail(&c->pkg, path, "cannot open");
    rpmRC rc = prepare(c, fi, fd, path, mode, op);
    close(fd);
    return rc;
}

struct rpmPluginHooks_s cow_hooks = {
    .init = cow_init,
    .cleanup = cow_cleanup,
    .psm_pre = cow_psm_pre,
    .psm_post = cow_psm_post,
    .fsm_file_prepare = (void *)cow_prepare,
};

/* pick the prepare hook matching the librpm that loaded us */
__attribute__((constructor)) static void cow_pick_abi(void)
{
    int major = 0, minor = 0;
    if (sscanf(RPMVERSION, "%d.%d", &major, &minor) == 2 && (major == 4 && minor < 18))
        cow_hooks.fsm_file_prepare = (void *)cow_prepare_416;
}

/* The FUSE head (fmount.h).
 *
 * Inodes are element ids, except that the mount's root element is inode 1
 * (FUSE_ROOT_ID), so the kernel's lookup counts need no table and forget is
 * free. Elements stay readable while open even after their last name goes
 * (pinned from open to release).
 *
 * Caching: the kernel caches attributes and names for FM_TIMEOUT and file
 * pages until told otherwise. Changes made through this mount reach the
 * kernel with the replies; changes made through any other head arrive as
 * store change notes (pl_store_watch) and become invalidations, sent from a
 * thread of their own: the kernel may wait on a request of ours while
 * invalidating, so nothing that serves requests may send them.
 *
 * Writes: a write returns once copied into the write-back (proto/wb); close
 * (flush), fsync, reads, truncates and fallocate settle the file first, so
 * what another head sees after close is what was written, and a failed
 * write-back is reported by close or fsync. A change of mode, owner or times
 * of a file with data in flight waits there with the data (attributes read
 * through this mount show it at once).
 */
#define FUSE_USE_VERSION 312
#include "proto/fuse/fmount.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/base.h"
#include "proto/wb/wb.h"

#define FM_TIMEOUT 5.0 /* seconds the kernel may cache names and attributes */
#define FM_IO_MAX (1u << 20) /* max_write, and the read buffer */
#define FM_INVAL_MAX 65536 /* queued invalidations beyond this are dropped */
#define FM_DIR_BATCH 512 /* entries read from the store at a time */

struct inval {
    int kind;
    uint64_t id;
    struct inval *next;
    char name[];
};

struct fmount {
    struct pl_store *st;
    uint64_t root;
    char *path, *mountpoint;
    int readonly;
    dev_t dev; /* of the mount, for sysfs */
    struct fuse_session *se;
    struct fuse_loop_config *loop_cfg;
    struct wb *wb;
    pthread_t loop_thr, inval_thr;
    int loop_started, inval_started, watching;
    int ended; /* the request loop returned */
    /* invalidations waiting for the kernel */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct inval *qhead, *qtail;
    size_t qlen;
    int qstop;
    uint64_t qdropped;
};

/* ---- helpers ---- */
static int fm_errno(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case PL_ENOBUCKET:
    case PL_ENOSNAP:
    case PL_ENOVERSION:
        return ENOENT;
    case PL_ECONFLICT:
        return EEXIST;
    case PL_ENODEVS:
    case PL_ECORRUPT:
        return EIO;
    default:
        /* system codes are negated errnos; our own start at -1000 */
        return rc < 0 && rc > -1000 ? -rc : EIO;
    }
}

/* For requests that name an inode: when its element went (replaced by a PUT
 * elsewhere, say) the kernel's name cache is behind. ESTALE makes the VFS
 * look the path up again, so open() and stat() of a name that always existed
 * never fail with ENOENT. */
static int fm_errno_ino(int rc)
{
    return rc == PL_ENOENT ? ESTALE : fm_errno(rc);
}

static fuse_ino_t fm_ino(const struct fmount *m, uint64_t id)
{
    return id == m->root ? FUSE_ROOT_ID : id;
}

static uint64_t fm_id(const struct fmount *m, fuse_ino_t ino)
{
    return ino == FUSE_ROOT_ID ? m->root : ino;
}

/* Every request starts here: our own store changes are tagged so the
 * watcher does not invalidate what the kernel already knows, and need not
 * be durable before fsync, as on a local file system (a `tar x` of 9,000
 * files makes some 40,000 changes). */
static struct fmount *fm_enter(fuse_req_t req)
{
    struct fmount *m = fuse_req_userdata(req);
    pl_store_origin(m);
    pl_store_actor("fuse", NULL);
    pl_store_lazy(1);
    return m;
}

static void fm_stat(const struct fmount *m, const struct pl_attr *a, struct stat *s)
{
    memset(s, 0, sizeof(*s));
    s->st_ino = fm_ino(m, a->id);
    s->st_mode = (a->mode & 07777) |
                 (a->type == PL_T_DIR ? S_IFDIR : a->type == PL_T_SYMLINK ? S_IFLNK : S_IFREG);
    s->st_nlink = a->nlink;
    s->st_uid = a->uid;
    s->st_gid = a->gid;
    s->st_size = (off_t)a->size;
    s->st_blksize = FM_IO_MAX;
    s->st_blocks = (blkcnt_t)((a->size + 511) / 512);
    s->st_atim = (struct timespec){a->atime / 1000000000, a->atime % 1000000000};
    s->st_mtim = (struct timespec){a->mtime / 1000000000, a->mtime % 1000000000};
    s->st_ctim = (struct timespec){a->ctime / 1000000000, a->ctime % 1000000000};
}

static int fm_getattr_id(struct fmount *m, uint64_t id, struct pl_attr *a)
{
    int rc = pl_elem_getattr(m->st, id, PL_VIEW_LIVE, a);
    if (!rc && a->type == PL_T_FILE)
        wb_attr(m->wb, a);
    return rc;
}

static void fm_entry(const struct fmount *m, const struct pl_attr *a, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = fm_ino(m, a->id);
    e->generation = a->gen;
    e->attr_timeout = FM_TIMEOUT;
    e->entry_timeout = FM_TIMEOUT;
    fm_stat(m, a, &e->attr);
}

static void reply_entry_rc(fuse_req_t req, struct fmount *m, int rc, const struct pl_attr *a)
{
    struct fuse_entry_param e;
    if (rc) {
        fuse_reply_err(req, fm_errno(rc));
        return;
    }
    fm_entry(m, a, &e);
    fuse_reply_entry(req, &e);
}

/* The read buffer of this request thread (libfuse starts and ends them). */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

static void buf_key_make(void)
{
    if (pthread_key_create(&buf_key, free))
        abort(); /* only when the process is out of keys: nothing can work */
}

static void *thread_buf(void)
{
    pthread_once(&buf_once, buf_key_make);
    void *b = pthread_getspecific(buf_key);
    if (!b) {
        b = malloc(FM_IO_MAX);
        if (b && pthread_setspecific(buf_key, b)) {
            free(b);
            b = NULL;
        }
    }
    return b;
}

/* ---- names and attributes ---- */
static void fm_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fmount *m = fm_enter(req);
    struct pl_attr a;
    int rc = pl_elem_lookup(m->st, fm_id(m, parent), name, PL_VIEW_LIVE, &a);
    if (rc == PL_ENOENT) {
        /* a negative entry, cached like a positive one; a create elsewhere
         * invalidates it */
        struct fuse_entry_param e = {.entry_timeout = FM_TIMEOUT};
        fuse_reply_entry(req, &e);
        return;
    }
    if (!rc && a.type == PL_T_FILE)
        wb_attr(m->wb, &a);
    reply_entry_rc(req, m, rc, &a);
}

static void fm_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    struct pl_attr a;
    struct stat s;
    int rc = fm_getattr_id(m, fm_id(m, ino), &a);
    if (rc) {
        fuse_reply_err(req, fm_errno_ino(rc));
        return;
    }
    fm_stat(m, &a, &s);
    fuse_reply_attr(req, &s, FM_TIMEOUT);
}

static void fm_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *in, int to_set,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    struct pl_attr want = {0}, a;
    unsigned mask = 0;
    int64_t now = pl_now_ns();
    if (to_set & FUSE_SET_ATTR_MODE) {
        mask |= PL_SET_MODE;
        want.mode = in->st_mode & 07777;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        mask |= PL_SET_UID;
        want.uid = in->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        mask |= PL_SET_GID;
        want.gid = in->st_gid;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        mask |= PL_SET_SIZE;
        want.size = (uint64_t)in->st_size;
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
        mask |= PL_SET_ATIME;
        want.atime = to_set & FUSE_SET_ATTR_ATIME_NOW
                         ? now
                         : in->st_atim.tv_sec * 1000000000ll + in->st_atim.tv_nsec;
    }
    if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
        mask |= PL_SET_MTIME;
        want.mtime = to_set & FUSE_SET_ATTR_MTIME_NOW
                         ? now
                         : in->st_mtim.tv_sec * 1000000000ll + in->st_mtim.tv_nsec;
    }
    int rc;
    if (wb_setattr(m->wb, id, mask, &want)) {
        /* mode, owner and times of a file being written wait with its
         * data and go with it (tar sets all three before closing) */
        rc = fm_getattr_id(m, id, &a);
    } else {
        /* a new size or times apply after the writes before them */
        rc = wb_settle(m->wb, id);
        if (!rc)
            rc = pl_elem_setattr(m->st, id, mask, &want, &a);
    }
    if (rc) {
        fuse_reply_err(req, fm_errno_ino(rc));
        return;
    }
    struct stat s;
    fm_stat(m, &a, &s);
    fuse_reply_attr(req, &s, FM_TIMEOUT);
}

static void fm_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fmount *m = fm_enter(req);
    char buf[PL_PATH_MAX + 1];
    int rc = pl_elem_readlink(m->st, fm_id(m, ino), PL_VIEW_LIVE, buf, sizeof(buf));
    if (rc)
        fuse_reply_err(req, fm_errno_ino(rc));
    else
        fuse_reply_readlink(req, buf);
}

static void fm_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)rdev;
    struct fmount *m = fm_enter(req);
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct pl_attr a;
    if (!S_ISREG(mode)) {
        fuse_reply_err(req, EPERM); /* devices, FIFOs and sockets are not elements */
        return;
    }
    int rc = pl_elem_create(m->st, fm_id(m, parent), name, mode & 07777, c->uid, c->gid, 1, &a);
    reply_entry_rc(req, m, rc, &a);
}

static void fm_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fmount *m = fm_enter(req);
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct pl_attr a;
    int rc = pl_elem_mkdir(m->st, fm_id(m, parent), name, mode & 07777, c->uid, c->gid, &a);
    reply_entry_rc(req, m, rc, &a);
}

static void fm_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
    struct fmount *m = fm_enter(req);
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct pl_attr a;
    int rc = pl_elem_symlink(m->st, fm_id(m, parent), name, target, c->uid, c->gid, &a);
    reply_entry_rc(req, m, rc, &a);
}

static void fm_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name)
{
    struct fmount *m = fm_enter(req);
    struct pl_attr a;
    int rc = pl_elem_link(m->st, fm_id(m, ino), fm_id(m, parent), name, &a);
    if (!rc && a.type == PL_T_FILE)
        wb_attr(m->wb, &a);
    if (rc == PL_ENOENT)
        rc = -ESTALE;
    reply_entry_rc(req, m, rc, &a);
}

static void fm_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fmount *m = fm_enter(req);
    fuse_reply_err(req, fm_errno(pl_elem_unlink(m->st, fm_id(m, parent), name)));
}

static void fm_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fmount *m = fm_enter(req);
    fuse_reply_err(req, fm_errno(pl_elem_rmdir(m->st, fm_id(m, parent), name)));
}

static void fm_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct fmount *m = fm_enter(req);
    struct pl_attr a;
    if (flags & ~(unsigned)RENAME_NOREPLACE) {
        fuse_reply_err(req, EINVAL); /* RENAME_EXCHANGE, RENAME_WHITEOUT */
        return;
    }
    if ((flags & RENAME_NOREPLACE) &&
        pl_elem_lookup(m->st, fm_id(m, newparent), newname, PL_VIEW_LIVE, &a) == 0) {
        fuse_reply_err(req, EEXIST);
        return;
    }
    int rc = pl_elem_rename(m->st, fm_id(m, parent), name, fm_id(m, newparent), newname);
    fuse_reply_err(req, fm_errno(rc));
}

/* ---- files ---- */
static void fm_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    struct pl_attr a;
    int rc = pl_elem_open(m->st, id, &a);
    if (!rc && a.type == PL_T_DIR) {
        pl_elem_unpin(m->st, id);
        rc = PL_EISDIR;
    }
    if (rc) {
        fuse_reply_err(req, fm_errno_ino(rc));
        return;
    }
    fi->keep_cache = 1; /* other heads' changes invalidate the pages */
    if (fuse_reply_open(req, fi))
        pl_elem_unpin(m->st, id); /* the opener went away: no release follows */
}

static void fm_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct fmount *m = fm_enter(req);
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct pl_attr a;
    struct fuse_entry_param e;
    int rc = pl_elem_create(m->st, fm_id(m, parent), name, mode & 07777, c->uid, c->gid,
                            (fi->flags & O_EXCL) != 0, &a);
    if (!rc && a.type != PL_T_FILE)
        rc = a.type == PL_T_DIR ? PL_EISDIR : PL_EEXIST;
    if (!rc && (fi->flags & O_TRUNC) && a.size) {
        struct pl_attr z = {0};
        rc = wb_settle(m->wb, a.id);
        if (!rc)
            rc = pl_elem_setattr(m->st, a.id, PL_SET_SIZE, &z, &a);
    }
    if (!rc)
        rc = pl_elem_open(m->st, a.id, &a);
    if (rc) {
        fuse_reply_err(req, fm_errno(rc));
        return;
    }
    fi->keep_cache = 1;
    fm_entry(m, &a, &e);
    if (fuse_reply_create(req, &e, fi))
        pl_elem_unpin(m->st, a.id);
}

static void fm_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    void *buf = thread_buf();
    size_t n = 0;
    int rc = buf ? wb_settle(m->wb, id) : PL_ENOMEM;
    if (!rc)
        rc = pl_elem_read(m->st, id, PL_VIEW_LIVE, (uint64_t)off, buf, PL_MIN(size, FM_IO_MAX),
                          &n);
    if (rc)
        fuse_reply_err(req, fm_errno_ino(rc));
    else
        fuse_reply_buf(req, buf, n);
}

static void fm_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    int rc = off < 0 ? PL_EINVAL : wb_write(m->wb, fm_id(m, ino), (uint64_t)off, buf, size);
    if (rc)
        fuse_reply_err(req, fm_errno(rc));
    else
        fuse_reply_write(req, size);
}

static void fm_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    fuse_reply_err(req, fm_errno(wb_settle(m->wb, fm_id(m, ino))));
}

static void fm_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    (void)fi;
    struct fmount *m = fm_enter(req);
    /* settled data is durable: every store write is; the changes before
     * it (names, attributes) are made so */
    int rc = wb_settle(m->wb, fm_id(m, ino));
    if (!rc)
        rc = pl_store_sync(m->st);
    fuse_reply_err(req, fm_errno(rc));
}

static void fm_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    int rc = wb_settle(m->wb, id); /* flush reported errors; this one is for the log */
    if (!rc)
        rc = pl_elem_written(m->st, id); /* the last close ends a run of writes */
    if (rc)
        pl_log(PL_LOG_WARN, "fuse", "write-back of element %llu failed at close: %s",
               (unsigned long long)id, pl_strerror(rc));
    pl_elem_unpin(m->st, id);
    fuse_reply_err(req, 0);
}

static void fm_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    struct pl_attr a;
    int rc = off < 0 || len <= 0 ? PL_EINVAL : wb_settle(m->wb, id);
    if (!rc && mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
        rc = pl_elem_punch(m->st, id, (uint64_t)off, (uint64_t)len);
    } else if (!rc && (mode == 0 || mode == FALLOC_FL_KEEP_SIZE)) {
        /* space is thin: reserving it only moves the size */
        rc = pl_elem_getattr(m->st, id, PL_VIEW_LIVE, &a);
        if (!rc && mode == 0 && (uint64_t)off + (uint64_t)len > a.size) {
            a.size = (uint64_t)off + (uint64_t)len;
            rc = pl_elem_setattr(m->st, id, PL_SET_SIZE, &a, &a);
        }
    } else if (!rc) {
        rc = -EOPNOTSUPP;
    }
    fuse_reply_err(req, fm_errno_ino(rc));
}

struct seek_ctx {
    int want_data;
    uint64_t found;
    int hit;
};

static int seek_cb(void *arg, uint64_t off, uint64_t len, int data)
{
    (void)len;
    struct seek_ctx *s = arg;
    if (data == s->want_data) {
        s->found = off;
        s->hit = 1;
        return 1;
    }
    return 0;
}

static void fm_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    (void)fi;
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    struct pl_attr a;
    struct seek_ctx s = {whence == SEEK_DATA, 0, 0};
    int rc = whence == SEEK_DATA || whence == SEEK_HOLE ? wb_settle(m->wb, id) : PL_EINVAL;
    if (!rc)
        rc = pl_elem_getattr(m->st, id, PL_VIEW_LIVE, &a);
    if (!rc && (off < 0 || (uint64_t)off >= a.size))
        rc = -ENXIO;
    if (!rc)
        rc = pl_elem_map(m->st, id, PL_VIEW_LIVE, (uint64_t)off, a.size - (uint64_t)off, seek_cb,
                         &s);
    if (!rc && !s.hit) {
        if (whence == SEEK_DATA)
            rc = -ENXIO;
        else
            s.found = a.size; /* the implicit hole at the end */
    }
    if (rc)
        fuse_reply_err(req, fm_errno_ino(rc));
    else
        fuse_reply_lseek(req, (off_t)PL_MAX(s.found, (uint64_t)off));
}

/* ---- directories ----
 * The kernel resumes a listing by the offset of the last entry it took: entry
 * i of this open directory has offset i + 1, "." and ".." come first. Names
 * read from the store stay in the handle, so seeking back within one open
 * directory is exact even while it changes; rewinding to 0 reads anew. */
struct dent {
    char *name;
    struct pl_attr a;
};

struct dirh {
    struct dent *ents;
    size_t n, cap;
    int eof;
};

static void dirh_clear(struct dirh *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->ents[i].name);
    free(d->ents);
    memset(d, 0, sizeof(*d));
}

struct fill_ctx {
    struct dirh *d;
    size_t want;
    int rc;
};

static int fill_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct fill_ctx *f = arg;
    struct dirh *d = f->d;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        struct dent *ne = realloc(d->ents, cap * sizeof(*ne));
        if (!ne) {
            f->rc = PL_ENOMEM;
            return 1;
        }
        d->ents = ne;
        d->cap = cap;
    }
    char *nm = strdup(name);
    if (!nm) {
        f->rc = PL_ENOMEM;
        return 1;
    }
    d->ents[d->n++] = (struct dent){nm, *a};
    return --f->want == 0;
}

/* Make sure entries up to index upto are read (or the end is known). */
static int dirh_fill(struct fmount *m, uint64_t dir, struct dirh *d, size_t upto)
{
    while (!d->eof && d->n <= upto) {
        struct fill_ctx f = {d, FM_DIR_BATCH, 0};
        size_t before = d->n;
        int rc = pl_dir_read(m->st, dir, PL_VIEW_LIVE, d->n ? d->ents[d->n - 1].name : "",
                             fill_cb, &f);
        if (!rc)
            rc = f.rc;
        if (rc)
            return rc;
        if (d->n - before < FM_DIR_BATCH)
            d->eof = 1;
    }
    return 0;
}

static void fm_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fmount *m = fm_enter(req);
    struct pl_attr a;
    int rc = pl_elem_getattr(m->st, fm_id(m, ino), PL_VIEW_LIVE, &a);
    if (!rc && a.type != PL_T_DIR)
        rc = PL_ENOTDIR;
    struct dirh *d = rc ? NULL : calloc(1, sizeof(*d));
    if (!rc && !d)
        rc = PL_ENOMEM;
    if (rc) {
        fuse_reply_err(req, fm_errno_ino(rc));
        return;
    }
    fi->fh = (uintptr_t)d;
    if (fuse_reply_open(req, fi))
        free(d);
}

static void fm_readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi, int plus)
{
    struct fmount *m = fm_enter(req);
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    uint64_t dir = fm_id(m, ino);
    char *buf = malloc(size);
    size_t used = 0;
    int rc = buf ? 0 : PL_ENOMEM;
    if (!rc && off == 0)
        dirh_clear(d);
    for (uint64_t i = (uint64_t)PL_MAX(off, 0); !rc; i++) {
        struct pl_attr dot;
        const char *name;
        const struct pl_attr *a = &dot;
        if (i < 2) {
            /* "." and "..": only the inode and type matter to the kernel */
            memset(&dot, 0, sizeof(dot));
            dot.type = PL_T_DIR;
            dot.mode = 0755;
            dot.id = dir;
            if (i == 1 && dir != m->root && pl_elem_getattr(m->st, dir, PL_VIEW_LIVE, &dot) == 0)
                dot.id = dot.parent;
            else if (i == 1)
                dot.id = m->root;
            name = i ? ".." : ".";
        } else {
            rc = dirh_fill(m, dir, d, i - 2);
            if (rc || i - 2 >= d->n)
                break;
            name = d->ents[i - 2].name;
            a = &d->ents[i - 2].a;
        }
        size_t need;
        if (plus) {
            struct fuse_entry_param e;
            struct pl_attr wa = *a;
            if (wa.type == PL_T_FILE)
                wb_attr(m->wb, &wa);
            fm_entry(m, &wa, &e);
            if (i < 2)
                e.attr_timeout = e.entry_timeout = 0;
            need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)i + 1);
        } else {
            struct stat s;
            fm_stat(m, a, &s);
            need = fuse_add_direntry(req, buf + used, size - used, name, &s, (off_t)i + 1);
        }
        if (need > size - used)
            break;
        used += need;
    }
    if (rc && !used)
        fuse_reply_err(req, fm_errno(rc));
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

static void fm_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    fm_readdir_any(req, ino, size, off, fi, 0);
}

static void fm_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    fm_readdir_any(req, ino, size, off, fi, 1);
}

static void fm_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    dirh_clear(d);
    free(d);
    fuse_reply_err(req, 0);
}

static void fm_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    struct fmount *m = fm_enter(req);
    fuse_reply_err(req, fm_errno(pl_store_sync(m->st)));
}

static void fm_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fmount *m = fm_enter(req);
    struct pl_store_stats s;
    int rc = pl_store_stats(m->st, &s);
    if (rc) {
        fuse_reply_err(req, fm_errno(rc));
        return;
    }
    struct statvfs v = {0};
    v.f_bsize = 4096;
    v.f_frsize = 4096;
    v.f_blocks = (s.free_bytes + s.physical_bytes) / 4096;
    v.f_bfree = v.f_bavail = s.free_bytes / 4096;
    v.f_files = 1ull << 32;
    v.f_ffree = v.f_favail = v.f_files - PL_MIN(s.elements, v.f_files);
    v.f_namemax = PL_NAME_MAX;
    fuse_reply_statfs(req, &v);
}

/* ---- extended attributes ---- */
static void fm_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    struct fmount *m = fm_enter(req);
    uint64_t id = fm_id(m, ino);
    int rc = 0;
    if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
        ssize_t have = pl_xattr_get(m->st, id, PL_VIEW_LIVE, name, NULL, 0);
        if ((flags & XATTR_CREATE) && have >= 0)
            rc = PL_EEXIST;
        else if ((flags & XATTR_REPLACE) && have == PL_ENODATA)
            rc = PL_ENODATA;
        else if (have < 0 && have != PL_ENODATA)
            rc = (int)have;
    }
    if (!rc)
        rc = pl_xattr_set(m->st, id, name, value, size);
    fuse_reply_err(req, fm_errno_ino(rc));
}

/* getxattr/listxattr: size 0 asks for the length; a value longer than size
 * is ERANGE. Frees buf. */
static void reply_xattr(fuse_req_t req, ssize_t n, char *buf, size_t size)
{
    if (n < 0)
        fuse_reply_err(req, fm_errno_ino((int)n));
    else if (!size)
        fuse_reply_xattr(req, (size_t)n);
    else if ((size_t)n > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

static void fm_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fmount *m = fm_enter(req);
    /* asked before every write to see whether privileges must go; we keep none */
    if (!strcmp(name, "security.capability")) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    char *buf = size ? malloc(size) : NULL;
    ssize_t n = size && !buf ? PL_ENOMEM
                             : pl_xattr_get(m->st, fm_id(m, ino), PL_VIEW_LIVE, name, buf, size);
    reply_xattr(req, n, buf, size);
}

static void fm_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fmount *m = fm_enter(req);
    char *buf = size ? malloc(size) : NULL;
    ssize_t n = size && !buf ? PL_ENOMEM
                             : pl_xattr_list(m->st, fm_id(m, ino), PL_VIEW_LIVE, buf, size);
    reply_xattr(req, n, buf, size);
}

static void fm_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    struct fmount *m = fm_enter(req);
    fuse_reply_err(req, fm_errno_ino(pl_xattr_remove(m->st, fm_id(m, ino), name)));
}

static void fm_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_write = FM_IO_MAX;
    conn->max_readahead = FM_IO_MAX;
    conn->want |= conn->capable & (FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS |
                                   FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_PARALLEL_DIROPS);
    /* no kernel write-back cache: writes must reach us so other heads see them */
    conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_POSIX_LOCKS |
                              FUSE_CAP_FLOCK_LOCKS);
}

static const struct fuse_lowlevel_ops fm_ops = {
    .init = fm_init,
    .lookup = fm_lookup,
    .getattr = fm_getattr,
    .setattr = fm_setattr,
    .readlink = fm_readlink,
    .mknod = fm_mknod,
    .mkdir = fm_mkdir,
    .unlink = fm_unlink,
    .rmdir = fm_rmdir,
    .symlink = fm_symlink,
    .rename = fm_rename,
    .link = fm_link,
    .open = fm_open,
    .read = fm_read,
    .write = fm_write,
    .flush = fm_flush,
    .release = fm_release,
    .fsync = fm_fsync,
    .opendir = fm_opendir,
    .readdir = fm_readdir,
    .readdirplus = fm_readdirplus,
    .releasedir = fm_releasedir,
    .fsyncdir = fm_fsyncdir,
    .statfs = fm_statfs,
    .setxattr = fm_setxattr,
    .getxattr = fm_getxattr,
    .listxattr = fm_listxattr,
    .removexattr = fm_removexattr,
    .create = fm_create,
    .fallocate = fm_fallocate,
    .lseek = fm_lseek,
};

/* ---- invalidations from other heads ---- */
static void fm_watch(void *arg, const void *origin, int kind, uint64_t id, const char *name)
{
    struct fmount *m = arg;
    if (origin == m || (kind != PL_CHANGE_ATTR && kind != PL_CHANGE_ENTRY))
        return;
    size_t nl = kind == PL_CHANGE_ENTRY ? strlen(name) : 0;
    pthread_mutex_lock(&m->qlock);
    struct inval *v = m->qlen < FM_INVAL_MAX ? malloc(sizeof(*v) + nl + 1) : NULL;
    if (!v) {
        m->qdropped++; /* the attribute timeout still bounds how stale it gets */
    } else {
        v->kind = kind;
        v->id = id;
        v->next = NULL;
        memcpy(v->name, name, nl);
        v->name[nl] = 0;
        if (m->qtail)
            m->qtail->next = v;
        else
            m->qhead = v;
        m->qtail = v;
        m->qlen++;
        pthread_cond_signal(&m->qcond);
    }
    pthread_mutex_unlock(&m->qlock);
}

static void *fm_inval_main(void *arg)
{
    struct fmount *m = arg;
    pthread_mutex_lock(&m->qlock);
    for (;;) {
        while (!m->qhead && !m->qstop)
            pthread_cond_wait(&m->qcond, &m->qlock);
        if (!m->qhead)
            break;
        struct inval *v = m->qhead;
        m->qhead = v->next;
        if (!m->qhead)
            m->qtail = NULL;
        m->qlen--;
        pthread_mutex_unlock(&m->qlock);
        /* ENOENT: the kernel does not know it, nothing to drop */
        if (v->kind == PL_CHANGE_ATTR)
            (void)fuse_lowlevel_notify_inval_inode(m->se, fm_ino(m, v->id), 0, 0);
        else
            (void)fuse_lowlevel_notify_inval_entry(m->se, fm_ino(m, v->id), v->name,
                                                   strlen(v->name));
        free(v);
        pthread_mutex_lock(&m->qlock);
    }
    pthread_mutex_unlock(&m->qlock);
    return NULL;
}

/* ---- lifecycle ---- */
static void *fm_loop_main(void *arg)
{
    struct fmount *m = arg;
    int rc = fuse_session_loop_mt(m->se, m->loop_cfg);
    if (rc)
        pl_log(PL_LOG_WARN, "fuse", "request loop of %s ended: %s", m->mountpoint,
               strerror(rc < 0 ? -rc : rc));
    pl_log(PL_LOG_INFO, "fuse", "%s unmounted", m->mountpoint);
    __atomic_store_n(&m->ended, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Best effort: write one number into a sysfs file. */
static void fm_sysfs(const char *p, unsigned val)
{
    FILE *f = fopen(p, "we");
    if (f) {
        fprintf(f, "%u\n", val);
        fclose(f);
    }
}

/* Read ahead in 1 MiB steps: the kernel starts a FUSE mount at 128 KiB.
 * Without the right to say so, reads are smaller, not wrong. */
static void fm_readahead(dev_t dev)
{
    char p[128];
    snprintf(p, sizeof(p), "/sys/class/bdi/%u:%u/read_ahead_kb", major(dev), minor(dev));
    if (dev)
        fm_sysfs(p, FM_IO_MAX / 1024);
}

/* End the kernel side: the loop's threads wake when the connection ends.
 * Files still open there would keep a lazy unmount's connection up, so root
 * forces it (FUSE aborts the connection on MNT_FORCE) before detaching. */
static void fm_unmount(struct fmount *m)
{
    if (geteuid() != 0) {
        fuse_session_unmount(m->se); /* fusermount3 -u */
        return;
    }
    if (umount2(m->mountpoint, 0) == 0)
        return;
    if (errno == EBUSY) {
        pl_log(PL_LOG_WARN, "fuse", "%s: files are still open there; they lose the mount",
               m->mountpoint);
        if (umount2(m->mountpoint, MNT_FORCE) == 0 || umount2(m->mountpoint, MNT_DETACH) == 0)
            return;
    }
    if (!fmount_ended(m))
        pl_log(PL_LOG_WARN, "fuse", "cannot unmount %s: %s", m->mountpoint, strerror(errno));
}

int fmount_start(struct pl_store *st, const char *path, const char *mountpoint,
                 const struct fmount_opts *o, struct fmount **ret)
{
    struct pl_attr a;
    char optbuf[PL_PATH_MAX + 128];
    *ret = NULL;
    int rc = pl_path_lookup(st, path, PL_VIEW_LIVE, &a);
    if (rc)
        return rc;
    if (a.type != PL_T_DIR)
        return PL_ENOTDIR;
    struct fmount *m = calloc(1, sizeof(*m));
    if (!m)
        return PL_ENOMEM;
    m->st = st;
    m->root = a.id;
    m->readonly = o && o->readonly;
    pthread_mutex_init(&m->qlock, NULL);
    pthread_cond_init(&m->qcond, NULL);
    m->path = strdup(path);
    m->mountpoint = strdup(mountpoint);
    if (!m->path || !m->mountpoint) {
        rc = PL_ENOMEM;
        goto fail;
    }
    /* fsname shows in mount(8) and df; a comma would split the options */
    char fsname[PL_PATH_MAX];
    snprintf(fsname, sizeof(fsname), "plenum:%s", path);
    for (char *c = fsname; *c; c++)
        if (*c == ',' || *c == '\\')
            *c = '_';
    snprintf(optbuf, sizeof(optbuf), "fsname=%s,subtype=plenum,default_permissions%s%s", fsname,
             geteuid() == 0 ? ",allow_other" : "", m->readonly ? ",ro" : "");
    char *argv[] = {"plenum", "-o", optbuf, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    m->se = fuse_session_new(&args, &fm_ops, sizeof(fm_ops), m);
    fuse_opt_free_args(&args);
    if (!m->se) {
        rc = PL_EINVAL;
        goto fail;
    }
    rc = wb_new(st, "fuse", m, &m->wb);
    if (rc)
        goto fail;
    if (fuse_session_mount(m->se, mountpoint)) {
        pl_log(PL_LOG_WARN, "fuse", "cannot mount %s at %s (see the message above)", path,
               mountpoint);
        fuse_session_destroy(m->se);
        m->se = NULL;
        rc = PL_EIO;
        goto fail;
    }
    if (pthread_create(&m->inval_thr, NULL, fm_inval_main, m)) {
        rc = PL_ENOMEM;
        goto fail;
    }
    m->inval_started = 1;
    rc = pl_store_watch(st, fm_watch, m);
    if (rc)
        goto fail;
    m->watching = 1;
    m->loop_cfg = fuse_loop_cfg_create();
    if (!m->loop_cfg) {
        rc = PL_ENOMEM;
        goto fail;
    }
    fuse_loop_cfg_set_max_threads(m->loop_cfg, o && o->threads ? (unsigned)o->threads : 16);
    fuse_loop_cfg_set_idle_threads(m->loop_cfg, 4);
    if (pthread_create(&m->loop_thr, NULL, fm_loop_main, m)) {
        rc = PL_ENOMEM;
        goto fail;
    }
    m->loop_started = 1;
    /* only now: a stat of the mount is a request the loop must answer */
    struct stat sb;
    if (stat(mountpoint, &sb) == 0)
        m->dev = sb.st_dev;
    fm_readahead(m->dev);
    pl_log(PL_LOG_INFO, "fuse", "%s mounted at %s", path, mountpoint);
    *ret = m;
    return 0;
fail:
    fmount_stop(m);
    return rc;
}

int fmount_ended(struct fmount *m)
{
    return __atomic_load_n(&m->ended, __ATOMIC_ACQUIRE);
}

const char *fmount_point(const struct fmount *m)
{
    return m->mountpoint;
}

const char *fmount_path(const struct fmount *m)
{
    return m->path;
}

void fmount_stop(struct fmount *m)
{
    if (!m)
        return;
    if (m->se && !fmount_ended(m)) {
        fuse_session_exit(m->se);
        fm_unmount(m);
    }
    if (m->loop_started)
        pthread_join(m->loop_thr, NULL);
    if (m->se)
        fuse_session_unmount(m->se); /* the kernel side is gone: closes and frees */
    if (m->watching)
        pl_store_unwatch(m->st, fm_watch, m);
    if (m->inval_started) {
        pthread_mutex_lock(&m->qlock);
        m->qstop = 1;
        while (m->qhead) {
            struct inval *v = m->qhead;
            m->qhead = v->next;
            free(v);
        }
        m->qtail = NULL;
        pthread_cond_signal(&m->qcond);
        pthread_mutex_unlock(&m->qlock);
        pthread_join(m->inval_thr, NULL);
    }
    if (m->qdropped)
        pl_log(PL_LOG_INFO, "fuse", "%s: %llu invalidations dropped (queue full)",
               m->mountpoint ? m->mountpoint : "?", (unsigned long long)m->qdropped);
    wb_free(m->wb);
    if (m->loop_cfg)
        fuse_loop_cfg_destroy(m->loop_cfg);
    if (m->se)
        fuse_session_destroy(m->se);
    pthread_mutex_destroy(&m->qlock);
    pthread_cond_destroy(&m->qcond);
    free(m->path);
    free(m->mountpoint);
    free(m);
}

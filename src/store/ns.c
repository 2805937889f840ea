/* The POSIX-like element API: names, attributes, links, reads and writes. */
#include "store/store_int.h"

#include <stdlib.h>

static int elem_attr(struct pl_store *st, MDB_txn *txn, uint64_t id, uint64_t view,
                     struct pl_attr *ret)
{
    struct elem e;
    elem_init(&e);
    int rc = elem_get(txn, st->meta, id, view, &e);
    if (!rc)
        *ret = e.a;
    elem_release(&e);
    return rc;
}

int pl_elem_getattr(struct pl_store *st, uint64_t id, uint64_t view, struct pl_attr *ret)
{
    MDB_txn *txn;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_attr(st, txn, id, view, ret);
    meta_rtxn_end(txn);
    return rc;
}

int pl_elem_lookup(struct pl_store *st, uint64_t parent, const char *name, uint64_t view,
                   struct pl_attr *ret)
{
    MDB_txn *txn;
    struct dirent_rec d;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = dirent_get(txn, st->meta, parent, name, view, &d);
    if (!rc)
        rc = elem_attr(st, txn, d.id, view, ret);
    meta_rtxn_end(txn);
    return rc;
}

/* Walk path components from the root inside txn. */
static int path_walk(struct pl_store *st, MDB_txn *txn, const char *path, uint64_t view,
                     uint64_t *ret_id)
{
    uint64_t cur = PL_ROOT_ID;
    const char *p = path;
    char name[PL_NAME_MAX + 1];
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > PL_NAME_MAX)
            return PL_ENAMETOOLONG;
        memcpy(name, p, n);
        name[n] = 0;
        struct dirent_rec d;
        int rc = dirent_get(txn, st->meta, cur, name, view, &d);
        if (rc)
            return rc;
        if (e && d.type != PL_T_DIR)
            return PL_ENOTDIR;
        cur = d.id;
        p += n;
    }
    *ret_id = cur;
    return 0;
}

int pl_path_lookup(struct pl_store *st, const char *path, uint64_t view, struct pl_attr *ret)
{
    MDB_txn *txn;
    uint64_t id;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = path_walk(st, txn, path, view, &id);
    if (!rc)
        rc = elem_attr(st, txn, id, view, ret);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- creation ---- */

/* Load a live directory for modification. */
static int dir_load(struct meta_txn *t, uint64_t id, struct elem *ret)
{
    int rc = elem_get(t->txn, t->env, id, PL_VIEW_LIVE, ret);
    if (!rc && ret->a.type != PL_T_DIR)
        rc = PL_ENOTDIR;
    return rc;
}

static int dir_touch(struct meta_txn *t, struct elem *dir, int nlink_delta)
{
    dir->a.mtime = dir->a.ctime = pl_now_ns();
    dir->a.nlink = (uint32_t)((int64_t)dir->a.nlink + nlink_delta);
    return elem_put(t, dir);
}

int store_mk(struct meta_txn *t, struct mk_args *a)
{
    struct elem dir, e;
    struct dirent_rec d;
    elem_init(&dir);
    elem_init(&e);
    int rc = name_valid(a->name);
    if (!rc)
        rc = dir_load(t, a->parent, &dir);
    if (rc)
        goto out;
    rc = dirent_get(t->txn, t->env, a->parent, a->name, PL_VIEW_LIVE, &d);
    if (rc == 0) {
        if (a->excl || d.type != a->type) {
            rc = PL_EEXIST;
            goto out;
        }
        rc = elem_get(t->txn, t->env, d.id, PL_VIEW_LIVE, &e);
        if (!rc)
            a->out = e.a;
        goto out;
    }
    if (rc != PL_ENOENT)
        goto out;
    e.flags = a->flags;
    if (a->type == PL_T_SYMLINK) {
        rc = prop_set(&e, PROP_SYMLINK, NULL, a->target, strlen(a->target));
        if (rc)
            goto out;
        e.a.size = strlen(a->target);
    }
    rc = elem_name_set(&e, a->name);
    if (!rc)
        rc = elem_new(t, &e, a->type, a->mode, a->uid, a->gid, a->parent);
    if (!rc)
        rc = dirent_add(t, a->parent, a->name, e.a.id, a->type);
    if (!rc && !(a->flags & ELEM_F_IMPLICIT))
        rc = event_queue_at(t, EV_CREATE, a->parent, a->name, a->type == PL_T_DIR, &e.a, 0, NULL);
    if (!rc)
        rc = dir_touch(t, &dir, a->type == PL_T_DIR ? 1 : 0);
    if (!rc)
        a->out = e.a;
out:
    elem_release(&dir);
    elem_release(&e);
    return rc;
}

static int apply_mk(struct meta_txn *t, void *arg)
{
    return store_mk(t, arg);
}

int pl_elem_create(struct pl_store *st, uint64_t parent, const char *name, uint32_t mode,
                   uint32_t uid, uint32_t gid, int excl, struct pl_attr *ret)
{
    struct mk_args a = {parent, name, PL_T_FILE, mode & 07777, uid, gid, excl, NULL, 0, {0}};
    int rc = meta_submit(st->meta, apply_mk, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

int pl_elem_mkdir(struct pl_store *st, uint64_t parent, const char *name, uint32_t mode,
                  uint32_t uid, uint32_t gid, struct pl_attr *ret)
{
    struct mk_args a = {parent, name, PL_T_DIR, mode & 07777, uid, gid, 1, NULL, 0, {0}};
    int rc = meta_submit(st->meta, apply_mk, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

int pl_elem_symlink(struct pl_store *st, uint64_t parent, const char *name, const char *target,
                    uint32_t uid, uint32_t gid, struct pl_attr *ret)
{
    if (!*target || strlen(target) >= PL_PATH_MAX)
        return PL_EINVAL;
    struct mk_args a = {parent, name, PL_T_SYMLINK, 0777, uid, gid, 1, target, 0, {0}};
    int rc = meta_submit(st->meta, apply_mk, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

int pl_elem_readlink(struct pl_store *st, uint64_t id, uint64_t view, char *buf, size_t n)
{
    MDB_txn *txn;
    struct elem e;
    struct pl_str s;
    elem_init(&e);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_get(txn, st->meta, id, view, &e);
    if (!rc && e.a.type != PL_T_SYMLINK)
        rc = PL_EINVAL;
    if (!rc)
        rc = prop_get(&e, PROP_SYMLINK, NULL, &s);
    if (!rc && s.n + 1 > n)
        rc = PL_ERANGE;
    if (!rc) {
        memcpy(buf, s.p, s.n);
        buf[s.n] = 0;
    }
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- link, unlink, rmdir, rename ---- */
struct link_args {
    uint64_t id, parent;
    const char *name;
    struct pl_attr out;
};

static int apply_link(struct meta_txn *t, void *arg)
{
    struct link_args *a = arg;
    struct elem dir, e;
    struct dirent_rec d;
    elem_init(&dir);
    elem_init(&e);
    int rc = name_valid(a->name);
    if (!rc)
        rc = dir_load(t, a->parent, &dir);
    if (!rc)
        rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (rc)
        goto out;
    if (e.a.type == PL_T_DIR) {
        rc = PL_EPERM;
        goto out;
    }
    if (e.a.nlink >= 65000) {
        rc = PL_EMLINK;
        goto out;
    }
    rc = dirent_get(t->txn, t->env, a->parent, a->name, PL_VIEW_LIVE, &d);
    if (rc != PL_ENOENT) {
        rc = rc ? rc : PL_EEXIST;
        goto out;
    }
    e.a.nlink++;
    e.a.ctime = pl_now_ns();
    rc = dirent_add(t, a->parent, a->name, e.a.id, e.a.type);
    if (!rc)
        rc = elem_put(t, &e);
    if (!rc)
        rc = dir_touch(t, &dir, 0);
    if (!rc)
        rc = event_queue_at(t, EV_CREATE, a->parent, a->name, 0, &e.a, 0, NULL);
    if (!rc)
        a->out = e.a;
out:
    elem_release(&dir);
    elem_release(&e);
    return rc;
}

int pl_elem_link(struct pl_store *st, uint64_t id, uint64_t parent, const char *name,
                 struct pl_attr *ret)
{
    struct link_args a = {id, parent, name, {0}};
    int rc = meta_submit(st->meta, apply_link, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

/* Remove name from dir (loaded by the caller, touched here) and drop the
 * element when its last link goes. want: 0 any non-dir, PL_T_DIR a dir. */
int store_remove(struct meta_txn *t, struct elem *dir, const char *name, int want_dir)
{
    return store_remove_keep(t, dir, name, want_dir, NULL, NULL);
}

int store_remove_keep(struct meta_txn *t, struct elem *dir, const char *name, int want_dir,
                      store_keep_fn keep, void *keep_arg)
{
    struct dirent_rec d;
    struct elem e;
    elem_init(&e);
    int rc = dirent_get(t->txn, t->env, dir->a.id, name, PL_VIEW_LIVE, &d);
    if (rc)
        goto out;
    if (want_dir && d.type != PL_T_DIR) {
        rc = PL_ENOTDIR;
        goto out;
    }
    if (!want_dir && d.type == PL_T_DIR) {
        rc = PL_EISDIR;
        goto out;
    }
    rc = elem_get(t->txn, t->env, d.id, PL_VIEW_LIVE, &e);
    if (rc)
        goto out;
    if (want_dir) {
        int empty;
        rc = dir_is_empty(t->txn, t->env, d.id, &empty);
        if (!rc && !empty)
            rc = PL_ENOTEMPTY;
        if (rc)
            goto out;
    }
    rc = dirent_remove(t, dir->a.id, name, &d);
    if (rc)
        goto out;
    if (!want_dir && e.a.nlink <= 1 && keep) {
        rc = keep(keep_arg, t, &e);
    } else if (want_dir || e.a.nlink <= 1) {
        rc = elem_destroy(t, &e);
    } else {
        e.a.nlink--;
        e.a.ctime = pl_now_ns();
        rc = elem_put(t, &e);
    }
    if (!rc)
        rc = dir_touch(t, dir, want_dir ? -1 : 0);
out:
    elem_release(&e);
    return rc;
}

struct rm_args {
    uint64_t parent;
    const char *name;
    int dir;
};

static int apply_rm(struct meta_txn *t, void *arg)
{
    struct rm_args *a = arg;
    struct elem dir;
    elem_init(&dir);
    int rc = dir_load(t, a->parent, &dir);
    if (!rc)
        rc = store_remove(t, &dir, a->name, a->dir);
    if (!rc)
        rc = event_queue_at(t, EV_DELETE, a->parent, a->name, a->dir != 0, NULL, 0, NULL);
    elem_release(&dir);
    return rc;
}

int pl_elem_unlink(struct pl_store *st, uint64_t parent, const char *name)
{
    struct rm_args a = {parent, name, 0};
    return meta_submit(st->meta, apply_rm, &a);
}

int pl_elem_rmdir(struct pl_store *st, uint64_t parent, const char *name)
{
    struct rm_args a = {parent, name, PL_T_DIR};
    return meta_submit(st->meta, apply_rm, &a);
}

struct mv_args {
    uint64_t sp, dp;
    const char *sn, *dn;
};

/* Is anc an ancestor of (or equal to) id? Directories keep exact parents. */
static int is_ancestor(struct meta_txn *t, uint64_t anc, uint64_t id, int *ret)
{
    struct elem e;
    elem_init(&e);
    int rc = 0;
    *ret = 0;
    for (int depth = 0; depth < 4096; depth++) {
        if (id == anc) {
            *ret = 1;
            break;
        }
        if (id == PL_ROOT_ID)
            break;
        rc = elem_get(t->txn, t->env, id, PL_VIEW_LIVE, &e);
        if (rc)
            break;
        id = e.a.parent;
    }
    elem_release(&e);
    return rc;
}

static int apply_rename(struct meta_txn *t, void *arg)
{
    struct mv_args *a = arg;
    struct elem sdir, ddir, e;
    struct dirent_rec sd, dd;
    elem_init(&sdir);
    elem_init(&ddir);
    elem_init(&e);
    int rc = name_valid(a->sn);
    if (!rc)
        rc = name_valid(a->dn);
    if (!rc)
        rc = dirent_get(t->txn, t->env, a->sp, a->sn, PL_VIEW_LIVE, &sd);
    if (rc)
        goto out;
    if (a->sp == a->dp && !strcmp(a->sn, a->dn))
        goto out; /* same name: nothing to do */
    if (sd.type == PL_T_DIR) {
        int anc;
        rc = is_ancestor(t, sd.id, a->dp, &anc);
        if (!rc && anc)
            rc = PL_EINVAL; /* moving a directory under itself */
        if (rc)
            goto out;
    }
    rc = dirent_get(t->txn, t->env, a->dp, a->dn, PL_VIEW_LIVE, &dd);
    if (rc == 0) {
        if (dd.id == sd.id)
            goto out; /* hard links to the same element: POSIX says do nothing */
        if (sd.type == PL_T_DIR && dd.type != PL_T_DIR) {
            rc = PL_ENOTDIR;
            goto out;
        }
        if (sd.type != PL_T_DIR && dd.type == PL_T_DIR) {
            rc = PL_EISDIR;
            goto out;
        }
        rc = dir_load(t, a->dp, &ddir);
        if (!rc)
            rc = store_remove(t, &ddir, a->dn, dd.type == PL_T_DIR);
        elem_release(&ddir);
        elem_init(&ddir);
    }
    if (rc && rc != PL_ENOENT)
        goto out;
    rc = dirent_remove(t, a->sp, a->sn, &sd);
    if (!rc)
        rc = dirent_add(t, a->dp, a->dn, sd.id, sd.type);
    if (!rc)
        rc = elem_get(t->txn, t->env, sd.id, PL_VIEW_LIVE, &e);
    if (rc)
        goto out;
    e.a.ctime = pl_now_ns();
    if (e.a.parent == a->sp) {
        e.a.parent = a->dp;
        rc = elem_name_set(&e, a->dn);
    }
    e.flags &= (uint16_t)~ELEM_F_IMPLICIT; /* named by a user now */
    if (!rc)
        rc = elem_put(t, &e);
    if (!rc)
        rc = event_queue_at(t, EV_RENAME, a->dp, a->dn, sd.type == PL_T_DIR, &e.a, a->sp, a->sn);
    int dirmove = sd.type == PL_T_DIR && a->sp != a->dp;
    if (!rc)
        rc = dir_load(t, a->sp, &sdir);
    if (!rc)
        rc = dir_touch(t, &sdir, dirmove ? -1 : 0);
    if (!rc && a->dp != a->sp) {
        rc = dir_load(t, a->dp, &ddir);
        if (!rc)
            rc = dir_touch(t, &ddir, dirmove ? 1 : 0);
    }
out:
    elem_release(&sdir);
    elem_release(&ddir);
    elem_release(&e);
    return rc;
}

int pl_elem_rename(struct pl_store *st, uint64_t sparent, const char *sname, uint64_t dparent,
                   const char *dname)
{
    struct mv_args a = {sparent, dparent, sname, dname};
    return meta_submit(st->meta, apply_rename, &a);
}

/* ---- setattr ---- */
struct set_args {
    uint64_t id;
    unsigned mask;
    const struct pl_attr *in;
    struct pl_attr out;
};

void pl_attr_set(struct pl_attr *a, unsigned mask, const struct pl_attr *in)
{
    if (mask & PL_SET_MODE)
        a->mode = in->mode & 07777;
    if (mask & PL_SET_UID)
        a->uid = in->uid;
    if (mask & PL_SET_GID)
        a->gid = in->gid;
    if (mask & PL_SET_ATIME)
        a->atime = in->atime;
    if (mask & PL_SET_MTIME)
        a->mtime = in->mtime;
}

/* The bytes of e may change: a file, and not a noncurrent object version
 * (its version record keeps its size and ETag; a handle opened before a
 * newer PUT, over NFS or NBD, may still name it). */
static int elem_content_writable(const struct elem *e)
{
    if (e->a.type != PL_T_FILE)
        return e->a.type == PL_T_DIR ? PL_EISDIR : PL_EINVAL;
    return e->flags & ELEM_F_VERSION ? PL_EROFS : 0;
}

static int apply_setattr(struct meta_txn *t, void *arg)
{
    struct set_args *a = arg;
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (rc)
        goto out;
    int64_t now = pl_now_ns();
    pl_attr_set(&e.a, a->mask, a->in);
    if (a->mask & PL_SET_SIZE) {
        rc = elem_content_writable(&e);
        if (rc)
            goto out;
        uint64_t ns = a->in->size;
        if (ns < e.a.size)
            rc = extent_punch(t, e.a.id, ns, UINT64_MAX);
        if (!rc && !(e.flags & ELEM_F_STAGING))
            rc = meta_sys_add(t, "logical", (int64_t)ns - (int64_t)e.a.size);
        if (rc)
            goto out;
        if (ns != e.a.size) {
            e.a.size = ns;
            e.a.etag[0] = 0;
            (void)prop_del(&e, PROP_PARTS, NULL); /* no longer the uploaded parts */
            if (!(a->mask & PL_SET_MTIME))
                e.a.mtime = now;
        }
    }
    e.a.ctime = now;
    rc = elem_put(t, &e);
    if (!rc && (a->mask & PL_SET_SIZE))
        rc = event_write_mark(t, &e);
    if (!rc && (a->mask & ~PL_SET_SIZE))
        rc = event_queue_elem(t, EV_META, &e);
    if (!rc)
        a->out = e.a;
out:
    elem_release(&e);
    return rc;
}

int pl_elem_setattr(struct pl_store *st, uint64_t id, unsigned mask, const struct pl_attr *in,
                    struct pl_attr *ret)
{
    struct set_args a = {id, mask, in, {0}};
    int rc = meta_submit(st->meta, apply_setattr, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

/* ---- read ----
 * A read first collects, inside one metadata snapshot, where each piece of the
 * range lives; then it reads the chunks. Large reads spread the chunk reads
 * (I/O, checksum, decompression) over the store's pool, so a cold read keeps
 * several requests in flight and compressed data decodes on every core. */
struct rpiece {
    struct data_loc loc;
    uint8_t fp[DATA_FP_LEN];
    uint32_t choff;  /* where the wanted bytes start in the chunk */
    uint32_t n;      /* how many */
    size_t dst;      /* where they go in the output */
};

struct rplan {
    struct rpiece *p;
    size_t n, cap;
};

static int plan_add(struct rplan *pl, const struct rpiece *x)
{
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? pl->cap * 2 : 64;
        struct rpiece *np = realloc(pl->p, cap * sizeof(*np));
        if (!np)
            return PL_ENOMEM;
        pl->p = np;
        pl->cap = cap;
    }
    pl->p[pl->n++] = *x;
    return 0;
}

static int read_plan(struct pl_store *st, MDB_txn *txn, uint64_t id, uint64_t view, uint64_t off,
                     size_t n, struct rplan *pl)
{
    MDB_cursor *c = NULL;
    uint8_t k[24];
    uint64_t end = off + n;
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_EXTENT), &c));
    if (rc)
        return rc;
    uint64_t from = off > DATA_MAX_CHUNK ? off - DATA_MAX_CHUNK : 0;
    MDB_val key = {key_extent(k, id, from, PL_EPOCH_INF), k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc) {
        const uint8_t *kp = key.mv_data, *vp = val.mv_data;
        if (key.mv_size != 24 || pl_get_be64(kp) != id)
            break;
        uint64_t s = pl_get_be64(kp + 8);
        if (s >= end)
            break;
        if (val.mv_size != 48) {
            rc = PL_ECORRUPT;
            break;
        }
        uint64_t birth = ~pl_get_be64(kp + 16), death = pl_get_le64(vp + 40);
        uint32_t choff = pl_get_le32(vp + 32), len = pl_get_le32(vp + 36);
        if (view_sees(view, birth, death) && s + len > off) {
            struct rpiece x;
            rc = chunk_lookup(txn, st->meta, vp, NULL, &x.loc);
            if (rc == PL_ENOENT)
                rc = PL_ECORRUPT; /* an extent naming no chunk */
            if (!rc && (uint64_t)choff + len > x.loc.raw_len)
                rc = PL_ECORRUPT;
            if (rc)
                break;
            uint64_t a = PL_MAX(s, off), b = PL_MIN(s + len, end);
            memcpy(x.fp, vp, DATA_FP_LEN);
            x.choff = choff + (uint32_t)(a - s);
            x.n = (uint32_t)(b - a);
            x.dst = (size_t)(a - off);
            rc = plan_add(pl, &x);
            if (rc)
                break;
        }
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc == PL_ENOENT ? 0 : rc;
}

/* Read one piece on its own: a whole chunk wanted whole lands in place. A
 * part is taken from the chunk decoded into the hot cache, so that the next
 * parts (a 4 KiB reader takes 16 of a 64 KiB chunk, one request each) do not
 * read and decode it again. */
static int read_piece(struct pl_store *st, const struct rpiece *x, uint8_t *out)
{
    if (x->choff == 0 && x->n == x->loc.raw_len)
        return store_chunk_read(st, &x->loc, x->fp, out + x->dst);
    struct hot_chunk *h = NULL;
    size_t n = 0;
    const uint8_t *d = hot_peek(st->hot, x->fp, &n, &h);
    int rc = 0;
    if (!d) {
        uint8_t *buf;
        rc = hot_alloc(x->loc.raw_len, &h, &buf);
        if (!rc) /* the cache was just asked: read what is stored */
            rc = store_chunk_read_stored(st, &x->loc, x->fp, buf);
        if (!rc) {
            hot_insert(st->hot, x->fp, h);
            d = buf;
            n = x->loc.raw_len;
        }
    }
    if (!rc && n != x->loc.raw_len)
        rc = PL_ECORRUPT;
    if (!rc)
        memcpy(out + x->dst, d + x->choff, x->n);
    hot_put(h);
    return rc;
}

/* How many pieces from i on are stored back to back in one segment (a
 * file written in order usually is), up to DATA_RUN_MAX and RUN_BYTES. */
#define RUN_BYTES (4u << 20)
static size_t run_len(const struct rplan *pl, size_t i, size_t last)
{
    const struct data_loc *l0 = &pl->p[i].loc;
    uint64_t next = l0->off, bytes = 0;
    size_t k = i;
    while (k < last && k - i < DATA_RUN_MAX && bytes < RUN_BYTES) {
        const struct data_loc *l = &pl->p[k].loc;
        if (l->codec == DATA_CODEC_DELTA || l->kind != l0->kind || l->seg != l0->seg ||
            l->off != next)
            break;
        next += DATA_BLOCK_HDR + l->stored_len;
        bytes += l->raw_len;
        k++;
    }
    return k - i;
}

/* Start the disk on every piece of a plan: one advice per stretch of
 * pieces stored back to back, not one per piece. */
static void plan_prefetch(struct pl_store *st, const struct rplan *pl)
{
    for (size_t i = 0; i < pl->n;) {
        const struct data_loc *l0 = &pl->p[i].loc;
        uint64_t end = l0->off + DATA_BLOCK_HDR + l0->stored_len;
        size_t k = i + 1;
        while (k < pl->n && pl->p[k].loc.seg == l0->seg && pl->p[k].loc.kind == l0->kind &&
               pl->p[k].loc.off == end)
            end += DATA_BLOCK_HDR + pl->p[k++].loc.stored_len;
        data_prefetch(st->data, l0, end - l0->off);
        i = k;
    }
}

/* Read a run of pieces in one pass; parts go through buffers of their own. */
static int read_run(struct pl_store *st, const struct rplan *pl, size_t i, size_t n, uint8_t *out)
{
    struct data_loc locs[DATA_RUN_MAX];
    uint8_t fps[DATA_RUN_MAX][DATA_FP_LEN];
    void *outs[DATA_RUN_MAX];
    uint8_t *parts[DATA_RUN_MAX] = {0};
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        const struct rpiece *x = &pl->p[i + k];
        locs[k] = x->loc;
        memcpy(fps[k], x->fp, DATA_FP_LEN);
        if (x->choff == 0 && x->n == x->loc.raw_len)
            outs[k] = out + x->dst;
        else if (!(outs[k] = parts[k] = malloc(x->loc.raw_len)))
            rc = PL_ENOMEM;
    }
    if (!rc)
        rc = data_run_read(st->data, locs, (const uint8_t(*)[DATA_FP_LEN])fps, outs, n);
    for (size_t k = 0; k < n; k++) {
        const struct rpiece *x = &pl->p[i + k];
        if (!rc && parts[k])
            memcpy(out + x->dst, parts[k] + x->choff, x->n);
        free(parts[k]);
    }
    return rc;
}

/* Read pieces [first, last) of the plan into out. */
static int read_pieces(struct pl_store *st, const struct rplan *pl, size_t first, size_t last,
                       uint8_t *out)
{
    int rc = 0;
    for (size_t i = first; i < last && !rc;) {
        size_t n = run_len(pl, i, last);
        /* a run that fails is read again piece by piece: that path tries
         * every mirror, and says which chunk is damaged */
        if (n > 1 && read_run(st, pl, i, n, out) == 0) {
            i += n;
            continue;
        }
        n = PL_MAX(n, (size_t)1);
        for (size_t k = i; k < i + n && !rc; k++)
            rc = read_piece(st, &pl->p[k], out);
        i += n;
    }
    return rc;
}

struct rjob {
    struct pl_job job;
    struct pl_store *st;
    const struct rplan *pl;
    size_t first, last;
    uint8_t *out;
    int rc;
};

static void rjob_run(struct pl_job *j)
{
    struct rjob *r = (struct rjob *)j;
    r->rc = read_pieces(r->st, r->pl, r->first, r->last, r->out);
}

/* Reads of 2 MiB and more (S3 GETs, cp) are split over the pool, and the
 * disk is started on all of them first; a 1 MiB read (NFS, NBD, FUSE) runs
 * on its caller, where the kernel's readahead on the segment files serves
 * it best: advising each stretch of it, or splitting it over four threads,
 * measured 20-30 % slower (nfs-cat of 1 GiB, cold and warm) — the advice
 * allocates pages synchronously and the split costs more wake-ups than a
 * megabyte's copy. */
#define READ_JOBS 4
#define PARALLEL_MIN (2u << 20)

static int read_execute(struct pl_store *st, const struct rplan *pl, uint8_t *out, size_t n)
{
    if (n < PARALLEL_MIN || pl->n < 4)
        return read_pieces(st, pl, 0, pl->n, out);
    plan_prefetch(st, pl);
    struct rjob jobs[READ_JOBS];
    int nj = (int)PL_MIN((size_t)READ_JOBS, pl->n);
    /* contiguous runs per job: each stays sequential on disk for readahead */
    for (int i = 0; i < nj; i++) {
        jobs[i] = (struct rjob){.job.fn = rjob_run, .st = st, .pl = pl,
                                .first = pl->n * (size_t)i / (size_t)nj,
                                .last = pl->n * (size_t)(i + 1) / (size_t)nj, .out = out};
        if (i > 0)
            pl_pool_submit(st->pool, &jobs[i].job);
    }
    rjob_run(&jobs[0].job); /* the caller works too */
    int rc = jobs[0].rc;
    for (int i = 1; i < nj; i++) {
        pl_job_wait(st->pool, &jobs[i].job);
        if (!rc)
            rc = jobs[i].rc;
    }
    return rc;
}

int pl_elem_read(struct pl_store *st, uint64_t id, uint64_t view, uint64_t off, void *buf,
                 size_t n, size_t *ret_n)
{
    struct elem e;
    int rc = 0;
    elem_init(&e);
    for (int attempt = 0; attempt < 4; attempt++) {
        MDB_txn *txn;
        struct rplan pl = {0};
        size_t len = 0;
        rc = meta_rtxn_begin(st->meta, &txn);
        if (rc)
            break;
        rc = elem_get(txn, st->meta, id, view, &e);
        if (!rc && e.a.type != PL_T_FILE)
            rc = e.a.type == PL_T_DIR ? PL_EISDIR : PL_EINVAL;
        if (!rc && off < e.a.size) {
            len = (size_t)PL_MIN((uint64_t)n, e.a.size - off);
            rc = read_plan(st, txn, id, view, off, len, &pl);
        }
        /* large reads are usually sequential: start the disk on the range
         * after the next now (a sequential reader's previous call asked for
         * the next one), so later calls do not wait for it */
        if (!rc && len >= PARALLEL_MIN && off + 2 * (uint64_t)len < e.a.size) {
            struct rplan ahead = {0};
            size_t an = (size_t)PL_MIN((uint64_t)len, e.a.size - off - 2 * len);
            if (read_plan(st, txn, id, view, off + 2 * len, an, &ahead) == 0)
                plan_prefetch(st, &ahead);
            free(ahead.p);
        }
        meta_rtxn_end(txn);
        if (!rc && len) {
            /* zero only the holes: the plan is sorted and does not overlap */
            size_t at = 0;
            for (size_t i = 0; i < pl.n; i++) {
                if (pl.p[i].dst > at)
                    memset((uint8_t *)buf + at, 0, pl.p[i].dst - at);
                at = pl.p[i].dst + pl.p[i].n;
            }
            if (at < len)
                memset((uint8_t *)buf + at, 0, len - at);
            rc = read_execute(st, &pl, buf, len);
        }
        free(pl.p);
        if (!rc)
            *ret_n = len;
        /* PL_ENOENT from a segment: compaction moved a chunk; plan again */
        if (rc != PL_ENOENT || attempt == 3)
            break;
    }
    elem_release(&e);
    return rc;
}

/* ---- write ---- */
struct wr_args {
    uint64_t id;
    const struct pl_wrange *r; /* the ranges written, in order */
    size_t nr;
    const size_t *first; /* range i's pieces: pr->p[first[i] .. first[i + 1]) */
    const struct prep *pr;
    const struct pl_svc_rec *recs;
    size_t nrecs;
    unsigned amask; /* attributes set after the write, in its transaction */
    const struct pl_attr *attrs;
};

static int apply_write(struct meta_txn *t, void *arg)
{
    struct wr_args *a = arg;
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = elem_content_writable(&e);
    for (size_t i = 0; i < a->nr && !rc; i++)
        rc = extent_replace(t, &e, a->r[i].off, a->r[i].off + a->r[i].n, a->pr->p + a->first[i],
                            a->first[i + 1] - a->first[i]);
    if (!rc) {
        e.a.mtime = e.a.ctime = pl_now_ns();
        e.a.etag[0] = 0; /* recomputed on demand */
        (void)prop_del(&e, PROP_PARTS, NULL); /* no longer the uploaded parts */
        pl_attr_set(&e.a, a->amask, a->attrs);
        rc = elem_put(t, &e);
    }
    if (!rc && a->nrecs)
        rc = svc_apply(t, a->recs, a->nrecs);
    else if (!rc)
        rc = event_write_mark(t, &e);
    if (!rc && a->amask)
        rc = event_queue_elem(t, EV_META, &e);
    elem_release(&e);
    return rc;
}

static int elem_write(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                      const struct pl_svc_rec *recs, size_t nrecs, unsigned flags,
                      unsigned amask, const struct pl_attr *attrs);

int pl_elem_write(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n)
{
    return pl_elem_write_svc(st, id, off, buf, n, NULL, 0);
}

int pl_elem_write_svc(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                      const struct pl_svc_rec *recs, size_t nrecs)
{
    return elem_write(st, id, off, buf, n, recs, nrecs, 0, 0, NULL);
}

int pl_elem_write_flags(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                        unsigned flags)
{
    return elem_write(st, id, off, buf, n, NULL, 0, flags, 0, NULL);
}

int pl_elem_write_attrs(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                        unsigned mask, const struct pl_attr *in)
{
    const unsigned ok = PL_SET_MODE | PL_SET_UID | PL_SET_GID | PL_SET_ATIME | PL_SET_MTIME;
    if (mask & ~ok)
        return PL_EINVAL;
    return elem_write(st, id, off, buf, n, NULL, 0, 0, mask, in);
}

void pl_write_hold(struct pl_store *st)
{
    store_throttle(st);
    pl_gate_enter(&st->purge);
}

void pl_write_release(struct pl_store *st)
{
    pl_gate_leave(&st->purge);
}

/* A write between its two phases: the chunks are appended to the buffer
 * (not yet synced) and the ranges' bytes are the caller's until commit. The
 * caller's hold keeps every chunk it deduplicated against from being
 * purged. */
struct pl_wstage {
    struct pl_store *st;
    uint64_t id;
    struct pl_wrange one; /* r when there is one range */
    struct pl_wrange *r;  /* in order: &one, or owned */
    size_t nr;
    size_t first_one[2];
    size_t *first; /* range i's pieces: pr.p[first[i] .. first[i + 1]) */
    struct prep pr;
    unsigned amask;
    const struct pl_attr *attrs;
};

/* Every range chunked into one prep; first[i]: where range i's pieces start. */
static int ranges_prepare(struct pl_store *st, const struct pl_wrange *r, size_t n,
                          struct prep *pr, size_t *first)
{
    for (size_t i = 0; i < n; i++) {
        size_t used;
        first[i] = pr->n;
        int rc = store_prepare(st, r[i].off, r[i].buf, r[i].n, 1, pr, &used);
        if (rc)
            return rc;
    }
    first[n] = pr->n;
    return 0;
}

static int ranges_check(const struct pl_wrange *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].n == 0)
            return PL_EINVAL;
        if (r[i].off + r[i].n < r[i].off || r[i].off + r[i].n > ((uint64_t)1 << 60))
            return PL_EFBIG;
    }
    return 0;
}

static int write_stage(struct pl_store *st, uint64_t id, const struct pl_wrange *r, size_t n,
                       unsigned flags, struct pl_wstage **ret)
{
    *ret = NULL;
    int rc = n ? ranges_check(r, n) : PL_EINVAL;
    if (rc)
        return rc;
    struct pl_wstage *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return PL_ENOMEM;
    *ws = (struct pl_wstage){.st = st, .id = id, .one = r[0], .nr = n,
                             .pr = {.keep_raw = (flags & PL_WRITE_RAW) != 0}};
    ws->r = &ws->one;
    ws->first = ws->first_one;
    if (n > 1) {
        ws->r = malloc(n * sizeof(*ws->r));
        ws->first = malloc((n + 1) * sizeof(*ws->first));
        if (!ws->r || !ws->first) {
            pl_elem_write_drop(ws);
            return PL_ENOMEM;
        }
        memcpy(ws->r, r, n * sizeof(*r));
    }
    rc = ranges_prepare(st, ws->r, n, &ws->pr, ws->first);
    if (rc) {
        pl_elem_write_drop(ws);
        return rc;
    }
    *ret = ws;
    return 0;
}

int pl_elem_write_stage(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                        struct pl_wstage **ret)
{
    struct pl_wrange one = {off, buf, n};
    return write_stage(st, id, &one, 1, 0, ret);
}

int pl_elem_write_commit(struct pl_wstage *ws, const struct pl_svc_rec *recs, size_t nrecs)
{
    struct pl_store *st = ws->st;
    int rc = svc_check(recs, nrecs);
    for (int attempt = 0; !rc && attempt < 4; attempt++) {
        if (attempt) {
            /* a chunk it deduplicated against was purged meanwhile: again */
            int keep_raw = ws->pr.keep_raw;
            prep_release(&ws->pr);
            ws->pr.keep_raw = keep_raw;
            rc = ranges_prepare(st, ws->r, ws->nr, &ws->pr, ws->first);
            if (rc)
                break;
        }
        rc = store_sync_segs(st, &ws->pr.segs); /* once for all the ranges */
        if (!rc) {
            struct wr_args a = {ws->id, ws->r, ws->nr, ws->first, &ws->pr, recs, nrecs,
                                ws->amask, ws->attrs};
            rc = meta_submit(st->meta, apply_write, &a);
        }
        if (rc != PL_EAGAIN)
            break;
    }
    pl_elem_write_drop(ws);
    return rc;
}

void pl_elem_write_drop(struct pl_wstage *ws)
{
    if (!ws)
        return;
    prep_release(&ws->pr);
    if (ws->r != &ws->one)
        free(ws->r);
    if (ws->first != ws->first_one)
        free(ws->first);
    free(ws);
}

static int elem_write(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                      const struct pl_svc_rec *recs, size_t nrecs, unsigned flags,
                      unsigned amask, const struct pl_attr *attrs)
{
    struct pl_wstage *ws;
    struct pl_wrange one = {off, buf, n};
    int rc = svc_check(recs, nrecs);
    if (rc || n == 0)
        return rc;
    pl_write_hold(st);
    rc = write_stage(st, id, &one, 1, flags, &ws);
    if (!rc) {
        ws->amask = amask;
        ws->attrs = attrs;
        rc = pl_elem_write_commit(ws, recs, nrecs);
    }
    pl_write_release(st);
    return rc;
}

int pl_elem_write_ranges(struct pl_store *st, uint64_t id, const struct pl_wrange *r, size_t n)
{
    if (n == 0)
        return ranges_check(r, n);
    struct pl_wstage *ws;
    pl_write_hold(st);
    int rc = write_stage(st, id, r, n, 0, &ws);
    if (!rc)
        rc = pl_elem_write_commit(ws, NULL, 0);
    pl_write_release(st);
    return rc;
}

/* ---- directory listing ---- */
int pl_dir_read(struct pl_store *st, uint64_t dir, uint64_t view, const char *after,
                pl_dirent_fn cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    uint8_t k[PL_NAME_MAX + 32];
    char name[PL_NAME_MAX + 1], last[PL_NAME_MAX + 2] = "";
    struct pl_attr a;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_attr(st, txn, dir, view, &a);
    if (!rc && a.type != PL_T_DIR)
        rc = PL_ENOTDIR;
    if (!rc)
        rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_DIRENT), &c));
    if (rc)
        goto out;
    size_t kn = 8;
    pl_put_be64(k, dir);
    if (after && *after) {
        size_t an = strlen(after);
        if (an > PL_NAME_MAX) {
            rc = PL_ENAMETOOLONG;
            goto out;
        }
        /* past every version of "after" under both terminators */
        memcpy(k + 8, after, an);
        k[8 + an] = '/' + 1;
        kn = 9 + an;
    }
    MDB_val key = {kn, k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc) {
        const uint8_t *kp = key.mv_data, *vp = val.mv_data;
        if (key.mv_size < 18 || pl_get_be64(kp) != dir)
            break;
        size_t nn = key.mv_size - 17;
        if (nn > PL_NAME_MAX || val.mv_size != 17) {
            rc = PL_ECORRUPT;
            break;
        }
        memcpy(name, kp + 8, nn);
        name[nn] = 0;
        uint64_t birth = ~pl_get_be64(kp + 9 + nn), death = pl_get_le64(vp + 9);
        if (view_sees(view, birth, death) && strcmp(name, last)) {
            memcpy(last, name, nn + 1);
            struct pl_attr ca;
            rc = elem_attr(st, txn, pl_get_le64(vp), view, &ca);
            if (rc)
                break;
            if (cb(arg, name, &ca))
                break;
        }
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    if (rc == PL_ENOENT)
        rc = 0;
out:
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- extended attributes ---- */
struct xa_args {
    uint64_t id;
    const char *name;
    const void *val;
    size_t n;
    int remove;
};

static int apply_xattr(struct meta_txn *t, void *arg)
{
    struct xa_args *a = arg;
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = a->remove ? prop_del(&e, PROP_XATTR, a->name)
                       : prop_set(&e, PROP_XATTR, a->name, a->val, a->n);
    if (!rc) {
        e.a.ctime = pl_now_ns();
        rc = elem_put(t, &e);
    }
    if (!rc)
        rc = event_queue_elem(t, EV_META, &e);
    elem_release(&e);
    return rc;
}

int pl_xattr_set(struct pl_store *st, uint64_t id, const char *name, const void *val, size_t n)
{
    if (!*name || strlen(name) > 255)
        return PL_ERANGE;
    struct xa_args a = {id, name, val, n, 0};
    return meta_submit(st->meta, apply_xattr, &a);
}

int pl_xattr_remove(struct pl_store *st, uint64_t id, const char *name)
{
    struct xa_args a = {id, name, NULL, 0, 1};
    return meta_submit(st->meta, apply_xattr, &a);
}

ssize_t pl_xattr_get(struct pl_store *st, uint64_t id, uint64_t view, const char *name, void *val,
                     size_t n)
{
    MDB_txn *txn;
    struct elem e;
    struct pl_str s;
    elem_init(&e);
    ssize_t rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_get(txn, st->meta, id, view, &e);
    if (!rc)
        rc = prop_get(&e, PROP_XATTR, name, &s);
    if (!rc) {
        if (val)
            memcpy(val, s.p, PL_MIN(n, s.n));
        rc = (ssize_t)s.n;
    }
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

ssize_t pl_xattr_list(struct pl_store *st, uint64_t id, uint64_t view, char *buf, size_t n)
{
    MDB_txn *txn;
    struct elem e;
    elem_init(&e);
    ssize_t rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_get(txn, st->meta, id, view, &e);
    size_t total = 0, off = 0;
    const uint8_t *p = (const uint8_t *)e.props.data;
    while (!rc && off + 5 <= e.props.len) {
        uint32_t len = pl_get_le32(p + off + 1);
        if (off + 5 + len > e.props.len) {
            rc = PL_ECORRUPT;
            break;
        }
        if (p[off] == PROP_XATTR) {
            size_t nl = strnlen((const char *)p + off + 5, len) + 1;
            if (buf && total + nl <= n)
                memcpy(buf + total, p + off + 5, nl);
            total += nl;
        }
        off += 5 + len;
    }
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc ? rc : (ssize_t)total;
}

/* ---- holes ---- */
struct punch_args {
    uint64_t id, off, len;
};

static int apply_punch(struct meta_txn *t, void *arg)
{
    struct punch_args *a = arg;
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = elem_content_writable(&e);
    uint64_t end = a->off + a->len;
    if (!rc && end > e.a.size)
        end = e.a.size;
    if (!rc && a->off < end)
        rc = extent_punch(t, a->id, a->off, end);
    if (!rc) {
        e.a.mtime = e.a.ctime = pl_now_ns();
        e.a.etag[0] = 0;
        (void)prop_del(&e, PROP_PARTS, NULL);
        rc = elem_put(t, &e);
    }
    if (!rc)
        rc = event_write_mark(t, &e);
    elem_release(&e);
    return rc;
}

int pl_elem_punch(struct pl_store *st, uint64_t id, uint64_t off, uint64_t len)
{
    struct punch_args a = {id, off, len};
    if (off + len < off)
        return PL_EINVAL;
    return meta_submit(st->meta, apply_punch, &a);
}

int pl_elem_map(struct pl_store *st, uint64_t id, uint64_t view, uint64_t off, uint64_t len,
                pl_map_fn cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    struct elem e;
    uint8_t k[24];
    elem_init(&e);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_get(txn, st->meta, id, view, &e);
    uint64_t end = off + len < off ? UINT64_MAX : off + len, pos = off;
    if (!rc && end > e.a.size)
        end = e.a.size;
    if (!rc)
        rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_EXTENT), &c));
    /* an extent is at most a chunk long: one covering off starts within that */
    uint64_t from = off > DATA_MAX_CHUNK ? off - DATA_MAX_CHUNK : 0;
    MDB_val key = {key_extent(k, id, from, PL_EPOCH_INF), k}, val;
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    int stop = 0;
    while (!rc && !stop && pos < end && key.mv_size == 24 && pl_get_be64(key.mv_data) == id) {
        const uint8_t *vp = val.mv_data;
        uint64_t s = pl_get_be64((const uint8_t *)key.mv_data + 8);
        uint64_t birth = ~pl_get_be64((const uint8_t *)key.mv_data + 16);
        if (val.mv_size == 48 && view_sees(view, birth, pl_get_le64(vp + 40))) {
            uint64_t x = s + pl_get_le32(vp + 36);
            if (s >= end)
                break;
            if (x > pos) {
                if (s > pos)
                    stop = cb(arg, pos, s - pos, 0);
                uint64_t a = PL_MAX(s, pos), b = PL_MIN(x, end);
                if (!stop)
                    stop = cb(arg, a, b - a, 1);
                pos = b;
            }
        }
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    if (rc == PL_ENOENT)
        rc = 0;
    if (!rc && !stop && pos < end)
        cb(arg, pos, end - pos, 0);
    if (c)
        mdb_cursor_close(c);
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

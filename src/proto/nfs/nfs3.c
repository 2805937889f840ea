/* NFSv3 procedures (RFC 1813) on the element API.
 *
 * - Handles carry the export root, the element, the snapshot epoch and a MAC
 *   (nfs.c): a client cannot forge one into another export, and every call
 *   checks its export's rules for the caller's address again.
 * - Writes are made durable before the reply (pl_elem_write), so every WRITE
 *   answers FILE_SYNC and COMMIT has nothing left to do.
 * - Errors map once, from store codes to nfsstat3 (nfs_status).
 * - Permissions: mode bits against the AUTH_SYS identity after squashing;
 *   root (unsquashed) passes every check but execute on non-executables.
 */
#include "proto/nfs/nfsint.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/xxh.h"

#define ACCESS3_READ 0x01
#define ACCESS3_LOOKUP 0x02
#define ACCESS3_MODIFY 0x04
#define ACCESS3_EXTEND 0x08
#define ACCESS3_DELETE 0x10
#define ACCESS3_EXECUTE 0x20

#define SNAPDIR_NAME ".snapshot"
#define NAME_BUF 1025
#define SNAPDIR_ID_BIAS 0x7f00000000000000ull /* fileids of the virtual directories */

uint32_t nfs_status(int rc)
{
    switch (rc) {
    case 0:
        return NFS3_OK;
    case PL_EPERM:
        return NFS3ERR_PERM;
    case PL_ENOENT:
    case PL_ENOBUCKET:
    case PL_ENOSNAP:
        return NFS3ERR_NOENT;
    case PL_EACCES:
        return NFS3ERR_ACCES;
    case PL_EEXIST:
    case PL_ECONFLICT:
        return NFS3ERR_EXIST;
    case PL_EXDEV:
        return NFS3ERR_XDEV;
    case PL_ENOTDIR:
        return NFS3ERR_NOTDIR;
    case PL_EISDIR:
        return NFS3ERR_ISDIR;
    case PL_EINVAL:
    case PL_ELOOP:
        return NFS3ERR_INVAL;
    case PL_EFBIG:
        return NFS3ERR_FBIG;
    case PL_ENOSPC:
        return NFS3ERR_NOSPC;
    case PL_EROFS:
        return NFS3ERR_ROFS;
    case PL_EMLINK:
        return NFS3ERR_MLINK;
    case PL_ENAMETOOLONG:
        return NFS3ERR_NAMETOOLONG;
    case PL_ENOTEMPTY:
        return NFS3ERR_NOTEMPTY;
    case PL_EAGAIN:
    case PL_EBUSY:
        return NFS3ERR_JUKEBOX;
    case PL_ECORRUPT:
    case PL_EIO:
        return NFS3ERR_IO;
    default:
        return NFS3ERR_SERVERFAULT;
    }
}

/* ---- per call state ---- */
struct call {
    struct nfs_ctx *x;
    struct xdr_in *in;
    struct xdr_out *o;
    struct nfs_reply *r; /* READ sends its data from here */
    struct nfs_caller who;
    struct nfs_export ex; /* of the first handle */
};

/* ---- attributes ---- */
static void put_time(struct xdr_out *o, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    xdr_put_u32(o, (uint32_t)(ns / 1000000000));
    xdr_put_u32(o, (uint32_t)(ns % 1000000000));
}

static uint32_t ftype(uint8_t t)
{
    return t == PL_T_DIR ? 2 : t == PL_T_SYMLINK ? 5 : 1;
}

static void put_fattr(struct xdr_out *o, const struct nfs_fh *fh, const struct pl_attr *a)
{
    xdr_put_u32(o, ftype(a->type));
    xdr_put_u32(o, a->mode & 07777);
    xdr_put_u32(o, a->nlink ? a->nlink : 1);
    xdr_put_u32(o, a->uid);
    xdr_put_u32(o, a->gid);
    xdr_put_u64(o, a->size);
    xdr_put_u64(o, (a->size + 4095) & ~4095ull);
    xdr_put_u32(o, 0); /* rdev */
    xdr_put_u32(o, 0);
    xdr_put_u64(o, fh->view ? 0x100000000ull | fh->view : 1); /* fsid: a snapshot is its own */
    xdr_put_u64(o, a->id);
    put_time(o, a->atime);
    put_time(o, a->mtime);
    put_time(o, a->ctime);
}

/* The attributes of the virtual ".snapshot" directory: the root's, read-only. */
static void snapdir_attr(const struct pl_attr *root, struct pl_attr *a)
{
    *a = *root;
    a->id = SNAPDIR_ID_BIAS | root->id;
    a->mode = 0555;
    a->nlink = 2;
}

/* Attributes of what fh names (PL_ENOENT when it is gone). */
static int fh_attr(struct call *c, const struct nfs_fh *fh, struct pl_attr *a)
{
    if (fh->snapdir) {
        struct pl_attr root;
        int rc = pl_elem_getattr(c->x->st, fh->root, PL_VIEW_LIVE, &root);
        if (!rc)
            snapdir_attr(&root, a);
        return rc;
    }
    int rc = pl_elem_getattr(c->x->st, fh->id, fh->view, a);
    /* an element whose last name went is dropped soon: its handle is stale now */
    if (!rc && a->nlink == 0 && a->type != PL_T_DIR && fh->view == PL_VIEW_LIVE)
        rc = PL_ENOENT;
    if (!rc && a->type == PL_T_FILE && fh->view == PL_VIEW_LIVE)
        wb_attr(c->x->wb, a);
    return rc;
}

static void put_post_attr(struct call *c, const struct nfs_fh *fh)
{
    struct pl_attr a;
    if (fh && fh_attr(c, fh, &a) == 0) {
        xdr_put_u32(c->o, 1);
        put_fattr(c->o, fh, &a);
    } else {
        xdr_put_u32(c->o, 0);
    }
}

/* wcc_data: pre-operation size and times (when known), then post attributes. */
struct pre {
    int have;
    uint64_t size;
    int64_t mtime, ctime;
};

static void pre_take(struct call *c, const struct nfs_fh *fh, struct pre *p)
{
    struct pl_attr a;
    p->have = fh_attr(c, fh, &a) == 0;
    if (p->have) {
        p->size = a.size;
        p->mtime = a.mtime;
        p->ctime = a.ctime;
    }
}

static void put_wcc(struct call *c, const struct pre *p, const struct nfs_fh *fh)
{
    xdr_put_u32(c->o, p && p->have);
    if (p && p->have) {
        xdr_put_u64(c->o, p->size);
        put_time(c->o, p->mtime);
        put_time(c->o, p->ctime);
    }
    put_post_attr(c, fh);
}

static void put_fh(struct call *c, const struct nfs_fh *fh)
{
    uint8_t b[NFS_FH_LEN];
    nfs_fh_encode(c->x, fh, b);
    xdr_put_opaque(c->o, b, NFS_FH_LEN);
}

/* ---- arguments ---- */
/* A handle argument: decoded, still there, and reachable by this client. */
static uint32_t get_fh(struct call *c, struct nfs_fh *fh)
{
    uint32_t n;
    /* a handle we refuse names nothing: no attributes go back for it */
    memset(fh, 0, sizeof(*fh));
    const uint8_t *p = xdr_opaque(c->in, 64, &n);
    if (!p)
        return NFS3ERR_INVAL; /* becomes GARBAGE_ARGS */
    if (nfs_fh_decode(c->x, p, n, fh)) {
        memset(fh, 0, sizeof(*fh));
        return NFS3ERR_BADHANDLE;
    }
    struct nfs_export ex;
    if (nfs_export_for(c->x, fh->root, c->who.addr, &ex)) {
        memset(fh, 0, sizeof(*fh));
        return NFS3ERR_ACCES;
    }
    if (!c->ex.bucket[0]) {
        c->ex = ex;
        /* squash as the export says */
        c->who.uid = c->who.cred.uid;
        c->who.gid = c->who.cred.gid;
        if (ex.rule.squash == PL_SQUASH_ALL ||
            (ex.rule.squash == PL_SQUASH_ROOT && c->who.uid == 0)) {
            c->who.uid = ex.rule.anon_uid;
            c->who.gid = ex.rule.anon_gid;
            c->who.cred.ngids = 0;
        }
    }
    struct pl_attr a;
    int rc = fh_attr(c, fh, &a);
    return rc == PL_ENOENT ? NFS3ERR_STALE : nfs_status(rc);
}

static void get_name(struct call *c, char name[NAME_BUF])
{
    /* past our limit but within a sane one: NAMETOOLONG, not garbage */
    xdr_string(c->in, name, NAME_BUF - 1);
}

static uint32_t name_check(const char *name)
{
    if (strlen(name) > PL_NAME_MAX)
        return NFS3ERR_NAMETOOLONG;
    if (!name[0] || strchr(name, '/'))
        return NFS3ERR_INVAL;
    return 0;
}

struct sattr {
    unsigned mask;
    struct pl_attr a;
};

static void get_time(struct xdr_in *in, int64_t *ns)
{
    uint64_t s = xdr_u32(in), n = xdr_u32(in);
    *ns = (int64_t)(s * 1000000000ull + (n % 1000000000u));
}

static void get_sattr(struct call *c, struct sattr *s)
{
    memset(s, 0, sizeof(*s));
    if (xdr_u32(c->in)) {
        s->mask |= PL_SET_MODE;
        s->a.mode = xdr_u32(c->in) & 07777;
    }
    if (xdr_u32(c->in)) {
        s->mask |= PL_SET_UID;
        s->a.uid = xdr_u32(c->in);
    }
    if (xdr_u32(c->in)) {
        s->mask |= PL_SET_GID;
        s->a.gid = xdr_u32(c->in);
    }
    if (xdr_u32(c->in)) {
        s->mask |= PL_SET_SIZE;
        s->a.size = xdr_u64(c->in);
    }
    for (int i = 0; i < 2; i++) {
        uint32_t how = xdr_u32(c->in);
        int64_t *t = i ? &s->a.mtime : &s->a.atime;
        if (how == 1)
            *t = pl_now_ns();
        else if (how == 2)
            get_time(c->in, t);
        else if (how != 0)
            c->in->bad = 1;
        if (how == 1 || how == 2)
            s->mask |= i ? PL_SET_MTIME : PL_SET_ATIME;
    }
}

/* ---- permissions ---- */
static int in_groups(const struct nfs_caller *w, uint32_t gid)
{
    if (w->gid == gid)
        return 1;
    for (uint32_t i = 0; i < w->cred.ngids && w->uid == w->cred.uid; i++)
        if (w->cred.gids[i] == gid)
            return 1;
    return 0;
}

/* rwx bits (4/2/1) the caller has on a. */
static unsigned perms(const struct nfs_caller *w, const struct pl_attr *a)
{
    if (w->uid == 0)
        return 6 | ((a->mode & 0111) || a->type == PL_T_DIR ? 1 : 0);
    if (w->uid == a->uid)
        return (a->mode >> 6) & 7;
    if (in_groups(w, a->gid))
        return (a->mode >> 3) & 7;
    return a->mode & 7;
}

static uint32_t may(struct call *c, const struct pl_attr *a, unsigned want)
{
    return (perms(&c->who, a) & want) == want ? 0 : NFS3ERR_ACCES;
}

/* Mutations: not through a read-only export or into a snapshot. */
static uint32_t writable(struct call *c, const struct nfs_fh *fh)
{
    if (c->ex.rule.readonly || fh->view || fh->snapdir)
        return NFS3ERR_ROFS;
    return 0;
}

/* ---- procedures ---- */
static void proc_getattr(struct call *c)
{
    struct nfs_fh fh;
    uint32_t st = get_fh(c, &fh);
    struct pl_attr a;
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = nfs_status(fh_attr(c, &fh, &a));
    xdr_put_u32(c->o, st);
    if (!st)
        put_fattr(c->o, &fh, &a);
}

static void proc_setattr(struct call *c)
{
    struct nfs_fh fh;
    struct sattr s;
    struct pre pre = {0};
    struct pl_attr a;
    uint32_t st = get_fh(c, &fh);
    get_sattr(c, &s);
    int guard = (int)xdr_u32(c->in);
    int64_t guard_ctime = 0;
    if (guard)
        get_time(c->in, &guard_ctime);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &fh, &pre);
    if (!st)
        st = writable(c, &fh);
    if (!st && !fh.snapdir)
        st = nfs_status(wb_settle(c->x->wb, fh.id)); /* a new size applies after the writes */
    if (!st)
        st = nfs_status(fh_attr(c, &fh, &a));
    /* the guard compares the ctime as the client saw it (seconds and ns) */
    if (!st && guard && pre.ctime != guard_ctime)
        st = NFS3ERR_NOT_SYNC;
    if (!st && c->who.uid != 0) {
        /* only the owner changes mode and group (to one of its groups); nobody
         * gives a file away; size and others' times need write permission */
        int owner = c->who.uid == a.uid;
        int denied = ((s.mask & PL_SET_UID) && s.a.uid != a.uid) ||
                     ((s.mask & (PL_SET_MODE | PL_SET_GID)) && !owner) ||
                     ((s.mask & PL_SET_GID) && !in_groups(&c->who, s.a.gid));
        int need_write = (s.mask & PL_SET_SIZE) ||
                         ((s.mask & (PL_SET_ATIME | PL_SET_MTIME)) && !owner);
        if (denied)
            st = NFS3ERR_PERM;
        else if (need_write)
            st = may(c, &a, 2);
    }
    if (!st && (s.mask & PL_SET_SIZE) && a.type == PL_T_DIR)
        st = NFS3ERR_ISDIR;
    if (!st && s.mask)
        st = nfs_status(pl_elem_setattr(c->x->st, fh.id, s.mask, &s.a, NULL));
    xdr_put_u32(c->o, st);
    put_wcc(c, &pre, st == NFS3ERR_STALE ? NULL : &fh);
}

/* Resolve name in directory dir (handling "." , ".." and the snapshot tree). */
static uint32_t lookup_in(struct call *c, const struct nfs_fh *dir, const char *name,
                          struct nfs_fh *ret)
{
    struct pl_attr da, a;
    *ret = *dir;
    int rc = fh_attr(c, dir, &da);
    if (rc)
        return nfs_status(rc);
    if (da.type != PL_T_DIR)
        return NFS3ERR_NOTDIR;
    uint32_t st = may(c, &da, 1);
    if (st)
        return st;
    *ret = *dir;
    ret->snapdir = 0;
    if (!strcmp(name, ".")) {
        ret->snapdir = dir->snapdir;
        return 0;
    }
    if (!strcmp(name, "..")) {
        if (dir->snapdir || (dir->id == dir->root && dir->view)) {
            ret->id = dir->root; /* out of a snapshot: the bucket as it is */
            ret->view = PL_VIEW_LIVE;
        } else if (dir->id != dir->root && dir->id != dir->top) {
            ret->id = da.parent;
        } /* else never above what was mounted */
        return 0;
    }
    if (dir->snapdir) {
        struct pl_snap_info si;
        rc = pl_snap_get(c->x->st, name, &si);
        if (rc)
            return nfs_status(rc);
        ret->id = dir->root;
        ret->view = si.epoch;
        /* the bucket must exist in that snapshot */
        return nfs_status(pl_elem_getattr(c->x->st, ret->id, ret->view, &a));
    }
    if (dir->id == dir->root && dir->view == PL_VIEW_LIVE && !strcmp(name, SNAPDIR_NAME)) {
        ret->snapdir = 1;
        return 0;
    }
    rc = pl_elem_lookup(c->x->st, dir->id, name, dir->view, &a);
    if (rc)
        return nfs_status(rc);
    ret->id = a.id;
    return 0;
}

int nfs_path_walk(struct nfs_ctx *x, uint64_t root, const char *path, struct nfs_fh *ret)
{
    struct nfs_fh fh = {.root = root, .id = root};
    char name[NAME_BUF];
    int rc = 0;
    while (!rc && *path) {
        while (*path == '/')
            path++;
        size_t n = strcspn(path, "/");
        if (n == 0)
            break;
        if (n > PL_NAME_MAX)
            return PL_ENAMETOOLONG;
        memcpy(name, path, n);
        name[n] = 0;
        path += n;
        struct pl_attr a;
        if (fh.snapdir) {
            struct pl_snap_info si;
            rc = pl_snap_get(x->st, name, &si);
            fh.snapdir = 0;
            fh.view = si.epoch;
            if (!rc)
                rc = pl_elem_getattr(x->st, fh.root, fh.view, &a);
        } else if (fh.id == root && fh.view == PL_VIEW_LIVE && !strcmp(name, SNAPDIR_NAME)) {
            fh.snapdir = 1;
        } else if (!strcmp(name, ".") || !strcmp(name, "..")) {
            rc = PL_EINVAL; /* mount paths are plain */
        } else {
            rc = pl_elem_lookup(x->st, fh.id, name, fh.view, &a);
            if (!rc && a.type != PL_T_DIR)
                rc = PL_ENOTDIR;
            fh.id = a.id;
        }
    }
    if (!rc) {
        fh.top = fh.snapdir ? root : fh.id;
        *ret = fh;
    }
    return rc;
}

static void proc_lookup(struct call *c)
{
    struct nfs_fh dir, fh;
    char name[NAME_BUF];
    uint32_t st = get_fh(c, &dir);
    get_name(c, name);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = name_check(name);
    if (!st)
        st = lookup_in(c, &dir, name, &fh);
    xdr_put_u32(c->o, st);
    if (!st) {
        put_fh(c, &fh);
        put_post_attr(c, &fh);
    }
    put_post_attr(c, st == NFS3ERR_STALE || st == NFS3ERR_BADHANDLE ? NULL : &dir);
}

static void proc_access(struct call *c)
{
    struct nfs_fh fh;
    struct pl_attr a;
    uint32_t st = get_fh(c, &fh);
    uint32_t want = xdr_u32(c->in), got = 0;
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = nfs_status(fh_attr(c, &fh, &a));
    if (!st) {
        unsigned p = perms(&c->who, &a);
        int ro = writable(c, &fh) != 0;
        if (p & 4)
            got |= ACCESS3_READ;
        if (p & 1)
            got |= a.type == PL_T_DIR ? ACCESS3_LOOKUP : ACCESS3_EXECUTE;
        if ((p & 2) && !ro)
            got |= ACCESS3_MODIFY | ACCESS3_EXTEND | (a.type == PL_T_DIR ? ACCESS3_DELETE : 0);
        got &= want;
    }
    xdr_put_u32(c->o, st);
    put_post_attr(c, st ? NULL : &fh);
    if (!st)
        xdr_put_u32(c->o, got);
}

static void proc_readlink(struct call *c)
{
    struct nfs_fh fh;
    char *target = malloc(PL_PATH_MAX + 1);
    uint32_t st = get_fh(c, &fh);
    if (!xdr_ok(c->in) || !target) {
        free(target);
        return;
    }
    if (!st)
        st = nfs_status(pl_elem_readlink(c->x->st, fh.id, fh.view, target, PL_PATH_MAX + 1));
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &fh);
    if (!st)
        xdr_put_string(c->o, target);
    free(target);
}

static void proc_read(struct call *c)
{
    struct nfs_reply *r = c->r;
    struct nfs_fh fh;
    struct pl_attr a;
    uint32_t st = get_fh(c, &fh);
    uint64_t off = xdr_u64(c->in);
    uint32_t count = xdr_u32(c->in);
    size_t got = 0;
    count = PL_MIN(count, NFS_MAXDATA);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = nfs_status(fh_attr(c, &fh, &a));
    if (!st && a.type == PL_T_DIR)
        st = NFS3ERR_ISDIR;
    else if (!st && a.type != PL_T_FILE)
        st = NFS3ERR_INVAL;
    if (!st && c->who.uid != a.uid)
        st = may(c, &a, 4); /* the owner may read what it may not (open files) */
    if (!st && fh.view == PL_VIEW_LIVE)
        st = nfs_status(wb_settle(c->x->wb, fh.id));
    struct pf_slot *pf = NULL;
    if (!st && count &&
        !nfs_prefetch_begin(c->x->pf, fh.id, fh.view, off, count, &pf, &r->data, &got, &a)) {
        r->data = malloc(count);
        if (!r->data)
            st = NFS3ERR_JUKEBOX;
        else
            st = nfs_status(pl_elem_read(c->x->st, fh.id, fh.view, off, r->data, count, &got));
    }
    if (pf)
        nfs_prefetch_end(c->x->pf, pf, off, count, st ? 0 : got, a.size);
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &fh);
    if (st) {
        free(r->data);
        r->data = NULL;
        return;
    }
    xdr_put_u32(c->o, (uint32_t)got);
    xdr_put_u32(c->o, off + got >= a.size);
    xdr_put_u32(c->o, (uint32_t)got); /* opaque length; the bytes follow from r->data */
    r->data_n = got;
}

static void proc_write(struct call *c)
{
    struct nfs_fh fh;
    struct pre pre = {0};
    struct pl_attr a;
    uint32_t st = get_fh(c, &fh), n;
    uint64_t off = xdr_u64(c->in);
    uint32_t count = xdr_u32(c->in);
    uint32_t stable = xdr_u32(c->in); /* UNSTABLE 0, DATA_SYNC 1, FILE_SYNC 2 */
    const uint8_t *data = xdr_opaque(c->in, NFS_MAXDATA, &n);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &fh, &pre);
    if (!st)
        st = writable(c, &fh);
    if (!st)
        st = nfs_status(fh_attr(c, &fh, &a));
    if (!st && a.type == PL_T_DIR)
        st = NFS3ERR_ISDIR;
    else if (!st && a.type != PL_T_FILE)
        st = NFS3ERR_INVAL;
    if (!st && c->who.uid != a.uid)
        st = may(c, &a, 2);
    if (!st && count > n)
        st = NFS3ERR_INVAL;
    if (!st && count && stable == 0) {
        st = nfs_status(wb_write(c->x->wb, fh.id, off, data, count));
    } else if (!st) {
        /* a stable write lands after the unstable ones before it */
        st = nfs_status(wb_settle(c->x->wb, fh.id));
        if (!st && count)
            st = nfs_status(pl_elem_write(c->x->st, fh.id, off, data, count));
        stable = 2; /* durable on return: FILE_SYNC, whatever was asked */
    }
    xdr_put_u32(c->o, st);
    put_wcc(c, &pre, st == NFS3ERR_STALE ? NULL : &fh);
    if (!st) {
        xdr_put_u32(c->o, count);
        xdr_put_u32(c->o, stable ? 2 : 0);
        xdr_put_fixed(c->o, c->x->write_verf, 8);
    }
}

/* Replies of CREATE, MKDIR, SYMLINK, MKNOD. */
static void put_diropres(struct call *c, uint32_t st, const struct nfs_fh *obj,
                         const struct pre *pre, const struct nfs_fh *dir)
{
    xdr_put_u32(c->o, st);
    if (!st) {
        xdr_put_u32(c->o, 1);
        put_fh(c, obj);
        put_post_attr(c, obj);
    }
    put_wcc(c, pre, dir);
}

/* Checks before making name in dir: writable, a directory we may write. */
static uint32_t can_make(struct call *c, const struct nfs_fh *dir, const char *name)
{
    struct pl_attr da;
    uint32_t st = name_check(name);
    if (!st)
        st = writable(c, dir);
    if (!st)
        st = nfs_status(fh_attr(c, dir, &da));
    if (!st && da.type != PL_T_DIR)
        st = NFS3ERR_NOTDIR;
    if (!st)
        st = may(c, &da, 3);
    if (!st && (!strcmp(name, ".") || !strcmp(name, "..")))
        st = NFS3ERR_EXIST;
    if (!st && dir->id == dir->root && !strcmp(name, SNAPDIR_NAME))
        st = NFS3ERR_EXIST;
    return st;
}

/* Checks before taking name out of dir (REMOVE, RMDIR, the source of
 * RENAME): a real entry of a writable directory we may write; "." and ".."
 * answer dots. */
static uint32_t can_unlink(struct call *c, const struct nfs_fh *dir, const char *name,
                           uint32_t dots)
{
    struct nfs_fh obj;
    struct pl_attr da;
    uint32_t st = name_check(name);
    if (!st && (!strcmp(name, ".") || !strcmp(name, "..")))
        st = dots;
    if (!st)
        st = writable(c, dir);
    if (!st)
        st = lookup_in(c, dir, name, &obj);
    if (!st && obj.snapdir)
        st = NFS3ERR_ACCES;
    if (!st)
        st = nfs_status(fh_attr(c, dir, &da));
    if (!st)
        st = may(c, &da, 3);
    return st;
}

/* EXCLUSIVE create keeps the client's verifier in the new file's atime and
 * mtime, as RFC 1813 suggests, so a retransmission finds its own file. */
static int64_t verf_time(const uint8_t v[8])
{
    return (int64_t)(pl_get_be64(v) & 0x3fffffffffffffffull);
}

static void proc_create(struct call *c)
{
    struct nfs_fh dir, fh;
    struct pre pre = {0};
    struct sattr s = {0};
    char name[NAME_BUF];
    uint8_t verf[8] = {0};
    uint32_t st = get_fh(c, &dir);
    get_name(c, name);
    uint32_t how = xdr_u32(c->in);
    if (how == 0 || how == 1) {
        get_sattr(c, &s);
    } else if (how == 2) {
        const uint8_t *v = xdr_fixed(c->in, 8);
        if (v)
            memcpy(verf, v, 8);
    } else {
        c->in->bad = 1;
    }
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &dir, &pre);
    if (!st)
        st = can_make(c, &dir, name);
    struct pl_attr a;
    fh = dir;
    if (!st) {
        uint32_t mode = (s.mask & PL_SET_MODE) ? s.a.mode : 0644;
        int rc = pl_elem_create(c->x->st, dir.id, name, mode, c->who.uid, c->who.gid, how != 0,
                                &a);
        if (rc == PL_EEXIST && how == 2) {
            /* a retransmitted exclusive create finds its own file */
            rc = pl_elem_lookup(c->x->st, dir.id, name, PL_VIEW_LIVE, &a);
            if (!rc && (a.type != PL_T_FILE || a.mtime != verf_time(verf)))
                rc = PL_EEXIST;
        } else if (!rc && how == 2) {
            struct pl_attr t = {0};
            t.atime = t.mtime = verf_time(verf);
            rc = pl_elem_setattr(c->x->st, a.id, PL_SET_ATIME | PL_SET_MTIME, &t, &a);
        } else if (!rc && a.type != PL_T_FILE) {
            rc = PL_EEXIST; /* UNCHECKED over a directory or symlink */
        } else if (!rc && (s.mask & ~PL_SET_MODE)) {
            if ((s.mask & PL_SET_SIZE) && c->who.uid != 0 && c->who.uid != a.uid &&
                may(c, &a, 2))
                rc = PL_EACCES;
            else
                rc = pl_elem_setattr(c->x->st, a.id, s.mask & ~PL_SET_MODE, &s.a, &a);
        }
        st = nfs_status(rc);
        fh.id = a.id;
    }
    put_diropres(c, st, &fh, &pre, st == NFS3ERR_STALE ? NULL : &dir);
}

static void proc_mkdir(struct call *c)
{
    struct nfs_fh dir, fh;
    struct pre pre = {0};
    struct sattr s;
    char name[NAME_BUF];
    uint32_t st = get_fh(c, &dir);
    get_name(c, name);
    get_sattr(c, &s);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &dir, &pre);
    if (!st)
        st = can_make(c, &dir, name);
    fh = dir;
    if (!st) {
        struct pl_attr a;
        uint32_t mode = (s.mask & PL_SET_MODE) ? s.a.mode : 0755;
        st = nfs_status(pl_elem_mkdir(c->x->st, dir.id, name, mode, c->who.uid, c->who.gid, &a));
        fh.id = a.id;
    }
    put_diropres(c, st, &fh, &pre, st == NFS3ERR_STALE ? NULL : &dir);
}

static void proc_symlink(struct call *c)
{
    struct nfs_fh dir, fh;
    struct pre pre = {0};
    struct sattr s;
    char name[NAME_BUF];
    char *target = malloc(PL_PATH_MAX + 1);
    if (!target)
        return;
    uint32_t st = get_fh(c, &dir);
    get_name(c, name);
    get_sattr(c, &s);
    xdr_string(c->in, target, PL_PATH_MAX);
    if (!xdr_ok(c->in)) {
        free(target);
        return;
    }
    if (!st)
        pre_take(c, &dir, &pre);
    if (!st)
        st = can_make(c, &dir, name);
    if (!st && !target[0])
        st = NFS3ERR_INVAL;
    fh = dir;
    if (!st) {
        struct pl_attr a;
        st = nfs_status(
            pl_elem_symlink(c->x->st, dir.id, name, target, c->who.uid, c->who.gid, &a));
        fh.id = a.id;
    }
    free(target);
    put_diropres(c, st, &fh, &pre, st == NFS3ERR_STALE ? NULL : &dir);
}

static void proc_mknod(struct call *c)
{
    struct nfs_fh dir;
    struct pre pre = {0};
    struct sattr s;
    char name[NAME_BUF];
    uint32_t st = get_fh(c, &dir);
    get_name(c, name);
    uint32_t type = xdr_u32(c->in);
    if (type == 3 || type == 4) { /* BLK, CHR: attributes and device numbers */
        get_sattr(c, &s);
        (void)xdr_u32(c->in);
        (void)xdr_u32(c->in);
    } else if (type == 6 || type == 7) { /* SOCK, FIFO */
        get_sattr(c, &s);
    }
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &dir, &pre);
    if (!st)
        st = can_make(c, &dir, name);
    if (!st)
        st = type >= 3 && type <= 7 && type != 5 ? NFS3ERR_NOTSUPP : NFS3ERR_BADTYPE;
    put_diropres(c, st, NULL, &pre, st == NFS3ERR_STALE ? NULL : &dir);
}

/* REMOVE and RMDIR. */
static void proc_remove(struct call *c, int dir_too)
{
    struct nfs_fh dir;
    struct pre pre = {0};
    char name[NAME_BUF];
    uint32_t st = get_fh(c, &dir);
    get_name(c, name);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &dir, &pre);
    if (!st)
        st = can_unlink(c, &dir, name, dir_too ? NFS3ERR_INVAL : NFS3ERR_ACCES);
    if (!st)
        st = nfs_status(dir_too ? pl_elem_rmdir(c->x->st, dir.id, name)
                                : pl_elem_unlink(c->x->st, dir.id, name));
    xdr_put_u32(c->o, st);
    put_wcc(c, &pre, st == NFS3ERR_STALE ? NULL : &dir);
}

static void proc_rename(struct call *c)
{
    struct nfs_fh from, to;
    struct pre pf = {0}, pt = {0};
    char fname[NAME_BUF], tname[NAME_BUF];
    uint32_t st = get_fh(c, &from);
    get_name(c, fname);
    uint32_t st2 = get_fh(c, &to);
    get_name(c, tname);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = st2;
    if (!st && from.root != to.root)
        st = NFS3ERR_XDEV;
    if (!st) {
        pre_take(c, &from, &pf);
        pre_take(c, &to, &pt);
    }
    if (!st)
        st = can_unlink(c, &from, fname, NFS3ERR_INVAL);
    if (!st)
        st = can_make(c, &to, tname);
    if (!st)
        st = nfs_status(pl_elem_rename(c->x->st, from.id, fname, to.id, tname));
    xdr_put_u32(c->o, st);
    put_wcc(c, &pf, st == NFS3ERR_STALE ? NULL : &from);
    put_wcc(c, &pt, st == NFS3ERR_STALE ? NULL : &to);
}

static void proc_link(struct call *c)
{
    struct nfs_fh fh, dir;
    struct pre pre = {0};
    char name[NAME_BUF];
    uint32_t st = get_fh(c, &fh);
    uint32_t st2 = get_fh(c, &dir);
    get_name(c, name);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = st2;
    if (!st && fh.root != dir.root)
        st = NFS3ERR_XDEV;
    if (!st)
        pre_take(c, &dir, &pre);
    if (!st)
        st = writable(c, &fh);
    if (!st)
        st = can_make(c, &dir, name);
    if (!st) {
        struct pl_attr a;
        st = nfs_status(fh_attr(c, &fh, &a));
        if (!st && a.type == PL_T_DIR)
            st = NFS3ERR_ISDIR;
    }
    if (!st)
        st = nfs_status(pl_elem_link(c->x->st, fh.id, dir.id, name, NULL));
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &fh);
    put_wcc(c, &pre, st == NFS3ERR_STALE ? NULL : &dir);
}

/* ---- directory listings ---- */
static const uint8_t COOKIE_VERF[8] = {'p', 'l', 'e', 'n', 'u', 'm', 'd', '1'};

static uint64_t cookie_of(uint64_t dir, const char *name)
{
    uint64_t h = XXH3_64bits_withSeed(name, strlen(name), dir);
    return h < 16 ? h + 16 : h; /* 0 starts a listing; 1 and 2 are "." and ".." */
}

static void cookie_remember(struct nfs_ctx *x, uint64_t dir, uint64_t cookie, const char *name)
{
    struct cookie_slot *s = &x->cookies[cookie % COOKIE_SLOTS];
    pthread_mutex_lock(&x->lock);
    s->cookie = cookie;
    s->dir = dir;
    snprintf(s->name, sizeof(s->name), "%s", name);
    pthread_mutex_unlock(&x->lock);
}

static int cookie_name(struct nfs_ctx *x, uint64_t dir, uint64_t cookie, char *name)
{
    struct cookie_slot *s = &x->cookies[cookie % COOKIE_SLOTS];
    int rc = PL_ENOENT;
    pthread_mutex_lock(&x->lock);
    if (s->cookie == cookie && s->dir == dir) {
        memcpy(name, s->name, sizeof(s->name));
        rc = 0;
    }
    pthread_mutex_unlock(&x->lock);
    return rc;
}

struct lister {
    struct call *c;
    const struct nfs_fh *dir;
    int plus;
    size_t room;  /* bytes of entries the client will take */
    size_t dirroom; /* READDIRPLUS: bytes of names and cookies */
    int full;
    struct pl_buf entries;
    struct xdr_out eo;
};

/* Add one entry; 1 when it did not fit (the listing stops before it). */
static int lister_add(struct lister *l, uint64_t fileid, const char *name, uint64_t cookie,
                      const struct nfs_fh *fh)
{
    size_t before = l->entries.len;
    size_t namelen = strlen(name);
    xdr_put_u32(&l->eo, 1);
    xdr_put_u64(&l->eo, fileid);
    xdr_put_string(&l->eo, name);
    xdr_put_u64(&l->eo, cookie);
    if (l->plus) {
        struct pl_attr a;
        struct call *c = l->c;
        struct xdr_out *saved = c->o;
        c->o = &l->eo;
        if (fh && fh_attr(c, fh, &a) == 0) {
            xdr_put_u32(&l->eo, 1);
            put_fattr(&l->eo, fh, &a);
            xdr_put_u32(&l->eo, 1);
            put_fh(c, fh);
        } else {
            xdr_put_u32(&l->eo, 0);
            xdr_put_u32(&l->eo, 0);
        }
        c->o = saved;
    }
    size_t dirbytes = 8 + 4 + ((namelen + 3) & ~3u) + 8;
    if (l->eo.bad || l->entries.len > l->room ||
        (l->plus && l->dirroom < dirbytes)) {
        l->entries.len = before; /* roll back: it did not fit */
        l->full = 1;
        return 1;
    }
    if (l->plus)
        l->dirroom -= dirbytes;
    return 0;
}

static int list_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct lister *l = arg;
    struct nfs_fh fh = *l->dir;
    fh.id = a->id;
    uint64_t cookie = cookie_of(l->dir->id, name);
    if (lister_add(l, a->id, name, cookie, &fh))
        return 1;
    cookie_remember(l->c->x, l->dir->id, cookie, name);
    return 0;
}

struct snap_list {
    struct lister *l;
    uint64_t after; /* skip snapshots until this cookie was seen */
    int skipping;
};

static int snap_cb(void *arg, const struct pl_snap_info *si)
{
    struct snap_list *s = arg;
    uint64_t cookie = cookie_of(SNAPDIR_ID_BIAS | s->l->dir->root, si->name);
    if (s->skipping) {
        s->skipping = cookie != s->after;
        return 0;
    }
    struct nfs_fh fh = *s->l->dir;
    fh.snapdir = 0;
    fh.id = fh.root;
    fh.view = si->epoch;
    return lister_add(s->l, SNAPDIR_ID_BIAS | si->epoch, si->name, cookie, &fh);
}

static void proc_readdir(struct call *c, int plus)
{
    struct nfs_fh dir;
    struct pl_attr da;
    uint32_t st = get_fh(c, &dir);
    uint64_t cookie = xdr_u64(c->in);
    const uint8_t *verf = xdr_fixed(c->in, 8);
    uint32_t dircount = plus ? xdr_u32(c->in) : 0;
    uint32_t count = xdr_u32(c->in);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = nfs_status(fh_attr(c, &dir, &da));
    if (!st && da.type != PL_T_DIR)
        st = NFS3ERR_NOTDIR;
    if (!st)
        st = may(c, &da, 4);
    if (!st && cookie && memcmp(verf, COOKIE_VERF, 8))
        st = NFS3ERR_BAD_COOKIE;
    struct lister l = {.c = c, .dir = &dir, .plus = plus};
    pl_buf_init(&l.entries);
    l.eo.b = &l.entries;
    /* the reply's fixed part takes about 120 bytes; entries get the rest */
    l.room = count > 256 ? PL_MIN(count, NFS_MAXDATA) - 128 : 0;
    l.dirroom = dircount ? dircount : count;
    char after[PL_NAME_MAX + 1] = "";
    int eof = 0;
    if (!st && l.room == 0)
        st = NFS3ERR_TOOSMALL;
    if (!st && cookie > 2 && !dir.snapdir && cookie_name(c->x, dir.id, cookie, after))
        st = NFS3ERR_BAD_COOKIE;
    if (!st && cookie == 0) {
        struct nfs_fh self = dir, up;
        if (lister_add(&l, da.id, ".", 1, &self) == 0 && lookup_in(c, &dir, "..", &up) == 0) {
            struct pl_attr ua;
            if (fh_attr(c, &up, &ua) == 0)
                (void)lister_add(&l, up.snapdir ? da.id : ua.id, "..", 2, &up);
        }
    } else if (!st && cookie == 1) {
        struct nfs_fh up;
        struct pl_attr ua;
        if (lookup_in(c, &dir, "..", &up) == 0 && fh_attr(c, &up, &ua) == 0)
            (void)lister_add(&l, ua.id, "..", 2, &up);
    }
    if (!st && !l.full) {
        int rc;
        if (dir.snapdir) {
            struct snap_list sl = {&l, cookie, cookie > 2};
            rc = pl_snap_list(c->x->st, snap_cb, &sl);
            if (!rc && sl.skipping && cookie > 2)
                st = NFS3ERR_BAD_COOKIE; /* that snapshot is gone */
        } else {
            rc = pl_dir_read(c->x->st, dir.id, dir.view, after, list_cb, &l);
        }
        if (!st)
            st = nfs_status(rc);
        eof = !l.full;
    }
    if (!st && l.entries.len == 0 && !eof)
        st = NFS3ERR_TOOSMALL;
    if (l.eo.bad)
        st = NFS3ERR_SERVERFAULT;
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &dir);
    if (!st) {
        xdr_put_fixed(c->o, COOKIE_VERF, 8);
        xdr_put_fixed(c->o, l.entries.data, (uint32_t)l.entries.len);
        xdr_put_u32(c->o, 0); /* no more entries */
        xdr_put_u32(c->o, (uint32_t)eof);
    }
    pl_buf_release(&l.entries);
}

static void proc_fsstat(struct call *c)
{
    struct nfs_fh fh;
    struct pl_store_stats s;
    uint32_t st = get_fh(c, &fh);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        st = nfs_status(pl_store_stats(c->x->st, &s));
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &fh);
    if (st)
        return;
    uint64_t total = s.free_bytes + s.physical_bytes;
    xdr_put_u64(c->o, total);
    xdr_put_u64(c->o, s.free_bytes);
    xdr_put_u64(c->o, s.free_bytes);
    xdr_put_u64(c->o, (1ull << 40));
    xdr_put_u64(c->o, (1ull << 40) - s.elements);
    xdr_put_u64(c->o, (1ull << 40) - s.elements);
    xdr_put_u32(c->o, 0);
}

static void proc_fsinfo(struct call *c)
{
    struct nfs_fh fh;
    uint32_t st = get_fh(c, &fh);
    if (!xdr_ok(c->in))
        return;
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &fh);
    if (st)
        return;
    xdr_put_u32(c->o, NFS_MAXDATA); /* rtmax */
    xdr_put_u32(c->o, NFS_MAXDATA); /* rtpref */
    xdr_put_u32(c->o, 4096);        /* rtmult */
    xdr_put_u32(c->o, NFS_MAXDATA); /* wtmax */
    xdr_put_u32(c->o, NFS_MAXDATA); /* wtpref */
    xdr_put_u32(c->o, 4096);        /* wtmult */
    xdr_put_u32(c->o, 65536);       /* dtpref */
    xdr_put_u64(c->o, 1ull << 60);  /* maxfilesize */
    xdr_put_u32(c->o, 0);           /* time_delta: 1 ns */
    xdr_put_u32(c->o, 1);
    /* FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME */
    xdr_put_u32(c->o, 0x0001 | 0x0002 | 0x0008 | 0x0010);
}

static void proc_pathconf(struct call *c)
{
    struct nfs_fh fh;
    uint32_t st = get_fh(c, &fh);
    if (!xdr_ok(c->in))
        return;
    xdr_put_u32(c->o, st);
    put_post_attr(c, st == NFS3ERR_STALE ? NULL : &fh);
    if (st)
        return;
    xdr_put_u32(c->o, 65000);       /* linkmax */
    xdr_put_u32(c->o, PL_NAME_MAX); /* name_max */
    xdr_put_u32(c->o, 1);           /* no_trunc */
    xdr_put_u32(c->o, 1);           /* chown_restricted */
    xdr_put_u32(c->o, 0);           /* case_insensitive */
    xdr_put_u32(c->o, 1);           /* case_preserving */
}

static void proc_commit(struct call *c)
{
    struct nfs_fh fh;
    struct pre pre = {0};
    uint32_t st = get_fh(c, &fh);
    (void)xdr_u64(c->in);
    (void)xdr_u32(c->in);
    if (!xdr_ok(c->in))
        return;
    if (!st)
        pre_take(c, &fh, &pre);
    if (!st && !fh.snapdir && fh.view == PL_VIEW_LIVE)
        st = nfs_status(wb_settle(c->x->wb, fh.id));
    if (!st && !fh.snapdir && fh.view == PL_VIEW_LIVE)
        st = nfs_status(pl_elem_written(c->x->st, fh.id)); /* COMMIT ends a run of writes */
    xdr_put_u32(c->o, st);
    put_wcc(c, &pre, st == NFS3ERR_STALE ? NULL : &fh);
    if (!st)
        xdr_put_fixed(c->o, c->x->write_verf, 8);
}

static void proc_null(struct call *c)
{
    (void)c;
}

static void proc_remove_file(struct call *c)
{
    proc_remove(c, 0);
}

static void proc_rmdir(struct call *c)
{
    proc_remove(c, 1);
}

static void proc_readdir_names(struct call *c)
{
    proc_readdir(c, 0);
}

static void proc_readdirplus(struct call *c)
{
    proc_readdir(c, 1);
}

/* Indexed by procedure number (RFC 1813). */
static void (*const procs[])(struct call *) = {
    proc_null,     proc_getattr, proc_setattr,       proc_lookup,     proc_access,
    proc_readlink, proc_read,    proc_write,         proc_create,     proc_mkdir,
    proc_symlink,  proc_mknod,   proc_remove_file,   proc_rmdir,      proc_rename,
    proc_link,     proc_readdir_names, proc_readdirplus, proc_fsstat, proc_fsinfo,
    proc_pathconf, proc_commit,
};

int nfs3_dispatch(struct nfs_ctx *x, const struct rpc_call *rc, uint32_t peer,
                  struct xdr_out *o, struct nfs_reply *r)
{
    struct xdr_in in = rc->args;
    struct call c = {.x = x, .in = &in, .o = o, .r = r};
    c.who.cred = rc->cred;
    c.who.addr = peer;
    c.who.uid = rc->cred.uid;
    c.who.gid = rc->cred.gid;
    if (rc->proc >= PL_ARRAY_LEN(procs))
        return RPC_PROC_UNAVAIL;
    procs[rc->proc](&c);
    return xdr_ok(&in) ? RPC_SUCCESS : RPC_GARBAGE_ARGS;
}

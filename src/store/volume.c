/* Volumes: block devices for the NBD head. A volume is a file element in
 * the system directory "/.volumes" (a name no bucket can have), so it is
 * thin, deduplicated, compressed and protected like any data. A volume
 * snapshot "NAME@SNAP" is a read-only volume sharing the chunks of NAME as
 * it was; a clone is a writable volume sharing the chunks of its source. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

#define VOL_DIR ".volumes"
#define VOL_RO_XATTR "plenum.readonly"

int pl_volume_name_valid(const char *name)
{
    size_t n = strlen(name), at = 0, part = 0;
    if (n < 1 || n > PL_VOLUME_NAME_MAX || name[0] == '.' || name[0] == '@')
        return PL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '@') {
            if (at++ || i + 1 == n || name[i + 1] == '.')
                return PL_EINVAL;
            part = 0;
            continue;
        }
        if (++part > 64)
            return PL_EINVAL; /* each of NAME and SNAP: 1..64 */
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return PL_EINVAL;
    }
    return 0;
}

/* The volumes directory, made on first use. */
static int vol_dir(struct meta_txn *t, uint64_t *ret)
{
    struct dirent_rec d;
    int rc = dirent_get(t->txn, t->env, PL_ROOT_ID, VOL_DIR, PL_VIEW_LIVE, &d);
    if (rc == 0) {
        *ret = d.id;
        return 0;
    }
    if (rc != PL_ENOENT)
        return rc;
    struct mk_args m = {PL_ROOT_ID, VOL_DIR, PL_T_DIR, 0700, 0, 0, 1, NULL, 0, {0}};
    rc = store_mk(t, &m);
    if (!rc)
        *ret = m.out.id;
    return rc;
}

static int vol_dir_ro(MDB_txn *txn, struct meta_env *env, uint64_t *ret)
{
    struct dirent_rec d;
    int rc = dirent_get(txn, env, PL_ROOT_ID, VOL_DIR, PL_VIEW_LIVE, &d);
    if (!rc)
        *ret = d.id;
    return rc;
}

static void vol_info(const char *name, const struct elem *e, struct pl_volume_info *ret)
{
    struct pl_str s;
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->name, sizeof(ret->name), "%s", name);
    ret->id = e->a.id;
    ret->size = e->a.size;
    ret->ctime = e->a.btime;
    ret->readonly = prop_get(e, PROP_XATTR, VOL_RO_XATTR, &s) == 0;
}

int pl_volume_get(struct pl_store *st, const char *name, struct pl_volume_info *ret)
{
    MDB_txn *txn;
    struct dirent_rec d;
    struct elem e;
    uint64_t dir;
    if (pl_volume_name_valid(name))
        return PL_ENOENT;
    elem_init(&e);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = vol_dir_ro(txn, st->meta, &dir);
    if (!rc)
        rc = dirent_get(txn, st->meta, dir, name, PL_VIEW_LIVE, &d);
    if (!rc)
        rc = elem_get(txn, st->meta, d.id, PL_VIEW_LIVE, &e);
    if (!rc)
        vol_info(name, &e, ret);
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

struct vol_new {
    const char *name;
    uint64_t size;
    const char *from; /* copy the chunks of this volume, or NULL */
    int readonly;
    struct pl_volume_info out;
};

static int apply_vol_new(struct meta_txn *t, void *arg)
{
    struct vol_new *a = arg;
    uint64_t dir = 0;
    struct elem e;
    struct dirent_rec src;
    elem_init(&e);
    int rc = vol_dir(t, &dir);
    if (!rc && a->from) {
        rc = dirent_get(t->txn, t->env, dir, a->from, PL_VIEW_LIVE, &src);
        if (rc == PL_ENOENT)
            rc = PL_ENOENT;
    }
    struct mk_args m = {dir, a->name, PL_T_FILE, 0600, 0, 0, 1, NULL, 0, {0}};
    if (!rc)
        rc = store_mk(t, &m); /* PL_EEXIST when the name is taken */
    if (!rc)
        rc = elem_get(t->txn, t->env, m.out.id, PL_VIEW_LIVE, &e);
    if (!rc && a->from) {
        struct elem s;
        elem_init(&s);
        rc = elem_get(t->txn, t->env, src.id, PL_VIEW_LIVE, &s);
        if (!rc)
            rc = extent_copy(t, src.id, e.a.id, 0);
        if (!rc)
            a->size = s.a.size;
        elem_release(&s);
    }
    if (!rc) {
        e.a.size = a->size;
        rc = meta_sys_add(t, "logical", (int64_t)a->size);
    }
    if (!rc && a->readonly)
        rc = prop_set(&e, PROP_XATTR, VOL_RO_XATTR, "1", 1);
    if (!rc)
        rc = elem_put(t, &e);
    if (!rc)
        vol_info(a->name, &e, &a->out);
    elem_release(&e);
    return rc;
}

/* Look the volume up and store what heads still cache of it. */
static int vol_flush_cached(struct pl_store *st, const char *name, struct pl_volume_info *v)
{
    int rc = pl_volume_get(st, name, v);
    return rc ? rc : store_caches_flush(st, v->id);
}

int pl_volume_create(struct pl_store *st, const char *name, uint64_t size,
                     struct pl_volume_info *ret)
{
    if (pl_volume_name_valid(name) || strchr(name, '@'))
        return PL_EINVAL;
    struct vol_new a = {name, size, NULL, 0, {{0}}};
    int rc = meta_submit(st->meta, apply_vol_new, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

int pl_volume_snapshot(struct pl_store *st, const char *name, const char *snap,
                       struct pl_volume_info *ret)
{
    char full[PL_VOLUME_NAME_MAX * 2 + 2];
    if (pl_volume_name_valid(name) || strchr(name, '@') || pl_volume_name_valid(snap) ||
        strchr(snap, '@'))
        return PL_EINVAL;
    snprintf(full, sizeof(full), "%s@%s", name, snap);
    if (pl_volume_name_valid(full))
        return PL_ENAMETOOLONG;
    struct pl_volume_info v;
    int rc = vol_flush_cached(st, name, &v);
    struct vol_new a = {full, 0, name, 1, {{0}}};
    if (!rc)
        rc = meta_submit(st->meta, apply_vol_new, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

int pl_volume_clone(struct pl_store *st, const char *src, const char *name,
                    struct pl_volume_info *ret)
{
    if (pl_volume_name_valid(src) || pl_volume_name_valid(name) || strchr(name, '@'))
        return PL_EINVAL;
    struct pl_volume_info v;
    int rc = vol_flush_cached(st, src, &v);
    struct vol_new a = {name, 0, src, 0, {{0}}};
    if (!rc)
        rc = meta_submit(st->meta, apply_vol_new, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

int pl_volume_resize(struct pl_store *st, const char *name, uint64_t size)
{
    struct pl_volume_info v;
    int rc = vol_flush_cached(st, name, &v); /* else cached writes past a new end land later */
    if (rc)
        return rc;
    if (v.readonly)
        return PL_EROFS;
    struct pl_attr in = {0};
    in.size = size;
    return pl_elem_setattr(st, v.id, PL_SET_SIZE, &in, NULL);
}

struct vol_del {
    const char *name;
};

static int apply_vol_del(struct meta_txn *t, void *arg)
{
    struct vol_del *a = arg;
    uint64_t dir;
    struct elem d;
    elem_init(&d);
    int rc = vol_dir_ro(t->txn, t->env, &dir);
    if (!rc)
        rc = elem_get(t->txn, t->env, dir, PL_VIEW_LIVE, &d);
    if (!rc)
        rc = store_remove(t, &d, a->name, 0);
    elem_release(&d);
    return rc;
}

int pl_volume_delete(struct pl_store *st, const char *name)
{
    if (pl_volume_name_valid(name))
        return PL_ENOENT;
    struct vol_del a = {name}; /* writes still cached are dropped by their writer */
    return meta_submit(st->meta, apply_vol_del, &a);
}

struct vol_list {
    struct pl_store *st;
    pl_volume_fn cb;
    void *arg;
    int rc;
};

static int vol_list_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct vol_list *l = arg;
    struct pl_volume_info v;
    (void)a;
    l->rc = pl_volume_get(l->st, name, &v);
    if (l->rc == PL_ENOENT) {
        l->rc = 0; /* deleted meanwhile */
        return 0;
    }
    return l->rc ? 1 : l->cb(l->arg, &v);
}

int pl_volume_list(struct pl_store *st, pl_volume_fn cb, void *arg)
{
    MDB_txn *txn;
    uint64_t dir;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = vol_dir_ro(txn, st->meta, &dir);
    meta_rtxn_end(txn);
    if (rc == PL_ENOENT)
        return 0; /* no volume made yet */
    struct vol_list l = {st, cb, arg, 0};
    if (!rc)
        rc = pl_dir_read(st, dir, PL_VIEW_LIVE, "", vol_list_cb, &l);
    return rc ? rc : l.rc;
}

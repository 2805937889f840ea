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

static void vol_info(const char *name, const char *object, const struct elem *e,
                     struct pl_volume_info *ret)
{
    struct pl_str s;
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->name, sizeof(ret->name), "%s", name);
    snprintf(ret->object, sizeof(ret->object), "%s", object);
    if (!e)
        return;
    ret->id = e->a.id;
    ret->size = e->a.size;
    ret->ctime = e->a.btime;
    ret->readonly = prop_get(e, PROP_XATTR, VOL_RO_XATTR, &s) == 0;
}

/* Split "BUCKET/KEY" (into bucket, up to 63 bytes; *key points into object). */
static int vol_object_split(const char *object, char bucket[64], const char **key)
{
    const char *slash = strchr(object, '/');
    size_t bn = slash ? (size_t)(slash - object) : 0;
    if (!slash || bn > 63)
        return PL_EINVAL;
    memcpy(bucket, object, bn);
    bucket[bn] = 0;
    *key = slash + 1;
    if (pl_bucket_name_valid(bucket) || pl_key_valid(*key) || (*key)[strlen(*key) - 1] == '/')
        return PL_EINVAL;
    return 0;
}

/* The element volume entry d stands for, into e: the entry's own file, or
 * for an object volume (a symlink whose target is "BUCKET/KEY") the object
 * under that key now. object gets the target ("" for a plain volume) even
 * when the object is gone (PL_ENOENT). */
static int vol_elem(MDB_txn *txn, struct meta_env *env, const struct dirent_rec *d,
                    struct elem *e, char object[PL_VOLUME_OBJECT_MAX + 1])
{
    struct pl_str s;
    char bucket[64];
    const char *key;
    object[0] = 0;
    int rc = elem_get(txn, env, d->id, PL_VIEW_LIVE, e);
    if (rc || e->a.type != PL_T_SYMLINK)
        return rc;
    rc = prop_get(e, PROP_SYMLINK, NULL, &s);
    if (!rc && s.n > PL_VOLUME_OBJECT_MAX)
        rc = PL_ECORRUPT;
    if (!rc) {
        memcpy(object, s.p, s.n);
        object[s.n] = 0;
        rc = vol_object_split(object, bucket, &key) ? PL_ECORRUPT : 0;
    }
    elem_release(e);
    elem_init(e);
    if (!rc)
        rc = obj_get(txn, env, bucket, key, e); /* a file, or PL_ENOENT */
    return rc == PL_ENOBUCKET ? PL_ENOENT : rc;
}

int pl_volume_get(struct pl_store *st, const char *name, struct pl_volume_info *ret)
{
    MDB_txn *txn;
    struct dirent_rec d;
    struct elem e;
    char object[PL_VOLUME_OBJECT_MAX + 1] = "";
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
        rc = vol_elem(txn, st->meta, &d, &e, object);
    if (!rc || object[0])
        vol_info(name, object, rc ? NULL : &e, ret); /* a gone object: named, no element */
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
    char object[PL_VOLUME_OBJECT_MAX + 1];
    struct dirent_rec src;
    struct elem e, s; /* the new volume; its source */
    elem_init(&e);
    elem_init(&s);
    int rc = vol_dir(t, &dir);
    if (!rc && a->from)
        rc = dirent_get(t->txn, t->env, dir, a->from, PL_VIEW_LIVE, &src);
    if (!rc && a->from)
        rc = vol_elem(t->txn, t->env, &src, &s, object); /* an object volume: its object */
    struct mk_args m = {dir, a->name, PL_T_FILE, 0600, 0, 0, 1, NULL, 0, {0}};
    if (!rc)
        rc = store_mk(t, &m); /* PL_EEXIST when the name is taken */
    if (!rc)
        rc = elem_get(t->txn, t->env, m.out.id, PL_VIEW_LIVE, &e);
    if (!rc && a->from) {
        rc = extent_copy(t, s.a.id, e.a.id, 0);
        a->size = s.a.size;
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
        vol_info(a->name, "", &e, &a->out);
    elem_release(&s);
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

struct vol_link {
    const char *name, *object, *bucket, *key;
    struct pl_volume_info out;
};

static int apply_vol_link(struct meta_txn *t, void *arg)
{
    struct vol_link *a = arg;
    uint64_t dir = 0;
    struct elem e;
    elem_init(&e);
    int rc = obj_get(t->txn, t->env, a->bucket, a->key, &e); /* a file, in this same txn */
    if (!rc)
        rc = vol_dir(t, &dir);
    struct mk_args m = {dir, a->name, PL_T_SYMLINK, 0777, 0, 0, 1, a->object, 0, {0}};
    if (!rc)
        rc = store_mk(t, &m); /* PL_EEXIST when the name is taken */
    if (!rc)
        vol_info(a->name, a->object, &e, &a->out);
    elem_release(&e);
    return rc;
}

int pl_volume_link(struct pl_store *st, const char *name, const char *object, uint64_t size,
                   struct pl_volume_info *ret)
{
    char bucket[64];
    struct vol_link a = {name, object, bucket, NULL, {{0}}};
    struct pl_volume_info v;
    struct pl_attr o;
    if (pl_volume_name_valid(name) || strchr(name, '@') || vol_object_split(object, bucket, &a.key))
        return PL_EINVAL;
    v.object[0] = 0;
    int rc = pl_volume_get(st, name, &v);
    if (rc == 0 || v.object[0])
        return PL_EEXIST; /* known before an object is made for a name that is taken */
    rc = rc == PL_ENOENT ? pl_obj_lookup(st, bucket, a.key, PL_VIEW_LIVE, &o) : rc;
    if (rc == PL_ENOENT && size) {
        /* a new object: empty, then as long as asked (thin: holes take no space) */
        struct pl_writer *w = NULL;
        struct pl_attr in = {0};
        rc = pl_obj_put_begin(st, bucket, a.key, &w);
        if (!rc)
            rc = pl_obj_put_commit(w, NULL, &o);
        in.size = size;
        if (!rc)
            rc = pl_elem_setattr(st, o.id, PL_SET_SIZE, &in, &o);
    } else if (!rc && o.type != PL_T_FILE) {
        rc = PL_ENOENT; /* a symlink made over NFS: no object's bytes to serve */
    } else if (!rc && size && o.size != size) {
        rc = PL_ESIZE; /* resize it as a volume, once linked */
    }
    if (!rc)
        rc = meta_submit(st->meta, apply_vol_link, &a);
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
    v.object[0] = 0;
    l->rc = pl_volume_get(l->st, name, &v);
    if (l->rc == PL_ENOENT && v.object[0]) {
        l->rc = 0;
        v.missing = 1; /* its object is gone: listed, so that it can be deleted */
    } else if (l->rc == PL_ENOENT) {
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

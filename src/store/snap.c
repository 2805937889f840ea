/* Snapshots: a name for an epoch. Creation is O(1): record the current epoch
 * and advance it; records changed later are copied on write (record.c). */
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>

static int snap_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof(((struct pl_snap_info *)0)->name) || strchr(name, '/') ||
        !strcmp(name, ".") || !strcmp(name, ".."))
        return PL_EINVAL;
    return 0;
}

struct snap_args {
    const char *name;
    struct pl_snap_info out;
};

static int apply_snap_create(struct meta_txn *t, void *arg)
{
    struct snap_args *a = arg;
    MDB_val v;
    uint64_t E, smax;
    int rc = meta_get(t->txn, t->env, META_SNAP, a->name, strlen(a->name), &v);
    if (rc != PL_ENOENT)
        return rc ? rc : PL_EEXIST;
    rc = epoch_current(t, &E);
    if (!rc)
        rc = meta_sys_get(t->txn, t->env, "snap_max", &smax);
    if (rc)
        return rc;
    uint8_t rec[16];
    int64_t now = pl_now_ns();
    pl_put_le64(rec, E);
    pl_put_le64(rec + 8, (uint64_t)now);
    rc = meta_put(t, META_SNAP, a->name, strlen(a->name), rec, sizeof(rec));
    if (!rc)
        rc = meta_sys_put(t, "epoch", E + 1);
    if (!rc)
        rc = meta_sys_put(t, "snap_max", PL_MAX(smax, E));
    if (!rc) {
        snprintf(a->out.name, sizeof(a->out.name), "%s", a->name);
        a->out.epoch = E;
        a->out.ctime = now;
    }
    return rc;
}

int pl_snap_create(struct pl_store *st, const char *name, struct pl_snap_info *ret)
{
    if (snap_name_valid(name))
        return PL_EINVAL;
    struct snap_args a = {name, {{0}, 0, 0}};
    int rc = store_caches_flush(st, 0);
    if (!rc)
        rc = meta_submit(st->meta, apply_snap_create, &a);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

/* Highest remaining snapshot epoch (0 when none). */
static int snap_max_scan(MDB_txn *txn, struct meta_env *env, uint64_t *ret)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t m = 0;
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(env, META_SNAP), &c));
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        if (v.mv_size >= 8)
            m = PL_MAX(m, pl_get_le64(v.mv_data));
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    *ret = m;
    return rc == PL_ENOENT ? 0 : rc;
}

static int apply_snap_delete(struct meta_txn *t, void *arg)
{
    const char *name = arg;
    uint64_t m;
    int rc = meta_del(t, META_SNAP, name, strlen(name));
    if (rc == PL_ENOENT)
        return PL_ENOSNAP;
    if (!rc)
        rc = snap_max_scan(t->txn, t->env, &m);
    if (!rc)
        rc = meta_sys_put(t, "snap_max", m);
    return rc;
}

int pl_snap_delete(struct pl_store *st, const char *name)
{
    if (snap_name_valid(name))
        return PL_ENOSNAP;
    return meta_submit(st->meta, apply_snap_delete, (void *)name);
}

int pl_snap_get(struct pl_store *st, const char *name, struct pl_snap_info *ret)
{
    MDB_txn *txn;
    MDB_val v;
    if (snap_name_valid(name))
        return PL_ENOSNAP;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_get(txn, st->meta, META_SNAP, name, strlen(name), &v);
    if (rc == PL_ENOENT)
        rc = PL_ENOSNAP;
    if (!rc && v.mv_size < 16)
        rc = PL_ECORRUPT;
    if (!rc) {
        snprintf(ret->name, sizeof(ret->name), "%s", name);
        ret->epoch = pl_get_le64(v.mv_data);
        ret->ctime = (int64_t)pl_get_le64((const uint8_t *)v.mv_data + 8);
    }
    meta_rtxn_end(txn);
    return rc;
}

int pl_snap_list(struct pl_store *st, pl_snap_fn cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_SNAP), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct pl_snap_info s = {0};
        if (k.mv_size >= sizeof(s.name) || v.mv_size < 16) {
            rc = PL_ECORRUPT;
            break;
        }
        memcpy(s.name, k.mv_data, k.mv_size);
        s.epoch = pl_get_le64(v.mv_data);
        s.ctime = (int64_t)pl_get_le64((const uint8_t *)v.mv_data + 8);
        if (cb(arg, &s))
            break;
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    if (rc == PL_ENOENT)
        rc = 0;
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    return rc;
}

/* Epochs of all snapshots, ascending; *ret malloc'd. */
int snap_epochs(MDB_txn *txn, struct meta_env *env, uint64_t **ret, size_t *ret_n)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t *a = NULL;
    size_t n = 0, cap = 0;
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(env, META_SNAP), &c));
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *na = realloc(a, cap * sizeof(*a));
            if (!na) {
                rc = PL_ENOMEM;
                break;
            }
            a = na;
        }
        a[n++] = v.mv_size >= 8 ? pl_get_le64(v.mv_data) : 0;
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    if (rc && rc != PL_ENOENT) {
        free(a);
        return rc;
    }
    *ret = a;
    *ret_n = n;
    return 0;
}

/* Service records (store.h): a plain ordered key-value table in the
 * metadata, for state a service keeps beside the namespace. Writes go
 * through the group commit like every mutation. */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

static int key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return n >= 1 && n <= PL_SVC_KEY_MAX;
}

struct svc_write {
    const struct pl_svc_rec *recs;
    size_t n;
};

int svc_apply(struct meta_txn *t, const struct pl_svc_rec *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct pl_svc_rec *r = &recs[i];
        int rc = r->val ? meta_put(t, META_SVC, r->key, strlen(r->key), r->val, r->n)
                        : meta_del(t, META_SVC, r->key, strlen(r->key));
        if (rc && !(rc == PL_ENOENT && !r->val))
            return rc;
    }
    return 0;
}

static int apply_svc_write(struct meta_txn *t, void *arg)
{
    struct svc_write *a = arg;
    return svc_apply(t, a->recs, a->n);
}

int svc_check(const struct pl_svc_rec *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!key_ok(recs[i].key) || recs[i].n > PL_SVC_VAL_MAX)
            return PL_EINVAL;
    return 0;
}

int pl_svc_write(struct pl_store *st, const struct pl_svc_rec *recs, size_t n)
{
    int rc = svc_check(recs, n);
    if (rc)
        return rc;
    struct svc_write a = {recs, n};
    return n ? meta_submit(st->meta, apply_svc_write, &a) : 0;
}

int pl_svc_get(struct pl_store *st, const char *key, void *buf, size_t n, size_t *ret_n)
{
    MDB_txn *txn;
    MDB_val v;
    if (!key_ok(key))
        return PL_EINVAL;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_get(txn, st->meta, META_SVC, key, strlen(key), &v);
    if (!rc) {
        *ret_n = v.mv_size;
        if (buf && n)
            memcpy(buf, v.mv_data, PL_MIN(n, v.mv_size));
    }
    meta_rtxn_end(txn);
    return rc;
}

struct svc_scan {
    const char *prefix;
    size_t pn;
    pl_svc_fn cb;
    void *arg;
    char key[PL_SVC_KEY_MAX + 1];
};

static int svc_scan_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct svc_scan *s = arg;
    if (k->mv_size < s->pn || memcmp(k->mv_data, s->prefix, s->pn))
        return 1; /* past the prefix */
    if (k->mv_size > PL_SVC_KEY_MAX)
        return 0;
    memcpy(s->key, k->mv_data, k->mv_size);
    s->key[k->mv_size] = 0;
    return s->cb(s->arg, s->key, v->mv_data, v->mv_size) ? 1 : 0;
}

int pl_svc_scan(struct pl_store *st, const char *prefix, pl_svc_fn cb, void *arg)
{
    MDB_txn *txn;
    struct svc_scan *s = malloc(sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    *s = (struct svc_scan){prefix, strlen(prefix), cb, arg, {0}};
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (!rc) {
        rc = meta_walk(txn, st->meta, META_SVC, prefix, s->pn, svc_scan_cb, s);
        meta_rtxn_end(txn);
    }
    free(s);
    return rc > 0 ? 0 : rc;
}

struct svc_del {
    const char *prefix;
    size_t pn;
    char key[PL_SVC_KEY_MAX + 1];
    size_t kn; /* 0: no key under the prefix is left */
};

static int svc_first_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    (void)v;
    struct svc_del *d = arg;
    if (k->mv_size >= d->pn && k->mv_size <= PL_SVC_KEY_MAX &&
        !memcmp(k->mv_data, d->prefix, d->pn)) {
        memcpy(d->key, k->mv_data, k->mv_size);
        d->kn = k->mv_size;
    }
    return 1;
}

static int apply_svc_delete_prefix(struct meta_txn *t, void *arg)
{
    struct svc_del *d = arg;
    for (;;) {
        d->kn = 0;
        int rc = meta_walk(t->txn, t->env, META_SVC, d->prefix, d->pn, svc_first_cb, d);
        if (rc < 0)
            return rc;
        if (!d->kn)
            return 0;
        rc = meta_del(t, META_SVC, d->key, d->kn);
        if (rc)
            return rc;
    }
}

int pl_svc_delete_prefix(struct pl_store *st, const char *prefix)
{
    struct svc_del *d = calloc(1, sizeof(*d));
    if (!d)
        return PL_ENOMEM;
    d->prefix = prefix;
    d->pn = strlen(prefix);
    int rc = d->pn ? meta_submit(st->meta, apply_svc_delete_prefix, d) : PL_EINVAL;
    free(d);
    return rc;
}

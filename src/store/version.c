/* Object versions: noncurrent versions and delete markers beside the
 * namespace, which holds the latest version when it is an object.
 *
 * Record value: flags(1) elem(8) size(8) mtime(8) etag_len(1) etag key.
 * Invariant: a key present in the namespace is its own latest version; for a
 * key absent from it, the newest record is the latest (a delete marker, or an
 * object version that could not be linked back because its name is taken by
 * a directory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xxh.h"
#include "store/store_int.h"

#define VREC_FIXED 26

void pl_version_str(uint64_t v, char out[PL_VERSION_LEN])
{
    if (!v)
        snprintf(out, PL_VERSION_LEN, "null");
    else
        snprintf(out, PL_VERSION_LEN, "%016llx", (unsigned long long)v);
}

int pl_version_parse(const char *s, uint64_t *ret)
{
    if (!strcmp(s, "null")) {
        *ret = 0;
        return 0;
    }
    if (strlen(s) != 16)
        return PL_EINVAL;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        int h = pl_hexval(s[i]);
        if (h < 0 || (s[i] >= 'A' && s[i] <= 'F'))
            return PL_EINVAL;
        v = v << 4 | (uint64_t)h;
    }
    if (!v)
        return PL_EINVAL;
    *ret = v;
    return 0;
}

/* ---- record keys and values ---- */
static size_t vkey_group(uint8_t *k, uint64_t bid, const char *key)
{
    size_t n = strlen(key), o = 8;
    pl_put_be64(k, bid);
    if (n <= VKEY_TEXT) {
        memcpy(k + o, key, n);
        o += n;
        k[o++] = 0;
    } else {
        memcpy(k + o, key, VKEY_TEXT);
        o += VKEY_TEXT;
        k[o++] = 1;
        pl_put_be64(k + o, XXH3_64bits(key, n));
        o += 8;
    }
    return o;
}

static size_t vkey(uint8_t *k, uint64_t bid, const char *key, uint64_t seq)
{
    size_t o = vkey_group(k, bid, key);
    pl_put_be64(k + o, ~seq);
    return o + 8;
}

static int vrec_decode(const MDB_val *k, const MDB_val *v, struct vrec *r)
{
    const uint8_t *p = v->mv_data;
    if (k->mv_size < 8 + 1 + 8 || v->mv_size < VREC_FIXED || p[25] >= PL_ETAG_MAX ||
        v->mv_size - VREC_FIXED - p[25] > PL_KEY_MAX)
        return PL_ECORRUPT;
    r->seq = ~pl_get_be64((const uint8_t *)k->mv_data + k->mv_size - 8);
    r->flags = p[0];
    r->elem = pl_get_le64(p + 1);
    r->size = pl_get_le64(p + 9);
    r->mtime = (int64_t)pl_get_le64(p + 17);
    memcpy(r->etag, p + VREC_FIXED, p[25]);
    r->etag[p[25]] = 0;
    size_t kl = v->mv_size - VREC_FIXED - p[25];
    memcpy(r->key, p + VREC_FIXED + p[25], kl);
    r->key[kl] = 0;
    return 0;
}

static int vrec_put(struct meta_txn *t, uint64_t bid, const struct vrec *r)
{
    uint8_t k[VKEY_MAX];
    size_t kl = strlen(r->key), el = strnlen(r->etag, PL_ETAG_MAX - 1);
    uint8_t *v = malloc(VREC_FIXED + el + kl);
    if (!v)
        return PL_ENOMEM;
    v[0] = r->flags;
    pl_put_le64(v + 1, r->elem);
    pl_put_le64(v + 9, r->size);
    pl_put_le64(v + 17, (uint64_t)r->mtime);
    v[25] = (uint8_t)el;
    memcpy(v + VREC_FIXED, r->etag, el);
    memcpy(v + VREC_FIXED + el, r->key, kl);
    int rc = meta_put(t, META_VERSION, k, vkey(k, bid, r->key, r->seq), v, VREC_FIXED + el + kl);
    free(v);
    return rc;
}

int vseq_next(struct meta_txn *t, uint64_t *ret)
{
    int rc = meta_sys_add(t, "vseq", 1);
    if (!rc)
        rc = meta_sys_get(t->txn, t->env, "vseq", ret);
    return rc;
}

int ver_keep(struct meta_txn *t, uint64_t bid, const char *key, struct elem *e)
{
    struct vrec r = {0};
    int null = 0;
    int rc = elem_version_get(e, &r.seq, &null);
    if (rc == PL_ENODATA) {
        /* linked without a version (versioning was off, or a file head made
         * it): the "null" version, newer than every record of its key */
        null = 1;
        rc = vseq_next(t, &r.seq);
    }
    if (rc)
        return rc;
    r.flags = null ? VREC_NULL : 0;
    r.elem = e->a.id;
    r.size = e->a.size;
    r.mtime = e->a.mtime;
    snprintf(r.etag, sizeof(r.etag), "%s", e->a.etag);
    snprintf(r.key, sizeof(r.key), "%s", key);
    rc = vrec_put(t, bid, &r);
    /* nameless from now on, and no longer counted as a live file */
    if (!rc)
        rc = meta_sys_add(t, "logical", -(int64_t)e->a.size);
    if (!rc)
        rc = meta_sys_add(t, "elements", -1);
    e->flags |= ELEM_F_STAGING | ELEM_F_VERSION;
    e->a.nlink = 0;
    if (!rc)
        rc = elem_put(t, e);
    return rc;
}

int ver_marker_add(struct meta_txn *t, uint64_t bid, const char *key, int null, uint64_t *ret_vid)
{
    struct vrec r = {0};
    int rc = vseq_next(t, &r.seq);
    if (rc)
        return rc;
    r.flags = VREC_DM | (null ? VREC_NULL : 0);
    r.mtime = pl_now_ns();
    snprintf(r.key, sizeof(r.key), "%s", key);
    rc = vrec_put(t, bid, &r);
    if (!rc && ret_vid)
        *ret_vid = vrec_vid(&r);
    return rc;
}

/* ---- finding records ---- */
struct vfind {
    const uint8_t *group;
    size_t gn;
    const char *key;
    uint64_t vid;
    int any; /* take the first record of the group */
    int n;   /* records of the key seen */
    int found, first;
    struct vrec *r;
};

static int vfind_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct vfind *f = arg;
    if (k->mv_size != f->gn + 8 || memcmp(k->mv_data, f->group, f->gn))
        return 1; /* past the group */
    int rc = vrec_decode(k, v, f->r);
    if (rc)
        return rc;
    if (strcmp(f->r->key, f->key))
        return 0; /* a long key sharing the hashed prefix */
    f->n++;
    if (f->any || vrec_vid(f->r) == f->vid) {
        f->found = 1;
        f->first = f->n == 1;
        return 1;
    }
    return 0;
}

static int vfind(MDB_txn *txn, struct meta_env *env, uint64_t bid, const char *key, uint64_t vid,
                 int any, struct vrec *ret, int *ret_first)
{
    uint8_t g[VKEY_MAX];
    struct vfind f = {g, vkey_group(g, bid, key), key, vid, any, 0, 0, 0, ret};
    int rc = meta_walk(txn, env, META_VERSION, g, f.gn, vfind_cb, &f);
    if (rc)
        return rc;
    if (!f.found)
        return PL_ENOENT;
    if (ret_first)
        *ret_first = f.first;
    return 0;
}

int ver_find(MDB_txn *txn, struct meta_env *env, uint64_t bid, const char *key, uint64_t vid,
             struct vrec *ret, int *ret_first)
{
    int rc = vfind(txn, env, bid, key, vid, 0, ret, ret_first);
    return rc == PL_ENOENT ? PL_ENOVERSION : rc;
}

int ver_first(MDB_txn *txn, struct meta_env *env, uint64_t bid, const char *key, struct vrec *ret)
{
    return vfind(txn, env, bid, key, 0, 1, ret, NULL);
}

int ver_forget(struct meta_txn *t, uint64_t bid, const struct vrec *r, int drop)
{
    uint8_t k[VKEY_MAX];
    int rc = meta_del(t, META_VERSION, k, vkey(k, bid, r->key, r->seq));
    if (rc || !drop || !r->elem)
        return rc;
    struct elem e;
    elem_init(&e);
    rc = elem_get(t->txn, t->env, r->elem, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = elem_destroy(t, &e);
    elem_release(&e);
    return rc == PL_ENOENT ? 0 : rc;
}

int ver_null_drop(struct meta_txn *t, uint64_t bid, const char *key)
{
    struct vrec *r = malloc(sizeof(*r));
    if (!r)
        return PL_ENOMEM;
    int rc = ver_find(t->txn, t->env, bid, key, 0, r, NULL);
    if (!rc)
        rc = ver_forget(t, bid, r, 1);
    else if (rc == PL_ENOVERSION)
        rc = 0;
    free(r);
    return rc;
}

struct vany {
    uint64_t bid;
    int found;
};

static int any_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct vany *a = arg;
    (void)v;
    a->found = k->mv_size >= 8 && pl_get_be64(k->mv_data) == a->bid;
    return 1;
}

int ver_bucket_empty(MDB_txn *txn, struct meta_env *env, uint64_t bid, int *ret)
{
    struct vany a = {bid, 0};
    uint8_t k[8];
    pl_put_be64(k, bid);
    int rc = meta_walk(txn, env, META_VERSION, k, 8, any_cb, &a);
    *ret = !a.found;
    return rc;
}

/* ---- lookups ---- */
int pl_obj_lookup_version(struct pl_store *st, const char *bucket, const char *key,
                          const char *vid, struct pl_attr *ret, int *ret_dm)
{
    struct pl_bucket_info b;
    struct vrec *r = NULL;
    struct elem e;
    MDB_txn *txn;
    uint64_t v = 0;
    *ret_dm = 0;
    if (pl_key_valid(key))
        return vid ? PL_ENOVERSION : PL_ENOENT;
    if (vid && pl_version_parse(vid, &v))
        return PL_EINVAL;
    int rc = pl_obj_lookup(st, bucket, key, PL_VIEW_LIVE, ret);
    if (rc == 0 && (!vid || ret->version == v))
        return 0;
    if (rc && rc != PL_ENOENT)
        return rc;
    int absent = rc == PL_ENOENT;
    elem_init(&e);
    rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = bucket_get(txn, st->meta, bucket, &b);
    if (rc)
        goto out;
    r = malloc(sizeof(*r));
    if (!r) {
        rc = PL_ENOMEM;
        goto out;
    }
    if (!vid) {
        /* absent from the namespace: a delete marker may be the latest */
        rc = ver_first(txn, st->meta, b.id, key, r);
        if (!rc && (r->flags & VREC_DM)) {
            memset(ret, 0, sizeof(*ret));
            ret->version = vrec_vid(r);
            ret->mtime = r->mtime;
            *ret_dm = 1;
        }
        rc = absent ? PL_ENOENT : 0;
        goto out;
    }
    rc = ver_find(txn, st->meta, b.id, key, v, r, NULL);
    if (rc)
        goto out;
    if (r->flags & VREC_DM) {
        memset(ret, 0, sizeof(*ret));
        ret->version = v;
        ret->mtime = r->mtime;
        *ret_dm = 1;
        goto out;
    }
    rc = elem_get(txn, st->meta, r->elem, PL_VIEW_LIVE, &e);
    if (rc == PL_ENOENT)
        rc = PL_ENOVERSION;
    if (!rc) {
        *ret = e.a;
        ret->version = v;
    }
out:
    free(r);
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- listing: the namespace walk merged with the records ---- */
struct vlist {
    struct pl_store *st;
    uint64_t bid;
    const char *prefix;
    pl_version_fn cb;
    void *arg;
    MDB_cursor *c;
    int have; /* *cur holds the next record */
    struct vrec cur;
    /* start: skip until (km, vm) has gone by */
    const char *km;
    uint64_t vm;
    int skipping;
    int stop, rc;
};

static int vl_emit(struct vlist *L, const char *key, uint64_t version, int latest, int dm,
                   const struct pl_attr *a)
{
    if (L->skipping) {
        int c = strcmp(key, L->km);
        if (c < 0)
            return 0;
        if (c == 0) {
            if (version == L->vm)
                L->skipping = 0;
            return 0;
        }
        L->skipping = 0;
    }
    struct pl_version_info vi = {key, version, latest, dm, a};
    if (L->cb(L->arg, &vi))
        L->stop = 1;
    return 0;
}

/* Load the next record under the bucket and prefix into L->cur. */
static int vl_next(struct vlist *L, MDB_cursor_op op, MDB_val *seek)
{
    MDB_val k = seek ? *seek : (MDB_val){0, NULL}, v;
    L->have = 0;
    int rc = meta_err(mdb_cursor_get(L->c, &k, &v, op));
    if (rc)
        return rc == PL_ENOENT ? 0 : rc;
    if (k.mv_size < 8 || pl_get_be64(k.mv_data) != L->bid)
        return 0;
    rc = vrec_decode(&k, &v, &L->cur);
    if (rc)
        return rc;
    if (strncmp(L->cur.key, L->prefix, strlen(L->prefix)))
        return 0;
    L->have = 1;
    return 0;
}

static int vl_rec(struct vlist *L, int latest)
{
    struct pl_attr a = {0};
    a.size = L->cur.size;
    a.mtime = L->cur.mtime;
    a.version = vrec_vid(&L->cur);
    memcpy(a.etag, L->cur.etag, sizeof(a.etag));
    a.type = PL_T_FILE;
    return vl_emit(L, L->cur.key, a.version, latest, (L->cur.flags & VREC_DM) != 0, &a);
}

/* Emit records whose key sorts before limit (all when NULL); the first of
 * each key is its latest (it has no namespace entry). */
static int vl_flush(struct vlist *L, const char *limit)
{
    char last[PL_KEY_MAX + 1] = "";
    int rc = 0, started = 0;
    while (!rc && L->have && !L->stop && (!limit || strcmp(L->cur.key, limit) < 0)) {
        int first = !started || strcmp(L->cur.key, last);
        started = 1;
        memcpy(last, L->cur.key, strlen(L->cur.key) + 1);
        rc = vl_rec(L, first);
        if (!rc)
            rc = vl_next(L, MDB_NEXT, NULL);
    }
    return rc;
}

/* The records of key (the next ones); the first is the latest unless the
 * namespace had it. */
static int vl_key_records(struct vlist *L, const char *key, int latest_taken)
{
    int rc = 0;
    while (!rc && !L->stop && L->have && !strcmp(L->cur.key, key)) {
        rc = vl_rec(L, !latest_taken);
        latest_taken = 1;
        if (!rc)
            rc = vl_next(L, MDB_NEXT, NULL);
    }
    return rc;
}

static int vl_ns_cb(void *arg, const char *key, int is_prefix, const struct pl_attr *a)
{
    struct vlist *L = arg;
    if (is_prefix)
        return 0;
    L->rc = vl_flush(L, key);
    if (!L->rc && !L->stop)
        L->rc = vl_emit(L, key, a->version, 1, 0, a);
    if (!L->rc)
        L->rc = vl_key_records(L, key, 1);
    return L->rc || L->stop;
}

int pl_obj_versions(struct pl_store *st, const char *bucket, const char *prefix,
                    const char *key_marker, const char *vid_marker, pl_version_fn cb, void *arg)
{
    struct pl_bucket_info b;
    MDB_txn *txn;
    uint8_t k[VKEY_MAX];
    struct vlist *L = calloc(1, sizeof(*L));
    if (!L)
        return PL_ENOMEM;
    const char *km = key_marker ? key_marker : "";
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc) {
        free(L);
        return rc;
    }
    rc = bucket_get(txn, st->meta, bucket, &b);
    if (!rc)
        rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_VERSION), &L->c));
    if (rc)
        goto out;
    *L = (struct vlist){st, b.id, prefix, cb, arg, L->c, 0, {0}, km, 0, 0, 0, 0};
    const char *after = km;
    if (*km && vid_marker && *vid_marker) {
        /* resume inside the marker's key: its versions after vid_marker */
        rc = pl_version_parse(vid_marker, &L->vm);
        if (rc)
            goto out;
        L->skipping = 1;
        struct pl_attr a;
        MDB_val seek = {vkey_group(k, b.id, km), k};
        int has = !strncmp(km, prefix, strlen(prefix)) &&
                  pl_obj_lookup(st, bucket, km, PL_VIEW_LIVE, &a) == 0;
        rc = vl_next(L, MDB_SET_RANGE, &seek);
        if (!rc && has)
            rc = vl_emit(L, km, a.version, 1, 0, &a);
        if (!rc)
            rc = vl_key_records(L, km, has);
        L->skipping = 0; /* later keys are wanted whatever happened */
    }
    if (!rc && !L->stop) {
        /* records: from the first key after the marker (or from the prefix) */
        const char *from = strcmp(km, prefix) > 0 ? km : prefix;
        size_t fn = strlen(from) < VKEY_TEXT ? strlen(from) : VKEY_TEXT;
        pl_put_be64(k, b.id);
        memcpy(k + 8, from, fn);
        MDB_val seek = {8 + fn, k};
        rc = vl_next(L, MDB_SET_RANGE, &seek);
        while (!rc && L->have && *km && strcmp(L->cur.key, km) <= 0)
            rc = vl_next(L, MDB_NEXT, NULL);
    }
    if (!rc && !L->stop) {
        rc = pl_obj_list(st, bucket, prefix, after, 0, PL_VIEW_LIVE, vl_ns_cb, L);
        if (!rc)
            rc = L->rc;
    }
    if (!rc && !L->stop)
        rc = vl_flush(L, NULL);
out:
    if (L->c)
        mdb_cursor_close(L->c);
    meta_rtxn_end(txn);
    free(L);
    return rc;
}

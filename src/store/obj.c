/* Buckets and objects: the S3 view of the namespace.
 *
 * An object write streams into an anonymous "staging" element, committed in
 * windows of WINDOW bytes (each window: sync the new chunks, one metadata
 * commit). The final commit links it under its key in one transaction, so a
 * reader sees the old object or the new one, never a mix. Staging elements
 * left by a crash are dropped when the store opens.
 */
#include "store/store_int.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#define WINDOW (8u << 20)

int pl_bucket_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 3 || n > 63)
        return PL_EINVAL;
    int dots_only_digits = 1;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return PL_EINVAL;
        if (!((c >= '0' && c <= '9') || c == '.'))
            dots_only_digits = 0;
        if (c == '.' && (i == 0 || name[i - 1] == '.' || name[i - 1] == '-' ||
                         (i + 1 < n && name[i + 1] == '-')))
            return PL_EINVAL;
    }
    if (name[0] == '-' || name[0] == '.' || name[n - 1] == '-' || name[n - 1] == '.')
        return PL_EINVAL;
    if (dots_only_digits)
        return PL_EINVAL; /* looks like an IP address */
    if (!strncmp(name, "xn--", 4) || (n > 8 && !strcmp(name + n - 8, "-s3alias")))
        return PL_EINVAL;
    return 0;
}

int pl_key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0)
        return PL_EINVAL;
    if (n > PL_KEY_MAX)
        return PL_ENAMETOOLONG;
    const char *p = key;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t cn = e ? (size_t)(e - p) : strlen(p);
        if (cn == 0 && e)
            return PL_EINVAL; /* "//" or a leading "/" */
        if (cn > PL_NAME_MAX)
            return PL_ENAMETOOLONG;
        if ((cn == 1 && p[0] == '.') || (cn == 2 && p[0] == '.' && p[1] == '.'))
            return PL_EINVAL;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

/* ---- buckets: record name -> id LE64, ctime LE64, flags LE64 ---- */
#define BUCKET_F_VERSIONING 1u /* enabled */
#define BUCKET_F_SUSPENDED 2u  /* was enabled, now suspended */

static int bucket_decode(const MDB_val *k, const MDB_val *v, struct pl_bucket_info *ret)
{
    if (k->mv_size >= sizeof(ret->name) || v->mv_size < 16)
        return PL_ECORRUPT;
    memset(ret, 0, sizeof(*ret));
    memcpy(ret->name, k->mv_data, k->mv_size);
    ret->id = pl_get_le64(v->mv_data);
    ret->ctime = (int64_t)pl_get_le64((const uint8_t *)v->mv_data + 8);
    uint64_t fl = v->mv_size >= 24 ? pl_get_le64((const uint8_t *)v->mv_data + 16) : 0;
    ret->versioning = fl & BUCKET_F_SUSPENDED   ? PL_VERSIONING_SUSPENDED
                      : fl & BUCKET_F_VERSIONING ? PL_VERSIONING_ENABLED
                                                 : PL_VERSIONING_OFF;
    return 0;
}

int bucket_get(MDB_txn *txn, struct meta_env *env, const char *name, struct pl_bucket_info *ret)
{
    MDB_val v;
    int rc = meta_get(txn, env, META_BUCKET, name, strlen(name), &v);
    if (rc == PL_ENOENT)
        return PL_ENOBUCKET;
    if (rc)
        return rc;
    MDB_val k = {strlen(name), (void *)name};
    return bucket_decode(&k, &v, ret);
}

static int apply_bucket_create(struct meta_txn *t, void *arg)
{
    const char *name = arg;
    struct pl_bucket_info b;
    int rc = bucket_get(t->txn, t->env, name, &b);
    if (rc != PL_ENOBUCKET)
        return rc ? rc : PL_EEXIST;
    struct mk_args a = {PL_ROOT_ID, name, PL_T_DIR, 0755, 0, 0, 1, NULL, 0, {0}};
    rc = store_mk(t, &a);
    if (rc)
        return rc;
    uint8_t v[24] = {0};
    pl_put_le64(v, a.out.id);
    pl_put_le64(v + 8, (uint64_t)a.out.btime);
    return meta_put(t, META_BUCKET, name, strlen(name), v, sizeof(v));
}

int pl_bucket_create(struct pl_store *st, const char *name)
{
    if (pl_bucket_name_valid(name))
        return PL_EINVAL;
    return meta_submit(st->meta, apply_bucket_create, (void *)name);
}

static int apply_bucket_delete(struct meta_txn *t, void *arg)
{
    const char *name = arg;
    struct pl_bucket_info b;
    struct elem root;
    int rc = bucket_get(t->txn, t->env, name, &b);
    if (rc)
        return rc;
    elem_init(&root);
    rc = elem_get(t->txn, t->env, PL_ROOT_ID, PL_VIEW_LIVE, &root);
    int empty = 1;
    if (!rc)
        rc = ver_bucket_empty(t->txn, t->env, b.id, &empty);
    if (!rc && !empty)
        rc = PL_ENOTEMPTY; /* old versions and delete markers count */
    if (!rc)
        rc = store_remove(t, &root, name, PL_T_DIR);
    elem_release(&root);
    if (!rc || rc == PL_ENOENT)
        rc = meta_del(t, META_BUCKET, name, strlen(name));
    return rc;
}

struct vers_args {
    const char *name;
    int state;
};

static int apply_bucket_versioning(struct meta_txn *t, void *arg)
{
    struct vers_args *a = arg;
    struct pl_bucket_info b;
    int rc = bucket_get(t->txn, t->env, a->name, &b);
    if (rc)
        return rc;
    uint8_t v[24];
    pl_put_le64(v, b.id);
    pl_put_le64(v + 8, (uint64_t)b.ctime);
    pl_put_le64(v + 16, a->state == PL_VERSIONING_ENABLED ? BUCKET_F_VERSIONING
                                                          : BUCKET_F_VERSIONING | BUCKET_F_SUSPENDED);
    return meta_put(t, META_BUCKET, a->name, strlen(a->name), v, sizeof(v));
}

int pl_bucket_versioning_set(struct pl_store *st, const char *name, int state)
{
    if (pl_bucket_name_valid(name))
        return PL_ENOBUCKET;
    if (state != PL_VERSIONING_ENABLED && state != PL_VERSIONING_SUSPENDED)
        return PL_EINVAL;
    struct vers_args a = {name, state};
    return meta_submit(st->meta, apply_bucket_versioning, &a);
}

int pl_bucket_delete(struct pl_store *st, const char *name)
{
    if (pl_bucket_name_valid(name))
        return PL_ENOBUCKET;
    return meta_submit(st->meta, apply_bucket_delete, (void *)name);
}

int pl_bucket_get(struct pl_store *st, const char *name, struct pl_bucket_info *ret)
{
    MDB_txn *txn;
    if (pl_bucket_name_valid(name))
        return PL_ENOBUCKET;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = bucket_get(txn, st->meta, name, ret);
    meta_rtxn_end(txn);
    return rc;
}

struct bucket_walk {
    pl_bucket_fn cb;
    void *arg;
};

static int bucket_walk_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct bucket_walk *w = arg;
    struct pl_bucket_info b;
    int rc = bucket_decode(k, v, &b);
    if (rc)
        return rc;
    return w->cb(w->arg, &b) ? 1 : 0;
}

int pl_bucket_list(struct pl_store *st, pl_bucket_fn cb, void *arg)
{
    MDB_txn *txn;
    struct bucket_walk w = {cb, arg};
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_walk(txn, st->meta, META_BUCKET, NULL, 0, bucket_walk_cb, &w);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- key walking ---- */
/* Split off the next component of *p into name; returns 1 when it was the last. */
static int key_next(const char **p, char name[PL_NAME_MAX + 1])
{
    const char *e = strchr(*p, '/');
    size_t n = e ? (size_t)(e - *p) : strlen(*p);
    memcpy(name, *p, n);
    name[n] = 0;
    *p += n + (e ? 1 : 0);
    return !e || !**p;
}

static int obj_walk(MDB_txn *txn, struct meta_env *env, const char *bucket, const char *key,
                    uint64_t view, struct dirent_rec *ret)
{
    char name[PL_NAME_MAX + 1];
    struct dirent_rec d;
    int rc = dirent_get(txn, env, PL_ROOT_ID, bucket, view, &d);
    if (rc)
        return rc == PL_ENOENT ? PL_ENOBUCKET : rc;
    const char *p = key;
    for (;;) {
        int last = key_next(&p, name);
        if (d.type != PL_T_DIR)
            return PL_ENOENT;
        rc = dirent_get(txn, env, d.id, name, view, &d);
        if (rc)
            return rc;
        if (last)
            break;
    }
    *ret = d;
    return 0;
}

int pl_obj_lookup(struct pl_store *st, const char *bucket, const char *key, uint64_t view,
                  struct pl_attr *ret)
{
    MDB_txn *txn;
    struct dirent_rec d;
    struct elem e;
    if (pl_key_valid(key))
        return PL_ENOENT;
    elem_init(&e);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = obj_walk(txn, st->meta, bucket, key, view, &d);
    if (!rc && d.type == PL_T_DIR && key[strlen(key) - 1] != '/')
        rc = PL_ENOENT; /* "a" names a directory: only "a/" is an object */
    if (!rc)
        rc = elem_get(txn, st->meta, d.id, view, &e);
    if (!rc && e.a.type == PL_T_DIR && (e.flags & ELEM_F_IMPLICIT))
        rc = PL_ENOENT; /* "a/" exists as an object only if someone made it one */
    if (!rc)
        *ret = e.a;
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

int pl_obj_content_type(struct pl_store *st, uint64_t id, uint64_t view, char *buf, size_t n)
{
    MDB_txn *txn;
    struct elem e;
    struct pl_str s;
    elem_init(&e);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_get(txn, st->meta, id, view, &e);
    buf[0] = 0;
    if (!rc && prop_get(&e, PROP_CTYPE, NULL, &s) == 0 && s.n < n) {
        memcpy(buf, s.p, s.n);
        buf[s.n] = 0;
    }
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- delete ---- */
/* The fate of an object replaced or deleted in a versioned bucket. */
struct keep_args {
    uint64_t bid;
    const char *key;
    int state;
};

static int keep_version(void *arg, struct meta_txn *t, struct elem *e)
{
    struct keep_args *a = arg;
    uint64_t seq;
    int null = 0;
    int rc = elem_version_get(e, &seq, &null);
    if (rc && rc != PL_ENODATA)
        return rc;
    if (a->state == PL_VERSIONING_SUSPENDED && (rc == PL_ENODATA || null))
        return elem_destroy(t, e); /* a new "null" version replaces this one */
    return ver_keep(t, a->bid, a->key, e);
}

/* Could key be linked without displacing anything? PL_ECONFLICT if not. */
static int obj_free_name(MDB_txn *txn, struct meta_env *env, const char *bucket, const char *key)
{
    char name[PL_NAME_MAX + 1];
    struct dirent_rec d;
    int rc = dirent_get(txn, env, PL_ROOT_ID, bucket, PL_VIEW_LIVE, &d);
    if (rc)
        return rc == PL_ENOENT ? PL_ENOBUCKET : rc;
    const char *p = key;
    for (;;) {
        int last = key_next(&p, name);
        if (d.type != PL_T_DIR)
            return PL_ECONFLICT;
        rc = dirent_get(txn, env, d.id, name, PL_VIEW_LIVE, &d);
        if (rc == PL_ENOENT)
            return 0; /* the rest gets created */
        if (rc)
            return rc;
        if (last)
            return PL_ECONFLICT;
    }
}

struct del_args {
    const char *bucket, *key;
    const char *vid; /* NULL: the latest */
    int dm;
    uint64_t version;
};

#define KEY_DEPTH_MAX (PL_KEY_MAX / 2 + 2)

/* Remove the object at bucket/key and the implicit directories it leaves
 * empty; keep (optional) decides the fate of the element. */
static int obj_remove(struct meta_txn *t, const char *bucket, const char *key, store_keep_fn keep,
                      void *keep_arg)
{
    char name[PL_NAME_MAX + 1];
    struct dirent_rec d;
    uint64_t *ids = malloc(KEY_DEPTH_MAX * sizeof(*ids));
    char (*names)[PL_NAME_MAX + 1] = malloc(KEY_DEPTH_MAX * sizeof(*names));
    int depth = 0, rc;
    struct elem dir;
    elem_init(&dir);
    if (!ids || !names) {
        rc = PL_ENOMEM;
        goto out;
    }
    rc = dirent_get(t->txn, t->env, PL_ROOT_ID, bucket, PL_VIEW_LIVE, &d);
    if (rc) {
        rc = rc == PL_ENOENT ? PL_ENOBUCKET : rc;
        goto out;
    }
    const char *p = key;
    int dirkey = key[strlen(key) - 1] == '/';
    for (;;) {
        int last = key_next(&p, name);
        if (d.type != PL_T_DIR) {
            rc = PL_ENOENT;
            goto out;
        }
        ids[depth] = d.id;
        memcpy(names[depth], name, strlen(name) + 1);
        depth++;
        rc = dirent_get(t->txn, t->env, d.id, name, PL_VIEW_LIVE, &d);
        if (rc)
            goto out;
        if (last)
            break;
    }
    if ((d.type == PL_T_DIR) != dirkey) {
        rc = PL_ENOENT;
        goto out;
    }
    /* remove the object, then implicit directories it leaves empty */
    for (int i = depth - 1; i >= 0; i--) {
        rc = elem_get(t->txn, t->env, ids[i], PL_VIEW_LIVE, &dir);
        if (!rc)
            rc = i == depth - 1 && !dirkey
                     ? store_remove_keep(t, &dir, names[i], 0, keep, keep_arg)
                     : store_remove(t, &dir, names[i], i == depth - 1 ? dirkey : PL_T_DIR);
        if (rc == PL_ENOTEMPTY && i < depth - 1) {
            rc = 0;
            break;
        }
        if (rc || i == 0 || !(dir.flags & ELEM_F_IMPLICIT))
            break;
        int empty;
        rc = dir_is_empty(t->txn, t->env, ids[i], &empty);
        if (rc || !empty)
            break;
    }
out:
    elem_release(&dir);
    free(ids);
    free(names);
    return rc;
}

int obj_get(MDB_txn *txn, struct meta_env *env, const char *bucket, const char *key,
            struct elem *ret)
{
    struct dirent_rec d;
    int rc = obj_walk(txn, env, bucket, key, PL_VIEW_LIVE, &d);
    if (!rc && d.type != PL_T_FILE)
        rc = PL_ENOENT;
    if (!rc)
        rc = elem_get(txn, env, d.id, PL_VIEW_LIVE, ret);
    return rc;
}

/* The latest version went: the newest record becomes the latest, linked
 * again if it is an object (unless its name is taken meanwhile). */
static int obj_promote(struct meta_txn *t, const char *bucket, uint64_t bid, const char *key)
{
    struct vrec *r = malloc(sizeof(*r));
    if (!r)
        return PL_ENOMEM;
    int rc = ver_first(t->txn, t->env, bid, key, r);
    if (rc == PL_ENOENT || (!rc && (r->flags & VREC_DM))) {
        rc = 0;
    } else if (!rc && obj_free_name(t->txn, t->env, bucket, key) == 0) {
        rc = ver_forget(t, bid, r, 0);
        if (!rc)
            rc = obj_restore(t, bucket, key, r->elem);
    }
    free(r);
    return rc;
}

static int apply_obj_delete(struct meta_txn *t, void *arg)
{
    struct del_args *a = arg;
    struct pl_bucket_info b;
    struct elem cur;
    struct vrec *r = NULL;
    int rc = bucket_get(t->txn, t->env, a->bucket, &b);
    if (rc)
        return rc;
    int dirkey = a->key[strlen(a->key) - 1] == '/';
    if (!a->vid && (b.versioning == PL_VERSIONING_OFF || dirkey)) {
        rc = obj_remove(t, a->bucket, a->key, NULL, NULL);
        return rc ? rc : event_queue(t, EV_DELETE, a->bucket, a->key, NULL, NULL);
    }
    int changed = 0;
    elem_init(&cur);
    if (!a->vid) {
        /* the latest becomes a noncurrent version under a new delete marker */
        struct keep_args ka = {b.id, a->key, b.versioning};
        int null = b.versioning == PL_VERSIONING_SUSPENDED;
        rc = obj_remove(t, a->bucket, a->key, keep_version, &ka);
        if (rc == PL_ENOENT || rc == PL_ENOTDIR || rc == PL_EISDIR)
            rc = 0;
        if (!rc && null)
            rc = ver_null_drop(t, b.id, a->key);
        if (!rc)
            rc = ver_marker_add(t, b.id, a->key, null, &a->version);
        a->dm = 1;
        changed = 1;
        goto out;
    }
    uint64_t v;
    rc = pl_version_parse(a->vid, &v);
    if (rc)
        goto out;
    a->version = v;
    int present = obj_get(t->txn, t->env, a->bucket, a->key, &cur) == 0;
    if (present && cur.a.version == v) {
        rc = obj_remove(t, a->bucket, a->key, NULL, NULL);
        if (!rc && b.versioning != PL_VERSIONING_OFF)
            rc = obj_promote(t, a->bucket, b.id, a->key);
        changed = 1;
        goto out;
    }
    r = malloc(sizeof(*r));
    if (!r) {
        rc = PL_ENOMEM;
        goto out;
    }
    int first = 0;
    rc = ver_find(t->txn, t->env, b.id, a->key, v, r, &first);
    if (rc == PL_ENOVERSION) {
        rc = 0; /* deleting what is not there succeeds */
        goto out;
    }
    if (!rc) {
        a->dm = (r->flags & VREC_DM) != 0;
        rc = ver_forget(t, b.id, r, 1);
        changed = 1;
    }
    if (!rc && first && !present)
        rc = obj_promote(t, a->bucket, b.id, a->key);
out:
    if (!rc && changed)
        rc = event_queue(t, a->dm && !a->vid ? EV_DELMARK : EV_DELETE, a->bucket, a->key, NULL,
                         NULL);
    free(r);
    elem_release(&cur);
    return rc;
}

int pl_obj_delete_version(struct pl_store *st, const char *bucket, const char *key,
                          const char *vid, int *ret_dm, uint64_t *ret_version)
{
    if (pl_key_valid(key))
        return PL_ENOENT;
    struct del_args a = {bucket, key, vid, 0, 0};
    int rc = meta_submit(st->meta, apply_obj_delete, &a);
    if (ret_dm)
        *ret_dm = rc ? 0 : a.dm;
    if (ret_version)
        *ret_version = a.version;
    return rc;
}

int pl_obj_delete(struct pl_store *st, const char *bucket, const char *key)
{
    return pl_obj_delete_version(st, bucket, key, NULL, NULL, NULL);
}

/* ---- streaming put ----
 * Pipeline: the caller's thread chunks, fingerprints and appends a window
 * (CPU); a pool job then hashes it into the ETag, syncs its chunks and
 * commits its extents (I/O) while the caller fills the next window. At most
 * one job per writer is in flight, so ETag updates and commits stay in order.
 * The job owns the write hold its window took. */
struct wjob {
    struct pl_job job;
    struct pl_writer *w;
    const uint8_t *buf;
    uint64_t off;
    size_t used;
    struct prep pr;
    int rc;
    int active;
};

struct pl_writer {
    struct pl_store *st;
    char *bucket, *key;
    uint64_t id;
    uint64_t off; /* file offset of buf[0] */
    uint8_t *buf, *spare;
    size_t n;
    EVP_MD_CTX *md5;
    int failed;
    struct wjob job;
};

static int apply_staging_new(struct meta_txn *t, void *arg)
{
    struct pl_writer *w = arg;
    struct elem e;
    uint8_t k[8];
    elem_init(&e);
    e.flags = ELEM_F_STAGING;
    int rc = elem_new(t, &e, PL_T_FILE, 0644, 0, 0, 0);
    if (!rc) {
        w->id = e.a.id;
        pl_put_be64(k, e.a.id);
        rc = meta_put(t, META_STAGING, k, 8, "", 0);
    }
    elem_release(&e);
    return rc;
}

int pl_obj_put_begin(struct pl_store *st, const char *bucket, const char *key,
                     struct pl_writer **ret)
{
    struct pl_bucket_info b;
    int rc = pl_key_valid(key);
    if (rc)
        return rc;
    rc = pl_bucket_get(st, bucket, &b);
    if (rc)
        return rc;
    return writer_open(st, bucket, key, ret);
}

int writer_open(struct pl_store *st, const char *bucket, const char *key, struct pl_writer **ret)
{
    int rc;
    struct pl_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return PL_ENOMEM;
    w->st = st;
    w->bucket = strdup(bucket);
    w->key = strdup(key);
    w->buf = malloc(WINDOW);
    w->spare = malloc(WINDOW);
    w->md5 = EVP_MD_CTX_new();
    if (!w->bucket || !w->key || !w->buf || !w->spare || !w->md5 ||
        !EVP_DigestInit_ex(w->md5, EVP_md5(), NULL)) {
        rc = PL_ENOMEM;
        goto fail;
    }
    rc = meta_submit(st->meta, apply_staging_new, w);
    if (rc)
        goto fail;
    *ret = w;
    return 0;
fail:
    w->id = 0;
    pl_writer_abort(w);
    return rc;
}

struct win_args {
    uint64_t id, a, b;
    const struct prep *pr;
};

static int apply_window(struct meta_txn *t, void *arg)
{
    struct win_args *a = arg;
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = extent_replace(t, &e, a->a, a->b, a->pr->p, a->pr->n);
    if (!rc)
        rc = elem_put(t, &e);
    elem_release(&e);
    return rc;
}

/* Sync and commit a prepared window; re-prepares from the same bytes when a
 * deduplicated chunk vanished meanwhile. Caller holds a write hold. */
static int window_commit(struct pl_writer *w, const uint8_t *buf, size_t n, uint64_t off,
                         int final, struct prep *pr, size_t used)
{
    int rc = 0;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (attempt) {
            prep_release(pr);
            rc = store_prepare(w->st, off, buf, n, final, pr, &used);
            if (rc)
                break;
        }
        rc = store_sync_segs(w->st, &pr->segs);
        if (!rc && used) {
            struct win_args a = {w->id, off, off + used, pr};
            rc = meta_submit(w->st->meta, apply_window, &a);
        }
        if (rc != PL_EAGAIN)
            break;
    }
    return rc;
}

static void wjob_run(struct pl_job *j)
{
    struct wjob *wj = (struct wjob *)j;
    struct pl_writer *w = wj->w;
    wj->rc = EVP_DigestUpdate(w->md5, wj->buf, wj->used) ? 0 : PL_EINTERNAL;
    if (!wj->rc)
        wj->rc = window_commit(w, wj->buf, wj->used, wj->off, 0, &wj->pr, wj->used);
    prep_release(&wj->pr);
    pl_write_release(w->st);
}

static int writer_wait(struct pl_writer *w)
{
    if (!w->job.active)
        return 0;
    pl_job_wait(w->st->pool, &w->job.job);
    w->job.active = 0;
    return w->job.rc;
}

/* Hand the chunkable part of a full buffer to a job; keep the tail. */
static int writer_flush(struct pl_writer *w)
{
    struct prep pr = {0};
    size_t used;
    int rc = writer_wait(w);
    if (rc)
        return rc;
    pl_write_hold(w->st);
    rc = store_prepare(w->st, w->off, w->buf, w->n, 0, &pr, &used);
    if (rc) {
        prep_release(&pr);
        pl_write_release(w->st);
        return rc;
    }
    /* only the consumed bytes go to the job: its re-prepare must cut the same */
    memcpy(w->spare, w->buf + used, w->n - used);
    w->job = (struct wjob){.job.fn = wjob_run, .w = w, .buf = w->buf, .off = w->off,
                           .used = used, .pr = pr, .active = 1};
    pl_pool_submit(w->st->pool, &w->job.job);
    uint8_t *t = w->buf;
    w->buf = w->spare;
    w->spare = t;
    w->n -= used;
    w->off += used;
    return 0;
}

/* Commit whatever is buffered, synchronously (the end of the object). */
static int writer_finish(struct pl_writer *w)
{
    struct prep pr = {0};
    size_t used = 0;
    int rc = writer_wait(w);
    if (rc)
        return rc;
    if (!EVP_DigestUpdate(w->md5, w->buf, w->n))
        return PL_EINTERNAL;
    if (!w->n)
        return 0;
    pl_write_hold(w->st);
    rc = store_prepare(w->st, w->off, w->buf, w->n, 1, &pr, &used);
    if (!rc)
        rc = window_commit(w, w->buf, w->n, w->off, 1, &pr, used);
    pl_write_release(w->st);
    prep_release(&pr);
    if (!rc) {
        w->off += used;
        w->n = 0;
    }
    return rc;
}

int pl_writer_write(struct pl_writer *w, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    if (w->failed)
        return w->failed;
    while (n) {
        size_t take = PL_MIN(n, WINDOW - w->n);
        memcpy(w->buf + w->n, p, take);
        w->n += take;
        p += take;
        n -= take;
        if (w->n == WINDOW) {
            int rc = writer_flush(w);
            if (rc)
                return w->failed = rc;
        }
    }
    return 0;
}

struct link_obj_args {
    struct pl_writer *w;
    const struct pl_obj_meta *meta;
    const char *etag;
    struct pl_attr out;
};

/* Walk bucket/key to the directory that holds its last component (into
 * name), creating implicit directories on the way; dir gets loaded. */
static int obj_parent(struct meta_txn *t, const char *bucket, const char *key, struct elem *dir,
                      char name[PL_NAME_MAX + 1])
{
    struct dirent_rec d;
    int rc = dirent_get(t->txn, t->env, PL_ROOT_ID, bucket, PL_VIEW_LIVE, &d);
    if (rc)
        return rc == PL_ENOENT ? PL_ENOBUCKET : rc;
    uint64_t cur = d.id;
    const char *p = key;
    while (!key_next(&p, name)) {
        rc = dirent_get(t->txn, t->env, cur, name, PL_VIEW_LIVE, &d);
        if (rc == PL_ENOENT) {
            struct mk_args m = {cur, name, PL_T_DIR, 0755, 0, 0, 1, NULL, ELEM_F_IMPLICIT, {0}};
            rc = store_mk(t, &m);
            d.id = m.out.id;
            d.type = PL_T_DIR;
        }
        if (rc)
            return rc;
        if (d.type != PL_T_DIR)
            return PL_ECONFLICT; /* a parent of the key is an object */
        cur = d.id;
    }
    return elem_get(t->txn, t->env, cur, PL_VIEW_LIVE, dir);
}

/* Give nameless element e the name in dir, counting it as a live file. */
static int obj_attach(struct meta_txn *t, struct elem *dir, const char *name, struct elem *e)
{
    uint8_t k[8];
    e->flags &= (uint16_t)~(ELEM_F_STAGING | ELEM_F_VERSION);
    e->a.nlink = 1;
    e->a.parent = dir->a.id;
    int rc = elem_name_set(e, name);
    if (!rc)
        rc = dirent_add(t, dir->a.id, name, e->a.id, PL_T_FILE);
    if (!rc)
        rc = elem_put(t, e);
    if (!rc)
        rc = meta_sys_add(t, "logical", (int64_t)e->a.size);
    if (!rc)
        rc = meta_sys_add(t, "elements", 1);
    pl_put_be64(k, e->a.id);
    if (!rc) {
        rc = meta_del(t, META_STAGING, k, 8);
        if (rc == PL_ENOENT)
            rc = 0; /* multipart templates and versions are not in the staging table */
    }
    if (!rc) {
        dir->a.mtime = dir->a.ctime = pl_now_ns();
        rc = elem_put(t, dir);
    }
    return rc;
}

int obj_link(struct meta_txn *t, const char *bucket, const char *key, uint64_t id,
             const char *etag, const struct pl_obj_meta *meta, struct pl_attr *out)
{
    char name[PL_NAME_MAX + 1];
    struct pl_bucket_info b;
    struct dirent_rec d;
    struct elem e, dir;
    elem_init(&e);
    elem_init(&dir);
    int rc = bucket_get(t->txn, t->env, bucket, &b);
    if (!rc)
        rc = obj_parent(t, bucket, key, &dir, name);
    if (rc)
        goto out;
    struct keep_args ka = {b.id, key, b.versioning};
    rc = dirent_get(t->txn, t->env, dir.a.id, name, PL_VIEW_LIVE, &d);
    if (rc == 0) {
        if (d.type == PL_T_DIR) {
            rc = PL_ECONFLICT; /* the key is a directory of other keys */
            goto out;
        }
        rc = store_remove_keep(t, &dir, name, 0,
                               b.versioning != PL_VERSIONING_OFF ? keep_version : NULL, &ka);
    }
    if (rc && rc != PL_ENOENT)
        goto out;
    rc = 0;
    if (b.versioning == PL_VERSIONING_SUSPENDED)
        rc = ver_null_drop(t, b.id, key);
    if (!rc)
        rc = elem_get(t->txn, t->env, id, PL_VIEW_LIVE, &e);
    if (rc)
        goto out;
    e.a.mtime = e.a.ctime = pl_now_ns();
    snprintf(e.a.etag, sizeof(e.a.etag), "%s", etag);
    if (b.versioning != PL_VERSIONING_OFF) {
        uint64_t seq;
        rc = vseq_next(t, &seq);
        if (!rc)
            rc = elem_version_set(&e, seq, b.versioning == PL_VERSIONING_SUSPENDED);
    }
    if (!rc && meta && meta->content_type && *meta->content_type)
        rc = prop_set(&e, PROP_CTYPE, NULL, meta->content_type, strlen(meta->content_type));
    for (const char *const *m = meta ? meta->user_meta : NULL; !rc && m && m[0]; m += 2) {
        char xn[300];
        if (snprintf(xn, sizeof(xn), "user.meta.%s", m[0]) >= (int)sizeof(xn)) {
            rc = PL_ENAMETOOLONG;
            break;
        }
        rc = prop_set(&e, PROP_XATTR, xn, m[1], strlen(m[1]));
    }
    for (const char *const *m = meta ? meta->xattrs : NULL; !rc && m && m[0]; m += 2)
        rc = prop_set(&e, PROP_XATTR, m[0], m[1], strlen(m[1]));
    if (!rc)
        rc = obj_attach(t, &dir, name, &e);
    if (!rc && out)
        *out = e.a;
out:
    elem_release(&e);
    elem_release(&dir);
    return rc;
}

int obj_restore(struct meta_txn *t, const char *bucket, const char *key, uint64_t id)
{
    char name[PL_NAME_MAX + 1];
    struct elem e, dir;
    elem_init(&e);
    elem_init(&dir);
    int rc = obj_free_name(t->txn, t->env, bucket, key);
    if (!rc)
        rc = obj_parent(t, bucket, key, &dir, name);
    if (!rc)
        rc = elem_get(t->txn, t->env, id, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = obj_attach(t, &dir, name, &e);
    elem_release(&e);
    elem_release(&dir);
    return rc;
}

static int apply_link_obj(struct meta_txn *t, void *arg)
{
    struct link_obj_args *a = arg;
    int rc = obj_link(t, a->w->bucket, a->w->key, a->w->id, a->etag, a->meta, &a->out);
    if (!rc)
        rc = event_queue(t, a->meta && a->meta->copy ? EV_COPY : EV_PUT, a->w->bucket, a->w->key,
                         &a->out, NULL);
    return rc;
}

/* Create every directory of a "a/b/" key; the last one explicitly. */
static int apply_mkdirs(struct meta_txn *t, void *arg)
{
    struct pl_writer *w = arg;
    char name[PL_NAME_MAX + 1];
    struct dirent_rec d;
    int rc = dirent_get(t->txn, t->env, PL_ROOT_ID, w->bucket, PL_VIEW_LIVE, &d);
    if (rc)
        return rc == PL_ENOENT ? PL_ENOBUCKET : rc;
    const char *p = w->key;
    for (;;) {
        int last = key_next(&p, name);
        uint64_t cur = d.id;
        rc = dirent_get(t->txn, t->env, cur, name, PL_VIEW_LIVE, &d);
        if (rc == PL_ENOENT) {
            /* explicit below, once the marker is set */
            struct mk_args m = {cur, name, PL_T_DIR, 0755, 0, 0, 1, NULL, ELEM_F_IMPLICIT, {0}};
            rc = store_mk(t, &m);
            d.id = m.out.id;
            d.type = PL_T_DIR;
        }
        if (!rc && last && d.type == PL_T_DIR) {
            /* the marker object: explicit, with the ETag of an empty body */
            struct elem e;
            elem_init(&e);
            rc = elem_get(t->txn, t->env, d.id, PL_VIEW_LIVE, &e);
            if (!rc) {
                e.flags &= (uint16_t)~ELEM_F_IMPLICIT;
                snprintf(e.a.etag, sizeof(e.a.etag), "d41d8cd98f00b204e9800998ecf8427e");
                rc = elem_put(t, &e);
                if (!rc)
                    rc = event_queue(t, EV_PUT, w->bucket, w->key, &e.a, NULL);
            }
            elem_release(&e);
        }
        if (rc)
            return rc;
        if (d.type != PL_T_DIR)
            return PL_ECONFLICT;
        if (last)
            return 0;
    }
}

int writer_close(struct pl_writer *w, uint8_t md5[16], uint64_t *ret_size)
{
    unsigned int mdlen = 0;
    uint8_t md[EVP_MAX_MD_SIZE];
    int rc = w->failed;
    if (!rc)
        rc = writer_finish(w);
    if (!rc && !EVP_DigestFinal_ex(w->md5, md, &mdlen))
        rc = PL_EINTERNAL;
    if (!rc) {
        memcpy(md5, md, 16);
        *ret_size = w->off;
    }
    return rc;
}

uint64_t writer_elem(const struct pl_writer *w)
{
    return w->id;
}

void writer_disown(struct pl_writer *w)
{
    w->id = 0;
}

int pl_obj_put_commit(struct pl_writer *w, const struct pl_obj_meta *meta, struct pl_attr *ret)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char etag[PL_ETAG_MAX];
    int rc = w->failed;
    if (!rc)
        rc = writer_finish(w);
    if (!rc && !EVP_DigestFinal_ex(w->md5, md, &mdlen))
        rc = PL_EINTERNAL;
    if (!rc && meta && meta->content_md5 && memcmp(meta->content_md5, md, 16))
        rc = PL_EDIGEST; /* checked before the object becomes visible */
    if (rc)
        goto out;
    pl_hex(md, mdlen, etag);
    size_t kl = strlen(w->key);
    if (w->key[kl - 1] == '/') {
        /* a "dir/" key is a directory marker: it holds no data */
        rc = w->off ? PL_ECONFLICT : meta_submit(w->st->meta, apply_mkdirs, w);
        if (!rc && ret)
            rc = pl_obj_lookup(w->st, w->bucket, w->key, PL_VIEW_LIVE, ret);
        goto out;
    }
    struct link_obj_args a = {w, meta, etag, {0}};
    rc = meta_submit(w->st->meta, apply_link_obj, &a);
    if (!rc) {
        w->id = 0; /* linked: no longer ours to drop */
        if (ret)
            *ret = a.out;
    }
out:
    pl_writer_abort(w);
    return rc;
}

static int apply_drop(struct meta_txn *t, void *arg)
{
    uint64_t id = *(uint64_t *)arg;
    struct elem e;
    uint8_t k[8];
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, id, PL_VIEW_LIVE, &e);
    /* only nameless elements (staging, orphaned) are dropped: an orphan mark
     * whose mutation was rolled back must not take a named element with it */
    if (!rc && (e.flags & ELEM_F_STAGING))
        rc = elem_destroy(t, &e);
    if (rc == PL_ENOENT)
        rc = 0;
    elem_release(&e);
    pl_put_be64(k, id);
    if (!rc) {
        rc = meta_del(t, META_STAGING, k, 8);
        if (rc == PL_ENOENT)
            rc = 0;
    }
    return rc;
}

int store_elem_drop(struct pl_store *st, uint64_t id)
{
    return meta_submit(st->meta, apply_drop, &id);
}

void pl_writer_abort(struct pl_writer *w)
{
    if (!w)
        return;
    (void)writer_wait(w); /* its result no longer matters; its buffer does */
    if (w->id && store_elem_drop(w->st, w->id))
        pl_log(PL_LOG_DEBUG, "store", "staging id=%llu kept until next open",
               (unsigned long long)w->id);
    EVP_MD_CTX_free(w->md5);
    free(w->bucket);
    free(w->key);
    free(w->buf);
    free(w->spare);
    free(w);
}

/* ---- listing in key order ----
 * Directory entries sort by name then terminator ('\0' for files, '/' for
 * directories), which is exactly S3 key order for "name" vs "name/...": a
 * depth-first walk in cursor order yields keys sorted. */
struct lister {
    MDB_txn *txn;
    struct meta_env *env;
    uint64_t view;
    const char *after; /* full key, "" for none */
    char delim;
    pl_list_fn cb;
    void *arg;
    char key[PL_KEY_MAX + PL_NAME_MAX + 4];
    int stopped;
};

/* List directory dir whose keys start with key[0..klen), restricted to child
 * names starting with filt. */
static int list_dir(struct lister *L, uint64_t dir, size_t klen, const char *filt, int depth)
{
    MDB_cursor *c = NULL;
    uint8_t k[PL_NAME_MAX + 32];
    char last[PL_NAME_MAX + 2] = "";
    size_t fl = strlen(filt);
    int rc;
    if (depth > PL_KEY_MAX / 2)
        return PL_ELOOP;
    rc = meta_err(mdb_cursor_open(L->txn, meta_dbi(L->env, META_DIRENT), &c));
    if (rc)
        return rc;
    /* start at the filter, or at the component of "after" inside this dir */
    pl_put_be64(k, dir);
    size_t kn = 8;
    const char *start = filt;
    size_t sl = fl;
    if (*L->after && !strncmp(L->after, L->key, klen) && strcmp(L->after + klen, filt) > 0) {
        start = L->after + klen;
        const char *sl_end = strchr(start, '/');
        sl = sl_end ? (size_t)(sl_end - start) : strlen(start);
        if (sl > PL_NAME_MAX)
            sl = PL_NAME_MAX;
    }
    memcpy(k + 8, start, sl);
    kn += sl;
    MDB_val key = {kn, k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc && !L->stopped) {
        const uint8_t *kp = key.mv_data, *vp = val.mv_data;
        if (key.mv_size < 18 || pl_get_be64(kp) != dir)
            break;
        size_t nn = key.mv_size - 17;
        if (nn > PL_NAME_MAX || val.mv_size != 17) {
            rc = PL_ECORRUPT;
            break;
        }
        if (nn < fl || memcmp(kp + 8, filt, fl)) {
            if (memcmp(kp + 8, filt, PL_MIN(nn, fl)) > 0)
                break; /* past every name with the filter prefix */
            rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
            continue;
        }
        uint64_t birth = ~pl_get_be64(kp + 9 + nn), death = pl_get_le64(vp + 9);
        char name[PL_NAME_MAX + 2];
        memcpy(name, kp + 8, nn);
        name[nn] = 0;
        if (!view_sees(L->view, birth, death) || !strcmp(name, last)) {
            rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
            continue;
        }
        memcpy(last, name, nn + 1);
        uint64_t id = pl_get_le64(vp);
        int isdir = vp[8] == PL_T_DIR;
        memcpy(L->key + klen, name, nn);
        size_t nk = klen + nn;
        if (isdir)
            L->key[nk++] = '/';
        L->key[nk] = 0;
        int cmp = *L->after ? strcmp(L->key, L->after) : 1;
        if (isdir && L->delim == '/') {
            if (cmp > 0 && L->cb(L->arg, L->key, 1, NULL))
                L->stopped = 1;
        } else if (isdir) {
            /* the subtree holds keys > L->key; skip it only when after is past it */
            int inside = *L->after && !strncmp(L->after, L->key, nk);
            if (cmp > 0 || inside) {
                struct elem de;
                elem_init(&de);
                rc = elem_get(L->txn, L->env, id, L->view, &de);
                /* an explicit empty directory is the object "dir/" */
                if (!rc && !(de.flags & ELEM_F_IMPLICIT) && cmp > 0 &&
                    L->cb(L->arg, L->key, 0, &de.a))
                    L->stopped = 1;
                elem_release(&de);
                if (!rc && !L->stopped)
                    rc = list_dir(L, id, nk, "", depth + 1);
                if (rc)
                    break;
            }
        } else if (cmp > 0) {
            struct elem fe;
            elem_init(&fe);
            rc = elem_get(L->txn, L->env, id, L->view, &fe);
            if (!rc && L->cb(L->arg, L->key, 0, &fe.a))
                L->stopped = 1;
            elem_release(&fe);
            if (rc)
                break;
        }
        L->key[klen] = 0;
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc == PL_ENOENT ? 0 : rc;
}

int pl_obj_list(struct pl_store *st, const char *bucket, const char *prefix, const char *after,
                char delim, uint64_t view, pl_list_fn cb, void *arg)
{
    struct lister *L = calloc(1, sizeof(*L));
    struct dirent_rec d;
    char name[PL_NAME_MAX + 1];
    int rc;
    if (!L)
        return PL_ENOMEM;
    prefix = prefix ? prefix : "";
    L->view = view;
    L->after = after ? after : "";
    L->delim = delim;
    L->cb = cb;
    L->arg = arg;
    L->env = st->meta;
    if (strlen(prefix) > PL_KEY_MAX) {
        free(L);
        return PL_ENAMETOOLONG;
    }
    rc = meta_rtxn_begin(st->meta, &L->txn);
    if (rc) {
        free(L);
        return rc;
    }
    rc = dirent_get(L->txn, st->meta, PL_ROOT_ID, bucket, view, &d);
    if (rc) {
        rc = rc == PL_ENOENT ? PL_ENOBUCKET : rc;
        goto out;
    }
    /* descend through the complete directory components of the prefix */
    const char *p = prefix;
    size_t klen = 0;
    for (;;) {
        const char *slash = strchr(p, '/');
        if (!slash)
            break;
        size_t n = (size_t)(slash - p);
        if (n == 0 || n > PL_NAME_MAX)
            goto out; /* no key can match */
        memcpy(name, p, n);
        name[n] = 0;
        rc = dirent_get(L->txn, st->meta, d.id, name, view, &d);
        if (rc || d.type != PL_T_DIR) {
            rc = rc == PL_ENOENT || !rc ? 0 : rc;
            goto out;
        }
        memcpy(L->key + klen, name, n);
        klen += n;
        L->key[klen++] = '/';
        L->key[klen] = 0;
        p = slash + 1;
    }
    if (strlen(p) > PL_NAME_MAX)
        goto out;
    rc = list_dir(L, d.id, klen, p, 0);
out:
    meta_rtxn_end(L->txn);
    free(L);
    return rc;
}

/* ---- ETags of content written in place ----
 * Writes through the file heads (NFS, FUSE, NBD) clear the ETag rather than
 * hash the whole file at every write; it is computed here when an object
 * view first needs it, and kept unless the content changed meanwhile. */
struct etag_set {
    uint64_t id, size;
    int64_t mtime;
    const char *etag;
};

static int apply_etag_set(struct meta_txn *t, void *arg)
{
    struct etag_set *a = arg;
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, a->id, PL_VIEW_LIVE, &e);
    if (!rc && !e.a.etag[0] && e.a.mtime == a->mtime && e.a.size == a->size) {
        snprintf(e.a.etag, sizeof(e.a.etag), "%s", a->etag);
        rc = elem_put(t, &e);
    }
    elem_release(&e);
    return rc == PL_ENOENT ? 0 : rc;
}

int pl_elem_etag(struct pl_store *st, struct pl_attr *a, uint64_t view)
{
    if (a->etag[0] || a->type != PL_T_FILE)
        return 0;
    size_t bn = 1u << 20;
    uint8_t *buf = malloc(bn);
    EVP_MD_CTX *md5 = EVP_MD_CTX_new();
    int rc = buf && md5 && EVP_DigestInit_ex(md5, EVP_md5(), NULL) ? 0 : PL_ENOMEM;
    for (uint64_t off = 0; !rc && off < a->size;) {
        size_t got;
        rc = pl_elem_read(st, a->id, view, off, buf, (size_t)PL_MIN((uint64_t)bn, a->size - off),
                          &got);
        if (!rc && got == 0)
            break; /* shrank meanwhile: the ETag of what was read is not kept */
        if (!rc && !EVP_DigestUpdate(md5, buf, got))
            rc = PL_EINTERNAL;
        off += got;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!rc && !EVP_DigestFinal_ex(md5, md, &mdlen))
        rc = PL_EINTERNAL;
    if (!rc) {
        pl_hex(md, mdlen, a->etag);
        if (view == PL_VIEW_LIVE) {
            struct etag_set es = {a->id, a->size, a->mtime, a->etag};
            rc = meta_submit(st->meta, apply_etag_set, &es);
        }
    }
    EVP_MD_CTX_free(md5);
    free(buf);
    return rc;
}

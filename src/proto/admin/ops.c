#include "proto/admin/ops.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"

#define IO_CHUNK (4u << 20)

static const char *sarg(json_t *args, const char *name)
{
    json_t *v = json_object_get(args, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int64_t iarg(json_t *args, const char *name, int64_t def)
{
    json_t *v = json_object_get(args, name);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

static int barg(json_t *args, const char *name)
{
    return json_is_true(json_object_get(args, name));
}

/* snapshot name -> view epoch */
static int view_arg(struct pl_store *st, json_t *args, uint64_t *ret)
{
    const char *s = sarg(args, "snapshot");
    *ret = PL_VIEW_LIVE;
    if (!s || !*s)
        return 0;
    struct pl_snap_info si;
    int rc = pl_snap_get(st, s, &si);
    if (!rc)
        *ret = si.epoch;
    return rc;
}

static const char *type_name(uint8_t t)
{
    return t == PL_T_DIR ? "dir" : t == PL_T_SYMLINK ? "symlink" : "file";
}

json_t *ops_attr_json(const struct pl_attr *a)
{
    return json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I}", "id", (json_int_t)a->id,
                     "type", type_name(a->type), "size", (json_int_t)a->size, "mode",
                     (json_int_t)a->mode, "nlink", (json_int_t)a->nlink, "uid",
                     (json_int_t)a->uid, "gid", (json_int_t)a->gid, "etag", a->etag, "mtime_ns",
                     (json_int_t)a->mtime, "ctime_ns", (json_int_t)a->ctime);
}

static int op_mb(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *b = sarg(args, "bucket");
    return b ? pl_bucket_create(st, b) : PL_EINVAL;
}

static int op_rb(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *b = sarg(args, "bucket");
    return b ? pl_bucket_delete(st, b) : PL_EINVAL;
}

static int bucket_cb(void *arg, const struct pl_bucket_info *b)
{
    json_array_append_new(arg, json_pack("{s:s, s:I}", "name", b->name, "ctime_ns",
                                         (json_int_t)b->ctime));
    return 0;
}

static int op_buckets(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    json_t *a = json_array();
    json_object_set_new(res, "buckets", a);
    return pl_bucket_list(st, bucket_cb, a);
}

static int op_put(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    const char *b = sarg(args, "bucket"), *k = sarg(args, "key");
    const char *ct = sarg(args, "content_type");
    struct pl_writer *w = NULL;
    struct pl_attr a;
    char *buf = NULL;
    if (!b || !k || !io || !io->read)
        return PL_EINVAL;
    int rc = pl_obj_put_begin(st, b, k, &w);
    if (rc)
        return rc;
    buf = malloc(IO_CHUNK);
    if (!buf) {
        rc = PL_ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = io->read(io->ctx, buf, IO_CHUNK);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        if (n == 0)
            break;
        rc = pl_writer_write(w, buf, (size_t)n);
        if (rc)
            goto out;
    }
    struct pl_obj_meta m = {ct, NULL};
    rc = pl_obj_put_commit(w, &m, &a);
    w = NULL;
    if (!rc)
        json_object_set_new(res, "object", ops_attr_json(&a));
out:
    pl_writer_abort(w);
    free(buf);
    return rc;
}

static int op_get(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res;
    const char *b = sarg(args, "bucket"), *k = sarg(args, "key");
    struct pl_attr a;
    uint64_t view;
    char *buf = NULL;
    if (!b || !k || !io || !io->write)
        return PL_EINVAL;
    int rc = view_arg(st, args, &view);
    if (!rc)
        rc = pl_obj_lookup(st, b, k, view, &a);
    if (!rc && a.type != PL_T_FILE)
        rc = PL_EISDIR;
    if (rc)
        return rc;
    buf = malloc(IO_CHUNK);
    if (!buf)
        return PL_ENOMEM;
    rc = io->begin ? io->begin(io->ctx, (int64_t)a.size) : 0;
    uint64_t off = 0;
    while (!rc && off < a.size) {
        size_t got;
        rc = pl_elem_read(st, a.id, view, off, buf, IO_CHUNK, &got);
        if (rc)
            break;
        if (got == 0)
            break; /* truncated meanwhile */
        rc = io->write(io->ctx, buf, got);
        off += got;
    }
    free(buf);
    return rc;
}

static int op_copy(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *sb = sarg(args, "src_bucket"), *sk = sarg(args, "src_key");
    const char *db = sarg(args, "bucket"), *dk = sarg(args, "key");
    struct pl_attr a;
    struct pl_writer *w = NULL;
    char *buf = NULL, ct[256];
    if (!sb || !sk || !db || !dk)
        return PL_EINVAL;
    int rc = pl_obj_lookup(st, sb, sk, PL_VIEW_LIVE, &a);
    if (!rc && a.type != PL_T_FILE)
        rc = PL_EISDIR;
    if (!rc)
        rc = pl_obj_content_type(st, a.id, PL_VIEW_LIVE, ct, sizeof(ct));
    if (!rc)
        rc = pl_obj_put_begin(st, db, dk, &w);
    if (rc)
        return rc;
    buf = malloc(IO_CHUNK);
    if (!buf) {
        rc = PL_ENOMEM;
        goto out;
    }
    for (uint64_t off = 0; off < a.size;) {
        size_t got;
        rc = pl_elem_read(st, a.id, PL_VIEW_LIVE, off, buf, IO_CHUNK, &got);
        if (!rc && got == 0)
            break;
        if (!rc)
            rc = pl_writer_write(w, buf, got);
        if (rc)
            goto out;
        off += got;
    }
    struct pl_obj_meta m = {ct, NULL};
    rc = pl_obj_put_commit(w, &m, &a);
    w = NULL;
    if (!rc)
        json_object_set_new(res, "object", ops_attr_json(&a));
out:
    pl_writer_abort(w);
    free(buf);
    return rc;
}

static int op_stat(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *b = sarg(args, "bucket"), *k = sarg(args, "key");
    struct pl_attr a;
    uint64_t view;
    char ct[256];
    if (!b)
        return PL_EINVAL;
    int rc = view_arg(st, args, &view);
    if (rc)
        return rc;
    if (!k || !*k) {
        struct pl_bucket_info bi;
        rc = pl_bucket_get(st, b, &bi);
        if (!rc)
            json_object_set_new(res, "bucket", json_pack("{s:s, s:I, s:I}", "name", bi.name,
                                                          "id", (json_int_t)bi.id, "ctime_ns",
                                                          (json_int_t)bi.ctime));
        return rc;
    }
    rc = pl_obj_lookup(st, b, k, view, &a);
    if (!rc)
        rc = pl_obj_content_type(st, a.id, view, ct, sizeof(ct));
    if (!rc)
        rc = pl_elem_etag(st, &a, view); /* written in place: its MD5, once */
    if (rc)
        return rc;
    json_t *o = ops_attr_json(&a);
    json_object_set_new(o, "content_type", json_string(ct));
    json_object_set_new(o, "key", json_string(k));
    json_object_set_new(res, "object", o);
    return 0;
}

struct ls_ctx {
    json_t *arr;
    int64_t max, n;
    const char *last;
    char next[PL_KEY_MAX + 2];
};

static int ls_cb(void *arg, const char *key, int is_prefix, const struct pl_attr *a)
{
    struct ls_ctx *c = arg;
    if (c->n == c->max) {
        return 1;
    }
    json_t *e = is_prefix ? json_pack("{s:s, s:b}", "key", key, "prefix", 1) : ops_attr_json(a);
    if (!is_prefix)
        json_object_set_new(e, "key", json_string(key));
    json_array_append_new(c->arr, e);
    snprintf(c->next, sizeof(c->next), "%s", key);
    c->n++;
    return 0;
}

static int op_ls(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *b = sarg(args, "bucket"), *p = sarg(args, "prefix"), *after = sarg(args, "after");
    uint64_t view;
    if (!b)
        return PL_EINVAL;
    struct ls_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return PL_ENOMEM;
    c->arr = json_array();
    c->max = iarg(args, "max", 1000);
    if (c->max <= 0 || c->max > 100000)
        c->max = 1000;
    int rc = view_arg(st, args, &view);
    if (!rc)
        rc = pl_obj_list(st, b, p ? p : "", after ? after : "", barg(args, "recursive") ? 0 : '/',
                         view, ls_cb, c);
    json_object_set_new(res, "entries", c->arr);
    /* more may follow only when the page filled up */
    json_object_set_new(res, "next", c->n == c->max ? json_string(c->next) : json_null());
    free(c);
    return rc;
}

struct rm_ctx {
    char **keys;
    size_t n, cap;
};

static int rm_cb(void *arg, const char *key, int is_prefix, const struct pl_attr *a)
{
    (void)is_prefix, (void)a;
    struct rm_ctx *c = arg;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        char **nk = realloc(c->keys, cap * sizeof(*nk));
        if (!nk)
            return 1;
        c->keys = nk;
        c->cap = cap;
    }
    c->keys[c->n] = strdup(key);
    if (c->keys[c->n])
        c->n++;
    return c->n >= 10000;
}

static int op_rm(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *b = sarg(args, "bucket"), *k = sarg(args, "key");
    if (!b || !k)
        return PL_EINVAL;
    if (!barg(args, "recursive")) {
        int rc = pl_obj_delete(st, b, k);
        if (!rc)
            json_object_set_new(res, "deleted", json_integer(1));
        return rc;
    }
    int64_t deleted = 0;
    int rc = 0;
    for (;;) {
        struct rm_ctx c = {0};
        rc = pl_obj_list(st, b, k, "", 0, PL_VIEW_LIVE, rm_cb, &c);
        /* deepest first, so "dir/" markers go after their contents */
        for (size_t i = c.n; !rc && i-- > 0;) {
            rc = pl_obj_delete(st, b, c.keys[i]);
            if (rc == PL_ENOENT || rc == PL_ENOTEMPTY)
                rc = 0;
            else if (!rc)
                deleted++;
        }
        for (size_t i = 0; i < c.n; i++)
            free(c.keys[i]);
        free(c.keys);
        if (rc || c.n == 0 || deleted == 0)
            break;
        if (c.n < 10000)
            break;
    }
    json_object_set_new(res, "deleted", json_integer(deleted));
    return rc;
}

/* Savings split three ways; their product is logical / stored. */
static void savings_json(json_t *res, uint64_t logical, uint64_t unique, uint64_t stored,
                         uint64_t delta_chunks, uint64_t delta_saved)
{
    double dedup = unique ? (double)logical / (double)unique : 1.0;
    double plain = (double)stored + (double)delta_saved;
    double comp = plain > 0 ? (double)unique / plain : 1.0;
    double sim = stored ? plain / (double)stored : 1.0;
    json_object_set_new(res, "logical_bytes", json_integer((json_int_t)logical));
    json_object_set_new(res, "unique_bytes", json_integer((json_int_t)unique));
    json_object_set_new(res, "stored_bytes", json_integer((json_int_t)stored));
    json_object_set_new(res, "dedup_ratio", json_real(dedup));
    json_object_set_new(res, "compression_ratio", json_real(comp));
    json_object_set_new(res, "similarity_ratio", json_real(sim));
    json_object_set_new(res, "reduction_ratio",
                        json_real(stored ? (double)logical / (double)stored : 1.0));
    json_object_set_new(res, "delta_chunks", json_integer((json_int_t)delta_chunks));
    json_object_set_new(res, "delta_saved_bytes", json_integer((json_int_t)delta_saved));
}

static int op_stats(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *bucket = sarg(args, "bucket");
    if (bucket && *bucket) {
        struct pl_bucket_usage u;
        int rc = pl_bucket_usage(st, bucket, &u);
        if (rc)
            return rc;
        json_object_set_new(res, "bucket", json_string(bucket));
        json_object_set_new(res, "objects", json_integer((json_int_t)u.objects));
        savings_json(res, u.logical_bytes, u.unique_bytes, u.stored_bytes, u.delta_chunks,
                     u.delta_saved);
        return 0;
    }
    struct pl_store_stats s;
    int rc = pl_store_stats(st, &s);
    if (rc)
        return rc;
    savings_json(res, s.logical_bytes, s.unique_bytes, s.stored_bytes, s.delta_chunks,
                 s.delta_saved);
    json_object_set_new(res, "staged_bytes", json_integer((json_int_t)s.staged_bytes));
    json_object_set_new(res, "physical_bytes", json_integer((json_int_t)s.physical_bytes));
    json_object_set_new(res, "free_bytes", json_integer((json_int_t)s.free_bytes));
    json_object_set_new(res, "elements", json_integer((json_int_t)s.elements));
    json_object_set_new(res, "chunks", json_integer((json_int_t)s.chunks));
    json_object_set_new(res, "segments", json_integer((json_int_t)s.segments));
    json_object_set_new(res, "commits", json_integer((json_int_t)s.commits));
    json_object_set_new(res, "stripes", json_integer((json_int_t)s.stripes));
    json_object_set_new(res, "buffer_segments", json_integer((json_int_t)s.buffer_segments));
    json_object_set_new(res, "ec", json_pack("{s:i, s:i}", "k", s.ec_k, "m", s.ec_m));
    json_object_set_new(res, "degraded_reads", json_integer((json_int_t)s.degraded_reads));
    json_object_set_new(res, "strips_repaired", json_integer((json_int_t)s.strips_repaired));
    json_object_set_new(res, "read_ahead_bytes", json_integer((json_int_t)s.read_ahead_bytes));
    json_t *hot = json_object();
    json_object_set_new(hot, "hits", json_integer((json_int_t)s.hot_hits));
    json_object_set_new(hot, "misses", json_integer((json_int_t)s.hot_misses));
    json_object_set_new(hot, "bytes", json_integer((json_int_t)s.hot_bytes));
    json_object_set_new(res, "hot_chunks", hot);
    json_object_set_new(res, "scrub", json_pack("{s:I, s:I, s:I}", "checked",
                                                (json_int_t)s.scrub_checked, "repaired",
                                                (json_int_t)s.scrub_repaired, "unrecoverable",
                                                (json_int_t)s.scrub_unrecoverable));
    return 0;
}

struct fsck_ctx {
    json_t *arr;
};

static void fsck_problem(void *arg, const char *where, const char *what)
{
    struct fsck_ctx *c = arg;
    if (json_array_size(c->arr) < 10000)
        json_array_append_new(c->arr, json_pack("{s:s, s:s}", "where", where, "what", what));
}

static int op_fsck(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    struct fsck_ctx c = {json_array()};
    int rc = pl_store_fsck(st, fsck_problem, NULL, &c);
    json_object_set_new(res, "problems", c.arr);
    if (rc < 0)
        return rc;
    json_object_set_new(res, "count", json_integer(rc));
    return 0;
}

static int op_gc(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    uint64_t freed = 0;
    int rc = pl_store_gc(st, &freed);
    json_object_set_new(res, "freed_bytes", json_integer((json_int_t)freed));
    return rc;
}

/* ---- devices, destage, scrub ---- */
static const char *dev_state_name(int s)
{
    return s == PL_DEV_FAILED ? "failed" : s == PL_DEV_REBUILDING ? "rebuilding" : "ok";
}

static int device_cb(void *arg, const struct pl_device_info *d)
{
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I}", "id", d->id, "role",
                          d->capacity ? "capacity" : "buffer", "path", d->path, "state",
                          dev_state_name(d->state), "strips", (json_int_t)d->strips, "bytes",
                          (json_int_t)d->bytes);
    if (d->rebuild_total) {
        json_object_set_new(o, "rebuild_done", json_integer((json_int_t)d->rebuild_done));
        json_object_set_new(o, "rebuild_total", json_integer((json_int_t)d->rebuild_total));
        json_object_set_new(o, "rebuild_bytes_per_s", json_real(d->rebuild_rate));
    }
    json_array_append_new(arg, o);
    return 0;
}

static int op_device_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    struct pl_store_stats s;
    json_t *a = json_array();
    json_object_set_new(res, "devices", a);
    int rc = pl_device_list(st, device_cb, a);
    if (!rc)
        rc = pl_store_stats(st, &s);
    if (rc)
        return rc;
    json_object_set_new(res, "layout", json_pack("{s:i, s:i}", "k", s.ec_k, "m", s.ec_m));
    json_object_set_new(res, "stripes", json_integer((json_int_t)s.stripes));
    json_object_set_new(res, "buffer_segments", json_integer((json_int_t)s.buffer_segments));
    json_object_set_new(res, "degraded_reads", json_integer((json_int_t)s.degraded_reads));
    json_object_set_new(res, "unrecoverable_reads",
                        json_integer((json_int_t)s.unrecoverable_reads));
    json_object_set_new(res, "strips_repaired", json_integer((json_int_t)s.strips_repaired));
    return 0;
}

static int dev_id_arg(json_t *args, int *ret)
{
    int64_t id = iarg(args, "id", -1);
    const char *s = sarg(args, "id");
    if (s) {
        char *end;
        id = strtol(s, &end, 10);
        if (!*s || *end)
            id = -1;
    }
    if (id < 0 || id > 65535)
        return PL_EINVAL;
    *ret = (int)id;
    return 0;
}

static int op_device_fail(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    int id, rc = dev_id_arg(args, &id);
    return rc ? rc : pl_device_fail(st, id);
}

static int op_device_add(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *p = sarg(args, "path");
    int id = 0, rc = p ? pl_device_add(st, p, &id) : PL_EINVAL;
    if (!rc)
        json_object_set_new(res, "id", json_integer(id));
    return rc;
}

static int op_device_replace(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *p = sarg(args, "path");
    int id, rc = dev_id_arg(args, &id);
    if (!rc)
        rc = p ? pl_device_replace(st, id, p) : PL_EINVAL;
    return rc; /* the server rebuilds in the background */
}

static int op_device_remove(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    int id, rc = dev_id_arg(args, &id);
    return rc ? rc : pl_device_remove(st, id, NULL, NULL);
}

static int op_flush(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    struct pl_store_stats a, b;
    int rc = pl_store_stats(st, &a);
    if (!rc)
        rc = pl_store_flush(st, NULL, NULL);
    if (!rc)
        rc = pl_store_stats(st, &b);
    if (!rc) {
        json_object_set_new(res, "destaged",
                            json_integer((json_int_t)(b.stripes > a.stripes ? b.stripes - a.stripes
                                                                            : 0)));
        json_object_set_new(res, "stripes", json_integer((json_int_t)b.stripes));
        json_object_set_new(res, "buffer_segments", json_integer((json_int_t)b.buffer_segments));
    }
    return rc;
}

static int op_scrub(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    struct pl_scrub_report r;
    int rc = pl_store_scrub(st, 0, NULL, NULL, &r);
    if (!rc) {
        json_object_set_new(res, "checked", json_integer((json_int_t)r.checked));
        json_object_set_new(res, "repaired", json_integer((json_int_t)r.repaired));
        json_object_set_new(res, "unrecoverable", json_integer((json_int_t)r.unrecoverable));
    }
    return rc;
}

/* ---- volumes ---- */
/* "10G", "512M", "64K", "1T" or bytes. */
static int size_arg(json_t *args, uint64_t *ret)
{
    const char *s = sarg(args, "size");
    if (!s)
        return PL_EINVAL;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    case 'T': case 't': shift = 40; end++; break;
    default: break;
    }
    if (end == s || *end || v > (UINT64_MAX >> shift))
        return PL_EINVAL;
    *ret = (uint64_t)v << shift;
    return 0;
}

static json_t *volume_json(const struct pl_volume_info *v)
{
    return json_pack("{s:s, s:I, s:b, s:I, s:s?, s:b}", "name", v->name, "size",
                     (json_int_t)v->size, "readonly", v->readonly, "ctime_ns",
                     (json_int_t)v->ctime, "object", v->object[0] ? v->object : NULL,
                     "missing", v->missing);
}

static int volume_cb(void *arg, const struct pl_volume_info *v)
{
    json_array_append_new(arg, volume_json(v));
    return 0;
}

static int op_volume_create(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *n = sarg(args, "name"), *obj = sarg(args, "object");
    uint64_t size = 0;
    struct pl_volume_info v;
    int rc = !n ? PL_EINVAL : obj && !sarg(args, "size") ? 0 : size_arg(args, &size);
    if (!rc)
        rc = obj ? pl_volume_link(st, n, obj, size, &v) : pl_volume_create(st, n, size, &v);
    if (!rc)
        json_object_set_new(res, "volume", volume_json(&v));
    return rc;
}

static int op_volume_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    json_t *a = json_array();
    json_object_set_new(res, "volumes", a);
    return pl_volume_list(st, volume_cb, a);
}

static int op_volume_resize(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *n = sarg(args, "name");
    uint64_t size;
    int rc = n ? size_arg(args, &size) : PL_EINVAL;
    return rc ? rc : pl_volume_resize(st, n, size);
}

static int op_volume_delete(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *n = sarg(args, "name");
    return n ? pl_volume_delete(st, n) : PL_EINVAL;
}

static int op_volume_snapshot(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *n = sarg(args, "name"), *sn = sarg(args, "snapshot");
    struct pl_volume_info v;
    int rc = n && sn ? pl_volume_snapshot(st, n, sn, &v) : PL_EINVAL;
    if (!rc)
        json_object_set_new(res, "volume", volume_json(&v));
    return rc;
}

static int op_volume_clone(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *src = sarg(args, "source"), *n = sarg(args, "name");
    struct pl_volume_info v;
    int rc = n && src ? pl_volume_clone(st, src, n, &v) : PL_EINVAL;
    if (!rc)
        json_object_set_new(res, "volume", volume_json(&v));
    return rc;
}

/* ---- NFS exports ---- */
static json_t *export_json(const struct pl_export *e)
{
    char clients[40];
    int bits = __builtin_popcount(e->mask);
    if (bits == 0)
        snprintf(clients, sizeof(clients), "*");
    else
        snprintf(clients, sizeof(clients), "%u.%u.%u.%u/%d", e->net >> 24, (e->net >> 16) & 255,
                 (e->net >> 8) & 255, e->net & 255, bits);
    static const char *const squash[] = {"none", "root", "all"};
    return json_pack("{s:s, s:s, s:b, s:s, s:I, s:I}", "path", e->path, "clients", clients,
                     "readonly", e->readonly, "squash", squash[e->squash % 3], "anon_uid",
                     (json_int_t)e->anon_uid, "anon_gid", (json_int_t)e->anon_gid);
}

static int export_cb(void *arg, const struct pl_export *e)
{
    json_array_append_new(arg, export_json(e));
    return 0;
}

static int op_export_add(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *path = sarg(args, "path"), *clients = sarg(args, "clients");
    const char *options = sarg(args, "options");
    struct pl_export e = {.anon_uid = 65534, .anon_gid = 65534, .squash = PL_SQUASH_ROOT};
    if (!path || strlen(path) >= sizeof(e.path))
        return PL_EINVAL;
    snprintf(e.path, sizeof(e.path), "%s", path);
    int rc = pl_export_clients_parse(clients ? clients : "*", &e.net, &e.mask);
    if (!rc && options)
        rc = pl_export_options_parse(options, &e);
    if (!rc)
        rc = pl_export_set(st, &e);
    if (!rc)
        json_object_set_new(res, "export", export_json(&e));
    return rc;
}

static int op_export_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    json_t *a = json_array();
    json_object_set_new(res, "exports", a);
    return pl_export_list(st, export_cb, a);
}

static int op_export_remove(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *path = sarg(args, "path"), *clients = sarg(args, "clients");
    uint32_t net, mask;
    int rc = path ? pl_export_clients_parse(clients ? clients : "*", &net, &mask) : PL_EINVAL;
    return rc ? rc : pl_export_remove(st, path, net, mask);
}

static json_t *snap_json(const struct pl_snap_info *s)
{
    return json_pack("{s:s, s:I, s:I}", "name", s->name, "epoch", (json_int_t)s->epoch,
                     "ctime_ns", (json_int_t)s->ctime);
}

static int op_snap_create(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *n = sarg(args, "name");
    struct pl_snap_info s;
    if (!n)
        return PL_EINVAL;
    int rc = pl_snap_create(st, n, &s);
    if (!rc)
        json_object_set_new(res, "snapshot", snap_json(&s));
    return rc;
}

static int snap_cb(void *arg, const struct pl_snap_info *s)
{
    json_array_append_new(arg, snap_json(s));
    return 0;
}

static int op_snap_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    json_t *a = json_array();
    json_object_set_new(res, "snapshots", a);
    return pl_snap_list(st, snap_cb, a);
}

static int op_snap_delete(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *n = sarg(args, "name");
    return n ? pl_snap_delete(st, n) : PL_EINVAL;
}

static int op_user_create(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *n = sarg(args, "name");
    return n ? pl_user_create(st, n) : PL_EINVAL;
}

static int op_user_delete(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *n = sarg(args, "name");
    return n ? pl_user_delete(st, n) : PL_EINVAL;
}

static int user_cb(void *arg, const struct pl_user_info *u)
{
    json_array_append_new(arg, json_pack("{s:s, s:I}", "name", u->name, "ctime_ns",
                                         (json_int_t)u->ctime));
    return 0;
}

static int op_user_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)args, (void)io;
    json_t *a = json_array();
    json_object_set_new(res, "users", a);
    return pl_user_list(st, user_cb, a);
}

static int op_key_create(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *u = sarg(args, "user");
    char ak[32] = "", sk[48] = "";
    if (!u)
        return PL_EINVAL;
    int rc = pl_key_create(st, u, ak, sk);
    if (!rc) {
        json_object_set_new(res, "access_key", json_string(ak));
        json_object_set_new(res, "secret_key", json_string(sk));
        json_object_set_new(res, "user", json_string(u));
    }
    return rc;
}

static int key_cb(void *arg, const struct pl_key_info *k)
{
    json_array_append_new(arg, json_pack("{s:s, s:s}", "access_key", k->access_key, "user",
                                         k->user));
    return 0;
}

static int op_key_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    json_t *a = json_array();
    json_object_set_new(res, "keys", a);
    return pl_key_list(st, sarg(args, "user"), key_cb, a);
}

static int op_key_revoke(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)res, (void)io;
    const char *k = sarg(args, "access_key");
    return k ? pl_key_revoke(st, k) : PL_EINVAL;
}

static const struct op_def op_table[] = {
    {"mb", 0, op_mb},
    {"rb", 0, op_rb},
    {"buckets", 0, op_buckets},
    {"put", OP_BODY_IN, op_put},
    {"get", OP_BODY_OUT, op_get},
    {"copy", 0, op_copy},
    {"stat", 0, op_stat},
    {"ls", 0, op_ls},
    {"rm", 0, op_rm},
    {"stats", 0, op_stats},
    {"fsck", 0, op_fsck},
    {"gc", 0, op_gc},
    {"flush", 0, op_flush},
    {"scrub", 0, op_scrub},
    {"device-list", 0, op_device_list},
    {"volume-create", 0, op_volume_create},
    {"volume-list", 0, op_volume_list},
    {"volume-resize", 0, op_volume_resize},
    {"volume-delete", 0, op_volume_delete},
    {"volume-snapshot", 0, op_volume_snapshot},
    {"volume-clone", 0, op_volume_clone},
    {"device-fail", 0, op_device_fail},
    {"device-add", 0, op_device_add},
    {"device-replace", 0, op_device_replace},
    {"device-remove", 0, op_device_remove},
    {"export-add", 0, op_export_add},
    {"export-list", 0, op_export_list},
    {"export-remove", 0, op_export_remove},
    {"snapshot-create", 0, op_snap_create},
    {"snapshot-list", 0, op_snap_list},
    {"snapshot-delete", 0, op_snap_delete},
    {"user-create", 0, op_user_create},
    {"user-list", 0, op_user_list},
    {"user-delete", 0, op_user_delete},
    {"key-create", 0, op_key_create},
    {"key-list", 0, op_key_list},
    {"key-revoke", 0, op_key_revoke},
};

static const struct op_def *op_extra[32];
static size_t n_extra;

int ops_add(const struct op_def *op)
{
    if (n_extra == PL_ARRAY_LEN(op_extra))
        return PL_ENOSPC;
    op_extra[n_extra++] = op;
    return 0;
}

size_t ops_count(void)
{
    return PL_ARRAY_LEN(op_table) + n_extra;
}

const struct op_def *ops_at(size_t i)
{
    if (i < PL_ARRAY_LEN(op_table))
        return &op_table[i];
    i -= PL_ARRAY_LEN(op_table);
    return i < n_extra ? op_extra[i] : NULL;
}

const struct op_def *ops_find(const char *name)
{
    for (size_t i = 0; i < ops_count(); i++)
        if (!strcmp(ops_at(i)->name, name))
            return ops_at(i);
    return NULL;
}

int ops_run(struct pl_store *st, const struct op_def *op, json_t *args, struct op_io *io,
            json_t **ret_res)
{
    json_t *res = json_object();
    if (!res)
        return PL_ENOMEM;
    if (!json_is_object(args)) {
        json_decref(res);
        return PL_EINVAL;
    }
    int rc = op->fn(st, args, res, io);
    if (rc < 0) {
        json_decref(res);
        return rc;
    }
    *ret_res = res;
    return 0;
}

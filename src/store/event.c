/* Element events (store.h): every change to an element under a bucket
 * queues a CloudEvents record in the mutation's own transaction, so an event
 * exists exactly when its change committed. A service (the broker) publishes
 * the queue and trims it.
 *
 * Names: an element keeps the directory and name it was last given
 * (PROP_NAME) so a change known only by id (a write, a chmod) finds its key
 * by walking up; data directories from before PROP_NAME fall back to finding
 * the entry in the parent directory. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "store/store_int.h"

#define EV_DEPTH_MAX 512
#define EV_IDLE_BATCH 256

static const char *const ev_type[EV_KIND_COUNT] = {
    [EV_PUT] = "s3:ObjectCreated:Put",
    [EV_COPY] = "s3:ObjectCreated:Copy",
    [EV_MPU] = "s3:ObjectCreated:CompleteMultipartUpload",
    [EV_CREATE] = "s3:ObjectCreated:Create",
    [EV_WRITE] = "s3:ObjectCreated:Write",
    [EV_DELETE] = "s3:ObjectRemoved:Delete",
    [EV_DELMARK] = "s3:ObjectRemoved:DeleteMarkerCreated",
    [EV_RENAME] = "s3:ObjectRenamed",
    [EV_META] = "s3:ObjectMetadata:Update",
};

/* ---- who made the change ---- */
struct actor {
    char head[16];
    char user[64];
};
static _Thread_local struct actor cur_actor;

void pl_store_actor(const char *head, const char *user)
{
    snprintf(cur_actor.head, sizeof(cur_actor.head), "%s", head ? head : "");
    snprintf(cur_actor.user, sizeof(cur_actor.user), "%s", user ? user : "");
    meta_set_tag(&cur_actor);
}

int elem_name_set(struct elem *e, const char *name)
{
    return prop_set(e, PROP_NAME, NULL, name, strlen(name));
}

static int events_on(struct meta_txn *t)
{
    struct pl_store *st = meta_ctx(t->env);
    return st && st->events;
}

/* Find the live entry of dir naming id (old data directories). */
static int name_scan(MDB_txn *txn, struct meta_env *env, uint64_t dir, uint64_t id,
                     char name[PL_NAME_MAX + 1])
{
    MDB_cursor *c = NULL;
    uint8_t k[8];
    pl_put_be64(k, dir);
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(env, META_DIRENT), &c));
    if (rc)
        return rc;
    MDB_val key = {8, k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc) {
        const uint8_t *kp = key.mv_data, *vp = val.mv_data;
        if (key.mv_size < 18 || memcmp(kp, k, 8))
            break;
        size_t nn = key.mv_size - 17;
        if (val.mv_size == 17 && pl_get_le64(vp) == id &&
            pl_get_le64(vp + 9) == PL_EPOCH_INF && nn <= PL_NAME_MAX) {
            memcpy(name, kp + 8, nn);
            name[nn] = 0;
            mdb_cursor_close(c);
            return 0;
        }
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc ? rc : PL_ENOENT;
}

/* A live name of element e and the directory holding it. */
static int elem_where(MDB_txn *txn, struct meta_env *env, const struct elem *e,
                      uint64_t *ret_dir, char name[PL_NAME_MAX + 1])
{
    struct pl_str s;
    struct dirent_rec d;
    *ret_dir = e->a.parent;
    if (prop_get(e, PROP_NAME, NULL, &s) == 0 && s.n && s.n <= PL_NAME_MAX) {
        memcpy(name, s.p, s.n);
        name[s.n] = 0;
        if (dirent_get(txn, env, e->a.parent, name, PL_VIEW_LIVE, &d) == 0 && d.id == e->a.id)
            return 0;
    }
    return name_scan(txn, env, e->a.parent, e->a.id, name);
}

/* Bucket and key of name in dir; PL_ENOENT when it is not under a bucket
 * (system paths, volumes). A directory's key ends in '/'. */
static int ev_locate(MDB_txn *txn, struct meta_env *env, uint64_t dir, const char *name,
                     int is_dir, char bucket[64], char *key)
{
    const char *comp[EV_DEPTH_MAX];
    char (*names)[PL_NAME_MAX + 1] = NULL;
    struct elem e;
    int n = 0, rc = 0;
    elem_init(&e);
    comp[n++] = name;
    uint64_t top = 0;
    while (dir != PL_ROOT_ID) {
        if (n == EV_DEPTH_MAX) {
            rc = PL_ELOOP;
            goto out;
        }
        if (!names && !(names = malloc(sizeof(*names) * EV_DEPTH_MAX))) {
            rc = PL_ENOMEM;
            goto out;
        }
        rc = elem_get(txn, env, dir, PL_VIEW_LIVE, &e);
        uint64_t up;
        if (!rc)
            rc = elem_where(txn, env, &e, &up, names[n]);
        if (rc)
            goto out;
        comp[n] = names[n];
        n++;
        top = dir;
        dir = up;
    }
    struct pl_bucket_info b;
    /* comp[n - 1] is the top directory: a bucket, or not an event's business */
    if (n < 2 || bucket_get(txn, env, comp[n - 1], &b) || b.id != top) {
        rc = PL_ENOENT;
        goto out;
    }
    snprintf(bucket, 64, "%s", comp[n - 1]);
    size_t at = 0;
    for (int i = n - 2; i >= 0; i--) {
        size_t cl = strlen(comp[i]);
        if (at + cl + 2 > PL_KEY_MAX + 1) {
            rc = PL_ENAMETOOLONG;
            goto out;
        }
        memcpy(key + at, comp[i], cl);
        at += cl;
        if (i || is_dir)
            key[at++] = '/';
    }
    key[at] = 0;
out:
    free(names);
    elem_release(&e);
    return rc;
}

static int json_str(struct pl_buf *b, const char *s)
{
    int rc = pl_buf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; !rc && *p; p++) {
        if (*p == '"' || *p == '\\')
            rc = pl_buf_addf(b, "\\%c", *p);
        else if (*p < 0x20)
            rc = pl_buf_addf(b, "\\u%04x", *p);
        else
            rc = pl_buf_add(b, p, 1);
    }
    return rc ? rc : pl_buf_add(b, "\"", 1);
}

static int ev_json(struct pl_buf *b, uint64_t seq, int kind, const char *bucket, const char *key,
                   const struct pl_attr *a, const char *from, const struct actor *who)
{
    char when[40], ver[PL_VERSION_LEN];
    int64_t now = pl_now_ns();
    time_t secs = (time_t)(now / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t wl = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof(when) - wl, ".%03dZ", (int)(now / 1000000 % 1000));
    int rc = pl_buf_addf(b, "{\"specversion\":\"1.0\",\"id\":\"%" PRIu64 "\",\"source\":", seq);
    if (!rc)
        rc = pl_buf_addf(b, "\"/plenum/buckets/");
    if (!rc)
        rc = pl_buf_addstr(b, bucket);
    if (!rc)
        rc = pl_buf_addf(b, "\",\"type\":\"%s\",\"time\":\"%s\",\"subject\":", ev_type[kind], when);
    if (!rc)
        rc = json_str(b, key);
    if (!rc)
        rc = pl_buf_addstr(b, ",\"datacontenttype\":\"application/json\",\"data\":{\"bucket\":");
    if (!rc)
        rc = json_str(b, bucket);
    if (!rc)
        rc = pl_buf_addstr(b, ",\"key\":");
    if (!rc)
        rc = json_str(b, key);
    if (!rc && a) {
        pl_version_str(a->version, ver);
        rc = pl_buf_addf(b, ",\"size\":%" PRIu64 ",\"etag\":", a->size);
        if (!rc)
            rc = json_str(b, a->etag);
        if (!rc)
            rc = pl_buf_addf(b, ",\"version\":\"%s\",\"type\":\"%s\"", ver,
                             a->type == PL_T_DIR ? "directory" :
                             a->type == PL_T_SYMLINK ? "symlink" : "file");
    }
    if (!rc && from) {
        rc = pl_buf_addstr(b, ",\"from\":");
        if (!rc)
            rc = json_str(b, from);
    }
    if (!rc)
        rc = pl_buf_addf(b, ",\"sequencer\":\"%016" PRIx64 "\",\"tenant\":\"default\",\"user\":",
                         seq);
    if (!rc)
        rc = json_str(b, who && who->user[0] ? who->user : "");
    if (!rc)
        rc = pl_buf_addstr(b, ",\"head\":");
    if (!rc)
        rc = json_str(b, who && who->head[0] ? who->head : "api");
    return rc ? rc : pl_buf_addstr(b, "}}");
}

int event_queue(struct meta_txn *t, int kind, const char *bucket, const char *key,
                const struct pl_attr *a, const char *from)
{
    if (!events_on(t))
        return 0;
    struct pl_buf b;
    char k[32];
    uint64_t seq;
    pl_buf_init(&b);
    int rc = meta_sys_add(t, "event_seq", 1);
    if (!rc)
        rc = meta_sys_get(t->txn, t->env, "event_seq", &seq);
    if (!rc)
        rc = pl_buf_add(&b, bucket, strlen(bucket) + 1);
    if (!rc)
        rc = pl_buf_add(&b, key, strlen(key) + 1);
    if (!rc)
        rc = ev_json(&b, seq, kind, bucket, key, a, from, meta_txn_tag(t));
    if (!rc) {
        snprintf(k, sizeof(k), PL_EVENT_PREFIX "%016" PRIx64, seq);
        rc = meta_put(t, META_SVC, k, strlen(k), b.data, b.len);
    }
    if (!rc)
        rc = store_note(t, PL_CHANGE_EVENT, seq, NULL);
    pl_buf_release(&b);
    return rc;
}

int event_queue_at(struct meta_txn *t, int kind, uint64_t dir, const char *name, int is_dir,
                   const struct pl_attr *a, uint64_t from_dir, const char *from_name)
{
    if (!events_on(t))
        return 0;
    char bucket[64], fbucket[64];
    char *key = malloc(2 * (PL_KEY_MAX + 2)), *from = key ? key + PL_KEY_MAX + 2 : NULL;
    if (!key)
        return PL_ENOMEM;
    int lrc = ev_locate(t->txn, t->env, dir, name, is_dir, bucket, key);
    int frc = from_name ? ev_locate(t->txn, t->env, from_dir, from_name, is_dir, fbucket, from)
                        : PL_ENOENT;
    int rc = 0;
    if ((lrc && lrc != PL_ENOENT) || (frc && frc != PL_ENOENT)) {
        /* an unnamable key (too deep) is logged, not a reason to fail the change */
        pl_log(PL_LOG_WARN, "events", "no event for a change in directory %" PRIu64 ": %s", dir,
               pl_strerror(lrc ? lrc : frc));
    } else if (from_name && (frc || lrc || strcmp(bucket, fbucket))) {
        /* a move between buckets (or in or out of one) is a delete and a create */
        if (!frc)
            rc = event_queue(t, EV_DELETE, fbucket, from, NULL, NULL);
        if (!rc && !lrc)
            rc = event_queue(t, EV_CREATE, bucket, key, a, NULL);
    } else if (!lrc) {
        rc = event_queue(t, kind, bucket, key, a, from_name ? from : NULL);
    }
    free(key);
    return rc;
}

int event_queue_elem(struct meta_txn *t, int kind, const struct elem *e)
{
    if (!events_on(t))
        return 0;
    char name[PL_NAME_MAX + 1];
    uint64_t dir;
    int rc = elem_where(t->txn, t->env, e, &dir, name);
    if (rc)
        return rc == PL_ENOENT ? 0 : rc; /* no name left: nothing to name the event by */
    return event_queue_at(t, kind, dir, name, e->a.type == PL_T_DIR, &e->a, 0, NULL);
}

/* ---- writes: one event when the writer is done ---- */
static void mark_key(char *k, size_t n, uint64_t id)
{
    snprintf(k, n, PL_EVENT_WRITE_PREFIX "%016" PRIx64, id);
}

int event_write_mark(struct meta_txn *t, const struct elem *e)
{
    if (!events_on(t))
        return 0;
    char k[32], bucket[64], name[PL_NAME_MAX + 1];
    uint8_t v[8];
    uint64_t dir;
    char *key = malloc(PL_KEY_MAX + 2);
    if (!key)
        return PL_ENOMEM;
    int rc = elem_where(t->txn, t->env, e, &dir, name);
    if (!rc)
        rc = ev_locate(t->txn, t->env, dir, name, 0, bucket, key);
    free(key);
    if (rc)
        return 0; /* not under a bucket (a topic, a volume) or nameless: no event */
    mark_key(k, sizeof(k), e->a.id);
    pl_put_le64(v, (uint64_t)pl_now_ns());
    return meta_put(t, META_SVC, k, strlen(k), v, sizeof(v));
}

static int apply_written(struct meta_txn *t, void *arg)
{
    const uint64_t *id = arg;
    char k[32];
    struct elem e;
    mark_key(k, sizeof(k), *id);
    int rc = meta_del(t, META_SVC, k, strlen(k));
    if (rc)
        return rc == PL_ENOENT ? 0 : rc; /* someone else queued it */
    elem_init(&e);
    rc = elem_get(t->txn, t->env, *id, PL_VIEW_LIVE, &e);
    if (!rc && !(e.flags & (ELEM_F_STAGING | ELEM_F_VERSION)))
        rc = event_queue_elem(t, EV_WRITE, &e);
    elem_release(&e);
    return rc == PL_ENOENT ? 0 : rc;
}

int pl_elem_written(struct pl_store *st, uint64_t id)
{
    MDB_txn *txn;
    MDB_val v;
    char k[32];
    if (!st->events)
        return 0;
    mark_key(k, sizeof(k), id);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_get(txn, st->meta, META_SVC, k, strlen(k), &v);
    meta_rtxn_end(txn);
    if (rc)
        return rc == PL_ENOENT ? 0 : rc; /* nothing written since the last event */
    return meta_submit(st->meta, apply_written, &id);
}

struct idle_scan {
    int64_t cutoff;
    uint64_t ids[EV_IDLE_BATCH];
    int n;
};

static int idle_cb(void *arg, const char *key, const void *val, size_t n)
{
    struct idle_scan *s = arg;
    const char *hex = key + strlen(PL_EVENT_WRITE_PREFIX);
    if (n == 8 && (int64_t)pl_get_le64(val) < s->cutoff && strlen(hex) == 16)
        s->ids[s->n++] = strtoull(hex, NULL, 16);
    return s->n == EV_IDLE_BATCH;
}

int pl_events_sweep(struct pl_store *st, int64_t idle_ns)
{
    struct idle_scan *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->cutoff = pl_now_ns() - idle_ns;
    int rc = pl_svc_scan(st, PL_EVENT_WRITE_PREFIX, idle_cb, s);
    for (int i = 0; !rc && i < s->n; i++)
        rc = pl_elem_written(st, s->ids[i]);
    free(s);
    return rc;
}

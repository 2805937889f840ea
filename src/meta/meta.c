#include "meta/meta.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <sys/stat.h>

static const char *const db_names[META_DB_COUNT] = {
    "sys", "elem", "dirent", "extent", "chunk", "seg",
    "bucket", "snap", "user", "key", "grave", "staging", "upload", "part", "version", "device", "stripe", "similar", "export", "svc",
};

#define META_MAX_BATCH 512

struct meta_req {
    meta_apply_fn fn;
    void *arg;
    int rc;
    int done;
    uint8_t *notes;
    size_t nlen, ncap;
    const void *tag; /* the submitting thread's meta_set_tag */
    int lazy;        /* the submitting thread's meta_set_lazy */
    struct meta_req *next;
};

struct meta_env {
    MDB_env *env;
    MDB_dbi dbi[META_DB_COUNT];
    pthread_t writer;
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* writer: queue non-empty or stopping */
    pthread_cond_t done;      /* submitters: some batch finished */
    struct meta_req *head, *tail;
    int stopping;
    struct meta_stats stats;
    void *ctx;
    meta_note_fn note_fn;
    uint64_t batch_taken, batch_done; /* batches the writer took / finished */
    int unsynced;            /* a lazy batch committed since the last full sync */
    struct timespec lazy_at; /* when the first of those committed */
};

/* A batch of lazy requests only commits without syncing LMDB's meta page
 * (MDB_NOMETASYNC): the data pages are synced first as always, so a power
 * loss can undo such a batch but never tear the tree. The next full commit
 * or meta_sync makes it durable; so does the writer after META_LAZY_S of
 * quiet, and a batch META_LAZY_S after the first unsynced one commits in
 * full, so lazy changes are durable within about that even under load. */
#define META_LAZY_S 1

static int lazy_overdue(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec - since->tv_sec > META_LAZY_S ||
           (now.tv_sec - since->tv_sec == META_LAZY_S && now.tv_nsec >= since->tv_nsec);
}

int meta_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return PL_ENOENT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return PL_ENOSPC;
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
        return PL_ENOTPLENUM;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return PL_ECORRUPT;
    default:
        return rc > 0 ? -rc : PL_EIO;
    }
}

static int batch_bucket(size_t n)
{
    int b = 0;
    while (b < 9 && ((size_t)1 << b) < n)
        b++;
    return n > 256 ? 9 : b;
}

static void run_batch(struct meta_env *e, struct meta_req *list)
{
    MDB_txn *parent = NULL;
    size_t n = 0;
    int rc = meta_err(mdb_txn_begin(e->env, NULL, 0, &parent));
    for (struct meta_req *r = list; r; r = r->next) {
        n++;
        if (rc) {
            r->rc = rc;
            continue;
        }
        struct meta_txn t = {.env = e, .req = r};
        int crc = meta_err(mdb_txn_begin(e->env, parent, 0, &t.txn));
        if (crc) {
            r->rc = crc;
            continue;
        }
        r->rc = r->fn(&t, r->arg);
        if (r->rc < 0) {
            r->nlen = 0;
            mdb_txn_abort(t.txn);
        } else {
            crc = meta_err(mdb_txn_commit(t.txn));
            if (crc)
                r->rc = crc;
        }
    }
    int lazy = 1;
    for (struct meta_req *r = list; r; r = r->next)
        lazy &= r->lazy;
    pthread_mutex_lock(&e->lock);
    if (lazy && e->unsynced && lazy_overdue(&e->lazy_at))
        lazy = 0;
    pthread_mutex_unlock(&e->lock);
    if (!rc) {
        if (lazy) /* only this thread commits, so the flag is this commit's */
            (void)mdb_env_set_flags(e->env, MDB_NOMETASYNC, 1);
        rc = meta_err(mdb_txn_commit(parent)); /* syncs: the durability point */
        if (lazy)
            (void)mdb_env_set_flags(e->env, MDB_NOMETASYNC, 0);
        if (rc) {
            pl_log(PL_LOG_ERROR, "meta", "group commit failed err=%s", pl_errname(rc));
            for (struct meta_req *r = list; r; r = r->next)
                if (r->rc >= 0)
                    r->rc = rc;
        }
    }
    pthread_mutex_lock(&e->lock);
    if (!rc) {
        if (lazy && !e->unsynced)
            clock_gettime(CLOCK_MONOTONIC, &e->lazy_at);
        e->unsynced = lazy; /* a full commit's syncs cover the lazy ones before it */
    }
    e->stats.commits++;
    e->stats.lazy_commits += (uint64_t)lazy;
    e->stats.mutations += n;
    e->stats.batch_hist[batch_bucket(n)]++;
    for (struct meta_req *r = list; r; r = r->next)
        r->done = 1;
    pthread_cond_broadcast(&e->done);
    pthread_mutex_unlock(&e->lock);
}

static void *writer_main(void *arg)
{
    struct meta_env *e = arg;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        while (!e->head && !e->stopping) {
            if (!e->unsynced) {
                pthread_cond_wait(&e->wake, &e->lock);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += META_LAZY_S;
            if (pthread_cond_timedwait(&e->wake, &e->lock, &until) == ETIMEDOUT &&
                !e->head) {
                pthread_mutex_unlock(&e->lock);
                if (meta_sync(e))
                    pl_log(PL_LOG_ERROR, "meta", "syncing the metadata failed");
                pthread_mutex_lock(&e->lock);
            }
        }
        if (!e->head && e->stopping)
            break;
        /* take up to META_MAX_BATCH requests: one txn, one sync */
        struct meta_req *list = e->head, *last = e->head;
        size_t n = 1;
        while (last->next && n < META_MAX_BATCH) {
            last = last->next;
            n++;
        }
        e->head = last->next;
        if (!e->head)
            e->tail = NULL;
        last->next = NULL;
        e->batch_taken++;
        pthread_mutex_unlock(&e->lock);
        run_batch(e, list);
        pthread_mutex_lock(&e->lock);
        e->batch_done++;
        pthread_cond_broadcast(&e->done);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int meta_open(const char *path, struct meta_env **ret_env)
{
    struct meta_env *e = calloc(1, sizeof(*e));
    MDB_txn *txn = NULL;
    int rc;
    if (!e)
        return PL_ENOMEM;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->done, NULL);
    rc = pl_mkdirs(path, 0700);
    if (rc)
        goto out;
    rc = meta_err(mdb_env_create(&e->env));
    if (rc)
        goto out;
    mdb_env_set_maxdbs(e->env, META_DB_COUNT + 4);
    mdb_env_set_maxreaders(e->env, 1022);
    /* the map is address space, not disk: the file grows as it fills */
    rc = meta_err(mdb_env_set_mapsize(e->env, (size_t)64 << 30));
    if (rc)
        goto out;
    rc = meta_err(mdb_env_open(e->env, path, MDB_NOTLS, 0600));
    if (rc)
        goto out;
    rc = meta_err(mdb_txn_begin(e->env, NULL, 0, &txn));
    if (rc)
        goto out;
    for (int i = 0; i < META_DB_COUNT; i++) {
        rc = meta_err(mdb_dbi_open(txn, db_names[i], MDB_CREATE, &e->dbi[i]));
        if (rc)
            goto out;
    }
    rc = meta_err(mdb_txn_commit(txn));
    txn = NULL;
    if (rc)
        goto out;
    if (pthread_create(&e->writer, NULL, writer_main, e)) {
        rc = PL_ENOMEM;
        goto out;
    }
    *ret_env = e;
    return 0;
out:
    if (txn)
        mdb_txn_abort(txn);
    if (e->env)
        mdb_env_close(e->env);
    free(e);
    return rc;
}

void meta_close(struct meta_env *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->writer, NULL);
    if (meta_sync(e)) /* lazy commits */
        pl_log(PL_LOG_ERROR, "meta", "syncing the metadata at close failed");
    mdb_env_close(e->env);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->done);
    free(e);
}

static _Thread_local const void *submit_tag;
static _Thread_local int submit_lazy;

void meta_set_lazy(int on)
{
    submit_lazy = on;
}

int meta_sync(struct meta_env *e)
{
    pthread_mutex_lock(&e->lock);
    int unsynced = e->unsynced;
    e->unsynced = 0; /* a lazy batch committing meanwhile sets it again */
    e->stats.syncs += (uint64_t)unsynced;
    pthread_mutex_unlock(&e->lock);
    int rc = unsynced ? meta_err(mdb_env_sync(e->env, 1)) : 0;
    if (rc) {
        pthread_mutex_lock(&e->lock);
        e->unsynced = 1;
        pthread_mutex_unlock(&e->lock);
    }
    return rc;
}

void meta_set_tag(const void *tag)
{
    submit_tag = tag;
}

const void *meta_txn_tag(const struct meta_txn *t)
{
    return t->req ? t->req->tag : NULL;
}

int meta_submit(struct meta_env *e, meta_apply_fn fn, void *arg)
{
    struct meta_req r = {.fn = fn, .arg = arg, .tag = submit_tag, .lazy = submit_lazy};
    pthread_mutex_lock(&e->lock);
    if (e->stopping) {
        pthread_mutex_unlock(&e->lock);
        return PL_ESHUTDOWN;
    }
    if (e->tail)
        e->tail->next = &r;
    else
        e->head = &r;
    e->tail = &r;
    pthread_cond_signal(&e->wake);
    while (!r.done)
        pthread_cond_wait(&e->done, &e->lock);
    pthread_mutex_unlock(&e->lock);
    if (r.rc >= 0 && r.nlen && e->note_fn)
        e->note_fn(e->ctx, r.notes, r.nlen);
    free(r.notes);
    return r.rc;
}

void meta_barrier(struct meta_env *e)
{
    pthread_mutex_lock(&e->lock);
    uint64_t want = e->batch_taken;
    while (e->batch_done < want)
        pthread_cond_wait(&e->done, &e->lock);
    pthread_mutex_unlock(&e->lock);
}

void meta_set_note_fn(struct meta_env *e, meta_note_fn fn)
{
    e->note_fn = fn;
}

int meta_note(struct meta_txn *t, const void *rec, size_t n)
{
    struct meta_req *r = t->req;
    if (!r)
        return 0;
    if (r->nlen + n > r->ncap) {
        size_t cap = PL_MAX(r->nlen + n, r->ncap * 2 + 256);
        uint8_t *p = realloc(r->notes, cap);
        if (!p)
            return PL_ENOMEM;
        r->notes = p;
        r->ncap = cap;
    }
    memcpy(r->notes + r->nlen, rec, n);
    r->nlen += n;
    return 0;
}

int meta_rtxn_begin(struct meta_env *e, MDB_txn **ret_txn)
{
    return meta_err(mdb_txn_begin(e->env, NULL, MDB_RDONLY, ret_txn));
}

void meta_rtxn_end(MDB_txn *txn)
{
    if (txn)
        mdb_txn_abort(txn);
}

void meta_set_ctx(struct meta_env *e, void *ctx)
{
    e->ctx = ctx;
}

void *meta_ctx(struct meta_env *e)
{
    return e->ctx;
}

MDB_dbi meta_dbi(struct meta_env *e, enum meta_db db)
{
    return e->dbi[db];
}

void meta_stats_get(struct meta_env *e, struct meta_stats *ret)
{
    pthread_mutex_lock(&e->lock);
    *ret = e->stats;
    pthread_mutex_unlock(&e->lock);
}

int meta_get(MDB_txn *txn, struct meta_env *e, enum meta_db db, const void *k, size_t kn,
             MDB_val *ret_val)
{
    MDB_val key = {kn, (void *)k};
    return meta_err(mdb_get(txn, e->dbi[db], &key, ret_val));
}

int meta_put(struct meta_txn *t, enum meta_db db, const void *k, size_t kn, const void *v,
             size_t vn)
{
    MDB_val key = {kn, (void *)k}, val = {vn, (void *)v};
    return meta_err(mdb_put(t->txn, t->env->dbi[db], &key, &val, 0));
}

int meta_del(struct meta_txn *t, enum meta_db db, const void *k, size_t kn)
{
    MDB_val key = {kn, (void *)k};
    return meta_err(mdb_del(t->txn, t->env->dbi[db], &key, NULL));
}

int meta_sys_get(MDB_txn *txn, struct meta_env *e, const char *name, uint64_t *ret)
{
    MDB_val v;
    int rc = meta_get(txn, e, META_SYS, name, strlen(name), &v);
    if (rc == PL_ENOENT) {
        *ret = 0;
        return 0;
    }
    if (rc)
        return rc;
    if (v.mv_size != 8)
        return PL_ECORRUPT;
    *ret = pl_get_be64(v.mv_data);
    return 0;
}

int meta_sys_put(struct meta_txn *t, const char *name, uint64_t v)
{
    uint8_t b[8];
    pl_put_be64(b, v);
    return meta_put(t, META_SYS, name, strlen(name), b, 8);
}

int meta_sys_add(struct meta_txn *t, const char *name, int64_t delta)
{
    uint64_t v;
    int rc = meta_sys_get(t->txn, t->env, name, &v);
    if (rc)
        return rc;
    return meta_sys_put(t, name, v + (uint64_t)delta);
}

int meta_walk(MDB_txn *txn, struct meta_env *env, enum meta_db db, const void *start, size_t sn,
              meta_walk_fn cb, void *arg)
{
    MDB_cursor *c;
    MDB_val k = {sn, (void *)start}, v;
    int rc = meta_err(mdb_cursor_open(txn, env->dbi[db], &c));
    if (rc)
        return rc;
    int mrc = mdb_cursor_get(c, &k, &v, sn ? MDB_SET_RANGE : MDB_FIRST);
    while (mrc == MDB_SUCCESS) {
        rc = cb(arg, &k, &v);
        if (rc)
            break;
        mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (!rc && mrc != MDB_NOTFOUND)
        rc = meta_err(mrc);
    mdb_cursor_close(c);
    return rc > 0 ? 0 : rc;
}

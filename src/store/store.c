/* Opening a data directory: layout, lock, recovery of the segment log and of
 * interrupted object writes. */
#include "store/store_int.h"

#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <openssl/crypto.h>
#include <unistd.h>

#define MARKER "PLENUM"
#define MARKER_TEXT "plenum data directory, format 1\n"

#define BUFFER_MAX 4 /* write-buffer mirrors a data directory may have */

static int dir_state(const char *dir, int *ret_exists, int *ret_empty, int *ret_marked)
{
    char p[PL_PATH_MAX];
    struct stat st;
    *ret_exists = *ret_empty = *ret_marked = 0;
    if (stat(dir, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return PL_ENOTPLENUM;
    *ret_exists = 1;
    snprintf(p, sizeof(p), "%s/" MARKER, dir);
    *ret_marked = access(p, F_OK) == 0;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    *ret_empty = 1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            *ret_empty = 0;
    closedir(d);
    return 0;
}

static int layout_create(const char *dir, int nbuf, int ncap)
{
    char p[PL_PATH_MAX];
    int rc = pl_mkdirs(dir, 0700);
    for (int i = 0; !rc && i < nbuf; i++) {
        snprintf(p, sizeof(p), "%s/buffer%d", dir, i);
        rc = pl_mkdirs(p, 0700);
    }
    if (!rc)
        rc = store_layout_capacity(dir, ncap);
    if (rc)
        return rc;
    /* the marker goes last: a directory without it is not one of ours yet */
    snprintf(p, sizeof(p), "%s/" MARKER, dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    rc = pl_write_all(fd, MARKER_TEXT, strlen(MARKER_TEXT));
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc ? rc : pl_fsync_dir(dir);
}

static int apply_root(struct meta_txn *t, void *arg)
{
    (void)arg;
    struct elem e;
    uint8_t k[16];
    MDB_val v;
    int rc = meta_get(t->txn, t->env, META_ELEM, k, key_elem(k, PL_ROOT_ID, 1), &v);
    if (rc != PL_ENOENT)
        return rc;
    elem_init(&e);
    int64_t now = pl_now_ns();
    e.a.id = PL_ROOT_ID;
    e.a.gen = 1;
    e.a.type = PL_T_DIR;
    e.a.mode = 0755;
    e.a.nlink = 2;
    e.a.parent = PL_ROOT_ID;
    e.a.atime = e.a.mtime = e.a.ctime = e.a.btime = now;
    e.birth = 1;
    rc = meta_sys_put(t, "epoch", 1);
    if (!rc)
        rc = meta_sys_put(t, "next_id", PL_ROOT_ID + 1);
    if (!rc)
        rc = meta_sys_put(t, "format", 1);
    if (!rc)
        rc = elem_put(t, &e);
    elem_release(&e);
    return rc;
}

/* Reading ahead of sequential readers runs off their path, on threads of
 * its own (jobs that wait for the disk must not hold up commits); a few
 * jobs at a time: a reader that outruns them is better left to the kernel
 * than queued behind them. */
#define AHEAD_THREADS 2
/* Decoded delta references kept in memory by default (hot.c): a volume
 * of near-copies points at about a sixth of its size in references (fio's
 * 1 GiB at 180 MiB), and each is decoded again on every miss. */
#define HOT_CACHE_BYTES (256u << 20)
#define LEADS_MAX 4
struct lead_job {
    struct pl_job job;
    struct pl_store *st;
    uint64_t seg, off, len;
};

static void lead_run(struct pl_job *j)
{
    struct lead_job *l = (struct lead_job *)j;
    if (!__atomic_load_n(&l->st->ahead_stop, __ATOMIC_RELAXED))
        data_read_ahead(l->st->data, l->seg, l->off, l->len);
    __atomic_sub_fetch(&l->st->leads, 1, __ATOMIC_RELAXED);
    free(l);
}

static void store_lead(void *arg, uint64_t seg, uint64_t off, uint64_t len)
{
    struct pl_store *st = arg;
    struct lead_job *l = NULL;
    if (__atomic_add_fetch(&st->leads, 1, __ATOMIC_RELAXED) > LEADS_MAX ||
        !(l = malloc(sizeof(*l)))) {
        __atomic_sub_fetch(&st->leads, 1, __ATOMIC_RELAXED);
        return;
    }
    *l = (struct lead_job){.job = {.fn = lead_run, .detached = 1}, .st = st, .seg = seg,
                           .off = off, .len = len};
    pl_pool_submit(st->ahead, &l->job);
}

/* Recover the segment log: forget files no committed record names (appends
 * that never got acknowledged), cut recorded ones back to their committed
 * length, and pick the next segment id. */
static int segs_recover(struct pl_store *st, const struct data_opts *dopts_in)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    uint64_t next = 1;
    struct data_store *probe = NULL;
    uint64_t *files = NULL;
    size_t nfiles = 0;
    struct data_opts o = *dopts_in;
    int rc = data_open(&o, &probe);
    if (rc)
        return rc;
    rc = data_seg_list(probe, &files, &nfiles);
    if (rc)
        goto out;
    rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        goto out;
    for (size_t i = 0; i < nfiles; i++) {
        uint8_t k[8];
        MDB_val v;
        pl_put_be64(k, files[i]);
        int r = meta_get(txn, st->meta, META_SEG, k, 8, &v);
        if (r == PL_ENOENT)
            r = data_seg_delete(probe, files[i]);
        else if (r == 0 && v.mv_size == 16)
            r = data_seg_truncate(probe, files[i], pl_get_le64(v.mv_data));
        if (r) {
            rc = r;
            goto out;
        }
        next = PL_MAX(next, files[i] + 1);
    }
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_SEG), &c));
    if (rc)
        goto out;
    MDB_val k, v;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        next = PL_MAX(next, pl_get_be64(k.mv_data) + 1);
    o.first_seg = next;
    rc = data_open(&o, &st->data);
    if (!rc)
        data_set_lead(st->data, store_lead, st);
out:
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    free(files);
    data_close(probe);
    return rc;
}

/* ---- change watchers ---- */
static _Thread_local const void *cur_origin;

void pl_store_origin(const void *tag)
{
    cur_origin = tag;
}

void pl_store_lazy(int lazy)
{
    meta_set_lazy(lazy);
}

int pl_store_sync(struct pl_store *st)
{
    return meta_sync(st->meta);
}

/* Note layout: kind(1) id(8) name length(2) name. */
int store_note(struct meta_txn *t, int kind, uint64_t id, const char *name)
{
    struct pl_store *st = meta_ctx(t->env);
    if (!st || !__atomic_load_n(&st->nwatchers, __ATOMIC_RELAXED))
        return 0;
    uint8_t rec[11 + PL_NAME_MAX + 1];
    size_t nl = name ? strnlen(name, PL_NAME_MAX) : 0;
    rec[0] = (uint8_t)kind;
    pl_put_le64(rec + 1, id);
    rec[9] = (uint8_t)nl;
    rec[10] = (uint8_t)(nl >> 8);
    memcpy(rec + 11, name ? name : "", nl);
    return meta_note(t, rec, 11 + nl);
}

static void watch_deliver(void *ctx, const uint8_t *p, size_t n)
{
    struct pl_store *st = ctx;
    char name[PL_NAME_MAX + 1];
    pthread_mutex_lock(&st->watch_lock);
    for (size_t i = 0; i + 11 <= n;) {
        size_t nl = p[i + 9] | (size_t)p[i + 10] << 8;
        if (i + 11 + nl > n)
            break;
        memcpy(name, p + i + 11, nl);
        name[nl] = 0;
        for (int w = 0; w < st->nwatchers; w++)
            st->watchers[w].fn(st->watchers[w].arg, cur_origin, p[i], pl_get_le64(p + i + 1),
                               name);
        i += 11 + nl;
    }
    pthread_mutex_unlock(&st->watch_lock);
}

int pl_store_watch(struct pl_store *st, pl_watch_fn fn, void *arg)
{
    int rc = PL_ENOSPC;
    pthread_mutex_lock(&st->watch_lock);
    if (st->nwatchers < PL_WATCHERS) {
        st->watchers[st->nwatchers] = (struct watcher){fn, arg};
        __atomic_store_n(&st->nwatchers, st->nwatchers + 1, __ATOMIC_RELAXED);
        rc = 0;
    }
    pthread_mutex_unlock(&st->watch_lock);
    return rc;
}

void pl_store_unwatch(struct pl_store *st, pl_watch_fn fn, void *arg)
{
    pthread_mutex_lock(&st->watch_lock);
    for (int w = 0; w < st->nwatchers; w++)
        if (st->watchers[w].fn == fn && st->watchers[w].arg == arg) {
            st->watchers[w] = st->watchers[st->nwatchers - 1];
            __atomic_store_n(&st->nwatchers, st->nwatchers - 1, __ATOMIC_RELAXED);
            break;
        }
    pthread_mutex_unlock(&st->watch_lock);
}

int pl_store_cache_add(struct pl_store *st, pl_cache_flush_fn fn, void *arg)
{
    int rc = PL_ENOSPC;
    pthread_rwlock_wrlock(&st->cache_lock);
    if (st->ncaches < PL_WRITE_CACHES) {
        st->caches[st->ncaches++] = (struct write_cache){fn, arg};
        rc = 0;
    }
    pthread_rwlock_unlock(&st->cache_lock);
    return rc;
}

void pl_store_cache_remove(struct pl_store *st, pl_cache_flush_fn fn, void *arg)
{
    pthread_rwlock_wrlock(&st->cache_lock); /* waits for calls under way */
    for (int i = 0; i < st->ncaches; i++)
        if (st->caches[i].fn == fn && st->caches[i].arg == arg) {
            st->caches[i] = st->caches[--st->ncaches];
            break;
        }
    pthread_rwlock_unlock(&st->cache_lock);
}

int store_caches_flush(struct pl_store *st, uint64_t id)
{
    int rc = 0;
    pthread_rwlock_rdlock(&st->cache_lock);
    for (int i = 0; i < st->ncaches && !rc; i++)
        rc = st->caches[i].fn(st->caches[i].arg, id);
    pthread_rwlock_unlock(&st->cache_lock);
    return rc;
}

static size_t hot_cap(const struct pl_store_opts *opts)
{
    if (!opts || !opts->hot_cache)
        return HOT_CACHE_BYTES;
    return opts->hot_cache == PL_HOT_CACHE_NONE ? 0 : (size_t)opts->hot_cache;
}

int pl_store_open(const char *dir, const struct pl_store_opts *opts, struct pl_store **ret)
{
    struct pl_store_opts def = {0};
    struct pl_store *st = NULL;
    char p[PL_PATH_MAX], bufs[BUFFER_MAX][PL_PATH_MAX];
    int exists, empty, marked, rc;
    if (!opts) {
        def.zstd_level = -1;
        opts = &def;
    }
    if (strlen(dir) > PL_PATH_MAX - 64)
        return PL_ENAMETOOLONG;
    rc = dir_state(dir, &exists, &empty, &marked);
    if (rc)
        return rc;
    if (!marked) {
        if (exists && !empty)
            return PL_ENOTPLENUM;
        if (!opts->create)
            return PL_ENOENT;
        int k = opts->ec_k ? opts->ec_k : 4, m = opts->ec_m ? opts->ec_m : 2;
        int nb = opts->buffer_copies ? opts->buffer_copies : 2;
        if (k < 1 || k > 64 || m < 1 || m > 4 || nb < 2 || nb > 3)
            return PL_EINVAL;
        rc = layout_create(dir, nb, k + m);
        if (rc)
            return rc;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return PL_ENOMEM;
    st->lock_fd = -1;
    pl_gate_init(&st->purge);
    pthread_mutex_init(&st->gc_lock, NULL);
    pthread_mutex_init(&st->key_lock, NULL);
    pthread_mutex_init(&st->pin_lock, NULL);
    pthread_mutex_init(&st->dev_lock, NULL);
    pthread_mutex_init(&st->watch_lock, NULL);
    pthread_rwlock_init(&st->cache_lock, NULL);
    st->dir = strdup(dir);
    if (!st->dir || pl_pool_new(4, &st->pool) || pl_pool_new(AHEAD_THREADS, &st->ahead) ||
        hot_new(hot_cap(opts), &st->hot)) {
        rc = PL_ENOMEM;
        goto fail;
    }
    snprintf(p, sizeof(p), "%s/plenum.lock", dir);
    st->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->lock_fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? PL_ELOCKED : -errno;
        goto fail;
    }
    rc = data_cdc_init(&st->cdc, opts->cdc_min ? opts->cdc_min : 16 * 1024,
                       opts->cdc_avg ? opts->cdc_avg : 64 * 1024,
                       opts->cdc_max ? opts->cdc_max : 256 * 1024);
    if (rc)
        goto fail;
    snprintf(p, sizeof(p), "%s/meta", dir);
    rc = meta_open(p, &st->meta);
    if (rc)
        goto fail;
    st->events = !opts->events_off;
    meta_set_ctx(st->meta, st);
    meta_set_note_fn(st->meta, watch_deliver);
    rc = meta_submit(st->meta, apply_root, NULL);
    if (rc)
        goto fail;
    /* the buffer mirrors the layout has: buffer0, buffer1, ... */
    const char *mirrors[BUFFER_MAX];
    int nbuf = 0;
    for (; nbuf < BUFFER_MAX; nbuf++) {
        struct stat sb;
        snprintf(bufs[nbuf], sizeof(bufs[nbuf]), "%s/buffer%d", dir, nbuf);
        if (stat(bufs[nbuf], &sb) < 0 || !S_ISDIR(sb.st_mode))
            break;
        mirrors[nbuf] = bufs[nbuf];
    }
    if (nbuf < 1) {
        rc = PL_ENOTPLENUM; /* a data directory without its write buffer */
        goto fail;
    }
    st->nbuf = nbuf;
    struct data_opts dopts = {
        .mirrors = mirrors,
        .nmirrors = nbuf,
        .seg_max = opts->seg_max,
        .zstd_level = opts->zstd_level < 0 ? 1 : opts->zstd_level,
    };
    rc = segs_recover(st, &dopts);
    if (rc)
        goto fail;
    rc = store_staging_cleanup(st);
    if (!rc)
        rc = store_devices_open(st, opts);
    if (rc)
        goto fail;
    *ret = st;
    return 0;
fail:
    pl_store_close(st);
    return rc;
}

void pl_store_close(struct pl_store *st)
{
    if (!st)
        return;
    if (st->meta && st->data)
        store_devices_close(st);
    pl_pool_free(st->pool); /* no writer job may outlive the metadata */
    st->pool = NULL;
    __atomic_store_n(&st->ahead_stop, 1, __ATOMIC_RELAXED);
    pl_pool_free(st->ahead); /* nor a read-ahead the data store */
    st->ahead = NULL;
    meta_close(st->meta);
    data_close(st->data);
    hot_free(st->hot);
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the flock */
    pl_gate_destroy(&st->purge);
    pthread_mutex_destroy(&st->gc_lock);
    pthread_mutex_destroy(&st->key_lock);
    pthread_mutex_destroy(&st->pin_lock);
    pthread_mutex_destroy(&st->dev_lock);
    pthread_mutex_destroy(&st->watch_lock);
    pthread_rwlock_destroy(&st->cache_lock);
    for (int i = 0; i < 256; i++)
        for (struct pin *p = st->pins[i], *n; p; p = n) {
            n = p->next;
            free(p); /* orphans left in the staging table are dropped at next open */
        }
    OPENSSL_cleanse(st->master, sizeof(st->master));
    free(st->dir);
    free(st);
}

const char *pl_store_dir(const struct pl_store *st)
{
    return st->dir;
}

int store_staging_cleanup(struct pl_store *st)
{
    for (;;) {
        MDB_txn *txn;
        MDB_cursor *c;
        MDB_val k, v;
        int rc = meta_rtxn_begin(st->meta, &txn);
        if (rc)
            return rc;
        rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_STAGING), &c));
        if (rc) {
            meta_rtxn_end(txn);
            return rc;
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
        uint64_t id = (rc == 0 && k.mv_size == 8) ? pl_get_be64(k.mv_data) : 0;
        mdb_cursor_close(c);
        meta_rtxn_end(txn);
        if (rc == PL_ENOENT)
            return 0;
        if (rc)
            return rc;
        rc = store_elem_drop(st, id);
        if (rc)
            return rc;
    }
}

int pl_store_stats(struct pl_store *st, struct pl_store_stats *ret)
{
    MDB_txn *txn;
    struct meta_stats ms;
    struct statvfs vfs;
    memset(ret, 0, sizeof(*ret));
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "logical", &ret->logical_bytes);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "chunk_raw", &ret->unique_bytes);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "chunk_stored", &ret->stored_bytes);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "elements", &ret->elements);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "chunks", &ret->chunks);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "segments", &ret->segments);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "delta_chunks", &ret->delta_chunks);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "delta_raw", &ret->delta_raw);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "delta_stored", &ret->delta_stored);
    if (!rc)
        rc = meta_sys_get(txn, st->meta, "staged_raw", &ret->staged_bytes);
    meta_rtxn_end(txn);
    if (!rc)
        ret->delta_saved = delta_saved_estimate(ret->unique_bytes, ret->stored_bytes,
                                                ret->delta_raw, ret->delta_stored);
    if (rc)
        return rc;
    ret->physical_bytes = data_disk_bytes(st->data);
    ret->ec_k = st->ec_k;
    ret->ec_m = st->ec_m;
    struct data_counters dc;
    data_counters_get(st->data, &dc);
    ret->degraded_reads = dc.degraded_reads;
    ret->unrecoverable_reads = dc.unrecoverable;
    ret->strips_repaired = dc.strips_repaired;
    ret->read_ahead_bytes = dc.read_ahead_bytes;
    hot_counts(st->hot, &ret->hot_hits, &ret->hot_misses, &ret->hot_bytes);
    pthread_mutex_lock(&st->dev_lock);
    ret->scrub_checked = st->scrub_total.checked;
    ret->scrub_repaired = st->scrub_total.repaired;
    ret->scrub_unrecoverable = st->scrub_total.unrecoverable;
    pthread_mutex_unlock(&st->dev_lock);
    rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    MDB_stat ms2;
    if (mdb_stat(txn, meta_dbi(st->meta, META_STRIPE), &ms2) == 0)
        ret->stripes = ms2.ms_entries;
    meta_rtxn_end(txn);
    ret->buffer_segments = ret->segments > ret->stripes ? ret->segments - ret->stripes : 0;
    if (statvfs(st->dir, &vfs) == 0)
        ret->free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    meta_stats_get(st->meta, &ms);
    ret->commits = ms.commits;
    ret->mutations = ms.mutations;
    memcpy(ret->batch_hist, ms.batch_hist, sizeof(ret->batch_hist));
    return 0;
}

/* ---- pins ---- */
void pl_elem_pin(struct pl_store *st, uint64_t id)
{
    pthread_mutex_lock(&st->pin_lock);
    struct pin **b = &st->pins[id % 256], *p = *b;
    while (p && p->id != id)
        p = p->next;
    if (!p && (p = calloc(1, sizeof(*p)))) {
        p->id = id;
        p->next = *b;
        *b = p;
    }
    if (p)
        p->count++;
    pthread_mutex_unlock(&st->pin_lock);
}

int pl_elem_open(struct pl_store *st, uint64_t id, struct pl_attr *ret)
{
    pl_elem_pin(st, id);
    /* a delete applied before the pin may still be committing: once it is,
     * getattr sees it; one applied after the pin saw the pin and kept the
     * element as an orphan */
    meta_barrier(st->meta);
    int rc = pl_elem_getattr(st, id, PL_VIEW_LIVE, ret);
    /* a file with no name left is an orphan on its way out: its last pin
     * already went, and a drop is queued that this pin would not stop */
    if (!rc && ret->nlink == 0 && ret->type == PL_T_FILE)
        rc = PL_ENOENT;
    if (rc)
        pl_elem_unpin(st, id);
    return rc;
}

struct drop_job {
    struct pl_job job;
    struct pl_store *st;
    uint64_t id;
};

static void drop_run(struct pl_job *j)
{
    struct drop_job *d = (struct drop_job *)j;
    if (store_elem_drop(d->st, d->id))
        pl_log(PL_LOG_DEBUG, "store", "orphan id=%llu kept until next open",
               (unsigned long long)d->id);
    free(d);
}

void pl_elem_unpin(struct pl_store *st, uint64_t id)
{
    int orphan = 0;
    pthread_mutex_lock(&st->pin_lock);
    struct pin **pp = &st->pins[id % 256];
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    if (*pp && --(*pp)->count == 0) {
        struct pin *p = *pp;
        *pp = p->next;
        orphan = p->orphan;
        free(p);
    }
    pthread_mutex_unlock(&st->pin_lock);
    if (!orphan)
        return;
    /* callers may sit on an event loop: drop it on the pool, not here */
    struct drop_job *d = calloc(1, sizeof(*d));
    if (!d)
        return; /* it stays in the staging table until the next open */
    d->job.fn = drop_run;
    d->job.detached = 1;
    d->st = st;
    d->id = id;
    pl_pool_submit(st->pool, &d->job);
}

int store_pin_orphan(struct pl_store *st, uint64_t id)
{
    int pinned = 0;
    if (!st)
        return 0;
    pthread_mutex_lock(&st->pin_lock);
    for (struct pin *p = st->pins[id % 256]; p; p = p->next)
        if (p->id == id) {
            p->orphan = 1;
            pinned = 1;
        }
    pthread_mutex_unlock(&st->pin_lock);
    return pinned;
}

/* Capacity devices and what keeps data on them safe: destage of sealed
 * buffer segments into erasure-coded stripes, repair of damaged strips,
 * rebuild onto replaced devices, scrub, and the background thread that runs
 * them.
 *
 * Device record (META_DEVICE): id BE16 -> state(1) path. A path relative to
 * the data directory (the default layout's "capacity3") stays valid when the
 * directory is opened from elsewhere. Buffer devices are the mirrors of the
 * write buffer in the layout (ids 0 up to 3); capacity devices start at id 4.
 *
 * A segment is destaged when its stripe is durable on k+m devices and its
 * META_STRIPE record is committed: from then on reads go to the stripe and
 * the buffer copies are deleted. A crash before the commit leaves strip files
 * no record names (swept at the next open); after it, leftover buffer copies
 * (deleted at the next open). */
#include "store/store_int.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEV_FIRST_CAP 4 /* ids below are the buffer mirrors */
#define DEFAULT_SCRUB_RATE (64ull << 20)
#define DEFAULT_BUFFER_MAX (1ull << 30)
#define DEFAULT_SCRUB_INTERVAL (24ull * 3600)

struct devrec {
    int id;
    int state;
    char path[PL_PATH_MAX]; /* as recorded */
};

static int dev_decode(const MDB_val *k, const MDB_val *v, struct devrec *d)
{
    if (k->mv_size != 2 || v->mv_size < 2 || v->mv_size - 1 >= PL_PATH_MAX)
        return PL_ECORRUPT;
    d->id = ((const uint8_t *)k->mv_data)[0] << 8 | ((const uint8_t *)k->mv_data)[1];
    d->state = ((const uint8_t *)v->mv_data)[0];
    memcpy(d->path, (const uint8_t *)v->mv_data + 1, v->mv_size - 1);
    d->path[v->mv_size - 1] = 0;
    return 0;
}

static int dev_put(struct meta_txn *t, const struct devrec *d)
{
    uint8_t k[2] = {(uint8_t)(d->id >> 8), (uint8_t)d->id};
    size_t pl = strlen(d->path);
    uint8_t *v = malloc(pl + 1);
    if (!v)
        return PL_ENOMEM;
    v[0] = (uint8_t)d->state;
    memcpy(v + 1, d->path, pl);
    int rc = meta_put(t, META_DEVICE, k, 2, v, pl + 1);
    free(v);
    return rc;
}

/* The directory a recorded path names. */
static void dev_abs(const struct pl_store *st, const char *rec, char *out, size_t n)
{
    if (rec[0] == '/')
        snprintf(out, n, "%s", rec);
    else
        snprintf(out, n, "%s/%s", st->dir, rec);
}

struct dev_list {
    struct devrec *d;
    int n;
};

static int dev_list_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct dev_list *l = arg;
    if (l->n == DATA_MAX_DEVS)
        return PL_ERANGE;
    return dev_decode(k, v, &l->d[l->n++]);
}

/* Every capacity device record; l->d malloc'd. */
static int devs_load(struct pl_store *st, struct dev_list *l)
{
    MDB_txn *txn;
    l->n = 0;
    l->d = calloc(DATA_MAX_DEVS, sizeof(*l->d));
    if (!l->d)
        return PL_ENOMEM;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (!rc) {
        rc = meta_walk(txn, st->meta, META_DEVICE, NULL, 0, dev_list_cb, l);
        meta_rtxn_end(txn);
    }
    if (rc) {
        free(l->d);
        l->d = NULL;
    }
    return rc;
}

struct dev_set_args {
    struct devrec d;
    int remove;
};

static int apply_dev_set(struct meta_txn *t, void *arg)
{
    struct dev_set_args *a = arg;
    if (!a->remove)
        return dev_put(t, &a->d);
    uint8_t k[2] = {(uint8_t)(a->d.id >> 8), (uint8_t)a->d.id};
    return meta_del(t, META_DEVICE, k, 2);
}

static int dev_record(struct pl_store *st, int id, int state, const char *path)
{
    struct dev_set_args a = {{id, state, ""}, 0};
    snprintf(a.d.path, sizeof(a.d.path), "%s", path);
    return meta_submit(st->meta, apply_dev_set, &a);
}

/* ---- stripes in the metadata ---- */
struct stripe_ent {
    uint64_t seg;
    struct data_geom g;
};

struct stripe_list {
    struct stripe_ent *e;
    size_t n, cap;
};

static int stripe_list_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct stripe_list *l = arg;
    if (k->mv_size != 8)
        return PL_ECORRUPT;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct stripe_ent *e = realloc(l->e, cap * sizeof(*e));
        if (!e)
            return PL_ENOMEM;
        l->e = e;
        l->cap = cap;
    }
    struct stripe_ent *e = &l->e[l->n];
    e->seg = pl_get_be64(k->mv_data);
    int rc = data_geom_decode(v->mv_data, v->mv_size, &e->g);
    if (!rc)
        l->n++;
    return rc;
}

static int stripes_load(struct pl_store *st, struct stripe_list *l)
{
    MDB_txn *txn;
    memset(l, 0, sizeof(*l));
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (!rc) {
        rc = meta_walk(txn, st->meta, META_STRIPE, NULL, 0, stripe_list_cb, l);
        meta_rtxn_end(txn);
    }
    if (rc) {
        free(l->e);
        memset(l, 0, sizeof(*l));
    }
    return rc;
}

struct stripe_put {
    uint64_t seg;
    const struct data_geom *g;
};

static int apply_stripe_put(struct meta_txn *t, void *arg)
{
    struct stripe_put *a = arg;
    uint8_t k[8], v[DATA_GEOM_MAX];
    MDB_val cur;
    pl_put_be64(k, a->seg);
    int rc = meta_get(t->txn, t->env, META_SEG, k, 8, &cur);
    if (rc)
        return rc == PL_ENOENT ? PL_ESHUTDOWN : rc; /* compacted meanwhile */
    return meta_put(t, META_STRIPE, k, 8, v, data_geom_encode(a->g, v));
}

/* ---- open ---- */
int store_layout_capacity(const char *dir, int n)
{
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        char p[PL_PATH_MAX];
        snprintf(p, sizeof(p), "%s/capacity%d/stripes", dir, i);
        rc = pl_mkdirs(p, 0700);
    }
    return rc;
}

struct ec_init {
    struct pl_store *st;
    int k, m;
};

/* A data directory without devices gets its layout's capacity directories
 * and the stripe width it was made with (older ones: 4+2). */
static int apply_ec_init(struct meta_txn *t, void *arg)
{
    struct ec_init *a = arg;
    uint64_t k, m;
    int rc = meta_sys_get(t->txn, t->env, "ec_k", &k);
    if (!rc)
        rc = meta_sys_get(t->txn, t->env, "ec_m", &m);
    if (rc || k)
        return rc;
    rc = meta_sys_put(t, "ec_k", (uint64_t)a->k);
    if (!rc)
        rc = meta_sys_put(t, "ec_m", (uint64_t)a->m);
    for (int i = 0; !rc && i < DATA_MAX_DEVS - DEV_FIRST_CAP; i++) {
        char rel[64], abs[PL_PATH_MAX];
        struct stat sb;
        snprintf(rel, sizeof(rel), "capacity%d", i);
        dev_abs(a->st, rel, abs, sizeof(abs));
        if (stat(abs, &sb) < 0 || !S_ISDIR(sb.st_mode))
            break;
        char sd[PL_PATH_MAX + 16];
        snprintf(sd, sizeof(sd), "%s/stripes", abs);
        rc = pl_mkdirs(sd, 0700);
        if (rc)
            break;
        struct devrec d = {DEV_FIRST_CAP + i, PL_DEV_OK, ""};
        snprintf(d.path, sizeof(d.path), "%s", rel);
        rc = dev_put(t, &d);
    }
    return rc;
}

static int known_stripe(void *arg, uint64_t seg)
{
    struct pl_store *st = arg;
    MDB_txn *txn;
    MDB_val v;
    uint8_t k[8];
    pl_put_be64(k, seg);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_get(txn, st->meta, META_STRIPE, k, 8, &v);
    meta_rtxn_end(txn);
    return rc == 0 ? 1 : rc == PL_ENOENT ? 0 : rc;
}

static void *maint_main(void *arg);

int store_devices_open(struct pl_store *st, const struct pl_store_opts *opts)
{
    struct ec_init ei = {st, opts->ec_k ? opts->ec_k : 4, opts->ec_m ? opts->ec_m : 2};
    struct dev_list dl = {0};
    struct stripe_list sl = {0};
    uint64_t k = 0, m = 0;
    MDB_txn *txn;
    st->rb.dev = -1;
    st->gc_live_pct = opts->gc_live_pct > 0 && opts->gc_live_pct < 100 ? opts->gc_live_pct : 50;
    st->similarity = !opts->similarity_off;
    st->scrub_interval_s = opts->scrub_interval_s ? opts->scrub_interval_s : DEFAULT_SCRUB_INTERVAL;
    st->scrub_rate = opts->scrub_rate ? opts->scrub_rate : DEFAULT_SCRUB_RATE;
    int rc = meta_submit(st->meta, apply_ec_init, &ei);
    if (!rc)
        rc = meta_rtxn_begin(st->meta, &txn);
    if (!rc) {
        rc = meta_sys_get(txn, st->meta, "ec_k", &k);
        if (!rc)
            rc = meta_sys_get(txn, st->meta, "ec_m", &m);
        meta_rtxn_end(txn);
    }
    if (!rc && (k < 1 || k > 64 || m < 1 || m > 4))
        rc = PL_ECORRUPT;
    if (rc)
        return rc;
    st->ec_k = (int)k;
    st->ec_m = (int)m;
    rc = devs_load(st, &dl);
    for (int i = 0; !rc && i < dl.n; i++) {
        char abs[PL_PATH_MAX];
        dev_abs(st, dl.d[i].path, abs, sizeof(abs));
        rc = data_dev_set(st->data, (uint16_t)dl.d[i].id, abs,
                          dl.d[i].state == PL_DEV_FAILED    ? DATA_DEV_FAILED
                          : dl.d[i].state == PL_DEV_REBUILDING ? DATA_DEV_REBUILDING
                                                              : DATA_DEV_OK);
        if (rc == PL_EACCES || rc == PL_ENOENT || rc == PL_ENOTDIR || rc == PL_EROFS) {
            /* the device is not usable: serve from parity and say so */
            pl_log(PL_LOG_ERROR, "store",
                   "capacity device %d (%s) is unusable (%s); marking it failed — replace it "
                   "with 'plenum device replace %d PATH'",
                   dl.d[i].id, abs, pl_strerror(rc), dl.d[i].id);
            rc = data_dev_set(st->data, (uint16_t)dl.d[i].id, abs, DATA_DEV_FAILED);
            if (!rc)
                rc = dev_record(st, dl.d[i].id, PL_DEV_FAILED, dl.d[i].path);
        }
    }
    free(dl.d);
    if (!rc && data_devs_probe(st->data) > 0) {
        /* missing directories: remember they failed */
        rc = devs_load(st, &dl);
        for (int i = 0; !rc && i < dl.n; i++)
            if (dl.d[i].state != PL_DEV_FAILED &&
                data_dev_state(st->data, (uint16_t)dl.d[i].id) == DATA_DEV_FAILED)
                rc = dev_record(st, dl.d[i].id, PL_DEV_FAILED, dl.d[i].path);
        free(dl.d);
    }
    if (!rc)
        rc = stripes_load(st, &sl);
    for (size_t i = 0; !rc && i < sl.n; i++)
        rc = data_stripe_attach(st->data, sl.e[i].seg, &sl.e[i].g);
    free(sl.e);
    if (!rc)
        rc = data_stripes_sweep(st->data, known_stripe, st);
    st->buffer_max = opts->buffer_max ? opts->buffer_max : DEFAULT_BUFFER_MAX;
    if (!rc && opts->background) {
        pthread_mutex_init(&st->maint_lock, NULL);
        pthread_cond_init(&st->maint_cond, NULL);
        pthread_cond_init(&st->drain_cond, NULL);
        if (pthread_create(&st->maint, NULL, maint_main, st) == 0)
            st->maint_running = 1;
        else
            rc = PL_ENOMEM;
    }
    return rc;
}

void store_devices_close(struct pl_store *st)
{
    if (!st->maint_running)
        return;
    pthread_mutex_lock(&st->maint_lock);
    st->maint_stop = 1;
    pthread_cond_signal(&st->maint_cond);
    pthread_cond_broadcast(&st->drain_cond);
    pthread_mutex_unlock(&st->maint_lock);
    pthread_join(st->maint, NULL);
    pthread_mutex_destroy(&st->maint_lock);
    pthread_cond_destroy(&st->maint_cond);
    pthread_cond_destroy(&st->drain_cond);
    st->maint_running = 0;
}

/* ---- destage ---- */
/* Working capacity devices, ascending ids. */
static int devs_working(struct pl_store *st, uint16_t *ids, int *n)
{
    struct dev_list dl;
    int rc = devs_load(st, &dl);
    *n = 0;
    for (int i = 0; !rc && i < dl.n; i++)
        if (data_dev_state(st->data, (uint16_t)dl.d[i].id) == DATA_DEV_OK)
            ids[(*n)++] = (uint16_t)dl.d[i].id;
    free(dl.d);
    return rc;
}

struct seg_cand {
    uint64_t seg, used;
};

struct cand_list {
    struct pl_store *st;
    MDB_txn *txn;
    uint64_t active;
    struct seg_cand *c;
    size_t n, cap;
};

static int cand_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct cand_list *l = arg;
    MDB_val sv;
    if (k->mv_size != 8 || v->mv_size != 16)
        return PL_ECORRUPT;
    uint64_t seg = pl_get_be64(k->mv_data), used = pl_get_le64(v->mv_data);
    if (seg == l->active || used == 0)
        return 0;
    int rc = meta_get(l->txn, l->st->meta, META_STRIPE, k->mv_data, 8, &sv);
    if (rc == 0)
        return 0; /* already on a stripe */
    if (rc != PL_ENOENT)
        return rc;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct seg_cand *c = realloc(l->c, cap * sizeof(*c));
        if (!c)
            return PL_ENOMEM;
        l->c = c;
        l->cap = cap;
    }
    l->c[l->n++] = (struct seg_cand){seg, used};
    return 0;
}

/* Buffer segments with committed data: sealed ones, and the active one too
 * when asked; l->c malloc'd. */
static int buffer_segs(struct pl_store *st, struct cand_list *l, int with_active)
{
    memset(l, 0, sizeof(*l));
    l->st = st;
    l->active = with_active ? 0 : data_active_seg(st->data);
    int rc = meta_rtxn_begin(st->meta, &l->txn);
    if (!rc) {
        rc = meta_walk(l->txn, st->meta, META_SEG, NULL, 0, cand_cb, l);
        meta_rtxn_end(l->txn);
    }
    if (rc) {
        free(l->c);
        l->c = NULL;
    }
    return rc;
}

/* Deleting a destaged buffer segment frees its cached pages (tens of
 * milliseconds for a full one): a thread does it while the next segment is
 * encoded. Safe at any time after the commit: leftovers are removed at open. */
struct reaper {
    pthread_t thr;
    struct pl_store *st;
    uint64_t seg;
    int running;
};

static void *reaper_main(void *arg)
{
    struct reaper *r = arg;
    int rc = data_seg_delete(r->st->data, r->seg);
    if (rc)
        pl_log(PL_LOG_WARN, "store", "removing destaged buffer segment %016" PRIx64 ": %s",
               r->seg, pl_strerror(rc));
    return NULL;
}

static void reaper_wait(struct reaper *r)
{
    if (r->running)
        pthread_join(r->thr, NULL);
    r->running = 0;
}

static void reaper_start(struct reaper *r, struct pl_store *st, uint64_t seg)
{
    reaper_wait(r);
    r->st = st;
    r->seg = seg;
    r->running = pthread_create(&r->thr, NULL, reaper_main, r) == 0;
    if (!r->running)
        reaper_main(r);
}

static int destage_one(struct pl_store *st, uint64_t seg, uint64_t used, struct reaper *r)
{
    uint16_t ids[DATA_MAX_DEVS], devs[64 + 4];
    int n, w = st->ec_k + st->ec_m;
    int rc = devs_working(st, ids, &n);
    if (rc)
        return rc;
    if (n < w) {
        pl_log(PL_LOG_WARN, "store",
               "only %d working capacity devices for %d+%d stripes: data stays in the "
               "mirrored buffer; add or replace devices ('plenum device add PATH')",
               n, st->ec_k, st->ec_m);
        return PL_ENODEVS;
    }
    /* rotate so stripes spread over all devices; no device twice in one */
    for (int i = 0; i < w; i++)
        devs[i] = ids[(seg + (uint64_t)i) % (uint64_t)n];
    int done;
    rc = store_destage_encode(st, seg, used, devs, &done);
    if (!rc && done)
        reaper_start(r, st, seg);
    if (rc || done)
        return rc;
    struct data_geom g;
    rc = data_stripe_build(st->data, seg, used, st->ec_k, st->ec_m, devs, &g);
    struct stripe_put sp = {seg, &g};
    if (!rc)
        rc = meta_submit(st->meta, apply_stripe_put, &sp);
    if (!rc)
        rc = data_stripe_attach(st->data, seg, &g);
    else if (data_stripes_sweep(st->data, known_stripe, st)) /* drop what was written */
        pl_log(PL_LOG_WARN, "store", "leftover strips of segment %016" PRIx64
               " are removed at the next open", seg);
    return rc;
}

/* Destage sealed buffer segments (sealing the active one first when seal). */
static int destage(struct pl_store *st, int seal, pl_progress_fn progress, void *arg)
{
    struct cand_list l = {0};
    struct reaper r = {0};
    int rc = 0;
    if (!seal) {
        /* the background pass: nothing sealed, nothing to do (and no barrier
         * that would make writers wait) */
        rc = buffer_segs(st, &l, 0);
        size_t n = l.n;
        free(l.c);
        memset(&l, 0, sizeof(l));
        if (rc || n == 0)
            return rc;
    }
    pthread_mutex_lock(&st->gc_lock);
    if (seal) {
        uint8_t k[8];
        MDB_txn *txn;
        MDB_val v;
        pl_put_be64(k, data_active_seg(st->data));
        rc = meta_rtxn_begin(st->meta, &txn);
        int has = !rc && meta_get(txn, st->meta, META_SEG, k, 8, &v) == 0;
        if (!rc)
            meta_rtxn_end(txn);
        if (has)
            rc = data_seal_active(st->data);
    }
    /* writers still committing blocks of sealed segments hold the purge
     * gate: passing it means their bytes and records are final */
    pl_gate_lock(&st->purge);
    pl_gate_unlock(&st->purge);
    if (!rc)
        rc = buffer_segs(st, &l, 0);
    for (size_t i = 0; !rc && i < l.n; i++) {
        rc = destage_one(st, l.c[i].seg, l.c[i].used, &r);
        if (progress)
            progress(arg, i + 1, l.n);
        if (st->maint_running) {
            /* writers waiting for buffer space look again */
            pthread_mutex_lock(&st->maint_lock);
            st->destage_stalled = rc != 0;
            pthread_cond_broadcast(&st->drain_cond);
            pthread_mutex_unlock(&st->maint_lock);
        }
    }
    reaper_wait(&r);
    free(l.c);
    pthread_mutex_unlock(&st->gc_lock);
    return rc;
}

int pl_store_flush(struct pl_store *st, pl_progress_fn progress, void *arg)
{
    int rc = store_caches_flush(st, 0);
    return rc ? rc : destage(st, 1, progress, arg);
}

static int dev_find_rec(struct pl_store *st, int id, struct devrec *ret);

/* ---- repair and rebuild ---- */
static int stripe_geom_of(struct pl_store *st, uint64_t seg, struct data_geom *g)
{
    MDB_txn *txn;
    MDB_val v;
    uint8_t k[8];
    pl_put_be64(k, seg);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_get(txn, st->meta, META_STRIPE, k, 8, &v);
    if (!rc)
        rc = data_geom_decode(v.mv_data, v.mv_size, g);
    meta_rtxn_end(txn);
    return rc;
}

/* Rewrite strip idx of seg where it belongs, if its device can take it. */
static int repair_strip(struct pl_store *st, uint64_t seg, int idx)
{
    struct data_geom g;
    int rc = stripe_geom_of(st, seg, &g);
    if (rc == PL_ENOENT)
        return 0; /* compacted away */
    if (rc)
        return rc;
    if (data_dev_state(st->data, g.dev[idx]) == DATA_DEV_FAILED)
        return 0; /* waits for the device to be replaced */
    if (data_strip_check(st->data, seg, idx) == 0)
        return 0;
    rc = data_strip_rebuild(st->data, seg, idx, g.dev[idx]);
    if (!rc)
        pl_log(PL_LOG_INFO, "store", "repaired strip %d of segment %016" PRIx64, idx, seg);
    return rc;
}

int pl_store_rebuild(struct pl_store *st, pl_progress_fn progress, void *arg)
{
    struct dev_list dl;
    struct stripe_list sl = {0};
    int rc = devs_load(st, &dl), any = 0;
    if (rc)
        return rc;
    for (int d = 0; d < dl.n; d++)
        any |= data_dev_state(st->data, (uint16_t)dl.d[d].id) == DATA_DEV_REBUILDING;
    if (!any) {
        free(dl.d);
        return 0;
    }
    pthread_mutex_lock(&st->gc_lock);
    rc = stripes_load(st, &sl);
    for (int d = 0; !rc && d < dl.n; d++) {
        if (data_dev_state(st->data, (uint16_t)dl.d[d].id) != DATA_DEV_REBUILDING)
            continue;
        uint64_t total = 0, done = 0;
        for (size_t i = 0; i < sl.n; i++)
            for (int j = 0; j < sl.e[i].g.k + sl.e[i].g.m; j++)
                total += sl.e[i].g.dev[j] == dl.d[d].id;
        pthread_mutex_lock(&st->dev_lock);
        st->rb = (struct rebuild_progress){dl.d[d].id, 0, total, 0, pl_now_ns()};
        pthread_mutex_unlock(&st->dev_lock);
        for (size_t i = 0; !rc && i < sl.n; i++)
            for (int j = 0; !rc && j < sl.e[i].g.k + sl.e[i].g.m; j++) {
                if (sl.e[i].g.dev[j] != dl.d[d].id)
                    continue;
                if (data_strip_check(st->data, sl.e[i].seg, j) != 0)
                    rc = data_strip_rebuild(st->data, sl.e[i].seg, j, (uint16_t)dl.d[d].id);
                if (rc == PL_EINVAL || rc == PL_ENOENT)
                    rc = 0; /* compacted meanwhile */
                done++;
                pthread_mutex_lock(&st->dev_lock);
                st->rb.done = done;
                st->rb.bytes += sl.e[i].g.strip;
                pthread_mutex_unlock(&st->dev_lock);
                if (progress)
                    progress(arg, done, total);
            }
        struct devrec now;
        if (!rc)
            rc = dev_find_rec(st, dl.d[d].id, &now); /* replaced again meanwhile? */
        if (!rc && now.state == PL_DEV_REBUILDING) {
            char abs[PL_PATH_MAX];
            dev_abs(st, now.path, abs, sizeof(abs));
            rc = data_dev_set(st->data, (uint16_t)now.id, abs, DATA_DEV_OK);
            if (!rc)
                rc = dev_record(st, now.id, PL_DEV_OK, now.path);
            if (!rc)
                pl_log(PL_LOG_INFO, "store", "capacity device %d rebuilt: %" PRIu64 " strips",
                       dl.d[d].id, total);
        }
        pthread_mutex_lock(&st->dev_lock);
        st->rb.dev = -1;
        pthread_mutex_unlock(&st->dev_lock);
    }
    pthread_mutex_unlock(&st->gc_lock);
    free(sl.e);
    free(dl.d);
    return rc;
}

/* ---- device management ---- */
static int dev_find_rec(struct pl_store *st, int id, struct devrec *ret)
{
    struct dev_list dl;
    int rc = devs_load(st, &dl);
    if (rc)
        return rc;
    rc = PL_ENOENT;
    for (int i = 0; i < dl.n; i++)
        if (dl.d[i].id == id) {
            *ret = dl.d[i];
            rc = 0;
        }
    free(dl.d);
    if (rc && id >= 0 && id < st->nbuf)
        rc = PL_EPERM; /* the buffer mirrors are fixed in this version */
    return rc;
}

/* A device path: created if new, made absolute. */
static int dev_path_ok(const char *path, char *abs, size_t n)
{
    struct stat sb;
    char sd[PL_PATH_MAX + 16];
    if (!path[0] || strlen(path) >= n - 16)
        return PL_EINVAL;
    snprintf(sd, sizeof(sd), "%s/stripes", path);
    int rc = pl_mkdirs(sd, 0700);
    if (rc)
        return rc;
    if (!realpath(path, abs))
        return -errno;
    if (stat(abs, &sb) < 0 || !S_ISDIR(sb.st_mode))
        return PL_ENOTDIR;
    return 0; /* strips already there (an old directory) are checked, not trusted */
}

int pl_device_fail(struct pl_store *st, int id)
{
    struct devrec d;
    char abs[PL_PATH_MAX];
    int rc = dev_find_rec(st, id, &d);
    if (rc)
        return rc;
    dev_abs(st, d.path, abs, sizeof(abs));
    rc = data_dev_set(st->data, (uint16_t)id, abs, DATA_DEV_FAILED);
    if (!rc)
        rc = dev_record(st, id, PL_DEV_FAILED, d.path);
    if (!rc)
        pl_log(PL_LOG_WARN, "store", "capacity device %d failed by request", id);
    return rc;
}

int pl_device_add(struct pl_store *st, const char *path, int *ret_id)
{
    struct dev_list dl;
    char abs[PL_PATH_MAX];
    int rc = dev_path_ok(path, abs, sizeof(abs));
    if (!rc)
        rc = devs_load(st, &dl);
    if (rc)
        return rc;
    int id = DEV_FIRST_CAP;
    for (int i = 0; i < dl.n; i++) {
        char other[PL_PATH_MAX];
        dev_abs(st, dl.d[i].path, other, sizeof(other));
        if (!strcmp(other, abs))
            rc = PL_EEXIST;
        id = PL_MAX(id, dl.d[i].id + 1);
    }
    free(dl.d);
    if (!rc && id >= DATA_MAX_DEVS)
        rc = PL_ENOSPC;
    if (!rc)
        rc = data_dev_set(st->data, (uint16_t)id, abs, DATA_DEV_OK);
    if (!rc)
        rc = dev_record(st, id, PL_DEV_OK, abs);
    if (!rc && ret_id)
        *ret_id = id;
    return rc;
}

int pl_device_replace(struct pl_store *st, int id, const char *path)
{
    struct devrec d;
    char abs[PL_PATH_MAX];
    int rc = dev_find_rec(st, id, &d);
    if (!rc)
        rc = dev_path_ok(path, abs, sizeof(abs));
    if (!rc)
        rc = data_dev_set(st->data, (uint16_t)id, abs, DATA_DEV_REBUILDING);
    if (!rc)
        rc = dev_record(st, id, PL_DEV_REBUILDING, abs);
    if (!rc) {
        pl_log(PL_LOG_INFO, "store", "capacity device %d replaced by %s; rebuilding", id, abs);
        if (st->maint_running) {
            pthread_mutex_lock(&st->maint_lock);
            pthread_cond_signal(&st->maint_cond);
            pthread_mutex_unlock(&st->maint_lock);
        }
    }
    return rc;
}

int pl_device_remove(struct pl_store *st, int id, pl_progress_fn progress, void *arg)
{
    struct devrec d;
    struct stripe_list sl;
    uint16_t ids[DATA_MAX_DEVS];
    int n, rc = dev_find_rec(st, id, &d);
    if (!rc)
        rc = devs_working(st, ids, &n);
    if (rc)
        return rc;
    int others = 0;
    for (int i = 0; i < n; i++)
        others += ids[i] != id;
    if (others < st->ec_k + st->ec_m)
        return PL_ENODEVS;
    pthread_mutex_lock(&st->gc_lock);
    rc = stripes_load(st, &sl);
    uint64_t total = 0, done = 0;
    for (size_t i = 0; !rc && i < sl.n; i++)
        for (int j = 0; j < sl.e[i].g.k + sl.e[i].g.m; j++)
            total += sl.e[i].g.dev[j] == id;
    for (size_t i = 0; !rc && i < sl.n; i++) {
        struct data_geom *g = &sl.e[i].g;
        for (int j = 0; !rc && j < g->k + g->m; j++) {
            if (g->dev[j] != id)
                continue;
            /* a working device this stripe does not use yet */
            int target = -1;
            for (int c = 0; c < n && target < 0; c++) {
                int used = ids[c] == id;
                for (int x = 0; x < g->k + g->m; x++)
                    used |= g->dev[x] == ids[c];
                if (!used)
                    target = ids[c];
            }
            if (target < 0) {
                rc = PL_ENODEVS;
                break;
            }
            rc = data_strip_rebuild(st->data, sl.e[i].seg, j, (uint16_t)target);
            if (!rc) {
                g->dev[j] = (uint16_t)target;
                struct stripe_put sp = {sl.e[i].seg, g};
                rc = meta_submit(st->meta, apply_stripe_put, &sp);
                if (rc == PL_ESHUTDOWN)
                    rc = 0; /* compacted meanwhile */
            }
            if (progress)
                progress(arg, ++done, total);
        }
    }
    if (!rc) {
        char abs[PL_PATH_MAX];
        dev_abs(st, d.path, abs, sizeof(abs));
        struct dev_set_args a = {d, 1};
        rc = meta_submit(st->meta, apply_dev_set, &a);
        if (!rc)
            rc = data_dev_set(st->data, (uint16_t)id, abs, DATA_DEV_FAILED);
        if (!rc)
            pl_log(PL_LOG_INFO, "store", "capacity device %d removed; %" PRIu64
                   " strips moved", id, total);
    }
    pthread_mutex_unlock(&st->gc_lock);
    free(sl.e);
    return rc;
}

int pl_device_list(struct pl_store *st, pl_device_fn cb, void *arg)
{
    struct dev_list dl;
    struct stripe_list sl;
    struct pl_device_info *di = calloc(1, sizeof(*di));
    int rc = di ? devs_load(st, &dl) : PL_ENOMEM;
    if (rc) {
        free(di);
        return rc;
    }
    rc = stripes_load(st, &sl);
    for (int b = 0; !rc && b < st->nbuf; b++) {
        memset(di, 0, sizeof(*di));
        di->id = b;
        snprintf(di->path, sizeof(di->path), "%s/buffer%d", st->dir, b);
        if (cb(arg, di))
            goto out;
    }
    for (int i = 0; !rc && i < dl.n; i++) {
        memset(di, 0, sizeof(*di));
        di->id = dl.d[i].id;
        di->capacity = 1;
        dev_abs(st, dl.d[i].path, di->path, sizeof(di->path));
        int ds = data_dev_state(st->data, (uint16_t)dl.d[i].id);
        di->state = ds == DATA_DEV_FAILED      ? PL_DEV_FAILED
                    : ds == DATA_DEV_REBUILDING ? PL_DEV_REBUILDING
                                                : PL_DEV_OK;
        for (size_t s = 0; s < sl.n; s++)
            for (int j = 0; j < sl.e[s].g.k + sl.e[s].g.m; j++)
                if (sl.e[s].g.dev[j] == di->id) {
                    di->strips++;
                    di->bytes += sl.e[s].g.strip;
                }
        pthread_mutex_lock(&st->dev_lock);
        if (st->rb.dev == di->id) {
            di->rebuild_done = st->rb.done;
            di->rebuild_total = st->rb.total;
            double secs = (double)(pl_now_ns() - st->rb.t0) / 1e9;
            di->rebuild_rate = secs > 0 ? (double)st->rb.bytes / secs : 0;
        }
        pthread_mutex_unlock(&st->dev_lock);
        if (cb(arg, di))
            break;
    }
out:
    free(sl.e);
    free(dl.d);
    free(di);
    return rc;
}

/* ---- scrub ---- */
struct scrub_ctx {
    uint64_t rate, bytes;
    int64_t t0;
};

/* Sleep as needed to keep the scrub under its rate. */
static void scrub_pace(struct scrub_ctx *c, uint64_t bytes)
{
    c->bytes += bytes;
    if (!c->rate)
        return;
    double want = (double)c->bytes / (double)c->rate;
    double have = (double)(pl_now_ns() - c->t0) / 1e9;
    if (want > have) {
        double d = want - have;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

int pl_store_scrub(struct pl_store *st, uint64_t rate, pl_progress_fn progress, void *arg,
                   struct pl_scrub_report *ret)
{
    struct cand_list bl;
    struct stripe_list sl;
    struct pl_scrub_report r = {0};
    struct scrub_ctx pace = {rate, 0, pl_now_ns()};
    int rc = buffer_segs(st, &bl, 1); /* the active one too: its committed part */
    if (rc)
        return rc;
    rc = stripes_load(st, &sl);
    uint64_t total = bl.n + sl.n, done = 0;
    for (size_t i = 0; !rc && i < bl.n; i++) {
        int r2 = data_seg_scrub(st->data, bl.c[i].seg, bl.c[i].used, &r.checked, &r.repaired,
                                &r.unrecoverable);
        if (r2 && r2 != PL_EINVAL && r2 != PL_ENOENT)
            rc = r2; /* EINVAL/ENOENT: destaged or compacted meanwhile */
        scrub_pace(&pace, bl.c[i].used);
        if (progress)
            progress(arg, ++done, total);
    }
    for (size_t i = 0; !rc && i < sl.n; i++) {
        const struct data_geom *g = &sl.e[i].g;
        int bad[PL_ARRAY_LEN(g->dev)], nbad = 0, gone = 0;
        for (int j = 0; !rc && j < g->k + g->m; j++) {
            int c = data_strip_check(st->data, sl.e[i].seg, j);
            if (c == PL_EINVAL) {
                gone = 1; /* compacted meanwhile */
                break;
            }
            r.checked++;
            if (c == PL_ENOMEM)
                rc = c;
            else if (c)
                bad[nbad++] = j;
        }
        if (!rc && !gone && nbad > g->m) {
            /* beyond parity: nothing to rebuild from; fsck names the objects */
            r.unrecoverable += (uint64_t)nbad;
            pl_log(PL_LOG_ERROR, "store",
                   "scrub: segment %016" PRIx64 " has %d of %d strips missing or corrupt (parity "
                   "covers %d); its data cannot be read, 'plenum fsck' lists the objects",
                   sl.e[i].seg, nbad, g->k + g->m, g->m);
            nbad = 0;
        }
        for (int b = 0; !rc && !gone && b < nbad; b++) {
            int j = bad[b];
            if (data_dev_state(st->data, g->dev[j]) == DATA_DEV_FAILED)
                continue; /* rebuilt when the device is replaced */
            pl_log(PL_LOG_WARN, "store", "scrub: strip %d of segment %016" PRIx64 " is damaged",
                   j, sl.e[i].seg);
            int rr = data_strip_rebuild(st->data, sl.e[i].seg, j, g->dev[j]);
            if (rr == 0)
                r.repaired++;
            else if (rr == PL_ECORRUPT)
                r.unrecoverable++;
            else if (rr != PL_EINVAL && rr != PL_ENOENT)
                rc = rr;
        }
        scrub_pace(&pace, g->strip * (uint64_t)(g->k + g->m));
        if (progress)
            progress(arg, ++done, total);
    }
    free(bl.c);
    free(sl.e);
    pthread_mutex_lock(&st->dev_lock);
    st->scrub_total.checked += r.checked;
    st->scrub_total.repaired += r.repaired;
    st->scrub_total.unrecoverable += r.unrecoverable;
    pthread_mutex_unlock(&st->dev_lock);
    pl_log(r.unrecoverable ? PL_LOG_ERROR : PL_LOG_INFO, "store",
           "scrub: %" PRIu64 " checked, %" PRIu64 " repaired, %" PRIu64 " unrecoverable",
           r.checked, r.repaired, r.unrecoverable);
    if (ret)
        *ret = r;
    return rc;
}

/* ---- the background thread ---- */
static void maint_pass(struct pl_store *st, int kicked, int64_t *last_scrub)
{
    int rc;
    if (data_devs_probe(st->data) > 0) {
        struct dev_list dl;
        if (devs_load(st, &dl) == 0) {
            for (int i = 0; i < dl.n; i++)
                if (dl.d[i].state != PL_DEV_FAILED &&
                    data_dev_state(st->data, (uint16_t)dl.d[i].id) == DATA_DEV_FAILED &&
                    dev_record(st, dl.d[i].id, PL_DEV_FAILED, dl.d[i].path))
                    pl_log(PL_LOG_WARN, "store", "could not record device %d failed",
                           dl.d[i].id);
            free(dl.d);
        }
    }
    /* While writers are appending and the buffer has room, destage waits:
     * a burst then costs the disk its two mirror copies only, and the stripes
     * are written when the writers pause (or the buffer is half full). */
    uint64_t buffered = data_buffer_bytes(st->data);
    if (kicked || buffered <= st->pass_buffered || buffered > st->buffer_max / 2) {
        rc = destage(st, 0, NULL, NULL);
        if (rc && rc != PL_ENODEVS)
            pl_log(PL_LOG_WARN, "store", "destage: %s", pl_strerror(rc));
    }
    st->pass_buffered = data_buffer_bytes(st->data);
    uint64_t seg;
    int idx;
    while (data_repair_next(st->data, &seg, &idx)) {
        rc = repair_strip(st, seg, idx);
        if (rc)
            pl_log(PL_LOG_WARN, "store", "repair of strip %d of segment %016" PRIx64 ": %s",
                   idx, seg, pl_strerror(rc));
    }
    rc = pl_store_rebuild(st, NULL, NULL);
    if (rc)
        pl_log(PL_LOG_WARN, "store", "rebuild: %s", pl_strerror(rc));
    int64_t now = pl_now_ns();
    if (now - *last_scrub >= (int64_t)st->scrub_interval_s * 1000000000) {
        *last_scrub = now;
        struct pl_scrub_report r;
        rc = pl_store_scrub(st, st->scrub_rate, NULL, NULL, &r);
        if (rc)
            pl_log(PL_LOG_WARN, "store", "scrub: %s", pl_strerror(rc));
    }
}

static void *maint_main(void *arg)
{
    struct pl_store *st = arg;
    int64_t last_scrub = pl_now_ns();
    pthread_mutex_lock(&st->maint_lock);
    while (!st->maint_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (!st->maint_kick)
            pthread_cond_timedwait(&st->maint_cond, &st->maint_lock, &ts);
        int kicked = st->maint_kick;
        st->maint_kick = 0;
        if (st->maint_stop)
            break;
        pthread_mutex_unlock(&st->maint_lock);
        maint_pass(st, kicked, &last_scrub);
        pthread_mutex_lock(&st->maint_lock);
    }
    pthread_mutex_unlock(&st->maint_lock);
    return NULL;
}

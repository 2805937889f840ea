/* Destage encoding and write back-pressure.
 *
 * The acknowledgment path only chunks, fingerprints, deduplicates and appends
 * new chunks as they are (codec STAGED) to the mirrored buffer. Here, off that
 * path, a sealed buffer segment's chunks get their final encoding on their
 * way to a stripe:
 * 1. sketch every staged chunk (on two threads);
 * 2. pick references in segment order: a similar whole chunk stored earlier
 *    (the similarity index) or earlier in this segment; a chunk that will be
 *    a delta is never picked, so chains stay one deep;
 * 3. encode (delta when it beats zstd by an eighth, else zstd, else raw; on
 *    two threads), pack the blocks into a new segment written straight to a
 *    stripe, and move every chunk there in one commit, as compaction does;
 *    the buffer segment is deleted after.
 * Blocks already encoded (moved into the buffer by compaction) are copied as
 * they are: a chunk is encoded once, so a reference never becomes a delta.
 * Runs under gc_lock: nothing purges or moves chunks meanwhile, so the index
 * entries read here stay; a reference whose count drops to zero meanwhile is
 * revived by its new dependent.
 * Crash: before the commit the new strips are orphans (swept at open); after
 * it the old buffer files are (removed at open), so the caller may delete
 * them later.
 */
#include "store/store_int.h"

#include <inttypes.h>
#include <stdlib.h>

struct dblock {
    uint8_t fp[DATA_FP_LEN];
    struct data_loc from, to;
    uint64_t refs;
    uint8_t *blk; /* as read; then as it will be written */
    size_t blk_n;
    uint8_t *enc; /* the encoded block, when staged */
    size_t enc_n;
    int staged, has_sketch;
    int plain;      /* staged to stay raw (DATA_CODEC_STAGED_RAW) */
    uint64_t sf[DATA_SF];
    int ref_local;  /* 1 + index of the reference in this segment */
    int has_ref;    /* a reference was picked */
    int delta;      /* the encoding chose the delta */
    uint8_t ref[DATA_FP_LEN];
    struct data_loc ref_loc; /* a stored reference */
};

struct dseg {
    struct pl_store *st;
    uint64_t seg, nseg;
    struct dblock *b;
    size_t n, cap;
    int nstaged;
    struct data_geom geom; /* of the new stripe */
};

static int collect_block(void *arg, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN])
{
    struct dseg *d = arg;
    uint64_t refs;
    struct data_loc cur;
    int rc = chunk_names_copy(d->st, loc, fp, &refs, &cur);
    if (rc)
        return rc > 0 ? 0 : rc; /* not the copy the index names: it stays behind */
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 512;
        struct dblock *nb = realloc(d->b, cap * sizeof(*nb));
        if (!nb)
            return PL_ENOMEM;
        d->b = nb;
        d->cap = cap;
    }
    struct dblock *b = &d->b[d->n];
    memset(b, 0, sizeof(*b));
    memcpy(b->fp, fp, DATA_FP_LEN);
    b->from = cur;
    b->refs = refs;
    /* dead chunks move as they are: not worth encoding, never references */
    b->staged = DATA_CODEC_IS_STAGED(cur.codec) && refs > 0;
    b->plain = cur.codec == DATA_CODEC_STAGED_RAW;
    rc = data_block_read(d->st->data, &cur, &b->blk, &b->blk_n);
    if (rc)
        return rc; /* no good copy: leave the segment in the buffer for scrub/fsck */
    d->nstaged += b->staged;
    d->n++;
    return 0;
}

/* A similar whole chunk stored before, by super-feature (never a delta nor
 * still staged: it could become a delta itself). */
static int similar_stored(struct pl_store *st, MDB_txn *txn, const struct dblock *b,
                          uint8_t ref_fp[DATA_FP_LEN], struct data_loc *ref_loc)
{
    for (int j = 0; j < DATA_SF; j++) {
        uint8_t k[9];
        MDB_val v;
        uint64_t refs;
        pl_put_le64(k, b->sf[j]);
        k[8] = (uint8_t)j;
        if (meta_get(txn, st->meta, META_SIMILAR, k, sizeof(k), &v) || v.mv_size != DATA_FP_LEN ||
            !memcmp(v.mv_data, b->fp, DATA_FP_LEN))
            continue;
        if (chunk_lookup(txn, st->meta, v.mv_data, &refs, ref_loc) || !refs ||
            ref_loc->codec == DATA_CODEC_DELTA || DATA_CODEC_IS_STAGED(ref_loc->codec))
            continue; /* gone, dead, or not whole: a stale index entry */
        memcpy(ref_fp, v.mv_data, DATA_FP_LEN);
        return 0;
    }
    return PL_ENOENT;
}

/* The earlier staged chunks of this segment that will stay whole, by
 * super-feature: segments of small files hold tens of thousands of chunks,
 * where a scan of all earlier ones for each chunk took seconds a segment.
 * One open-addressed table over (feature number, value); each slot chains the
 * chunks sharing it in segment order. */
struct sf_slot {
    uint64_t sf;
    uint32_t s, head, tail; /* head, tail: 1 + chunk index; head 0: empty */
};

struct sf_index {
    struct sf_slot *slot;
    uint32_t *next; /* [i * DATA_SF + s]: 1 + the next chunk in i's chain for s */
    size_t mask;
};

static int sf_index_init(struct sf_index *x, size_t n)
{
    size_t cap = 64;
    while (cap < 2 * n * DATA_SF)
        cap *= 2;
    x->mask = cap - 1;
    x->slot = calloc(cap, sizeof(*x->slot));
    x->next = calloc(n * DATA_SF + 1, sizeof(*x->next));
    return x->slot && x->next ? 0 : PL_ENOMEM;
}

static void sf_index_release(struct sf_index *x)
{
    free(x->slot);
    free(x->next);
}

static struct sf_slot *sf_index_find(const struct sf_index *x, int s, uint64_t sf)
{
    size_t h = (size_t)((sf ^ (uint64_t)s * 0x9e3779b97f4a7c15ull) * 0xff51afd7ed558ccdull >> 20);
    for (;; h++) {
        struct sf_slot *e = &x->slot[h & x->mask];
        if (!e->head || (e->sf == sf && e->s == (uint32_t)s))
            return e;
    }
}

static void sf_index_add(struct sf_index *x, const struct dseg *d, size_t i)
{
    for (int s = 0; s < DATA_SF; s++) {
        struct sf_slot *e = sf_index_find(x, s, d->b[i].sf[s]);
        if (!e->head) {
            *e = (struct sf_slot){d->b[i].sf[s], (uint32_t)s, (uint32_t)i + 1, (uint32_t)i + 1};
        } else {
            x->next[(size_t)(e->tail - 1) * DATA_SF + (size_t)s] = (uint32_t)i + 1;
            e->tail = (uint32_t)i + 1;
        }
    }
}

/* The earliest chunk indexed before i sharing a super-feature with it (not
 * an identical one): 1 + its index, or 0. */
static int similar_local(const struct sf_index *x, const struct dseg *d, size_t i)
{
    const struct dblock *b = &d->b[i];
    uint32_t best = 0;
    for (int s = 0; s < DATA_SF; s++) {
        const struct sf_slot *e = sf_index_find(x, s, b->sf[s]);
        uint32_t j = e->head;
        while (j && (!best || j < best) && !memcmp(d->b[j - 1].fp, b->fp, DATA_FP_LEN))
            j = x->next[(size_t)(j - 1) * DATA_SF + (size_t)s];
        if (j && (!best || j < best))
            best = j;
    }
    return (int)best;
}

/* Work shared by two threads: each takes the next few blocks until none are
 * left (chunks cost very different times: a near-copy's delta is quick,
 * a unique chunk's zstd is not, so fixed halves leave one thread idle). */
#define DPART_TAKE 4

struct dpart {
    struct pl_job job;
    struct dseg *d;
    size_t *next;
    int phase; /* 0 sketch, 1 encode */
    int rc;
};

static int encode_block(struct dseg *d, struct dblock *b)
{
    const void *raw = b->blk + DATA_BLOCK_HDR;
    const uint8_t *ref = NULL;
    struct hot_chunk *held = NULL;
    size_t ref_n = 0;
    if (b->ref_local) {
        const struct dblock *r = &d->b[b->ref_local - 1];
        ref = r->blk + DATA_BLOCK_HDR;
        ref_n = r->from.raw_len;
    } else if (b->has_ref &&
               store_ref_get(d->st, b->ref, &b->ref_loc, &held, &ref, &ref_n) != 0) {
        ref = NULL; /* an unreadable reference: store this one whole */
    }
    int rc = data_block_encode(d->st->data, b->fp, raw, b->from.raw_len, b->plain,
                               ref ? b->ref : NULL, ref, ref_n, &b->enc, &b->enc_n);
    if (!rc)
        b->delta = b->enc[5] == DATA_CODEC_DELTA;
    hot_put(held);
    return rc;
}

static void dpart_run(struct pl_job *j)
{
    struct dpart *p = (struct dpart *)j;
    for (;;) {
        size_t lo = __atomic_fetch_add(p->next, DPART_TAKE, __ATOMIC_RELAXED);
        for (size_t i = lo; i < lo + DPART_TAKE && i < p->d->n && !p->rc; i++) {
            struct dblock *b = &p->d->b[i];
            if (!b->staged)
                continue;
            if (p->phase == 0) {
                if (b->plain)
                    continue; /* the writer said it does not compress: no sketch, no delta */
                data_sketch(b->blk + DATA_BLOCK_HDR, b->from.raw_len, b->sf);
                b->has_sketch = 1;
            } else {
                p->rc = encode_block(p->d, b);
            }
        }
        if (lo + DPART_TAKE >= p->d->n || p->rc)
            return;
    }
}

/* Run one phase over all blocks: on the pool and here. */
static int dphase(struct dseg *d, int phase)
{
    size_t next = 0;
    struct dpart a = {.d = d, .next = &next, .phase = phase};
    struct dpart b = {.d = d, .next = &next, .phase = phase};
    a.job.fn = dpart_run;
    pl_pool_submit(d->st->pool, &a.job);
    dpart_run(&b.job);
    pl_job_wait(d->st->pool, &a.job);
    return a.rc ? a.rc : b.rc;
}

/* Pick each staged chunk's reference, in segment order. */
static int pick_refs(struct dseg *d)
{
    MDB_txn *txn = NULL;
    struct sf_index x = {0};
    int rc = sf_index_init(&x, d->n);
    if (!rc)
        rc = meta_rtxn_begin(d->st->meta, &txn);
    if (rc)
        goto out;
    for (size_t i = 0; i < d->n; i++) {
        struct dblock *b = &d->b[i];
        if (!b->has_sketch)
            continue;
        b->ref_local = similar_local(&x, d, i);
        if (b->ref_local) {
            memcpy(b->ref, d->b[b->ref_local - 1].fp, DATA_FP_LEN);
            b->has_ref = 1;
        } else if (similar_stored(d->st, txn, b, b->ref, &b->ref_loc) == 0) {
            b->has_ref = 1; /* read on the encoding threads */
        } else {
            sf_index_add(&x, d, i); /* stays whole: a reference for later chunks */
        }
    }
out:
    meta_rtxn_end(txn);
    sf_index_release(&x);
    return rc;
}

static int apply_destage(struct meta_txn *t, void *arg)
{
    struct dseg *d = arg;
    int rc = 0;
    for (size_t i = 0; i < d->n && !rc; i++) {
        struct dblock *b = &d->b[i];
        uint64_t refs;
        struct data_loc cur;
        rc = chunk_lookup(t->txn, t->env, b->fp, &refs, &cur);
        if (rc == PL_ENOENT) {
            rc = 0;
            continue;
        }
        if (rc)
            break;
        if (cur.seg != b->from.seg || cur.off != b->from.off)
            continue;
        uint8_t v[8 + DATA_LOC_ENC];
        pl_put_le64(v, refs);
        data_loc_encode(&b->to, v + 8);
        rc = meta_put(t, META_CHUNK, b->fp, DATA_FP_LEN, v, sizeof(v));
        if (!rc && refs) {
            rc = chunk_account(t, &cur, -1);
            if (!rc)
                rc = chunk_account(t, &b->to, 1);
        } else if (!rc) {
            rc = seg_account(t, &b->to, 0);
        }
        if (!rc && b->delta) {
            rc = chunk_ref(t, b->ref, NULL, NULL); /* a delta holds its reference */
        } else if (!rc && b->has_sketch) {
            for (int j = 0; !rc && j < DATA_SF; j++) {
                uint8_t k[9];
                pl_put_le64(k, b->sf[j]);
                k[8] = (uint8_t)j;
                rc = meta_put(t, META_SIMILAR, k, sizeof(k), b->fp, DATA_FP_LEN);
            }
        }
    }
    uint8_t k[8], g[DATA_GEOM_MAX];
    pl_put_be64(k, d->seg);
    if (!rc)
        rc = meta_del(t, META_SEG, k, 8);
    if (!rc)
        rc = meta_sys_add(t, "segments", -1);
    if (!rc && d->nseg) {
        pl_put_be64(k, d->nseg);
        rc = meta_put(t, META_STRIPE, k, 8, g, data_geom_encode(&d->geom, g));
    }
    return rc;
}

static void dseg_free(struct dseg *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->b[i].blk);
        free(d->b[i].enc);
    }
    free(d->b);
}

int store_destage_encode(struct pl_store *st, uint64_t seg, uint64_t used, const uint16_t *devs,
                         int *ret_done)
{
    struct dseg d = {.st = st, .seg = seg};
    uint8_t *out = NULL;
    uint64_t len = 0;
    int attached = 0;
    *ret_done = 0;
    int rc = data_seg_walk(st->data, seg, used, collect_block, &d);
    if (rc || d.nstaged == 0)
        goto out; /* nothing to encode: the caller stripes the segment as it is */
    if (st->similarity) {
        rc = dphase(&d, 0);
        if (!rc)
            rc = pick_refs(&d);
    }
    if (!rc)
        rc = dphase(&d, 1);
    for (size_t i = 0; !rc && i < d.n; i++) {
        struct dblock *b = &d.b[i];
        if (b->enc) {
            free(b->blk);
            b->blk = b->enc;
            b->blk_n = b->enc_n;
            b->enc = NULL;
        }
        len += b->blk_n;
    }
    if (rc)
        goto out;
    if (len) {
        out = malloc((size_t)len);
        if (!out) {
            rc = PL_ENOMEM;
            goto out;
        }
        d.nseg = data_seg_reserve(st->data);
        uint64_t off = 0;
        for (size_t i = 0; i < d.n; i++) {
            struct dblock *b = &d.b[i];
            memcpy(out + off, b->blk, b->blk_n);
            b->to = (struct data_loc){
                .kind = DATA_LOC_BUFFER,
                .codec = b->blk[5],
                .seg = d.nseg,
                .off = off,
                .stored_len = (uint32_t)(b->blk_n - DATA_BLOCK_HDR),
                .raw_len = b->from.raw_len,
            };
            off += b->blk_n;
        }
        rc = data_stripe_write(st->data, d.nseg, out, len, st->ec_k, st->ec_m, devs, &d.geom);
        /* readable before the commit makes anyone look for it there */
        if (!rc)
            rc = data_stripe_attach(st->data, d.nseg, &d.geom);
        attached = !rc;
    }
    if (!rc)
        rc = meta_submit(st->meta, apply_destage, &d);
    if (rc && attached && data_seg_delete(st->data, d.nseg))
        pl_log(PL_LOG_WARN, "store", "leftover strips of segment %016" PRIx64
               " are removed at the next open", d.nseg);
    if (!rc)
        *ret_done = 1; /* the caller deletes the buffer segment */
out:
    free(out);
    dseg_free(&d);
    return rc;
}

/* ---- back-pressure ---- */
void store_throttle(struct pl_store *st)
{
    if (!st->maint_running || !st->buffer_max)
        return;
    if (data_buffer_bytes(st->data) <= st->buffer_max)
        return;
    pthread_mutex_lock(&st->maint_lock);
    while (!st->maint_stop && !st->destage_stalled &&
           data_buffer_bytes(st->data) > st->buffer_max) {
        struct timespec ts = pl_deadline_ms(100);
        st->maint_kick = 1;
        pthread_cond_signal(&st->maint_cond);
        pthread_cond_timedwait(&st->drain_cond, &st->maint_lock, &ts);
    }
    pthread_mutex_unlock(&st->maint_lock);
}

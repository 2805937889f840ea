/* Garbage collection.
 *
 * 1. Graveyard sweep: a record retired at epoch D (born at B) is needed only
 *    while a snapshot s with B <= s < D exists. Those no snapshot sees are
 *    deleted; an extent's deletion drops its chunk reference.
 * 2. Segment compaction: a sealed segment whose live bytes are under half of
 *    its used bytes has its live chunks copied to the active segment, its dead
 *    index entries purged, and its files deleted. This runs with purge gate
 *    held exclusively, so no writer holds a dedup hit on a chunk being purged.
 */
#include "store/store_int.h"

#include <stdlib.h>

#define SWEEP_BATCH 512

struct sweep_args {
    uint64_t *snaps;
    size_t nsnaps;
    uint8_t after[PL_NAME_MAX + 64];
    size_t after_n;
    int done;
    uint64_t freed;
};

static int snap_sees(const struct sweep_args *a, uint64_t birth, uint64_t death)
{
    for (size_t i = 0; i < a->nsnaps; i++)
        if (birth <= a->snaps[i] && a->snaps[i] < death)
            return 1;
    return 0;
}

static int apply_sweep(struct meta_txn *t, void *arg)
{
    struct sweep_args *a = arg;
    MDB_cursor *c = NULL;
    int rc = meta_err(mdb_cursor_open(t->txn, meta_dbi(t->env, META_GRAVE), &c));
    if (rc)
        return rc;
    MDB_val k = {a->after_n, a->after}, v;
    rc = meta_err(mdb_cursor_get(c, &k, &v, a->after_n ? MDB_SET_RANGE : MDB_FIRST));
    if (!rc && a->after_n && k.mv_size == a->after_n && !memcmp(k.mv_data, a->after, a->after_n))
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    int n = 0;
    uint8_t gk[PL_NAME_MAX + 64];
    while (!rc && n < SWEEP_BATCH) {
        size_t gn = k.mv_size;
        if (gn < 10 || gn > sizeof(gk)) {
            rc = PL_ECORRUPT;
            break;
        }
        memcpy(gk, k.mv_data, gn);
        memcpy(a->after, gk, gn);
        a->after_n = gn;
        n++;
        uint64_t death = pl_get_be64(gk);
        uint8_t table = gk[8];
        const uint8_t *rk = gk + 9;
        size_t rn = gn - 9;
        uint64_t birth = ~pl_get_be64(rk + rn - 8);
        if (snap_sees(a, birth, death)) {
            rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
            continue;
        }
        MDB_val rv;
        int r = meta_get(t->txn, t->env, (enum meta_db)table, rk, rn, &rv);
        if (r == 0 && table == META_EXTENT) {
            uint8_t fp[DATA_FP_LEN];
            if (rv.mv_size != 48) {
                rc = PL_ECORRUPT;
                break;
            }
            memcpy(fp, rv.mv_data, DATA_FP_LEN);
            r = meta_del(t, META_EXTENT, rk, rn);
            if (!r)
                r = chunk_unref(t, fp);
        } else if (r == 0) {
            r = meta_del(t, (enum meta_db)table, rk, rn);
        } else if (r == PL_ENOENT) {
            r = 0;
        }
        if (!r)
            r = meta_err(mdb_cursor_del(c, 0));
        if (r) {
            rc = r;
            break;
        }
        a->freed++;
        /* after mdb_cursor_del the cursor already sits on the next entry */
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT));
    }
    mdb_cursor_close(c);
    if (rc == PL_ENOENT || rc == PL_EINVAL) {
        a->done = 1;
        rc = 0;
    }
    return rc;
}

static int gc_sweep(struct pl_store *st)
{
    struct sweep_args a = {0};
    MDB_txn *txn;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = snap_epochs(txn, st->meta, &a.snaps, &a.nsnaps);
    meta_rtxn_end(txn);
    while (!rc && !a.done)
        rc = meta_submit(st->meta, apply_sweep, &a);
    free(a.snaps);
    return rc;
}

/* ---- compaction ---- */
struct moved {
    uint8_t fp[DATA_FP_LEN];
    struct data_loc from, to;
    int purge;   /* dead: drop the entry */
    int has_ref; /* a dead delta: its reference loses a dependent */
    uint8_t ref[DATA_FP_LEN];
};

struct compact {
    struct pl_store *st;
    uint64_t seg;
    struct moved *m;
    size_t n, cap;
    int rc;
};

static int compact_block(void *arg, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN])
{
    struct compact *c = arg;
    uint64_t refs;
    struct data_loc cur;
    int rc = chunk_names_copy(c->st, loc, fp, &refs, &cur);
    if (rc)
        return rc > 0 ? 0 : rc; /* not the copy the index names: garbage */
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct moved *nm = realloc(c->m, cap * sizeof(*nm));
        if (!nm)
            return PL_ENOMEM;
        c->m = nm;
        c->cap = cap;
    }
    struct moved *mv = &c->m[c->n++];
    memcpy(mv->fp, fp, DATA_FP_LEN);
    mv->from = cur;
    mv->purge = refs == 0;
    mv->has_ref = 0;
    if (mv->purge && cur.codec == DATA_CODEC_DELTA) {
        rc = data_delta_ref(c->st->data, &cur, mv->ref);
        if (rc)
            return rc; /* unreadable: keep the segment for fsck/repair */
        mv->has_ref = 1;
    }
    if (!mv->purge) {
        uint8_t *blk;
        size_t bn;
        rc = data_block_read(c->st->data, &cur, &blk, &bn);
        if (rc)
            return rc; /* a corrupt live chunk: leave the segment for fsck/repair */
        rc = data_block_append(c->st->data, blk, bn, &mv->to);
        free(blk);
    }
    return rc;
}

static int apply_compact(struct meta_txn *t, void *arg)
{
    struct compact *c = arg;
    int rc = 0;
    for (size_t i = 0; i < c->n && !rc; i++) {
        struct moved *mv = &c->m[i];
        if (mv->purge) {
            rc = meta_del(t, META_CHUNK, mv->fp, DATA_FP_LEN);
            if (!rc && mv->has_ref)
                rc = chunk_unref(t, mv->ref);
            continue;
        }
        MDB_val v;
        rc = meta_get(t->txn, t->env, META_CHUNK, mv->fp, DATA_FP_LEN, &v);
        if (rc)
            break;
        uint8_t nv[8 + DATA_LOC_ENC];
        uint64_t refs = pl_get_le64(v.mv_data);
        pl_put_le64(nv, refs);
        data_loc_encode(&mv->to, nv + 8);
        rc = meta_put(t, META_CHUNK, mv->fp, DATA_FP_LEN, nv, sizeof(nv));
        int64_t blk = DATA_BLOCK_HDR + mv->to.stored_len;
        if (!rc)
            rc = seg_account(t, &mv->to, refs ? blk : 0);
    }
    uint8_t k[8];
    pl_put_be64(k, c->seg);
    if (!rc)
        rc = meta_del(t, META_SEG, k, 8);
    if (!rc) {
        rc = meta_del(t, META_STRIPE, k, 8); /* a destaged one: its strips go too */
        if (rc == PL_ENOENT)
            rc = 0;
    }
    if (!rc)
        rc = meta_sys_add(t, "segments", -1);
    return rc;
}

static int compact_seg(struct pl_store *st, uint64_t seg, uint64_t used, uint64_t *freed)
{
    struct compact c = {.st = st, .seg = seg};
    struct seg_set segs = {0};
    int rc = data_seg_walk(st->data, seg, used, compact_block, &c);
    for (size_t i = 0; !rc && i < c.n; i++) {
        if (c.m[i].purge)
            continue;
        int dup = 0;
        for (int j = 0; j < segs.n; j++)
            dup |= segs.ids[j] == c.m[i].to.seg;
        if (!dup && segs.n < (int)PL_ARRAY_LEN(segs.ids))
            segs.ids[segs.n++] = c.m[i].to.seg;
    }
    if (!rc)
        rc = store_sync_segs(st, &segs);
    if (!rc)
        rc = meta_submit(st->meta, apply_compact, &c);
    if (!rc) {
        *freed += used * 2;
        rc = data_seg_delete(st->data, seg);
    }
    free(c.m);
    return rc;
}

/* Dead delta chunks pin their references: drop their index entries now
 * (their bytes are garbage already) and release the references. Safe only
 * with the purge gate held exclusively: no writer holds a dedup result. */
struct dead_delta {
    uint8_t fp[DATA_FP_LEN], ref[DATA_FP_LEN];
};

struct dd_list {
    struct pl_store *st;
    struct dead_delta *d;
    size_t n, cap;
};

static int dd_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct dd_list *l = arg;
    struct data_loc loc;
    if (k->mv_size != DATA_FP_LEN || v->mv_size < 8 + DATA_LOC_ENC ||
        pl_get_le64(v->mv_data) != 0 ||
        data_loc_decode((const uint8_t *)v->mv_data + 8, DATA_LOC_ENC, &loc) ||
        loc.codec != DATA_CODEC_DELTA)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct dead_delta *d = realloc(l->d, cap * sizeof(*d));
        if (!d)
            return PL_ENOMEM;
        l->d = d;
        l->cap = cap;
    }
    struct dead_delta *d = &l->d[l->n];
    memcpy(d->fp, k->mv_data, DATA_FP_LEN);
    if (data_delta_ref(l->st->data, &loc, d->ref))
        return 0; /* unreadable: leave it to fsck */
    l->n++;
    return 0;
}

static int apply_dd(struct meta_txn *t, void *arg)
{
    struct dd_list *l = arg;
    int rc = 0;
    for (size_t i = 0; i < l->n && !rc; i++) {
        uint64_t refs;
        struct data_loc loc;
        rc = chunk_lookup(t->txn, t->env, l->d[i].fp, &refs, &loc);
        if (rc == PL_ENOENT || (!rc && refs)) {
            rc = 0; /* gone or revived meanwhile */
            continue;
        }
        if (!rc)
            rc = meta_del(t, META_CHUNK, l->d[i].fp, DATA_FP_LEN);
        if (!rc)
            rc = chunk_unref(t, l->d[i].ref);
    }
    return rc;
}

static int purge_dead_deltas(struct pl_store *st)
{
    struct dd_list l = {st, NULL, 0, 0};
    MDB_txn *txn;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_walk(txn, st->meta, META_CHUNK, NULL, 0, dd_cb, &l);
    meta_rtxn_end(txn);
    if (!rc && l.n)
        rc = meta_submit(st->meta, apply_dd, &l);
    free(l.d);
    return rc;
}

int pl_store_gc(struct pl_store *st, uint64_t *ret_freed)
{
    uint64_t freed = 0;
    pthread_mutex_lock(&st->gc_lock);
    int rc = gc_sweep(st);
    if (rc)
        goto out;
    pl_gate_lock(&st->purge);
    rc = purge_dead_deltas(st);
    /* candidates: segments under half live; seal the active one if it is one */
    for (int pass = 0; pass < 2 && !rc; pass++) {
        MDB_txn *txn;
        MDB_cursor *cur;
        MDB_val k, v;
        uint64_t active = data_active_seg(st->data);
        uint64_t *cand = NULL;
        uint64_t *cused = NULL;
        size_t n = 0, cap = 0;
        int seal = 0;
        rc = meta_rtxn_begin(st->meta, &txn);
        if (rc)
            break;
        rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_SEG), &cur));
        if (!rc)
            rc = meta_err(mdb_cursor_get(cur, &k, &v, MDB_FIRST));
        while (!rc) {
            uint64_t id = pl_get_be64(k.mv_data);
            uint64_t used = pl_get_le64(v.mv_data), live = pl_get_le64((uint8_t *)v.mv_data + 8);
            if (live * 100 < used * (uint64_t)st->gc_live_pct || live == 0) {
                if (id == active) {
                    seal = 1;
                } else {
                    if (n == cap) {
                        cap = cap ? cap * 2 : 32;
                        uint64_t *a = realloc(cand, cap * sizeof(*a));
                        uint64_t *b = a ? realloc(cused, cap * sizeof(*b)) : NULL;
                        if (a)
                            cand = a;
                        if (b)
                            cused = b;
                        if (!a || !b) {
                            rc = PL_ENOMEM;
                            break;
                        }
                    }
                    cand[n] = id;
                    cused[n++] = used;
                }
            }
            rc = meta_err(mdb_cursor_get(cur, &k, &v, MDB_NEXT));
        }
        mdb_cursor_close(cur);
        meta_rtxn_end(txn);
        if (rc == PL_ENOENT)
            rc = 0;
        for (size_t i = 0; i < n && !rc; i++)
            rc = compact_seg(st, cand[i], cused[i], &freed);
        free(cand);
        free(cused);
        if (rc || !seal || pass == 1)
            break;
        rc = data_seal_active(st->data); /* then compact it in the second pass */
    }
    pl_gate_unlock(&st->purge);
out:
    pthread_mutex_unlock(&st->gc_lock);
    if (!rc && ret_freed)
        *ret_freed = freed;
    return rc;
}

/* Extent maps, chunk reference counts and the read/write paths.
 *
 * extent record: key id(8) off(8) ~birth(8); value fp(32) choff LE32 len LE32
 * death LE64. An extent never exceeds DATA_MAX_CHUNK bytes, so the extent
 * covering offset x starts in [x - DATA_MAX_CHUNK, x]: a read seeks there.
 * chunk record: key fp(32); value refs LE64, location (DATA_LOC_ENC bytes).
 * segment record: key seg BE64; value used LE64, live LE64.
 */
#include "store/store_int.h"

#include <stdlib.h>

#define EXT_VAL 48
#define CHUNK_VAL (8 + DATA_LOC_ENC)

struct ext {
    uint64_t off, birth;
    uint8_t fp[DATA_FP_LEN];
    uint32_t choff, len;
};

static void ext_val(uint8_t v[EXT_VAL], const uint8_t *fp, uint32_t choff, uint32_t len,
                    uint64_t death)
{
    memcpy(v, fp, DATA_FP_LEN);
    pl_put_le32(v + 32, choff);
    pl_put_le32(v + 36, len);
    pl_put_le64(v + 40, death);
}

static int ext_insert(struct meta_txn *t, uint64_t id, uint64_t off, uint64_t E, const uint8_t *fp,
                      uint32_t choff, uint32_t len)
{
    uint8_t k[24], v[EXT_VAL];
    int rc = chunk_ref(t, fp, NULL, NULL);
    if (rc)
        return rc;
    ext_val(v, fp, choff, len, PL_EPOCH_INF);
    return meta_put(t, META_EXTENT, k, key_extent(k, id, off, E), v, EXT_VAL);
}

int seg_account(struct meta_txn *t, const struct data_loc *loc, int64_t live_delta)
{
    uint8_t k[8], v[16];
    MDB_val cur;
    uint64_t used = 0, live = 0;
    pl_put_be64(k, loc->seg);
    int rc = meta_get(t->txn, t->env, META_SEG, k, 8, &cur);
    if (rc && rc != PL_ENOENT)
        return rc;
    if (!rc) {
        if (cur.mv_size != 16)
            return PL_ECORRUPT;
        used = pl_get_le64(cur.mv_data);
        live = pl_get_le64((const uint8_t *)cur.mv_data + 8);
    } else {
        rc = meta_sys_add(t, "segments", 1);
        if (rc)
            return rc;
    }
    uint64_t end = loc->off + DATA_BLOCK_HDR + loc->stored_len;
    pl_put_le64(v, PL_MAX(used, end));
    pl_put_le64(v + 8, live + (uint64_t)live_delta);
    return meta_put(t, META_SEG, k, 8, v, 16);
}

int chunk_lookup(MDB_txn *txn, struct meta_env *env, const uint8_t fp[DATA_FP_LEN],
                 uint64_t *ret_refs, struct data_loc *ret_loc)
{
    MDB_val v;
    int rc = meta_get(txn, env, META_CHUNK, fp, DATA_FP_LEN, &v);
    if (rc)
        return rc;
    if (v.mv_size != CHUNK_VAL)
        return PL_ECORRUPT;
    if (ret_refs)
        *ret_refs = pl_get_le64(v.mv_data);
    return ret_loc ? data_loc_decode((const uint8_t *)v.mv_data + 8, DATA_LOC_ENC, ret_loc) : 0;
}

int chunk_names_copy(struct pl_store *st, const struct data_loc *loc,
                     const uint8_t fp[DATA_FP_LEN], uint64_t *ret_refs, struct data_loc *ret_cur)
{
    MDB_txn *txn;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = chunk_lookup(txn, st->meta, fp, ret_refs, ret_cur);
    meta_rtxn_end(txn);
    if (rc == PL_ENOENT)
        return 1; /* a copy no entry names: garbage */
    if (rc)
        return rc;
    return ret_cur->seg == loc->seg && ret_cur->off == loc->off ? 0 : 1;
}

int chunk_account(struct meta_txn *t, const struct data_loc *l, int sign)
{
    int rc = 0;
    if (l->codec == DATA_CODEC_DELTA) {
        rc = meta_sys_add(t, "delta_chunks", sign);
        if (!rc)
            rc = meta_sys_add(t, "delta_raw", sign * (int64_t)l->raw_len);
        if (!rc)
            rc = meta_sys_add(t, "delta_stored", sign * (int64_t)l->stored_len);
    }
    if (!rc && DATA_CODEC_IS_STAGED(l->codec))
        rc = meta_sys_add(t, "staged_raw", sign * (int64_t)l->raw_len);
    if (!rc)
        rc = meta_sys_add(t, "chunks", sign);
    if (!rc)
        rc = meta_sys_add(t, "chunk_raw", sign * (int64_t)l->raw_len);
    if (!rc)
        rc = meta_sys_add(t, "chunk_stored", sign * (int64_t)l->stored_len);
    if (!rc)
        rc = seg_account(t, l, sign * (int64_t)(DATA_BLOCK_HDR + l->stored_len));
    return rc;
}

int chunk_ref(struct meta_txn *t, const uint8_t fp[DATA_FP_LEN], const struct data_loc *loc,
              int *ret_new)
{
    uint8_t v[CHUNK_VAL];
    uint64_t refs;
    struct data_loc cur;
    MDB_val mv;
    if (ret_new)
        *ret_new = 0;
    int rc = meta_get(t->txn, t->env, META_CHUNK, fp, DATA_FP_LEN, &mv);
    if (rc == PL_ENOENT) {
        if (!loc)
            return PL_EAGAIN; /* purged after the caller's dedup lookup: re-append */
        pl_put_le64(v, 1);
        data_loc_encode(loc, v + 8);
        rc = meta_put(t, META_CHUNK, fp, DATA_FP_LEN, v, CHUNK_VAL);
        if (!rc && ret_new)
            *ret_new = 1;
        return rc ? rc : chunk_account(t, loc, 1);
    }
    if (rc)
        return rc;
    if (mv.mv_size != CHUNK_VAL)
        return PL_ECORRUPT;
    refs = pl_get_le64(mv.mv_data);
    rc = data_loc_decode((const uint8_t *)mv.mv_data + 8, DATA_LOC_ENC, &cur);
    if (rc)
        return rc;
    pl_put_le64(v, refs + 1);
    data_loc_encode(&cur, v + 8);
    rc = meta_put(t, META_CHUNK, fp, DATA_FP_LEN, v, CHUNK_VAL);
    if (!rc && refs == 0)
        rc = chunk_account(t, &cur, 1); /* revived */
    if (!rc && loc)
        rc = seg_account(t, loc, 0); /* our copy is garbage, but count its space */
    return rc;
}

int chunk_unref(struct meta_txn *t, const uint8_t fp[DATA_FP_LEN])
{
    uint8_t v[CHUNK_VAL];
    MDB_val mv;
    struct data_loc cur;
    int rc = meta_get(t->txn, t->env, META_CHUNK, fp, DATA_FP_LEN, &mv);
    if (rc == PL_ENOENT)
        return PL_ECORRUPT;
    if (rc)
        return rc;
    if (mv.mv_size != CHUNK_VAL)
        return PL_ECORRUPT;
    uint64_t refs = pl_get_le64(mv.mv_data);
    rc = data_loc_decode((const uint8_t *)mv.mv_data + 8, DATA_LOC_ENC, &cur);
    if (rc)
        return rc;
    if (refs == 0)
        return PL_ECORRUPT;
    pl_put_le64(v, refs - 1);
    data_loc_encode(&cur, v + 8);
    rc = meta_put(t, META_CHUNK, fp, DATA_FP_LEN, v, CHUNK_VAL);
    if (!rc && refs == 1)
        rc = chunk_account(t, &cur, -1);
    return rc;
}

#define PUNCH_BATCH 1024

int extent_punch(struct meta_txn *t, uint64_t id, uint64_t a, uint64_t b)
{
    uint64_t E;
    int rc = epoch_current(t, &E);
    if (rc)
        return rc;
    struct ext *batch = malloc(PUNCH_BATCH * sizeof(*batch));
    if (!batch)
        return PL_ENOMEM;
    uint64_t from = a > DATA_MAX_CHUNK ? a - DATA_MAX_CHUNK : 0;
    for (;;) {
        size_t n = 0;
        MDB_cursor *c = NULL;
        uint8_t k[24];
        rc = meta_err(mdb_cursor_open(t->txn, meta_dbi(t->env, META_EXTENT), &c));
        if (rc)
            break;
        MDB_val key = {key_extent(k, id, from, PL_EPOCH_INF), k}, val;
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
        while (!rc && n < PUNCH_BATCH) {
            const uint8_t *kp = key.mv_data, *vp = val.mv_data;
            if (key.mv_size != 24 || pl_get_be64(kp) != id)
                break;
            uint64_t s = pl_get_be64(kp + 8);
            if (s >= b)
                break;
            if (val.mv_size != EXT_VAL) {
                rc = PL_ECORRUPT;
                break;
            }
            uint32_t len = pl_get_le32(vp + 36);
            if (pl_get_le64(vp + 40) == PL_EPOCH_INF && s + len > a) {
                struct ext *x = &batch[n++];
                x->off = s;
                x->birth = ~pl_get_be64(kp + 16);
                memcpy(x->fp, vp, DATA_FP_LEN);
                x->choff = pl_get_le32(vp + 32);
                x->len = len;
            }
            rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
        }
        mdb_cursor_close(c);
        if (rc == PL_ENOENT)
            rc = 0;
        if (rc || n == 0)
            break;
        for (size_t i = 0; i < n && !rc; i++) {
            struct ext *x = &batch[i];
            uint64_t s = x->off, e = x->off + x->len;
            int cow;
            size_t kn = key_extent(k, id, s, x->birth);
            rc = epoch_must_cow(t, x->birth, &cow);
            if (rc)
                break;
            if (cow) {
                uint8_t v[EXT_VAL];
                ext_val(v, x->fp, x->choff, x->len, E);
                rc = meta_put(t, META_EXTENT, k, kn, v, EXT_VAL);
                if (!rc)
                    rc = grave_add(t, E, META_EXTENT, k, kn);
            } else {
                rc = meta_del(t, META_EXTENT, k, kn);
                if (!rc)
                    rc = chunk_unref(t, x->fp);
            }
            if (!rc && s < a)
                rc = ext_insert(t, id, s, E, x->fp, x->choff, (uint32_t)(a - s));
            if (!rc && e > b)
                rc = ext_insert(t, id, b, E, x->fp, x->choff + (uint32_t)(b - s),
                                (uint32_t)(e - b));
        }
        if (rc || n < PUNCH_BATCH)
            break;
        from = batch[n - 1].off + 1;
    }
    free(batch);
    return rc;
}

int extent_replace(struct meta_txn *t, struct elem *e, uint64_t a, uint64_t b,
                   const struct piece *pcs, size_t npcs)
{
    uint64_t E;
    int rc = epoch_current(t, &E);
    if (!rc)
        rc = extent_punch(t, e->a.id, a, b);
    for (size_t i = 0; i < npcs && !rc; i++) {
        const struct piece *p = &pcs[i];
        if (p->zero)
            continue;
        uint8_t k[24], v[EXT_VAL];
        rc = chunk_ref(t, p->fp, p->has_loc ? &p->loc : NULL, NULL);
        if (rc)
            break;
        ext_val(v, p->fp, 0, p->len, PL_EPOCH_INF);
        rc = meta_put(t, META_EXTENT, k, key_extent(k, e->a.id, p->off, E), v, EXT_VAL);
    }
    if (!rc && b > e->a.size) {
        if (!(e->flags & ELEM_F_STAGING))
            rc = meta_sys_add(t, "logical", (int64_t)(b - e->a.size));
        e->a.size = b;
    }
    return rc;
}

/* ---- fingerprint sets (open addressing) ---- */
struct fp_ent *fp_find(struct fp_map *m, const uint8_t *fp, int add)
{
    if (add && (m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 4096;
        struct fp_ent *nt = calloc(ncap, sizeof(*nt));
        if (!nt)
            return NULL;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->t[i].used)
                continue;
            size_t h = pl_get_le64(m->t[i].fp) & (ncap - 1);
            while (nt[h].used)
                h = (h + 1) & (ncap - 1);
            nt[h] = m->t[i];
        }
        free(m->t);
        m->t = nt;
        m->cap = ncap;
    }
    if (!m->cap)
        return NULL;
    size_t h = pl_get_le64(fp) & (m->cap - 1);
    while (m->t[h].used) {
        if (!memcmp(m->t[h].fp, fp, DATA_FP_LEN))
            return &m->t[h];
        h = (h + 1) & (m->cap - 1);
    }
    if (!add)
        return NULL;
    m->t[h].used = 1;
    memcpy(m->t[h].fp, fp, DATA_FP_LEN);
    m->n++;
    return &m->t[h];
}

/* ---- per-bucket usage ---- */
struct usage_walk {
    uint64_t *ids;
    size_t n, cap;
    struct pl_bucket_usage *u;
};

static int usage_obj(void *arg, const char *key, int is_prefix, const struct pl_attr *a)
{
    struct usage_walk *w = arg;
    (void)key;
    if (is_prefix || !a || a->type != PL_T_FILE)
        return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 1024;
        uint64_t *ids = realloc(w->ids, cap * sizeof(*ids));
        if (!ids)
            return 1; /* stops the walk; the caller sees the short count */
        w->ids = ids;
        w->cap = cap;
    }
    w->ids[w->n++] = a->id;
    w->u->objects++;
    w->u->logical_bytes += a->size;
    return 0;
}

/* Count the chunks of element id not seen yet in m. */
static int usage_elem(MDB_txn *txn, struct meta_env *env, uint64_t id, struct fp_map *m,
                      struct pl_bucket_usage *u)
{
    MDB_cursor *c;
    uint8_t k[24];
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(env, META_EXTENT), &c));
    if (rc)
        return rc;
    MDB_val key = {key_extent(k, id, 0, PL_EPOCH_INF), k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc && key.mv_size == 24 && pl_get_be64(key.mv_data) == id) {
        const uint8_t *vp = val.mv_data;
        struct data_loc loc;
        if (val.mv_size == EXT_VAL && pl_get_le64(vp + 40) == PL_EPOCH_INF) {
            if (!fp_find(m, vp, 0)) {
                if (!fp_find(m, vp, 1)) {
                    rc = PL_ENOMEM;
                    break;
                }
                if (chunk_lookup(txn, env, vp, NULL, &loc) == 0) {
                    u->unique_bytes += loc.raw_len;
                    u->stored_bytes += loc.stored_len;
                    if (loc.codec == DATA_CODEC_DELTA) {
                        u->delta_chunks++;
                        u->delta_raw += loc.raw_len;
                        u->delta_stored += loc.stored_len;
                    }
                }
            }
        }
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc == PL_ENOENT ? 0 : rc;
}

int pl_bucket_usage(struct pl_store *st, const char *bucket, struct pl_bucket_usage *ret)
{
    struct usage_walk w = {NULL, 0, 0, ret};
    struct fp_map m = {0};
    MDB_txn *txn;
    memset(ret, 0, sizeof(*ret));
    int rc = pl_obj_list(st, bucket, "", "", 0, PL_VIEW_LIVE, usage_obj, &w);
    if (!rc && w.n < ret->objects)
        rc = PL_ENOMEM;
    if (!rc)
        rc = meta_rtxn_begin(st->meta, &txn);
    if (!rc) {
        for (size_t i = 0; i < w.n && !rc; i++)
            rc = usage_elem(txn, st->meta, w.ids[i], &m, ret);
        meta_rtxn_end(txn);
    }
    if (!rc)
        ret->delta_saved = delta_saved_estimate(ret->unique_bytes, ret->stored_bytes,
                                                ret->delta_raw, ret->delta_stored);
    free(w.ids);
    free(m.t);
    return rc;
}

/* ---- write preparation: chunk, fingerprint, dedup, append ---- */
static int segs_add(struct pl_store *st, struct seg_set *s, uint64_t id)
{
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] == id)
            return 0;
    if (s->n == (int)PL_ARRAY_LEN(s->ids)) {
        int rc = store_sync_segs(st, s); /* make room: these are durable now */
        if (rc)
            return rc;
        s->n = 0;
    }
    s->ids[s->n++] = id;
    return 0;
}

int store_sync_segs(struct pl_store *st, const struct seg_set *segs)
{
    for (int i = 0; i < segs->n; i++) {
        int rc = data_sync(st->data, segs->ids[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int store_ref_get(struct pl_store *st, const uint8_t fp[DATA_FP_LEN], const struct data_loc *loc,
                  struct hot_chunk **ret, const uint8_t **ret_data, size_t *ret_n)
{
    const uint8_t *d = hot_get(st->hot, fp, ret_n, ret);
    if (d) {
        *ret_data = d;
        return 0;
    }
    int rc = PL_ENOENT;
    for (int attempt = 0; attempt < 3 && rc == PL_ENOENT; attempt++) {
        struct data_loc rl;
        if (loc && attempt == 0) {
            rl = *loc;
        } else {
            MDB_txn *txn;
            rc = meta_rtxn_begin(st->meta, &txn);
            if (rc)
                return rc;
            rc = chunk_lookup(txn, st->meta, fp, NULL, &rl);
            meta_rtxn_end(txn);
            if (rc == PL_ENOENT)
                return PL_ECORRUPT; /* a delta outlived its reference: never should */
            if (rc)
                return rc;
        }
        if (rl.codec == DATA_CODEC_DELTA)
            return PL_ECORRUPT; /* references are whole chunks */
        struct hot_chunk *h;
        uint8_t *buf;
        rc = hot_alloc(rl.raw_len, &h, &buf);
        if (rc)
            return rc;
        rc = data_chunk_read(st->data, &rl, fp, buf);
        if (rc) {
            hot_put(h); /* ENOENT: it moved under compaction; look again */
            continue;
        }
        hot_insert(st->hot, fp, h);
        *ret = h;
        *ret_data = buf;
        *ret_n = rl.raw_len;
    }
    return rc;
}

static int chunk_read(struct pl_store *st, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN],
                      void *out, int cached)
{
    struct hot_chunk *h = NULL;
    size_t n;
    const uint8_t *d = cached ? hot_peek(st->hot, fp, &n, &h) : NULL;
    if (d) {
        int rc = n == loc->raw_len ? 0 : PL_ECORRUPT;
        if (!rc)
            memcpy(out, d, n);
        hot_put(h);
        return rc;
    }
    if (loc->codec != DATA_CODEC_DELTA)
        return data_chunk_read(st->data, loc, fp, out);
    uint8_t rfp[DATA_FP_LEN], *blk;
    int rc = data_delta_load(st->data, loc, fp, &blk, rfp);
    if (rc)
        return rc;
    rc = store_ref_get(st, rfp, NULL, &h, &d, &n);
    if (!rc)
        rc = data_delta_decode(st->data, loc, blk, d, n, out);
    hot_put(h);
    free(blk);
    return rc;
}

int store_chunk_read(struct pl_store *st, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN],
                     void *out)
{
    return chunk_read(st, loc, fp, out, 1);
}

int store_chunk_read_stored(struct pl_store *st, const struct data_loc *loc,
                            const uint8_t fp[DATA_FP_LEN], void *out)
{
    return chunk_read(st, loc, fp, out, 0);
}

/* Fingerprinting runs on the caller and a pool worker when there is this
 * much: SHA-256 is the largest cost of an acknowledgment, and on a small
 * machine the other core is often idle while a connection prepares. */
#define PREP_SHARE_MIN (512u << 10)

struct fp_share {
    struct piece *p;
    const uint8_t *buf;
    uint64_t base;
};

static void piece_fingerprint(void *arg, int i)
{
    struct fp_share *f = arg;
    struct piece *p = &f->p[i];
    const uint8_t *d = f->buf + (p->off - f->base);
    p->zero = data_is_zero(d, p->len); /* a hole: no chunk, reads back as zeros */
    if (!p->zero)
        data_fingerprint(d, p->len, p->fp);
}

int store_prepare(struct pl_store *st, uint64_t base, const uint8_t *buf, size_t n, int final,
                  struct prep *pr, size_t *ret_used)
{
    MDB_txn *txn = NULL;
    size_t used = 0, first = pr->n;
    int rc = 0;
    /* cut, fingerprint, dedup, append what is new as it is: encoding waits
     * for destage, off the acknowledgment path */
    while (used < n) {
        size_t len = data_cdc_cut(&st->cdc, buf + used, n - used, final);
        if (len == 0)
            break;
        if (pr->n == pr->cap) {
            size_t cap = pr->cap ? pr->cap * 2 : 64;
            struct piece *np = realloc(pr->p, cap * sizeof(*np));
            if (!np)
                return PL_ENOMEM;
            pr->p = np;
            pr->cap = cap;
        }
        struct piece *p = &pr->p[pr->n++];
        memset(p, 0, sizeof(*p));
        p->off = base + used;
        p->len = (uint32_t)len;
        used += len;
    }
    struct fp_share f = {pr->p + first, buf, base};
    int np = (int)(pr->n - first);
    pl_pool_share(st->pool, used >= PREP_SHARE_MIN ? 1 : 0, np, piece_fingerprint, &f);
    /* which pieces are new: not stored yet, nor earlier in this write
     * (dup[k] - 1 names that earlier piece of this call) */
    size_t *dup = calloc((size_t)np + 1, sizeof(*dup)), nnew = 0;
    uint8_t *isnew = calloc((size_t)np + 1, 1);
    struct data_stage_in *in = malloc(((size_t)np + 1) * sizeof(*in));
    struct data_loc *locs = malloc(((size_t)np + 1) * sizeof(*locs));
    if (!dup || !isnew || !in || !locs) {
        rc = PL_ENOMEM;
        goto out;
    }
    rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        goto out;
    for (size_t k = first; k < pr->n; k++) {
        struct piece *p = &pr->p[k];
        if (p->zero)
            continue;
        rc = chunk_lookup(txn, st->meta, p->fp, NULL, NULL);
        if (rc == 0)
            continue;
        if (rc != PL_ENOENT)
            break;
        rc = 0;
        for (size_t i = 0; i < k && !p->has_loc && !dup[k - first]; i++) {
            const struct piece *q = &pr->p[i];
            if (memcmp(q->fp, p->fp, DATA_FP_LEN))
                continue;
            if (q->has_loc) {
                p->loc = q->loc; /* staged by an earlier call of this write */
                p->has_loc = 1;
            } else if (i >= first && isnew[i - first]) {
                dup[k - first] = i + 1;
            }
        }
        if (!p->has_loc && !dup[k - first]) {
            isnew[k - first] = 1;
            in[nnew++] = (struct data_stage_in){p->fp, buf + (p->off - base), p->len};
        }
    }
    meta_rtxn_end(txn);
    if (rc)
        goto out;
    /* the new chunks back to back in the buffer, then their places */
    rc = data_chunks_stage(st->data, in, nnew, pr->keep_raw, locs);
    for (size_t k = first, j = 0; !rc && k < pr->n; k++) {
        struct piece *p = &pr->p[k];
        if (isnew[k - first]) {
            p->loc = locs[j++];
            p->has_loc = 1;
            rc = segs_add(st, &pr->segs, p->loc.seg);
        }
    }
    for (size_t k = first; !rc && k < pr->n; k++)
        if (dup[k - first]) {
            pr->p[k].loc = pr->p[dup[k - first] - 1].loc; /* share the one copy */
            pr->p[k].has_loc = 1;
        }
    if (!rc)
        *ret_used = used;
out:
    free(dup);
    free(isnew);
    free(in);
    free(locs);
    return rc;
}

void prep_release(struct prep *pr)
{
    free(pr->p);
    memset(pr, 0, sizeof(*pr));
}

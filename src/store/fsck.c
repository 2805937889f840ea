/* fsck: walk every record and chunk and check them against each other.
 * Checks: dirents name live elements of the same type; link counts equal the
 * names found (files) or 2 + subdirectories (directories); live files have a
 * name; every extent names an indexed chunk; every chunk's refcount equals the
 * extent records naming it plus the deltas made against it; every live chunk
 * reads back and verifies. */
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>

struct link_count {
    uint64_t id, n;
};

static int lc_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct link_count *)a)->id, y = ((const struct link_count *)b)->id;
    return x < y ? -1 : x > y;
}

/* Names found for id in the sorted list (one entry per name). */
static uint64_t lc_count(const struct link_count *lc, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lc[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t c = 0;
    for (; lo < n && lc[lo].id == id; lo++)
        c += lc[lo].n;
    return c;
}

struct fsck {
    struct pl_store *st;
    pl_fsck_fn problem;
    void *arg;
    int count;
};

static void report(struct fsck *f, uint64_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct fsck *f, uint64_t id, const char *fmt, ...)
{
    char where[PL_PATH_MAX], what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(ap);
    if (!id || pl_elem_path(f->st, id, where, sizeof(where)))
        snprintf(where, sizeof(where), id ? "element %llu" : "store", (unsigned long long)id);
    f->count++;
    if (f->problem)
        f->problem(f->arg, where, what);
}

/* The walk reads one snapshot of the index while destage and compaction go
 * on: a chunk they moved is read where it is now (1: it is gone). */
static int chunk_read_moved(struct pl_store *st, const uint8_t *fp, struct data_loc *loc,
                            uint8_t *scratch)
{
    MDB_txn *txn;
    uint64_t refs = 0;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = chunk_lookup(txn, st->meta, fp, &refs, loc);
    meta_rtxn_end(txn);
    if (rc == PL_ENOENT || (!rc && !refs))
        return 1;
    return rc ? rc : store_chunk_read_stored(st, loc, fp, scratch);
}

int pl_store_fsck(struct pl_store *st, pl_fsck_fn problem, pl_progress_fn progress, void *arg)
{
    struct fsck f = {st, problem, arg, 0};
    struct fp_map m = {0};
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    uint8_t *scratch = malloc(DATA_MAX_CHUNK);
    int rc;
    if (!scratch)
        return PL_ENOMEM;
    rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        goto out;
    /* 1. extents: count references per chunk */
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_EXTENT), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        if (k.mv_size != 24 || v.mv_size != 48) {
            report(&f, 0, "malformed extent record");
        } else {
            struct fp_ent *e = fp_find(&m, v.mv_data, 1);
            if (!e) {
                rc = PL_ENOMEM;
                break;
            }
            if (!e->refs)
                e->first_id = pl_get_be64(k.mv_data);
            e->refs++;
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    c = NULL;
    if (rc != PL_ENOENT)
        goto out;
    /* 1b. a delta holds a reference to the chunk it was made against */
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_CHUNK), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct data_loc loc;
        uint8_t ref[DATA_FP_LEN];
        if (k.mv_size == DATA_FP_LEN && v.mv_size == 8 + DATA_LOC_ENC &&
            !data_loc_decode((const uint8_t *)v.mv_data + 8, DATA_LOC_ENC, &loc) &&
            loc.codec == DATA_CODEC_DELTA) {
            if (data_delta_ref(st->data, &loc, ref)) {
                char hex[2 * DATA_FP_LEN + 1];
                pl_hex(k.mv_data, DATA_FP_LEN, hex);
                report(&f, 0, "delta chunk %.16s: cannot read its reference", hex);
            } else {
                struct fp_ent *e = fp_find(&m, ref, 1);
                if (!e) {
                    rc = PL_ENOMEM;
                    break;
                }
                e->refs++;
            }
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    c = NULL;
    if (rc != PL_ENOENT)
        goto out;
    /* 2. chunks: refcounts, then read and verify each live one */
    uint64_t total = 0, done = 0;
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_CHUNK), &c));
    if (rc)
        goto out;
    MDB_stat ms;
    if (mdb_stat(txn, meta_dbi(st->meta, META_CHUNK), &ms) == 0)
        total = ms.ms_entries;
    rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct data_loc loc;
        char hex[2 * DATA_FP_LEN + 1];
        pl_hex(k.mv_data, PL_MIN(k.mv_size, (size_t)DATA_FP_LEN), hex);
        if (k.mv_size != DATA_FP_LEN || v.mv_size != 8 + DATA_LOC_ENC ||
            data_loc_decode((const uint8_t *)v.mv_data + 8, DATA_LOC_ENC, &loc)) {
            report(&f, 0, "chunk %.16s: malformed index entry", hex);
        } else {
            uint64_t refs = pl_get_le64(v.mv_data);
            struct fp_ent *e = fp_find(&m, k.mv_data, 0);
            uint64_t want = e ? e->refs : 0;
            if (e)
                e->used = 2; /* seen in the index */
            if (refs != want)
                report(&f, e ? e->first_id : 0, "chunk %.16s: refcount %llu, %llu references",
                       hex, (unsigned long long)refs, (unsigned long long)want);
            if (refs) {
                int r = store_chunk_read_stored(st, &loc, k.mv_data, scratch);
                if (r == PL_ENOENT)
                    r = chunk_read_moved(st, k.mv_data, &loc, scratch);
                if (r == 1)
                    r = 0; /* freed since the walk began: nothing to verify */
                else if (r == 0) {
                    uint8_t fp[DATA_FP_LEN];
                    data_fingerprint(scratch, loc.raw_len, fp);
                    if (memcmp(fp, k.mv_data, DATA_FP_LEN))
                        r = PL_ECORRUPT;
                }
                if (r)
                    report(&f, e ? e->first_id : 0,
                           "chunk %.16s (segment %llu offset %llu): %s", hex,
                           (unsigned long long)loc.seg, (unsigned long long)loc.off,
                           pl_strerror(r));
            }
        }
        done++;
        if (progress && (done % 256 == 0 || done == total))
            progress(arg, done, total);
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    c = NULL;
    if (rc != PL_ENOENT)
        goto out;
    for (size_t i = 0; i < m.cap; i++)
        if (m.t[i].used == 1) {
            char hex[2 * DATA_FP_LEN + 1];
            pl_hex(m.t[i].fp, DATA_FP_LEN, hex);
            report(&f, m.t[i].first_id, "extent names missing chunk %.16s", hex);
        }
    /* 3. live directory entries: target exists, types agree; count names */
    struct link_count *lc = NULL;
    size_t nlc = 0, caplc = 0;
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_DIRENT), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        if (k.mv_size < 18 || v.mv_size != 17) {
            report(&f, 0, "malformed directory entry");
        } else if (pl_get_le64((const uint8_t *)v.mv_data + 9) == PL_EPOCH_INF) {
            struct elem e;
            elem_init(&e);
            uint64_t id = pl_get_le64(v.mv_data);
            uint8_t type = ((const uint8_t *)v.mv_data)[8];
            int r = elem_get(txn, st->meta, id, PL_VIEW_LIVE, &e);
            if (r)
                report(&f, pl_get_be64(k.mv_data), "entry \"%.*s\" names missing element %llu",
                       (int)(k.mv_size - 17), (const char *)k.mv_data + 8,
                       (unsigned long long)id);
            else if (e.a.type != type)
                report(&f, id, "entry type differs from element type");
            elem_release(&e);
            /* a name counts toward its element; a subdirectory toward its parent */
            if (nlc + 2 > caplc) {
                caplc = caplc ? caplc * 2 : 1024;
                struct link_count *n2 = realloc(lc, caplc * sizeof(*lc));
                if (!n2) {
                    rc = PL_ENOMEM;
                    break;
                }
                lc = n2;
            }
            if (type != PL_T_DIR)
                lc[nlc++] = (struct link_count){id, 1};
            else
                lc[nlc++] = (struct link_count){pl_get_be64(k.mv_data), 1};
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    c = NULL;
    if (rc != PL_ENOENT) {
        free(lc);
        goto out;
    }
    if (nlc)
        qsort(lc, nlc, sizeof(*lc), lc_cmp);
    /* 4. live elements: link counts agree with the names found */
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_ELEM), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct elem e;
        elem_init(&e);
        if (k.mv_size != 16 ||
            elem_decode(pl_get_be64(k.mv_data), ~pl_get_be64((const uint8_t *)k.mv_data + 8),
                        v.mv_data, v.mv_size, &e)) {
            report(&f, 0, "malformed element record");
        } else if (e.death == PL_EPOCH_INF && !(e.flags & ELEM_F_STAGING)) {
            uint64_t names = lc_count(lc, nlc, e.a.id);
            uint64_t want = e.a.type == PL_T_DIR ? 2 + names : names;
            if (e.a.id != PL_ROOT_ID && e.a.type != PL_T_DIR && names == 0)
                report(&f, e.a.id, "element %llu has no name (orphan)",
                       (unsigned long long)e.a.id);
            else if (e.a.nlink != want)
                report(&f, e.a.id, "link count %u, expected %llu", e.a.nlink,
                       (unsigned long long)want);
        }
        elem_release(&e);
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    free(lc);
    mdb_cursor_close(c);
    c = NULL;
    if (rc == PL_ENOENT)
        rc = 0;
    /* 5. stripes: every strip present and whole (reads survive m bad ones,
     * but each needs a repair: scrub or rebuild) */
    rc = rc ? rc : meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_STRIPE), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct data_geom g;
        uint64_t seg = k.mv_size == 8 ? pl_get_be64(k.mv_data) : 0;
        if (!seg || data_geom_decode(v.mv_data, v.mv_size, &g)) {
            report(&f, 0, "malformed stripe record");
        } else {
            for (int i = 0; i < g.k + g.m; i++) {
                int r = data_strip_check(st->data, seg, i);
                if (r)
                    report(&f, 0, "segment %016llx: strip %d on capacity device %u is %s",
                           (unsigned long long)seg, i, g.dev[i],
                           r == PL_ECORRUPT ? "corrupt" : "missing");
            }
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    if (rc == PL_ENOENT)
        rc = 0;
out:
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    free(m.t);
    free(scratch);
    return rc ? rc : f.count;
}

/* ---- paths for reports ---- */
struct find_name {
    uint64_t id;
    char name[PL_NAME_MAX + 1];
    int found;
};

static int find_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct find_name *f = arg;
    if (a->id != f->id)
        return 0;
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->found = 1;
    return 1;
}

int pl_elem_path(struct pl_store *st, uint64_t id, char *buf, size_t n)
{
    char tmp[PL_PATH_MAX];
    size_t len = 0;
    tmp[0] = 0;
    for (int depth = 0; id != PL_ROOT_ID; depth++) {
        struct pl_attr a;
        struct find_name f = {id, "", 0};
        if (depth > 512)
            return PL_ELOOP;
        int rc = pl_elem_getattr(st, id, PL_VIEW_LIVE, &a);
        if (!rc)
            rc = pl_dir_read(st, a.parent, PL_VIEW_LIVE, "", find_cb, &f);
        if (rc)
            return rc;
        if (!f.found)
            return PL_ENOENT;
        size_t nl = strlen(f.name);
        if (nl + 1 + len >= sizeof(tmp))
            return PL_ENAMETOOLONG;
        memmove(tmp + nl + 1, tmp, len + 1);
        tmp[0] = '/';
        memcpy(tmp + 1, f.name, nl);
        len += nl + 1;
        id = a.parent;
    }
    if (len + 1 > n)
        return PL_ERANGE;
    memcpy(buf, len ? tmp : "/", len ? len + 1 : 2);
    return 0;
}

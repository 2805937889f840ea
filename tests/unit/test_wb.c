/* The write-back of NFS and FUSE writes against a model: small writes at
 * random offsets, overlapping, from two threads to two files, settled now and
 * then, on a real store. Scattered writes are stored many per transaction by
 * two flushers at once; every byte must end up as its last write made it.
 * And the choice of batches written together, on a queue built by hand. */
#include <pthread.h>

#include "plenum/store.h"
#include "store/store_int.h"
#include "testutil.h"
/* the flusher's choice of what to write together is tested on its own */
#include "../../src/proto/wb/wb.c"

#define REGION (512u << 10)
#define WRITES 20000

struct scatter {
    struct wb *w;
    struct pl_store *st;
    uint64_t id, seed;
    uint8_t *model;
    uint64_t end;
    int rc;
};

static void *scatter_main(void *arg)
{
    struct scatter *s = arg;
    uint8_t buf[4096];
    for (int i = 0; i < WRITES && !s->rc; i++) {
        size_t n = 1 + (size_t)(tu_rand(&s->seed) % sizeof(buf));
        uint64_t off = tu_rand(&s->seed) % (REGION - n);
        memset(buf, i % 251 + 1, n);
        s->rc = wb_write(s->w, s->id, off, buf, n);
        memcpy(s->model + off, buf, n);
        s->end = PL_MAX(s->end, off + n);
        if (!s->rc && i % 5000 == 4999)
            s->rc = wb_settle(s->w, s->id);
    }
    if (!s->rc)
        s->rc = wb_settle(s->w, s->id);
    return NULL;
}

static void test_scattered_writes(void **state)
{
    struct fix *f = *state;
    struct wb *w;
    struct scatter s[2];
    pthread_t t[2];
    assert_int_equal(wb_new(f->st, "test", NULL, &w), 0);
    for (int k = 0; k < 2; k++) {
        struct pl_attr a;
        char name[16];
        snprintf(name, sizeof(name), "f%d", k);
        assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, name, 0644, 0, 0, 1, &a), 0);
        s[k] = (struct scatter){w, f->st, a.id, (uint64_t)k + 1, calloc(1, REGION), 0, 0};
        assert_int_equal(pthread_create(&t[k], NULL, scatter_main, &s[k]), 0);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(s[k].rc, 0);
        struct pl_attr a;
        assert_int_equal(pl_elem_getattr(f->st, s[k].id, PL_VIEW_LIVE, &a), 0);
        assert_int_equal(a.size, s[k].end);
        uint8_t *out = malloc(REGION);
        size_t got = 0;
        assert_int_equal(pl_elem_read(f->st, s[k].id, PL_VIEW_LIVE, 0, out, REGION, &got), 0);
        assert_int_equal(got, s[k].end);
        assert_memory_equal(out, s[k].model, got);
        free(out);
        free(s[k].model);
    }
    wb_free(w);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
}

struct placed {
    uint64_t seg, off, pos; /* where the chunk lies; pos: bytes stored before it */
    uint32_t len;
};

static int placed_cmp(const void *a, const void *b)
{
    const struct placed *x = a, *y = b;
    if (x->seg != y->seg)
        return x->seg < y->seg ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* A file written front to back through the write-back lies on disk in about
 * that order: reading it in order, the stored byte it needs next is never far
 * behind the furthest one it has needed (a read-ahead of the stripes reads
 * forward from there). Long groups written side by side by the two flushers
 * put it 55-112 MiB behind; batches written one by one, 15 MiB at most. */
static void test_stream_stays_in_order(void **state)
{
    struct fix *f = *state;
    const size_t piece = 1u << 20, total = 192u << 20;
    struct wb *w;
    struct pl_attr a;
    uint64_t seed = 7;
    uint8_t *buf = malloc(piece);
    assert_int_equal(wb_new(f->st, "test", NULL, &w), 0);
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "stream", 0644, 0, 0, 1, &a), 0);
    for (size_t off = 0; off < total; off += piece) {
        for (size_t i = 0; i < piece; i += 8) {
            uint64_t r = tu_rand(&seed);
            memcpy(buf + i, &r, 8); /* no two chunks alike: nothing deduplicated */
        }
        assert_int_equal(wb_write(w, a.id, off, buf, piece), 0);
    }
    assert_int_equal(wb_settle(w, a.id), 0);
    wb_free(w);
    free(buf);

    /* the chunks in file order, with where each lies */
    struct meta_env *env = f->st->meta;
    size_t n = 0, cap = 4096;
    struct placed *order = malloc(cap * sizeof(*order));
    MDB_txn *txn;
    MDB_cursor *c;
    uint8_t k[24];
    assert_int_equal(meta_rtxn_begin(env, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, meta_dbi(env, META_EXTENT), &c), 0);
    MDB_val key = {key_extent(k, a.id, 0, PL_EPOCH_INF), k}, val;
    int rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
    while (!rc && key.mv_size == 24 && pl_get_be64(key.mv_data) == a.id) {
        struct data_loc loc;
        assert_int_equal(chunk_lookup(txn, env, val.mv_data, NULL, &loc), 0);
        if (n == cap)
            order = realloc(order, (cap *= 2) * sizeof(*order));
        order[n++] = (struct placed){loc.seg, loc.off, 0, loc.stored_len};
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(c);
    meta_rtxn_end(txn);
    assert_true(n > 96);
    /* each chunk's position among all of them as they lie */
    struct placed *laid = malloc(n * sizeof(*laid));
    memcpy(laid, order, n * sizeof(*laid));
    qsort(laid, n, sizeof(*laid), placed_cmp);
    uint64_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        laid[i].pos = pos;
        pos += laid[i].len;
    }
    uint64_t furthest = 0, lag = 0;
    for (size_t i = 0; i < n; i++) {
        struct placed *p = bsearch(&order[i], laid, n, sizeof(*laid), placed_cmp);
        assert_non_null(p);
        furthest = PL_MAX(furthest, p->pos);
        lag = PL_MAX(lag, furthest - p->pos);
    }
    assert_true(lag < 5 * (uint64_t)WB_BATCH);
    free(laid);
    free(order);
}

/* Which queued batches join b's transaction. */
static void test_gather(void **state)
{
    (void)state;
    struct wb w = {0};
    struct wb_file f = {.id = 1}, g = {.id = 2};
    struct wb_batch q[] = {
        {.f = &f, .off = 0, .len = 100, .busy = 1},   /* 0: another flusher's */
        {.f = &f, .off = 5000, .len = 100},            /* 1: waiting, before b */
        {.f = &f, .off = 200, .len = 100, .busy = 1}, /* 2: b */
        {.f = &f, .off = 50, .len = 10},               /* 3: over 0: stays out */
        {.f = &f, .off = 400, .len = 10},              /* 4: joins */
        {.f = &f, .off = 55, .len = 5},                /* 5: over 3, which stays out */
        {.f = &g, .off = 400, .len = 10},              /* 6: another file */
        {.f = &f, .off = 5050, .len = 10},             /* 7: over 1, written after */
        {.f = &f, .off = 405, .len = 100},             /* 8: over 4, a member: joins */
        {.f = &f, .amask = PL_SET_MODE},               /* 9: ends the group */
        {.f = &f, .off = 900, .len = 10},              /* 10: after the change */
    };
    size_t nq = sizeof(q) / sizeof(q[0]);
    for (size_t i = 0; i + 1 < nq; i++)
        q[i].next = &q[i + 1];
    w.head = &q[0];
    w.tail = &q[nq - 1];
    struct wb_batch **grp;
    size_t n = batch_gather(&w, &q[2], &grp);
    assert_int_equal(n, 2);
    assert_ptr_equal(grp[0], &q[4]);
    assert_ptr_equal(grp[1], &q[8]);
    assert_true(q[4].busy && q[8].busy && !q[3].busy && !q[5].busy && !q[7].busy);
    free(grp);
    /* a batch another flusher holds after b stays out, and so does what overlaps it */
    q[4].busy = 0;
    q[8].busy = 0;
    q[4].busy = 1; /* now another flusher's */
    n = batch_gather(&w, &q[2], &grp);
    assert_int_equal(n, 0);
    free(grp);
    /* a big batch (a sequential stream's) is written alone, and is left out of groups */
    q[4].busy = 0;
    q[4].len = WB_ALONE;
    n = batch_gather(&w, &q[2], &grp);
    assert_int_equal(n, 0); /* 4 stays out, and 8, over it, with it */
    free(grp);
    q[4].len = 10;
    q[2].len = WB_ALONE;
    n = batch_gather(&w, &q[2], &grp);
    assert_int_equal(n, 0);
    free(grp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scattered_writes, setup, teardown),
        cmocka_unit_test(test_gather),
        cmocka_unit_test_setup_teardown(test_stream_stays_in_order, setup, teardown),
    };
    return cmocka_run_group_tests_name("wb", tests, NULL, NULL);
}

#include <time.h>

#include "store/store_int.h"
#include "testutil.h"

static void put(struct pl_store *st, const char *k, const void *p, size_t n, struct pl_attr *a)
{
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, "snp", k, &w), 0);
    assert_int_equal(pl_writer_write(w, p, n), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, a), 0);
}

static void expect(struct pl_store *st, const char *k, uint64_t view, const void *p, size_t n)
{
    struct pl_attr a;
    uint8_t *out = malloc(n + 1);
    size_t got;
    assert_int_equal(pl_obj_lookup(st, "snp", k, view, &a), 0);
    assert_int_equal(a.size, n);
    assert_int_equal(pl_elem_read(st, a.id, view, 0, out, n + 1, &got), 0);
    assert_int_equal(got, n);
    assert_memory_equal(out, p, n);
    free(out);
}

static void test_snapshot_views(void **state)
{
    struct fix *f = *state;
    struct pl_snap_info s1, s2;
    struct pl_attr a, fa;
    size_t n = 1u << 20;
    uint8_t *v1 = malloc(n), *v2 = malloc(n);
    tu_fill(v1, n, 1);
    tu_fill(v2, n, 2);
    assert_int_equal(pl_bucket_create(f->st, "snp"), 0);
    put(f->st, "keep", "same", 4, &a);
    put(f->st, "obj", v1, n, &a);
    put(f->st, "gone", "bye", 3, &a);
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "file", 0644, 0, 0, 1, &fa), 0);
    assert_int_equal(pl_elem_write(f->st, fa.id, 0, v1, n), 0);
    assert_int_equal(pl_snap_create(f->st, "s1", &s1), 0);
    assert_int_equal(pl_snap_create(f->st, "s1", NULL), PL_EEXIST);
    assert_int_equal(pl_snap_create(f->st, "a/b", NULL), PL_EINVAL);
    /* after s1: replace, delete, overwrite in the middle, create */
    put(f->st, "obj", v2, n, &a);
    assert_int_equal(pl_obj_delete(f->st, "snp", "gone"), 0);
    assert_int_equal(pl_elem_write(f->st, fa.id, 1000, v2, 5000), 0);
    put(f->st, "new", "fresh", 5, &a);
    struct pl_attr in = {.mode = 0600};
    assert_int_equal(pl_elem_setattr(f->st, fa.id, PL_SET_MODE, &in, NULL), 0);
    assert_int_equal(pl_snap_create(f->st, "s2", &s2), 0);
    assert_true(s2.epoch > s1.epoch);
    /* live view */
    expect(f->st, "obj", PL_VIEW_LIVE, v2, n);
    assert_int_equal(pl_obj_lookup(f->st, "snp", "gone", PL_VIEW_LIVE, &a), PL_ENOENT);
    /* s1 sees the past */
    expect(f->st, "obj", s1.epoch, v1, n);
    expect(f->st, "gone", s1.epoch, "bye", 3);
    expect(f->st, "keep", s1.epoch, "same", 4);
    assert_int_equal(pl_obj_lookup(f->st, "snp", "new", s1.epoch, &a), PL_ENOENT);
    uint8_t *out = malloc(n);
    size_t got;
    assert_int_equal(pl_elem_read(f->st, fa.id, s1.epoch, 0, out, n, &got), 0);
    assert_memory_equal(out, v1, n);
    assert_int_equal(pl_elem_getattr(f->st, fa.id, s1.epoch, &a), 0);
    assert_int_equal(a.mode, 0644);
    assert_int_equal(pl_elem_read(f->st, fa.id, PL_VIEW_LIVE, 0, out, n, &got), 0);
    assert_memory_equal(out + 1000, v2, 5000);
    assert_memory_equal(out, v1, 1000);
    /* s2 sees the state between */
    expect(f->st, "obj", s2.epoch, v2, n);
    expect(f->st, "new", s2.epoch, "fresh", 5);
    /* deleting s1 frees what only it saw; s2 and live stay intact */
    struct pl_store_stats before, after;
    assert_int_equal(pl_store_stats(f->st, &before), 0);
    assert_int_equal(pl_snap_delete(f->st, "s1"), 0);
    assert_int_equal(pl_snap_delete(f->st, "s1"), PL_ENOSNAP);
    uint64_t freed;
    assert_int_equal(pl_store_gc(f->st, &freed), 0);
    assert_int_equal(pl_store_stats(f->st, &after), 0);
    assert_true(after.unique_bytes < before.unique_bytes);
    expect(f->st, "obj", s2.epoch, v2, n);
    expect(f->st, "obj", PL_VIEW_LIVE, v2, n);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    assert_int_equal(pl_snap_delete(f->st, "s2"), 0);
    assert_int_equal(pl_store_gc(f->st, &freed), 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(v1);
    free(v2);
    free(out);
}

/* ---- O(1) snapshot creation on a large namespace ---- */
struct bulk {
    uint64_t dir;
    int from, to;
};

static int apply_bulk(struct meta_txn *t, void *arg)
{
    struct bulk *b = arg;
    for (int i = b->from; i < b->to; i++) {
        char name[32];
        snprintf(name, sizeof(name), "f%08d", i);
        struct mk_args a = {b->dir, name, PL_T_FILE, 0644, 0, 0, 1, NULL, 0, {0}};
        int rc = store_mk(t, &a);
        if (rc)
            return rc;
    }
    return 0;
}

static uint64_t db_entries(struct pl_store *st)
{
    MDB_txn *txn;
    uint64_t total = 0;
    assert_int_equal(meta_rtxn_begin(st->meta, &txn), 0);
    for (int d = 0; d < META_DB_COUNT; d++) {
        MDB_stat s;
        assert_int_equal(mdb_stat(txn, meta_dbi(st->meta, (enum meta_db)d), &s), 0);
        total += s.ms_entries;
    }
    meta_rtxn_end(txn);
    return total;
}

static double snap_seconds(struct pl_store *st, const char *name, uint64_t *ret_new_records)
{
    uint64_t before = db_entries(st);
    uint64_t t0 = pl_mono_ns();
    assert_int_equal(pl_snap_create(st, name, NULL), 0);
    double s = (double)(pl_mono_ns() - t0) / 1e9;
    *ret_new_records = db_entries(st) - before;
    return s;
}

static void test_snapshot_is_o1(void **state)
{
    struct fix *f = *state;
    const char *big = getenv("PLENUM_TEST_BIG");
    int total = big && *big == '1' ? 1000000 : 100000;
    struct pl_attr d;
    assert_int_equal(pl_elem_mkdir(f->st, PL_ROOT_ID, "many", 0755, 0, 0, &d), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(pl_elem_create(f->st, d.id, "small", 0644, 0, 0, 0, NULL), 0);
    uint64_t rec_small, rec_big;
    assert_int_equal(pl_snap_create(f->st, "warm", NULL), 0); /* creates the counters */
    double t_small = snap_seconds(f->st, "small", &rec_small);
    for (int from = 0; from < total; from += 50000) {
        struct bulk b = {d.id, from, PL_MIN(from + 50000, total)};
        assert_int_equal(meta_submit(f->st->meta, apply_bulk, &b), 0);
    }
    struct pl_store_stats s;
    assert_int_equal(pl_store_stats(f->st, &s), 0);
    assert_true(s.elements >= (uint64_t)total);
    double t_big = snap_seconds(f->st, "big", &rec_big);
    /* the proof is structural: a snapshot writes the same records whatever the size */
    assert_int_equal(rec_small, rec_big);
    assert_int_equal(rec_big, 1); /* just the snapshot record */
    print_message("# snapshot of %d elements: %.6fs (10 elements: %.6fs), %llu record(s)\n",
                  total, t_big, t_small, (unsigned long long)rec_big);
    /* and the namespace as of the snapshot is whole */
    struct pl_snap_info si;
    struct pl_attr a;
    assert_int_equal(pl_snap_get(f->st, "big", &si), 0);
    assert_int_equal(pl_elem_unlink(f->st, d.id, "f00000007"), 0);
    assert_int_equal(pl_elem_lookup(f->st, d.id, "f00000007", si.epoch, &a), 0);
    assert_int_equal(pl_elem_lookup(f->st, d.id, "f00000007", PL_VIEW_LIVE, &a), PL_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_is_o1, setup, teardown),
    };
    return cmocka_run_group_tests_name("snap", tests, NULL, NULL);
}

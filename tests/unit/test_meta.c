#include "testutil.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "meta/meta.h"

static struct meta_env *env;
static char dir[256];

static int apply_inc(struct meta_txn *t, void *arg)
{
    (void)arg;
    return meta_sys_add(t, "counter", 1);
}

static int apply_fail(struct meta_txn *t, void *arg)
{
    (void)arg;
    int rc = meta_sys_add(t, "counter", 1000); /* rolled back with the nested txn */
    return rc ? rc : PL_EINVAL;
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++) {
        if (meta_submit(env, apply_inc, NULL) != 0)
            return (void *)1;
        if (i % 50 == 0 && meta_submit(env, apply_fail, NULL) != PL_EINVAL)
            return (void *)1;
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    (void)state;
    tu_tmpdir(dir, sizeof(dir));
    assert_int_equal(meta_open(dir, &env), 0);
    pthread_t th[16];
    for (int i = 0; i < 16; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, NULL), 0);
    for (int i = 0; i < 16; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
    MDB_txn *txn;
    uint64_t v;
    assert_int_equal(meta_rtxn_begin(env, &txn), 0);
    assert_int_equal(meta_sys_get(txn, env, "counter", &v), 0);
    meta_rtxn_end(txn);
    assert_int_equal(v, 16 * 200);
    struct meta_stats s;
    meta_stats_get(env, &s);
    assert_int_equal(s.mutations, 16 * 200 + 16 * 4);
    /* many threads, fewer commits: batching happened */
    assert_true(s.commits < s.mutations);
    uint64_t multi = 0;
    for (int i = 1; i < 10; i++)
        multi += s.batch_hist[i];
    assert_true(multi > 0);
    meta_close(env);
    /* durable across reopen */
    assert_int_equal(meta_open(dir, &env), 0);
    assert_int_equal(meta_rtxn_begin(env, &txn), 0);
    assert_int_equal(meta_sys_get(txn, env, "counter", &v), 0);
    meta_rtxn_end(txn);
    assert_int_equal(v, 16 * 200);
    meta_close(env);
    tu_rmrf(dir);
}

static uint64_t counter(void)
{
    MDB_txn *txn;
    uint64_t v = 0;
    assert_int_equal(meta_rtxn_begin(env, &txn), 0);
    assert_int_equal(meta_sys_get(txn, env, "counter", &v), 0);
    meta_rtxn_end(txn);
    return v;
}

/* Lazy mutations are visible at once, commit without the meta-page sync,
 * and are made durable by meta_sync or a second of quiet; a durable commit
 * after them covers them. */
static void test_lazy_commit(void **state)
{
    (void)state;
    struct meta_stats s;
    tu_tmpdir(dir, sizeof(dir));
    assert_int_equal(meta_open(dir, &env), 0);
    meta_set_lazy(1);
    assert_int_equal(meta_submit(env, apply_inc, NULL), 0);
    assert_int_equal(counter(), 1);
    meta_stats_get(env, &s);
    assert_int_equal(s.lazy_commits, 1);
    assert_int_equal(s.syncs, 0);
    assert_int_equal(meta_sync(env), 0);
    assert_int_equal(meta_sync(env), 0); /* nothing left to sync */
    meta_stats_get(env, &s);
    assert_int_equal(s.syncs, 1);
    /* quiet after a lazy commit: the writer syncs by itself */
    assert_int_equal(meta_submit(env, apply_inc, NULL), 0);
    for (int i = 0; i < 40 && s.syncs < 2; i++) {
        usleep(100 * 1000);
        meta_stats_get(env, &s);
    }
    assert_int_equal(s.syncs, 2);
    assert_int_equal(s.lazy_commits, 2);
    /* a lazy commit, then a durable one: the durable one's syncs cover both */
    assert_int_equal(meta_submit(env, apply_inc, NULL), 0);
    meta_set_lazy(0);
    assert_int_equal(meta_submit(env, apply_inc, NULL), 0);
    assert_int_equal(meta_sync(env), 0);
    meta_stats_get(env, &s);
    assert_int_equal(s.lazy_commits, 3);
    assert_int_equal(s.syncs, 2);
    assert_int_equal(counter(), 4);
    /* lazy changes without a pause: a commit a second after the first
     * unsynced one is a full one */
    meta_set_lazy(1);
    struct meta_stats before;
    meta_stats_get(env, &before);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int n = 0;
    do {
        assert_int_equal(meta_submit(env, apply_inc, NULL), 0);
        n++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (t.tv_sec - t0.tv_sec < 3);
    meta_set_lazy(0);
    meta_stats_get(env, &s);
    assert_int_equal(s.syncs, before.syncs); /* never quiet for a second */
    assert_true(s.commits - before.commits - (s.lazy_commits - before.lazy_commits) >= 2);
    assert_true(s.lazy_commits - before.lazy_commits > 2);
    assert_int_equal(counter(), 4 + (uint64_t)n);
    meta_close(env);
    assert_int_equal(meta_open(dir, &env), 0);
    assert_int_equal(counter(), 4 + (uint64_t)n);
    meta_close(env);
    tu_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_lazy_commit),
    };
    return cmocka_run_group_tests_name("meta", tests, NULL, NULL);
}

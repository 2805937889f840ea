#include "testutil.h"

#include <pthread.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_commit),
    };
    return cmocka_run_group_tests_name("meta", tests, NULL, NULL);
}

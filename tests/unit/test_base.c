#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#include "testutil.h"

#include "base/base.h"

static void test_buf(void **state)
{
    (void)state;
    struct pl_buf b;
    pl_buf_init(&b);
    assert_non_null(b.data);
    assert_int_equal(b.data[0], 0);
    assert_int_equal(pl_buf_addstr(&b, "abc"), 0);
    assert_int_equal(pl_buf_add(&b, "\0x", 2), 0);
    assert_int_equal(b.len, 5);
    assert_int_equal(b.data[5], 0);
    assert_int_equal(pl_buf_addf(&b, "%d-%s", 42, "z"), 0);
    assert_memory_equal(b.data, "abc\0x42-z", 9);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(pl_buf_addstr(&b, "0123456789"), 0);
    assert_int_equal(b.len, 9 + 100000);
    size_t n;
    char *p = pl_buf_detach(&b, &n);
    assert_int_equal(n, 100009);
    assert_int_equal(b.len, 0);
    free(p);
    pl_buf_release(&b);
}

static void test_endian(void **state)
{
    (void)state;
    uint8_t b[8];
    pl_put_be64(b, 0x0102030405060708ull);
    assert_int_equal(b[0], 1);
    assert_int_equal(b[7], 8);
    assert_true(pl_get_be64(b) == 0x0102030405060708ull);
    pl_put_le64(b, 0x0102030405060708ull);
    assert_int_equal(b[0], 8);
    assert_true(pl_get_le64(b) == 0x0102030405060708ull);
    pl_put_le32(b, 0xdeadbeef);
    assert_true(pl_get_le32(b) == 0xdeadbeef);
}

static void test_hex_and_errors(void **state)
{
    (void)state;
    uint8_t in[4] = {0x00, 0xab, 0x10, 0xff}, out[4];
    char h[9];
    pl_hex(in, 4, h);
    assert_string_equal(h, "00ab10ff");
    assert_int_equal(pl_unhex(h, out, 4), 0);
    assert_memory_equal(in, out, 4);
    assert_int_equal(pl_unhex("zz", out, 1), PL_EINVAL);
    assert_int_equal(pl_unhex("abc", out, 1), PL_EINVAL);
    assert_string_equal(pl_errname(PL_ENOENT), "PL_ENOENT");
    assert_string_equal(pl_errname(PL_ECORRUPT), "PL_ECORRUPT");
    assert_string_equal(pl_strerror(PL_ENOSPC), "no space left on device");
    assert_string_equal(pl_errname(-4242), "PL_EUNKNOWN");
    char f[32];
    pl_fmt_bytes(1536, f, sizeof(f));
    assert_string_equal(f, "1.5 KiB");
}

/* A bounded submit holds the producer while max jobs wait: with both
 * workers busy and 3 waiting, the sixth submit blocks until work drains. */
struct gated {
    struct pl_job job;
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    int *open, *ran;
};

static void gated_run(struct pl_job *j)
{
    struct gated *g = (struct gated *)j;
    pthread_mutex_lock(g->lock);
    while (!*g->open)
        pthread_cond_wait(g->cond, g->lock);
    (*g->ran)++;
    pthread_mutex_unlock(g->lock);
}

struct producer {
    struct pl_pool *pool;
    struct gated jobs[20];
    int submitted;
};

static void *produce(void *arg)
{
    struct producer *pr = arg;
    for (int i = 0; i < 20; i++) {
        pl_pool_submit_bounded(pr->pool, &pr->jobs[i].job, 3);
        __atomic_add_fetch(&pr->submitted, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void test_pool_bounded_submit(void **state)
{
    (void)state;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int open = 0, ran = 0;
    static struct producer pr;
    memset(&pr, 0, sizeof(pr));
    assert_int_equal(pl_pool_new(2, &pr.pool), 0);
    for (int i = 0; i < 20; i++)
        pr.jobs[i] = (struct gated){{gated_run, NULL, 0, 1}, &lock, &cond, &open, &ran};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, produce, &pr), 0);
    /* 2 running + 3 waiting: it stops at 5 and stays there */
    for (int i = 0; i < 500 && __atomic_load_n(&pr.submitted, __ATOMIC_SEQ_CST) < 5; i++)
        usleep(10000);
    usleep(200000);
    assert_int_equal(__atomic_load_n(&pr.submitted, __ATOMIC_SEQ_CST), 5);
    pthread_mutex_lock(&lock);
    open = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(t, NULL);
    pl_pool_free(pr.pool); /* finishes what is queued */
    assert_int_equal(ran, 20);
}

/* pl_pool_share: every item exactly once, with or without helpers, and
 * done by the caller alone when every worker is busy. */
struct marks {
    int hits[300];
    pthread_t who[300];
};

static void mark(void *arg, int i)
{
    struct marks *m = arg;
    __atomic_add_fetch(&m->hits[i], 1, __ATOMIC_SEQ_CST);
    m->who[i] = pthread_self();
    usleep(100);
}

static void test_pool_share(void **state)
{
    (void)state;
    struct pl_pool *pool;
    static struct marks m;
    assert_int_equal(pl_pool_new(2, &pool), 0);
    for (int helpers = 0; helpers <= 3; helpers++) {
        for (int n = 0; n <= 300; n += 100) {
            memset(&m, 0, sizeof(m));
            pl_pool_share(pool, helpers, n, mark, &m);
            for (int i = 0; i < n; i++)
                assert_int_equal(m.hits[i], 1);
        }
    }
    /* both workers held: the caller does everything, without waiting */
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int open = 0, ran = 0;
    struct gated g[2];
    for (int i = 0; i < 2; i++) {
        g[i] = (struct gated){{gated_run, NULL, 0, 0}, &lock, &cond, &open, &ran};
        pl_pool_submit(pool, &g[i].job);
    }
    memset(&m, 0, sizeof(m));
    pl_pool_share(pool, 2, 50, mark, &m);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(m.hits[i], 1);
        assert_true(pthread_equal(m.who[i], pthread_self()));
    }
    pthread_mutex_lock(&lock);
    open = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 2; i++)
        pl_job_wait(pool, &g[i].job);
    assert_int_equal(ran, 2);
    pl_pool_free(pool); /* the late helpers find nothing and go */
}

/* Huge mappings: 2 MiB aligned, zeroed, writable, and given back by munmap
 * of len. */
static void test_map_huge(void **state)
{
    (void)state;
    void *p = NULL;
    assert_int_equal(pl_map_huge(0, &p), PL_EINVAL);
    assert_int_equal(pl_map_huge((2u << 20) + 4096, &p), PL_EINVAL);
    for (size_t len = 2u << 20; len <= (8u << 20); len += 6u << 20) {
        uint8_t *m[3];
        for (int i = 0; i < 3; i++) {
            assert_int_equal(pl_map_huge(len, (void **)&m[i]), 0);
            assert_int_equal((uintptr_t)m[i] % (2u << 20), 0);
            for (size_t off = 0; off < len; off += 4096)
                assert_int_equal(m[i][off], 0);
            memset(m[i], 0xa5, len);
            assert_int_equal(m[i][len - 1], 0xa5);
        }
        for (int i = 0; i < 3; i++) {
            assert_int_equal(munmap(m[i], len), 0);
            unsigned char vec[1];
            assert_int_equal(mincore(m[i], 4096, vec), -1);
            assert_int_equal(mincore(m[i] + len - 4096, 4096, vec), -1);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_endian),
        cmocka_unit_test(test_hex_and_errors),
        cmocka_unit_test(test_pool_bounded_submit),
        cmocka_unit_test(test_pool_share),
        cmocka_unit_test(test_map_huge),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}

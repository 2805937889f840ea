/* The NBD head's volume write cache against a model: writes answered from
 * memory, written out by the background writer while reads, punches and
 * flushes run, on a real store. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include "plenum/store.h"
#include "proto/nbd/vcache.h"
#include "testutil.h"

#define VOL (8u << 20)

static uint64_t vol_create(struct pl_store *st, const char *name)
{
    struct pl_volume_info v;
    assert_int_equal(pl_volume_create(st, name, VOL, &v), 0);
    return v.id;
}

static void expect_store(struct pl_store *st, uint64_t id, const uint8_t *model, size_t n)
{
    uint8_t *out = malloc(n);
    size_t got = 0;
    assert_int_equal(pl_elem_read(st, id, PL_VIEW_LIVE, 0, out, n, &got), 0);
    memset(out + got, 0, n - got);
    assert_memory_equal(out, model, n);
    free(out);
}

struct map_check {
    uint64_t at;
    const uint8_t *model;
};

static int map_check_cb(void *arg, uint64_t off, uint64_t len, int data)
{
    struct map_check *m = arg;
    assert_int_equal(off, m->at);
    for (uint64_t i = 0; !data && i < len; i++)
        assert_int_equal(m->model[off + i], 0);
    m->at = off + len;
    return 0;
}

/* Small thresholds keep the writer busy beside every operation; small
 * groups make most longer runs groups of their own, staged while the one
 * before commits. */
static const struct vc_opts busy = {.budget = 1u << 20, .batch_min = 64u << 10, .age_ms = 2,
                                    .group_max = 48u << 10};

/* Random writes, reads, punches, flushes, reopens and map queries against a
 * model. lazy: nothing is due before a FLUSH, which comes seldom, and writes
 * are small, so hundreds of runs wait, sorted and not yet sorted in. */
static void model_run(struct fix *f, const struct vc_opts *o, int lazy)
{
    uint64_t id = vol_create(f->st, lazy ? "ml" : "m");
    struct vc_set *s;
    assert_int_equal(vc_set_new(f->st, o, &s), 0);
    struct vcache *v = vc_open(s, id);
    assert_non_null(v);
    uint8_t *model = calloc(1, VOL), *buf = malloc(256u << 10);
    uint64_t seed = lazy ? 8 : 7;
    for (int op = 0; op < (lazy ? 8000 : 3000); op++) {
        uint64_t r = tu_rand(&seed);
        uint64_t off = tu_rand(&seed) % VOL;
        uint64_t want = 1 + tu_rand(&seed) % (lazy ? 16u << 10 : 128u << 10);
        size_t len = (size_t)PL_MIN(want, VOL - off); /* PL_MIN evaluates twice */
        unsigned kind = r % 16;
        if (lazy && (kind == 1 || kind == 2) && (r >> 8) % 128)
            kind = 15; /* a write instead of most flushes and reopens */
        switch (kind) {
        case 0:
            assert_int_equal(vc_punch(v, off, len), 0);
            memset(model + off, 0, len);
            break;
        case 1:
            assert_int_equal(vc_flush(v), 0);
            break;
        case 2:
            vc_close(v); /* the last handle goes: a new one sees what is still cached */
            v = vc_open(s, id);
            assert_non_null(v);
            break;
        case 3: {
            /* a hole reported must read as zeros, and the spans run on from off */
            struct map_check m = {off, model};
            assert_int_equal(vc_map(v, off, len, map_check_cb, &m), 0);
            assert_true(m.at > off && m.at <= off + len);
            break;
        }
        case 4: case 5: case 6: case 7:
            assert_int_equal(vc_read(v, off, buf, len), 0);
            assert_memory_equal(buf, model + off, len);
            break;
        default:
            tu_fill(buf, len, r);
            /* FUA stores everything cached: seldom in the lazy run */
            assert_int_equal(vc_write(v, off, buf, len, r % 64 == 8 && !(lazy && (r >> 8) % 64)),
                             0);
            memcpy(model + off, buf, len);
            assert_true(vc_set_bytes(s) <= o->budget + len);
        }
    }
    vc_close(v);
    vc_set_free(s); /* returns once everything cached is in the store */
    expect_store(f->st, id, model, VOL);
    free(model);
    free(buf);
}

static void test_model(void **state)
{
    model_run(*state, &busy, 0);
}

static void test_model_lazy(void **state)
{
    const struct vc_opts lazy = {.budget = 64u << 20, .batch_min = 64u << 20, .age_ms = 60000};
    model_run(*state, &lazy, 1);
}

struct writer_arg {
    struct vc_set *s;
    uint64_t id;
    uint64_t from, to; /* the region this thread owns */
    uint64_t seed;
    uint8_t *model;
};

static void *writer_thread(void *p)
{
    struct writer_arg *a = p;
    struct vcache *v = vc_open(a->s, a->id);
    uint8_t *buf = malloc(64u << 10);
    for (int i = 0; i < 400 && v; i++) {
        uint64_t off = a->from + tu_rand(&a->seed) % (a->to - a->from);
        uint64_t want = 1 + tu_rand(&a->seed) % (64u << 10);
        size_t len = (size_t)PL_MIN(want, a->to - off);
        tu_fill(buf, len, a->seed);
        if (vc_write(v, off, buf, len, 0))
            break;
        memcpy(a->model + off, buf, len);
        if (vc_read(v, off, buf, len) || memcmp(buf, a->model + off, len))
            break; /* the main thread sees what is missing */
    }
    vc_close(v);
    free(buf);
    return NULL;
}

/* Two connections write their halves; the store's hook (pl_store_flush,
 * snapshots) runs beside them; a snapshot taken after both returned holds
 * every byte they wrote. */
static void test_connections_and_snapshots(void **state)
{
    struct fix *f = *state;
    uint64_t id = vol_create(f->st, "c");
    struct vc_set *s;
    assert_int_equal(vc_set_new(f->st, &busy, &s), 0);
    uint8_t *model = calloc(1, VOL);
    struct writer_arg a[2] = {{s, id, 0, VOL / 2, 1, model}, {s, id, VOL / 2, VOL, 2, model}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer_thread, &a[i]), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    /* a connection still open with writes cached: the snapshot stores them first */
    struct vcache *v = vc_open(s, id);
    uint8_t tail[4096];
    tu_fill(tail, sizeof(tail), 99);
    assert_int_equal(vc_write(v, VOL - sizeof(tail), tail, sizeof(tail), 0), 0);
    memcpy(model + VOL - sizeof(tail), tail, sizeof(tail));
    struct pl_volume_info snap;
    assert_int_equal(pl_volume_snapshot(f->st, "c", "s1", &snap), 0);
    expect_store(f->st, snap.id, model, VOL);
    vc_close(v);
    vc_set_free(s);
    expect_store(f->st, id, model, VOL);
    free(model);
}

/* Writes no connection flushed are stored when the last one goes, and a
 * connection opened meanwhile reads them; writers wait for room. */
static void test_close_budget_and_delete(void **state)
{
    struct fix *f = *state;
    uint64_t id = vol_create(f->st, "b");
    /* nothing due by size or age: the budget and the close start the write-out */
    struct vc_opts lazy = {.budget = 256u << 10, .batch_min = 64u << 20, .age_ms = 60000};
    struct vc_set *s;
    assert_int_equal(vc_set_new(f->st, &lazy, &s), 0);
    struct vcache *v = vc_open(s, id);
    uint8_t *model = calloc(1, VOL), *buf = malloc(VOL);
    tu_fill(model, 4u << 20, 5);
    for (size_t off = 0; off < (4u << 20); off += 64u << 10) {
        assert_int_equal(vc_write(v, off, model + off, 64u << 10, 0), 0);
        assert_true(vc_set_bytes(s) <= lazy.budget); /* past half of it the writer runs */
    }
    vc_close(v);
    v = vc_open(s, id);
    assert_int_equal(vc_read(v, 0, buf, VOL), 0);
    assert_memory_equal(buf, model, VOL);
    vc_close(v);
    vc_set_free(s);
    expect_store(f->st, id, model, VOL);

    /* a deleted volume's cached writes are dropped, and say so at FLUSH */
    uint64_t id2 = vol_create(f->st, "d");
    lazy.budget = 64u << 20;
    assert_int_equal(vc_set_new(f->st, &lazy, &s), 0);
    v = vc_open(s, id2);
    assert_int_equal(vc_write(v, 0, model, 128u << 10, 0), 0);
    assert_int_equal(pl_volume_delete(f->st, "d"), 0);
    assert_int_equal(vc_flush(v), PL_ENOENT);
    assert_int_equal(vc_set_bytes(s), 0);
    vc_close(v);
    vc_set_free(s);
    free(model);
    free(buf);
}

static off_t seg_max_size;

static int seg_size_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    size_t n = strlen(path);
    if (type == FTW_F && n > 4 && !strcmp(path + n - 4, ".seg") && sb->st_size > seg_max_size)
        seg_max_size = sb->st_size;
    return 0;
}

/* 60 KiB written at every 64 KiB of [from, to): runs of their own, each a
 * group of one (busy.group_max), so the writer stages each while the one
 * before commits. The model takes what was accepted. */
static int write_span(struct vcache *v, uint8_t *model, uint64_t from, uint64_t to, uint64_t *seed)
{
    int failed = 0;
    for (uint64_t off = from; off < to; off += 64u << 10) {
        uint8_t buf[60u << 10];
        tu_fill(buf, sizeof(buf), tu_rand(seed));
        if (vc_write(v, off, buf, sizeof(buf), 0) == 0)
            memcpy(model + off, buf, sizeof(buf));
        else
            failed++;
    }
    return failed;
}

/* The store refuses bytes in the middle of a batch (a file size limit
 * stands in for a full device): the writer has staged two groups and
 * stores the first when the third does not fit, the second failing to be
 * staged while the first commits. What failed stays cached, reads see every
 * write, FLUSH says what went wrong, and once there is room again
 * everything is stored. */
static void test_store_refuses(void **state)
{
    struct fix *f = *state;
    uint64_t id = vol_create(f->st, "r");
    /* nothing is due before the FLUSH: it writes one batch of many groups */
    struct vc_opts lazy = {.budget = 16u << 20, .batch_min = 64u << 20, .age_ms = 60000,
                           .group_max = 48u << 10};
    struct vc_set *s;
    assert_int_equal(vc_set_new(f->st, &lazy, &s), 0);
    struct vcache *v = vc_open(s, id);
    uint8_t *model = calloc(1, VOL), *buf = malloc(VOL);
    uint64_t seed = 11;
    assert_int_equal(write_span(v, model, 0, 1u << 20, &seed), 0);
    assert_int_equal(vc_flush(v), 0);

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN); /* EFBIG instead */
    seg_max_size = 0;
    assert_int_equal(nftw(f->dir, seg_size_cb, 16, FTW_PHYS), 0);
    assert_true(seg_max_size > 0);
    lim = old;
    lim.rlim_cur = (rlim_t)seg_max_size + (160u << 10); /* two 60 KiB groups, not three */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(write_span(v, model, 1u << 20, 3u << 20, &seed), 0);
    for (int i = 0; i < 64; i++) { /* scattered: groups of several runs */
        uint64_t off = (3u << 20) + tu_rand(&seed) % (VOL - (3u << 20) - 4096);
        tu_fill(buf, 4096, tu_rand(&seed));
        assert_int_equal(vc_write(v, off, buf, 4096, 0), 0);
        memcpy(model + off, buf, 4096);
    }
    assert_int_equal(vc_flush(v), -EFBIG);
    assert_int_equal(vc_read(v, 0, buf, VOL), 0);
    assert_memory_equal(buf, model, VOL);
    /* stored in part: a new write over what failed is not undone by the retry */
    tu_fill(buf, 4096, 77);
    assert_int_equal(vc_write(v, (2u << 20) + 100, buf, 4096, 0), 0);
    memcpy(model + (2u << 20) + 100, buf, 4096);

    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    assert_int_equal(vc_flush(v), 0);
    vc_close(v);
    vc_set_free(s);
    expect_store(f->st, id, model, VOL);
    free(model);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_lazy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connections_and_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_budget_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses, setup, teardown),
    };
    return cmocka_run_group_tests_name("vcache", tests, NULL, NULL);
}

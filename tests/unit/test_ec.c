/* The store on erasure-coded stripes: destage, lost and corrupt devices,
 * rebuild, scrub, compaction of stripes, for 4+2, 8+3 and 20+4. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "base/base.h"
#include "plenum/store.h"
#include "testutil.h"

#define NOBJ 24

struct ecfix {
    char dir[256];
    int k, m;
    struct pl_store *st;
    uint8_t *body[NOBJ];
    size_t len[NOBJ];
};

static void ec_open(struct ecfix *f, int create)
{
    struct pl_store_opts o = {.zstd_level = -1, .create = create, .ec_k = f->k, .ec_m = f->m,
                              .seg_max = 1u << 20};
    assert_int_equal(pl_store_open(f->dir, &o, &f->st), 0);
}

static void put(struct pl_store *st, const char *key, const uint8_t *p, size_t n)
{
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, "ecb", key, &w), 0);
    assert_int_equal(pl_writer_write(w, p, n), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, NULL), 0);
}

/* Every object reads back byte for byte, or (when allow_err) fails cleanly. */
static int check_all(struct ecfix *f, int allow_err)
{
    int errors = 0;
    uint8_t *back = malloc(3 << 20);
    for (int i = 0; i < NOBJ; i++) {
        char key[32];
        struct pl_attr a;
        size_t got = 0;
        snprintf(key, sizeof(key), "obj%02d", i);
        assert_int_equal(pl_obj_lookup(f->st, "ecb", key, PL_VIEW_LIVE, &a), 0);
        int rc = pl_elem_read(f->st, a.id, PL_VIEW_LIVE, 0, back, f->len[i], &got);
        if (rc) {
            assert_true(allow_err);
            assert_int_equal(rc, PL_ECORRUPT);
            errors++;
            continue;
        }
        assert_int_equal(got, f->len[i]);
        assert_memory_equal(back, f->body[i], f->len[i]);
    }
    free(back);
    return errors;
}

static int cap_dev_count(void *arg, const struct pl_device_info *d)
{
    int *n = arg;
    if (d->capacity) {
        assert_int_equal(d->state, PL_DEV_OK);
        (*n)++;
    }
    return 0;
}

static void rmrf_cap(struct ecfix *f, int i)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/capacity%d", f->dir, i);
    tu_rmrf(p);
}

static void flip_strip_bytes(struct ecfix *f, int dev, uint64_t seed)
{
    char d[400];
    snprintf(d, sizeof(d), "%s/capacity%d/stripes", f->dir, dev);
    DIR *dir = opendir(d);
    assert_non_null(dir);
    struct dirent *de;
    uint64_t s = seed;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.')
            continue;
        char p[700];
        struct stat sb;
        snprintf(p, sizeof(p), "%s/%s", d, de->d_name);
        assert_int_equal(stat(p, &sb), 0);
        int fd = open(p, O_RDWR);
        assert_true(fd >= 0);
        /* somewhere in the payload (past the header and checksums) */
        off_t off = (off_t)(sb.st_size - 1 - (off_t)(pl_splitmix64(&s) % (uint64_t)(sb.st_size / 2)));
        uint8_t b;
        assert_int_equal(pread(fd, &b, 1, off), 1);
        b ^= 0x10;
        assert_int_equal(pwrite(fd, &b, 1, off), 1);
        close(fd);
    }
    closedir(dir);
}

static void ec_case(int k, int m)
{
    struct ecfix *f = calloc(1, sizeof(*f));
    f->k = k;
    f->m = m;
    tu_tmpdir(f->dir, sizeof(f->dir));
    ec_open(f, 1);
    assert_int_equal(pl_bucket_create(f->st, "ecb"), 0);
    for (int i = 0; i < NOBJ; i++) {
        f->len[i] = 100000 + (size_t)i * 37000;
        f->body[i] = malloc(f->len[i]);
        if (i % 3)
            tu_fill(f->body[i], f->len[i], (uint64_t)i + 1);
        else
            tu_fill_text(f->body[i], f->len[i], (uint64_t)i + 1);
        char key[32];
        snprintf(key, sizeof(key), "obj%02d", i);
        put(f->st, key, f->body[i], f->len[i]);
    }
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    struct pl_store_stats s;
    assert_int_equal(pl_store_stats(f->st, &s), 0);
    assert_int_equal(s.ec_k, k);
    assert_int_equal(s.ec_m, m);
    assert_true(s.stripes >= 2);
    assert_int_equal(s.buffer_segments, 0);
    int ncap = 0;
    assert_int_equal(pl_device_list(f->st, cap_dev_count, &ncap), 0);
    assert_int_equal(ncap, k + m);
    check_all(f, 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);

    /* m devices lost (found at open): every read still right */
    pl_store_close(f->st);
    for (int i = 0; i < m; i++)
        rmrf_cap(f, i * 2 % (k + m));
    ec_open(f, 0);
    check_all(f, 0);
    assert_int_equal(pl_store_stats(f->st, &s), 0);
    assert_true(s.degraded_reads > 0);
    assert_true(pl_store_fsck(f->st, NULL, NULL, NULL) > 0); /* strips need rebuilding */
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    /* empty replacements at the same paths: rebuilt, then whole again */
    for (int i = 0; i < m; i++) {
        char p[400];
        snprintf(p, sizeof(p), "%s/capacity%d", f->dir, i * 2 % (k + m));
        assert_int_equal(pl_device_replace(f->st, 4 + i * 2 % (k + m), p), 0);
    }
    assert_int_equal(pl_store_rebuild(f->st, NULL, NULL), 0);
    ncap = 0;
    assert_int_equal(pl_device_list(f->st, cap_dev_count, &ncap), 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    check_all(f, 0);

    /* flipped bytes on m devices: reads right, scrub repairs, a second scrub is clean */
    for (int i = 0; i < m; i++)
        flip_strip_bytes(f, (i * 3 + 1) % (k + m), (uint64_t)i);
    check_all(f, 0);
    struct pl_scrub_report r;
    assert_int_equal(pl_store_scrub(f->st, 0, NULL, NULL, &r), 0);
    assert_true(r.repaired > 0);
    assert_int_equal(r.unrecoverable, 0);
    assert_int_equal(pl_store_scrub(f->st, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.repaired, 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);

    /* m + 1 devices lost: clean errors, never wrong bytes */
    pl_store_close(f->st);
    for (int i = 0; i <= m; i++)
        rmrf_cap(f, i);
    ec_open(f, 0);
    assert_true(check_all(f, 1) > 0);
    for (int i = 0; i <= m; i++) {
        char p[400];
        snprintf(p, sizeof(p), "%s/capacity%d", f->dir, i);
        assert_int_equal(pl_device_replace(f->st, 4 + i, p), 0);
    }
    assert_int_not_equal(pl_store_rebuild(f->st, NULL, NULL), 0);

    pl_store_close(f->st);
    tu_rmrf(f->dir);
    for (int i = 0; i < NOBJ; i++)
        free(f->body[i]);
    free(f);
}

static void test_ec_4_2(void **state)
{
    (void)state;
    ec_case(4, 2);
}

static void test_ec_8_3(void **state)
{
    (void)state;
    ec_case(8, 3);
}

static void test_ec_20_4(void **state)
{
    (void)state;
    ec_case(20, 4);
}

/* Deleting data compacts stripes: the space comes back. */
static void test_ec_gc(void **state)
{
    (void)state;
    struct ecfix f = {.k = 4, .m = 2};
    tu_tmpdir(f.dir, sizeof(f.dir));
    ec_open(&f, 1);
    assert_int_equal(pl_bucket_create(f.st, "ecb"), 0);
    uint8_t *b = malloc(4 << 20);
    for (int i = 0; i < 8; i++) {
        char key[32];
        snprintf(key, sizeof(key), "big%d", i);
        tu_fill(b, 4 << 20, (uint64_t)i + 77);
        put(f.st, key, b, 4 << 20);
    }
    assert_int_equal(pl_store_flush(f.st, NULL, NULL), 0);
    struct pl_store_stats s0, s1;
    assert_int_equal(pl_store_stats(f.st, &s0), 0);
    for (int i = 0; i < 7; i++) {
        char key[32];
        snprintf(key, sizeof(key), "big%d", i);
        assert_int_equal(pl_obj_delete(f.st, "ecb", key), 0);
    }
    uint64_t freed;
    assert_int_equal(pl_store_gc(f.st, &freed), 0);
    assert_int_equal(pl_store_flush(f.st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f.st, &s1), 0);
    assert_true(s1.physical_bytes * 3 < s0.physical_bytes);
    assert_true(s1.stripes < s0.stripes);
    struct pl_attr a;
    size_t got;
    assert_int_equal(pl_obj_lookup(f.st, "ecb", "big7", PL_VIEW_LIVE, &a), 0);
    uint8_t *back = malloc(4 << 20);
    tu_fill(b, 4 << 20, 7 + 77);
    assert_int_equal(pl_elem_read(f.st, a.id, PL_VIEW_LIVE, 0, back, 4 << 20, &got), 0);
    assert_memory_equal(b, back, 4 << 20);
    assert_int_equal(pl_store_fsck(f.st, NULL, NULL, NULL), 0);
    free(b);
    free(back);
    pl_store_close(f.st);
    tu_rmrf(f.dir);
}

static int count_buffers(void *arg, const struct pl_device_info *d)
{
    *(int *)arg += !d->capacity;
    return 0;
}

/* Three buffer mirrors: two of them bad, the data still reads back. */
static void test_three_buffer_copies(void **state)
{
    (void)state;
    char dir[256], p[400];
    struct pl_store *st;
    struct pl_store_opts o = {.zstd_level = 0, .create = 1, .buffer_copies = 3};
    tu_tmpdir(dir, sizeof(dir));
    assert_int_equal(pl_store_open(dir, &o, &st), 0);
    int nb = 0;
    assert_int_equal(pl_device_list(st, count_buffers, &nb), 0);
    assert_int_equal(nb, 3);
    assert_int_equal(pl_device_fail(st, 1), PL_EPERM); /* buffer mirrors are fixed */
    assert_int_equal(pl_bucket_create(st, "ecb"), 0);
    uint8_t body[100000], back[100000];
    tu_fill(body, sizeof(body), 5);
    put(st, "obj", body, sizeof(body));
    pl_store_close(st);
    for (int m = 0; m < 2; m++) {
        snprintf(p, sizeof(p), "%s/buffer%d/seg/0000000000000001.seg", dir, m);
        int fd = open(p, O_RDWR);
        assert_true(fd >= 0);
        uint8_t junk[64] = {0};
        assert_int_equal(pwrite(fd, junk, sizeof(junk), 200), (ssize_t)sizeof(junk));
        close(fd);
    }
    o.create = 0;
    assert_int_equal(pl_store_open(dir, &o, &st), 0);
    struct pl_attr a;
    size_t got;
    assert_int_equal(pl_obj_lookup(st, "ecb", "obj", PL_VIEW_LIVE, &a), 0);
    assert_int_equal(pl_elem_read(st, a.id, PL_VIEW_LIVE, 0, back, sizeof(back), &got), 0);
    assert_memory_equal(body, back, sizeof(back));
    pl_store_close(st);
    tu_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ec_4_2),
        cmocka_unit_test(test_ec_8_3),
        cmocka_unit_test(test_ec_20_4),
        cmocka_unit_test(test_ec_gc),
        cmocka_unit_test(test_three_buffer_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

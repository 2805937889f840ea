#include "testutil.h"

#include <fcntl.h>

#include "data/data.h"

static void test_cdc_bounds_and_determinism(void **state)
{
    (void)state;
    struct data_cdc c;
    assert_int_equal(data_cdc_init(&c, 16384, 65536, 262144), 0);
    assert_int_equal(data_cdc_init(&c, 16384, 60000, 262144), PL_EINVAL);
    assert_int_equal(data_cdc_init(&c, 16384, 65536, 4u << 20), PL_EINVAL);
    assert_int_equal(data_cdc_init(&c, 16384, 65536, 262144), 0);
    size_t n = 16u << 20;
    uint8_t *p = malloc(n);
    tu_fill(p, n, 1);
    size_t off = 0, chunks = 0;
    while (off < n) {
        size_t l = data_cdc_cut(&c, p + off, n - off, 1);
        assert_true(l > 0);
        if (off + l < n) {
            assert_true(l > c.min);
            assert_true(l <= c.max);
        }
        off += l;
        chunks++;
    }
    /* average near 64 KiB: between 32 and 128 KiB on random data */
    size_t avg = n / chunks;
    assert_true(avg > 32768 && avg < 131072);
    /* not final: a tail shorter than max is held back */
    assert_int_equal(data_cdc_cut(&c, p, 1000, 0), 0);
    assert_int_equal(data_cdc_cut(&c, p, 1000, 1), 1000);
    free(p);
}

/* Inserting bytes at the front shifts only nearby boundaries: most chunks survive. */
static void test_cdc_shift_resistance(void **state)
{
    (void)state;
    struct data_cdc c;
    assert_int_equal(data_cdc_init(&c, 16384, 65536, 262144), 0);
    size_t n = 8u << 20;
    uint8_t *a = malloc(n + 100), *b;
    tu_fill(a + 100, n, 7);
    memset(a, 'x', 100);
    b = a + 100;
    uint8_t (*fa)[32] = calloc(1024, 32), (*fb)[32] = calloc(1024, 32);
    size_t na = 0, nb = 0, off = 0;
    while (off < n + 100) {
        size_t l = data_cdc_cut(&c, a + off, n + 100 - off, 1);
        data_fingerprint(a + off, l, fa[na++]);
        off += l;
    }
    off = 0;
    while (off < n) {
        size_t l = data_cdc_cut(&c, b + off, n - off, 1);
        data_fingerprint(b + off, l, fb[nb++]);
        off += l;
    }
    size_t same = 0;
    for (size_t i = 0; i < nb; i++)
        for (size_t j = 0; j < na; j++)
            if (!memcmp(fb[i], fa[j], 32)) {
                same++;
                break;
            }
    assert_true(same * 10 >= nb * 9);
    free(a);
    free(fa);
    free(fb);
}

static void test_zero(void **state)
{
    (void)state;
    uint8_t z[4096] = {0};
    assert_true(data_is_zero(z, sizeof(z)));
    z[4095] = 1;
    assert_false(data_is_zero(z, sizeof(z)));
    assert_true(data_is_zero(z, 0));
}

struct segfix {
    char dir[256], m0[300], m1[300];
    struct data_store *ds;
};

static int seg_setup(void **state)
{
    struct segfix *f = calloc(1, sizeof(*f));
    tu_tmpdir(f->dir, sizeof(f->dir));
    snprintf(f->m0, sizeof(f->m0), "%s/m0", f->dir);
    snprintf(f->m1, sizeof(f->m1), "%s/m1", f->dir);
    const char *m[] = {f->m0, f->m1};
    struct data_opts o = {m, 2, 1u << 20, 1, 1};
    assert_int_equal(data_open(&o, &f->ds), 0);
    *state = f;
    return 0;
}

static int seg_teardown(void **state)
{
    struct segfix *f = *state;
    data_close(f->ds);
    tu_rmrf(f->dir);
    free(f);
    return 0;
}

static void corrupt_byte(const char *mirror, uint64_t seg, uint64_t off)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/seg/%016llx.seg", mirror, (unsigned long long)seg);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static void test_segment_roundtrip_mirrors(void **state)
{
    struct segfix *f = *state;
    uint8_t raw[65536], out[65536], fp[32];
    struct data_loc text, rnd;
    tu_fill_text(raw, sizeof(raw), 3);
    data_fingerprint(raw, sizeof(raw), fp);
    assert_int_equal(data_chunk_append(f->ds, fp, raw, sizeof(raw), &text), 0);
    assert_int_equal(text.codec, DATA_CODEC_ZSTD);
    assert_true(text.stored_len < sizeof(raw) / 2);
    assert_int_equal(data_sync(f->ds, text.seg), 0);
    assert_int_equal(data_chunk_read(f->ds, &text, fp, out), 0);
    assert_memory_equal(raw, out, sizeof(raw));

    uint8_t rfp[32];
    tu_fill(raw, sizeof(raw), 4);
    data_fingerprint(raw, sizeof(raw), rfp);
    assert_int_equal(data_chunk_append(f->ds, rfp, raw, sizeof(raw), &rnd), 0);
    assert_int_equal(rnd.codec, DATA_CODEC_RAW);
    assert_int_equal(data_sync(f->ds, rnd.seg), 0);

    /* a bad copy on one mirror is read around */
    corrupt_byte(f->m0, rnd.seg, rnd.off + DATA_BLOCK_HDR + 100);
    memset(out, 0, sizeof(out));
    assert_int_equal(data_chunk_read(f->ds, &rnd, rfp, out), 0);
    assert_memory_equal(raw, out, sizeof(raw));
    /* bad on every mirror: an error, never wrong bytes */
    corrupt_byte(f->m1, rnd.seg, rnd.off + DATA_BLOCK_HDR + 100);
    assert_int_equal(data_chunk_read(f->ds, &rnd, rfp, out), PL_ECORRUPT);
    /* wrong fingerprint expectation is caught too */
    assert_int_equal(data_chunk_read(f->ds, &text, rfp, out), PL_ECORRUPT);

    /* rolling: many appends cross the 1 MiB segment size */
    struct data_loc l;
    uint64_t first = text.seg;
    for (int i = 0; i < 40; i++)
        assert_int_equal(data_chunk_append(f->ds, rfp, raw, sizeof(raw), &l), 0);
    assert_true(l.seg > first);
    uint64_t *ids;
    size_t n;
    assert_int_equal(data_seg_list(f->ds, &ids, &n), 0);
    assert_true(n >= 2);
    free(ids);
}

static int walk_count(void *arg, const struct data_loc *loc, const uint8_t fp[32])
{
    (void)loc, (void)fp;
    (*(int *)arg)++;
    return 0;
}

static void test_segment_walk(void **state)
{
    struct segfix *f = *state;
    uint8_t raw[10000], fp[32];
    struct data_loc l;
    tu_fill(raw, sizeof(raw), 9);
    data_fingerprint(raw, sizeof(raw), fp);
    for (int i = 0; i < 5; i++)
        assert_int_equal(data_chunk_append(f->ds, fp, raw, sizeof(raw), &l), 0);
    int count = 0;
    assert_int_equal(data_seg_walk(f->ds, l.seg, l.off + DATA_BLOCK_HDR + l.stored_len,
                                   walk_count, &count),
                     0);
    assert_int_equal(count, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cdc_bounds_and_determinism),
        cmocka_unit_test(test_cdc_shift_resistance),
        cmocka_unit_test(test_zero),
        cmocka_unit_test_setup_teardown(test_segment_roundtrip_mirrors, seg_setup, seg_teardown),
        cmocka_unit_test_setup_teardown(test_segment_walk, seg_setup, seg_teardown),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}

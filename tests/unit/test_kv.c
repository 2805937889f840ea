/* KV value buffers: recycled buffers always have room for the value they
 * carry (ASan catches a write past it), whatever sizes come and go, and
 * growing a bulk keeps what it had received. */
#include "kv/kv.h"
#include "testutil.h"

static void fill_check(struct kv_val *v, uint8_t tag)
{
    assert_non_null(v);
    assert_true(v->cap >= v->n);
    memset(v->data, tag, v->n);
    if (v->n)
        assert_int_equal(v->data[v->n - 1], tag);
}

static void test_recycled_sizes(void **state)
{
    (void)state;
    /* around every edge: the smallest recycled size, a class boundary, the
     * largest class (32 MiB, header included) and just past it */
    static const size_t sizes[] = {0,         1,          4095,           65535,
                                   65536,     65537,      1 << 20,        (1 << 20) + 7,
                                   3 << 20,   4 << 20,    (16 << 20) + 1, (32 << 20) - 64,
                                   32 << 20,  (32 << 20) - 65536, 40 << 20};
    struct kv_val *live[64] = {0};
    uint64_t seed = 42;
    for (int round = 0; round < 2000; round++) {
        size_t slot = pl_splitmix64(&seed) % 64;
        kv_val_unref(live[slot]);
        size_t n = sizes[pl_splitmix64(&seed) % PL_ARRAY_LEN(sizes)];
        live[slot] = round % 3 ? NULL : kv_val_reuse(n); /* NULL unless one waits */
        if (!live[slot])
            live[slot] = kv_val_new(n);
        fill_check(live[slot], (uint8_t)round);
    }
    for (int i = 0; i < 64; i++)
        kv_val_unref(live[i]);
}

static void test_grow_keeps_bytes(void **state)
{
    (void)state;
    struct kv_val *v = kv_val_new(1 << 20);
    v->n = 5u << 20; /* a bulk announced at 5 MiB, received in steps */
    memset(v->data, 0xab, 1 << 20);
    assert_int_equal(kv_val_grow(&v, 2u << 20, 1 << 20), 0);
    assert_true(v->cap >= (2u << 20) && v->n == (5u << 20));
    memset(v->data + (1 << 20), 0xcd, 1 << 20);
    assert_int_equal(kv_val_grow(&v, 5u << 20, 2u << 20), 0);
    assert_true(v->cap >= (5u << 20));
    assert_int_equal(v->data[0], 0xab);
    assert_int_equal(v->data[(1 << 20) - 1], 0xab);
    assert_int_equal(v->data[1 << 20], 0xcd);
    assert_int_equal(v->data[(2u << 20) - 1], 0xcd);
    memset(v->data, 0, 5u << 20);
    kv_val_unref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recycled_sizes),
        cmocka_unit_test(test_grow_keeps_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

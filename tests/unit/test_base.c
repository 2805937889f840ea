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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_endian),
        cmocka_unit_test(test_hex_and_errors),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}

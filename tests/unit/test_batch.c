/* RecordBatch v2: batches built by the broker validate; records read back
 * the same through every codec Kafka clients write (gzip, snappy raw and
 * xerial, LZ4 frame, zstd); damaged or bomb-sized compressed data is refused,
 * never read past. */
#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "base/base.h"
#include "broker/batch.h"
#include "testutil.h"

#define NREC 50

struct got {
    char keys[NREC][16], vals[NREC][64];
    int64_t deltas[NREC], ts[NREC];
    int n;
};

static int got_cb(void *arg, const struct batch_record *r)
{
    struct got *g = arg;
    assert_true(g->n < NREC);
    snprintf(g->keys[g->n], sizeof(g->keys[0]), "%.*s", r->kn, r->key ? (const char *)r->key : "");
    snprintf(g->vals[g->n], sizeof(g->vals[0]), "%.*s", r->vn, r->val ? (const char *)r->val : "");
    g->deltas[g->n] = r->offset_delta;
    g->ts[g->n++] = r->ts;
    return 0;
}

/* A plain batch of NREC records into b. */
static void plain(struct pl_buf *b)
{
    static char keys[NREC][16], vals[NREC][64];
    struct batch_rec r[NREC];
    for (int i = 0; i < NREC; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
        snprintf(vals[i], sizeof(vals[i]), "value %d of the batch, repeated repeated", i);
        r[i] = (struct batch_rec){keys[i], vals[i], strlen(keys[i]), strlen(vals[i])};
    }
    pl_buf_init(b);
    assert_int_equal(batch_build(b, r, NREC, 1700000000000), 0);
}

static size_t gzip(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    return len;
}

static size_t compress_as(int codec, int xerial, const uint8_t *in, size_t n, uint8_t *out,
                          size_t cap)
{
    size_t len = cap;
    switch (codec) {
    case 1: return gzip(in, n, out, cap);
    case 2:
        if (!xerial) {
            assert_int_equal(snappy_compress((const char *)in, n, (char *)out, &len), SNAPPY_OK);
            return len;
        } else {
            static const uint8_t hdr[16] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0, 0, 0, 0, 1,
                                            0, 0, 0, 1};
            memcpy(out, hdr, 16);
            size_t at = 16;
            /* two blocks, as the Java client writes large batches */
            for (size_t off = 0; off < n;) {
                size_t part = PL_MIN(n - off, n / 2 + 1), bl = cap - at - 4;
                assert_int_equal(snappy_compress((const char *)in + off, part,
                                                 (char *)out + at + 4, &bl), SNAPPY_OK);
                pl_put_be32(out + at, (uint32_t)bl);
                at += 4 + bl;
                off += part;
            }
            return at;
        }
    case 3: len = LZ4F_compressFrame(out, cap, in, n, NULL);
        assert_false(LZ4F_isError(len));
        return len;
    case 4: len = ZSTD_compress(out, cap, in, n, 3);
        assert_false(ZSTD_isError(len));
        return len;
    }
    fail();
    return 0;
}

/* The plain batch re-encoded with codec, as a producer would send it. */
static void compressed(const struct pl_buf *pb, int codec, int xerial, struct pl_buf *out)
{
    const uint8_t *p = (const uint8_t *)pb->data;
    size_t cap = pb->len * 2 + 1024;
    uint8_t *body = malloc(cap);
    size_t bl = compress_as(codec, xerial, p + BATCH_HDR_LEN, pb->len - BATCH_HDR_LEN, body, cap);
    pl_buf_init(out);
    assert_int_equal(pl_buf_add(out, p, BATCH_HDR_LEN), 0);
    assert_int_equal(pl_buf_add(out, body, bl), 0);
    uint8_t *q = (uint8_t *)out->data;
    pl_put_be32(q + 8, (uint32_t)(out->len - 12));
    pl_put_be16(q + 21, (uint16_t)codec);
    pl_put_be32(q + 17, batch_crc32c(q + 21, out->len - 21));
    free(body);
}

static void check_records(const uint8_t *p, size_t n)
{
    struct got g = {0};
    assert_int_equal(batch_records(p, n, got_cb, &g), 0);
    assert_int_equal(g.n, NREC);
    for (int i = 0; i < NREC; i++) {
        char k[16];
        snprintf(k, sizeof(k), "key-%d", i);
        assert_string_equal(g.keys[i], k);
        assert_int_equal(g.deltas[i], i);
        assert_int_equal(g.ts[i], 1700000000000);
    }
}

static void test_codecs(void **state)
{
    (void)state;
    struct pl_buf pb;
    plain(&pb);
    check_records((const uint8_t *)pb.data, pb.len);
    for (int codec = 1; codec <= 4; codec++) {
        for (int xerial = 0; xerial <= (codec == 2); xerial++) {
            struct pl_buf cb;
            int nb;
            int64_t nr;
            compressed(&pb, codec, xerial, &cb);
            const uint8_t *p = (const uint8_t *)cb.data;
            assert_int_equal(batch_validate(p, cb.len, &nb, &nr), 0);
            assert_int_equal(nr, NREC);
            check_records(p, cb.len);
            int32_t delta;
            int64_t ts;
            assert_int_equal(batch_find_time(p, cb.len, 1700000000000, &delta, &ts), 0);
            assert_int_equal(batch_find_time(p, cb.len, 1800000000000, &delta, &ts), PL_ENOENT);
            /* damage inside the compressed body: an error, never garbage records */
            for (size_t cut = BATCH_HDR_LEN + 1; cut < cb.len; cut += 7) {
                struct pl_buf d;
                pl_buf_init(&d);
                assert_int_equal(pl_buf_add(&d, cb.data, cb.len), 0);
                uint8_t *q = (uint8_t *)d.data;
                q[cut] ^= 0x5a;
                struct got g = {0};
                int rc = batch_records(q, d.len, got_cb, &g);
                if (rc == 0) /* a flip the codec cannot see must still yield whole records */
                    assert_int_equal(g.n, NREC);
                pl_buf_release(&d);
            }
            pl_buf_release(&cb);
        }
    }
    pl_buf_release(&pb);
}

static void test_bomb(void **state)
{
    (void)state;
    /* 300 MiB of zeros compresses to a few KiB; reading it is refused */
    size_t big = 300u << 20;
    uint8_t *zeros = calloc(1, big);
    size_t cap = ZSTD_compressBound(big);
    uint8_t *z = malloc(cap);
    size_t zn = ZSTD_compress(z, cap, zeros, big, 1);
    assert_false(ZSTD_isError(zn));
    uint8_t *out;
    size_t on;
    assert_int_equal(batch_inflate(4, z, zn, &out, &on), PL_EFBIG);
    assert_int_equal(batch_inflate(4, z, zn / 2, &out, &on), PL_EPROTO); /* cut short */
    assert_int_equal(batch_inflate(7, z, zn, &out, &on), PL_EINVAL);
    free(zeros);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codecs),
        cmocka_unit_test(test_bomb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Reading records out of a RecordBatch whatever its codec (batch.h): the
 * broker stores batches as producers compressed them and decompresses only
 * where it must look inside (a timestamp lookup today; SQL later). Kafka's
 * codecs: 1 gzip, 2 snappy (raw, or xerial framing as the Java client
 * writes it), 3 LZ4 frame, 4 zstd. */
#include <lz4frame.h>
#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "base/base.h"
#include "broker/batch.h"

/* a compressed batch may not inflate past this (a bomb is refused, not served) */
#define INFLATE_MAX (256u << 20)

struct obuf {
    uint8_t *p;
    size_t n, cap;
};

static int obuf_room(struct obuf *o, size_t want)
{
    if (o->cap - o->n >= want)
        return 0;
    size_t cap = o->cap ? o->cap : 64 * 1024;
    while (cap - o->n < want)
        cap *= 2;
    if (cap > INFLATE_MAX)
        cap = INFLATE_MAX;
    if (cap - o->n < want)
        return PL_EFBIG;
    uint8_t *np = realloc(o->p, cap);
    if (!np)
        return PL_ENOMEM;
    o->p = np;
    o->cap = cap;
    return 0;
}

static int inflate_gzip(const uint8_t *in, size_t n, struct obuf *o)
{
    z_stream z = {0};
    if (n > UINT32_MAX || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return PL_EPROTO;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    int rc = 0, zr = Z_OK;
    while (!rc && zr != Z_STREAM_END) {
        rc = obuf_room(o, 64 * 1024);
        if (rc)
            break;
        z.next_out = o->p + o->n;
        z.avail_out = (uInt)PL_MIN(o->cap - o->n, (size_t)UINT32_MAX);
        uInt before = z.avail_out;
        zr = inflate(&z, Z_NO_FLUSH);
        o->n += before - z.avail_out;
        /* an error, or input that ended inside the stream */
        if ((zr != Z_OK && zr != Z_STREAM_END) || (zr == Z_OK && !z.avail_in && z.avail_out))
            rc = PL_EPROTO;
    }
    inflateEnd(&z);
    return rc;
}

static int snappy_block(const uint8_t *in, size_t n, struct obuf *o)
{
    size_t len;
    if (snappy_uncompressed_length((const char *)in, n, &len) != SNAPPY_OK)
        return PL_EPROTO;
    int rc = obuf_room(o, len);
    if (rc)
        return rc;
    size_t got = len;
    if (snappy_uncompress((const char *)in, n, (char *)o->p + o->n, &got) != SNAPPY_OK ||
        got != len)
        return PL_EPROTO;
    o->n += len;
    return 0;
}

static int inflate_snappy(const uint8_t *in, size_t n, struct obuf *o)
{
    static const uint8_t xerial[8] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};
    if (n < 16 || memcmp(in, xerial, 8))
        return snappy_block(in, n, o);
    /* magic, version, compatible version; then (length BE32, raw block)... */
    for (size_t at = 16; at < n;) {
        if (n - at < 4)
            return PL_EPROTO;
        size_t len = pl_get_be32(in + at);
        at += 4;
        if (len > n - at)
            return PL_EPROTO;
        int rc = snappy_block(in + at, len, o);
        if (rc)
            return rc;
        at += len;
    }
    return 0;
}

static int inflate_lz4(const uint8_t *in, size_t n, struct obuf *o)
{
    LZ4F_dctx *d;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)))
        return PL_ENOMEM;
    int rc = 0;
    size_t at = 0, hint = 1;
    while (!rc && hint) {
        rc = obuf_room(o, 64 * 1024);
        if (rc)
            break;
        size_t out = o->cap - o->n, src = n - at;
        hint = LZ4F_decompress(d, o->p + o->n, &out, in + at, &src, NULL);
        if (LZ4F_isError(hint))
            rc = PL_EPROTO;
        o->n += out;
        at += src;
        if (!rc && hint && at == n && !out)
            rc = PL_EPROTO; /* the frame is cut short */
    }
    LZ4F_freeDecompressionContext(d);
    return rc;
}

static int inflate_zstd(const uint8_t *in, size_t n, struct obuf *o)
{
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d)
        return PL_ENOMEM;
    ZSTD_inBuffer ib = {in, n, 0};
    int rc = 0;
    size_t hint = 1;
    while (!rc && (ib.pos < ib.size || hint)) {
        rc = obuf_room(o, 64 * 1024);
        if (rc)
            break;
        ZSTD_outBuffer ob = {o->p, o->cap, o->n};
        hint = ZSTD_decompressStream(d, &ob, &ib);
        /* an error, or a frame cut short */
        if (ZSTD_isError(hint) || (hint && ib.pos == ib.size && ob.pos == o->n))
            rc = PL_EPROTO;
        o->n = ob.pos;
    }
    ZSTD_freeDStream(d);
    return rc;
}

int batch_inflate(int codec, const uint8_t *in, size_t n, uint8_t **ret, size_t *ret_n)
{
    struct obuf o = {0};
    int rc;
    switch (codec) {
    case 1: rc = inflate_gzip(in, n, &o); break;
    case 2: rc = inflate_snappy(in, n, &o); break;
    case 3: rc = inflate_lz4(in, n, &o); break;
    case 4: rc = inflate_zstd(in, n, &o); break;
    default: rc = PL_EINVAL; break;
    }
    if (rc) {
        free(o.p);
        return rc;
    }
    *ret = o.p;
    *ret_n = o.n;
    return 0;
}

/* RecordBatch v2 (batch.h). Layout, big-endian: baseOffset int64,
 * batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32,
 * attributes int16, lastOffsetDelta int32, baseTimestamp int64,
 * maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence
 * int32, records count int32, records. The CRC-32C covers attributes to the
 * end, so the broker may patch the base offset and leader epoch in place. */
#include "broker/batch.h"

#include <isa-l/crc.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

uint32_t batch_crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    while (n) {
        int step = n > (1u << 30) ? 1 << 30 : (int)n;
        crc = crc32_iscsi((unsigned char *)p, step, crc);
        p += step;
        n -= (size_t)step;
    }
    return crc ^ 0xFFFFFFFFu;
}

int batch_parse(const uint8_t *p, size_t n, struct batch_hdr *h, size_t *ret_len)
{
    if (n < BATCH_HDR_LEN)
        return PL_EAGAIN;
    h->base_offset = (int64_t)pl_get_be64(p);
    h->length = (int32_t)pl_get_be32(p + 8);
    h->leader_epoch = (int32_t)pl_get_be32(p + 12);
    h->magic = (int8_t)p[16];
    h->crc = pl_get_be32(p + 17);
    h->attributes = (int16_t)pl_get_be16(p + 21);
    h->last_offset_delta = (int32_t)pl_get_be32(p + 23);
    h->first_ts = (int64_t)pl_get_be64(p + 27);
    h->max_ts = (int64_t)pl_get_be64(p + 35);
    h->producer_id = (int64_t)pl_get_be64(p + 43);
    h->producer_epoch = (int16_t)pl_get_be16(p + 51);
    h->base_sequence = (int32_t)pl_get_be32(p + 53);
    h->count = (int32_t)pl_get_be32(p + 57);
    if (h->length < BATCH_HDR_LEN - 12)
        return PL_EPROTO;
    size_t len = (size_t)h->length + 12;
    *ret_len = len;
    return len > n ? PL_EAGAIN : 0;
}

int batch_validate(const uint8_t *p, size_t n, int *ret_count, int64_t *ret_records)
{
    int count = 0;
    int64_t records = 0;
    if (n == 0)
        return PL_EPROTO;
    while (n) {
        struct batch_hdr h;
        size_t len = 0;
        int rc = batch_parse(p, n, &h, &len);
        if (rc == PL_EAGAIN)
            return PL_EPROTO; /* a batch cut short */
        if (rc)
            return rc;
        if (len > BATCH_MAX)
            return PL_EFBIG;
        if (h.magic != 2)
            return PL_EINVAL;
        if (h.count < 0 || h.last_offset_delta < 0 || h.count != h.last_offset_delta + 1)
            return PL_EPROTO;
        /* an uncompressed record takes at least 7 bytes (length, attributes,
         * deltas, key and value lengths, header count) */
        if (BATCH_CODEC(&h) == 0 && (uint64_t)h.count * 7 > len - BATCH_HDR_LEN)
            return PL_EPROTO;
        if (BATCH_CODEC(&h) > 4 || BATCH_IS_CONTROL(&h))
            return PL_EINVAL;
        if (batch_crc32c(p + 21, len - 21) != h.crc)
            return PL_ECORRUPT;
        count++;
        records += h.count;
        p += len;
        n -= len;
    }
    *ret_count = count;
    *ret_records = records;
    return 0;
}

void batch_set_base(uint8_t *p, int64_t base)
{
    pl_put_be64(p, (uint64_t)base);
    pl_put_be32(p + 12, 0); /* leader epoch: one broker, epoch 0 */
}

/* A zigzag varint (records use them for lengths and deltas). */
static int varint(const uint8_t *p, size_t n, size_t *at, int64_t *ret)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*at >= n)
            return PL_EPROTO;
        uint8_t b = p[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *ret = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return PL_EPROTO;
}

static int bytes_field(const uint8_t *p, size_t end, size_t *at, const uint8_t **ret,
                       int32_t *ret_n)
{
    int64_t len;
    if (varint(p, end, at, &len) || len < -1 || (len > 0 && (uint64_t)len > end - *at))
        return PL_EPROTO;
    *ret = len > 0 ? p + *at : NULL;
    *ret_n = (int32_t)len;
    *at += len > 0 ? (size_t)len : 0;
    return 0;
}

/* The records section (count records from at) of a batch stamped first_ts. */
static int records_walk(const uint8_t *p, size_t n, int32_t count, int64_t first_ts,
                        batch_record_fn cb, void *arg)
{
    size_t at = 0;
    for (int32_t i = 0; i < count; i++) {
        int64_t rlen, tsd, offd;
        struct batch_record r;
        if (varint(p, n, &at, &rlen) || rlen < 1 || (uint64_t)rlen > n - at)
            return PL_EPROTO;
        size_t next = at + (size_t)rlen, x = at + 1; /* past the attributes */
        if (varint(p, next, &x, &tsd) || varint(p, next, &x, &offd) ||
            bytes_field(p, next, &x, &r.key, &r.kn) || bytes_field(p, next, &x, &r.val, &r.vn))
            return PL_EPROTO;
        r.offset_delta = offd;
        r.ts = first_ts + tsd;
        int stop = cb(arg, &r);
        if (stop)
            return stop < 0 ? stop : 0;
        at = next;
    }
    return 0;
}

int batch_records(const uint8_t *p, size_t n, batch_record_fn cb, void *arg)
{
    struct batch_hdr h;
    size_t len;
    int rc = batch_parse(p, n, &h, &len);
    if (rc)
        return rc == PL_EAGAIN ? PL_EPROTO : rc;
    if (h.magic != 2 || h.count < 0)
        return PL_EPROTO;
    if (!BATCH_CODEC(&h))
        return records_walk(p + BATCH_HDR_LEN, len - BATCH_HDR_LEN, h.count, h.first_ts, cb,
                            arg);
    uint8_t *raw;
    size_t rn;
    rc = batch_inflate(BATCH_CODEC(&h), p + BATCH_HDR_LEN, len - BATCH_HDR_LEN, &raw, &rn);
    if (rc)
        return rc;
    rc = records_walk(raw, rn, h.count, h.first_ts, cb, arg);
    free(raw);
    return rc;
}

struct find_time {
    int64_t ts;
    int32_t delta;
    int64_t found_ts;
    int found;
};

static int find_time_cb(void *arg, const struct batch_record *r)
{
    struct find_time *f = arg;
    if (r->ts < f->ts)
        return 0;
    f->delta = (int32_t)r->offset_delta;
    f->found_ts = r->ts;
    f->found = 1;
    return 1;
}

int batch_find_time(const uint8_t *p, size_t n, int64_t ts, int32_t *ret_delta, int64_t *ret_ts)
{
    struct find_time f = {ts, 0, 0, 0};
    int rc = batch_records(p, n, find_time_cb, &f);
    if (rc)
        return rc;
    if (!f.found)
        return PL_ENOENT;
    *ret_delta = f.delta;
    *ret_ts = f.found_ts;
    return 0;
}

static size_t put_varint(uint8_t *p, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;
    while (z >= 0x80) {
        p[n++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    p[n++] = (uint8_t)z;
    return n;
}

int batch_build(struct pl_buf *out, const struct batch_rec *recs, int n, int64_t ts_ms)
{
    uint8_t h[BATCH_HDR_LEN] = {0}, v[40];
    if (n < 1)
        return PL_EINVAL;
    size_t start = out->len;
    int rc = pl_buf_add(out, h, sizeof(h));
    for (int i = 0; !rc && i < n; i++) {
        const struct batch_rec *r = &recs[i];
        /* body: attributes, timestamp delta 0, offset delta, key, value, no headers */
        size_t body = 1 + 1 + (size_t)put_varint(v, i) + put_varint(v, (int64_t)r->kn) + r->kn +
                      put_varint(v, (int64_t)r->vn) + r->vn + 1;
        size_t at = put_varint(v, (int64_t)body);
        v[at++] = 0; /* attributes */
        v[at++] = 0; /* timestamp delta */
        at += put_varint(v + at, i);
        at += put_varint(v + at, (int64_t)r->kn);
        rc = pl_buf_add(out, v, at);
        if (!rc)
            rc = pl_buf_add(out, r->key, r->kn);
        if (!rc)
            rc = pl_buf_add(out, v, put_varint(v, (int64_t)r->vn));
        if (!rc)
            rc = pl_buf_add(out, r->val, r->vn);
        if (!rc)
            rc = pl_buf_add(out, "", 1); /* header count 0 */
    }
    if (rc) {
        out->len = start;
        return rc;
    }
    uint8_t *p = (uint8_t *)out->data + start;
    size_t len = out->len - start;
    if (len > BATCH_MAX) {
        out->len = start;
        return PL_EFBIG;
    }
    pl_put_be32(p + 8, (uint32_t)(len - 12));
    p[16] = 2;                               /* magic */
    pl_put_be32(p + 23, (uint32_t)(n - 1));  /* last offset delta */
    pl_put_be64(p + 27, (uint64_t)ts_ms);
    pl_put_be64(p + 35, (uint64_t)ts_ms);
    pl_put_be64(p + 43, UINT64_MAX);         /* producer id -1: not idempotent */
    pl_put_be16(p + 51, 0xFFFF);             /* producer epoch -1 */
    pl_put_be32(p + 53, UINT32_MAX);         /* base sequence -1 */
    pl_put_be32(p + 57, (uint32_t)n);
    pl_put_be32(p + 17, batch_crc32c(p + 21, len - 21));
    return 0;
}

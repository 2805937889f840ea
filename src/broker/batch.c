/* RecordBatch v2 (batch.h). Layout, big-endian: baseOffset int64,
 * batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32,
 * attributes int16, lastOffsetDelta int32, baseTimestamp int64,
 * maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence
 * int32, records count int32, records. The CRC-32C covers attributes to the
 * end, so the broker may patch the base offset and leader epoch in place. */
#include "broker/batch.h"

#include <isa-l/crc.h>
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

int batch_find_time(const uint8_t *p, size_t n, int64_t ts, int32_t *ret_delta, int64_t *ret_ts)
{
    struct batch_hdr h;
    size_t len, at = BATCH_HDR_LEN;
    int rc = batch_parse(p, n, &h, &len);
    if (rc)
        return rc == PL_EAGAIN ? PL_EPROTO : rc;
    if (BATCH_CODEC(&h))
        return PL_EINVAL;
    for (int32_t i = 0; i < h.count; i++) {
        int64_t rlen, tsd, offd;
        int8_t attrs;
        if (varint(p, len, &at, &rlen) || rlen < 0 || (uint64_t)rlen > len - at)
            return PL_EPROTO;
        size_t next = at + (size_t)rlen, r = at;
        if (r >= next)
            return PL_EPROTO;
        attrs = (int8_t)p[r++];
        (void)attrs;
        if (varint(p, next, &r, &tsd) || varint(p, next, &r, &offd))
            return PL_EPROTO;
        if (h.first_ts + tsd >= ts) {
            *ret_delta = (int32_t)offd;
            *ret_ts = h.first_ts + tsd;
            return 0;
        }
        at = next;
    }
    return PL_ENOENT;
}

/* Kafka RecordBatch v2 headers: parse and validate what a producer sent,
 * without decoding the records (they stay as received). Pure. */
#ifndef PL_BROKER_BATCH_H
#define PL_BROKER_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/err.h"

#define BATCH_HDR_LEN 61      /* base offset .. record count */
#define BATCH_LEN_OFF 8       /* int32 batchLength: bytes after this field */
#define BATCH_MAX (64u << 20) /* one batch, as Kafka's message.max.bytes could allow */

struct batch_hdr {
    int64_t base_offset;
    int32_t length; /* bytes after the length field */
    int32_t leader_epoch;
    int8_t magic;
    uint32_t crc;
    int16_t attributes;
    int32_t last_offset_delta;
    int64_t first_ts, max_ts;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    int32_t count;
};

#define BATCH_CODEC(h) ((h)->attributes & 7)
#define BATCH_IS_CONTROL(h) (((h)->attributes >> 5) & 1)
#define BATCH_IS_TXN(h) (((h)->attributes >> 4) & 1)

uint32_t batch_crc32c(const uint8_t *p, size_t n);
/* The header at p (n bytes available); *ret_len = whole batch size.
 * PL_EAGAIN when fewer than BATCH_HDR_LEN bytes or the batch is cut short. */
int batch_parse(const uint8_t *p, size_t n, struct batch_hdr *h, size_t *ret_len) PL_WUR;
/* A produce request's records for one partition, as Kafka checks them:
 * whole batches only, magic 2, length and count sane, CRC-32C right, codec
 * 0-4, no control batches. *ret_count: batches, *ret_records: records.
 * PL_ECORRUPT (bad CRC), PL_EPROTO (malformed), PL_EINVAL (a codec or kind
 * we refuse), PL_EFBIG (a batch over BATCH_MAX). */
int batch_validate(const uint8_t *p, size_t n, int *ret_count, int64_t *ret_records) PL_WUR;
/* One record as batch_records hands it out (pointers valid during the call). */
struct batch_record {
    int64_t offset_delta, ts;
    const uint8_t *key, *val; /* NULL when null or empty */
    int32_t kn, vn;           /* -1: null */
};
typedef int (*batch_record_fn)(void *arg, const struct batch_record *r);
/* Every record of the whole batch at p (n bytes), decompressed as needed;
 * cb returns non-zero to stop (negative: that error). PL_EPROTO when
 * malformed, PL_EFBIG when it would inflate past 256 MiB. */
int batch_records(const uint8_t *p, size_t n, batch_record_fn cb, void *arg) PL_WUR;
/* Decompress a records section written with codec (1 gzip, 2 snappy raw or
 * xerial, 3 LZ4 frame, 4 zstd); *ret (malloc'd) is the caller's. */
int batch_inflate(int codec, const uint8_t *in, size_t n, uint8_t **ret, size_t *ret_n) PL_WUR;
/* The offset delta and timestamp of the batch's first record stamped at or
 * after ts (any codec). PL_ENOENT when none is; PL_EPROTO when malformed. */
int batch_find_time(const uint8_t *p, size_t n, int64_t ts, int32_t *ret_delta,
                    int64_t *ret_ts) PL_WUR;
/* Give the batch at p its offsets from base on (the CRC does not cover them). */
void batch_set_base(uint8_t *p, int64_t base);

struct pl_buf;
struct batch_rec {
    const void *key, *val;
    size_t kn, vn;
};
/* Append one uncompressed batch of n records stamped ts_ms to out. */
int batch_build(struct pl_buf *out, const struct batch_rec *recs, int n, int64_t ts_ms) PL_WUR;

#endif

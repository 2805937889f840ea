/* Kafka wire primitives (non-flexible versions): big-endian integers,
 * int16-length strings, int32-length bytes and arrays. A reader never reads
 * past its buffer: the first short or malformed field sets err and every
 * later read returns zero values. Pure: no I/O. */
#ifndef PL_KCODEC_H
#define PL_KCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/err.h"

struct kr {
    const uint8_t *p;
    size_t n, at;
    int err;
};

int8_t kr_i8(struct kr *r);
int16_t kr_i16(struct kr *r);
int32_t kr_i32(struct kr *r);
int64_t kr_i64(struct kr *r);
/* A string into buf (NUL-terminated); *is_null when the length is -1 (buf
 * gets ""). Longer than cap - 1: err. */
void kr_str(struct kr *r, char *buf, size_t cap, int *is_null);
/* Borrowed bytes (int32 length); NULL and *len -1 when null. */
const uint8_t *kr_bytes(struct kr *r, int32_t *len);
/* An array count; -1 for null. Over max, or more than the bytes left could
 * hold at min_elem bytes each: err. */
int32_t kr_array(struct kr *r, int32_t max, size_t min_elem);

/* A response being written. Large byte strings (fetched batches) are not
 * copied in: kw_bytes_own keeps the buffer and its place, and the sender
 * splices it in (kw_iov), so a response is p's n bytes with refs inserted at
 * their offsets, n + ref_bytes in all. */
struct kw_ref {
    size_t at; /* in p: the ref's bytes come before p[at] */
    uint8_t *p;
    size_t n;
};

struct kw {
    uint8_t *p;
    size_t n, cap;
    int err; /* out of memory */
    struct kw_ref *refs;
    int nrefs, refcap;
    size_t ref_bytes;
};

void kw_i8(struct kw *w, int8_t v);
void kw_i16(struct kw *w, int16_t v);
void kw_i32(struct kw *w, int32_t v);
void kw_i64(struct kw *w, int64_t v);
void kw_str(struct kw *w, const char *s); /* NULL writes a null string */
void kw_bytes(struct kw *w, const void *p, int32_t n); /* p NULL, n -1: null */
void kw_raw(struct kw *w, const void *p, size_t n);
/* kw_bytes for a malloc'd buffer the writer now owns (freed by kw_reset). */
void kw_bytes_own(struct kw *w, uint8_t *p, size_t n);
/* The whole response in order as at most max iovecs (the caller's array);
 * returns how many, or -1 when more are needed. */
struct iovec;
int kw_iov(const struct kw *w, struct iovec *iov, int max);
/* Empty it for the next response, freeing what it owns but keeping p. */
void kw_reset(struct kw *w);
/* Reserve 4 bytes to fill in later with kw_put_i32_at. */
size_t kw_mark(struct kw *w);
void kw_put_i32_at(struct kw *w, size_t at, int32_t v);
void kw_free(struct kw *w);

/* Request header v1 (v2 for flexible versions adds tagged fields we skip). */
struct kreq_hdr {
    int16_t api_key, api_version;
    int32_t correlation_id;
    char client_id[256];
};
int kr_header(struct kr *r, struct kreq_hdr *h) PL_WUR;

#endif

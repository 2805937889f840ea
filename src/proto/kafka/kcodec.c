/* Kafka wire primitives (kcodec.h), from the Kafka protocol guide. */
#include "proto/kafka/kcodec.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "base/base.h"

static const uint8_t *take(struct kr *r, size_t n)
{
    if (r->err || r->n - r->at < n) {
        r->err = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->at;
    r->at += n;
    return p;
}

int8_t kr_i8(struct kr *r)
{
    const uint8_t *p = take(r, 1);
    return p ? (int8_t)p[0] : 0;
}

int16_t kr_i16(struct kr *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (int16_t)pl_get_be16(p) : 0;
}

int32_t kr_i32(struct kr *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (int32_t)pl_get_be32(p) : 0;
}

int64_t kr_i64(struct kr *r)
{
    const uint8_t *p = take(r, 8);
    return p ? (int64_t)pl_get_be64(p) : 0;
}

void kr_str(struct kr *r, char *buf, size_t cap, int *is_null)
{
    int16_t n = kr_i16(r);
    buf[0] = 0;
    if (is_null)
        *is_null = n == -1;
    if (n == -1 || r->err)
        return;
    if (n < 0 || (size_t)n >= cap) {
        r->err = 1;
        return;
    }
    const uint8_t *p = take(r, (size_t)n);
    if (!p)
        return;
    memcpy(buf, p, (size_t)n);
    buf[n] = 0;
    if (memchr(buf, 0, (size_t)n))
        r->err = 1; /* no NUL inside names */
}

const uint8_t *kr_bytes(struct kr *r, int32_t *len)
{
    int32_t n = kr_i32(r);
    *len = -1;
    if (r->err || n == -1)
        return NULL;
    if (n < 0) {
        r->err = 1;
        return NULL;
    }
    const uint8_t *p = take(r, (size_t)n);
    if (p)
        *len = n;
    return p;
}

int32_t kr_array(struct kr *r, int32_t max, size_t min_elem)
{
    int32_t n = kr_i32(r);
    if (r->err || n == -1)
        return r->err ? 0 : -1;
    if (n < 0 || n > max || (min_elem && (uint64_t)n * min_elem > r->n - r->at)) {
        r->err = 1;
        return 0;
    }
    return n;
}

int kr_header(struct kr *r, struct kreq_hdr *h)
{
    int is_null;
    h->api_key = kr_i16(r);
    h->api_version = kr_i16(r);
    h->correlation_id = kr_i32(r);
    kr_str(r, h->client_id, sizeof(h->client_id), &is_null);
    return r->err ? PL_EPROTO : 0;
}

/* ---- writer ---- */
static uint8_t *room(struct kw *w, size_t n)
{
    if (w->err)
        return NULL;
    if (w->cap - w->n < n) {
        size_t cap = PL_MAX(w->cap * 2, w->n + n + 256);
        uint8_t *p = realloc(w->p, cap);
        if (!p) {
            w->err = 1;
            return NULL;
        }
        w->p = p;
        w->cap = cap;
    }
    uint8_t *p = w->p + w->n;
    w->n += n;
    return p;
}

void kw_i8(struct kw *w, int8_t v)
{
    uint8_t *p = room(w, 1);
    if (p)
        p[0] = (uint8_t)v;
}

void kw_i16(struct kw *w, int16_t v)
{
    uint8_t *p = room(w, 2);
    if (p)
        pl_put_be16(p, (uint16_t)v);
}

void kw_i32(struct kw *w, int32_t v)
{
    uint8_t *p = room(w, 4);
    if (p)
        pl_put_be32(p, (uint32_t)v);
}

void kw_i64(struct kw *w, int64_t v)
{
    uint8_t *p = room(w, 8);
    if (p)
        pl_put_be64(p, (uint64_t)v);
}

void kw_str(struct kw *w, const char *s)
{
    if (!s) {
        kw_i16(w, -1);
        return;
    }
    size_t n = PL_MIN(strlen(s), (size_t)INT16_MAX);
    kw_i16(w, (int16_t)n);
    kw_raw(w, s, n);
}

void kw_bytes(struct kw *w, const void *p, int32_t n)
{
    if (!p && n < 0) {
        kw_i32(w, -1);
        return;
    }
    kw_i32(w, n);
    kw_raw(w, p, (size_t)n);
}

void kw_raw(struct kw *w, const void *p, size_t n)
{
    uint8_t *d = n && p ? room(w, n) : NULL;
    if (d)
        memcpy(d, p, n);
}

size_t kw_mark(struct kw *w)
{
    size_t at = w->n;
    kw_i32(w, 0);
    return at;
}

void kw_put_i32_at(struct kw *w, size_t at, int32_t v)
{
    if (!w->err && at + 4 <= w->n)
        pl_put_be32(w->p + at, (uint32_t)v);
}

void kw_bytes_own(struct kw *w, uint8_t *p, size_t n)
{
    kw_i32(w, (int32_t)n);
    if (!n || w->err) {
        free(p);
        return;
    }
    if (w->nrefs == w->refcap) {
        int cap = w->refcap ? w->refcap * 2 : 16;
        struct kw_ref *r = realloc(w->refs, (size_t)cap * sizeof(*r));
        if (!r) {
            kw_raw(w, p, n); /* no room to note it: copy it in */
            free(p);
            return;
        }
        w->refs = r;
        w->refcap = cap;
    }
    w->refs[w->nrefs++] = (struct kw_ref){w->n, p, n};
    w->ref_bytes += n;
}

int kw_iov(const struct kw *w, struct iovec *iov, int max)
{
    int k = 0;
    size_t at = 0;
    for (int i = 0; i <= w->nrefs; i++) {
        size_t upto = i < w->nrefs ? w->refs[i].at : w->n;
        if (upto > at) {
            if (k == max)
                return -1;
            iov[k++] = (struct iovec){w->p + at, upto - at};
            at = upto;
        }
        if (i < w->nrefs) {
            if (k == max)
                return -1;
            iov[k++] = (struct iovec){w->refs[i].p, w->refs[i].n};
        }
    }
    return k;
}

void kw_reset(struct kw *w)
{
    for (int i = 0; i < w->nrefs; i++)
        free(w->refs[i].p);
    w->nrefs = 0;
    w->ref_bytes = 0;
    w->n = 0;
}

void kw_free(struct kw *w)
{
    kw_reset(w);
    free(w->refs);
    free(w->p);
    memset(w, 0, sizeof(*w));
}

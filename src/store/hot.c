/* The hot chunk cache: decoded chunks that reads keep needing again.
 *
 * A chunk stored as a delta is decoded against its reference, so every read
 * of a delta reads and decompresses the reference too; data written as many
 * near-copies of a few originals (VM images, fio's buffers, versions of a
 * file) has thousands of deltas against a handful of references. Those
 * references, decoded, are kept here (DESIGN.md §3: "a small cache of hot
 * decompressed chunks sits in front").
 *
 * Keyed by fingerprint: a fingerprint names its bytes, so an entry is never
 * stale and nothing has to invalidate it when chunks move, die or are
 * stored again. Bounded in bytes, least recently used first out; an entry a
 * reader holds stays alive until it lets go. */
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

#define HOT_BUCKETS 4096 /* power of two */

struct hot_chunk {
    struct hot_chunk *hnext;       /* hash chain */
    struct hot_chunk *older, *newer; /* LRU list; not linked once evicted */
    int refs;                        /* the cache's own (while listed) + readers' */
    uint8_t fp[DATA_FP_LEN];
    size_t n;
    uint8_t data[];
};

struct hot_cache {
    pthread_mutex_t lock;
    size_t cap, bytes;
    struct hot_chunk *newest, *oldest;
    struct hot_chunk *b[HOT_BUCKETS];
    uint64_t hits, misses;
};

static size_t hot_bucket(const uint8_t fp[DATA_FP_LEN])
{
    uint64_t h;
    memcpy(&h, fp, sizeof(h)); /* a fingerprint is already uniform */
    return (size_t)(h & (HOT_BUCKETS - 1));
}

int hot_new(size_t cap, struct hot_cache **ret)
{
    struct hot_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return PL_ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->cap = cap;
    *ret = c;
    return 0;
}

static void chunk_release(struct hot_chunk *h)
{
    if (__atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(h);
}

/* Take h out of the table and the list (lock held); readers keep theirs. */
static void hot_unlist(struct hot_cache *c, struct hot_chunk *h)
{
    struct hot_chunk **pp = &c->b[hot_bucket(h->fp)];
    while (*pp != h)
        pp = &(*pp)->hnext;
    *pp = h->hnext;
    if (c->oldest == h)
        c->oldest = h->newer;
    if (c->newest == h)
        c->newest = h->older;
    if (h->older)
        h->older->newer = h->newer;
    if (h->newer)
        h->newer->older = h->older;
    c->bytes -= h->n;
    chunk_release(h);
}

void hot_free(struct hot_cache *c)
{
    if (!c)
        return;
    for (struct hot_chunk *h; (h = c->oldest) != NULL;)
        hot_unlist(c, h);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void hot_touch(struct hot_cache *c, struct hot_chunk *h)
{
    if (c->newest == h)
        return;
    /* out of its place ... */
    if (h->older)
        h->older->newer = h->newer;
    else
        c->oldest = h->newer;
    h->newer->older = h->older;
    /* ... to the new end */
    h->older = c->newest;
    h->newer = NULL;
    c->newest->newer = h;
    c->newest = h;
}

static const uint8_t *hot_find(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], int count,
                               size_t *ret_n, struct hot_chunk **ret)
{
    pthread_mutex_lock(&c->lock);
    struct hot_chunk *h = c->b[hot_bucket(fp)];
    while (h && memcmp(h->fp, fp, DATA_FP_LEN))
        h = h->hnext;
    if (h) {
        hot_touch(c, h);
        __atomic_add_fetch(&h->refs, 1, __ATOMIC_RELAXED);
    }
    if (count)
        *(h ? &c->hits : &c->misses) += 1;
    pthread_mutex_unlock(&c->lock);
    *ret = h;
    if (!h)
        return NULL;
    *ret_n = h->n;
    return h->data;
}

const uint8_t *hot_get(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], size_t *ret_n,
                       struct hot_chunk **ret)
{
    return hot_find(c, fp, 1, ret_n, ret);
}

const uint8_t *hot_peek(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], size_t *ret_n,
                        struct hot_chunk **ret)
{
    return hot_find(c, fp, 0, ret_n, ret);
}

void hot_put(struct hot_chunk *h)
{
    if (h)
        chunk_release(h);
}

int hot_alloc(size_t n, struct hot_chunk **ret, uint8_t **ret_data)
{
    struct hot_chunk *h = malloc(sizeof(*h) + n);
    if (!h)
        return PL_ENOMEM;
    memset(h, 0, sizeof(*h));
    h->n = n;
    h->refs = 1; /* the caller's */
    *ret = h;
    *ret_data = h->data;
    return 0;
}

void hot_insert(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], struct hot_chunk *h)
{
    if (h->n > c->cap / 8) /* one chunk must not push out most of the rest */
        return;
    memcpy(h->fp, fp, DATA_FP_LEN);
    pthread_mutex_lock(&c->lock);
    struct hot_chunk **slot = &c->b[hot_bucket(fp)], *o = *slot;
    while (o && memcmp(o->fp, fp, DATA_FP_LEN))
        o = o->hnext;
    if (!o) { /* another reader may have decoded it meanwhile: keep theirs */
        h->hnext = *slot;
        *slot = h;
        h->older = c->newest;
        h->newer = NULL;
        if (c->newest)
            c->newest->newer = h;
        else
            c->oldest = h;
        c->newest = h;
        c->bytes += h->n;
        __atomic_add_fetch(&h->refs, 1, __ATOMIC_RELAXED);
        struct hot_chunk *victim;
        while (c->bytes > c->cap && (victim = c->oldest) != NULL && victim != h)
            hot_unlist(c, victim);
    }
    pthread_mutex_unlock(&c->lock);
}

void hot_counts(struct hot_cache *c, uint64_t *ret_hits, uint64_t *ret_misses, uint64_t *ret_bytes)
{
    pthread_mutex_lock(&c->lock);
    *ret_hits = c->hits;
    *ret_misses = c->misses;
    *ret_bytes = c->bytes;
    pthread_mutex_unlock(&c->lock);
}

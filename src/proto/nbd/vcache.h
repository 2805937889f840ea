/* The NBD head's volume write cache: writes answered from memory and written
 * to the store in the background, durable at FLUSH (and FUA), as NBD
 * promises; see vcache.c. */
#ifndef PL_NBD_VCACHE_H
#define PL_NBD_VCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/store.h"

struct vc_opts {
    size_t budget;      /* cached bytes of every volume together; writers wait above it */
    size_t batch_min;   /* dirty bytes that start a write-out... */
    unsigned age_ms;    /* ...or the age of the oldest of them */
    size_t group_max;   /* bytes of runs stored in one transaction (a run longer is one) */
};

#define VC_BUDGET_DEFAULT (1024u << 20)
/* Late, as a page cache starts its write-back: the writer's chunking and
 * hashing take the cores a client's burst is using (fio write 1 GiB, bs 1M,
 * two cores: 1.6-1.8 GB/s starting at 32 MiB, 2.8 at 512), and the age
 * still starts it within a second. */
#define VC_BATCH_MIN_DEFAULT (512u << 20)
#define VC_AGE_MS_DEFAULT 1000
#define VC_GROUP_MAX_DEFAULT VC_WRITE_MAX

struct vc_set;  /* the server's caches, one per volume with connections or dirty bytes */
struct vcache;

/* o may be NULL (defaults); zero fields take their defaults too. */
int vc_set_new(struct pl_store *st, const struct vc_opts *o, struct vc_set **ret) PL_WUR;
/* Waits until every volume's cached writes are in the store (or logged lost). */
void vc_set_free(struct vc_set *s);
size_t vc_set_bytes(struct vc_set *s);   /* cached now */
size_t vc_set_limit(const struct vc_set *s); /* the budget */

/* A connection's handle on volume element id's cache; NULL: out of memory. */
struct vcache *vc_open(struct vc_set *s, uint64_t id);
/* The last close leaves the cache to its writer, which stores what is left
 * and then lets it go; a connection opened meanwhile sees those bytes. */
void vc_close(struct vcache *v);

/* Cache n bytes at off (n <= VC_WRITE_MAX); with fua, return once they are durable. */
#define VC_WRITE_MAX (64u << 20)
int vc_write(struct vcache *v, uint64_t off, const void *p, size_t n, int fua) PL_WUR;
/* Every write cached before the call is durable when it returns 0. */
int vc_flush(struct vcache *v) PL_WUR;
/* The store's bytes with the cached writes laid over; zeros past the element's end. */
int vc_read(struct vcache *v, uint64_t off, void *buf, size_t len) PL_WUR;
/* The store's data and holes of [off, off+len) (as pl_elem_map) with the
 * cached writes as data; a prefix of the range when it is very fragmented. */
int vc_map(struct vcache *v, uint64_t off, uint64_t len, pl_map_fn cb, void *arg) PL_WUR;
/* Punch [off, off+len) in the store; cached writes there are dropped. */
int vc_punch(struct vcache *v, uint64_t off, uint64_t len) PL_WUR;

#endif

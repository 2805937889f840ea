/* The KV cache service (DESIGN.md: kv): values for inference engines in a
 * DRAM tier bounded in bytes, spilling to a flash tier of elements under
 * "/.kv" instead of being thrown away. The RESP head serves it.
 *
 * - DRAM tier: a segmented LRU. New keys enter a probation segment; a second
 *   hit moves them to the protected segment (80% of the tier), so a scan of
 *   keys read once only churns probation and cannot flush the hot set.
 *   Values are refcounted buffers handed out without copying.
 * - Flash tier: evicted values are written by a background thread as
 *   elements (reduced and protected like any data) and read back, promoted,
 *   on a GET. Bounded in bytes, LRU. Survives restarts: the index is rebuilt
 *   from "/.kv" at open; a clean close demotes what only DRAM held.
 * - Namespaces: every key belongs to one ("user/db"); nothing crosses them,
 *   and one over its byte bound (ns_max) evicts its own least recent keys.
 * - TTLs hold in both tiers (milliseconds since the epoch).
 * Thread safety: every function may be called from any thread. */
#ifndef PL_KV_H
#define PL_KV_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/store.h"

#define KV_VAL_MAX (512ull << 20) /* Redis's proto-max-bulk-len */
#define KV_KEY_MAX (64u << 10)
#define KV_NS_MAX 128

struct kv_val {
    int refs;
    size_t n;   /* the value's length */
    size_t cap; /* bytes data[] has room for (>= n once the value is complete) */
    uint8_t data[];
};
/* A value of n bytes (contents undefined), one reference; NULL when out of memory. */
struct kv_val *kv_val_new(size_t n);
/* The same from recycled memory only (already resident: no page faults, and
 * nothing new committed for a client that stalls); NULL when none is free. */
struct kv_val *kv_val_reuse(size_t n);
/* Room for cap bytes in *v (one reference), keeping its first have bytes and
 * its n; *v unchanged on failure. */
int kv_val_grow(struct kv_val **v, size_t cap, size_t have) PL_WUR;
void kv_val_ref(struct kv_val *v);
void kv_val_unref(struct kv_val *v); /* accepts NULL */

struct kv;

struct kv_opts {
    uint64_t dram_max;  /* bytes; 0 = 1 GiB */
    uint64_t flash_max; /* bytes; 0 = 16 GiB */
    uint64_t ns_max;    /* bytes one namespace may hold in both tiers; 0 = no bound */
    /* Namespaces whose flash values the store compresses at destage, space
     * separated: USER/DB, USER/ and a star for all of a user's, or a star
     * alone. Others (the default: KV tensors do not compress) are stored
     * raw, with no compression or similarity work spent on them. Copied. */
    const char *compress;
};

int kv_open(struct pl_store *st, const struct kv_opts *o, struct kv **ret) PL_WUR;
/* Demotes DRAM-only values (within the flash bound) so a restart keeps them. */
void kv_close(struct kv *kv);

/* ns: NUL-terminated namespace; key: kn bytes (binary). */
/* *ret: one reference (PL_ENOENT: missing or expired). */
int kv_get(struct kv *kv, const char *ns, const void *key, size_t kn, struct kv_val **ret) PL_WUR;

enum { KV_NX = 1, KV_XX = 2, KV_KEEPTTL = 4, KV_GETOLD = 8 };
/* Store v (the reference is taken, success or not). expire_ms: absolute, 0 =
 * none. PL_ENOSPC when v alone is over the namespace bound. *ret_set: 0 when NX/XX said no. With KV_GETOLD, *ret_old gets the
 * previous value (a reference) or NULL. */
int kv_set(struct kv *kv, const char *ns, const void *key, size_t kn, struct kv_val *v,
           int64_t expire_ms, int flags, int *ret_set, struct kv_val **ret_old) PL_WUR;
/* 1 when it existed (and is gone now), 0 when not. */
int kv_del(struct kv *kv, const char *ns, const void *key, size_t kn);
int kv_exists(struct kv *kv, const char *ns, const void *key, size_t kn);
/* Value length without reading it (a flash value is not promoted). */
int kv_strlen(struct kv *kv, const char *ns, const void *key, size_t kn, uint64_t *ret) PL_WUR;
/* Bytes [off, off + n) of the value into buf (a flash value is read in
 * place, not whole); *ret_n may be short at the end. */
int kv_getrange(struct kv *kv, const char *ns, const void *key, size_t kn, uint64_t off,
                void *buf, size_t n, size_t *ret_n) PL_WUR;
/* Where a read of (ns, key) would be served from, without touching its
 * recency: 0 from DRAM, 1 from flash (the caller may block), PL_ENOENT
 * missing; *ret_size the value's length. */
int kv_peek(struct kv *kv, const char *ns, const void *key, size_t kn, uint64_t *ret_size);
/* Would kv_set wait now for demotion to catch up? (Callers that must not
 * block hand the write to a thread that may.) */
int kv_set_waits(struct kv *kv);
enum { KV_EXP_NX = 1, KV_EXP_XX = 2, KV_EXP_GT = 4, KV_EXP_LT = 8 };
/* Set (expire_ms > 0) or remove (0) the expiry; 1 when done, 0 when the key
 * is missing or cond said no. An expiry in the past deletes the key. */
int kv_expire(struct kv *kv, const char *ns, const void *key, size_t kn, int64_t expire_ms,
              int cond);
/* PL_ENOENT when missing; *ret_ms: the absolute expiry, 0 when none. */
int kv_expiry(struct kv *kv, const char *ns, const void *key, size_t kn, int64_t *ret_ms) PL_WUR;
uint64_t kv_dbsize(struct kv *kv, const char *ns);
/* Keys of ns from cursor on (0 starts); cb gets each key; *ret_next is 0
 * when the walk is done. Keys present throughout are returned at least once. */
typedef int (*kv_key_fn)(void *arg, const void *key, size_t kn);
int kv_scan(struct kv *kv, const char *ns, uint64_t cursor, size_t count, kv_key_fn cb, void *arg,
            uint64_t *ret_next) PL_WUR;
/* Drop every key of ns (NULL: of every namespace), in both tiers. */
int kv_flush(struct kv *kv, const char *ns) PL_WUR;

struct kv_stats {
    uint64_t keys, dram_keys, flash_keys;
    uint64_t dram_used, dram_max, flash_used, flash_max;
    uint64_t hits_dram, hits_flash, misses;
    uint64_t demotions, promotions, evictions, expired;
    uint64_t demote_pending; /* bytes waiting to be written to flash */
};
void kv_stats(struct kv *kv, struct kv_stats *ret);
/* Change the tier bounds (0 keeps one); evicts as needed. */
void kv_config(struct kv *kv, uint64_t dram_max, uint64_t flash_max);
/* Wait until every demotion queued so far is on flash (tests, shutdown). */
void kv_settle(struct kv *kv);

#endif

/* store internals: record encodings and helpers shared by the store's files.
 *
 * Design note: versioned records
 * - Records of the elem, dirent and extent tables carry [birth, death) epochs.
 *   Keys end with ~birth (big-endian), so for one primary key the newest
 *   version comes first in a cursor walk.
 * - Live view: the newest version, if its death is PL_EPOCH_INF.
 *   Snapshot S: the first version with birth <= S, if S < death.
 * - A mutation in epoch E of a record born at b rewrites it in place unless a
 *   snapshot s >= b exists (sys "snap_max" >= b); then the old version gets
 *   death = E (and a graveyard entry) and a new version is born at E.
 * - A snapshot is "record epoch E, E := E + 1": O(1).
 * - Chunk refcount = number of extent records (live or dead) naming it. A chunk
 *   whose count reaches 0 keeps its index entry ("dead") until segment
 *   compaction removes it under the purge lock, so a writer that found it by
 *   dedup can still revive it.
 */
#ifndef PL_STORE_INT_H
#define PL_STORE_INT_H

#include <pthread.h>

#include "base/base.h"
#include "data/data.h"
#include "meta/meta.h"
#include "plenum/store.h"

#define PL_EPOCH_INF UINT64_MAX

struct hot_cache;
struct hot_chunk;

enum elem_flags {
    ELEM_F_STAGING = 1 << 0,  /* anonymous, being written by a pl_writer */
    ELEM_F_IMPLICIT = 1 << 1, /* directory created implicitly by an object key */
    ELEM_F_VERSION = 1 << 2,  /* a noncurrent object version (with STAGING: nameless) */
};

/* property tags inside an element record */
enum prop_tag {
    PROP_CTYPE = 1,
    PROP_SYMLINK = 2,
    PROP_XATTR = 3,
    PROP_VERSION = 4,
    PROP_PARTS = 5,
    PROP_NAME = 6, /* the name it was last given, in a.parent (event.c) */
};

struct elem {
    struct pl_attr a;
    uint64_t birth, death;
    uint16_t flags;
    struct pl_buf props; /* TLV: tag u8, len LE32, bytes */
};

/* An element someone is reading (an S3 GET, an open file): its content
 * outlives its last name until the last unpin. */
struct pin {
    uint64_t id;
    int count;
    int orphan; /* its last name went: drop it at the last unpin */
    struct pin *next;
};

struct pl_store {
    char *dir;
    int lock_fd;
    struct meta_env *meta;
    struct data_store *data;
    struct data_cdc cdc;
    /* writers hold it shared from their first dedup lookup to their commit;
     * compaction takes it exclusive to purge dead chunks and delete segments */
    struct pl_gate purge;
    struct pl_pool *pool; /* background work: pipelined commits */
    struct pl_pool *ahead; /* reading ahead of sequential readers */
    struct hot_cache *hot; /* decoded delta references (hot.c) */
    int leads;             /* read-ahead jobs queued there (atomic) */
    int ahead_stop;        /* closing: queued read-aheads return at once (atomic) */
    pthread_mutex_t gc_lock;
    pthread_mutex_t key_lock; /* guards the cached master key */
    pthread_mutex_t pin_lock; /* guards pins */
    struct pin *pins[256];
    uint8_t master[32];
    int master_loaded;
    /* data protection (device.c) */
    int ec_k, ec_m;
    int nbuf; /* write-buffer mirrors */
    int gc_live_pct;
    int similarity;
    uint64_t scrub_interval_s, scrub_rate;
    pthread_mutex_t dev_lock; /* guards the rebuild progress and scrub totals */
    struct rebuild_progress {
        int dev;              /* -1: none running */
        uint64_t done, total; /* strips */
        uint64_t bytes;
        int64_t t0;
    } rb;
    struct pl_scrub_report scrub_total;
    pthread_t maint;
    int maint_running, maint_stop;
    int maint_kick;      /* run a pass now (a writer waits for destage) */
    int destage_stalled; /* the last destage failed: writers must not wait on it */
    uint64_t buffer_max; /* writers wait while more is buffered */
    uint64_t pass_buffered; /* buffered bytes when the last maintenance pass ended */
    pthread_mutex_t maint_lock;
    pthread_cond_t maint_cond;
    pthread_cond_t drain_cond; /* broadcast after each destaged segment */
    /* change watchers (store.c) */
    pthread_mutex_t watch_lock;
    struct watcher {
        pl_watch_fn fn;
        void *arg;
    } watchers[PL_WATCHERS];
    int nwatchers; /* read without the lock: a missed note only costs a cache */
    int events;    /* queue element events (event.c) */
    /* heads' write caches (store.c); held shared while one is called */
    pthread_rwlock_t cache_lock;
    struct write_cache {
        pl_cache_flush_fn fn;
        void *arg;
    } caches[PL_WRITE_CACHES];
    int ncaches;
};

/* Store what heads' write caches hold for element id (0: every element). */
int store_caches_flush(struct pl_store *st, uint64_t id) PL_WUR;

/* Record a change for the watchers (nothing when there are none). */
int store_note(struct meta_txn *t, int kind, uint64_t id, const char *name) PL_WUR;

/* ---- element events (event.c) ---- */
enum ev_kind {
    EV_PUT,
    EV_COPY,
    EV_MPU,
    EV_CREATE,
    EV_WRITE,
    EV_DELETE,
    EV_DELMARK,
    EV_RENAME,
    EV_META,
    EV_KIND_COUNT
};
/* Queue an event for bucket/key in t. a: the element after the change (NULL
 * for a removal); from: the old key of a rename. */
int event_queue(struct meta_txn *t, int kind, const char *bucket, const char *key,
                const struct pl_attr *a, const char *from) PL_WUR;
/* The same for name in directory dir (from_name in from_dir: a rename's
 * source); nothing when neither is under a bucket. */
int event_queue_at(struct meta_txn *t, int kind, uint64_t dir, const char *name, int is_dir,
                   const struct pl_attr *a, uint64_t from_dir, const char *from_name) PL_WUR;
/* The same for element e, by its name. */
int event_queue_elem(struct meta_txn *t, int kind, const struct elem *e) PL_WUR;
/* e's content changed: one EV_WRITE follows when the writer is done. */
int event_write_mark(struct meta_txn *t, const struct elem *e) PL_WUR;
/* Remember name as e's (PROP_NAME). */
int elem_name_set(struct elem *e, const char *name) PL_WUR;

/* ---- service records (svc.c) ---- */
int svc_check(const struct pl_svc_rec *recs, size_t n) PL_WUR;
int svc_apply(struct meta_txn *t, const struct pl_svc_rec *recs, size_t n) PL_WUR;

/* ---- keys ---- */
size_t key_elem(uint8_t *k, uint64_t id, uint64_t birth);
size_t key_extent(uint8_t *k, uint64_t id, uint64_t off, uint64_t birth);
/* parent, name, term ('\0' non-dir, '/' dir); k must hold 8+PL_NAME_MAX+9 */
size_t key_dirent(uint8_t *k, uint64_t parent, const char *name, char term, uint64_t birth);

/* ---- elements ---- */
void elem_init(struct elem *e);
void elem_release(struct elem *e);
/* Decode an element record (bytes from disk: fully validated). */
int elem_decode(uint64_t id, uint64_t birth, const uint8_t *p, size_t n, struct elem *ret) PL_WUR;
int elem_get(MDB_txn *txn, struct meta_env *env, uint64_t id, uint64_t view, struct elem *ret) PL_WUR;
/* Persist e (live); copy-on-write when a snapshot can see its current version. */
int elem_put(struct meta_txn *t, struct elem *e) PL_WUR;
/* Allocate an id and write a new element born now. */
int elem_new(struct meta_txn *t, struct elem *e, uint8_t type, uint32_t mode, uint32_t uid,
             uint32_t gid, uint64_t parent) PL_WUR;
/* Remove the element and its content from the live view. */
int elem_destroy(struct meta_txn *t, struct elem *e) PL_WUR;
int prop_get(const struct elem *e, uint8_t tag, const char *name, struct pl_str *ret);
int prop_set(struct elem *e, uint8_t tag, const char *name, const void *v, size_t n) PL_WUR;
int prop_del(struct elem *e, uint8_t tag, const char *name);
/* The version an object got when it was linked: its ordering sequence and
 * whether its id is "null". PL_ENODATA for objects that never had one. */
int elem_version_get(const struct elem *e, uint64_t *ret_seq, int *ret_null) PL_WUR;
int elem_version_set(struct elem *e, uint64_t seq, int null) PL_WUR;

/* ---- dirents ---- */
struct dirent_rec {
    uint64_t id;
    uint8_t type;
    uint64_t birth, death;
    char term;
};
int dirent_get(MDB_txn *txn, struct meta_env *env, uint64_t parent, const char *name,
               uint64_t view, struct dirent_rec *ret) PL_WUR;
int dirent_add(struct meta_txn *t, uint64_t parent, const char *name, uint64_t id, uint8_t type) PL_WUR;
int dirent_remove(struct meta_txn *t, uint64_t parent, const char *name,
                  const struct dirent_rec *d) PL_WUR;
int dir_is_empty(MDB_txn *txn, struct meta_env *env, uint64_t dir, int *ret) PL_WUR;
int name_valid(const char *name);

/* ---- epochs ---- */
int epoch_current(struct meta_txn *t, uint64_t *ret) PL_WUR;
/* Should a record born at birth be copied rather than changed in place? */
int epoch_must_cow(struct meta_txn *t, uint64_t birth, int *ret) PL_WUR;
int grave_add(struct meta_txn *t, uint64_t death, uint8_t table, const uint8_t *key, size_t kn) PL_WUR;
static inline int view_sees(uint64_t view, uint64_t birth, uint64_t death)
{
    return view == PL_VIEW_LIVE ? death == PL_EPOCH_INF : (birth <= view && view < death);
}

/* ---- extents and chunks ---- */
struct piece {
    uint64_t off;
    uint32_t len;
    uint8_t fp[DATA_FP_LEN];
    uint8_t zero;     /* hole */
    uint8_t has_loc;  /* appended by this writer: loc valid */
    struct data_loc loc;
};
/* Replace [a, b) of element id with the given pieces (which tile [a, b) or
 * leave holes) and grow the size to at least b. */
int extent_replace(struct meta_txn *t, struct elem *e, uint64_t a, uint64_t b,
                   const struct piece *pcs, size_t npcs) PL_WUR;
/* Add src's live extents to dst at base + their offset (chunks shared). */
int extent_copy(struct meta_txn *t, uint64_t src, uint64_t dst, uint64_t base) PL_WUR;
/* Drop every extent at or after off (truncate). */
int extent_punch(struct meta_txn *t, uint64_t id, uint64_t a, uint64_t b) PL_WUR;
/* Count one more reference to fp (adding it at loc when it is new: *ret_new). */
int chunk_ref(struct meta_txn *t, const uint8_t fp[DATA_FP_LEN], const struct data_loc *loc,
              int *ret_new) PL_WUR;
/* Read a chunk whatever its encoding (a delta's reference is read first). */
int store_chunk_read(struct pl_store *st, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN],
                     void *out) PL_WUR;
int chunk_unref(struct meta_txn *t, const uint8_t fp[DATA_FP_LEN]) PL_WUR;
/* The decoded bytes of chunk fp, a delta's reference: from the hot cache,
 * else read from loc (or where the index says, when loc is NULL) and kept
 * there. Held until hot_put(*ret). */
int store_ref_get(struct pl_store *st, const uint8_t fp[DATA_FP_LEN], const struct data_loc *loc,
                  struct hot_chunk **ret, const uint8_t **ret_data, size_t *ret_n) PL_WUR;
/* Like store_chunk_read, but the chunk's own bytes come from the disk even
 * when the hot cache holds them (fsck verifies what is stored). */
int store_chunk_read_stored(struct pl_store *st, const struct data_loc *loc,
                            const uint8_t fp[DATA_FP_LEN], void *out) PL_WUR;

/* ---- the hot chunk cache (hot.c): decoded chunks by fingerprint ---- */
int hot_new(size_t cap, struct hot_cache **ret) PL_WUR;
void hot_free(struct hot_cache *c);
/* The decoded bytes of fp, held in *ret until hot_put; NULL if not cached.
 * hot_get counts a hit or a miss, hot_peek does not (a look that costs
 * nothing when it misses). */
const uint8_t *hot_get(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], size_t *ret_n,
                       struct hot_chunk **ret);
const uint8_t *hot_peek(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], size_t *ret_n,
                        struct hot_chunk **ret);
void hot_put(struct hot_chunk *h);
/* An entry of n bytes for the caller to fill; then hot_insert (which keeps
 * it if there is room) and hot_put, or hot_put alone to drop it. */
int hot_alloc(size_t n, struct hot_chunk **ret, uint8_t **ret_data) PL_WUR;
void hot_insert(struct hot_cache *c, const uint8_t fp[DATA_FP_LEN], struct hot_chunk *h);
void hot_counts(struct hot_cache *c, uint64_t *ret_hits, uint64_t *ret_misses,
                uint64_t *ret_bytes);
/* Does the chunk index name the copy of fp at loc (a block found walking a
 * segment)? 0 yes (*ret_refs, *ret_cur filled), 1 no (garbage, or another
 * copy is the one), or an error. */
int chunk_names_copy(struct pl_store *st, const struct data_loc *loc,
                     const uint8_t fp[DATA_FP_LEN], uint64_t *ret_refs,
                     struct data_loc *ret_cur) PL_WUR;
/* Count a live chunk at loc in (sign 1) or out of (-1) the statistics and its
 * segment's live bytes. */
int chunk_account(struct meta_txn *t, const struct data_loc *l, int sign) PL_WUR;
int chunk_lookup(MDB_txn *txn, struct meta_env *env, const uint8_t fp[DATA_FP_LEN],
                 uint64_t *ret_refs, struct data_loc *ret_loc) PL_WUR;

struct seg_set {
    uint64_t ids[8];
    int n;
};
/* Pieces prepared for one commit, and the segments to sync before it. */
struct prep {
    struct piece *p;
    size_t n, cap;
    struct seg_set segs;
    int keep_raw; /* stage new chunks to be stored raw (PL_WRITE_RAW) */
};
/* Chunk buf (at file offset base), fingerprint, dedup against the index and
 * earlier pieces of pr, append new chunks; adds pieces to pr. Without final,
 * stops before a tail that needs more input to cut: *ret_used says how much
 * was consumed. Caller holds a write hold (pl_write_hold) until its commit. */
int store_prepare(struct pl_store *st, uint64_t base, const uint8_t *buf, size_t n, int final,
                  struct prep *pr, size_t *ret_used) PL_WUR;
void prep_release(struct prep *pr);
int store_sync_segs(struct pl_store *st, const struct seg_set *segs) PL_WUR;

/* segment accounting inside the txn */
int seg_account(struct meta_txn *t, const struct data_loc *loc, int64_t live_delta) PL_WUR;

/* Drop anonymous elements left by interrupted object writes. */
int store_staging_cleanup(struct pl_store *st) PL_WUR;
/* Destroy a staging element and forget it. */
int store_elem_drop(struct pl_store *st, uint64_t id) PL_WUR;
/* Inside a mutation: is id pinned? If so, mark it orphaned (returns 1). */
int store_pin_orphan(struct pl_store *st, uint64_t id);


/* ---- namespace mutations shared by the element and object APIs ---- */
struct mk_args {
    uint64_t parent;
    const char *name;
    uint8_t type;
    uint32_t mode, uid, gid;
    int excl;
    const char *target; /* symlink */
    uint16_t flags;
    struct pl_attr out;
};
int store_mk(struct meta_txn *t, struct mk_args *a) PL_WUR;
/* Remove name from dir (touching dir); drops the element with its last link. */
int store_remove(struct meta_txn *t, struct elem *dir, const char *name, int want_dir) PL_WUR;
/* The same, but a file losing its last link goes to keep (which decides its
 * fate: a kept version, or elem_destroy) instead of being dropped. */
typedef int (*store_keep_fn)(void *arg, struct meta_txn *t, struct elem *e);
int store_remove_keep(struct meta_txn *t, struct elem *dir, const char *name, int want_dir,
                      store_keep_fn keep, void *keep_arg) PL_WUR;
/* Epochs of all snapshots; *ret malloc'd (may be NULL when none). */
int snap_epochs(MDB_txn *txn, struct meta_env *env, uint64_t **ret, size_t *ret_n) PL_WUR;
/* ---- object writers (obj.c), shared with multipart uploads ---- */
struct pl_writer;
int writer_open(struct pl_store *st, const char *bucket, const char *key,
                struct pl_writer **ret) PL_WUR;
/* Commit what is buffered and give the MD5 and size of everything written. */
int writer_close(struct pl_writer *w, uint8_t md5[16], uint64_t *ret_size) PL_WUR;
uint64_t writer_elem(const struct pl_writer *w);
/* The element now belongs to someone else: abort will not drop it. */
void writer_disown(struct pl_writer *w);
/* Link element id (unlinked, complete) at bucket/key in txn t, creating
 * implicit directories and replacing an older object. */
int obj_link(struct meta_txn *t, const char *bucket, const char *key, uint64_t id,
             const char *etag, const struct pl_obj_meta *meta, struct pl_attr *out) PL_WUR;

/* Bytes the deltas saved: what they would take at the other chunks'
 * compression ratio, less what they take (an estimate: their plain size is
 * not kept). */
static inline uint64_t delta_saved_estimate(uint64_t unique, uint64_t stored, uint64_t draw,
                                            uint64_t dstored)
{
    if (!draw || unique <= draw || stored <= dstored)
        return 0;
    double comp = (double)(unique - draw) / (double)(stored - dstored);
    double plain = (double)draw / comp;
    return plain > (double)dstored ? (uint64_t)(plain - (double)dstored) : 0;
}

/* ---- fingerprint sets (extent.c) ---- */
struct fp_ent {
    uint8_t fp[DATA_FP_LEN];
    uint64_t refs;
    uint64_t first_id; /* an element naming it, for reports */
    uint8_t used;      /* 0 free, then the user's marks */
};
struct fp_map {
    struct fp_ent *t;
    size_t cap, n;
};
/* Find fp (adding it when add); NULL when absent (or out of memory when add). */
struct fp_ent *fp_find(struct fp_map *m, const uint8_t *fp, int add);

/* ---- devices, destage, repair, scrub (device.c) ---- */
/* Load devices and stripes, sweep strip files no stripe owns, start the
 * background thread when asked. */
int store_devices_open(struct pl_store *st, const struct pl_store_opts *opts) PL_WUR;
void store_devices_close(struct pl_store *st);
/* Capacity directories a new data directory gets. */
int store_layout_capacity(const char *dir, int n) PL_WUR;

/* ---- destage encoding, back-pressure (destage.c) ---- */
/* Encode the staged chunks of buffer segment seg into a new stripe on devs
 * and move every chunk there (*ret_done); *ret_done 0 when there was nothing
 * to encode (the caller stripes the segment as it is). */
int store_destage_encode(struct pl_store *st, uint64_t seg, uint64_t used, const uint16_t *devs,
                         int *ret_done) PL_WUR;
/* Called before a write: wait while the buffer holds more than buffer_max
 * and destage is making progress. */
void store_throttle(struct pl_store *st);

/* ---- buckets (obj.c) ---- */
int bucket_get(MDB_txn *txn, struct meta_env *env, const char *name,
               struct pl_bucket_info *ret) PL_WUR;

/* ---- object versions (version.c) ----
 * A record per noncurrent version or delete marker, keyed so that a key's
 * versions are adjacent, newest first: bucket(8) key term [hash(8)] ~seq(8).
 * Keys longer than VKEY_TEXT bytes keep that much and a hash of the whole
 * (term 1), so LMDB's key limit holds; the full key is in the value. seq is
 * the order in which versions were made and, unless VREC_NULL, the id. */
#define VKEY_TEXT 448
#define VKEY_MAX (8 + VKEY_TEXT + 1 + 8 + 8)
#define VREC_DM 1u   /* a delete marker */
#define VREC_NULL 2u /* the "null" version */
struct vrec {
    uint64_t seq;
    uint8_t flags;
    uint64_t elem; /* 0 for a delete marker */
    uint64_t size;
    int64_t mtime;
    char etag[PL_ETAG_MAX];
    char key[PL_KEY_MAX + 1];
};
static inline uint64_t vrec_vid(const struct vrec *r)
{
    return (r->flags & VREC_NULL) ? 0 : r->seq;
}
int vseq_next(struct meta_txn *t, uint64_t *ret) PL_WUR;
/* e just lost its last name at bucket/key: keep it as a noncurrent version. */
int ver_keep(struct meta_txn *t, uint64_t bid, const char *key, struct elem *e) PL_WUR;
int ver_marker_add(struct meta_txn *t, uint64_t bid, const char *key, int null,
                   uint64_t *ret_vid) PL_WUR;
/* Version vid of key among the records; *ret_first: it is the newest one.
 * PL_ENOVERSION when there is none. */
int ver_find(MDB_txn *txn, struct meta_env *env, uint64_t bid, const char *key, uint64_t vid,
             struct vrec *ret, int *ret_first) PL_WUR;
/* The newest record of key; PL_ENOENT when none. */
int ver_first(MDB_txn *txn, struct meta_env *env, uint64_t bid, const char *key,
              struct vrec *ret) PL_WUR;
/* Forget record r; with drop, its element goes too. */
int ver_forget(struct meta_txn *t, uint64_t bid, const struct vrec *r, int drop) PL_WUR;
/* Drop the "null" version among the records, if any. */
int ver_null_drop(struct meta_txn *t, uint64_t bid, const char *key) PL_WUR;
int ver_bucket_empty(MDB_txn *txn, struct meta_env *env, uint64_t bid, int *ret) PL_WUR;
/* The object at bucket/key in txn (files only; PL_ENOENT otherwise). */
int obj_get(MDB_txn *txn, struct meta_env *env, const char *bucket, const char *key,
            struct elem *ret) PL_WUR;
/* Link the kept version element at bucket/key again (it became the latest). */
int obj_restore(struct meta_txn *t, const char *bucket, const char *key, uint64_t id) PL_WUR;
#endif

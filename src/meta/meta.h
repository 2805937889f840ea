/* meta: the LMDB environment and its single group-committing writer.
 *
 * Design note
 * - One environment, named databases (enum meta_db). Readers open read-only
 *   txns from any thread (MDB_NOTLS) and never block the writer.
 * - Every mutation is a function run on the writer thread inside a nested txn
 *   of the current batch: meta_submit() queues it and blocks until the batch
 *   that contains it is committed and synced. A mutation returning < 0 has its
 *   nested txn aborted; the others in the batch are unaffected.
 * - Invariant: when meta_submit() returns >= 0 the mutation is durable.
 */
#ifndef PL_META_H
#define PL_META_H

#include <lmdb.h>
#include <stdint.h>

#include "base/base.h"

enum meta_db {
    META_SYS,     /* "epoch", "next_id", counters -> u64 */
    META_ELEM,    /* id(8) ~birth(8) -> element record */
    META_DIRENT,  /* parent(8) name term(1) ~birth(8) -> id(8) type(1) death(8) */
    META_EXTENT,  /* id(8) off(8) ~birth(8) -> fp(32) choff(4) len(4) death(8) */
    META_CHUNK,   /* fp(32) -> chunk record */
    META_SEG,     /* seg(8) -> used(8) live(8) */
    META_BUCKET,  /* name -> id(8) ctime(8) flags(8) */
    META_SNAP,    /* name -> epoch(8) ctime(8) */
    META_USER,    /* name -> ctime(8) flags(8) */
    META_KEY,     /* access key -> user\0 secret-ciphertext */
    META_GRAVE,   /* death(8) table(1) key -> "" : records waiting for GC */
    META_STAGING, /* id(8) -> "" : anonymous elements being written */
    META_UPLOAD,  /* upload id -> template elem(8) initiated(8) bucket\0 key */
    META_PART,    /* upload id, part BE32 -> elem(8) size(8) mtime(8) etag */
    META_VERSION, /* bucket(8) key term [hash] ~seq(8) -> object version (store/version.c) */
    META_DEVICE,  /* id BE16 -> state(1) path : capacity devices */
    META_STRIPE,  /* seg(8) -> stripe geometry : segments destaged to capacity */
    META_SIMILAR, /* super-feature(8) index(1) -> fp(32) : similarity index */
    META_EXPORT,  /* path \0 net BE32 mask BE32 -> NFS export rule (store/export.c) */
    META_SVC,     /* key -> value : services' own records (store/svc.c) */
    META_DB_COUNT
};

struct meta_env;

struct meta_req;

struct meta_txn {
    MDB_txn *txn; /* the nested txn of this mutation */
    struct meta_env *env;
    struct meta_req *req;
};

typedef int (*meta_apply_fn)(struct meta_txn *t, void *arg);

struct meta_stats {
    uint64_t commits;
    uint64_t mutations;
    uint64_t batch_hist[10]; /* batch size buckets: 1,2,4,...,256,>256 */
    uint64_t lazy_commits;   /* batches of lazy mutations only, meta page not synced */
    uint64_t syncs;          /* full syncs made for lazy commits (meta_sync, or idle) */
};

/* Open or create the environment in directory path (created if missing).
 * Returns PL_ENOTPLENUM if path exists but holds something else. */
int meta_open(const char *path, struct meta_env **ret_env) PL_WUR;
/* Stops the writer after draining its queue. Accepts NULL. */
void meta_close(struct meta_env *env);

/* Queue fn(arg) for the next group commit and wait for it to be durable.
 * Returns fn's status, or the commit's error (PL_EIO, PL_ENOSPC). */
int meta_submit(struct meta_env *env, meta_apply_fn fn, void *arg) PL_WUR;

/* Wait until every mutation already applied by the writer is committed (or
 * failed): a read started after it sees them. Cheap when the writer is idle. */
void meta_barrier(struct meta_env *env);

/* Read-only snapshot of the metadata; end with meta_rtxn_end. */
int meta_rtxn_begin(struct meta_env *env, MDB_txn **ret_txn) PL_WUR;
void meta_rtxn_end(MDB_txn *txn);

MDB_dbi meta_dbi(struct meta_env *env, enum meta_db db);
/* An opaque pointer the layer above registers, reachable from mutations. */
void meta_set_ctx(struct meta_env *env, void *ctx);
void *meta_ctx(struct meta_env *env);
void meta_stats_get(struct meta_env *env, struct meta_stats *ret);

/* Notes: a mutation may leave opaque records that reach fn (registered once,
 * before mutations start) after its commit is durable, in the submitting
 * thread; a mutation that fails or does not commit leaves none. */
typedef void (*meta_note_fn)(void *ctx, const uint8_t *notes, size_t n);
void meta_set_note_fn(struct meta_env *env, meta_note_fn fn);
int meta_note(struct meta_txn *t, const void *rec, size_t n) PL_WUR;

/* A tag the calling thread's mutations carry (who made the change): the
 * mutation reads it with meta_txn_tag while its submitter waits. */
void meta_set_tag(const void *tag);
const void *meta_txn_tag(const struct meta_txn *t);

/* The calling thread's mutations from now on need not be durable when they
 * return (on: 1): visible at once, durable at the next durable commit, at
 * meta_sync, or within a second (a power loss may undo them, whole). */
void meta_set_lazy(int on);
/* Make every lazy mutation so far durable. */
int meta_sync(struct meta_env *e) PL_WUR;

/* Helpers over a txn (read or write). Values are borrowed until the txn ends. */
int meta_get(MDB_txn *txn, struct meta_env *env, enum meta_db db, const void *k, size_t kn,
             MDB_val *ret_val) PL_WUR;
int meta_put(struct meta_txn *t, enum meta_db db, const void *k, size_t kn, const void *v,
             size_t vn) PL_WUR;
int meta_del(struct meta_txn *t, enum meta_db db, const void *k, size_t kn) PL_WUR;
int meta_sys_get(MDB_txn *txn, struct meta_env *env, const char *name, uint64_t *ret) PL_WUR;
int meta_sys_put(struct meta_txn *t, const char *name, uint64_t v) PL_WUR;
int meta_sys_add(struct meta_txn *t, const char *name, int64_t delta) PL_WUR;

/* Visit the records of db from the first key >= start (from the first
 * record when sn is 0) in key order. cb returns 0 to go on, > 0 to stop (the
 * walk then returns 0) or a negative error (returned). Do not change db
 * from cb: collect, then act. */
typedef int (*meta_walk_fn)(void *arg, const MDB_val *k, const MDB_val *v);
int meta_walk(MDB_txn *txn, struct meta_env *env, enum meta_db db, const void *start, size_t sn,
              meta_walk_fn cb, void *arg) PL_WUR;

/* Map an LMDB return code to a PL_E* code. */
int meta_err(int mdb_rc);

#endif

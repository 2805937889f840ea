/* The element store: the one API every head and service uses.
 *
 * An element is a file, object, directory or symlink (DESIGN.md §2). Elements
 * are addressed by id; names live in directories. A bucket is a directory
 * under the root registered as a bucket; key "a/b" of bucket B is path
 * "/B/a/b".
 *
 * Views: every read takes a snapshot epoch; PL_VIEW_LIVE (0) reads the live
 * namespace. Snapshots are read-only: mutations always act on the live view.
 *
 * Thread safety: every function may be called from any thread concurrently.
 * Durability: a mutation that returned 0 survives kill -9 and power loss.
 */
#ifndef PLENUM_STORE_H
#define PLENUM_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "plenum/err.h"

#define PL_ROOT_ID 1
#define PL_VIEW_LIVE 0
#define PL_NAME_MAX 255
#define PL_KEY_MAX 1024
#define PL_PATH_MAX 4096
#define PL_ETAG_MAX 48

enum pl_type { PL_T_FILE = 1, PL_T_DIR = 2, PL_T_SYMLINK = 3 };

struct pl_attr {
    uint64_t id, gen;
    uint64_t parent; /* directory it was created in (exact for directories) */
    uint8_t type;    /* enum pl_type */
    uint32_t mode, uid, gid, nlink;
    uint64_t size;
    int64_t atime, mtime, ctime, btime; /* ns since the epoch */
    char etag[PL_ETAG_MAX];             /* "" when unknown (after in-place writes) */
    uint64_t version;                   /* S3 version id; 0 is the "null" version */
};

struct pl_store;

/* Long operations report how far they got (done of total units). */
typedef void (*pl_progress_fn)(void *arg, uint64_t done, uint64_t total);

struct pl_store_opts {
    uint32_t cdc_min, cdc_avg, cdc_max; /* 0 = defaults 16/64/256 KiB */
    int zstd_level;                     /* -1 = default (1); 0 disables */
    uint64_t seg_max;                   /* 0 = 64 MiB */
    int create;                         /* create the data directory if missing */
    int ec_k, ec_m;                     /* stripe layout for a new data directory; 0 = 4+2 */
    int buffer_copies;                  /* write-buffer mirrors for a new one: 2 (0) or 3 */
    int gc_live_pct;                    /* compact segments under this % live; 0 = 50 */
    int background;                     /* run destage, repair, rebuild and scrub threads */
    int similarity_off;                 /* store near-duplicate chunks whole, not as deltas */
    uint64_t scrub_interval_s;          /* background scrub period; 0 = daily */
    uint64_t scrub_rate;                /* background scrub bytes/s; 0 = 64 MiB/s */
    uint64_t buffer_max;                /* writers wait while destage is behind by this
                                           many buffered bytes; 0 = 1 GiB */
    int events_off;                     /* queue no element events */
    uint64_t hot_cache;                 /* bytes of decoded delta references kept in
                                           memory; 0 = 256 MiB, PL_HOT_CACHE_NONE */
};
#define PL_HOT_CACHE_NONE UINT64_MAX

/* Open the data directory. With opts->create, lays out a new one (mirrored
 * buffer, 4+2 capacity dirs). Takes an exclusive lock: PL_ELOCKED when another
 * process holds it. PL_ENOTPLENUM when dir exists but is not a data directory. */
int pl_store_open(const char *dir, const struct pl_store_opts *opts, struct pl_store **ret) PL_WUR;
void pl_store_close(struct pl_store *st);
const char *pl_store_dir(const struct pl_store *st);

/* ---- change watchers ----
 * Heads that cache what they serve (FUSE) learn of every committed change
 * from any head: PL_CHANGE_ATTR (the attributes or content of element id)
 * and PL_CHANGE_ENTRY (name in directory id appeared, went or now names
 * another element). fn runs in the thread that made the change once it is
 * durable; it must not block or call into the store. origin is the tag that
 * thread set with pl_store_origin (NULL when none), so a head can skip its own
 * changes. At most PL_WATCHERS at a time. */
#define PL_WATCHERS 16
enum pl_change { PL_CHANGE_ATTR = 1, PL_CHANGE_ENTRY = 2, PL_CHANGE_EVENT = 3 };
typedef void (*pl_watch_fn)(void *arg, const void *origin, int kind, uint64_t id,
                            const char *name);
int pl_store_watch(struct pl_store *st, pl_watch_fn fn, void *arg) PL_WUR;
/* Once it returns, fn is neither running nor called for arg again. */
void pl_store_unwatch(struct pl_store *st, pl_watch_fn fn, void *arg);
/* ---- write caches of heads ----
 * A head that answers writes before they are in the store (the NBD head's
 * volume write cache) registers how to store them; volume snapshots, clones
 * and resizes store element id's cached writes first, and
 * pl_snap_create and pl_store_flush every element's (id 0). fn may block
 * and call into the store. At most PL_WRITE_CACHES at a time. */
#define PL_WRITE_CACHES 4
typedef int (*pl_cache_flush_fn)(void *arg, uint64_t id);
int pl_store_cache_add(struct pl_store *st, pl_cache_flush_fn fn, void *arg) PL_WUR;
/* Once it returns, fn is neither running nor called for arg again. */
void pl_store_cache_remove(struct pl_store *st, pl_cache_flush_fn fn, void *arg);

/* Tag the calling thread's changes from now on (NULL: none). */
void pl_store_origin(const void *tag);
/* The calling thread's metadata changes from now on need not be durable when
 * they return (lazy: 1), as a local file system's are not before fsync: they
 * are visible at once and durable at the next durable change, at
 * pl_store_sync, or within a second; a power loss may undo them, never in
 * part. Data bytes are durable before any change that names them either way. */
void pl_store_lazy(int lazy);
/* Make every change so far durable. */
int pl_store_sync(struct pl_store *st) PL_WUR;

/* ---- element events ----
 * Every change to an element under a bucket (create, S3 PUT and multipart
 * complete, a file's writes once its writer is done, metadata, rename,
 * delete), from any head, queues an event in the change's own transaction:
 * the service record PL_EVENT_PREFIX + 16 hex digits of a sequence that
 * follows commit order, holding bucket NUL key NUL and the event as
 * CloudEvents JSON. Watchers hear PL_CHANGE_EVENT (id: the sequence). A
 * service publishes queued events and deletes them.
 *
 * Writes through the file API are marked (PL_EVENT_WRITE_PREFIX + id) and
 * become one event when the head says the writer is done
 * (pl_elem_written: a close, an NFS COMMIT) or when pl_events_sweep finds
 * the element idle. */
#define PL_EVENT_PREFIX "ev/q/"
#define PL_EVENT_WRITE_PREFIX "ev/w/"
/* Name the calling thread's changes in their events ("s3", "nfs"; a user). */
void pl_store_actor(const char *head, const char *user);
int pl_elem_written(struct pl_store *st, uint64_t id) PL_WUR;
/* Queue the events of writes idle for idle_ns. */
int pl_events_sweep(struct pl_store *st, int64_t idle_ns) PL_WUR;

/* ---- POSIX-like element API (ids; names are single components) ---- */
int pl_elem_getattr(struct pl_store *st, uint64_t id, uint64_t view, struct pl_attr *ret) PL_WUR;
int pl_elem_lookup(struct pl_store *st, uint64_t parent, const char *name, uint64_t view,
                   struct pl_attr *ret) PL_WUR;
/* Resolve an absolute path "/a/b" (no symlink following). */
int pl_path_lookup(struct pl_store *st, const char *path, uint64_t view, struct pl_attr *ret) PL_WUR;
/* Create a file; PL_EEXIST if the name exists and excl, else returns the existing file. */
int pl_elem_create(struct pl_store *st, uint64_t parent, const char *name, uint32_t mode,
                   uint32_t uid, uint32_t gid, int excl, struct pl_attr *ret) PL_WUR;
int pl_elem_mkdir(struct pl_store *st, uint64_t parent, const char *name, uint32_t mode,
                  uint32_t uid, uint32_t gid, struct pl_attr *ret) PL_WUR;
int pl_elem_symlink(struct pl_store *st, uint64_t parent, const char *name, const char *target,
                    uint32_t uid, uint32_t gid, struct pl_attr *ret) PL_WUR;
/* Copy the target into buf (NUL-terminated); PL_ERANGE if it does not fit. */
int pl_elem_readlink(struct pl_store *st, uint64_t id, uint64_t view, char *buf, size_t n) PL_WUR;
int pl_elem_link(struct pl_store *st, uint64_t id, uint64_t parent, const char *name,
                 struct pl_attr *ret) PL_WUR;
int pl_elem_unlink(struct pl_store *st, uint64_t parent, const char *name) PL_WUR;
int pl_elem_rmdir(struct pl_store *st, uint64_t parent, const char *name) PL_WUR;
/* Atomic; replaces an existing target of a compatible type. */
int pl_elem_rename(struct pl_store *st, uint64_t sparent, const char *sname, uint64_t dparent,
                   const char *dname) PL_WUR;

#define PL_SET_MODE (1u << 0)
#define PL_SET_UID (1u << 1)
#define PL_SET_GID (1u << 2)
#define PL_SET_SIZE (1u << 3)
#define PL_SET_ATIME (1u << 4)
#define PL_SET_MTIME (1u << 5)
int pl_elem_setattr(struct pl_store *st, uint64_t id, unsigned mask, const struct pl_attr *in,
                    struct pl_attr *ret) PL_WUR;
/* Copy the mode, owner and times that mask names from in to a (size and other
 * bits are left to the caller), as pl_elem_setattr applies them. */
void pl_attr_set(struct pl_attr *a, unsigned mask, const struct pl_attr *in);

/* Pin an element so its content stays readable even if its last name goes
 * meanwhile (a replaced object still being sent, a file open but unlinked).
 * Every pin needs an unpin; the element is dropped at the last one. */
void pl_elem_pin(struct pl_store *st, uint64_t id);
void pl_elem_unpin(struct pl_store *st, uint64_t id);
/* Pin id and fill *ret, for an open that must not race a concurrent
 * replace or delete: PL_ENOENT (and no pin) when the element is gone or has
 * no name left, otherwise it stays readable until pl_elem_unpin. */
int pl_elem_open(struct pl_store *st, uint64_t id, struct pl_attr *ret) PL_WUR;

/* Read up to n bytes at off; *ret_n is short only at end of file. Holes read as
 * zeros. PL_ECORRUPT when stored data fails its checksum on every copy. */
int pl_elem_read(struct pl_store *st, uint64_t id, uint64_t view, uint64_t off, void *buf,
                 size_t n, size_t *ret_n) PL_WUR;
/* Write n bytes at off, extending the file as needed. Durable on return. */
int pl_elem_write(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n) PL_WUR;
/* Several ranges of one element written in one transaction, in order: all
 * or none, durable on return, with one sync for all of them where a
 * pl_elem_write each would sync each (a volume's scattered small writes). */
struct pl_wrange {
    uint64_t off;
    const void *buf;
    size_t n;
};
int pl_elem_write_ranges(struct pl_store *st, uint64_t id, const struct pl_wrange *r,
                         size_t n) PL_WUR;
struct pl_svc_rec;
/* The same, applying service records in the same transaction (a log append
 * and its cursor: both or neither). */
int pl_elem_write_svc(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                      const struct pl_svc_rec *recs, size_t nrecs) PL_WUR;
/* The same with flags. PL_WRITE_RAW: the bytes do not compress (KV tensors,
 * media): new chunks are stored raw, without similarity sketches or zstd at
 * destage. Deduplication still applies. */
#define PL_WRITE_RAW 1u
int pl_elem_write_flags(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                        unsigned flags) PL_WUR;
/* The same, then mode, owner and times as pl_elem_setattr sets them (mask:
 * PL_SET_MODE, _UID, _GID, _ATIME, _MTIME) in the same transaction. */
int pl_elem_write_attrs(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                        unsigned mask, const struct pl_attr *in) PL_WUR;

/* A write in two phases, so the caller can prepare the next while this one
 * syncs. Hold first: it waits while the write buffer is over its bound, then
 * keeps purge and destage from passing until released; stage and commit
 * only inside a hold, and release it after the commits (or drops) of every
 * stage made in it. Never wait for a hold while holding a lock a committer
 * needs. Stage chunks, fingerprints and appends buf (not durable, not
 * visible; buf must stay unchanged until commit or drop); commit syncs and
 * applies it with service records in one transaction, durable on return,
 * and frees it whatever it returns; drop forgets it. Commits of stages to
 * one element apply in the order the caller calls commit. */
void pl_write_hold(struct pl_store *st);
void pl_write_release(struct pl_store *st);
struct pl_wstage;
int pl_elem_write_stage(struct pl_store *st, uint64_t id, uint64_t off, const void *buf, size_t n,
                        struct pl_wstage **ret) PL_WUR;
int pl_elem_write_commit(struct pl_wstage *ws, const struct pl_svc_rec *recs, size_t nrecs) PL_WUR;
void pl_elem_write_drop(struct pl_wstage *ws); /* accepts NULL */

/* Make [off, off + len) a hole (reads as zeros, takes no space); the size
 * does not change. Durable on return. */
int pl_elem_punch(struct pl_store *st, uint64_t id, uint64_t off, uint64_t len) PL_WUR;
/* Data and holes of [off, off + len) cut at the size, in order: cb gets each
 * run (data 1, hole 0) and returns non-zero to stop. */
typedef int (*pl_map_fn)(void *arg, uint64_t off, uint64_t len, int data);
int pl_elem_map(struct pl_store *st, uint64_t id, uint64_t view, uint64_t off, uint64_t len,
                pl_map_fn cb, void *arg) PL_WUR;

/* Directory listing in name order. cb returns non-zero to stop; *ret_next gets
 * the name to resume after (pass it as after; "" starts at the beginning). */
typedef int (*pl_dirent_fn)(void *arg, const char *name, const struct pl_attr *a);
int pl_dir_read(struct pl_store *st, uint64_t dir, uint64_t view, const char *after,
                pl_dirent_fn cb, void *arg) PL_WUR;

/* Extended attributes (also hold S3 user metadata as "user.meta.<name>"). */
int pl_xattr_set(struct pl_store *st, uint64_t id, const char *name, const void *val, size_t n) PL_WUR;
/* Returns the value length; copies min(n, len) bytes into val if val != NULL. */
ssize_t pl_xattr_get(struct pl_store *st, uint64_t id, uint64_t view, const char *name, void *val,
                     size_t n) PL_WUR;
int pl_xattr_remove(struct pl_store *st, uint64_t id, const char *name) PL_WUR;
/* NUL-separated names into buf; returns total length needed. */
ssize_t pl_xattr_list(struct pl_store *st, uint64_t id, uint64_t view, char *buf, size_t n) PL_WUR;

/* ---- buckets and objects ---- */
/* S3 naming rules: PL_EINVAL when name breaks them. */
int pl_bucket_name_valid(const char *name);
int pl_bucket_create(struct pl_store *st, const char *name) PL_WUR;
/* PL_ENOTEMPTY unless empty; PL_ENOBUCKET when missing. */
int pl_bucket_delete(struct pl_store *st, const char *name) PL_WUR;
enum pl_versioning { PL_VERSIONING_OFF, PL_VERSIONING_ENABLED, PL_VERSIONING_SUSPENDED };
struct pl_bucket_info {
    char name[64];
    uint64_t id;
    int64_t ctime;
    int versioning; /* enum pl_versioning */
};
typedef int (*pl_bucket_fn)(void *arg, const struct pl_bucket_info *b);
int pl_bucket_list(struct pl_store *st, pl_bucket_fn cb, void *arg) PL_WUR;
int pl_bucket_get(struct pl_store *st, const char *name, struct pl_bucket_info *ret) PL_WUR;

/* Enabled or suspended; a bucket never returns to unversioned (PL_EINVAL). */
int pl_bucket_versioning_set(struct pl_store *st, const char *name, int state) PL_WUR;

/* Key rules: 1..1024 bytes, no NUL, no empty, "." or ".." components. */
int pl_key_valid(const char *key);

struct pl_obj_meta {
    const char *content_type;    /* NULL: none */
    const char *const *user_meta; /* NULL-terminated name, value pairs; may be NULL */
    const char *const *xattrs;    /* NULL-terminated raw xattr name, value pairs; may be NULL */
    const uint8_t *content_md5;   /* 16 bytes the body's MD5 must equal (else PL_EDIGEST); or NULL */
    int copy;                     /* a copy of another object: its event says so */
};

/* Streaming whole-object write: nothing is visible until commit, which
 * atomically replaces any previous object at the key. Abort (or a crash)
 * leaves no trace. */
struct pl_writer;
int pl_obj_put_begin(struct pl_store *st, const char *bucket, const char *key,
                     struct pl_writer **ret) PL_WUR;
int pl_writer_write(struct pl_writer *w, const void *buf, size_t n) PL_WUR;
int pl_obj_put_commit(struct pl_writer *w, const struct pl_obj_meta *meta,
                      struct pl_attr *ret) PL_WUR; /* frees w */
void pl_writer_abort(struct pl_writer *w);          /* frees w; accepts NULL */

int pl_obj_lookup(struct pl_store *st, const char *bucket, const char *key, uint64_t view,
                  struct pl_attr *ret) PL_WUR;
/* Removes the object and the implicit directories it leaves empty. */
int pl_obj_delete(struct pl_store *st, const char *bucket, const char *key) PL_WUR;
/* Fill a->etag (the hex MD5 of the content) when writes in place cleared
 * it: hashes the content once and keeps the result while it stays the same. */
int pl_elem_etag(struct pl_store *st, struct pl_attr *a, uint64_t view) PL_WUR;
/* Content type into buf ("" when none). */
int pl_obj_content_type(struct pl_store *st, uint64_t id, uint64_t view, char *buf, size_t n) PL_WUR;

/* Keys of bucket in key order. With delim '/', directories under prefix are
 * reported once as common prefixes (is_prefix = 1, a == NULL). Keys <= after
 * are skipped. cb returns non-zero to stop. */
typedef int (*pl_list_fn)(void *arg, const char *key, int is_prefix, const struct pl_attr *a);
int pl_obj_list(struct pl_store *st, const char *bucket, const char *prefix, const char *after,
                char delim, uint64_t view, pl_list_fn cb, void *arg) PL_WUR;

/* ---- object versions ----
 * In a bucket with versioning enabled, replacing or deleting an object keeps
 * the old one as a noncurrent version, and a delete without a version id
 * leaves a delete marker. The namespace (what files and plain S3 reads see)
 * always holds the latest version when it is an object; older versions and
 * delete markers live beside it. Objects written while versioning was off or
 * suspended, or through the file API, have the "null" version (0). Directory
 * marker keys ("a/") are not versioned. */
#define PL_VERSION_LEN 17 /* text form + NUL */
void pl_version_str(uint64_t v, char out[PL_VERSION_LEN]);
/* "null" -> 0; PL_EINVAL when s is not a version id we could have made. */
int pl_version_parse(const char *s, uint64_t *ret) PL_WUR;
/* The object version vid (NULL: the latest). PL_ENOENT when there is no such
 * key; PL_ENOVERSION when there is no such version. When the version (or,
 * for vid NULL, the latest) is a delete marker: *ret_dm = 1, ret->version and
 * ret->mtime are set, and the result is 0 for a vid, PL_ENOENT for latest. */
int pl_obj_lookup_version(struct pl_store *st, const char *bucket, const char *key,
                          const char *vid, struct pl_attr *ret, int *ret_dm) PL_WUR;
/* Delete version vid, or (vid NULL) the latest as the bucket's versioning
 * state says. *ret_dm: a delete marker was made (vid NULL) or removed (vid);
 * *ret_version: its version. Deleting what is not there succeeds. */
int pl_obj_delete_version(struct pl_store *st, const char *bucket, const char *key,
                          const char *vid, int *ret_dm, uint64_t *ret_version) PL_WUR;
struct pl_version_info {
    const char *key;
    uint64_t version;
    int latest;
    int delete_marker;
    const struct pl_attr *a; /* size, mtime, etag; for a delete marker only mtime */
};
typedef int (*pl_version_fn)(void *arg, const struct pl_version_info *v);
/* Every version of every key under prefix, keys in order and newest first
 * within a key, starting after (key_marker, vid_marker) as S3's
 * ListObjectVersions does. cb returns non-zero to stop. */
int pl_obj_versions(struct pl_store *st, const char *bucket, const char *prefix,
                    const char *key_marker, const char *vid_marker, pl_version_fn cb,
                    void *arg) PL_WUR;

/* ---- multipart uploads ----
 * Parts are written like objects into anonymous elements; completing an
 * upload builds the object's extent map from the parts' maps, so no part
 * data is read or copied. Uploads and their parts survive restarts. */
#define PL_UPLOAD_ID_LEN 32
#define PL_PART_MIN (5u << 20)
#define PL_PARTS_MAX 10000
struct pl_mpu_info {
    char upload_id[PL_UPLOAD_ID_LEN + 1];
    char bucket[64];
    char key[PL_KEY_MAX + 1];
    int64_t initiated;
};
struct pl_part_info {
    int number;
    uint64_t size;
    char etag[PL_ETAG_MAX];
    int64_t mtime;
};
struct pl_part_ref {
    int number;
    const char *etag; /* hex MD5, quotes allowed */
};
int pl_mpu_create(struct pl_store *st, const char *bucket, const char *key,
                  const struct pl_obj_meta *meta, char upload_id[PL_UPLOAD_ID_LEN + 1]) PL_WUR;
/* PL_ENOUPLOAD when unknown (or completed, or aborted). */
int pl_mpu_get(struct pl_store *st, const char *upload_id, struct pl_mpu_info *ret) PL_WUR;
/* A writer for part number (1..10000); commit with pl_mpu_part_commit. */
int pl_mpu_part_begin(struct pl_store *st, const char *upload_id, int number,
                      struct pl_writer **ret) PL_WUR;
/* Replaces an earlier upload of the same part number. Frees w. */
int pl_mpu_part_commit(struct pl_writer *w, const uint8_t *content_md5,
                       struct pl_part_info *ret) PL_WUR;
typedef int (*pl_part_fn)(void *arg, const struct pl_part_info *p);
/* Parts with numbers > after, ascending. */
int pl_mpu_part_list(struct pl_store *st, const char *upload_id, int after, pl_part_fn cb,
                     void *arg) PL_WUR;
/* PL_EPARTORDER, PL_EBADPART, PL_ETOOSMALL, PL_ENOUPLOAD; on success the
 * object is linked at its key (atomically replacing an older one). */
int pl_mpu_complete(struct pl_store *st, const char *upload_id, const struct pl_part_ref *parts,
                    size_t n, struct pl_attr *ret) PL_WUR;
int pl_mpu_abort(struct pl_store *st, const char *upload_id) PL_WUR;
/* Byte range of part number (1-based) of an object as it was uploaded, and
 * how many parts it has; an object not made by a multipart upload (or
 * rewritten since) is one part. PL_ERANGE when there is no such part. */
int pl_obj_part(struct pl_store *st, uint64_t id, uint64_t view, int number, uint64_t *ret_off,
                uint64_t *ret_len, int *ret_count) PL_WUR;
typedef int (*pl_mpu_fn)(void *arg, const struct pl_mpu_info *u);
int pl_mpu_list(struct pl_store *st, const char *bucket, pl_mpu_fn cb, void *arg) PL_WUR;

/* ---- volumes (block devices; the NBD head serves them) ----
 * Names: 1..64 of [A-Za-z0-9._-], not starting with '.'; a snapshot of
 * volume V is the read-only volume "V@SNAP". Volumes are thin. */
#define PL_VOLUME_NAME_MAX 129
#define PL_VOLUME_OBJECT_MAX (63 + 1 + PL_KEY_MAX) /* "BUCKET/KEY" */
struct pl_volume_info {
    char name[PL_VOLUME_NAME_MAX + 1];
    char object[PL_VOLUME_OBJECT_MAX + 1]; /* the object the volume is, or "" */
    uint64_t id, size;
    int64_t ctime;
    int readonly;
    int missing; /* an object volume whose key names no object now (listings only) */
};
int pl_volume_name_valid(const char *name);
int pl_volume_create(struct pl_store *st, const char *name, uint64_t size,
                     struct pl_volume_info *ret) PL_WUR;
int pl_volume_get(struct pl_store *st, const char *name, struct pl_volume_info *ret) PL_WUR;
typedef int (*pl_volume_fn)(void *arg, const struct pl_volume_info *v);
int pl_volume_list(struct pl_store *st, pl_volume_fn cb, void *arg) PL_WUR;
int pl_volume_resize(struct pl_store *st, const char *name, uint64_t size) PL_WUR;
int pl_volume_delete(struct pl_store *st, const char *name) PL_WUR;
/* Read-only "NAME@SNAP" sharing NAME's chunks as they are now. */
int pl_volume_snapshot(struct pl_store *st, const char *name, const char *snap,
                       struct pl_volume_info *ret) PL_WUR;
/* A writable volume sharing src's chunks (src may be a snapshot). */
int pl_volume_clone(struct pl_store *st, const char *src, const char *name,
                    struct pl_volume_info *ret) PL_WUR;
/* Serve the object "BUCKET/KEY" as volume name, without a copy: the volume
 * is the object, and NBD writes are writes to it. The key is looked up at
 * each open, so connections made after a newer PUT see the newer object.
 * size 0 needs the object to exist; otherwise a missing object is made,
 * thin and size bytes long, and an existing one of another size is
 * PL_ESIZE. Deleting the volume leaves the object. */
int pl_volume_link(struct pl_store *st, const char *name, const char *object, uint64_t size,
                   struct pl_volume_info *ret) PL_WUR;

/* ---- NFS exports ----
 * A rule exports "/BUCKET[/PATH]" to clients in an IPv4 network, read-write
 * or read-only, squashing root (or everyone) to an anonymous uid/gid. A path
 * may have one rule per client network. */
#define PL_EXPORT_PATH_MAX 256
enum pl_squash { PL_SQUASH_NONE = 0, PL_SQUASH_ROOT = 1, PL_SQUASH_ALL = 2 };
struct pl_export {
    char path[PL_EXPORT_PATH_MAX];
    uint32_t net, mask; /* host byte order */
    int readonly;
    int squash; /* enum pl_squash */
    uint32_t anon_uid, anon_gid;
};
/* "*", "A.B.C.D" or "A.B.C.D/N" -> network and mask. */
int pl_export_clients_parse(const char *s, uint32_t *ret_net, uint32_t *ret_mask) PL_WUR;
/* Options "rw|ro,root_squash|all_squash|no_root_squash,anonuid=N,anongid=N" into e. */
int pl_export_options_parse(const char *s, struct pl_export *e) PL_WUR;
/* Add or replace the rule for (path, clients). PL_ENOBUCKET when the bucket
 * is missing, PL_EINVAL for a malformed path. */
int pl_export_set(struct pl_store *st, const struct pl_export *e) PL_WUR;
/* PL_ENOENT when there is no such rule. */
int pl_export_remove(struct pl_store *st, const char *path, uint32_t net, uint32_t mask) PL_WUR;
typedef int (*pl_export_fn)(void *arg, const struct pl_export *e);
int pl_export_list(struct pl_store *st, pl_export_fn cb, void *arg) PL_WUR;

/* ---- service records ----
 * Small records a service keeps beside the namespace (the broker's topics,
 * committed offsets and groups): key -> value, in key order, durable on
 * return. Keys are 1..PL_SVC_KEY_MAX bytes; values up to PL_SVC_VAL_MAX. */
#define PL_SVC_KEY_MAX 511
#define PL_SVC_VAL_MAX (1u << 20)
struct pl_svc_rec {
    const char *key;
    const void *val; /* NULL: delete the key (absent is fine) */
    size_t n;
};
/* All of recs in one transaction. */
int pl_svc_write(struct pl_store *st, const struct pl_svc_rec *recs, size_t n) PL_WUR;
/* PL_ENOENT when absent; *ret_n gets the length, min(n, length) bytes are copied. */
int pl_svc_get(struct pl_store *st, const char *key, void *buf, size_t n, size_t *ret_n) PL_WUR;
typedef int (*pl_svc_fn)(void *arg, const char *key, const void *val, size_t n);
/* Records whose key starts with prefix, in key order; cb returns non-zero to stop. */
int pl_svc_scan(struct pl_store *st, const char *prefix, pl_svc_fn cb, void *arg) PL_WUR;
/* Delete every record under prefix. */
int pl_svc_delete_prefix(struct pl_store *st, const char *prefix) PL_WUR;

/* ---- snapshots ---- */
struct pl_snap_info {
    char name[128];
    uint64_t epoch;
    int64_t ctime;
};
int pl_snap_create(struct pl_store *st, const char *name, struct pl_snap_info *ret) PL_WUR;
int pl_snap_delete(struct pl_store *st, const char *name) PL_WUR;
int pl_snap_get(struct pl_store *st, const char *name, struct pl_snap_info *ret) PL_WUR;
typedef int (*pl_snap_fn)(void *arg, const struct pl_snap_info *s);
int pl_snap_list(struct pl_store *st, pl_snap_fn cb, void *arg) PL_WUR;

/* ---- maintenance ---- */
struct pl_store_stats {
    uint64_t logical_bytes;  /* sum of live file sizes */
    uint64_t unique_bytes;   /* raw bytes of distinct live chunks */
    uint64_t stored_bytes;   /* their encoded size */
    uint64_t staged_bytes;   /* of those, raw bytes destage has yet to encode */
    uint64_t delta_chunks;   /* live chunks stored as a delta against a similar one */
    uint64_t delta_raw, delta_stored;
    uint64_t delta_saved;    /* estimate: their size at the others' compression ratio,
                                less what they take */
    uint64_t physical_bytes; /* segment files on disk, all mirrors */
    uint64_t elements;       /* live files, directories, symlinks (root excluded) */
    uint64_t chunks;
    uint64_t segments;
    uint64_t free_bytes;     /* free space of the filesystem holding the data */
    uint64_t commits, mutations;
    uint64_t batch_hist[10];
    /* data protection */
    int ec_k, ec_m;
    uint64_t stripes, buffer_segments;
    uint64_t degraded_reads, unrecoverable_reads, strips_repaired;
    uint64_t scrub_checked, scrub_repaired, scrub_unrecoverable;
    uint64_t read_ahead_bytes; /* bytes readers took from the stripes' read-ahead */
    uint64_t hot_hits, hot_misses; /* delta references found (or not) decoded in memory */
    uint64_t hot_bytes;            /* what the hot chunk cache holds */
};
int pl_store_stats(struct pl_store *st, struct pl_store_stats *ret) PL_WUR;

/* ---- devices, destage, repair ----
 * Buffer devices (ids 0..3: the mirrors of the write buffer) take new data;
 * sealed buffer segments are destaged into k+m erasure-coded stripes on the
 * capacity devices (ids 4 and up), one strip per device. */
enum pl_dev_state { PL_DEV_OK, PL_DEV_FAILED, PL_DEV_REBUILDING };
struct pl_device_info {
    int id;
    int capacity; /* 0: buffer, 1: capacity */
    char path[PL_PATH_MAX];
    int state;    /* enum pl_dev_state */
    uint64_t strips, bytes;
    /* rebuilding: strips done of total since it started, bytes per second */
    uint64_t rebuild_done, rebuild_total;
    double rebuild_rate;
};
typedef int (*pl_device_fn)(void *arg, const struct pl_device_info *d);
int pl_device_list(struct pl_store *st, pl_device_fn cb, void *arg) PL_WUR;
/* Take a capacity device out of service: reads use parity from now on. */
int pl_device_fail(struct pl_store *st, int id) PL_WUR;
/* A new (empty) capacity device at path; *ret_id gets its id. */
int pl_device_add(struct pl_store *st, const char *path, int *ret_id) PL_WUR;
/* Rebuild the device's strips onto path (new, empty; may be the old path). */
int pl_device_replace(struct pl_store *st, int id, const char *path) PL_WUR;
/* Move the device's strips onto other devices, then forget it. PL_ENODEVS
 * when too few others are left for the stripe width. */
int pl_device_remove(struct pl_store *st, int id, pl_progress_fn progress, void *arg) PL_WUR;
/* Rebuild every strip of devices being rebuilt, now. */
int pl_store_rebuild(struct pl_store *st, pl_progress_fn progress, void *arg) PL_WUR;
/* Destage everything buffered now; returns when it is on stripes. PL_ENODEVS
 * when fewer working capacity devices than the stripe width are left (the
 * data stays in the mirrored buffer). */
int pl_store_flush(struct pl_store *st, pl_progress_fn progress, void *arg) PL_WUR;
struct pl_scrub_report {
    uint64_t checked, repaired, unrecoverable;
};
/* Verify every strip and buffer copy, repair from parity or mirror. rate:
 * bytes/s (0 = as fast as possible). */
int pl_store_scrub(struct pl_store *st, uint64_t rate, pl_progress_fn progress, void *arg,
                   struct pl_scrub_report *ret) PL_WUR;

/* What one bucket's live objects take: their chunks counted once within the
 * bucket (a chunk shared with other buckets counts here too). */
struct pl_bucket_usage {
    uint64_t objects, logical_bytes, unique_bytes, stored_bytes;
    uint64_t delta_chunks, delta_raw, delta_stored, delta_saved;
};
int pl_bucket_usage(struct pl_store *st, const char *bucket, struct pl_bucket_usage *ret) PL_WUR;

/* Reclaim records no snapshot can see, then compact segments whose live
 * fraction is under half. *ret_freed gets the disk bytes released. */
int pl_store_gc(struct pl_store *st, uint64_t *ret_freed) PL_WUR;

/* Walk everything and verify it. problem() is called once per finding with a
 * path (or id) and a message; returns the number of problems found (>= 0). */
typedef void (*pl_fsck_fn)(void *arg, const char *where, const char *what);
int pl_store_fsck(struct pl_store *st, pl_fsck_fn problem, pl_progress_fn progress,
                  void *arg) PL_WUR;

/* Path of an element in the live namespace ("/bucket/key"), best effort. */
int pl_elem_path(struct pl_store *st, uint64_t id, char *buf, size_t n) PL_WUR;

/* ---- users and access keys ---- */
struct pl_user_info {
    char name[64];
    int64_t ctime;
};
struct pl_key_info {
    char access_key[32];
    char user[64];
    int64_t ctime;
};
int pl_user_create(struct pl_store *st, const char *name) PL_WUR;
int pl_user_delete(struct pl_store *st, const char *name) PL_WUR; /* and its keys */
typedef int (*pl_user_fn)(void *arg, const struct pl_user_info *u);
int pl_user_list(struct pl_store *st, pl_user_fn cb, void *arg) PL_WUR;
/* Generates a key pair; secret (40 chars + NUL) is returned once. With
 * access_key/secret non-empty on input, stores the given pair instead. */
int pl_key_create(struct pl_store *st, const char *user, char access_key[32], char secret[48]) PL_WUR;
int pl_key_revoke(struct pl_store *st, const char *access_key) PL_WUR;
typedef int (*pl_key_fn)(void *arg, const struct pl_key_info *k);
int pl_key_list(struct pl_store *st, const char *user, pl_key_fn cb, void *arg) PL_WUR;
/* A 32-byte key for one purpose ("nfs-fh", ...), derived from the data
 * directory's master key: stable across restarts, different per purpose. */
int pl_store_derive_key(struct pl_store *st, const char *purpose, uint8_t out[32]) PL_WUR;
/* The secret of an access key (for signature checks). */
int pl_key_secret(struct pl_store *st, const char *access_key, char secret[48], char user[64]) PL_WUR;

#endif

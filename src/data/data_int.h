/* data internals shared by the segment log (seg.c) and the stripes
 * (stripe.c). */
#ifndef PL_DATA_INT_H
#define PL_DATA_INT_H

#include <pthread.h>
#include <zstd.h>

#include "data/data.h"
#include "data/ec.h"

#define SEG_MAX_MIRRORS 4
#define SEG_HASH 1024
#define CTX_POOL 8
#define REPAIR_QUEUE 256

/* A segment that lives as a stripe on capacity devices. */
struct stripe {
    struct data_geom g;
    int fd[EC_MAX_K + EC_MAX_M]; /* opened lazily under fd_lock; -1 closed */
    pthread_mutex_t fd_lock;
    uint64_t read_end; /* where the last read ended (atomic): tells sequential readers */
};

struct seg {
    uint64_t id;
    int fd[SEG_MAX_MIRRORS]; /* buffer files; -1 for a striped segment */
    uint64_t end;            /* next append offset (active segment only meaningful) */
    struct stripe *sp;       /* non-NULL once destaged */
    struct seg *next;
};

struct dev {
    uint16_t id;
    uint8_t state; /* enum data_dev_state */
    char *path;
    uint64_t io_errors;
};

/* A piece of a strip file read ahead (ahead.c). */
#define AHEAD_PIECE (4u << 20)
#define AHEAD_SLOTS 16
struct ahead_slot {
    uint64_t seg, foff; /* strip (seg, idx), file offset a multiple of AHEAD_PIECE */
    int idx;
    int state; /* empty, loading, ready */
    int pins;  /* readers copying from buf */
    int done;  /* a reader read it to its end */
    int dead;  /* dropped while loading or pinned: empty once let go */
    size_t len;
    uint64_t touched; /* ms, monotonic */
    uint8_t *buf;
};

struct ahead_cache {
    pthread_mutex_t lock;
    pthread_cond_t cv; /* a slot stopped loading */
    int used;          /* any piece was ever read ahead (atomic) */
    uint8_t *map;      /* the slots' memory, mapped on first use */
    size_t map_len;
    struct ahead_slot slot[AHEAD_SLOTS];
};

struct repair {
    uint64_t seg;
    int idx;
};

struct data_store {
    char *mirrors[SEG_MAX_MIRRORS];
    int nmirrors;
    uint64_t seg_max;
    int zstd_level;
    pthread_rwlock_t map_lock; /* guards table; wrlock to delete a segment */
    struct seg *table[SEG_HASH];
    pthread_mutex_t append_lock; /* guards active, next_seg, ends */
    struct seg *active;
    uint64_t next_seg;
    pthread_mutex_t pool_lock;
    ZSTD_CCtx *cctx[CTX_POOL];
    ZSTD_DCtx *dctx[CTX_POOL];
    int ncctx, ndctx;
    /* fault injection: fail appends with ENOSPC past this many bytes */
    uint64_t fault_enospc_after, appended;
    uint64_t buffered; /* bytes in buffer segment files (atomic) */
    /* capacity devices and erasure codes */
    pthread_mutex_t dev_lock; /* guards devs, codes, repairs, counters */
    struct dev devs[DATA_MAX_DEVS];
    int ndevs;
    struct ec_code *codes[EC_MAX_K + 1][EC_MAX_M + 1];
    struct repair repairs[REPAIR_QUEUE];
    int nrepairs;
    struct data_counters cnt;
    struct ahead_cache ahead;
    data_lead_fn *lead; /* set once before readers start */
    void *lead_arg;
};

/* ---- shared between seg.c and stripe.c ---- */
/* Find or open a segment for reading; returns with map_lock held for reading. */
int seg_get_rd(struct data_store *ds, uint64_t id, struct seg **ret) PL_WUR;
/* Read n bytes at off of a striped segment, verified cell by cell and
 * reconstructed from parity where a strip is missing or corrupt (map_lock
 * held for reading). */
int stripe_read(struct data_store *ds, struct seg *s, uint64_t off, void *out, size_t n) PL_WUR;
/* The same into niov vectors: each cell is read and verified once however
 * the bytes are split. */
struct iovec;
/* Ask the kernel to start reading the cells that hold [off, off + n). */
void stripe_prefetch(struct data_store *ds, struct seg *s, uint64_t off, size_t n);
int stripe_readv(struct data_store *ds, struct seg *s, uint64_t off, const struct iovec *iov,
                 int niov) PL_WUR;
void stripe_free(struct stripe *sp);
/* A segment's buffer files are about to go: stop counting their bytes. */
void seg_forget_bytes(struct data_store *ds, uint64_t id);
/* Delete a stripe's strip files (map_lock held for writing). */
void stripe_unlink(struct data_store *ds, uint64_t seg, const struct data_geom *g);
uint64_t stripe_disk_bytes(struct data_store *ds);
/* Open strip idx of s for reading with extra open flags (a new open file
 * each call); PL_EIO when its device has failed (map_lock held). */
int stripe_strip_open(struct data_store *ds, struct seg *s, int idx, int flags, int *ret_fd) PL_WUR;
/* Where a strip file's payload starts. */
uint64_t stripe_payload_off(const struct data_geom *g);

/* ---- read-ahead pieces (ahead.c) ---- */
void ahead_init(struct ahead_cache *c);
void ahead_free(struct ahead_cache *c);
/* Might a piece of strip (seg, idx) be read ahead or coming? */
int ahead_any(struct data_store *ds, uint64_t seg, int idx);
/* Is the piece at file offset foff of strip (seg, idx) read ahead or coming? */
int ahead_has(struct data_store *ds, uint64_t seg, int idx, uint64_t foff);
/* The ready piece at file offset foff of strip (seg, idx), pinned (waits
 * while it is being read); NULL when there is none. */
struct ahead_slot *ahead_pin(struct data_store *ds, uint64_t seg, int idx, uint64_t foff);
/* Let a pinned piece go; read_to: the file offset the reader read up to. */
void ahead_unpin(struct data_store *ds, struct ahead_slot *s, uint64_t read_to);
/* Forget the pieces of strip (seg, idx), of every strip of seg when idx < 0. */
void ahead_drop(struct data_store *ds, uint64_t seg, int idx);

#endif

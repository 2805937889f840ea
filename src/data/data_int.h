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

#endif

/* base: small helpers every layer uses: byte order, time, logging, buffers. */
#ifndef PL_BASE_H
#define PL_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "plenum/err.h"

#define PL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PL_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- byte order: on-disk and on-wire formats never memcpy a struct ---- */
static inline void pl_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t pl_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static inline void pl_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint32_t pl_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void pl_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline uint16_t pl_get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline void pl_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t pl_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline void pl_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t pl_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline void pl_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint32_t pl_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- time ---- */
int64_t pl_now_ns(void);      /* wall clock, ns since the epoch */
uint64_t pl_mono_ns(void);    /* monotonic, for durations */
/* The CLOCK_REALTIME time ms milliseconds from now, for pthread_cond_timedwait. */
struct timespec pl_deadline_ms(int64_t ms);

/* ---- logging ---- */
enum pl_log_level { PL_LOG_DEBUG, PL_LOG_INFO, PL_LOG_WARN, PL_LOG_ERROR };
void pl_log_set_level(enum pl_log_level lvl);
void pl_log(enum pl_log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- pl_buf: growable byte buffer ----
 * Invariants: data is never NULL after init (points at a static "" when empty),
 * data[len] == 0 always, may hold NULs. pl_buf_detach hands the allocation to
 * the caller (free with free()). */
struct pl_buf {
    char *data;
    size_t len;
    size_t cap;
};
void pl_buf_init(struct pl_buf *b);
void pl_buf_release(struct pl_buf *b);
int pl_buf_reserve(struct pl_buf *b, size_t extra) PL_WUR;
int pl_buf_add(struct pl_buf *b, const void *p, size_t n) PL_WUR;
int pl_buf_addstr(struct pl_buf *b, const char *s) PL_WUR;
int pl_buf_addf(struct pl_buf *b, const char *fmt, ...) PL_WUR __attribute__((format(printf, 2, 3)));
void pl_buf_reset(struct pl_buf *b);
char *pl_buf_detach(struct pl_buf *b, size_t *ret_len);

/* ---- pl_str: a borrowed view ---- */
struct pl_str {
    const char *p;
    size_t n;
};

/* ---- files ---- */
/* Write all of buf at off; retries short writes and EINTR. */
int pl_pwrite_all(int fd, const void *buf, size_t n, off_t off) PL_WUR;
struct iovec;
/* The same for an iovec array (consumed: its entries are advanced). */
int pl_pwritev_all(int fd, struct iovec *iov, int n, off_t off) PL_WUR;
/* Read exactly n bytes at off; PL_EIO on short read (file ended). */
int pl_pread_all(int fd, void *buf, size_t n, off_t off) PL_WUR;
int pl_write_all(int fd, const void *buf, size_t n) PL_WUR;
/* Write every byte the n iovecs hold (it steps through iov as it goes). */
int pl_writev_all(int fd, struct iovec *iov, int n) PL_WUR;
/* mkdir -p */
int pl_mkdirs(const char *path, unsigned mode) PL_WUR;
/* fsync a directory so a create/rename/unlink inside it is durable. */
int pl_fsync_dir(const char *path) PL_WUR;
/* len bytes (a multiple of 2 MiB) of zeroed anonymous memory, 2 MiB aligned
 * and advised huge: touching it faults a 2 MiB page at a time, not 4 KiB
 * (a profile had a third of a writer's CPU in page faults on fresh
 * buffers). Give it back with munmap(p, len). */
int pl_map_huge(size_t len, void **ret) PL_WUR;
/* Fill buf with cryptographically random bytes. */
int pl_random(void *buf, size_t n) PL_WUR;
/* Lower-case hex of n bytes into out (2n+1 bytes). */
void pl_hex(const uint8_t *p, size_t n, char *out);
int pl_unhex(const char *s, uint8_t *out, size_t n) PL_WUR;

/* Value of a hex digit, or -1. */
int pl_hexval(char c);

/* splitmix64: a tiny deterministic generator (test data, fixed tables). */
static inline uint64_t pl_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Port of an AF_INET or AF_INET6 socket address (from getsockname). */
struct sockaddr_storage;
int pl_sockaddr_port(const struct sockaddr_storage *sa);

/* Format a byte count as "12.3 MiB" into out. */
void pl_fmt_bytes(uint64_t n, char *out, size_t outsz);

/* ---- request metrics (one registry for every head) ----
 * pl_metrics_slot registers (head, op) once and returns its index (or -1 when
 * the table is full: observing -1 is a no-op). Thread-safe. */
int pl_metrics_slot(const char *head, const char *op);
void pl_metrics_observe(int slot, uint64_t ns, int failed, uint64_t in, uint64_t out);
int pl_metrics_render(struct pl_buf *b) PL_WUR;
/* A service's own gauges and counters, appended to every render (fn returns
 * 0 or an error). At most 8; remove before arg goes away. */
typedef int (*pl_metrics_fn)(void *arg, struct pl_buf *b);
int pl_metrics_source_add(pl_metrics_fn fn, void *arg) PL_WUR;
void pl_metrics_source_remove(pl_metrics_fn fn, void *arg);

/* ---- pl_gate: a shared/exclusive lock any thread may release ----
 * pthread rwlocks must be unlocked by the locking thread; a pipelined writer
 * enters on its caller's thread and leaves on a pool thread. Exclusive
 * waiters block new shared entries, so the exclusive side cannot starve. */
#include <pthread.h>
struct pl_gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int shared, excl, excl_waiting;
};
void pl_gate_init(struct pl_gate *g);
void pl_gate_destroy(struct pl_gate *g);
void pl_gate_enter(struct pl_gate *g);
void pl_gate_leave(struct pl_gate *g);
void pl_gate_lock(struct pl_gate *g);
void pl_gate_unlock(struct pl_gate *g);

/* ---- pl_pool: a fixed set of worker threads running queued jobs ----
 * Jobs run in FIFO order on any worker; pl_job_wait blocks until one is done. */
struct pl_job {
    void (*fn)(struct pl_job *j);
    struct pl_job *next;
    int done;
    int detached; /* nobody waits: fn owns (and may free) the job */
};
struct pl_pool;
int pl_pool_new(int nthreads, struct pl_pool **ret) PL_WUR;
void pl_pool_free(struct pl_pool *p); /* finishes queued jobs first; accepts NULL */
void pl_pool_submit(struct pl_pool *p, struct pl_job *j);
/* The same, first waiting while max_queued jobs wait for a worker: a producer
 * faster than the workers holds only that many. */
void pl_pool_submit_bounded(struct pl_pool *p, struct pl_job *j, int max_queued);
void pl_job_wait(struct pl_pool *p, struct pl_job *j);
/* Run fn(arg, i) for every i in [0, n): the caller works through them and up
 * to helpers workers of the pool join in when they are free. Returns when
 * all n are done; a helper that starts late finds nothing left and does not
 * hold the caller up. */
void pl_pool_share(struct pl_pool *p, int helpers, int n, void (*fn)(void *arg, int i), void *arg);

#endif

/* The NBD head's volume write cache.
 *
 * NBD promises durability only at FLUSH and for FUA writes, so a WRITE is
 * answered once its bytes are in memory: a disk with a volatile write cache,
 * which is what the client is told (NBD_FLAG_SEND_FLUSH) and what a guest's
 * file system already issues flushes for. Each volume with connections (or
 * bytes still to write) has one cache, shared by every connection to it, and
 * one writer thread that moves its dirty runs to the store in the background:
 * once batch_min bytes are dirty, once the oldest is age_ms old, at a FLUSH,
 * when the server's budget is half used, and after the last connection
 * goes. Clients write at memory speed while the store keeps up or the budget
 * lasts; past it, writers wait for the store.
 *
 * Ordering: the writer takes every dirty run at once (a batch) and writes it
 * while newer writes collect as dirty runs again; a byte's newest value is
 * the dirty run holding it, else the batch, else the store, so reads lay the
 * batch and then the dirty runs over what the store returns. A punch waits
 * for batch runs it overlaps (else an older run could land over the hole).
 * A FLUSH waits until a batch that began after the writes it covers is in
 * the store: write sequence numbers say which. A failed write-out puts the
 * batch back under the newer dirty runs and stops the writer until a FLUSH
 * asks again and gets the error. */
#include "proto/nbd/vcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <time.h>

#include "base/base.h"

#define RUN_MAX VC_WRITE_MAX /* a run is written with one pl_elem_write */
#define RUN_SMALL (1u << 20) /* runs past this live in pooled RUN_MAX mappings */
/* A set idle this long gives its pooled mappings back. Their pages are
 * MADV_FREE meanwhile (the kernel takes them when memory is short); a burst
 * that finds them needs no page clearing: fio write 1 GiB after earlier
 * transfers, 569-1662 MB/s with 5 s, 1588-3264 with 60 s. */
#define POOL_IDLE_MS 60000
#define WRITER_NICE 10
#define IDLE_WAIT_MS 100    /* how often a writer with young dirty bytes looks again */

/* Bytes at [off, off+len): cached, not yet in the store. A run that grows
 * past RUN_SMALL moves to a RUN_MAX mapping from the set's pool (cap ==
 * RUN_MAX): bytes copied into fresh memory cost a page fault per 4 KiB,
 * which was a third of the head's CPU while a client wrote. */
struct run {
    uint64_t off;
    size_t len, cap;
    uint8_t *buf;
    int pooled; /* buf is a pooled mapping */
};

struct vcache {
    struct vc_set *set;
    uint64_t id;
    int refs; /* connections (under set->lock) */
    pthread_mutex_t lock;
    pthread_cond_t work; /* the writer waits for something to do */
    pthread_cond_t done; /* flushes and punches wait for the writer */
    /* dirty, disjoint: d[0..ns) sorted by offset, d[ns..n) newer runs not
     * sorted in yet (at most TAIL_MAX): a volume written at random holds
     * thousands of runs, and keeping them all sorted moved half the array
     * per write (11 % of the head's CPU under fio randwrite 4k) */
    struct run *d;
    size_t n, ns, cap;
    struct run *fl; /* the batch being written; fl[fl_at..nfl) not yet in the store */
    size_t nfl, flcap, fl_at;
    size_t dirty_bytes;        /* in d */
    uint64_t gen;              /* bumped whenever bytes leave the overlay */
    uint64_t seq;              /* writes cached so far */
    uint64_t seq_done;         /* writes up to this one are in the store */
    uint64_t want;             /* a flush waits for seq_done to reach it */
    uint64_t dirty_since;      /* mono ns of the oldest dirty byte; 0: none */
    int err;                   /* the last write-out failed (kept until a flush) */
    struct vcache *next;
};

struct vc_set {
    struct pl_store *st;
    struct vc_opts o;
    pthread_mutex_t lock; /* guards list, refs, bytes, writers */
    pthread_cond_t cond;  /* room in the budget; a writer ended */
    struct vcache *list;
    size_t bytes; /* every cache's d and fl[fl_at..) */
    int writers;  /* writer threads running */
    /* RUN_MAX mappings not in use; their pages are MADV_FREE: kept while
     * memory is plentiful (reused without faults), reclaimed when it is not */
    void **pool;
    size_t npool, pool_cap; /* pool_cap: as many as the budget fills */
    uint64_t pool_used_ms; /* when a mapping was last taken */
};

static uint64_t mono_ms(void)
{
    return pl_mono_ns() / 1000000u;
}

/* ---- pooled run buffers ---- */

static uint8_t *pool_take(struct vc_set *s)
{
    pthread_mutex_lock(&s->lock);
    void *m = s->npool ? s->pool[--s->npool] : NULL;
    s->pool_used_ms = mono_ms();
    pthread_mutex_unlock(&s->lock);
    if (!m && pl_map_huge(RUN_MAX, &m))
        return NULL;
    return m;
}

static void pool_give(struct vc_set *s, void *m)
{
    madvise(m, RUN_MAX, MADV_FREE);
    pthread_mutex_lock(&s->lock);
    if (s->npool < s->pool_cap) {
        s->pool[s->npool++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (m)
        munmap(m, RUN_MAX);
}

/* Give every pooled mapping back once none was taken for POOL_IDLE_MS (or
 * at once, with force). */
static void pool_trim(struct vc_set *s, int force)
{
    pthread_mutex_lock(&s->lock);
    if (force || mono_ms() - s->pool_used_ms >= POOL_IDLE_MS)
        while (s->npool)
            munmap(s->pool[--s->npool], RUN_MAX);
    pthread_mutex_unlock(&s->lock);
}

static void run_free(struct vc_set *s, struct run *r)
{
    if (r->pooled)
        pool_give(s, r->buf);
    else
        free(r->buf);
    r->buf = NULL;
}

static void set_account(struct vc_set *s, size_t add, size_t sub)
{
    pthread_mutex_lock(&s->lock);
    s->bytes = s->bytes + add - sub;
    if (sub > add)
        pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- dirty runs (v->lock held) ---- */

/* The first of r[0..n) (sorted, not overlapping) that ends after off: a
 * volume written at random holds thousands of runs. */
static size_t runs_find(const struct run *r, size_t n, uint64_t off)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r[mid].off + r[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int run_append(struct vc_set *s, struct run *r, const uint8_t *p, size_t n)
{
    if (!n)
        return 0;
    if (r->len + n > r->cap) {
        if (r->len + n > RUN_SMALL) {
            uint8_t *m = pool_take(s); /* r->len + n <= RUN_MAX: runs_put sees to it */
            if (!m)
                return PL_ENOMEM;
            if (r->len)
                memcpy(m, r->buf, r->len);
            free(r->buf);
            r->buf = m;
            r->cap = RUN_MAX;
            r->pooled = 1;
        } else {
            size_t cap = PL_MIN(PL_MAX(r->cap * 2, r->len + n), (size_t)RUN_SMALL);
            uint8_t *nb = realloc(r->buf, cap);
            if (!nb)
                return PL_ENOMEM;
            r->buf = nb;
            r->cap = cap;
        }
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    return 0;
}

/* Room for one more dirty run. */
static int runs_room(struct vcache *v)
{
    if (v->n < v->cap)
        return 0;
    size_t cap = v->cap ? v->cap * 2 : 16;
    struct run *nd = realloc(v->d, cap * sizeof(*nd));
    if (!nd)
        return PL_ENOMEM;
    v->d = nd;
    v->cap = cap;
    return 0;
}

#define TAIL_MAX 256

static int run_cmp(const void *a, const void *b)
{
    const struct run *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Sort the tail into d[0..ns), and make runs that now touch one (fewer,
 * larger chunks at write-out). */
static void runs_sort(struct vcache *v)
{
    size_t nt = v->n - v->ns;
    if (nt) {
        qsort(v->d + v->ns, nt, sizeof(*v->d), run_cmp);
        struct run *t = malloc(nt * sizeof(*t));
        if (t) {
            /* merge from the back: only what sorts after a tail run moves */
            memcpy(t, v->d + v->ns, nt * sizeof(*t));
            size_t i = v->ns, j = nt, k = v->n;
            while (j) {
                if (i && v->d[i - 1].off > t[j - 1].off)
                    v->d[--k] = v->d[--i];
                else
                    v->d[--k] = t[--j];
            }
            free(t);
        } else {
            qsort(v->d, v->n, sizeof(*v->d), run_cmp);
        }
    }
    size_t k = 0;
    for (size_t i = 1; i < v->n; i++) {
        struct run *a = &v->d[k], *b = &v->d[i];
        if (a->off + a->len == b->off && a->len + b->len <= RUN_MAX &&
            run_append(v->set, a, b->buf, b->len) == 0) {
            run_free(v->set, b);
            continue;
        }
        v->d[++k] = *b;
    }
    v->n = v->ns = v->n ? k + 1 : 0;
}

/* Drop [a, b) from d[i], which meets it; *gone grows by what went. Returns
 * 1 when d[i] went entirely, 2 when [a, b) was inside it (its right part is
 * now the last run: nothing else can meet [a, b)), 0 otherwise, < 0 on
 * error. */
static int run_cut(struct vcache *v, size_t i, uint64_t a, uint64_t b, size_t *gone)
{
    struct run *r = &v->d[i];
    uint64_t e = r->off + r->len;
    v->gen++;
    if (r->off < a && e > b) {
        if (runs_room(v))
            return PL_ENOMEM;
        r = &v->d[i];
        struct run right = {b, 0, 0, NULL, 0};
        int rc = run_append(v->set, &right, r->buf + (b - r->off), (size_t)(e - b));
        if (rc)
            return rc;
        r->len = (size_t)(a - r->off);
        v->d[v->n++] = right; /* the tail: d[0..ns) stays sorted */
        *gone += (size_t)(b - a);
        return 2;
    }
    if (r->off < a) {
        *gone += (size_t)(e - a);
        r->len = (size_t)(a - r->off);
    } else if (e > b) {
        *gone += (size_t)(b - r->off);
        memmove(r->buf, r->buf + (b - r->off), (size_t)(e - b));
        r->len = (size_t)(e - b);
        r->off = b; /* still before the next: nothing else was in [a, b) */
    } else {
        *gone += r->len;
        run_free(v->set, r);
        memmove(v->d + i, v->d + i + 1, (v->n - i - 1) * sizeof(*v->d));
        v->n--;
        if (i < v->ns)
            v->ns--;
        return 1;
    }
    return 0;
}

/* Drop [a, b) from the dirty runs; *gone: bytes dropped. */
static int runs_cut(struct vcache *v, uint64_t a, uint64_t b, size_t *gone)
{
    for (size_t i = runs_find(v->d, v->ns, a); i < v->ns && v->d[i].off < b; i++) {
        int rc = run_cut(v, i, a, b, gone);
        if (rc < 0 || rc == 2)
            return rc < 0 ? rc : 0;
        i -= (size_t)rc; /* 1: d[i] is the next one now */
    }
    for (size_t i = v->ns; i < v->n; i++) {
        if (v->d[i].off >= b || v->d[i].off + v->d[i].len <= a)
            continue;
        int rc = run_cut(v, i, a, b, gone);
        if (rc < 0 || rc == 2)
            return rc < 0 ? rc : 0;
        i -= (size_t)rc;
    }
    return 0;
}

/* Put n bytes at off into the dirty runs; *gone: older dirty bytes they
 * replaced (dropped even when the put fails). */
static int runs_put(struct vcache *v, uint64_t off, const uint8_t *p, size_t n, size_t *gone)
{
    *gone = 0;
    int rc = runs_cut(v, off, off + n, gone);
    v->dirty_bytes -= *gone;
    if (rc)
        return rc;
    /* the common case, sequential writes: onto the run that ends at off,
     * most likely the newest (several connections writing their own parts
     * of a volume in order each extend one of the tail's) */
    struct run *prev = NULL;
    for (size_t i = v->n; i > v->ns && !prev; i--)
        if (v->d[i - 1].off + v->d[i - 1].len == off)
            prev = &v->d[i - 1];
    if (!prev) {
        size_t i = runs_find(v->d, v->ns, off); /* nothing is left in [off, off + n) */
        if (i > 0 && v->d[i - 1].off + v->d[i - 1].len == off)
            prev = &v->d[i - 1];
    }
    if (prev && prev->len + n <= RUN_MAX) {
        rc = run_append(v->set, prev, p, n);
    } else {
        if (runs_room(v))
            return PL_ENOMEM;
        struct run r = {off, 0, 0, NULL, 0};
        rc = run_append(v->set, &r, p, n);
        if (!rc)
            v->d[v->n++] = r;
    }
    if (rc)
        return rc;
    v->dirty_bytes += n;
    if (v->n - v->ns > TAIL_MAX)
        runs_sort(v);
    return 0;
}

/* A batch run that did not reach the store goes back under the newer dirty
 * runs: only the parts no dirty run covers. *kept: bytes put back. */
static int runs_restore(struct vcache *v, const struct run *r, size_t *kept)
{
    runs_sort(v); /* the gaps are found in order */
    uint64_t end = r->off + r->len;
    struct gap {
        uint64_t a, b;
    } *gap = malloc((v->n + 1) * sizeof(*gap));
    if (!gap)
        return PL_ENOMEM;
    size_t ngap = 0, i = 0;
    for (uint64_t at = r->off; at < end;) {
        while (i < v->n && v->d[i].off + v->d[i].len <= at)
            i++;
        uint64_t next = i < v->n ? PL_MIN(PL_MAX(v->d[i].off, at), end) : end;
        if (next > at)
            gap[ngap++] = (struct gap){at, next};
        at = i < v->n && v->d[i].off < end ? v->d[i].off + v->d[i].len : end;
    }
    int rc = 0;
    *kept = 0;
    for (size_t g = 0; g < ngap && !rc; g++) {
        size_t gone = 0; /* none: a gap is what no dirty run covers */
        size_t len = (size_t)(gap[g].b - gap[g].a);
        rc = runs_put(v, gap[g].a, r->buf + (gap[g].a - r->off), len, &gone);
        if (!rc)
            *kept += len;
    }
    free(gap);
    return rc;
}

/* ---- the writer ---- */

static void wait_ms(struct vcache *v, unsigned ms)
{
    struct timespec ts = pl_deadline_ms(ms);
    pthread_cond_timedwait(&v->work, &v->lock, &ts);
}

/* Whether the writer should take a batch now (v->lock held, v->n > 0);
 * *wait_for: otherwise, how long until the oldest dirty byte is due. */
static int batch_due(struct vcache *v, int closing, unsigned *wait_for)
{
    struct vc_set *s = v->set;
    if (closing)
        return 1;
    if (v->err)
        return 0; /* until a flush asks again */
    if (v->want > v->seq_done || v->dirty_bytes >= s->o.batch_min)
        return 1;
    pthread_mutex_lock(&s->lock);
    int full = s->bytes >= s->o.budget / 2;
    pthread_mutex_unlock(&s->lock);
    if (full)
        return 1;
    uint64_t age = mono_ms() - v->dirty_since / 1000000u;
    if (age >= s->o.age_ms)
        return 1;
    *wait_for = (unsigned)PL_MIN((uint64_t)IDLE_WAIT_MS, s->o.age_ms - age);
    return 0;
}

/* How many runs from fl[at] are stored in one transaction: up to group_max
 * bytes (at least one run) and GROUP_RUNS runs. Scattered small writes then
 * cost one sync per group instead of one each (fio randwrite 4 KiB, 256 MiB,
 * end_fsync: 30 -> 198 MB/s). */
#define GROUP_RUNS 4096
static size_t group_len(const struct vcache *v, size_t at)
{
    size_t k = 1, bytes = v->fl[at].len;
    while (at + k < v->nfl && k < GROUP_RUNS && bytes + v->fl[at + k].len <= v->set->o.group_max)
        bytes += v->fl[at + k++].len;
    return k;
}

/* A group of runs stored, by the writer or by a helper thread beside it. */
struct group_write {
    struct pl_store *st;
    uint64_t id;
    const struct run *r;
    size_t n;
    int rc;
};

static void *group_write_main(void *arg)
{
    struct group_write *w = arg;
    struct pl_wrange *rg = malloc(w->n * sizeof(*rg));
    if (!rg) {
        w->rc = PL_ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < w->n; i++)
        rg[i] = (struct pl_wrange){w->r[i].off, w->r[i].buf, w->r[i].len};
    w->rc = pl_elem_write_ranges(w->st, w->id, rg, w->n);
    free(rg);
    return NULL;
}

/* k runs from fl[fl_at] are in the store (v->lock held). */
static void batch_done(struct vcache *v, size_t k)
{
    while (k--) {
        struct run *done = &v->fl[v->fl_at++];
        size_t len = done->len;
        run_free(v->set, done);
        v->gen++;
        set_account(v->set, 0, len);
    }
    pthread_cond_broadcast(&v->done);
}

/* Groups of scattered runs (na of them from fl[fl_at]) two at a time
 * (v->lock held, dropped while writing): each write waits on its own syncs,
 * and the disk takes two streams faster than one. The runs of a batch never
 * overlap, so their order does not matter. */
static int pair_write(struct vcache *v, size_t na)
{
    struct vc_set *s = v->set;
    size_t nb = v->fl_at + na < v->nfl ? group_len(v, v->fl_at + na) : 0;
    struct group_write a = {s->st, v->id, &v->fl[v->fl_at], na, 0};
    struct group_write b = {s->st, v->id, &v->fl[v->fl_at + na], nb, 0};
    pthread_t t;
    pthread_mutex_unlock(&v->lock);
    if (nb && pthread_create(&t, NULL, group_write_main, &b))
        nb = 0; /* no thread to spare: one at a time */
    group_write_main(&a);
    int rc = a.rc;
    if (nb) {
        pthread_join(t, NULL);
        rc = rc ? rc : b.rc;
    }
    pthread_mutex_lock(&v->lock);
    if (!rc)
        batch_done(v, na + nb);
    /* else both go back (the one stored is stored again: no harm) */
    return rc;
}

/* A one-run group's commit on a helper thread: it syncs the run staged under
 * the writer's hold, applies it and releases the hold. */
struct group_commit {
    struct pl_store *st;
    struct pl_wstage *ws;
    int rc;
};

static void *group_commit_main(void *arg)
{
    struct group_commit *c = arg;
    c->rc = pl_elem_write_commit(c->ws, NULL, 0);
    c->ws = NULL;
    pl_write_release(c->st);
    return NULL;
}

/* Write the batch fl[fl_at..nfl) (v->lock held, dropped while writing).
 * A volume written in order arrives as one-run groups: each is staged
 * (chunked, fingerprinted, appended) on this thread while the one before it
 * syncs and commits on a helper, so the appends, and the stripes destage
 * makes of them, keep the volume's order (two whole groups side by side
 * interleaved them, and a later sequential read jumped between two streams)
 * while the CPU work still overlaps the syncs. */
static int batch_write(struct vcache *v)
{
    struct vc_set *s = v->set;
    struct group_commit c = {s->st, NULL, 0};
    pthread_t ct;
    int rc = 0, pend = 0; /* pend: fl[fl_at] commits on ct */
    while (v->fl_at + (size_t)pend < v->nfl || pend) {
        size_t at = v->fl_at + (size_t)pend;
        size_t na = at < v->nfl ? group_len(v, at) : 0;
        const struct run *r = na ? &v->fl[at] : NULL;
        struct pl_wstage *ws = NULL;
        pthread_mutex_unlock(&v->lock);
        if (na == 1) {
            pl_write_hold(s->st);
            rc = pl_elem_write_stage(s->st, v->id, r->off, r->buf, r->len, &ws);
            if (rc)
                pl_write_release(s->st);
        }
        if (pend)
            pthread_join(ct, NULL);
        pthread_mutex_lock(&v->lock);
        if (pend && !c.rc)
            batch_done(v, 1);
        rc = pend && c.rc ? c.rc : rc;
        pend = 0;
        if (rc) {
            if (ws) {
                pl_elem_write_drop(ws);
                pl_write_release(s->st);
            }
            break;
        }
        if (na == 1) {
            c.ws = ws;
            if (pthread_create(&ct, NULL, group_commit_main, &c) == 0) {
                pend = 1;
                continue;
            }
            pthread_mutex_unlock(&v->lock); /* no thread to spare: here */
            group_commit_main(&c);
            pthread_mutex_lock(&v->lock);
            if ((rc = c.rc))
                break;
            batch_done(v, 1);
        } else if (na > 1 && (rc = pair_write(v, na))) {
            break;
        }
    }
    return rc;
}

/* The batch failed at fl[fl_at]: back under the dirty runs, or dropped when
 * no connection is left to be told. */
static void batch_fail(struct vcache *v, int rc, int closing)
{
    size_t lost = 0, dropped = 0;
    /* the volume was deleted, or its object replaced by a newer version */
    int gone = rc == PL_ENOENT || rc == PL_EROFS;
    closing |= gone;
    for (size_t i = v->fl_at; i < v->nfl; i++) {
        struct run *r = &v->fl[i];
        size_t kept = 0;
        if (closing || runs_restore(v, r, &kept))
            lost += r->len - kept;
        dropped += r->len - kept; /* lost, or under newer dirty bytes */
        run_free(v->set, r);
    }
    set_account(v->set, 0, dropped);
    v->nfl = v->fl_at = 0;
    __atomic_store_n(&v->err, rc, __ATOMIC_RELAXED); /* vc_write reads it without the lock */
    v->gen++;
    if (gone) {
        /* nothing is lost that anyone can read: drop what follows too */
        size_t rest = 0;
        runs_cut(v, 0, UINT64_MAX, &rest);
        v->dirty_bytes = 0;
        set_account(v->set, 0, rest);
        pl_log(PL_LOG_INFO, "nbd", "volume element %llu was deleted or replaced (%s); %zu cached "
               "bytes dropped", (unsigned long long)v->id, pl_strerror(rc), lost + rest);
    } else if (lost)
        pl_log(PL_LOG_ERROR, "nbd", "writing cached blocks of volume element %llu: %s; %zu "
               "bytes lost", (unsigned long long)v->id, pl_strerror(rc), lost);
    else
        pl_log(PL_LOG_WARN, "nbd", "writing cached blocks of volume element %llu: %s; kept, "
               "the next FLUSH tries again", (unsigned long long)v->id, pl_strerror(rc));
}

static int closing_now(struct vcache *v)
{
    pthread_mutex_lock(&v->set->lock);
    int closing = v->refs == 0;
    pthread_mutex_unlock(&v->set->lock);
    return closing;
}

/* Unlink v when nothing is left and nobody holds it (v->lock held). */
static int try_retire(struct vcache *v)
{
    struct vc_set *s = v->set;
    int gone = 0;
    pthread_mutex_lock(&s->lock);
    if (v->refs == 0 && v->n == 0) {
        struct vcache **pp = &s->list;
        while (*pp != v)
            pp = &(*pp)->next;
        *pp = v->next;
        gone = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return gone;
}

static void *writer_main(void *arg)
{
    struct vcache *v = arg;
    struct vc_set *s = v->set;
    /* background work: the threads answering clients get the CPU first */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), WRITER_NICE))
        pl_log(PL_LOG_DEBUG, "nbd", "cannot lower the write cache writer's priority");
    pthread_mutex_lock(&v->lock);
    for (;;) {
        int closing = closing_now(v);
        if (!v->n) {
            if (!v->err)
                v->seq_done = v->seq; /* nothing cached: every write is in the store */
            v->dirty_since = 0;
            pthread_cond_broadcast(&v->done);
            if (closing && try_retire(v))
                break;
            if (!closing) {
                wait_ms(v, POOL_IDLE_MS); /* then look whether the pool sat idle */
                if (!v->n)
                    pool_trim(s, 0);
            }
            continue;
        }
        unsigned wait_for = IDLE_WAIT_MS;
        if (!batch_due(v, closing, &wait_for)) {
            wait_ms(v, wait_for);
            continue;
        }
        /* take every dirty run, in order; fl is empty between batches */
        runs_sort(v);
        struct run *t = v->fl;
        size_t tcap = v->flcap;
        v->fl = v->d;
        v->flcap = v->cap;
        v->nfl = v->n;
        v->fl_at = 0;
        v->d = t;
        v->cap = tcap;
        v->n = v->ns = 0;
        v->dirty_bytes = 0;
        v->dirty_since = 0;
        uint64_t upto = v->seq;
        int rc = batch_write(v);
        if (rc) {
            batch_fail(v, rc, closing);
            if (closing)
                continue; /* dropped: the loop retires v once the rest is dropped too */
        } else {
            v->nfl = v->fl_at = 0;
            v->seq_done = upto;
        }
        pthread_cond_broadcast(&v->done);
    }
    pthread_mutex_unlock(&v->lock);
    pthread_cond_destroy(&v->work);
    pthread_cond_destroy(&v->done);
    pthread_mutex_destroy(&v->lock);
    free(v->d);
    free(v->fl);
    free(v);
    pthread_mutex_lock(&s->lock);
    s->writers--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the API ---- */

/* The store asks for element id's cached writes (0: every volume's). */
static int set_store_flush(void *arg, uint64_t id)
{
    struct vc_set *s = arg;
    pthread_mutex_lock(&s->lock);
    size_t n = 0;
    for (struct vcache *v = s->list; v; v = v->next)
        n += !id || v->id == id;
    struct vcache **held = n ? calloc(n, sizeof(struct vcache *)) : NULL;
    if (n && !held) {
        pthread_mutex_unlock(&s->lock);
        return PL_ENOMEM;
    }
    n = 0;
    for (struct vcache *v = s->list; held && v; v = v->next)
        if (!id || v->id == id) {
            v->refs++; /* kept from retiring while we wait on it */
            held[n++] = v;
        }
    pthread_mutex_unlock(&s->lock);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int r = vc_flush(held[i]);
        rc = rc ? rc : r;
        vc_close(held[i]);
    }
    free(held);
    return rc;
}

int vc_set_new(struct pl_store *st, const struct vc_opts *o, struct vc_set **ret)
{
    struct vc_set *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->st = st;
    if (o)
        s->o = *o;
    if (!s->o.budget)
        s->o.budget = VC_BUDGET_DEFAULT;
    if (!s->o.batch_min)
        s->o.batch_min = VC_BATCH_MIN_DEFAULT;
    if (!s->o.age_ms)
        s->o.age_ms = VC_AGE_MS_DEFAULT;
    if (!s->o.group_max)
        s->o.group_max = VC_GROUP_MAX_DEFAULT;
    s->pool_cap = s->o.budget / RUN_MAX + 1;
    s->pool = calloc(s->pool_cap, sizeof(*s->pool));
    if (!s->pool) {
        free(s);
        return PL_ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    int rc = pl_store_cache_add(st, set_store_flush, s);
    if (rc) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s->pool);
        free(s);
        return rc;
    }
    *ret = s;
    return 0;
}

void vc_set_free(struct vc_set *s)
{
    if (!s)
        return;
    pl_store_cache_remove(s->st, set_store_flush, s);
    pthread_mutex_lock(&s->lock);
    while (s->writers)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    pool_trim(s, 1);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->pool);
    free(s);
}

size_t vc_set_limit(const struct vc_set *s)
{
    return s->o.budget;
}

size_t vc_set_bytes(struct vc_set *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->bytes;
    pthread_mutex_unlock(&s->lock);
    return n;
}

struct vcache *vc_open(struct vc_set *s, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    struct vcache *v = s->list;
    while (v && v->id != id)
        v = v->next;
    if (v) {
        v->refs++;
        goto out;
    }
    v = calloc(1, sizeof(*v));
    if (!v)
        goto out;
    v->set = s;
    v->id = id;
    v->refs = 1;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->work, NULL);
    pthread_cond_init(&v->done, NULL);
    pthread_t t;
    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &ta, writer_main, v)) {
        pthread_attr_destroy(&ta);
        pthread_cond_destroy(&v->work);
        pthread_cond_destroy(&v->done);
        pthread_mutex_destroy(&v->lock);
        free(v);
        v = NULL;
        goto out;
    }
    pthread_attr_destroy(&ta);
    s->writers++;
    v->next = s->list;
    s->list = v;
out:
    pthread_mutex_unlock(&s->lock);
    return v;
}

void vc_close(struct vcache *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&v->set->lock);
    v->refs--;
    pthread_mutex_unlock(&v->set->lock);
    pthread_mutex_lock(&v->lock);
    pthread_cond_signal(&v->work);
    pthread_mutex_unlock(&v->lock);
}

/* Wait until writes up to seq are in the store (v->lock held). */
static int wait_stored(struct vcache *v, uint64_t seq)
{
    if (v->seq_done >= seq)
        return 0;
    __atomic_store_n(&v->err, 0, __ATOMIC_RELAXED); /* tried again for this flush */
    if (v->want < seq)
        v->want = seq;
    pthread_cond_signal(&v->work);
    while (v->seq_done < seq && !v->err)
        pthread_cond_wait(&v->done, &v->lock);
    return v->seq_done >= seq ? 0 : v->err;
}

int vc_write(struct vcache *v, uint64_t off, const void *p, size_t n, int fua)
{
    struct vc_set *s = v->set;
    if (n > VC_WRITE_MAX)
        return PL_EINVAL; /* a run holds at most that */
    /* room in the budget first (a write larger than all of it goes in alone) */
    pthread_mutex_lock(&s->lock);
    while (s->bytes && s->bytes + n > s->o.budget) {
        int err = __atomic_load_n(&v->err, __ATOMIC_RELAXED);
        if (err) {
            pthread_mutex_unlock(&s->lock);
            return err; /* the store refuses this volume's bytes: do not wait for it */
        }
        struct timespec ts = pl_deadline_ms(IDLE_WAIT_MS);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    s->bytes += n;
    int full = s->bytes >= s->o.budget / 2;
    pthread_mutex_unlock(&s->lock);

    pthread_mutex_lock(&v->lock);
    size_t gone = 0;
    int rc = runs_put(v, off, p, n, &gone);
    int first = !v->dirty_since && v->n;
    if (first)
        v->dirty_since = pl_mono_ns();
    uint64_t seq = ++v->seq;
    if (first || full || v->dirty_bytes >= s->o.batch_min)
        pthread_cond_signal(&v->work); /* a writer with nothing cached waits untimed */
    if (!rc && fua)
        rc = wait_stored(v, seq);
    pthread_mutex_unlock(&v->lock);
    set_account(s, rc ? 0 : n, n + gone); /* the reservation becomes what the runs hold */
    return rc;
}

int vc_flush(struct vcache *v)
{
    pthread_mutex_lock(&v->lock);
    int rc = wait_stored(v, v->seq);
    pthread_mutex_unlock(&v->lock);
    return rc;
}

static void overlay(const struct run *r, size_t nr, uint64_t off, uint8_t *buf, size_t len)
{
    uint64_t end = off + len;
    for (size_t i = runs_find(r, nr, off); i < nr && r[i].off < end; i++) {
        uint64_t a = PL_MAX(r[i].off, off), b = PL_MIN(r[i].off + r[i].len, end);
        if (a < b)
            memcpy(buf + (a - off), r[i].buf + (a - r[i].off), (size_t)(b - a));
    }
}

/* The store is read without the lock, so reads run beside each other and
 * beside the writer; cached runs, newer than the store, are laid over after.
 * Bytes that left the cache meanwhile (gen moved) may have been missed by
 * both: then the store is read again under the lock. */
int vc_read(struct vcache *v, uint64_t off, void *buf, size_t len)
{
    struct vc_set *s = v->set;
    size_t got = 0;
    pthread_mutex_lock(&v->lock);
    uint64_t gen = v->gen;
    pthread_mutex_unlock(&v->lock);
    int rc = pl_elem_read(s->st, v->id, PL_VIEW_LIVE, off, buf, len, &got);
    pthread_mutex_lock(&v->lock);
    if (!rc && v->gen != gen)
        rc = pl_elem_read(s->st, v->id, PL_VIEW_LIVE, off, buf, len, &got);
    if (!rc && got < len)
        memset((uint8_t *)buf + got, 0, len - got); /* shrunk meanwhile: zeros */
    if (!rc && v->nfl > v->fl_at)
        overlay(v->fl + v->fl_at, v->nfl - v->fl_at, off, buf, len);
    if (!rc && v->ns)
        overlay(v->d, v->ns, off, buf, len);
    for (size_t i = v->ns; !rc && i < v->n; i++)
        overlay(&v->d[i], 1, off, buf, len);
    pthread_mutex_unlock(&v->lock);
    return rc;
}

/* ---- allocation map ---- */

#define MAP_SEGS_MAX 4096 /* store runs looked at per call; the answer covers a prefix */

struct span {
    uint64_t off, len;
    int data;
};

struct spans {
    struct span *s;
    size_t n, cap;
    int oom;
};

static int spans_add(struct spans *sp, uint64_t off, uint64_t len, int data)
{
    if (sp->n && sp->s[sp->n - 1].data == data &&
        sp->s[sp->n - 1].off + sp->s[sp->n - 1].len == off) {
        sp->s[sp->n - 1].len += len;
        return 0;
    }
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 64;
        struct span *ns = realloc(sp->s, cap * sizeof(*ns));
        if (!ns)
            return PL_ENOMEM;
        sp->s = ns;
        sp->cap = cap;
    }
    sp->s[sp->n++] = (struct span){off, len, data};
    return 0;
}

static int map_collect(void *arg, uint64_t off, uint64_t len, int data)
{
    struct spans *sp = arg;
    sp->oom = spans_add(sp, off, len, data) != 0;
    return sp->oom || sp->n >= MAP_SEGS_MAX;
}

/* The store's data and holes of [off, off+len), a prefix when very fragmented. */
static int store_spans(struct vcache *v, uint64_t off, uint64_t len, struct spans *out)
{
    int rc = pl_elem_map(v->set->st, v->id, PL_VIEW_LIVE, off, len, map_collect, out);
    return rc ? rc : out->oom ? PL_ENOMEM : 0;
}

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* The cached ranges meeting [a, b), sorted (v->lock held). */
static int cached_spans(const struct vcache *v, uint64_t a, uint64_t b, struct spans *out)
{
    int rc = 0;
    for (size_t i = v->fl_at; i < v->nfl && !rc; i++)
        if (v->fl[i].off < b && v->fl[i].off + v->fl[i].len > a)
            rc = spans_add(out, v->fl[i].off, v->fl[i].len, 1);
    for (size_t i = 0; i < v->n && !rc; i++)
        if (v->d[i].off < b && v->d[i].off + v->d[i].len > a)
            rc = spans_add(out, v->d[i].off, v->d[i].len, 1);
    if (!rc && out->n > 1)
        qsort(out->s, out->n, sizeof(*out->s), span_cmp);
    return rc;
}

/* Lay the cached spans over the store's: a hole part a cached span covers is data. */
static int map_merge(const struct spans *st, const struct spans *ca, struct spans *out)
{
    size_t j = 0;
    int rc = 0;
    for (size_t i = 0; i < st->n && !rc; i++) {
        uint64_t at = st->s[i].off, end = st->s[i].off + st->s[i].len;
        if (st->s[i].data) {
            rc = spans_add(out, at, end - at, 1);
            continue;
        }
        while (j < ca->n && ca->s[j].off + ca->s[j].len <= at)
            j++;
        for (size_t k = j; at < end && !rc; k++) {
            if (k == ca->n || ca->s[k].off >= end) {
                rc = spans_add(out, at, end - at, 0);
                break;
            }
            uint64_t cs = PL_MAX(ca->s[k].off, at), ce = PL_MIN(ca->s[k].off + ca->s[k].len, end);
            if (ce <= at)
                continue; /* overlapped by an earlier span */
            if (cs > at)
                rc = spans_add(out, at, cs - at, 0);
            if (!rc)
                rc = spans_add(out, cs, ce - cs, 1);
            at = ce;
        }
    }
    return rc;
}

/* The cache's ranges are taken first, the store's map after: bytes that left
 * the cache between the two (gen moved) may be in neither, so then again. */
int vc_map(struct vcache *v, uint64_t off, uint64_t len, pl_map_fn cb, void *arg)
{
    struct spans ca = {0}, st = {0}, out = {0};
    int rc = 0, stable = 0;
    for (int attempt = 0; attempt < 3 && !rc && !stable; attempt++) {
        ca.n = st.n = 0;
        pthread_mutex_lock(&v->lock);
        uint64_t gen = v->gen;
        rc = cached_spans(v, off, off + len, &ca);
        pthread_mutex_unlock(&v->lock);
        if (!rc)
            rc = store_spans(v, off, len, &st);
        pthread_mutex_lock(&v->lock);
        stable = v->gen == gen;
        pthread_mutex_unlock(&v->lock);
    }
    if (!rc && !stable) {
        /* the writer kept moving bytes: store them all and ask the store alone */
        ca.n = 0;
        st.n = 0;
        rc = vc_flush(v);
        if (!rc)
            rc = store_spans(v, off, len, &st);
    }
    if (!rc)
        rc = map_merge(&st, &ca, &out);
    for (size_t i = 0; !rc && i < out.n; i++)
        if (cb(arg, out.s[i].off, out.s[i].len, out.s[i].data))
            break;
    free(ca.s);
    free(st.s);
    free(out.s);
    return rc;
}

static int batch_overlaps(const struct vcache *v, uint64_t a, uint64_t b)
{
    for (size_t i = v->fl_at; i < v->nfl; i++)
        if (v->fl[i].off < b && v->fl[i].off + v->fl[i].len > a)
            return 1;
    return 0;
}

int vc_punch(struct vcache *v, uint64_t off, uint64_t len)
{
    struct vc_set *s = v->set;
    pthread_mutex_lock(&v->lock);
    while (batch_overlaps(v, off, off + len))
        pthread_cond_wait(&v->done, &v->lock);
    size_t gone = 0;
    int rc = runs_cut(v, off, off + len, &gone); /* the hole supersedes cached writes */
    v->dirty_bytes -= gone;
    if (!rc)
        rc = pl_elem_punch(s->st, v->id, off, len);
    pthread_mutex_unlock(&v->lock);
    set_account(s, 0, gone);
    return rc;
}

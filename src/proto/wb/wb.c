/* Write-back for heads whose protocol lets a write return before it is
 * durable (NFS UNSTABLE writes until COMMIT, FUSE writes until fsync/close).
 *
 * Writing each 1 MiB call through the store costs a sync each; here
 * contiguous writes to a file collect into batches of up to WB_BATCH, and
 * WB_FLUSHERS threads write them while more arrive (overlapping ones in
 * order).
 * - The head settles a file before what must see its data (COMMIT, fsync,
 *   READ, SETATTR, close): everything before is written (and a failed batch
 *   reports its error).
 * - Attributes of a file with data in flight show its size and mtime.
 * - A file left alone for WB_IDLE_NS is written back without being settled.
 * - At most WB_QUEUE_MAX bytes wait: writers then wait for the flusher.
 * - A head may leave attribute changes of a file with data in flight here
 *   too (wb_setattr): they wait with the data and are written in order with
 *   it, in one change however many came, and attributes show them until
 *   then. A `tar x` sets times, owner and mode of every file it writes
 *   before closing it; each would be a metadata commit of its own.
 */
#include "proto/wb/wb.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"

#define WB_BATCH (8u << 20)
#define WB_QUEUE_MAX (256u << 20)
#define WB_IDLE_NS 1000000000ll
#define WB_SLOTS 256
#define WB_FLUSHERS 2 /* batches written at once: hashing one while the other syncs */
#define WB_SPARES 8 /* full-size buffers kept for reuse: fresh pages cost a fault and a clear */
#define WB_GROUP 4096      /* batches of one file written in one transaction at most */
#define WB_ALONE (WB_BATCH / 2) /* a batch this big (a sequential stream's) goes alone */
#define WB_GROUP_BYTES (64u << 20)
#define WB_FENCES 64       /* batches a group may have to step around */

struct wb_batch {
    struct wb_file *f;
    uint64_t off;
    uint8_t *buf;
    size_t len, cap;
    unsigned amask; /* an attribute change (len 0): PL_SET_* of attrs */
    struct pl_attr attrs;
    int busy; /* a flusher is writing it (1), or has written it (WRITTEN) */
    struct wb_batch *next;
};

struct wb_file {
    uint64_t id;
    uint64_t off; /* of the batch being filled */
    uint8_t *buf;
    size_t len, cap;
    uint64_t end; /* past the last byte written through us */
    int64_t mtime, last;
    int queued;   /* batches waiting or being written */
    int err;
    /* attribute changes kept here: what attributes show until every one is
     * written (all since the file was last idle; mtime only if set after
     * the last write), and of those, the ones not yet queued (a subset) */
    unsigned omask, pmask;
    struct pl_attr ov;
    int64_t ctime; /* of the last write or change kept here */
    struct wb_file *next;
};

struct wb {
    pthread_mutex_t lock;
    pthread_cond_t work; /* the flusher waits for batches */
    pthread_cond_t done; /* writers and settlers wait for the flusher */
    struct wb_file *slots[WB_SLOTS];
    struct wb_batch *head, *tail;
    size_t queued_bytes;
    uint8_t *spare[WB_SPARES];
    int nspare;
    struct pl_store *st;
    const char *label;
    const void *origin;
    pthread_t thr[WB_FLUSHERS];
    int stop, started; /* flushers running */
};

/* A buffer of WB_BATCH bytes (lock held). */
static uint8_t *buf_full(struct wb *w)
{
    return w->nspare ? w->spare[--w->nspare] : malloc(WB_BATCH);
}

/* Give a buffer back; full-size ones are kept for the next batch (lock held). */
static void buf_put(struct wb *w, uint8_t *buf, size_t cap)
{
    if (buf && cap == WB_BATCH && w->nspare < WB_SPARES)
        w->spare[w->nspare++] = buf;
    else
        free(buf);
}

static struct wb_file *file_find(struct wb *w, uint64_t id, int add)
{
    struct wb_file **pp = &w->slots[id % WB_SLOTS];
    for (struct wb_file *f = *pp; f; f = f->next)
        if (f->id == id)
            return f;
    if (!add)
        return NULL;
    struct wb_file *f = calloc(1, sizeof(*f));
    if (f) {
        f->id = id;
        f->next = *pp;
        *pp = f;
    }
    return f;
}

/* Forget a file with nothing in flight (lock held). */
static void file_drop_if_idle(struct wb *w, struct wb_file *f)
{
    if (f->len || f->queued || f->err || f->pmask)
        return;
    struct wb_file **pp = &w->slots[f->id % WB_SLOTS];
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    buf_put(w, f->buf, f->cap);
    free(f);
}

static void batch_append(struct wb *w, struct wb_batch *b)
{
    b->f->queued++;
    w->queued_bytes += b->len;
    if (w->tail)
        w->tail->next = b;
    else
        w->head = b;
    w->tail = b;
    pthread_cond_signal(&w->work);
}

/* Hand the filling batch to the flusher, then the attribute changes made
 * after it (lock held). */
static int file_queue(struct wb *w, struct wb_file *f)
{
    if (f->len) {
        struct wb_batch *b = malloc(sizeof(*b));
        if (!b)
            return PL_ENOMEM;
        *b = (struct wb_batch){.f = f, .off = f->off, .buf = f->buf, .len = f->len,
                               .cap = f->cap};
        f->buf = NULL;
        f->len = f->cap = 0;
        batch_append(w, b);
    }
    if (f->pmask) {
        struct wb_batch *b = malloc(sizeof(*b));
        if (!b)
            return PL_ENOMEM;
        *b = (struct wb_batch){.f = f, .amask = f->pmask, .attrs = f->ov};
        f->pmask = 0;
        batch_append(w, b);
    }
    return 0;
}

/* The first batch that may be written now: none before it in the queue
 * (waiting or being written) overlaps it in the same file, so overlapping
 * writes land in the order they came while the rest go in parallel. */
static struct wb_batch *batch_pick(struct wb *w)
{
    for (struct wb_batch *b = w->head; b; b = b->next) {
        if (b->busy)
            continue;
        int blocked = 0;
        /* an attribute change goes after everything before it, and before
         * everything after it, in its file */
        for (struct wb_batch *e = w->head; e != b && !blocked; e = e->next)
            blocked = e->f == b->f && (e->amask || b->amask ||
                                       (e->off < b->off + b->len && b->off < e->off + e->len));
        if (!blocked)
            return b;
    }
    return NULL;
}

/* Take the written batches (busy == WRITTEN) off the queue in one pass: a
 * group's members are spread over it (lock held). */
#define WRITTEN 2
static void batches_sweep(struct wb *w)
{
    struct wb_batch *prev = NULL, *b = w->head;
    while (b) {
        struct wb_batch *next = b->next;
        if (b->busy != WRITTEN) {
            prev = b;
            b = next;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            w->head = next;
        if (w->tail == b)
            w->tail = prev;
        struct wb_file *f = b->f;
        f->queued--;
        if (!f->queued && !f->pmask)
            f->omask = 0; /* all written: the store shows them now */
        w->queued_bytes -= b->len;
        buf_put(w, b->buf, b->cap);
        free(b);
        b = next;
    }
}

static int batch_overlaps(const struct wb_batch *x, const struct wb_batch *e)
{
    return x->off < e->off + e->len && e->off < x->off + x->len;
}

/* Queued data batches of b's file (a data batch picked to write) that can
 * go in b's transaction: random writes make a batch each, and each would
 * cost a sync and a metadata commit of its own (fio randwrite 4 KiB through
 * FUSE, 256 MiB + fsync: 42 s). A batch joins unless a batch before it that
 * stays out (another flusher's, or one that could not join) overlaps it; an
 * attribute change of the file ends the group. The group is written in
 * queue order, so overlapping members land as they came. Big batches, a
 * sequential stream's, go alone: two flushers writing long groups of one
 * file side by side lay their chunks out interleaved group against group,
 * and a later sequential read then reads ahead what it needs only much
 * later (nfs-cat of a file nfs-cp wrote: 2.0 -> 1.2 GB/s). Marks them busy;
 * *ret: them (malloc'd), count returned (lock held). */
static size_t batch_gather(struct wb *w, struct wb_batch *b, struct wb_batch ***ret)
{
    struct wb_batch *fence[WB_FENCES], **grp = NULL;
    size_t nf = 0, n = 0, cap = 0, bytes = b->len;
    int after = 0; /* past b in the queue */
    *ret = NULL;
    for (struct wb_batch *e = b->len >= WB_ALONE ? NULL : w->head; e && n < WB_GROUP;
         e = e->next) {
        if (e == b) {
            after = 1;
            continue;
        }
        if (e->f != b->f)
            continue;
        if (e->amask)
            break;
        /* what comes before b is written after the group, or beside it */
        int out = !after || e->busy || e->len >= WB_ALONE || bytes + e->len > WB_GROUP_BYTES;
        for (size_t i = 0; i < nf && !out; i++)
            out = batch_overlaps(fence[i], e);
        if (out) {
            if (nf == WB_FENCES)
                break;
            fence[nf++] = e;
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct wb_batch **g = realloc(grp, ncap * sizeof(struct wb_batch *));
            if (!g)
                break;
            grp = g;
            cap = ncap;
        }
        grp[n++] = e;
        bytes += e->len;
    }
    for (size_t i = 0; i < n; i++)
        grp[i]->busy = 1;
    *ret = grp;
    return n;
}

/* b and its group in one transaction. */
static int group_write(struct wb *w, struct wb_batch *b, struct wb_batch **grp, size_t n)
{
    struct pl_wrange *r = malloc((n + 1) * sizeof(*r));
    if (!r)
        return PL_ENOMEM;
    r[0] = (struct pl_wrange){b->off, b->buf, b->len};
    for (size_t i = 0; i < n; i++)
        r[i + 1] = (struct pl_wrange){grp[i]->off, grp[i]->buf, grp[i]->len};
    int rc = pl_elem_write_ranges(w->st, b->f->id, r, n + 1);
    free(r);
    return rc;
}

static void *flusher(void *arg)
{
    struct wb *w = arg;
    pl_store_origin(w->origin);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        if (!w->head) {
            /* write back files nobody wrote to for a while */
            int64_t now = pl_now_ns();
            for (int i = 0; i < WB_SLOTS; i++)
                for (struct wb_file *f = w->slots[i]; f; f = f->next)
                    if ((f->len || f->pmask) && (w->stop || now - f->last >= WB_IDLE_NS) &&
                        file_queue(w, f))
                        f->err = PL_ENOMEM;
        }
        struct wb_batch *b = batch_pick(w);
        if (!b) {
            if (w->stop && !w->head)
                break;
            struct timespec ts = pl_deadline_ms(250);
            pthread_cond_timedwait(&w->work, &w->lock, &ts);
            continue;
        }
        b->busy = 1;
        /* an attribute change right behind the file's last data in the
         * queue goes in its commit (not while an earlier batch of the file
         * is still being written: that one's commit would set mtime after) */
        struct wb_batch *a = !b->amask && b->next && b->next->f == b->f && b->next->amask
                                 ? b->next
                                 : NULL;
        for (struct wb_batch *e = w->head; a && e != b; e = e->next)
            if (e->f == b->f)
                a = NULL;
        if (a)
            a->busy = 1;
        struct wb_batch **grp = NULL;
        size_t ng = !b->amask && !a ? batch_gather(w, b, &grp) : 0;
        pthread_mutex_unlock(&w->lock);
        int rc;
        if (b->amask) {
            rc = pl_elem_setattr(w->st, b->f->id, b->amask, &b->attrs, NULL);
            if (rc == PL_ENOENT)
                rc = 0; /* the element went meanwhile: nothing left to change */
        } else if (ng) {
            rc = group_write(w, b, grp, ng);
        } else if (a) {
            rc = pl_elem_write_attrs(w->st, b->f->id, b->off, b->buf, b->len, a->amask,
                                     &a->attrs);
        } else {
            rc = pl_elem_write(w->st, b->f->id, b->off, b->buf, b->len);
        }
        pthread_mutex_lock(&w->lock);
        if (rc) {
            if (b->amask)
                pl_log(PL_LOG_WARN, w->label, "attribute change of element %llu: %s",
                       (unsigned long long)b->f->id, pl_strerror(rc));
            else
                pl_log(PL_LOG_WARN, w->label,
                       "write-back of %zu bytes at %llu of element %llu%s%s: %s", b->len,
                       (unsigned long long)b->off, (unsigned long long)b->f->id,
                       a ? " (and its attribute change)" : "",
                       ng ? " (and the ranges written with it)" : "", pl_strerror(rc));
            if (!b->f->err)
                b->f->err = rc;
        }
        struct wb_file *f = b->f;
        b->busy = WRITTEN;
        if (a)
            a->busy = WRITTEN;
        for (size_t i = 0; i < ng; i++)
            grp[i]->busy = WRITTEN;
        free(grp);
        batches_sweep(w);
        file_drop_if_idle(w, f); /* settlers look their file up again */
        pthread_cond_broadcast(&w->done);
        pthread_cond_broadcast(&w->work); /* a batch it blocked may go now */
    }
    pthread_cond_broadcast(&w->work); /* the other flushers end too */
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int wb_new(struct pl_store *st, const char *label, const void *origin, struct wb **ret)
{
    *ret = NULL;
    struct wb *w = calloc(1, sizeof(*w));
    if (!w)
        return PL_ENOMEM;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->done, NULL);
    w->st = st;
    w->label = label;
    w->origin = origin;
    for (int i = 0; i < WB_FLUSHERS; i++) {
        if (pthread_create(&w->thr[i], NULL, flusher, w)) {
            wb_free(w);
            return PL_ENOMEM;
        }
        w->started++;
    }
    *ret = w;
    return 0;
}

void wb_free(struct wb *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1; /* the flushers write everything back, then end */
    pthread_cond_broadcast(&w->work);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->started; i++)
        pthread_join(w->thr[i], NULL);
    for (int i = 0; i < WB_SLOTS; i++)
        while (w->slots[i]) {
            struct wb_file *f = w->slots[i];
            w->slots[i] = f->next;
            free(f->buf);
            free(f);
        }
    while (w->nspare)
        free(w->spare[--w->nspare]);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    free(w);
}

int wb_write(struct wb *w, uint64_t id, uint64_t off, const void *data, size_t n)
{
    int rc = 0;
    pthread_mutex_lock(&w->lock);
    while (w->queued_bytes > WB_QUEUE_MAX && !w->stop)
        pthread_cond_wait(&w->done, &w->lock);
    struct wb_file *f = file_find(w, id, 1);
    if (!f) {
        rc = PL_ENOMEM;
        goto out;
    }
    if (f->pmask || (f->len && (off != f->off + f->len || f->len + n > WB_BATCH)))
        rc = file_queue(w, f); /* not contiguous, or full, or after a change: a new batch */
    if (!rc && f->len + n > f->cap) {
        /* a new batch gets what it holds (scattered small writes make many),
         * a growing one room to grow */
        size_t grow = PL_MIN((size_t)WB_BATCH, f->cap * 2 + (256u << 10));
        size_t cap = f->len ? PL_MAX(f->len + n, grow) : n;
        uint8_t *nb;
        if (cap >= (1u << 20) && f->len + n <= WB_BATCH) {
            /* a stream: a whole batch buffer now, not a copy at every doubling */
            cap = WB_BATCH;
            nb = buf_full(w);
            if (nb) {
                if (f->len)
                    memcpy(nb, f->buf, f->len);
                buf_put(w, f->buf, f->cap);
            }
        } else {
            nb = realloc(f->buf, cap);
        }
        if (!nb)
            rc = PL_ENOMEM;
        else {
            f->buf = nb;
            f->cap = cap;
        }
    }
    if (!rc) {
        if (!f->len)
            f->off = off;
        memcpy(f->buf + f->len, data, n);
        f->len += n;
        f->end = PL_MAX(f->end, off + n);
        f->mtime = f->last = f->ctime = pl_now_ns();
        f->omask &= ~(unsigned)PL_SET_MTIME; /* a write sets it anew */
        if (f->len >= WB_BATCH)
            rc = file_queue(w, f);
    }
out:
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int wb_settle(struct wb *w, uint64_t id)
{
    int rc = 0;
    pthread_mutex_lock(&w->lock);
    struct wb_file *f = file_find(w, id, 0);
    if (f)
        rc = file_queue(w, f);
    while (!rc && (f = file_find(w, id, 0)) && f->queued)
        pthread_cond_wait(&w->done, &w->lock);
    if (f && !rc) {
        rc = f->err; /* reported once, to whoever settles first */
        f->err = 0;
        file_drop_if_idle(w, f);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int wb_setattr(struct wb *w, uint64_t id, unsigned mask, const struct pl_attr *in)
{
    const unsigned kept = PL_SET_MODE | PL_SET_UID | PL_SET_GID | PL_SET_ATIME | PL_SET_MTIME;
    int kept_here = 0;
    pthread_mutex_lock(&w->lock);
    struct wb_file *f = file_find(w, id, 0);
    if (mask && !(mask & ~kept) && f && (f->len || f->queued || f->pmask) && !w->stop) {
        int64_t now = pl_now_ns();
        pl_attr_set(&f->ov, mask, in);
        f->pmask |= mask;
        f->omask |= mask;
        f->ctime = now;
        f->last = now;
        kept_here = 1;
    }
    pthread_mutex_unlock(&w->lock);
    return kept_here;
}

void wb_attr(struct wb *w, struct pl_attr *a)
{
    pthread_mutex_lock(&w->lock);
    struct wb_file *f = file_find(w, a->id, 0);
    if (f && (f->len || f->queued || f->pmask)) {
        a->size = PL_MAX(a->size, f->end);
        a->mtime = PL_MAX(a->mtime, f->mtime);
        a->ctime = PL_MAX(a->ctime, PL_MAX(f->ctime, a->mtime));
        pl_attr_set(a, f->omask, &f->ov);
    }
    pthread_mutex_unlock(&w->lock);
}

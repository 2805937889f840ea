/* The next READ of a sequential reader, read before it asks (nfsint.h).
 *
 * A client that keeps one READ in flight (libnfs's nfs-cat and nfs-cp, and
 * programs built on libnfs's synchronous calls) leaves the server idle while
 * a reply crosses the wire and the client takes it in, and then waits while
 * the server reads the next megabyte: measured on a warm 1 GiB file, about
 * 0.45 ms of each 1 ms READ went to reading it. So once two READs in a row
 * carried on where the last one of that file ended, each alone (no other
 * READ of the file in flight from its start to its end: a kernel client's
 * readahead keeps several going and needs no help, and would only have the
 * file read twice), the same count at the next offset is read on a thread
 * of our own; the READ that asks for exactly that takes it.
 *
 * Read-ahead data is used only if the file did not change since: its
 * attributes (size, mtime, ctime, gen) are taken after the write-back is
 * settled and before the read, and compared again, after the READ settled
 * the write-back, when it takes the bytes. Every write, truncate and punch
 * sets a new ctime, so a change between the two shows and the bytes are
 * dropped and read again. */
#include <inttypes.h>
#include <stdlib.h>

#include "proto/nfs/nfsint.h"

#define PF_SLOTS 8   /* files followed at once */
#define PF_THREADS 2 /* so two readers' next READs load side by side */

enum { PF_IDLE, PF_LOADING, PF_READY };

struct pf_slot {
    struct pl_job job; /* first: the job is the slot */
    struct nfs_prefetch *p;
    uint64_t id, view;
    uint64_t next;   /* where the last READ of this file ended */
    int readers;     /* READs of it in flight */
    int overlapped;  /* one began while another was in flight */
    int streak;      /* READs alone and in sequence, in a row */
    int state;
    uint64_t off;    /* what is loading or ready */
    uint32_t count;
    uint8_t *buf;
    size_t got;
    struct pl_attr stamp;
    uint64_t used;   /* for choosing a slot to reuse */
};

struct nfs_prefetch {
    struct pl_store *st;
    struct wb *wb;
    struct pl_pool *pool;
    pthread_mutex_t lock;
    pthread_cond_t loaded;
    uint64_t clock;
    /* counters, atomic: READs answered from read-ahead, loads started,
     * loads dropped because the file changed */
    uint64_t hits, loads, stale;
    struct pf_slot slot[PF_SLOTS];
};

static int pf_metrics(void *arg, struct pl_buf *b)
{
    struct nfs_prefetch *p = arg;
    return pl_buf_addf(b,
                       "# TYPE plenum_nfs_read_ahead_total counter\n"
                       "plenum_nfs_read_ahead_total{outcome=\"loaded\"} %" PRIu64 "\n"
                       "plenum_nfs_read_ahead_total{outcome=\"used\"} %" PRIu64 "\n"
                       "plenum_nfs_read_ahead_total{outcome=\"changed\"} %" PRIu64 "\n",
                       __atomic_load_n(&p->loads, __ATOMIC_RELAXED),
                       __atomic_load_n(&p->hits, __ATOMIC_RELAXED),
                       __atomic_load_n(&p->stale, __ATOMIC_RELAXED));
}

int nfs_prefetch_new(struct pl_store *st, struct wb *wb, struct nfs_prefetch **ret)
{
    struct nfs_prefetch *p = calloc(1, sizeof(*p));
    if (!p)
        return PL_ENOMEM;
    int rc = pl_pool_new(PF_THREADS, &p->pool);
    if (rc) {
        free(p);
        return rc;
    }
    p->st = st;
    p->wb = wb;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->loaded, NULL);
    for (int i = 0; i < PF_SLOTS; i++)
        p->slot[i].p = p;
    if (pl_metrics_source_add(pf_metrics, p))
        pl_log(PL_LOG_WARN, "nfs", "no room for the NFS read-ahead's metrics");
    *ret = p;
    return 0;
}

void nfs_prefetch_free(struct nfs_prefetch *p)
{
    if (!p)
        return;
    pl_metrics_source_remove(pf_metrics, p);
    pl_pool_free(p->pool); /* loads under way finish first */
    for (int i = 0; i < PF_SLOTS; i++)
        free(p->slot[i].buf);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->loaded);
    free(p);
}

static int same_file(const struct pl_attr *a, const struct pl_attr *b)
{
    return a->size == b->size && a->mtime == b->mtime && a->ctime == b->ctime &&
           a->gen == b->gen;
}

static void slot_clear(struct pf_slot *s)
{
    free(s->buf);
    s->buf = NULL;
    s->state = PF_IDLE;
}

static struct pf_slot *slot_find(struct nfs_prefetch *p, uint64_t id, uint64_t view)
{
    for (int i = 0; i < PF_SLOTS; i++)
        if (p->slot[i].used && p->slot[i].id == id && p->slot[i].view == view)
            return &p->slot[i];
    return NULL;
}

/* A slot for a file not followed yet: a free one, else the one least
 * recently used that nothing is reading or loading; NULL when all are. */
static struct pf_slot *slot_take(struct nfs_prefetch *p, uint64_t id, uint64_t view)
{
    struct pf_slot *best = NULL;
    for (int i = 0; i < PF_SLOTS; i++) {
        struct pf_slot *s = &p->slot[i];
        if (s->readers || s->state == PF_LOADING)
            continue;
        if (!best || s->used < best->used)
            best = s;
    }
    if (best) {
        slot_clear(best);
        best->id = id;
        best->view = view;
        best->next = UINT64_MAX;
        best->overlapped = best->streak = 0;
    }
    return best;
}

static void load_run(struct pl_job *j)
{
    struct pf_slot *s = (struct pf_slot *)j;
    struct nfs_prefetch *p = s->p;
    uint8_t *buf = malloc(s->count);
    size_t got = 0;
    struct pl_attr a;
    int rc = buf ? 0 : PL_ENOMEM;
    if (!rc && s->view == PL_VIEW_LIVE)
        rc = wb_settle(p->wb, s->id);
    if (!rc)
        rc = pl_elem_getattr(p->st, s->id, s->view, &a);
    if (!rc)
        rc = pl_elem_read(p->st, s->id, s->view, s->off, buf, s->count, &got);
    pthread_mutex_lock(&p->lock);
    if (rc) {
        free(buf);
        s->state = PF_IDLE;
    } else {
        s->buf = buf;
        s->got = got;
        s->stamp = a;
        s->state = PF_READY;
    }
    pthread_cond_broadcast(&p->loaded);
    pthread_mutex_unlock(&p->lock);
}

int nfs_prefetch_begin(struct nfs_prefetch *p, uint64_t id, uint64_t view, uint64_t off,
                       uint32_t count, struct pf_slot **ret_slot, uint8_t **ret_buf,
                       size_t *ret_n, struct pl_attr *ret_a)
{
    pthread_mutex_lock(&p->lock);
    struct pf_slot *s = slot_find(p, id, view);
    if (!s)
        s = slot_take(p, id, view);
    *ret_slot = s;
    if (!s) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    s->overlapped |= s->readers > 0;
    s->readers++;
    s->used = ++p->clock;
    while (s->state == PF_LOADING && s->off == off && s->count == count)
        pthread_cond_wait(&p->loaded, &p->lock);
    if (s->state != PF_READY || s->off != off || s->count != count) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    struct pl_attr stamp = s->stamp;
    uint8_t *buf = s->buf;
    size_t got = s->got;
    s->buf = NULL;
    s->state = PF_IDLE;
    pthread_mutex_unlock(&p->lock);
    /* the caller settled the write-back: anything written since shows now */
    struct pl_attr a;
    if (pl_elem_getattr(p->st, id, view, &a) == 0 && same_file(&a, &stamp)) {
        *ret_buf = buf;
        *ret_n = got;
        *ret_a = a;
        __atomic_fetch_add(&p->hits, 1, __ATOMIC_RELAXED);
        return 1;
    }
    __atomic_fetch_add(&p->stale, 1, __ATOMIC_RELAXED);
    free(buf);
    return 0;
}

void nfs_prefetch_end(struct nfs_prefetch *p, struct pf_slot *s, uint64_t off, uint32_t count,
                      size_t got, uint64_t size)
{
    pthread_mutex_lock(&p->lock);
    s->readers--;
    int alone = !s->readers && !s->overlapped;
    if (!s->readers)
        s->overlapped = 0;
    s->streak = s->next == off && alone ? s->streak + 1 : 0;
    s->next = off + got;
    if (s->streak >= 2 && got == count && off + got < size && s->state != PF_LOADING) {
        slot_clear(s);
        s->state = PF_LOADING;
        s->off = off + got;
        s->count = count;
        s->job.fn = load_run;
        __atomic_fetch_add(&p->loads, 1, __ATOMIC_RELAXED);
        pl_pool_submit(p->pool, &s->job);
    }
    pthread_mutex_unlock(&p->lock);
}

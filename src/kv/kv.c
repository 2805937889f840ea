/* The KV cache (kv.h). One index (a hash table) under one mutex; values
 * are refcounted so readers send them without holding the lock. A
 * background thread writes demoted values to flash and removes stale flash
 * copies, in queue order.
 *
 * Entry states: a value in DRAM (on a segment list), a value being demoted
 * (off the lists, its bytes counted as pending), a flash copy (on the flash
 * LRU), or DRAM and flash both. An entry with neither is removed. Every set
 * bumps the entry's generation: a demotion finishing for an older
 * generation knows its copy is stale. */
#include "kv/kv.h"

#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/xxh.h"

#define KV_DIR ".kv"
#define ENT_OVERHEAD 128 /* bytes an entry costs beside its key and value */
#define WRITE_STEP (8u << 20)
#define PROTECTED_PCT 80

enum seg { SEG_NONE, SEG_PROB, SEG_PROT, SEG_DEMOTING };

/* An entry sits on up to three recency chains at once (its DRAM segment,
 * the flash LRU, its namespace), each through a link of its own. */
struct kv_ent;
struct link {
    struct kv_ent *prev, *next;
};
struct chain {
    struct kv_ent *head, *tail;
};

struct kv_ent {
    uint64_t h, hhi;
    uint8_t *ikey; /* ns NUL key */
    size_t ikn, nsl;
    struct kv_val *val;
    uint64_t size;
    int64_t expire;
    uint64_t gen;
    uint64_t flash_id; /* 0: no flash copy of this generation */
    int seg;
    struct kv_ent *hnext;
    struct link seg_l, flash_l, ns_l;
    struct kv_ns *ns;
};

#define SEG_L offsetof(struct kv_ent, seg_l)
#define FLASH_L offsetof(struct kv_ent, flash_l)
#define NS_L offsetof(struct kv_ent, ns_l)

/* A namespace's share: its bytes in both tiers and its keys by recency, so
 * one tenant over its bound evicts its own least recent keys only. */
struct kv_ns {
    char name[KV_NS_MAX + 1];
    uint64_t bytes;
    struct chain c;
    struct kv_ns *next;
};

struct list {
    struct chain c;
    uint64_t bytes;
};

enum job_kind { J_DEMOTE, J_UNLINK };
struct job {
    int kind;
    char name[40];
    uint8_t *ikey;
    size_t ikn;
    struct kv_val *val;
    uint64_t gen;
    uint64_t id; /* J_UNLINK: the element meant (the name may hold a newer one by then) */
    int64_t expire;
    struct job *next;
};

struct kv {
    struct pl_store *st;
    uint64_t dir;
    pthread_mutex_t lock;
    pthread_cond_t work, progress;
    struct kv_ent **tab;
    size_t nb, n;
    struct list seg[3]; /* SEG_PROB, SEG_PROT used */
    struct chain flash;
    uint64_t flash_used, pending, dram_max, flash_max, ns_max, gen;
    struct kv_ns *nss;
    struct job *jhead, *jtail;
    uint64_t jobs_queued, jobs_done;
    int stopping;
    pthread_t thr;
    int thr_started;
    uint64_t exp_cursor;
    struct kv_stats st_;
    char *compress; /* kv_opts.compress */
};

/* Whether values of namespace ns (nsl bytes) are compressed in the flash tier. */
static int ns_compressed(const struct kv *kv, const uint8_t *ns, size_t nsl)
{
    for (const char *p = kv->compress; p && *p;) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, " ,");
        if (n == 1 && p[0] == '*')
            return 1;
        if (n && p[n - 1] == '*' ? nsl >= n - 1 && !memcmp(ns, p, n - 1)
                                 : n && n == nsl && !memcmp(ns, p, n))
            return 1;
        p += n;
    }
    return 0;
}

/* ---- values ---- */
/* Large value buffers are recycled. A SET into fresh memory costs the kernel a
 * page fault and a zeroed page per 4 KiB (60 % of a 1 MiB SET's CPU in a
 * profile) while the buffer of the value it replaces was just freed; malloc
 * gives such sizes back to the kernel. Buffers of VR_MIN bytes and more are
 * sized in VR_GRAIN steps and, when freed, wait in their size class (up to
 * VR_BYTES in all, across every kv store of the process). */
#define VR_GRAIN ((size_t)64 << 10)
#define VR_MIN VR_GRAIN
#define VR_CLASSES 512 /* values up to 32 MiB */
#define VR_BYTES ((uint64_t)256 << 20)

static struct {
    pthread_mutex_t lock;
    struct kv_val *head[VR_CLASSES];
    uint64_t bytes;
} vr = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* A waiting buffer keeps the next one's address in its data (8-aligned). */
static struct kv_val **vr_next(struct kv_val *v)
{
    return (struct kv_val **)(void *)v->data;
}

/* A recycled buffer for n bytes, or NULL; *total: the size to malloc instead. */
static struct kv_val *vr_take(size_t n, size_t *total)
{
    struct kv_val *v = NULL;
    size_t want = sizeof(struct kv_val) + (n ? n : 1);
    size_t c = (want + VR_GRAIN - 1) / VR_GRAIN; /* the class: rounded up */
    *total = want;
    if (n >= VR_MIN && c < VR_CLASSES) {
        *total = c * VR_GRAIN;
        pthread_mutex_lock(&vr.lock);
        if ((v = vr.head[c])) {
            vr.head[c] = *vr_next(v);
            vr.bytes -= *total;
        }
        pthread_mutex_unlock(&vr.lock);
    }
    return v;
}

static struct kv_val *val_init(struct kv_val *v, size_t n, size_t total)
{
    if (v) {
        v->refs = 1;
        v->n = n;
        v->cap = total - sizeof(*v);
    }
    return v;
}

struct kv_val *kv_val_new(size_t n)
{
    size_t total;
    struct kv_val *v = vr_take(n, &total);
    return val_init(v ? v : malloc(total), n, total);
}

struct kv_val *kv_val_reuse(size_t n)
{
    size_t total;
    struct kv_val *v = vr_take(n, &total);
    return val_init(v, n, total);
}

/* Over the budget, the buffers of other sizes make room (oldest sizes the
 * workload stopped using would otherwise hold the budget for good). */
static void val_free(struct kv_val *v)
{
    size_t total = sizeof(*v) + v->cap, c = total / VR_GRAIN;
    struct kv_val *drop = NULL;
    if (v->cap >= VR_MIN && total % VR_GRAIN == 0 && c < VR_CLASSES && total <= VR_BYTES) {
        pthread_mutex_lock(&vr.lock);
        for (size_t k = VR_CLASSES; k-- > 0 && vr.bytes + total > VR_BYTES;) {
            while (k != c && vr.head[k] && vr.bytes + total > VR_BYTES) {
                struct kv_val *x = vr.head[k];
                vr.head[k] = *vr_next(x);
                vr.bytes -= k * VR_GRAIN;
                *vr_next(x) = drop;
                drop = x;
            }
        }
        if (vr.bytes + total <= VR_BYTES) {
            *vr_next(v) = vr.head[c];
            vr.head[c] = v;
            vr.bytes += total;
            v = NULL;
        }
        pthread_mutex_unlock(&vr.lock);
    }
    free(v);
    while (drop) {
        struct kv_val *x = drop;
        drop = *vr_next(x);
        free(x);
    }
}

int kv_val_grow(struct kv_val **pv, size_t cap, size_t have)
{
    struct kv_val *v = *pv, *nv;
    if (cap <= v->cap)
        return 0;
    if (!(nv = kv_val_new(cap)))
        return PL_ENOMEM;
    memcpy(nv->data, v->data, PL_MIN(have, v->cap));
    nv->n = v->n;
    val_free(v);
    *pv = nv;
    return 0;
}

void kv_val_ref(struct kv_val *v)
{
    __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
}

void kv_val_unref(struct kv_val *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0)
        val_free(v);
}

/* ---- keys ---- */
static int ikey_make(const char *ns, const void *key, size_t kn, uint8_t **ret, size_t *ret_n,
                     size_t *ret_nsl)
{
    size_t nsl = strlen(ns);
    if (nsl > KV_NS_MAX || kn > KV_KEY_MAX)
        return PL_ENAMETOOLONG;
    uint8_t *p = malloc(nsl + 1 + kn + 1);
    if (!p)
        return PL_ENOMEM;
    memcpy(p, ns, nsl + 1);
    memcpy(p + nsl + 1, key, kn);
    *ret = p;
    *ret_n = nsl + 1 + kn;
    *ret_nsl = nsl;
    return 0;
}

static void flash_name(const uint8_t *ikey, size_t ikn, char out[33])
{
    XXH128_hash_t h = XXH3_128bits(ikey, ikn);
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, (uint64_t)h.high64, (uint64_t)h.low64);
}

static uint64_t ent_cost(const struct kv_ent *e)
{
    return e->size + e->ikn + ENT_OVERHEAD;
}

static struct kv_ent *find(struct kv *kv, const uint8_t *ikey, size_t ikn, uint64_t h)
{
    for (struct kv_ent *e = kv->tab[h & (kv->nb - 1)]; e; e = e->hnext)
        if (e->h == h && e->ikn == ikn && !memcmp(e->ikey, ikey, ikn))
            return e;
    return NULL;
}

static void tab_grow(struct kv *kv)
{
    size_t nb = kv->nb * 2;
    struct kv_ent **t = calloc(nb, sizeof(struct kv_ent *));
    if (!t)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < kv->nb; i++) {
        for (struct kv_ent *e = kv->tab[i], *nx; e; e = nx) {
            nx = e->hnext;
            e->hnext = t[e->h & (nb - 1)];
            t[e->h & (nb - 1)] = e;
        }
    }
    free(kv->tab);
    kv->tab = t;
    kv->nb = nb;
}

/* ---- lists ---- */
static struct link *lk(struct kv_ent *e, size_t off)
{
    return (struct link *)((char *)e + off);
}

static void chain_unlink(struct chain *c, struct kv_ent *e, size_t off)
{
    struct link *l = lk(e, off);
    if (l->prev)
        lk(l->prev, off)->next = l->next;
    else if (c->head == e)
        c->head = l->next;
    if (l->next)
        lk(l->next, off)->prev = l->prev;
    else if (c->tail == e)
        c->tail = l->prev;
    l->prev = l->next = NULL;
}

static void chain_push(struct chain *c, struct kv_ent *e, size_t off)
{
    struct link *l = lk(e, off);
    l->prev = NULL;
    l->next = c->head;
    if (c->head)
        lk(c->head, off)->prev = e;
    else
        c->tail = e;
    c->head = e;
}

static void seg_unlink(struct kv *kv, struct kv_ent *e)
{
    if (e->seg != SEG_PROB && e->seg != SEG_PROT)
        return;
    chain_unlink(&kv->seg[e->seg].c, e, SEG_L);
    kv->seg[e->seg].bytes -= ent_cost(e);
    e->seg = SEG_NONE;
}

static void seg_push(struct kv *kv, struct kv_ent *e, int seg)
{
    e->seg = seg;
    chain_push(&kv->seg[seg].c, e, SEG_L);
    kv->seg[seg].bytes += ent_cost(e);
}

static struct kv_ns *ns_get(struct kv *kv, const uint8_t *ikey, size_t nsl)
{
    for (struct kv_ns *n = kv->nss; n; n = n->next)
        if (strlen(n->name) == nsl && !memcmp(n->name, ikey, nsl))
            return n;
    struct kv_ns *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    memcpy(n->name, ikey, nsl);
    n->next = kv->nss;
    kv->nss = n;
    return n;
}

static void ns_unlink(struct kv_ent *e)
{
    if (e->ns)
        chain_unlink(&e->ns->c, e, NS_L);
}

static void ns_push(struct kv_ent *e)
{
    if (e->ns)
        chain_push(&e->ns->c, e, NS_L);
}

/* ---- the background writer ---- */
static void job_push(struct kv *kv, struct job *j)
{
    j->next = NULL;
    if (kv->jtail)
        kv->jtail->next = j;
    else
        kv->jhead = j;
    kv->jtail = j;
    kv->jobs_queued++;
    pthread_cond_signal(&kv->work);
}

/* Remove e's flash copy (the file goes in the background). */
static void flash_drop(struct kv *kv, struct kv_ent *e)
{
    if (!e->flash_id)
        return;
    struct job *j = calloc(1, sizeof(*j));
    if (j) {
        j->kind = J_UNLINK;
        j->id = e->flash_id;
        flash_name(e->ikey, e->ikn, j->name);
        job_push(kv, j);
    } /* else the file stays until the next open finds no entry wanting it */
    chain_unlink(&kv->flash, e, FLASH_L);
    kv->flash_used -= e->size;
    kv->st_.flash_keys--;
    e->flash_id = 0;
}

static void ent_free(struct kv_ent *e)
{
    kv_val_unref(e->val);
    free(e->ikey);
    free(e);
}

/* Take e out of the index entirely. */
static void ent_drop(struct kv *kv, struct kv_ent *e)
{
    struct kv_ent **pp = &kv->tab[e->h & (kv->nb - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    kv->n--;
    if (e->val && (e->seg == SEG_PROB || e->seg == SEG_PROT))
        kv->st_.dram_keys--;
    ns_unlink(e);
    if (e->ns)
        e->ns->bytes -= e->size;
    seg_unlink(kv, e);
    flash_drop(kv, e);
    ent_free(e);
}

static void flash_enforce(struct kv *kv)
{
    while (kv->flash_used > kv->flash_max && kv->flash.tail) {
        struct kv_ent *e = kv->flash.tail;
        /* flash_drop takes e off the flash list: ftail never names a dropped entry */
        flash_drop(kv, e); // NOLINT(clang-analyzer-unix.Malloc)
        if (!e->val) {
            kv->st_.evictions++;
            ent_drop(kv, e);
        }
    }
}

/* Bring the DRAM tier under its bound: values with a flash copy are just
 * dropped, others are queued for demotion (or evicted when flash cannot
 * hold them). */
static void dram_enforce(struct kv *kv)
{
    for (;;) {
        uint64_t used = kv->seg[SEG_PROB].bytes + kv->seg[SEG_PROT].bytes;
        if (used + kv->pending <= kv->dram_max)
            break;
        struct kv_ent *e = kv->seg[SEG_PROB].c.tail ? kv->seg[SEG_PROB].c.tail
                                                     : kv->seg[SEG_PROT].c.tail;
        if (!e)
            break;
        /* an entry dropped below was unlinked first: the tails never name it */
        seg_unlink(kv, e); // NOLINT(clang-analyzer-unix.Malloc)
        kv->st_.dram_keys--;
        if (e->flash_id) {
            kv_val_unref(e->val);
            e->val = NULL;
            continue;
        }
        struct job *j = e->size <= kv->flash_max ? calloc(1, sizeof(*j)) : NULL;
        uint8_t *k = j ? malloc(e->ikn) : NULL;
        if (!k) {
            free(j);
            kv->st_.evictions++;
            ent_drop(kv, e);
            continue;
        }
        memcpy(k, e->ikey, e->ikn);
        *j = (struct job){.kind = J_DEMOTE, .ikey = k, .ikn = e->ikn, .val = e->val,
                          .gen = e->gen, .expire = e->expire};
        kv_val_ref(e->val);
        flash_name(e->ikey, e->ikn, j->name);
        e->seg = SEG_DEMOTING;
        kv->pending += e->size;
        job_push(kv, j);
    }
    /* protected keeps its share; its oldest go back to probation */
    uint64_t prot_max = kv->dram_max / 100 * PROTECTED_PCT;
    while (kv->seg[SEG_PROT].bytes > prot_max && kv->seg[SEG_PROT].c.tail) {
        struct kv_ent *e = kv->seg[SEG_PROT].c.tail;
        seg_unlink(kv, e); // NOLINT(clang-analyzer-unix.Malloc): see above
        seg_push(kv, e, SEG_PROB);
    }
}

static int write_flash(struct kv *kv, const struct job *j, uint64_t *ret_id)
{
    char tmp[64], exp[24];
    struct pl_attr a;
    snprintf(tmp, sizeof(tmp), "t%s-%" PRIu64, j->name, j->gen);
    int rc = pl_elem_create(kv->st, kv->dir, tmp, 0600, 0, 0, 0, &a);
    if (!rc && a.size) {
        struct pl_attr z = {.size = 0};
        rc = pl_elem_setattr(kv->st, a.id, PL_SET_SIZE, &z, NULL);
    }
    unsigned flags = ns_compressed(kv, j->ikey, strlen((const char *)j->ikey)) ? 0 : PL_WRITE_RAW;
    for (uint64_t off = 0; !rc && off < j->val->n; off += WRITE_STEP)
        rc = pl_elem_write_flags(kv->st, a.id, off, j->val->data + off,
                                 (size_t)PL_MIN((uint64_t)WRITE_STEP, j->val->n - off), flags);
    if (!rc)
        rc = pl_xattr_set(kv->st, a.id, "user.kv.key", j->ikey, j->ikn);
    snprintf(exp, sizeof(exp), "%" PRId64, j->expire);
    if (!rc)
        rc = pl_xattr_set(kv->st, a.id, "user.kv.exp", exp, strlen(exp));
    if (!rc)
        rc = pl_elem_rename(kv->st, kv->dir, tmp, kv->dir, j->name);
    if (rc && pl_elem_unlink(kv->st, kv->dir, tmp) && rc != PL_ENOSPC)
        pl_log(PL_LOG_WARN, "kv", "cannot remove %s after a failed demotion", tmp);
    *ret_id = a.id;
    return rc;
}

static void job_done(struct kv *kv, struct job *j, int rc, uint64_t id)
{
    if (j->kind != J_DEMOTE)
        return;
    uint64_t h = XXH3_128bits(j->ikey, j->ikn).low64;
    struct kv_ent *e = find(kv, j->ikey, j->ikn, h);
    kv->pending -= j->val->n;
    int current = e && e->gen == j->gen && e->seg == SEG_DEMOTING;
    if (current && !rc) {
        e->flash_id = id;
        chain_push(&kv->flash, e, FLASH_L);
        kv->flash_used += e->size;
        kv->st_.flash_keys++;
        kv->st_.demotions++;
        kv_val_unref(e->val);
        e->val = NULL;
        e->seg = SEG_NONE;
        flash_enforce(kv);
    } else if (current) {
        /* flash refused it (full disk): the key is evicted, as a cache may */
        pl_log(PL_LOG_WARN, "kv", "cannot demote a value to flash: %s; evicting it",
               pl_strerror(rc));
        kv->st_.evictions++;
        ent_drop(kv, e);
    } else if (!rc) {
        /* changed or deleted while being written: the copy is stale */
        struct job *u = calloc(1, sizeof(*u));
        if (u) {
            u->kind = J_UNLINK;
            u->id = id;
            memcpy(u->name, j->name, sizeof(u->name));
            job_push(kv, u);
        }
    }
}

static void expire_some(struct kv *kv, int64_t now)
{
    /* a slice of the table per pass: expired keys nobody reads still go */
    for (int i = 0; i < 256; i++) {
        size_t b = (size_t)(kv->exp_cursor++ & (kv->nb - 1));
        for (struct kv_ent *e = kv->tab[b], *nx; e; e = nx) {
            nx = e->hnext;
            if (e->expire && e->expire <= now) {
                kv->st_.expired++;
                ent_drop(kv, e);
            }
        }
    }
}

/* Remove j's flash copy if the name still holds it: a stale copy's removal
 * queued behind a newer demotion of the same key must not take the newer
 * one (only this thread renames and removes in the directory, so nothing
 * moves between the look and the unlink). */
static int flash_unlink(struct kv *kv, const struct job *j)
{
    struct pl_attr a;
    int rc = pl_elem_lookup(kv->st, kv->dir, j->name, PL_VIEW_LIVE, &a);
    if (rc)
        return rc;
    if (j->id && a.id != j->id)
        return 0;
    return pl_elem_unlink(kv->st, kv->dir, j->name);
}

static void *bg_main(void *arg)
{
    struct kv *kv = arg;
    pthread_mutex_lock(&kv->lock);
    for (;;) {
        while (!kv->jhead && !kv->stopping) {
            struct timespec ts = pl_deadline_ms(100);
            if (pthread_cond_timedwait(&kv->work, &kv->lock, &ts))
                expire_some(kv, pl_now_ns() / 1000000);
        }
        if (!kv->jhead)
            break;
        struct job *j = kv->jhead;
        kv->jhead = j->next;
        if (!kv->jhead)
            kv->jtail = NULL;
        pthread_mutex_unlock(&kv->lock);
        uint64_t id = 0;
        int rc = 0;
        if (j->kind == J_DEMOTE) {
            rc = write_flash(kv, j, &id);
        } else {
            rc = flash_unlink(kv, j);
            if (rc && rc != PL_ENOENT)
                pl_log(PL_LOG_WARN, "kv", "cannot remove flash value %s: %s", j->name,
                       pl_strerror(rc));
        }
        pthread_mutex_lock(&kv->lock);
        job_done(kv, j, rc, id);
        kv->jobs_done++;
        pthread_cond_broadcast(&kv->progress);
        kv_val_unref(j->val);
        free(j->ikey);
        free(j);
    }
    pthread_mutex_unlock(&kv->lock);
    return NULL;
}

/* ---- lookups ---- */
static struct kv_ent *lookup(struct kv *kv, const uint8_t *ikey, size_t ikn, int64_t now)
{
    uint64_t h = XXH3_128bits(ikey, ikn).low64;
    struct kv_ent *e = find(kv, ikey, ikn, h);
    if (e && e->expire && e->expire <= now) {
        kv->st_.expired++;
        ent_drop(kv, e);
        return NULL;
    }
    return e;
}

static void touch(struct kv *kv, struct kv_ent *e)
{
    if (e->seg == SEG_PROB || e->seg == SEG_PROT) {
        seg_unlink(kv, e);
        seg_push(kv, e, SEG_PROT); /* a second hit: protected */
    }
    if (e->flash_id) {
        chain_unlink(&kv->flash, e, FLASH_L);
        chain_push(&kv->flash, e, FLASH_L);
    }
    ns_unlink(e);
    ns_push(e);
}

/* Read e's flash copy whole (lock released meanwhile). */
static int flash_read(struct kv *kv, uint64_t id, uint64_t size, uint64_t off, void *buf,
                      size_t n, size_t *ret_n)
{
    struct pl_attr a;
    int rc = pl_elem_open(kv->st, id, &a);
    if (rc)
        return rc == PL_ENOENT ? PL_ENOENT : rc;
    if (a.size != size)
        rc = PL_ENOENT; /* replaced under us */
    size_t got = 0;
    while (!rc && got < n) {
        size_t step = (size_t)PL_MIN((uint64_t)(n - got), (uint64_t)WRITE_STEP), r;
        rc = pl_elem_read(kv->st, id, PL_VIEW_LIVE, off + got, (uint8_t *)buf + got, step, &r);
        if (!rc && r == 0)
            break;
        got += r;
    }
    pl_elem_unpin(kv->st, id);
    *ret_n = got;
    return rc;
}

int kv_get(struct kv *kv, const char *ns, const void *key, size_t kn, struct kv_val **ret)
{
    uint8_t *ik;
    size_t ikn, nsl;
    *ret = NULL;
    int rc = ikey_make(ns, key, kn, &ik, &ikn, &nsl);
    if (rc)
        return rc == PL_ENAMETOOLONG ? PL_ENOENT : rc;
    pthread_mutex_lock(&kv->lock);
    struct kv_ent *e = lookup(kv, ik, ikn, pl_now_ns() / 1000000);
    if (!e) {
        kv->st_.misses++;
        rc = PL_ENOENT;
    } else if (e->val) {
        kv_val_ref(e->val);
        *ret = e->val;
        touch(kv, e);
        kv->st_.hits_dram++;
    } else {
        /* on flash: read it without the lock, then promote it if it is still current */
        uint64_t id = e->flash_id, size = e->size, gen = e->gen;
        pthread_mutex_unlock(&kv->lock);
        struct kv_val *v = kv_val_new((size_t)size);
        size_t got = 0;
        rc = v ? flash_read(kv, id, size, 0, v->data, (size_t)size, &got) : PL_ENOMEM;
        if (!rc && got != size)
            rc = PL_ENOENT;
        pthread_mutex_lock(&kv->lock);
        e = lookup(kv, ik, ikn, pl_now_ns() / 1000000);
        if (rc == PL_ENOENT || !e || e->gen != gen) {
            /* evicted, expired or replaced meanwhile: the caller sees the present */
            kv_val_unref(v);
            v = NULL;
            rc = PL_ENOENT; /* a cache may miss; it never answers stale bytes */
            if (e && e->val) {
                kv_val_ref(e->val);
                v = e->val;
                rc = 0;
            }
        } else if (!rc && !e->val) {
            e->val = v;
            kv_val_ref(v);
            seg_push(kv, e, SEG_PROB);
            kv->st_.dram_keys++;
            kv->st_.promotions++;
            touch(kv, e);
            dram_enforce(kv);
        }
        if (!rc) {
            kv->st_.hits_flash++;
            *ret = v;
        } else {
            kv_val_unref(v);
            kv->st_.misses++;
            if (rc != PL_ENOENT)
                pl_log(PL_LOG_WARN, "kv", "flash read failed: %s", pl_strerror(rc));
        }
    }
    pthread_mutex_unlock(&kv->lock);
    free(ik);
    return rc;
}

static int set_must_wait(struct kv *kv)
{
    return kv->pending > PL_MAX(kv->dram_max / 2, (uint64_t)64 << 20) && !kv->stopping;
}

int kv_set_waits(struct kv *kv)
{
    pthread_mutex_lock(&kv->lock);
    int r = set_must_wait(kv);
    pthread_mutex_unlock(&kv->lock);
    return r;
}

int kv_set(struct kv *kv, const char *ns, const void *key, size_t kn, struct kv_val *v,
           int64_t expire_ms, int flags, int *ret_set, struct kv_val **ret_old)
{
    uint8_t *ik;
    size_t ikn, nsl;
    *ret_set = 0;
    if (ret_old)
        *ret_old = NULL;

    int rc = ikey_make(ns, key, kn, &ik, &ikn, &nsl);
    if (rc) {
        kv_val_unref(v);
        return rc;
    }
    uint64_t h = XXH3_128bits(ik, ikn).low64;
    if (kv->ns_max && v->n > kv->ns_max) {
        kv_val_unref(v);
        free(ik);
        return PL_ENOSPC; /* more than its namespace may ever hold */
    }
    pthread_mutex_lock(&kv->lock);
    /* writers wait while demotion is far behind: memory stays bounded */
    while (set_must_wait(kv))
        pthread_cond_wait(&kv->progress, &kv->lock);
    int64_t now = pl_now_ns() / 1000000;
    struct kv_ent *e = lookup(kv, ik, ikn, now);
    if ((flags & KV_NX && e) || (flags & KV_XX && !e))
        goto out;
    if (ret_old && (flags & KV_GETOLD) && e && e->val) {
        kv_val_ref(e->val);
        *ret_old = e->val;
    } else if (ret_old && (flags & KV_GETOLD) && e) {
        uint64_t id = e->flash_id, size = e->size;
        struct kv_val *old = kv_val_new((size_t)size);
        size_t got = 0;
        pthread_mutex_unlock(&kv->lock);
        if (old && flash_read(kv, id, size, 0, old->data, (size_t)size, &got) == 0 &&
            got == size)
            *ret_old = old;
        else
            kv_val_unref(old);
        pthread_mutex_lock(&kv->lock);
        e = lookup(kv, ik, ikn, now);
    }
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e) {
            rc = PL_ENOMEM;
            goto out;
        }
        e->ikey = ik;
        e->ikn = ikn;
        e->nsl = nsl;
        e->h = h;
        e->ns = ns_get(kv, ik, nsl);
        ns_push(e);
        ik = NULL;
        if (kv->n >= kv->nb)
            tab_grow(kv);
        e->hnext = kv->tab[h & (kv->nb - 1)];
        kv->tab[h & (kv->nb - 1)] = e;
        kv->n++;
    } else {
        if (e->val && (e->seg == SEG_PROB || e->seg == SEG_PROT))
            kv->st_.dram_keys--;
        seg_unlink(kv, e);
        flash_drop(kv, e);
        kv_val_unref(e->val);
        e->val = NULL;
        e->seg = SEG_NONE;
    }
    if (!(flags & KV_KEEPTTL))
        e->expire = expire_ms;
    e->gen = ++kv->gen;
    e->val = v;
    if (e->ns)
        e->ns->bytes += v->n - e->size;
    e->size = v->n;
    v = NULL;
    seg_push(kv, e, SEG_PROB);
    kv->st_.dram_keys++;
    *ret_set = 1;
    ns_unlink(e);
    ns_push(e);
    /* a namespace over its bound gives up its own least recent keys */
    while (kv->ns_max && e->ns && e->ns->bytes > kv->ns_max && e->ns->c.tail != e) {
        kv->st_.evictions++;
        ent_drop(kv, e->ns->c.tail);
    }
    dram_enforce(kv);
out:
    pthread_mutex_unlock(&kv->lock);
    kv_val_unref(v);
    free(ik);
    return rc;
}

/* Run fn on the live entry of (ns, key) under the lock. */
static int with_ent(struct kv *kv, const char *ns, const void *key, size_t kn,
                    int (*fn)(struct kv *kv, struct kv_ent *e, void *arg), void *arg)
{
    uint8_t *ik;
    size_t ikn, nsl;
    int rc = ikey_make(ns, key, kn, &ik, &ikn, &nsl);
    if (rc)
        return rc == PL_ENAMETOOLONG ? PL_ENOENT : rc;
    pthread_mutex_lock(&kv->lock);
    struct kv_ent *e = lookup(kv, ik, ikn, pl_now_ns() / 1000000);
    rc = e ? fn(kv, e, arg) : PL_ENOENT;
    pthread_mutex_unlock(&kv->lock);
    free(ik);
    return rc;
}

static int del_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    (void)arg;
    ent_drop(kv, e);
    return 0;
}

int kv_del(struct kv *kv, const char *ns, const void *key, size_t kn)
{
    return with_ent(kv, ns, key, kn, del_fn, NULL) == 0;
}

static int exists_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    (void)kv;
    (void)e;
    (void)arg;
    return 0;
}

int kv_exists(struct kv *kv, const char *ns, const void *key, size_t kn)
{
    return with_ent(kv, ns, key, kn, exists_fn, NULL) == 0;
}

static int strlen_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    (void)kv;
    *(uint64_t *)arg = e->size;
    return 0;
}

int kv_strlen(struct kv *kv, const char *ns, const void *key, size_t kn, uint64_t *ret)
{
    return with_ent(kv, ns, key, kn, strlen_fn, ret);
}

static int peek_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    (void)kv;
    uint64_t *size = arg;
    *size = e->size;
    return e->val ? 0 : 1;
}

int kv_peek(struct kv *kv, const char *ns, const void *key, size_t kn, uint64_t *ret_size)
{
    *ret_size = 0;
    return with_ent(kv, ns, key, kn, peek_fn, ret_size);
}

struct range_arg {
    uint64_t off;
    void *buf;
    size_t n, got;
    uint64_t id, size, gen;
};

static int range_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    (void)kv;
    struct range_arg *r = arg;
    r->size = e->size;
    if (r->off >= e->size) {
        r->got = 0;
        return 0;
    }
    size_t n = (size_t)PL_MIN((uint64_t)r->n, e->size - r->off);
    if (e->val) {
        memcpy(r->buf, e->val->data + r->off, n);
        r->got = n;
        return 0;
    }
    r->id = e->flash_id; /* read it after the lock */
    r->gen = e->gen;
    r->n = n;
    return 1;
}

int kv_getrange(struct kv *kv, const char *ns, const void *key, size_t kn, uint64_t off,
                void *buf, size_t n, size_t *ret_n)
{
    struct range_arg r = {off, buf, n, 0, 0, 0, 0};
    int rc = with_ent(kv, ns, key, kn, range_fn, &r);
    if (rc == 1)
        rc = flash_read(kv, r.id, r.size, off, buf, r.n, &r.got);
    *ret_n = rc ? 0 : r.got;
    return rc;
}

struct exp_arg {
    int64_t at;
    int cond;
    uint64_t flash_id; /* its flash copy records the expiry too */
};

static int expire_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    struct exp_arg *x = arg;
    int64_t cur = e->expire;
    if ((x->cond & KV_EXP_NX && cur) || (x->cond & KV_EXP_XX && !cur) ||
        (x->cond & KV_EXP_GT && (!cur || x->at <= cur)) ||
        (x->cond & KV_EXP_LT && cur && x->at >= cur))
        return 1;
    if (x->at && x->at <= pl_now_ns() / 1000000) {
        ent_drop(kv, e);
        return 0;
    }
    e->expire = x->at;
    x->flash_id = e->flash_id;
    return 0;
}

int kv_expire(struct kv *kv, const char *ns, const void *key, size_t kn, int64_t expire_ms,
              int cond)
{
    struct exp_arg x = {expire_ms, cond, 0};
    if (with_ent(kv, ns, key, kn, expire_fn, &x))
        return 0;
    if (x.flash_id) {
        /* after the lock: a copy deleted meanwhile needs nothing */
        char exp[24];
        snprintf(exp, sizeof(exp), "%" PRId64, expire_ms);
        int rc = pl_xattr_set(kv->st, x.flash_id, "user.kv.exp", exp, strlen(exp));
        if (rc && rc != PL_ENOENT)
            pl_log(PL_LOG_WARN, "kv", "cannot record an expiry on flash: %s", pl_strerror(rc));
    }
    return 1;
}

static int expiry_fn(struct kv *kv, struct kv_ent *e, void *arg)
{
    (void)kv;
    *(int64_t *)arg = e->expire;
    return 0;
}

int kv_expiry(struct kv *kv, const char *ns, const void *key, size_t kn, int64_t *ret_ms)
{
    return with_ent(kv, ns, key, kn, expiry_fn, ret_ms);
}

static int ns_is(const struct kv_ent *e, const char *ns, size_t nsl)
{
    return e->nsl == nsl && !memcmp(e->ikey, ns, nsl);
}

uint64_t kv_dbsize(struct kv *kv, const char *ns)
{
    size_t nsl = strlen(ns);
    uint64_t n = 0;
    pthread_mutex_lock(&kv->lock);
    int64_t now = pl_now_ns() / 1000000;
    for (size_t i = 0; i < kv->nb; i++)
        for (struct kv_ent *e = kv->tab[i]; e; e = e->hnext)
            n += ns_is(e, ns, nsl) && !(e->expire && e->expire <= now);
    pthread_mutex_unlock(&kv->lock);
    return n;
}

int kv_scan(struct kv *kv, const char *ns, uint64_t cursor, size_t count, kv_key_fn cb, void *arg,
            uint64_t *ret_next)
{
    size_t nsl = strlen(ns), found = 0, visited = 0;
    int rc = 0;
    pthread_mutex_lock(&kv->lock);
    int64_t now = pl_now_ns() / 1000000;
    uint64_t b = cursor;
    /* bucket by bucket: a grown table keeps old buckets' keys at or after them */
    for (; b < kv->nb && (found < count || !visited) && visited < count * 10 + 10; b++, visited++)
        for (struct kv_ent *e = kv->tab[b]; e && !rc; e = e->hnext)
            if (ns_is(e, ns, nsl) && !(e->expire && e->expire <= now)) {
                rc = cb(arg, e->ikey + nsl + 1, e->ikn - nsl - 1);
                found++;
            }
    *ret_next = b >= kv->nb ? 0 : b;
    pthread_mutex_unlock(&kv->lock);
    return rc < 0 ? rc : 0;
}

int kv_flush(struct kv *kv, const char *ns)
{
    size_t nsl = ns ? strlen(ns) : 0;
    pthread_mutex_lock(&kv->lock);
    for (size_t i = 0; i < kv->nb; i++)
        for (struct kv_ent *e = kv->tab[i], *nx; e; e = nx) {
            nx = e->hnext;
            if (!ns || ns_is(e, ns, nsl))
                ent_drop(kv, e);
        }
    pthread_mutex_unlock(&kv->lock);
    return 0;
}

void kv_stats(struct kv *kv, struct kv_stats *ret)
{
    pthread_mutex_lock(&kv->lock);
    *ret = kv->st_;
    ret->keys = kv->n;
    ret->dram_used = kv->seg[SEG_PROB].bytes + kv->seg[SEG_PROT].bytes + kv->pending;
    ret->dram_max = kv->dram_max;
    ret->flash_used = kv->flash_used;
    ret->flash_max = kv->flash_max;
    ret->demote_pending = kv->pending;
    pthread_mutex_unlock(&kv->lock);
}

void kv_config(struct kv *kv, uint64_t dram_max, uint64_t flash_max)
{
    pthread_mutex_lock(&kv->lock);
    if (dram_max)
        kv->dram_max = dram_max;
    if (flash_max)
        kv->flash_max = flash_max;
    dram_enforce(kv);
    flash_enforce(kv);
    pthread_mutex_unlock(&kv->lock);
}

void kv_settle(struct kv *kv)
{
    pthread_mutex_lock(&kv->lock);
    uint64_t want = kv->jobs_queued;
    while (kv->jobs_done < want && kv->thr_started)
        pthread_cond_wait(&kv->progress, &kv->lock);
    pthread_mutex_unlock(&kv->lock);
}

/* ---- Prometheus ---- */
static int kv_metrics(void *arg, struct pl_buf *b)
{
    struct kv_stats k;
    kv_stats(arg, &k);
    return pl_buf_addf(b,
                       "# TYPE plenum_kv_keys gauge\nplenum_kv_keys{tier=\"dram\"} %" PRIu64
                       "\nplenum_kv_keys{tier=\"flash\"} %" PRIu64 "\n"
                       "# TYPE plenum_kv_bytes gauge\nplenum_kv_bytes{tier=\"dram\"} %" PRIu64
                       "\nplenum_kv_bytes{tier=\"flash\"} %" PRIu64 "\n"
                       "# TYPE plenum_kv_max_bytes gauge\nplenum_kv_max_bytes{tier=\"dram\"} %" PRIu64
                       "\nplenum_kv_max_bytes{tier=\"flash\"} %" PRIu64 "\n"
                       "# TYPE plenum_kv_hits_total counter\nplenum_kv_hits_total{tier=\"dram\"} %"
                       PRIu64 "\nplenum_kv_hits_total{tier=\"flash\"} %" PRIu64 "\n"
                       "# TYPE plenum_kv_misses_total counter\nplenum_kv_misses_total %" PRIu64 "\n"
                       "# TYPE plenum_kv_demotions_total counter\nplenum_kv_demotions_total %" PRIu64
                       "\n# TYPE plenum_kv_promotions_total counter\nplenum_kv_promotions_total %"
                       PRIu64 "\n# TYPE plenum_kv_evictions_total counter\n"
                       "plenum_kv_evictions_total %" PRIu64 "\n"
                       "# TYPE plenum_kv_expired_total counter\nplenum_kv_expired_total %" PRIu64
                       "\n",
                       k.dram_keys, k.flash_keys, k.dram_used, k.flash_used, k.dram_max,
                       k.flash_max, k.hits_dram, k.hits_flash, k.misses, k.demotions,
                       k.promotions, k.evictions, k.expired);
}

/* ---- open: rebuild the flash index from /.kv ---- */
struct loaded {
    char name[64];
    uint64_t id, size;
    int64_t mtime;
};

struct load_ctx {
    struct loaded *l;
    size_t n, cap;
};

static int load_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct load_ctx *c = arg;
    if (a->type != PL_T_FILE || strlen(name) >= sizeof(c->l[0].name))
        return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct loaded *nl = realloc(c->l, cap * sizeof(*nl));
        if (!nl)
            return -1;
        c->l = nl;
        c->cap = cap;
    }
    struct loaded *x = &c->l[c->n++];
    snprintf(x->name, sizeof(x->name), "%s", name);
    x->id = a->id;
    x->size = a->size;
    x->mtime = a->mtime;
    return 0;
}

static int by_mtime(const void *a, const void *b)
{
    const struct loaded *x = a, *y = b;
    return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

static int load_one(struct kv *kv, const struct loaded *x, int64_t now)
{
    char exp[24], name[33];
    uint8_t *ik = malloc(KV_NS_MAX + 1 + KV_KEY_MAX);
    if (!ik)
        return PL_ENOMEM;
    ssize_t kn = pl_xattr_get(kv->st, x->id, PL_VIEW_LIVE, "user.kv.key", ik,
                              KV_NS_MAX + 1 + KV_KEY_MAX);
    ssize_t en = pl_xattr_get(kv->st, x->id, PL_VIEW_LIVE, "user.kv.exp", exp, sizeof(exp) - 1);
    uint8_t *nul = kn > 0 && kn <= KV_NS_MAX + 1 + KV_KEY_MAX ? memchr(ik, 0, (size_t)kn) : NULL;
    if (nul)
        flash_name(ik, (size_t)kn, name);
    int64_t expire = 0;
    if (en > 0) {
        exp[en] = 0;
        expire = strtoll(exp, NULL, 10);
    }
    if (!nul || strcmp(name, x->name) || (expire && expire <= now)) {
        free(ik); /* not a value we wrote, or expired while we were down */
        return pl_elem_unlink(kv->st, kv->dir, x->name);
    }
    size_t nsl = (size_t)(nul - ik);
    struct kv_ent *e = calloc(1, sizeof(*e));
    uint8_t *k = e ? malloc((size_t)kn) : NULL;
    if (k)
        memcpy(k, ik, (size_t)kn);
    free(ik);
    if (!k) {
        free(e);
        return PL_ENOMEM;
    }
    e->ikey = k;
    e->ikn = (size_t)kn;
    e->nsl = nsl;
    e->h = XXH3_128bits(k, e->ikn).low64;
    e->size = x->size;
    e->expire = expire;
    e->flash_id = x->id;
    e->gen = ++kv->gen;
    e->ns = ns_get(kv, e->ikey, e->nsl);
    ns_push(e); /* oldest first: the newest ends at the head */
    if (e->ns)
        e->ns->bytes += e->size;
    if (kv->n >= kv->nb)
        tab_grow(kv);
    e->hnext = kv->tab[e->h & (kv->nb - 1)];
    kv->tab[e->h & (kv->nb - 1)] = e;
    kv->n++;
    chain_push(&kv->flash, e, FLASH_L);
    kv->flash_used += e->size;
    kv->st_.flash_keys++;
    return 0;
}

static int kv_load(struct kv *kv)
{
    struct load_ctx c = {0};
    int64_t now = pl_now_ns() / 1000000;
    int rc = pl_dir_read(kv->st, kv->dir, PL_VIEW_LIVE, "", load_cb, &c);
    if (!rc && c.n && !c.l)
        rc = PL_ENOMEM;
    if (!rc && c.n)
        qsort(c.l, c.n, sizeof(*c.l), by_mtime); /* oldest first: the LRU's tail */
    for (size_t i = 0; !rc && i < c.n; i++) {
        if (c.l[i].name[0] == 't')
            rc = pl_elem_unlink(kv->st, kv->dir, c.l[i].name); /* a demotion cut short */
        else
            rc = load_one(kv, &c.l[i], now);
        if (rc == PL_ENOENT)
            rc = 0;
    }
    free(c.l);
    if (!rc)
        flash_enforce(kv);
    return rc;
}

int kv_open(struct pl_store *st, const struct kv_opts *o, struct kv **ret)
{
    struct kv *kv = calloc(1, sizeof(*kv));
    struct pl_attr a;
    *ret = NULL;
    if (!kv)
        return PL_ENOMEM;
    kv->st = st;
    kv->dram_max = o->dram_max ? o->dram_max : (uint64_t)1 << 30;
    kv->flash_max = o->flash_max ? o->flash_max : (uint64_t)16 << 30;
    kv->ns_max = o->ns_max;
    kv->compress = o->compress ? strdup(o->compress) : NULL;
    kv->nb = 64;
    kv->tab = o->compress && !kv->compress ? NULL : calloc(kv->nb, sizeof(struct kv_ent *));
    pthread_mutex_init(&kv->lock, NULL);
    pthread_cond_init(&kv->work, NULL);
    pthread_cond_init(&kv->progress, NULL);
    int rc = kv->tab ? pl_elem_mkdir(st, PL_ROOT_ID, KV_DIR, 0700, 0, 0, &a) : PL_ENOMEM;
    if (rc == PL_EEXIST)
        rc = pl_elem_lookup(st, PL_ROOT_ID, KV_DIR, PL_VIEW_LIVE, &a);
    if (!rc) {
        kv->dir = a.id;
        rc = kv_load(kv);
    }
    if (!rc && pthread_create(&kv->thr, NULL, bg_main, kv))
        rc = PL_ENOMEM;
    if (rc) {
        kv_close(kv);
        return rc;
    }
    kv->thr_started = 1;
    if (pl_metrics_source_add(kv_metrics, kv))
        pl_log(PL_LOG_WARN, "kv", "no room for the KV cache's metrics");
    *ret = kv;
    return 0;
}

void kv_close(struct kv *kv)
{
    if (!kv)
        return;
    pl_metrics_source_remove(kv_metrics, kv);
    if (kv->thr_started) {
        /* what only DRAM holds goes to flash, so a restart finds it */
        pthread_mutex_lock(&kv->lock);
        uint64_t keep = kv->dram_max;
        kv->dram_max = 0;
        dram_enforce(kv);
        kv->dram_max = keep;
        uint64_t pending = kv->pending;
        pthread_mutex_unlock(&kv->lock);
        if (pending)
            pl_log(PL_LOG_INFO, "kv", "writing %" PRIu64 " MiB that only DRAM held to flash "
                   "before stopping", pending >> 20);
        kv_settle(kv);
        pthread_mutex_lock(&kv->lock);
        kv->stopping = 1;
        pthread_cond_broadcast(&kv->work);
        pthread_cond_broadcast(&kv->progress);
        pthread_mutex_unlock(&kv->lock);
        pthread_join(kv->thr, NULL);
    }
    for (size_t i = 0; kv->tab && i < kv->nb; i++)
        for (struct kv_ent *e = kv->tab[i], *nx; e; e = nx) {
            nx = e->hnext;
            ent_free(e);
        }
    free(kv->tab);
    while (kv->nss) {
        struct kv_ns *n = kv->nss;
        kv->nss = n->next;
        free(n);
    }
    pthread_mutex_destroy(&kv->lock);
    pthread_cond_destroy(&kv->work);
    pthread_cond_destroy(&kv->progress);
    free(kv->compress);
    free(kv);
}

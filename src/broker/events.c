/* The element event publisher: moves the store's queued events (store.h,
 * "element events") onto "$events.BUCKET" and onto the topics S3 bucket
 * notifications name, then trims the queue.
 *
 * Exactly once: each destination topic has a cursor record, the sequence of
 * the last event it holds, written in the same transaction as the append
 * (pl_elem_write_svc). A crash between appends and the trim only means the
 * next round skips what the cursors say is there. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "broker/batch.h"
#include "broker/broker_int.h"

#define EV_ROUND_MAX 1000
#define EV_ROUND_BYTES (4u << 20)
#define EV_IDLE_NS (2 * 1000000000LL) /* a file nobody wrote for this long is done */
#define EV_DEST_MAX (1 + BROKER_NOTIFY_MAX)
/* Woken by a change, wait this long for more before a round: a round costs
 * an append and a trim, each durable, and a writer of many small files
 * (tar x through a mount) makes a change every few milliseconds. */
#define EV_LINGER_MS 20

struct evq {
    uint64_t seq;
    char skey[32]; /* its queue record */
    const char *bucket, *key, *json;
    size_t kn, jn;
    uint8_t *mem;
};

struct ev_round {
    struct evq q[EV_ROUND_MAX];
    int n;
    size_t bytes;
};

static int collect_cb(void *arg, const char *key, const void *val, size_t n)
{
    struct ev_round *r = arg;
    struct evq *e = &r->q[r->n];
    const char *hex = key + strlen(PL_EVENT_PREFIX);
    const char *p = val, *end = p + n;
    const char *k = memchr(p, 0, n);
    const char *j = k ? memchr(k + 1, 0, (size_t)(end - k - 1)) : NULL;
    snprintf(e->skey, sizeof(e->skey), "%s", key);
    e->mem = NULL;
    if (!j || strlen(hex) != 16) {
        /* not ours to read: trim it with the rest so it cannot block the queue */
        e->seq = 0;
        r->n++;
        return r->n == EV_ROUND_MAX;
    }
    if (!(e->mem = malloc(n)))
        return -1;
    memcpy(e->mem, val, n);
    e->seq = strtoull(hex, NULL, 16);
    e->bucket = (const char *)e->mem;
    e->key = e->bucket + (k - p) + 1;
    e->kn = (size_t)(j - k - 1);
    e->json = e->bucket + (j - p) + 1;
    e->jn = (size_t)(end - j - 1);
    r->n++;
    r->bytes += n;
    return r->n == EV_ROUND_MAX || r->bytes >= EV_ROUND_BYTES;
}

static void round_free(struct ev_round *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->q[i].mem);
    r->n = 0;
    r->bytes = 0;
}

static int cursor_get(struct broker *b, const char *topic, uint64_t *ret)
{
    char k[300], v[32];
    size_t n;
    snprintf(k, sizeof(k), BROKER_EV_CURSOR "%s", topic);
    int rc = pl_svc_get(b->st, k, v, sizeof(v) - 1, &n);
    *ret = 0;
    if (rc == PL_ENOENT)
        return 0;
    if (!rc && n < sizeof(v)) {
        v[n] = 0;
        *ret = strtoull(v, NULL, 10);
    }
    return rc;
}

/* Append the round's events in dest (those its cursor has not passed). */
static int deliver(struct broker *b, const char *dest, struct ev_round *r, const int *pick)
{
    struct batch_rec *recs = malloc(sizeof(*recs) * (size_t)r->n);
    struct pl_buf buf;
    uint64_t cur, last = 0;
    int n = 0;
    pl_buf_init(&buf);
    int rc = recs ? cursor_get(b, dest, &cur) : PL_ENOMEM;
    for (int i = 0; !rc && i < r->n; i++) {
        if (!pick[i] || r->q[i].seq <= cur)
            continue;
        recs[n++] = (struct batch_rec){r->q[i].key, r->q[i].json, r->q[i].kn, r->q[i].jn};
        last = r->q[i].seq;
    }
    if (!rc && n) {
        struct topic *t = topic_get(b, dest);
        if (t)
            topic_put(b, t);
        else if (!strncmp(dest, BROKER_EV_TOPIC, strlen(BROKER_EV_TOPIC)))
            rc = topic_create(b, dest, 1, NULL);
        else
            rc = PL_ENOTOPIC;
        if (rc == PL_EEXIST)
            rc = 0;
    }
    if (!rc && n)
        rc = batch_build(&buf, recs, n, pl_now_ns() / 1000000);
    if (!rc && n) {
        char k[300], v[32];
        int64_t base;
        snprintf(k, sizeof(k), BROKER_EV_CURSOR "%s", dest);
        snprintf(v, sizeof(v), "%" PRIu64, last);
        struct pl_svc_rec c = {k, v, strlen(v)};
        rc = broker_append_svc(b, dest, 0, (uint8_t *)buf.data, buf.len, &c, 1, &base);
    }
    pl_buf_release(&buf);
    free(recs);
    return rc;
}

struct dest_set {
    char names[EV_DEST_MAX * 4][BROKER_TOPIC_MAX + 1];
    int n;
};

static int dest_index(struct dest_set *d, const char *name)
{
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->names[i], name))
            return i;
    if (d->n == (int)(sizeof(d->names) / sizeof(d->names[0])))
        return -1;
    snprintf(d->names[d->n], sizeof(d->names[0]), "%s", name);
    return d->n++;
}

/* One round: publish what is queued now. *ret_n: events handled. */
static int ev_round_run(struct broker *b, struct ev_round *r, int *ret_n)
{
    struct dest_set *d = calloc(1, sizeof(*d));
    int *pick = NULL, rc = d ? pl_svc_scan(b->st, PL_EVENT_PREFIX, collect_cb, r) : PL_ENOMEM;
    *ret_n = r->n;
    if (rc || !r->n)
        goto out;
    int nd = (int)(sizeof(d->names) / sizeof(d->names[0])), stride = r->n;
    if (!(pick = calloc((size_t)stride * (size_t)nd, sizeof(*pick)))) {
        rc = PL_ENOMEM;
        goto out;
    }
    struct broker_notify *cfg = NULL;
    char cfg_bucket[64] = "";
    for (int i = 0; i < r->n; i++) {
        const struct evq *e = &r->q[i];
        char t[BROKER_TOPIC_MAX + 1];
        if (!e->seq)
            continue;
        snprintf(t, sizeof(t), BROKER_EV_TOPIC "%s", e->bucket);
        int di = dest_index(d, t), full = di < 0;
        if (di >= 0)
            pick[di * stride + i] = 1;
        if (strcmp(cfg_bucket, e->bucket)) {
            free(cfg);
            cfg = NULL;
            snprintf(cfg_bucket, sizeof(cfg_bucket), "%s", e->bucket);
            if (broker_notify_get(b, e->bucket, &cfg))
                cfg = NULL; /* unreadable: the $events topic still gets it */
        }
        for (int k = 0; cfg && k < cfg->n; k++) {
            if (!broker_notify_match(&cfg->rules[k], e->json, e->jn, e->key, e->kn))
                continue;
            di = dest_index(d, cfg->rules[k].topic);
            if (di >= 0)
                pick[di * stride + i] = 1;
            full |= di < 0;
        }
        if (full) {
            /* too many topics for one round: this event and the rest wait for the next */
            for (int k = i; k < r->n; k++)
                free(r->q[k].mem);
            r->n = i;
            break;
        }
    }
    free(cfg);
    for (int di = 0; di < d->n; di++) {
        int drc = deliver(b, d->names[di], r, pick + di * stride);
        if (drc == PL_ENOTOPIC) {
            pl_log(PL_LOG_WARN, "events", "topic %s of a bucket notification does not exist; its "
                   "events are dropped (create it with: plenum topic create %s)",
                   d->names[di], d->names[di]);
        } else if (drc) {
            rc = drc; /* keep the queue: the next round tries again */
            pl_log(PL_LOG_WARN, "events", "cannot publish to %s: %s", d->names[di],
                   pl_strerror(drc));
        }
    }
    if (!rc && r->n) {
        struct pl_svc_rec *del = malloc(sizeof(*del) * (size_t)r->n);
        if (!del) {
            rc = PL_ENOMEM;
            goto out;
        }
        for (int i = 0; i < r->n; i++)
            del[i] = (struct pl_svc_rec){r->q[i].skey, NULL, 0};
        rc = pl_svc_write(b->st, del, (size_t)r->n);
        free(del);
    }
out:
    free(pick);
    free(d);
    round_free(r);
    return rc;
}

static void ev_watch(void *arg, const void *origin, int kind, uint64_t id, const char *name)
{
    (void)origin;
    (void)id;
    (void)name;
    struct broker *b = arg;
    if (kind != PL_CHANGE_EVENT)
        return;
    pthread_mutex_lock(&b->lock);
    b->ev_kicks++;
    pthread_cond_signal(&b->ev_cond);
    pthread_mutex_unlock(&b->lock);
}

static void *ev_main(void *arg)
{
    struct broker *b = arg;
    struct ev_round *r = calloc(1, sizeof(*r));
    int64_t last_sweep = 0;
    int backoff_ms = 0;
    if (!r) {
        pl_log(PL_LOG_ERROR, "events", "no memory for the event publisher; events stay queued");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&b->lock);
        uint64_t seen = b->ev_kicks;
        int stop = b->stopping;
        pthread_mutex_unlock(&b->lock);
        if (stop)
            break;
        int n = 0;
        int rc = ev_round_run(b, r, &n);
        int64_t now = pl_now_ns();
        if (now - last_sweep > EV_IDLE_NS / 2) {
            last_sweep = now;
            int src = pl_events_sweep(b->st, EV_IDLE_NS);
            if (src)
                pl_log(PL_LOG_WARN, "events", "cannot queue the events of idle writes: %s",
                       pl_strerror(src));
        }
        backoff_ms = rc ? PL_MIN(backoff_ms * 2 + 100, 10000) : 0;
        if (!rc && n)
            continue; /* more may be queued */
        struct timespec ts = pl_deadline_ms(rc ? backoff_ms : EV_IDLE_NS / 2000000);
        pthread_mutex_lock(&b->lock);
        while (b->ev_kicks == seen && !b->stopping)
            if (pthread_cond_timedwait(&b->ev_cond, &b->lock, &ts))
                break;
        if (b->ev_kicks != seen) {
            ts = pl_deadline_ms(EV_LINGER_MS);
            while (!b->stopping && !pthread_cond_timedwait(&b->ev_cond, &b->lock, &ts))
                ;
        }
        pthread_mutex_unlock(&b->lock);
    }
    free(r);
    return NULL;
}

int events_start(struct broker *b)
{
    int rc = pl_store_watch(b->st, ev_watch, b);
    if (rc)
        return rc;
    if (pthread_create(&b->evpub, NULL, ev_main, b)) {
        pl_store_unwatch(b->st, ev_watch, b);
        return PL_ENOMEM;
    }
    b->ev_started = 1;
    return 0;
}

void events_stop(struct broker *b)
{
    if (!b->ev_started)
        return;
    pl_store_unwatch(b->st, ev_watch, b);
    pthread_mutex_lock(&b->lock);
    pthread_cond_broadcast(&b->ev_cond);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->evpub, NULL);
    b->ev_started = 0;
}

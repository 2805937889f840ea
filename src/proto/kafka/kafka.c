/* The Kafka head (kafka.h).
 *
 * A thread per connection (proto/tsrv): requests are handled one after the
 * other, so responses go out in order, and a Fetch that waits for data
 * (max_wait_ms) only holds its own connection. Versions are those of an
 * Apache Kafka 2.3-era broker, none flexible: an ApiVersions request at v3
 * or above gets error 35 with a v0 body (clients then retry at v0); any
 * other request at a version or key we do not serve ends the connection, as
 * Kafka does. One broker: node 1, leader of every partition. */
#include "proto/kafka/kafka.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "proto/kafka/kcodec.h"
#include "proto/tsrv/tsrv.h"

#define NODE_ID 1
#define REQ_MAX (100u << 20) /* a request larger than this ends the connection */
#define NAME_CAP 256

enum {
    K_PRODUCE = 0, K_FETCH = 1, K_LIST_OFFSETS = 2, K_METADATA = 3, K_OFFSET_COMMIT = 8,
    K_OFFSET_FETCH = 9, K_FIND_COORDINATOR = 10, K_JOIN_GROUP = 11, K_HEARTBEAT = 12,
    K_LEAVE_GROUP = 13, K_SYNC_GROUP = 14, K_DESCRIBE_GROUPS = 15, K_LIST_GROUPS = 16,
    K_API_VERSIONS = 18, K_CREATE_TOPICS = 19, K_DELETE_TOPICS = 20, K_DESCRIBE_CONFIGS = 32,
    K_DELETE_GROUPS = 42, K_SASL_HANDSHAKE = 17, K_SASL_AUTHENTICATE = 36,
};

/* Kafka error codes */
enum {
    E_NONE = 0, E_OFFSET_OUT_OF_RANGE = 1, E_CORRUPT_MESSAGE = 2, E_UNKNOWN_TOPIC = 3,
    E_MESSAGE_TOO_LARGE = 10, E_INVALID_TOPIC = 17, E_TOPIC_AUTHORIZATION_FAILED = 29, E_INVALID_REQUIRED_ACKS = 21,
    E_INVALID_GROUP_ID = 24, E_UNSUPPORTED_VERSION = 35, E_TOPIC_EXISTS = 36,
    E_INVALID_PARTITIONS = 37, E_INVALID_REPLICATION = 38, E_INVALID_CONFIG = 40,
    E_INVALID_REQUEST = 42, E_STORAGE = 56, E_UNSUPPORTED_COMPRESSION = 76, E_INVALID_RECORD = 87,
    E_UNSUPPORTED_SASL_MECHANISM = 33, E_ILLEGAL_SASL_STATE = 34, E_SASL_FAILED = 58,
    E_UNKNOWN = -1,
};

struct api {
    int16_t key, min, max;
};

static const struct api apis[] = {
    {K_PRODUCE, 0, 7},        {K_FETCH, 4, 11},        {K_LIST_OFFSETS, 0, 5},
    {K_METADATA, 0, 8},       {K_OFFSET_COMMIT, 0, 7}, {K_OFFSET_FETCH, 0, 5},
    {K_FIND_COORDINATOR, 0, 2}, {K_JOIN_GROUP, 0, 5},    {K_HEARTBEAT, 0, 3},
    {K_LEAVE_GROUP, 0, 2},    {K_SYNC_GROUP, 0, 3},    {K_DESCRIBE_GROUPS, 0, 3},
    {K_LIST_GROUPS, 0, 2},    {K_API_VERSIONS, 0, 2}, {K_CREATE_TOPICS, 0, 4},
    {K_DELETE_TOPICS, 0, 3},  {K_DESCRIBE_CONFIGS, 0, 2}, {K_DELETE_GROUPS, 0, 1},
    {K_SASL_HANDSHAKE, 0, 1}, {K_SASL_AUTHENTICATE, 0, 1},
};

struct kafka_server {
    struct broker *b;
    struct tsrv *srv;
    char host[128];
    int port;
    int sasl_required;
    uint64_t mem; /* bytes of requests being read or handled, all connections */
};

struct call {
    struct kafka_server *s;
    struct kconn *conn;
    const char *peer;
    struct kreq_hdr h;
    struct kr *r;
    struct kw *w;
    int v; /* api version */
};

static int16_t kerr(int rc)
{
    switch (rc) {
    case 0:
        return E_NONE;
    case PL_ENOENT:
        return E_UNKNOWN_TOPIC;
    case PL_ERANGE:
        return E_OFFSET_OUT_OF_RANGE;
    case PL_ECORRUPT:
        return E_CORRUPT_MESSAGE;
    case PL_EPROTO:
        return E_INVALID_RECORD;
    case PL_EINVAL:
        return E_UNSUPPORTED_COMPRESSION; /* magic or codec we do not take */
    case PL_EFBIG:
        return E_MESSAGE_TOO_LARGE;
    case PL_ENOSPC:
    case PL_EIO:
        return E_STORAGE;
    default:
        return E_UNKNOWN;
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- ApiVersions ---- */
static void api_versions_body(struct kw *w, int16_t err, int v)
{
    kw_i16(w, err);
    kw_i32(w, (int32_t)PL_ARRAY_LEN(apis));
    for (size_t i = 0; i < PL_ARRAY_LEN(apis); i++) {
        kw_i16(w, apis[i].key);
        kw_i16(w, apis[i].min);
        kw_i16(w, apis[i].max);
    }
    if (v >= 1)
        kw_i32(w, 0); /* throttle */
}

static void h_api_versions(struct call *c)
{
    api_versions_body(c->w, E_NONE, c->v);
}

/* ---- Metadata ---- */
struct topic_list {
    char (*names)[NAME_CAP];
    int n, cap;
};

static int list_cb(void *arg, const struct broker_topic *t)
{
    struct topic_list *l = arg;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char(*nn)[NAME_CAP] = realloc(l->names, (size_t)cap * NAME_CAP);
        if (!nn)
            return 1;
        l->names = nn;
        l->cap = cap;
    }
    snprintf(l->names[l->n++], NAME_CAP, "%s", t->name);
    return 0;
}

static void put_topic_meta(struct call *c, const char *name, int16_t err, int parts)
{
    struct kw *w = c->w;
    kw_i16(w, err);
    kw_str(w, name);
    if (c->v >= 1)
        kw_i8(w, 0); /* is_internal */
    kw_i32(w, parts);
    for (int p = 0; p < parts; p++) {
        kw_i16(w, E_NONE);
        kw_i32(w, p);
        kw_i32(w, NODE_ID); /* leader */
        if (c->v >= 7)
            kw_i32(w, 0); /* leader epoch */
        kw_i32(w, 1);     /* replicas */
        kw_i32(w, NODE_ID);
        kw_i32(w, 1); /* isr */
        kw_i32(w, NODE_ID);
        if (c->v >= 5)
            kw_i32(w, 0); /* offline replicas */
    }
    if (c->v >= 8)
        kw_i32(w, INT32_MIN); /* authorized operations: not asked */
}

static void put_brokers(struct call *c)
{
    kw_i32(c->w, 1);
    kw_i32(c->w, NODE_ID);
    kw_str(c->w, c->s->host);
    kw_i32(c->w, c->s->port);
    if (c->v >= 1)
        kw_str(c->w, NULL); /* rack */
}

static void h_metadata(struct call *c)
{
    struct kr *r = c->r;
    struct topic_list want = {0};
    int32_t n = kr_array(r, 100000, 2);
    int all = n < 0 || (c->v == 0 && n == 0);
    for (int32_t i = 0; i < n && !r->err; i++) {
        if (list_cb(&want, &(struct broker_topic){0}))
            break;
        kr_str(r, want.names[want.n - 1], NAME_CAP, NULL);
    }
    int auto_create = 1;
    if (c->v >= 4)
        auto_create = kr_i8(r) != 0;
    if (c->v >= 8) {
        kr_i8(r);
        kr_i8(r);
    }
    if (r->err) {
        free(want.names);
        return;
    }
    if (all && broker_topic_list(c->s->b, list_cb, &want)) {
        free(want.names);
        r->err = 1;
        return;
    }
    struct kw *w = c->w;
    if (c->v >= 3)
        kw_i32(w, 0);
    put_brokers(c);
    if (c->v >= 2)
        kw_str(w, "plenum");
    if (c->v >= 1)
        kw_i32(w, NODE_ID); /* controller */
    kw_i32(w, want.n);
    for (int i = 0; i < want.n; i++) {
        struct broker_topic t;
        const char *name = want.names[i];
        int rc = broker_topic_get(c->s->b, name, &t);
        if (rc == PL_ENOENT && !all && auto_create && broker_auto_create(c->s->b) &&
            broker_topic_name_valid(name) == 0) {
            rc = broker_topic_create(c->s->b, name, 1, NULL);
            if (rc == PL_EEXIST || rc == 0)
                rc = broker_topic_get(c->s->b, name, &t);
        }
        if (rc)
            put_topic_meta(c, name,
                           broker_topic_name_valid(name) && !broker_topic_is_system(name)
                               ? E_INVALID_TOPIC
                               : E_UNKNOWN_TOPIC,
                           0);
        else
            put_topic_meta(c, name, E_NONE, t.partitions);
    }
    if (c->v >= 8)
        kw_i32(w, INT32_MIN);
    free(want.names);
}

/* ---- Produce ----
 * Requests a client pipelines (librdkafka keeps many in flight) are read
 * together when they are already there, and their records for one partition
 * go into one durable write: one sync for many requests. That runs each
 * Produce twice over its bytes: once collecting (nothing answered), then,
 * after the writes, once answering from the results in the same order. */
enum { PB_OFF, PB_COLLECT, PB_RESPOND };

struct pitem {
    char topic[NAME_CAP];
    int32_t part;
    uint8_t *recs;
    size_t len;
    int rc; /* 1: invalid acks */
    int64_t base;
};

struct pbatch {
    int phase;
    struct pitem *items;
    int n, cap, next;
};

static int pb_push(struct pbatch *pb, const char *topic, int32_t part, uint8_t *recs, size_t len,
                   int rc)
{
    if (pb->n == pb->cap) {
        int cap = pb->cap ? pb->cap * 2 : 64;
        struct pitem *ni = realloc(pb->items, (size_t)cap * sizeof(*ni));
        if (!ni)
            return PL_ENOMEM;
        pb->items = ni;
        pb->cap = cap;
    }
    struct pitem *it = &pb->items[pb->n++];
    snprintf(it->topic, sizeof(it->topic), "%s", topic);
    it->part = part;
    it->recs = recs;
    it->len = len;
    it->rc = rc;
    it->base = -1;
    return 0;
}

/* The collected items, partition by partition, each partition's in order. */
static void pb_exec(struct kafka_server *s, struct pbatch *pb)
{
    uint8_t **recs = malloc((size_t)PL_MAX(pb->n, 1) * sizeof(*recs));
    size_t *lens = malloc((size_t)PL_MAX(pb->n, 1) * sizeof(*lens));
    int *rcs = malloc((size_t)PL_MAX(pb->n, 1) * sizeof(*rcs)), *idx = malloc((size_t)PL_MAX(pb->n, 1) * sizeof(*idx));
    int64_t *bases = malloc((size_t)PL_MAX(pb->n, 1) * sizeof(*bases));
    char *done = calloc((size_t)PL_MAX(pb->n, 1), 1);
    for (int i = 0; i < pb->n; i++) {
        struct pitem *it = &pb->items[i];
        if (it->rc || (done && done[i]))
            continue;
        if (!recs || !lens || !rcs || !idx || !bases || !done) {
            it->rc = PL_ENOMEM;
            continue;
        }
        int m = 0;
        for (int j = i; j < pb->n; j++)
            if (!pb->items[j].rc && !done[j] && pb->items[j].part == it->part &&
                !strcmp(pb->items[j].topic, it->topic)) {
                idx[m] = j;
                recs[m] = pb->items[j].recs;
                lens[m++] = pb->items[j].len;
                done[j] = 1;
            }
        broker_produce_many(s->b, it->topic, it->part, recs, lens, m, rcs, bases);
        if (rcs[0] == PL_ENOENT && broker_auto_create(s->b) &&
            broker_topic_name_valid(it->topic) == 0 && it->part == 0) {
            int rc = broker_topic_create(s->b, it->topic, 1, NULL);
            if (rc == 0 || rc == PL_EEXIST)
                broker_produce_many(s->b, it->topic, it->part, recs, lens, m, rcs, bases);
        }
        for (int k = 0; k < m; k++) {
            pb->items[idx[k]].rc = rcs[k];
            pb->items[idx[k]].base = bases[k];
        }
    }
    free(recs);
    free(lens);
    free(rcs);
    free(idx);
    free(bases);
    free(done);
}

static void h_produce(struct call *c, int *no_reply)
{
    struct pbatch *pb = c->conn->pb && c->conn->pb->phase != PB_OFF ? c->conn->pb : NULL;
    struct kr *r = c->r;
    struct kw *w = c->w;
    char txn[NAME_CAP], topic[NAME_CAP];
    if (c->v >= 3)
        kr_str(r, txn, sizeof(txn), NULL);
    int16_t acks = kr_i16(r);
    kr_i32(r); /* timeout: every append is durable before we answer */
    int32_t nt = kr_array(r, 10000, 6);
    if (r->err)
        return;
    *no_reply = acks == 0;
    kw_i32(w, nt < 0 ? 0 : nt);
    for (int32_t i = 0; i < nt && !r->err; i++) {
        kr_str(r, topic, sizeof(topic), NULL);
        int32_t np = kr_array(r, BROKER_PARTS_MAX, 8);
        kw_str(w, topic);
        kw_i32(w, np < 0 ? 0 : np);
        for (int32_t j = 0; j < np && !r->err; j++) {
            int32_t part = kr_i32(r), len;
            const uint8_t *recs = kr_bytes(r, &len);
            if (r->err)
                break;
            int64_t base = -1;
            int rc;
            if (acks != 0 && acks != 1 && acks != -1)
                rc = 1;
            else if (broker_topic_is_system(topic))
                rc = 2; /* only the broker writes its event topics */
            else if (!recs || len == 0)
                rc = PL_EPROTO;
            else
                rc = 0;
            if (pb && pb->phase == PB_COLLECT) {
                if (pb_push(pb, topic, part, (uint8_t *)recs, (size_t)len, rc))
                    r->err = 1;
                continue;
            }
            if (pb) {
                if (pb->next >= pb->n) {
                    r->err = 1; /* cannot happen: the same bytes parse the same way */
                    break;
                }
                rc = pb->items[pb->next].rc;
                base = pb->items[pb->next++].base;
            } else if (!rc) {
                rc = broker_produce(c->s->b, topic, part, (uint8_t *)recs, (size_t)len, &base);
            }
            if (!pb && rc == PL_ENOENT && broker_auto_create(c->s->b) &&
                broker_topic_name_valid(topic) == 0 && part == 0) {
                rc = broker_topic_create(c->s->b, topic, 1, NULL);
                if (rc == 0 || rc == PL_EEXIST)
                    rc = broker_produce(c->s->b, topic, part, (uint8_t *)recs, (size_t)len,
                                        &base);
            }
            if (rc && rc != 1 && rc != 2 && rc != PL_ENOENT)
                pl_log(PL_LOG_INFO, "kafka", "produce to %s/%d from %s refused: %s", topic, part,
                       c->h.client_id, pl_strerror(rc));
            kw_i32(w, part);
            kw_i16(w, rc == 1   ? E_INVALID_REQUIRED_ACKS
                      : rc == 2 ? E_TOPIC_AUTHORIZATION_FAILED
                                : kerr(rc));
            kw_i64(w, rc ? -1 : base);
            if (c->v >= 2)
                kw_i64(w, -1); /* log append time: CreateTime topics */
            if (c->v >= 5) {
                struct broker_part_info pi = {0};
                kw_i64(w, broker_part_info(c->s->b, topic, part, &pi) ? -1 : pi.log_start);
            }
        }
    }
    if (c->v >= 1)
        kw_i32(w, 0);
}

/* ---- Fetch ---- */
struct fpart {
    char *topic;
    int32_t part;
    int64_t offset;
    int32_t max;
    /* result */
    int16_t err;
    struct broker_part_info info;
    uint8_t *data;
    size_t n;
};

static void h_fetch(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char topic[NAME_CAP];
    kr_i32(r); /* replica id */
    int32_t max_wait = kr_i32(r), min_bytes = kr_i32(r), max_bytes = kr_i32(r);
    kr_i8(r); /* isolation level: no transactions here, both are the same */
    if (c->v >= 7) {
        kr_i32(r); /* session id: we keep no fetch sessions (0 back) */
        kr_i32(r);
    }
    int32_t nt = kr_array(r, 10000, 6);
    struct fpart *fp = NULL;
    char **topics = NULL;
    int nfp = 0, cap = 0;
    if (nt > 0)
        topics = calloc((size_t)nt, sizeof(*topics));
    for (int32_t i = 0; i < nt && !r->err && topics; i++) {
        kr_str(r, topic, sizeof(topic), NULL);
        topics[i] = strdup(topic);
        int32_t np = kr_array(r, BROKER_PARTS_MAX, 16);
        for (int32_t j = 0; j < np && !r->err; j++) {
            if (nfp == cap) {
                cap = cap ? cap * 2 : 16;
                struct fpart *n2 = realloc(fp, (size_t)cap * sizeof(*fp));
                if (!n2) {
                    r->err = 1;
                    break;
                }
                fp = n2;
            }
            struct fpart *f = &fp[nfp++];
            memset(f, 0, sizeof(*f));
            f->topic = topics[i];
            f->part = kr_i32(r);
            if (c->v >= 9)
                kr_i32(r); /* current leader epoch */
            f->offset = kr_i64(r);
            if (c->v >= 5)
                kr_i64(r); /* log start offset (a follower's) */
            f->max = kr_i32(r);
        }
    }
    if (c->v >= 7) {
        int32_t nf = kr_array(r, 10000, 6); /* forgotten topics */
        for (int32_t i = 0; i < nf && !r->err; i++) {
            kr_str(r, topic, sizeof(topic), NULL);
            int32_t np = kr_array(r, BROKER_PARTS_MAX, 4);
            for (int32_t j = 0; j < np; j++)
                kr_i32(r);
        }
    }
    if (c->v >= 11)
        kr_str(r, topic, sizeof(topic), NULL); /* rack */
    if (!r->err && nt > 0 && !topics)
        r->err = 1;
    if (r->err)
        goto out;
    /* read; when nothing is there yet, wait for appends up to max_wait */
    int64_t deadline = now_ms() + PL_MAX(max_wait, 0);
    for (;;) {
        uint64_t seen = broker_appends(c->s->b);
        size_t total = 0, budget = max_bytes > 0 ? (size_t)max_bytes : 0;
        for (int i = 0; i < nfp; i++) {
            struct fpart *f = &fp[i];
            free(f->data);
            f->data = NULL;
            f->n = 0;
            size_t lim = PL_MIN((size_t)PL_MAX(f->max, 0), budget > total ? budget - total : 0);
            int rc = broker_fetch(c->s->b, f->topic, f->part, f->offset,
                                  lim ? lim : (total ? 0 : 1), &f->data, &f->n, &f->info);
            if (!rc && lim == 0 && total) {
                free(f->data); /* over the response budget: next time */
                f->data = NULL;
                f->n = 0;
            }
            f->err = kerr(rc);
            if (rc == PL_ENOENT)
                memset(&f->info, 0xff, sizeof(f->info)); /* -1s */
            total += f->n;
        }
        int64_t left = deadline - now_ms();
        /* enough (min_bytes), or the wait is over, or an error to report */
        int any_err = 0;
        for (int i = 0; i < nfp; i++)
            any_err |= fp[i].err != E_NONE;
        if ((int64_t)total >= PL_MAX(min_bytes, 1) || left <= 0 || any_err)
            break;
        broker_wait(c->s->b, seen, (int)PL_MIN(left, 500));
    }
    kw_i32(w, 0); /* throttle */
    if (c->v >= 7) {
        kw_i16(w, E_NONE);
        kw_i32(w, 0); /* session id */
    }
    /* topics in request order; partitions grouped under them */
    size_t tmark = kw_mark(w);
    int32_t ntopics = 0;
    for (int i = 0; i < nfp;) {
        const char *t = fp[i].topic;
        int j = i;
        while (j < nfp && fp[j].topic == t)
            j++;
        kw_str(w, t);
        kw_i32(w, j - i);
        for (int k = i; k < j; k++) {
            struct fpart *f = &fp[k];
            kw_i32(w, f->part);
            kw_i16(w, f->err);
            kw_i64(w, f->err == E_UNKNOWN_TOPIC ? -1 : f->info.next);
            kw_i64(w, f->err == E_UNKNOWN_TOPIC ? -1 : f->info.next); /* last stable */
            if (c->v >= 5)
                kw_i64(w, f->err == E_UNKNOWN_TOPIC ? -1 : f->info.log_start);
            kw_i32(w, 0); /* aborted transactions: none */
            if (c->v >= 11)
                kw_i32(w, -1); /* preferred read replica */
            kw_bytes(w, f->data ? f->data : (const uint8_t *)"", (int32_t)f->n);
        }
        ntopics++;
        i = j;
    }
    kw_put_i32_at(w, tmark, ntopics);
out:
    for (int i = 0; i < nfp; i++)
        free(fp[i].data);
    free(fp);
    for (int32_t i = 0; topics && i < nt; i++)
        free(topics[i]);
    free(topics);
}

/* ---- ListOffsets ---- */
static void h_list_offsets(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char topic[NAME_CAP];
    kr_i32(r); /* replica */
    if (c->v >= 2)
        kr_i8(r); /* isolation */
    int32_t nt = kr_array(r, 10000, 6);
    if (r->err)
        return;
    if (c->v >= 2)
        kw_i32(w, 0);
    kw_i32(w, nt < 0 ? 0 : nt);
    for (int32_t i = 0; i < nt && !r->err; i++) {
        kr_str(r, topic, sizeof(topic), NULL);
        int32_t np = kr_array(r, BROKER_PARTS_MAX, 12);
        kw_str(w, topic);
        kw_i32(w, np < 0 ? 0 : np);
        for (int32_t j = 0; j < np && !r->err; j++) {
            int32_t part = kr_i32(r);
            if (c->v >= 4)
                kr_i32(r); /* leader epoch */
            int64_t ts = kr_i64(r), off = -1, found_ts = -1;
            if (c->v == 0)
                kr_i32(r); /* max offsets */
            struct broker_part_info pi;
            int rc = broker_part_info(c->s->b, topic, part, &pi);
            if (!rc && ts == -1)
                off = pi.next;
            else if (!rc && ts == -2)
                off = pi.log_start;
            else if (!rc)
                rc = broker_offset_for_time(c->s->b, topic, part, ts, &off, &found_ts);
            kw_i32(w, part);
            kw_i16(w, kerr(rc));
            if (c->v == 0) {
                kw_i32(w, rc || off < 0 ? 0 : 1);
                if (!rc && off >= 0)
                    kw_i64(w, off);
            } else {
                kw_i64(w, found_ts);
                kw_i64(w, rc ? -1 : off);
                if (c->v >= 4)
                    kw_i32(w, 0);
            }
        }
    }
}

/* ---- FindCoordinator ---- */
static void h_find_coordinator(struct call *c)
{
    char key[NAME_CAP];
    kr_str(c->r, key, sizeof(key), NULL);
    if (c->v >= 1)
        kr_i8(c->r);
    if (c->r->err)
        return;
    if (c->v >= 1)
        kw_i32(c->w, 0);
    kw_i16(c->w, E_NONE);
    if (c->v >= 1)
        kw_str(c->w, NULL);
    kw_i32(c->w, NODE_ID);
    kw_str(c->w, c->s->host);
    kw_i32(c->w, c->s->port);
}

/* ---- OffsetCommit / OffsetFetch ---- */
static void h_offset_commit(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char group[NAME_CAP], member[NAME_CAP], topic[NAME_CAP], inst[NAME_CAP];
    char *md = malloc(4097);
    if (!md) {
        r->err = 1;
        return;
    }
    kr_str(r, group, sizeof(group), NULL);
    if (c->v >= 1) {
        kr_i32(r); /* generation: group membership is not checked by this broker */
        kr_str(r, member, sizeof(member), NULL);
    }
    if (c->v >= 7)
        kr_str(r, inst, sizeof(inst), NULL);
    if (c->v >= 2 && c->v <= 4)
        kr_i64(r); /* retention */
    int32_t nt = kr_array(r, 10000, 6);
    if (r->err)
        goto out;
    if (c->v >= 3)
        kw_i32(w, 0);
    kw_i32(w, nt < 0 ? 0 : nt);
    for (int32_t i = 0; i < nt && !r->err; i++) {
        kr_str(r, topic, sizeof(topic), NULL);
        int32_t np = kr_array(r, BROKER_PARTS_MAX, 14);
        kw_str(w, topic);
        kw_i32(w, np < 0 ? 0 : np);
        for (int32_t j = 0; j < np && !r->err; j++) {
            int32_t part = kr_i32(r);
            int64_t off = kr_i64(r);
            if (c->v >= 6)
                kr_i32(r); /* leader epoch */
            if (c->v == 1)
                kr_i64(r); /* commit timestamp */
            int is_null;
            kr_str(r, md, 4097, &is_null);
            if (r->err)
                break;
            struct broker_topic t;
            int rc = broker_topic_get(c->s->b, topic, &t);
            if (!rc && (part < 0 || part >= t.partitions))
                rc = PL_ENOENT;
            if (!rc)
                rc = broker_commit(c->s->b, group, topic, part, off, md);
            kw_i32(w, part);
            kw_i16(w, rc == PL_EINVAL ? E_INVALID_GROUP_ID : kerr(rc));
        }
    }
out:
    free(md);
}

struct committed_ctx {
    struct call *c;
    const char *group;
};

static void put_committed(struct call *c, const char *group, const char *topic, int32_t part)
{
    char md[4097];
    int64_t off = -1;
    int rc = broker_committed(c->s->b, group, topic, part, &off, md, sizeof(md));
    kw_i32(c->w, part);
    kw_i64(c->w, rc ? -1 : off);
    if (c->v >= 5)
        kw_i32(c->w, -1); /* leader epoch */
    kw_str(c->w, rc ? "" : md);
    kw_i16(c->w, rc == 0 || rc == PL_ENOENT ? E_NONE : kerr(rc));
}

static int all_topics_cb(void *arg, const struct broker_topic *t)
{
    struct committed_ctx *x = arg;
    struct call *c = x->c;
    size_t mark = c->w->n;
    int any = 0;
    kw_str(c->w, t->name);
    size_t cnt = kw_mark(c->w);
    int32_t n = 0;
    for (int p = 0; p < t->partitions; p++) {
        int64_t off;
        if (broker_committed(c->s->b, x->group, t->name, p, &off, NULL, 0) == 0) {
            put_committed(c, x->group, t->name, p);
            n++;
            any = 1;
        }
    }
    kw_put_i32_at(c->w, cnt, n);
    if (!any)
        c->w->n = mark; /* only topics with commits */
    return 0;
}

static void h_offset_fetch(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char group[NAME_CAP], topic[NAME_CAP];
    kr_str(r, group, sizeof(group), NULL);
    int32_t nt = kr_array(r, 10000, 6);
    if (r->err)
        return;
    if (c->v >= 3)
        kw_i32(w, 0);
    if (nt < 0) {
        /* every topic with commits */
        struct committed_ctx x = {c, group};
        size_t mark = kw_mark(w), before;
        int32_t count = 0;
        struct topic_list l = {0};
        if (broker_topic_list(c->s->b, list_cb, &l) == 0)
            for (int i = 0; i < l.n; i++) {
                struct broker_topic t;
                before = w->n;
                if (broker_topic_get(c->s->b, l.names[i], &t) == 0) {
                    all_topics_cb(&x, &t);
                    count += w->n != before;
                }
            }
        free(l.names);
        kw_put_i32_at(w, mark, count);
    } else {
        kw_i32(w, nt);
        for (int32_t i = 0; i < nt && !r->err; i++) {
            kr_str(r, topic, sizeof(topic), NULL);
            int32_t np = kr_array(r, BROKER_PARTS_MAX, 4);
            kw_str(w, topic);
            kw_i32(w, np < 0 ? 0 : np);
            for (int32_t j = 0; j < np && !r->err; j++)
                put_committed(c, group, topic, kr_i32(r));
        }
    }
    if (c->v >= 2)
        kw_i16(w, E_NONE);
}

/* ---- CreateTopics / DeleteTopics ---- */
static void h_create_topics(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char name[NAME_CAP], ck[NAME_CAP], cv[NAME_CAP];
    int32_t nt = kr_array(r, 10000, 12);
    if (r->err)
        return;
    /* the whole request is read before anything is created: validate_only
     * comes after the topics */
    struct ct {
        char name[NAME_CAP];
        int32_t parts;
        int16_t repl;
        int32_t nassign;
        char **configs;
        int16_t err;
    } *ts = calloc(nt > 0 ? (size_t)nt : 1, sizeof(*ts));
    if (!ts) {
        r->err = 1;
        return;
    }
    for (int32_t i = 0; i < nt && !r->err; i++) {
        struct ct *t = &ts[i];
        kr_str(r, t->name, sizeof(t->name), NULL);
        t->parts = kr_i32(r);
        t->repl = kr_i16(r);
        int32_t na = kr_array(r, BROKER_PARTS_MAX, 8);
        t->nassign = na;
        for (int32_t j = 0; j < na && !r->err; j++) {
            kr_i32(r);
            int32_t nb = kr_array(r, 1000, 4);
            for (int32_t k = 0; k < nb; k++)
                kr_i32(r);
        }
        int32_t nc = kr_array(r, 1000, 4);
        t->configs = calloc((size_t)PL_MAX(nc, 0) * 2 + 2, sizeof(char *));
        if (!t->configs) {
            r->err = 1;
            break;
        }
        for (int32_t j = 0; j < nc && !r->err; j++) {
            int is_null;
            kr_str(r, ck, sizeof(ck), NULL);
            kr_str(r, cv, sizeof(cv), &is_null);
            t->configs[2 * j] = strdup(ck);
            t->configs[2 * j + 1] = is_null ? NULL : strdup(cv);
        }
        (void)name;
    }
    kr_i32(r); /* timeout */
    int validate_only = c->v >= 1 ? kr_i8(r) : 0;
    if (!r->err) {
        if (c->v >= 2)
            kw_i32(w, 0);
        kw_i32(w, nt < 0 ? 0 : nt);
        for (int32_t i = 0; i < nt; i++) {
            struct ct *t = &ts[i];
            int16_t err = E_NONE;
            const char *msg = NULL;
            struct broker_topic have;
            if (broker_topic_name_valid(t->name)) {
                err = E_INVALID_TOPIC;
                msg = "topic names are 1-249 of [a-zA-Z0-9._-], not . or ..";
            } else if (t->nassign > 0) {
                err = E_INVALID_REQUEST;
                msg = "replica assignments are not supported: one broker";
            } else if (t->repl != -1 && t->repl != 1) {
                err = E_INVALID_REPLICATION;
                msg = "replication factor must be 1 (or -1): one broker; data is protected "
                      "by erasure coding";
            } else if (t->parts == -1 ? 0 : t->parts < 1 || t->parts > BROKER_PARTS_MAX) {
                err = E_INVALID_PARTITIONS;
                msg = "partitions must be 1..1024";
            } else if (broker_topic_get(c->s->b, t->name, &have) == 0) {
                err = E_TOPIC_EXISTS;
                msg = "topic already exists";
            } else if (!validate_only) {
                int rc = broker_topic_create(c->s->b, t->name, t->parts == -1 ? 1 : t->parts,
                                             (const char *const *)t->configs);
                if (rc == PL_EEXIST)
                    err = E_TOPIC_EXISTS;
                else if (rc == PL_EINVAL) {
                    err = E_INVALID_CONFIG;
                    msg = "supported configs: retention.ms, retention.bytes, segment.bytes, "
                          "cleanup.policy=delete";
                } else if (rc)
                    err = kerr(rc);
            }
            kw_str(w, t->name);
            kw_i16(w, err);
            if (c->v >= 1)
                kw_str(w, msg);
        }
    }
    for (int32_t i = 0; i < nt; i++) {
        for (char **p = ts[i].configs; p && (p[0] || p[1]); p += 2) {
            free(p[0]);
            free(p[1]);
        }
        free(ts[i].configs);
    }
    free(ts);
}

static void h_delete_topics(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char name[NAME_CAP];
    int32_t nt = kr_array(r, 10000, 2);
    size_t at = r->at;
    for (int32_t i = 0; i < nt && !r->err; i++)
        kr_str(r, name, sizeof(name), NULL);
    kr_i32(r); /* timeout */
    if (r->err)
        return;
    r->at = at;
    if (c->v >= 1)
        kw_i32(w, 0);
    kw_i32(w, nt < 0 ? 0 : nt);
    for (int32_t i = 0; i < nt; i++) {
        kr_str(r, name, sizeof(name), NULL);
        int rc = broker_topic_delete(c->s->b, name);
        kw_str(w, name);
        kw_i16(w, kerr(rc));
    }
}

/* ---- consumer groups ---- */
static void h_join_group(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char group[NAME_CAP], member[NAME_CAP], inst[NAME_CAP], ptype[NAME_CAP];
    struct broker_proto protos[BROKER_PROTO_MAX];
    kr_str(r, group, sizeof(group), NULL);
    int32_t session = kr_i32(r), rebalance = session;
    if (c->v >= 1)
        rebalance = kr_i32(r);
    kr_str(r, member, sizeof(member), NULL);
    if (c->v >= 5)
        kr_str(r, inst, sizeof(inst), NULL); /* static membership: treated as dynamic */
    kr_str(r, ptype, sizeof(ptype), NULL);
    int32_t np = kr_array(r, BROKER_PROTO_MAX, 6);
    for (int32_t i = 0; i < np && !r->err; i++) {
        kr_str(r, protos[i].name, sizeof(protos[i].name), NULL);
        protos[i].meta = kr_bytes(r, &protos[i].len);
    }
    if (r->err)
        return;
    struct broker_join_req rq = {group, member, c->h.client_id, c->peer, ptype,
                                 session, rebalance, protos, PL_MAX(np, 0)};
    struct broker_join_res res;
    broker_join(c->s->b, &rq, &res);
    if (c->v >= 2)
        kw_i32(w, 0);
    kw_i16(w, res.err);
    kw_i32(w, res.generation);
    kw_str(w, res.protocol);
    kw_str(w, res.leader);
    kw_str(w, res.member_id);
    kw_i32(w, res.nmembers);
    for (int i = 0; i < res.nmembers; i++) {
        kw_str(w, res.members[i].id);
        if (c->v >= 5)
            kw_str(w, NULL);
        kw_bytes(w, res.members[i].meta ? res.members[i].meta : (const uint8_t *)"",
                 res.members[i].len);
    }
    broker_members_free(res.members, res.nmembers);
}

static void h_sync_group(struct call *c)
{
    struct kr *r = c->r;
    struct kw *w = c->w;
    char group[NAME_CAP], member[NAME_CAP], inst[NAME_CAP];
    kr_str(r, group, sizeof(group), NULL);
    int32_t gen = kr_i32(r);
    kr_str(r, member, sizeof(member), NULL);
    if (c->v >= 3)
        kr_str(r, inst, sizeof(inst), NULL);
    int32_t na = kr_array(r, 10000, 6);
    struct broker_assignment *as = calloc((size_t)PL_MAX(na, 1), sizeof(*as));
    if (!as) {
        r->err = 1;
        return;
    }
    for (int32_t i = 0; i < na && !r->err; i++) {
        kr_str(r, as[i].member, sizeof(as[i].member), NULL);
        as[i].data = kr_bytes(r, &as[i].len);
    }
    if (!r->err) {
        uint8_t *mine;
        int32_t len;
        int16_t err = broker_sync(c->s->b, group, gen, member, as, PL_MAX(na, 0), &mine, &len);
        if (c->v >= 1)
            kw_i32(w, 0);
        kw_i16(w, err);
        kw_bytes(w, mine ? mine : (const uint8_t *)"", mine ? len : 0);
        free(mine);
    }
    free(as);
}

static void h_heartbeat(struct call *c)
{
    char group[NAME_CAP], member[NAME_CAP], inst[NAME_CAP];
    kr_str(c->r, group, sizeof(group), NULL);
    int32_t gen = kr_i32(c->r);
    kr_str(c->r, member, sizeof(member), NULL);
    if (c->v >= 3)
        kr_str(c->r, inst, sizeof(inst), NULL);
    if (c->r->err)
        return;
    if (c->v >= 1)
        kw_i32(c->w, 0);
    kw_i16(c->w, broker_heartbeat(c->s->b, group, gen, member));
}

static void h_leave_group(struct call *c)
{
    char group[NAME_CAP], member[NAME_CAP];
    kr_str(c->r, group, sizeof(group), NULL);
    kr_str(c->r, member, sizeof(member), NULL);
    if (c->r->err)
        return;
    if (c->v >= 1)
        kw_i32(c->w, 0);
    kw_i16(c->w, broker_leave(c->s->b, group, member));
}

struct glist {
    struct call *c;
    int32_t n;
    int describe;
};

static int glist_cb(void *arg, const struct broker_group_info *g)
{
    struct glist *l = arg;
    struct kw *w = l->c->w;
    l->n++;
    if (!l->describe) {
        kw_str(w, g->id);
        kw_str(w, g->protocol_type);
        return 0;
    }
    kw_i16(w, E_NONE);
    kw_str(w, g->id);
    kw_str(w, g->state);
    kw_str(w, g->protocol_type);
    kw_str(w, g->protocol);
    kw_i32(w, g->nmembers);
    for (int i = 0; i < g->nmembers; i++) {
        const struct broker_member *m = &g->members[i];
        kw_str(w, m->id);
        kw_str(w, m->client_id);
        kw_str(w, m->client_host);
        kw_bytes(w, m->meta ? m->meta : (const uint8_t *)"", m->len);
        kw_bytes(w, m->assign ? m->assign : (const uint8_t *)"", m->alen);
    }
    if (l->c->v >= 3)
        kw_i32(w, INT32_MIN);
    return 0;
}

static void h_list_groups(struct call *c)
{
    if (c->v >= 1)
        kw_i32(c->w, 0);
    kw_i16(c->w, E_NONE);
    size_t mark = kw_mark(c->w);
    struct glist l = {c, 0, 0};
    if (broker_group_list(c->s->b, glist_cb, &l))
        c->w->err = 1;
    kw_put_i32_at(c->w, mark, l.n);
}

static void h_describe_groups(struct call *c)
{
    struct kr *r = c->r;
    char group[NAME_CAP];
    int32_t n = kr_array(r, 10000, 2);
    size_t at = r->at;
    for (int32_t i = 0; i < n && !r->err; i++)
        kr_str(r, group, sizeof(group), NULL);
    if (c->v >= 3)
        kr_i8(r);
    if (r->err)
        return;
    r->at = at;
    if (c->v >= 1)
        kw_i32(c->w, 0);
    kw_i32(c->w, PL_MAX(n, 0));
    for (int32_t i = 0; i < n; i++) {
        kr_str(r, group, sizeof(group), NULL);
        struct glist l = {c, 0, 1};
        int rc = broker_group_describe(c->s->b, group, glist_cb, &l);
        if (rc == PL_ENOENT) {
            /* Kafka describes an unknown group as Dead, with no error */
            kw_i16(c->w, E_NONE);
            kw_str(c->w, group);
            kw_str(c->w, "Dead");
            kw_str(c->w, "");
            kw_str(c->w, "");
            kw_i32(c->w, 0);
            if (c->v >= 3)
                kw_i32(c->w, INT32_MIN);
        } else if (rc < 0) {
            c->w->err = 1;
        }
    }
}

static void h_delete_groups(struct call *c)
{
    struct kr *r = c->r;
    char group[NAME_CAP];
    int32_t n = kr_array(r, 10000, 2);
    size_t at = r->at;
    for (int32_t i = 0; i < n && !r->err; i++)
        kr_str(r, group, sizeof(group), NULL);
    if (r->err)
        return;
    r->at = at;
    kw_i32(c->w, 0);
    kw_i32(c->w, PL_MAX(n, 0));
    for (int32_t i = 0; i < n; i++) {
        kr_str(r, group, sizeof(group), NULL);
        kw_str(c->w, group);
        kw_i16(c->w, broker_group_delete(c->s->b, group));
    }
}

/* ---- DescribeConfigs: topic configs, read-only view ---- */
static void put_config(struct call *c, const char *name, const char *value, int is_default)
{
    kw_str(c->w, name);
    kw_str(c->w, value);
    kw_i8(c->w, 1); /* read only: set them at create time */
    if (c->v == 0)
        kw_i8(c->w, (int8_t)is_default);
    else
        kw_i8(c->w, is_default ? 5 : 1); /* DEFAULT_CONFIG or DYNAMIC_TOPIC_CONFIG */
    kw_i8(c->w, 0);                      /* sensitive */
    if (c->v >= 1)
        kw_i32(c->w, 0); /* synonyms */
}

static void h_describe_configs(struct call *c)
{
    struct kr *r = c->r;
    char name[NAME_CAP], key[NAME_CAP];
    int32_t n = kr_array(r, 1000, 5);
    struct res {
        int8_t type;
        char name[NAME_CAP];
    } *rs = calloc((size_t)PL_MAX(n, 1), sizeof(*rs));
    if (!rs) {
        r->err = 1;
        return;
    }
    for (int32_t i = 0; i < n && !r->err; i++) {
        rs[i].type = kr_i8(r);
        kr_str(r, rs[i].name, sizeof(rs[i].name), NULL);
        int32_t nk = kr_array(r, 1000, 2);
        for (int32_t k = 0; k < nk && !r->err; k++)
            kr_str(r, key, sizeof(key), NULL);
    }
    if (c->v >= 1)
        kr_i8(r);
    (void)name;
    if (!r->err) {
        kw_i32(c->w, 0);
        kw_i32(c->w, PL_MAX(n, 0));
        for (int32_t i = 0; i < n; i++) {
            struct broker_topic t;
            int topic = rs[i].type == 2;
            int rc = topic ? broker_topic_get(c->s->b, rs[i].name, &t) : 0;
            kw_i16(c->w, topic ? kerr(rc) : E_NONE);
            kw_str(c->w, topic && rc ? "no such topic" : NULL);
            kw_i8(c->w, rs[i].type);
            kw_str(c->w, rs[i].name);
            if (!topic || rc) {
                kw_i32(c->w, 0); /* brokers: nothing configurable over the protocol */
                continue;
            }
            char v[32];
            kw_i32(c->w, 5);
            put_config(c, "cleanup.policy", "delete", 1);
            snprintf(v, sizeof(v), "%lld", (long long)t.retention_ms);
            put_config(c, "retention.ms", v, t.retention_ms == 7ll * 24 * 3600 * 1000);
            snprintf(v, sizeof(v), "%lld", (long long)t.retention_bytes);
            put_config(c, "retention.bytes", v, t.retention_bytes == -1);
            snprintf(v, sizeof(v), "%lld", (long long)t.segment_bytes);
            put_config(c, "segment.bytes", v, t.segment_bytes == 256ll << 20);
            put_config(c, "message.timestamp.type", "CreateTime", 1);
        }
    }
    free(rs);
}

/* ---- SASL ---- */
static const char *const mechanisms[] = {KSASL_MECHANISMS};

static void h_sasl_handshake(struct call *c)
{
    char mech[64];
    kr_str(c->r, mech, sizeof(mech), NULL);
    if (c->r->err)
        return;
    int16_t err = E_NONE;
    if (c->conn->authed || c->conn->sasl.mech)
        err = E_ILLEGAL_SASL_STATE;
    else if (ksasl_start(&c->conn->sasl, mech))
        err = E_UNSUPPORTED_SASL_MECHANISM;
    kw_i16(c->w, err);
    kw_i32(c->w, (int32_t)PL_ARRAY_LEN(mechanisms));
    for (size_t i = 0; i < PL_ARRAY_LEN(mechanisms); i++)
        kw_str(c->w, mechanisms[i]);
    /* v0: the tokens follow as bare frames; v1: inside SaslAuthenticate */
    c->conn->raw_sasl = !err && c->v == 0;
}

/* One token through the mechanism; *fail when the client must go. */
static int sasl_token(struct call *c, const uint8_t *in, size_t n, uint8_t *out, size_t *outn)
{
    struct kconn *k = c->conn;
    int rc = k->sasl.mech ? ksasl_step(broker_store(c->s->b), &k->sasl, in, n, out, outn)
                          : PL_EPROTO;
    if (rc) {
        pl_log(PL_LOG_INFO, "kafka", "SASL authentication of %s from %s failed: %s",
               *k->sasl.principal ? k->sasl.principal : "?", k->peer,
               rc == PL_EACCES ? "wrong access key or secret" : "malformed exchange");
    } else if (k->sasl.done && k->sasl.ok) {
        k->authed = 1;
        snprintf(k->principal, sizeof(k->principal), "%s", k->sasl.principal);
    }
    return rc;
}

static void h_sasl_authenticate(struct call *c, int *close_after)
{
    int32_t len;
    const uint8_t *tok = kr_bytes(c->r, &len);
    if (c->r->err)
        return;
    uint8_t out[KSASL_MSG_MAX];
    size_t outn = sizeof(out);
    int rc = sasl_token(c, tok ? tok : (const uint8_t *)"", tok ? (size_t)len : 0, out, &outn);
    kw_i16(c->w, rc ? E_SASL_FAILED : E_NONE);
    kw_str(c->w, rc ? "Authentication failed: invalid credentials (user is an access key, "
                      "password its secret)"
                    : NULL);
    kw_bytes(c->w, out, rc ? 0 : (int32_t)outn);
    if (c->v >= 1)
        kw_i64(c->w, 0); /* session lifetime: no re-authentication */
    *close_after = rc != 0;
}

/* ---- dispatch ---- */
static const struct api *api_find(int16_t key)
{
    for (size_t i = 0; i < PL_ARRAY_LEN(apis); i++)
        if (apis[i].key == key)
            return &apis[i];
    return NULL;
}

void kafka_handle(struct kafka_server *s, struct kconn *k, uint8_t *req, size_t n, struct kw *w,
                  int *ret_close)
{
    struct kr r = {req, n, 0, 0};
    struct call c = {s, k, k->peer, {0}, &r, w, 0};
    int no_reply = 0, close_after = 0;
    *ret_close = 0;
    w->n = 0;
    k->send_empty = 0;
    if (k->raw_sasl) {
        /* SaslHandshake v0: this frame is a bare token, and so is the answer */
        uint8_t out[KSASL_MSG_MAX];
        size_t outn = sizeof(out);
        if (sasl_token(&c, req, n, out, &outn)) {
            *ret_close = 1;
            return;
        }
        k->raw_sasl = !k->sasl.done;
        kw_raw(w, out, outn);
        k->send_empty = outn == 0;
        return;
    }
    if (kr_header(&r, &c.h)) {
        pl_log(PL_LOG_INFO, "kafka", "malformed request header; closing the connection");
        *ret_close = 1;
        return;
    }
    c.v = c.h.api_version;
    const struct api *a = api_find(c.h.api_key);
    kw_i32(w, c.h.correlation_id);
    if (c.h.api_key == K_API_VERSIONS && (c.v < 0 || c.v > a->max)) {
        /* KIP-511: a newer client learns our versions from a v0 body */
        api_versions_body(w, E_UNSUPPORTED_VERSION, 0);
        return;
    }
    if (s->sasl_required && !k->authed && c.h.api_key != K_API_VERSIONS &&
        c.h.api_key != K_SASL_HANDSHAKE && c.h.api_key != K_SASL_AUTHENTICATE) {
        pl_log(PL_LOG_INFO, "kafka", "client %s from %s sent api %d before authenticating; "
               "closing the connection", c.h.client_id, k->peer, c.h.api_key);
        *ret_close = 1;
        w->n = 0;
        return;
    }
    if (!a || c.v < a->min || c.v > a->max) {
        pl_log(PL_LOG_INFO, "kafka", "client %s sent api %d v%d, which this broker does not "
               "serve; closing the connection", c.h.client_id, c.h.api_key, c.v);
        *ret_close = 1;
        w->n = 0;
        return;
    }
    switch (c.h.api_key) {
    case K_API_VERSIONS:
        h_api_versions(&c);
        break;
    case K_METADATA:
        h_metadata(&c);
        break;
    case K_PRODUCE:
        h_produce(&c, &no_reply);
        break;
    case K_FETCH:
        h_fetch(&c);
        break;
    case K_LIST_OFFSETS:
        h_list_offsets(&c);
        break;
    case K_FIND_COORDINATOR:
        h_find_coordinator(&c);
        break;
    case K_OFFSET_COMMIT:
        h_offset_commit(&c);
        break;
    case K_OFFSET_FETCH:
        h_offset_fetch(&c);
        break;
    case K_CREATE_TOPICS:
        h_create_topics(&c);
        break;
    case K_DELETE_TOPICS:
        h_delete_topics(&c);
        break;
    case K_JOIN_GROUP:
        h_join_group(&c);
        break;
    case K_SYNC_GROUP:
        h_sync_group(&c);
        break;
    case K_HEARTBEAT:
        h_heartbeat(&c);
        break;
    case K_LEAVE_GROUP:
        h_leave_group(&c);
        break;
    case K_LIST_GROUPS:
        h_list_groups(&c);
        break;
    case K_DESCRIBE_GROUPS:
        h_describe_groups(&c);
        break;
    case K_DELETE_GROUPS:
        h_delete_groups(&c);
        break;
    case K_DESCRIBE_CONFIGS:
        h_describe_configs(&c);
        break;
    case K_SASL_HANDSHAKE:
        h_sasl_handshake(&c);
        break;
    case K_SASL_AUTHENTICATE:
        h_sasl_authenticate(&c, &close_after);
        break;
    default:
        break;
    }
    if (r.err || w->err) {
        pl_log(PL_LOG_INFO, "kafka", "client %s: malformed api %d v%d request; closing the "
               "connection", c.h.client_id, c.h.api_key, c.v);
        *ret_close = 1;
        w->n = 0;
    } else if (no_reply) {
        w->n = 0; /* acks=0: the producer expects no answer */
    }
    /* a failed authentication is answered, then the connection ends */
    if (close_after)
        k->close_after_reply = 1;
}

/* ---- connections ---- */
#define PIPE_MAX 64
#define PIPE_BYTES (64u << 20)
#define MEM_MAX (1ull << 30) /* request bytes held at once; more wait */
#define MEM_WAIT_MS 30000

/* Reserve n bytes of the request budget; with wait, up to MEM_WAIT_MS. One
 * request always fits when nothing else is held, whatever its size. */
static int mem_take(struct kafka_server *s, size_t n, int wait)
{
    for (int waited = 0;; waited += 10) {
        uint64_t cur = __atomic_load_n(&s->mem, __ATOMIC_RELAXED);
        if (cur == 0 || cur + n <= MEM_MAX) {
            if (__atomic_compare_exchange_n(&s->mem, &cur, cur + n, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                return 0;
            continue;
        }
        if (!wait || waited >= MEM_WAIT_MS)
            return PL_EAGAIN;
        usleep(10 * 1000);
    }
}

static void mem_give(struct kafka_server *s, size_t n)
{
    __atomic_sub_fetch(&s->mem, n, __ATOMIC_RELAXED);
}

static int send_reply(int fd, struct kconn *k, struct kw *w)
{
    if (!w->n && !k->send_empty)
        return 0;
    uint8_t hdr[4];
    pl_put_be32(hdr, (uint32_t)w->n);
    if (pl_write_all(fd, hdr, 4) || (w->n && pl_write_all(fd, w->p, w->n)))
        return -1;
    return 0;
}

/* After a Produce request: take the Produce requests already waiting on the
 * socket too, write their records together and answer each in order.
 * Returns 1 when it answered everything, 0 when there was nothing more to
 * take (the caller handles the one request), -1 when the connection ends. */
static int produce_pipeline(struct kafka_server *s, struct kconn *k, int fd, uint8_t *first,
                            size_t first_n, struct kw *w)
{
    uint8_t *reqs[PIPE_MAX];
    size_t lens[PIPE_MAX], total = first_n;
    int nreq = 1, avail = 0, ret = 1;
    reqs[0] = first;
    lens[0] = first_n;
    while (nreq < PIPE_MAX && total < PIPE_BYTES && ioctl(fd, FIONREAD, &avail) == 0 &&
           avail >= 6) {
        uint8_t hdr[6];
        if (recv(fd, hdr, sizeof(hdr), MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof(hdr))
            break;
        uint32_t n = pl_get_be32(hdr);
        /* a Produce already on its way is read whole: the client is sending it
         * now, and its answer would wait behind it anyway */
        if (pl_get_be16(hdr + 4) != K_PRODUCE || n < 8 || n > REQ_MAX)
            break;
        if (mem_take(s, n, 0))
            break; /* over the budget: these wait for the next round */
        uint8_t *r = malloc(n);
        if (!r || tsrv_read(fd, hdr, 4) || tsrv_read(fd, r, n)) {
            free(r);
            mem_give(s, n);
            ret = -1;
            goto out;
        }
        reqs[nreq] = r;
        lens[nreq++] = n;
        total += n;
    }
    if (nreq == 1)
        return 0;
    struct pbatch pb = {PB_COLLECT, NULL, 0, 0, 0};
    int ok_upto = nreq; /* requests before a malformed one are batched */
    k->pb = &pb;
    for (int i = 0; i < nreq; i++) {
        int before = pb.n, close_it;
        kafka_handle(s, k, reqs[i], lens[i], w, &close_it);
        if (close_it) {
            pb.n = before;
            ok_upto = i;
            break;
        }
    }
    pb_exec(s, &pb);
    pb.phase = PB_RESPOND;
    for (int i = 0; i < nreq && ret > 0; i++) {
        int close_it;
        if (i == ok_upto)
            k->pb = NULL; /* the malformed one: as if alone (it ends the connection) */
        kafka_handle(s, k, reqs[i], lens[i], w, &close_it);
        if (close_it || send_reply(fd, k, w) || k->close_after_reply)
            ret = -1;
    }
    k->pb = NULL;
    free(pb.items);
out:
    for (int i = 1; i < nreq; i++) {
        free(reqs[i]);
        mem_give(s, lens[i]);
    }
    return ret;
}

static void conn_main(void *ctx, int fd)
{
    struct kafka_server *s = ctx;
    struct kw w = {0};
    uint8_t *req = NULL;
    size_t req_cap = 0, held = 0;
    struct kconn *k = calloc(1, sizeof(*k));
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    if (!k)
        return;
    if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sin_family == AF_INET) {
        char ip[INET_ADDRSTRLEN];
        if (inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip)))
            snprintf(k->peer, sizeof(k->peer), "/%s", ip);
    }
    for (;;) {
        uint8_t sz[4];
        if (tsrv_read(fd, sz, 4))
            break;
        uint32_t n = pl_get_be32(sz);
        if (n < 8 || n > REQ_MAX) {
            pl_log(PL_LOG_INFO, "kafka", "request of %u bytes refused; closing the connection",
                   n);
            break;
        }
        if (mem_take(s, n, 1)) {
            pl_log(PL_LOG_WARN, "kafka", "%s: no memory for a %u-byte request within %d s; "
                   "closing the connection", k->peer, n, MEM_WAIT_MS / 1000);
            break;
        }
        held = n;
        if (n > req_cap) {
            /* a big request's buffer goes after it: idle connections stay small */
            free(req);
            req = malloc(n);
            req_cap = req ? n : 0;
        }
        if (!req || tsrv_read(fd, req, n))
            break;
        int close_it = 0, answered = 0;
        if (n >= 2 && pl_get_be16(req) == K_PRODUCE && !k->raw_sasl) {
            int r2 = produce_pipeline(s, k, fd, req, n, &w);
            if (r2 < 0)
                break;
            answered = r2 > 0;
        }
        if (!answered) {
            kafka_handle(s, k, req, n, &w, &close_it);
            if (close_it || send_reply(fd, k, &w) || k->close_after_reply)
                break;
        }
        if (w.cap > (8u << 20))
            kw_free(&w); /* do not keep a big fetch's buffer per idle connection */
        if (req_cap > (1u << 20)) {
            free(req);
            req = NULL;
            req_cap = 0;
        }
        mem_give(s, held);
        held = 0;
    }
    mem_give(s, held);
    kw_free(&w);
    free(req);
    OPENSSL_clear_free(k, sizeof(*k)); /* SCRAM state held a salted password */
}

int kafka_start(struct broker *b, const struct kafka_opts *ko, struct kafka_server **ret)
{
    struct kafka_server *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->b = b;
    s->sasl_required = ko->sasl_required;
    snprintf(s->host, sizeof(s->host), "%s", ko->host);
    struct tsrv_opts o = {ko->host, ko->port, 1024, "kafka", 0, NULL};
    int rc = tsrv_start(&o, conn_main, s, &s->srv);
    if (rc) {
        free(s);
        return rc;
    }
    s->port = tsrv_port(s->srv);
    *ret = s;
    return 0;
}

int kafka_port(const struct kafka_server *s)
{
    return s->port;
}

void kafka_stop(struct kafka_server *s)
{
    if (!s)
        return;
    tsrv_stop(s->srv);
    free(s);
}

/* The Kafka head's data and topic APIs: Metadata, Produce (with pipelined
 * requests written together), Fetch (long-poll), ListOffsets,
 * CreateTopics, DeleteTopics, DescribeConfigs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/kafka/kapi.h"

/* ---- Metadata ---- */

int kapi_topic_list_cb(void *arg, const struct broker_topic *t)
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

void kapi_metadata(struct call *c)
{
    struct kr *r = c->r;
    struct topic_list want = {0};
    int32_t n = kr_array(r, 100000, 2);
    int all = n < 0 || (c->v == 0 && n == 0);
    for (int32_t i = 0; i < n && !r->err; i++) {
        if (kapi_topic_list_cb(&want, &(struct broker_topic){0}))
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
    if (all && broker_topic_list(c->s->b, kapi_topic_list_cb, &want)) {
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
void kapi_produce_stage(struct kafka_server *s, struct pbatch *pb)
{
    size_t n = (size_t)PL_MAX(pb->n, 1);
    uint8_t **recs = malloc(n * sizeof(*recs));
    size_t *lens = malloc(n * sizeof(*lens));
    char *done = calloc(n, 1);
    pb->order = malloc(n * sizeof(*pb->order));
    pb->rcs = malloc(n * sizeof(*pb->rcs));
    pb->bases = malloc(n * sizeof(*pb->bases));
    pb->stages = malloc(n * sizeof(*pb->stages));
    pb->nstages = 0;
    /* topics to create first: a create waits for a delete, which waits for
     * the appends already staged, and this round's would not be committed */
    for (int i = 0; i < pb->n && broker_auto_create(s->b); i++) {
        struct broker_topic t;
        const struct pitem *it = &pb->items[i];
        if (it->rc || it->part != 0 || broker_topic_name_valid(it->topic) ||
            broker_topic_get(s->b, it->topic, &t) != PL_ENOENT)
            continue;
        int rc = broker_topic_create(s->b, it->topic, 1, NULL);
        if (rc && rc != PL_EEXIST) /* its produce then answers UNKNOWN_TOPIC */
            pl_log(PL_LOG_WARN, "kafka", "auto-creating topic %s: %s", it->topic,
                   pl_strerror(rc));
    }
    /* before any partition's append lock: waiting here holds up nobody */
    broker_write_hold(s->b);
    pb->held = s->b;
    int at = 0;
    for (int i = 0; i < pb->n; i++) {
        struct pitem *it = &pb->items[i];
        if (it->rc || (done && done[i]))
            continue;
        if (!recs || !lens || !done || !pb->order || !pb->rcs || !pb->bases || !pb->stages) {
            it->rc = PL_ENOMEM;
            continue;
        }
        struct pstage *ps = &pb->stages[pb->nstages++];
        ps->first = at;
        ps->m = 0;
        for (int j = i; j < pb->n; j++)
            if (!pb->items[j].rc && !done[j] && pb->items[j].part == it->part &&
                !strcmp(pb->items[j].topic, it->topic)) {
                pb->order[at + ps->m] = j;
                recs[ps->m] = pb->items[j].recs;
                lens[ps->m++] = pb->items[j].len;
                done[j] = 1;
            }
        int *rcs = pb->rcs + at;
        int64_t *bases = pb->bases + at;
        broker_append_stage(s->b, it->topic, it->part, recs, lens, ps->m, rcs, bases, &ps->ba);
        at += ps->m;
    }
    free(recs);
    free(lens);
    free(done);
}

void kapi_produce_commit(struct pbatch *pb)
{
    for (int i = 0; i < pb->nstages; i++) {
        const struct pstage *ps = &pb->stages[i];
        broker_append_commit(ps->ba, NULL, 0, ps->m, pb->rcs + ps->first, pb->bases + ps->first);
        for (int k = ps->first; k < ps->first + ps->m; k++) {
            pb->items[pb->order[k]].rc = pb->rcs[k];
            pb->items[pb->order[k]].base = pb->bases[k];
        }
    }
    if (pb->held)
        broker_write_release(pb->held);
    pb->held = NULL;
    free(pb->stages);
    free(pb->order);
    free(pb->rcs);
    free(pb->bases);
    pb->stages = NULL;
    pb->order = pb->rcs = NULL;
    pb->bases = NULL;
    pb->nstages = 0;
}

void kapi_produce(struct call *c, int *no_reply)
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
                                : kapi_err(rc));
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

void kapi_fetch(struct call *c)
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
    int64_t deadline = kapi_now_ms() + PL_MAX(max_wait, 0);
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
            f->err = kapi_err(rc);
            if (rc == PL_ENOENT)
                memset(&f->info, 0xff, sizeof(f->info)); /* -1s */
            total += f->n;
        }
        int64_t left = deadline - kapi_now_ms();
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
            if (f->data) {
                kw_bytes_own(w, f->data, f->n); /* sent from here, not copied */
                f->data = NULL;
            } else {
                kw_bytes(w, "", 0);
            }
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
void kapi_list_offsets(struct call *c)
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
            kw_i16(w, kapi_err(rc));
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


/* ---- CreateTopics / DeleteTopics ---- */
void kapi_create_topics(struct call *c)
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
                    err = kapi_err(rc);
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

void kapi_delete_topics(struct call *c)
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
        kw_i16(w, kapi_err(rc));
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

void kapi_describe_configs(struct call *c)
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
            kw_i16(c->w, topic ? kapi_err(rc) : E_NONE);
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


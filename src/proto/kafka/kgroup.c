/* The Kafka head's coordinator APIs: FindCoordinator, OffsetCommit,
 * OffsetFetch, the classic consumer-group protocol (join, sync, heartbeat,
 * leave, list, describe, delete), and SASL (handshake and authenticate). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/kafka/kapi.h"

/* ---- FindCoordinator ---- */
void kapi_find_coordinator(struct call *c)
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
void kapi_offset_commit(struct call *c)
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
            kw_i16(w, rc == PL_EINVAL ? E_INVALID_GROUP_ID : kapi_err(rc));
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
    kw_i16(c->w, rc == 0 || rc == PL_ENOENT ? E_NONE : kapi_err(rc));
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

void kapi_offset_fetch(struct call *c)
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
        if (broker_topic_list(c->s->b, kapi_topic_list_cb, &l) == 0)
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


/* ---- consumer groups ---- */
void kapi_join_group(struct call *c)
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

void kapi_sync_group(struct call *c)
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

void kapi_heartbeat(struct call *c)
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

void kapi_leave_group(struct call *c)
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

void kapi_list_groups(struct call *c)
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

void kapi_describe_groups(struct call *c)
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

void kapi_delete_groups(struct call *c)
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


/* ---- SASL ---- */
static const char *const mechanisms[] = {KSASL_MECHANISMS};

void kapi_sasl_handshake(struct call *c)
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
int kapi_sasl_token(struct call *c, const uint8_t *in, size_t n, uint8_t *out, size_t *outn)
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

void kapi_sasl_authenticate(struct call *c, int *close_after)
{
    int32_t len;
    const uint8_t *tok = kr_bytes(c->r, &len);
    if (c->r->err)
        return;
    uint8_t out[KSASL_MSG_MAX];
    size_t outn = sizeof(out);
    int rc = kapi_sasl_token(c, tok ? tok : (const uint8_t *)"", tok ? (size_t)len : 0, out, &outn);
    kw_i16(c->w, rc ? E_SASL_FAILED : E_NONE);
    kw_str(c->w, rc ? "Authentication failed: invalid credentials (user is an access key, "
                      "password its secret)"
                    : NULL);
    kw_bytes(c->w, out, rc ? 0 : (int32_t)outn);
    if (c->v >= 1)
        kw_i64(c->w, 0); /* session lifetime: no re-authentication */
    *close_after = rc != 0;
}


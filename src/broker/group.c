/* Committed offsets: one service record per group, topic and partition,
 * "kafka/og/LEN:GROUP/TOPIC/PART" -> offset (8 bytes, big-endian) and the
 * client's metadata string. The group's length keeps one group's prefix
 * from matching another's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "broker/broker_int.h"

#define META_MAX 4096

static int off_key(char *k, size_t n, const char *group, const char *topic, int part)
{
    int w = snprintf(k, n, "kafka/og/%zu:%s/%s/%d", strlen(group), group, topic, part);
    return w < 0 || (size_t)w >= n ? PL_ENAMETOOLONG : 0;
}

int broker_commit(struct broker *b, const char *group, const char *topic, int part, int64_t offset,
                  const char *meta)
{
    char k[PL_SVC_KEY_MAX + 1];
    uint8_t v[8 + META_MAX];
    size_t ml = meta ? strlen(meta) : 0;
    if (!*group || strlen(group) > BROKER_GROUP_MAX)
        return PL_EINVAL;
    if (ml > META_MAX)
        return PL_EFBIG;
    int rc = off_key(k, sizeof(k), group, topic, part);
    if (rc)
        return rc;
    pl_put_be64(v, (uint64_t)offset);
    memcpy(v + 8, meta ? meta : "", ml);
    struct pl_svc_rec r = {k, v, 8 + ml};
    return pl_svc_write(b->st, &r, 1);
}

int broker_committed(struct broker *b, const char *group, const char *topic, int part,
                     int64_t *ret_off, char *meta, size_t mn)
{
    char k[PL_SVC_KEY_MAX + 1];
    uint8_t v[8 + META_MAX];
    size_t n = 0;
    int rc = off_key(k, sizeof(k), group, topic, part);
    if (!rc)
        rc = pl_svc_get(b->st, k, v, sizeof(v), &n);
    if (!rc && n < 8)
        rc = PL_ECORRUPT;
    if (rc)
        return rc;
    *ret_off = (int64_t)pl_get_be64(v);
    if (meta && mn) {
        size_t ml = PL_MIN(n - 8, mn - 1);
        memcpy(meta, v + 8, ml);
        meta[ml] = 0;
    }
    return 0;
}

/* ---- the group coordinator ----
 * One lock for all groups; JoinGroup and SyncGroup wait on their group's
 * condition (each connection has its own thread, so waiting holds only the
 * caller). A rebalance starts when a member joins, rejoins, leaves or times
 * out: the group waits until every member has rejoined or the rebalance
 * timeout passed (then the ones missing are dropped), bumps the generation,
 * picks the protocol every member supports (in the leader's order) and
 * answers all joins at once; the leader's SyncGroup hands out assignments. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *const state_names[] = {"Empty", "PreparingRebalance", "CompletingRebalance",
                                           "Stable"};

void broker_members_free(struct broker_member *m, int n)
{
    for (int i = 0; m && i < n; i++) {
        free(m[i].meta);
        free(m[i].assign);
    }
    free(m);
}

static void gmember_clear(struct gmember *gm)
{
    for (int i = 0; i < gm->nprotos; i++)
        free((void *)gm->protos[i].meta);
    gm->nprotos = 0;
    free(gm->m.assign);
    gm->m.assign = NULL;
    gm->m.alen = 0;
}

void group_init(struct broker *b)
{
    pthread_mutex_init(&b->glock, NULL);
}

static struct group *group_find(struct broker *b, const char *id, int add)
{
    struct group *g = b->groups;
    while (g && strcmp(g->id, id))
        g = g->next;
    if (g || !add)
        return g;
    g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    snprintf(g->id, sizeof(g->id), "%s", id);
    pthread_cond_init(&g->cond, NULL);
    g->next = b->groups;
    b->groups = g;
    return g;
}

static int member_find(struct group *g, const char *id)
{
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->members[i].m.id, id))
            return i;
    return -1;
}

static void member_remove(struct group *g, int i)
{
    gmember_clear(&g->members[i]);
    g->members[i] = g->members[--g->n];
}

/* Start (or restart) a rebalance: everyone must join again. */
static void rebalance_start(struct group *g)
{
    int32_t timeout = 0;
    for (int i = 0; i < g->n; i++) {
        g->members[i].joined = 0;
        timeout = PL_MAX(timeout, g->members[i].rebalance_ms);
    }
    g->state = g->n ? G_PREPARING : G_EMPTY;
    g->deadline_ms = mono_ms() + PL_MAX(timeout, 1000);
    pthread_cond_broadcast(&g->cond); /* syncs waiting learn of it */
}

/* Every member rejoined (or the time is up): the new generation. */
static void rebalance_finish(struct group *g)
{
    for (int i = 0; i < g->n;)
        if (!g->members[i].joined)
            member_remove(g, i); /* did not rejoin in time */
        else
            i++;
    g->generation++;
    if (!g->n) {
        g->state = G_EMPTY;
        g->protocol[0] = g->leader[0] = 0;
        pthread_cond_broadcast(&g->cond);
        return;
    }
    if (member_find(g, g->leader) < 0)
        snprintf(g->leader, sizeof(g->leader), "%s", g->members[0].m.id);
    /* the first of the leader's protocols that every member supports */
    struct gmember *lead = &g->members[member_find(g, g->leader)];
    g->protocol[0] = 0;
    for (int p = 0; p < lead->nprotos && !g->protocol[0]; p++) {
        int all = 1;
        for (int i = 0; i < g->n && all; i++) {
            int has = 0;
            for (int q = 0; q < g->members[i].nprotos; q++)
                has |= !strcmp(g->members[i].protos[q].name, lead->protos[p].name);
            all = has;
        }
        if (all)
            snprintf(g->protocol, sizeof(g->protocol), "%s", lead->protos[p].name);
    }
    for (int i = 0; i < g->n; i++) {
        free(g->members[i].m.assign);
        g->members[i].m.assign = NULL;
        g->members[i].m.alen = 0;
        g->members[i].seen_ms = mono_ms();
    }
    g->state = G_AWAITING_SYNC;
    pthread_cond_broadcast(&g->cond);
}

static void wait_ms(struct group *g, pthread_mutex_t *lock, int ms)
{
    struct timespec ts = pl_deadline_ms(ms);
    pthread_cond_timedwait(&g->cond, lock, &ts);
}

static int protos_copy(struct gmember *gm, const struct broker_join_req *rq)
{
    gmember_clear(gm);
    for (int i = 0; i < rq->nprotos && i < BROKER_PROTO_MAX; i++) {
        uint8_t *m = malloc(rq->protos[i].len > 0 ? (size_t)rq->protos[i].len : 1);
        if (!m)
            return PL_ENOMEM;
        if (rq->protos[i].len > 0)
            memcpy(m, rq->protos[i].meta, (size_t)rq->protos[i].len);
        gm->protos[i] = rq->protos[i];
        gm->protos[i].meta = m;
        gm->nprotos = i + 1;
    }
    return 0;
}

void broker_join(struct broker *b, const struct broker_join_req *rq, struct broker_join_res *res)
{
    memset(res, 0, sizeof(*res));
    res->generation = -1;
    if (!*rq->group || strlen(rq->group) > BROKER_GROUP_MAX) {
        res->err = BK_INVALID_GROUP_ID;
        return;
    }
    if (rq->session_ms < 1000 || rq->session_ms > 30 * 60 * 1000) {
        res->err = BK_INVALID_SESSION_TIMEOUT;
        return;
    }
    if (rq->nprotos < 1 || !*rq->protocol_type) {
        res->err = BK_INCONSISTENT_GROUP_PROTOCOL;
        return;
    }
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, rq->group, 1);
    if (!g) {
        res->err = BK_COORDINATOR_NOT_AVAILABLE;
        goto out;
    }
    if (g->n && strcmp(g->protocol_type, rq->protocol_type)) {
        res->err = BK_INCONSISTENT_GROUP_PROTOCOL;
        goto out;
    }
    char id[BROKER_MEMBER_MAX + 1];
    int i;
    if (!*rq->member_id) {
        uint8_t rnd[8];
        if (pl_random(rnd, sizeof(rnd))) {
            res->err = BK_COORDINATOR_NOT_AVAILABLE;
            goto out;
        }
        snprintf(id, sizeof(id), "%.*s-%02x%02x%02x%02x%02x%02x%02x%02x", 120,
                 *rq->client_id ? rq->client_id : "member", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4], rnd[5], rnd[6], rnd[7]);
        if (g->n == g->cap) {
            int cap = g->cap ? g->cap * 2 : 8;
            struct gmember *nm = realloc(g->members, (size_t)cap * sizeof(*nm));
            if (!nm) {
                res->err = BK_COORDINATOR_NOT_AVAILABLE;
                goto out;
            }
            g->members = nm;
            g->cap = cap;
        }
        i = g->n++;
        memset(&g->members[i], 0, sizeof(g->members[i]));
        snprintf(g->members[i].m.id, sizeof(g->members[i].m.id), "%s", id);
        if (g->n == 1)
            snprintf(g->protocol_type, sizeof(g->protocol_type), "%s", rq->protocol_type);
    } else if ((i = member_find(g, rq->member_id)) < 0) {
        res->err = BK_UNKNOWN_MEMBER_ID;
        goto out;
    }
    snprintf(id, sizeof(id), "%s", g->members[i].m.id);
    struct gmember *gm = &g->members[i];
    snprintf(gm->m.client_id, sizeof(gm->m.client_id), "%s", rq->client_id);
    snprintf(gm->m.client_host, sizeof(gm->m.client_host), "%s", rq->client_host);
    gm->session_ms = rq->session_ms;
    gm->rebalance_ms = rq->rebalance_ms > 0 ? rq->rebalance_ms : rq->session_ms;
    gm->seen_ms = mono_ms();
    if (protos_copy(gm, rq)) {
        res->err = BK_COORDINATOR_NOT_AVAILABLE;
        goto out;
    }
    if (g->state != G_PREPARING)
        rebalance_start(g);
    gm->joined = 1;
    int32_t gen = g->generation;
    for (;;) {
        int k = member_find(g, id);
        if (k < 0 || b->stopping) {
            res->err = b->stopping ? BK_COORDINATOR_NOT_AVAILABLE : BK_UNKNOWN_MEMBER_ID;
            goto out;
        }
        g->members[k].seen_ms = mono_ms(); /* waiting is not a missed heartbeat */
        if (g->generation != gen)
            break; /* someone finished the rebalance */
        int all = 1;
        for (int m = 0; m < g->n && all; m++)
            all = g->members[m].joined;
        if (all || mono_ms() >= g->deadline_ms) {
            rebalance_finish(g);
            break;
        }
        g->members[k].waiting = 1;
        wait_ms(g, &b->glock, 100);
        if ((k = member_find(g, id)) >= 0)
            g->members[k].waiting = 0;
    }
    i = member_find(g, id);
    if (i < 0) {
        res->err = BK_UNKNOWN_MEMBER_ID;
        goto out;
    }
    res->generation = g->generation;
    snprintf(res->protocol, sizeof(res->protocol), "%s", g->protocol);
    snprintf(res->leader, sizeof(res->leader), "%s", g->leader);
    snprintf(res->member_id, sizeof(res->member_id), "%s", id);
    if (!g->protocol[0]) {
        res->err = BK_INCONSISTENT_GROUP_PROTOCOL;
        goto out;
    }
    if (!strcmp(id, g->leader)) {
        res->members = calloc((size_t)g->n, sizeof(*res->members));
        for (int m = 0; res->members && m < g->n; m++) {
            struct gmember *o = &g->members[m];
            res->members[m] = o->m;
            res->members[m].assign = NULL;
            res->members[m].alen = 0;
            res->members[m].meta = NULL;
            res->members[m].len = 0;
            for (int q = 0; q < o->nprotos; q++)
                if (!strcmp(o->protos[q].name, g->protocol) && o->protos[q].len > 0) {
                    res->members[m].meta = malloc((size_t)o->protos[q].len);
                    if (res->members[m].meta) {
                        memcpy(res->members[m].meta, o->protos[q].meta, (size_t)o->protos[q].len);
                        res->members[m].len = o->protos[q].len;
                    }
                }
            res->nmembers = m + 1;
        }
    }
out:
    pthread_mutex_unlock(&b->glock);
}

int16_t broker_sync(struct broker *b, const char *group, int32_t generation, const char *member,
                    const struct broker_assignment *as, int n, uint8_t **ret_assign,
                    int32_t *ret_len)
{
    int16_t err = BK_NONE;
    *ret_assign = NULL;
    *ret_len = 0;
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, group, 0);
    int i = g ? member_find(g, member) : -1;
    if (i < 0)
        err = BK_UNKNOWN_MEMBER_ID;
    else if (generation != g->generation)
        err = BK_ILLEGAL_GENERATION;
    else if (g->state == G_PREPARING)
        err = BK_REBALANCE_IN_PROGRESS;
    if (err)
        goto out;
    g->members[i].seen_ms = mono_ms();
    if (!strcmp(member, g->leader) && g->state == G_AWAITING_SYNC) {
        for (int k = 0; k < n; k++) {
            int j = member_find(g, as[k].member);
            if (j < 0 || as[k].len < 0)
                continue;
            free(g->members[j].m.assign);
            g->members[j].m.assign = malloc(as[k].len ? (size_t)as[k].len : 1);
            if (g->members[j].m.assign && as[k].len)
                memcpy(g->members[j].m.assign, as[k].data, (size_t)as[k].len);
            g->members[j].m.alen = g->members[j].m.assign ? as[k].len : 0;
        }
        g->state = G_STABLE;
        pthread_cond_broadcast(&g->cond);
    }
    /* followers wait for the leader's assignments */
    while (g->state == G_AWAITING_SYNC && g->generation == generation && !b->stopping) {
        int k = member_find(g, member);
        if (k < 0)
            break;
        g->members[k].seen_ms = mono_ms();
        wait_ms(g, &b->glock, 100);
        if (mono_ms() > g->deadline_ms + 60000)
            break;
    }
    i = member_find(g, member);
    if (i < 0)
        err = BK_UNKNOWN_MEMBER_ID;
    else if (g->generation != generation || g->state != G_STABLE)
        err = BK_REBALANCE_IN_PROGRESS;
    else if (g->members[i].m.alen) {
        *ret_assign = malloc((size_t)g->members[i].m.alen);
        if (*ret_assign) {
            memcpy(*ret_assign, g->members[i].m.assign, (size_t)g->members[i].m.alen);
            *ret_len = g->members[i].m.alen;
        }
    }
out:
    pthread_mutex_unlock(&b->glock);
    return err;
}

int16_t broker_heartbeat(struct broker *b, const char *group, int32_t generation,
                         const char *member)
{
    int16_t err = BK_NONE;
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, group, 0);
    int i = g ? member_find(g, member) : -1;
    if (i < 0)
        err = BK_UNKNOWN_MEMBER_ID;
    else {
        g->members[i].seen_ms = mono_ms();
        if (g->state == G_PREPARING)
            err = BK_REBALANCE_IN_PROGRESS;
        else if (generation != g->generation)
            err = BK_ILLEGAL_GENERATION;
    }
    pthread_mutex_unlock(&b->glock);
    return err;
}

int16_t broker_leave(struct broker *b, const char *group, const char *member)
{
    int16_t err = BK_NONE;
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, group, 0);
    int i = g ? member_find(g, member) : -1;
    if (i < 0) {
        err = BK_UNKNOWN_MEMBER_ID;
    } else {
        member_remove(g, i);
        pl_log(PL_LOG_INFO, "kafka", "group %s: member %s left", group, member);
        rebalance_start(g);
    }
    pthread_mutex_unlock(&b->glock);
    return err;
}

void group_tick(struct broker *b)
{
    int64_t now = mono_ms();
    pthread_mutex_lock(&b->glock);
    for (struct group *g = b->groups; g; g = g->next) {
        int dropped = 0;
        for (int i = 0; i < g->n;) {
            struct gmember *gm = &g->members[i];
            if (!gm->waiting && now - gm->seen_ms > gm->session_ms) {
                pl_log(PL_LOG_INFO, "kafka", "group %s: member %s timed out after %d ms", g->id,
                       gm->m.id, gm->session_ms);
                member_remove(g, i);
                dropped = 1;
            } else {
                i++;
            }
        }
        if (dropped)
            rebalance_start(g);
        else if (g->state == G_PREPARING && now >= g->deadline_ms) {
            /* nobody is waiting in a join to finish it */
            int waiting = 0;
            for (int i = 0; i < g->n; i++)
                waiting |= g->members[i].waiting;
            if (!waiting)
                rebalance_finish(g);
        }
    }
    pthread_mutex_unlock(&b->glock);
}

void group_stop(struct broker *b)
{
    pthread_mutex_lock(&b->glock);
    for (struct group *g = b->groups; g; g = g->next)
        pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&b->glock);
}

void group_free(struct broker *b)
{
    while (b->groups) {
        struct group *g = b->groups;
        b->groups = g->next;
        while (g->n)
            member_remove(g, g->n - 1);
        free(g->members);
        pthread_cond_destroy(&g->cond);
        free(g);
    }
    pthread_mutex_destroy(&b->glock);
}

/* ---- listing, describing, deleting ---- */
static int group_info_fill(struct group *g, struct broker_group_info *gi)
{
    memset(gi, 0, sizeof(*gi));
    snprintf(gi->id, sizeof(gi->id), "%s", g->id);
    snprintf(gi->state, sizeof(gi->state), "%s", state_names[g->state]);
    snprintf(gi->protocol_type, sizeof(gi->protocol_type), "%s", g->protocol_type);
    snprintf(gi->protocol, sizeof(gi->protocol), "%s", g->protocol);
    gi->members = calloc((size_t)PL_MAX(g->n, 1), sizeof(*gi->members));
    if (!gi->members)
        return PL_ENOMEM;
    for (int i = 0; i < g->n; i++) {
        struct broker_member *m = &gi->members[i];
        *m = g->members[i].m;
        m->meta = NULL;
        m->len = 0;
        m->assign = NULL;
        m->alen = 0;
        for (int q = 0; q < g->members[i].nprotos; q++)
            if (!strcmp(g->members[i].protos[q].name, g->protocol) &&
                g->members[i].protos[q].len > 0 &&
                (m->meta = malloc((size_t)g->members[i].protos[q].len))) {
                memcpy(m->meta, g->members[i].protos[q].meta, (size_t)g->members[i].protos[q].len);
                m->len = g->members[i].protos[q].len;
            }
        if (g->members[i].m.alen && (m->assign = malloc((size_t)g->members[i].m.alen))) {
            memcpy(m->assign, g->members[i].m.assign, (size_t)g->members[i].m.alen);
            m->alen = g->members[i].m.alen;
        }
        gi->nmembers = i + 1;
    }
    return 0;
}

struct gname_ctx {
    char (*ids)[BROKER_GROUP_MAX + 1];
    int n, cap;
};

static int gname_add(struct gname_ctx *c, const char *id)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->ids[i], id))
            return 0;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        char(*n2)[BROKER_GROUP_MAX + 1] = realloc(c->ids, (size_t)cap * sizeof(*n2));
        if (!n2)
            return PL_ENOMEM;
        c->ids = n2;
        c->cap = cap;
    }
    snprintf(c->ids[c->n++], BROKER_GROUP_MAX + 1, "%s", id);
    return 0;
}

static int gname_cb(void *arg, const char *key, const void *val, size_t n)
{
    (void)val;
    (void)n;
    /* kafka/og/LEN:GROUP/... */
    const char *p = key + strlen("kafka/og/");
    char *colon;
    unsigned long len = strtoul(p, &colon, 10);
    if (*colon != ':' || len > BROKER_GROUP_MAX || strlen(colon + 1) < len)
        return 0;
    char id[BROKER_GROUP_MAX + 1];
    memcpy(id, colon + 1, len);
    id[len] = 0;
    return gname_add(arg, id) ? 1 : 0;
}

int broker_group_list(struct broker *b, broker_group_fn cb, void *arg)
{
    struct gname_ctx c = {0};
    int rc = pl_svc_scan(b->st, "kafka/og/", gname_cb, &c);
    pthread_mutex_lock(&b->glock);
    for (struct group *g = b->groups; !rc && g; g = g->next)
        if (g->n)
            rc = gname_add(&c, g->id);
    pthread_mutex_unlock(&b->glock);
    for (int i = 0; !rc && i < c.n; i++) {
        rc = broker_group_describe(b, c.ids[i], cb, arg);
        if (rc == PL_ENOENT)
            rc = 0;
    }
    free(c.ids);
    return rc > 0 ? 0 : rc;
}

static int has_offsets_cb(void *arg, const char *key, const void *val, size_t n)
{
    (void)key;
    (void)val;
    (void)n;
    *(int *)arg = 1;
    return 1;
}

static int group_has_offsets(struct broker *b, const char *group, int *ret)
{
    char prefix[PL_SVC_KEY_MAX + 1];
    snprintf(prefix, sizeof(prefix), "kafka/og/%zu:%s/", strlen(group), group);
    *ret = 0;
    return pl_svc_scan(b->st, prefix, has_offsets_cb, ret);
}

int broker_group_describe(struct broker *b, const char *group, broker_group_fn cb, void *arg)
{
    struct broker_group_info gi;
    int rc = 0, known = 0;
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, group, 0);
    if (g && g->n) {
        rc = group_info_fill(g, &gi);
        known = 1;
    }
    pthread_mutex_unlock(&b->glock);
    if (!known) {
        int has;
        rc = group_has_offsets(b, group, &has);
        if (rc)
            return rc;
        if (!has)
            return PL_ENOENT;
        memset(&gi, 0, sizeof(gi));
        snprintf(gi.id, sizeof(gi.id), "%s", group);
        snprintf(gi.state, sizeof(gi.state), "Empty");
        snprintf(gi.protocol_type, sizeof(gi.protocol_type), "consumer");
    }
    if (rc)
        return rc;
    rc = cb(arg, &gi);
    broker_members_free(gi.members, gi.nmembers);
    return rc > 0 ? 1 : rc;
}

int16_t broker_group_delete(struct broker *b, const char *group)
{
    char prefix[PL_SVC_KEY_MAX + 1];
    int has = 0;
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, group, 0);
    int busy = g && g->n;
    pthread_mutex_unlock(&b->glock);
    if (busy)
        return BK_NON_EMPTY_GROUP;
    if (group_has_offsets(b, group, &has) || !has)
        return BK_GROUP_ID_NOT_FOUND;
    snprintf(prefix, sizeof(prefix), "kafka/og/%zu:%s/", strlen(group), group);
    return pl_svc_delete_prefix(b->st, prefix) ? BK_COORDINATOR_NOT_AVAILABLE : BK_NONE;
}

int broker_group_reset(struct broker *b, const char *group, const char *topic, int64_t to_offset)
{
    struct broker_topic t;
    pthread_mutex_lock(&b->glock);
    struct group *g = group_find(b, group, 0);
    int busy = g && g->n;
    pthread_mutex_unlock(&b->glock);
    if (busy)
        return PL_EBUSY;
    int rc = broker_topic_get(b, topic, &t);
    for (int p = 0; !rc && p < t.partitions; p++) {
        struct broker_part_info pi;
        rc = broker_part_info(b, topic, p, &pi);
        if (rc)
            break;
        int64_t off = to_offset == -2 ? pi.log_start
                      : to_offset == -1 ? pi.next
                                        : PL_MAX(pi.log_start, PL_MIN(to_offset, pi.next));
        rc = broker_commit(b, group, topic, p, off, "");
    }
    return rc;
}

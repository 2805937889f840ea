/* Topics and partition logs (broker.h).
 *
 * Each partition keeps in memory an index of its batches (first and last
 * offset, largest timestamp, segment and position), built at open from the
 * batch headers in its segments. An append validates the batches, gives
 * them offsets, writes them at the end of the last segment (one durable
 * store write) and only then publishes them in the index: a fetch never
 * sees what a crash could take back. A torn tail (bytes past the last whole
 * batch) is cut at open. */
#include "broker/broker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "broker/batch.h"
#include "broker/broker_int.h"

#define KAFKA_DIR ".kafka"
#define DEF_RETENTION_MS (7ll * 24 * 3600 * 1000)
#define DEF_SEGMENT_BYTES (256ll << 20)

/* ---- names and configs ---- */
int broker_topic_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > BROKER_TOPIC_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return PL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return PL_EINVAL;
    }
    return 0;
}

int broker_topic_is_system(const char *name)
{
    return name[0] == '$';
}

static int parse_i64(const char *s, int64_t *ret)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return PL_EINVAL;
    *ret = v;
    return 0;
}

static int topic_config(struct broker_topic *t, const char *k, const char *v)
{
    if (!v)
        return 0; /* null value: the default */
    if (!strcmp(k, "retention.ms"))
        return parse_i64(v, &t->retention_ms);
    if (!strcmp(k, "retention.bytes"))
        return parse_i64(v, &t->retention_bytes);
    if (!strcmp(k, "segment.bytes")) {
        int rc = parse_i64(v, &t->segment_bytes);
        return !rc && t->segment_bytes < 4096 ? PL_EINVAL : rc;
    }
    if (!strcmp(k, "cleanup.policy"))
        return strcmp(v, "delete") ? PL_EINVAL : 0;
    return PL_EINVAL;
}

/* Record "kafka/topic/NAME" = "partitions retention.ms retention.bytes segment.bytes". */
static void topic_key(char *k, size_t n, const char *name)
{
    snprintf(k, n, "kafka/topic/%s", name);
}

static int topic_save(struct broker *b, const struct broker_topic *t)
{
    char k[300], v[128];
    topic_key(k, sizeof(k), t->name);
    int n = snprintf(v, sizeof(v), "%d %lld %lld %lld", t->partitions, (long long)t->retention_ms,
                     (long long)t->retention_bytes, (long long)t->segment_bytes);
    struct pl_svc_rec r = {k, v, (size_t)n};
    return pl_svc_write(b->st, &r, 1);
}

/* ---- the partition index ---- */
static int part_index_add(struct part *p, const struct bentry *e)
{
    if (p->nent == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        struct bentry *ne = realloc(p->ents, cap * sizeof(*ne));
        if (!ne)
            return PL_ENOMEM;
        p->ents = ne;
        p->cap = cap;
    }
    p->ents[p->nent++] = *e;
    return 0;
}

static int part_seg_add(struct part *p, int64_t base, uint64_t id, uint64_t size)
{
    struct bseg *ns = realloc(p->segs, (p->nseg + 1) * sizeof(*ns));
    if (!ns)
        return PL_ENOMEM;
    p->segs = ns;
    p->segs[p->nseg++] = (struct bseg){base, id, size, size, 0};
    return 0;
}

/* The first entry whose last offset is >= off (nent when none). */
static size_t part_find(const struct part *p, int64_t off)
{
    size_t lo = 0, hi = p->nent;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->ents[mid].last < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct seg_name {
    int64_t *bases;
    uint64_t *ids;
    size_t n, cap;
};

static int seg_name_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct seg_name *s = arg;
    int64_t base;
    if (a->type != PL_T_FILE || strlen(name) != 20 || parse_i64(name, &base))
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        int64_t *nb = realloc(s->bases, cap * sizeof(*nb));
        if (nb)
            s->bases = nb;
        uint64_t *ni = nb ? realloc(s->ids, cap * sizeof(*ni)) : NULL;
        if (!ni)
            return -1;
        s->ids = ni;
        s->cap = cap;
    }
    s->bases[s->n] = base;
    s->ids[s->n++] = a->id;
    return 0;
}

/* Rebuild a partition's index from its segments (names sort by offset). */
static int part_load(struct broker *b, struct part *p)
{
    struct seg_name s = {0};
    uint8_t hdr[BATCH_HDR_LEN];
    int rc = pl_dir_read(b->st, p->dir, PL_VIEW_LIVE, "", seg_name_cb, &s);
    if (!rc && s.n && !s.ids)
        rc = PL_ENOMEM;
    for (size_t i = 0; !rc && i < s.n; i++) {
        struct pl_attr a;
        rc = pl_elem_getattr(b->st, s.ids[i], PL_VIEW_LIVE, &a);
        uint64_t pos = 0;
        while (!rc && pos + BATCH_HDR_LEN <= a.size) {
            size_t got, len;
            struct batch_hdr h;
            rc = pl_elem_read(b->st, s.ids[i], PL_VIEW_LIVE, pos, hdr, sizeof(hdr), &got);
            if (rc || got < sizeof(hdr))
                break;
            if (batch_parse(hdr, sizeof(hdr), &h, &len) == PL_EPROTO || pos + len > a.size ||
                h.base_offset < p->next)
                break;
            struct bentry e = {h.base_offset, h.base_offset + h.last_offset_delta, h.max_ts,
                               (uint32_t)p->nseg, pos, (uint32_t)len};
            rc = part_index_add(p, &e);
            p->next = e.last + 1;
            pos += len;
        }
        if (rc)
            break;
        if (pos < a.size) {
            /* a tail that is not a whole batch was never acknowledged */
            pl_log(PL_LOG_WARN, "kafka", "partition %s/%d: cutting %llu bytes after the last "
                   "whole batch", p->topic, p->index, (unsigned long long)(a.size - pos));
            struct pl_attr cut = {.size = pos};
            rc = pl_elem_setattr(b->st, s.ids[i], PL_SET_SIZE, &cut, NULL);
        }
        if (!rc)
            rc = part_seg_add(p, s.bases[i], s.ids[i], pos);
        if (!rc && p->nseg == 1)
            p->log_start = s.bases[i];
        if (!rc && p->next < s.bases[i])
            p->next = s.bases[i]; /* an empty segment after retention keeps its place */
        p->bytes += pos;
    }
    free(s.bases);
    free(s.ids);
    return rc;
}

/* ---- topics ---- */
static void topic_free(struct topic *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->info.partitions && t->parts; i++) {
        struct part *p = &t->parts[i];
        pthread_mutex_destroy(&p->lock);
        pthread_mutex_destroy(&p->append_lock);
        pthread_cond_destroy(&p->turn);
        free(p->ents);
        free(p->segs);
    }
    free(t->parts);
    free(t);
}

/* Find a live topic and take a reference (lock not held by caller). */
struct topic *topic_get(struct broker *b, const char *name)
{
    pthread_mutex_lock(&b->lock);
    struct topic *t = b->topics;
    while (t && strcmp(t->info.name, name))
        t = t->next;
    if (t)
        t->refs++;
    pthread_mutex_unlock(&b->lock);
    return t;
}

void topic_put(struct broker *b, struct topic *t)
{
    pthread_mutex_lock(&b->lock);
    int last = --t->refs == 0 && t->deleted;
    pthread_mutex_unlock(&b->lock);
    if (last)
        topic_free(t);
}

static int kafka_dir(struct broker *b, uint64_t *ret)
{
    struct pl_attr a;
    int rc = pl_elem_lookup(b->st, PL_ROOT_ID, KAFKA_DIR, PL_VIEW_LIVE, &a);
    if (rc == PL_ENOENT) {
        rc = pl_elem_mkdir(b->st, PL_ROOT_ID, KAFKA_DIR, 0700, 0, 0, &a);
        if (rc == PL_EEXIST)
            rc = pl_elem_lookup(b->st, PL_ROOT_ID, KAFKA_DIR, PL_VIEW_LIVE, &a);
    }
    if (!rc)
        *ret = a.id;
    return rc;
}

static int mkdir_or_get(struct broker *b, uint64_t parent, const char *name, uint64_t *ret)
{
    struct pl_attr a;
    int rc = pl_elem_mkdir(b->st, parent, name, 0700, 0, 0, &a);
    if (rc == PL_EEXIST)
        rc = pl_elem_lookup(b->st, parent, name, PL_VIEW_LIVE, &a);
    if (!rc)
        *ret = a.id;
    return rc;
}

/* Build the in-memory topic, making its directories when create is set. */
static int topic_build(struct broker *b, const struct broker_topic *info, struct topic **ret)
{
    struct topic *t = calloc(1, sizeof(*t));
    int rc = t ? 0 : PL_ENOMEM;
    if (!rc) {
        t->info = *info;
        t->parts = calloc((size_t)info->partitions, sizeof(*t->parts));
        rc = t->parts ? 0 : PL_ENOMEM;
    }
    uint64_t root = 0, tdir = 0;
    if (!rc)
        rc = kafka_dir(b, &root);
    if (!rc)
        rc = mkdir_or_get(b, root, info->name, &tdir);
    for (int i = 0; !rc && i < info->partitions; i++) {
        struct part *p = &t->parts[i];
        char pn[16];
        pthread_mutex_init(&p->lock, NULL);
        pthread_mutex_init(&p->append_lock, NULL);
        pthread_cond_init(&p->turn, NULL);
        p->topic = t->info.name;
        p->index = i;
        snprintf(pn, sizeof(pn), "%d", i);
        rc = mkdir_or_get(b, tdir, pn, &p->dir);
        if (!rc)
            rc = part_load(b, p);
        p->stage_next = p->next;
    }
    if (rc) {
        topic_free(t);
        return rc;
    }
    t->dir = tdir;
    *ret = t;
    return 0;
}

int broker_topic_create(struct broker *b, const char *name, int partitions,
                        const char *const *configs)
{
    int rc = broker_topic_name_valid(name);
    return rc ? rc : topic_create(b, name, partitions, configs);
}

int topic_create(struct broker *b, const char *name, int partitions, const char *const *configs)
{
    struct broker_topic info = {.partitions = partitions,
                                .retention_ms = DEF_RETENTION_MS,
                                .retention_bytes = -1,
                                .segment_bytes = DEF_SEGMENT_BYTES};
    int rc = 0;
    if (partitions < 1 || partitions > BROKER_PARTS_MAX)
        return PL_ERANGE;
    snprintf(info.name, sizeof(info.name), "%s", name);
    for (const char *const *c = configs; c && c[0]; c += 2) {
        rc = topic_config(&info, c[0], c[1]);
        if (rc)
            return rc;
    }
    pthread_mutex_lock(&b->create_lock); /* one create or delete at a time */
    struct topic *t = topic_get(b, name);
    if (t) {
        topic_put(b, t);
        rc = PL_EEXIST;
    }
    if (!rc)
        rc = topic_save(b, &info);
    if (!rc)
        rc = topic_build(b, &info, &t);
    if (!rc) {
        pthread_mutex_lock(&b->lock);
        t->next = b->topics;
        b->topics = t;
        pthread_mutex_unlock(&b->lock);
        pl_log(PL_LOG_INFO, "kafka", "topic %s created (%d partitions)", name, partitions);
    }
    pthread_mutex_unlock(&b->create_lock);
    return rc;
}

static int rm_tree(struct broker *b, uint64_t dir);

struct rm_ctx {
    struct broker *b;
    uint64_t dir;
    int rc;
    char name[PL_NAME_MAX + 1];
    int type, found;
};

static int rm_first_cb(void *arg, const char *name, const struct pl_attr *a)
{
    struct rm_ctx *r = arg;
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->type = a->type;
    r->found = 1;
    return 1;
}

static int rm_tree(struct broker *b, uint64_t dir)
{
    for (;;) {
        struct rm_ctx r = {b, dir, 0, "", 0, 0};
        int rc = pl_dir_read(b->st, dir, PL_VIEW_LIVE, "", rm_first_cb, &r);
        if (rc || !r.found)
            return rc;
        if (r.type == PL_T_DIR) {
            struct pl_attr a;
            rc = pl_elem_lookup(b->st, dir, r.name, PL_VIEW_LIVE, &a);
            if (!rc)
                rc = rm_tree(b, a.id);
            if (!rc)
                rc = pl_elem_rmdir(b->st, dir, r.name);
        } else {
            rc = pl_elem_unlink(b->st, dir, r.name);
        }
        if (rc)
            return rc;
    }
}

int broker_topic_delete(struct broker *b, const char *name)
{
    char k[300];
    uint64_t root;
    pthread_mutex_lock(&b->create_lock);
    pthread_mutex_lock(&b->lock);
    struct topic **pp = &b->topics, *t;
    while (*pp && strcmp((*pp)->info.name, name))
        pp = &(*pp)->next;
    t = *pp;
    if (t) {
        *pp = t->next;
        t->deleted = 1;
        t->refs++;
    }
    pthread_mutex_unlock(&b->lock);
    int rc = t ? 0 : PL_ENOENT;
    if (!rc) {
        /* its config, and how far the event publisher got into it */
        char ck[300];
        topic_key(k, sizeof(k), name);
        snprintf(ck, sizeof(ck), BROKER_EV_CURSOR "%s", name);
        struct pl_svc_rec r[2] = {{k, NULL, 0}, {ck, NULL, 0}};
        rc = pl_svc_write(b->st, r, 2);
    }
    if (!rc) {
        /* appends staged before the delete finish first */
        for (int i = 0; i < t->info.partitions; i++) {
            struct part *p = &t->parts[i];
            pthread_mutex_lock(&p->append_lock);
            pthread_mutex_lock(&p->lock);
            while (p->commit_seq != p->stage_seq)
                pthread_cond_wait(&p->turn, &p->lock);
            pthread_mutex_unlock(&p->lock);
            pthread_mutex_unlock(&p->append_lock);
        }
        rc = kafka_dir(b, &root);
        if (!rc)
            rc = rm_tree(b, t->dir);
        if (!rc)
            rc = pl_elem_rmdir(b->st, root, name);
        if (rc)
            pl_log(PL_LOG_WARN, "kafka", "topic %s deleted, but its data stays until the next "
                   "start: %s", name, pl_strerror(rc));
        rc = 0;
        pl_log(PL_LOG_INFO, "kafka", "topic %s deleted", name);
    }
    if (t)
        topic_put(b, t);
    pthread_mutex_unlock(&b->create_lock);
    return rc;
}

int broker_topic_get(struct broker *b, const char *name, struct broker_topic *ret)
{
    struct topic *t = topic_get(b, name);
    if (!t)
        return PL_ENOENT;
    *ret = t->info;
    topic_put(b, t);
    return 0;
}

int broker_topic_list(struct broker *b, broker_topic_fn cb, void *arg)
{
    size_t n = 0, i = 0;
    pthread_mutex_lock(&b->lock);
    for (struct topic *t = b->topics; t; t = t->next)
        n++;
    struct broker_topic *all = calloc(n ? n : 1, sizeof(*all));
    for (struct topic *t = b->topics; all && t; t = t->next)
        all[i++] = t->info;
    pthread_mutex_unlock(&b->lock);
    if (!all)
        return PL_ENOMEM;
    int rc = 0;
    for (i = 0; i < n && !rc; i++)
        rc = cb(arg, &all[i]) ? 1 : 0;
    free(all);
    return 0;
}

static void part_info_locked(const struct part *p, struct broker_part_info *ret)
{
    ret->log_start = p->log_start;
    ret->next = p->next;
    ret->bytes = p->bytes;
    ret->segments = (int)p->nseg;
}

static int part_get(struct broker *b, const char *topic, int part, struct topic **rt,
                    struct part **rp)
{
    struct topic *t = topic_get(b, topic);
    if (!t)
        return PL_ENOENT;
    if (part < 0 || part >= t->info.partitions) {
        topic_put(b, t);
        return PL_ENOENT;
    }
    *rt = t;
    *rp = &t->parts[part];
    return 0;
}

int broker_part_info(struct broker *b, const char *topic, int part, struct broker_part_info *ret)
{
    struct topic *t;
    struct part *p;
    int rc = part_get(b, topic, part, &t, &p);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->lock);
    part_info_locked(p, ret);
    pthread_mutex_unlock(&p->lock);
    topic_put(b, t);
    return 0;
}

/* ---- append ---- */
struct broker_append {
    struct broker *b;
    struct topic *t;
    struct part *p;
    uint64_t seq;
    uint64_t seg_id, pos; /* where it went */
    int64_t next;         /* the offset after its last */
    uint8_t *all;         /* the buffers joined, when more than one */
    const uint8_t *data;
    size_t total;
    struct pl_wstage *ws;
};

/* A new segment named by the next offset to stage. Under append_lock. */
static int part_roll(struct broker *b, struct part *p)
{
    char name[32];
    struct pl_attr a;
    snprintf(name, sizeof(name), "%020lld", (long long)p->stage_next);
    int rc = pl_elem_create(b->st, p->dir, name, 0600, 0, 0, 1, &a);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->lock);
    rc = part_seg_add(p, p->stage_next, a.id, 0);
    if (!rc && p->nseg == 1)
        p->log_start = p->next;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void append_free(struct broker_append *ba)
{
    if (!ba)
        return;
    pl_elem_write_drop(ba->ws);
    if (ba->t)
        topic_put(ba->b, ba->t);
    free(ba->all);
    free(ba);
}

/* Set every staged (rcs[i] == 0) buffer's result to rc. */
static void append_fail(int n, int *rcs, int64_t *bases, int rc)
{
    for (int i = 0; i < n; i++)
        if (!rcs[i]) {
            rcs[i] = rc;
            bases[i] = -1;
        }
}

void broker_append_stage(struct broker *b, const char *topic, int part, uint8_t *const *recs,
                         const size_t *lens, int n, int *rcs, int64_t *bases,
                         struct broker_append **ret)
{
    struct broker_append *ba = NULL;
    int valid = 0, rc = 0;
    size_t total = 0;
    *ret = NULL;
    for (int i = 0; i < n; i++) {
        int nbatch;
        int64_t nrec;
        bases[i] = -1;
        rcs[i] = batch_validate(recs[i], lens[i], &nbatch, &nrec);
        if (!rcs[i]) {
            total += lens[i];
            valid++;
        }
    }
    if (!valid)
        return;
    ba = calloc(1, sizeof(*ba));
    if (!ba) {
        append_fail(n, rcs, bases, PL_ENOMEM);
        return;
    }
    ba->b = b;
    ba->total = total;
    rc = part_get(b, topic, part, &ba->t, &ba->p);
    if (rc) {
        append_fail(n, rcs, bases, rc);
        free(ba);
        return;
    }
    struct part *p = ba->p;
    pthread_mutex_lock(&p->append_lock);
    pthread_mutex_lock(&p->lock);
    rc = ba->t->deleted ? PL_ENOENT : p->broken;
    pthread_mutex_unlock(&p->lock);
    if (!rc && (!p->nseg || (int64_t)p->segs[p->nseg - 1].staged >= ba->t->info.segment_bytes))
        rc = part_roll(b, p);
    /* one buffer, one write: offsets consecutive from stage_next, buffer by buffer */
    if (!rc && valid > 1 && !(ba->all = malloc(total)))
        rc = PL_ENOMEM;
    int64_t off = p->stage_next;
    size_t at = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (rcs[i])
            continue;
        bases[i] = off;
        for (size_t k = 0; k < lens[i];) {
            struct batch_hdr h;
            size_t len;
            if (batch_parse(recs[i] + k, lens[i] - k, &h, &len)) { /* validated: never */
                rc = PL_EPROTO;
                break;
            }
            batch_set_base(recs[i] + k, off);
            off += h.last_offset_delta + 1;
            k += len;
        }
        if (ba->all) {
            memcpy(ba->all + at, recs[i], lens[i]);
            at += lens[i];
        } else {
            ba->data = recs[i];
        }
    }
    if (ba->all)
        ba->data = ba->all;
    struct bseg *s = rc ? NULL : &p->segs[p->nseg - 1];
    if (!rc) {
        ba->seg_id = s->id;
        ba->pos = s->staged;
        ba->next = off;
        rc = pl_elem_write_stage(b->st, s->id, s->staged, ba->data, total, &ba->ws);
    }
    if (!rc) {
        pthread_mutex_lock(&p->lock);
        s->staged += total;
        s->inflight++;
        p->stage_next = off;
        ba->seq = p->stage_seq++;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->append_lock);
    if (rc) {
        append_fail(n, rcs, bases, rc);
        append_free(ba);
        return;
    }
    *ret = ba;
}

/* The segment holding id, from the newest (appends go to the last ones). */
static struct bseg *part_seg_find(struct part *p, uint64_t id, uint32_t *ret_idx)
{
    for (size_t i = p->nseg; i-- > 0;)
        if (p->segs[i].id == id) {
            *ret_idx = (uint32_t)i;
            return &p->segs[i];
        }
    return NULL;
}

/* Index the committed batches of ba. Under p->lock. */
static int append_index(struct part *p, const struct broker_append *ba)
{
    uint32_t si;
    struct bseg *s = part_seg_find(p, ba->seg_id, &si);
    if (!s || s->size != ba->pos)
        return PL_EINTERNAL; /* in-order commits keep each segment whole */
    int rc = 0;
    uint64_t pos = ba->pos;
    for (size_t k = 0; k < ba->total && !rc;) {
        struct batch_hdr h;
        size_t len;
        if (batch_parse(ba->data + k, ba->total - k, &h, &len))
            break; /* validated: never */
        struct bentry e = {h.base_offset, h.base_offset + h.last_offset_delta, h.max_ts, si,
                           pos, (uint32_t)len};
        rc = part_index_add(p, &e);
        pos += len;
        k += len;
    }
    if (!rc) {
        s->size += ba->total;
        p->bytes += ba->total;
        p->next = ba->next;
    }
    return rc;
}

void broker_append_commit(struct broker_append *ba, const struct pl_svc_rec *svc, size_t nsvc,
                          int n, int *rcs, int64_t *bases)
{
    if (!ba)
        return;
    struct part *p = ba->p;
    struct broker *b = ba->b;
    pthread_mutex_lock(&p->lock);
    while (p->commit_seq != ba->seq)
        pthread_cond_wait(&p->turn, &p->lock);
    int rc = p->broken;
    pthread_mutex_unlock(&p->lock);
    if (!rc)
        rc = pl_elem_write_commit(ba->ws, svc, nsvc);
    else
        pl_elem_write_drop(ba->ws);
    ba->ws = NULL;
    pthread_mutex_lock(&p->lock);
    if (!rc)
        rc = append_index(p, ba);
    uint32_t si;
    struct bseg *s = part_seg_find(p, ba->seg_id, &si);
    if (s)
        s->inflight--;
    if (rc && !p->broken)
        p->broken = rc;
    p->commit_seq++;
    if (p->broken && p->commit_seq == p->stage_seq) {
        /* the last of the failed ones: later writes start where the committed
         * data ends; their offsets go on past the failed ones (a gap, as
         * compaction leaves) so no segment name runs ahead of its batches */
        for (size_t i = 0; i < p->nseg; i++)
            p->segs[i].staged = p->segs[i].size;
        p->broken = 0;
    }
    pthread_cond_broadcast(&p->turn);
    pthread_mutex_unlock(&p->lock);
    if (rc) {
        append_fail(n, rcs, bases, rc);
    } else {
        pthread_mutex_lock(&b->lock);
        b->appends++;
        pthread_cond_broadcast(&b->appended);
        pthread_mutex_unlock(&b->lock);
    }
    append_free(ba);
}

void broker_write_hold(struct broker *b)
{
    pl_write_hold(b->st);
}

void broker_write_release(struct broker *b)
{
    pl_write_release(b->st);
}

/* Stage and commit at once. */
static void part_append(struct broker *b, const char *topic, int part, uint8_t *const *recs,
                        const size_t *lens, int n, int *rcs, int64_t *bases,
                        const struct pl_svc_rec *svc, size_t nsvc)
{
    struct broker_append *ba;
    pl_write_hold(b->st);
    broker_append_stage(b, topic, part, recs, lens, n, rcs, bases, &ba);
    broker_append_commit(ba, svc, nsvc, n, rcs, bases);
    pl_write_release(b->st);
}

int broker_append_svc(struct broker *b, const char *topic, int part, uint8_t *recs, size_t n,
                      const struct pl_svc_rec *svc, size_t nsvc, int64_t *ret_base)
{
    int rc;
    part_append(b, topic, part, &recs, &n, 1, &rc, ret_base, svc, nsvc);
    return rc;
}

int broker_produce(struct broker *b, const char *topic, int part, uint8_t *recs, size_t n,
                   int64_t *ret_base)
{
    int rc;
    part_append(b, topic, part, &recs, &n, 1, &rc, ret_base, NULL, 0);
    return rc;
}

uint64_t broker_appends(struct broker *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t v = b->appends;
    pthread_mutex_unlock(&b->lock);
    return v;
}

void broker_wait(struct broker *b, uint64_t seen, int timeout_ms)
{
    struct timespec ts = pl_deadline_ms(timeout_ms);
    pthread_mutex_lock(&b->lock);
    while (b->appends == seen && !b->stopping)
        if (pthread_cond_timedwait(&b->appended, &b->lock, &ts))
            break;
    pthread_mutex_unlock(&b->lock);
}

/* ---- fetch ---- */
int broker_fetch(struct broker *b, const char *topic, int part, int64_t offset, size_t max_bytes,
                 uint8_t **ret_buf, size_t *ret_n, struct broker_part_info *ret_info)
{
    struct topic *t;
    struct part *p;
    *ret_buf = NULL;
    *ret_n = 0;
    int rc = part_get(b, topic, part, &t, &p);
    if (rc)
        return rc;
    /* what to read, decided under the lock; read after, the entries stay */
    struct piece {
        uint64_t id, pos, len;
    } pieces[8];
    int np = 0;
    size_t total = 0;
    pthread_mutex_lock(&p->lock);
    part_info_locked(p, ret_info);
    if (offset < p->log_start || offset > p->next) {
        rc = PL_ERANGE;
    } else {
        for (size_t i = part_find(p, offset); i < p->nent; i++) {
            const struct bentry *e = &p->ents[i];
            if (total && total + e->len > max_bytes)
                break;
            const struct bseg *s = &p->segs[e->seg];
            if (np && pieces[np - 1].id == s->id && pieces[np - 1].pos + pieces[np - 1].len == e->pos)
                pieces[np - 1].len += e->len;
            else if (np < (int)PL_ARRAY_LEN(pieces))
                pieces[np++] = (struct piece){s->id, e->pos, e->len};
            else
                break;
            total += e->len;
        }
    }
    /* retention may unlink a segment while we read it: keep it readable */
    for (int i = 0; i < np; i++)
        pl_elem_pin(b->st, pieces[i].id);
    pthread_mutex_unlock(&p->lock);
    uint8_t *buf = !rc && total ? malloc(total) : NULL;
    if (!rc && total && !buf)
        rc = PL_ENOMEM;
    size_t at = 0;
    for (int i = 0; i < np; i++) {
        size_t got = 0;
        if (!rc)
            rc = pl_elem_read(b->st, pieces[i].id, PL_VIEW_LIVE, pieces[i].pos, buf + at,
                              pieces[i].len, &got);
        if (!rc && got != pieces[i].len)
            rc = PL_EIO;
        at += pieces[i].len;
        pl_elem_unpin(b->st, pieces[i].id);
    }
    topic_put(b, t);
    if (rc) {
        free(buf);
        return rc;
    }
    *ret_buf = buf;
    *ret_n = total;
    return 0;
}

int broker_offset_for_time(struct broker *b, const char *topic, int part, int64_t ts,
                           int64_t *ret_off, int64_t *ret_ts)
{
    struct topic *t;
    struct part *p;
    int rc = part_get(b, topic, part, &t, &p);
    if (rc)
        return rc;
    *ret_off = -1;
    *ret_ts = -1;
    struct bentry e = {0};
    uint64_t seg = 0;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->nent; i++)
        if (p->ents[i].max_ts >= ts) {
            e = p->ents[i];
            seg = p->segs[e.seg].id;
            pl_elem_pin(b->st, seg); /* retention may drop it while we read */
            break;
        }
    pthread_mutex_unlock(&p->lock);
    if (seg) {
        /* the batch's own first record at or after ts when we can read its
         * records (uncompressed); else the batch */
        *ret_off = e.base;
        *ret_ts = e.max_ts;
        uint8_t *buf = malloc(e.len);
        size_t got = 0;
        int32_t delta;
        int64_t found;
        if (buf && pl_elem_read(b->st, seg, PL_VIEW_LIVE, e.pos, buf, e.len, &got) == 0 &&
            got == e.len && batch_find_time(buf, e.len, ts, &delta, &found) == 0) {
            *ret_off = e.base + delta;
            *ret_ts = found;
        }
        free(buf);
        pl_elem_unpin(b->st, seg);
    }
    topic_put(b, t);
    return 0;
}

/* ---- retention ---- */
/* Drop the oldest segment when retention says so (never the one being
 * appended to). Returns 1 when one went. */
static int part_retain(struct broker *b, struct topic *t, struct part *p, int64_t now_ms)
{
    pthread_mutex_lock(&p->append_lock);
    pthread_mutex_lock(&p->lock);
    int drop = 0;
    if (p->nseg > 1 && !p->segs[0].inflight) {
        struct bseg *s = &p->segs[0];
        int64_t newest = INT64_MIN;
        size_t n = 0;
        while (n < p->nent && p->ents[n].seg == 0) {
            newest = PL_MAX(newest, p->ents[n].max_ts);
            n++;
        }
        if (t->info.retention_ms >= 0 && newest != INT64_MIN &&
            newest < now_ms - t->info.retention_ms)
            drop = 1;
        if (t->info.retention_bytes >= 0 && (int64_t)(p->bytes - s->size) >= t->info.retention_bytes)
            drop = 1;
        if (drop) {
            uint64_t id = s->id;
            int64_t base = s->base;
            p->bytes -= s->size;
            memmove(p->ents, p->ents + n, (p->nent - n) * sizeof(*p->ents));
            p->nent -= n;
            for (size_t i = 0; i < p->nent; i++)
                p->ents[i].seg--;
            memmove(p->segs, p->segs + 1, (p->nseg - 1) * sizeof(*p->segs));
            p->nseg--;
            p->log_start = p->segs[0].base;
            pthread_mutex_unlock(&p->lock);
            char name[32];
            snprintf(name, sizeof(name), "%020lld", (long long)base);
            int rc = pl_elem_unlink(b->st, p->dir, name);
            if (rc)
                pl_log(PL_LOG_WARN, "kafka", "retention of %s/%d segment %s (id %llu): %s",
                       t->info.name, p->index, name, (unsigned long long)id, pl_strerror(rc));
            pthread_mutex_unlock(&p->append_lock);
            return 1;
        }
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->append_lock);
    return 0;
}

static void retain_all(struct broker *b)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    pthread_mutex_lock(&b->lock);
    size_t n = 0;
    for (struct topic *t = b->topics; t; t = t->next)
        n++;
    struct topic **all = calloc(n ? n : 1, sizeof(struct topic *));
    n = 0;
    for (struct topic *t = b->topics; all && t; t = t->next) {
        t->refs++;
        all[n++] = t;
    }
    pthread_mutex_unlock(&b->lock);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < all[i]->info.partitions; k++)
            while (part_retain(b, all[i], &all[i]->parts[k], now_ms))
                ;
        topic_put(b, all[i]);
    }
    free(all);
}

static void *maint_main(void *arg)
{
    struct broker *b = arg;
    pthread_mutex_lock(&b->lock);
    while (!b->stopping) {
        struct timespec ts = pl_deadline_ms(250);
        pthread_cond_timedwait(&b->maint_cond, &b->lock, &ts);
        if (b->stopping)
            break;
        pthread_mutex_unlock(&b->lock);
        group_tick(b);
        if (++b->ticks % 4 == 0)
            retain_all(b);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* ---- open ---- */
struct load_ctx {
    struct broker *b;
    int rc;
};

static int load_cb(void *arg, const char *key, const void *val, size_t n)
{
    struct load_ctx *l = arg;
    struct broker_topic info = {0};
    char v[128];
    long long parts, rms, rbytes, sbytes;
    if (n >= sizeof(v))
        return 0;
    memcpy(v, val, n);
    v[n] = 0;
    if (sscanf(v, "%lld %lld %lld %lld", &parts, &rms, &rbytes, &sbytes) != 4 || parts < 1 ||
        parts > BROKER_PARTS_MAX)
        return 0;
    snprintf(info.name, sizeof(info.name), "%s", key + strlen("kafka/topic/"));
    info.partitions = (int)parts;
    info.retention_ms = rms;
    info.retention_bytes = rbytes;
    info.segment_bytes = sbytes;
    struct topic *t;
    l->rc = topic_build(l->b, &info, &t);
    if (l->rc) {
        pl_log(PL_LOG_ERROR, "kafka", "cannot load topic %s: %s", info.name, pl_strerror(l->rc));
        return 1;
    }
    t->next = l->b->topics;
    l->b->topics = t;
    return 0;
}

int broker_open(struct pl_store *st, const struct broker_opts *o, struct broker **ret)
{
    *ret = NULL;
    struct broker *b = calloc(1, sizeof(*b));
    if (!b)
        return PL_ENOMEM;
    b->st = st;
    b->opts = *o;
    if (b->opts.default_partitions < 1)
        b->opts.default_partitions = 1;
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_init(&b->create_lock, NULL);
    pthread_cond_init(&b->appended, NULL);
    pthread_cond_init(&b->maint_cond, NULL);
    pthread_cond_init(&b->ev_cond, NULL);
    group_init(b);
    struct load_ctx l = {b, 0};
    int rc = pl_svc_scan(st, "kafka/topic/", load_cb, &l);
    if (!rc)
        rc = l.rc;
    if (!rc && pthread_create(&b->maint, NULL, maint_main, b))
        rc = PL_ENOMEM;
    if (!rc)
        b->maint_started = 1;
    if (!rc && o->events)
        rc = events_start(b);
    if (rc) {
        broker_close(b);
        return rc;
    }
    *ret = b;
    return 0;
}

int broker_auto_create(const struct broker *b)
{
    return b->opts.auto_create;
}

struct pl_store *broker_store(const struct broker *b)
{
    return b->st;
}

void broker_close(struct broker *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->appended);
    pthread_cond_broadcast(&b->maint_cond);
    pthread_mutex_unlock(&b->lock);
    events_stop(b);
    group_stop(b);
    if (b->maint_started)
        pthread_join(b->maint, NULL);
    while (b->topics) {
        struct topic *t = b->topics;
        b->topics = t->next;
        topic_free(t);
    }
    group_free(b);
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->create_lock);
    pthread_cond_destroy(&b->appended);
    pthread_cond_destroy(&b->maint_cond);
    pthread_cond_destroy(&b->ev_cond);
    free(b);
}

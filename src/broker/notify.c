/* S3 bucket notifications (broker.h): each bucket's topic configurations
 * are one service record, strings length-prefixed (u16 BE) in rule order:
 * id, topic, events joined by ',', prefix, suffix, the topic as named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "broker/broker_int.h"

#define NOTIFY_KEY "kafka/notify/"

static const char *const event_names[] = {
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectCreated:Create",
    "s3:ObjectCreated:Write",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRenamed",
    "s3:ObjectMetadata:*",
    "s3:ObjectMetadata:Update",
    "s3:*",
};

int broker_notify_event_valid(const char *name)
{
    for (size_t i = 0; i < sizeof(event_names) / sizeof(event_names[0]); i++)
        if (!strcmp(name, event_names[i]))
            return 1;
    return 0;
}

static int put_str(struct pl_buf *b, const char *s)
{
    size_t n = strlen(s);
    uint8_t l[2];
    pl_put_be16(l, (uint16_t)n);
    int rc = pl_buf_add(b, l, 2);
    return rc ? rc : pl_buf_add(b, s, n);
}

static int get_str(const uint8_t **p, const uint8_t *end, char *out, size_t cap)
{
    if (end - *p < 2)
        return PL_ECORRUPT;
    size_t n = pl_get_be16(*p);
    *p += 2;
    if ((size_t)(end - *p) < n || n >= cap)
        return PL_ECORRUPT;
    memcpy(out, *p, n);
    out[n] = 0;
    *p += n;
    return 0;
}

int broker_notify_set(struct broker *b, const char *bucket, const struct broker_notify *cfg)
{
    char k[128];
    struct pl_buf v;
    int rc = 0;
    if (cfg->n < 0 || cfg->n > BROKER_NOTIFY_MAX)
        return PL_ERANGE;
    pl_buf_init(&v);
    for (int i = 0; !rc && i < cfg->n; i++) {
        const struct broker_notify_rule *r = &cfg->rules[i];
        char events[BROKER_NOTIFY_EVENTS * 64] = "";
        struct topic *t = topic_get(b, r->topic);
        if (!t) {
            rc = PL_ENOTOPIC;
            break;
        }
        topic_put(b, t);
        if (r->nevents < 1 || r->nevents > BROKER_NOTIFY_EVENTS) {
            rc = PL_EINVAL;
            break;
        }
        size_t el = 0;
        for (int e = 0; !rc && e < r->nevents; e++) {
            if (!broker_notify_event_valid(r->events[e]))
                rc = PL_EINVAL;
            /* 8 names of under 64 bytes and their commas fit */
            el += (size_t)snprintf(events + el, sizeof(events) - el, "%s%s", e ? "," : "",
                                   r->events[e]);
        }
        if (!rc)
            rc = put_str(&v, r->id);
        if (!rc)
            rc = put_str(&v, r->topic);
        if (!rc)
            rc = put_str(&v, events);
        if (!rc)
            rc = put_str(&v, r->prefix);
        if (!rc)
            rc = put_str(&v, r->suffix);
        if (!rc)
            rc = put_str(&v, r->arn);
    }
    snprintf(k, sizeof(k), NOTIFY_KEY "%s", bucket);
    struct pl_svc_rec rec = {k, cfg->n ? v.data : NULL, v.len};
    if (!rc)
        rc = pl_svc_write(b->st, &rec, 1);
    pl_buf_release(&v);
    return rc;
}

int broker_notify_get(struct broker *b, const char *bucket, struct broker_notify **ret)
{
    char k[128];
    size_t n;
    uint8_t *v = NULL;
    struct broker_notify *cfg = calloc(1, sizeof(*cfg));
    *ret = NULL;
    if (!cfg)
        return PL_ENOMEM;
    snprintf(k, sizeof(k), NOTIFY_KEY "%s", bucket);
    int rc = pl_svc_get(b->st, k, NULL, 0, &n);
    if (rc == PL_ENOENT) {
        *ret = cfg;
        return 0;
    }
    if (!rc && !(v = malloc(n)))
        rc = PL_ENOMEM;
    if (!rc)
        rc = pl_svc_get(b->st, k, v, n, &n); /* a concurrent change: the shorter wins */
    const uint8_t *p = v, *end = v + n;
    while (!rc && p < end && cfg->n < BROKER_NOTIFY_MAX) {
        struct broker_notify_rule *r = &cfg->rules[cfg->n];
        char events[BROKER_NOTIFY_EVENTS * 64];
        rc = get_str(&p, end, r->id, sizeof(r->id));
        if (!rc)
            rc = get_str(&p, end, r->topic, sizeof(r->topic));
        if (!rc)
            rc = get_str(&p, end, events, sizeof(events));
        if (!rc)
            rc = get_str(&p, end, r->prefix, sizeof(r->prefix));
        if (!rc)
            rc = get_str(&p, end, r->suffix, sizeof(r->suffix));
        if (!rc)
            rc = get_str(&p, end, r->arn, sizeof(r->arn));
        for (char *save = NULL, *e = rc ? NULL : strtok_r(events, ",", &save);
             e && r->nevents < BROKER_NOTIFY_EVENTS; e = strtok_r(NULL, ",", &save))
            snprintf(r->events[r->nevents++], sizeof(r->events[0]), "%s", e);
        cfg->n++;
    }
    free(v);
    if (rc) {
        free(cfg);
        return rc;
    }
    *ret = cfg;
    return 0;
}

/* The event's type: the first "type" member, CloudEvents' own. */
static int json_type(const char *json, size_t jn, char *out, size_t cap)
{
    static const char tag[] = "\"type\":\"";
    size_t tl = sizeof(tag) - 1;
    for (size_t i = 0; i + tl <= jn; i++) {
        if (memcmp(json + i, tag, tl))
            continue;
        const char *s = json + i + tl, *e = memchr(s, '"', jn - i - tl);
        if (!e || (size_t)(e - s) >= cap)
            return 0;
        memcpy(out, s, (size_t)(e - s));
        out[e - s] = 0;
        return 1;
    }
    return 0;
}

int broker_notify_match(const struct broker_notify_rule *r, const char *json, size_t jn,
                        const char *key, size_t kn)
{
    char type[64];
    size_t pn = strlen(r->prefix), sn = strlen(r->suffix);
    if (pn > kn || memcmp(key, r->prefix, pn) || sn > kn || memcmp(key + kn - sn, r->suffix, sn))
        return 0;
    if (!json_type(json, jn, type, sizeof(type)))
        return 0;
    for (int i = 0; i < r->nevents; i++) {
        const char *pat = r->events[i];
        size_t n = strlen(pat);
        if (n && pat[n - 1] == '*' ? !strncmp(type, pat, n - 1) : !strcmp(type, pat))
            return 1;
    }
    return 0;
}

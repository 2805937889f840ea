/* `plenum topic` and `plenum group`: admin ops over the broker. In the
 * server they act on the server's broker (the one the Kafka head serves);
 * with no server, the command opens a broker on the data directory itself
 * for the one call. */
#include <stdlib.h>

#include "broker/broker.h"
#include "cmd/cli.h"
#include "proto/admin/ops.h"

static struct broker *cur;

void topics_set_broker(struct broker *b)
{
    cur = b;
}

static int need_broker(json_t *res)
{
    if (cur)
        return 0;
    json_object_set_new(res, "message",
                        json_string("the server runs without its Kafka head (--kafka off)"));
    return PL_EINVAL;
}

static json_t *topic_json(const struct broker_topic *t)
{
    return json_pack("{s:s, s:i, s:I, s:I, s:I}", "name", t->name, "partitions", t->partitions,
                     "retention_ms", (json_int_t)t->retention_ms, "retention_bytes",
                     (json_int_t)t->retention_bytes, "segment_bytes",
                     (json_int_t)t->segment_bytes);
}

static int op_topic_create(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    const char *name = json_string_value(json_object_get(args, "name"));
    json_int_t parts = json_integer_value(json_object_get(args, "partitions"));
    json_t *cfg = json_object_get(args, "configs");
    const char *kv[2 * 16 + 1] = {0};
    size_t n = 0;
    const char *k;
    json_t *v;
    int rc = need_broker(res);
    if (rc)
        return rc;
    if (!name)
        return PL_EINVAL;
    json_object_foreach(cfg, k, v)
    {
        if (n + 2 >= PL_ARRAY_LEN(kv) || !json_is_string(v))
            return PL_EINVAL;
        kv[n++] = k;
        kv[n++] = json_string_value(v);
    }
    rc = broker_topic_create(cur, name, parts ? (int)parts : 1, kv);
    if (rc == PL_EINVAL)
        json_object_set_new(res, "message",
                            json_string(broker_topic_name_valid(name)
                                            ? "topic names are 1-249 of [a-zA-Z0-9._-]"
                                            : "supported configs: retention.ms, retention.bytes, "
                                              "segment.bytes (>= 4096), cleanup.policy=delete"));
    else if (rc == PL_ERANGE)
        json_object_set_new(res, "message", json_string("partitions must be 1..1024"));
    else if (rc == PL_EEXIST)
        json_object_set_new(res, "message", json_string("the topic already exists"));
    if (!rc) {
        struct broker_topic t;
        if (broker_topic_get(cur, name, &t) == 0)
            json_object_set_new(res, "topic", topic_json(&t));
    }
    return rc;
}

static int topic_list_cb(void *arg, const struct broker_topic *t)
{
    json_array_append_new(arg, topic_json(t));
    return 0;
}

static int op_topic_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)args;
    (void)io;
    int rc = need_broker(res);
    if (rc)
        return rc;
    json_t *a = json_array();
    rc = broker_topic_list(cur, topic_list_cb, a);
    json_object_set_new(res, "topics", a);
    return rc;
}

static int op_topic_describe(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    const char *name = json_string_value(json_object_get(args, "name"));
    struct broker_topic t;
    int rc = need_broker(res);
    if (!rc)
        rc = name ? broker_topic_get(cur, name, &t) : PL_EINVAL;
    if (rc == PL_ENOENT)
        json_object_set_new(res, "message", json_string("no such topic (plenum topic list)"));
    if (rc)
        return rc;
    json_object_set_new(res, "topic", topic_json(&t));
    json_t *parts = json_array();
    for (int p = 0; p < t.partitions; p++) {
        struct broker_part_info pi;
        if (broker_part_info(cur, name, p, &pi) == 0)
            json_array_append_new(parts, json_pack("{s:i, s:I, s:I, s:I, s:i}", "partition", p,
                                                   "log_start", (json_int_t)pi.log_start,
                                                   "next_offset", (json_int_t)pi.next, "bytes",
                                                   (json_int_t)pi.bytes, "segments",
                                                   pi.segments));
    }
    json_object_set_new(res, "partitions", parts);
    return 0;
}

static int op_topic_delete(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    const char *name = json_string_value(json_object_get(args, "name"));
    int rc = need_broker(res);
    if (!rc)
        rc = name ? broker_topic_delete(cur, name) : PL_EINVAL;
    if (rc == PL_ENOENT)
        json_object_set_new(res, "message", json_string("no such topic (plenum topic list)"));
    return rc;
}

struct gctx {
    json_t *arr;
};

static int group_cb(void *arg, const struct broker_group_info *g)
{
    struct gctx *c = arg;
    json_t *members = json_array();
    for (int i = 0; i < g->nmembers; i++)
        json_array_append_new(members, json_pack("{s:s, s:s, s:s}", "id", g->members[i].id,
                                                 "client_id", g->members[i].client_id, "host",
                                                 g->members[i].client_host));
    json_array_append_new(c->arr, json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", g->id, "state",
                                            g->state, "protocol_type", g->protocol_type,
                                            "protocol", g->protocol, "members", members));
    return 0;
}

static int op_group_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)args;
    (void)io;
    int rc = need_broker(res);
    if (rc)
        return rc;
    struct gctx c = {json_array()};
    rc = broker_group_list(cur, group_cb, &c);
    json_object_set_new(res, "groups", c.arr);
    return rc;
}

static int offsets_topic_cb(void *arg, const struct broker_topic *t)
{
    json_t *a = arg;
    const char *group = json_string_value(json_object_get(json_array_get(a, 0), "group"));
    json_t *offs = json_array_get(a, 1);
    for (int p = 0; p < t->partitions; p++) {
        int64_t off;
        char meta[256];
        struct broker_part_info pi;
        if (broker_committed(cur, group, t->name, p, &off, meta, sizeof(meta)) == 0 &&
            broker_part_info(cur, t->name, p, &pi) == 0)
            json_array_append_new(offs, json_pack("{s:s, s:i, s:I, s:I}", "topic", t->name,
                                                  "partition", p, "offset", (json_int_t)off,
                                                  "lag", (json_int_t)(pi.next - off)));
    }
    return 0;
}

static int op_group_describe(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    const char *group = json_string_value(json_object_get(args, "group"));
    int rc = need_broker(res);
    if (rc)
        return rc;
    if (!group)
        return PL_EINVAL;
    struct gctx c = {json_array()};
    rc = broker_group_describe(cur, group, group_cb, &c);
    if (rc == PL_ENOENT) {
        json_decref(c.arr);
        json_object_set_new(res, "message", json_string("no such group (plenum group list)"));
        return rc;
    }
    json_t *g = json_incref(json_array_get(c.arr, 0));
    json_decref(c.arr);
    if (rc < 0 || !g) {
        json_decref(g);
        return rc < 0 ? rc : PL_ENOENT;
    }
    json_t *pair = json_pack("[{s:s}, []]", "group", group);
    rc = broker_topic_list(cur, offsets_topic_cb, pair);
    json_object_set(g, "offsets", json_array_get(pair, 1));
    json_decref(pair);
    json_object_update(res, g);
    json_decref(g);
    return rc;
}

static int op_group_reset(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    const char *group = json_string_value(json_object_get(args, "group"));
    const char *topic = json_string_value(json_object_get(args, "topic"));
    const char *to = json_string_value(json_object_get(args, "to"));
    int rc = need_broker(res);
    if (rc)
        return rc;
    if (!group || !topic || !to)
        return PL_EINVAL;
    char *end = "";
    int64_t off = !strcmp(to, "earliest") ? -2 : !strcmp(to, "latest") ? -1 : strtoll(to, &end, 10);
    if (*end || off < -2 || (off < 0 && strcmp(to, "earliest") && strcmp(to, "latest"))) {
        json_object_set_new(res, "message", json_string("--to takes earliest, latest or an offset"));
        return PL_EINVAL;
    }
    rc = broker_group_reset(cur, group, topic, off);
    if (rc == PL_EBUSY)
        json_object_set_new(res, "message",
                            json_string("the group has active members: stop its consumers first"));
    else if (rc == PL_ENOENT)
        json_object_set_new(res, "message", json_string("no such topic (plenum topic list)"));
    return rc;
}

static const struct op_def topic_ops[] = {
    {"topic-create", 0, op_topic_create},     {"topic-list", 0, op_topic_list},
    {"topic-describe", 0, op_topic_describe}, {"topic-delete", 0, op_topic_delete},
    {"group-list", 0, op_group_list},         {"group-describe", 0, op_group_describe},
    {"group-reset", 0, op_group_reset},
};

int topics_register(void)
{
    int rc = 0;
    for (size_t i = 0; i < PL_ARRAY_LEN(topic_ops) && !rc; i++)
        rc = ops_add(&topic_ops[i]);
    return rc;
}

/* ---- topic / group ----
 * Through the server's broker when a server holds the data directory; else
 * a broker opened here for the one call. */
static int broker_backend(struct opts *o, struct backend *b, struct broker **ret)
{
    *ret = NULL;
    if (topics_register())
        return EXIT_FAIL; /* only when called twice in one process */
    if (cli_backend_open(o, b))
        return EXIT_FAIL;
    if (!b->st)
        return 0;
    struct broker_opts bo = {0};
    int rc = broker_open(b->st, &bo, ret);
    if (rc) {
        backend_close(b);
        return cli_fail(rc, "open the broker", NULL);
    }
    topics_set_broker(*ret);
    return 0;
}

static void broker_backend_close(struct backend *b, struct broker *br)
{
    topics_set_broker(NULL);
    broker_close(br);
    backend_close(b);
}

int cmd_topic(struct opts *o)
{
    static const char *const verbs[] = {"create", "list", "describe", "delete"};
    static const int nargs[] = {1, 0, 1, 1};
    int v = cli_pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                          "create NAME [--partitions N] [--config K=V]..., list, describe NAME or "
                          "delete NAME");
    if (v < 0)
        return EXIT_USAGE;
    json_t *a = json_object();
    if (v != 1)
        json_object_set_new(a, "name", json_string(o->pos[1]));
    if (v == 0) {
        char *end = NULL;
        long parts = o->partitions ? strtol(o->partitions, &end, 10) : 1;
        if (o->partitions && (*end || parts < 1 || parts > BROKER_PARTS_MAX)) {
            json_decref(a);
            return cli_usage_error("--partitions '%s': give 1..1024", o->partitions);
        }
        json_object_set_new(a, "partitions", json_integer(parts));
        json_t *cfg = json_object();
        for (int i = 0; i < o->nconfigs; i++) {
            const char *eq = strchr(o->configs[i], '=');
            if (!eq || eq == o->configs[i]) {
                json_decref(cfg);
                json_decref(a);
                return cli_usage_error("--config '%s': write NAME=VALUE", o->configs[i]);
            }
            char k[128];
            snprintf(k, sizeof(k), "%.*s", (int)(eq - o->configs[i]), o->configs[i]);
            json_object_set_new(cfg, k, json_string(eq + 1));
        }
        json_object_set_new(a, "configs", cfg);
    }
    struct backend b;
    struct broker *br;
    if (broker_backend(o, &b, &br)) {
        json_decref(a);
        return EXIT_FAIL;
    }
    static const char *const ops[] = {"topic-create", "topic-list", "topic-describe",
                                      "topic-delete"};
    char what[400];
    json_t *res = NULL;
    snprintf(what, sizeof(what), "topic %s%s%s", verbs[v], v != 1 ? " " : "",
             v != 1 ? o->pos[1] : "");
    int r = cli_call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        cli_print_json(res);
    } else if (!r && v == 1) {
        json_t *e;
        size_t i;
        printf("%-40s %10s %14s\n", "TOPIC", "PARTITIONS", "RETENTION_MS");
        json_array_foreach(json_object_get(res, "topics"), i, e)
        printf("%-40s %10lld %14lld\n", json_string_value(json_object_get(e, "name")),
               (long long)json_integer_value(json_object_get(e, "partitions")),
               (long long)json_integer_value(json_object_get(e, "retention_ms")));
    } else if (!r && v == 2) {
        json_t *t = json_object_get(res, "topic"), *e;
        size_t i;
        printf("topic %s: %lld partitions, retention.ms %lld, retention.bytes %lld, "
               "segment.bytes %lld\n",
               json_string_value(json_object_get(t, "name")),
               (long long)json_integer_value(json_object_get(t, "partitions")),
               (long long)json_integer_value(json_object_get(t, "retention_ms")),
               (long long)json_integer_value(json_object_get(t, "retention_bytes")),
               (long long)json_integer_value(json_object_get(t, "segment_bytes")));
        printf("%10s %14s %14s %14s %9s\n", "PARTITION", "LOG_START", "NEXT_OFFSET", "BYTES",
               "SEGMENTS");
        json_array_foreach(json_object_get(res, "partitions"), i, e)
        printf("%10lld %14lld %14lld %14lld %9lld\n",
               (long long)json_integer_value(json_object_get(e, "partition")),
               (long long)json_integer_value(json_object_get(e, "log_start")),
               (long long)json_integer_value(json_object_get(e, "next_offset")),
               (long long)json_integer_value(json_object_get(e, "bytes")),
               (long long)json_integer_value(json_object_get(e, "segments")));
    } else if (!r) {
        printf("%s: %s\n", v == 0 ? "created" : "deleted", o->pos[1]);
    }
    json_decref(res);
    broker_backend_close(&b, br);
    return r;
}

int cmd_group(struct opts *o)
{
    static const char *const verbs[] = {"list", "describe", "reset-offsets"};
    static const int nargs[] = {0, 1, 2};
    int v = cli_pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                          "list, describe GROUP or reset-offsets GROUP TOPIC --to "
                          "earliest|latest|OFFSET");
    if (v < 0)
        return EXIT_USAGE;
    if (v == 2 && !o->to)
        return cli_usage_error("%s", "needs --to earliest, latest or an offset");
    json_t *a = json_object();
    if (v >= 1)
        json_object_set_new(a, "group", json_string(o->pos[1]));
    if (v == 2) {
        json_object_set_new(a, "topic", json_string(o->pos[2]));
        json_object_set_new(a, "to", json_string(o->to));
    }
    struct backend b;
    struct broker *br;
    if (broker_backend(o, &b, &br)) {
        json_decref(a);
        return EXIT_FAIL;
    }
    static const char *const ops[] = {"group-list", "group-describe", "group-reset"};
    char what[400];
    json_t *res = NULL, *e;
    size_t i;
    snprintf(what, sizeof(what), "group %s%s%s", verbs[v], v ? " " : "", v ? o->pos[1] : "");
    int r = cli_call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        cli_print_json(res);
    } else if (!r && v == 0) {
        printf("%-40s %-20s %8s\n", "GROUP", "STATE", "MEMBERS");
        json_array_foreach(json_object_get(res, "groups"), i, e)
        printf("%-40s %-20s %8zu\n", json_string_value(json_object_get(e, "id")),
               json_string_value(json_object_get(e, "state")),
               json_array_size(json_object_get(e, "members")));
    } else if (!r && v == 1) {
        printf("group %s: %s, %zu members\n", json_string_value(json_object_get(res, "id")),
               json_string_value(json_object_get(res, "state")),
               json_array_size(json_object_get(res, "members")));
        json_array_foreach(json_object_get(res, "members"), i, e)
        printf("  member %s (%s, %s)\n", json_string_value(json_object_get(e, "id")),
               json_string_value(json_object_get(e, "client_id")),
               json_string_value(json_object_get(e, "host")));
        printf("%-40s %10s %14s %10s\n", "TOPIC", "PARTITION", "OFFSET", "LAG");
        json_array_foreach(json_object_get(res, "offsets"), i, e)
        printf("%-40s %10lld %14lld %10lld\n", json_string_value(json_object_get(e, "topic")),
               (long long)json_integer_value(json_object_get(e, "partition")),
               (long long)json_integer_value(json_object_get(e, "offset")),
               (long long)json_integer_value(json_object_get(e, "lag")));
    } else if (!r) {
        printf("reset: group %s on %s to %s\n", o->pos[1], o->pos[2], o->to);
    }
    json_decref(res);
    broker_backend_close(&b, br);
    return r;
}

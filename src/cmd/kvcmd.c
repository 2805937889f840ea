/* `plenum kv`: admin ops over the KV cache. In the server they act on the
 * cache the RESP head serves; with no server, the command opens the cache's
 * flash tier on the data directory for the one call. */
#include "cmd/cli.h"
#include "kv/kv.h"
#include "proto/admin/ops.h"

static struct kv *cur;

void kvcmd_set(struct kv *kv)
{
    cur = kv;
}

static int need_kv(json_t *res)
{
    if (cur)
        return 0;
    json_object_set_new(res, "message",
                        json_string("the server runs without its RESP head (--resp off)"));
    return PL_EINVAL;
}

static int op_kv_stats(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)args;
    (void)io;
    struct kv_stats k;
    int rc = need_kv(res);
    if (rc)
        return rc;
    kv_stats(cur, &k);
#define KS(f) json_object_set_new(res, #f, json_integer((json_int_t)k.f))
    KS(keys);
    KS(dram_keys);
    KS(flash_keys);
    KS(dram_used);
    KS(dram_max);
    KS(flash_used);
    KS(flash_max);
    KS(hits_dram);
    KS(hits_flash);
    KS(misses);
    KS(demotions);
    KS(promotions);
    KS(evictions);
    KS(expired);
    KS(demote_pending);
#undef KS
    return 0;
}

static int op_kv_flush(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    const char *ns = json_string_value(json_object_get(args, "namespace"));
    int rc = need_kv(res);
    return rc ? rc : kv_flush(cur, ns);
}

static int op_kv_config(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)io;
    json_int_t dram = json_integer_value(json_object_get(args, "dram_mb"));
    json_int_t flash = json_integer_value(json_object_get(args, "flash_mb"));
    int rc = need_kv(res);
    if (rc)
        return rc;
    if (dram < 0 || flash < 0)
        return PL_EINVAL;
    kv_config(cur, (uint64_t)dram << 20, (uint64_t)flash << 20);
    return op_kv_stats(st, args, res, io);
}

static const struct op_def kv_ops[] = {
    {"kv-stats", 0, op_kv_stats},
    {"kv-flush", 0, op_kv_flush},
    {"kv-config", 0, op_kv_config},
};

int kvcmd_register(void)
{
    static int done;
    int rc = 0;
    for (size_t i = 0; i < PL_ARRAY_LEN(kv_ops) && !rc && !done; i++)
        rc = ops_add(&kv_ops[i]);
    done = 1;
    return rc;
}

/* `plenum kv`: the server's cache, or the flash tier of the data directory. */
int cmd_kv(struct opts *o)
{
    static const char *const verbs[] = {"stats", "flush", "flush", "config"};
    static const int nargs[] = {0, 0, 1, 2};
    int v = -1;
    for (int i = 0; o->npos && i < (int)PL_ARRAY_LEN(verbs); i++)
        if (!strcmp(o->pos[0], verbs[i]) && o->npos == 1 + nargs[i])
            v = i;
    if (v < 0)
        return cli_usage_error("expects %s", "stats, flush [NAMESPACE] or config DRAM_MB FLASH_MB");
    json_t *a = json_object();
    if (v == 2)
        json_object_set_new(a, "namespace", json_string(o->pos[1]));
    if (v == 3) {
        char *e1, *e2;
        long long d = strtoll(o->pos[1], &e1, 10), f = strtoll(o->pos[2], &e2, 10);
        if (*e1 || *e2 || d < 0 || f < 0) {
            char bad[200];
            snprintf(bad, sizeof(bad), "%s %s", o->pos[1], o->pos[2]);
            json_decref(a);
            return cli_usage_error("config wants two sizes in MiB (0 keeps one), not '%s'", bad);
        }
        json_object_set_new(a, "dram_mb", json_integer(d));
        json_object_set_new(a, "flash_mb", json_integer(f));
    }
    struct backend b;
    struct kv *kv = NULL;
    if (kvcmd_register() || cli_backend_open(o, &b)) {
        json_decref(a);
        return EXIT_FAIL;
    }
    if (b.st && v == 3) {
        json_decref(a);
        backend_close(&b);
        return cli_usage_error("%s", "config changes a running server's cache: start the server "
                               "(the [kv] section of its config file sets the bounds at start)");
    }
    if (b.st) {
        int rc = kv_open(b.st, &(struct kv_opts){0, 0}, &kv);
        if (rc) {
            json_decref(a);
            backend_close(&b);
            return cli_fail(rc, "open the KV cache", NULL);
        }
        kvcmd_set(kv);
    }
    static const char *const ops[] = {"kv-stats", "kv-flush", "kv-flush", "kv-config"};
    json_t *res = NULL;
    int r = cli_call(&b, ops[v], a, NULL, &res, "kv");
    if (!r && (o->json || v != 2)) {
        if (o->json) {
            cli_print_json(res);
        } else {
            const char *k;
            json_t *val;
            json_object_foreach(res, k, val)
            printf("%-16s %lld\n", k, (long long)json_integer_value(val));
        }
    }
    json_decref(res);
    kvcmd_set(NULL);
    kv_close(kv);
    backend_close(&b);
    return r ? EXIT_FAIL : 0;
}

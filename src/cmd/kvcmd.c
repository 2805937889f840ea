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

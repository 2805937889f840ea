/* NFS export rules, kept in the metadata so the CLI and the server share them.
 * record: path \0 net BE32 mask BE32 -> readonly(1) squash(1) anon_uid LE32
 * anon_gid LE32 */
#include "store/store_int.h"

#include <stdio.h>
#include <stdlib.h>

#define EXPORT_VAL 10

int pl_export_clients_parse(const char *s, uint32_t *ret_net, uint32_t *ret_mask)
{
    unsigned a, b, c, d, bits = 32;
    char tail;
    if (!strcmp(s, "*")) {
        *ret_net = *ret_mask = 0;
        return 0;
    }
    int n = sscanf(s, "%u.%u.%u.%u/%u%c", &a, &b, &c, &d, &bits, &tail);
    if ((n != 4 && n != 5) || a > 255 || b > 255 || c > 255 || d > 255 || bits > 32)
        return PL_EINVAL;
    if (n == 4 && strchr(s, '/'))
        return PL_EINVAL;
    *ret_mask = bits ? 0xffffffffu << (32 - bits) : 0;
    *ret_net = ((uint32_t)a << 24 | (uint32_t)b << 16 | (uint32_t)c << 8 | d) & *ret_mask;
    return 0;
}

int pl_export_options_parse(const char *s, struct pl_export *e)
{
    char buf[256];
    if (strlen(s) >= sizeof(buf))
        return PL_EINVAL;
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char *end = NULL;
        if (!strcmp(t, "rw"))
            e->readonly = 0;
        else if (!strcmp(t, "ro"))
            e->readonly = 1;
        else if (!strcmp(t, "root_squash"))
            e->squash = PL_SQUASH_ROOT;
        else if (!strcmp(t, "all_squash"))
            e->squash = PL_SQUASH_ALL;
        else if (!strcmp(t, "no_root_squash"))
            e->squash = PL_SQUASH_NONE;
        else if (!strncmp(t, "anonuid=", 8))
            e->anon_uid = (uint32_t)strtoul(t + 8, &end, 10);
        else if (!strncmp(t, "anongid=", 8))
            e->anon_gid = (uint32_t)strtoul(t + 8, &end, 10);
        else
            return PL_EINVAL;
        if (end && (*end || end == t + 8))
            return PL_EINVAL;
    }
    return 0;
}

static size_t export_key(uint8_t *k, const char *path, uint32_t net, uint32_t mask)
{
    size_t n = strlen(path);
    memcpy(k, path, n + 1);
    pl_put_be32(k + n + 1, net);
    pl_put_be32(k + n + 5, mask);
    return n + 9;
}

/* "/bucket" or "/bucket/a/b": plain components, an existing bucket. */
static int export_path_check(MDB_txn *txn, struct meta_env *env, const char *path)
{
    size_t n = strlen(path);
    if (path[0] != '/' || n >= PL_EXPORT_PATH_MAX || (n > 1 && path[n - 1] == '/'))
        return PL_EINVAL;
    if (strstr(path, "//") || strstr(path, "/./") || strstr(path, "/../") ||
        (n >= 2 && !strcmp(path + n - 2, "/.")) || (n >= 3 && !strcmp(path + n - 3, "/..")))
        return PL_EINVAL;
    char bucket[64];
    const char *slash = strchr(path + 1, '/');
    size_t bn = slash ? (size_t)(slash - path - 1) : n - 1;
    if (bn == 0 || bn >= sizeof(bucket))
        return PL_EINVAL;
    memcpy(bucket, path + 1, bn);
    bucket[bn] = 0;
    struct pl_bucket_info b;
    int rc = bucket_get(txn, env, bucket, &b);
    return rc == PL_ENOENT ? PL_ENOBUCKET : rc;
}

static int apply_export_set(struct meta_txn *t, void *arg)
{
    const struct pl_export *e = arg;
    uint8_t k[PL_EXPORT_PATH_MAX + 9], v[EXPORT_VAL];
    int rc = export_path_check(t->txn, t->env, e->path);
    if (rc)
        return rc;
    v[0] = (uint8_t)(e->readonly != 0);
    v[1] = (uint8_t)e->squash;
    pl_put_le32(v + 2, e->anon_uid);
    pl_put_le32(v + 6, e->anon_gid);
    return meta_put(t, META_EXPORT, k, export_key(k, e->path, e->net, e->mask), v, sizeof(v));
}

int pl_export_set(struct pl_store *st, const struct pl_export *e)
{
    if (e->squash < PL_SQUASH_NONE || e->squash > PL_SQUASH_ALL || strlen(e->path) == 0 ||
        (e->net & ~e->mask))
        return PL_EINVAL;
    return meta_submit(st->meta, apply_export_set, (void *)e);
}

struct export_del {
    const char *path;
    uint32_t net, mask;
};

static int apply_export_remove(struct meta_txn *t, void *arg)
{
    const struct export_del *d = arg;
    uint8_t k[PL_EXPORT_PATH_MAX + 9];
    return meta_del(t, META_EXPORT, k, export_key(k, d->path, d->net, d->mask));
}

int pl_export_remove(struct pl_store *st, const char *path, uint32_t net, uint32_t mask)
{
    struct export_del d = {path, net, mask};
    if (strlen(path) >= PL_EXPORT_PATH_MAX)
        return PL_ENOENT;
    return meta_submit(st->meta, apply_export_remove, &d);
}

struct export_walk {
    pl_export_fn cb;
    void *arg;
};

static int export_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
    struct export_walk *w = arg;
    struct pl_export e;
    const uint8_t *kp = k->mv_data;
    memset(&e, 0, sizeof(e));
    if (k->mv_size < 10 || k->mv_size - 9 >= sizeof(e.path) || kp[k->mv_size - 9] ||
        v->mv_size != EXPORT_VAL)
        return PL_ECORRUPT;
    memcpy(e.path, kp, k->mv_size - 9);
    e.net = pl_get_be32(kp + k->mv_size - 8);
    e.mask = pl_get_be32(kp + k->mv_size - 4);
    const uint8_t *vp = v->mv_data;
    e.readonly = vp[0];
    e.squash = vp[1];
    e.anon_uid = pl_get_le32(vp + 2);
    e.anon_gid = pl_get_le32(vp + 6);
    return w->cb(w->arg, &e) ? 1 : 0;
}

int pl_export_list(struct pl_store *st, pl_export_fn cb, void *arg)
{
    MDB_txn *txn;
    struct export_walk w = {cb, arg};
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_walk(txn, st->meta, META_EXPORT, NULL, 0, export_cb, &w);
    meta_rtxn_end(txn);
    return rc > 0 ? 0 : rc;
}

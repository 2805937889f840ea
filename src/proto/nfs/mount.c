/* MOUNT v3 (RFC 1813 appendix I), exports, and a PORTMAP v2 and RPCBIND
 * v3/v4 responder (RFC 1833) so clients that ask port 111 for our ports need
 * no rpcbind. */
#include "proto/nfs/nfsint.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

enum { MNT3_OK = 0, MNT3ERR_NOENT = 2, MNT3ERR_ACCES = 13, MNT3ERR_NOTDIR = 20,
       MNT3ERR_INVAL = 22, MNT3ERR_NAMETOOLONG = 63, MNT3ERR_SERVERFAULT = 10006 };

#define MOUNT_PATH_MAX 1024

static int is_loopback(uint32_t addr)
{
    return (addr >> 24) == 127;
}

struct export_load {
    struct nfs_export *e;
    size_t n, cap;
};

static int export_load_cb(void *arg, const struct pl_export *r)
{
    struct export_load *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct nfs_export *e = realloc(l->e, cap * sizeof(*e));
        if (!e)
            return 1;
        l->e = e;
        l->cap = cap;
    }
    struct nfs_export *e = &l->e[l->n++];
    e->rule = *r;
    const char *p = r->path + 1;
    size_t bn = PL_MIN(strcspn(p, "/"), sizeof(e->bucket) - 1);
    memcpy(e->bucket, p, bn);
    e->bucket[bn] = 0;
    return 0;
}

/* Reload the rules when they are over a second old (x->lock held): the CLI
 * changes them in the store while the server runs. */
static void exports_refresh(struct nfs_ctx *x)
{
    int64_t now = pl_now_ns();
    if (x->exports_at && now - x->exports_at < 1000000000)
        return;
    struct export_load l = {0};
    if (pl_export_list(x->st, export_load_cb, &l)) {
        free(l.e);
        return; /* keep the rules we had */
    }
    /* resolve buckets once here, not on every call (after the list: one read
     * transaction per thread at a time) */
    for (size_t i = 0; i < l.n; i++) {
        struct pl_bucket_info b;
        l.e[i].bucket_id = pl_bucket_get(x->st, l.e[i].bucket, &b) == 0 ? b.id : 0;
    }
    free(x->exports);
    x->exports = l.e;
    x->nexports = l.n;
    x->default_exports = l.n == 0;
    x->exports_at = now;
}

int nfs_exports_init(struct nfs_ctx *x)
{
    pthread_mutex_lock(&x->lock);
    exports_refresh(x);
    pthread_mutex_unlock(&x->lock);
    return 0;
}

static int net_match(const struct pl_export *e, uint32_t peer)
{
    return (peer & e->mask) == (e->net & e->mask);
}

/* The export a default configuration gives bucket b. */
static void default_export(const char *bucket, struct nfs_export *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->bucket, sizeof(e->bucket), "%s", bucket);
    snprintf(e->rule.path, sizeof(e->rule.path), "/%s", bucket);
    e->rule.net = 0x7f000000;
    e->rule.mask = 0xff000000;
    e->rule.anon_uid = e->rule.anon_gid = 65534;
}

int nfs_export_for(struct nfs_ctx *x, uint64_t root, uint32_t peer, struct nfs_export *ret)
{
    struct pl_attr a;
    int rc = pl_elem_getattr(x->st, root, PL_VIEW_LIVE, &a);
    if (rc || a.type != PL_T_DIR || a.parent != PL_ROOT_ID)
        return PL_EACCES; /* not a bucket (any more) */
    pthread_mutex_lock(&x->lock);
    exports_refresh(x);
    if (x->default_exports) {
        rc = is_loopback(peer) ? 0 : PL_EACCES;
        if (!rc)
            default_export("", ret);
    } else {
        /* the most specific client network among this bucket's rules */
        int best = -1;
        rc = PL_EACCES;
        for (size_t i = 0; i < x->nexports; i++) {
            const struct nfs_export *e = &x->exports[i];
            int bits = __builtin_popcount(e->rule.mask);
            if (bits > best && net_match(&e->rule, peer) && e->bucket_id == root) {
                *ret = *e;
                best = bits;
                rc = 0;
            }
        }
    }
    pthread_mutex_unlock(&x->lock);
    return rc;
}

/* Split "/bucket/rest" into the bucket and the rest. */
static int split_path(const char *path, char bucket[64], const char **rest)
{
    if (path[0] != '/')
        return PL_EINVAL;
    const char *p = path + 1, *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= 64)
        return PL_ENOENT;
    memcpy(bucket, p, n);
    bucket[n] = 0;
    *rest = slash ? slash : "";
    return 0;
}

int nfs_export_match(struct nfs_ctx *x, const char *path, uint32_t peer, struct nfs_export *ret,
                     struct nfs_fh *ret_fh)
{
    char bucket[64];
    const char *rest;
    int rc = split_path(path, bucket, &rest);
    if (rc)
        return rc;
    pthread_mutex_lock(&x->lock);
    exports_refresh(x);
    if (x->default_exports) {
        rc = is_loopback(peer) ? 0 : PL_EACCES;
        if (!rc)
            default_export(bucket, ret);
    } else {
        /* the longest exported path holding this one, then the most specific
         * client network among its rules */
        size_t best = 0;
        int best_bits = -1;
        rc = PL_ENOENT;
        for (size_t i = 0; i < x->nexports; i++) {
            const struct nfs_export *e = &x->exports[i];
            size_t n = strlen(e->rule.path);
            int bits = __builtin_popcount(e->rule.mask);
            if (strncmp(path, e->rule.path, n) || (path[n] && path[n] != '/'))
                continue;
            if (!net_match(&e->rule, peer)) {
                if (rc == PL_ENOENT)
                    rc = PL_EACCES;
                continue;
            }
            if (n > best || (n == best && bits > best_bits)) {
                best = n;
                best_bits = bits;
                *ret = *e;
                rc = 0;
            }
        }
    }
    pthread_mutex_unlock(&x->lock);
    if (rc)
        return rc;
    struct pl_bucket_info b;
    rc = pl_bucket_get(x->st, bucket, &b);
    if (!rc)
        rc = nfs_path_walk(x, b.id, rest, ret_fh);
    return rc == PL_ENOBUCKET ? PL_ENOENT : rc;
}

/* ---- the mount list (DUMP) ---- */
static void mounts_add(struct nfs_ctx *x, uint32_t peer, const char *path)
{
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->nmounts; i++)
        if (x->mounts[i].addr == peer && !strcmp(x->mounts[i].path, path)) {
            pthread_mutex_unlock(&x->lock);
            return;
        }
    if (x->nmounts < NFS_MOUNTS_MAX) {
        x->mounts[x->nmounts].addr = peer;
        snprintf(x->mounts[x->nmounts].path, sizeof(x->mounts[0].path), "%s", path);
        x->nmounts++;
    }
    pthread_mutex_unlock(&x->lock);
}

static void mounts_remove(struct nfs_ctx *x, uint32_t peer, const char *path)
{
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->nmounts;) {
        if (x->mounts[i].addr == peer && (!path || !strcmp(x->mounts[i].path, path)))
            x->mounts[i] = x->mounts[--x->nmounts];
        else
            i++;
    }
    pthread_mutex_unlock(&x->lock);
}

static uint32_t mnt_status(int rc)
{
    switch (rc) {
    case 0:
        return MNT3_OK;
    case PL_ENOENT:
    case PL_ENOBUCKET:
        return MNT3ERR_NOENT;
    case PL_EACCES:
    case PL_EPERM:
        return MNT3ERR_ACCES;
    case PL_ENOTDIR:
        return MNT3ERR_NOTDIR;
    case PL_ENAMETOOLONG:
        return MNT3ERR_NAMETOOLONG;
    case PL_EINVAL:
        return MNT3ERR_INVAL;
    default:
        return MNT3ERR_SERVERFAULT;
    }
}

struct export_list {
    struct xdr_out *o;
};

static int export_bucket_cb(void *arg, const struct pl_bucket_info *b)
{
    struct export_list *l = arg;
    char path[80];
    snprintf(path, sizeof(path), "/%s", b->name);
    xdr_put_u32(l->o, 1);
    xdr_put_string(l->o, path);
    xdr_put_u32(l->o, 1); /* one group: loopback clients */
    xdr_put_string(l->o, "127.0.0.0/8");
    xdr_put_u32(l->o, 0);
    return 0;
}

int mount3_dispatch(struct nfs_ctx *x, const struct rpc_call *c, uint32_t peer, struct xdr_out *o)
{
    struct xdr_in in = c->args;
    char path[MOUNT_PATH_MAX + 1];
    switch (c->proc) {
    case 0: /* NULL */
        break;
    case 1: { /* MNT */
        struct nfs_export ex;
        struct nfs_fh fh;
        xdr_string(&in, path, MOUNT_PATH_MAX);
        if (!xdr_ok(&in))
            break;
        int rc = nfs_export_match(x, path, peer, &ex, &fh);
        uint32_t st = mnt_status(rc);
        if (rc && rc != PL_ENOENT)
            pl_log(PL_LOG_INFO, "nfs", "mount of %s refused: %s", path, pl_strerror(rc));
        xdr_put_u32(o, st);
        if (st)
            break;
        uint8_t raw[NFS_FH_LEN];
        nfs_fh_encode(x, &fh, raw);
        xdr_put_opaque(o, raw, NFS_FH_LEN);
        xdr_put_u32(o, 1); /* auth flavors: AUTH_SYS */
        xdr_put_u32(o, RPC_AUTH_SYS);
        mounts_add(x, peer, path);
        break;
    }
    case 2: { /* DUMP */
        pthread_mutex_lock(&x->lock);
        for (size_t i = 0; i < x->nmounts; i++) {
            char host[INET_ADDRSTRLEN];
            struct in_addr ia = {htonl(x->mounts[i].addr)};
            inet_ntop(AF_INET, &ia, host, sizeof(host));
            xdr_put_u32(o, 1);
            xdr_put_string(o, host);
            xdr_put_string(o, x->mounts[i].path);
        }
        pthread_mutex_unlock(&x->lock);
        xdr_put_u32(o, 0);
        break;
    }
    case 3: /* UMNT */
        xdr_string(&in, path, MOUNT_PATH_MAX);
        if (xdr_ok(&in))
            mounts_remove(x, peer, path);
        break;
    case 4: /* UMNTALL */
        mounts_remove(x, peer, NULL);
        break;
    case 5: { /* EXPORT */
        if (x->default_exports) {
            struct export_list l = {o};
            if (is_loopback(peer) && pl_bucket_list(x->st, export_bucket_cb, &l))
                pl_log(PL_LOG_WARN, "nfs", "EXPORT: cannot list buckets");
        } else {
            pthread_mutex_lock(&x->lock);
            for (size_t i = 0; i < x->nexports; i++) {
                const struct pl_export *e = &x->exports[i].rule;
                char grp[40];
                struct in_addr ia = {htonl(e->net)};
                char a[INET_ADDRSTRLEN];
                inet_ntop(AF_INET, &ia, a, sizeof(a));
                snprintf(grp, sizeof(grp), "%s/%d", a, __builtin_popcount(e->mask));
                xdr_put_u32(o, 1);
                xdr_put_string(o, e->path);
                xdr_put_u32(o, 1);
                xdr_put_string(o, grp);
                xdr_put_u32(o, 0);
            }
            pthread_mutex_unlock(&x->lock);
        }
        xdr_put_u32(o, 0);
        break;
    }
    default:
        return RPC_PROC_UNAVAIL;
    }
    return xdr_ok(&in) ? RPC_SUCCESS : RPC_GARBAGE_ARGS;
}

/* ---- PORTMAP v2 ---- */
static const struct {
    uint32_t prog, vers;
    int which; /* index into ports */
} pmap_table[] = {
    {PROG_PORTMAP, 2, 2},
    {PROG_PORTMAP, 3, 2}, /* RPCBIND */
    {PROG_PORTMAP, 4, 2},
    {PROG_NFS, 3, 0},
    {PROG_MOUNT, 3, 1},
    {PROG_MOUNT, 1, 1}, /* MNT v1 shares v3's port; calls get PROG_MISMATCH there */
};

int portmap_dispatch(struct nfs_ctx *x, const struct rpc_call *c, struct xdr_out *o)
{
    struct xdr_in in = c->args;
    switch (c->proc) {
    case 0: /* NULL */
        break;
    case 3: { /* GETPORT */
        uint32_t prog = xdr_u32(&in), vers = xdr_u32(&in), prot = xdr_u32(&in);
        (void)xdr_u32(&in);
        if (!xdr_ok(&in))
            break;
        uint32_t port = 0;
        for (size_t i = 0; i < PL_ARRAY_LEN(pmap_table) && prot == IPPROTO_TCP; i++)
            if (pmap_table[i].prog == prog && pmap_table[i].vers == vers)
                port = (uint32_t)x->ports[pmap_table[i].which];
        xdr_put_u32(o, port);
        break;
    }
    case 4: /* DUMP */
        for (size_t i = 0; i < PL_ARRAY_LEN(pmap_table); i++) {
            if (!x->ports[pmap_table[i].which])
                continue;
            xdr_put_u32(o, 1);
            xdr_put_u32(o, pmap_table[i].prog);
            xdr_put_u32(o, pmap_table[i].vers);
            xdr_put_u32(o, IPPROTO_TCP);
            xdr_put_u32(o, (uint32_t)x->ports[pmap_table[i].which]);
        }
        xdr_put_u32(o, 0);
        break;
    default:
        return RPC_PROC_UNAVAIL;
    }
    return xdr_ok(&in) ? RPC_SUCCESS : RPC_GARBAGE_ARGS;
}

/* ---- RPCBIND v3 and v4 ----
 * Addresses are universal addresses: "h1.h2.h3.h4.p1.p2" for TCP over IPv4,
 * the only transport we serve; anything else is not registered (""). */
#define RPCB_NETID_MAX 64
#define RPCB_UADDR_MAX 128

static void rpcb_uaddr(const struct nfs_ctx *x, int which, uint32_t local, char *out, size_t n)
{
    uint32_t a = x->addrs[which] ? x->addrs[which] : local; /* bound to any: where it came */
    int port = x->ports[which];
    snprintf(out, n, "%u.%u.%u.%u.%d.%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255,
             port >> 8, port & 255);
}

int rpcbind_dispatch(struct nfs_ctx *x, const struct rpc_call *c, uint32_t local,
                     struct xdr_out *o)
{
    struct xdr_in in = c->args;
    char uaddr[RPCB_UADDR_MAX];
    switch (c->proc) {
    case 0: /* NULL */
        break;
    case 3:   /* GETADDR */
    case 9: { /* GETVERSADDR (v4) */
        char netid[RPCB_NETID_MAX + 1], addr[RPCB_UADDR_MAX + 1], owner[RPCB_UADDR_MAX + 1];
        if (c->proc == 9 && c->vers != 4)
            return RPC_PROC_UNAVAIL;
        uint32_t prog = xdr_u32(&in), vers = xdr_u32(&in);
        xdr_string(&in, netid, RPCB_NETID_MAX);
        xdr_string(&in, addr, RPCB_UADDR_MAX);
        xdr_string(&in, owner, RPCB_UADDR_MAX);
        if (!xdr_ok(&in))
            break;
        uaddr[0] = 0;
        for (size_t i = 0; i < PL_ARRAY_LEN(pmap_table) && !strcmp(netid, "tcp"); i++)
            if (pmap_table[i].prog == prog && pmap_table[i].vers == vers &&
                x->ports[pmap_table[i].which])
                rpcb_uaddr(x, pmap_table[i].which, local, uaddr, sizeof(uaddr));
        xdr_put_string(o, uaddr);
        break;
    }
    case 4: /* DUMP */
        for (size_t i = 0; i < PL_ARRAY_LEN(pmap_table); i++) {
            if (!x->ports[pmap_table[i].which])
                continue;
            rpcb_uaddr(x, pmap_table[i].which, local, uaddr, sizeof(uaddr));
            xdr_put_u32(o, 1);
            xdr_put_u32(o, pmap_table[i].prog);
            xdr_put_u32(o, pmap_table[i].vers);
            xdr_put_string(o, "tcp");
            xdr_put_string(o, uaddr);
            xdr_put_string(o, "superuser");
        }
        xdr_put_u32(o, 0);
        break;
    default:
        return RPC_PROC_UNAVAIL;
    }
    return xdr_ok(&in) ? RPC_SUCCESS : RPC_GARBAGE_ARGS;
}

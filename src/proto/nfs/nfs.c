/* RPC dispatch for the NFS head: programs and versions, file handles, and the
 * duplicate request cache. Runs on worker threads. */
#include "proto/nfs/nfsint.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>

#include "base/xxh.h"

/* ---- file handles ----
 * 0 version (1)   1 flags (bit 0: the ".snapshot" directory)   2..3 zero
 * 4 root BE64     12 element BE64     20 view BE64     28 mount top BE64
 * 36 MAC: the first 8 bytes of HMAC-SHA256(key, bytes 0..35)
 * The key derives from the data directory's master key, so handles survive
 * restarts and cannot be forged into another export. */
static void fh_mac(const struct nfs_ctx *x, const uint8_t *p, uint8_t out[8])
{
    uint8_t md[32];
    unsigned int n = sizeof(md);
    if (!HMAC(EVP_sha256(), x->fh_key, sizeof(x->fh_key), p, 36, md, &n))
        memset(md, 0, sizeof(md)); /* never verifies: a handle no one can use */
    memcpy(out, md, 8);
}

void nfs_fh_encode(const struct nfs_ctx *x, const struct nfs_fh *fh, uint8_t out[NFS_FH_LEN])
{
    memset(out, 0, NFS_FH_LEN);
    out[0] = 1;
    out[1] = fh->snapdir ? 1 : 0;
    pl_put_be64(out + 4, fh->root);
    pl_put_be64(out + 12, fh->id);
    pl_put_be64(out + 20, fh->view);
    pl_put_be64(out + 28, fh->top);
    fh_mac(x, out, out + 36);
}

int nfs_fh_decode(const struct nfs_ctx *x, const uint8_t *p, uint32_t n, struct nfs_fh *ret)
{
    uint8_t mac[8];
    if (n != NFS_FH_LEN || p[0] != 1 || (p[1] & ~1u) || p[2] || p[3])
        return PL_EINVAL;
    fh_mac(x, p, mac);
    if (CRYPTO_memcmp(mac, p + 36, 8))
        return PL_EINVAL;
    ret->snapdir = p[1] & 1;
    ret->root = pl_get_be64(p + 4);
    ret->id = pl_get_be64(p + 12);
    ret->view = pl_get_be64(p + 20);
    ret->top = pl_get_be64(p + 28);
    return 0;
}

/* ---- duplicate request cache ----
 * Non-idempotent NFS calls are remembered by (client, xid, proc, a hash of
 * the arguments, so a client that restarts its xids is not confused): a
 * retransmission gets the same reply instead of running again (a second
 * REMOVE would say NOENT). A retransmission of a call still running gets no
 * reply; the first one answers. */
#define DRC_SLOTS 4096
struct drc_slot {
    uint32_t xid, peer, proc;
    uint64_t sum;
    int used, done;
    uint8_t *reply;
    size_t reply_n;
};

static int non_idempotent(uint32_t proc)
{
    switch (proc) {
    case 2:  /* SETATTR */
    case 7:  /* WRITE */
    case 8:  /* CREATE */
    case 9:  /* MKDIR */
    case 10: /* SYMLINK */
    case 11: /* MKNOD */
    case 12: /* REMOVE */
    case 13: /* RMDIR */
    case 14: /* RENAME */
    case 15: /* LINK */
        return 1;
    default:
        return 0;
    }
}

static struct drc_slot *drc_slot(struct nfs_ctx *x, uint32_t xid, uint32_t peer)
{
    return &x->drc[(xid ^ (peer * 2654435761u)) % DRC_SLOTS];
}

/* 0: not seen (now marked running); 1: done, *out a copy of its reply;
 * 2: still running. */
static int drc_begin(struct nfs_ctx *x, uint32_t xid, uint32_t peer, uint32_t proc, uint64_t sum,
                     struct pl_buf *out)
{
    struct drc_slot *s = drc_slot(x, xid, peer);
    int rc = 0;
    pthread_mutex_lock(&x->lock);
    if (s->used && s->xid == xid && s->peer == peer && s->proc == proc && s->sum == sum) {
        rc = s->done ? 1 : 2;
        if (rc == 1 && pl_buf_add(out, s->reply, s->reply_n))
            rc = 2; /* no memory for the copy: let the client retry */
    } else {
        free(s->reply);
        *s = (struct drc_slot){.xid = xid, .peer = peer, .proc = proc, .sum = sum, .used = 1};
    }
    pthread_mutex_unlock(&x->lock);
    return rc;
}

static void drc_end(struct nfs_ctx *x, uint32_t xid, uint32_t peer, uint32_t proc, uint64_t sum,
                    const struct pl_buf *reply)
{
    struct drc_slot *s = drc_slot(x, xid, peer);
    pthread_mutex_lock(&x->lock);
    if (s->used && s->xid == xid && s->peer == peer && s->proc == proc && s->sum == sum) {
        s->reply = malloc(reply->len);
        if (s->reply) {
            memcpy(s->reply, reply->data, reply->len);
            s->reply_n = reply->len;
            s->done = 1;
        } else {
            s->used = 0;
        }
    }
    pthread_mutex_unlock(&x->lock);
}

void nfs_ctx_release(struct nfs_ctx *x)
{
    nfs_prefetch_free(x->pf); /* its loads settle the write-back */
    x->pf = NULL;
    wb_free(x->wb);
    x->wb = NULL;
    if (x->drc)
        for (size_t i = 0; i < DRC_SLOTS; i++)
            free(x->drc[i].reply);
    free(x->drc);
    free(x->cookies);
    free(x->exports);
    pthread_mutex_destroy(&x->lock);
}

int nfs_ctx_init(struct nfs_ctx *x, struct pl_store *st)
{
    memset(x, 0, sizeof(*x));
    pthread_mutex_init(&x->lock, NULL);
    x->st = st;
    x->drc = calloc(DRC_SLOTS, sizeof(*x->drc));
    x->cookies = calloc(COOKIE_SLOTS, sizeof(*x->cookies));
    int rc = x->drc && x->cookies ? 0 : PL_ENOMEM;
    if (!rc)
        rc = pl_store_derive_key(st, "nfs-fh", x->fh_key);
    if (!rc)
        rc = pl_random(x->write_verf, sizeof(x->write_verf));
    if (!rc)
        rc = nfs_exports_init(x);
    if (!rc)
        rc = wb_new(st, "nfs", x, &x->wb);
    if (!rc)
        rc = nfs_prefetch_new(st, x->wb, &x->pf);
    if (rc)
        nfs_ctx_release(x);
    return rc;
}

/* ---- one call ---- */
static void reply_reset(struct nfs_reply *r)
{
    pl_buf_reset(&r->hdr);
    free(r->data);
    r->data = NULL;
    r->data_n = 0;
}

int nfs_call(struct nfs_ctx *x, const struct rpc_call *c, uint32_t peer, uint32_t local,
             struct nfs_reply *r)
{
    struct xdr_out o = {&r->hdr, 0};
    int cached = 0, remember = c->prog == PROG_NFS && c->vers == 3 && non_idempotent(c->proc);
    uint64_t sum = remember ? XXH3_64bits(c->args.p, c->args.n) : 0;
    if (remember) {
        cached = drc_begin(x, c->xid, peer, c->proc, sum, &r->hdr);
        if (cached == 2)
            return 1; /* the first transmission answers */
        if (cached == 1)
            return 0;
    }
    uint32_t lo = 0, hi = 0;
    int st = RPC_SUCCESS;
    if (c->prog == PROG_NFS || c->prog == PROG_MOUNT)
        lo = hi = 3;
    else if (c->prog == PROG_PORTMAP)
        lo = 2, hi = 4; /* PORTMAP v2, RPCBIND v3 and v4 */
    else
        st = RPC_PROG_UNAVAIL;
    if (!st && (c->vers < lo || c->vers > hi))
        st = RPC_PROG_MISMATCH;
    if (!st && c->prog != PROG_PORTMAP && c->proc != 0 && c->cred.flavor != RPC_AUTH_SYS) {
        /* everything past NULL needs an identity */
        rpc_reply_denied(&o, c->xid, RPC_AUTH_TOOWEAK);
        goto out;
    }
    rpc_reply_accepted(&o, c->xid, (uint32_t)st, lo, hi);
    if (st)
        goto out;
    if (c->prog == PROG_NFS)
        st = nfs3_dispatch(x, c, peer, &o, r);
    else if (c->prog == PROG_MOUNT)
        st = mount3_dispatch(x, c, peer, &o);
    else if (c->vers == 2)
        st = portmap_dispatch(x, c, &o);
    else
        st = rpcbind_dispatch(x, c, local, &o);
    if (st) {
        reply_reset(r);
        o.bad = 0;
        rpc_reply_accepted(&o, c->xid, (uint32_t)st, 0, 0);
    }
out:
    if (o.bad) {
        reply_reset(r);
        o.bad = 0;
        rpc_reply_accepted(&o, c->xid, RPC_SYSTEM_ERR, 0, 0);
        if (o.bad)
            return 1; /* not even that fits in memory: drop, the client retries */
    }
    rpc_reply_mark(&r->hdr, r->data_n ? r->data_n + ((4 - (r->data_n & 3)) & 3) : 0);
    if (remember)
        drc_end(x, c->xid, peer, c->proc, sum, &r->hdr);
    return 0;
}

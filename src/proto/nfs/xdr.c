#include "proto/nfs/xdr.h"

#include <stdlib.h>

void xdr_in_init(struct xdr_in *x, const void *p, size_t n)
{
    x->p = p;
    x->n = n;
    x->off = 0;
    x->bad = 0;
}

static const uint8_t *take(struct xdr_in *x, size_t n)
{
    if (x->bad || n > x->n - x->off) {
        x->bad = 1;
        return NULL;
    }
    const uint8_t *p = x->p + x->off;
    x->off += n;
    return p;
}

uint32_t xdr_u32(struct xdr_in *x)
{
    const uint8_t *p = take(x, 4);
    return p ? pl_get_be32(p) : 0;
}

uint64_t xdr_u64(struct xdr_in *x)
{
    const uint8_t *p = take(x, 8);
    return p ? pl_get_be64(p) : 0;
}

const uint8_t *xdr_fixed(struct xdr_in *x, uint32_t n)
{
    const uint8_t *p = take(x, n);
    if (p && (n & 3))
        take(x, 4 - (n & 3));
    return x->bad ? NULL : p;
}

const uint8_t *xdr_opaque(struct xdr_in *x, uint32_t max, uint32_t *ret_n)
{
    uint32_t n = xdr_u32(x);
    *ret_n = 0;
    if (x->bad || n > max) {
        x->bad = 1;
        return NULL;
    }
    const uint8_t *p = xdr_fixed(x, n);
    if (p)
        *ret_n = n;
    return p;
}

void xdr_string(struct xdr_in *x, char *out, uint32_t max)
{
    uint32_t n;
    const uint8_t *p = xdr_opaque(x, max, &n);
    out[0] = 0;
    if (!p)
        return;
    if (memchr(p, 0, n)) {
        x->bad = 1;
        return;
    }
    memcpy(out, p, n);
    out[n] = 0;
}

static void put(struct xdr_out *o, const void *p, size_t n)
{
    if (!o->bad && pl_buf_add(o->b, p, n))
        o->bad = 1;
}

void xdr_put_u32(struct xdr_out *o, uint32_t v)
{
    uint8_t b[4];
    pl_put_be32(b, v);
    put(o, b, 4);
}

void xdr_put_u64(struct xdr_out *o, uint64_t v)
{
    uint8_t b[8];
    pl_put_be64(b, v);
    put(o, b, 8);
}

void xdr_put_fixed(struct xdr_out *o, const void *p, uint32_t n)
{
    static const uint8_t zero[4];
    put(o, p, n);
    if (n & 3)
        put(o, zero, 4 - (n & 3));
}

void xdr_put_opaque(struct xdr_out *o, const void *p, uint32_t n)
{
    xdr_put_u32(o, n);
    xdr_put_fixed(o, p, n);
}

void xdr_put_string(struct xdr_out *o, const char *s)
{
    xdr_put_opaque(o, s, (uint32_t)strlen(s));
}

/* ---- RPC ---- */
static int cred_decode(struct xdr_in *x, struct rpc_cred *c)
{
    uint32_t len;
    c->flavor = xdr_u32(x);
    const uint8_t *body = xdr_opaque(x, 400, &len);
    if (!xdr_ok(x))
        return PL_EPROTO;
    c->uid = c->gid = 65534;
    c->ngids = 0;
    c->machine[0] = 0;
    if (c->flavor == RPC_AUTH_NONE)
        return 0;
    if (c->flavor != RPC_AUTH_SYS)
        return PL_EACCES;
    struct xdr_in b;
    xdr_in_init(&b, body, len);
    (void)xdr_u32(&b); /* stamp */
    xdr_string(&b, c->machine, 255);
    c->uid = xdr_u32(&b);
    c->gid = xdr_u32(&b);
    uint32_t n = xdr_u32(&b);
    if (n > 16)
        return PL_EACCES;
    for (uint32_t i = 0; i < n; i++)
        c->gids[i] = xdr_u32(&b);
    c->ngids = n;
    return xdr_ok(&b) ? 0 : PL_EACCES;
}

int rpc_call_decode(const uint8_t *p, size_t n, struct rpc_call *ret)
{
    struct xdr_in x;
    xdr_in_init(&x, p, n);
    ret->xid = xdr_u32(&x);
    if (xdr_u32(&x) != RPC_CALL || !xdr_ok(&x))
        return PL_EPROTO;
    uint32_t rpcvers = xdr_u32(&x);
    ret->prog = xdr_u32(&x);
    ret->vers = xdr_u32(&x);
    ret->proc = xdr_u32(&x);
    if (!xdr_ok(&x))
        return PL_EPROTO;
    if (rpcvers != 2)
        return PL_EINVAL;
    int rc = cred_decode(&x, &ret->cred);
    if (rc)
        return rc;
    uint32_t vlen;
    (void)xdr_u32(&x); /* the verifier: AUTH_NONE or AUTH_SYS carry nothing we check */
    (void)xdr_opaque(&x, 400, &vlen);
    if (!xdr_ok(&x))
        return PL_EACCES;
    xdr_in_init(&ret->args, p + x.off, n - x.off);
    return 0;
}

static void reply_start(struct xdr_out *o, uint32_t xid)
{
    xdr_put_u32(o, 0); /* record mark, filled in by rpc_reply_mark */
    xdr_put_u32(o, xid);
    xdr_put_u32(o, RPC_REPLY);
}

void rpc_reply_accepted(struct xdr_out *o, uint32_t xid, uint32_t stat, uint32_t lo, uint32_t hi)
{
    reply_start(o, xid);
    xdr_put_u32(o, 0); /* MSG_ACCEPTED */
    xdr_put_u32(o, RPC_AUTH_NONE);
    xdr_put_u32(o, 0);
    xdr_put_u32(o, stat);
    if (stat == RPC_PROG_MISMATCH) {
        xdr_put_u32(o, lo);
        xdr_put_u32(o, hi);
    }
}

void rpc_reply_denied(struct xdr_out *o, uint32_t xid, int auth_stat)
{
    reply_start(o, xid);
    xdr_put_u32(o, 1); /* MSG_DENIED */
    if (auth_stat < 0) {
        xdr_put_u32(o, 0); /* RPC_MISMATCH: we speak 2 only */
        xdr_put_u32(o, 2);
        xdr_put_u32(o, 2);
    } else {
        xdr_put_u32(o, 1); /* AUTH_ERROR */
        xdr_put_u32(o, (uint32_t)auth_stat);
    }
}

void rpc_reply_mark(struct pl_buf *b, size_t extra)
{
    pl_put_be32((uint8_t *)b->data, RPC_LAST_FRAG | (uint32_t)(b->len - 4 + extra));
}

void rpc_reader_init(struct rpc_reader *r, uint32_t max)
{
    memset(r, 0, sizeof(*r));
    pl_buf_init(&r->rec);
    r->max = max;
}

void rpc_reader_release(struct rpc_reader *r)
{
    pl_buf_release(&r->rec);
}

int rpc_reader_feed(struct rpc_reader *r, const uint8_t *p, size_t n, size_t *ret_used,
                    int *ret_done)
{
    size_t used = 0;
    *ret_done = 0;
    while (used < n) {
        if (!r->in_frag) {
            if (r->hdr_have == 0 && r->last) {
                /* the previous record was handed out: start a new one */
                pl_buf_reset(&r->rec);
                r->last = 0;
            }
            size_t k = PL_MIN((size_t)(4 - r->hdr_have), n - used);
            memcpy(r->hdr + r->hdr_have, p + used, k);
            r->hdr_have += (uint32_t)k;
            used += k;
            if (r->hdr_have < 4)
                break;
            uint32_t h = pl_get_be32(r->hdr);
            r->hdr_have = 0;
            r->last = (h & RPC_LAST_FRAG) != 0;
            r->frag_left = h & ~RPC_LAST_FRAG;
            if ((uint64_t)r->rec.len + r->frag_left > r->max)
                return PL_ERANGE;
            r->in_frag = 1;
        }
        size_t k = PL_MIN((size_t)r->frag_left, n - used);
        if (k && pl_buf_add(&r->rec, p + used, k))
            return PL_ENOMEM;
        used += k;
        r->frag_left -= (uint32_t)k;
        if (r->frag_left == 0) {
            r->in_frag = 0;
            if (r->last) {
                *ret_done = 1;
                break;
            }
        }
    }
    *ret_used = used;
    return 0;
}

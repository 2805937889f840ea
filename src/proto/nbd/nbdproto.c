#include "proto/nbd/nbdproto.h"

#include <string.h>

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void nbd_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

void nbd_put32(uint8_t *p, uint32_t v)
{
    nbd_put16(p, (uint16_t)(v >> 16));
    nbd_put16(p + 2, (uint16_t)v);
}

void nbd_put64(uint8_t *p, uint64_t v)
{
    nbd_put32(p, (uint32_t)(v >> 32));
    nbd_put32(p + 4, (uint32_t)v);
}

int nbd_req_parse(const uint8_t h[28], struct nbd_req *r)
{
    if (get32(h) != NBD_REQ_MAGIC)
        return PL_EPROTO;
    r->flags = (uint16_t)(h[4] << 8 | h[5]);
    r->type = (uint16_t)(h[6] << 8 | h[7]);
    r->cookie = pl_get_be64(h + 8);
    r->offset = pl_get_be64(h + 16);
    r->len = get32(h + 24);
    return 0;
}

/* The export name every option that has one starts with. */
static int name_take(const uint8_t *p, size_t n, size_t *off, char *name)
{
    if (n < 4)
        return PL_EINVAL;
    uint32_t nl = get32(p);
    if (nl > NBD_NAME_MAX || nl > n - 4)
        return PL_EINVAL;
    memcpy(name, p + 4, nl);
    name[nl] = 0;
    if (memchr(name, 0, nl))
        return PL_EINVAL;
    *off = 4 + nl;
    return 0;
}

int nbd_opt_go_parse(const uint8_t *p, size_t n, char *name, uint16_t *reqs, size_t reqcap,
                     size_t *ret_nreqs)
{
    size_t off;
    int rc = name_take(p, n, &off, name);
    if (rc)
        return rc;
    if (n - off < 2)
        return PL_EINVAL;
    size_t nr = (size_t)(p[off] << 8 | p[off + 1]);
    off += 2;
    if (n - off != nr * 2)
        return PL_EINVAL;
    *ret_nreqs = 0;
    for (size_t i = 0; i < nr; i++)
        if (*ret_nreqs < reqcap)
            reqs[(*ret_nreqs)++] = (uint16_t)(p[off + 2 * i] << 8 | p[off + 2 * i + 1]);
    return 0;
}

int nbd_opt_meta_parse(const uint8_t *p, size_t n, char *name, nbd_query_fn cb, void *arg)
{
    size_t off;
    int rc = name_take(p, n, &off, name);
    if (rc)
        return rc;
    if (n - off < 4)
        return PL_EINVAL;
    uint32_t nq = get32(p + off);
    off += 4;
    for (uint32_t i = 0; i < nq; i++) {
        if (n - off < 4)
            return PL_EINVAL;
        uint32_t ql = get32(p + off);
        off += 4;
        if (ql > n - off)
            return PL_EINVAL;
        rc = cb(arg, (const char *)p + off, ql);
        if (rc < 0)
            return rc;
        off += ql;
    }
    return off == n ? 0 : PL_EINVAL;
}

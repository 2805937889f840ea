/* The NBD head: volumes as block devices (fixed newstyle handshake).
 *
 * One thread per connection (tsrv) reads the client's requests and runs
 * them in order, except READs: those go to the connection's reader threads
 * (NBD_READERS), so the reads a client keeps in flight run at once and their
 * replies go out as each completes (NBD allows any order; a send lock keeps
 * each reply whole). A client that disconnects gets every queued read
 * answered first.
 *
 * Writes go to the volume's write cache (vcache.c, shared by every
 * connection to the volume) and are answered from memory; its writer stores
 * them in large runs in the background. NBD promises durability only at
 * FLUSH and for FUA writes; a FLUSH on any connection makes every
 * connection's completed writes durable (CAN_MULTI_CONN). */
#include "proto/nbd/nbd.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "proto/nbd/nbdproto.h"
#include "proto/nbd/vcache.h"
#include "proto/tsrv/tsrv.h"

#define BLOCK_STATUS_MAX 1024 /* descriptors per reply; the client asks again */
_Static_assert(NBD_REQ_MAX <= VC_WRITE_MAX, "a write request fits one write cache run");

struct nbd_server {
    struct pl_store *st;
    struct tsrv *srv;
    struct vc_set *caches;
};

#define NBD_READERS 4
#define READ_QUEUE 64 /* reads waiting for a reader before the request loop waits */
#define IBUF_SIZE (256u << 10) /* requests read ahead from the socket */
#define OBUF_MAX 4096u         /* the request loop's replies waiting to go out together */

struct nconn {
    struct nbd_server *srv;
    struct pl_store *st;
    struct vcache *vc;
    int fd;
    int structured; /* NBD_OPT_STRUCTURED_REPLY accepted */
    int meta_alloc; /* base:allocation selected (context id 1) */
    struct pl_volume_info vol;
    uint8_t *buf;
    pthread_mutex_t send_lock; /* one reply at a time on the socket */
    struct pl_pool *readers;   /* NBD_READERS threads running READs */
    pthread_mutex_t buf_lock;  /* read buffers not in use, kept for the next read */
    struct rbuf *free_bufs;
    /* The request loop reads the socket through ibuf (several small requests
     * in one recv) and leaves its replies in obuf (under send_lock) until it
     * is about to wait: a client keeping small writes in flight cost two
     * recvs, a send and a wake-up per request. */
    pthread_t loop;
    uint8_t *ibuf;
    size_t iat, iend;
    uint8_t obuf[OBUF_MAX];
    size_t on;
};

/* A read buffer; readers take one while they run, so there are at most
 * NBD_READERS, each as large as the largest read it served. */
struct rbuf {
    struct rbuf *next;
    size_t cap;
    uint8_t data[];
};

struct rjob {
    struct pl_job job;
    struct nconn *c;
    struct nbd_req r;
};

static uint32_t nbd_errno(int rc)
{
    switch (rc) {
    case 0: return 0;
    case PL_EROFS:
    case PL_EPERM:
    case PL_EACCES: return NBD_EPERM;
    case PL_ENOMEM: return NBD_ENOMEM;
    case PL_ENOSPC: return NBD_ENOSPC;
    case PL_EINVAL: return NBD_EINVAL;
    default: return NBD_EIO;
    }
}

/* ---- handshake ---- */
static int opt_reply(struct nconn *c, uint32_t opt, uint32_t type, const void *data, size_t n)
{
    uint8_t h[20];
    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, type);
    nbd_put32(h + 16, (uint32_t)n);
    int rc = pl_write_all(c->fd, h, sizeof(h));
    if (!rc && n)
        rc = pl_write_all(c->fd, data, n);
    return rc;
}

static uint16_t trans_flags(const struct pl_volume_info *v)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                 NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
    if (v->readonly)
        f |= NBD_FLAG_READ_ONLY;
    else
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    return f;
}

static int list_cb(void *arg, const struct pl_volume_info *v)
{
    struct nconn *c = arg;
    uint8_t b[4 + PL_VOLUME_NAME_MAX];
    size_t n = strlen(v->name);
    if (v->missing)
        return 0; /* an object volume whose object is gone: nothing to serve */
    nbd_put32(b, (uint32_t)n);
    memcpy(b + 4, v->name, n);
    return opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, b, 4 + n) ? 1 : 0;
}

struct meta_q {
    struct nconn *c;
    uint32_t opt;
    int list, found, err;
};

static int meta_cb(void *arg, const char *q, size_t n)
{
    struct meta_q *m = arg;
    static const char alloc[] = "base:allocation";
    int match = (n == sizeof(alloc) - 1 && !memcmp(q, alloc, n)) ||
                (m->list && ((n == 5 && !memcmp(q, "base:", 5)) || n == 0));
    if (!match)
        return 0;
    uint8_t b[4 + sizeof(alloc)];
    nbd_put32(b, 1);
    memcpy(b + 4, alloc, sizeof(alloc) - 1);
    m->found = 1;
    m->err = opt_reply(m->c, m->opt, NBD_REP_META_CONTEXT, b, 4 + sizeof(alloc) - 1);
    return m->err ? -1 : 0;
}

/* 1: go to transmission; 0: next option; < 0: close. */
static int handle_opt(struct nconn *c, uint32_t opt, const uint8_t *d, size_t n, int no_zeroes)
{
    char *name = malloc(NBD_NAME_MAX + 1);
    int rc = name ? 0 : PL_ENOMEM;
    if (rc)
        return rc;
    switch (opt) {
    case NBD_OPT_EXPORT_NAME: {
        /* the old way in: no error reply possible, an unknown name closes */
        if (n > NBD_NAME_MAX) {
            rc = PL_EPROTO;
            break;
        }
        memcpy(name, d, n);
        name[n] = 0;
        if (pl_volume_get(c->st, name, &c->vol)) {
            pl_log(PL_LOG_INFO, "nbd", "no volume '%s'", name);
            rc = PL_ENOENT;
            break;
        }
        uint8_t r[10 + 124] = {0};
        nbd_put64(r, c->vol.size);
        nbd_put16(r + 8, trans_flags(&c->vol));
        rc = pl_write_all(c->fd, r, no_zeroes ? 10 : sizeof(r));
        if (!rc)
            rc = 1;
        break;
    }
    case NBD_OPT_ABORT:
        (void)opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        rc = PL_ESHUTDOWN;
        break;
    case NBD_OPT_LIST:
        rc = n ? opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0)
               : pl_volume_list(c->st, list_cb, c);
        if (!rc && !n)
            rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (n) {
            rc = opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
        } else {
            c->structured = 1;
            rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        }
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT: {
        struct meta_q m = {c, opt, opt == NBD_OPT_LIST_META_CONTEXT, 0, 0};
        if (!c->structured) {
            rc = opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
            break;
        }
        int pr = nbd_opt_meta_parse(d, n, name, meta_cb, &m);
        if (m.err) {
            rc = m.err;
        } else if (pr) {
            rc = opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
        } else if (pl_volume_get(c->st, name, &c->vol)) {
            rc = opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
        } else {
            if (opt == NBD_OPT_SET_META_CONTEXT)
                c->meta_alloc = m.found;
            rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        }
        break;
    }
    case NBD_OPT_INFO:
    case NBD_OPT_GO: {
        uint16_t reqs[16];
        size_t nreqs;
        if (nbd_opt_go_parse(d, n, name, reqs, 16, &nreqs)) {
            rc = opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
            break;
        }
        if (pl_volume_get(c->st, name, &c->vol)) {
            pl_log(PL_LOG_INFO, "nbd", "no volume '%s'", name);
            rc = opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, "no such volume", 14);
            break;
        }
        uint8_t info[12];
        nbd_put16(info, NBD_INFO_EXPORT);
        nbd_put64(info + 2, c->vol.size);
        nbd_put16(info + 10, trans_flags(&c->vol));
        rc = opt_reply(c, opt, NBD_REP_INFO, info, 12);
        uint8_t bs[14];
        nbd_put16(bs, NBD_INFO_BLOCK_SIZE);
        nbd_put32(bs + 2, 1);            /* any alignment works */
        nbd_put32(bs + 6, 64 << 10);     /* what chunking likes */
        nbd_put32(bs + 10, NBD_REQ_MAX); /* the largest request we take */
        if (!rc)
            rc = opt_reply(c, opt, NBD_REP_INFO, bs, sizeof(bs));
        if (!rc)
            rc = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        if (!rc && opt == NBD_OPT_GO)
            rc = 1;
        break;
    }
    default:
        rc = opt_reply(c, opt, NBD_REP_ERR_UNSUP, NULL, 0);
        break;
    }
    free(name);
    return rc;
}

static int handshake(struct nconn *c)
{
    uint8_t g[18], cf[4], h[16];
    nbd_put64(g, NBD_MAGIC);
    nbd_put64(g + 8, NBD_IHAVEOPT);
    nbd_put16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    int rc = pl_write_all(c->fd, g, sizeof(g));
    if (!rc)
        rc = tsrv_read(c->fd, cf, 4);
    if (rc)
        return rc;
    uint32_t cflags = (uint32_t)cf[0] << 24 | (uint32_t)cf[1] << 16 | (uint32_t)cf[2] << 8 | cf[3];
    if (cflags & ~(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return PL_EPROTO; /* flags we did not offer */
    for (int n = 0; n < 1024; n++) {
        rc = tsrv_read(c->fd, h, sizeof(h));
        if (rc)
            return rc;
        if (pl_get_be64(h) != NBD_IHAVEOPT)
            return PL_EPROTO;
        uint32_t opt = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
        uint32_t len = (uint32_t)h[12] << 24 | (uint32_t)h[13] << 16 | (uint32_t)h[14] << 8 | h[15];
        if (len > NBD_OPT_MAX) {
            /* not worth reading: say so, and hang up (we cannot skip it cheaply) */
            (void)opt_reply(c, opt, NBD_REP_ERR_TOO_BIG, NULL, 0);
            return PL_EPROTO;
        }
        uint8_t *d = malloc(len ? len : 1);
        if (!d)
            return PL_ENOMEM;
        rc = tsrv_read(c->fd, d, len);
        if (!rc)
            rc = handle_opt(c, opt, d, len, (cflags & NBD_FLAG_NO_ZEROES) != 0);
        free(d);
        if (rc)
            return rc; /* 1: transmission */
    }
    return PL_EPROTO; /* an endless negotiation */
}

/* ---- transmission ---- */
static int out_flush_locked(struct nconn *c)
{
    struct iovec iov = {c->obuf, c->on};
    int rc = c->on ? pl_writev_all(c->fd, &iov, 1) : 0;
    c->on = 0;
    return rc;
}

/* The replies the request loop left in obuf go out now. */
static int out_flush(struct nconn *c)
{
    pthread_mutex_lock(&c->send_lock);
    int rc = out_flush_locked(c);
    pthread_mutex_unlock(&c->send_lock);
    return rc;
}

/* One reply, whole: a short one from the request loop waits in obuf for
 * the next out_flush; any other goes out at once, after what waits. */
static int reply_send(struct nconn *c, struct iovec *iov, int niov)
{
    size_t n = 0;
    for (int i = 0; i < niov; i++)
        n += iov[i].iov_len;
    pthread_mutex_lock(&c->send_lock);
    int rc = 0;
    if (c->ibuf && n <= OBUF_MAX && pthread_equal(pthread_self(), c->loop)) {
        if (c->on + n > OBUF_MAX)
            rc = out_flush_locked(c);
        for (int i = 0; !rc && i < niov; i++) {
            memcpy(c->obuf + c->on, iov[i].iov_base, iov[i].iov_len);
            c->on += iov[i].iov_len;
        }
    } else {
        rc = out_flush_locked(c);
        if (!rc)
            rc = pl_writev_all(c->fd, iov, niov);
    }
    pthread_mutex_unlock(&c->send_lock);
    return rc;
}

/* The next n bytes from the client: what ibuf holds first, then the
 * socket (a large rest straight into dst). Replies waiting go out before
 * it waits for the client. */
static int in_read(struct nconn *c, void *dst, size_t n)
{
    uint8_t *p = dst;
    size_t take = PL_MIN(n, c->iend - c->iat);
    memcpy(p, c->ibuf + c->iat, take);
    c->iat += take;
    p += take;
    n -= take;
    if (!n)
        return 0;
    int rc = out_flush(c);
    if (rc)
        return rc;
    if (n >= IBUF_SIZE / 2)
        return tsrv_read(c->fd, p, n);
    c->iat = c->iend = 0;
    rc = tsrv_read_some(c->fd, c->ibuf, n, IBUF_SIZE, &c->iend);
    if (rc)
        return rc;
    memcpy(p, c->ibuf, n);
    c->iat = n;
    return 0;
}

/* The next n bytes in place: inside ibuf when they are all there (no
 * copy), else read into spare. */
static int in_take(struct nconn *c, size_t n, uint8_t *spare, const uint8_t **ret)
{
    if (c->iend - c->iat >= n) {
        *ret = c->ibuf + c->iat;
        c->iat += n;
        return 0;
    }
    *ret = spare;
    return in_read(c, spare, n);
}

static int reply_simple(struct nconn *c, const struct nbd_req *r, uint32_t err, const void *data,
                        size_t n)
{
    uint8_t h[16];
    nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(h + 4, err);
    nbd_put64(h + 8, r->cookie);
    /* header and data in one call: a header written alone goes out as a
     * packet of its own, and wakes the client for 16 bytes */
    struct iovec iov[2] = {{h, sizeof(h)}, {(void *)data, n && !err ? n : 0}};
    return reply_send(c, iov, iov[1].iov_len ? 2 : 1);
}

static int reply_chunk(struct nconn *c, const struct nbd_req *r, uint16_t flags, uint16_t type,
                       const void *data, size_t n, const void *data2, size_t n2)
{
    uint8_t h[20];
    nbd_put32(h, NBD_STRUCT_REPLY_MAGIC);
    nbd_put16(h + 4, flags);
    nbd_put16(h + 6, type);
    nbd_put64(h + 8, r->cookie);
    nbd_put32(h + 16, (uint32_t)(n + n2));
    struct iovec iov[3] = {{h, sizeof(h)}};
    int niov = 1;
    if (n)
        iov[niov++] = (struct iovec){(void *)data, n};
    if (n2)
        iov[niov++] = (struct iovec){(void *)data2, n2};
    return reply_send(c, iov, niov);
}

static int reply_err(struct nconn *c, const struct nbd_req *r, uint32_t err, const char *msg)
{
    if (!c->structured)
        return reply_simple(c, r, err, NULL, 0);
    uint8_t e[6];
    size_t ml = strlen(msg);
    nbd_put32(e, err);
    nbd_put16(e + 4, (uint16_t)ml);
    return reply_chunk(c, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, e, 6, msg, ml);
}

static int reply_ok(struct nconn *c, const struct nbd_req *r)
{
    return c->structured ? reply_chunk(c, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, NULL, 0,
                                       NULL, 0)
                         : reply_simple(c, r, 0, NULL, 0);
}

struct bs_ctx {
    uint8_t *d;
    size_t n;
    int one;
};

static int bs_cb(void *arg, uint64_t off, uint64_t len, int data)
{
    struct bs_ctx *b = arg;
    (void)off;
    while (len) {
        uint32_t take = (uint32_t)PL_MIN(len, (uint64_t)0x80000000u);
        nbd_put32(b->d + 4 + b->n * 8, take);
        nbd_put32(b->d + 8 + b->n * 8, data ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO);
        b->n++;
        len -= take;
        if (b->n == BLOCK_STATUS_MAX || b->one)
            return 1;
    }
    return 0;
}

/* ---- reads ---- */
static int read_serve(struct nconn *c, const struct nbd_req *r, uint8_t *buf)
{
    int rc = vc_read(c->vc, r->offset, buf, r->len);
    if (rc) {
        pl_log(PL_LOG_WARN, "nbd", "read %s at %llu: %s", c->vol.name,
               (unsigned long long)r->offset, pl_strerror(rc));
        return reply_err(c, r, nbd_errno(rc), pl_strerror(rc));
    }
    if (!c->structured)
        return reply_simple(c, r, 0, buf, r->len);
    uint8_t o[8];
    nbd_put64(o, r->offset);
    return reply_chunk(c, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, o, 8, buf, r->len);
}

static struct rbuf *rbuf_take(struct nconn *c, size_t n)
{
    pthread_mutex_lock(&c->buf_lock);
    struct rbuf *b = c->free_bufs;
    if (b)
        c->free_bufs = b->next;
    pthread_mutex_unlock(&c->buf_lock);
    if (b && b->cap >= n)
        return b;
    struct rbuf *nb = realloc(b, sizeof(*nb) + (n ? n : 1));
    if (!nb) {
        free(b);
        return NULL;
    }
    nb->cap = n ? n : 1;
    return nb;
}

static void rbuf_give(struct nconn *c, struct rbuf *b)
{
    pthread_mutex_lock(&c->buf_lock);
    b->next = c->free_bufs;
    c->free_bufs = b;
    pthread_mutex_unlock(&c->buf_lock);
}

static void rjob_run(struct pl_job *j)
{
    struct rjob *rj = (struct rjob *)j;
    struct nconn *c = rj->c;
    struct rbuf *b = rbuf_take(c, rj->r.len);
    int rc = b ? read_serve(c, &rj->r, b->data)
               : reply_err(c, &rj->r, NBD_ENOMEM, "out of memory");
    if (rc)
        shutdown(c->fd, SHUT_RDWR); /* the client is gone: the request loop ends too */
    if (b)
        rbuf_give(c, b);
    free(rj);
}

/* Hand a read to the reader threads (the request loop waits while
 * READ_QUEUE reads wait for one). */
static int read_queue(struct nconn *c, const struct nbd_req *r)
{
    int rc = out_flush(c); /* the submission may wait */
    if (rc)
        return rc;
    struct rjob *rj = c->readers ? malloc(sizeof(*rj)) : NULL;
    if (!rj)
        return read_serve(c, r, c->buf); /* no threads or no memory: read here */
    *rj = (struct rjob){.job = {.fn = rjob_run, .detached = 1}, .c = c, .r = *r};
    pl_pool_submit_bounded(c->readers, &rj->job, READ_QUEUE);
    return 0;
}

/* Every queued read is answered, then the threads end. */
static void readers_stop(struct nconn *c)
{
    pl_pool_free(c->readers);
    c->readers = NULL;
    while (c->free_bufs) {
        struct rbuf *b = c->free_bufs;
        c->free_bufs = b->next;
        free(b);
    }
}

/* One request; < 0 ends the connection. */
static int serve(struct nconn *c, const struct nbd_req *r)
{
    const struct pl_volume_info *v = &c->vol;
    int rc;
    uint64_t end = r->offset + r->len;
    int bad = end < r->offset || end > v->size;
    switch (r->type) {
    case NBD_CMD_READ:
        if (r->len > NBD_REQ_MAX)
            return PL_EPROTO;
        if (bad)
            return reply_err(c, r, NBD_EINVAL, "read past the end of the volume");
        return read_queue(c, r);
    case NBD_CMD_WRITE: {
        if (r->len > NBD_REQ_MAX)
            return PL_EPROTO; /* cannot skip what we will not read */
        const uint8_t *data;
        if ((rc = in_take(c, r->len, c->buf, &data)))
            return rc;
        if (v->readonly)
            return reply_err(c, r, NBD_EPERM, "the volume is read-only");
        if (bad)
            return reply_err(c, r, NBD_ENOSPC, "write past the end of the volume");
        int fua = (r->flags & NBD_CMD_FLAG_FUA) != 0;
        if (fua && (rc = out_flush(c)))
            return rc;
        rc = vc_write(c->vc, r->offset, data, r->len, fua);
        return rc ? reply_err(c, r, nbd_errno(rc), pl_strerror(rc)) : reply_ok(c, r);
    }
    case NBD_CMD_FLUSH:
        if ((rc = out_flush(c)))
            return rc;
        rc = vc_flush(c->vc);
        return rc ? reply_err(c, r, nbd_errno(rc), pl_strerror(rc)) : reply_ok(c, r);
    case NBD_CMD_CACHE:
        return reply_ok(c, r);
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        if (v->readonly)
            return reply_err(c, r, NBD_EPERM, "the volume is read-only");
        if (bad)
            return reply_err(c, r, NBD_ENOSPC, "past the end of the volume");
        rc = vc_punch(c->vc, r->offset, r->len);
        return rc ? reply_err(c, r, nbd_errno(rc), pl_strerror(rc)) : reply_ok(c, r);
    case NBD_CMD_BLOCK_STATUS: {
        if (!c->structured || !c->meta_alloc)
            return reply_err(c, r, NBD_EINVAL, "no metadata context selected");
        if (bad || !r->len)
            return reply_err(c, r, NBD_EINVAL, "outside the volume");
        struct bs_ctx b = {malloc(4 + BLOCK_STATUS_MAX * 8), 0,
                           (r->flags & NBD_CMD_FLAG_REQ_ONE) != 0};
        if (!b.d)
            return PL_ENOMEM;
        nbd_put32(b.d, 1); /* base:allocation */
        rc = vc_map(c->vc, r->offset, r->len, bs_cb, &b); /* cached writes are data */
        if (!rc && !b.n)
            bs_cb(&b, r->offset, r->len, 0); /* nothing below the size: one hole */
        rc = rc ? reply_err(c, r, nbd_errno(rc), pl_strerror(rc))
                : reply_chunk(c, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, b.d,
                              4 + b.n * 8, NULL, 0);
        free(b.d);
        return rc;
    }
    default:
        return reply_err(c, r, NBD_EINVAL, "unknown command");
    }
}

static void conn_main(void *ctx, int fd)
{
    struct nbd_server *s = ctx;
    struct nconn c = {.srv = s, .st = s->st, .fd = fd};
    pthread_mutex_init(&c.send_lock, NULL);
    pthread_mutex_init(&c.buf_lock, NULL);
    int rc = handshake(&c);
    if (rc != 1)
        goto out;
    c.buf = malloc(NBD_REQ_MAX);
    c.vc = vc_open(s->caches, c.vol.id);
    c.loop = pthread_self();
    c.ibuf = malloc(IBUF_SIZE);
    if (!c.buf || !c.vc || !c.ibuf)
        goto out;
    if (pl_pool_new(NBD_READERS, &c.readers))
        c.readers = NULL; /* reads run on this thread */
    for (;;) {
        uint8_t h[28];
        struct nbd_req r;
        rc = in_read(&c, h, sizeof(h));
        if (rc)
            break;
        if (nbd_req_parse(h, &r)) {
            pl_log(PL_LOG_WARN, "nbd", "bad request magic from a client; closing it");
            break;
        }
        if (r.type == NBD_CMD_DISC)
            break;
        rc = serve(&c, &r);
        if (rc) {
            if (rc == PL_EPROTO)
                pl_log(PL_LOG_WARN, "nbd", "request of %u bytes is over the %u limit; closing",
                       r.len, NBD_REQ_MAX);
            break;
        }
    }
out:
    if (c.ibuf)
        (void)out_flush(&c); /* answers to what was done; the client may be gone */
    readers_stop(&c);
    vc_close(c.vc); /* the cache's writer stores what is left */
    free(c.buf);
    free(c.ibuf);
    pthread_mutex_destroy(&c.send_lock);
    pthread_mutex_destroy(&c.buf_lock);
}

static int nbd_metrics(void *arg, struct pl_buf *b)
{
    struct nbd_server *s = arg;
    return pl_buf_addf(b,
                       "# TYPE plenum_nbd_write_cache_bytes gauge\n"
                       "plenum_nbd_write_cache_bytes %zu\n"
                       "# TYPE plenum_nbd_write_cache_limit_bytes gauge\n"
                       "plenum_nbd_write_cache_limit_bytes %zu\n",
                       vc_set_bytes(s->caches), vc_set_limit(s->caches));
}

int nbd_start(struct pl_store *st, const struct nbd_opts *no, struct nbd_server **ret)
{
    struct nbd_server *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->st = st;
    struct vc_opts vo = {.budget = no->write_cache};
    int rc = vc_set_new(st, &vo, &s->caches);
    if (rc) {
        free(s);
        return rc;
    }
    struct tsrv_opts o = {no->host, no->port, 256, "nbd"};
    rc = tsrv_start(&o, conn_main, s, &s->srv);
    if (rc) {
        vc_set_free(s->caches);
        free(s);
        return rc;
    }
    if (pl_metrics_source_add(nbd_metrics, s))
        pl_log(PL_LOG_WARN, "nbd", "no room for the NBD write cache's metrics");
    *ret = s;
    return 0;
}

int nbd_port(const struct nbd_server *s)
{
    return tsrv_port(s->srv);
}

void nbd_stop(struct nbd_server *s)
{
    if (!s)
        return;
    pl_metrics_source_remove(nbd_metrics, s);
    tsrv_stop(s->srv); /* connections end; each volume's writer stores what is cached */
    vc_set_free(s->caches);
    free(s);
}

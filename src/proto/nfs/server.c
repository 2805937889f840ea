/* The NFS head's event loop: ONC RPC records over TCP on one libuv loop.
 *
 * - The loop only reads, splits records (rpc_reader) and writes; each record
 *   is decoded and run on libuv's worker pool, so one connection has many
 *   calls in flight and replies go out in the order they finish.
 * - Replies are written with scatter-gather: header and results, then a
 *   READ's data buffer and its padding, never copied together.
 * - Back-pressure: past NFS_INFLIGHT calls a connection stops reading until
 *   replies drain; a record over RPC_MAX_RECORD or a message that is not a
 *   call closes that connection only.
 * - Connections are reference counted: a call in flight or a write holds a
 *   reference, so a client that disconnects never frees what a worker uses.
 * - The same listeners answer NFS, MOUNT and PORTMAP calls: which port a
 *   client picked does not matter.
 */
#include "proto/nfs/nfs.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <uv.h>

#include "proto/nfs/nfsint.h"

#define NFS_INFLIGHT 64
#define NFS_MAX_CONNS 1024
#define READ_CHUNK (256 * 1024)

int nfs_ctx_init(struct nfs_ctx *x, struct pl_store *st);
void nfs_ctx_release(struct nfs_ctx *x);

struct conn;

struct listener {
    uv_tcp_t tcp;
    struct nfs_server *s;
    int port, open;
    uint32_t addr; /* bound, host order */
};

struct nfs_server {
    uv_loop_t loop;
    pthread_t thr;
    uv_async_t stop_async;
    struct nfs_ctx ctx;
    struct listener lis[3];
    struct conn *conns;
    int nconns, stopping;
};

struct conn {
    uv_tcp_t tcp;
    struct nfs_server *s;
    struct rpc_reader rd;
    uint32_t peer, local; /* IPv4, host order */
    int refs, inflight, reading, closing;
    char *rbuf;
    struct conn *prev, *next;
};

struct job {
    uv_work_t work;
    uv_write_t wr;
    struct conn *c;
    uint8_t *rec;
    size_t n;
    struct nfs_reply reply;
    int drop;    /* no reply */
    int garbage; /* not a call: close the connection */
};

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    rpc_reader_release(&c->rd);
    free(c->rbuf);
    free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    conn_unref(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    struct nfs_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void job_free(struct job *j)
{
    pl_buf_release(&j->reply.hdr);
    free(j->reply.data);
    free(j->rec);
    free(j);
}

/* worker thread */
static void job_run(uv_work_t *w)
{
    struct job *j = w->data;
    struct rpc_call call;
    struct xdr_out o = {&j->reply.hdr, 0};
    pl_store_actor("nfs", NULL);
    int rc = rpc_call_decode(j->rec, j->n, &call);
    if (rc == PL_EPROTO) {
        j->garbage = 1;
        return;
    }
    if (rc == PL_EINVAL || rc == PL_EACCES) {
        rpc_reply_denied(&o, call.xid, rc == PL_EINVAL ? -1 : RPC_AUTH_BADCRED);
        if (o.bad)
            j->drop = 1;
        else
            rpc_reply_mark(&j->reply.hdr, 0);
        return;
    }
    j->drop = nfs_call(&j->c->s->ctx, &call, j->c->peer, j->c->local, &j->reply);
}

static void conn_read_resume(struct conn *c);

static void on_written(uv_write_t *wr, int status)
{
    struct job *j = wr->data;
    struct conn *c = j->c;
    (void)status; /* a failed write shows as a read error too */
    job_free(j);
    conn_unref(c);
}

static void job_after(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct conn *c = j->c;
    c->inflight--;
    if (status || c->closing || j->drop || j->garbage) {
        if (j->garbage && !c->closing) {
            pl_log(PL_LOG_INFO, "nfs", "client %08x sent a record that is not an RPC call; "
                   "closing its connection", c->peer);
            conn_close(c);
        }
        job_free(j);
        conn_unref(c);
        return;
    }
    static const uint8_t pad[4];
    uv_buf_t b[3];
    unsigned nb = 0;
    b[nb++] = uv_buf_init(j->reply.hdr.data, (unsigned)j->reply.hdr.len);
    if (j->reply.data_n) {
        b[nb++] = uv_buf_init((char *)j->reply.data, (unsigned)j->reply.data_n);
        if (j->reply.data_n & 3)
            b[nb++] = uv_buf_init((char *)pad, (unsigned)(4 - (j->reply.data_n & 3)));
    }
    j->wr.data = j;
    if (uv_write(&j->wr, (uv_stream_t *)&c->tcp, b, nb, on_written)) {
        conn_close(c);
        job_free(j);
        conn_unref(c);
        return;
    }
    conn_read_resume(c);
}

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *b)
{
    struct conn *c = h->data;
    (void)want;
    *b = uv_buf_init(c->rbuf, READ_CHUNK);
}

/* A whole record is in c->rd.rec: hand it to a worker. */
static int dispatch(struct conn *c)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return PL_ENOMEM;
    j->c = c;
    j->rec = (uint8_t *)pl_buf_detach(&c->rd.rec, &j->n);
    pl_buf_init(&j->reply.hdr);
    j->work.data = j;
    c->refs++;
    c->inflight++;
    if (uv_queue_work(&c->s->loop, &j->work, job_run, job_after)) {
        c->refs--;
        c->inflight--;
        job_free(j);
        return PL_ENOMEM;
    }
    return 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = st->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    size_t off = 0;
    while (off < (size_t)nread && !c->closing) {
        size_t used;
        int done, rc = rpc_reader_feed(&c->rd, (const uint8_t *)b->base + off,
                                       (size_t)nread - off, &used, &done);
        if (rc) {
            pl_log(PL_LOG_INFO, "nfs", "client %08x: %s; closing its connection", c->peer,
                   rc == PL_ERANGE ? "record over the size limit" : pl_strerror(rc));
            conn_close(c);
            return;
        }
        off += used;
        if (done && dispatch(c)) {
            conn_close(c);
            return;
        }
    }
    if (c->inflight >= NFS_INFLIGHT && c->reading && !c->closing) {
        uv_read_stop(st);
        c->reading = 0;
    }
}

static void conn_read_resume(struct conn *c)
{
    if (!c->reading && !c->closing && c->inflight < NFS_INFLIGHT / 2) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
        else
            conn_close(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct nfs_server *s = l->s;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c || !(c->rbuf = malloc(READ_CHUNK))) {
        free(c);
        return; /* the client's connect stays in the backlog and retries */
    }
    c->s = s;
    c->refs = 1;
    rpc_reader_init(&c->rd, RPC_MAX_RECORD);
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (s->stopping || s->nconns > NFS_MAX_CONNS) {
        pl_log(PL_LOG_WARN, "nfs", "connection limit (%d) reached; refusing a client",
               NFS_MAX_CONNS);
        conn_close(c);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
        ss.ss_family == AF_INET)
        c->peer = ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr);
    len = sizeof(ss);
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
        ss.ss_family == AF_INET)
        c->local = ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr);
    uv_tcp_nodelay(&c->tcp, 1);
    c->reading = 1;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
        conn_close(c);
}

static int listen_on(struct nfs_server *s, struct listener *l, const char *host, int port)
{
    struct sockaddr_in sa;
    l->s = s;
    int rc = uv_ip4_addr(host, port, &sa);
    if (rc)
        return PL_EINVAL;
    uv_tcp_init(&s->loop, &l->tcp);
    l->tcp.data = l;
    l->open = 1;
    rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&sa, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
    if (rc)
        return rc;
    struct sockaddr_in bound;
    int len = sizeof(bound);
    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len) == 0) {
        l->port = ntohs(bound.sin_port);
        l->addr = ntohl(bound.sin_addr.s_addr);
    }
    return 0;
}

static void on_stop(uv_async_t *a)
{
    struct nfs_server *s = a->data;
    s->stopping = 1;
    for (int i = 0; i < 3; i++)
        if (s->lis[i].open) {
            s->lis[i].open = 0;
            uv_close((uv_handle_t *)&s->lis[i].tcp, NULL);
        }
    while (s->conns)
        conn_close(s->conns);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
}

static void *loop_main(void *arg)
{
    struct nfs_server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int nfs_start(struct pl_store *st, const struct nfs_opts *o, struct nfs_server **ret)
{
    struct nfs_server *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    int rc = nfs_ctx_init(&s->ctx, st);
    if (rc) {
        free(s);
        return rc;
    }
    rc = uv_loop_init(&s->loop);
    if (rc) {
        nfs_ctx_release(&s->ctx);
        free(s);
        return rc;
    }
    const char *hosts[3] = {o->host, o->mount_host, o->portmap_host};
    const int ports[3] = {o->port, o->mount_port, o->portmap_port};
    for (int i = 0; i < 3 && !rc; i++) {
        if (!hosts[i])
            continue; /* off */
        rc = listen_on(s, &s->lis[i], hosts[i], ports[i]);
        s->ctx.ports[i] = s->lis[i].port;
        s->ctx.addrs[i] = s->lis[i].addr;
    }
    if (!rc)
        rc = uv_async_init(&s->loop, &s->stop_async, on_stop);
    if (!rc) {
        s->stop_async.data = s;
        if (pthread_create(&s->thr, NULL, loop_main, s))
            rc = PL_ENOMEM;
    }
    if (rc) {
        uv_walk(&s->loop, close_walk, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        nfs_ctx_release(&s->ctx);
        free(s);
        return rc;
    }
    *ret = s;
    return 0;
}

int nfs_port(const struct nfs_server *s, int which)
{
    return s->ctx.ports[which];
}

void nfs_stop(struct nfs_server *s)
{
    if (!s)
        return;
    uv_async_send(&s->stop_async);
    pthread_join(s->thr, NULL);
    uv_loop_close(&s->loop);
    nfs_ctx_release(&s->ctx);
    free(s);
}

#include "proto/http/http.h"

#include <http_parser.h>

#include "proto/http/codec.h"
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

#define READ_CHUNK (256u << 10)
#define READ_AHEAD_MAX (1u << 20) /* unparsed bytes we hold before we stop reading */
#define WRITE_STALL_MS 120000

enum conn_state { ST_HEAD, ST_HANDLER, ST_BODY, ST_RESP };

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    const struct http_conn_ops *ops;
    void *ctx;
    struct http_server_opts o;
    int port;
    int nconns;
    int stopping;
    int handles; /* listener + sweep timer still open */
    uint64_t rejected;
    struct http_conn *conns;
};

struct http_conn {
    uv_tcp_t tcp;
    struct http_server *srv;
    struct http_conn *next, *prev;
    int refs;
    int closing, closed_cb_done, tcp_closed;
    int reading;
    enum conn_state state;
    int paused;        /* the head paused body delivery */
    int end_delivered; /* on_body_end was called for this message */
    int sent_continue;
    struct http_codec codec;
    char *rbuf;
    size_t rlen, roff, rcap;
    uint64_t last_activity;
    int writes_pending;
    uint64_t write_since;
    void *data;
    char peer[64];
};

struct wreq {
    uv_write_t w;
    struct http_conn *c;
    void *buf;
    http_write_cb cb;
    void *arg;
};

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

void http_date(int64_t unix_sec, char *out, size_t n)
{
    time_t t = (time_t)unix_sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

const char *http_req_header(const struct http_req *r, const char *lname)
{
    for (int i = 0; i < r->nh; i++)
        if (!strcmp(r->h[i].name, lname))
            return r->h[i].value;
    return NULL;
}

static void conn_update_reading(struct http_conn *c);
static void conn_process(struct http_conn *c);

void http_conn_ref(struct http_conn *c)
{
    c->refs++;
}

void http_conn_unref(struct http_conn *c)
{
    if (--c->refs > 0)
        return;
    http_codec_release(&c->codec);
    free(c->rbuf);
    free(c);
}

struct http_server *http_conn_server(struct http_conn *c)
{
    return c->srv;
}

void *http_conn_get_data(struct http_conn *c)
{
    return c->data;
}

void http_conn_set_data(struct http_conn *c, void *data)
{
    c->data = data;
}

const char *http_conn_peer(struct http_conn *c)
{
    return c->peer;
}

int http_conn_closing(struct http_conn *c)
{
    return c->closing;
}

/* ---- closing ---- */
static void server_maybe_free(struct http_server *s)
{
    if (s->stopping && s->handles == 0 && s->nconns == 0)
        free(s);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    struct http_server *s = c->srv;
    c->tcp_closed = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    http_conn_unref(c);
    server_maybe_free(s);
}

static void conn_notify_close(struct http_conn *c)
{
    if (c->closed_cb_done)
        return;
    c->closed_cb_done = 1;
    if (c->srv->ops->on_close)
        c->srv->ops->on_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    struct http_conn *c = req->data;
    free(req);
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

void http_conn_close(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    conn_notify_close(c);
    /* flush what is queued, then close */
    uv_shutdown_t *sd = malloc(sizeof(*sd));
    if (sd) {
        sd->data = c;
        if (uv_shutdown(sd, (uv_stream_t *)&c->tcp, on_shutdown) == 0)
            return;
        free(sd);
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* ---- writing ---- */
static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct http_conn *c = r->c;
    c->writes_pending--;
    c->write_since = uv_now(c->srv->loop);
    free(r->buf);
    if (r->cb)
        r->cb(c, status < 0 ? PL_EIO : 0, r->arg);
    if (status < 0)
        http_conn_close(c);
    free(r);
    http_conn_unref(c);
}

void http_conn_write_owned(struct http_conn *c, void *p, size_t n, http_write_cb cb, void *arg)
{
    struct wreq *r = malloc(sizeof(*r));
    if (!r || c->closing) {
        free(r);
        free(p);
        if (cb)
            cb(c, PL_EIO, arg);
        return;
    }
    r->c = c;
    r->buf = p;
    r->cb = cb;
    r->arg = arg;
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    http_conn_ref(c);
    if (!c->writes_pending)
        c->write_since = uv_now(c->srv->loop);
    c->writes_pending++;
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        c->writes_pending--;
        free(p);
        free(r);
        if (cb)
            cb(c, PL_EIO, arg);
        http_conn_close(c);
        http_conn_unref(c);
    }
}

void http_conn_write(struct http_conn *c, const void *p, size_t n, http_write_cb cb, void *arg)
{
    void *copy = malloc(n ? n : 1);
    if (!copy) {
        if (cb)
            cb(c, PL_ENOMEM, arg);
        http_conn_close(c);
        return;
    }
    memcpy(copy, p, n);
    http_conn_write_owned(c, copy, n, cb, arg);
}

void http_conn_continue(struct http_conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (c->codec.req.expect_continue && !c->sent_continue && !c->codec.msg_done) {
        c->sent_continue = 1;
        http_conn_write(c, cont, sizeof(cont) - 1, NULL, NULL);
    }
}

/* Body bytes from the codec, while the head wants them. */
static void conn_on_body(void *arg, const char *p, size_t n)
{
    struct http_conn *c = arg;
    if (c->state == ST_BODY && !c->closing && c->srv->ops->on_body)
        c->srv->ops->on_body(c, p, n);
}

static void send_error_and_close(struct http_conn *c, int status)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status,
                     http_status_text(status));
    http_conn_write(c, msg, (size_t)n, NULL, NULL);
    http_conn_close(c); // NOLINT(clang-analyzer-unix.Malloc): frees only in a later loop turn
}

static void deliver_end(struct http_conn *c)
{
    if (c->end_delivered)
        return;
    c->end_delivered = 1;
    c->state = ST_RESP;
    if (c->srv->ops->on_body_end)
        c->srv->ops->on_body_end(c);
}

/* Parse as much buffered input as the state allows, and tell the head what
 * happened. Callbacks into the head run here, never inside the parser. */
static void conn_process(struct http_conn *c)
{
    http_conn_ref(c);
    while (!c->closing) {
        int can_parse = c->state == ST_HEAD ||
                        (c->state == ST_BODY && !c->paused && !c->codec.msg_done);
        if (!can_parse || c->roff == c->rlen)
            break;
        ssize_t used = http_codec_feed(&c->codec, c->rbuf + c->roff, c->rlen - c->roff);
        if (used < 0) {
            pl_log(PL_LOG_INFO, "http", "peer=%s bad request: %s", c->peer, pl_errname((int)used));
            if (c->state == ST_HEAD)
                send_error_and_close(c, used == PL_ERANGE ? 431 : 400);
            else
                http_conn_close(c); /* a broken body: nothing sane to answer */
            break;
        }
        c->roff += (size_t)used;
        if (c->state == ST_HEAD && c->codec.head_ready) {
            c->state = ST_HANDLER;
            c->paused = 1;
            c->sent_continue = 0;
            c->end_delivered = 0;
            c->srv->ops->on_head(c, &c->codec.req);
        }
        if (c->state == ST_BODY && c->codec.msg_done && !c->closing)
            deliver_end(c);
    }
    if (c->roff == c->rlen)
        c->roff = c->rlen = 0;
    conn_update_reading(c);
    http_conn_unref(c);
}

void http_conn_resume(struct http_conn *c)
{
    if (c->closing)
        return;
    if (c->state == ST_HANDLER)
        c->state = ST_BODY;
    c->paused = 0;
    if (c->state == ST_BODY && c->codec.msg_done) {
        deliver_end(c); /* no body, or it was all parsed already */
        return;
    }
    conn_process(c);
}

void http_conn_pause(struct http_conn *c)
{
    c->paused = 1;
    http_codec_pause(&c->codec, 1);
}

void http_conn_done(struct http_conn *c, int keep)
{
    if (c->closing)
        return;
    if (!keep || !c->codec.req.keep_alive || !c->codec.msg_done || c->srv->stopping) {
        http_conn_close(c);
        return;
    }
    c->state = ST_HEAD;
    c->paused = 0;
    c->last_activity = uv_now(c->srv->loop);
    http_codec_next(&c->codec);
    conn_process(c); /* a pipelined request may be waiting */
}

/* ---- reading ---- */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct http_conn *c = h->data;
    if (c->roff && c->roff == c->rlen)
        c->roff = c->rlen = 0;
    if (c->rcap - c->rlen < READ_CHUNK) {
        if (c->roff) {
            memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
            c->rlen -= c->roff;
            c->roff = 0;
        }
        if (c->rcap - c->rlen < READ_CHUNK) {
            size_t ncap = c->rlen + READ_CHUNK;
            char *nb = realloc(c->rbuf, ncap);
            if (!nb) {
                *buf = uv_buf_init(NULL, 0);
                return;
            }
            c->rbuf = nb;
            c->rcap = ncap;
        }
    }
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct http_conn *c = st->data;
    if (n < 0) {
        if (n != UV_EOF)
            pl_log(PL_LOG_DEBUG, "http", "peer=%s read error %s", c->peer, uv_err_name((int)n));
        /* tell the parser: a body delimited by close ends here, others are cut */
        if (c->state == ST_BODY && !c->codec.msg_done)
            http_codec_eof(&c->codec);
        http_conn_close(c);
        return;
    }
    if (n == 0)
        return;
    c->rlen += (size_t)n;
    c->last_activity = uv_now(c->srv->loop);
    conn_process(c);
}

static void conn_update_reading(struct http_conn *c)
{
    if (c->closing)
        return;
    size_t unparsed = c->rlen - c->roff;
    int want = unparsed < READ_AHEAD_MAX &&
               (c->state == ST_HEAD || (c->state == ST_BODY && !c->paused) ||
                c->state == ST_RESP || c->state == ST_HANDLER);
    /* in HANDLER and RESP we read only to notice a vanished peer; the
     * read-ahead cap bounds what a pipelining client can queue */
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ---- accepting ---- */
static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_reject_written(uv_write_t *w, int status)
{
    (void)status;
    uv_close((uv_handle_t *)w->data, on_reject_closed);
    free(w);
}

static void reject(struct http_server *s)
{
    static char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                         "Connection: close\r\nRetry-After: 1\r\n\r\n";
    uv_tcp_t *t = malloc(sizeof(*t));
    uv_write_t *w = malloc(sizeof(*w));
    if (!t || !w || uv_tcp_init(s->loop, t)) {
        free(t);
        free(w);
        return;
    }
    s->rejected++;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t)) {
        free(w);
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    uv_buf_t b = uv_buf_init(busy, sizeof(busy) - 1);
    w->data = t;
    if (uv_write(w, (uv_stream_t *)t, &b, 1, on_reject_written)) {
        free(w);
        uv_close((uv_handle_t *)t, on_reject_closed);
    }
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct http_server *s = ls->data;
    if (status < 0 || s->stopping)
        return;
    if (s->nconns >= s->o.max_conns) {
        reject(s);
        return;
    }
    struct http_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    c->refs = 1; /* held by the open tcp handle */
    http_codec_init(&c->codec, s->o.max_head_bytes, conn_on_body, c);
    if (uv_tcp_init(s->loop, &c->tcp)) {
        free(c);
        return;
    }
    c->tcp.data = c;
    s->nconns++;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp)) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int sl = sizeof(sa);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &sl) == 0) {
        char ip[48] = "?";
        if (sa.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof(ip));
        else
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof(ip));
        snprintf(c->peer, sizeof(c->peer), "%s", ip);
    }
    c->state = ST_HEAD;
    c->last_activity = uv_now(s->loop);
    conn_update_reading(c);
}

/* Once a second: close connections idle too long, heads too slow, bodies
 * stalled, and readers that stopped reading our response. */
static void on_sweep(uv_timer_t *t)
{
    struct http_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (struct http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->closing)
            continue;
        uint64_t idle = now - c->last_activity;
        int expired = 0;
        if (c->state == ST_HEAD)
            expired = idle > (uint64_t)(c->codec.started ? s->o.head_timeout_ms
                                                        : s->o.idle_timeout_ms);
        else if (c->state == ST_BODY && !c->paused)
            expired = idle > (uint64_t)s->o.idle_timeout_ms;
        if (c->writes_pending && now - c->write_since > WRITE_STALL_MS)
            expired = 1;
        if (expired) {
            pl_log(PL_LOG_DEBUG, "http", "peer=%s timed out", c->peer);
            http_conn_close(c);
        }
    }
}

int http_server_start(uv_loop_t *loop, const struct http_server_opts *o,
                      const struct http_conn_ops *ops, void *ctx, struct http_server **ret)
{
    struct http_server *s = calloc(1, sizeof(*s));
    struct sockaddr_storage sa;
    int rc;
    if (!s)
        return PL_ENOMEM;
    s->loop = loop;
    s->ops = ops;
    s->ctx = ctx;
    s->o = *o;
    if (!s->o.max_conns)
        s->o.max_conns = 4096;
    if (!s->o.idle_timeout_ms)
        s->o.idle_timeout_ms = 60000;
    if (!s->o.head_timeout_ms)
        s->o.head_timeout_ms = 30000;
    if (!s->o.max_head_bytes)
        s->o.max_head_bytes = 64 * 1024;
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&sa) &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&sa)) {
        free(s);
        return PL_EINVAL;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT); /* let the close complete before freeing */
        free(s);
        return rc; /* libuv errors are negative errno values */
    }
    int sl = sizeof(sa);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &sl);
    s->port = pl_sockaddr_port(&sa);
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, on_sweep, 1000, 1000);
    s->handles = 2;
    *ret = s;
    return 0;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

void *http_server_ctx(const struct http_server *s)
{
    return s->ctx;
}

uint64_t http_server_rejected(const struct http_server *s)
{
    return s->rejected;
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->handles--;
    server_maybe_free(s);
}

void http_server_stop(struct http_server *s)
{
    s->stopping = 1;
    for (struct http_conn *c = s->conns; c; c = c->next)
        if (c->state == ST_HEAD)
            http_conn_close(c); /* idle: nothing in flight */
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
}

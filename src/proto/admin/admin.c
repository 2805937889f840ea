#include "proto/admin/admin.h"
#include "proto/tsrv/tsrv.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/base.h"
#include "proto/admin/ops.h"

#define RBUF 65536
#define MAX_URL 4096
#define MAX_ARGS 65536
#define MAX_HDR_BYTES (64 * 1024)


struct conn;

struct admin_server {
    struct pl_store *st;
    struct tsrv *srv;
};

struct conn {
    struct admin_server *srv;
    int fd;
    http_parser p;
    http_parser_settings ps;
    char url[MAX_URL];
    size_t url_n;
    int hdr_is_args;
    struct pl_buf args;
    size_t hdr_bytes;
    int headers_done, msg_done, bad;
    struct pl_buf body;
    size_t body_off;
    char rbuf[RBUF];
    size_t rn, roff;
    int eof;
    /* response state for streamed bodies */
    int resp_started;
    uint64_t out_bytes, in_bytes;
};

/* ---- http-parser callbacks ---- */
static int on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->url_n + n >= MAX_URL)
        return c->bad = 414, -1;
    memcpy(c->url + c->url_n, at, n);
    c->url_n += n;
    c->url[c->url_n] = 0;
    return 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    c->hdr_bytes += n;
    if (c->hdr_bytes > MAX_HDR_BYTES)
        return c->bad = 431, -1;
    c->hdr_is_args = (n == 13 && !strncasecmp(at, "x-plenum-args", 13));
    return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    c->hdr_bytes += n;
    if (c->hdr_bytes > MAX_HDR_BYTES)
        return c->bad = 431, -1;
    if (c->hdr_is_args) {
        if (c->args.len + n > MAX_ARGS || pl_buf_add(&c->args, at, n))
            return c->bad = 431, -1;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->headers_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    c->in_bytes += n;
    return pl_buf_add(&c->body, at, n) ? -1 : 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->msg_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

/* Feed buffered bytes to the parser; read more from the socket when empty.
 * Returns 0, or < 0 on EOF/error/parse error. */
static int conn_pump(struct conn *c)
{
    if (c->roff == c->rn) {
        if (c->eof)
            return PL_EPROTO;
        ssize_t r;
        do {
            r = recv(c->fd, c->rbuf, RBUF, 0);
        } while (r < 0 && errno == EINTR);
        if (r <= 0) {
            c->eof = 1;
            /* let the parser see EOF (ends a close-delimited message) */
            http_parser_execute(&c->p, &c->ps, NULL, 0);
            return r == 0 ? PL_EPROTO : -errno;
        }
        c->rn = (size_t)r;
        c->roff = 0;
    }
    if (HTTP_PARSER_ERRNO(&c->p) == HPE_PAUSED)
        http_parser_pause(&c->p, 0);
    size_t used = http_parser_execute(&c->p, &c->ps, c->rbuf + c->roff, c->rn - c->roff);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e != HPE_OK && e != HPE_PAUSED) {
        if (!c->bad)
            c->bad = 400;
        return PL_EPROTO;
    }
    c->roff += used;
    return 0;
}

static ssize_t io_read(void *ctx, void *buf, size_t n)
{
    struct conn *c = ctx;
    while (c->body_off == c->body.len) {
        pl_buf_reset(&c->body);
        c->body_off = 0;
        if (c->msg_done)
            return 0;
        int rc = conn_pump(c);
        if (rc)
            return rc == PL_EPROTO ? PL_EIO : rc;
    }
    size_t take = PL_MIN(n, c->body.len - c->body_off);
    memcpy(buf, c->body.data + c->body_off, take);
    c->body_off += take;
    return (ssize_t)take;
}

static int send_all(struct conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int io_begin(void *ctx, int64_t size)
{
    struct conn *c = ctx;
    char h[256];
    int n = snprintf(h, sizeof(h),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: %" PRId64 "\r\n\r\n",
                     size);
    c->resp_started = 1;
    return send_all(c, h, (size_t)n);
}

static int io_write(void *ctx, const void *buf, size_t n)
{
    struct conn *c = ctx;
    c->out_bytes += n;
    return send_all(c, buf, n);
}

static int err_status(int rc)
{
    switch (rc) {
    case PL_ENOENT:
    case PL_ENOBUCKET:
    case PL_ENOSNAP:
        return 404;
    case PL_EEXIST:
    case PL_ENOTEMPTY:
    case PL_ECONFLICT:
    case PL_EISDIR:
    case PL_ENOTDIR:
    case PL_ESIZE:
        return 409;
    case PL_EINVAL:
    case PL_ENAMETOOLONG:
    case PL_EPROTO:
        return 400;
    case PL_ENOSPC:
        return 507;
    case PL_ESHUTDOWN:
        return 503;
    default:
        return 500;
    }
}

static const char *status_text(int st)
{
    switch (st) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Internal Server Error";
    }
}

static int send_text(struct conn *c, int status, const char *ctype, const char *body, size_t n,
                     int keep)
{
    char h[320];
    int hn = snprintf(h, sizeof(h),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                      status, status_text(status), ctype, n,
                      keep ? "" : "Connection: close\r\n");
    int rc = send_all(c, h, (size_t)hn);
    c->out_bytes += n;
    return rc ? rc : send_all(c, body, n);
}

static int send_json(struct conn *c, int status, json_t *j, int keep)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return PL_ENOMEM;
    int rc = send_text(c, status, "application/json", s, strlen(s), keep);
    free(s);
    return rc;
}

static int send_error(struct conn *c, int rc, int keep)
{
    json_t *j = json_pack("{s:s, s:i, s:s}", "error", pl_errname(rc), "code", rc, "message",
                          pl_strerror(rc));
    int r = send_json(c, err_status(rc), j, keep);
    json_decref(j);
    return r;
}

static int serve_metrics(struct conn *c, int keep)
{
    struct admin_server *s = c->srv;
    struct pl_store_stats st;
    struct pl_buf b;
    pl_buf_init(&b);
    int rc = pl_store_stats(s->st, &st);
    if (rc)
        return send_error(c, rc, keep);
    int e = 0;
    e |= pl_metrics_render(&b);
    e |= pl_buf_addf(&b, "plenum_connections_rejected_total{head=\"admin\"} %" PRIu64 "\n",
                     tsrv_rejected(s->srv));
    e |= pl_buf_addf(&b,
                     "# TYPE plenum_logical_bytes gauge\nplenum_logical_bytes %" PRIu64 "\n"
                     "# TYPE plenum_unique_bytes gauge\nplenum_unique_bytes %" PRIu64 "\n"
                     "# TYPE plenum_stored_bytes gauge\nplenum_stored_bytes %" PRIu64 "\n"
                     "# TYPE plenum_staged_bytes gauge\nplenum_staged_bytes %" PRIu64 "\n"
                     "# TYPE plenum_physical_bytes gauge\nplenum_physical_bytes %" PRIu64 "\n"
                     "# TYPE plenum_free_bytes gauge\nplenum_free_bytes %" PRIu64 "\n"
                     "# TYPE plenum_elements gauge\nplenum_elements %" PRIu64 "\n"
                     "# TYPE plenum_chunks gauge\nplenum_chunks %" PRIu64 "\n"
                     "# TYPE plenum_dedup_ratio gauge\nplenum_dedup_ratio %g\n"
                     "# TYPE plenum_compression_ratio gauge\nplenum_compression_ratio %g\n",
                     st.logical_bytes, st.unique_bytes, st.stored_bytes, st.staged_bytes,
                     st.physical_bytes,
                     st.free_bytes, st.elements, st.chunks,
                     st.unique_bytes ? (double)st.logical_bytes / (double)st.unique_bytes : 1.0,
                     st.stored_bytes ? (double)st.unique_bytes / (double)st.stored_bytes : 1.0);
    e |= pl_buf_addf(&b, "# TYPE plenum_meta_commits_total counter\n"
                         "plenum_meta_commits_total %" PRIu64 "\n"
                         "plenum_meta_mutations_total %" PRIu64 "\n"
                         "# TYPE plenum_meta_batch_size histogram\n",
                     st.commits, st.mutations);
    uint64_t cum = 0;
    for (int i = 0; i < 10; i++) {
        cum += st.batch_hist[i];
        if (i < 9)
            e |= pl_buf_addf(&b, "plenum_meta_batch_size_bucket{le=\"%u\"} %" PRIu64 "\n", 1u << i,
                             cum);
        else
            e |= pl_buf_addf(&b, "plenum_meta_batch_size_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    }
    e |= pl_buf_addf(&b, "plenum_meta_batch_size_count %" PRIu64 "\n", st.commits);
    e |= pl_buf_addf(&b, "# TYPE plenum_hot_chunk_lookups_total counter\n"
                         "plenum_hot_chunk_lookups_total{outcome=\"found\"} %" PRIu64 "\n"
                         "plenum_hot_chunk_lookups_total{outcome=\"read\"} %" PRIu64 "\n"
                         "# TYPE plenum_hot_chunk_bytes gauge\nplenum_hot_chunk_bytes %" PRIu64
                         "\n",
                     st.hot_hits, st.hot_misses, st.hot_bytes);
    rc = e ? send_error(c, PL_ENOMEM, keep)
           : send_text(c, 200, "text/plain; version=0.0.4", b.data, b.len, keep);
    pl_buf_release(&b);
    return rc;
}

/* Handle one parsed request head; the body (if any) is read by the op. */
static int handle(struct conn *c, int keep)
{
    struct admin_server *s = c->srv;
    uint64_t t0 = pl_mono_ns();
    const char *path = c->url;
    char *q = strchr(c->url, '?');
    if (q)
        *q = 0;
    if (!strcmp(path, "/health")) {
        int rc = send_text(c, 200, "application/json", "{\"status\":\"ok\"}\n", 16, keep);
        pl_metrics_observe(pl_metrics_slot("admin", "health"), pl_mono_ns() - t0, rc != 0, 0, 16);
        return rc;
    }
    if (!strcmp(path, "/metrics")) {
        int rc = serve_metrics(c, keep);
        pl_metrics_observe(pl_metrics_slot("admin", "metrics"), pl_mono_ns() - t0, rc != 0, 0, 0);
        return rc;
    }
    if (strncmp(path, "/api/v1/", 8))
        return send_error(c, PL_ENOENT, keep);
    if (c->p.method != HTTP_POST)
        return send_text(c, 405, "application/json", "{\"error\":\"use POST\"}", 20, keep);
    const struct op_def *op = ops_find(path + 8);
    if (!op)
        return send_error(c, PL_ENOENT, keep);
    json_error_t je;
    json_t *args = c->args.len ? json_loadb(c->args.data, c->args.len, 0, &je) : json_object();
    json_t *res = NULL;
    struct op_io io = {io_read, io_begin, io_write, c};
    c->resp_started = 0;
    c->out_bytes = c->in_bytes = 0;
    int rc = args ? ops_run(s->st, op, args, &io, &res) : PL_EINVAL;
    json_decref(args);
    int sent;
    if (rc && c->resp_started) {
        sent = PL_EIO; /* mid-stream failure: the short body tells the client */
        pl_log(PL_LOG_WARN, "admin", "op=%s failed mid-stream err=%s", op->name, pl_errname(rc));
    } else if (rc) {
        pl_log(PL_LOG_INFO, "admin", "op=%s err=%s", op->name, pl_errname(rc));
        /* the client may still be sending a body we will not read */
        sent = send_error(c, rc, keep && c->msg_done);
        if (!c->msg_done)
            sent = sent ? sent : PL_EPROTO;
    } else if (c->resp_started) {
        sent = 0;
    } else {
        sent = send_json(c, 200, res, keep);
    }
    json_decref(res);
    pl_metrics_observe(pl_metrics_slot("admin", op->name), pl_mono_ns() - t0, rc != 0, c->in_bytes,
                       c->out_bytes);
    return sent;
}

static void conn_reset(struct conn *c)
{
    c->url_n = 0;
    c->url[0] = 0;
    c->hdr_bytes = 0;
    c->hdr_is_args = 0;
    pl_buf_reset(&c->args);
    pl_buf_reset(&c->body);
    c->body_off = 0;
    c->headers_done = c->msg_done = c->bad = 0;
}

/* One connection: requests until it closes, errs or idles out (tsrv). */
static void conn_serve(void *ctx, int fd)
{
    struct admin_server *s = ctx;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    c->fd = fd;
    pl_buf_init(&c->args);
    pl_buf_init(&c->body);
    c->ps.on_url = on_url;
    c->ps.on_header_field = on_hfield;
    c->ps.on_header_value = on_hvalue;
    c->ps.on_headers_complete = on_headers_complete;
    c->ps.on_body = on_body;
    c->ps.on_message_complete = on_message_complete;
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    for (;;) {
        conn_reset(c);
        while (!c->headers_done) {
            if (conn_pump(c))
                goto done;
        }
        if (c->bad) {
            (void)send_error(c, PL_EPROTO, 0);
            break;
        }
        int keep = http_should_keep_alive(&c->p) && !tsrv_stopping(s->srv);
        if (handle(c, keep) || !keep)
            break;
        /* drain whatever body the op did not read */
        while (!c->msg_done) {
            pl_buf_reset(&c->body);
            if (conn_pump(c))
                goto done;
        }
    }
done:
    pl_buf_release(&c->args);
    pl_buf_release(&c->body);
    free(c);
}

int admin_start(struct pl_store *st, const struct admin_opts *o, struct admin_server **ret)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    struct admin_server *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->st = st;
    struct tsrv_opts to = {o->host, o->port, o->max_conns > 0 ? o->max_conns : 64, "admin",
                           o->idle_timeout_s > 0 ? o->idle_timeout_s : 60, busy};
    int rc = tsrv_start(&to, conn_serve, s, &s->srv);
    if (rc) {
        free(s);
        return rc;
    }
    *ret = s;
    return 0;
}

int admin_port(const struct admin_server *s)
{
    return tsrv_port(s->srv);
}

void admin_stop(struct admin_server *s)
{
    if (!s)
        return;
    /* idle keep-alive connections wake with EOF; busy ones finish their request */
    tsrv_stop(s->srv);
    free(s);
}

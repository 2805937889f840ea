/* HTTP/1.1 server connections on a libuv loop.
 *
 * Design note
 * - One loop thread owns every socket: it reads, parses (http-parser), and
 *   writes. It never hashes, compresses or touches the disk: the protocol
 *   head above moves that work to a thread pool and calls back in.
 * - A connection serves one request at a time (pipelined requests wait in
 *   the read buffer). States: HEAD (reading headers) -> the head's on_head
 *   -> BODY (bytes delivered through on_body while the head does not pause)
 *   -> the head writes the response and calls http_conn_done -> HEAD again
 *   or close.
 * - Back-pressure: the head pauses body delivery while its worker is busy;
 *   reading stops, so a fast client cannot fill our memory. Responses are
 *   written with http_conn_write, whose callback tells the head when it may
 *   produce more (a slow reader slows the producer down).
 * - Limits: header bytes, idle time between requests, time to receive a
 *   request head (slowloris), total connections (past it: 503 and close).
 * - Connections are reference counted: work in flight holds a reference, so
 *   a client that disconnects never frees memory a worker still uses.
 */
#ifndef PL_HTTP_H
#define PL_HTTP_H

#include <stdint.h>
#include <uv.h>

#include "base/base.h"

#define HTTP_MAX_HEADERS 100

struct http_header {
    char *name; /* lower-cased */
    char *value;
};

struct http_req {
    int method;         /* enum http_method */
    const char *method_name;
    char *target;       /* raw request target: path?query */
    struct http_header h[HTTP_MAX_HEADERS];
    int nh;
    int64_t content_length; /* -1 when absent */
    int chunked;
    int expect_continue;
    int keep_alive;
    int http_minor;
};

/* Case-insensitive header lookup (names are stored lower-case); NULL if absent. */
const char *http_req_header(const struct http_req *r, const char *lname);

struct http_conn;

struct http_conn_ops {
    /* A request head arrived. Reading is paused until http_conn_resume. */
    void (*on_head)(struct http_conn *c, struct http_req *r);
    /* Body bytes (de-chunked); valid during the call only. */
    void (*on_body)(struct http_conn *c, const char *p, size_t n);
    /* The whole body has arrived. */
    void (*on_body_end)(struct http_conn *c);
    /* The connection is closing (peer gone, timeout, error); the head drops
     * its request state. Called at most once, before the last unref. */
    void (*on_close)(struct http_conn *c);
};

struct http_server_opts {
    const char *host;
    int port;
    int max_conns;        /* 0: 4096 */
    int idle_timeout_ms;  /* between requests; 0: 60 s */
    int head_timeout_ms;  /* to receive a whole head; 0: 30 s */
    size_t max_head_bytes; /* 0: 64 KiB */
};

struct http_server;

/* Bind and listen on loop (called on the loop thread). */
int http_server_start(uv_loop_t *loop, const struct http_server_opts *o,
                      const struct http_conn_ops *ops, void *ctx,
                      struct http_server **ret) PL_WUR;
int http_server_port(const struct http_server *s);
void *http_server_ctx(const struct http_server *s);
/* Stop accepting and close idle connections; busy ones close after their
 * current response. Frees the server once all connections are gone. */
void http_server_stop(struct http_server *s);
uint64_t http_server_rejected(const struct http_server *s);

/* ---- used by the head, on the loop thread ---- */
struct http_server *http_conn_server(struct http_conn *c);
void *http_conn_get_data(struct http_conn *c);
void http_conn_set_data(struct http_conn *c, void *data);
void http_conn_ref(struct http_conn *c);
void http_conn_unref(struct http_conn *c);
/* Deliver (more) body, or start reading the next request after done. */
void http_conn_resume(struct http_conn *c);
/* Stop body delivery until resume (back-pressure). */
void http_conn_pause(struct http_conn *c);
/* Send "100 Continue" if the client asked for it. */
void http_conn_continue(struct http_conn *c);
/* Queue bytes (copied). cb (may be NULL) runs once they are handed to the
 * kernel, or with status < 0 when the connection failed. */
typedef void (*http_write_cb)(struct http_conn *c, int status, void *arg);
void http_conn_write(struct http_conn *c, const void *p, size_t n, http_write_cb cb, void *arg);
/* Takes ownership of p (malloc'd). */
void http_conn_write_owned(struct http_conn *c, void *p, size_t n, http_write_cb cb, void *arg);
/* The response is complete. keep: serve the next request on this
 * connection (the unread rest of this request's body is skipped first). */
void http_conn_done(struct http_conn *c, int keep);
/* Close now (after queued writes). */
void http_conn_close(struct http_conn *c);
/* Peer address as text, for logs. */
const char *http_conn_peer(struct http_conn *c);
int http_conn_closing(struct http_conn *c);

/* Standard reason phrase. */
const char *http_status_text(int status);
/* RFC 7231 date into out (at least 30 bytes). */
void http_date(int64_t unix_sec, char *out, size_t n);

#endif

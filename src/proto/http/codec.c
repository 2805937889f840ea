#include "proto/http/codec.h"

#include <strings.h>

static http_parser_settings settings;

static int arena_add(struct http_codec *c, const char *p, size_t n, size_t *off, size_t *len)
{
    if (c->head_bytes + n > c->max_head)
        return -1;
    c->head_bytes += n;
    if (*len == 0)
        *off = c->arena.len;
    else if (*off + *len != c->arena.len)
        return -1; /* pieces of one string are always contiguous in the arena */
    if (pl_buf_add(&c->arena, p, n))
        return -1;
    *len += n;
    return 0;
}

static int end_string(struct http_codec *c)
{
    return pl_buf_add(&c->arena, "", 1) ? -1 : 0; /* NUL separator */
}

static int cb_begin(http_parser *p)
{
    struct http_codec *c = p->data;
    pl_buf_reset(&c->arena);
    c->url_len = 0;
    c->hn = 0;
    c->in_value = 0;
    c->url_closed = 0;
    c->too_many = 0;
    c->head_bytes = 0;
    c->started = 1;
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    struct http_codec *c = p->data;
    return arena_add(c, at, n, &c->url_off, &c->url_len);
}

static int cb_field(http_parser *p, const char *at, size_t n)
{
    struct http_codec *c = p->data;
    if (!c->url_closed) {
        if (end_string(c))
            return -1;
        c->url_closed = 1;
        c->hlen[0][0] = 0;
    }
    if (c->in_value) {
        /* a new header begins: close the previous value */
        if (end_string(c))
            return -1;
        c->hn++;
        c->in_value = 0;
        if (c->hn < HTTP_MAX_HEADERS)
            c->hlen[c->hn][0] = 0;
    }
    if (c->hn >= HTTP_MAX_HEADERS) {
        c->too_many = 1;
        return -1;
    }
    return arena_add(c, at, n, &c->hoff[c->hn][0], &c->hlen[c->hn][0]);
}

static int cb_value(http_parser *p, const char *at, size_t n)
{
    struct http_codec *c = p->data;
    if (!c->in_value) {
        if (end_string(c))
            return -1;
        c->in_value = 1;
        c->hlen[c->hn][1] = 0;
    }
    return arena_add(c, at, n, &c->hoff[c->hn][1], &c->hlen[c->hn][1]);
}

static int cb_headers_complete(http_parser *p)
{
    struct http_codec *c = p->data;
    if (!c->url_closed) {
        if (end_string(c)) /* no headers: close the URL */
            return -1;
        c->url_closed = 1;
    }
    if (c->in_value) {
        if (end_string(c))
            return -1;
        c->hn++;
        c->in_value = 0;
    }
    struct http_req *r = &c->req;
    memset(r, 0, sizeof(*r));
    r->method = p->method;
    r->method_name = http_method_str(p->method);
    r->target = c->arena.data + c->url_off;
    r->target[c->url_len] = 0;
    for (int i = 0; i < c->hn; i++) {
        char *name = c->arena.data + c->hoff[i][0], *val = c->arena.data + c->hoff[i][1];
        name[c->hlen[i][0]] = 0;
        val[c->hlen[i][1]] = 0;
        for (char *q = name; *q; q++)
            if (*q >= 'A' && *q <= 'Z')
                *q = (char)(*q + 32);
        r->h[i].name = name;
        r->h[i].value = val;
    }
    r->nh = c->hn;
    r->content_length = (p->flags & F_CONTENTLENGTH) ? (int64_t)p->content_length : -1;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    const char *ex = http_req_header(r, "expect");
    r->expect_continue = ex && !strcasecmp(ex, "100-continue");
    r->keep_alive = http_should_keep_alive(p);
    r->http_minor = p->http_minor;
    c->head_ready = 1;
    http_parser_pause(p, 1);
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    struct http_codec *c = p->data;
    if (c->on_body)
        c->on_body(c->arg, at, n);
    return 0;
}

static int cb_complete(http_parser *p)
{
    struct http_codec *c = p->data;
    c->msg_done = 1;
    c->started = 0;
    /* hold the next pipelined request until this one is answered */
    http_parser_pause(p, 1);
    return 0;
}

void http_codec_init(struct http_codec *c, size_t max_head,
                     void (*on_body)(void *arg, const char *p, size_t n), void *arg)
{
    if (!settings.on_url) {
        settings.on_message_begin = cb_begin;
        settings.on_url = cb_url;
        settings.on_header_field = cb_field;
        settings.on_header_value = cb_value;
        settings.on_headers_complete = cb_headers_complete;
        settings.on_body = cb_body;
        settings.on_message_complete = cb_complete;
    }
    memset(c, 0, sizeof(*c));
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    pl_buf_init(&c->arena);
    c->max_head = max_head;
    c->on_body = on_body;
    c->arg = arg;
}

void http_codec_release(struct http_codec *c)
{
    pl_buf_release(&c->arena);
}

ssize_t http_codec_feed(struct http_codec *c, const char *p, size_t n)
{
    if (HTTP_PARSER_ERRNO(&c->p) == HPE_PAUSED)
        http_parser_pause(&c->p, 0);
    size_t used = http_parser_execute(&c->p, &settings, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_OK || e == HPE_PAUSED)
        return (ssize_t)used;
    if (c->too_many || e == HPE_HEADER_OVERFLOW || c->head_bytes >= c->max_head)
        return PL_ERANGE;
    return PL_EPROTO;
}

void http_codec_eof(struct http_codec *c)
{
    if (HTTP_PARSER_ERRNO(&c->p) == HPE_PAUSED)
        http_parser_pause(&c->p, 0);
    http_parser_execute(&c->p, &settings, NULL, 0);
}

void http_codec_pause(struct http_codec *c, int paused)
{
    http_parser_pause(&c->p, paused);
}

void http_codec_next(struct http_codec *c)
{
    c->head_ready = 0;
    c->msg_done = 0;
    c->started = 0;
    http_parser_pause(&c->p, 0);
}

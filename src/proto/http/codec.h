/* The HTTP/1.1 request codec: http-parser plus the bookkeeping that turns its
 * callbacks into a struct http_req. Pure (no sockets, no loop): bytes in,
 * events out, so libFuzzer can drive it.
 *
 * http_codec_feed consumes bytes until it has a complete head (head_ready),
 * a complete message (msg_done), needs more input, or fails. Body bytes go to
 * on_body as they are parsed. After head_ready or msg_done the codec is
 * paused: call http_codec_resume to go on. */
#ifndef PL_HTTP_CODEC_H
#define PL_HTTP_CODEC_H

#include <http_parser.h>

#include "base/base.h"
#include "proto/http/http.h"

struct http_codec {
    http_parser p;
    struct http_req req;
    struct pl_buf arena; /* target and header strings, NUL-separated */
    size_t url_off, url_len;
    size_t hoff[HTTP_MAX_HEADERS][2], hlen[HTTP_MAX_HEADERS][2];
    int hn, in_value, url_closed, too_many;
    size_t head_bytes, max_head;
    int started;    /* some bytes of the current message were seen */
    int head_ready; /* req is filled in */
    int msg_done;   /* the whole message (body included) was parsed */
    void (*on_body)(void *arg, const char *p, size_t n);
    void *arg;
};

void http_codec_init(struct http_codec *c, size_t max_head,
                     void (*on_body)(void *arg, const char *p, size_t n), void *arg);
void http_codec_release(struct http_codec *c);
/* Bytes consumed (>= 0), or < 0: PL_EPROTO malformed, PL_ERANGE head too
 * large or too many headers. */
ssize_t http_codec_feed(struct http_codec *c, const char *p, size_t n);
/* Tell the parser the peer closed (ends a close-delimited body). */
void http_codec_eof(struct http_codec *c);
void http_codec_pause(struct http_codec *c, int paused);
/* Forget the finished message; the next feed starts a new one. */
void http_codec_next(struct http_codec *c);

#endif

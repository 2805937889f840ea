/* libFuzzer: the HTTP/1.1 request codec, fed in arbitrary pieces, across
 * pipelined messages. The first byte picks the piece size. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/http/codec.h"

static void on_body(void *arg, const char *p, size_t n)
{
    (void)p;
    *(size_t *)arg += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct http_codec c;
    size_t body = 0;
    if (n < 1)
        return 0;
    size_t step = (size_t)data[0] + 1;
    http_codec_init(&c, 16384, on_body, &body);
    const char *p = (const char *)data + 1;
    size_t left = n - 1;
    int messages = 0;
    while (left && messages < 64) {
        size_t take = left < step ? left : step;
        ssize_t used = http_codec_feed(&c, p, take);
        if (used < 0)
            break;
        if (c.head_ready) {
            /* what a head would look at */
            (void)http_req_header(&c.req, "host");
            if (c.req.target[0] == 0 && c.req.nh > HTTP_MAX_HEADERS)
                abort();
            c.head_ready = 0;
        }
        if (c.msg_done) {
            http_codec_next(&c);
            messages++;
        }
        if (used == 0 && !c.msg_done && take == left)
            break;
        p += used;
        left -= (size_t)used;
        if (used == 0 && take < left)
            step = step * 2; /* the parser wanted more at once */
    }
    if (body > n)
        abort();
    http_codec_release(&c);
    return 0;
}

/* libFuzzer: RESP requests through the decoder in arbitrary pieces, the glob
 * matcher, and whole conversations through the head's connection loop on a
 * real store and KV cache in a temporary directory (over a socketpair). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_store.h"
#include "kv/kv.h"
#include "proto/resp/rcodec.h"
#include "proto/resp/resp.h"

static struct resp_server *srv;

static void setup(void)
{
    struct pl_store *st = fuzz_store_open("resp");
    struct kv *kv;
    /* a tiny DRAM tier: values go through demotion and promotion too */
    struct kv_opts ko = {1 << 20, 64 << 20};
    if (kv_open(st, &ko, &kv) || resp_start(st, kv, &(struct resp_opts){0}, &srv))
        abort();
}

static void *drain(void *arg)
{
    int fd = *(int *)arg;
    char buf[65536];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (!srv)
        setup();
    /* the decoder alone, fed in pieces whose sizes the input's first byte picks */
    struct resp_parser *p = malloc(sizeof(*p));
    if (!p)
        return 0;
    resp_parser_init(p);
    size_t step = n ? (size_t)(data[0] % 7) + 1 : 1, at = 0;
    while (at < n) {
        size_t used, len = step < n - at ? step : n - at;
        int rc = resp_feed(p, data + at, len, &used);
        at += used;
        if (rc < 0)
            break;
        if (rc == 1) {
            if (p->argc >= 2)
                (void)resp_glob((const char *)p->args[0]->data, p->args[0]->n,
                                p->args[1]->data, p->args[1]->n, p->argc & 1);
            resp_next(p, 0);
        }
    }
    resp_parser_release(p);
    free(p);
    /* a whole conversation */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return 0;
    pthread_t t;
    if (pthread_create(&t, NULL, drain, &sv[0])) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(sv[0], data + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(sv[0], SHUT_WR);
    resp_serve_fd(srv, sv[1]);
    close(sv[1]);
    pthread_join(t, NULL);
    close(sv[0]);
    return 0;
}

/* The RESP head: the Redis protocol (RESP2 and RESP3) over the KV cache
 * service, on TCP and on a Unix socket for engines on the same host.
 * Event loops answer what is in memory, sending what the socket takes and
 * waiting on the loop for room for the rest; a connection moves to a worker
 * thread while a large value streams in or a value is read from flash, so a
 * large SET or a flash read never holds up other clients. Replies go out
 * with sendmsg straight from the cached buffers. */
#ifndef PL_RESP_H
#define PL_RESP_H

#include "kv/kv.h"
#include "plenum/store.h"

struct resp_server;
struct resp_opts {
    const char *host;
    int port;
    const char *unix_path;   /* also listen here (NULL: not) */
    const char *requirepass; /* the default user's password (NULL: no password) */
    int loops;               /* event loop threads (0: one) */
};
int resp_start(struct pl_store *st, struct kv *kv, const struct resp_opts *o,
               struct resp_server **ret) PL_WUR;
int resp_port(const struct resp_server *s);
void resp_stop(struct resp_server *s); /* accepts NULL */

/* One connection's conversation on fd until it ends (the fuzzer and tests
 * drive it over a socketpair). */
void resp_serve_fd(struct resp_server *s, int fd);

#endif

/* The admin head: a small HTTP/1.1 JSON API (what the CLI uses), /health and
 * /metrics in Prometheus text format.
 *
 * Admin traffic is low-volume and long operations (fsck, gc, streaming a
 * large object) must not stall each other, so each connection gets its own
 * thread (bounded by max_conns) rather than a share of an event loop. */
#ifndef PL_ADMIN_H
#define PL_ADMIN_H

#include "plenum/store.h"

struct admin_server;

struct admin_opts {
    const char *host;
    int port;
    int max_conns;      /* 0 = 64 */
    int idle_timeout_s; /* 0 = 60 */
};

/* Bind and start serving. PL_EBUSY (with errno text logged by the caller)
 * when the address is in use. */
int admin_start(struct pl_store *st, const struct admin_opts *o, struct admin_server **ret) PL_WUR;
/* The port actually bound (useful with port 0). */
int admin_port(const struct admin_server *s);
/* Stop accepting, end connections (in-flight requests finish or fail), join. */
void admin_stop(struct admin_server *s);

#endif

/* A TCP server with a thread per connection, for heads whose clients hold few
 * long connections and whose work is blocking store calls anyway (NBD). */
#ifndef PL_TSRV_H
#define PL_TSRV_H

#include "base/base.h"

struct tsrv;
/* Handle one connection on fd until it ends; the server closes fd after. */
typedef void (*tsrv_conn_fn)(void *ctx, int fd);

struct tsrv_opts {
    const char *host;
    int port; /* 0: any free port */
    int max_conns;
    const char *name; /* for the log */
};

int tsrv_start(const struct tsrv_opts *o, tsrv_conn_fn fn, void *ctx, struct tsrv **ret) PL_WUR;
int tsrv_port(const struct tsrv *s);
/* Stop accepting, wake every connection (reads see EOF), wait for them. */
void tsrv_stop(struct tsrv *s);

/* Blocking helpers: 0, or PL_EPROTO on EOF before n bytes, or -errno. */
int tsrv_read(int fd, void *buf, size_t n) PL_WUR;
int tsrv_write(int fd, const void *buf, size_t n) PL_WUR;

#endif

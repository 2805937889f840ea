/* A TCP server with a thread per connection, for heads whose clients hold few
 * long connections and whose work is blocking store calls anyway (NBD). */
#ifndef PL_TSRV_H
#define PL_TSRV_H

#include <pthread.h>

#include "base/base.h"

struct tsrv;
/* Handle one connection on fd until it ends; the server closes fd after. */
typedef void (*tsrv_conn_fn)(void *ctx, int fd);

struct tsrv_opts {
    const char *host;
    int port; /* 0: any free port */
    int max_conns;
    const char *name;       /* for the log */
    int idle_s;             /* a read waiting longer fails (0: no limit) */
    const char *busy_reply; /* sent to a connection over max_conns, or NULL */
    const char *unix_path;  /* listen on this Unix socket instead of host:port */
};

int tsrv_start(const struct tsrv_opts *o, tsrv_conn_fn fn, void *ctx, struct tsrv **ret) PL_WUR;
int tsrv_port(const struct tsrv *s);
/* Stop accepting, wake every connection (reads see EOF; a response being
 * written still goes out), wait for them. */
void tsrv_stop(struct tsrv *s);
/* With lock held and every connection's reads shut: wait on cond until
 * *nconns is 0. Replies already going out get TSRV_STOP_GRACE_MS; then
 * cut(arg) shuts the connections left down for good (a client that stopped
 * reading must not hold a stop forever), said once in the log as name. */
#define TSRV_STOP_GRACE_MS 5000
void tsrv_wait_conns(pthread_mutex_t *lock, pthread_cond_t *cond, const int *nconns,
                     const char *name, void (*cut)(void *arg), void *arg);
/* Close a listening socket and its stop pipe (-1s are skipped). */
void tsrv_listener_close(int fd, const int stop_pipe[2]);
/* Has tsrv_stop begun? (Keep-alive protocols stop offering it.) */
int tsrv_stopping(struct tsrv *s);
/* Connections refused over max_conns since start. */
uint64_t tsrv_rejected(struct tsrv *s);

/* A listening socket on host:port (0: any free port); *ret_port gets the port. */
int tsrv_listen(const char *host, int port, int *ret_fd, int *ret_port) PL_WUR;

/* A listening Unix socket at path (a stale socket file from a crash is
 * replaced). */
int tsrv_listen_unix(const char *path, int *ret_fd) PL_WUR;

/* Accept connections on lfd until stop_fd turns readable: on_conn gets each
 * (TCP_NODELAY set) and owns it. */
void tsrv_accept_loop(int lfd, int stop_fd, void (*on_conn)(void *arg, int fd), void *arg);

/* Read exactly n bytes: 0, PL_EPROTO on EOF before n bytes, or -errno.
 * (Writes use pl_write_all: servers ignore SIGPIPE.) */
int tsrv_read(int fd, void *buf, size_t n) PL_WUR;
/* Read at least min and at most cap bytes (what the socket has once min
 * arrived); *got: how many. Errors as tsrv_read. */
int tsrv_read_some(int fd, void *buf, size_t min, size_t cap, size_t *got) PL_WUR;

#endif

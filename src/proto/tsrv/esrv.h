/* A TCP (or Unix socket) server for heads whose clients send many small
 * requests on many connections (RESP): event loops serve what cannot block,
 * and a connection moves to a worker thread only while it needs one (a large
 * value streaming in, a read from flash). A thread per connection
 * pays a thread wake-up for every request; a loop pays one epoll_wait for
 * all the connections that are ready.
 *
 * A connection belongs to one thread at a time: its loop, or one worker.
 * Sockets stay blocking, so a worker's large send or receive is one system
 * call that waits in the kernel; a loop passes MSG_DONTWAIT on every call,
 * and a reply the socket cannot take at once waits on the loop (epoll for
 * output, no input read meanwhile), as a single-threaded server's would. */
#ifndef PL_ESRV_H
#define PL_ESRV_H

#include "base/base.h"

enum {
    ESRV_KEEP = 0,    /* wait for more input on the loop */
    ESRV_HANDOFF = 1, /* (from readable, writable) continue on a worker thread */
    ESRV_CLOSE = 2,   /* the connection ends */
    ESRV_WRITE = 3,   /* (from readable, writable) wait on the loop until fd takes more output */
};

struct esrv_ops {
    /* A new connection on fd: *ret is the head's state for it (0 or the
     * connection is refused). */
    int (*open)(void *ctx, int fd, void **ret);
    /* fd is readable (or hung up), on a loop thread: must not block
     * (MSG_DONTWAIT on every recv and send). */
    int (*readable)(void *conn);
    /* fd has room for output after readable or writable said ESRV_WRITE
     * (or hung up), on a loop thread: must not block; ESRV_KEEP waits for
     * input again. */
    int (*writable)(void *conn);
    /* On a worker thread, may block: ESRV_KEEP gives the connection back to
     * its loop (nothing left to do without new input), ESRV_CLOSE ends it. */
    int (*work)(void *conn);
    /* The connection is over (the server closes fd after). */
    void (*close)(void *conn);
};

struct esrv_opts {
    const char *host;
    int port; /* 0: any free port */
    const char *unix_path; /* listen on this Unix socket instead of host:port */
    int max_conns;
    int loops; /* event loop threads (0: one) */
    const char *name; /* for the log */
};

struct esrv;
int esrv_start(const struct esrv_opts *o, const struct esrv_ops *ops, void *ctx,
               struct esrv **ret) PL_WUR;
int esrv_port(const struct esrv *s);
/* Stop accepting, end every connection (reads see EOF; a reply being written
 * still goes out), wait for them and for the threads. Accepts NULL. */
void esrv_stop(struct esrv *s);

/* Wait up to timeout_ms (-1: no limit) for events on fd: 1 ready, 0 timed
 * out, -errno. */
int esrv_wait(int fd, short events, int timeout_ms) PL_WUR;

#endif

#include "proto/tsrv/esrv.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/tsrv/tsrv.h"

#define LOOPS_MAX 64
#define EVENTS 64
#define WORKERS_KEPT 4       /* idle workers kept past WORKER_IDLE_MS */
#define WORKER_IDLE_MS 5000

struct econn {
    struct esrv *s;
    int fd, loop;
    int out; /* armed for output, not input */
    void *h;
    struct econn *prev, *next; /* every connection */
    struct econn *qnext;       /* waiting for a worker */
};

struct eloop {
    struct esrv *s;
    int ep, wake, running;
    pthread_t thr;
};

struct esrv {
    const struct esrv_ops *ops;
    void *ctx;
    char name[32];
    int fd, port, max_conns, nloops, next_loop, stop_pipe[2];
    struct eloop loops[LOOPS_MAX];
    pthread_t accept_thr;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a connection ended, a worker exited */
    pthread_cond_t queued;  /* a connection waits for a worker */
    struct econn *conns, *qhead, *qtail;
    int nconns, nqueued, nworkers, idle_workers, workers_stop;
};

int esrv_wait(int fd, short events, int timeout_ms)
{
    struct pollfd pf = {fd, events, 0};
    for (;;) {
        int r = poll(&pf, 1, timeout_ms);
        if (r >= 0)
            return r > 0;
        if (errno != EINTR)
            return -errno;
    }
}

/* The connection is over: the head lets go, then the socket closes. */
static void conn_end(struct econn *c)
{
    struct esrv *s = c->s;
    s->ops->close(c->h);
    pthread_mutex_lock(&s->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    close(c->fd);
    free(c);
}

/* Give c (back) to its loop. Level-triggered: input already waiting is
 * reported at once. */
static int conn_arm(struct econn *c)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    c->out = 0;
    return epoll_ctl(c->s->loops[c->loop].ep, EPOLL_CTL_ADD, c->fd, &ev) < 0 ? -errno : 0;
}

/* Switch c, on its loop, between waiting for input and for room to send. */
static int conn_rearm(struct econn *c, int out)
{
    if (c->out == out)
        return 0;
    /* waiting for room, not EPOLLRDHUP: a client that stopped sending still
     * reads its replies (a hang-up or error is reported anyway) */
    struct epoll_event ev = {.events = out ? EPOLLOUT : EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    c->out = out;
    return epoll_ctl(c->s->loops[c->loop].ep, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
}

static void *worker_main(void *arg);

/* Queue c for a worker, starting one unless an idle one is left for it (a
 * worker may keep a connection for long: one whose client stalls halfway
 * through a value must not hold up another in the queue). */
static void conn_handoff(struct econn *c)
{
    struct esrv *s = c->s;
    pthread_mutex_lock(&s->lock);
    c->qnext = NULL;
    if (s->qtail)
        s->qtail->qnext = c;
    else
        s->qhead = c;
    s->qtail = c;
    s->nqueued++;
    int start = s->nqueued > s->idle_workers;
    if (start)
        s->nworkers++;
    pthread_cond_signal(&s->queued);
    pthread_mutex_unlock(&s->lock);
    if (!start)
        return;
    pthread_attr_t at;
    pthread_t t;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, worker_main, s)) {
        /* the queue still moves: a running worker takes c when it is free */
        pl_log(PL_LOG_WARN, s->name, "cannot start a worker thread: %s", strerror(errno));
        pthread_mutex_lock(&s->lock);
        s->nworkers--;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_attr_destroy(&at);
}

static void *worker_main(void *arg)
{
    struct esrv *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->qhead && !s->workers_stop) {
            s->idle_workers++;
            struct timespec ts = pl_deadline_ms(WORKER_IDLE_MS);
            int rc = pthread_cond_timedwait(&s->queued, &s->lock, &ts);
            s->idle_workers--;
            if (rc == ETIMEDOUT && !s->qhead && s->idle_workers >= WORKERS_KEPT)
                goto out; /* enough others wait: this one is not needed */
        }
        struct econn *c = s->qhead;
        if (!c)
            break;
        s->qhead = c->qnext;
        if (!s->qhead)
            s->qtail = NULL;
        s->nqueued--;
        pthread_mutex_unlock(&s->lock);
        if (s->ops->work(c->h) != ESRV_KEEP || conn_arm(c))
            conn_end(c);
        pthread_mutex_lock(&s->lock);
    }
out:
    s->nworkers--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void *loop_main(void *arg)
{
    struct eloop *l = arg;
    struct esrv *s = l->s;
    struct epoll_event ev[EVENTS];
    for (;;) {
        int n = epoll_wait(l->ep, ev, EVENTS, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            pl_log(PL_LOG_ERROR, s->name, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct econn *c = ev[i].data.ptr;
            if (!c)
                return NULL; /* esrv_stop: every connection has ended */
            int r = c->out ? s->ops->writable(c->h) : s->ops->readable(c->h);
            if ((r == ESRV_KEEP || r == ESRV_WRITE) && !conn_rearm(c, r == ESRV_WRITE))
                continue;
            if (r == ESRV_KEEP || r == ESRV_WRITE)
                r = ESRV_CLOSE; /* epoll refused the fd: nothing would wake it */
            /* each fd is reported once per epoll_wait: c cannot come up
             * again in this batch */
            epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
            if (r == ESRV_HANDOFF)
                conn_handoff(c);
            else
                conn_end(c);
        }
    }
    return NULL;
}

static void accept_one(void *arg, int fd)
{
    struct esrv *s = arg;
    pthread_mutex_lock(&s->lock);
    int full = s->nconns >= s->max_conns;
    pthread_mutex_unlock(&s->lock);
    if (full) {
        pl_log(PL_LOG_WARN, s->name, "connection limit (%d) reached: refusing one", s->max_conns);
        close(fd);
        return;
    }
    struct econn *c = calloc(1, sizeof(*c));
    void *h = NULL;
    if (!c || s->ops->open(s->ctx, fd, &h)) {
        free(c);
        close(fd);
        return;
    }
    c->s = s;
    c->fd = fd;
    c->h = h;
    c->loop = s->next_loop;
    s->next_loop = (s->next_loop + 1) % s->nloops;
    pthread_mutex_lock(&s->lock);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    pthread_mutex_unlock(&s->lock);
    if (conn_arm(c))
        conn_end(c);
}

static void *accept_main(void *arg)
{
    struct esrv *s = arg;
    tsrv_accept_loop(s->fd, s->stop_pipe[0], accept_one, s);
    return NULL;
}

static int loop_start(struct esrv *s, struct eloop *l)
{
    l->s = s;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (l->ep < 0 || l->wake < 0 || epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake, &ev) < 0)
        return -errno;
    if (pthread_create(&l->thr, NULL, loop_main, l))
        return PL_ENOMEM;
    l->running = 1;
    return 0;
}

/* Stop the loops (no connection is left on them) and free what start made. */
static void esrv_free(struct esrv *s)
{
    for (int i = 0; i < s->nloops; i++) {
        struct eloop *l = &s->loops[i];
        if (l->running) {
            uint64_t one = 1;
            (void)!write(l->wake, &one, sizeof(one));
            pthread_join(l->thr, NULL);
        }
        if (l->ep >= 0)
            close(l->ep);
        if (l->wake >= 0)
            close(l->wake);
    }
    tsrv_listener_close(s->fd, s->stop_pipe);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    pthread_cond_destroy(&s->queued);
    free(s);
}

int esrv_start(const struct esrv_opts *o, const struct esrv_ops *ops, void *ctx,
               struct esrv **ret)
{
    struct esrv *s = calloc(1, sizeof(*s));
    int rc = 0;
    if (!s)
        return PL_ENOMEM;
    s->ops = ops;
    s->ctx = ctx;
    s->fd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    s->max_conns = o->max_conns > 0 ? o->max_conns : 256;
    s->nloops = PL_MAX(1, PL_MIN(o->loops, LOOPS_MAX));
    for (int i = 0; i < LOOPS_MAX; i++)
        s->loops[i].ep = s->loops[i].wake = -1;
    snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "tcp");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    pthread_cond_init(&s->queued, NULL);
    if (o->unix_path)
        rc = tsrv_listen_unix(o->unix_path, &s->fd);
    else
        rc = tsrv_listen(o->host, o->port, &s->fd, &s->port);
    for (int i = 0; !rc && i < s->nloops; i++)
        rc = loop_start(s, &s->loops[i]);
    if (!rc && pipe2(s->stop_pipe, O_CLOEXEC) < 0)
        rc = -errno;
    if (!rc && pthread_create(&s->accept_thr, NULL, accept_main, s))
        rc = PL_ENOMEM;
    if (!rc) {
        *ret = s;
        return 0;
    }
    esrv_free(s);
    return rc;
}

int esrv_port(const struct esrv *s)
{
    return s->port;
}

/* tsrv_wait_conns's cut: a send blocked on a stalled client fails. */
static void conns_cut(void *arg)
{
    struct esrv *s = arg;
    for (struct econn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
}

void esrv_stop(struct esrv *s)
{
    if (!s)
        return;
    (void)!write(s->stop_pipe[1], "x", 1);
    pthread_join(s->accept_thr, NULL);
    close(s->fd);
    s->fd = -1;
    pthread_mutex_lock(&s->lock);
    for (struct econn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RD); /* its loop or worker sees EOF */
    tsrv_wait_conns(&s->lock, &s->changed, &s->nconns, s->name, conns_cut, s);
    s->workers_stop = 1;
    pthread_cond_broadcast(&s->queued);
    while (s->nworkers > 0)
        pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    esrv_free(s);
}

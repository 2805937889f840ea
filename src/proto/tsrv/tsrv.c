#include "proto/tsrv/tsrv.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

struct tconn {
    struct tsrv *s;
    int fd;
    struct tconn *prev, *next;
};

struct tsrv {
    int fd, port, max_conns, idle_s, stop_pipe[2];
    int stopping;
    uint64_t rejected;
    const char *busy_reply;
    char name[32];
    tsrv_conn_fn fn;
    void *ctx;
    pthread_t accept_thr;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    struct tconn *conns;
    int nconns;
};

int tsrv_read_some(int fd, void *buf, size_t min, size_t cap, size_t *got)
{
    uint8_t *p = buf;
    size_t have = 0;
    while (have < min) {
        ssize_t r = recv(fd, p + have, cap - have, 0);
        if (r == 0)
            return PL_EPROTO;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        have += (size_t)r;
    }
    *got = have;
    return 0;
}

int tsrv_read(int fd, void *buf, size_t n)
{
    size_t got;
    return tsrv_read_some(fd, buf, n, n, &got);
}

static void *conn_main(void *arg)
{
    struct tconn *c = arg;
    struct tsrv *s = c->s;
    s->fn(s->ctx, c->fd);
    pthread_mutex_lock(&s->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    close(c->fd);
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    free(c);
    return NULL;
}

void tsrv_accept_loop(int lfd, int stop_fd, void (*on_conn)(void *arg, int fd), void *arg)
{
    struct pollfd pf[2] = {{lfd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[1].revents)
            break;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails harmlessly on Unix sockets */
        on_conn(arg, fd);
    }
}

static void accept_one(void *arg, int fd)
{
    struct tsrv *s = arg;
    if (s->idle_s > 0) {
        struct timeval tv = {s->idle_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    pthread_mutex_lock(&s->lock);
    if (s->nconns >= s->max_conns) {
        s->rejected++;
        pthread_mutex_unlock(&s->lock);
        pl_log(PL_LOG_WARN, s->name, "connection limit (%d) reached: refusing one", s->max_conns);
        if (s->busy_reply)
            (void)!send(fd, s->busy_reply, strlen(s->busy_reply), MSG_NOSIGNAL);
        close(fd);
        return;
    }
    struct tconn *c = calloc(1, sizeof(*c));
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    if (c) {
        c->s = s;
        c->fd = fd;
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
    }
    if (!c || pthread_create(&t, &at, conn_main, c)) {
        if (c) {
            s->conns = c->next;
            if (s->conns)
                s->conns->prev = NULL;
            s->nconns--;
        }
        free(c);
        close(fd);
    }
    pthread_attr_destroy(&at);
    pthread_mutex_unlock(&s->lock);
}

static void *accept_main(void *arg)
{
    struct tsrv *s = arg;
    tsrv_accept_loop(s->fd, s->stop_pipe[0], accept_one, s);
    return NULL;
}

int tsrv_listen(const char *host, int port, int *ret_fd, int *ret_port)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char ps[16];
    int fd = -1, rc = 0;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai))
        return PL_EINVAL;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        rc = -errno;
    int one = 1;
    if (!rc)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (!rc && (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0))
        rc = -errno;
    struct sockaddr_storage sa = {0};
    socklen_t sl = sizeof(sa);
    if (!rc && getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        rc = -errno;
    freeaddrinfo(ai);
    if (rc) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    *ret_fd = fd;
    *ret_port = pl_sockaddr_port(&sa);
    return 0;
}

int tsrv_listen_unix(const char *path, int *ret_fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat sb;
    if (strlen(path) >= sizeof(sa.sun_path))
        return PL_ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode))
        unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *ret_fd = fd;
    return 0;
}

int tsrv_start(const struct tsrv_opts *o, tsrv_conn_fn fn, void *ctx, struct tsrv **ret)
{
    struct tsrv *s = calloc(1, sizeof(*s));
    int rc = 0;
    if (!s)
        return PL_ENOMEM;
    s->fd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    s->fn = fn;
    s->ctx = ctx;
    s->max_conns = o->max_conns > 0 ? o->max_conns : 256;
    s->idle_s = o->idle_s;
    s->busy_reply = o->busy_reply;
    snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "tcp");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    if (o->unix_path)
        rc = tsrv_listen_unix(o->unix_path, &s->fd);
    else
        rc = tsrv_listen(o->host, o->port, &s->fd, &s->port);
    if (!rc && pipe2(s->stop_pipe, O_CLOEXEC) < 0)
        rc = -errno;
    if (!rc && pthread_create(&s->accept_thr, NULL, accept_main, s))
        rc = PL_ENOMEM;
    if (!rc) {
        *ret = s;
        return 0;
    }
    tsrv_listener_close(s->fd, s->stop_pipe);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
    return rc;
}

int tsrv_port(const struct tsrv *s)
{
    return s->port;
}

int tsrv_stopping(struct tsrv *s)
{
    pthread_mutex_lock(&s->lock);
    int v = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return v;
}

uint64_t tsrv_rejected(struct tsrv *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t v = s->rejected;
    pthread_mutex_unlock(&s->lock);
    return v;
}

void tsrv_wait_conns(pthread_mutex_t *lock, pthread_cond_t *cond, const int *nconns,
                     const char *name, void (*cut)(void *arg), void *arg)
{
    struct timespec grace = pl_deadline_ms(TSRV_STOP_GRACE_MS);
    while (*nconns > 0 && pthread_cond_timedwait(cond, lock, &grace) != ETIMEDOUT)
        ;
    if (*nconns > 0) {
        pl_log(PL_LOG_WARN, name, "stopping: %d connection(s) still sending after %d s; "
               "closing them", *nconns, TSRV_STOP_GRACE_MS / 1000);
        cut(arg);
    }
    while (*nconns > 0)
        pthread_cond_wait(cond, lock);
}

void tsrv_listener_close(int fd, const int stop_pipe[2])
{
    if (fd >= 0)
        close(fd);
    if (stop_pipe[0] >= 0) {
        close(stop_pipe[0]);
        close(stop_pipe[1]);
    }
}

/* tsrv_wait_conns's cut: a send blocked on a stalled client fails. */
static void conns_cut(void *arg)
{
    struct tsrv *s = arg;
    for (struct tconn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
}

void tsrv_stop(struct tsrv *s)
{
    if (!s)
        return;
    (void)!write(s->stop_pipe[1], "x", 1);
    pthread_join(s->accept_thr, NULL);
    close(s->fd);
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    for (struct tconn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RD);
    tsrv_wait_conns(&s->lock, &s->idle, &s->nconns, s->name, conns_cut, s);
    pthread_mutex_unlock(&s->lock);
    tsrv_listener_close(-1, s->stop_pipe);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
}

/* The Kafka head (kafka.h).
 *
 * A thread per connection (proto/tsrv): requests are handled one after the
 * other, so responses go out in order, and a Fetch that waits for data
 * (max_wait_ms) only holds its own connection. Versions are those of an
 * Apache Kafka 2.3-era broker, none flexible: an ApiVersions request at v3
 * or above gets error 35 with a v0 body (clients then retry at v0); any
 * other request at a version or key we do not serve ends the connection, as
 * Kafka does. One broker: node 1, leader of every partition. */
#include "proto/kafka/kafka.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "proto/kafka/kapi.h"
#include "proto/tsrv/tsrv.h"

struct api {
    int16_t key, min, max;
};

static const struct api apis[] = {
    {K_PRODUCE, 0, 7},        {K_FETCH, 4, 11},        {K_LIST_OFFSETS, 0, 5},
    {K_METADATA, 0, 8},       {K_OFFSET_COMMIT, 0, 7}, {K_OFFSET_FETCH, 0, 5},
    {K_FIND_COORDINATOR, 0, 2}, {K_JOIN_GROUP, 0, 5},    {K_HEARTBEAT, 0, 3},
    {K_LEAVE_GROUP, 0, 2},    {K_SYNC_GROUP, 0, 3},    {K_DESCRIBE_GROUPS, 0, 3},
    {K_LIST_GROUPS, 0, 2},    {K_API_VERSIONS, 0, 2}, {K_CREATE_TOPICS, 0, 4},
    {K_DELETE_TOPICS, 0, 3},  {K_DESCRIBE_CONFIGS, 0, 2}, {K_DELETE_GROUPS, 0, 1},
    {K_SASL_HANDSHAKE, 0, 1}, {K_SASL_AUTHENTICATE, 0, 1},
};

int16_t kapi_err(int rc)
{
    switch (rc) {
    case 0:
        return E_NONE;
    case PL_ENOENT:
        return E_UNKNOWN_TOPIC;
    case PL_ERANGE:
        return E_OFFSET_OUT_OF_RANGE;
    case PL_ECORRUPT:
        return E_CORRUPT_MESSAGE;
    case PL_EPROTO:
        return E_INVALID_RECORD;
    case PL_EINVAL:
        return E_UNSUPPORTED_COMPRESSION; /* magic or codec we do not take */
    case PL_EFBIG:
        return E_MESSAGE_TOO_LARGE;
    case PL_ENOSPC:
    case PL_EIO:
        return E_STORAGE;
    default:
        return E_UNKNOWN;
    }
}

int64_t kapi_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- ApiVersions ---- */
void kapi_versions_body(struct kw *w, int16_t err, int v)
{
    kw_i16(w, err);
    kw_i32(w, (int32_t)PL_ARRAY_LEN(apis));
    for (size_t i = 0; i < PL_ARRAY_LEN(apis); i++) {
        kw_i16(w, apis[i].key);
        kw_i16(w, apis[i].min);
        kw_i16(w, apis[i].max);
    }
    if (v >= 1)
        kw_i32(w, 0); /* throttle */
}

static void kapi_api_versions(struct call *c)
{
    kapi_versions_body(c->w, E_NONE, c->v);
}


/* ---- dispatch ---- */
static const struct api *api_find(int16_t key)
{
    for (size_t i = 0; i < PL_ARRAY_LEN(apis); i++)
        if (apis[i].key == key)
            return &apis[i];
    return NULL;
}

void kafka_handle(struct kafka_server *s, struct kconn *k, uint8_t *req, size_t n, struct kw *w,
                  int *ret_close)
{
    struct kr r = {req, n, 0, 0};
    struct call c = {s, k, k->peer, {0}, &r, w, 0};
    int no_reply = 0, close_after = 0;
    *ret_close = 0;
    kw_reset(w);
    k->send_empty = 0;
    if (k->raw_sasl) {
        /* SaslHandshake v0: this frame is a bare token, and so is the answer */
        uint8_t out[KSASL_MSG_MAX];
        size_t outn = sizeof(out);
        if (kapi_sasl_token(&c, req, n, out, &outn)) {
            *ret_close = 1;
            return;
        }
        k->raw_sasl = !k->sasl.done;
        kw_raw(w, out, outn);
        k->send_empty = outn == 0;
        return;
    }
    if (kr_header(&r, &c.h)) {
        pl_log(PL_LOG_INFO, "kafka", "malformed request header; closing the connection");
        *ret_close = 1;
        return;
    }
    c.v = c.h.api_version;
    const struct api *a = api_find(c.h.api_key);
    kw_i32(w, c.h.correlation_id);
    if (c.h.api_key == K_API_VERSIONS && (c.v < 0 || c.v > a->max)) {
        /* KIP-511: a newer client learns our versions from a v0 body */
        kapi_versions_body(w, E_UNSUPPORTED_VERSION, 0);
        return;
    }
    if (s->sasl_required && !k->authed && c.h.api_key != K_API_VERSIONS &&
        c.h.api_key != K_SASL_HANDSHAKE && c.h.api_key != K_SASL_AUTHENTICATE) {
        pl_log(PL_LOG_INFO, "kafka", "client %s from %s sent api %d before authenticating; "
               "closing the connection", c.h.client_id, k->peer, c.h.api_key);
        *ret_close = 1;
        kw_reset(w);
        return;
    }
    if (!a || c.v < a->min || c.v > a->max) {
        pl_log(PL_LOG_INFO, "kafka", "client %s sent api %d v%d, which this broker does not "
               "serve; closing the connection", c.h.client_id, c.h.api_key, c.v);
        *ret_close = 1;
        kw_reset(w);
        return;
    }
    switch (c.h.api_key) {
    case K_API_VERSIONS:
        kapi_api_versions(&c);
        break;
    case K_METADATA:
        kapi_metadata(&c);
        break;
    case K_PRODUCE:
        kapi_produce(&c, &no_reply);
        break;
    case K_FETCH:
        kapi_fetch(&c);
        break;
    case K_LIST_OFFSETS:
        kapi_list_offsets(&c);
        break;
    case K_FIND_COORDINATOR:
        kapi_find_coordinator(&c);
        break;
    case K_OFFSET_COMMIT:
        kapi_offset_commit(&c);
        break;
    case K_OFFSET_FETCH:
        kapi_offset_fetch(&c);
        break;
    case K_CREATE_TOPICS:
        kapi_create_topics(&c);
        break;
    case K_DELETE_TOPICS:
        kapi_delete_topics(&c);
        break;
    case K_JOIN_GROUP:
        kapi_join_group(&c);
        break;
    case K_SYNC_GROUP:
        kapi_sync_group(&c);
        break;
    case K_HEARTBEAT:
        kapi_heartbeat(&c);
        break;
    case K_LEAVE_GROUP:
        kapi_leave_group(&c);
        break;
    case K_LIST_GROUPS:
        kapi_list_groups(&c);
        break;
    case K_DESCRIBE_GROUPS:
        kapi_describe_groups(&c);
        break;
    case K_DELETE_GROUPS:
        kapi_delete_groups(&c);
        break;
    case K_DESCRIBE_CONFIGS:
        kapi_describe_configs(&c);
        break;
    case K_SASL_HANDSHAKE:
        kapi_sasl_handshake(&c);
        break;
    case K_SASL_AUTHENTICATE:
        kapi_sasl_authenticate(&c, &close_after);
        break;
    default:
        break;
    }
    if (r.err || w->err) {
        pl_log(PL_LOG_INFO, "kafka", "client %s: malformed api %d v%d request; closing the "
               "connection", c.h.client_id, c.h.api_key, c.v);
        *ret_close = 1;
        kw_reset(w);
    } else if (no_reply) {
        kw_reset(w); /* acks=0: the producer expects no answer */
    }
    /* a failed authentication is answered, then the connection ends */
    if (close_after)
        k->close_after_reply = 1;
}

/* ---- connections ---- */
#define PIPE_MAX 64
#define PIPE_BYTES (64u << 20)
#define MEM_MAX (1ull << 30) /* request bytes held at once; more wait */
#define MEM_WAIT_MS 30000

/* Reserve n bytes of the request budget; with wait, up to MEM_WAIT_MS. One
 * request always fits when nothing else is held, whatever its size. */
static int mem_take(struct kafka_server *s, size_t n, int wait)
{
    for (int waited = 0;; waited += 10) {
        uint64_t cur = __atomic_load_n(&s->mem, __ATOMIC_RELAXED);
        if (cur == 0 || cur + n <= MEM_MAX) {
            if (__atomic_compare_exchange_n(&s->mem, &cur, cur + n, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                return 0;
            continue;
        }
        if (!wait || waited >= MEM_WAIT_MS)
            return PL_EAGAIN;
        usleep(10 * 1000);
    }
}

static void mem_give(struct kafka_server *s, size_t n)
{
    __atomic_sub_fetch(&s->mem, n, __ATOMIC_RELAXED);
}

static int send_reply(int fd, struct kconn *k, struct kw *w)
{
    size_t total = w->n + w->ref_bytes;
    if (!total && !k->send_empty)
        return 0;
    uint8_t hdr[4];
    struct iovec few[16], *iov = few;
    int max = 2 * w->nrefs + 2, rc = -1;
    if (max > (int)PL_ARRAY_LEN(few) && !(iov = malloc((size_t)max * sizeof(*iov))))
        goto out;
    pl_put_be32(hdr, (uint32_t)total);
    iov[0] = (struct iovec){hdr, 4};
    int n = kw_iov(w, iov + 1, max - 1);
    /* a fetch's batches go from where they were read, not copied in */
    if (n >= 0 && pl_writev_all(fd, iov, n + 1) == 0)
        rc = 0;
out:
    if (iov != few)
        free(iov);
    kw_reset(w); /* what it held is sent */
    return rc;
}

/* Produce requests read together (the first and those already waiting on
 * the socket), staged, committed on the connection's committer thread while
 * the connection reads and stages the next round, then answered in order.
 * The round owns its requests and their share of the memory budget. */
struct round {
    struct pl_job job;
    uint8_t *reqs[PIPE_MAX];
    size_t lens[PIPE_MAX];
    int nreq, ok_upto; /* requests from ok_upto on were malformed: answered alone */
    struct pbatch pb;
};

static void round_free(struct kafka_server *s, struct round *r)
{
    for (int i = 0; i < r->nreq; i++) {
        free(r->reqs[i]);
        mem_give(s, r->lens[i]);
    }
    free(r->pb.items);
    free(r);
}

static void round_commit(struct pl_job *j)
{
    struct round *r = (struct round *)j;
    kapi_produce_commit(&r->pb);
}

/* Take first (owned, its memory taken) and the Produce requests already
 * waiting; collect and stage them. NULL when the connection must end. */
static struct round *round_stage(struct kafka_server *s, struct kconn *k, int fd, uint8_t *first,
                                 size_t first_n, struct kw *w)
{
    struct round *r = calloc(1, sizeof(*r));
    size_t total = first_n;
    int avail = 0;
    if (!r) {
        free(first);
        mem_give(s, first_n);
        return NULL;
    }
    r->reqs[0] = first;
    r->lens[0] = first_n;
    r->nreq = 1;
    while (r->nreq < PIPE_MAX && total < PIPE_BYTES && ioctl(fd, FIONREAD, &avail) == 0 &&
           avail >= 6) {
        uint8_t hdr[6];
        if (recv(fd, hdr, sizeof(hdr), MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof(hdr))
            break;
        uint32_t n = pl_get_be32(hdr);
        /* a Produce already on its way is read whole: the client is sending it
         * now, and its answer would wait behind it anyway */
        if (pl_get_be16(hdr + 4) != K_PRODUCE || n < 8 || n > REQ_MAX)
            break;
        if (mem_take(s, n, 0))
            break; /* over the budget: these wait for the next round */
        uint8_t *q = malloc(n);
        if (!q || tsrv_read(fd, hdr, 4) || tsrv_read(fd, q, n)) {
            free(q);
            mem_give(s, n);
            round_free(s, r);
            return NULL;
        }
        r->reqs[r->nreq] = q;
        r->lens[r->nreq++] = n;
        total += n;
    }
    r->pb.phase = PB_COLLECT;
    r->ok_upto = r->nreq; /* requests before a malformed one are batched */
    k->pb = &r->pb;
    for (int i = 0; i < r->nreq; i++) {
        int before = r->pb.n, close_it;
        kafka_handle(s, k, r->reqs[i], r->lens[i], w, &close_it);
        if (close_it) {
            r->pb.n = before;
            r->ok_upto = i;
            break;
        }
    }
    k->pb = NULL;
    kapi_produce_stage(s, &r->pb);
    return r;
}

/* Wait for the round's commit, answer its requests in order, free it.
 * -1 when the connection must end. */
static int round_finish(struct kafka_server *s, struct kconn *k, int fd, struct pl_pool *committer,
                        struct round *r, struct kw *w)
{
    int ret = 0;
    if (committer)
        pl_job_wait(committer, &r->job);
    else
        kapi_produce_commit(&r->pb);
    r->pb.phase = PB_RESPOND;
    k->pb = &r->pb;
    for (int i = 0; i < r->nreq && !ret; i++) {
        int close_it;
        if (i == r->ok_upto)
            k->pb = NULL; /* the malformed one: as if alone (it ends the connection) */
        kafka_handle(s, k, r->reqs[i], r->lens[i], w, &close_it);
        if (close_it || send_reply(fd, k, w) || k->close_after_reply)
            ret = -1;
    }
    k->pb = NULL;
    round_free(s, r);
    return ret;
}

/* Is a request (or part of one) waiting to be read? */
static int readable_now(int fd)
{
    int avail = 0;
    return ioctl(fd, FIONREAD, &avail) == 0 && avail > 0;
}

static void conn_main(void *ctx, int fd)
{
    struct kafka_server *s = ctx;
    struct kw w = {0};
    uint8_t *req = NULL;
    size_t req_cap = 0, held = 0;
    struct kconn *k = calloc(1, sizeof(*k));
    struct pl_pool *committer = NULL; /* made at the first pipelined Produce */
    struct round *pending = NULL;     /* staged, committing */
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    if (!k)
        return;
    if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sin_family == AF_INET) {
        char ip[INET_ADDRSTRLEN];
        if (inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip)))
            snprintf(k->peer, sizeof(k->peer), "/%s", ip);
    }
    for (;;) {
        uint8_t sz[4];
        /* nothing more to overlap with: answer what is committing */
        if (pending && !readable_now(fd)) {
            struct round *r = pending;
            pending = NULL;
            if (round_finish(s, k, fd, committer, r, &w))
                break;
        }
        if (tsrv_read(fd, sz, 4))
            break;
        uint32_t n = pl_get_be32(sz);
        if (n < 8 || n > REQ_MAX) {
            pl_log(PL_LOG_INFO, "kafka", "request of %u bytes refused; closing the connection",
                   n);
            break;
        }
        if (mem_take(s, n, 0)) {
            /* what this connection holds goes back before it waits for more */
            struct round *r = pending;
            pending = NULL;
            if (r && round_finish(s, k, fd, committer, r, &w))
                break;
            if (mem_take(s, n, 1)) {
                pl_log(PL_LOG_WARN, "kafka", "%s: no memory for a %u-byte request within %d s; "
                       "closing the connection", k->peer, n, MEM_WAIT_MS / 1000);
                break;
            }
        }
        held = n;
        if (n > req_cap) {
            /* a big request's buffer goes after it: idle connections stay small */
            free(req);
            req = malloc(n);
            req_cap = req ? n : 0;
        }
        if (!req || tsrv_read(fd, req, n))
            break;
        if (n >= 2 && pl_get_be16(req) == K_PRODUCE && !k->raw_sasl) {
            /* the round takes the request and its memory */
            struct round *r = round_stage(s, k, fd, req, n, &w);
            req = NULL;
            req_cap = 0;
            held = 0;
            if (!r)
                break;
            struct round *prev = pending;
            pending = NULL;
            if (prev && round_finish(s, k, fd, committer, prev, &w)) {
                kapi_produce_commit(&r->pb); /* staged appends are always committed */
                round_free(s, r);
                break;
            }
            if (!committer && pl_pool_new(1, &committer))
                committer = NULL; /* no thread: commit inline */
            if (committer && r->ok_upto == r->nreq) {
                r->job.fn = round_commit;
                pl_pool_submit(committer, &r->job);
                pending = r;
                continue;
            }
            if (round_finish(s, k, fd, NULL, r, &w))
                break;
            continue;
        }
        struct round *r = pending;
        pending = NULL;
        if (r && round_finish(s, k, fd, committer, r, &w))
            break;
        int close_it = 0;
        kafka_handle(s, k, req, n, &w, &close_it);
        if (close_it || send_reply(fd, k, &w) || k->close_after_reply)
            break;
        if (w.cap > (8u << 20))
            kw_free(&w); /* do not keep a big fetch's buffer per idle connection */
        if (req_cap > (1u << 20)) {
            free(req);
            req = NULL;
            req_cap = 0;
        }
        mem_give(s, held);
        held = 0;
    }
    if (pending) {
        /* the connection is gone, but what was staged is committed */
        pl_job_wait(committer, &pending->job);
        round_free(s, pending);
    }
    pl_pool_free(committer);
    mem_give(s, held);
    kw_free(&w);
    free(req);
    OPENSSL_clear_free(k, sizeof(*k)); /* SCRAM state held a salted password */
}

int kafka_start(struct broker *b, const struct kafka_opts *ko, struct kafka_server **ret)
{
    struct kafka_server *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->b = b;
    s->sasl_required = ko->sasl_required;
    snprintf(s->host, sizeof(s->host), "%s", ko->host);
    struct tsrv_opts o = {ko->host, ko->port, 1024, "kafka", 0, NULL};
    int rc = tsrv_start(&o, conn_main, s, &s->srv);
    if (rc) {
        free(s);
        return rc;
    }
    s->port = tsrv_port(s->srv);
    *ret = s;
    return 0;
}

int kafka_port(const struct kafka_server *s)
{
    return s->port;
}

void kafka_stop(struct kafka_server *s)
{
    if (!s)
        return;
    tsrv_stop(s->srv);
    free(s);
}


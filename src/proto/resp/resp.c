/* The RESP head (resp.h). Commands and their replies follow Redis 7's
 * documented behaviour and error texts, so clients fall back as they would
 * against Redis. */
#include "proto/resp/resp.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/base.h"
#include "proto/resp/rcodec.h"
#include "proto/tsrv/esrv.h"

#define IN_BUF (64 * 1024) /* a large value beyond its first 64 KiB is received in place, not copied */
#define DIRECT_MIN (64 * 1024) /* bulks this large are received straight into place */
#define OUT_FLUSH (4u << 20)
#define DBS 16
#define SEGS_MAX 1024
/* A worker keeps a connection this long after its last request: a client
 * streaming large values does not bounce between loop and worker. */
#define LINGER_MS 20

struct resp_server {
    struct pl_store *st;
    struct kv *kv;
    struct esrv *tcp, *unx;
    char requirepass[256];
    int has_pass;
    int port;
    pthread_mutex_t lock;
    uint64_t next_id, conns, total_conns, commands;
    int64_t started_ms;
};

struct oseg {
    size_t off, n;    /* a range of out, or */
    struct kv_val *v; /* a value sent as it is stored */
};

struct rconn {
    struct resp_server *s;
    int fd;
    struct resp_parser p;
    uint8_t *in;
    struct pl_buf out;
    size_t have, at; /* input read into in[], and how far it is parsed */
    struct oseg *segs;
    size_t nseg, segcap, pending;
    size_t sent_seg, sent_off; /* how much of segs went out (a loop's partial send) */
    int may_block;             /* on a worker (or resp_serve_fd), not a loop */
    int held;                  /* a parsed command waits for a worker */
    int proto, authed, db, closing, write_failed;
    uint64_t id;
    char user[64], name[256], ns[KV_NS_MAX + 1];
    struct kv_val **argv;
    size_t argc;
};

/* ---- replies ---- */
/* Room for one more segment; out of memory ends the connection. */
static struct oseg *seg_new(struct rconn *c)
{
    if (c->nseg == c->segcap) {
        size_t cap = c->segcap ? c->segcap * 2 : 64;
        struct oseg *ns = realloc(c->segs, cap * sizeof(*ns));
        if (!ns) {
            c->write_failed = 1;
            return NULL;
        }
        c->segs = ns;
        c->segcap = cap;
    }
    return &c->segs[c->nseg++];
}

static void out_bytes(struct rconn *c, const void *p, size_t n)
{
    size_t off = c->out.len;
    if (pl_buf_add(&c->out, p, n)) {
        c->write_failed = 1; /* out of memory: the connection ends */
        return;
    }
    struct oseg *last = c->nseg ? &c->segs[c->nseg - 1] : NULL, *g;
    if (last && !last->v && last->off + last->n == off)
        last->n += n;
    else if ((g = seg_new(c)))
        *g = (struct oseg){off, n, NULL};
    c->pending += n;
}

static void out_fmt(struct rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(struct rconn *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(ap);
    out_bytes(c, buf, (size_t)PL_MIN(n, (int)sizeof(buf) - 1));
}

static int flush_out(struct rconn *c);

static void out_val(struct rconn *c, struct kv_val *v)
{
    out_fmt(c, "$%zu\r\n", v->n);
    struct oseg *g = seg_new(c);
    if (!g)
        return;
    kv_val_ref(v);
    *g = (struct oseg){0, v->n, v};
    c->pending += v->n;
    out_bytes(c, "\r\n", 2);
    if (c->pending >= OUT_FLUSH || c->nseg >= SEGS_MAX - 4)
        (void)flush_out(c); /* a loop leaves the rest queued */
}

static void r_ok(struct rconn *c)
{
    out_bytes(c, "+OK\r\n", 5);
}

static void r_simple(struct rconn *c, const char *s)
{
    out_fmt(c, "+%s\r\n", s);
}

static void r_err(struct rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void r_err(struct rconn *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' '; /* an error is one line */
    out_fmt(c, "-%s\r\n", buf);
}

static void r_int(struct rconn *c, int64_t v)
{
    out_fmt(c, ":%" PRId64 "\r\n", v);
}

static void r_bulk(struct rconn *c, const void *p, size_t n)
{
    out_fmt(c, "$%zu\r\n", n);
    out_bytes(c, p, n);
    out_bytes(c, "\r\n", 2);
}

static void r_str(struct rconn *c, const char *s)
{
    r_bulk(c, s, strlen(s));
}

static void r_null(struct rconn *c)
{
    if (c->proto == 3)
        out_bytes(c, "_\r\n", 3);
    else
        out_bytes(c, "$-1\r\n", 5);
}

static void r_array(struct rconn *c, size_t n)
{
    out_fmt(c, "*%zu\r\n", n);
}

static void r_map(struct rconn *c, size_t n)
{
    if (c->proto == 3)
        out_fmt(c, "%%%zu\r\n", n);
    else
        out_fmt(c, "*%zu\r\n", n * 2);
}

/* Send what is queued: 0 when all of it went (or the connection failed), 1
 * when the socket is full and this thread must not wait (a loop: the rest
 * stays queued, sent_seg/sent_off saying where it starts, for a worker). */
static int flush_out(struct rconn *c)
{
    struct iovec iov[SEGS_MAX];
    while (!c->write_failed) {
        while (c->sent_seg < c->nseg && c->segs[c->sent_seg].n == c->sent_off) {
            c->sent_seg++;
            c->sent_off = 0;
        }
        if (c->sent_seg == c->nseg)
            break;
        int n = 0;
        for (size_t i = c->sent_seg; i < c->nseg && n < SEGS_MAX; i++, n++) {
            struct oseg *g = &c->segs[i];
            uint8_t *base = g->v ? g->v->data : (uint8_t *)c->out.data + g->off;
            size_t skip = i == c->sent_seg ? c->sent_off : 0;
            iov[n].iov_base = base + skip;
            iov[n].iov_len = g->n - skip;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        /* a worker's send waits in the kernel until all of it went (one call
         * for a large value); a loop's takes what the socket has room for */
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL | (c->may_block ? 0 : MSG_DONTWAIT));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->may_block)
                return 1;
            if (esrv_wait(c->fd, POLLOUT, -1) < 0) /* a non-blocking fd from resp_serve_fd's caller */
                c->write_failed = 1;
            continue;
        }
        if (w < 0) {
            c->write_failed = 1;
            break;
        }
        for (size_t done = (size_t)w; done;) {
            size_t left = c->segs[c->sent_seg].n - c->sent_off;
            if (done < left) {
                c->sent_off += done;
                break;
            }
            done -= left;
            c->sent_seg++;
            c->sent_off = 0;
        }
    }
    for (size_t k = 0; k < c->nseg; k++)
        kv_val_unref(c->segs[k].v);
    c->nseg = 0;
    c->pending = 0;
    c->sent_seg = c->sent_off = 0;
    pl_buf_reset(&c->out);
    return 0;
}

/* ---- arguments ---- */
static const char *arg_s(struct rconn *c, size_t i)
{
    return (const char *)c->argv[i]->data;
}

static size_t arg_n(struct rconn *c, size_t i)
{
    return c->argv[i]->n;
}

static int arg_is(struct rconn *c, size_t i, const char *word)
{
    size_t n = strlen(word);
    return arg_n(c, i) == n && !strncasecmp(arg_s(c, i), word, n);
}

/* A whole-argument integer, as Redis's string2ll accepts. */
static int arg_int(struct rconn *c, size_t i, int64_t *ret)
{
    char buf[32];
    size_t n = arg_n(c, i);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, arg_s(c, i), n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || isspace((unsigned char)buf[0]) || (buf[0] == '+'))
        return -1;
    *ret = v;
    return 0;
}

static void err_int(struct rconn *c)
{
    r_err(c, "ERR value is not an integer or out of range");
}

static void err_arity(struct rconn *c, const char *cmd)
{
    r_err(c, "ERR wrong number of arguments for '%s' command", cmd);
}

static int64_t now_ms(void)
{
    return pl_now_ns() / 1000000;
}

static void ns_update(struct rconn *c)
{
    snprintf(c->ns, sizeof(c->ns), "%s/%d", c->user, c->db);
}

/* ---- commands ---- */
/* Where a command may run: what cannot block runs on the event loop. */
enum {
    RUN_LOOP,   /* in memory, small reply */
    RUN_WORKER, /* may block (logins, flushes) */
    RUN_READ1,  /* reads the key at 1: a worker when it is on flash or large */
    RUN_READN,  /* reads the keys from 1 on: the same for any of them */
    RUN_WRITE,  /* a worker while writers must wait for demotion */
};

struct cmd {
    const char *name;
    void (*fn)(struct rconn *c);
    int arity;  /* Redis's: n exact, -n at least n (the name counts) */
    int noauth; /* allowed before AUTH */
    int run;    /* RUN_* */
};

static void c_ping(struct rconn *c)
{
    if (c->argc > 2)
        return err_arity(c, "ping");
    if (c->argc == 2)
        r_bulk(c, arg_s(c, 1), arg_n(c, 1));
    else
        r_simple(c, "PONG");
}

static void c_echo(struct rconn *c)
{
    r_bulk(c, arg_s(c, 1), arg_n(c, 1));
}

static void c_quit(struct rconn *c)
{
    r_ok(c);
    c->closing = 1;
}

static int secret_eq(const char *a, const char *b)
{
    size_t an = strlen(a), bn = strlen(b);
    unsigned d = an != bn;
    for (size_t i = 0; i < an && i < bn; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

struct key_match {
    struct pl_store *st;
    const char *pass;
    int ok;
};

static int key_match_cb(void *arg, const struct pl_key_info *k)
{
    struct key_match *m = arg;
    char secret[48], user[64];
    if (pl_key_secret(m->st, k->access_key, secret, user) == 0 && secret_eq(secret, m->pass))
        m->ok = 1;
    return m->ok;
}

/* user/pass against the default password, access keys, and users' keys. */
static int check_login(struct rconn *c, const char *user, const char *pass, char out[64])
{
    struct resp_server *s = c->s;
    if (!strcmp(user, "default")) {
        if (s->has_pass ? !secret_eq(s->requirepass, pass) : 0)
            return 0;
        snprintf(out, 64, "default");
        return 1;
    }
    char secret[48], owner[64];
    if (strlen(user) < 32 && pl_key_secret(s->st, user, secret, owner) == 0) {
        if (!secret_eq(secret, pass))
            return 0;
        snprintf(out, 64, "%s", owner);
        return 1;
    }
    struct key_match m = {s->st, pass, 0};
    if (pl_key_list(s->st, user, key_match_cb, &m) == 0 && m.ok) {
        snprintf(out, 64, "%s", user);
        return 1;
    }
    return 0;
}

static int arg_cstr(struct rconn *c, size_t i, char *buf, size_t cap)
{
    size_t n = arg_n(c, i);
    if (n >= cap || memchr(arg_s(c, i), 0, n))
        return -1;
    memcpy(buf, arg_s(c, i), n);
    buf[n] = 0;
    return 0;
}

static int do_auth(struct rconn *c, size_t ui, size_t pi)
{
    char user[256] = "default", pass[256], who[64];
    if ((ui && arg_cstr(c, ui, user, sizeof(user))) || arg_cstr(c, pi, pass, sizeof(pass)) ||
        !check_login(c, user, pass, who)) {
        pl_log(PL_LOG_INFO, "resp", "client %" PRIu64 ": AUTH as %s refused", c->id, user);
        r_err(c, "WRONGPASS invalid username-password pair or user is disabled.");
        return -1;
    }
    snprintf(c->user, sizeof(c->user), "%s", who);
    c->authed = 1;
    ns_update(c);
    return 0;
}

static void c_auth(struct rconn *c)
{
    if (c->argc > 3)
        return r_err(c, "ERR syntax error");
    if (c->argc == 2 && !c->s->has_pass)
        return r_err(c, "ERR AUTH <password> called without any password configured for the "
                        "default user. Are you sure your configuration is correct?");
    if (do_auth(c, c->argc == 3 ? 1 : 0, c->argc - 1) == 0)
        r_ok(c);
}

static void c_hello(struct rconn *c)
{
    size_t i = 1;
    if (c->argc >= 2) {
        int64_t v;
        if (arg_int(c, 1, &v))
            return r_err(c, "ERR Protocol version is not an integer or out of range");
        if (v != 2 && v != 3)
            return r_err(c, "NOPROTO unsupported protocol version");
        i = 2;
        for (; i < c->argc; i++) {
            if (arg_is(c, i, "AUTH") && i + 2 < c->argc) {
                if (do_auth(c, i + 1, i + 2))
                    return;
                i += 2;
            } else if (arg_is(c, i, "SETNAME") && i + 1 < c->argc) {
                if (arg_cstr(c, i + 1, c->name, sizeof(c->name)))
                    return r_err(c, "ERR syntax error");
                i++;
            } else {
                return r_err(c, "ERR Syntax error in HELLO option '%.*s'", (int)arg_n(c, i),
                             arg_s(c, i));
            }
        }
        if (!c->authed && c->s->has_pass)
            return r_err(c, "NOAUTH HELLO must be called with the client already authenticated, "
                            "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                            "authenticate the client and select the RESP protocol version at the "
                            "same time");
        c->proto = (int)v;
    }
    r_map(c, 7);
    r_str(c, "server");
    r_str(c, "redis");
    r_str(c, "version");
    r_str(c, "7.2.0");
    r_str(c, "proto");
    r_int(c, c->proto);
    r_str(c, "id");
    r_int(c, (int64_t)c->id);
    r_str(c, "mode");
    r_str(c, "standalone");
    r_str(c, "role");
    r_str(c, "master");
    r_str(c, "modules");
    r_array(c, 0);
}

static void c_select(struct rconn *c)
{
    int64_t db;
    if (arg_int(c, 1, &db))
        return err_int(c);
    if (db < 0 || db >= DBS)
        return r_err(c, "ERR DB index is out of range");
    c->db = (int)db;
    ns_update(c);
    r_ok(c);
}

static void c_client(struct rconn *c)
{
    if (arg_is(c, 1, "SETNAME") && c->argc == 3) {
        for (size_t i = 0; i < arg_n(c, 2); i++)
            if (arg_s(c, 2)[i] <= ' ' || arg_s(c, 2)[i] > '~')
                return r_err(c, "ERR Client names cannot contain spaces, newlines or special "
                                "characters.");
        if (arg_cstr(c, 2, c->name, sizeof(c->name)))
            return r_err(c, "ERR syntax error");
        return r_ok(c);
    }
    if (arg_is(c, 1, "GETNAME") && c->argc == 2)
        return c->name[0] ? r_str(c, c->name) : r_null(c);
    if (arg_is(c, 1, "ID") && c->argc == 2)
        return r_int(c, (int64_t)c->id);
    if (arg_is(c, 1, "SETINFO") && c->argc == 4)
        return r_ok(c);
    r_err(c, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.", (int)PL_MIN(arg_n(c, 1), 128),
          arg_s(c, 1));
}

static const struct cmd *cmd_table(size_t *n);

static void c_command(struct rconn *c)
{
    size_t n;
    const struct cmd *t = cmd_table(&n);
    if (c->argc == 1 || arg_is(c, 1, "INFO")) {
        size_t first = c->argc == 1 ? 0 : 2;
        size_t count = c->argc == 1 ? n : c->argc - 2;
        r_array(c, count);
        for (size_t i = 0; i < count; i++) {
            const struct cmd *m = NULL;
            for (size_t k = 0; k < n; k++)
                if (c->argc == 1 ? k == i : arg_is(c, first + i, t[k].name))
                    m = &t[k];
            if (!m) {
                r_null(c);
                continue;
            }
            /* name, arity, flags, first key, last key, step */
            r_array(c, 6);
            r_str(c, m->name);
            r_int(c, m->arity);
            r_array(c, 0);
            int keyed = strcmp(m->name, "ping") && strcmp(m->name, "echo") && m->arity != 1;
            r_int(c, keyed);
            r_int(c, keyed ? (m->arity < 0 ? -1 : 1) : 0);
            r_int(c, keyed);
        }
        return;
    }
    if (arg_is(c, 1, "COUNT"))
        return r_int(c, (int64_t)n);
    if (arg_is(c, 1, "DOCS"))
        return r_map(c, 0); /* no docs: redis-cli falls back to plain hints */
    r_err(c, "ERR unknown subcommand '%.*s'. Try COMMAND HELP.", (int)PL_MIN(arg_n(c, 1), 128),
          arg_s(c, 1));
}

static void c_config(struct rconn *c)
{
    /* redis-benchmark asks for "save" and "appendonly"; a cache has neither */
    if (arg_is(c, 1, "GET") && c->argc == 3) {
        static const char *const known[][2] = {{"save", ""}, {"appendonly", "no"},
                                               {"databases", "16"},
                                               {"proto-max-bulk-len", "536870912"}};
        size_t hits = 0;
        for (size_t i = 0; i < PL_ARRAY_LEN(known); i++)
            hits += resp_glob(arg_s(c, 2), arg_n(c, 2), (const uint8_t *)known[i][0],
                              strlen(known[i][0]), 1);
        r_map(c, hits);
        for (size_t i = 0; i < PL_ARRAY_LEN(known); i++)
            if (resp_glob(arg_s(c, 2), arg_n(c, 2), (const uint8_t *)known[i][0],
                          strlen(known[i][0]), 1)) {
                r_str(c, known[i][0]);
                r_str(c, known[i][1]);
            }
        return;
    }
    r_err(c, "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try CONFIG HELP.",
          (int)PL_MIN(arg_n(c, 1), 128), arg_s(c, 1));
}

static void get_generic(struct rconn *c, int del)
{
    struct kv_val *v;
    int rc = kv_get(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), &v);
    if (rc == PL_ENOENT)
        return r_null(c);
    if (rc)
        return r_err(c, "ERR %s", pl_strerror(rc));
    if (del)
        (void)kv_del(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1));
    out_val(c, v);
    kv_val_unref(v);
}

static void c_get(struct rconn *c)
{
    get_generic(c, 0);
}

static void c_getdel(struct rconn *c)
{
    get_generic(c, 1);
}

/* Parse SET's options from i on; *exp absolute ms (0 none). */
static int set_opts(struct rconn *c, size_t i, int64_t *exp, int *flags)
{
    *exp = 0;
    *flags = 0;
    int have_exp = 0;
    for (; i < c->argc; i++) {
        int64_t v;
        int unit = arg_is(c, i, "EX") ? 1 : arg_is(c, i, "PX") ? 2 : arg_is(c, i, "EXAT") ? 3
                   : arg_is(c, i, "PXAT") ? 4 : 0;
        if (unit) {
            if (have_exp || *flags & KV_KEEPTTL || i + 1 >= c->argc) {
                r_err(c, "ERR syntax error");
                return -1;
            }
            if (arg_int(c, ++i, &v)) {
                err_int(c);
                return -1;
            }
            if (v <= 0 || (unit == 1 && v > INT64_MAX / 1000 - now_ms()) ||
                (unit == 3 && v > INT64_MAX / 1000) || (unit == 2 && v > INT64_MAX - now_ms())) {
                r_err(c, "ERR invalid expire time in 'set' command");
                return -1;
            }
            *exp = unit == 1 ? now_ms() + v * 1000 : unit == 2 ? now_ms() + v
                   : unit == 3 ? v * 1000 : v;
            have_exp = 1;
        } else if (arg_is(c, i, "NX") && !(*flags & KV_XX)) {
            *flags |= KV_NX;
        } else if (arg_is(c, i, "XX") && !(*flags & KV_NX)) {
            *flags |= KV_XX;
        } else if (arg_is(c, i, "KEEPTTL") && !have_exp) {
            *flags |= KV_KEEPTTL;
        } else if (arg_is(c, i, "GET")) {
            *flags |= KV_GETOLD;
        } else {
            r_err(c, "ERR syntax error");
            return -1;
        }
    }
    return 0;
}

static void c_set(struct rconn *c)
{
    int64_t exp;
    int flags, done;
    struct kv_val *old = NULL;
    if (set_opts(c, 3, &exp, &flags))
        return;
    kv_val_ref(c->argv[2]);
    int rc = kv_set(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), c->argv[2], exp, flags, &done,
                    &old);
    if (rc == PL_ENAMETOOLONG)
        return r_err(c, "ERR key too long (the limit is %u bytes)", KV_KEY_MAX);
    if (rc == PL_ENOSPC)
        return r_err(c, "OOM command not allowed when used memory > 'maxmemory'.");
    if (rc)
        return r_err(c, "ERR %s", pl_strerror(rc));
    if (flags & KV_GETOLD) {
        if (old) {
            out_val(c, old);
            kv_val_unref(old);
        } else {
            r_null(c);
        }
    } else if (done) {
        r_ok(c);
    } else {
        r_null(c);
    }
}

static void c_mget(struct rconn *c)
{
    r_array(c, c->argc - 1);
    for (size_t i = 1; i < c->argc; i++) {
        struct kv_val *v;
        if (kv_get(c->s->kv, c->ns, arg_s(c, i), arg_n(c, i), &v)) {
            r_null(c);
            continue;
        }
        out_val(c, v);
        kv_val_unref(v);
    }
}

static void mset(struct rconn *c, int nx)
{
    if (c->argc % 2 == 0)
        return err_arity(c, nx ? "msetnx" : "mset");
    if (nx)
        for (size_t i = 1; i < c->argc; i += 2)
            if (kv_exists(c->s->kv, c->ns, arg_s(c, i), arg_n(c, i)))
                return r_int(c, 0);
    for (size_t i = 1; i < c->argc; i += 2) {
        int done;
        kv_val_ref(c->argv[i + 1]);
        int rc = kv_set(c->s->kv, c->ns, arg_s(c, i), arg_n(c, i), c->argv[i + 1], 0, 0, &done,
                        NULL);
        if (rc == PL_ENOSPC)
            return r_err(c, "OOM command not allowed when used memory > 'maxmemory'.");
        if (rc)
            return r_err(c, "ERR %s", pl_strerror(rc));
    }
    if (nx)
        r_int(c, 1);
    else
        r_ok(c);
}

static void c_mset(struct rconn *c)
{
    mset(c, 0);
}

static void c_msetnx(struct rconn *c)
{
    mset(c, 1);
}

static void c_getrange(struct rconn *c)
{
    int64_t a, b;
    uint64_t len;
    if (arg_int(c, 2, &a) || arg_int(c, 3, &b))
        return err_int(c);
    int rc = kv_strlen(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), &len);
    if (rc == PL_ENOENT)
        return r_bulk(c, "", 0);
    if (rc)
        return r_err(c, "ERR %s", pl_strerror(rc));
    /* Redis: negative from the end, clamp, empty when inverted */
    if (a < 0 && b < 0 && a > b)
        return r_bulk(c, "", 0);
    if (a < 0)
        a += (int64_t)len;
    if (b < 0)
        b += (int64_t)len;
    a = PL_MAX(a, 0);
    b = PL_MAX(b, 0);
    if ((uint64_t)b >= len)
        b = (int64_t)len - 1;
    if (len == 0 || a > b)
        return r_bulk(c, "", 0);
    size_t n = (size_t)(b - a + 1), got = 0;
    struct kv_val *v = kv_val_new(n);
    if (!v)
        return r_err(c, "ERR %s", pl_strerror(PL_ENOMEM));
    rc = kv_getrange(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), (uint64_t)a, v->data, n, &got);
    v->n = got;
    if (rc == PL_ENOENT)
        r_bulk(c, "", 0);
    else if (rc)
        r_err(c, "ERR %s", pl_strerror(rc));
    else
        out_val(c, v);
    kv_val_unref(v);
}

static void c_strlen(struct rconn *c)
{
    uint64_t len = 0;
    int rc = kv_strlen(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), &len);
    if (rc && rc != PL_ENOENT)
        return r_err(c, "ERR %s", pl_strerror(rc));
    r_int(c, (int64_t)len);
}

static void c_exists(struct rconn *c)
{
    int64_t n = 0;
    for (size_t i = 1; i < c->argc; i++)
        n += kv_exists(c->s->kv, c->ns, arg_s(c, i), arg_n(c, i));
    r_int(c, n);
}

static void c_del(struct rconn *c)
{
    int64_t n = 0;
    for (size_t i = 1; i < c->argc; i++)
        n += kv_del(c->s->kv, c->ns, arg_s(c, i), arg_n(c, i));
    r_int(c, n);
}

static void expire_generic(struct rconn *c, int64_t mult, int absolute)
{
    int64_t v;
    int cond = 0;
    if (arg_int(c, 2, &v))
        return err_int(c);
    for (size_t i = 3; i < c->argc; i++) {
        int f = arg_is(c, i, "NX") ? KV_EXP_NX : arg_is(c, i, "XX") ? KV_EXP_XX
                : arg_is(c, i, "GT") ? KV_EXP_GT : arg_is(c, i, "LT") ? KV_EXP_LT : 0;
        if (!f)
            return r_err(c, "ERR Unsupported option %.*s", (int)PL_MIN(arg_n(c, i), 64),
                         arg_s(c, i));
        cond |= f;
    }
    if ((cond & KV_EXP_NX) && (cond & (KV_EXP_XX | KV_EXP_GT | KV_EXP_LT)))
        return r_err(c, "ERR NX and XX, GT or LT options at the same time are not compatible");
    if ((cond & KV_EXP_GT) && (cond & KV_EXP_LT))
        return r_err(c, "ERR GT and LT options at the same time are not compatible");
    if (v > INT64_MAX / mult || v < INT64_MIN / mult)
        return r_err(c, "ERR invalid expire time in '%.*s' command", (int)arg_n(c, 0),
                     arg_s(c, 0));
    int64_t at = v * mult + (absolute ? 0 : now_ms());
    if (at <= 0)
        at = 1; /* in the past: the key goes */
    r_int(c, kv_expire(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), at, cond));
}

static void c_expire(struct rconn *c)
{
    expire_generic(c, 1000, 0);
}

static void c_pexpire(struct rconn *c)
{
    expire_generic(c, 1, 0);
}

static void c_expireat(struct rconn *c)
{
    expire_generic(c, 1000, 1);
}

static void c_pexpireat(struct rconn *c)
{
    expire_generic(c, 1, 1);
}

static void ttl_generic(struct rconn *c, int ms)
{
    int64_t at;
    int rc = kv_expiry(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), &at);
    if (rc == PL_ENOENT)
        return r_int(c, -2);
    if (rc)
        return r_err(c, "ERR %s", pl_strerror(rc));
    if (!at)
        return r_int(c, -1);
    int64_t left = PL_MAX(at - now_ms(), (int64_t)0);
    r_int(c, ms ? left : (left + 500) / 1000);
}

static void c_ttl(struct rconn *c)
{
    ttl_generic(c, 0);
}

static void c_pttl(struct rconn *c)
{
    ttl_generic(c, 1);
}

static void c_persist(struct rconn *c)
{
    int64_t at;
    if (kv_expiry(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), &at) || !at)
        return r_int(c, 0);
    r_int(c, kv_expire(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1), 0, 0));
}

static void c_type(struct rconn *c)
{
    r_simple(c, kv_exists(c->s->kv, c->ns, arg_s(c, 1), arg_n(c, 1)) ? "string" : "none");
}

static void c_dbsize(struct rconn *c)
{
    r_int(c, (int64_t)kv_dbsize(c->s->kv, c->ns));
}

/* Keys gathered for SCAN and KEYS (their bytes copied out of the index). */
struct keys {
    struct pl_buf buf;
    size_t n;
    const char *pat;
    size_t pn;
};

static int keys_cb(void *arg, const void *key, size_t kn)
{
    struct keys *k = arg;
    if (k->pat && !resp_glob(k->pat, k->pn, key, kn, 0))
        return 0;
    uint8_t len[8];
    pl_put_le64(len, kn);
    if (pl_buf_add(&k->buf, len, 8) || pl_buf_add(&k->buf, key, kn))
        return PL_ENOMEM;
    k->n++;
    return 0;
}

static void keys_reply(struct rconn *c, struct keys *k)
{
    r_array(c, k->n);
    for (size_t at = 0; at < k->buf.len;) {
        size_t kn = pl_get_le64((const uint8_t *)k->buf.data + at);
        r_bulk(c, k->buf.data + at + 8, kn);
        at += 8 + kn;
    }
}

static void c_scan(struct rconn *c)
{
    int64_t cur, count = 10;
    struct keys k = {.pat = NULL};
    int string_only = 1;
    if (arg_int(c, 1, &cur) || cur < 0)
        return r_err(c, "ERR invalid cursor");
    for (size_t i = 2; i < c->argc; i++) {
        if (arg_is(c, i, "MATCH") && i + 1 < c->argc) {
            k.pat = arg_s(c, i + 1);
            k.pn = arg_n(c, ++i);
        } else if (arg_is(c, i, "COUNT") && i + 1 < c->argc) {
            if (arg_int(c, ++i, &count))
                return err_int(c);
            if (count < 1)
                return r_err(c, "ERR syntax error");
        } else if (arg_is(c, i, "TYPE") && i + 1 < c->argc) {
            string_only = arg_is(c, ++i, "string");
        } else {
            return r_err(c, "ERR syntax error");
        }
    }
    pl_buf_init(&k.buf);
    uint64_t next = 0;
    int rc = string_only ? kv_scan(c->s->kv, c->ns, (uint64_t)cur, (size_t)PL_MIN(count, 100000),
                                   keys_cb, &k, &next)
                         : 0;
    if (rc) {
        pl_buf_release(&k.buf);
        return r_err(c, "ERR %s", pl_strerror(rc));
    }
    r_array(c, 2);
    char nb[24];
    snprintf(nb, sizeof(nb), "%" PRIu64, next);
    r_str(c, nb);
    keys_reply(c, &k);
    pl_buf_release(&k.buf);
}

static void c_keys(struct rconn *c)
{
    struct keys k = {.pat = arg_s(c, 1), .pn = arg_n(c, 1)};
    uint64_t cur = 0;
    int rc = 0;
    pl_buf_init(&k.buf);
    do
        rc = kv_scan(c->s->kv, c->ns, cur, 4096, keys_cb, &k, &cur);
    while (!rc && cur);
    if (rc) {
        pl_buf_release(&k.buf);
        return r_err(c, "ERR %s", pl_strerror(rc));
    }
    keys_reply(c, &k);
    pl_buf_release(&k.buf);
}

static int is_admin(struct rconn *c)
{
    return !strcmp(c->user, "root") || (!strcmp(c->user, "default") && !c->s->has_pass);
}

static void c_flushdb(struct rconn *c)
{
    if (!is_admin(c))
        return r_err(c, "NOPERM this user has no permissions to run the '%.*s' command",
                     (int)arg_n(c, 0), arg_s(c, 0));
    int all = arg_is(c, 0, "FLUSHALL");
    if (c->argc > 2 || (c->argc == 2 && !arg_is(c, 1, "SYNC") && !arg_is(c, 1, "ASYNC")))
        return r_err(c, "ERR syntax error");
    int rc = kv_flush(c->s->kv, all ? NULL : c->ns);
    if (rc)
        return r_err(c, "ERR %s", pl_strerror(rc));
    r_ok(c);
}

static void info_section(struct rconn *c, struct pl_buf *b, const char *want)
{
    struct resp_server *s = c->s;
    struct kv_stats k;
    kv_stats(s->kv, &k);
    int all = !want || !strcasecmp(want, "all") || !strcasecmp(want, "everything") ||
              !strcasecmp(want, "default");
#define SECTION(name) (all || !strcasecmp(want, name))
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    uint64_t conns = s->conns, total = s->total_conns;
    uint64_t cmds = __atomic_load_n(&s->commands, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->lock);
    if (SECTION("server"))
        rc |= pl_buf_addf(b, "# Server\r\nredis_version:7.2.0\r\nredis_mode:standalone\r\n"
                             "plenum_version:%s\r\nprocess_id:%d\r\ntcp_port:%d\r\n"
                             "uptime_in_seconds:%" PRId64 "\r\n\r\n",
                          PL_VERSION, (int)getpid(), s->port,
                          (now_ms() - s->started_ms) / 1000);
    if (SECTION("clients"))
        rc |= pl_buf_addf(b, "# Clients\r\nconnected_clients:%" PRIu64 "\r\n\r\n", conns);
    if (SECTION("memory"))
        rc |= pl_buf_addf(b, "# Memory\r\nused_memory:%" PRIu64 "\r\nmaxmemory:%" PRIu64
                             "\r\nmaxmemory_policy:allkeys-lru\r\n\r\n",
                          k.dram_used, k.dram_max);
    if (SECTION("stats"))
        rc |= pl_buf_addf(b, "# Stats\r\ntotal_connections_received:%" PRIu64
                             "\r\ntotal_commands_processed:%" PRIu64 "\r\nkeyspace_hits:%" PRIu64
                             "\r\nkeyspace_misses:%" PRIu64 "\r\nevicted_keys:%" PRIu64
                             "\r\nexpired_keys:%" PRIu64 "\r\n\r\n",
                          total, cmds, k.hits_dram + k.hits_flash, k.misses, k.evictions,
                          k.expired);
    if (SECTION("keyspace")) {
        rc |= pl_buf_addstr(b, "# Keyspace\r\n");
        for (int db = 0; db < DBS; db++) {
            char ns[KV_NS_MAX + 1];
            snprintf(ns, sizeof(ns), "%s/%d", c->user, db);
            uint64_t n = kv_dbsize(s->kv, ns);
            if (n)
                rc |= pl_buf_addf(b, "db%d:keys=%" PRIu64 ",expires=0,avg_ttl=0\r\n", db, n);
        }
        rc |= pl_buf_addstr(b, "\r\n");
    }
    if (SECTION("plenum"))
        rc |= pl_buf_addf(b, "# Plenum\r\nkv_keys:%" PRIu64 "\r\nkv_dram_keys:%" PRIu64
                             "\r\nkv_flash_keys:%" PRIu64 "\r\nkv_dram_used:%" PRIu64
                             "\r\nkv_dram_max:%" PRIu64 "\r\nkv_flash_used:%" PRIu64
                             "\r\nkv_flash_max:%" PRIu64 "\r\nkv_hits_dram:%" PRIu64
                             "\r\nkv_hits_flash:%" PRIu64 "\r\nkv_misses:%" PRIu64
                             "\r\nkv_demotions:%" PRIu64 "\r\nkv_promotions:%" PRIu64
                             "\r\nkv_evictions:%" PRIu64 "\r\nkv_expired:%" PRIu64
                             "\r\nkv_demote_pending_bytes:%" PRIu64 "\r\n\r\n",
                          k.keys, k.dram_keys, k.flash_keys, k.dram_used, k.dram_max,
                          k.flash_used, k.flash_max, k.hits_dram, k.hits_flash, k.misses,
                          k.demotions, k.promotions, k.evictions, k.expired, k.demote_pending);
#undef SECTION
    if (rc)
        c->write_failed = 1;
}

static void c_info(struct rconn *c)
{
    struct pl_buf b;
    char want[64];
    pl_buf_init(&b);
    if (c->argc > 2)
        return r_err(c, "ERR syntax error");
    if (c->argc == 2 && arg_cstr(c, 1, want, sizeof(want)))
        return r_err(c, "ERR syntax error");
    info_section(c, &b, c->argc == 2 ? want : NULL);
    r_bulk(c, b.data ? b.data : "", b.len);
    pl_buf_release(&b);
}

static const struct cmd commands[] = {
    {"get", c_get, 2, 0, RUN_READ1},
    {"set", c_set, -3, 0, RUN_WRITE},
    {"ping", c_ping, -1, 0, RUN_LOOP},
    {"echo", c_echo, 2, 0, RUN_LOOP},
    {"quit", c_quit, -1, 1, RUN_LOOP},
    {"auth", c_auth, -2, 1, RUN_WORKER},
    {"hello", c_hello, -1, 1, RUN_WORKER},
    {"select", c_select, 2, 0, RUN_LOOP},
    {"client", c_client, -2, 0, RUN_LOOP},
    {"command", c_command, -1, 0, RUN_LOOP},
    {"config", c_config, -2, 0, RUN_LOOP},
    {"info", c_info, -1, 0, RUN_LOOP},
    {"dbsize", c_dbsize, 1, 0, RUN_LOOP},
    {"mget", c_mget, -2, 0, RUN_READN},
    {"mset", c_mset, -3, 0, RUN_WRITE},
    {"msetnx", c_msetnx, -3, 0, RUN_WRITE},
    {"getdel", c_getdel, 2, 0, RUN_READ1},
    {"getrange", c_getrange, 4, 0, RUN_READ1},
    {"strlen", c_strlen, 2, 0, RUN_LOOP},
    {"exists", c_exists, -2, 0, RUN_LOOP},
    {"del", c_del, -2, 0, RUN_LOOP},
    {"unlink", c_del, -2, 0, RUN_LOOP},
    {"expire", c_expire, -3, 0, RUN_LOOP},
    {"pexpire", c_pexpire, -3, 0, RUN_LOOP},
    {"expireat", c_expireat, -3, 0, RUN_LOOP},
    {"pexpireat", c_pexpireat, -3, 0, RUN_LOOP},
    {"ttl", c_ttl, 2, 0, RUN_LOOP},
    {"pttl", c_pttl, 2, 0, RUN_LOOP},
    {"persist", c_persist, 2, 0, RUN_LOOP},
    {"type", c_type, 2, 0, RUN_LOOP},
    {"scan", c_scan, -2, 0, RUN_LOOP},
    {"keys", c_keys, 2, 0, RUN_LOOP},
    {"flushdb", c_flushdb, -1, 0, RUN_WORKER},
    {"flushall", c_flushdb, -1, 0, RUN_WORKER},
};

static const struct cmd *cmd_table(size_t *n)
{
    *n = PL_ARRAY_LEN(commands);
    return commands;
}

static void unknown(struct rconn *c)
{
    /* Redis 7's words, so clients recognise them */
    char args[512] = "";
    size_t at = 0;
    for (size_t i = 1; i < c->argc && at < sizeof(args) - 1; i++) {
        int w = snprintf(args + at, sizeof(args) - at, "'%.*s' ", (int)PL_MIN(arg_n(c, i), 128),
                         arg_s(c, i));
        if (w < 0)
            break;
        at += (size_t)w;
    }
    r_err(c, "ERR unknown command '%.*s', with args beginning with: %s",
          (int)PL_MIN(arg_n(c, 0), 128), arg_s(c, 0), args);
}

static const struct cmd *cmd_find(struct rconn *c)
{
    for (size_t i = 0; i < PL_ARRAY_LEN(commands); i++)
        if (arg_is(c, 0, commands[i].name))
            return &commands[i];
    return NULL;
}

static int arity_ok(struct rconn *c, const struct cmd *m)
{
    return !((m->arity > 0 && c->argc != (size_t)m->arity) ||
             (m->arity < 0 && c->argc < (size_t)-m->arity));
}

/* May m run on the event loop now: nothing it does waits, and its reply
 * carries few value bytes? (A value demoted between this look and the read
 * is read from flash on the loop: correct, only slower for that moment.) */
static int loop_may_run(struct rconn *c, const struct cmd *m)
{
    if (!m || (!c->authed && !m->noauth) || !arity_ok(c, m))
        return 1; /* an error reply */
    switch (m->run) {
    case RUN_LOOP:
        return 1;
    case RUN_READ1:
    case RUN_READN: {
        /* values in memory of any size: the loop sends what the socket takes
         * and waits for room beside its other connections */
        uint64_t size;
        size_t last = m->run == RUN_READ1 ? 1 : c->argc - 1;
        for (size_t i = 1; i <= last; i++)
            if (kv_peek(c->s->kv, c->ns, arg_s(c, i), arg_n(c, i), &size) == 1)
                return 0;
        return 1;
    }
    case RUN_WRITE:
        /* SET ... GET answers the old value, which may be on flash */
        for (size_t i = 3; m->fn == c_set && i < c->argc; i++)
            if (arg_is(c, i, "GET"))
                return 0;
        return !kv_set_waits(c->s->kv);
    default:
        return 0;
    }
}

static void dispatch(struct rconn *c, const struct cmd *m)
{
    /* every command counts: no lock on the hot path */
    __atomic_fetch_add(&c->s->commands, 1, __ATOMIC_RELAXED);
    if (!m)
        return unknown(c);
    if (!c->authed && !m->noauth)
        return r_err(c, "NOAUTH Authentication required.");
    if (!arity_ok(c, m))
        return err_arity(c, m->name);
    m->fn(c);
}

/* ---- the connection ---- */
static struct rconn *conn_new(struct resp_server *s, int fd)
{
    struct rconn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->in = malloc(IN_BUF);
    if (!c->in) {
        free(c);
        return NULL;
    }
    c->s = s;
    c->fd = fd;
    c->proto = 2;
    resp_parser_init(&c->p);
    pl_buf_init(&c->out);
    snprintf(c->user, sizeof(c->user), "default");
    c->authed = !s->has_pass;
    ns_update(c);
    pthread_mutex_lock(&s->lock);
    c->id = ++s->next_id;
    s->conns++;
    s->total_conns++;
    pthread_mutex_unlock(&s->lock);
    return c;
}

static void conn_free(struct rconn *c)
{
    struct resp_server *s = c->s;
    pthread_mutex_lock(&s->lock);
    s->conns--;
    pthread_mutex_unlock(&s->lock);
    resp_parser_release(&c->p);
    for (size_t k = 0; k < c->nseg; k++)
        kv_val_unref(c->segs[k].v);
    free(c->segs);
    pl_buf_release(&c->out);
    free(c->in);
    free(c);
}

/* Run the commands in[] holds from at on, replies queued. On a loop, stop
 * before one that may not run there (it stays parsed, held, for a worker)
 * or when replies back up: 1 then, 0 when the input is used up. */
static int conn_run(struct rconn *c)
{
    while (!c->closing && !c->write_failed) {
        if (!c->held) {
            if (c->at >= c->have)
                return 0;
            size_t used;
            int rc = resp_feed(&c->p, c->in + c->at, c->have - c->at, &used);
            c->at += used;
            if (rc == 0)
                continue;
            if (rc < 0) {
                pl_log(PL_LOG_INFO, "resp", "client %" PRIu64 ": %s; closing its connection",
                       c->id, rc == PL_EPROTO ? c->p.err : pl_strerror(rc));
                r_err(c, "ERR %s", rc == PL_EPROTO ? c->p.err : "out of memory");
                c->closing = 1;
                return 0;
            }
            c->argv = c->p.args;
            c->argc = c->p.argc;
            c->held = 1;
        }
        const struct cmd *m = cmd_find(c);
        if (!c->may_block && !loop_may_run(c, m))
            return 1;
        dispatch(c, m);
        resp_next(&c->p, 0);
        c->held = 0;
        if (c->pending >= OUT_FLUSH && flush_out(c))
            return 1;
    }
    return 0;
}

/* The loop's part after input arrived or output drained: answer what can be
 * answered here; a reply the socket has no room for waits on the loop. */
static int loop_turn(struct rconn *c)
{
    /* everything this read produced goes out together: pipelined replies share a send */
    if (conn_run(c))
        return c->held ? ESRV_HANDOFF : ESRV_WRITE;
    if (c->nseg && flush_out(c))
        return ESRV_WRITE;
    if (c->closing || c->write_failed)
        return ESRV_CLOSE;
    uint8_t *dst;
    size_t dn;
    resp_direct(&c->p, &dst, &dn);
    return dn >= DIRECT_MIN ? ESRV_HANDOFF : ESRV_KEEP; /* a large value streams in on a worker */
}

/* The loop's turn: read what is waiting. */
static int conn_readable(void *arg)
{
    struct rconn *c = arg;
    c->may_block = 0;
    ssize_t r = recv(c->fd, c->in, IN_BUF, MSG_DONTWAIT);
    if (r == 0)
        return ESRV_CLOSE;
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? ESRV_KEEP : ESRV_CLOSE;
    c->have = (size_t)r;
    c->at = 0;
    return loop_turn(c);
}

/* The socket took output again: send the rest, then the commands still read. */
static int conn_writable(void *arg)
{
    struct rconn *c = arg;
    c->may_block = 0;
    if (flush_out(c))
        return ESRV_WRITE;
    if (c->write_failed)
        return ESRV_CLOSE;
    return loop_turn(c);
}

/* A worker's turn (or resp_serve_fd's): run until the connection ends, or
 * has had nothing to do for linger_ms (-1: never give it back). */
static int conn_work(struct rconn *c, int linger_ms)
{
    c->may_block = 1;
    for (;;) {
        conn_run(c);
        if (c->nseg)
            flush_out(c);
        if (c->closing || c->write_failed)
            return ESRV_CLOSE;
        uint8_t *dst;
        size_t dn;
        resp_direct(&c->p, &dst, &dn);
        int direct = dn >= DIRECT_MIN;
        /* a large value's rest: wait in recv (the loop only starts commands);
         * otherwise see what is there, and wait at most linger_ms below */
        ssize_t r = direct ? recv(c->fd, dst, dn, 0) : recv(c->fd, c->in, IN_BUF, MSG_DONTWAIT);
        if (r > 0 && direct) {
            resp_direct_done(&c->p, (size_t)r); /* a large value lands where it will be cached */
            continue;
        }
        if (r > 0) {
            c->have = (size_t)r;
            c->at = 0;
            continue;
        }
        if (r == 0)
            return ESRV_CLOSE;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return ESRV_CLOSE;
        int w = esrv_wait(c->fd, POLLIN, direct ? -1 : linger_ms);
        if (w < 0)
            return ESRV_CLOSE;
        if (w == 0)
            return ESRV_KEEP;
    }
}

void resp_serve_fd(struct resp_server *s, int fd)
{
    struct rconn *c = conn_new(s, fd);
    if (!c)
        return;
    (void)conn_work(c, -1);
    conn_free(c);
}

static int conn_open(void *ctx, int fd, void **ret)
{
    struct rconn *c = conn_new(ctx, fd);
    *ret = c;
    return c ? 0 : PL_ENOMEM;
}

static int conn_worker(void *arg)
{
    return conn_work(arg, LINGER_MS);
}

static void conn_close(void *arg)
{
    struct rconn *c = arg;
    if (c->nseg) {
        /* the last replies (an error before closing) if the socket takes them now */
        c->may_block = 0;
        (void)flush_out(c);
    }
    conn_free(c);
}

static const struct esrv_ops conn_ops = {conn_open, conn_readable, conn_writable, conn_worker,
                                         conn_close};

int resp_start(struct pl_store *st, struct kv *kv, const struct resp_opts *o,
               struct resp_server **ret)
{
    struct resp_server *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->st = st;
    s->kv = kv;
    s->started_ms = now_ms();
    pthread_mutex_init(&s->lock, NULL);
    if (o->requirepass && *o->requirepass) {
        snprintf(s->requirepass, sizeof(s->requirepass), "%s", o->requirepass);
        s->has_pass = 1;
    }
    int rc = 0;
    if (o->host) {
        struct esrv_opts t = {o->host, o->port, NULL, 10000, o->loops, "resp"};
        rc = esrv_start(&t, &conn_ops, s, &s->tcp);
        if (!rc)
            s->port = esrv_port(s->tcp);
    }
    if (!rc && o->unix_path) {
        struct esrv_opts u = {NULL, 0, o->unix_path, 10000, o->loops, "resp"};
        rc = esrv_start(&u, &conn_ops, s, &s->unx);
    }
    if (rc) {
        resp_stop(s);
        return rc;
    }
    *ret = s;
    return 0;
}

int resp_port(const struct resp_server *s)
{
    return s->port;
}

void resp_stop(struct resp_server *s)
{
    if (!s)
        return;
    if (s->tcp)
        esrv_stop(s->tcp);
    if (s->unx)
        esrv_stop(s->unx);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

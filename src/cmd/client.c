#include "cmd/cli.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proto/admin/ops.h"

int backend_open(struct backend *b, const char *dir, unsigned flags)
{
    struct pl_store_opts o = {.zstd_level = -1,
                              .create = (flags & BACKEND_CREATE) != 0,
                              .background = (flags & BACKEND_BACKGROUND) != 0};
    /* same knob as the server's [store] similarity, for scripts and benchmarks */
    const char *sim = getenv("PLENUM_SIMILARITY");
    o.similarity_off = sim && !strcmp(sim, "off");
    memset(b, 0, sizeof(*b));
    b->dir = dir;
    int rc = pl_store_open(dir, &o, &b->st);
    if (rc == 0)
        return 0;
    if (rc == PL_ELOCKED) {
        char p[PL_PATH_MAX];
        json_error_t je;
        snprintf(p, sizeof(p), "%s/server.json", dir);
        json_t *j = json_load_file(p, 0, &je);
        const char *admin = j ? json_string_value(json_object_get(j, "admin")) : NULL;
        if (admin) {
            snprintf(b->url, sizeof(b->url), "http://%s", admin);
            json_decref(j);
            return 0;
        }
        json_decref(j);
        fprintf(stderr,
                "plenum: %s is in use by another process that serves no admin API; stop it or "
                "start the server with --admin\n",
                dir);
        return rc;
    }
    if (rc == PL_ENOTPLENUM)
        fprintf(stderr,
                "plenum: %s is not a plenum data directory (and not empty); pass --data with "
                "the right directory or an empty one\n",
                dir);
    else if (rc == PL_ENOENT)
        fprintf(stderr, "plenum: no data directory at %s; run 'plenum server --data %s' or "
                        "'plenum mb' there first\n",
                dir, dir);
    else if (rc == PL_EACCES || rc == PL_EPERM)
        fprintf(stderr, "plenum: cannot open %s: permission denied; run as its owner or fix its "
                        "permissions\n",
                dir);
    else
        fprintf(stderr, "plenum: cannot open data directory %s: %s\n", dir, pl_strerror(rc));
    return rc;
}

void backend_close(struct backend *b)
{
    pl_store_close(b->st);
    b->st = NULL;
}

/* ---- progress ---- */
void progress_update(const char *label, uint64_t done, int64_t total, uint64_t t0_ns)
{
    static uint64_t last;
    uint64_t now = pl_mono_ns();
    if (!label || !isatty(2) || now - last < 100000000)
        return;
    last = now;
    char d[32], r[32];
    double secs = (double)(now - t0_ns) / 1e9;
    pl_fmt_bytes(done, d, sizeof(d));
    pl_fmt_bytes(secs > 0 ? (uint64_t)((double)done / secs) : 0, r, sizeof(r));
    if (total > 0) {
        int pct = (int)(done * 100 / (uint64_t)total);
        char bar[31];
        int fill = pct * 30 / 100;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%s [%s] %3d%% %s %s/s   ", label, bar, pct, d, r);
    } else {
        fprintf(stderr, "\r%s %s %s/s   ", label, d, r);
    }
}

void progress_end(const char *label, uint64_t done, uint64_t t0_ns)
{
    if (!label || !isatty(2))
        return;
    char d[32], r[32];
    double secs = (double)(pl_mono_ns() - t0_ns) / 1e9;
    pl_fmt_bytes(done, d, sizeof(d));
    pl_fmt_bytes(secs > 0 ? (uint64_t)((double)done / secs) : 0, r, sizeof(r));
    fprintf(stderr, "\r%s %s in %.1fs (%s/s)%30s\n", label, d, secs, r, "");
}

/* ---- local I/O adapters ---- */
struct local_io {
    struct xfer *x;
    uint64_t done, t0;
};

static ssize_t local_read(void *ctx, void *buf, size_t n)
{
    struct local_io *l = ctx;
    for (;;) {
        ssize_t r = read(l->x->in_fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        l->done += (uint64_t)r;
        progress_update(l->x->label, l->done, l->x->total, l->t0);
        return r;
    }
}

static int local_begin(void *ctx, int64_t size)
{
    struct local_io *l = ctx;
    l->x->total = size;
    return 0;
}

static int local_write(void *ctx, const void *buf, size_t n)
{
    struct local_io *l = ctx;
    int rc = pl_write_all(l->x->out_fd, buf, n);
    l->done += n;
    progress_update(l->x->label, l->done, l->x->total, l->t0);
    return rc;
}

/* ---- remote ---- */
struct remote_io {
    struct xfer *x;
    struct pl_buf resp;
    int status;
    int streaming; /* 200 on a body op: bytes go to out_fd */
    uint64_t done, t0;
    int werr;
};

static size_t rd_cb(char *buf, size_t sz, size_t nm, void *ctx)
{
    struct remote_io *r = ctx;
    ssize_t n;
    do {
        n = read(r->x->in_fd, buf, sz * nm);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return CURL_READFUNC_ABORT;
    r->done += (uint64_t)n;
    progress_update(r->x->label, r->done, r->x->total, r->t0);
    return (size_t)n;
}

static size_t wr_cb(char *buf, size_t sz, size_t nm, void *ctx)
{
    struct remote_io *r = ctx;
    size_t n = sz * nm;
    if (r->streaming) {
        if (pl_write_all(r->x->out_fd, buf, n)) {
            r->werr = 1;
            return 0;
        }
        r->done += n;
        progress_update(r->x->label, r->done, r->x->total, r->t0);
        return n;
    }
    if (r->resp.len + n > (64u << 20) || pl_buf_add(&r->resp, buf, n))
        return 0;
    return n;
}

static size_t hdr_cb(char *buf, size_t sz, size_t nm, void *ctx)
{
    struct remote_io *r = ctx;
    size_t n = sz * nm;
    if (n > 9 && !strncmp(buf, "HTTP/1.1 ", 9))
        r->status = atoi(buf + 9);
    if (n > 16 && !strncasecmp(buf, "content-length:", 15) && r->status == 200 &&
        r->x->out_fd >= 0) {
        r->streaming = 1;
        r->x->total = strtoll(buf + 15, NULL, 10);
    }
    return n;
}

static int remote_call(struct backend *b, const char *op, json_t *args, struct xfer *x,
                       json_t **ret_res, char *msg, size_t msgn)
{
    static struct xfer none = {-1, -1, -1, NULL};
    struct remote_io r = {.x = x ? x : &none, .t0 = pl_mono_ns()};
    char url[400], *argstr = json_dumps(args, JSON_COMPACT | JSON_ENSURE_ASCII);
    struct curl_slist *h = NULL;
    struct pl_buf hv;
    int rc = 0;
    pl_buf_init(&r.resp);
    pl_buf_init(&hv);
    CURL *c = curl_easy_init();
    if (!c || !argstr || pl_buf_addf(&hv, "X-Plenum-Args: %s", argstr)) {
        rc = PL_ENOMEM;
        goto out;
    }
    snprintf(url, sizeof(url), "%s/api/v1/%s", b->url, op);
    h = curl_slist_append(h, hv.data);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, wr_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hdr_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (x && x->in_fd >= 0) {
        curl_easy_setopt(c, CURLOPT_READFUNCTION, rd_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &r);
        if (x->total >= 0)
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->total);
        else
            h = curl_slist_append(h, "Transfer-Encoding: chunked");
    } else {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
    }
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_PARTIAL_FILE && r.streaming && !r.werr) {
        /* the server stops a body it cannot finish: stored data failed its checks */
        snprintf(msg, msgn, "the server stopped after %llu bytes: stored data could not be read "
                            "back intact (the server log says where)",
                 (unsigned long long)r.done);
        rc = PL_ECORRUPT;
        goto out;
    }
    if (cc != CURLE_OK) {
        snprintf(msg, msgn, "talking to the server at %s: %s%s", b->url, curl_easy_strerror(cc),
                 r.werr ? " (writing the output failed)" : "");
        rc = cc == CURLE_COULDNT_CONNECT ? PL_ECONNREFUSED : PL_EIO;
        goto out;
    }
    if (r.streaming && r.status == 200) {
        progress_end(r.x->label, r.done, r.t0);
        *ret_res = json_object();
        goto out;
    }
    json_error_t je;
    json_t *j = json_loadb(r.resp.data, r.resp.len, 0, &je);
    if (!j) {
        snprintf(msg, msgn, "server answered HTTP %d with no JSON", r.status);
        rc = PL_EPROTO;
        goto out;
    }
    if (r.status != 200) {
        json_t *code = json_object_get(j, "code");
        rc = json_is_integer(code) ? (int)json_integer_value(code) : PL_EIO;
        const char *m = json_string_value(json_object_get(j, "message"));
        snprintf(msg, msgn, "%s", m ? m : pl_strerror(rc));
        json_decref(j);
        goto out;
    }
    if (x && x->in_fd >= 0)
        progress_end(r.x->label, r.done, r.t0);
    *ret_res = j;
out:
    free(argstr);
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    pl_buf_release(&r.resp);
    pl_buf_release(&hv);
    return rc;
}

int backend_call(struct backend *b, const char *op, json_t *args, struct xfer *x, json_t **ret_res,
                 char *msg, size_t msgn)
{
    int rc;
    msg[0] = 0;
    if (!b->st) {
        rc = remote_call(b, op, args, x, ret_res, msg, msgn);
        json_decref(args);
        return rc;
    }
    const struct op_def *d = ops_find(op);
    struct local_io l = {x, 0, pl_mono_ns()};
    struct op_io io = {local_read, local_begin, local_write, &l};
    rc = d ? ops_run(b->st, d, args, x ? &io : NULL, ret_res) : PL_EINVAL;
    if (!rc && x)
        progress_end(x->label, l.done, l.t0);
    if (rc)
        snprintf(msg, msgn, "%s", pl_strerror(rc));
    json_decref(args);
    return rc;
}

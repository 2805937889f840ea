/* Request metrics shared by every head: one slot per (head, operation),
 * lock-free counters and a latency histogram, rendered as Prometheus text. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "base/base.h"

#define SLOTS 256
#define NHIST 14 /* 0.5 ms * 2^i */

struct slot {
    char head[16], op[48];
    atomic_uint_fast64_t count, errors, bytes_in, bytes_out, sum_us;
    atomic_uint_fast64_t hist[NHIST + 1];
};

static struct slot slots[SLOTS];
static atomic_int nslots;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

static struct source {
    pl_metrics_fn fn;
    void *arg;
} sources[8];
static pthread_mutex_t src_lock = PTHREAD_MUTEX_INITIALIZER;

int pl_metrics_source_add(pl_metrics_fn fn, void *arg)
{
    int rc = PL_ENOSPC;
    pthread_mutex_lock(&src_lock);
    for (size_t i = 0; i < PL_ARRAY_LEN(sources) && rc; i++)
        if (!sources[i].fn) {
            sources[i] = (struct source){fn, arg};
            rc = 0;
        }
    pthread_mutex_unlock(&src_lock);
    return rc;
}

void pl_metrics_source_remove(pl_metrics_fn fn, void *arg)
{
    pthread_mutex_lock(&src_lock);
    for (size_t i = 0; i < PL_ARRAY_LEN(sources); i++)
        if (sources[i].fn == fn && sources[i].arg == arg)
            sources[i] = (struct source){0};
    pthread_mutex_unlock(&src_lock);
}

int pl_metrics_slot(const char *head, const char *op)
{
    int n = atomic_load(&nslots);
    for (int i = 0; i < n; i++)
        if (!strcmp(slots[i].head, head) && !strcmp(slots[i].op, op))
            return i;
    pthread_mutex_lock(&reg_lock);
    n = atomic_load(&nslots);
    for (int i = 0; i < n; i++)
        if (!strcmp(slots[i].head, head) && !strcmp(slots[i].op, op)) {
            pthread_mutex_unlock(&reg_lock);
            return i;
        }
    int idx = -1;
    if (n < SLOTS) {
        snprintf(slots[n].head, sizeof(slots[n].head), "%s", head);
        snprintf(slots[n].op, sizeof(slots[n].op), "%s", op);
        idx = n;
        atomic_store(&nslots, n + 1);
    }
    pthread_mutex_unlock(&reg_lock);
    return idx;
}

void pl_metrics_observe(int slot, uint64_t ns, int failed, uint64_t in, uint64_t out)
{
    if (slot < 0 || slot >= SLOTS)
        return;
    struct slot *s = &slots[slot];
    s->count++;
    if (failed)
        s->errors++;
    s->bytes_in += in;
    s->bytes_out += out;
    uint64_t us = ns / 1000;
    s->sum_us += us;
    int b = 0;
    while (b < NHIST && us > (500u << b))
        b++;
    s->hist[b]++;
}

int pl_metrics_render(struct pl_buf *b)
{
    int rc = pl_buf_addstr(b, "# HELP plenum_requests_total Requests served, by head and operation.\n"
                              "# TYPE plenum_requests_total counter\n"
                              "# TYPE plenum_request_errors_total counter\n"
                              "# TYPE plenum_bytes_in_total counter\n"
                              "# TYPE plenum_bytes_out_total counter\n"
                              "# TYPE plenum_request_seconds histogram\n");
    int n = atomic_load(&nslots);
    for (int i = 0; i < n && !rc; i++) {
        struct slot *s = &slots[i];
        const char *h = s->head, *o = s->op;
        rc |= pl_buf_addf(b, "plenum_requests_total{head=\"%s\",op=\"%s\"} %" PRIu64 "\n", h, o,
                          (uint64_t)s->count);
        rc |= pl_buf_addf(b, "plenum_request_errors_total{head=\"%s\",op=\"%s\"} %" PRIu64 "\n",
                          h, o, (uint64_t)s->errors);
        rc |= pl_buf_addf(b, "plenum_bytes_in_total{head=\"%s\",op=\"%s\"} %" PRIu64 "\n", h, o,
                          (uint64_t)s->bytes_in);
        rc |= pl_buf_addf(b, "plenum_bytes_out_total{head=\"%s\",op=\"%s\"} %" PRIu64 "\n", h, o,
                          (uint64_t)s->bytes_out);
        uint64_t cum = 0;
        for (int k = 0; k <= NHIST; k++) {
            cum += s->hist[k];
            if (k < NHIST)
                rc |= pl_buf_addf(b,
                                  "plenum_request_seconds_bucket{head=\"%s\",op=\"%s\",le=\"%g\"} "
                                  "%" PRIu64 "\n",
                                  h, o, (500.0 * (1u << k)) / 1e6, cum);
            else
                rc |= pl_buf_addf(b,
                                  "plenum_request_seconds_bucket{head=\"%s\",op=\"%s\",le=\"+Inf\"}"
                                  " %" PRIu64 "\n",
                                  h, o, cum);
        }
        rc |= pl_buf_addf(b, "plenum_request_seconds_sum{head=\"%s\",op=\"%s\"} %g\n", h, o,
                          (double)s->sum_us / 1e6);
        rc |= pl_buf_addf(b, "plenum_request_seconds_count{head=\"%s\",op=\"%s\"} %" PRIu64 "\n",
                          h, o, (uint64_t)s->count);
    }
    /* rendering under the lock: a source is never removed while it renders */
    pthread_mutex_lock(&src_lock);
    for (size_t i = 0; i < PL_ARRAY_LEN(sources) && !rc; i++)
        if (sources[i].fn)
            rc = sources[i].fn(sources[i].arg, b);
    pthread_mutex_unlock(&src_lock);
    return rc ? PL_ENOMEM : 0;
}

#include <stdlib.h>

#include "base/base.h"

void pl_gate_init(struct pl_gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->shared = g->excl = g->excl_waiting = 0;
}

void pl_gate_destroy(struct pl_gate *g)
{
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
}

void pl_gate_enter(struct pl_gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (g->excl || g->excl_waiting)
        pthread_cond_wait(&g->cond, &g->lock);
    g->shared++;
    pthread_mutex_unlock(&g->lock);
}

void pl_gate_leave(struct pl_gate *g)
{
    pthread_mutex_lock(&g->lock);
    if (--g->shared == 0)
        pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

void pl_gate_lock(struct pl_gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->excl_waiting++;
    while (g->excl || g->shared)
        pthread_cond_wait(&g->cond, &g->lock);
    g->excl_waiting--;
    g->excl = 1;
    pthread_mutex_unlock(&g->lock);
}

void pl_gate_unlock(struct pl_gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->excl = 0;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

struct pl_pool {
    pthread_mutex_t lock;
    pthread_cond_t work, done, room;
    struct pl_job *head, *tail;
    int queued; /* jobs waiting for a worker */
    int stopping;
    int n;
    pthread_t thr[];
};

static void *pool_main(void *arg)
{
    struct pl_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->work, &p->lock);
        struct pl_job *j = p->head;
        if (!j)
            break;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_cond_signal(&p->room);
        int detached = j->detached;
        pthread_mutex_unlock(&p->lock);
        j->fn(j); /* a detached job may be gone after this */
        pthread_mutex_lock(&p->lock);
        if (!detached) {
            j->done = 1;
            pthread_cond_broadcast(&p->done);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int pl_pool_new(int nthreads, struct pl_pool **ret)
{
    struct pl_pool *p = calloc(1, sizeof(*p) + (size_t)nthreads * sizeof(pthread_t));
    if (!p)
        return PL_ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    pthread_cond_init(&p->room, NULL);
    for (; p->n < nthreads; p->n++)
        if (pthread_create(&p->thr[p->n], NULL, pool_main, p))
            break;
    if (p->n == 0) {
        pl_pool_free(p);
        return PL_ENOMEM;
    }
    *ret = p;
    return 0;
}

void pl_pool_free(struct pl_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->thr[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->room);
    free(p);
}

static void submit_locked(struct pl_pool *p, struct pl_job *j)
{
    j->done = 0; /* detached is the caller's to set */
    j->next = NULL;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->queued++;
    pthread_cond_signal(&p->work);
}

void pl_pool_submit(struct pl_pool *p, struct pl_job *j)
{
    pthread_mutex_lock(&p->lock);
    submit_locked(p, j);
    pthread_mutex_unlock(&p->lock);
}

void pl_pool_submit_bounded(struct pl_pool *p, struct pl_job *j, int max_queued)
{
    pthread_mutex_lock(&p->lock);
    while (p->queued >= max_queued)
        pthread_cond_wait(&p->room, &p->lock);
    submit_locked(p, j);
    pthread_mutex_unlock(&p->lock);
}

void pl_job_wait(struct pl_pool *p, struct pl_job *j)
{
    pthread_mutex_lock(&p->lock);
    while (!j->done)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

/* One pl_pool_share: its items, and the helpers' jobs. Freed by whoever
 * drops the last reference, caller or helper. */
struct share {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n, next, done, refs;
    void (*fn)(void *arg, int i);
    void *arg;
    struct share_job {
        struct pl_job job;
        struct share *s;
    } jobs[];
};

static void share_put(struct share *s)
{
    pthread_mutex_lock(&s->lock);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
    }
}

static void share_work(struct share *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->next < s->n) {
        int i = s->next++;
        pthread_mutex_unlock(&s->lock);
        s->fn(s->arg, i);
        pthread_mutex_lock(&s->lock);
        if (++s->done == s->n)
            pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

static void share_job_run(struct pl_job *j)
{
    struct share *s = ((struct share_job *)j)->s;
    share_work(s);
    share_put(s);
}

void pl_pool_share(struct pl_pool *p, int helpers, int n, void (*fn)(void *arg, int i), void *arg)
{
    helpers = PL_MAX(0, PL_MIN(helpers, n - 1));
    struct share *s = helpers ? calloc(1, sizeof(*s) + (size_t)helpers * sizeof(s->jobs[0])) : NULL;
    if (!s) {
        for (int i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->n = n;
    s->fn = fn;
    s->arg = arg;
    s->refs = 1 + helpers;
    for (int h = 0; h < helpers; h++) {
        s->jobs[h].s = s;
        s->jobs[h].job.fn = share_job_run;
        s->jobs[h].job.detached = 1;
        pl_pool_submit(p, &s->jobs[h].job);
    }
    share_work(s);
    pthread_mutex_lock(&s->lock);
    while (s->done < s->n)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    share_put(s);
}

/* The broker's private state, shared by broker.c and group.c. */
#ifndef PL_BROKER_INT_H
#define PL_BROKER_INT_H

#include <pthread.h>

#include "broker/broker.h"

struct bentry {        /* one batch */
    int64_t base, last; /* offsets */
    int64_t max_ts;
    uint32_t seg;       /* index into part.segs */
    uint64_t pos;       /* in the segment */
    uint32_t len;
};

struct bseg {
    int64_t base; /* first offset, also the file name */
    uint64_t id;  /* element */
    uint64_t size;
};

struct part {
    pthread_mutex_t lock;        /* index, segments, offsets */
    pthread_mutex_t append_lock; /* one append (or retention step) at a time */
    const char *topic;
    int index;
    uint64_t dir;
    struct bseg *segs;
    size_t nseg;
    struct bentry *ents;
    size_t nent, cap;
    int64_t log_start, next;
    uint64_t bytes;
};

struct topic {
    struct broker_topic info;
    uint64_t dir;
    struct part *parts;
    int refs, deleted;
    struct topic *next;
};

struct broker {
    struct pl_store *st;
    struct broker_opts opts;
    pthread_mutex_t lock;        /* topics list, refs, appends */
    pthread_mutex_t create_lock; /* creates and deletes */
    pthread_cond_t appended, maint_cond;
    uint64_t appends;
    struct topic *topics;
    pthread_t maint;
    int maint_started, stopping;
    uint64_t ticks;
};

struct topic *topic_get(struct broker *b, const char *name);
void topic_put(struct broker *b, struct topic *t);

#endif

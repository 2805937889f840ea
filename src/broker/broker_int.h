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
    int64_t base;       /* first offset, also the file name */
    uint64_t id;        /* element */
    uint64_t size;      /* committed */
    uint64_t staged;    /* end of what is written, committed or not */
    uint32_t inflight;  /* staged appends not yet committed */
};

/* An append goes in two steps (broker_append_stage, _commit): staged under
 * append_lock, which gives it offsets and a place in the segment; committed
 * in the order staged (seq), so the log never has a durable batch after one
 * that is not. A failed commit fails every append staged after it. */
struct part {
    pthread_mutex_t lock;        /* index, segments, offsets, commit turns */
    pthread_mutex_t append_lock; /* one stage (or roll, or retention step) at a time */
    pthread_cond_t turn;         /* with lock: commit_seq moved */
    const char *topic;
    int index;
    uint64_t dir;
    struct bseg *segs;
    size_t nseg;
    struct bentry *ents;
    size_t nent, cap;
    int64_t log_start, next; /* next: after the last committed batch */
    uint64_t bytes;
    int64_t stage_next;          /* the offset the next stage gets */
    uint64_t stage_seq, commit_seq;
    int broken;                  /* a failed commit's error, while stages after it wait */
};

struct topic {
    struct broker_topic info;
    uint64_t dir;
    struct part *parts;
    int refs, deleted;
    struct topic *next;
};

enum gstate { G_EMPTY, G_PREPARING, G_AWAITING_SYNC, G_STABLE };

struct gmember {
    struct broker_member m;
    struct broker_proto protos[BROKER_PROTO_MAX]; /* metadata owned (malloc'd) */
    int nprotos;
    int32_t session_ms, rebalance_ms;
    int64_t seen_ms;
    int joined;  /* rejoined in the rebalance under way */
    int waiting; /* a JoinGroup or SyncGroup of it is blocked */
};

struct group {
    char id[BROKER_GROUP_MAX + 1];
    char protocol_type[64], protocol[128];
    int state;
    int32_t generation;
    char leader[BROKER_MEMBER_MAX + 1];
    struct gmember *members;
    int n, cap;
    int64_t deadline_ms; /* of the rebalance under way */
    pthread_cond_t cond;
    struct group *next;
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
    pthread_mutex_t glock; /* groups */
    struct group *groups;
    /* the element event publisher (events.c) */
    pthread_t evpub;
    int ev_started;
    pthread_cond_t ev_cond; /* with lock: events were queued */
    uint64_t ev_kicks;
};

void group_init(struct broker *b);
void group_tick(struct broker *b); /* session timeouts, rebalance deadlines */
void group_stop(struct broker *b); /* wake every waiter */
void group_free(struct broker *b);

struct topic *topic_get(struct broker *b, const char *name);
void topic_put(struct broker *b, struct topic *t);
/* broker_topic_create without the name rules (system topics). */
int topic_create(struct broker *b, const char *name, int partitions,
                 const char *const *configs) PL_WUR;

/* how far the event publisher got into a topic: the last sequence it holds */
#define BROKER_EV_CURSOR "kafka/evc/"
int events_start(struct broker *b) PL_WUR;
void events_stop(struct broker *b);

#endif

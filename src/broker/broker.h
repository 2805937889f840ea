/* The event broker service: topics as elements, partition logs of record
 * batches stored as received, committed offsets and consumer groups. The
 * Kafka head (proto/kafka) speaks the protocol; this is what it serves.
 *
 * A partition is a directory "/.kafka/TOPIC/N" of segment files named by
 * their first offset; batches are appended as the producer sent them (only
 * the base offset and leader epoch patched), durable before the producer
 * hears back. Topic configs and committed offsets are service records. */
#ifndef PL_BROKER_H
#define PL_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/store.h"

#define BROKER_TOPIC_MAX 249
#define BROKER_PARTS_MAX 1024
#define BROKER_GROUP_MAX 255

struct broker;

struct broker_opts {
    int auto_create;        /* create unknown topics on produce/metadata */
    int default_partitions; /* for auto-created topics; 0 = 1 */
    int events;             /* publish the store's element events */
};

struct broker_topic {
    char name[BROKER_TOPIC_MAX + 1];
    int partitions;
    int64_t retention_ms;    /* -1: keep forever */
    int64_t retention_bytes; /* per partition; -1: no limit */
    int64_t segment_bytes;
};

struct broker_part_info {
    int64_t log_start, next; /* first offset kept, next offset to assign (high watermark) */
    uint64_t bytes;
    int segments;
};

int broker_open(struct pl_store *st, const struct broker_opts *o, struct broker **ret) PL_WUR;
void broker_close(struct broker *b);
int broker_auto_create(const struct broker *b);
struct pl_store *broker_store(const struct broker *b);

/* [a-zA-Z0-9._-]{1,249}, not "." or "..": else PL_EINVAL. */
int broker_topic_name_valid(const char *name);
/* Topics the broker itself writes ("$events.BUCKET"): clients may read and
 * delete them, not create or produce to them. */
#define BROKER_EV_TOPIC "$events."
int broker_topic_is_system(const char *name);
/* configs: NULL-terminated name, value pairs (retention.ms, retention.bytes,
 * segment.bytes, cleanup.policy=delete); PL_EEXIST, PL_EINVAL. */
int broker_topic_create(struct broker *b, const char *name, int partitions,
                        const char *const *configs) PL_WUR;
int broker_topic_delete(struct broker *b, const char *name) PL_WUR;
int broker_topic_get(struct broker *b, const char *name, struct broker_topic *ret) PL_WUR;
typedef int (*broker_topic_fn)(void *arg, const struct broker_topic *t);
int broker_topic_list(struct broker *b, broker_topic_fn cb, void *arg) PL_WUR;
int broker_part_info(struct broker *b, const char *topic, int part,
                     struct broker_part_info *ret) PL_WUR;

/* Validate and append a producer's batches (patched in place); durable on
 * return. *ret_base: the first offset given. */
int broker_produce(struct broker *b, const char *topic, int part, uint8_t *recs, size_t n,
                   int64_t *ret_base) PL_WUR;
/* Several producers' records for one partition in one write (the group
 * commit of pipelined requests; rcs[i] and bases[i] per buffer, a buffer
 * that fails validation fails alone), in two steps, so a connection can
 * prepare its next requests while these sync. Stage only inside a write
 * hold (broker_write_hold, taken before any stage and released after their
 * commits; see pl_write_hold in store.h). Stage validates, gives offsets
 * (bases[i]) and writes the valid buffers, which must stay unchanged until
 * the commit; *ret is NULL when nothing was staged (rcs say why). Commit
 * makes them durable and readable, in the order of staging per partition
 * (it waits for earlier stages' commits), sets rcs/bases of the staged
 * buffers on failure and frees ba (NULL is a no-op). Every stage must be
 * committed: later stages of the partition wait for it. */
struct broker_append;
void broker_write_hold(struct broker *b);
void broker_write_release(struct broker *b);
void broker_append_stage(struct broker *b, const char *topic, int part, uint8_t *const *recs,
                         const size_t *lens, int n, int *rcs, int64_t *bases,
                         struct broker_append **ret);
void broker_append_commit(struct broker_append *ba, const struct pl_svc_rec *svc, size_t nsvc,
                          int n, int *rcs, int64_t *bases);
/* One producer's batches with service records committed in the same
 * transaction (the event publisher's cursor). */
int broker_append_svc(struct broker *b, const char *topic, int part, uint8_t *recs, size_t n,
                      const struct pl_svc_rec *svc, size_t nsvc, int64_t *ret_base) PL_WUR;
/* Whole batches from the one holding offset on, up to max_bytes (at least
 * one batch). *ret_buf (malloc'd, NULL when nothing) is the caller's.
 * PL_ERANGE when offset is outside [log_start, next]. */
int broker_fetch(struct broker *b, const char *topic, int part, int64_t offset, size_t max_bytes,
                 uint8_t **ret_buf, size_t *ret_n, struct broker_part_info *ret_info) PL_WUR;
/* A counter that moves at every append; wait until it passes seen or
 * timeout_ms ends. */
uint64_t broker_appends(struct broker *b);
void broker_wait(struct broker *b, uint64_t seen, int timeout_ms);
/* The first offset whose batch has a timestamp >= ts, or -1 (and ret_ts -1). */
int broker_offset_for_time(struct broker *b, const char *topic, int part, int64_t ts,
                           int64_t *ret_off, int64_t *ret_ts) PL_WUR;

/* ---- consumer groups (group.c), the classic protocol ----
 * Results are Kafka error codes: the coordinator's rules are Kafka's. */
enum {
    BK_NONE = 0,
    BK_COORDINATOR_NOT_AVAILABLE = 15,
    BK_ILLEGAL_GENERATION = 22,
    BK_INCONSISTENT_GROUP_PROTOCOL = 23,
    BK_INVALID_GROUP_ID = 24,
    BK_UNKNOWN_MEMBER_ID = 25,
    BK_INVALID_SESSION_TIMEOUT = 26,
    BK_REBALANCE_IN_PROGRESS = 27,
    BK_GROUP_ID_NOT_FOUND = 69,
    BK_NON_EMPTY_GROUP = 68,
};

#define BROKER_MEMBER_MAX 200
#define BROKER_PROTO_MAX 16

struct broker_proto {
    char name[128];
    const uint8_t *meta; /* borrowed for the call */
    int32_t len;
};

struct broker_join_req {
    const char *group, *member_id, *client_id, *client_host, *protocol_type;
    int32_t session_ms, rebalance_ms;
    const struct broker_proto *protos;
    int nprotos;
};

struct broker_member {
    char id[BROKER_MEMBER_MAX + 1];
    char client_id[256], client_host[64];
    uint8_t *meta; /* the member's metadata for the chosen protocol */
    int32_t len;
    uint8_t *assign;
    int32_t alen;
};

struct broker_join_res {
    int16_t err;
    int32_t generation;
    char protocol[128];
    char leader[BROKER_MEMBER_MAX + 1];
    char member_id[BROKER_MEMBER_MAX + 1];
    struct broker_member *members; /* for the leader only */
    int nmembers;
};
void broker_members_free(struct broker_member *m, int n);

/* Blocks until the rebalance completes (or the rebalance timeout). */
void broker_join(struct broker *b, const struct broker_join_req *rq, struct broker_join_res *res);
struct broker_assignment {
    char member[BROKER_MEMBER_MAX + 1];
    const uint8_t *data;
    int32_t len;
};
/* The leader hands out assignments; everyone gets theirs (*ret_assign is
 * malloc'd, the caller's). Blocks until the leader's arrives. */
int16_t broker_sync(struct broker *b, const char *group, int32_t generation, const char *member,
                    const struct broker_assignment *as, int n, uint8_t **ret_assign,
                    int32_t *ret_len);
int16_t broker_heartbeat(struct broker *b, const char *group, int32_t generation,
                         const char *member);
int16_t broker_leave(struct broker *b, const char *group, const char *member);

struct broker_group_info {
    char id[BROKER_GROUP_MAX + 1];
    char state[32]; /* Empty, PreparingRebalance, CompletingRebalance, Stable, Dead */
    char protocol_type[64], protocol[128];
    struct broker_member *members; /* with their metadata and assignments */
    int nmembers;
};
typedef int (*broker_group_fn)(void *arg, const struct broker_group_info *g);
/* Groups with members or committed offsets. */
int broker_group_list(struct broker *b, broker_group_fn cb, void *arg) PL_WUR;
/* PL_ENOENT for a group nobody knows. */
int broker_group_describe(struct broker *b, const char *group, broker_group_fn cb,
                          void *arg) PL_WUR;
/* Forget a group's committed offsets; BK_NON_EMPTY_GROUP while it has members. */
int16_t broker_group_delete(struct broker *b, const char *group);
/* Set the group's committed offset of every partition of topic to to_offset
 * (-2 earliest, -1 latest, else that offset, clamped); refused while the group
 * has members. */
int broker_group_reset(struct broker *b, const char *group, const char *topic,
                       int64_t to_offset) PL_WUR;

/* Committed offsets (group.c). */
int broker_commit(struct broker *b, const char *group, const char *topic, int part, int64_t offset,
                  const char *meta) PL_WUR;
/* PL_ENOENT when nothing is committed. */
int broker_committed(struct broker *b, const char *group, const char *topic, int part,
                     int64_t *ret_off, char *meta, size_t mn) PL_WUR;

/* ---- S3 bucket notifications (notify.c) ----
 * A bucket's topic configurations: an element event whose type matches one
 * of a rule's patterns ("s3:ObjectCreated:*" or a full name) and whose key
 * has the rule's prefix and suffix goes to the rule's topic as well. */
#define BROKER_NOTIFY_MAX 16
#define BROKER_NOTIFY_EVENTS 8
struct broker_notify_rule {
    char id[256];
    char arn[512]; /* as the client named the topic */
    char topic[BROKER_TOPIC_MAX + 1];
    char events[BROKER_NOTIFY_EVENTS][64];
    int nevents;
    char prefix[PL_KEY_MAX + 1], suffix[PL_KEY_MAX + 1];
};
struct broker_notify {
    int n;
    struct broker_notify_rule rules[BROKER_NOTIFY_MAX];
};
/* Replace bucket's configuration (n 0: none). PL_ENOTOPIC when a rule's
 * topic does not exist, PL_EINVAL for an event name S3 does not have. */
int broker_notify_set(struct broker *b, const char *bucket, const struct broker_notify *cfg) PL_WUR;
/* *ret (malloc'd, the caller's) gets the configuration; n 0 when none. */
int broker_notify_get(struct broker *b, const char *bucket, struct broker_notify **ret) PL_WUR;
/* Does the event (its CloudEvents JSON and key) match the rule? */
int broker_notify_match(const struct broker_notify_rule *r, const char *json, size_t jn,
                        const char *key, size_t kn);
/* Is name an event type (or a "...:*" pattern) a rule may name? */
int broker_notify_event_valid(const char *name);

#endif

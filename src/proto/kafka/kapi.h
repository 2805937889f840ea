/* Inside the Kafka head: what the connection loop and dispatch (kafka.c),
 * the data and topic APIs (kdata.c) and the group, offset and SASL APIs
 * (kgroup.c) share. */
#ifndef PL_KAFKA_KAPI_H
#define PL_KAFKA_KAPI_H

#include <stdint.h>

#include "base/base.h"
#include "proto/kafka/kafka.h"
#include "proto/kafka/kcodec.h"

#define NODE_ID 1
#define REQ_MAX (100u << 20) /* a request larger than this ends the connection */
#define NAME_CAP 256

enum {
    K_PRODUCE = 0, K_FETCH = 1, K_LIST_OFFSETS = 2, K_METADATA = 3, K_OFFSET_COMMIT = 8,
    K_OFFSET_FETCH = 9, K_FIND_COORDINATOR = 10, K_JOIN_GROUP = 11, K_HEARTBEAT = 12,
    K_LEAVE_GROUP = 13, K_SYNC_GROUP = 14, K_DESCRIBE_GROUPS = 15, K_LIST_GROUPS = 16,
    K_API_VERSIONS = 18, K_CREATE_TOPICS = 19, K_DELETE_TOPICS = 20, K_DESCRIBE_CONFIGS = 32,
    K_DELETE_GROUPS = 42, K_SASL_HANDSHAKE = 17, K_SASL_AUTHENTICATE = 36,
};

/* Kafka error codes */
enum {
    E_NONE = 0, E_OFFSET_OUT_OF_RANGE = 1, E_CORRUPT_MESSAGE = 2, E_UNKNOWN_TOPIC = 3,
    E_MESSAGE_TOO_LARGE = 10, E_INVALID_TOPIC = 17, E_INVALID_REQUIRED_ACKS = 21,
    E_TOPIC_AUTHORIZATION_FAILED = 29,
    E_INVALID_GROUP_ID = 24, E_UNSUPPORTED_VERSION = 35, E_TOPIC_EXISTS = 36,
    E_INVALID_PARTITIONS = 37, E_INVALID_REPLICATION = 38, E_INVALID_CONFIG = 40,
    E_INVALID_REQUEST = 42, E_STORAGE = 56, E_UNSUPPORTED_COMPRESSION = 76, E_INVALID_RECORD = 87,
    E_UNSUPPORTED_SASL_MECHANISM = 33, E_ILLEGAL_SASL_STATE = 34, E_SASL_FAILED = 58,
    E_UNKNOWN = -1,
};

struct kafka_server {
    struct broker *b;
    struct tsrv *srv;
    char host[128];
    int port;
    int sasl_required;
    uint64_t mem; /* bytes of requests being read or handled, all connections */
};

/* One request being answered: its header, reader, writer and version. */
struct call {
    struct kafka_server *s;
    struct kconn *conn;
    const char *peer;
    struct kreq_hdr h;
    struct kr *r;
    struct kw *w;
    int v; /* api version */
};

/* A store error as a Kafka error code. */
int16_t kapi_err(int rc);
int64_t kapi_now_ms(void); /* wall clock, for timestamps */

/* ApiVersions' body (kafka.c), also the answer to a version we do not serve. */
void kapi_versions_body(struct kw *w, int16_t err, int v);

/* Topic names, as broker_topics collects them (kdata.c). */
struct topic_list {
    char (*names)[NAME_CAP];
    int n, cap;
};
int kapi_topic_list_cb(void *arg, const struct broker_topic *t);

/* Produce requests pipelined on one connection: the connection loop (kafka.c)
 * runs them once collecting, kapi_produce_stage (kdata.c) writes what they
 * carry, kapi_produce_commit makes it durable (on another thread, while the
 * connection reads and stages the next ones), then they run again answering
 * from the results. */
enum { PB_OFF, PB_COLLECT, PB_RESPOND };

struct pitem {
    char topic[NAME_CAP];
    int32_t part;
    uint8_t *recs;
    size_t len;
    int rc; /* 1: invalid acks */
    int64_t base;
};

/* One partition's items of a batch, staged as one append. */
struct pstage {
    struct broker_append *ba;
    int first, m; /* its items: order[first .. first + m) */
};

struct pbatch {
    int phase;
    struct pitem *items;
    int n, cap, next;
    struct pstage *stages;
    int nstages;
    int *order, *rcs; /* n each, by position in order */
    int64_t *bases;
    struct broker *held; /* the write hold the stages were made in */
};
/* Stage what a collecting pass gathered, one append per partition, inside
 * one write hold; commit the stages (in order), give each item its result
 * and release the hold. Every stage call is followed by one commit call. */
void kapi_produce_stage(struct kafka_server *s, struct pbatch *pb);
void kapi_produce_commit(struct pbatch *pb);

/* The handlers: read c->r, write the response body to c->w. */
void kapi_metadata(struct call *c); /* kdata.c */
void kapi_produce(struct call *c, int *no_reply);
void kapi_fetch(struct call *c);
void kapi_list_offsets(struct call *c);
void kapi_create_topics(struct call *c);
void kapi_delete_topics(struct call *c);
void kapi_describe_configs(struct call *c);
void kapi_find_coordinator(struct call *c); /* kgroup.c */
void kapi_offset_commit(struct call *c);
void kapi_offset_fetch(struct call *c);
void kapi_join_group(struct call *c);
void kapi_sync_group(struct call *c);
void kapi_heartbeat(struct call *c);
void kapi_leave_group(struct call *c);
void kapi_list_groups(struct call *c);
void kapi_describe_groups(struct call *c);
void kapi_delete_groups(struct call *c);
void kapi_sasl_handshake(struct call *c);
void kapi_sasl_authenticate(struct call *c, int *close_after);
/* One SASL token through the connection's mechanism; nonzero: the client must go. */
int kapi_sasl_token(struct call *c, const uint8_t *in, size_t n, uint8_t *out, size_t *outn);

#endif

/* The Kafka head: the Kafka protocol (non-flexible versions, as an Apache
 * Kafka 2.3-era broker) over the broker service. */
#ifndef PL_KAFKA_H
#define PL_KAFKA_H

#include "broker/broker.h"

#include "proto/kafka/ksasl.h"

struct kafka_server;
struct kafka_opts {
    const char *host;
    int port;
    int sasl_required; /* only ApiVersions and SASL until a client authenticates */
};
int kafka_start(struct broker *b, const struct kafka_opts *o, struct kafka_server **ret) PL_WUR;
int kafka_port(const struct kafka_server *s);
void kafka_stop(struct kafka_server *s);

/* A connection's state: who is on the other end, and SASL. */
struct pbatch;
struct kconn {
    char peer[64];
    int authed;
    char principal[64];
    int raw_sasl;   /* after SaslHandshake v0: the next frames are bare SASL tokens */
    int send_empty; /* this response is an empty frame, not no response */
    int close_after_reply;
    struct ksasl sasl;
    struct pbatch *pb; /* pipelined Produce requests written together (kafka.c) */
};

/* One request (after its 4-byte size) to a response body (after its size),
 * as the connection loop does; *ret_close when the connection must end.
 * For tests and the fuzzer: no response when w->n stays 0 (and not
 * c->send_empty). */
struct kw;
void kafka_handle(struct kafka_server *s, struct kconn *c, uint8_t *req, size_t n, struct kw *w,
                  int *ret_close);

#endif

/* The Kafka head: the Kafka protocol (non-flexible versions, as an Apache
 * Kafka 2.3-era broker) over the broker service. */
#ifndef PL_KAFKA_H
#define PL_KAFKA_H

#include "broker/broker.h"

struct kafka_server;
int kafka_start(struct broker *b, const char *host, int port, struct kafka_server **ret) PL_WUR;
int kafka_port(const struct kafka_server *s);
void kafka_stop(struct kafka_server *s);

/* One request (after its 4-byte size) to a response body (after its size),
 * as the connection loop does; *ret_close when the connection must end.
 * For tests and the fuzzer: no response when w->n stays 0. */
struct kw;
void kafka_handle(struct kafka_server *s, const char *peer, uint8_t *req, size_t n, struct kw *w,
                  int *ret_close);

#endif

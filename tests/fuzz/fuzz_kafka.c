/* libFuzzer: Kafka requests end to end through the head's dispatcher, on a
 * real store and broker in a temporary directory, and the RecordBatch
 * validator and record reader (every codec) on their own. Fetch and
 * JoinGroup wait by design (max_wait, the rebalance timeout), so the harness
 * sets Fetch's max_wait to 0 and a JoinGroup's timeouts to one second: a run
 * must not sleep. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/batch.h"
#include "broker/broker.h"
#include "fuzz_store.h"
#include "proto/kafka/kafka.h"
#include "proto/kafka/kcodec.h"

static struct kafka_server *srv;

static void setup(void)
{
    struct pl_store *st = fuzz_store_open("kafka");
    struct broker *b;
    struct broker_opts bo = {0};
    if (broker_open(st, &bo, &b) || broker_topic_create(b, "t", 2, NULL) ||
        kafka_start(b, &(struct kafka_opts){"127.0.0.1", 0, 0}, &srv))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    int count;
    int64_t records;
    if (!srv)
        setup();
    int32_t delta;
    int64_t found;
    (void)batch_validate(data, n, &count, &records);
    (void)batch_find_time(data, n, n ? data[0] : 0, &delta, &found);
    uint8_t *req = malloc(n ? n : 1);
    if (!req)
        return 0;
    memcpy(req, data, n);
    struct kr r = {req, n, 0, 0};
    struct kreq_hdr h;
    if (kr_header(&r, &h) == 0 && h.api_key == 1 && r.at + 8 <= n)
        memset(req + r.at + 4, 0, 4);
    if (!r.err && h.api_key == 11) {
        char group[256];
        kr_str(&r, group, sizeof(group), NULL);
        static const uint8_t second[4] = {0, 0, 0x03, 0xe8};
        for (int i = 0; i < (h.api_version >= 1 ? 2 : 1) && !r.err && r.at + 4 <= n; i++, r.at += 4)
            memcpy(req + r.at, second, 4);
    }
    struct kw w = {0};
    int close_it;
    struct kconn k = {.peer = "/fuzz"};
    /* half the inputs go to a connection in the middle of a SASL exchange */
    if (n && data[0] & 1) {
        k.raw_sasl = 1;
        if (ksasl_start(&k.sasl, data[0] & 2 ? "PLAIN" : "SCRAM-SHA-256"))
            abort();
    }
    kafka_handle(srv, &k, req, n, &w, &close_it);
    kw_free(&w);
    free(req);
    return 0;
}

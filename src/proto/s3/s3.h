/* The S3 head: S3 REST API over HTTP/1.1 on its own libuv loop thread;
 * store work runs on libuv's worker pool. */
#ifndef PL_S3_H
#define PL_S3_H

#include "plenum/store.h"

struct broker;

struct s3_opts {
    const char *host;
    int port;
    const char *domain; /* virtual-host style: BUCKET.domain; NULL: path style only */
    const char *region; /* reported by GetBucketLocation; default us-east-1 */
    int max_conns;
    struct broker *broker; /* bucket notifications; NULL: not offered */
};

struct s3_server;

int s3_start(struct pl_store *st, const struct s3_opts *o, struct s3_server **ret) PL_WUR;
int s3_port(const struct s3_server *s);
/* Stop accepting, finish in-flight requests, join the loop thread. */
void s3_stop(struct s3_server *s);

#endif

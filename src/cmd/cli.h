/* The plenum command line: shared pieces of the subcommands. */
#ifndef PL_CLI_H
#define PL_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "base/base.h"
#include "plenum/store.h"

#define CLI_DEFAULT_DATA "./plenum-data"

/* Where a command's operations run: in this process on an open store, or in
 * the server that holds the data directory, through its admin API. */
struct backend {
    struct pl_store *st; /* local */
    char url[300];       /* remote: http://host:port */
    const char *dir;
};

/* Open dir directly, or find the server holding it. BACKEND_CREATE: lay out
 * a new data directory when dir does not exist; BACKEND_BACKGROUND: run the
 * store's background work (for commands that stay, like mount). Prints the
 * error itself. */
#define BACKEND_CREATE 1u
#define BACKEND_BACKGROUND 2u
int backend_open(struct backend *b, const char *dir, unsigned flags) PL_WUR;
void backend_close(struct backend *b);

struct xfer {
    int in_fd;          /* body source for "put", -1 for none */
    int out_fd;         /* body sink for "get", -1 for none */
    int64_t total;      /* bytes expected, for progress (-1 unknown) */
    const char *label;  /* progress label; NULL: no progress bar */
};

/* Run op with args (takes a reference). *ret_res owned by the caller. On
 * failure returns < 0 and fills msg with the server's or store's message. */
int backend_call(struct backend *b, const char *op, json_t *args, struct xfer *x, json_t **ret_res,
                 char *msg, size_t msgn) PL_WUR;

/* Progress on stderr when it is a terminal. */
void progress_update(const char *label, uint64_t done, int64_t total, uint64_t t0_ns);
void progress_end(const char *label, uint64_t done, uint64_t t0_ns);

/* FUSE mounts served by the server for `plenum mount` (mounts.c). */
int mounts_register(void) PL_WUR;
void mounts_stop_all(void);

/* Topic and group ops over a broker (topics.c): registered once; the broker
 * they act on is the server's, or one the command opened. */
struct broker;
int topics_register(void) PL_WUR;
void topics_set_broker(struct broker *b);

/* KV cache ops (kvcmd.c): registered once; they act on the server's cache,
 * or on one the command opened. */
struct kv;
int kvcmd_register(void) PL_WUR;
void kvcmd_set(struct kv *kv);

/* Server entry point (server.c). */
int cmd_server(int argc, char **argv);
void usage_server(void);

#endif

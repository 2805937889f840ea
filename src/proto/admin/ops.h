/* Admin operations: the one implementation of every CLI action.
 *
 * The CLI runs them in-process when it owns the data directory and over the
 * admin HTTP API when a server does; both call ops_run(), so the two paths
 * cannot drift apart. Arguments and results are JSON objects; ops that move
 * object bytes stream them through struct op_io. */
#ifndef PL_ADMIN_OPS_H
#define PL_ADMIN_OPS_H

#include <jansson.h>

#include "plenum/store.h"

#define OP_BODY_IN (1u << 0)  /* reads object bytes from io->read */
#define OP_BODY_OUT (1u << 1) /* writes object bytes to io->write */

struct op_io {
    /* returns bytes read, 0 at end, < 0 error */
    ssize_t (*read)(void *ctx, void *buf, size_t n);
    /* called once before the first write with the total size (or -1) */
    int (*begin)(void *ctx, int64_t size);
    int (*write)(void *ctx, const void *buf, size_t n);
    void *ctx;
};

struct op_def {
    const char *name;
    unsigned flags;
    int (*fn)(struct pl_store *st, json_t *args, json_t *res, struct op_io *io);
};

/* Add an op defined outside this head (the server's FUSE mounts). Call
 * before serving; op must outlive the process. PL_ENOSPC past 32. */
int ops_add(const struct op_def *op) PL_WUR;
/* Find an op by name; NULL when unknown. */
const struct op_def *ops_find(const char *name);
/* Run op with args; fills *ret_res (owned, json_decref) on success; on failure
 * returns < 0 and *ret_msg (static or owned by res) may name the cause. */
int ops_run(struct pl_store *st, const struct op_def *op, json_t *args, struct op_io *io,
            json_t **ret_res) PL_WUR;
/* Number of ops, and the i-th (for metrics). */
size_t ops_count(void);
const struct op_def *ops_at(size_t i);

/* Attributes as a JSON object (owned). */
json_t *ops_attr_json(const struct pl_attr *a);

#endif

/* The plenum command line: shared pieces of the subcommands. */
#ifndef PL_CLI_H
#define PL_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "base/base.h"
#include "plenum/store.h"

#define CLI_DEFAULT_DATA "./plenum-data"

#define CLI_JOBS_DEFAULT 4 /* transfers at once in cp -r */
#define CLI_JOBS_MAX 64

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* A command line, parsed once by main for every subcommand. */
struct opts {
    const char *data;
    int json, recursive, help, now;
    int jobs; /* cp -r: transfers at once (0: CLI_JOBS_DEFAULT) */
    const char *snapshot, *content_type, *size, *object;
    const char *clients, *options;
    const char *server;
    int readonly;
    const char *partitions, *to;
    const char *configs[16];
    int nconfigs;
    const char *pos[8];
    int npos;
};

struct cmd {
    const char *name;
    int (*fn)(struct opts *o);
    const char *args;
    const char *summary;
    const char *help; /* details and an example */
};

/* The command being run, for messages (cli.c; set by main). */
extern const struct cmd *cli_cmd;

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

/* Errors in one voice (cli.c). Both print and return the exit status:
 * cli_usage_error EXIT_USAGE with the command's usage line, cli_fail
 * EXIT_FAIL with "what: msg" (or the code's text) and a hint for what to do
 * next. fmt takes one string argument. */
int cli_usage_error(const char *fmt, const char *arg);
int cli_fail(int rc, const char *what, const char *msg);

/* pl://bucket/key -> bucket (bn bytes), key: 0, -1 when s is not a plenum
 * path, -2 when the bucket is empty or too long. cli_need_plpath takes a
 * 64-byte bucket and reports the usage error itself. */
int cli_plpath(const char *s, char *bucket, size_t bn, const char **key);
int cli_need_plpath(const char *s, char *bucket, const char **key);

/* backend_open with BACKEND_CREATE on o->data: 0 or EXIT_FAIL. */
int cli_backend_open(struct opts *o, struct backend *b);

/* backend_call that reports a failure with cli_fail(what): 0 or EXIT_FAIL. */
int cli_call(struct backend *b, const char *op, json_t *args, struct xfer *x, json_t **res,
             const char *what);

void cli_print_json(json_t *j);
void cli_fmt_time(int64_t ns, char *out, size_t n); /* UTC, "YYYY-MM-DD HH:MM:SS" */

/* The verb in o->pos[0] among n, with its argument count checked: its
 * index, or -1 after a usage error (expects says what the command takes). */
int cli_pick_verb(const struct opts *o, const char *const *verbs, const int *nargs, int n,
                  const char *expects);

/* The subcommands, by file. */
int cmd_mb(struct opts *o); /* objects.c: mb and rb */
int cmd_cp(struct opts *o);
int cmd_cat(struct opts *o);
int cmd_ls(struct opts *o);
int cmd_rm(struct opts *o);
int cmd_stat(struct opts *o);
int cmd_stats(struct opts *o); /* admin.c */
int cmd_fsck(struct opts *o);
int cmd_gc(struct opts *o);
int cmd_flush(struct opts *o);
int cmd_scrub(struct opts *o);
int cmd_device(struct opts *o);
int cmd_export(struct opts *o);
int cmd_volume(struct opts *o);
int cmd_snapshot(struct opts *o);
int cmd_user(struct opts *o);
int cmd_key(struct opts *o);
int cmd_mount(struct opts *o); /* mounts.c */
int cmd_topic(struct opts *o); /* topics.c */
int cmd_group(struct opts *o);
int cmd_kv(struct opts *o);    /* kvcmd.c */

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

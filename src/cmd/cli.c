/* Shared pieces of the subcommands: errors in one voice, plenum paths, calls
 * through the backend, output helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/cli.h"

const struct cmd *cli_cmd;

int cli_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "plenum %s: ", cli_cmd->name);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: plenum %s %s (see plenum %s --help)\n", cli_cmd->name,
            cli_cmd->args, cli_cmd->name);
    return EXIT_USAGE;
}

/* One clear line: what failed and what to do next. */
int cli_fail(int rc, const char *what, const char *msg)
{
    const char *hint = "";
    switch (rc) {
    case PL_ENOBUCKET:
        hint = "; create it with 'plenum mb pl://BUCKET' or list buckets with 'plenum ls'";
        break;
    case PL_ENOSPC:
        hint = "; nothing was written: free space on the data directory's disk and retry";
        break;
    case PL_ENOTEMPTY:
        hint = "; remove its contents first (plenum rm -r pl://BUCKET/)";
        break;
    case PL_ECONFLICT:
        hint = " (a key cannot be both an object and a prefix of other keys, e.g. 'a' and "
               "'a/b')";
        break;
    case PL_ENOSNAP:
        hint = "; list them with 'plenum snapshot list'";
        break;
    case PL_ECONNREFUSED:
        hint = "; is the server still running? remove a stale server.json after a crash";
        break;
    case PL_ECORRUPT:
        hint = "; run 'plenum fsck' to see what is damaged";
        break;
    case PL_ENODEVS:
        hint = "; data stays mirrored in the buffer until devices are replaced or added "
               "(plenum device list, plenum device replace ID PATH)";
        break;
    default:
        break;
    }
    fprintf(stderr, "plenum %s: %s: %s%s\n", cli_cmd->name, what,
            msg && *msg ? msg : pl_strerror(rc), hint);
    return EXIT_FAIL;
}

/* pl://bucket/key -> bucket, key. Returns 0 when s is a plenum path. */
int cli_plpath(const char *s, char *bucket, size_t bn, const char **key)
{
    if (strncmp(s, "pl://", 5))
        return -1;
    const char *b = s + 5, *slash = strchr(b, '/');
    size_t n = slash ? (size_t)(slash - b) : strlen(b);
    if (n == 0 || n >= bn)
        return -2;
    memcpy(bucket, b, n);
    bucket[n] = 0;
    *key = slash ? slash + 1 : "";
    return 0;
}

int cli_need_plpath(const char *s, char *bucket, const char **key)
{
    int r = cli_plpath(s, bucket, 64, key);
    if (r == -1)
        return cli_usage_error("'%s' is not a plenum path (write pl://BUCKET/KEY)", s);
    if (r == -2)
        return cli_usage_error("'%s' has no valid bucket name", s);
    return 0;
}

int cli_backend_open(struct opts *o, struct backend *b)
{
    return backend_open(b, o->data, BACKEND_CREATE) ? EXIT_FAIL : 0;
}

void cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (s) {
        puts(s);
        free(s);
    }
}

int cli_call(struct backend *b, const char *op, json_t *args, struct xfer *x, json_t **res,
             const char *what)
{
    char msg[512];
    int rc = backend_call(b, op, args, x, res, msg, sizeof(msg));
    if (rc)
        return cli_fail(rc, what, msg);
    return 0;
}

void cli_fmt_time(int64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

int cli_pick_verb(const struct opts *o, const char *const *verbs, const int *nargs, int n,
                  const char *expects)
{
    int v = -1;
    for (int i = 0; o->npos && i < n; i++)
        if (!strcmp(o->pos[0], verbs[i]))
            v = i;
    if (v < 0) {
        cli_usage_error("expects %s", expects);
        return -1;
    }
    if (o->npos != 1 + nargs[v]) {
        cli_usage_error("wrong number of arguments for '%s'", verbs[v]);
        return -1;
    }
    return v;
}

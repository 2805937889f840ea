/* plenum: one binary, like git. "plenum server" runs everything; every other
 * subcommand is a tool that acts on a data directory, in-process when nothing
 * else holds it, else through the running server's admin API. */
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "cmd/cli.h"
#include "kv/kv.h"
#include "proto/fuse/fmount.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

struct opts {
    const char *data;
    int json, recursive, help, now;
    const char *snapshot, *content_type, *size;
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

static const struct cmd *cur_cmd;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "plenum %s: ", cur_cmd->name);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: plenum %s %s (see plenum %s --help)\n", cur_cmd->name,
            cur_cmd->args, cur_cmd->name);
    return EXIT_USAGE;
}

/* One clear line: what failed and what to do next. */
static int fail(int rc, const char *what, const char *msg)
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
    fprintf(stderr, "plenum %s: %s: %s%s\n", cur_cmd->name, what,
            msg && *msg ? msg : pl_strerror(rc), hint);
    return EXIT_FAIL;
}

/* pl://bucket/key -> bucket, key. Returns 0 when s is a plenum path. */
static int plpath(const char *s, char *bucket, size_t bn, const char **key)
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

static int need_plpath(const char *s, char *bucket, const char **key)
{
    int r = plpath(s, bucket, 64, key);
    if (r == -1)
        return usage_error("'%s' is not a plenum path (write pl://BUCKET/KEY)", s);
    if (r == -2)
        return usage_error("'%s' has no valid bucket name", s);
    return 0;
}

static int open_backend(struct opts *o, struct backend *b)
{
    return backend_open(b, o->data, BACKEND_CREATE) ? EXIT_FAIL : 0;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (s) {
        puts(s);
        free(s);
    }
}

static json_t *args_new(void)
{
    return json_object();
}

/* Call and handle the common failure path. */
static int call(struct backend *b, const char *op, json_t *args, struct xfer *x, json_t **res,
                const char *what)
{
    char msg[512];
    int rc = backend_call(b, op, args, x, res, msg, sizeof(msg));
    if (rc)
        return fail(rc, what, msg);
    return 0;
}

static void fmt_time(int64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

/* ---- mb / rb ---- */
static int cmd_mb(struct opts *o)
{
    char bucket[64], what[128];
    const char *key;
    struct backend b;
    json_t *res;
    if (o->npos != 1)
        return usage_error("%s", "expects one bucket");
    int r = need_plpath(o->pos[0], bucket, &key);
    if (r)
        return r;
    if (*key)
        return usage_error("'%s': a bucket path has no key", o->pos[0]);
    if (pl_bucket_name_valid(bucket)) {
        fprintf(stderr, "plenum mb: invalid bucket name '%s': use 3-63 lowercase letters, "
                        "digits, '-' and '.', starting and ending with a letter or digit\n",
                bucket);
        return EXIT_FAIL;
    }
    if (open_backend(o, &b))
        return EXIT_FAIL;
    json_t *a = args_new();
    json_object_set_new(a, "bucket", json_string(bucket));
    snprintf(what, sizeof(what), "make bucket %s", bucket);
    r = call(&b, !strcmp(cur_cmd->name, "mb") ? "mb" : "rb", a, NULL, &res, what);
    if (!r) {
        if (o->json)
            print_json(res);
        else
            printf("%s: pl://%s\n", !strcmp(cur_cmd->name, "mb") ? "created" : "removed", bucket);
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

/* ---- cp ---- */
static int put_file(struct backend *b, struct opts *o, const char *src, const char *bucket,
                    const char *key)
{
    char what[PL_PATH_MAX + 128];
    json_t *res;
    int fd = strcmp(src, "-") ? open(src, O_RDONLY | O_CLOEXEC) : 0;
    snprintf(what, sizeof(what), "copy %s to pl://%s/%s", src, bucket, key);
    if (fd < 0) {
        fprintf(stderr, "plenum cp: cannot read %s: %s\n", src, strerror(errno));
        return EXIT_FAIL;
    }
    struct stat sb;
    int64_t total = -1;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
        total = sb.st_size;
    if (fd && S_ISDIR(sb.st_mode)) {
        close(fd);
        fprintf(stderr, "plenum cp: %s is a directory; use cp -r to copy a tree\n", src);
        return EXIT_FAIL;
    }
    struct xfer x = {fd, -1, total, isatty(2) ? src : NULL};
    json_t *a = args_new();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->content_type)
        json_object_set_new(a, "content_type", json_string(o->content_type));
    int r = call(b, "put", a, &x, &res, what);
    if (fd)
        close(fd);
    if (!r) {
        if (o->json)
            print_json(res);
        else if (!isatty(2))
            printf("%s -> pl://%s/%s\n", src, bucket, key);
        json_decref(res);
    }
    return r;
}

static int mkparents(const char *path)
{
    char tmp[PL_PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    char *d = dirname(tmp);
    return pl_mkdirs(d, 0755);
}

/* Download to dst via a temporary file renamed into place: never half-written. */
static int get_file(struct backend *b, struct opts *o, const char *bucket, const char *key,
                    const char *dst)
{
    char what[PL_PATH_MAX + 128], tmp[PL_PATH_MAX + 32];
    json_t *res;
    int to_stdout = !strcmp(dst, "-");
    int fd = 1;
    snprintf(what, sizeof(what), "copy pl://%s/%s to %s", bucket, key, to_stdout ? "stdout" : dst);
    if (!to_stdout) {
        if (mkparents(dst)) {
            fprintf(stderr, "plenum %s: cannot create the directory of %s\n", cur_cmd->name, dst);
            return EXIT_FAIL;
        }
        snprintf(tmp, sizeof(tmp), "%s.plenum-part", dst);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "plenum %s: cannot write %s: %s\n", cur_cmd->name, dst,
                    strerror(errno));
            return EXIT_FAIL;
        }
    }
    struct xfer x = {-1, fd, -1, (!to_stdout && isatty(2)) ? key : NULL};
    json_t *a = args_new();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->snapshot)
        json_object_set_new(a, "snapshot", json_string(o->snapshot));
    int r = call(b, "get", a, &x, &res, what);
    if (!to_stdout) {
        if (!r && fsync(fd) < 0)
            r = fail(-errno, what, NULL);
        close(fd);
        if (!r && rename(tmp, dst) < 0)
            r = fail(-errno, what, NULL);
        if (r)
            unlink(tmp);
    }
    if (!r)
        json_decref(res);
    return r;
}

struct tree_ctx {
    struct backend *b;
    struct opts *o;
    const char *bucket;
    char prefix[PL_KEY_MAX + 1];
    int failures, files;
};

static int put_tree(struct tree_ctx *t, const char *dir, const char *rel)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "plenum cp: cannot read directory %s: %s\n", dir, strerror(errno));
        t->failures++;
        return 0;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[PL_PATH_MAX], r2[PL_PATH_MAX], key[PL_PATH_MAX + PL_KEY_MAX];
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        snprintf(r2, sizeof(r2), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        if (lstat(path, &sb) < 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            put_tree(t, path, r2);
        } else if (S_ISREG(sb.st_mode)) {
            snprintf(key, sizeof(key), "%s%s", t->prefix, r2);
            if (put_file(t->b, t->o, path, t->bucket, key))
                t->failures++;
            t->files++;
        }
    }
    closedir(d);
    return 0;
}

static int cmd_cp(struct opts *o)
{
    char sb[64], db[64];
    const char *sk, *dk;
    struct backend b;
    if (o->npos != 2)
        return usage_error("%s", "expects SRC and DST");
    int sp = plpath(o->pos[0], sb, sizeof(sb), &sk) == 0;
    int dp = plpath(o->pos[1], db, sizeof(db), &dk) == 0;
    if (!sp && !dp)
        return usage_error("%s", "one of SRC and DST must be a pl:// path");
    if ((sp && need_plpath(o->pos[0], sb, &sk)) || (dp && need_plpath(o->pos[1], db, &dk)))
        return EXIT_USAGE;
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r = 0;
    if (!sp) {
        /* local -> plenum */
        struct stat st;
        int isdir = strcmp(o->pos[0], "-") && stat(o->pos[0], &st) == 0 && S_ISDIR(st.st_mode);
        if (isdir && o->recursive) {
            struct tree_ctx t = {&b, o, db, "", 0, 0};
            snprintf(t.prefix, sizeof(t.prefix), "%s%s", dk,
                     (*dk && dk[strlen(dk) - 1] != '/') ? "/" : "");
            put_tree(&t, o->pos[0], "");
            if (!o->json)
                printf("%d files copied, %d failed\n", t.files - t.failures, t.failures);
            r = t.failures ? EXIT_FAIL : 0;
        } else {
            char key[PL_KEY_MAX + 1], tmp[PL_PATH_MAX];
            if (!*dk || dk[strlen(dk) - 1] == '/') {
                if (!strcmp(o->pos[0], "-")) {
                    backend_close(&b);
                    return usage_error("%s", "copying stdin needs a full key");
                }
                snprintf(tmp, sizeof(tmp), "%s", o->pos[0]);
                snprintf(key, sizeof(key), "%s%s", dk, basename(tmp));
            } else {
                snprintf(key, sizeof(key), "%s", dk);
            }
            r = put_file(&b, o, o->pos[0], db, key);
        }
    } else if (!dp) {
        /* plenum -> local */
        if (o->recursive) {
            char after[PL_KEY_MAX + 2] = "";
            int files = 0, failures = 0;
            for (;;) {
                json_t *a = args_new(), *res;
                json_object_set_new(a, "bucket", json_string(sb));
                json_object_set_new(a, "prefix", json_string(sk));
                json_object_set_new(a, "after", json_string(after));
                json_object_set_new(a, "recursive", json_true());
                if (o->snapshot)
                    json_object_set_new(a, "snapshot", json_string(o->snapshot));
                r = call(&b, "ls", a, NULL, &res, "list");
                if (r)
                    break;
                json_t *e, *ents = json_object_get(res, "entries");
                size_t i;
                json_array_foreach(ents, i, e)
                {
                    const char *k = json_string_value(json_object_get(e, "key"));
                    const char *ty = json_string_value(json_object_get(e, "type"));
                    if (!k || !ty || strcmp(ty, "file"))
                        continue;
                    size_t pl = strlen(sk);
                    const char *relk = k + pl;
                    if (pl && sk[pl - 1] != '/' && *relk == '/')
                        relk++;
                    char dst[PL_PATH_MAX];
                    snprintf(dst, sizeof(dst), "%s/%s", o->pos[1], relk);
                    if (get_file(&b, o, sb, k, dst))
                        failures++;
                    files++;
                }
                json_t *next = json_object_get(res, "next");
                if (json_is_string(next))
                    snprintf(after, sizeof(after), "%s", json_string_value(next));
                int more = json_is_string(next);
                json_decref(res);
                if (!more)
                    break;
            }
            if (!r && !o->json)
                printf("%d files copied, %d failed\n", files - failures, failures);
            if (!r && failures)
                r = EXIT_FAIL;
        } else {
            char dst[PL_PATH_MAX], tmp[PL_KEY_MAX + 1];
            struct stat st;
            if (strcmp(o->pos[1], "-") && stat(o->pos[1], &st) == 0 && S_ISDIR(st.st_mode)) {
                snprintf(tmp, sizeof(tmp), "%s", sk);
                snprintf(dst, sizeof(dst), "%s/%s", o->pos[1], basename(tmp));
            } else {
                snprintf(dst, sizeof(dst), "%s", o->pos[1]);
            }
            if (!*sk) {
                backend_close(&b);
                return usage_error("'%s' names a bucket; use -r to copy its objects", o->pos[0]);
            }
            r = get_file(&b, o, sb, sk, dst);
        }
    } else {
        json_t *a = args_new(), *res;
        char what[PL_KEY_MAX * 2 + 160];
        json_object_set_new(a, "src_bucket", json_string(sb));
        json_object_set_new(a, "src_key", json_string(sk));
        json_object_set_new(a, "bucket", json_string(db));
        json_object_set_new(a, "key", json_string(dk));
        snprintf(what, sizeof(what), "copy %s to %s", o->pos[0], o->pos[1]);
        r = call(&b, "copy", a, NULL, &res, what);
        if (!r) {
            if (o->json)
                print_json(res);
            json_decref(res);
        }
    }
    backend_close(&b);
    return r;
}

static int cmd_cat(struct opts *o)
{
    char bucket[64];
    const char *key;
    struct backend b;
    if (o->npos < 1)
        return usage_error("%s", "expects at least one pl://BUCKET/KEY");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r = 0;
    for (int i = 0; i < o->npos && !r; i++) {
        r = need_plpath(o->pos[i], bucket, &key);
        if (!r && !*key)
            r = usage_error("'%s' has no key", o->pos[i]);
        if (!r)
            r = get_file(&b, o, bucket, key, "-");
    }
    backend_close(&b);
    return r;
}

/* ---- ls ---- */
static int cmd_ls(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos > 1)
        return usage_error("%s", "expects at most one pl://BUCKET/PREFIX");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r;
    if (o->npos == 0) {
        r = call(&b, "buckets", args_new(), NULL, &res, "list buckets");
        if (!r) {
            if (o->json) {
                print_json(res);
            } else {
                json_t *e;
                size_t i;
                json_array_foreach(json_object_get(res, "buckets"), i, e)
                {
                    char t[32];
                    fmt_time(json_integer_value(json_object_get(e, "ctime_ns")), t, sizeof(t));
                    printf("%s  pl://%s\n", t, json_string_value(json_object_get(e, "name")));
                }
            }
            json_decref(res);
        }
        backend_close(&b);
        return r;
    }
    char bucket[64], after[PL_KEY_MAX + 2] = "";
    const char *prefix;
    r = need_plpath(o->pos[0], bucket, &prefix);
    if (r) {
        backend_close(&b);
        return r;
    }
    json_t *all = o->json ? json_array() : NULL;
    for (;;) {
        json_t *a = args_new();
        json_object_set_new(a, "bucket", json_string(bucket));
        json_object_set_new(a, "prefix", json_string(prefix));
        json_object_set_new(a, "after", json_string(after));
        if (o->recursive)
            json_object_set_new(a, "recursive", json_true());
        if (o->snapshot)
            json_object_set_new(a, "snapshot", json_string(o->snapshot));
        char what[PL_KEY_MAX + 80];
        snprintf(what, sizeof(what), "list %s", o->pos[0]);
        r = call(&b, "ls", a, NULL, &res, what);
        if (r)
            break;
        json_t *e;
        size_t i;
        json_array_foreach(json_object_get(res, "entries"), i, e)
        {
            if (all) {
                json_array_append(all, e);
                continue;
            }
            const char *k = json_string_value(json_object_get(e, "key"));
            if (json_is_true(json_object_get(e, "prefix"))) {
                printf("%30s %s\n", "PRE", k);
            } else {
                char t[32];
                fmt_time(json_integer_value(json_object_get(e, "mtime_ns")), t, sizeof(t));
                printf("%s %12lld %s\n", t,
                       (long long)json_integer_value(json_object_get(e, "size")), k);
            }
        }
        json_t *next = json_object_get(res, "next");
        int more = json_is_string(next);
        if (more)
            snprintf(after, sizeof(after), "%s", json_string_value(next));
        json_decref(res);
        if (!more)
            break;
    }
    if (all) {
        if (!r) {
            json_t *out = json_pack("{s:o}", "entries", all);
            print_json(out);
            json_decref(out);
        } else {
            json_decref(all);
        }
    }
    backend_close(&b);
    return r;
}

static int cmd_rm(struct opts *o)
{
    char bucket[64], what[PL_KEY_MAX + 80];
    const char *key;
    struct backend b;
    json_t *res;
    if (o->npos != 1)
        return usage_error("%s", "expects one pl://BUCKET/KEY");
    int r = need_plpath(o->pos[0], bucket, &key);
    if (r)
        return r;
    if (!*key && !o->recursive)
        return usage_error("'%s' names a bucket: use 'plenum rb' or rm -r", o->pos[0]);
    if (open_backend(o, &b))
        return EXIT_FAIL;
    json_t *a = args_new();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->recursive)
        json_object_set_new(a, "recursive", json_true());
    snprintf(what, sizeof(what), "remove %s", o->pos[0]);
    r = call(&b, "rm", a, NULL, &res, what);
    if (!r) {
        if (o->json)
            print_json(res);
        else
            printf("removed %lld object(s)\n",
                   (long long)json_integer_value(json_object_get(res, "deleted")));
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static int cmd_stat(struct opts *o)
{
    char bucket[64], what[PL_KEY_MAX + 80];
    const char *key;
    struct backend b;
    json_t *res;
    if (o->npos != 1)
        return usage_error("%s", "expects one pl://BUCKET[/KEY]");
    int r = need_plpath(o->pos[0], bucket, &key);
    if (r)
        return r;
    if (open_backend(o, &b))
        return EXIT_FAIL;
    json_t *a = args_new();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->snapshot)
        json_object_set_new(a, "snapshot", json_string(o->snapshot));
    snprintf(what, sizeof(what), "stat %s", o->pos[0]);
    r = call(&b, "stat", a, NULL, &res, what);
    if (!r) {
        json_t *ob = json_object_get(res, "object");
        if (o->json) {
            print_json(ob ? ob : json_object_get(res, "bucket"));
        } else if (ob) {
            char t[32];
            fmt_time(json_integer_value(json_object_get(ob, "mtime_ns")), t, sizeof(t));
            printf("path:         %s\ntype:         %s\nsize:         %lld\netag:         %s\n"
                   "content-type: %s\nmodified:     %s UTC\nelement id:   %lld\n",
                   o->pos[0], json_string_value(json_object_get(ob, "type")),
                   (long long)json_integer_value(json_object_get(ob, "size")),
                   json_string_value(json_object_get(ob, "etag")),
                   json_string_value(json_object_get(ob, "content_type")), t,
                   (long long)json_integer_value(json_object_get(ob, "id")));
        } else {
            json_t *bu = json_object_get(res, "bucket");
            char t[32];
            fmt_time(json_integer_value(json_object_get(bu, "ctime_ns")), t, sizeof(t));
            printf("bucket:  pl://%s\ncreated: %s UTC\n", bucket, t);
        }
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static void print_bytes_line(json_t *res, const char *name, const char *label)
{
    char v[32];
    pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(res, name)), v, sizeof(v));
    printf("%-32s %s\n", label, v);
}

static int cmd_stats(struct opts *o)
{
    struct backend b;
    json_t *res;
    char bucket[64] = "";
    const char *key = "";
    if (o->npos > 1)
        return usage_error("%s", "takes at most one pl://BUCKET");
    if (o->npos == 1) {
        int r = need_plpath(o->pos[0], bucket, &key);
        if (r)
            return r;
    }
    if (open_backend(o, &b))
        return EXIT_FAIL;
    json_t *a = args_new();
    if (bucket[0])
        json_object_set_new(a, "bucket", json_string(bucket));
    int r = call(&b, "stats", a, NULL, &res, "read statistics");
    if (!r) {
        if (o->json) {
            print_json(res);
        } else {
            if (bucket[0])
                printf("%-32s %lld\n", "objects",
                       (long long)json_integer_value(json_object_get(res, "objects")));
            print_bytes_line(res, "logical_bytes", "logical");
            print_bytes_line(res, "unique_bytes", "unique (after dedup)");
            print_bytes_line(res, "stored_bytes", "stored (zstd, deltas)");
            if (!bucket[0]) {
                print_bytes_line(res, "staged_bytes", "  staged (not yet encoded)");
                print_bytes_line(res, "physical_bytes", "physical (on disk, all copies)");
                print_bytes_line(res, "free_bytes", "free");
            }
            printf("%-32s %.2fx\n%-32s %.2fx\n%-32s %.2fx (%lld delta chunks)\n%-32s %.2fx\n",
                   "dedup ratio", json_real_value(json_object_get(res, "dedup_ratio")),
                   "compression ratio", json_real_value(json_object_get(res, "compression_ratio")),
                   "similarity ratio", json_real_value(json_object_get(res, "similarity_ratio")),
                   (long long)json_integer_value(json_object_get(res, "delta_chunks")),
                   "reduction (logical / stored)",
                   json_real_value(json_object_get(res, "reduction_ratio")));
        }
        if (!o->json && !bucket[0]) {
            json_t *ec = json_object_get(res, "ec"), *sc = json_object_get(res, "scrub");
            printf("%-32s %lld\n%-32s %lld\n", "elements",
                   (long long)json_integer_value(json_object_get(res, "elements")), "chunks",
                   (long long)json_integer_value(json_object_get(res, "chunks")));
            printf("%-32s %lld+%lld, %lld stripes, %lld buffer segments\n"
                   "%-32s %lld degraded reads, %lld strips repaired\n"
                   "%-32s %lld checked, %lld repaired, %lld unrecoverable\n",
                   "erasure coding", (long long)json_integer_value(json_object_get(ec, "k")),
                   (long long)json_integer_value(json_object_get(ec, "m")),
                   (long long)json_integer_value(json_object_get(res, "stripes")),
                   (long long)json_integer_value(json_object_get(res, "buffer_segments")),
                   "self-healing",
                   (long long)json_integer_value(json_object_get(res, "degraded_reads")),
                   (long long)json_integer_value(json_object_get(res, "strips_repaired")),
                   "scrub (since start)",
                   (long long)json_integer_value(json_object_get(sc, "checked")),
                   (long long)json_integer_value(json_object_get(sc, "repaired")),
                   (long long)json_integer_value(json_object_get(sc, "unrecoverable")));
        }
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

/* Progress of a long operation counted in steps; arg is its label. */
static void step_progress(void *arg, uint64_t done, uint64_t total)
{
    if (!isatty(2))
        return;
    fprintf(stderr, "\r%s: %llu/%llu (%llu%%)   ", (const char *)arg, (unsigned long long)done,
            (unsigned long long)total,
            (unsigned long long)(total ? done * 100 / total : 100));
}

static void fsck_progress(void *arg, uint64_t done, uint64_t total)
{
    (void)arg; /* fsck's arg is its problem list */
    step_progress("fsck", done, total);
}

static void fsck_problem(void *arg, const char *where, const char *what)
{
    json_array_append_new(arg, json_pack("{s:s, s:s}", "where", where, "what", what));
}

static int cmd_fsck(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    if (o->npos)
        return usage_error("%s", "takes no arguments");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r;
    if (b.st) {
        /* in-process: show progress while it walks */
        json_t *probs = json_array();
        int n = pl_store_fsck(b.st, fsck_problem, isatty(2) ? fsck_progress : NULL, probs);
        if (isatty(2))
            fprintf(stderr, "\n");
        if (n < 0) {
            json_decref(probs);
            backend_close(&b);
            return fail(n, "check", NULL);
        }
        res = json_pack("{s:o, s:i}", "problems", probs, "count", n);
        r = 0;
    } else {
        r = call(&b, "fsck", args_new(), NULL, &res, "check");
    }
    if (!r) {
        json_int_t count = json_integer_value(json_object_get(res, "count"));
        if (o->json) {
            print_json(res);
        } else {
            json_t *e;
            size_t i;
            json_array_foreach(json_object_get(res, "problems"), i, e)
                printf("%s: %s\n", json_string_value(json_object_get(e, "where")),
                       json_string_value(json_object_get(e, "what")));
            printf(count ? "fsck: %lld problem(s) found\n" : "fsck: clean\n", (long long)count);
        }
        if (count)
            r = EXIT_FAIL;
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static int cmd_gc(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos)
        return usage_error("%s", "takes no arguments");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r = call(&b, "gc", args_new(), NULL, &res, "collect garbage");
    if (!r) {
        char v[32];
        pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(res, "freed_bytes")), v,
                     sizeof(v));
        if (o->json)
            print_json(res);
        else
            printf("gc: freed %s\n", v);
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static int cmd_flush(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos)
        return usage_error("%s", "takes no arguments");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r = 0;
    if (b.st) {
        /* in-process: show progress while it writes stripes */
        r = pl_store_flush(b.st, isatty(2) ? step_progress : NULL, "destage");
        if (isatty(2))
            fprintf(stderr, "\n");
        if (r)
            r = fail(r, "destage", NULL);
    }
    if (!r)
        r = call(&b, "flush", args_new(), NULL, &res, "destage");
    if (!r) {
        if (o->json)
            print_json(res);
        else
            printf("flush: everything is on stripes (%lld stripes)\n",
                   (long long)json_integer_value(json_object_get(res, "stripes")));
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static int cmd_scrub(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos)
        return usage_error("%s", "takes no arguments");
    if (!o->now)
        return usage_error("%s", "the server scrubs in the background; say --now to scrub now");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    int r = call(&b, "scrub", args_new(), NULL, &res, "scrub");
    if (!r) {
        json_int_t bad = json_integer_value(json_object_get(res, "unrecoverable"));
        if (o->json)
            print_json(res);
        else
            printf("scrub: %lld checked, %lld repaired, %lld unrecoverable\n",
                   (long long)json_integer_value(json_object_get(res, "checked")),
                   (long long)json_integer_value(json_object_get(res, "repaired")), (long long)bad);
        if (bad)
            r = EXIT_FAIL;
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static void device_print(json_t *d, int status)
{
    char sz[32];
    pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(d, "bytes")), sz, sizeof(sz));
    printf("%-4lld %-9s %-11s %8lld %10s  %s\n", (long long)json_integer_value(json_object_get(d, "id")),
           json_string_value(json_object_get(d, "role")),
           json_string_value(json_object_get(d, "state")),
           (long long)json_integer_value(json_object_get(d, "strips")), sz,
           json_string_value(json_object_get(d, "path")));
    json_int_t total = json_integer_value(json_object_get(d, "rebuild_total"));
    if (status && total) {
        json_int_t done = json_integer_value(json_object_get(d, "rebuild_done"));
        double rate = json_real_value(json_object_get(d, "rebuild_bytes_per_s"));
        char rs[32];
        pl_fmt_bytes((uint64_t)rate, rs, sizeof(rs));
        printf("     rebuilding: %lld of %lld strips (%lld%%), %s/s", (long long)done,
               (long long)total, (long long)(done * 100 / total), rs);
        if (done && rate > 0) {
            double bytes_left = (double)json_integer_value(json_object_get(d, "bytes")) *
                                (double)(total - done) / (double)total;
            printf(", about %.0f s left", bytes_left / rate);
        }
        printf("\n");
    }
}

/* The verb in pos[0] among n, with its argument count checked: its index,
 * or -1 after a usage error (expects says what the command takes). */
static int pick_verb(const struct opts *o, const char *const *verbs, const int *nargs, int n,
                     const char *expects)
{
    int v = -1;
    for (int i = 0; o->npos && i < n; i++)
        if (!strcmp(o->pos[0], verbs[i]))
            v = i;
    if (v < 0) {
        usage_error("expects %s", expects);
        return -1;
    }
    if (o->npos != 1 + nargs[v]) {
        usage_error("wrong number of arguments for '%s'", verbs[v]);
        return -1;
    }
    return v;
}

static int cmd_device(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    static const char *const verbs[] = {"list", "status", "fail", "add", "replace", "remove"};
    static const int nargs[] = {0, 0, 1, 1, 2, 1};
    int v = pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                      "list, status, fail ID, add PATH, replace ID PATH or remove ID");
    if (v < 0)
        return EXIT_USAGE;
    if (open_backend(o, &b))
        return EXIT_FAIL;
    json_t *a = args_new();
    char what[600];
    snprintf(what, sizeof(what), "device %s%s%s%s%s", verbs[v], o->npos > 1 ? " " : "",
             o->npos > 1 ? o->pos[1] : "", o->npos > 2 ? " " : "", o->npos > 2 ? o->pos[2] : "");
    int r;
    if (v <= 1) {
        r = call(&b, "device-list", a, NULL, &res, what);
        if (!r && o->json) {
            print_json(res);
        } else if (!r) {
            json_t *d;
            size_t i;
            printf("%-4s %-9s %-11s %8s %10s  %s\n", "ID", "ROLE", "STATE", "STRIPS", "SIZE",
                   "PATH");
            json_array_foreach(json_object_get(res, "devices"), i, d)
                device_print(d, v == 1);
            if (v == 1) {
                json_t *l = json_object_get(res, "layout");
                printf("\nstripes: %lld+%lld, %lld stripes, %lld segments in the buffer\n"
                       "degraded reads: %lld, unrecoverable reads: %lld, strips repaired: %lld\n",
                       (long long)json_integer_value(json_object_get(l, "k")),
                       (long long)json_integer_value(json_object_get(l, "m")),
                       (long long)json_integer_value(json_object_get(res, "stripes")),
                       (long long)json_integer_value(json_object_get(res, "buffer_segments")),
                       (long long)json_integer_value(json_object_get(res, "degraded_reads")),
                       (long long)json_integer_value(json_object_get(res, "unrecoverable_reads")),
                       (long long)json_integer_value(json_object_get(res, "strips_repaired")));
            }
        }
    } else {
        static const char *const ops[] = {"", "", "device-fail", "device-add", "device-replace",
                                          "device-remove"};
        if (v == 3) {
            json_object_set_new(a, "path", json_string(o->pos[1]));
        } else {
            json_object_set_new(a, "id", json_string(o->pos[1]));
            if (v == 4)
                json_object_set_new(a, "path", json_string(o->pos[2]));
        }
        if (v == 4 && b.st)
            json_object_set_new(a, "wait", json_true()); /* no server to rebuild later */
        r = call(&b, ops[v], a, NULL, &res, what);
        if (!r && o->json) {
            print_json(res);
        } else if (!r) {
            if (v == 3)
                printf("device %lld added: new stripes use it\n",
                       (long long)json_integer_value(json_object_get(res, "id")));
            else if (v == 4)
                printf(b.st ? "device %s replaced and rebuilt\n"
                            : "device %s replaced; rebuilding in the background (plenum device "
                              "status shows progress)\n",
                       o->pos[1]);
            else
                printf("ok: %s\n", what);
        }
    }
    json_decref(res);
    backend_close(&b);
    return r;
}

static int cmd_export(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    static const char *const verbs[] = {"add", "list", "remove"};
    static const int nargs[] = {1, 0, 1};
    int v = pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                      "add /BUCKET[/PATH] [--clients CIDR] [--options OPTS], list, or remove "
                      "/BUCKET[/PATH] [--clients CIDR]");
    if (v < 0)
        return EXIT_USAGE;
    if (open_backend(o, &b))
        return EXIT_FAIL;
    static const char *const ops[] = {"export-add", "export-list", "export-remove"};
    json_t *a = args_new();
    if (v != 1)
        json_object_set_new(a, "path", json_string(o->pos[1]));
    if (o->clients)
        json_object_set_new(a, "clients", json_string(o->clients));
    if (o->options)
        json_object_set_new(a, "options", json_string(o->options));
    char what[400];
    snprintf(what, sizeof(what), "export %s%s%s", verbs[v], o->npos > 1 ? " " : "",
             o->npos > 1 ? o->pos[1] : "");
    int r = call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        print_json(res);
    } else if (!r && v == 1) {
        json_t *e;
        size_t i;
        if (json_array_size(json_object_get(res, "exports")) == 0)
            printf("no export rules: every bucket is exported as /BUCKET to loopback clients, "
                   "read-write\n");
        else
            printf("%-32s %-18s %-3s %-6s %s\n", "PATH", "CLIENTS", "RW", "SQUASH", "ANON");
        json_array_foreach(json_object_get(res, "exports"), i, e)
        {
            printf("%-32s %-18s %-3s %-6s %lld:%lld\n",
                   json_string_value(json_object_get(e, "path")),
                   json_string_value(json_object_get(e, "clients")),
                   json_is_true(json_object_get(e, "readonly")) ? "ro" : "rw",
                   json_string_value(json_object_get(e, "squash")),
                   (long long)json_integer_value(json_object_get(e, "anon_uid")),
                   (long long)json_integer_value(json_object_get(e, "anon_gid")));
        }
    } else if (!r) {
        printf("ok: %s\n", what);
    }
    json_decref(res);
    backend_close(&b);
    return r;
}

static int cmd_volume(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    static const char *const verbs[] = {"create", "list", "resize", "delete", "snapshot", "clone"};
    static const int nargs[] = {1, 0, 1, 1, 2, 2};
    int v = pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                      "create NAME --size N, list, resize NAME --size N, delete NAME, "
                      "snapshot NAME SNAP or clone SOURCE NAME");
    if (v < 0)
        return EXIT_USAGE;
    if ((v == 0 || v == 2) && !o->size)
        return usage_error("%s", "needs --size (bytes, or with K, M, G, T)");
    if (open_backend(o, &b))
        return EXIT_FAIL;
    static const char *const ops[] = {"volume-create", "volume-list", "volume-resize",
                                      "volume-delete", "volume-snapshot", "volume-clone"};
    json_t *a = args_new();
    if (v == 5) {
        json_object_set_new(a, "source", json_string(o->pos[1]));
        json_object_set_new(a, "name", json_string(o->pos[2]));
    } else if (v != 1) {
        json_object_set_new(a, "name", json_string(o->pos[1]));
        if (v == 4)
            json_object_set_new(a, "snapshot", json_string(o->pos[2]));
    }
    if (o->size)
        json_object_set_new(a, "size", json_string(o->size));
    char what[400];
    snprintf(what, sizeof(what), "volume %s%s%s", verbs[v], o->npos > 1 ? " " : "",
             o->npos > 1 ? o->pos[1] : "");
    int r = call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        print_json(res);
    } else if (!r && v == 1) {
        json_t *e;
        size_t i;
        printf("%-32s %12s  %s\n", "NAME", "SIZE", "MODE");
        json_array_foreach(json_object_get(res, "volumes"), i, e)
        {
            char sz[32];
            pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(e, "size")), sz, sizeof(sz));
            printf("%-32s %12s  %s\n", json_string_value(json_object_get(e, "name")), sz,
                   json_is_true(json_object_get(e, "readonly")) ? "ro" : "rw");
        }
    } else if (!r) {
        json_t *vol = json_object_get(res, "volume");
        if (vol)
            printf("volume %s: %lld bytes%s (nbd://HOST:PORT/%s)\n",
                   json_string_value(json_object_get(vol, "name")),
                   (long long)json_integer_value(json_object_get(vol, "size")),
                   json_is_true(json_object_get(vol, "readonly")) ? ", read-only" : "",
                   json_string_value(json_object_get(vol, "name")));
        else
            printf("ok: %s\n", what);
    }
    json_decref(res);
    backend_close(&b);
    return r;
}

/* snapshot / user / key: VERB [ARG] mapped onto ops */
struct verb {
    const char *verb, *op, *argname;
    int nargs; /* 0, 1, or -1 optional */
};

static int cmd_verbs(struct opts *o, const struct verb *vs, size_t nv, const char *listkey)
{
    struct backend b;
    json_t *res;
    if (o->npos < 1)
        return usage_error("%s", "expects a verb");
    const struct verb *v = NULL;
    for (size_t i = 0; i < nv; i++)
        if (!strcmp(vs[i].verb, o->pos[0]))
            v = &vs[i];
    if (!v)
        return usage_error("unknown verb '%s'", o->pos[0]);
    if ((v->nargs == 1 && o->npos != 2) || (v->nargs == 0 && o->npos != 1) ||
        (v->nargs == -1 && o->npos > 2))
        return usage_error("wrong number of arguments for '%s'", v->verb);
    if (open_backend(o, &b))
        return EXIT_FAIL;
    json_t *a = args_new();
    if (o->npos == 2)
        json_object_set_new(a, v->argname, json_string(o->pos[1]));
    char what[300];
    snprintf(what, sizeof(what), "%s %s%s%s", cur_cmd->name, v->verb, o->npos == 2 ? " " : "",
             o->npos == 2 ? o->pos[1] : "");
    int r = call(&b, v->op, a, NULL, &res, what);
    if (!r) {
        json_t *list = json_object_get(res, listkey);
        if (o->json) {
            print_json(res);
        } else if (list && json_is_array(list)) {
            json_t *e;
            size_t i;
            json_array_foreach(list, i, e)
            {
                const char *k;
                json_t *val;
                int first = 1;
                json_object_foreach(e, k, val)
                {
                    if (json_is_string(val))
                        printf("%s%s", first ? "" : "  ", json_string_value(val));
                    else if (!strcmp(k, "ctime_ns")) {
                        char t[32];
                        fmt_time(json_integer_value(val), t, sizeof(t));
                        printf("%s%s", first ? "" : "  ", t);
                    } else if (json_is_integer(val))
                        printf("%s%s=%lld", first ? "" : "  ", k,
                               (long long)json_integer_value(val));
                    first = 0;
                }
                printf("\n");
            }
        } else if (json_object_get(res, "secret_key")) {
            printf("access key: %s\nsecret key: %s\n(the secret is shown only now)\n",
                   json_string_value(json_object_get(res, "access_key")),
                   json_string_value(json_object_get(res, "secret_key")));
        } else {
            printf("ok: %s\n", what);
        }
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

static int cmd_snapshot(struct opts *o)
{
    static const struct verb vs[] = {{"create", "snapshot-create", "name", 1},
                                     {"list", "snapshot-list", "name", 0},
                                     {"delete", "snapshot-delete", "name", 1}};
    return cmd_verbs(o, vs, PL_ARRAY_LEN(vs), "snapshots");
}

static int cmd_user(struct opts *o)
{
    static const struct verb vs[] = {{"create", "user-create", "name", 1},
                                     {"list", "user-list", "name", 0},
                                     {"delete", "user-delete", "name", 1}};
    return cmd_verbs(o, vs, PL_ARRAY_LEN(vs), "users");
}

static int cmd_key(struct opts *o)
{
    static const struct verb vs[] = {{"create", "key-create", "user", 1},
                                     {"list", "key-list", "user", -1},
                                     {"revoke", "key-revoke", "access_key", 1}};
    return cmd_verbs(o, vs, PL_ARRAY_LEN(vs), "keys");
}

/* ---- mount ----
 * With the data directory to itself, the command serves the mount; when a
 * server holds it (or --server names one), the server does, and the command
 * stays until the mount ends so that Ctrl-C or SIGTERM can end it. */
static int mount_wait_signal(const sigset_t *sigs, int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    return sigtimedwait(sigs, NULL, &ts) > 0;
}

static int mount_remote(struct backend *b, const char *path, const char *mp, int readonly,
                        const sigset_t *sigs)
{
    char what[PL_PATH_MAX * 2];
    json_t *res;
    snprintf(what, sizeof(what), "mount %s at %s", path, mp);
    json_t *a = args_new();
    json_object_set_new(a, "path", json_string(path));
    json_object_set_new(a, "mountpoint", json_string(mp));
    json_object_set_new(a, "readonly", json_boolean(readonly));
    if (call(b, "mount", a, NULL, &res, what))
        return EXIT_FAIL;
    json_decref(res);
    printf("mounted pl:/%s at %s (served by %s; stop with Ctrl-C or fusermount3 -u %s)\n", path,
           mp, b->url, mp);
    fflush(stdout);
    for (;;) {
        if (mount_wait_signal(sigs, 1000)) {
            a = args_new();
            json_object_set_new(a, "mountpoint", json_string(mp));
            int r = call(b, "umount", a, NULL, &res, what);
            if (!r)
                json_decref(res);
            return r;
        }
        char msg[256];
        if (backend_call(b, "mount-list", args_new(), NULL, &res, msg, sizeof(msg))) {
            fprintf(stderr, "plenum mount: lost the server (%s); %s is no longer served\n", msg,
                    mp);
            return EXIT_FAIL;
        }
        int found = 0;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(res, "mounts"), i, e)
        {
            const char *p = json_string_value(json_object_get(e, "mountpoint"));
            found |= p && !strcmp(p, mp);
        }
        json_decref(res);
        if (!found)
            return 0; /* unmounted with fusermount3 -u */
    }
}

static int cmd_mount(struct opts *o)
{
    char path[PL_PATH_MAX], mp[PATH_MAX], bucket[64];
    struct backend b = {0};
    struct stat sb;
    if (o->npos != 2)
        return usage_error("%s", "expects BUCKET[/PATH] and MOUNTPOINT");
    const char *src = o->pos[0];
    if (!strncmp(src, "pl://", 5))
        src += 5;
    while (*src == '/')
        src++;
    size_t bl = strcspn(src, "/");
    if (bl >= sizeof(bucket) || snprintf(path, sizeof(path), "/%s", src) >= (int)sizeof(path))
        return usage_error("'%s' is too long", o->pos[0]);
    memcpy(bucket, src, bl);
    bucket[bl] = 0;
    if (pl_bucket_name_valid(bucket))
        return usage_error("'%s' does not start with a valid bucket name", o->pos[0]);
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
        path[n - 1] = 0;
    errno = 0;
    if (!realpath(o->pos[1], mp) || stat(mp, &sb) || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "plenum mount: mount point %s: %s; create the directory first (mkdir -p %s)\n",
                o->pos[1], errno ? strerror(errno) : "not a directory", o->pos[1]);
        return EXIT_FAIL;
    }
    /* signals are taken with sigtimedwait, in every thread started from here on */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (o->server) {
        snprintf(b.url, sizeof(b.url), "http://%s", o->server);
    } else if (backend_open(&b, o->data, BACKEND_BACKGROUND)) {
        return EXIT_FAIL;
    }
    if (!b.st)
        return mount_remote(&b, path, mp, o->readonly, &sigs);
    struct fmount *m;
    struct fmount_opts fo = {.readonly = o->readonly};
    int rc = fmount_start(b.st, path, mp, &fo, &m);
    if (rc) {
        char what[PL_PATH_MAX * 2];
        snprintf(what, sizeof(what), "mount %s at %s", path, mp);
        backend_close(&b);
        return fail(rc, what, rc == PL_EIO ? "the kernel refused the mount (is /dev/fuse there, "
                                             "and is fusermount3 installed?)"
                                           : NULL);
    }
    printf("mounted pl:/%s at %s (stop with Ctrl-C or fusermount3 -u %s)\n", path, mp, mp);
    fflush(stdout);
    while (!fmount_ended(m) && !mount_wait_signal(&sigs, 200))
        ;
    fmount_stop(m);
    backend_close(&b);
    return 0;
}

/* ---- topic / group ----
 * Through the server's broker when a server holds the data directory; else
 * a broker opened here for the one call. */
static int broker_backend(struct opts *o, struct backend *b, struct broker **ret)
{
    *ret = NULL;
    if (topics_register())
        return EXIT_FAIL; /* only when called twice in one process */
    if (open_backend(o, b))
        return EXIT_FAIL;
    if (!b->st)
        return 0;
    struct broker_opts bo = {0};
    int rc = broker_open(b->st, &bo, ret);
    if (rc) {
        backend_close(b);
        return fail(rc, "open the broker", NULL);
    }
    topics_set_broker(*ret);
    return 0;
}

static void broker_backend_close(struct backend *b, struct broker *br)
{
    topics_set_broker(NULL);
    broker_close(br);
    backend_close(b);
}

/* `plenum kv`: the server's cache, or the flash tier of the data directory. */
static int cmd_kv(struct opts *o)
{
    static const char *const verbs[] = {"stats", "flush", "flush", "config"};
    static const int nargs[] = {0, 0, 1, 2};
    int v = -1;
    for (int i = 0; o->npos && i < (int)PL_ARRAY_LEN(verbs); i++)
        if (!strcmp(o->pos[0], verbs[i]) && o->npos == 1 + nargs[i])
            v = i;
    if (v < 0)
        return usage_error("expects %s", "stats, flush [NAMESPACE] or config DRAM_MB FLASH_MB");
    json_t *a = args_new();
    if (v == 2)
        json_object_set_new(a, "namespace", json_string(o->pos[1]));
    if (v == 3) {
        char *e1, *e2;
        long long d = strtoll(o->pos[1], &e1, 10), f = strtoll(o->pos[2], &e2, 10);
        if (*e1 || *e2 || d < 0 || f < 0) {
            char bad[200];
            snprintf(bad, sizeof(bad), "%s %s", o->pos[1], o->pos[2]);
            json_decref(a);
            return usage_error("config wants two sizes in MiB (0 keeps one), not '%s'", bad);
        }
        json_object_set_new(a, "dram_mb", json_integer(d));
        json_object_set_new(a, "flash_mb", json_integer(f));
    }
    struct backend b;
    struct kv *kv = NULL;
    if (kvcmd_register() || open_backend(o, &b)) {
        json_decref(a);
        return EXIT_FAIL;
    }
    if (b.st && v == 3) {
        json_decref(a);
        backend_close(&b);
        return usage_error("%s", "config changes a running server's cache: start the server "
                                 "(the [kv] section of its config file sets the bounds at start)");
    }
    if (b.st) {
        int rc = kv_open(b.st, &(struct kv_opts){0, 0}, &kv);
        if (rc) {
            json_decref(a);
            backend_close(&b);
            return fail(rc, "open the KV cache", NULL);
        }
        kvcmd_set(kv);
    }
    static const char *const ops[] = {"kv-stats", "kv-flush", "kv-flush", "kv-config"};
    json_t *res = NULL;
    int r = call(&b, ops[v], a, NULL, &res, "kv");
    if (!r && (o->json || v != 2)) {
        if (o->json) {
            print_json(res);
        } else {
            const char *k;
            json_t *val;
            json_object_foreach(res, k, val)
            printf("%-16s %lld\n", k, (long long)json_integer_value(val));
        }
    }
    json_decref(res);
    kvcmd_set(NULL);
    kv_close(kv);
    backend_close(&b);
    return r ? EXIT_FAIL : 0;
}

static int cmd_topic(struct opts *o)
{
    static const char *const verbs[] = {"create", "list", "describe", "delete"};
    static const int nargs[] = {1, 0, 1, 1};
    int v = pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                      "create NAME [--partitions N] [--config K=V]..., list, describe NAME or "
                      "delete NAME");
    if (v < 0)
        return EXIT_USAGE;
    json_t *a = args_new();
    if (v != 1)
        json_object_set_new(a, "name", json_string(o->pos[1]));
    if (v == 0) {
        char *end = NULL;
        long parts = o->partitions ? strtol(o->partitions, &end, 10) : 1;
        if (o->partitions && (*end || parts < 1 || parts > BROKER_PARTS_MAX)) {
            json_decref(a);
            return usage_error("--partitions '%s': give 1..1024", o->partitions);
        }
        json_object_set_new(a, "partitions", json_integer(parts));
        json_t *cfg = json_object();
        for (int i = 0; i < o->nconfigs; i++) {
            const char *eq = strchr(o->configs[i], '=');
            if (!eq || eq == o->configs[i]) {
                json_decref(cfg);
                json_decref(a);
                return usage_error("--config '%s': write NAME=VALUE", o->configs[i]);
            }
            char k[128];
            snprintf(k, sizeof(k), "%.*s", (int)(eq - o->configs[i]), o->configs[i]);
            json_object_set_new(cfg, k, json_string(eq + 1));
        }
        json_object_set_new(a, "configs", cfg);
    }
    struct backend b;
    struct broker *br;
    if (broker_backend(o, &b, &br)) {
        json_decref(a);
        return EXIT_FAIL;
    }
    static const char *const ops[] = {"topic-create", "topic-list", "topic-describe",
                                      "topic-delete"};
    char what[400];
    json_t *res = NULL;
    snprintf(what, sizeof(what), "topic %s%s%s", verbs[v], v != 1 ? " " : "",
             v != 1 ? o->pos[1] : "");
    int r = call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        print_json(res);
    } else if (!r && v == 1) {
        json_t *e;
        size_t i;
        printf("%-40s %10s %14s\n", "TOPIC", "PARTITIONS", "RETENTION_MS");
        json_array_foreach(json_object_get(res, "topics"), i, e)
        printf("%-40s %10lld %14lld\n", json_string_value(json_object_get(e, "name")),
               (long long)json_integer_value(json_object_get(e, "partitions")),
               (long long)json_integer_value(json_object_get(e, "retention_ms")));
    } else if (!r && v == 2) {
        json_t *t = json_object_get(res, "topic"), *e;
        size_t i;
        printf("topic %s: %lld partitions, retention.ms %lld, retention.bytes %lld, "
               "segment.bytes %lld\n",
               json_string_value(json_object_get(t, "name")),
               (long long)json_integer_value(json_object_get(t, "partitions")),
               (long long)json_integer_value(json_object_get(t, "retention_ms")),
               (long long)json_integer_value(json_object_get(t, "retention_bytes")),
               (long long)json_integer_value(json_object_get(t, "segment_bytes")));
        printf("%10s %14s %14s %14s %9s\n", "PARTITION", "LOG_START", "NEXT_OFFSET", "BYTES",
               "SEGMENTS");
        json_array_foreach(json_object_get(res, "partitions"), i, e)
        printf("%10lld %14lld %14lld %14lld %9lld\n",
               (long long)json_integer_value(json_object_get(e, "partition")),
               (long long)json_integer_value(json_object_get(e, "log_start")),
               (long long)json_integer_value(json_object_get(e, "next_offset")),
               (long long)json_integer_value(json_object_get(e, "bytes")),
               (long long)json_integer_value(json_object_get(e, "segments")));
    } else if (!r) {
        printf("%s: %s\n", v == 0 ? "created" : "deleted", o->pos[1]);
    }
    json_decref(res);
    broker_backend_close(&b, br);
    return r;
}

static int cmd_group(struct opts *o)
{
    static const char *const verbs[] = {"list", "describe", "reset-offsets"};
    static const int nargs[] = {0, 1, 2};
    int v = pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                      "list, describe GROUP or reset-offsets GROUP TOPIC --to "
                      "earliest|latest|OFFSET");
    if (v < 0)
        return EXIT_USAGE;
    if (v == 2 && !o->to)
        return usage_error("%s", "needs --to earliest, latest or an offset");
    json_t *a = args_new();
    if (v >= 1)
        json_object_set_new(a, "group", json_string(o->pos[1]));
    if (v == 2) {
        json_object_set_new(a, "topic", json_string(o->pos[2]));
        json_object_set_new(a, "to", json_string(o->to));
    }
    struct backend b;
    struct broker *br;
    if (broker_backend(o, &b, &br)) {
        json_decref(a);
        return EXIT_FAIL;
    }
    static const char *const ops[] = {"group-list", "group-describe", "group-reset"};
    char what[400];
    json_t *res = NULL, *e;
    size_t i;
    snprintf(what, sizeof(what), "group %s%s%s", verbs[v], v ? " " : "", v ? o->pos[1] : "");
    int r = call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        print_json(res);
    } else if (!r && v == 0) {
        printf("%-40s %-20s %8s\n", "GROUP", "STATE", "MEMBERS");
        json_array_foreach(json_object_get(res, "groups"), i, e)
        printf("%-40s %-20s %8zu\n", json_string_value(json_object_get(e, "id")),
               json_string_value(json_object_get(e, "state")),
               json_array_size(json_object_get(e, "members")));
    } else if (!r && v == 1) {
        printf("group %s: %s, %zu members\n", json_string_value(json_object_get(res, "id")),
               json_string_value(json_object_get(res, "state")),
               json_array_size(json_object_get(res, "members")));
        json_array_foreach(json_object_get(res, "members"), i, e)
        printf("  member %s (%s, %s)\n", json_string_value(json_object_get(e, "id")),
               json_string_value(json_object_get(e, "client_id")),
               json_string_value(json_object_get(e, "host")));
        printf("%-40s %10s %14s %10s\n", "TOPIC", "PARTITION", "OFFSET", "LAG");
        json_array_foreach(json_object_get(res, "offsets"), i, e)
        printf("%-40s %10lld %14lld %10lld\n", json_string_value(json_object_get(e, "topic")),
               (long long)json_integer_value(json_object_get(e, "partition")),
               (long long)json_integer_value(json_object_get(e, "offset")),
               (long long)json_integer_value(json_object_get(e, "lag")));
    } else if (!r) {
        printf("reset: group %s on %s to %s\n", o->pos[1], o->pos[2], o->to);
    }
    json_decref(res);
    broker_backend_close(&b, br);
    return r;
}

static int cmd_version(struct opts *o)
{
    (void)o;
    printf("plenum %s\n", PL_VERSION);
    return 0;
}

static int cmd_help(struct opts *o);

static const struct cmd cmds[] = {
    {"server", NULL, "[--data DIR] [--LISTENER HOST:PORT|off]...", "run the server", NULL},
    {"mb", cmd_mb, "pl://BUCKET", "make a bucket",
     "Bucket names: 3-63 lowercase letters, digits, '-' and '.'.\n"
     "example: plenum mb pl://datasets"},
    {"rb", cmd_mb, "pl://BUCKET", "remove an empty bucket", "example: plenum rb pl://datasets"},
    {"cp", cmd_cp, "[-r] [--content-type T] SRC DST",
     "copy files and objects (either side local or pl://, '-' is stdin/stdout)",
     "A DST ending in '/' keeps the source's name. -r copies a directory tree or every\n"
     "object under a prefix. Downloads land in DST only when complete.\n"
     "examples:\n  plenum cp train.csv pl://datasets/raw/\n  plenum cp -r ./images "
     "pl://datasets/images\n  plenum cp -r pl://datasets/images ./restore\n"
     "  plenum cp --snapshot nightly pl://datasets/raw/train.csv old.csv"},
    {"cat", cmd_cat, "[--snapshot NAME] pl://BUCKET/KEY...", "write objects to stdout",
     "example: plenum cat pl://datasets/raw/train.csv | head"},
    {"ls", cmd_ls, "[-r] [--json] [--snapshot NAME] [pl://BUCKET[/PREFIX]]",
     "list buckets, or keys under a prefix",
     "Without -r, keys below the next '/' are shown once as PRE lines.\n"
     "examples:\n  plenum ls\n  plenum ls -r pl://datasets/raw/"},
    {"rm", cmd_rm, "[-r] pl://BUCKET/KEY", "remove an object, or every object under a prefix",
     "example: plenum rm -r pl://datasets/tmp/"},
    {"stat", cmd_stat, "[--json] [--snapshot NAME] pl://BUCKET[/KEY]",
     "show an object's or bucket's metadata", "example: plenum stat pl://datasets/raw/train.csv"},
    {"stats", cmd_stats, "[--json] [pl://BUCKET]",
     "logical vs stored vs physical bytes; dedup, compression and similarity savings",
     "With a bucket: what its live objects take, their chunks counted once in the bucket.\n"
     "Also: erasure coding layout, degraded reads, repairs and scrub counts.\n"
     "examples:\n  plenum stats\n  plenum stats --json pl://datasets"},
    {"fsck", cmd_fsck, "[--json]", "verify every element and chunk (exit 0 only when clean)",
     "Checks reference counts and reads every stored chunk against its checksum.\n"
     "example: plenum fsck --data /srv/plenum"},
    {"gc", cmd_gc, "[--json]", "reclaim space no object or snapshot uses",
     "The server also runs this every minute. example: plenum gc"},
    {"flush", cmd_flush, "[--json]", "destage everything buffered now onto erasure-coded stripes",
     "New data lands in the mirrored buffer; full buffer segments move to k+m stripes on the\n"
     "capacity devices in the background. flush moves everything now and returns when it is\n"
     "on stripes. example: plenum flush"},
    {"scrub", cmd_scrub, "--now [--json]",
     "verify every strip and buffer copy now, repairing from parity or mirror",
     "The server also scrubs in the background (scrub_interval_s, scrub_rate_mb in the config).\n"
     "Exit status 1 when something could not be repaired. example: plenum scrub --now"},
    {"device", cmd_device, "list | status | fail ID | add PATH | replace ID PATH | remove ID",
     "the buffer and capacity devices, and their repair",
     "list: every device with its role, state, strips and path (--json: id, role, path, state).\n"
     "status: the same, with rebuild progress, rate and time left, and repair counters.\n"
     "fail ID: stop using a capacity device (reads use parity).\n"
     "add PATH: a new capacity device for new stripes.\n"
     "replace ID PATH: rebuild the device's strips onto PATH (an empty directory, or the old\n"
     "  path after a disk swap); the server rebuilds in the background.\n"
     "remove ID: move the device's strips to other devices, then forget it.\n"
     "examples:\n  plenum device list\n  plenum device replace 3 /mnt/ssd7/plenum"},
    {"export", cmd_export,
     "add /BUCKET[/PATH] [--clients CIDR] [--options OPTS] | list | remove /BUCKET[/PATH] "
     "[--clients CIDR]",
     "NFS export rules",
     "With no rule, every bucket is exported as /BUCKET to loopback clients, read-write.\n"
     "With rules, only what they name is exported, to the clients they name:\n"
     "  --clients   *, A.B.C.D or A.B.C.D/N (default *); one rule per path and network\n"
     "  --options   rw|ro, root_squash|all_squash|no_root_squash, anonuid=N, anongid=N\n"
     "              (default rw,root_squash,anonuid=65534,anongid=65534)\n"
     "A running server picks changes up within a second. The config file can hold rules\n"
     "too ([export] /PATH = CLIENTS OPTIONS), added when the server starts.\n"
     "examples:\n  plenum export add /datasets --clients 10.0.0.0/8 --options ro,all_squash\n"
     "  plenum export add /datasets --clients 127.0.0.1 --options rw,no_root_squash\n"
     "  plenum export list\n  plenum export remove /datasets --clients 10.0.0.0/8"},
    {"mount", cmd_mount, "[--server HOST:PORT] [--read-only] BUCKET[/PATH] MOUNTPOINT",
     "mount a bucket (or a directory in one) as a local file system (FUSE)",
     "Files, directories, symlinks, hard links, xattrs: what you write there is the object\n"
     "S3 and NFS see, and their changes show in the mount at once. The command stays in the\n"
     "foreground until the mount ends: Ctrl-C, SIGTERM or fusermount3 -u MOUNTPOINT.\n"
     "When a server holds the data directory (or --server names its admin address), the\n"
     "server serves the mount; otherwise this command opens the data directory itself.\n"
     "examples:\n  mkdir -p /mnt/datasets && plenum mount datasets /mnt/datasets\n"
     "  plenum mount --server 127.0.0.1:9001 datasets/raw /mnt/raw"},
    {"topic", cmd_topic,
     "create NAME [--partitions N] [--config K=V]... | list | describe NAME | delete NAME",
     "Kafka topics: partitions, retention and offsets",
     "configs: retention.ms (-1 keeps forever; default 7 days), retention.bytes (per\n"
     "partition, -1 no limit), segment.bytes (default 256 MiB), cleanup.policy=delete.\n"
     "describe shows each partition's first and next offset, bytes and segments.\n"
     "examples:\n  plenum topic create events --partitions 6 --config retention.ms=86400000\n"
     "  kcat -b 127.0.0.1:9092 -P -t events <<< hello\n  plenum topic describe events"},
    {"group", cmd_group, "list | describe GROUP | reset-offsets GROUP TOPIC --to WHERE",
     "Kafka consumer groups: members, committed offsets and lag",
     "reset-offsets sets the group's committed offset on every partition of TOPIC to\n"
     "earliest, latest or a given offset; the group must have no active members.\n"
     "examples:\n  plenum group list\n  plenum group describe loaders\n"
     "  plenum group reset-offsets loaders events --to earliest"},
    {"kv", cmd_kv, "stats | flush [NAMESPACE] | config DRAM_MB FLASH_MB",
     "the KV cache behind the Redis protocol: tiers, hits, evictions",
     "stats shows keys, bytes and bounds per tier, hits per tier, misses, demotions to\n"
     "flash, promotions back to DRAM, evictions and expiries. flush drops every key (or\n"
     "a namespace's: USER/DB, e.g. default/0) from both tiers. config sets the tier\n"
     "bounds of the running server until it restarts (0 keeps one).\n"
     "examples:\n  plenum kv stats\n  plenum kv config 2048 0\n  plenum kv flush alice/0"},
    {"volume", cmd_volume,
     "create NAME --size N | list | resize NAME --size N | delete NAME | snapshot NAME SNAP | "
     "clone SOURCE NAME",
     "block volumes, served over NBD as nbd://HOST:PORT/NAME",
     "Volumes are thin: only written blocks take space, deduplicated like all data.\n"
     "A snapshot is the read-only volume NAME@SNAP; a clone is a writable volume sharing\n"
     "its source's data. Sizes take K, M, G or T.\n"
     "examples:\n  plenum volume create vm1 --size 10G\n  nbdinfo nbd://127.0.0.1:10809/vm1\n"
     "  plenum volume snapshot vm1 before-upgrade\n  plenum volume clone vm1@before-upgrade vm2"},
    {"snapshot", cmd_snapshot, "create NAME | list | delete NAME",
     "point-in-time snapshots of the whole namespace (O(1) to take)",
     "Read from one with --snapshot NAME on cat, cp, ls and stat.\n"
     "example: plenum snapshot create before-cleanup"},
    {"user", cmd_user, "create NAME | list | delete NAME", "manage users",
     "example: plenum user create alice"},
    {"key", cmd_key, "create USER | list [USER] | revoke ACCESS_KEY",
     "manage S3 access keys (the secret is shown once)", "example: plenum key create alice"},
    {"version", cmd_version, "", "print the version", NULL},
    {"help", cmd_help, "[COMMAND]", "show help for a command", NULL},
};

static void usage_main(FILE *f)
{
    fprintf(f, "usage: plenum [--data DIR] COMMAND [ARGS]\n\n"
               "Plenum: one server for objects (S3), files (NFS, FUSE), blocks (NBD), streams\n"
               "(Kafka), tables (PostgreSQL) and a KV cache (Redis) on the same stored bytes.\n\n"
               "commands:\n");
    for (size_t i = 0; i < PL_ARRAY_LEN(cmds); i++)
        fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\ncommon options:\n"
               "  --data DIR   data directory (default ./plenum-data); when a server holds it,\n"
               "               commands go through that server\n"
               "  --json       machine-readable output\n"
               "  -h, --help   help for a command\n\n"
               "Plenum paths are written pl://BUCKET/KEY.\n"
               "exit status: 0 success, 1 the operation failed, 2 usage error\n");
}

static void usage_cmd(const struct cmd *c)
{
    if (!strcmp(c->name, "server")) {
        usage_server();
        return;
    }
    printf("usage: plenum %s %s\n\n%s.\n", c->name, c->args, c->summary);
    if (c->help)
        printf("\n%s\n", c->help);
    printf("\noptions: --data DIR (default ./plenum-data)%s\n",
           strstr(c->args, "--json") ? ", --json" : "");
}

static int cmd_help(struct opts *o)
{
    if (o->npos == 0) {
        usage_main(stdout);
        return 0;
    }
    for (size_t i = 0; i < PL_ARRAY_LEN(cmds); i++)
        if (!strcmp(cmds[i].name, o->pos[0])) {
            usage_cmd(&cmds[i]);
            return 0;
        }
    fprintf(stderr, "plenum help: no command '%s'\n", o->pos[0]);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    struct opts o = {.data = CLI_DEFAULT_DATA};
    int i = 1;
    /* global options before the command */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            o.data = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage_main(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            return cmd_version(&o);
        } else {
            fprintf(stderr, "plenum: unknown option '%s'\n", argv[i]);
            usage_main(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage_main(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[i++];
    for (size_t c = 0; c < PL_ARRAY_LEN(cmds); c++)
        if (!strcmp(cmds[c].name, name))
            cur_cmd = &cmds[c];
    if (!cur_cmd) {
        fprintf(stderr, "plenum: '%s' is not a plenum command (see plenum --help)\n", name);
        return EXIT_USAGE;
    }
    if (!cur_cmd->fn) {
        /* server parses its own flags; pass the global --data along */
        char **sargv = calloc((size_t)argc - (size_t)i + 3, sizeof(char *));
        int sn = 0;
        if (!sargv)
            return EXIT_FAIL;
        if (strcmp(o.data, CLI_DEFAULT_DATA)) {
            sargv[sn++] = "--data";
            sargv[sn++] = (char *)o.data;
        }
        for (; i < argc; i++)
            sargv[sn++] = argv[i];
        int r = cmd_server(sn, sargv);
        free(sargv);
        return r;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            o.help = 1;
        else if (!strcmp(a, "--json"))
            o.json = 1;
        else if (!strcmp(a, "-r") || !strcmp(a, "--recursive"))
            o.recursive = 1;
        else if (!strcmp(a, "--now"))
            o.now = 1;
        else if (!strcmp(a, "--data") && i + 1 < argc)
            o.data = argv[++i];
        else if (!strcmp(a, "--snapshot") && i + 1 < argc)
            o.snapshot = argv[++i];
        else if (!strcmp(a, "--content-type") && i + 1 < argc)
            o.content_type = argv[++i];
        else if (!strcmp(a, "--size") && i + 1 < argc)
            o.size = argv[++i];
        else if (!strcmp(a, "--clients") && i + 1 < argc)
            o.clients = argv[++i];
        else if (!strcmp(a, "--options") && i + 1 < argc)
            o.options = argv[++i];
        else if (!strcmp(a, "--server") && i + 1 < argc)
            o.server = argv[++i];
        else if (!strcmp(a, "--read-only"))
            o.readonly = 1;
        else if (!strcmp(a, "--partitions") && i + 1 < argc)
            o.partitions = argv[++i];
        else if (!strcmp(a, "--to") && i + 1 < argc)
            o.to = argv[++i];
        else if (!strcmp(a, "--config") && i + 1 < argc && o.nconfigs < 16)
            o.configs[o.nconfigs++] = argv[++i];
        else if (a[0] == '-' && a[1])
            return usage_error("unknown option '%s'", a);
        else if (o.npos < (int)PL_ARRAY_LEN(o.pos))
            o.pos[o.npos++] = a;
        else
            return usage_error("%s", "too many arguments");
    }
    if (o.help) {
        usage_cmd(cur_cmd);
        return 0;
    }
    return cur_cmd->fn(&o);
}

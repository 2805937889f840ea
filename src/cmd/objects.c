/* Objects and buckets from the command line: mb, rb, cp, cat, ls, rm, stat. */
#include <dirent.h>
#include <fcntl.h>
#include <curl/curl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"

/* ---- mb / rb ---- */
int cmd_mb(struct opts *o)
{
    char bucket[64], what[128];
    const char *key;
    struct backend b;
    json_t *res;
    if (o->npos != 1)
        return cli_usage_error("%s", "expects one bucket");
    int r = cli_need_plpath(o->pos[0], bucket, &key);
    if (r)
        return r;
    if (*key)
        return cli_usage_error("'%s': a bucket path has no key", o->pos[0]);
    if (pl_bucket_name_valid(bucket)) {
        fprintf(stderr, "plenum mb: invalid bucket name '%s': use 3-63 lowercase letters, "
                        "digits, '-' and '.', starting and ending with a letter or digit\n",
                bucket);
        return EXIT_FAIL;
    }
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    json_t *a = json_object();
    json_object_set_new(a, "bucket", json_string(bucket));
    snprintf(what, sizeof(what), "make bucket %s", bucket);
    r = cli_call(&b, !strcmp(cli_cmd->name, "mb") ? "mb" : "rb", a, NULL, &res, what);
    if (!r) {
        if (o->json)
            cli_print_json(res);
        else
            printf("%s: pl://%s\n", !strcmp(cli_cmd->name, "mb") ? "created" : "removed", bucket);
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

/* ---- cp ---- */
static int put_file(struct backend *b, struct opts *o, const char *src, const char *bucket,
                    const char *key, int bars)
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
    struct xfer x = {fd, -1, total, bars && isatty(2) ? src : NULL};
    json_t *a = json_object();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->content_type)
        json_object_set_new(a, "content_type", json_string(o->content_type));
    int r = cli_call(b, "put", a, &x, &res, what);
    if (fd)
        close(fd);
    if (!r) {
        if (o->json)
            cli_print_json(res);
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
                    const char *dst, int bars)
{
    char what[PL_PATH_MAX + 128], tmp[PL_PATH_MAX + 32];
    json_t *res;
    int to_stdout = !strcmp(dst, "-");
    int fd = 1;
    snprintf(what, sizeof(what), "copy pl://%s/%s to %s", bucket, key, to_stdout ? "stdout" : dst);
    if (!to_stdout) {
        if (mkparents(dst)) {
            fprintf(stderr, "plenum %s: cannot create the directory of %s\n", cli_cmd->name, dst);
            return EXIT_FAIL;
        }
        snprintf(tmp, sizeof(tmp), "%s.plenum-part", dst);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "plenum %s: cannot write %s: %s\n", cli_cmd->name, dst,
                    strerror(errno));
            return EXIT_FAIL;
        }
    }
    struct xfer x = {-1, fd, -1, (bars && !to_stdout && isatty(2)) ? key : NULL};
    json_t *a = json_object();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->snapshot)
        json_object_set_new(a, "snapshot", json_string(o->snapshot));
    int r = cli_call(b, "get", a, &x, &res, what);
    if (!to_stdout) {
        if (!r && fsync(fd) < 0)
            r = cli_fail(-errno, what, NULL);
        close(fd);
        if (!r && rename(tmp, dst) < 0)
            r = cli_fail(-errno, what, NULL);
        if (r)
            unlink(tmp);
    }
    if (!r)
        json_decref(res);
    return r;
}

/* A recursive copy runs o->jobs transfers at once on a pl_pool: files are
 * independent, and the server chunks and fingerprints each one on its own
 * thread, so one stream at a time would leave cores idle. The walker waits
 * while CP_QUEUE transfers wait for a worker. With one job, per-file progress
 * bars as before. */
#define CP_QUEUE 64

struct cp_pool {
    struct pl_pool *pool;
    struct backend *b;
    struct opts *o;
    const char *bucket;
    int up, bars;
    pthread_mutex_t lock; /* the counts */
    int files, failures;
    uint64_t bytes, t0;
};

struct cp_task {
    struct pl_job job;
    struct cp_pool *p;
    char *from, *to; /* up: local path, key; down: key, local path */
    int64_t size;
};

static void cp_task_done(struct cp_pool *p, int failed, int64_t size)
{
    pthread_mutex_lock(&p->lock);
    p->files++;
    p->failures += failed;
    p->bytes += size > 0 ? (uint64_t)size : 0;
    if (!p->bars)
        progress_update("copied", p->bytes, -1, p->t0); /* a terminal: one line for all */
    pthread_mutex_unlock(&p->lock);
}

static void cp_task_run(struct pl_job *j)
{
    struct cp_task *t = (struct cp_task *)j;
    struct cp_pool *p = t->p;
    int r = p->up ? put_file(p->b, p->o, t->from, p->bucket, t->to, p->bars)
                  : get_file(p->b, p->o, p->bucket, t->from, t->to, p->bars);
    cp_task_done(p, r != 0, t->size);
    free(t->from);
    free(t->to);
    free(t);
}

static int cp_pool_start(struct cp_pool *p, struct backend *b, struct opts *o,
                         const char *bucket, int up)
{
    int jobs = o->jobs > 0 ? o->jobs : CLI_JOBS_DEFAULT;
    *p = (struct cp_pool){.b = b, .o = o, .bucket = bucket, .up = up, .bars = jobs == 1,
                          .t0 = pl_mono_ns()};
    if (jobs > 1) {
        /* both are documented as unsafe to first run on several threads */
        curl_global_init(CURL_GLOBAL_DEFAULT);
        json_object_seed(0);
    }
    pthread_mutex_init(&p->lock, NULL);
    int rc = pl_pool_new(jobs, &p->pool);
    if (rc)
        pthread_mutex_destroy(&p->lock);
    return rc;
}

/* Queue one transfer (takes from and to; NULL counts as a failure). */
static void cp_pool_add(struct cp_pool *p, char *from, char *to, int64_t size)
{
    struct cp_task *t = from && to ? malloc(sizeof(*t)) : NULL;
    if (!t) {
        cp_task_done(p, 1, 0);
        free(from);
        free(to);
        return;
    }
    *t = (struct cp_task){.job = {.fn = cp_task_run, .detached = 1}, .p = p, .from = from,
                          .to = to, .size = size};
    pl_pool_submit_bounded(p->pool, &t->job, CP_QUEUE);
}

/* Wait for every queued transfer; prints the summary. The exit status. */
static int cp_pool_finish(struct cp_pool *p)
{
    pl_pool_free(p->pool); /* runs what is queued, then the workers end */
    if (!p->bars)
        progress_end("copied", p->bytes, p->t0);
    if (!p->o->json)
        printf("%d files copied, %d failed\n", p->files - p->failures, p->failures);
    pthread_mutex_destroy(&p->lock);
    return p->failures ? EXIT_FAIL : 0;
}

static void put_tree(struct cp_pool *p, const char *prefix, const char *dir, const char *rel)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "plenum cp: cannot read directory %s: %s\n", dir, strerror(errno));
        cp_pool_add(p, NULL, NULL, 0);
        return;
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
            put_tree(p, prefix, path, r2);
        } else if (S_ISREG(sb.st_mode)) {
            snprintf(key, sizeof(key), "%s%s", prefix, r2);
            cp_pool_add(p, strdup(path), strdup(key), sb.st_size);
        }
    }
    closedir(d);
}

int cmd_cp(struct opts *o)
{
    char sb[64], db[64];
    const char *sk, *dk;
    struct backend b;
    if (o->npos != 2)
        return cli_usage_error("%s", "expects SRC and DST");
    int sp = cli_plpath(o->pos[0], sb, sizeof(sb), &sk) == 0;
    int dp = cli_plpath(o->pos[1], db, sizeof(db), &dk) == 0;
    if (!sp && !dp)
        return cli_usage_error("%s", "one of SRC and DST must be a pl:// path");
    if ((sp && cli_need_plpath(o->pos[0], sb, &sk)) || (dp && cli_need_plpath(o->pos[1], db, &dk)))
        return EXIT_USAGE;
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    int r = 0;
    if (!sp) {
        /* local -> plenum */
        struct stat st;
        int isdir = strcmp(o->pos[0], "-") && stat(o->pos[0], &st) == 0 && S_ISDIR(st.st_mode);
        if (isdir && o->recursive) {
            struct cp_pool p;
            char prefix[PL_KEY_MAX + 2];
            snprintf(prefix, sizeof(prefix), "%s%s", dk,
                     (*dk && dk[strlen(dk) - 1] != '/') ? "/" : "");
            if (cp_pool_start(&p, &b, o, db, 1)) {
                backend_close(&b);
                return cli_fail(PL_ENOMEM, "start the copy threads", NULL);
            }
            put_tree(&p, prefix, o->pos[0], "");
            r = cp_pool_finish(&p);
        } else {
            char key[PL_KEY_MAX + 1], tmp[PL_PATH_MAX];
            if (!*dk || dk[strlen(dk) - 1] == '/') {
                if (!strcmp(o->pos[0], "-")) {
                    backend_close(&b);
                    return cli_usage_error("%s", "copying stdin needs a full key");
                }
                snprintf(tmp, sizeof(tmp), "%s", o->pos[0]);
                snprintf(key, sizeof(key), "%s%s", dk, basename(tmp));
            } else {
                snprintf(key, sizeof(key), "%s", dk);
            }
            r = put_file(&b, o, o->pos[0], db, key, 1);
        }
    } else if (!dp) {
        /* plenum -> local */
        if (o->recursive) {
            char after[PL_KEY_MAX + 2] = "";
            struct cp_pool p;
            if (cp_pool_start(&p, &b, o, sb, 0)) {
                backend_close(&b);
                return cli_fail(PL_ENOMEM, "start the copy threads", NULL);
            }
            for (;;) {
                json_t *a = json_object(), *res;
                json_object_set_new(a, "bucket", json_string(sb));
                json_object_set_new(a, "prefix", json_string(sk));
                json_object_set_new(a, "after", json_string(after));
                json_object_set_new(a, "recursive", json_true());
                if (o->snapshot)
                    json_object_set_new(a, "snapshot", json_string(o->snapshot));
                r = cli_call(&b, "ls", a, NULL, &res, "list");
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
                    cp_pool_add(&p, strdup(k), strdup(dst),
                                json_integer_value(json_object_get(e, "size")));
                }
                json_t *next = json_object_get(res, "next");
                if (json_is_string(next))
                    snprintf(after, sizeof(after), "%s", json_string_value(next));
                int more = json_is_string(next);
                json_decref(res);
                if (!more)
                    break;
            }
            int pr = cp_pool_finish(&p);
            if (!r)
                r = pr;
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
                return cli_usage_error("'%s' names a bucket; use -r to copy its objects", o->pos[0]);
            }
            r = get_file(&b, o, sb, sk, dst, 1);
        }
    } else {
        json_t *a = json_object(), *res;
        char what[PL_KEY_MAX * 2 + 160];
        json_object_set_new(a, "src_bucket", json_string(sb));
        json_object_set_new(a, "src_key", json_string(sk));
        json_object_set_new(a, "bucket", json_string(db));
        json_object_set_new(a, "key", json_string(dk));
        snprintf(what, sizeof(what), "copy %s to %s", o->pos[0], o->pos[1]);
        r = cli_call(&b, "copy", a, NULL, &res, what);
        if (!r) {
            if (o->json)
                cli_print_json(res);
            json_decref(res);
        }
    }
    backend_close(&b);
    return r;
}

int cmd_cat(struct opts *o)
{
    char bucket[64];
    const char *key;
    struct backend b;
    if (o->npos < 1)
        return cli_usage_error("%s", "expects at least one pl://BUCKET/KEY");
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    int r = 0;
    for (int i = 0; i < o->npos && !r; i++) {
        r = cli_need_plpath(o->pos[i], bucket, &key);
        if (!r && !*key)
            r = cli_usage_error("'%s' has no key", o->pos[i]);
        if (!r)
            r = get_file(&b, o, bucket, key, "-", 1);
    }
    backend_close(&b);
    return r;
}

/* ---- ls ---- */
int cmd_ls(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos > 1)
        return cli_usage_error("%s", "expects at most one pl://BUCKET/PREFIX");
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    int r;
    if (o->npos == 0) {
        r = cli_call(&b, "buckets", json_object(), NULL, &res, "list buckets");
        if (!r) {
            if (o->json) {
                cli_print_json(res);
            } else {
                json_t *e;
                size_t i;
                json_array_foreach(json_object_get(res, "buckets"), i, e)
                {
                    char t[32];
                    cli_fmt_time(json_integer_value(json_object_get(e, "ctime_ns")), t, sizeof(t));
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
    r = cli_need_plpath(o->pos[0], bucket, &prefix);
    if (r) {
        backend_close(&b);
        return r;
    }
    json_t *all = o->json ? json_array() : NULL;
    for (;;) {
        json_t *a = json_object();
        json_object_set_new(a, "bucket", json_string(bucket));
        json_object_set_new(a, "prefix", json_string(prefix));
        json_object_set_new(a, "after", json_string(after));
        if (o->recursive)
            json_object_set_new(a, "recursive", json_true());
        if (o->snapshot)
            json_object_set_new(a, "snapshot", json_string(o->snapshot));
        char what[PL_KEY_MAX + 80];
        snprintf(what, sizeof(what), "list %s", o->pos[0]);
        r = cli_call(&b, "ls", a, NULL, &res, what);
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
                cli_fmt_time(json_integer_value(json_object_get(e, "mtime_ns")), t, sizeof(t));
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
            cli_print_json(out);
            json_decref(out);
        } else {
            json_decref(all);
        }
    }
    backend_close(&b);
    return r;
}

int cmd_rm(struct opts *o)
{
    char bucket[64], what[PL_KEY_MAX + 80];
    const char *key;
    struct backend b;
    json_t *res;
    if (o->npos != 1)
        return cli_usage_error("%s", "expects one pl://BUCKET/KEY");
    int r = cli_need_plpath(o->pos[0], bucket, &key);
    if (r)
        return r;
    if (!*key && !o->recursive)
        return cli_usage_error("'%s' names a bucket: use 'plenum rb' or rm -r", o->pos[0]);
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    json_t *a = json_object();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->recursive)
        json_object_set_new(a, "recursive", json_true());
    snprintf(what, sizeof(what), "remove %s", o->pos[0]);
    r = cli_call(&b, "rm", a, NULL, &res, what);
    if (!r) {
        if (o->json)
            cli_print_json(res);
        else
            printf("removed %lld object(s)\n",
                   (long long)json_integer_value(json_object_get(res, "deleted")));
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

int cmd_stat(struct opts *o)
{
    char bucket[64], what[PL_KEY_MAX + 80];
    const char *key;
    struct backend b;
    json_t *res;
    if (o->npos != 1)
        return cli_usage_error("%s", "expects one pl://BUCKET[/KEY]");
    int r = cli_need_plpath(o->pos[0], bucket, &key);
    if (r)
        return r;
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    json_t *a = json_object();
    json_object_set_new(a, "bucket", json_string(bucket));
    json_object_set_new(a, "key", json_string(key));
    if (o->snapshot)
        json_object_set_new(a, "snapshot", json_string(o->snapshot));
    snprintf(what, sizeof(what), "stat %s", o->pos[0]);
    r = cli_call(&b, "stat", a, NULL, &res, what);
    if (!r) {
        json_t *ob = json_object_get(res, "object");
        if (o->json) {
            cli_print_json(ob ? ob : json_object_get(res, "bucket"));
        } else if (ob) {
            char t[32];
            cli_fmt_time(json_integer_value(json_object_get(ob, "mtime_ns")), t, sizeof(t));
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
            cli_fmt_time(json_integer_value(json_object_get(bu, "ctime_ns")), t, sizeof(t));
            printf("bucket:  pl://%s\ncreated: %s UTC\n", bucket, t);
        }
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

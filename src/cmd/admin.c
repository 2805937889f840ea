/* Keeping the store: stats, fsck, gc, flush, scrub, devices, exports,
 * volumes, snapshots, users and keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cli.h"

static const char *plural(long long n)
{
    return n == 1 ? "" : "s";
}

static void print_bytes_line(json_t *res, const char *name, const char *label)
{
    char v[32];
    pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(res, name)), v, sizeof(v));
    printf("%-32s %s\n", label, v);
}

int cmd_stats(struct opts *o)
{
    struct backend b;
    json_t *res;
    char bucket[64] = "";
    const char *key = "";
    if (o->npos > 1)
        return cli_usage_error("%s", "takes at most one pl://BUCKET");
    if (o->npos == 1) {
        int r = cli_need_plpath(o->pos[0], bucket, &key);
        if (r)
            return r;
    }
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    json_t *a = json_object();
    if (bucket[0])
        json_object_set_new(a, "bucket", json_string(bucket));
    int r = cli_call(&b, "stats", a, NULL, &res, "read statistics");
    if (!r) {
        if (o->json) {
            cli_print_json(res);
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
            long long ns = (long long)json_integer_value(json_object_get(res, "stripes"));
            printf("%-32s %lld+%lld, %lld stripe%s, %lld buffer segments\n"
                   "%-32s %lld degraded reads, %lld strips repaired\n"
                   "%-32s %lld checked, %lld repaired, %lld unrecoverable\n",
                   "erasure coding", (long long)json_integer_value(json_object_get(ec, "k")),
                   (long long)json_integer_value(json_object_get(ec, "m")), ns, plural(ns),
                   (long long)json_integer_value(json_object_get(res, "buffer_segments")),
                   "self-healing",
                   (long long)json_integer_value(json_object_get(res, "degraded_reads")),
                   (long long)json_integer_value(json_object_get(res, "strips_repaired")),
                   "scrub (since start)",
                   (long long)json_integer_value(json_object_get(sc, "checked")),
                   (long long)json_integer_value(json_object_get(sc, "repaired")),
                   (long long)json_integer_value(json_object_get(sc, "unrecoverable")));
            char ra[32];
            pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(res, "read_ahead_bytes")),
                         ra, sizeof(ra));
            printf("%-32s %s served from read-ahead (since start)\n", "sequential reads", ra);
            json_t *hot = json_object_get(res, "hot_chunks");
            char hb[32];
            pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(hot, "bytes")), hb,
                         sizeof(hb));
            printf("%-32s %s held, delta references %lld found, %lld read (since start)\n",
                   "hot chunk cache", hb,
                   (long long)json_integer_value(json_object_get(hot, "hits")),
                   (long long)json_integer_value(json_object_get(hot, "misses")));
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

int cmd_fsck(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    if (o->npos)
        return cli_usage_error("%s", "takes no arguments");
    if (cli_backend_open(o, &b))
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
            return cli_fail(n, "check", NULL);
        }
        res = json_pack("{s:o, s:i}", "problems", probs, "count", n);
        r = 0;
    } else {
        r = cli_call(&b, "fsck", json_object(), NULL, &res, "check");
    }
    if (!r) {
        json_int_t count = json_integer_value(json_object_get(res, "count"));
        if (o->json) {
            cli_print_json(res);
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

int cmd_gc(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos)
        return cli_usage_error("%s", "takes no arguments");
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    int r = cli_call(&b, "gc", json_object(), NULL, &res, "collect garbage");
    if (!r) {
        char v[32];
        pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(res, "freed_bytes")), v,
                     sizeof(v));
        if (o->json)
            cli_print_json(res);
        else
            printf("gc: freed %s\n", v);
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

int cmd_flush(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos)
        return cli_usage_error("%s", "takes no arguments");
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    int r = 0;
    if (b.st) {
        /* in-process: show progress while it writes stripes */
        r = pl_store_flush(b.st, isatty(2) ? step_progress : NULL, "destage");
        if (isatty(2))
            fprintf(stderr, "\n");
        if (r)
            r = cli_fail(r, "destage", NULL);
    }
    if (!r)
        r = cli_call(&b, "flush", json_object(), NULL, &res, "destage");
    if (!r) {
        if (o->json)
            cli_print_json(res);
        else {
            long long n = (long long)json_integer_value(json_object_get(res, "stripes"));
            printf("flush: everything is on stripes (%lld stripe%s)\n", n, plural(n));
        }
        json_decref(res);
    }
    backend_close(&b);
    return r;
}

int cmd_scrub(struct opts *o)
{
    struct backend b;
    json_t *res;
    if (o->npos)
        return cli_usage_error("%s", "takes no arguments");
    if (!o->now)
        return cli_usage_error("%s", "the server scrubs in the background; say --now to scrub now");
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    int r = cli_call(&b, "scrub", json_object(), NULL, &res, "scrub");
    if (!r) {
        json_int_t bad = json_integer_value(json_object_get(res, "unrecoverable"));
        if (o->json)
            cli_print_json(res);
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

/* What a failed device verb means for that verb, and what to do next. */
static const char *device_err(int v, int rc)
{
    switch (rc) {
    case PL_ENOENT:
        return v == 3 ? NULL : "no such device; 'plenum device list' shows the ids";
    case PL_EPERM:
        return "this is a buffer mirror: only capacity devices can be failed, replaced or "
               "removed";
    case PL_EINVAL:
        return v == 3 ? "the path is empty or too long"
                      : "the device id is a number from 'plenum device list'";
    case PL_EEXIST:
        return "that path is a device already ('plenum device list')";
    case PL_ENOSPC:
        return v == 3 ? "no more device ids are free; remove failed devices first" : NULL;
    case PL_ENOTDIR:
        return "the path is not a directory";
    case PL_ENODEVS:
        return v == 5 ? "the other working capacity devices would be fewer than the stripe width "
                        "(K+M); add one first (plenum device add PATH) or replace the failed "
                        "ones (plenum device replace ID PATH)"
                      : NULL;
    default:
        return NULL;
    }
}

/* One device verb (fail, add, replace, remove). In-process, replace and
 * remove run here with progress: they move every strip of the device. */
static int device_call(struct backend *b, int v, const char *op, json_t *a, json_t **res,
                       const char *what, const char *arg)
{
    char msg[512] = "";
    int rc;
    if (b->st && (v == 4 || v == 5)) {
        char *end;
        long id = strtol(arg, &end, 10);
        const char *path = json_string_value(json_object_get(a, "path"));
        if (!*arg || *end || id < 0 || id > 65535) {
            rc = PL_EINVAL;
        } else if (v == 4) {
            rc = pl_device_replace(b->st, (int)id, path);
            if (!rc)
                rc = pl_store_rebuild(b->st, isatty(2) ? step_progress : NULL, "rebuild");
        } else {
            rc = pl_device_remove(b->st, (int)id, isatty(2) ? step_progress : NULL,
                                  "move strips");
        }
        if (isatty(2))
            fprintf(stderr, "\n");
        *res = rc ? NULL : json_object();
    } else {
        rc = backend_call(b, op, a, NULL, res, msg, sizeof(msg));
    }
    if (!rc)
        return 0;
    const char *why = device_err(v, rc);
    if (!why)
        return cli_fail(rc, what, msg);
    fprintf(stderr, "plenum device: %s: %s\n", what, why);
    return EXIT_FAIL;
}

int cmd_device(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    static const char *const verbs[] = {"list", "status", "fail", "add", "replace", "remove"};
    static const int nargs[] = {0, 0, 1, 1, 2, 1};
    int v = cli_pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                          "list, status, fail ID, add PATH, replace ID PATH or remove ID");
    if (v < 0)
        return EXIT_USAGE;
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    json_t *a = json_object();
    char what[600];
    snprintf(what, sizeof(what), "device %s%s%s%s%s", verbs[v], o->npos > 1 ? " " : "",
             o->npos > 1 ? o->pos[1] : "", o->npos > 2 ? " " : "", o->npos > 2 ? o->pos[2] : "");
    int r;
    if (v <= 1) {
        r = cli_call(&b, "device-list", a, NULL, &res, what);
        if (!r && o->json) {
            cli_print_json(res);
        } else if (!r) {
            json_t *d;
            size_t i;
            printf("%-4s %-9s %-11s %8s %10s  %s\n", "ID", "ROLE", "STATE", "STRIPS", "SIZE",
                   "PATH");
            json_array_foreach(json_object_get(res, "devices"), i, d)
                device_print(d, v == 1);
            if (v == 1) {
                json_t *l = json_object_get(res, "layout");
                printf("\nlayout: %lld+%lld, stripes: %lld, segments in the buffer: %lld\n"
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
        r = device_call(&b, v, ops[v], a, &res, what, o->pos[1]);
        if (!r && o->json) {
            cli_print_json(res);
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

int cmd_export(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    static const char *const verbs[] = {"add", "list", "remove"};
    static const int nargs[] = {1, 0, 1};
    int v = cli_pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                          "add /BUCKET[/PATH] [--clients CIDR] [--options OPTS], list, or remove "
                          "/BUCKET[/PATH] [--clients CIDR]");
    if (v < 0)
        return EXIT_USAGE;
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    static const char *const ops[] = {"export-add", "export-list", "export-remove"};
    json_t *a = json_object();
    if (v != 1)
        json_object_set_new(a, "path", json_string(o->pos[1]));
    if (o->clients)
        json_object_set_new(a, "clients", json_string(o->clients));
    if (o->options)
        json_object_set_new(a, "options", json_string(o->options));
    char what[400];
    snprintf(what, sizeof(what), "export %s%s%s", verbs[v], o->npos > 1 ? " " : "",
             o->npos > 1 ? o->pos[1] : "");
    int r = cli_call(&b, ops[v], a, NULL, &res, what);
    if (!r && o->json) {
        cli_print_json(res);
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

int cmd_volume(struct opts *o)
{
    struct backend b;
    json_t *res = NULL;
    static const char *const verbs[] = {"create", "list", "resize", "delete", "snapshot", "clone"};
    static const int nargs[] = {1, 0, 1, 1, 2, 2};
    int v = cli_pick_verb(o, verbs, nargs, (int)PL_ARRAY_LEN(verbs),
                          "create NAME --size N, create NAME --object pl://BUCKET/KEY, list, "
                          "resize NAME --size N, delete NAME, snapshot NAME SNAP or clone "
                          "SOURCE NAME");
    if (v < 0)
        return EXIT_USAGE;
    if (((v == 0 && !o->object) || v == 2) && !o->size)
        return cli_usage_error("%s", "needs --size (bytes, or with K, M, G, T)");
    if (o->object && v != 0)
        return cli_usage_error("%s", "--object goes with create");
    const char *object = o->object;
    if (object && !strncmp(object, "pl://", 5))
        object += 5;
    if (object && !strchr(object, '/'))
        return cli_usage_error("--object takes pl://BUCKET/KEY, not '%s'", o->object);
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    static const char *const ops[] = {"volume-create", "volume-list", "volume-resize",
                                      "volume-delete", "volume-snapshot", "volume-clone"};
    json_t *a = json_object();
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
    if (object)
        json_object_set_new(a, "object", json_string(object));
    char what[400];
    snprintf(what, sizeof(what), "volume %s%s%s", verbs[v], o->npos > 1 ? " " : "",
             o->npos > 1 ? o->pos[1] : "");
    char msg[512];
    int r = 0, rc = backend_call(&b, ops[v], a, NULL, &res, msg, sizeof(msg));
    if (rc && object && rc == PL_ENOENT && !o->size)
        snprintf(msg, sizeof(msg), "no object pl://%s; add --size N to make one there", object);
    else if (rc && object && rc == PL_ESIZE)
        snprintf(msg, sizeof(msg), "pl://%s exists with another size (leave out --size; "
                 "'plenum volume resize' changes it)", object);
    else if (rc && object && rc == PL_EINVAL)
        snprintf(msg, sizeof(msg), "bad volume name '%s' or object name 'pl://%s' (a volume "
                 "name is 1..64 of A-Z a-z 0-9 . _ -, not starting with '.')", o->pos[1], object);
    if (rc)
        r = cli_fail(rc, what, msg);
    if (!r && o->json) {
        cli_print_json(res);
    } else if (!r && v == 1) {
        json_t *e;
        size_t i;
        printf("%-32s %12s  %-4s  %s\n", "NAME", "SIZE", "MODE", "OBJECT");
        json_array_foreach(json_object_get(res, "volumes"), i, e)
        {
            char sz[32];
            const char *obj = json_string_value(json_object_get(e, "object"));
            pl_fmt_bytes((uint64_t)json_integer_value(json_object_get(e, "size")), sz, sizeof(sz));
            printf("%-32s %12s  %-4s  %s%s%s\n", json_string_value(json_object_get(e, "name")),
                   json_is_true(json_object_get(e, "missing")) ? "-" : sz,
                   json_is_true(json_object_get(e, "readonly")) ? "ro" : "rw", obj ? "pl://" : "",
                   obj ? obj : "",
                   json_is_true(json_object_get(e, "missing")) ? " (no such object now)" : "");
        }
    } else if (!r) {
        json_t *vol = json_object_get(res, "volume");
        const char *obj = vol ? json_string_value(json_object_get(vol, "object")) : NULL;
        if (vol)
            printf("volume %s: %lld bytes%s%s%s (nbd://HOST:PORT/%s)\n",
                   json_string_value(json_object_get(vol, "name")),
                   (long long)json_integer_value(json_object_get(vol, "size")),
                   json_is_true(json_object_get(vol, "readonly")) ? ", read-only" : "",
                   obj ? ", the object pl://" : "", obj ? obj : "",
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
        return cli_usage_error("%s", "expects a verb");
    const struct verb *v = NULL;
    for (size_t i = 0; i < nv; i++)
        if (!strcmp(vs[i].verb, o->pos[0]))
            v = &vs[i];
    if (!v)
        return cli_usage_error("unknown verb '%s'", o->pos[0]);
    if ((v->nargs == 1 && o->npos != 2) || (v->nargs == 0 && o->npos != 1) ||
        (v->nargs == -1 && o->npos > 2))
        return cli_usage_error("wrong number of arguments for '%s'", v->verb);
    if (cli_backend_open(o, &b))
        return EXIT_FAIL;
    json_t *a = json_object();
    if (o->npos == 2)
        json_object_set_new(a, v->argname, json_string(o->pos[1]));
    char what[300];
    snprintf(what, sizeof(what), "%s %s%s%s", cli_cmd->name, v->verb, o->npos == 2 ? " " : "",
             o->npos == 2 ? o->pos[1] : "");
    int r = cli_call(&b, v->op, a, NULL, &res, what);
    if (!r) {
        json_t *list = json_object_get(res, listkey);
        if (o->json) {
            cli_print_json(res);
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
                        cli_fmt_time(json_integer_value(val), t, sizeof(t));
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

int cmd_snapshot(struct opts *o)
{
    static const struct verb vs[] = {{"create", "snapshot-create", "name", 1},
                                     {"list", "snapshot-list", "name", 0},
                                     {"delete", "snapshot-delete", "name", 1}};
    return cmd_verbs(o, vs, PL_ARRAY_LEN(vs), "snapshots");
}

int cmd_user(struct opts *o)
{
    static const struct verb vs[] = {{"create", "user-create", "name", 1},
                                     {"list", "user-list", "name", 0},
                                     {"delete", "user-delete", "name", 1}};
    return cmd_verbs(o, vs, PL_ARRAY_LEN(vs), "users");
}

int cmd_key(struct opts *o)
{
    static const struct verb vs[] = {{"create", "key-create", "user", 1},
                                     {"list", "key-list", "user", -1},
                                     {"revoke", "key-revoke", "access_key", 1}};
    return cmd_verbs(o, vs, PL_ARRAY_LEN(vs), "keys");
}

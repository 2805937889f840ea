/* `plenum mount`, and the FUSE mounts a server serves for it: when a server
 * holds the data directory the mount lives in the server process, next to
 * the store, and the command only asks for it, watches it and asks for its
 * end. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cmd/cli.h"
#include "proto/admin/ops.h"
#include "proto/fuse/fmount.h"

#define MOUNTS_MAX 64

static pthread_mutex_t mounts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fmount *mounts[MOUNTS_MAX];

/* Forget mounts whose kernel side went (fusermount3 -u). Lock held. */
static void mounts_reap(void)
{
    for (int i = 0; i < MOUNTS_MAX; i++)
        if (mounts[i] && fmount_ended(mounts[i])) {
            fmount_stop(mounts[i]);
            mounts[i] = NULL;
        }
}

static int op_mount(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)io;
    const char *path = json_string_value(json_object_get(args, "path"));
    const char *mp = json_string_value(json_object_get(args, "mountpoint"));
    struct fmount_opts fo = {.readonly = json_is_true(json_object_get(args, "readonly"))};
    if (!path || !mp || mp[0] != '/')
        return PL_EINVAL;
    int rc = 0, slot = -1;
    pthread_mutex_lock(&mounts_lock);
    mounts_reap();
    for (int i = 0; i < MOUNTS_MAX; i++) {
        if (mounts[i] && !strcmp(fmount_point(mounts[i]), mp))
            rc = PL_EBUSY;
        if (!mounts[i] && slot < 0)
            slot = i;
    }
    if (!rc && slot < 0)
        rc = PL_ENOSPC;
    if (!rc)
        rc = fmount_start(st, path, mp, &fo, &mounts[slot]);
    pthread_mutex_unlock(&mounts_lock);
    if (!rc)
        json_object_set_new(res, "mountpoint", json_string(mp));
    return rc;
}

static int op_mount_list(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)args;
    (void)io;
    json_t *a = json_array();
    pthread_mutex_lock(&mounts_lock);
    mounts_reap();
    for (int i = 0; i < MOUNTS_MAX; i++)
        if (mounts[i])
            json_array_append_new(a, json_pack("{s:s, s:s}", "path", fmount_path(mounts[i]),
                                               "mountpoint", fmount_point(mounts[i])));
    pthread_mutex_unlock(&mounts_lock);
    json_object_set_new(res, "mounts", a);
    return 0;
}

static int op_umount(struct pl_store *st, json_t *args, json_t *res, struct op_io *io)
{
    (void)st;
    (void)res;
    (void)io;
    const char *mp = json_string_value(json_object_get(args, "mountpoint"));
    struct fmount *m = NULL;
    if (!mp)
        return PL_EINVAL;
    pthread_mutex_lock(&mounts_lock);
    for (int i = 0; i < MOUNTS_MAX; i++)
        if (mounts[i] && !strcmp(fmount_point(mounts[i]), mp)) {
            m = mounts[i];
            mounts[i] = NULL;
        }
    pthread_mutex_unlock(&mounts_lock);
    fmount_stop(m); /* outside the lock: it waits for requests in flight */
    return m ? 0 : PL_ENOENT;
}

static const struct op_def mount_ops[] = {
    {"mount", 0, op_mount},
    {"mount-list", 0, op_mount_list},
    {"umount", 0, op_umount},
};

int mounts_register(void)
{
    int rc = 0;
    for (size_t i = 0; i < PL_ARRAY_LEN(mount_ops) && !rc; i++)
        rc = ops_add(&mount_ops[i]);
    return rc;
}

void mounts_stop_all(void)
{
    pthread_mutex_lock(&mounts_lock);
    for (int i = 0; i < MOUNTS_MAX; i++) {
        fmount_stop(mounts[i]);
        mounts[i] = NULL;
    }
    pthread_mutex_unlock(&mounts_lock);
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
    json_t *a = json_object();
    json_object_set_new(a, "path", json_string(path));
    json_object_set_new(a, "mountpoint", json_string(mp));
    json_object_set_new(a, "readonly", json_boolean(readonly));
    if (cli_call(b, "mount", a, NULL, &res, what))
        return EXIT_FAIL;
    json_decref(res);
    printf("mounted pl:/%s at %s (served by %s; stop with Ctrl-C or fusermount3 -u %s)\n", path,
           mp, b->url, mp);
    fflush(stdout);
    for (;;) {
        if (mount_wait_signal(sigs, 1000)) {
            a = json_object();
            json_object_set_new(a, "mountpoint", json_string(mp));
            int r = cli_call(b, "umount", a, NULL, &res, what);
            if (!r)
                json_decref(res);
            return r;
        }
        char msg[256];
        if (backend_call(b, "mount-list", json_object(), NULL, &res, msg, sizeof(msg))) {
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

int cmd_mount(struct opts *o)
{
    char path[PL_PATH_MAX], mp[PATH_MAX], bucket[64];
    struct backend b = {0};
    struct stat sb;
    if (o->npos != 2)
        return cli_usage_error("%s", "expects BUCKET[/PATH] and MOUNTPOINT");
    const char *src = o->pos[0];
    if (!strncmp(src, "pl://", 5))
        src += 5;
    while (*src == '/')
        src++;
    size_t bl = strcspn(src, "/");
    if (bl >= sizeof(bucket) || snprintf(path, sizeof(path), "/%s", src) >= (int)sizeof(path))
        return cli_usage_error("'%s' is too long", o->pos[0]);
    memcpy(bucket, src, bl);
    bucket[bl] = 0;
    if (pl_bucket_name_valid(bucket))
        return cli_usage_error("'%s' does not start with a valid bucket name", o->pos[0]);
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
        const char *why = rc == PL_EIO ? "the kernel refused the mount (is /dev/fuse there, "
                                         "and is fusermount3 installed?)"
                                       : NULL;
        return cli_fail(rc, what, why);
    }
    printf("mounted pl:/%s at %s (stop with Ctrl-C or fusermount3 -u %s)\n", path, mp, mp);
    fflush(stdout);
    while (!fmount_ended(m) && !mount_wait_signal(&sigs, 200))
        ;
    fmount_stop(m);
    backend_close(&b);
    return 0;
}

/* The FUSE mounts a server serves for `plenum mount` run beside it: the
 * mount lives in the server process, next to the store, and the command
 * only asks for it, watches it and asks for its end. */
#include <pthread.h>
#include <stdlib.h>

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

/* The FUSE head: a bucket (or a directory in one) mounted into the local
 * file system through libfuse3's low-level API, served from the element
 * store in this process. Names are prefixed fmount_ because libfuse owns
 * fuse_. */
#ifndef PL_PROTO_FMOUNT_H
#define PL_PROTO_FMOUNT_H

#include "plenum/store.h"

struct fmount;

struct fmount_opts {
    int readonly;
    int threads; /* request threads; 0 = 16 */
};

/* Mount path ("/BUCKET[/DIR]") at mountpoint and start serving it on
 * threads of its own. PL_ENOENT / PL_ENOBUCKET when path is missing,
 * PL_ENOTDIR when it is not a directory, PL_EIO (logged with the cause) when
 * the kernel refuses the mount. */
int fmount_start(struct pl_store *st, const char *path, const char *mountpoint,
                 const struct fmount_opts *o, struct fmount **ret) PL_WUR;
/* Non-zero once the mount has ended (fusermount3 -u, umount, or a stop). */
int fmount_ended(struct fmount *m);
const char *fmount_point(const struct fmount *m);
const char *fmount_path(const struct fmount *m);
/* Unmount if still mounted, write back what was written, free. NULL ok. */
void fmount_stop(struct fmount *m);

#endif

/* The NFS head: NFSv3 and MOUNT v3 over TCP, with a built-in PORTMAP v2
 * responder, on its own libuv loop thread; store work runs on libuv's pool.
 * Every bucket is exported as /BUCKET to loopback clients (read-write)
 * unless export rules say otherwise. */
#ifndef PL_NFS_H
#define PL_NFS_H

#include "plenum/store.h"

struct nfs_opts {
    const char *host; /* NFS listener */
    int port;         /* 0: any free port */
    const char *mount_host; /* NULL: no separate MOUNT listener */
    int mount_port;
    const char *portmap_host; /* NULL: no PORTMAP listener */
    int portmap_port;
};

struct nfs_server;
int nfs_start(struct pl_store *st, const struct nfs_opts *o, struct nfs_server **ret) PL_WUR;
/* The bound port of the NFS (0), MOUNT (1) or PORTMAP (2) listener; 0: off. */
int nfs_port(const struct nfs_server *s, int which);
/* Stop accepting, drop connections, wait for calls in flight, join the loop. */
void nfs_stop(struct nfs_server *s);

#endif

/* NFS head internals: the RPC programs (NFSv3 RFC 1813, MOUNT v3, PORTMAP v2)
 * as functions from a decoded call to a reply, run on worker threads; the
 * event loop (server.c) only moves records. */
#ifndef PL_NFSINT_H
#define PL_NFSINT_H

#include <netinet/in.h>
#include <pthread.h>

#include "plenum/store.h"
#include "proto/nfs/xdr.h"
#include "proto/wb/wb.h"

#define PROG_PORTMAP 100000
#define PROG_NFS 100003
#define PROG_MOUNT 100005

#define NFS_FH_LEN 44
#define NFS_MAXDATA (1u << 20)

enum nfsstat3 {
    NFS3_OK = 0,
    NFS3ERR_PERM = 1,
    NFS3ERR_NOENT = 2,
    NFS3ERR_IO = 5,
    NFS3ERR_ACCES = 13,
    NFS3ERR_EXIST = 17,
    NFS3ERR_XDEV = 18,
    NFS3ERR_NOTDIR = 20,
    NFS3ERR_ISDIR = 21,
    NFS3ERR_INVAL = 22,
    NFS3ERR_FBIG = 27,
    NFS3ERR_NOSPC = 28,
    NFS3ERR_ROFS = 30,
    NFS3ERR_MLINK = 31,
    NFS3ERR_NAMETOOLONG = 63,
    NFS3ERR_NOTEMPTY = 66,
    NFS3ERR_STALE = 70,
    NFS3ERR_BADHANDLE = 10001,
    NFS3ERR_NOT_SYNC = 10002,
    NFS3ERR_BAD_COOKIE = 10003,
    NFS3ERR_NOTSUPP = 10004,
    NFS3ERR_TOOSMALL = 10005,
    NFS3ERR_SERVERFAULT = 10006,
    NFS3ERR_BADTYPE = 10007,
    NFS3ERR_JUKEBOX = 10008,
};

/* One export: a rule from the store, with its bucket split out. */
struct nfs_export {
    struct pl_export rule;
    char bucket[64];
    uint64_t bucket_id; /* resolved when the rules are loaded; 0: no such bucket */
};

/* A decoded file handle. */
struct nfs_fh {
    uint64_t root;  /* the export's root element (the bucket directory) */
    uint64_t id;    /* the element */
    uint64_t view;  /* snapshot epoch; PL_VIEW_LIVE */
    uint64_t top;   /* the directory the client mounted: ".." stops there */
    int snapdir;    /* the virtual ".snapshot" directory of root */
};

/* READDIR cookies name the entry to resume after: a bounded cache maps
 * them back to names (a miss is BAD_COOKIE: the client starts over). */
#define COOKIE_SLOTS 16384
struct cookie_slot {
    uint64_t cookie, dir;
    char name[PL_NAME_MAX + 1];
};

#define NFS_MOUNTS_MAX 256
struct nfs_mount {
    uint32_t addr;
    char path[256];
};

struct nfs_ctx {
    struct pl_store *st;
    uint8_t fh_key[32];
    uint8_t write_verf[8]; /* new at every start: clients resend uncommitted data */
    pthread_mutex_t lock;  /* guards exports, cookies, the reply cache */
    struct nfs_export *exports; /* the store's rules, reloaded every second */
    size_t nexports;
    int64_t exports_at;
    int default_exports;   /* no rule configured: every bucket, loopback, rw */
    struct cookie_slot *cookies;
    struct drc_slot *drc;
    struct wb *wb;         /* write-back of UNSTABLE writes (wb.c) */
    struct nfs_prefetch *pf; /* next READs of sequential readers (prefetch.c) */
    struct nfs_mount mounts[NFS_MOUNTS_MAX]; /* what DUMP reports */
    size_t nmounts;
    int ports[3];          /* nfs, mount, portmap: what GETPORT answers */
    uint32_t addrs[3];     /* their bound addresses (host order; 0: any) */
};

/* ---- prefetch.c: the next READ of a sequential reader, read before it asks ---- */
struct nfs_prefetch;
struct pf_slot;
int nfs_prefetch_new(struct pl_store *st, struct wb *wb, struct nfs_prefetch **ret) PL_WUR;
void nfs_prefetch_free(struct nfs_prefetch *p); /* accepts NULL */
/* A READ of count bytes at off of (id, view) starts, the write-back settled:
 * 1 when the bytes were read ahead (*ret_buf, owned by the caller, *ret_n, and
 * the file's attributes *ret_a), 0 to read them. *ret_slot, when not NULL,
 * goes to nfs_prefetch_end once the READ is done. */
int nfs_prefetch_begin(struct nfs_prefetch *p, uint64_t id, uint64_t view, uint64_t off,
                       uint32_t count, struct pf_slot **ret_slot, uint8_t **ret_buf,
                       size_t *ret_n, struct pl_attr *ret_a);
/* The READ got got bytes of a file of size bytes. */
void nfs_prefetch_end(struct nfs_prefetch *p, struct pf_slot *s, uint64_t off, uint32_t count,
                      size_t got, uint64_t size);

/* A reply: the header and results in hdr (record mark first), then data
 * (READ payload, owned) and its padding, sent without copying. */
struct nfs_reply {
    struct pl_buf hdr;
    uint8_t *data;
    size_t data_n;
};

/* The caller's identity and the export it came through. */
struct nfs_caller {
    struct rpc_cred cred;
    uint32_t addr; /* IPv4, host order */
    uint32_t uid, gid; /* after squashing */
};

/* Run one call; the reply is complete (marked) on return. Returns nonzero
 * only when the call deserves no reply at all. */
int nfs_call(struct nfs_ctx *x, const struct rpc_call *c, uint32_t peer, uint32_t local,
             struct nfs_reply *r);

/* Programs (nfs3.c, mount.c): o holds the accepted reply header already;
 * the results follow. They return RPC_SUCCESS, or RPC_GARBAGE_ARGS /
 * RPC_PROC_UNAVAIL (the caller then replaces the reply). */
int nfs3_dispatch(struct nfs_ctx *x, const struct rpc_call *c, uint32_t peer, struct xdr_out *o,
                  struct nfs_reply *r);
int mount3_dispatch(struct nfs_ctx *x, const struct rpc_call *c, uint32_t peer,
                    struct xdr_out *o);
int portmap_dispatch(struct nfs_ctx *x, const struct rpc_call *c, struct xdr_out *o);
/* RPCBIND v3 and v4 (RFC 1833) on the same port: libtirpc clients (showmount,
 * rpcinfo) ask these before PORTMAP v2. local: the address the call came to. */
int rpcbind_dispatch(struct nfs_ctx *x, const struct rpc_call *c, uint32_t local,
                     struct xdr_out *o);
/* Resolve a mount path below bucket directory root, through .snapshot
 * directories too (nfs3.c). */
int nfs_path_walk(struct nfs_ctx *x, uint64_t root, const char *path, struct nfs_fh *ret);
/* Store errors as nfsstat3 (nfs3.c). */
uint32_t nfs_status(int rc);

/* Exports (mount.c). */
int nfs_exports_init(struct nfs_ctx *x);
/* The export of root for this client, or PL_EACCES. */
int nfs_export_for(struct nfs_ctx *x, uint64_t root, uint32_t peer, struct nfs_export *ret);
/* The export path names for this client and the directory it resolves to. */
int nfs_export_match(struct nfs_ctx *x, const char *path, uint32_t peer, struct nfs_export *ret,
                     struct nfs_fh *ret_fh);

void nfs_fh_encode(const struct nfs_ctx *x, const struct nfs_fh *fh, uint8_t out[NFS_FH_LEN]);
int nfs_fh_decode(const struct nfs_ctx *x, const uint8_t *p, uint32_t n, struct nfs_fh *ret);


#endif

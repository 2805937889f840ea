/* XDR (RFC 4506) and ONC RPC v2 (RFC 5531) over TCP record marking: pure
 * codecs, bytes in and values out, so they can be fuzzed. */
#ifndef PL_XDR_H
#define PL_XDR_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* ---- decoding: a cursor that turns sticky-bad on the first short read ---- */
struct xdr_in {
    const uint8_t *p;
    size_t n, off;
    int bad;
};
void xdr_in_init(struct xdr_in *x, const void *p, size_t n);
uint32_t xdr_u32(struct xdr_in *x);
uint64_t xdr_u64(struct xdr_in *x);
/* Variable-length opaque of at most max bytes: a view into the input. */
const uint8_t *xdr_opaque(struct xdr_in *x, uint32_t max, uint32_t *ret_n);
/* Fixed-length opaque (padded to 4). */
const uint8_t *xdr_fixed(struct xdr_in *x, uint32_t n);
/* A string of at most max bytes copied into out (capacity max + 1, NUL
 * terminated); a string holding a NUL makes the input bad. */
void xdr_string(struct xdr_in *x, char *out, uint32_t max);
static inline int xdr_ok(const struct xdr_in *x)
{
    return !x->bad;
}

/* ---- encoding into a pl_buf; errors (out of memory) are sticky ---- */
struct xdr_out {
    struct pl_buf *b;
    int bad;
};
void xdr_put_u32(struct xdr_out *o, uint32_t v);
void xdr_put_u64(struct xdr_out *o, uint64_t v);
void xdr_put_opaque(struct xdr_out *o, const void *p, uint32_t n);
void xdr_put_fixed(struct xdr_out *o, const void *p, uint32_t n);
void xdr_put_string(struct xdr_out *o, const char *s);

/* ---- RPC ---- */
#define RPC_CALL 0
#define RPC_REPLY 1
#define RPC_AUTH_NONE 0
#define RPC_AUTH_SYS 1
#define RPC_MAX_RECORD (2u << 20) /* a 1 MiB WRITE and its header, with room */
#define RPC_LAST_FRAG 0x80000000u

enum rpc_accept {
    RPC_SUCCESS = 0,
    RPC_PROG_UNAVAIL = 1,
    RPC_PROG_MISMATCH = 2,
    RPC_PROC_UNAVAIL = 3,
    RPC_GARBAGE_ARGS = 4,
    RPC_SYSTEM_ERR = 5,
};
enum rpc_auth_stat { RPC_AUTH_BADCRED = 1, RPC_AUTH_TOOWEAK = 5 };

struct rpc_cred {
    uint32_t flavor;
    uint32_t uid, gid;
    uint32_t gids[16];
    uint32_t ngids;
    char machine[256];
};

struct rpc_call {
    uint32_t xid, prog, vers, proc;
    struct rpc_cred cred;
    struct xdr_in args; /* the procedure's arguments */
};

/* Decode a call message (a whole record). PL_EPROTO when it is not a call
 * we can answer at all (not a CALL, garbage header: drop it); PL_EINVAL
 * for rpcvers != 2 (answer RPC_MISMATCH); PL_EACCES for a malformed or
 * unsupported credential (answer AUTH_ERROR). ret->xid is set whenever the
 * result is not PL_EPROTO. */
int rpc_call_decode(const uint8_t *p, size_t n, struct rpc_call *ret) PL_WUR;

/* The reply header up to (not including) the results: record mark
 * placeholder, xid, MSG_ACCEPTED, null verifier, accept status; with
 * PROG_MISMATCH also the low and high versions. */
void rpc_reply_accepted(struct xdr_out *o, uint32_t xid, uint32_t stat, uint32_t lo, uint32_t hi);
/* MSG_DENIED: RPC_MISMATCH (auth_stat < 0) or AUTH_ERROR. */
void rpc_reply_denied(struct xdr_out *o, uint32_t xid, int auth_stat);
/* Fill in the record mark of a reply built in b (one fragment) whose total
 * length, including extra bytes sent after b, is b->len + extra. */
void rpc_reply_mark(struct pl_buf *b, size_t extra);

/* Split a TCP stream into records: feed bytes, take out whole records.
 * Fragments are joined; a record over max is an error. */
struct rpc_reader {
    struct pl_buf rec;  /* the record being assembled */
    uint8_t hdr[4];
    uint32_t hdr_have;
    uint32_t frag_left; /* bytes of the current fragment still to come */
    int last;           /* the current fragment ends the record */
    int in_frag;
    uint32_t max;
};
void rpc_reader_init(struct rpc_reader *r, uint32_t max);
void rpc_reader_release(struct rpc_reader *r);
/* Consume bytes from p[0..n); stop after a record completes (*ret_done 1:
 * the record is in r->rec until the next call). *ret_used gets the bytes
 * consumed. PL_ERANGE when a record would pass max; PL_ENOMEM. */
int rpc_reader_feed(struct rpc_reader *r, const uint8_t *p, size_t n, size_t *ret_used,
                    int *ret_done) PL_WUR;

#endif

/* libFuzzer: ONC RPC record marking (fed in pieces of varying size), call
 * headers and credentials, and XDR argument shapes NFSv3 uses. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/nfs/xdr.h"

static void args_walk(struct xdr_in *x, uint32_t shape)
{
    char name[257];
    uint32_t n;
    switch (shape % 5) {
    case 0: /* diropargs: handle, name */
        (void)xdr_opaque(x, 64, &n);
        xdr_string(x, name, 256);
        break;
    case 1: /* WRITE: handle, offset, count, stable, data */
        (void)xdr_opaque(x, 64, &n);
        (void)xdr_u64(x);
        (void)xdr_u32(x);
        (void)xdr_u32(x);
        (void)xdr_opaque(x, 1u << 20, &n);
        break;
    case 2: /* sattr3 */
        for (int i = 0; i < 4; i++)
            if (xdr_u32(x))
                (void)(i == 3 ? xdr_u64(x) : xdr_u32(x));
        for (int i = 0; i < 2; i++)
            if (xdr_u32(x) == 2)
                (void)xdr_fixed(x, 8);
        break;
    case 3: /* RPCBIND's rpcb: program, version, netid, address, owner */
        (void)xdr_u32(x);
        (void)xdr_u32(x);
        for (int i = 0; i < 3; i++)
            xdr_string(x, name, i ? 128 : 64);
        break;
    default: /* READDIRPLUS */
        (void)xdr_opaque(x, 64, &n);
        (void)xdr_u64(x);
        (void)xdr_fixed(x, 8);
        (void)xdr_u32(x);
        (void)xdr_u32(x);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct rpc_reader r;
    rpc_reader_init(&r, 1u << 16);
    size_t off = 0, step = n ? (size_t)data[0] % 17 + 1 : 1;
    while (off < n) {
        size_t used;
        int done;
        size_t k = step < n - off ? step : n - off;
        if (rpc_reader_feed(&r, data + off, k, &used, &done))
            break;
        off += used;
        if (done) {
            struct rpc_call c;
            if (rpc_call_decode((const uint8_t *)r.rec.data, r.rec.len, &c) == 0)
                args_walk(&c.args, c.proc);
        }
    }
    rpc_reader_release(&r);
    /* the whole input as one call, too */
    struct rpc_call c;
    if (rpc_call_decode(data, n, &c) == 0)
        args_walk(&c.args, c.proc);
    return 0;
}

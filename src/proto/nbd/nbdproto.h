/* The NBD protocol's wire formats (newstyle fixed handshake, options,
 * transmission), from the protocol document of the NBD project. Pure: bytes
 * in, values out, so they can be fuzzed. */
#ifndef PL_NBDPROTO_H
#define PL_NBDPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define NBD_MAGIC 0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ull
#define NBD_REQ_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCT_REPLY_MAGIC 0x668e33efu

#define NBD_FLAG_FIXED_NEWSTYLE 1u
#define NBD_FLAG_NO_ZEROES 2u

enum nbd_opt {
    NBD_OPT_EXPORT_NAME = 1,
    NBD_OPT_ABORT = 2,
    NBD_OPT_LIST = 3,
    NBD_OPT_STARTTLS = 5,
    NBD_OPT_INFO = 6,
    NBD_OPT_GO = 7,
    NBD_OPT_STRUCTURED_REPLY = 8,
    NBD_OPT_LIST_META_CONTEXT = 9,
    NBD_OPT_SET_META_CONTEXT = 10,
};

#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR_UNSUP 0x80000001u
#define NBD_REP_ERR_POLICY 0x80000002u
#define NBD_REP_ERR_INVALID 0x80000003u
#define NBD_REP_ERR_UNKNOWN 0x80000006u
#define NBD_REP_ERR_TOO_BIG 0x80000009u

#define NBD_INFO_EXPORT 0
#define NBD_INFO_BLOCK_SIZE 3

#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_CACHE (1u << 10)

enum nbd_cmd {
    NBD_CMD_READ = 0,
    NBD_CMD_WRITE = 1,
    NBD_CMD_DISC = 2,
    NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4,
    NBD_CMD_CACHE = 5,
    NBD_CMD_WRITE_ZEROES = 6,
    NBD_CMD_BLOCK_STATUS = 7,
};

#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)

#define NBD_REPLY_FLAG_DONE 1u
#define NBD_REPLY_TYPE_NONE 0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR 0x8001u

#define NBD_STATE_HOLE 1u
#define NBD_STATE_ZERO 2u

#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u

#define NBD_OPT_MAX (64u << 10)   /* option payloads we read */
#define NBD_REQ_MAX (32u << 20)   /* data in one request */
#define NBD_NAME_MAX 4096

struct nbd_req {
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t len;
};

/* A 28-byte request header. PL_EPROTO on a bad magic. */
int nbd_req_parse(const uint8_t h[28], struct nbd_req *ret) PL_WUR;

/* NBD_OPT_INFO / NBD_OPT_GO data: the export name (NUL-terminated into name,
 * which holds NBD_NAME_MAX + 1) and the information requests. */
int nbd_opt_go_parse(const uint8_t *p, size_t n, char *name, uint16_t *reqs, size_t reqcap,
                     size_t *ret_nreqs) PL_WUR;

/* NBD_OPT_{LIST,SET}_META_CONTEXT data: export name, then queries; cb gets
 * each query (not NUL-terminated) and returns < 0 to stop with that error. */
typedef int (*nbd_query_fn)(void *arg, const char *q, size_t n);
int nbd_opt_meta_parse(const uint8_t *p, size_t n, char *name, nbd_query_fn cb,
                       void *arg) PL_WUR;

/* Big-endian writers for replies. */
void nbd_put16(uint8_t *p, uint16_t v);
void nbd_put32(uint8_t *p, uint32_t v);
void nbd_put64(uint8_t *p, uint64_t v);

#endif

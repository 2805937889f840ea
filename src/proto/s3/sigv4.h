/* AWS Signature Version 4 for S3: parsing, canonicalization, verification.
 * Pure functions (no sockets, no store) so they can be fuzzed. */
#ifndef PL_S3_SIGV4_H
#define PL_S3_SIGV4_H

#include <stdint.h>
#include <time.h>

#include "base/base.h"
#include "proto/http/http.h"

#define S3_SHA256_HEX 65

struct s3_auth {
    char access_key[64];
    char scope_date[9];    /* YYYYMMDD */
    char region[64];
    char service[16];
    char signed_headers[1024];
    char signature[S3_SHA256_HEX];
    char amz_date[17];     /* YYYYMMDDTHHMMSSZ */
    int presigned;
    int64_t expires;       /* presigned: seconds */
    char payload_hash[80]; /* x-amz-content-sha256 value, or UNSIGNED-PAYLOAD */
};

/* Query string parameters, decoded. */
struct s3_qparam {
    char *name, *value;
};
struct s3_query {
    struct s3_qparam *p;
    int n;
    struct pl_buf store;
};
/* Split and percent-decode a raw query string ("a=1&b"). */
int s3_query_parse(const char *raw, struct s3_query *q) PL_WUR;
void s3_query_release(struct s3_query *q);
const char *s3_query_get(const struct s3_query *q, const char *name);
int s3_query_has(const struct s3_query *q, const char *name);

/* Percent-decode src into out (NUL-terminated). PL_EINVAL on bad escapes or NUL. */
int s3_uri_decode(const char *src, size_t n, struct pl_buf *out) PL_WUR;
/* AWS URI encoding: unreserved kept, everything else %XX; '/' kept when keep_slash. */
int s3_uri_encode(const char *src, size_t n, int keep_slash, struct pl_buf *out) PL_WUR;

/* Fill a from an Authorization header or presigned query parameters.
 * PL_EPERM: no credentials at all (anonymous). PL_EINVAL: malformed. */
int s3_auth_parse(const struct http_req *r, const struct s3_query *q, struct s3_auth *a) PL_WUR;

/* The canonical request for a (S3 flavour: path encoded once). */
int s3_canonical_request(const struct http_req *r, const char *path_raw, const struct s3_query *q,
                         const struct s3_auth *a, struct pl_buf *out) PL_WUR;
/* String to sign from a canonical request. */
int s3_string_to_sign(const struct s3_auth *a, const struct pl_buf *creq, struct pl_buf *out) PL_WUR;
void s3_signing_key(const char *secret, const struct s3_auth *a, uint8_t key[32]);
void s3_hmac_hex(const uint8_t key[32], const char *msg, size_t n, char out[S3_SHA256_HEX]);
void s3_sha256_hex(const void *p, size_t n, char out[S3_SHA256_HEX]);
/* Constant-time comparison of two signatures. */
int s3_sig_equal(const char *a, const char *b);
/* Parse YYYYMMDDTHHMMSSZ into unix seconds; -1 when malformed. */
int64_t s3_amz_time(const char *s);

/* ---- aws-chunked bodies ----
 * Incremental decoder: feed raw body bytes, get payload bytes through emit.
 * Verifies each chunk's signature when signing is on (seed signature from the
 * request), and collects trailing headers (x-amz-checksum-*). */
struct s3_chunked {
    int state;
    char line[4200];
    size_t ll;
    uint64_t remaining;
    int sign;                  /* verify chunk signatures */
    uint8_t key[32];
    char prev_sig[S3_SHA256_HEX];
    char chunk_sig[S3_SHA256_HEX];
    char scope_line[256];      /* "date\nscope" part of the string to sign */
    void *sha;                 /* EVP_MD_CTX of the current chunk */
    char trailer_name[64], trailer_value[128];
    int done;
    uint64_t decoded;
};
typedef int (*s3_emit_fn)(void *arg, const uint8_t *p, size_t n);
int s3_chunked_init(struct s3_chunked *d, int sign, const uint8_t key[32], const struct s3_auth *a,
                    const char *seed_sig) PL_WUR;
void s3_chunked_release(struct s3_chunked *d);
/* Returns bytes consumed (all of n) or < 0: PL_EPROTO malformed framing,
 * PL_EACCES a chunk signature that does not match. */
ssize_t s3_chunked_feed(struct s3_chunked *d, const uint8_t *p, size_t n, s3_emit_fn emit,
                        void *arg);

#endif

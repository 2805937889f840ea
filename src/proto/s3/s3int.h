/* Internals of the S3 head shared by its files:
 *   s3.c     routing, authentication, the request machine, lifecycle
 *   s3obj.c  buckets, objects, listing, copy
 *   s3mpu.c  multipart uploads and tagging
 * Everything named s3_op_* or s3_*_prepare/finish runs on a pool thread with
 * the request to itself; the loop thread does not touch it meanwhile. */
#ifndef PL_S3INT_H
#define PL_S3INT_H

#include <http_parser.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <uv.h>

#include "base/base.h"
#include "proto/http/http.h"
#include "proto/s3/s3.h"
#include "proto/s3/s3err.h"
#include "proto/s3/s3xml.h"
#include "proto/s3/sigv4.h"

#define BODY_BATCH (1u << 20)
#define XML_BODY_MAX (2u << 20)
#define READ_PIECE (4u << 20)
#define MAX_PUT (5ull << 30)
#define SKEW_SEC (15 * 60)

struct s3_err_row {
    const char *code;
    int status;
    const char *msg;
};


enum s3_op {
    OP_NONE,
    OP_LIST_BUCKETS,
    OP_CREATE_BUCKET,
    OP_DELETE_BUCKET,
    OP_HEAD_BUCKET,
    OP_BUCKET_LOCATION,
    OP_GET_VERSIONING,
    OP_PUT_VERSIONING,
    OP_GET_NOTIFICATION,
    OP_PUT_NOTIFICATION,
    OP_LIST_OBJECTS,
    OP_LIST_OBJECTS_V2,
    OP_LIST_VERSIONS,
    OP_DELETE_OBJECTS,
    OP_PUT_OBJECT,
    OP_COPY_OBJECT,
    OP_GET_OBJECT,
    OP_HEAD_OBJECT,
    OP_DELETE_OBJECT,
    OP_UNSUPPORTED,
    OP_CREATE_MPU,
    OP_UPLOAD_PART,
    OP_UPLOAD_PART_COPY,
    OP_COMPLETE_MPU,
    OP_ABORT_MPU,
    OP_LIST_PARTS,
    OP_LIST_MPUS,
    OP_GET_TAGGING,
    OP_PUT_TAGGING,
    OP_DELETE_TAGGING,
    OP_COUNT
};


enum body_mode { BODY_NONE, BODY_COLLECT, BODY_STREAM };

struct s3_server {
    struct pl_store *st;
    uv_loop_t loop;
    uv_async_t stop_async;
    pthread_t thr;
    struct http_server *http;
    char domain[256];
    char region[64];
    int port;
    struct broker *broker; /* bucket notifications; NULL: none offered */
};

struct s3_req {
    struct s3_server *srv;
    struct http_conn *c;
    struct http_req *hr;
    uv_work_t work;
    int busy;    /* a pool job holds this request */
    int writing; /* a response write that names this request is in flight */
    int fast; /* no body: auth and op run in one job */
    int closed;
    enum s3_op op;
    int is_head;
    int pinned; /* attr.id is pinned for the body's duration */
    uint64_t t0;
    char req_id[17];
    /* target */
    char *path_raw, *query_raw;
    struct s3_query q;
    char bucket[64];
    struct pl_buf key;
    /* auth */
    struct s3_auth auth;
    char user[64];
    uint8_t sigkey[32];
    /* body */
    enum body_mode mode;
    struct pl_buf body, batch;
    int end_pending;
    /* upload */
    struct pl_writer *w;
    int aws_chunked;
    struct s3_chunked ck;
    EVP_MD_CTX *payload_sha; /* x-amz-content-sha256 verification */
    EVP_MD_CTX *cks_md;      /* x-amz-checksum-sha1 / sha256 */
    uint32_t cks_crc;
    char cks_name[32];       /* "crc32", "crc32c", "sha1", "sha256" or "" */
    uint64_t received;
    /* response */
    enum s3_err err;
    int err_pl;              /* the store's error behind err, for the log */
    const char *err_detail;
    int keep_head;           /* an error that still carries r->head (delete markers) */
    int status;
    struct pl_buf head, xml;
    /* get */
    struct pl_attr attr;
    uint64_t pos, end;
    uint8_t *piece;   /* loop thread: the next piece to send */
    size_t piece_n;
    uint8_t *rd_buf;  /* pool thread: the piece being read */
    size_t rd_n;
    uint64_t rd_off;
};

extern const struct s3_err_row s3_err_rows[];
extern const char *const s3_op_names[];

/* ---- helpers (s3.c) ---- */
int s3_xml_esc(struct pl_buf *b, const char *s) PL_WUR;
void s3_iso8601(int64_t ns, char *out, size_t n);
enum s3_err s3_map_err(int rc);
/* Record the first error of a request (later ones do not overwrite it). */
void s3_fail(struct s3_req *r, enum s3_err e, int plrc);
int s3_b64_decode(const char *in, uint8_t *out, size_t outn, size_t *ret_n) PL_WUR;
void s3_b64_encode(const uint8_t *in, size_t n, char *out);
void s3_authenticate(struct s3_req *r);

/* ---- buckets, objects, listing, copy (s3obj.c; pool thread) ---- */
int s3_meta_from_headers(struct http_req *h, struct pl_buf *store, const char ***out) PL_WUR;
int s3_meta_to_headers(struct pl_store *st, const struct pl_attr *a, struct pl_buf *out,
                       struct http_req *h, const struct s3_query *q) PL_WUR;
int s3_bucket_exists(struct s3_req *r);
void s3_op_list_buckets(struct s3_req *r);
void s3_op_create_bucket(struct s3_req *r);
void s3_op_delete_bucket(struct s3_req *r);
void s3_op_head_bucket(struct s3_req *r);
void s3_op_location(struct s3_req *r);
void s3_op_get_versioning(struct s3_req *r);
void s3_op_put_versioning(struct s3_req *r);
void s3_op_get_notification(struct s3_req *r);
void s3_op_put_notification(struct s3_req *r);
void s3_op_list_versions(struct s3_req *r);
/* Look up bucket/key at version vid (NULL: latest) for a read; on failure
 * the S3 error (with delete marker headers where S3 sends them) is set. */
int s3_lookup(struct s3_req *r, const char *bucket, const char *key, const char *vid,
              struct pl_attr *ret);
/* x-amz-version-id for a write that made version v in r->bucket. */
int s3_version_header(struct s3_req *r, uint64_t v) PL_WUR;
void s3_op_list_objects(struct s3_req *r);
void s3_put_prepare(struct s3_req *r);
void s3_body_feed(struct s3_req *r, const struct pl_buf *b);
void s3_put_finish(struct s3_req *r);
int64_t s3_http_time(const char *s);
int s3_etag_matches(const char *hdr, const char *etag);
void s3_get_prepare(struct s3_req *r);
void s3_get_read(struct s3_req *r);
void s3_op_delete_object(struct s3_req *r);
void s3_op_delete_objects(struct s3_req *r);
int s3_copy_source(struct s3_req *r, char sbucket[64], const char **skey, const char **svid,
                   struct pl_buf *dec);
int s3_copy_range(struct s3_req *r, uint64_t id, uint64_t from, uint64_t to, struct pl_writer *w);
void s3_copy_result(struct s3_req *r, const char *root, int64_t mtime, const char *etag);
void s3_op_copy_object(struct s3_req *r);

/* ---- multipart and tagging (s3mpu.c; pool thread) ---- */
enum s3_err s3_mpu_err(int rc);
int s3_mpu_part_open(struct s3_req *r, struct pl_writer **ret);
void s3_op_tagging(struct s3_req *r);
void s3_op_create_mpu(struct s3_req *r);
void s3_op_complete_mpu(struct s3_req *r);
void s3_op_abort_mpu(struct s3_req *r);
void s3_op_list_parts(struct s3_req *r);
void s3_op_list_mpus(struct s3_req *r);
void s3_op_upload_part_copy(struct s3_req *r);

#endif

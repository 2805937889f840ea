/* The S3 head.
 *
 * Design note: a request's life
 *   loop: on_head -> parse target, route to an op -> queue W_AUTH
 *   pool: W_AUTH   verify SigV4 (secret from the store); for uploads open the
 *                  store writer
 *   loop: after    error -> respond; else 100-continue and read the body
 *   loop: on_body  collect (XML bodies) or batch (object bytes, 1 MiB); a full
 *                  batch pauses reading and queues W_BODY (decode aws-chunked,
 *                  verify chunk signatures and payload hash, write)
 *   loop: on_body_end -> queue W_EXEC (commit, or run the op)
 *   loop: after    write the response; GET bodies stream through W_READ jobs,
 *                  one at a time, each queued when the previous write is done
 * The loop thread never hashes, compresses or touches the store.
 */
#include "proto/s3/s3int.h"

#include <pthread.h>

const struct s3_err_row s3_err_rows[] = {
#define S3_ERR_ROW(e, code, status, msg) {code, status, msg},
    S3_ERRORS(S3_ERR_ROW)
#undef S3_ERR_ROW
};

const char *const s3_op_names[] = {
    "none", "ListBuckets", "CreateBucket", "DeleteBucket", "HeadBucket", "GetBucketLocation",
    "GetBucketVersioning", "PutBucketVersioning", "GetBucketNotificationConfiguration",
    "PutBucketNotificationConfiguration", "ListObjects", "ListObjectsV2",
    "ListObjectVersions", "DeleteObjects", "PutObject", "CopyObject", "GetObject", "HeadObject",
    "DeleteObject", "Unsupported", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts", "ListMultipartUploads", "GetTagging", "PutTagging",
    "DeleteTagging",
};
_Static_assert(sizeof(s3_op_names) / sizeof(s3_op_names[0]) == OP_COUNT,
               "one name per operation, in enum order");

static void req_free(struct s3_req *r);
static void respond(struct s3_req *r);

/* ---- small helpers ---- */
int s3_xml_esc(struct pl_buf *b, const char *s)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        switch (*s) {
        case '&': rc = pl_buf_addstr(b, "&amp;"); break;
        case '<': rc = pl_buf_addstr(b, "&lt;"); break;
        case '>': rc = pl_buf_addstr(b, "&gt;"); break;
        case '"': rc = pl_buf_addstr(b, "&quot;"); break;
        case '\'': rc = pl_buf_addstr(b, "&apos;"); break;
        default:
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n' && *s != '\r')
                rc = pl_buf_addf(b, "&#x%X;", (unsigned char)*s);
            else
                rc = pl_buf_add(b, s, 1);
        }
    }
    return rc;
}

void s3_iso8601(int64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + l, n - l, ".%03dZ", (int)((ns / 1000000) % 1000));
}

enum s3_err s3_map_err(int rc)
{
    switch (rc) {
    case 0: return S3E_NONE;
    case PL_ENOBUCKET: return S3E_NO_BUCKET;
    case PL_ENOENT:
    case PL_EISDIR: return S3E_NO_KEY;
    case PL_ECONFLICT:
    case PL_ENOTDIR: return S3E_KEY_CONFLICT;
    case PL_ENAMETOOLONG: return S3E_KEY_TOO_LONG;
    case PL_EINVAL: return S3E_INVALID_ARGUMENT;
    case PL_ENOSPC: return S3E_NO_SPACE;
    case PL_ECORRUPT: return S3E_CORRUPT;
    case PL_ENOTEMPTY: return S3E_BUCKET_NOT_EMPTY;
    case PL_ENOVERSION: return S3E_NO_VERSION;
    default: return S3E_INTERNAL;
    }
}

void s3_fail(struct s3_req *r, enum s3_err e, int plrc)
{
    if (r->err == S3E_NONE) {
        r->err = e;
        r->err_pl = plrc;
    }
}

/* base64 (for Content-MD5 and checksums) */
int s3_b64_decode(const char *in, uint8_t *out, size_t outn, size_t *ret_n)
{
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    int n1 = 0, n2 = 0;
    size_t il = strlen(in);
    uint8_t tmp[128];
    if (!ctx || il > 120) {
        EVP_ENCODE_CTX_free(ctx);
        return PL_EINVAL;
    }
    EVP_DecodeInit(ctx);
    int ok = EVP_DecodeUpdate(ctx, tmp, &n1, (const unsigned char *)in, (int)il) >= 0 &&
             EVP_DecodeFinal(ctx, tmp + n1, &n2) == 1;
    EVP_ENCODE_CTX_free(ctx);
    size_t total = (size_t)n1 + (size_t)n2;
    if (!ok || total > outn)
        return PL_EINVAL;
    memcpy(out, tmp, total);
    *ret_n = total;
    return 0;
}

void s3_b64_encode(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* ---- routing ---- */
static void route(struct s3_req *r)
{
    struct http_req *h = r->hr;
    int has_bucket = r->bucket[0] != 0, has_key = r->key.len > 0;
    const struct s3_query *q = &r->q;
    r->is_head = h->method == HTTP_HEAD;
    switch (h->method) {
    case HTTP_GET:
    case HTTP_HEAD:
        if (!has_bucket)
            r->op = r->is_head ? OP_UNSUPPORTED : OP_LIST_BUCKETS;
        else if (has_key)
            r->op = r->is_head ? OP_HEAD_OBJECT : OP_GET_OBJECT;
        else if (r->is_head)
            r->op = OP_HEAD_BUCKET;
        else if (s3_query_has(q, "location"))
            r->op = OP_BUCKET_LOCATION;
        else if (s3_query_has(q, "versioning"))
            r->op = OP_GET_VERSIONING;
        else if (s3_query_has(q, "versions"))
            r->op = OP_LIST_VERSIONS;
        else if (s3_query_has(q, "notification"))
            r->op = OP_GET_NOTIFICATION;
        else if (s3_query_has(q, "uploads"))
            r->op = OP_LIST_MPUS;
        else if (s3_query_has(q, "tagging"))
            r->op = OP_GET_TAGGING;
        else if (s3_query_has(q, "policy") || s3_query_has(q, "acl") ||
                 s3_query_has(q, "lifecycle") || s3_query_has(q, "cors") ||
                 s3_query_has(q, "object-lock"))
            r->op = OP_UNSUPPORTED;
        else if (s3_query_get(q, "list-type") && !strcmp(s3_query_get(q, "list-type"), "2"))
            r->op = OP_LIST_OBJECTS_V2;
        else
            r->op = OP_LIST_OBJECTS;
        if (has_key && s3_query_has(q, "tagging"))
            r->op = r->is_head ? OP_UNSUPPORTED : OP_GET_TAGGING;
        else if (has_key && (s3_query_has(q, "acl") || s3_query_has(q, "retention") ||
                             s3_query_has(q, "legal-hold") || s3_query_has(q, "attributes")))
            r->op = OP_UNSUPPORTED;
        else if (has_key && !r->is_head && s3_query_has(q, "uploadId"))
            r->op = OP_LIST_PARTS;
        break;
    case HTTP_PUT:
        if (!has_key)
            r->op = !has_bucket                   ? OP_UNSUPPORTED
                    : s3_query_has(q, "versioning") ? OP_PUT_VERSIONING
                    : s3_query_has(q, "notification") ? OP_PUT_NOTIFICATION
                    : s3_query_has(q, "tagging")    ? OP_PUT_TAGGING
                    : q->n == 0                    ? OP_CREATE_BUCKET
                                                   : OP_UNSUPPORTED;
        else if (s3_query_has(q, "uploadId") && s3_query_has(q, "partNumber"))
            r->op = http_req_header(h, "x-amz-copy-source") ? OP_UPLOAD_PART_COPY
                                                            : OP_UPLOAD_PART;
        else if (s3_query_has(q, "tagging"))
            r->op = OP_PUT_TAGGING;
        else if (s3_query_has(q, "uploadId") || s3_query_has(q, "acl") ||
                 s3_query_has(q, "retention") || s3_query_has(q, "legal-hold"))
            r->op = OP_UNSUPPORTED;
        else if (http_req_header(h, "x-amz-copy-source"))
            r->op = OP_COPY_OBJECT;
        else
            r->op = OP_PUT_OBJECT;
        break;
    case HTTP_DELETE:
        if (!has_bucket)
            r->op = OP_UNSUPPORTED;
        else if (s3_query_has(q, "tagging"))
            r->op = OP_DELETE_TAGGING;
        else if (!has_key)
            r->op = q->n == 0 ? OP_DELETE_BUCKET : OP_UNSUPPORTED;
        else
            r->op = s3_query_has(q, "uploadId") ? OP_ABORT_MPU : OP_DELETE_OBJECT;
        break;
    case HTTP_POST:
        if (has_bucket && !has_key && s3_query_has(q, "delete"))
            r->op = OP_DELETE_OBJECTS;
        else if (has_key && s3_query_has(q, "uploads"))
            r->op = OP_CREATE_MPU;
        else if (has_key && s3_query_has(q, "uploadId"))
            r->op = OP_COMPLETE_MPU;
        else
            r->op = OP_UNSUPPORTED;
        break;
    default:
        r->op = OP_UNSUPPORTED;
    }
}

/* Split the target into path and query; find bucket and key (path style, or
 * virtual-host style when Host is BUCKET.domain). */
static int parse_target(struct s3_req *r)
{
    const char *t = r->hr->target;
    const char *qm = strchr(t, '?');
    size_t pn = qm ? (size_t)(qm - t) : strlen(t);
    struct pl_buf dec;
    int rc;
    r->path_raw = strndup(t, pn);
    r->query_raw = strdup(qm ? qm + 1 : "");
    if (!r->path_raw || !r->query_raw)
        return PL_ENOMEM;
    if (r->path_raw[0] != '/')
        return PL_EINVAL;
    rc = s3_query_parse(r->query_raw, &r->q);
    if (rc)
        return rc;
    pl_buf_init(&dec);
    rc = s3_uri_decode(r->path_raw, pn, &dec);
    if (rc) {
        pl_buf_release(&dec);
        return rc;
    }
    const char *p = dec.data + 1;
    const char *host = http_req_header(r->hr, "host");
    size_t dl = strlen(r->srv->domain);
    char vbucket[64] = "";
    if (dl && host) {
        char hbuf[300];
        snprintf(hbuf, sizeof(hbuf), "%s", host);
        char *colon = strrchr(hbuf, ':');
        if (colon)
            *colon = 0;
        size_t hl = strlen(hbuf);
        if (hl > dl + 1 && hbuf[hl - dl - 1] == '.' && !strcasecmp(hbuf + hl - dl, r->srv->domain) &&
            hl - dl - 1 < sizeof(vbucket)) {
            memcpy(vbucket, hbuf, hl - dl - 1);
            vbucket[hl - dl - 1] = 0;
        }
    }
    if (vbucket[0]) {
        snprintf(r->bucket, sizeof(r->bucket), "%s", vbucket);
        rc = pl_buf_addstr(&r->key, p);
    } else {
        const char *slash = strchr(p, '/');
        size_t bl = slash ? (size_t)(slash - p) : strlen(p);
        if (bl >= sizeof(r->bucket)) {
            memcpy(r->bucket, p, sizeof(r->bucket) - 1); /* reported as invalid later */
            r->bucket[sizeof(r->bucket) - 1] = 0;
        } else {
            memcpy(r->bucket, p, bl);
            r->bucket[bl] = 0;
        }
        rc = slash ? pl_buf_addstr(&r->key, slash + 1) : 0;
    }
    pl_buf_release(&dec);
    return rc;
}

/* ---- authentication (pool thread) ---- */
void s3_authenticate(struct s3_req *r)
{
    struct pl_buf creq, sts;
    char secret[48], sig[S3_SHA256_HEX];
    int rc = s3_auth_parse(r->hr, &r->q, &r->auth);
    if (rc == PL_EPERM) {
        s3_fail(r, S3E_ACCESS_DENIED, 0); /* anonymous: no policy grants it yet */
        return;
    }
    if (rc == PL_EPROTO) {
        s3_fail(r, S3E_SIGV2, 0);
        return;
    }
    if (rc) {
        s3_fail(r, S3E_AUTH_HEADER, 0);
        return;
    }
    int64_t t = s3_amz_time(r->auth.amz_date), now = pl_now_ns() / 1000000000;
    if (t < 0 || strncmp(r->auth.amz_date, r->auth.scope_date, 8)) {
        s3_fail(r, S3E_AUTH_HEADER, 0);
        return;
    }
    if (r->auth.presigned) {
        if (now > t + r->auth.expires) {
            s3_fail(r, S3E_EXPIRED, 0);
            return;
        }
        if (t > now + SKEW_SEC) {
            s3_fail(r, S3E_SKEWED, 0);
            return;
        }
    } else if (t < now - SKEW_SEC || t > now + SKEW_SEC) {
        s3_fail(r, S3E_SKEWED, 0);
        return;
    }
    rc = pl_key_secret(r->srv->st, r->auth.access_key, secret, r->user);
    if (rc) {
        s3_fail(r, rc == PL_ENOENT ? S3E_INVALID_ACCESS_KEY : S3E_INTERNAL, rc);
        return;
    }
    pl_store_actor("s3", r->user); /* the changes this request makes are the user's */
    pl_buf_init(&creq);
    pl_buf_init(&sts);
    rc = s3_canonical_request(r->hr, r->path_raw, &r->q, &r->auth, &creq);
    if (!rc)
        rc = s3_string_to_sign(&r->auth, &creq, &sts);
    if (!rc) {
        s3_signing_key(secret, &r->auth, r->sigkey);
        s3_hmac_hex(r->sigkey, sts.data, sts.len, sig);
        if (!s3_sig_equal(sig, r->auth.signature)) {
            s3_fail(r, S3E_SIGNATURE, 0);
            /* AWS returns what it signed so a client author can see why */
            pl_buf_reset(&r->xml);
            if (s3_xml_esc(&r->xml, sts.data) == 0) {
                char *d = pl_buf_detach(&r->xml, NULL);
                struct pl_buf tmp;
                pl_buf_init(&tmp);
                if (pl_buf_addf(&tmp, "<StringToSign>%s</StringToSign><CanonicalRequest>", d) ==
                        0 &&
                    s3_xml_esc(&tmp, creq.data) == 0 &&
                    pl_buf_addstr(&tmp, "</CanonicalRequest>") == 0)
                    r->xml = tmp;
                else
                    pl_buf_release(&tmp);
                free(d);
            }
        }
    } else {
        s3_fail(r, S3E_AUTH_HEADER, rc);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    pl_buf_release(&creq);
    pl_buf_release(&sts);
}

/* ---- the request machine (loop thread, except *_work) ---- */
enum job { J_AUTH, J_BODY, J_EXEC, J_READ, J_FAST };

struct job_ctx {
    struct s3_req *r;
    enum job kind;
};

static int s3_op_has_stream_body(enum s3_op op)
{
    return op == OP_PUT_OBJECT || op == OP_UPLOAD_PART;
}

static int s3_op_collects_body(enum s3_op op)
{
    return op == OP_DELETE_OBJECTS || op == OP_CREATE_BUCKET || op == OP_PUT_VERSIONING ||
           op == OP_PUT_NOTIFICATION ||
           op == OP_COMPLETE_MPU || op == OP_PUT_TAGGING;
}

static void exec_op(struct s3_req *r)
{
    if (r->err != S3E_NONE)
        return;
    switch (r->op) {
    case OP_LIST_BUCKETS: s3_op_list_buckets(r); break;
    case OP_CREATE_BUCKET: s3_op_create_bucket(r); break;
    case OP_DELETE_BUCKET: s3_op_delete_bucket(r); break;
    case OP_HEAD_BUCKET: s3_op_head_bucket(r); break;
    case OP_BUCKET_LOCATION: s3_op_location(r); break;
    case OP_GET_VERSIONING: s3_op_get_versioning(r); break;
    case OP_PUT_VERSIONING: s3_op_put_versioning(r); break;
    case OP_GET_NOTIFICATION: s3_op_get_notification(r); break;
    case OP_PUT_NOTIFICATION: s3_op_put_notification(r); break;
    case OP_LIST_OBJECTS:
    case OP_LIST_OBJECTS_V2: s3_op_list_objects(r); break;
    case OP_LIST_VERSIONS: s3_op_list_versions(r); break;
    case OP_DELETE_OBJECTS: s3_op_delete_objects(r); break;
    case OP_PUT_OBJECT:
    case OP_UPLOAD_PART: s3_put_finish(r); break;
    case OP_CREATE_MPU: s3_op_create_mpu(r); break;
    case OP_COMPLETE_MPU: s3_op_complete_mpu(r); break;
    case OP_ABORT_MPU: s3_op_abort_mpu(r); break;
    case OP_LIST_PARTS: s3_op_list_parts(r); break;
    case OP_LIST_MPUS: s3_op_list_mpus(r); break;
    case OP_UPLOAD_PART_COPY: s3_op_upload_part_copy(r); break;
    case OP_GET_TAGGING:
    case OP_PUT_TAGGING:
    case OP_DELETE_TAGGING: s3_op_tagging(r); break;
    case OP_COPY_OBJECT: s3_op_copy_object(r); break;
    case OP_GET_OBJECT:
        s3_get_prepare(r);
        r->rd_off = r->pos;
        if (r->err == S3E_NONE && r->end > r->pos)
            s3_get_read(r);
        break;
    case OP_HEAD_OBJECT: s3_get_prepare(r); break;
    case OP_DELETE_OBJECT: s3_op_delete_object(r); break;
    default: s3_fail(r, S3E_NOT_IMPLEMENTED, 0);
    }
}

static void job_run(uv_work_t *w)
{
    struct job_ctx *j = w->data;
    struct s3_req *r = j->r;
    pl_store_actor("s3", r->user); /* empty until authenticated */
    switch (j->kind) {
    case J_AUTH:
        s3_authenticate(r);
        if (r->err == S3E_NONE && s3_op_has_stream_body(r->op))
            s3_put_prepare(r);
        break;
    case J_BODY:
        s3_body_feed(r, &r->batch);
        pl_buf_reset(&r->batch);
        break;
    case J_EXEC:
        exec_op(r);
        break;
    case J_READ:
        s3_get_read(r);
        break;
    case J_FAST: /* a request without a body: s3_authenticate and run in one hop */
        s3_authenticate(r);
        exec_op(r);
        break;
    }
}

static void job_after(uv_work_t *w, int status);

static void queue_job(struct s3_req *r, enum job kind)
{
    struct job_ctx *j = malloc(sizeof(*j));
    if (!j) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        respond(r);
        return;
    }
    j->r = r;
    j->kind = kind;
    r->work.data = j;
    r->busy = 1;
    http_conn_ref(r->c);
    if (uv_queue_work(&r->srv->loop, &r->work, job_run, job_after)) {
        r->busy = 0;
        http_conn_unref(r->c);
        free(j);
        s3_fail(r, S3E_INTERNAL, PL_EINTERNAL);
        respond(r);
    }
}

static void send_piece(struct s3_req *r);

/* A write naming r was handed to the kernel (or failed): 1 when the caller
 * may go on with r. After a failure the connection closes next and on_close
 * frees r; a request whose connection already closed is freed here. */
static int write_settled(struct s3_req *r, int status)
{
    r->writing = 0;
    if (r->closed) {
        req_free(r);
        return 0;
    }
    return status == 0;
}

/* GET bodies: one read and one write in flight at a time, overlapped. */
static void piece_written(struct http_conn *c, int status, void *arg)
{
    struct s3_req *r = arg;
    if (!write_settled(r, status))
        return;
    if (r->piece_n) {
        send_piece(r); /* the next piece was read while this one was written */
    } else if (r->pos < r->end) {
        if (!r->busy) {
            r->rd_off = r->pos;
            queue_job(r, J_READ);
        }
    } else {
        /* the body is out: this request is over, the connection may go on */
        http_conn_set_data(c, NULL);
        req_free(r);
        http_conn_done(c, 1);
    }
}

static void send_piece(struct s3_req *r)
{
    uint8_t *p = r->piece;
    size_t n = r->piece_n;
    r->piece = NULL;
    r->piece_n = 0;
    r->pos += n;
    /* read the next piece while this one goes out; queued first, so a write
     * that fails at once cannot free the request under us */
    if (r->pos < r->end && !r->busy && !r->closed && !http_conn_closing(r->c)) {
        r->rd_off = r->pos;
        queue_job(r, J_READ);
    }
    r->writing = 1; /* until the write is handed to the kernel */
    http_conn_write_owned(r->c, p, n, piece_written, r);
}

static void job_after(uv_work_t *w, int status)
{
    struct job_ctx *j = w->data;
    struct s3_req *r = j->r;
    enum job kind = j->kind;
    struct http_conn *c = r->c;
    free(j);
    r->busy = 0;
    if (r->rd_n && !r->piece_n) {
        /* the job is over: its piece now belongs to the loop thread */
        free(r->piece);
        r->piece = r->rd_buf;
        r->piece_n = r->rd_n;
        r->rd_buf = NULL;
        r->rd_n = 0;
    }
    if (status == UV_ECANCELED)
        s3_fail(r, S3E_INTERNAL, PL_ESHUTDOWN);
    if (r->closed) {
        req_free(r);
        http_conn_unref(c);
        return;
    }
    switch (kind) {
    case J_AUTH:
        if (r->err != S3E_NONE) {
            respond(r);
            break;
        }
        if (s3_op_has_stream_body(r->op))
            r->mode = BODY_STREAM;
        else if (s3_op_collects_body(r->op))
            r->mode = BODY_COLLECT;
        else
            r->mode = BODY_NONE;
        http_conn_continue(c);
        http_conn_resume(c);
        break;
    case J_BODY:
        if (r->err != S3E_NONE) {
            respond(r); /* the body is not read further: the connection closes */
            break;
        }
        if (r->end_pending) {
            /* the rest arrived while we wrote: finish now */
            struct pl_buf t = r->batch;
            r->batch = r->body;
            r->body = t;
            pl_buf_reset(&r->body);
            queue_job(r, J_EXEC);
        } else {
            http_conn_resume(c);
        }
        break;
    case J_EXEC:
    case J_FAST:
        respond(r);
        break;
    case J_READ:
        if (r->err != S3E_NONE) {
            http_conn_close(c); /* mid-body: a short response tells the client */
            break;
        }
        if (!r->writing)
            send_piece(r); /* else piece_written sends it */
        break;
    }
    http_conn_unref(c);
}

static void on_body(struct http_conn *c, const char *p, size_t n)
{
    struct s3_req *r = http_conn_get_data(c);
    if (!r || r->mode == BODY_NONE)
        return; /* a body nobody asked for is skipped */
    if (r->mode == BODY_COLLECT && r->body.len + n > XML_BODY_MAX) {
        s3_fail(r, S3E_MALFORMED_XML, 0);
        r->mode = BODY_NONE;
        return;
    }
    if (pl_buf_add(&r->body, p, n)) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        r->mode = BODY_NONE;
        return;
    }
    if (r->mode == BODY_STREAM && r->body.len >= BODY_BATCH && !r->busy) {
        struct pl_buf t = r->batch; /* empty: the last job drained it */
        r->batch = r->body;
        r->body = t;
        http_conn_pause(c);
        queue_job(r, J_BODY);
    }
}

static void on_body_end(struct http_conn *c)
{
    struct s3_req *r = http_conn_get_data(c);
    if (!r || r->fast)
        return; /* a fast request's job responds by itself */
    if (r->err != S3E_NONE) {
        respond(r);
        return;
    }
    if (r->busy) {
        r->end_pending = 1; /* J_BODY's completion continues */
        return;
    }
    struct pl_buf t = r->batch;
    r->batch = r->body;
    r->body = t;
    if (r->mode == BODY_COLLECT) {
        t = r->body;
        r->body = r->batch; /* collect ops read r->body */
        r->batch = t;
    }
    queue_job(r, J_EXEC);
}

static void req_free(struct s3_req *r)
{
    if (!r || r->busy || r->writing)
        return;
    pl_writer_abort(r->w);
    if (r->pinned)
        pl_elem_unpin(r->srv->st, r->attr.id);
    if (r->aws_chunked)
        s3_chunked_release(&r->ck);
    EVP_MD_CTX_free(r->payload_sha);
    EVP_MD_CTX_free(r->cks_md);
    free(r->path_raw);
    free(r->query_raw);
    s3_query_release(&r->q);
    pl_buf_release(&r->key);
    pl_buf_release(&r->body);
    pl_buf_release(&r->batch);
    pl_buf_release(&r->head);
    pl_buf_release(&r->xml);
    free(r->piece);
    free(r->rd_buf);
    free(r);
}

static void access_log(struct s3_req *r, int status)
{
    uint64_t ns = pl_mono_ns() - r->t0;
    double ms = (double)ns / 1e6;
    uint64_t out = r->op == OP_GET_OBJECT && r->err == S3E_NONE ? r->end - r->pos : r->xml.len;
    pl_metrics_observe(pl_metrics_slot("s3", s3_op_names[r->op]), ns, status >= 400, r->received,
                       out);
    if (r->err != S3E_NONE && status >= 500)
        pl_log(PL_LOG_WARN, "s3", "peer=%s op=%s bucket=%s key=%s status=%d code=%s err=%s ms=%.1f",
               http_conn_peer(r->c), s3_op_names[r->op], r->bucket, r->key.data, status,
               s3_err_rows[r->err].code, pl_errname(r->err_pl), ms);
    else
        pl_log(PL_LOG_DEBUG, "s3", "peer=%s op=%s bucket=%s key=%s status=%d ms=%.1f",
               http_conn_peer(r->c), s3_op_names[r->op], r->bucket, r->key.data, status, ms);
}

static void response_done(struct http_conn *c, int status, void *arg)
{
    struct s3_req *r = arg;
    if (!write_settled(r, status))
        return;
    http_conn_set_data(c, NULL);
    int keep = r->err == S3E_NONE || r->mode != BODY_STREAM;
    req_free(r);
    http_conn_done(c, keep);
}

/* Build and send the response head (and XML body or first GET piece). */
static void respond(struct s3_req *r)
{
    struct pl_buf out, body;
    char date[40];
    int status = r->status ? r->status : 200;
    pl_buf_init(&out);
    pl_buf_init(&body);
    http_date(pl_now_ns() / 1000000000, date, sizeof(date));
    if (r->err != S3E_NONE) {
        const struct s3_err_row *e = &s3_err_rows[r->err];
        status = e->status;
        if (status != 304 && !r->is_head) {
            int rc = pl_buf_addf(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s"
                                        "</Code><Message>",
                                 e->code);
            rc |= s3_xml_esc(&body, r->err_detail ? r->err_detail : e->msg);
            rc |= pl_buf_addstr(&body, "</Message>");
            if (r->bucket[0]) {
                rc |= pl_buf_addstr(&body, "<BucketName>");
                rc |= s3_xml_esc(&body, r->bucket);
                rc |= pl_buf_addstr(&body, "</BucketName>");
            }
            if (r->key.len) {
                rc |= pl_buf_addstr(&body, "<Key>");
                rc |= s3_xml_esc(&body, r->key.data);
                rc |= pl_buf_addstr(&body, "</Key>");
            }
            if (r->err == S3E_SIGNATURE && r->xml.len)
                rc |= pl_buf_add(&body, r->xml.data, r->xml.len);
            if (r->err == S3E_INVALID_ACCESS_KEY) {
                rc |= pl_buf_addstr(&body, "<AWSAccessKeyId>");
                rc |= s3_xml_esc(&body, r->auth.access_key);
                rc |= pl_buf_addstr(&body, "</AWSAccessKeyId>");
            }
            rc |= pl_buf_addstr(&body, "<Resource>");
            rc |= s3_xml_esc(&body, r->path_raw ? r->path_raw : "/");
            rc |= pl_buf_addf(&body, "</Resource><RequestId>%s</RequestId></Error>", r->req_id);
            if (rc)
                pl_buf_reset(&body);
        }
        /* keep only headers that make sense on errors (Content-Range on 416) */
        if (r->err != S3E_INVALID_RANGE && !r->keep_head)
            pl_buf_reset(&r->head);
    } else if (r->xml.len) {
        if (pl_buf_addstr(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n") ||
            pl_buf_add(&body, r->xml.data, r->xml.len))
            status = 500;
    }
    int streaming = r->err == S3E_NONE && (r->op == OP_GET_OBJECT || r->op == OP_HEAD_OBJECT);
    int rc = pl_buf_addf(&out, "HTTP/1.1 %d %s\r\nx-amz-request-id: %s\r\nDate: %s\r\n"
                               "Server: Plenum\r\n",
                         status, http_status_text(status), r->req_id, date);
    if (!rc)
        rc = pl_buf_add(&out, r->head.data, r->head.len);
    if (!rc && !streaming) {
        if (body.len)
            rc = pl_buf_addstr(&out, "Content-Type: application/xml\r\n");
        if (!rc && status != 304 && status != 204)
            rc = pl_buf_addf(&out, "Content-Length: %zu\r\n", r->is_head ? 0 : body.len);
    }
    int keep = !(r->err != S3E_NONE && r->mode == BODY_STREAM);
    if (!rc && !keep)
        rc = pl_buf_addstr(&out, "Connection: close\r\n");
    if (!rc)
        rc = pl_buf_add(&out, "\r\n", 2);
    if (!rc && !r->is_head)
        rc = pl_buf_add(&out, body.data, body.len);
    access_log(r, status);
    pl_buf_release(&body);
    if (rc) {
        pl_buf_release(&out);
        http_conn_close(r->c);
        return;
    }
    size_t n;
    char *p = pl_buf_detach(&out, &n);
    if (streaming && !r->is_head && r->end > r->pos) {
        if (r->pos + r->piece_n == r->end && r->piece_n <= 65536) {
            /* a small body goes out with its head: one write, one callback */
            char *both = realloc(p, n + r->piece_n);
            if (both) {
                size_t total = n + r->piece_n;
                memcpy(both + n, r->piece, r->piece_n);
                r->pos = r->end;
                r->piece_n = 0; /* sent: piece_written must not send it again */
                r->writing = 1;
                http_conn_write_owned(r->c, both, total, piece_written, r);
                return;
            }
        }
        http_conn_write_owned(r->c, p, n, NULL, NULL);
        send_piece(r);
        return;
    }
    r->writing = 1;
    http_conn_write_owned(r->c, p, n, response_done, r);
}

static void on_head(struct http_conn *c, struct http_req *hr)
{
    struct s3_server *s = http_server_ctx(http_conn_server(c));
    struct s3_req *r = calloc(1, sizeof(*r));
    static uint64_t seq;
    if (!r) {
        http_conn_close(c);
        return;
    }
    r->srv = s;
    r->c = c;
    r->hr = hr;
    r->t0 = pl_mono_ns();
    pl_buf_init(&r->key);
    pl_buf_init(&r->body);
    pl_buf_init(&r->batch);
    pl_buf_init(&r->head);
    pl_buf_init(&r->xml);
    snprintf(r->req_id, sizeof(r->req_id), "%016" PRIX64,
             (uint64_t)((uint64_t)pl_now_ns() ^ (++seq * 0x9e3779b97f4a7c15ull)));
    http_conn_set_data(c, r);
    if (parse_target(r)) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "The request target could not be parsed";
        respond(r);
        return;
    }
    route(r);
    if (r->op == OP_UNSUPPORTED) {
        s3_fail(r, S3E_NOT_IMPLEMENTED, 0);
        respond(r);
        return;
    }
    if (!s3_op_has_stream_body(r->op) && !s3_op_collects_body(r->op) && hr->content_length <= 0 &&
        !hr->chunked) {
        r->fast = 1;
        r->mode = BODY_NONE;
        queue_job(r, J_FAST);
        http_conn_resume(c); /* let the codec finish the (empty) message */
        return;
    }
    queue_job(r, J_AUTH);
}

static void on_close(struct http_conn *c)
{
    struct s3_req *r = http_conn_get_data(c);
    http_conn_set_data(c, NULL);
    if (!r)
        return;
    r->closed = 1;
    req_free(r); /* no-op while a job or write holds it; they free it */
}

static const struct http_conn_ops s3_ops = {on_head, on_body, on_body_end, on_close};

/* ---- lifecycle ---- */
static void on_stop(uv_async_t *a)
{
    struct s3_server *s = a->data;
    http_server_stop(s->http);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
}

static void *loop_main(void *arg)
{
    struct s3_server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

int s3_start(struct pl_store *st, const struct s3_opts *o, struct s3_server **ret)
{
    struct s3_server *s = calloc(1, sizeof(*s));
    int rc;
    if (!s)
        return PL_ENOMEM;
    s->st = st;
    snprintf(s->domain, sizeof(s->domain), "%s", o->domain ? o->domain : "");
    snprintf(s->region, sizeof(s->region), "%s", o->region ? o->region : "us-east-1");
    s->broker = o->broker;
    s3_xml_init(); /* once, before worker threads parse bodies */
    rc = uv_loop_init(&s->loop);
    if (rc) {
        free(s);
        return rc;
    }
    struct http_server_opts ho = {o->host, o->port, o->max_conns, 0, 0, 0};
    rc = http_server_start(&s->loop, &ho, &s3_ops, s, &s->http);
    if (rc) {
        uv_loop_close(&s->loop);
        free(s);
        return rc;
    }
    s->port = http_server_port(s->http);
    uv_async_init(&s->loop, &s->stop_async, on_stop);
    s->stop_async.data = s;
    if (pthread_create(&s->thr, NULL, loop_main, s)) {
        free(s); /* the loop is leaked on this path: we are out of threads anyway */
        return PL_ENOMEM;
    }
    *ret = s;
    return 0;
}

int s3_port(const struct s3_server *s)
{
    return s->port;
}

void s3_stop(struct s3_server *s)
{
    if (!s)
        return;
    uv_async_send(&s->stop_async);
    pthread_join(s->thr, NULL);
    uv_loop_close(&s->loop);
    free(s);
}

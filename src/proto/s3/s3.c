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
#include "proto/s3/s3.h"

#include <http_parser.h>
#include <inttypes.h>
#include <isa-l.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <uv.h>
#include <zlib.h>

#include "base/base.h"
#include "proto/http/http.h"
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

static const struct s3_err_row err_rows[] = {
#define S3_ERR_ROW(e, code, status, msg) {code, status, msg},
    S3_ERRORS(S3_ERR_ROW)
#undef S3_ERR_ROW
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
};

static const char *const op_names[] = {
    "none", "ListBuckets", "CreateBucket", "DeleteBucket", "HeadBucket", "GetBucketLocation",
    "GetBucketVersioning", "PutBucketVersioning", "ListObjects", "ListObjectsV2",
    "ListObjectVersions", "DeleteObjects", "PutObject", "CopyObject", "GetObject", "HeadObject",
    "DeleteObject", "Unsupported", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts", "ListMultipartUploads", "GetTagging", "PutTagging",
    "DeleteTagging",
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

static void req_free(struct s3_req *r);
static void respond(struct s3_req *r);

/* ---- small helpers ---- */
static int xml_esc(struct pl_buf *b, const char *s)
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

static void iso8601(int64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + l, n - l, ".%03dZ", (int)((ns / 1000000) % 1000));
}

static enum s3_err map_err(int rc)
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
    default: return S3E_INTERNAL;
    }
}

static void fail(struct s3_req *r, enum s3_err e, int plrc)
{
    if (r->err == S3E_NONE) {
        r->err = e;
        r->err_pl = plrc;
    }
}

/* base64 (for Content-MD5 and checksums) */
static int b64_decode(const char *in, uint8_t *out, size_t outn, size_t *ret_n)
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

static void b64_encode(const uint8_t *in, size_t n, char *out)
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
        else if (s3_query_has(q, "uploads"))
            r->op = OP_LIST_MPUS;
        else if (s3_query_has(q, "tagging"))
            r->op = OP_GET_TAGGING;
        else if (s3_query_has(q, "policy") || s3_query_has(q, "acl") ||
                 s3_query_has(q, "lifecycle") || s3_query_has(q, "cors") ||
                 s3_query_has(q, "notification") || s3_query_has(q, "object-lock"))
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
static void authenticate(struct s3_req *r)
{
    struct pl_buf creq, sts;
    char secret[48], sig[S3_SHA256_HEX];
    int rc = s3_auth_parse(r->hr, &r->q, &r->auth);
    if (rc == PL_EPERM) {
        fail(r, S3E_ACCESS_DENIED, 0); /* anonymous: no policy grants it yet */
        return;
    }
    if (rc == PL_EPROTO) {
        fail(r, S3E_SIGV2, 0);
        return;
    }
    if (rc) {
        fail(r, S3E_AUTH_HEADER, 0);
        return;
    }
    int64_t t = s3_amz_time(r->auth.amz_date), now = pl_now_ns() / 1000000000;
    if (t < 0 || strncmp(r->auth.amz_date, r->auth.scope_date, 8)) {
        fail(r, S3E_AUTH_HEADER, 0);
        return;
    }
    if (r->auth.presigned) {
        if (now > t + r->auth.expires) {
            fail(r, S3E_EXPIRED, 0);
            return;
        }
        if (t > now + SKEW_SEC) {
            fail(r, S3E_SKEWED, 0);
            return;
        }
    } else if (t < now - SKEW_SEC || t > now + SKEW_SEC) {
        fail(r, S3E_SKEWED, 0);
        return;
    }
    rc = pl_key_secret(r->srv->st, r->auth.access_key, secret, r->user);
    if (rc) {
        fail(r, rc == PL_ENOENT ? S3E_INVALID_ACCESS_KEY : S3E_INTERNAL, rc);
        return;
    }
    pl_buf_init(&creq);
    pl_buf_init(&sts);
    rc = s3_canonical_request(r->hr, r->path_raw, &r->q, &r->auth, &creq);
    if (!rc)
        rc = s3_string_to_sign(&r->auth, &creq, &sts);
    if (!rc) {
        s3_signing_key(secret, &r->auth, r->sigkey);
        s3_hmac_hex(r->sigkey, sts.data, sts.len, sig);
        if (!s3_sig_equal(sig, r->auth.signature)) {
            fail(r, S3E_SIGNATURE, 0);
            /* AWS returns what it signed so a client author can see why */
            pl_buf_reset(&r->xml);
            if (xml_esc(&r->xml, sts.data) == 0) {
                char *d = pl_buf_detach(&r->xml, NULL);
                struct pl_buf tmp;
                pl_buf_init(&tmp);
                if (pl_buf_addf(&tmp, "<StringToSign>%s</StringToSign><CanonicalRequest>", d) ==
                        0 &&
                    xml_esc(&tmp, creq.data) == 0 &&
                    pl_buf_addstr(&tmp, "</CanonicalRequest>") == 0)
                    r->xml = tmp;
                else
                    pl_buf_release(&tmp);
                free(d);
            }
        }
    } else {
        fail(r, S3E_AUTH_HEADER, rc);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    pl_buf_release(&creq);
    pl_buf_release(&sts);
}

/* ---- object metadata headers we keep, as xattrs ---- */
static const char *const std_headers[] = {"cache-control", "content-disposition",
                                          "content-encoding", "content-language", "expires"};

/* name/value pairs for pl_obj_meta.xattrs from the request headers; owned
 * strings in *store, pointers into it in out (NULL-terminated). */
static int meta_from_headers(struct http_req *h, struct pl_buf *store, const char ***out)
{
    size_t n = 0;
    size_t offs[2 * HTTP_MAX_HEADERS + 2];
    int rc = 0;
    for (int i = 0; i < h->nh && !rc; i++) {
        const char *name = h->h[i].name, *v = h->h[i].value;
        char xn[300] = "";
        if (!strncmp(name, "x-amz-meta-", 11) && name[11])
            snprintf(xn, sizeof(xn), "user.meta.%s", name + 11);
        if (!strcmp(name, "x-amz-tagging") && *v)
            snprintf(xn, sizeof(xn), "s3.tagging");
        for (size_t j = 0; j < PL_ARRAY_LEN(std_headers); j++)
            if (!strcmp(name, std_headers[j]))
                snprintf(xn, sizeof(xn), "s3.%s", name);
        if (!xn[0])
            continue;
        if (!strcmp(name, "content-encoding")) {
            /* aws-chunked is transport framing, not the object's encoding */
            if (!strcmp(v, "aws-chunked"))
                continue;
            if (!strncmp(v, "aws-chunked,", 12))
                v += 12;
        }
        offs[n++] = store->len;
        rc = pl_buf_add(store, xn, strlen(xn) + 1);
        offs[n++] = store->len;
        if (!rc)
            rc = pl_buf_add(store, v, strlen(v) + 1);
    }
    if (rc)
        return rc;
    const char **arr = calloc(n + 1, sizeof(*arr));
    if (!arr)
        return PL_ENOMEM;
    for (size_t i = 0; i < n; i++)
        arr[i] = store->data + offs[i];
    *out = arr;
    return 0;
}

/* x-amz-meta-* and standard headers of an object, for GET/HEAD responses */
static int meta_to_headers(struct pl_store *st, const struct pl_attr *a, struct pl_buf *out,
                           struct http_req *h, const struct s3_query *q)
{
    char names[16384];
    ssize_t n = pl_xattr_list(st, a->id, PL_VIEW_LIVE, names, sizeof(names));
    if (n < 0)
        return (int)n;
    if ((size_t)n > sizeof(names))
        n = sizeof(names);
    int rc = 0;
    for (ssize_t off = 0; off < n && !rc;) {
        const char *name = names + off;
        off += (ssize_t)strlen(name) + 1;
        char val[4096];
        ssize_t vl = pl_xattr_get(st, a->id, PL_VIEW_LIVE, name, val, sizeof(val) - 1);
        if (vl < 0 || (size_t)vl >= sizeof(val))
            continue;
        val[vl] = 0;
        if (!strncmp(name, "user.meta.", 10))
            rc = pl_buf_addf(out, "x-amz-meta-%s: %s\r\n", name + 10, val);
        else if (!strcmp(name, "s3.tagging")) {
            int count = *val != 0;
            for (const char *p = val; *p; p++)
                count += *p == '&';
            rc = pl_buf_addf(out, "x-amz-tagging-count: %d\r\n", count);
        } else if (!strncmp(name, "s3.", 3)) {
            /* response-* query parameters override the stored headers */
            char qn[64];
            snprintf(qn, sizeof(qn), "response-%s", name + 3);
            if (!s3_query_get(q, qn))
                rc = pl_buf_addf(out, "%s: %s\r\n", name + 3, val);
        }
    }
    (void)h;
    return rc;
}

/* ---- bucket operations (pool thread) ---- */
static int list_buckets_cb(void *arg, const struct pl_bucket_info *b)
{
    struct pl_buf *x = arg;
    char t[40];
    iso8601(b->ctime, t, sizeof(t));
    return pl_buf_addf(x, "<Bucket><Name>%s</Name><CreationDate>%s</CreationDate></Bucket>",
                       b->name, t) != 0;
}

static void op_list_buckets(struct s3_req *r)
{
    int rc = pl_buf_addf(&r->xml, "<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/"
                                  "2006-03-01/\"><Owner><ID>%s</ID><DisplayName>%s</DisplayName>"
                                  "</Owner><Buckets>",
                         r->user, r->user);
    if (!rc)
        rc = pl_bucket_list(r->srv->st, list_buckets_cb, &r->xml);
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</Buckets></ListAllMyBucketsResult>");
    if (rc)
        fail(r, map_err(rc), rc);
}

static void op_create_bucket(struct s3_req *r)
{
    if (pl_bucket_name_valid(r->bucket)) {
        fail(r, S3E_BAD_BUCKET_NAME, 0);
        return;
    }
    /* a CreateBucketConfiguration body may name a region: accept any */
    int rc = pl_bucket_create(r->srv->st, r->bucket);
    if (rc == PL_EEXIST)
        fail(r, S3E_BUCKET_OWNED, rc);
    else if (rc)
        fail(r, map_err(rc), rc);
    else if (pl_buf_addf(&r->head, "Location: /%s\r\n", r->bucket))
        fail(r, S3E_INTERNAL, PL_ENOMEM);
}

static void op_delete_bucket(struct s3_req *r)
{
    int rc = pl_bucket_delete(r->srv->st, r->bucket);
    if (rc)
        fail(r, map_err(rc), rc);
    else
        r->status = 204;
}

static int bucket_exists(struct s3_req *r)
{
    struct pl_bucket_info bi;
    int rc = pl_bucket_get(r->srv->st, r->bucket, &bi);
    if (rc)
        fail(r, map_err(rc), rc);
    return rc == 0;
}

static void op_head_bucket(struct s3_req *r)
{
    if (bucket_exists(r) && pl_buf_addf(&r->head, "x-amz-bucket-region: %s\r\n", r->srv->region))
        fail(r, S3E_INTERNAL, PL_ENOMEM);
}

static void op_location(struct s3_req *r)
{
    if (!bucket_exists(r))
        return;
    /* us-east-1 is reported as an empty constraint, as AWS does */
    if (pl_buf_addf(&r->xml,
                    "<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">%s"
                    "</LocationConstraint>",
                    strcmp(r->srv->region, "us-east-1") ? r->srv->region : ""))
        fail(r, S3E_INTERNAL, PL_ENOMEM);
}

static void op_get_versioning(struct s3_req *r)
{
    if (bucket_exists(r) &&
        pl_buf_addstr(&r->xml, "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/"
                               "2006-03-01/\"/>"))
        fail(r, S3E_INTERNAL, PL_ENOMEM);
}

/* ---- listing ---- */
struct lister {
    struct s3_req *r;
    const char *prefix;
    char delim[8];     /* "" none, else the delimiter (any string) */
    int max, n, truncated, url, v2, fetch_owner, versions;
    char last[PL_KEY_MAX + 2];
    char last_prefix[PL_KEY_MAX + 2];
    struct pl_buf contents, prefixes;
};

static int enc(struct lister *L, struct pl_buf *b, const char *s)
{
    if (!L->url)
        return xml_esc(b, s);
    struct pl_buf t;
    pl_buf_init(&t);
    int rc = s3_uri_encode(s, strlen(s), 1, &t);
    if (!rc)
        rc = xml_esc(b, t.data);
    pl_buf_release(&t);
    return rc;
}

static int list_cb(void *arg, const char *key, int is_prefix, const struct pl_attr *a)
{
    struct lister *L = arg;
    size_t pl = strlen(L->prefix);
    char cp[PL_KEY_MAX + 2];
    int rc;
    /* a general delimiter: group keys whose rest contains it */
    if (!is_prefix && L->delim[0] && strcmp(L->delim, "/")) {
        const char *d = strstr(key + pl, L->delim);
        if (d) {
            size_t n = (size_t)(d - key) + strlen(L->delim);
            memcpy(cp, key, n);
            cp[n] = 0;
            if (!strcmp(cp, L->last_prefix))
                return 0;
            key = cp;
            is_prefix = 1;
        }
    }
    if (L->n == L->max) {
        L->truncated = 1;
        return 1;
    }
    if (is_prefix) {
        snprintf(L->last_prefix, sizeof(L->last_prefix), "%s", key);
        rc = pl_buf_addstr(&L->prefixes, "<CommonPrefixes><Prefix>");
        if (!rc)
            rc = enc(L, &L->prefixes, key);
        if (!rc)
            rc = pl_buf_addstr(&L->prefixes, "</Prefix></CommonPrefixes>");
    } else {
        char t[40];
        iso8601(a->mtime, t, sizeof(t));
        rc = pl_buf_addstr(&L->contents, L->versions ? "<Version><Key>" : "<Contents><Key>");
        if (!rc)
            rc = enc(L, &L->contents, key);
        if (!rc)
            rc = pl_buf_addf(&L->contents,
                             "</Key>%s<LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag>"
                             "<Size>%" PRIu64 "</Size>",
                             L->versions ? "<VersionId>null</VersionId><IsLatest>true</IsLatest>"
                                         : "",
                             t, a->etag, a->type == PL_T_DIR ? 0 : a->size);
        if (!rc && (L->fetch_owner || !L->v2))
            rc = pl_buf_addf(&L->contents,
                             "<Owner><ID>%s</ID><DisplayName>%s</DisplayName></Owner>",
                             L->r->user, L->r->user);
        if (!rc)
            rc = pl_buf_addstr(&L->contents, L->versions ? "<StorageClass>STANDARD</StorageClass>"
                                                           "</Version>"
                                                         : "<StorageClass>STANDARD</StorageClass>"
                                                           "</Contents>");
    }
    snprintf(L->last, sizeof(L->last), "%s", key);
    L->n++;
    return rc ? 1 : 0;
}

static void op_list_objects(struct s3_req *r)
{
    struct lister *L = calloc(1, sizeof(*L));
    const struct s3_query *q = &r->q;
    struct pl_buf tok;
    int rc;
    if (!L) {
        fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    pl_buf_init(&tok);
    pl_buf_init(&L->contents);
    pl_buf_init(&L->prefixes);
    L->r = r;
    L->v2 = r->op == OP_LIST_OBJECTS_V2;
    L->versions = r->op == OP_LIST_VERSIONS;
    L->prefix = s3_query_get(q, "prefix") ? s3_query_get(q, "prefix") : "";
    const char *d = s3_query_get(q, "delimiter");
    if (d && strlen(d) < sizeof(L->delim))
        snprintf(L->delim, sizeof(L->delim), "%s", d);
    const char *mk = s3_query_get(q, "max-keys");
    L->max = 1000;
    if (mk) {
        char *end;
        long v = strtol(mk, &end, 10);
        if (*end || v < 0) {
            fail(r, S3E_INVALID_ARGUMENT, 0);
            goto out;
        }
        L->max = v < 1000 ? (int)v : 1000;
    }
    const char *et = s3_query_get(q, "encoding-type");
    if (et && strcmp(et, "url")) {
        fail(r, S3E_INVALID_ARGUMENT, 0);
        goto out;
    }
    L->url = et != NULL;
    L->fetch_owner = s3_query_get(q, "fetch-owner") && !strcmp(s3_query_get(q, "fetch-owner"),
                                                               "true");
    /* where to start: v2 continuation token (our own: hex of the last key), or
     * start-after; v1 marker; versions key-marker */
    const char *after = "";
    const char *ct = L->v2 ? s3_query_get(q, "continuation-token") : NULL;
    if (ct) {
        size_t n = strlen(ct);
        uint8_t *raw = malloc(n / 2 + 1);
        if (!raw || n % 2 || n / 2 > PL_KEY_MAX || pl_unhex(ct, raw, n / 2) ||
            pl_buf_add(&tok, raw, n / 2)) {
            free(raw);
            fail(r, S3E_INVALID_ARGUMENT, 0);
            r->err_detail = "The continuation token provided is incorrect";
            goto out;
        }
        free(raw);
        after = tok.data;
    } else if (L->v2 && s3_query_get(q, "start-after")) {
        after = s3_query_get(q, "start-after");
    } else if (!L->v2 && !L->versions && s3_query_get(q, "marker")) {
        after = s3_query_get(q, "marker");
    } else if (L->versions && s3_query_get(q, "key-marker")) {
        after = s3_query_get(q, "key-marker");
    }
    if (L->max > 0) {
        rc = pl_obj_list(r->srv->st, r->bucket, L->prefix, after,
                         !strcmp(L->delim, "/") ? '/' : 0, PL_VIEW_LIVE, list_cb, L);
        if (rc) {
            fail(r, map_err(rc), rc);
            goto out;
        }
    } else if (!bucket_exists(r)) {
        goto out;
    }
    struct pl_buf *x = &r->xml;
    const char *root = L->versions ? "ListVersionsResult" : "ListBucketResult";
    rc = pl_buf_addf(x, "<%s xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>%s</Name>"
                        "<Prefix>",
                     root, r->bucket);
    if (!rc)
        rc = enc(L, x, L->prefix);
    if (!rc)
        rc = pl_buf_addstr(x, "</Prefix>");
    if (!rc && L->delim[0]) {
        rc = pl_buf_addstr(x, "<Delimiter>");
        if (!rc)
            rc = enc(L, x, L->delim);
        if (!rc)
            rc = pl_buf_addstr(x, "</Delimiter>");
    }
    if (!rc)
        rc = pl_buf_addf(x, "<MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>", L->max,
                         L->truncated ? "true" : "false");
    if (!rc && L->url)
        rc = pl_buf_addstr(x, "<EncodingType>url</EncodingType>");
    if (!rc && L->v2) {
        rc = pl_buf_addf(x, "<KeyCount>%d</KeyCount>", L->n);
        if (!rc && ct)
            rc = pl_buf_addf(x, "<ContinuationToken>%s</ContinuationToken>", ct);
        if (!rc && s3_query_get(q, "start-after")) {
            rc = pl_buf_addstr(x, "<StartAfter>");
            if (!rc)
                rc = enc(L, x, s3_query_get(q, "start-after"));
            if (!rc)
                rc = pl_buf_addstr(x, "</StartAfter>");
        }
        if (!rc && L->truncated) {
            char *hex = malloc(2 * strlen(L->last) + 1);
            if (!hex)
                rc = PL_ENOMEM;
            else {
                pl_hex((const uint8_t *)L->last, strlen(L->last), hex);
                rc = pl_buf_addf(x, "<NextContinuationToken>%s</NextContinuationToken>", hex);
                free(hex);
            }
        }
    } else if (!rc && L->versions) {
        rc = pl_buf_addstr(x, "<KeyMarker>");
        if (!rc)
            rc = enc(L, x, after);
        if (!rc)
            rc = pl_buf_addstr(x, "</KeyMarker><VersionIdMarker></VersionIdMarker>");
        if (!rc && L->truncated) {
            rc = pl_buf_addstr(x, "<NextKeyMarker>");
            if (!rc)
                rc = enc(L, x, L->last);
            if (!rc)
                rc = pl_buf_addstr(x, "</NextKeyMarker><NextVersionIdMarker>null"
                                      "</NextVersionIdMarker>");
        }
    } else if (!rc) {
        rc = pl_buf_addstr(x, "<Marker>");
        if (!rc)
            rc = enc(L, x, s3_query_get(q, "marker") ? s3_query_get(q, "marker") : "");
        if (!rc)
            rc = pl_buf_addstr(x, "</Marker>");
        if (!rc && L->truncated && L->delim[0]) {
            rc = pl_buf_addstr(x, "<NextMarker>");
            if (!rc)
                rc = enc(L, x, L->last);
            if (!rc)
                rc = pl_buf_addstr(x, "</NextMarker>");
        }
    }
    if (!rc)
        rc = pl_buf_add(x, L->contents.data, L->contents.len);
    if (!rc)
        rc = pl_buf_add(x, L->prefixes.data, L->prefixes.len);
    if (!rc)
        rc = pl_buf_addf(x, "</%s>", root);
    if (rc)
        fail(r, S3E_INTERNAL, rc);
out:
    pl_buf_release(&L->contents);
    pl_buf_release(&L->prefixes);
    pl_buf_release(&tok);
    free(L);
}

static enum s3_err mpu_err(int rc)
{
    switch (rc) {
    case PL_ENOUPLOAD: return S3E_NO_UPLOAD;
    case PL_EBADPART: return S3E_INVALID_PART;
    case PL_EPARTORDER: return S3E_INVALID_PART_ORDER;
    case PL_ETOOSMALL: return S3E_ENTITY_TOO_SMALL;
    case PL_EDIGEST: return S3E_BAD_DIGEST;
    default: return map_err(rc);
    }
}

/* Check the upload belongs to this bucket/key and open a part writer. */
static int mpu_part_open(struct s3_req *r, struct pl_writer **ret)
{
    const char *uid = s3_query_get(&r->q, "uploadId");
    const char *pn = s3_query_get(&r->q, "partNumber");
    struct pl_mpu_info info;
    char *end;
    long n = strtol(pn ? pn : "", &end, 10);
    if (!pn || *end || n < 1 || n > PL_PARTS_MAX) {
        fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "Part number must be an integer between 1 and 10000, inclusive";
        return PL_EINVAL;
    }
    int rc = pl_mpu_get(r->srv->st, uid, &info);
    if (!rc && (strcmp(info.bucket, r->bucket) || strcmp(info.key, r->key.data)))
        rc = PL_ENOUPLOAD;
    if (!rc)
        rc = pl_mpu_part_begin(r->srv->st, uid, (int)n, ret);
    if (rc)
        fail(r, mpu_err(rc), rc);
    return rc;
}

/* ---- PutObject (pool thread) ---- */
static int body_emit(void *arg, const uint8_t *p, size_t n)
{
    struct s3_req *r = arg;
    if (r->received + n > MAX_PUT)
        return PL_EFBIG;
    r->received += n;
    if (r->payload_sha && !EVP_DigestUpdate(r->payload_sha, p, n))
        return PL_EINTERNAL;
    if (r->cks_md && !EVP_DigestUpdate(r->cks_md, p, n))
        return PL_EINTERNAL;
    if (!strcmp(r->cks_name, "crc32"))
        r->cks_crc = (uint32_t)crc32(r->cks_crc, p, (uInt)n);
    else if (!strcmp(r->cks_name, "crc32c"))
        r->cks_crc = crc32_iscsi((unsigned char *)p, (int)n, r->cks_crc);
    return pl_writer_write(r->w, p, n);
}

static void put_prepare(struct s3_req *r)
{
    struct http_req *h = r->hr;
    const char *ph = r->auth.payload_hash;
    if (r->key.len > PL_KEY_MAX) {
        fail(r, S3E_KEY_TOO_LONG, 0);
        return;
    }
    if (pl_key_valid(r->key.data)) {
        fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "Object keys may not contain empty, '.' or '..' path segments";
        return;
    }
    if (h->content_length < 0 && !h->chunked) {
        fail(r, S3E_MISSING_LENGTH, 0);
        return;
    }
    if (h->content_length > (int64_t)MAX_PUT + (1 << 20)) {
        fail(r, S3E_TOO_LARGE, 0);
        return;
    }
    if (!strncmp(ph, "STREAMING-", 10)) {
        int sign = !strcmp(ph, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD") ||
                   !strcmp(ph, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER");
        if (!sign && strcmp(ph, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")) {
            fail(r, S3E_NOT_IMPLEMENTED, 0);
            return;
        }
        if (s3_chunked_init(&r->ck, sign, r->sigkey, &r->auth, r->auth.signature)) {
            fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
        r->aws_chunked = 1;
    } else if (strcmp(ph, "UNSIGNED-PAYLOAD")) {
        uint8_t tmp[32];
        if (strlen(ph) != 64 || pl_unhex(ph, tmp, 32)) {
            fail(r, S3E_INVALID_ARGUMENT, 0);
            r->err_detail = "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-*, or a "
                            "SHA-256 hex digest";
            return;
        }
        r->payload_sha = EVP_MD_CTX_new();
        if (!r->payload_sha || !EVP_DigestInit_ex(r->payload_sha, EVP_sha256(), NULL)) {
            fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
    }
    /* flexible checksums: a header with the value, or a trailer announced */
    static const char *const algs[] = {"crc32", "crc32c", "sha1", "sha256"};
    const char *alg = http_req_header(h, "x-amz-sdk-checksum-algorithm");
    for (size_t i = 0; i < PL_ARRAY_LEN(algs); i++) {
        char hn[40];
        snprintf(hn, sizeof(hn), "x-amz-checksum-%s", algs[i]);
        const char *tr = http_req_header(h, "x-amz-trailer");
        if (http_req_header(h, hn) || (tr && !strcasecmp(tr, hn)) ||
            (alg && !strcasecmp(alg, algs[i])))
            snprintf(r->cks_name, sizeof(r->cks_name), "%s", algs[i]);
    }
    /* ISA-L's crc32_iscsi leaves the pre/post inversion of CRC-32C to us */
    if (!strcmp(r->cks_name, "crc32c"))
        r->cks_crc = 0xFFFFFFFFu;
    if (!strcmp(r->cks_name, "sha1") || !strcmp(r->cks_name, "sha256")) {
        r->cks_md = EVP_MD_CTX_new();
        if (!r->cks_md || !EVP_DigestInit_ex(r->cks_md, r->cks_name[3] == '1' ? EVP_sha1()
                                                                             : EVP_sha256(),
                                             NULL)) {
            fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
    }
    const char *md5 = http_req_header(h, "content-md5");
    uint8_t d[32];
    size_t dn;
    if (md5 && (b64_decode(md5, d, sizeof(d), &dn) || dn != 16)) {
        fail(r, S3E_INVALID_DIGEST, 0);
        return;
    }
    int rc;
    if (r->op == OP_UPLOAD_PART) {
        rc = mpu_part_open(r, &r->w);
        if (rc)
            return;
    } else {
        rc = pl_obj_put_begin(r->srv->st, r->bucket, r->key.data, &r->w);
    }
    if (rc)
        fail(r, map_err(rc), rc);
}

static void body_feed(struct s3_req *r, const struct pl_buf *b)
{
    if (r->err != S3E_NONE || !b->len)
        return;
    int rc;
    if (r->aws_chunked) {
        ssize_t n = s3_chunked_feed(&r->ck, (const uint8_t *)b->data, b->len, body_emit, r);
        rc = n < 0 ? (int)n : 0;
    } else {
        rc = body_emit(r, (const uint8_t *)b->data, b->len);
    }
    if (rc == PL_EACCES)
        fail(r, S3E_SIGNATURE, rc);
    else if (rc == PL_EPROTO)
        fail(r, S3E_INCOMPLETE_BODY, rc);
    else if (rc == PL_EFBIG)
        fail(r, S3E_TOO_LARGE, rc);
    else if (rc)
        fail(r, map_err(rc), rc);
}

static void put_finish(struct s3_req *r)
{
    struct http_req *h = r->hr;
    char cks_b64[64] = "";
    body_feed(r, &r->batch);
    if (r->err != S3E_NONE)
        return;
    if (r->aws_chunked && !r->ck.done) {
        fail(r, S3E_INCOMPLETE_BODY, 0);
        return;
    }
    const char *dl = http_req_header(h, "x-amz-decoded-content-length");
    if (r->aws_chunked && dl && strtoull(dl, NULL, 10) != r->received) {
        fail(r, S3E_INCOMPLETE_BODY, 0);
        return;
    }
    if (r->payload_sha) {
        uint8_t md[32];
        unsigned int len = 32;
        char hex[65];
        EVP_DigestFinal_ex(r->payload_sha, md, &len);
        pl_hex(md, 32, hex);
        if (strcmp(hex, r->auth.payload_hash)) {
            fail(r, S3E_SHA_MISMATCH, 0);
            return;
        }
    }
    if (r->cks_name[0]) {
        uint8_t md[32];
        size_t mdn = 4;
        if (r->cks_md) {
            unsigned int len = 32;
            EVP_DigestFinal_ex(r->cks_md, md, &len);
            mdn = len;
        } else {
            if (!strcmp(r->cks_name, "crc32c"))
                r->cks_crc ^= 0xFFFFFFFFu;
            md[0] = (uint8_t)(r->cks_crc >> 24);
            md[1] = (uint8_t)(r->cks_crc >> 16);
            md[2] = (uint8_t)(r->cks_crc >> 8);
            md[3] = (uint8_t)r->cks_crc;
        }
        b64_encode(md, mdn, cks_b64);
        char hn[40];
        snprintf(hn, sizeof(hn), "x-amz-checksum-%s", r->cks_name);
        const char *want = http_req_header(h, hn);
        if (!want && r->aws_chunked && !strcmp(r->ck.trailer_name, hn))
            want = r->ck.trailer_value;
        if (want && strcmp(want, cks_b64)) {
            fail(r, S3E_BAD_DIGEST, 0);
            return;
        }
    }
    uint8_t md5[32];
    size_t md5n = 0;
    const char *cmd5 = http_req_header(h, "content-md5");
    if (cmd5 && b64_decode(cmd5, md5, sizeof(md5), &md5n)) {
        fail(r, S3E_INVALID_DIGEST, 0);
        return;
    }
    int rc;
    if (r->op == OP_UPLOAD_PART) {
        struct pl_part_info pi;
        rc = pl_mpu_part_commit(r->w, md5n == 16 ? md5 : NULL, &pi);
        r->w = NULL;
        if (rc)
            fail(r, mpu_err(rc), rc);
        else if (pl_buf_addf(&r->head, "ETag: \"%s\"\r\n", pi.etag) ||
                 (cks_b64[0] &&
                  pl_buf_addf(&r->head, "x-amz-checksum-%s: %s\r\n", r->cks_name, cks_b64)))
            fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    struct pl_buf store;
    const char **xattrs = NULL;
    pl_buf_init(&store);
    rc = meta_from_headers(h, &store, &xattrs);
    if (rc) {
        fail(r, S3E_INTERNAL, rc);
        pl_buf_release(&store);
        return;
    }
    struct pl_obj_meta m = {http_req_header(h, "content-type"), NULL, xattrs,
                            md5n == 16 ? md5 : NULL};
    struct pl_attr a;
    rc = pl_obj_put_commit(r->w, &m, &a);
    r->w = NULL;
    free(xattrs);
    pl_buf_release(&store);
    if (rc == PL_EDIGEST) {
        fail(r, S3E_BAD_DIGEST, rc);
        return;
    }
    if (rc) {
        fail(r, map_err(rc), rc);
        return;
    }
    rc = pl_buf_addf(&r->head, "ETag: \"%s\"\r\n", a.etag);
    if (!rc && cks_b64[0])
        rc = pl_buf_addf(&r->head, "x-amz-checksum-%s: %s\r\n", r->cks_name, cks_b64);
    if (rc)
        fail(r, S3E_INTERNAL, rc);
}

/* ---- GetObject / HeadObject (pool thread) ---- */
static int64_t http_time(const char *s)
{
    struct tm tm = {0};
    if (!s || !strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return -1;
    return (int64_t)timegm(&tm);
}

static int etag_matches(const char *hdr, const char *etag)
{
    /* a list of quoted tags, or "*" */
    const char *p = hdr;
    size_t el = strlen(etag);
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (!strncmp(p, "W/", 2))
            p += 2;
        const char *q = p;
        if (*q == '"')
            q++;
        if (!strncmp(q, etag, el) && (q[el] == '"' || q[el] == ',' || q[el] == 0))
            return 1;
        const char *c = strchr(p, ',');
        if (!c)
            break;
        p = c + 1;
    }
    return 0;
}

static void get_prepare(struct s3_req *r)
{
    struct http_req *h = r->hr;
    char ctype[256] = "", t[40];
    int rc = pl_obj_lookup(r->srv->st, r->bucket, r->key.data, PL_VIEW_LIVE, &r->attr);
    if (!rc && r->op == OP_GET_OBJECT) {
        /* keep these bytes readable to the end, even if the key is replaced
         * meanwhile; the pin is taken before we check the object is still there */
        pl_elem_pin(r->srv->st, r->attr.id);
        r->pinned = 1;
        struct pl_attr again;
        if (pl_elem_getattr(r->srv->st, r->attr.id, PL_VIEW_LIVE, &again)) {
            /* replaced between the lookup and the pin: rare, and retryable */
            fail(r, S3E_SLOW_DOWN, PL_EAGAIN);
            return;
        }
    }
    if (rc) {
        fail(r, map_err(rc), rc);
        return;
    }
    uint64_t size = r->attr.type == PL_T_DIR ? 0 : r->attr.size;
    int64_t mtime = r->attr.mtime / 1000000000;
    /* conditionals, in RFC 7232 order */
    const char *im = http_req_header(h, "if-match"), *inm = http_req_header(h, "if-none-match");
    int64_t ims = http_time(http_req_header(h, "if-modified-since"));
    int64_t ius = http_time(http_req_header(h, "if-unmodified-since"));
    if (im && !etag_matches(im, r->attr.etag)) {
        fail(r, S3E_PRECONDITION, 0);
        return;
    }
    if (!im && ius >= 0 && mtime > ius) {
        fail(r, S3E_PRECONDITION, 0);
        return;
    }
    if (inm && etag_matches(inm, r->attr.etag)) {
        fail(r, S3E_NOT_MODIFIED, 0);
        return;
    }
    if (!inm && ims >= 0 && mtime <= ims) {
        fail(r, S3E_NOT_MODIFIED, 0);
        return;
    }
    r->pos = 0;
    r->end = size;
    const char *range = http_req_header(h, "range");
    if (range && !strncmp(range, "bytes=", 6) && !strchr(range, ',')) {
        const char *spec = range + 6;
        char *e1, *e2;
        if (size == 0) {
            fail(r, S3E_INVALID_RANGE, 0); /* nothing to select from */
        } else if (*spec == '-') {
            unsigned long long n = strtoull(spec + 1, &e1, 10);
            if (*e1 || e1 == spec + 1 || n == 0) {
                fail(r, S3E_INVALID_RANGE, 0);
            } else {
                r->pos = n >= size ? 0 : size - n;
            }
        } else {
            unsigned long long a = strtoull(spec, &e1, 10);
            if (e1 == spec || *e1 != '-') {
                r->status = 200; /* malformed ranges are ignored, as HTTP says */
            } else if (a >= size) {
                fail(r, S3E_INVALID_RANGE, 0);
            } else {
                unsigned long long b = e1[1] ? strtoull(e1 + 1, &e2, 10) : size - 1;
                if (e1[1] && *e2) {
                    fail(r, S3E_INVALID_RANGE, 0);
                } else {
                    r->pos = a;
                    r->end = (b >= size ? size - 1 : b) + 1;
                    if (r->end <= r->pos)
                        fail(r, S3E_INVALID_RANGE, 0);
                }
            }
        }
        if (r->err == S3E_INVALID_RANGE) {
            if (pl_buf_addf(&r->head, "Content-Range: bytes */%" PRIu64 "\r\n", size))
                fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
        if (r->err == S3E_NONE && r->status == 0) {
            r->status = 206;
            if (pl_buf_addf(&r->head, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64
                                      "\r\n",
                            r->pos, r->end - 1, size)) {
                fail(r, S3E_INTERNAL, PL_ENOMEM);
                return;
            }
        }
    }
    rc = pl_obj_content_type(r->srv->st, r->attr.id, PL_VIEW_LIVE, ctype, sizeof(ctype));
    const char *rct = s3_query_get(&r->q, "response-content-type");
    http_date(mtime, t, sizeof(t));
    if (!rc)
        rc = pl_buf_addf(&r->head,
                         "Content-Type: %s\r\nETag: \"%s\"\r\nLast-Modified: %s\r\n"
                         "Accept-Ranges: bytes\r\nContent-Length: %" PRIu64 "\r\n",
                         rct ? rct : ctype[0] ? ctype : "binary/octet-stream", r->attr.etag, t,
                         r->end - r->pos);
    static const char *const overrides[] = {"cache-control", "content-disposition",
                                            "content-encoding", "content-language", "expires"};
    for (size_t i = 0; !rc && i < PL_ARRAY_LEN(overrides); i++) {
        char qn[64];
        snprintf(qn, sizeof(qn), "response-%s", overrides[i]);
        const char *v = s3_query_get(&r->q, qn);
        if (v && !strchr(v, '\r') && !strchr(v, '\n'))
            rc = pl_buf_addf(&r->head, "%s: %s\r\n", overrides[i], v);
    }
    if (!rc)
        rc = meta_to_headers(r->srv->st, &r->attr, &r->head, h, &r->q);
    if (rc)
        fail(r, map_err(rc), rc);
}

/* Read the piece at r->rd_off into r->rd_buf (pool thread). The loop thread
 * never looks at rd_* while the job runs; job_after hands the piece over. */
static void get_read(struct s3_req *r)
{
    size_t want = (size_t)PL_MIN((uint64_t)READ_PIECE, r->end - r->rd_off), got = 0;
    if (!r->rd_buf)
        r->rd_buf = malloc(READ_PIECE);
    if (!r->rd_buf) {
        fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    int rc = pl_elem_read(r->srv->st, r->attr.id, PL_VIEW_LIVE, r->rd_off, r->rd_buf, want, &got);
    if (!rc && got != want)
        rc = PL_EIO; /* truncated under us */
    if (rc) {
        fail(r, map_err(rc), rc);
        pl_log(PL_LOG_WARN, "s3", "GET %s/%s failed at offset %" PRIu64 ": %s", r->bucket,
               r->key.data, r->rd_off, pl_strerror(rc));
        return;
    }
    r->rd_n = got;
}

/* ---- DeleteObject(s), CopyObject (pool thread) ---- */
static void op_delete_object(struct s3_req *r)
{
    int rc = pl_obj_delete(r->srv->st, r->bucket, r->key.data);
    if (rc == PL_ENOBUCKET)
        fail(r, S3E_NO_BUCKET, rc);
    else if (rc && rc != PL_ENOENT && rc != PL_ENOTDIR && rc != PL_ENOTEMPTY)
        fail(r, map_err(rc), rc);
    else
        r->status = 204; /* deleting what is not there succeeds, as in S3 */
}

static void op_delete_objects(struct s3_req *r)
{
    struct s3_xml_list l;
    if (s3_xml_parse_delete(r->body.data, r->body.len, 1000, &l)) {
        fail(r, S3E_MALFORMED_XML, 0);
        return;
    }
    if (!bucket_exists(r)) {
        s3_xml_list_release(&l);
        return;
    }
    int rc = pl_buf_addstr(&r->xml,
                           "<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < l.n && !rc; i++) {
        const char *k = l.items[i].key;
        int drc = pl_key_valid(k) ? PL_ENOENT : pl_obj_delete(r->srv->st, r->bucket, k);
        if (drc && drc != PL_ENOENT && drc != PL_ENOTDIR && drc != PL_ENOTEMPTY) {
            enum s3_err e = map_err(drc);
            rc = pl_buf_addstr(&r->xml, "<Error><Key>");
            if (!rc)
                rc = xml_esc(&r->xml, k);
            if (!rc)
                rc = pl_buf_addf(&r->xml, "</Key><Code>%s</Code><Message>%s</Message></Error>",
                                 err_rows[e].code, err_rows[e].msg);
        } else if (!l.quiet) {
            rc = pl_buf_addstr(&r->xml, "<Deleted><Key>");
            if (!rc)
                rc = xml_esc(&r->xml, k);
            if (!rc)
                rc = pl_buf_addstr(&r->xml, "</Key></Deleted>");
        }
    }
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</DeleteResult>");
    if (rc)
        fail(r, S3E_INTERNAL, rc);
    s3_xml_list_release(&l);
}

/* x-amz-copy-source: "/bucket/key" or "bucket/key", URL-encoded, maybe with
 * "?versionId=". The key points into dec. */
static int copy_source(struct s3_req *r, char sbucket[64], const char **skey, struct pl_buf *dec)
{
    const char *src = http_req_header(r->hr, "x-amz-copy-source");
    const char *qm = strchr(src, '?');
    if (s3_uri_decode(src, qm ? (size_t)(qm - src) : strlen(src), dec)) {
        fail(r, S3E_INVALID_ARGUMENT, 0);
        return PL_EINVAL;
    }
    const char *p = dec->data[0] == '/' ? dec->data + 1 : dec->data;
    const char *slash = strchr(p, '/');
    if (!slash || (size_t)(slash - p) >= 64 || !slash[1]) {
        fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "Copy Source must mention the source bucket and key: sourcebucket/sourcekey";
        return PL_EINVAL;
    }
    memcpy(sbucket, p, (size_t)(slash - p));
    sbucket[slash - p] = 0;
    *skey = slash + 1;
    return 0;
}

/* Feed bytes [from, to) of element id into w; they deduplicate against the
 * source, so only metadata is really written. */
static int copy_range(struct s3_req *r, uint64_t id, uint64_t from, uint64_t to,
                      struct pl_writer *w)
{
    char *buf = malloc(READ_PIECE);
    int rc = buf ? 0 : PL_ENOMEM;
    for (uint64_t off = from; !rc && off < to;) {
        size_t got;
        rc = pl_elem_read(r->srv->st, id, PL_VIEW_LIVE, off, buf,
                          (size_t)PL_MIN((uint64_t)READ_PIECE, to - off), &got);
        if (!rc && !got)
            rc = PL_EIO; /* truncated under us */
        if (!rc)
            rc = pl_writer_write(w, buf, got);
        off += got;
    }
    free(buf);
    return rc;
}

static void copy_result(struct s3_req *r, const char *root, int64_t mtime, const char *etag)
{
    char t[40];
    iso8601(mtime, t, sizeof(t));
    if (pl_buf_addf(&r->xml, "<%s><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag></%s>",
                    root, t, etag, root))
        fail(r, S3E_INTERNAL, PL_ENOMEM);
}

static void op_copy_object(struct s3_req *r)
{
    struct pl_buf dec;
    struct pl_attr a;
    struct pl_writer *w = NULL;
    char ctype[256] = "", sbucket[64];
    const char *skey;
    pl_buf_init(&dec);
    if (copy_source(r, sbucket, &skey, &dec))
        goto out;
    int rc = pl_obj_lookup(r->srv->st, sbucket, skey, PL_VIEW_LIVE, &a);
    if (rc) {
        fail(r, map_err(rc), rc);
        goto out;
    }
    /* copy-source conditionals */
    const char *im = http_req_header(r->hr, "x-amz-copy-source-if-match");
    const char *inm = http_req_header(r->hr, "x-amz-copy-source-if-none-match");
    int64_t ims = http_time(http_req_header(r->hr, "x-amz-copy-source-if-modified-since"));
    int64_t ius = http_time(http_req_header(r->hr, "x-amz-copy-source-if-unmodified-since"));
    int64_t mt = a.mtime / 1000000000;
    if ((im && !etag_matches(im, a.etag)) || (inm && etag_matches(inm, a.etag)) ||
        (!im && ius >= 0 && mt > ius) || (!inm && ims >= 0 && mt <= ims)) {
        fail(r, S3E_PRECONDITION, 0);
        goto out;
    }
    const char *dir = http_req_header(r->hr, "x-amz-metadata-directive");
    int replace = dir && !strcmp(dir, "REPLACE");
    if (!replace && !strcmp(sbucket, r->bucket) && !strcmp(skey, r->key.data)) {
        fail(r, S3E_INVALID_REQUEST, 0);
        r->err_detail = "This copy request is illegal because it is trying to copy an object to "
                        "itself without changing the object's metadata, storage class, website "
                        "redirect location or encryption attributes.";
        goto out;
    }
    rc = pl_obj_put_begin(r->srv->st, r->bucket, r->key.data, &w);
    if (!rc)
        rc = pl_obj_content_type(r->srv->st, a.id, PL_VIEW_LIVE, ctype, sizeof(ctype));
    if (!rc && a.type == PL_T_FILE)
        rc = copy_range(r, a.id, 0, a.size, w);
    struct pl_buf store;
    const char **xattrs = NULL;
    pl_buf_init(&store);
    if (!rc && replace)
        rc = meta_from_headers(r->hr, &store, &xattrs);
    struct pl_obj_meta m = {replace ? http_req_header(r->hr, "content-type") : ctype, NULL,
                            xattrs, NULL};
    /* COPY keeps the source's metadata: carry its xattrs over */
    char names[16384];
    const char **copied = NULL;
    if (!rc && !replace) {
        ssize_t n = pl_xattr_list(r->srv->st, a.id, PL_VIEW_LIVE, names, sizeof(names));
        size_t cnt = 0;
        for (ssize_t o = 0; n > 0 && o < n && (size_t)o < sizeof(names); o += (ssize_t)strlen(names + o) + 1)
            cnt++;
        copied = calloc(2 * cnt + 1, sizeof(*copied));
        size_t ci = 0;
        for (ssize_t o = 0; copied && n > 0 && o < n && (size_t)o < sizeof(names);
             o += (ssize_t)strlen(names + o) + 1) {
            char val[4096];
            ssize_t vl = pl_xattr_get(r->srv->st, a.id, PL_VIEW_LIVE, names + o, val,
                                      sizeof(val) - 1);
            if (vl < 0 || (size_t)vl >= sizeof(val))
                continue;
            val[vl] = 0;
            size_t off1 = store.len;
            if (pl_buf_add(&store, val, (size_t)vl + 1))
                break;
            copied[ci++] = names + o;
            copied[ci++] = (const char *)(uintptr_t)off1; /* fixed up below */
        }
        for (size_t i = 1; copied && i < ci; i += 2)
            copied[i] = store.data + (uintptr_t)copied[i];
        m.xattrs = copied;
    }
    if (!rc) {
        rc = pl_obj_put_commit(w, &m, &a);
        w = NULL;
    }
    free(xattrs);
    free(copied);
    pl_buf_release(&store);
    if (rc) {
        fail(r, map_err(rc), rc);
        goto out;
    }
    copy_result(r, "CopyObjectResult", a.mtime, a.etag);
out:
    pl_writer_abort(w);
    pl_buf_release(&dec);
}

/* ---- tagging (pool thread) ----
 * A tag set is one xattr, "s3.tagging", in the form of the x-amz-tagging
 * header (URL-encoded k=v pairs joined by '&'), so replacing it is atomic.
 * Bucket tags live on the bucket's directory element. */
static int tagging_target(struct s3_req *r, uint64_t *ret_id)
{
    int rc;
    if (r->key.len) {
        struct pl_attr a;
        rc = pl_obj_lookup(r->srv->st, r->bucket, r->key.data, PL_VIEW_LIVE, &a);
        if (!rc)
            *ret_id = a.id;
    } else {
        struct pl_bucket_info b;
        rc = pl_bucket_get(r->srv->st, r->bucket, &b);
        if (!rc)
            *ret_id = b.id;
    }
    if (rc)
        fail(r, map_err(rc), rc);
    return rc;
}

static void op_tagging(struct s3_req *r)
{
    uint64_t id;
    if (tagging_target(r, &id))
        return;
    int rc = 0;
    if (r->op == OP_DELETE_TAGGING) {
        rc = pl_xattr_remove(r->srv->st, id, "s3.tagging");
        if (rc && rc != PL_ENODATA)
            fail(r, map_err(rc), rc);
        else
            r->status = 204;
        return;
    }
    if (r->op == OP_PUT_TAGGING) {
        struct s3_xml_list l;
        struct pl_buf v;
        if (s3_xml_parse_tagging(r->body.data, r->body.len, r->key.len ? 10 : 50, &l)) {
            fail(r, S3E_MALFORMED_XML, 0);
            r->err_detail = "The TagSet is malformed, has duplicate keys, or too many tags";
            return;
        }
        pl_buf_init(&v);
        for (size_t i = 0; i < l.n && !rc; i++) {
            if (i)
                rc = pl_buf_add(&v, "&", 1);
            if (!rc)
                rc = s3_uri_encode(l.items[i].key, strlen(l.items[i].key), 0, &v);
            if (!rc)
                rc = pl_buf_add(&v, "=", 1);
            if (!rc)
                rc = s3_uri_encode(l.items[i].value, strlen(l.items[i].value), 0, &v);
        }
        if (!rc)
            rc = l.n ? pl_xattr_set(r->srv->st, id, "s3.tagging", v.data, v.len)
                     : pl_xattr_remove(r->srv->st, id, "s3.tagging");
        if (rc == PL_ENODATA)
            rc = 0;
        if (rc)
            fail(r, map_err(rc), rc);
        pl_buf_release(&v);
        s3_xml_list_release(&l);
        return;
    }
    char val[8192];
    ssize_t n = pl_xattr_get(r->srv->st, id, PL_VIEW_LIVE, "s3.tagging", val, sizeof(val) - 1);
    if (n == PL_ENODATA && !r->key.len) {
        fail(r, S3E_NO_TAGS, 0); /* a bucket without tags, as AWS answers */
        return;
    }
    if (n < 0 && n != PL_ENODATA) {
        fail(r, map_err((int)n), (int)n);
        return;
    }
    size_t vl = n > 0 ? (size_t)n : 0;
    if (vl >= sizeof(val))
        vl = sizeof(val) - 1;
    val[vl] = 0;
    struct s3_query tags;
    rc = s3_query_parse(val, &tags);
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "<Tagging xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                                    "<TagSet>");
    for (int i = 0; !rc && i < tags.n; i++) {
        rc = pl_buf_addstr(&r->xml, "<Tag><Key>");
        if (!rc)
            rc = xml_esc(&r->xml, tags.p[i].name);
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</Key><Value>");
        if (!rc)
            rc = xml_esc(&r->xml, tags.p[i].value);
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</Value></Tag>");
    }
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</TagSet></Tagging>");
    s3_query_release(&tags);
    if (rc)
        fail(r, S3E_INTERNAL, rc);
}

/* ---- multipart (pool thread) ---- */
static void op_create_mpu(struct s3_req *r)
{
    struct pl_buf store;
    const char **xattrs = NULL;
    char uid[PL_UPLOAD_ID_LEN + 1];
    if (r->key.len > PL_KEY_MAX) {
        fail(r, S3E_KEY_TOO_LONG, 0);
        return;
    }
    pl_buf_init(&store);
    int rc = meta_from_headers(r->hr, &store, &xattrs);
    struct pl_obj_meta m = {http_req_header(r->hr, "content-type"), NULL, xattrs, NULL};
    if (!rc)
        rc = pl_mpu_create(r->srv->st, r->bucket, r->key.data, &m, uid);
    free(xattrs);
    pl_buf_release(&store);
    if (rc) {
        fail(r, rc == PL_EINVAL ? S3E_INVALID_ARGUMENT : map_err(rc), rc);
        return;
    }
    rc = pl_buf_addf(&r->xml, "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/"
                              "doc/2006-03-01/\"><Bucket>%s</Bucket><Key>",
                     r->bucket);
    if (!rc)
        rc = xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>",
                         uid);
    if (rc)
        fail(r, S3E_INTERNAL, rc);
}

static int mpu_check(struct s3_req *r, struct pl_mpu_info *info)
{
    int rc = pl_mpu_get(r->srv->st, s3_query_get(&r->q, "uploadId"), info);
    if (!rc && (strcmp(info->bucket, r->bucket) || strcmp(info->key, r->key.data)))
        rc = PL_ENOUPLOAD;
    if (rc == PL_ENOUPLOAD && !bucket_exists(r))
        return rc;
    if (rc)
        fail(r, mpu_err(rc), rc);
    return rc;
}

static void op_complete_mpu(struct s3_req *r)
{
    struct pl_mpu_info info;
    struct pl_part_ref *refs = NULL;
    struct s3_xml_list l = {0};
    if (mpu_check(r, &info))
        return;
    if (s3_xml_parse_complete(r->body.data, r->body.len, PL_PARTS_MAX, &l) || l.n == 0) {
        fail(r, S3E_MALFORMED_XML, 0);
        goto out;
    }
    refs = calloc(l.n, sizeof(*refs));
    if (!refs) {
        fail(r, S3E_INTERNAL, PL_ENOMEM);
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        refs[i].number = l.items[i].number;
        refs[i].etag = l.items[i].etag;
    }
    struct pl_attr a;
    int rc = pl_mpu_complete(r->srv->st, s3_query_get(&r->q, "uploadId"), refs, l.n, &a);
    if (rc == PL_ECONFLICT) {
        fail(r, S3E_KEY_CONFLICT, rc);
        goto out;
    }
    if (rc) {
        fail(r, mpu_err(rc), rc);
        goto out;
    }
    rc = pl_buf_addf(&r->xml, "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/"
                              "doc/2006-03-01/\"><Location>/%s/",
                     r->bucket);
    if (!rc)
        rc = xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Location><Bucket>%s</Bucket><Key>", r->bucket);
    if (!rc)
        rc = xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Key><ETag>&quot;%s&quot;</ETag>"
                                  "</CompleteMultipartUploadResult>",
                         a.etag);
    if (rc)
        fail(r, S3E_INTERNAL, rc);
out:
    free(refs);
    s3_xml_list_release(&l);
}

static void op_abort_mpu(struct s3_req *r)
{
    struct pl_mpu_info info;
    if (mpu_check(r, &info))
        return;
    int rc = pl_mpu_abort(r->srv->st, s3_query_get(&r->q, "uploadId"));
    if (rc)
        fail(r, mpu_err(rc), rc);
    else
        r->status = 204;
}

struct parts_list {
    struct pl_buf *x;
    int max, n, truncated, last;
};

static int parts_cb(void *arg, const struct pl_part_info *p)
{
    struct parts_list *L = arg;
    char t[40];
    if (L->n == L->max) {
        L->truncated = 1;
        return 1;
    }
    iso8601(p->mtime, t, sizeof(t));
    L->n++;
    L->last = p->number;
    return pl_buf_addf(L->x, "<Part><PartNumber>%d</PartNumber><LastModified>%s</LastModified>"
                             "<ETag>&quot;%s&quot;</ETag><Size>%" PRIu64 "</Size></Part>",
                       p->number, t, p->etag, p->size) != 0;
}

static void op_list_parts(struct s3_req *r)
{
    struct pl_mpu_info info;
    struct pl_buf parts;
    if (mpu_check(r, &info))
        return;
    const char *mp = s3_query_get(&r->q, "max-parts"), *pm = s3_query_get(&r->q,
                                                                          "part-number-marker");
    struct parts_list L = {&parts, mp ? atoi(mp) : 1000, 0, 0, 0};
    if (L.max <= 0 || L.max > 1000)
        L.max = 1000;
    int after = pm ? atoi(pm) : 0;
    pl_buf_init(&parts);
    int rc = pl_mpu_part_list(r->srv->st, info.upload_id, after, parts_cb, &L);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "<ListPartsResult xmlns=\"http://s3.amazonaws.com/doc/"
                                  "2006-03-01/\"><Bucket>%s</Bucket><Key>",
                         r->bucket);
    if (!rc)
        rc = xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = pl_buf_addf(&r->xml,
                         "</Key><UploadId>%s</UploadId><Initiator><ID>%s</ID></Initiator>"
                         "<Owner><ID>%s</ID></Owner><StorageClass>STANDARD</StorageClass>"
                         "<PartNumberMarker>%d</PartNumberMarker>"
                         "<NextPartNumberMarker>%d</NextPartNumberMarker><MaxParts>%d</MaxParts>"
                         "<IsTruncated>%s</IsTruncated>",
                         info.upload_id, r->user, r->user, after, L.last, L.max,
                         L.truncated ? "true" : "false");
    if (!rc)
        rc = pl_buf_add(&r->xml, parts.data, parts.len);
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</ListPartsResult>");
    if (rc)
        fail(r, mpu_err(rc), rc);
    pl_buf_release(&parts);
}

struct mpus_list {
    struct s3_req *r;
    const char *prefix;
    struct pl_buf *x;
    int n;
};

static int mpus_cb(void *arg, const struct pl_mpu_info *u)
{
    struct mpus_list *L = arg;
    char t[40];
    if (strncmp(u->key, L->prefix, strlen(L->prefix)))
        return 0;
    if (L->n++ >= 1000)
        return 1;
    iso8601(u->initiated, t, sizeof(t));
    int rc = pl_buf_addstr(L->x, "<Upload><Key>");
    if (!rc)
        rc = xml_esc(L->x, u->key);
    if (!rc)
        rc = pl_buf_addf(L->x, "</Key><UploadId>%s</UploadId><Initiator><ID>%s</ID></Initiator>"
                               "<Owner><ID>%s</ID></Owner><StorageClass>STANDARD</StorageClass>"
                               "<Initiated>%s</Initiated></Upload>",
                         u->upload_id, L->r->user, L->r->user, t);
    return rc != 0;
}

static void op_list_mpus(struct s3_req *r)
{
    struct pl_buf ups;
    if (!bucket_exists(r))
        return;
    const char *prefix = s3_query_get(&r->q, "prefix");
    pl_buf_init(&ups);
    struct mpus_list L = {r, prefix ? prefix : "", &ups, 0};
    int rc = pl_mpu_list(r->srv->st, r->bucket, mpus_cb, &L);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/"
                                  "doc/2006-03-01/\"><Bucket>%s</Bucket><KeyMarker></KeyMarker>"
                                  "<UploadIdMarker></UploadIdMarker><Prefix>",
                         r->bucket);
    if (!rc)
        rc = xml_esc(&r->xml, L.prefix);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Prefix><MaxUploads>1000</MaxUploads>"
                                  "<IsTruncated>%s</IsTruncated>",
                         L.n > 1000 ? "true" : "false");
    if (!rc)
        rc = pl_buf_add(&r->xml, ups.data, ups.len);
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</ListMultipartUploadsResult>");
    if (rc)
        fail(r, map_err(rc), rc);
    pl_buf_release(&ups);
}

/* UploadPartCopy: a range of an existing object becomes a part. */
static void op_upload_part_copy(struct s3_req *r)
{
    const char *range = http_req_header(r->hr, "x-amz-copy-source-range");
    struct pl_buf dec;
    struct pl_attr a;
    struct pl_writer *w = NULL;
    char sbucket[64];
    const char *skey;
    pl_buf_init(&dec);
    if (copy_source(r, sbucket, &skey, &dec))
        goto out;
    int rc = pl_obj_lookup(r->srv->st, sbucket, skey, PL_VIEW_LIVE, &a);
    if (rc) {
        fail(r, map_err(rc), rc);
        goto out;
    }
    uint64_t from = 0, to = a.size; /* [from, to) */
    if (range) {
        unsigned long long x, y;
        char tail;
        if (sscanf(range, "bytes=%llu-%llu%c", &x, &y, &tail) != 2 || x > y || y >= a.size) {
            fail(r, S3E_INVALID_ARGUMENT, 0);
            r->err_detail = "The x-amz-copy-source-range value must be of the form bytes=first-last "
                            "where first and last are the zero-based offsets of the first and "
                            "last bytes to copy";
            goto out;
        }
        from = x;
        to = y + 1;
    }
    const char *im = http_req_header(r->hr, "x-amz-copy-source-if-match");
    if (im && !etag_matches(im, a.etag)) {
        fail(r, S3E_PRECONDITION, 0);
        goto out;
    }
    if (mpu_part_open(r, &w))
        goto out;
    rc = copy_range(r, a.id, from, to, w);
    struct pl_part_info pi;
    if (!rc) {
        rc = pl_mpu_part_commit(w, NULL, &pi);
        w = NULL;
    }
    if (rc) {
        fail(r, mpu_err(rc), rc);
        goto out;
    }
    copy_result(r, "CopyPartResult", pi.mtime, pi.etag);
out:
    pl_writer_abort(w);
    pl_buf_release(&dec);
}

/* ---- the request machine (loop thread, except *_work) ---- */
enum job { J_AUTH, J_BODY, J_EXEC, J_READ, J_FAST };

struct job_ctx {
    struct s3_req *r;
    enum job kind;
};

static int op_has_stream_body(enum s3_op op)
{
    return op == OP_PUT_OBJECT || op == OP_UPLOAD_PART;
}

static int op_collects_body(enum s3_op op)
{
    return op == OP_DELETE_OBJECTS || op == OP_CREATE_BUCKET || op == OP_PUT_VERSIONING ||
           op == OP_COMPLETE_MPU || op == OP_PUT_TAGGING;
}

static void exec_op(struct s3_req *r)
{
    if (r->err != S3E_NONE)
        return;
    switch (r->op) {
    case OP_LIST_BUCKETS: op_list_buckets(r); break;
    case OP_CREATE_BUCKET: op_create_bucket(r); break;
    case OP_DELETE_BUCKET: op_delete_bucket(r); break;
    case OP_HEAD_BUCKET: op_head_bucket(r); break;
    case OP_BUCKET_LOCATION: op_location(r); break;
    case OP_GET_VERSIONING: op_get_versioning(r); break;
    case OP_PUT_VERSIONING: fail(r, S3E_NOT_IMPLEMENTED, 0); break;
    case OP_LIST_OBJECTS:
    case OP_LIST_OBJECTS_V2:
    case OP_LIST_VERSIONS: op_list_objects(r); break;
    case OP_DELETE_OBJECTS: op_delete_objects(r); break;
    case OP_PUT_OBJECT:
    case OP_UPLOAD_PART: put_finish(r); break;
    case OP_CREATE_MPU: op_create_mpu(r); break;
    case OP_COMPLETE_MPU: op_complete_mpu(r); break;
    case OP_ABORT_MPU: op_abort_mpu(r); break;
    case OP_LIST_PARTS: op_list_parts(r); break;
    case OP_LIST_MPUS: op_list_mpus(r); break;
    case OP_UPLOAD_PART_COPY: op_upload_part_copy(r); break;
    case OP_GET_TAGGING:
    case OP_PUT_TAGGING:
    case OP_DELETE_TAGGING: op_tagging(r); break;
    case OP_COPY_OBJECT: op_copy_object(r); break;
    case OP_GET_OBJECT:
        get_prepare(r);
        r->rd_off = r->pos;
        if (r->err == S3E_NONE && r->end > r->pos)
            get_read(r);
        break;
    case OP_HEAD_OBJECT: get_prepare(r); break;
    case OP_DELETE_OBJECT: op_delete_object(r); break;
    default: fail(r, S3E_NOT_IMPLEMENTED, 0);
    }
}

static void job_run(uv_work_t *w)
{
    struct job_ctx *j = w->data;
    struct s3_req *r = j->r;
    switch (j->kind) {
    case J_AUTH:
        authenticate(r);
        if (r->err == S3E_NONE && op_has_stream_body(r->op))
            put_prepare(r);
        break;
    case J_BODY:
        body_feed(r, &r->batch);
        pl_buf_reset(&r->batch);
        break;
    case J_EXEC:
        exec_op(r);
        break;
    case J_READ:
        get_read(r);
        break;
    case J_FAST: /* a request without a body: authenticate and run in one hop */
        authenticate(r);
        exec_op(r);
        break;
    }
}

static void job_after(uv_work_t *w, int status);

static void queue_job(struct s3_req *r, enum job kind)
{
    struct job_ctx *j = malloc(sizeof(*j));
    if (!j) {
        fail(r, S3E_INTERNAL, PL_ENOMEM);
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
        fail(r, S3E_INTERNAL, PL_EINTERNAL);
        respond(r);
    }
}

static void send_piece(struct s3_req *r);

/* GET bodies: one read and one write in flight at a time, overlapped. */
static void piece_written(struct http_conn *c, int status, void *arg)
{
    struct s3_req *r = arg;
    r->writing = 0;
    if (r->closed) {
        req_free(r);
        return;
    }
    if (status)
        return; /* the connection closes next; on_close frees the request */
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
        fail(r, S3E_INTERNAL, PL_ESHUTDOWN);
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
        if (op_has_stream_body(r->op))
            r->mode = BODY_STREAM;
        else if (op_collects_body(r->op))
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
        fail(r, S3E_MALFORMED_XML, 0);
        r->mode = BODY_NONE;
        return;
    }
    if (pl_buf_add(&r->body, p, n)) {
        fail(r, S3E_INTERNAL, PL_ENOMEM);
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
    pl_metrics_observe(pl_metrics_slot("s3", op_names[r->op]), ns, status >= 400, r->received,
                       out);
    if (r->err != S3E_NONE && status >= 500)
        pl_log(PL_LOG_WARN, "s3", "peer=%s op=%s bucket=%s key=%s status=%d code=%s err=%s ms=%.1f",
               http_conn_peer(r->c), op_names[r->op], r->bucket, r->key.data, status,
               err_rows[r->err].code, pl_errname(r->err_pl), ms);
    else
        pl_log(PL_LOG_DEBUG, "s3", "peer=%s op=%s bucket=%s key=%s status=%d ms=%.1f",
               http_conn_peer(r->c), op_names[r->op], r->bucket, r->key.data, status, ms);
}

static void response_done(struct http_conn *c, int status, void *arg)
{
    struct s3_req *r = arg;
    r->writing = 0;
    if (r->closed) {
        req_free(r);
        return;
    }
    if (status)
        return; /* the connection closes next; on_close frees the request */
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
        const struct s3_err_row *e = &err_rows[r->err];
        status = e->status;
        if (status != 304 && !r->is_head) {
            int rc = pl_buf_addf(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s"
                                        "</Code><Message>",
                                 e->code);
            rc |= xml_esc(&body, r->err_detail ? r->err_detail : e->msg);
            rc |= pl_buf_addstr(&body, "</Message>");
            if (r->bucket[0]) {
                rc |= pl_buf_addstr(&body, "<BucketName>");
                rc |= xml_esc(&body, r->bucket);
                rc |= pl_buf_addstr(&body, "</BucketName>");
            }
            if (r->key.len) {
                rc |= pl_buf_addstr(&body, "<Key>");
                rc |= xml_esc(&body, r->key.data);
                rc |= pl_buf_addstr(&body, "</Key>");
            }
            if (r->err == S3E_SIGNATURE && r->xml.len)
                rc |= pl_buf_add(&body, r->xml.data, r->xml.len);
            if (r->err == S3E_INVALID_ACCESS_KEY) {
                rc |= pl_buf_addstr(&body, "<AWSAccessKeyId>");
                rc |= xml_esc(&body, r->auth.access_key);
                rc |= pl_buf_addstr(&body, "</AWSAccessKeyId>");
            }
            rc |= pl_buf_addstr(&body, "<Resource>");
            rc |= xml_esc(&body, r->path_raw ? r->path_raw : "/");
            rc |= pl_buf_addf(&body, "</Resource><RequestId>%s</RequestId></Error>", r->req_id);
            if (rc)
                pl_buf_reset(&body);
        }
        /* keep only headers that make sense on errors (Content-Range on 416) */
        if (r->err != S3E_INVALID_RANGE)
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
        fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "The request target could not be parsed";
        respond(r);
        return;
    }
    route(r);
    if (r->op == OP_UNSUPPORTED) {
        fail(r, S3E_NOT_IMPLEMENTED, 0);
        respond(r);
        return;
    }
    if (!op_has_stream_body(r->op) && !op_collects_body(r->op) && hr->content_length <= 0 &&
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

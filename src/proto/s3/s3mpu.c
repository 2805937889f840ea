/* S3 multipart uploads and tagging (pool thread). */
#include "proto/s3/s3int.h"

enum s3_err s3_mpu_err(int rc)
{
    switch (rc) {
    case PL_ENOUPLOAD: return S3E_NO_UPLOAD;
    case PL_EBADPART: return S3E_INVALID_PART;
    case PL_EPARTORDER: return S3E_INVALID_PART_ORDER;
    case PL_ETOOSMALL: return S3E_ENTITY_TOO_SMALL;
    case PL_EDIGEST: return S3E_BAD_DIGEST;
    default: return s3_map_err(rc);
    }
}

/* Check the upload belongs to this bucket/key and open a part writer. */
int s3_mpu_part_open(struct s3_req *r, struct pl_writer **ret)
{
    const char *uid = s3_query_get(&r->q, "uploadId");
    const char *pn = s3_query_get(&r->q, "partNumber");
    struct pl_mpu_info info;
    char *end;
    long n = strtol(pn ? pn : "", &end, 10);
    if (!pn || *end || n < 1 || n > PL_PARTS_MAX) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "Part number must be an integer between 1 and 10000, inclusive";
        return PL_EINVAL;
    }
    int rc = pl_mpu_get(r->srv->st, uid, &info);
    if (!rc && (strcmp(info.bucket, r->bucket) || strcmp(info.key, r->key.data)))
        rc = PL_ENOUPLOAD;
    if (!rc)
        rc = pl_mpu_part_begin(r->srv->st, uid, (int)n, ret);
    if (rc)
        s3_fail(r, s3_mpu_err(rc), rc);
    return rc;
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
        rc = s3_lookup(r, r->bucket, r->key.data, s3_query_get(&r->q, "versionId"), &a);
        if (!rc)
            *ret_id = a.id;
        return rc;
    } else {
        struct pl_bucket_info b;
        rc = pl_bucket_get(r->srv->st, r->bucket, &b);
        if (!rc)
            *ret_id = b.id;
    }
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
    return rc;
}

void s3_op_tagging(struct s3_req *r)
{
    uint64_t id;
    if (tagging_target(r, &id))
        return;
    int rc = 0;
    if (r->op == OP_DELETE_TAGGING) {
        rc = pl_xattr_remove(r->srv->st, id, "s3.tagging");
        if (rc && rc != PL_ENODATA)
            s3_fail(r, s3_map_err(rc), rc);
        else
            r->status = 204;
        return;
    }
    if (r->op == OP_PUT_TAGGING) {
        struct s3_xml_list l;
        struct pl_buf v;
        if (s3_xml_parse_tagging(r->body.data, r->body.len, r->key.len ? 10 : 50, &l)) {
            s3_fail(r, S3E_MALFORMED_XML, 0);
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
            s3_fail(r, s3_map_err(rc), rc);
        pl_buf_release(&v);
        s3_xml_list_release(&l);
        return;
    }
    char val[8192];
    ssize_t n = pl_xattr_get(r->srv->st, id, PL_VIEW_LIVE, "s3.tagging", val, sizeof(val) - 1);
    if (n == PL_ENODATA && !r->key.len) {
        s3_fail(r, S3E_NO_TAGS, 0); /* a bucket without tags, as AWS answers */
        return;
    }
    if (n < 0 && n != PL_ENODATA) {
        s3_fail(r, s3_map_err((int)n), (int)n);
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
            rc = s3_xml_esc(&r->xml, tags.p[i].name);
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</Key><Value>");
        if (!rc)
            rc = s3_xml_esc(&r->xml, tags.p[i].value);
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</Value></Tag>");
    }
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</TagSet></Tagging>");
    s3_query_release(&tags);
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
}

/* ---- multipart (pool thread) ---- */
void s3_op_create_mpu(struct s3_req *r)
{
    struct pl_buf store;
    const char **xattrs = NULL;
    char uid[PL_UPLOAD_ID_LEN + 1];
    if (r->key.len > PL_KEY_MAX) {
        s3_fail(r, S3E_KEY_TOO_LONG, 0);
        return;
    }
    pl_buf_init(&store);
    int rc = s3_meta_from_headers(r->hr, &store, &xattrs);
    struct pl_obj_meta m = {http_req_header(r->hr, "content-type"), NULL, xattrs, NULL};
    if (!rc)
        rc = pl_mpu_create(r->srv->st, r->bucket, r->key.data, &m, uid);
    free(xattrs);
    pl_buf_release(&store);
    if (rc) {
        s3_fail(r, rc == PL_EINVAL ? S3E_INVALID_ARGUMENT : s3_map_err(rc), rc);
        return;
    }
    rc = pl_buf_addf(&r->xml, "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/"
                              "doc/2006-03-01/\"><Bucket>%s</Bucket><Key>",
                     r->bucket);
    if (!rc)
        rc = s3_xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>",
                         uid);
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
}

static int mpu_check(struct s3_req *r, struct pl_mpu_info *info)
{
    int rc = pl_mpu_get(r->srv->st, s3_query_get(&r->q, "uploadId"), info);
    if (!rc && (strcmp(info->bucket, r->bucket) || strcmp(info->key, r->key.data)))
        rc = PL_ENOUPLOAD;
    if (rc == PL_ENOUPLOAD && !s3_bucket_exists(r))
        return rc;
    if (rc)
        s3_fail(r, s3_mpu_err(rc), rc);
    return rc;
}

void s3_op_complete_mpu(struct s3_req *r)
{
    struct pl_mpu_info info;
    struct pl_part_ref *refs = NULL;
    struct s3_xml_list l = {0};
    if (mpu_check(r, &info))
        return;
    if (s3_xml_parse_complete(r->body.data, r->body.len, PL_PARTS_MAX, &l) || l.n == 0) {
        s3_fail(r, S3E_MALFORMED_XML, 0);
        goto out;
    }
    refs = calloc(l.n, sizeof(*refs));
    if (!refs) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        refs[i].number = l.items[i].number;
        refs[i].etag = l.items[i].etag;
    }
    struct pl_attr a;
    int rc = pl_mpu_complete(r->srv->st, s3_query_get(&r->q, "uploadId"), refs, l.n, &a);
    if (rc == PL_ECONFLICT) {
        s3_fail(r, S3E_KEY_CONFLICT, rc);
        goto out;
    }
    if (rc) {
        s3_fail(r, s3_mpu_err(rc), rc);
        goto out;
    }
    rc = pl_buf_addf(&r->xml, "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/"
                              "doc/2006-03-01/\"><Location>/%s/",
                     r->bucket);
    if (!rc)
        rc = s3_xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Location><Bucket>%s</Bucket><Key>", r->bucket);
    if (!rc)
        rc = s3_xml_esc(&r->xml, r->key.data);
    if (!rc)
        rc = s3_version_header(r, a.version);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Key><ETag>&quot;%s&quot;</ETag>"
                                  "</CompleteMultipartUploadResult>",
                         a.etag);
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
out:
    free(refs);
    s3_xml_list_release(&l);
}

void s3_op_abort_mpu(struct s3_req *r)
{
    struct pl_mpu_info info;
    if (mpu_check(r, &info))
        return;
    int rc = pl_mpu_abort(r->srv->st, s3_query_get(&r->q, "uploadId"));
    if (rc)
        s3_fail(r, s3_mpu_err(rc), rc);
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
    s3_iso8601(p->mtime, t, sizeof(t));
    L->n++;
    L->last = p->number;
    return pl_buf_addf(L->x, "<Part><PartNumber>%d</PartNumber><LastModified>%s</LastModified>"
                             "<ETag>&quot;%s&quot;</ETag><Size>%" PRIu64 "</Size></Part>",
                       p->number, t, p->etag, p->size) != 0;
}

void s3_op_list_parts(struct s3_req *r)
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
        rc = s3_xml_esc(&r->xml, r->key.data);
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
        s3_fail(r, s3_mpu_err(rc), rc);
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
    s3_iso8601(u->initiated, t, sizeof(t));
    int rc = pl_buf_addstr(L->x, "<Upload><Key>");
    if (!rc)
        rc = s3_xml_esc(L->x, u->key);
    if (!rc)
        rc = pl_buf_addf(L->x, "</Key><UploadId>%s</UploadId><Initiator><ID>%s</ID></Initiator>"
                               "<Owner><ID>%s</ID></Owner><StorageClass>STANDARD</StorageClass>"
                               "<Initiated>%s</Initiated></Upload>",
                         u->upload_id, L->r->user, L->r->user, t);
    return rc != 0;
}

void s3_op_list_mpus(struct s3_req *r)
{
    struct pl_buf ups;
    if (!s3_bucket_exists(r))
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
        rc = s3_xml_esc(&r->xml, L.prefix);
    if (!rc)
        rc = pl_buf_addf(&r->xml, "</Prefix><MaxUploads>1000</MaxUploads>"
                                  "<IsTruncated>%s</IsTruncated>",
                         L.n > 1000 ? "true" : "false");
    if (!rc)
        rc = pl_buf_add(&r->xml, ups.data, ups.len);
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</ListMultipartUploadsResult>");
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
    pl_buf_release(&ups);
}

/* UploadPartCopy: a range of an existing object becomes a part. */
void s3_op_upload_part_copy(struct s3_req *r)
{
    const char *range = http_req_header(r->hr, "x-amz-copy-source-range");
    struct pl_buf dec;
    struct pl_attr a;
    struct pl_writer *w = NULL;
    char sbucket[64];
    const char *skey, *svid;
    pl_buf_init(&dec);
    if (s3_copy_source(r, sbucket, &skey, &svid, &dec))
        goto out;
    int rc = s3_lookup(r, sbucket, skey, svid, &a);
    if (rc)
        goto out;
    uint64_t from = 0, to = a.size; /* [from, to) */
    if (range) {
        unsigned long long x, y;
        char tail;
        if (sscanf(range, "bytes=%llu-%llu%c", &x, &y, &tail) != 2 || x > y || y >= a.size) {
            s3_fail(r, S3E_INVALID_ARGUMENT, 0);
            r->err_detail = "The x-amz-copy-source-range value must be of the form bytes=first-last "
                            "where first and last are the zero-based offsets of the first and "
                            "last bytes to copy";
            goto out;
        }
        from = x;
        to = y + 1;
    }
    const char *im = http_req_header(r->hr, "x-amz-copy-source-if-match");
    if (im && !s3_etag_matches(im, a.etag)) {
        s3_fail(r, S3E_PRECONDITION, 0);
        goto out;
    }
    if (s3_mpu_part_open(r, &w))
        goto out;
    rc = s3_copy_range(r, a.id, from, to, w);
    struct pl_part_info pi;
    if (!rc) {
        rc = pl_mpu_part_commit(w, NULL, &pi);
        w = NULL;
    }
    if (rc) {
        s3_fail(r, s3_mpu_err(rc), rc);
        goto out;
    }
    s3_copy_result(r, "CopyPartResult", pi.mtime, pi.etag);
out:
    pl_writer_abort(w);
    pl_buf_release(&dec);
}


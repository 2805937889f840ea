/* S3 buckets, objects, listing and copy (pool thread). */
#include "proto/s3/s3int.h"

#include <isa-l.h>
#include <zlib.h>

/* ---- object metadata headers we keep, as xattrs ---- */
static const char *const std_headers[] = {"cache-control", "content-disposition",
                                          "content-encoding", "content-language", "expires"};

/* name/value pairs for pl_obj_meta.xattrs from the request headers; owned
 * strings in *store, pointers into it in out (NULL-terminated). */
int s3_meta_from_headers(struct http_req *h, struct pl_buf *store, const char ***out)
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
int s3_meta_to_headers(struct pl_store *st, const struct pl_attr *a, struct pl_buf *out,
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
    s3_iso8601(b->ctime, t, sizeof(t));
    return pl_buf_addf(x, "<Bucket><Name>%s</Name><CreationDate>%s</CreationDate></Bucket>",
                       b->name, t) != 0;
}

void s3_op_list_buckets(struct s3_req *r)
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
        s3_fail(r, s3_map_err(rc), rc);
}

void s3_op_create_bucket(struct s3_req *r)
{
    if (pl_bucket_name_valid(r->bucket)) {
        s3_fail(r, S3E_BAD_BUCKET_NAME, 0);
        return;
    }
    /* a CreateBucketConfiguration body may name a region: accept any */
    int rc = pl_bucket_create(r->srv->st, r->bucket);
    if (rc == PL_EEXIST)
        s3_fail(r, S3E_BUCKET_OWNED, rc);
    else if (rc)
        s3_fail(r, s3_map_err(rc), rc);
    else if (pl_buf_addf(&r->head, "Location: /%s\r\n", r->bucket))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
}

void s3_op_delete_bucket(struct s3_req *r)
{
    int rc = pl_bucket_delete(r->srv->st, r->bucket);
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
    else
        r->status = 204;
}

int s3_bucket_exists(struct s3_req *r)
{
    struct pl_bucket_info bi;
    int rc = pl_bucket_get(r->srv->st, r->bucket, &bi);
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
    return rc == 0;
}

void s3_op_head_bucket(struct s3_req *r)
{
    if (s3_bucket_exists(r) && pl_buf_addf(&r->head, "x-amz-bucket-region: %s\r\n", r->srv->region))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
}

void s3_op_location(struct s3_req *r)
{
    if (!s3_bucket_exists(r))
        return;
    /* us-east-1 is reported as an empty constraint, as AWS does */
    if (pl_buf_addf(&r->xml,
                    "<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">%s"
                    "</LocationConstraint>",
                    strcmp(r->srv->region, "us-east-1") ? r->srv->region : ""))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
}

void s3_op_get_versioning(struct s3_req *r)
{
    struct pl_bucket_info b;
    int rc = pl_bucket_get(r->srv->st, r->bucket, &b);
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        return;
    }
    /* an unversioned bucket answers an empty configuration, as AWS does */
    const char *st = b.versioning == PL_VERSIONING_ENABLED     ? "<Status>Enabled</Status>"
                     : b.versioning == PL_VERSIONING_SUSPENDED ? "<Status>Suspended</Status>"
                                                               : "";
    if (pl_buf_addf(&r->xml, "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/"
                             "2006-03-01/\">%s</VersioningConfiguration>",
                    st))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
}

void s3_op_put_versioning(struct s3_req *r)
{
    int enabled, mfa;
    if (s3_xml_parse_versioning(r->body.data, r->body.len, &enabled, &mfa)) {
        s3_fail(r, S3E_MALFORMED_XML, 0);
        return;
    }
    if (mfa) {
        s3_fail(r, S3E_NOT_IMPLEMENTED, 0);
        r->err_detail = "MFA Delete is not supported; send MfaDelete Disabled or leave it out";
        return;
    }
    int rc = pl_bucket_versioning_set(r->srv->st, r->bucket,
                                      enabled ? PL_VERSIONING_ENABLED : PL_VERSIONING_SUSPENDED);
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
}

/* ---- bucket notifications: topic configurations delivered by the broker ---- */
void s3_op_get_notification(struct s3_req *r)
{
    struct pl_bucket_info b;
    struct broker_notify *cfg = NULL;
    int rc = pl_bucket_get(r->srv->st, r->bucket, &b);
    if (!rc && r->srv->broker)
        rc = broker_notify_get(r->srv->broker, r->bucket, &cfg);
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        return;
    }
    rc = pl_buf_addstr(&r->xml, "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/"
                                "2006-03-01/\">");
    for (int i = 0; !rc && cfg && i < cfg->n; i++) {
        const struct broker_notify_rule *t = &cfg->rules[i];
        rc = pl_buf_addstr(&r->xml, "<TopicConfiguration><Id>");
        if (!rc)
            rc = s3_xml_esc(&r->xml, t->id);
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</Id><Topic>");
        if (!rc)
            rc = s3_xml_esc(&r->xml, t->arn);
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</Topic>");
        for (int e = 0; !rc && e < t->nevents; e++)
            rc = pl_buf_addf(&r->xml, "<Event>%s</Event>", t->events[e]);
        if (!rc && (t->prefix[0] || t->suffix[0])) {
            rc = pl_buf_addstr(&r->xml, "<Filter><S3Key>");
            const char *names[2] = {"prefix", "suffix"}, *vals[2] = {t->prefix, t->suffix};
            for (int k = 0; !rc && k < 2; k++) {
                if (!vals[k][0])
                    continue;
                rc = pl_buf_addf(&r->xml, "<FilterRule><Name>%s</Name><Value>", names[k]);
                if (!rc)
                    rc = s3_xml_esc(&r->xml, vals[k]);
                if (!rc)
                    rc = pl_buf_addstr(&r->xml, "</Value></FilterRule>");
            }
            if (!rc)
                rc = pl_buf_addstr(&r->xml, "</S3Key></Filter>");
        }
        if (!rc)
            rc = pl_buf_addstr(&r->xml, "</TopicConfiguration>");
    }
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</NotificationConfiguration>");
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
    free(cfg);
}

void s3_op_put_notification(struct s3_req *r)
{
    struct pl_bucket_info b;
    struct broker_notify *cfg = malloc(sizeof(*cfg));
    int rc = cfg ? pl_bucket_get(r->srv->st, r->bucket, &b) : PL_ENOMEM;
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        goto out;
    }
    rc = s3_xml_parse_notification(r->body.data, r->body.len, cfg);
    if (rc) {
        s3_fail(r, rc == PL_EINVAL ? S3E_MALFORMED_XML : S3E_INVALID_ARGUMENT, 0);
        if (rc == PL_EPERM)
            r->err_detail = "Only TopicConfiguration is supported: events go to a Kafka topic "
                            "of this server (Topic is its name or an ARN ending in it)";
        else if (rc == PL_ERANGE)
            r->err_detail = "At most 16 topic configurations per bucket";
        goto out;
    }
    if (!r->srv->broker) {
        s3_fail(r, S3E_NOT_IMPLEMENTED, 0);
        goto out;
    }
    rc = broker_notify_set(r->srv->broker, r->bucket, cfg);
    if (rc == PL_ENOTOPIC || rc == PL_EINVAL) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = rc == PL_ENOTOPIC
                            ? "Unable to validate the following destination configurations: a "
                              "topic does not exist (create it: plenum topic create NAME)"
                            : "An event name is not one S3 (or Plenum) has";
    } else if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
    }
out:
    free(cfg);
}

int s3_version_header(struct s3_req *r, uint64_t v)
{
    char vid[PL_VERSION_LEN];
    struct pl_bucket_info b;
    if (!v && (pl_bucket_get(r->srv->st, r->bucket, &b) || b.versioning == PL_VERSIONING_OFF))
        return 0; /* unversioned: no header, as AWS */
    pl_version_str(v, vid);
    return pl_buf_addf(&r->head, "x-amz-version-id: %s\r\n", vid);
}

int s3_lookup(struct s3_req *r, const char *bucket, const char *key, const char *vid,
              struct pl_attr *ret)
{
    int dm = 0;
    char v[PL_VERSION_LEN], t[40];
    int rc = pl_obj_lookup_version(r->srv->st, bucket, key, vid, ret, &dm);
    if (!rc && !dm && pl_elem_etag(r->srv->st, ret, PL_VIEW_LIVE))
        pl_log(PL_LOG_WARN, "s3", "cannot compute the ETag of %s/%s", bucket, key);
    if (rc == PL_EINVAL) {
        s3_fail(r, S3E_INVALID_ARGUMENT, rc);
        r->err_detail = "Invalid version id specified";
        return rc;
    }
    if (rc && !dm) {
        s3_fail(r, s3_map_err(rc), rc);
        return rc;
    }
    if (dm) {
        /* a delete marker: 404 as the latest, 405 when asked for by id */
        pl_version_str(ret->version, v);
        http_date(ret->mtime / 1000000000, t, sizeof(t));
        r->keep_head = 1;
        if (pl_buf_addf(&r->head, "x-amz-delete-marker: true\r\nx-amz-version-id: %s\r\n", v) ||
            (vid && pl_buf_addf(&r->head, "Last-Modified: %s\r\n", t)))
            rc = PL_ENOMEM;
        s3_fail(r, rc == PL_ENOMEM ? S3E_INTERNAL : vid ? S3E_METHOD : S3E_NO_KEY,
                vid ? 0 : PL_ENOENT);
        if (vid)
            r->err_detail = "The specified method is not allowed against this resource.";
        return vid ? PL_EINVAL : PL_ENOENT;
    }
    return 0;
}

/* ---- listing ---- */
struct lister {
    struct s3_req *r;
    const char *prefix;
    char delim[8];     /* "" none, else the delimiter (any string) */
    int max, n, truncated, url, v2, fetch_owner;
    char last[PL_KEY_MAX + 2];
    uint64_t last_version;  /* versions: of the last entry, unless it was a prefix */
    int last_was_prefix;
    const char *skip_prefix; /* versions: a common prefix already listed */
    char last_prefix[PL_KEY_MAX + 2];
    struct pl_buf contents, prefixes;
};

static int enc(struct lister *L, struct pl_buf *b, const char *s)
{
    if (!L->url)
        return s3_xml_esc(b, s);
    struct pl_buf t;
    pl_buf_init(&t);
    int rc = s3_uri_encode(s, strlen(s), 1, &t);
    if (!rc)
        rc = s3_xml_esc(b, t.data);
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
        struct pl_attr ea = *a;
        /* written in place through a file head: its ETag is computed once */
        if (pl_elem_etag(L->r->srv->st, &ea, PL_VIEW_LIVE))
            ea.etag[0] = 0;
        a = &ea;
        s3_iso8601(a->mtime, t, sizeof(t));
        rc = pl_buf_addstr(&L->contents, "<Contents><Key>");
        if (!rc)
            rc = enc(L, &L->contents, key);
        if (!rc)
            rc = pl_buf_addf(&L->contents,
                             "</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag>"
                             "<Size>%" PRIu64 "</Size>",
                             t, a->etag, a->type == PL_T_DIR ? 0 : a->size);
        if (!rc && (L->fetch_owner || !L->v2))
            rc = pl_buf_addf(&L->contents,
                             "<Owner><ID>%s</ID><DisplayName>%s</DisplayName></Owner>",
                             L->r->user, L->r->user);
        if (!rc)
            rc = pl_buf_addstr(&L->contents, "<StorageClass>STANDARD</StorageClass></Contents>");
    }
    snprintf(L->last, sizeof(L->last), "%s", key);
    L->n++;
    return rc ? 1 : 0;
}

/* The query parameters every listing shares. */
static int lister_init(struct s3_req *r, struct lister *L)
{
    const struct s3_query *q = &r->q;
    pl_buf_init(&L->contents);
    pl_buf_init(&L->prefixes);
    L->r = r;
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
            s3_fail(r, S3E_INVALID_ARGUMENT, 0);
            return PL_EINVAL;
        }
        L->max = v < 1000 ? (int)v : 1000;
    }
    const char *et = s3_query_get(q, "encoding-type");
    if (et && strcmp(et, "url")) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        return PL_EINVAL;
    }
    L->url = et != NULL;
    return 0;
}

/* The elements every listing result starts with. */
static int lister_head(struct lister *L, struct pl_buf *x, const char *root)
{
    int rc = pl_buf_addf(x, "<%s xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>%s</Name>"
                            "<Prefix>",
                         root, L->r->bucket);
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
    return rc;
}

void s3_op_list_objects(struct s3_req *r)
{
    struct lister *L = calloc(1, sizeof(*L));
    const struct s3_query *q = &r->q;
    struct pl_buf tok;
    int rc;
    if (!L) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    pl_buf_init(&tok);
    if (lister_init(r, L))
        goto out;
    L->v2 = r->op == OP_LIST_OBJECTS_V2;
    L->fetch_owner = s3_query_get(q, "fetch-owner") && !strcmp(s3_query_get(q, "fetch-owner"),
                                                               "true");
    /* where to start: v2 continuation token (our own: hex of the last key), or
     * start-after; v1 marker */
    const char *after = "";
    const char *ct = L->v2 ? s3_query_get(q, "continuation-token") : NULL;
    if (ct) {
        size_t n = strlen(ct);
        uint8_t *raw = malloc(n / 2 + 1);
        if (!raw || n % 2 || n / 2 > PL_KEY_MAX || pl_unhex(ct, raw, n / 2) ||
            pl_buf_add(&tok, raw, n / 2)) {
            free(raw);
            s3_fail(r, S3E_INVALID_ARGUMENT, 0);
            r->err_detail = "The continuation token provided is incorrect";
            goto out;
        }
        free(raw);
        after = tok.data;
    } else if (L->v2 && s3_query_get(q, "start-after")) {
        after = s3_query_get(q, "start-after");
    } else if (!L->v2 && s3_query_get(q, "marker")) {
        after = s3_query_get(q, "marker");
    }
    if (L->max > 0) {
        rc = pl_obj_list(r->srv->st, r->bucket, L->prefix, after,
                         !strcmp(L->delim, "/") ? '/' : 0, PL_VIEW_LIVE, list_cb, L);
        if (rc) {
            s3_fail(r, s3_map_err(rc), rc);
            goto out;
        }
    } else if (!s3_bucket_exists(r)) {
        goto out;
    }
    struct pl_buf *x = &r->xml;
    const char *root = "ListBucketResult";
    rc = lister_head(L, x, root);
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
        s3_fail(r, S3E_INTERNAL, rc);
out:
    pl_buf_release(&L->contents);
    pl_buf_release(&L->prefixes);
    pl_buf_release(&tok);
    free(L);
}

/* ---- ListObjectVersions ---- */
static int versions_cb(void *arg, const struct pl_version_info *v)
{
    struct lister *L = arg;
    const char *key = v->key;
    size_t pl = strlen(L->prefix);
    char cp[PL_KEY_MAX + 2];
    int rc;
    if (L->skip_prefix && !strncmp(key, L->skip_prefix, strlen(L->skip_prefix)))
        return 0; /* under a common prefix an earlier page listed */
    const char *d = L->delim[0] ? strstr(key + pl, L->delim) : NULL;
    if (d) {
        size_t n = (size_t)(d - key) + strlen(L->delim);
        memcpy(cp, key, n);
        cp[n] = 0;
        if (!strcmp(cp, L->last_prefix))
            return 0;
    }
    if (L->n == L->max) {
        L->truncated = 1;
        return 1;
    }
    L->n++;
    if (d) {
        snprintf(L->last_prefix, sizeof(L->last_prefix), "%s", cp);
        snprintf(L->last, sizeof(L->last), "%s", cp);
        L->last_was_prefix = 1;
        rc = pl_buf_addstr(&L->prefixes, "<CommonPrefixes><Prefix>");
        if (!rc)
            rc = enc(L, &L->prefixes, cp);
        if (!rc)
            rc = pl_buf_addstr(&L->prefixes, "</Prefix></CommonPrefixes>");
        return rc ? 1 : 0;
    }
    char t[40], vid[PL_VERSION_LEN];
    const char *tag = v->delete_marker ? "DeleteMarker" : "Version";
    s3_iso8601(v->a->mtime, t, sizeof(t));
    pl_version_str(v->version, vid);
    snprintf(L->last, sizeof(L->last), "%s", key);
    L->last_version = v->version;
    L->last_was_prefix = 0;
    rc = pl_buf_addf(&L->contents, "<%s><Key>", tag);
    if (!rc)
        rc = enc(L, &L->contents, key);
    if (!rc)
        rc = pl_buf_addf(&L->contents,
                         "</Key><VersionId>%s</VersionId><IsLatest>%s</IsLatest>"
                         "<LastModified>%s</LastModified>",
                         vid, v->latest ? "true" : "false", t);
    if (!rc && !v->delete_marker)
        rc = pl_buf_addf(&L->contents, "<ETag>&quot;%s&quot;</ETag><Size>%" PRIu64 "</Size>"
                                       "<StorageClass>STANDARD</StorageClass>",
                         v->a->etag, v->a->type == PL_T_DIR ? 0 : v->a->size);
    if (!rc)
        rc = pl_buf_addf(&L->contents,
                         "<Owner><ID>%s</ID><DisplayName>%s</DisplayName></Owner></%s>",
                         L->r->user, L->r->user, tag);
    return rc ? 1 : 0;
}

void s3_op_list_versions(struct s3_req *r)
{
    struct lister *L = calloc(1, sizeof(*L));
    const struct s3_query *q = &r->q;
    if (!L) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    int rc = lister_init(r, L);
    if (rc)
        goto out;
    const char *km = s3_query_get(q, "key-marker") ? s3_query_get(q, "key-marker") : "";
    const char *vm = s3_query_get(q, "version-id-marker");
    uint64_t vmv;
    if (vm && *vm && (!*km || pl_version_parse(vm, &vmv))) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = *km ? "Invalid version id specified"
                            : "A version-id marker cannot be specified without a key marker.";
        goto out;
    }
    size_t kml = strlen(km), dl = strlen(L->delim);
    if (dl && kml >= dl && !strcmp(km + kml - dl, L->delim) && (!vm || !*vm))
        L->skip_prefix = km; /* the marker is a common prefix: skip all under it */
    if (L->max > 0) {
        rc = pl_obj_versions(r->srv->st, r->bucket, L->prefix, km, vm, versions_cb, L);
        if (rc == PL_EINVAL) {
            s3_fail(r, S3E_INVALID_ARGUMENT, rc);
            goto out;
        }
        if (rc) {
            s3_fail(r, s3_map_err(rc), rc);
            goto out;
        }
    } else if (!s3_bucket_exists(r)) {
        goto out;
    }
    struct pl_buf *x = &r->xml;
    rc = lister_head(L, x, "ListVersionsResult");
    if (!rc)
        rc = pl_buf_addstr(x, "<KeyMarker>");
    if (!rc)
        rc = enc(L, x, km);
    if (!rc)
        rc = pl_buf_addstr(x, "</KeyMarker><VersionIdMarker>");
    if (!rc && vm)
        rc = enc(L, x, vm);
    if (!rc)
        rc = pl_buf_addstr(x, "</VersionIdMarker>");
    if (!rc && L->truncated) {
        rc = pl_buf_addstr(x, "<NextKeyMarker>");
        if (!rc)
            rc = enc(L, x, L->last);
        if (!rc)
            rc = pl_buf_addstr(x, "</NextKeyMarker>");
        if (!rc && !L->last_was_prefix) {
            char vid[PL_VERSION_LEN];
            pl_version_str(L->last_version, vid);
            rc = pl_buf_addf(x, "<NextVersionIdMarker>%s</NextVersionIdMarker>", vid);
        }
    }
    if (!rc)
        rc = pl_buf_add(x, L->contents.data, L->contents.len);
    if (!rc)
        rc = pl_buf_add(x, L->prefixes.data, L->prefixes.len);
    if (!rc)
        rc = pl_buf_addstr(x, "</ListVersionsResult>");
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
out:
    pl_buf_release(&L->contents);
    pl_buf_release(&L->prefixes);
    free(L);
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

void s3_put_prepare(struct s3_req *r)
{
    struct http_req *h = r->hr;
    const char *ph = r->auth.payload_hash;
    if (r->key.len > PL_KEY_MAX) {
        s3_fail(r, S3E_KEY_TOO_LONG, 0);
        return;
    }
    if (pl_key_valid(r->key.data)) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "Object keys may not contain empty, '.' or '..' path segments";
        return;
    }
    if (h->content_length < 0 && !h->chunked) {
        s3_fail(r, S3E_MISSING_LENGTH, 0);
        return;
    }
    if (h->content_length > (int64_t)MAX_PUT + (1 << 20)) {
        s3_fail(r, S3E_TOO_LARGE, 0);
        return;
    }
    if (!strncmp(ph, "STREAMING-", 10)) {
        int sign = !strcmp(ph, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD") ||
                   !strcmp(ph, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER");
        if (!sign && strcmp(ph, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")) {
            s3_fail(r, S3E_NOT_IMPLEMENTED, 0);
            return;
        }
        if (s3_chunked_init(&r->ck, sign, r->sigkey, &r->auth, r->auth.signature)) {
            s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
        r->aws_chunked = 1;
    } else if (strcmp(ph, "UNSIGNED-PAYLOAD")) {
        uint8_t tmp[32];
        if (strlen(ph) != 64 || pl_unhex(ph, tmp, 32)) {
            s3_fail(r, S3E_INVALID_ARGUMENT, 0);
            r->err_detail = "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-*, or a "
                            "SHA-256 hex digest";
            return;
        }
        r->payload_sha = EVP_MD_CTX_new();
        if (!r->payload_sha || !EVP_DigestInit_ex(r->payload_sha, EVP_sha256(), NULL)) {
            s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
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
            s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
    }
    const char *md5 = http_req_header(h, "content-md5");
    uint8_t d[32];
    size_t dn;
    if (md5 && (s3_b64_decode(md5, d, sizeof(d), &dn) || dn != 16)) {
        s3_fail(r, S3E_INVALID_DIGEST, 0);
        return;
    }
    int rc;
    if (r->op == OP_UPLOAD_PART) {
        rc = s3_mpu_part_open(r, &r->w);
        if (rc)
            return;
    } else {
        rc = pl_obj_put_begin(r->srv->st, r->bucket, r->key.data, &r->w);
    }
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
}

void s3_body_feed(struct s3_req *r, const struct pl_buf *b)
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
        s3_fail(r, S3E_SIGNATURE, rc);
    else if (rc == PL_EPROTO)
        s3_fail(r, S3E_INCOMPLETE_BODY, rc);
    else if (rc == PL_EFBIG)
        s3_fail(r, S3E_TOO_LARGE, rc);
    else if (rc)
        s3_fail(r, s3_map_err(rc), rc);
}

void s3_put_finish(struct s3_req *r)
{
    struct http_req *h = r->hr;
    char cks_b64[64] = "";
    s3_body_feed(r, &r->batch);
    if (r->err != S3E_NONE)
        return;
    if (r->aws_chunked && !r->ck.done) {
        s3_fail(r, S3E_INCOMPLETE_BODY, 0);
        return;
    }
    const char *dl = http_req_header(h, "x-amz-decoded-content-length");
    if (r->aws_chunked && dl && strtoull(dl, NULL, 10) != r->received) {
        s3_fail(r, S3E_INCOMPLETE_BODY, 0);
        return;
    }
    if (r->payload_sha) {
        uint8_t md[32];
        unsigned int len = 32;
        char hex[65];
        EVP_DigestFinal_ex(r->payload_sha, md, &len);
        pl_hex(md, 32, hex);
        if (strcmp(hex, r->auth.payload_hash)) {
            s3_fail(r, S3E_SHA_MISMATCH, 0);
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
        s3_b64_encode(md, mdn, cks_b64);
        char hn[40];
        snprintf(hn, sizeof(hn), "x-amz-checksum-%s", r->cks_name);
        const char *want = http_req_header(h, hn);
        if (!want && r->aws_chunked && !strcmp(r->ck.trailer_name, hn))
            want = r->ck.trailer_value;
        if (want && strcmp(want, cks_b64)) {
            s3_fail(r, S3E_BAD_DIGEST, 0);
            return;
        }
    }
    uint8_t md5[32];
    size_t md5n = 0;
    const char *cmd5 = http_req_header(h, "content-md5");
    if (cmd5 && s3_b64_decode(cmd5, md5, sizeof(md5), &md5n)) {
        s3_fail(r, S3E_INVALID_DIGEST, 0);
        return;
    }
    int rc;
    if (r->op == OP_UPLOAD_PART) {
        struct pl_part_info pi;
        rc = pl_mpu_part_commit(r->w, md5n == 16 ? md5 : NULL, &pi);
        r->w = NULL;
        if (rc)
            s3_fail(r, s3_mpu_err(rc), rc);
        else if (pl_buf_addf(&r->head, "ETag: \"%s\"\r\n", pi.etag) ||
                 (cks_b64[0] &&
                  pl_buf_addf(&r->head, "x-amz-checksum-%s: %s\r\n", r->cks_name, cks_b64)))
            s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    struct pl_buf store;
    const char **xattrs = NULL;
    pl_buf_init(&store);
    rc = s3_meta_from_headers(h, &store, &xattrs);
    if (rc) {
        s3_fail(r, S3E_INTERNAL, rc);
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
        s3_fail(r, S3E_BAD_DIGEST, rc);
        return;
    }
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        return;
    }
    rc = pl_buf_addf(&r->head, "ETag: \"%s\"\r\n", a.etag);
    if (!rc && cks_b64[0])
        rc = pl_buf_addf(&r->head, "x-amz-checksum-%s: %s\r\n", r->cks_name, cks_b64);
    if (!rc)
        rc = s3_version_header(r, a.version);
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
}

/* ---- GetObject / HeadObject (pool thread) ---- */
int64_t s3_http_time(const char *s)
{
    struct tm tm = {0};
    if (!s || !strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return -1;
    return (int64_t)timegm(&tm);
}

int s3_etag_matches(const char *hdr, const char *etag)
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

/* GET/HEAD ?partNumber=N: the bytes of part N as it was uploaded. */
static int get_part(struct s3_req *r, const char *pn, int has_range, uint64_t size)
{
    char *end;
    long n = strtol(pn, &end, 10);
    uint64_t off, len;
    int count;
    if (!*pn || *end || n < 1 || n > PL_PARTS_MAX) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        r->err_detail = "Part number must be an integer between 1 and 10000, inclusive";
        return PL_EINVAL;
    }
    if (has_range) {
        s3_fail(r, S3E_INVALID_REQUEST, 0);
        r->err_detail = "Cannot specify both Range header and partNumber query parameter";
        return PL_EINVAL;
    }
    int rc = pl_obj_part(r->srv->st, r->attr.id, PL_VIEW_LIVE, (int)n, &off, &len, &count);
    if (rc == PL_ERANGE) {
        s3_fail(r, S3E_INVALID_PART_NUMBER, rc);
        return rc;
    }
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        return rc;
    }
    r->pos = off;
    r->end = off + len;
    if (!strchr(r->attr.etag, '-'))
        return 0; /* a plain object is its one part: the whole of it, 200 */
    r->status = 206;
    if ((len && pl_buf_addf(&r->head, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64
                                      "\r\n",
                            off, off + len - 1, size)) ||
        pl_buf_addf(&r->head, "x-amz-mp-parts-count: %d\r\n", count)) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        return PL_ENOMEM;
    }
    return 0;
}

void s3_get_prepare(struct s3_req *r)
{
    struct http_req *h = r->hr;
    char ctype[256] = "", t[40];
    const char *vid = s3_query_get(&r->q, "versionId");
    int rc = s3_lookup(r, r->bucket, r->key.data, vid, &r->attr);
    if (rc)
        return;
    if (r->op == OP_GET_OBJECT) {
        /* keep these bytes readable to the end, even if the key is replaced
         * meanwhile; the pin is taken before we check the object is still there */
        pl_elem_pin(r->srv->st, r->attr.id);
        r->pinned = 1;
        struct pl_attr again;
        if (pl_elem_getattr(r->srv->st, r->attr.id, PL_VIEW_LIVE, &again)) {
            /* replaced between the lookup and the pin: rare, and retryable */
            s3_fail(r, S3E_SLOW_DOWN, PL_EAGAIN);
            return;
        }
    }
    uint64_t size = r->attr.type == PL_T_DIR ? 0 : r->attr.size;
    int64_t mtime = r->attr.mtime / 1000000000;
    /* conditionals, in RFC 7232 order */
    const char *im = http_req_header(h, "if-match"), *inm = http_req_header(h, "if-none-match");
    int64_t ims = s3_http_time(http_req_header(h, "if-modified-since"));
    int64_t ius = s3_http_time(http_req_header(h, "if-unmodified-since"));
    if (im && !s3_etag_matches(im, r->attr.etag)) {
        s3_fail(r, S3E_PRECONDITION, 0);
        return;
    }
    if (!im && ius >= 0 && mtime > ius) {
        s3_fail(r, S3E_PRECONDITION, 0);
        return;
    }
    if (inm && s3_etag_matches(inm, r->attr.etag)) {
        s3_fail(r, S3E_NOT_MODIFIED, 0);
        return;
    }
    if (!inm && ims >= 0 && mtime <= ims) {
        s3_fail(r, S3E_NOT_MODIFIED, 0);
        return;
    }
    r->pos = 0;
    r->end = size;
    const char *range = http_req_header(h, "range");
    const char *pn = s3_query_get(&r->q, "partNumber");
    if (pn) {
        if (get_part(r, pn, range != NULL, size))
            return;
        range = NULL;
    }
    if (range && !strncmp(range, "bytes=", 6) && !strchr(range, ',')) {
        const char *spec = range + 6;
        char *e1, *e2;
        if (size == 0) {
            s3_fail(r, S3E_INVALID_RANGE, 0); /* nothing to select from */
        } else if (*spec == '-') {
            unsigned long long n = strtoull(spec + 1, &e1, 10);
            if (*e1 || e1 == spec + 1 || n == 0) {
                s3_fail(r, S3E_INVALID_RANGE, 0);
            } else {
                r->pos = n >= size ? 0 : size - n;
            }
        } else {
            unsigned long long a = strtoull(spec, &e1, 10);
            if (e1 == spec || *e1 != '-') {
                r->status = 200; /* malformed ranges are ignored, as HTTP says */
            } else if (a >= size) {
                s3_fail(r, S3E_INVALID_RANGE, 0);
            } else {
                unsigned long long b = e1[1] ? strtoull(e1 + 1, &e2, 10) : size - 1;
                if (e1[1] && *e2) {
                    s3_fail(r, S3E_INVALID_RANGE, 0);
                } else {
                    r->pos = a;
                    r->end = (b >= size ? size - 1 : b) + 1;
                    if (r->end <= r->pos)
                        s3_fail(r, S3E_INVALID_RANGE, 0);
                }
            }
        }
        if (r->err == S3E_INVALID_RANGE) {
            if (pl_buf_addf(&r->head, "Content-Range: bytes */%" PRIu64 "\r\n", size))
                s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
            return;
        }
        if (r->err == S3E_NONE && r->status == 0) {
            r->status = 206;
            if (pl_buf_addf(&r->head, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64
                                      "\r\n",
                            r->pos, r->end - 1, size)) {
                s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
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
        rc = s3_meta_to_headers(r->srv->st, &r->attr, &r->head, h, &r->q);
    if (!rc && (r->attr.version || vid)) {
        char v[PL_VERSION_LEN];
        pl_version_str(r->attr.version, v);
        rc = pl_buf_addf(&r->head, "x-amz-version-id: %s\r\n", v);
    }
    if (rc)
        s3_fail(r, s3_map_err(rc), rc);
}

/* Read the piece at r->rd_off into r->rd_buf (pool thread). The loop thread
 * never looks at rd_* while the job runs; job_after hands the piece over. */
void s3_get_read(struct s3_req *r)
{
    size_t want = (size_t)PL_MIN((uint64_t)READ_PIECE, r->end - r->rd_off), got = 0;
    if (!r->rd_buf)
        r->rd_buf = malloc(READ_PIECE);
    if (!r->rd_buf) {
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
        return;
    }
    int rc = pl_elem_read(r->srv->st, r->attr.id, PL_VIEW_LIVE, r->rd_off, r->rd_buf, want, &got);
    if (!rc && got != want)
        rc = PL_EIO; /* truncated under us */
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        pl_log(PL_LOG_WARN, "s3", "GET %s/%s failed at offset %" PRIu64 ": %s", r->bucket,
               r->key.data, r->rd_off, pl_strerror(rc));
        return;
    }
    r->rd_n = got;
}

/* ---- DeleteObject(s), CopyObject (pool thread) ---- */
/* Delete key (version vid or the latest); *dm and *v say what happened. */
static int delete_one(struct s3_req *r, const char *key, const char *vid, int *dm, uint64_t *v)
{
    *dm = 0;
    *v = 0;
    int rc = pl_obj_delete_version(r->srv->st, r->bucket, key, vid, dm, v);
    if (rc == PL_ENOENT || rc == PL_ENOTDIR || rc == PL_ENOTEMPTY)
        rc = 0; /* deleting what is not there succeeds, as in S3 */
    return rc;
}

void s3_op_delete_object(struct s3_req *r)
{
    const char *vid = s3_query_get(&r->q, "versionId");
    char v[PL_VERSION_LEN];
    uint64_t ver;
    int dm, rc = delete_one(r, r->key.data, vid, &dm, &ver);
    if (rc == PL_EINVAL) {
        s3_fail(r, S3E_INVALID_ARGUMENT, rc);
        r->err_detail = "Invalid version id specified";
        return;
    }
    if (rc) {
        s3_fail(r, s3_map_err(rc), rc);
        return;
    }
    r->status = 204;
    pl_version_str(ver, v);
    if ((dm && pl_buf_addstr(&r->head, "x-amz-delete-marker: true\r\n")) ||
        ((dm || vid) && pl_buf_addf(&r->head, "x-amz-version-id: %s\r\n", v)))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
}

void s3_op_delete_objects(struct s3_req *r)
{
    struct s3_xml_list l;
    if (s3_xml_parse_delete(r->body.data, r->body.len, 1000, &l)) {
        s3_fail(r, S3E_MALFORMED_XML, 0);
        return;
    }
    if (!s3_bucket_exists(r)) {
        s3_xml_list_release(&l);
        return;
    }
    int rc = pl_buf_addstr(&r->xml,
                           "<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < l.n && !rc; i++) {
        const char *k = l.items[i].key, *vid = l.items[i].version;
        int dm = 0;
        uint64_t ver = 0;
        int drc = pl_key_valid(k) ? 0 : delete_one(r, k, vid, &dm, &ver);
        if (drc) {
            enum s3_err e = drc == PL_EINVAL ? S3E_INVALID_ARGUMENT : s3_map_err(drc);
            rc = pl_buf_addstr(&r->xml, "<Error><Key>");
            if (!rc)
                rc = s3_xml_esc(&r->xml, k);
            if (!rc)
                rc = pl_buf_addf(&r->xml, "</Key><Code>%s</Code><Message>%s</Message></Error>",
                                 s3_err_rows[e].code, s3_err_rows[e].msg);
        } else if (!l.quiet) {
            char v[PL_VERSION_LEN];
            pl_version_str(ver, v);
            rc = pl_buf_addstr(&r->xml, "<Deleted><Key>");
            if (!rc)
                rc = s3_xml_esc(&r->xml, k);
            if (!rc)
                rc = pl_buf_addstr(&r->xml, "</Key>");
            if (!rc && vid)
                rc = pl_buf_addf(&r->xml, "<VersionId>%s</VersionId>", v);
            if (!rc && dm)
                rc = pl_buf_addf(&r->xml, "<DeleteMarker>true</DeleteMarker>"
                                          "<DeleteMarkerVersionId>%s</DeleteMarkerVersionId>",
                                 v);
            if (!rc)
                rc = pl_buf_addstr(&r->xml, "</Deleted>");
        }
    }
    if (!rc)
        rc = pl_buf_addstr(&r->xml, "</DeleteResult>");
    if (rc)
        s3_fail(r, S3E_INTERNAL, rc);
    s3_xml_list_release(&l);
}

/* x-amz-copy-source: "/bucket/key" or "bucket/key", URL-encoded, maybe with
 * "?versionId=". The key points into dec. */
int s3_copy_source(struct s3_req *r, char sbucket[64], const char **skey, const char **svid,
                   struct pl_buf *dec)
{
    const char *src = http_req_header(r->hr, "x-amz-copy-source");
    const char *qm = strchr(src, '?');
    *svid = qm && !strncmp(qm, "?versionId=", 11) ? qm + 11 : NULL;
    if (s3_uri_decode(src, qm ? (size_t)(qm - src) : strlen(src), dec)) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
        return PL_EINVAL;
    }
    const char *p = dec->data[0] == '/' ? dec->data + 1 : dec->data;
    const char *slash = strchr(p, '/');
    if (!slash || (size_t)(slash - p) >= 64 || !slash[1]) {
        s3_fail(r, S3E_INVALID_ARGUMENT, 0);
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
int s3_copy_range(struct s3_req *r, uint64_t id, uint64_t from, uint64_t to,
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

void s3_copy_result(struct s3_req *r, const char *root, int64_t mtime, const char *etag)
{
    char t[40];
    s3_iso8601(mtime, t, sizeof(t));
    if (pl_buf_addf(&r->xml, "<%s><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag></%s>",
                    root, t, etag, root))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
}

void s3_op_copy_object(struct s3_req *r)
{
    struct pl_buf dec;
    struct pl_attr a;
    struct pl_writer *w = NULL;
    char ctype[256] = "", sbucket[64];
    const char *skey, *svid;
    pl_buf_init(&dec);
    if (s3_copy_source(r, sbucket, &skey, &svid, &dec))
        goto out;
    int rc = s3_lookup(r, sbucket, skey, svid, &a);
    if (rc)
        goto out;
    uint64_t src_version = a.version;
    /* copy-source conditionals */
    const char *im = http_req_header(r->hr, "x-amz-copy-source-if-match");
    const char *inm = http_req_header(r->hr, "x-amz-copy-source-if-none-match");
    int64_t ims = s3_http_time(http_req_header(r->hr, "x-amz-copy-source-if-modified-since"));
    int64_t ius = s3_http_time(http_req_header(r->hr, "x-amz-copy-source-if-unmodified-since"));
    int64_t mt = a.mtime / 1000000000;
    if ((im && !s3_etag_matches(im, a.etag)) || (inm && s3_etag_matches(inm, a.etag)) ||
        (!im && ius >= 0 && mt > ius) || (!inm && ims >= 0 && mt <= ims)) {
        s3_fail(r, S3E_PRECONDITION, 0);
        goto out;
    }
    const char *dir = http_req_header(r->hr, "x-amz-metadata-directive");
    int replace = dir && !strcmp(dir, "REPLACE");
    if (!replace && !svid && !strcmp(sbucket, r->bucket) && !strcmp(skey, r->key.data)) {
        s3_fail(r, S3E_INVALID_REQUEST, 0);
        r->err_detail = "This copy request is illegal because it is trying to copy an object to "
                        "itself without changing the object's metadata, storage class, website "
                        "redirect location or encryption attributes.";
        goto out;
    }
    rc = pl_obj_put_begin(r->srv->st, r->bucket, r->key.data, &w);
    if (!rc)
        rc = pl_obj_content_type(r->srv->st, a.id, PL_VIEW_LIVE, ctype, sizeof(ctype));
    if (!rc && a.type == PL_T_FILE)
        rc = s3_copy_range(r, a.id, 0, a.size, w);
    struct pl_buf store;
    const char **xattrs = NULL;
    pl_buf_init(&store);
    if (!rc && replace)
        rc = s3_meta_from_headers(r->hr, &store, &xattrs);
    struct pl_obj_meta m = {replace ? http_req_header(r->hr, "content-type") : ctype, NULL,
                            xattrs, NULL, 1};
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
        s3_fail(r, s3_map_err(rc), rc);
        goto out;
    }
    if (svid) {
        char v[PL_VERSION_LEN];
        pl_version_str(src_version, v);
        if (pl_buf_addf(&r->head, "x-amz-copy-source-version-id: %s\r\n", v))
            s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
    }
    if (s3_version_header(r, a.version))
        s3_fail(r, S3E_INTERNAL, PL_ENOMEM);
    s3_copy_result(r, "CopyObjectResult", a.mtime, a.etag);
out:
    pl_writer_abort(w);
    pl_buf_release(&dec);
}


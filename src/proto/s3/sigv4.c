/* AWS SigV4 as S3 does it (from the S3 API reference, "Authenticating
 * Requests (AWS Signature Version 4)"). */
#include "proto/s3/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

int s3_uri_decode(const char *src, size_t n, struct pl_buf *out)
{
    pl_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= n)
                return PL_EINVAL;
            int h = pl_hexval(src[i + 1]), l = pl_hexval(src[i + 2]);
            if (h < 0 || l < 0)
                return PL_EINVAL;
            c = (char)(h << 4 | l);
            i += 2;
        }
        if (c == 0)
            return PL_EINVAL;
        if (pl_buf_add(out, &c, 1))
            return PL_ENOMEM;
    }
    return 0;
}

int s3_uri_encode(const char *src, size_t n, int keep_slash, struct pl_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        int unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
        if (unreserved || (keep_slash && c == '/')) {
            if (pl_buf_add(out, &c, 1))
                return PL_ENOMEM;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (pl_buf_add(out, e, 3))
                return PL_ENOMEM;
        }
    }
    return 0;
}

/* ---- query strings ---- */
int s3_query_parse(const char *raw, struct s3_query *q)
{
    struct pl_buf tmp;
    int rc = 0;
    memset(q, 0, sizeof(*q));
    pl_buf_init(&q->store);
    pl_buf_init(&tmp);
    if (!raw || !*raw)
        return 0;
    /* two passes: decode everything into one store, then point into it */
    size_t count = 1;
    for (const char *s = raw; *s; s++)
        count += *s == '&';
    if (count > 1000)
        return PL_EINVAL;
    q->p = calloc(count, sizeof(*q->p));
    size_t *offs = calloc(count * 2, sizeof(size_t));
    if (!q->p || !offs) {
        free(offs);
        s3_query_release(q);
        return PL_ENOMEM;
    }
    const char *s = raw;
    while (*s && !rc) {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t)(amp - s) : strlen(s);
        if (len) {
            const char *eq = memchr(s, '=', len);
            size_t nl = eq ? (size_t)(eq - s) : len;
            rc = s3_uri_decode(s, nl, &tmp);
            offs[2 * q->n] = q->store.len;
            if (!rc)
                rc = pl_buf_add(&q->store, tmp.data, tmp.len + 1);
            if (!rc)
                rc = s3_uri_decode(eq ? eq + 1 : "", eq ? len - nl - 1 : 0, &tmp);
            offs[2 * q->n + 1] = q->store.len;
            if (!rc)
                rc = pl_buf_add(&q->store, tmp.data, tmp.len + 1);
            q->n++;
        }
        s += len + (amp ? 1 : 0);
        if (!amp)
            break;
    }
    for (int i = 0; i < q->n && !rc; i++) {
        q->p[i].name = q->store.data + offs[2 * i];
        q->p[i].value = q->store.data + offs[2 * i + 1];
    }
    free(offs);
    pl_buf_release(&tmp);
    if (rc)
        s3_query_release(q); /* nothing half-parsed survives a failure */
    return rc;
}

void s3_query_release(struct s3_query *q)
{
    free(q->p);
    pl_buf_release(&q->store);
    memset(q, 0, sizeof(*q));
}

const char *s3_query_get(const struct s3_query *q, const char *name)
{
    for (int i = 0; i < q->n; i++)
        if (!strcmp(q->p[i].name, name))
            return q->p[i].value;
    return NULL;
}

int s3_query_has(const struct s3_query *q, const char *name)
{
    return s3_query_get(q, name) != NULL;
}

/* ---- credentials ---- */
/* "AKID/20240101/us-east-1/s3/aws4_request" */
static int parse_credential(const char *cred, size_t n, struct s3_auth *a)
{
    char tmp[512];
    if (n >= sizeof(tmp))
        return PL_EINVAL;
    memcpy(tmp, cred, n);
    tmp[n] = 0;
    char *parts[5];
    int np = 0;
    char *s = tmp;
    /* the access key is everything before the last four '/' fields */
    for (int i = 0; i < 4; i++) {
        char *slash = strrchr(s, '/');
        if (!slash)
            return PL_EINVAL;
        parts[4 - i] = slash + 1;
        *slash = 0;
        np++;
    }
    parts[0] = s;
    if (strlen(parts[0]) >= sizeof(a->access_key) || strlen(parts[1]) != 8 ||
        strlen(parts[2]) >= sizeof(a->region) || strlen(parts[3]) >= sizeof(a->service) ||
        strcmp(parts[4], "aws4_request") || !*parts[0])
        return PL_EINVAL;
    snprintf(a->access_key, sizeof(a->access_key), "%s", parts[0]);
    snprintf(a->scope_date, sizeof(a->scope_date), "%s", parts[1]);
    snprintf(a->region, sizeof(a->region), "%s", parts[2]);
    snprintf(a->service, sizeof(a->service), "%s", parts[3]);
    return 0;
}

static int copy_field(char *dst, size_t dn, const char *src, size_t n)
{
    if (n >= dn)
        return PL_EINVAL;
    memcpy(dst, src, n);
    dst[n] = 0;
    return 0;
}

int s3_auth_parse(const struct http_req *r, const struct s3_query *q, struct s3_auth *a)
{
    memset(a, 0, sizeof(*a));
    const char *h = http_req_header(r, "authorization");
    const char *ph = http_req_header(r, "x-amz-content-sha256");
    if (h) {
        const char *p = h;
        if (strncmp(p, "AWS4-HMAC-SHA256 ", 17))
            return strncmp(p, "AWS ", 4) ? PL_EINVAL : PL_EPROTO; /* SigV2: not supported */
        p += 17;
        int have = 0;
        while (*p) {
            while (*p == ' ' || *p == ',')
                p++;
            const char *eq = strchr(p, '=');
            if (!eq)
                return PL_EINVAL;
            const char *end = strchr(eq, ',');
            size_t vn = end ? (size_t)(end - eq - 1) : strlen(eq + 1);
            size_t kn = (size_t)(eq - p);
            int rc = 0;
            if (kn == 10 && !strncmp(p, "Credential", 10)) {
                rc = parse_credential(eq + 1, vn, a);
                have |= 1;
            } else if (kn == 13 && !strncmp(p, "SignedHeaders", 13)) {
                rc = copy_field(a->signed_headers, sizeof(a->signed_headers), eq + 1, vn);
                have |= 2;
            } else if (kn == 9 && !strncmp(p, "Signature", 9)) {
                rc = copy_field(a->signature, sizeof(a->signature), eq + 1, vn);
                have |= 4;
            }
            if (rc)
                return rc;
            p = end ? end : eq + 1 + vn;
        }
        if (have != 7)
            return PL_EINVAL;
        const char *d = http_req_header(r, "x-amz-date");
        if (!d || strlen(d) != 16)
            return PL_EINVAL;
        memcpy(a->amz_date, d, 17);
        snprintf(a->payload_hash, sizeof(a->payload_hash), "%s",
                 ph ? ph : "UNSIGNED-PAYLOAD");
        if (!ph)
            return PL_EINVAL; /* S3 requires x-amz-content-sha256 with header auth */
        return 0;
    }
    const char *alg = s3_query_get(q, "X-Amz-Algorithm");
    if (!alg)
        return PL_EPERM;
    const char *cred = s3_query_get(q, "X-Amz-Credential");
    const char *date = s3_query_get(q, "X-Amz-Date");
    const char *exp = s3_query_get(q, "X-Amz-Expires");
    const char *sh = s3_query_get(q, "X-Amz-SignedHeaders");
    const char *sig = s3_query_get(q, "X-Amz-Signature");
    if (strcmp(alg, "AWS4-HMAC-SHA256") || !cred || !date || !exp || !sh || !sig ||
        strlen(date) != 16)
        return PL_EINVAL;
    int rc = parse_credential(cred, strlen(cred), a);
    if (!rc)
        rc = copy_field(a->signed_headers, sizeof(a->signed_headers), sh, strlen(sh));
    if (!rc)
        rc = copy_field(a->signature, sizeof(a->signature), sig, strlen(sig));
    if (rc)
        return rc;
    memcpy(a->amz_date, date, 17);
    char *end;
    a->expires = strtoll(exp, &end, 10);
    if (*end || a->expires < 1 || a->expires > 604800)
        return PL_EINVAL;
    a->presigned = 1;
    snprintf(a->payload_hash, sizeof(a->payload_hash), "%s", ph ? ph : "UNSIGNED-PAYLOAD");
    return 0;
}

/* ---- canonical request ---- */
static int qp_cmp(const void *x, const void *y)
{
    const struct s3_qparam *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c ? c : strcmp(a->value, b->value);
}

static int trimmed_value(const char *v, struct pl_buf *out)
{
    /* trim, and collapse runs of spaces into one */
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    int sp = 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i] == '\t' ? ' ' : v[i];
        if (c == ' ' && sp)
            continue;
        sp = c == ' ';
        if (pl_buf_add(out, &c, 1))
            return PL_ENOMEM;
    }
    return 0;
}

int s3_canonical_request(const struct http_req *r, const char *path_raw, const struct s3_query *q,
                         const struct s3_auth *a, struct pl_buf *out)
{
    struct pl_buf dec;
    struct s3_qparam *sorted = NULL;
    int rc;
    pl_buf_init(&dec);
    pl_buf_reset(out);
    rc = pl_buf_addf(out, "%s\n", r->method_name);
    /* S3 encodes the path once: decode what the client sent, encode per AWS */
    if (!rc)
        rc = s3_uri_decode(path_raw, strlen(path_raw), &dec);
    if (!rc)
        rc = s3_uri_encode(dec.data, dec.len, 1, out);
    if (!rc)
        rc = pl_buf_add(out, "\n", 1);
    if (rc)
        goto out;
    sorted = calloc((size_t)q->n + 1, sizeof(*sorted));
    if (!sorted) {
        rc = PL_ENOMEM;
        goto out;
    }
    int ns = 0;
    for (int i = 0; i < q->n; i++)
        if (!(a->presigned && !strcmp(q->p[i].name, "X-Amz-Signature")))
            sorted[ns++] = q->p[i];
    qsort(sorted, (size_t)ns, sizeof(*sorted), qp_cmp);
    for (int i = 0; i < ns && !rc; i++) {
        if (i)
            rc = pl_buf_add(out, "&", 1);
        if (!rc)
            rc = s3_uri_encode(sorted[i].name, strlen(sorted[i].name), 0, out);
        if (!rc)
            rc = pl_buf_add(out, "=", 1);
        if (!rc)
            rc = s3_uri_encode(sorted[i].value, strlen(sorted[i].value), 0, out);
    }
    if (!rc)
        rc = pl_buf_add(out, "\n", 1);
    /* canonical headers, in the signed-headers order (which is sorted) */
    const char *p = a->signed_headers;
    while (!rc && *p) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        char name[128];
        if (n == 0 || n >= sizeof(name)) {
            rc = PL_EINVAL;
            break;
        }
        memcpy(name, p, n);
        name[n] = 0;
        rc = pl_buf_addf(out, "%s:", name);
        /* repeated headers join with ',' */
        int first = 1;
        for (int i = 0; i < r->nh && !rc; i++) {
            if (strcmp(r->h[i].name, name))
                continue;
            if (!first)
                rc = pl_buf_add(out, ",", 1);
            if (!rc)
                rc = trimmed_value(r->h[i].value, out);
            first = 0;
        }
        if (!rc)
            rc = pl_buf_add(out, "\n", 1);
        p += n + (semi ? 1 : 0);
        if (!semi)
            break;
    }
    if (!rc)
        rc = pl_buf_addf(out, "\n%s\n%s", a->signed_headers, a->payload_hash);
out:
    free(sorted);
    pl_buf_release(&dec);
    return rc;
}

void s3_sha256_hex(const void *p, size_t n, char out[S3_SHA256_HEX])
{
    uint8_t md[32];
    unsigned int len = 32;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    pl_hex(md, 32, out);
}

int s3_string_to_sign(const struct s3_auth *a, const struct pl_buf *creq, struct pl_buf *out)
{
    char h[S3_SHA256_HEX];
    s3_sha256_hex(creq->data, creq->len, h);
    pl_buf_reset(out);
    return pl_buf_addf(out, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", a->amz_date,
                       a->scope_date, a->region, a->service, h);
}

static void hmac(const uint8_t *key, size_t kn, const void *msg, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)kn, msg, n, out, &len);
}

void s3_signing_key(const char *secret, const struct s3_auth *a, uint8_t key[32])
{
    char k0[128];
    uint8_t k1[32], k2[32], k3[32];
    int n = snprintf(k0, sizeof(k0), "AWS4%s", secret);
    hmac((const uint8_t *)k0, (size_t)n, a->scope_date, strlen(a->scope_date), k1);
    hmac(k1, 32, a->region, strlen(a->region), k2);
    hmac(k2, 32, a->service, strlen(a->service), k3);
    hmac(k3, 32, "aws4_request", 12, key);
    OPENSSL_cleanse(k0, sizeof(k0));
}

void s3_hmac_hex(const uint8_t key[32], const char *msg, size_t n, char out[S3_SHA256_HEX])
{
    uint8_t md[32];
    hmac(key, 32, msg, n, md);
    pl_hex(md, 32, out);
}

int s3_sig_equal(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (n != strlen(b))
        return 0;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int64_t s3_amz_time(const char *s)
{
    struct tm tm = {0};
    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return -1;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (s[i] < '0' || s[i] > '9'))
            return -1;
    tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') - 1900;
    tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
    tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
    tm.tm_hour = (s[9] - '0') * 10 + (s[10] - '0');
    tm.tm_min = (s[11] - '0') * 10 + (s[12] - '0');
    tm.tm_sec = (s[13] - '0') * 10 + (s[14] - '0');
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    return (int64_t)timegm(&tm);
}

/* ---- aws-chunked ---- */
enum { CK_SIZE, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_TRAILER, CK_DONE };

static const char empty_sha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

int s3_chunked_init(struct s3_chunked *d, int sign, const uint8_t key[32], const struct s3_auth *a,
                    const char *seed_sig)
{
    memset(d, 0, sizeof(*d));
    d->sign = sign;
    if (sign) {
        memcpy(d->key, key, 32);
        snprintf(d->prev_sig, sizeof(d->prev_sig), "%s", seed_sig);
        snprintf(d->scope_line, sizeof(d->scope_line), "%s\n%s/%s/%s/aws4_request", a->amz_date,
                 a->scope_date, a->region, a->service);
        d->sha = EVP_MD_CTX_new();
        if (!d->sha)
            return PL_ENOMEM;
    }
    return 0;
}

void s3_chunked_release(struct s3_chunked *d)
{
    if (d->sha)
        EVP_MD_CTX_free(d->sha);
    d->sha = NULL;
}

static int chunk_verify(struct s3_chunked *d)
{
    uint8_t md[32];
    unsigned int len = 32;
    char hex[S3_SHA256_HEX], sig[S3_SHA256_HEX], sts[600];
    if (!d->sign)
        return 0;
    EVP_DigestFinal_ex(d->sha, md, &len);
    pl_hex(md, 32, hex);
    int n = snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256-PAYLOAD\n%s\n%s\n%s\n%s", d->scope_line,
                     d->prev_sig, empty_sha, hex);
    s3_hmac_hex(d->key, sts, (size_t)n, sig);
    if (!s3_sig_equal(sig, d->chunk_sig))
        return PL_EACCES;
    memcpy(d->prev_sig, sig, sizeof(sig));
    return 0;
}

/* "1000;chunk-signature=abc" or "1000" */
static int size_line(struct s3_chunked *d)
{
    char *end;
    d->line[d->ll] = 0;
    if (!d->ll)
        return PL_EPROTO;
    unsigned long long v = strtoull(d->line, &end, 16);
    if (end == d->line || v > (1ull << 40))
        return PL_EPROTO;
    d->chunk_sig[0] = 0;
    if (*end == ';') {
        const char *sig = strstr(end, "chunk-signature=");
        if (!sig || strlen(sig + 16) != 64)
            return PL_EPROTO;
        memcpy(d->chunk_sig, sig + 16, 65);
    } else if (*end) {
        return PL_EPROTO;
    }
    if (d->sign && !d->chunk_sig[0])
        return PL_EPROTO;
    d->remaining = v;
    if (d->sign && !EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL))
        return PL_EINTERNAL;
    return 0;
}

ssize_t s3_chunked_feed(struct s3_chunked *d, const uint8_t *p, size_t n, s3_emit_fn emit,
                        void *arg)
{
    size_t i = 0;
    while (i < n) {
        switch (d->state) {
        case CK_SIZE:
        case CK_TRAILER: {
            uint8_t c = p[i++];
            if (c == '\r')
                continue;
            if (c != '\n') {
                if (d->ll + 1 >= sizeof(d->line))
                    return PL_EPROTO;
                d->line[d->ll++] = (char)c;
                continue;
            }
            if (d->state == CK_SIZE) {
                int rc = size_line(d);
                d->ll = 0;
                if (rc)
                    return rc;
                if (d->remaining == 0) {
                    rc = chunk_verify(d); /* the final, empty chunk is signed too */
                    if (rc)
                        return rc;
                    d->state = CK_TRAILER;
                } else {
                    d->state = CK_DATA;
                }
            } else {
                if (d->ll == 0) {
                    d->state = CK_DONE;
                    d->done = 1;
                    continue;
                }
                d->line[d->ll] = 0;
                char *colon = strchr(d->line, ':');
                if (colon && !strncmp(d->line, "x-amz-checksum-", 15)) {
                    *colon = 0;
                    snprintf(d->trailer_name, sizeof(d->trailer_name), "%s", d->line);
                    const char *v = colon + 1;
                    while (*v == ' ')
                        v++;
                    snprintf(d->trailer_value, sizeof(d->trailer_value), "%s", v);
                }
                d->ll = 0; /* other trailers (x-amz-trailer-signature) are ignored */
            }
            break;
        }
        case CK_DATA: {
            size_t take = (size_t)PL_MIN((uint64_t)(n - i), d->remaining);
            if (d->sign && !EVP_DigestUpdate(d->sha, p + i, take))
                return PL_EINTERNAL;
            int rc = emit(arg, p + i, take);
            if (rc)
                return rc;
            d->decoded += take;
            d->remaining -= take;
            i += take;
            if (d->remaining == 0)
                d->state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (p[i] != '\r')
                return PL_EPROTO;
            i++;
            d->state = CK_DATA_LF;
            break;
        case CK_DATA_LF: {
            if (p[i] != '\n')
                return PL_EPROTO;
            i++;
            int rc = chunk_verify(d);
            if (rc)
                return rc;
            d->state = CK_SIZE;
            break;
        }
        case CK_DONE:
            return PL_EPROTO; /* bytes after the end */
        }
    }
    return (ssize_t)n;
}

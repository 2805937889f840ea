/* libFuzzer: SigV4 parsing and canonicalization on arbitrary requests.
 * Input: "METHOD TARGET\n" then "name: value\n" lines (a request head). */
#include <stdint.h>
#include <stdlib.h>

#include "proto/s3/sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    struct http_req r;
    struct s3_query q;
    struct s3_auth a;
    struct pl_buf creq, sts;
    memcpy(s, data, n);
    s[n] = 0;
    memset(&r, 0, sizeof(r));
    r.method_name = "GET";
    /* first line: the target */
    char *save = NULL, *l = strtok_r(s, "\n", &save);
    r.target = l ? l : (char *)"/";
    while ((l = strtok_r(NULL, "\n", &save)) && r.nh < HTTP_MAX_HEADERS) {
        char *colon = strchr(l, ':');
        if (!colon)
            continue;
        *colon = 0;
        for (char *p = l; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
        r.h[r.nh].name = l;
        r.h[r.nh].value = colon + 1;
        r.nh++;
    }
    char *qm = strchr(r.target, '?');
    if (qm)
        *qm = 0;
    pl_buf_init(&creq);
    pl_buf_init(&sts);
    if (s3_query_parse(qm ? qm + 1 : "", &q) == 0) {
        if (s3_auth_parse(&r, &q, &a) == 0 && s3_canonical_request(&r, r.target, &q, &a, &creq) == 0 &&
            s3_string_to_sign(&a, &creq, &sts) == 0) {
            uint8_t key[32];
            char sig[S3_SHA256_HEX];
            s3_signing_key("secret", &a, key);
            s3_hmac_hex(key, sts.data, sts.len, sig);
            (void)s3_amz_time(a.amz_date);
        }
        s3_query_release(&q);
    }
    pl_buf_release(&creq);
    pl_buf_release(&sts);
    free(s);
    return 0;
}

/* libFuzzer: the aws-chunked body decoder, signed and unsigned, fed in pieces. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/s3/sigv4.h"

static int emit(void *arg, const uint8_t *p, size_t n)
{
    (void)p;
    *(size_t *)arg += n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct s3_chunked d;
    struct s3_auth a;
    uint8_t key[32] = {1, 2, 3};
    size_t out = 0;
    if (n < 1)
        return 0;
    memset(&a, 0, sizeof(a));
    memcpy(a.amz_date, "20260101T000000Z", 17);
    memcpy(a.scope_date, "20260101", 9);
    memcpy(a.region, "us-east-1", 10);
    memcpy(a.service, "s3", 3);
    int sign = data[0] & 1;
    size_t step = (size_t)(data[0] >> 1) + 1;
    if (s3_chunked_init(&d, sign, key, &a, "0000000000000000000000000000000000000000000000000000000000000000"))
        return 0;
    for (size_t off = 1; off < n;) {
        size_t take = n - off < step ? n - off : step;
        if (s3_chunked_feed(&d, data + off, take, emit, &out) < 0)
            break;
        off += take;
    }
    if (out > n)
        abort(); /* decoding never invents bytes */
    s3_chunked_release(&d);
    return 0;
}

/* libFuzzer: NBD wire formats (request headers, GO/INFO and META_CONTEXT
 * option payloads). */
#include <stdint.h>
#include <stdlib.h>

#include "proto/nbd/nbdproto.h"

static int query(void *arg, const char *q, size_t n)
{
    (void)arg;
    return n > 1000 && q[0] == 'x' ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static char name[NBD_NAME_MAX + 1];
    uint16_t reqs[16];
    size_t nreqs;
    struct nbd_req r;
    if (n >= 28)
        (void)nbd_req_parse(data, &r);
    (void)nbd_opt_go_parse(data, n, name, reqs, 16, &nreqs);
    (void)nbd_opt_meta_parse(data, n, name, query, NULL);
    return 0;
}

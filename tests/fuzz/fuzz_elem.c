/* libFuzzer: element records and their property TLVs, as read from disk. */
#include <stdint.h>
#include <stdlib.h>

#include "store/store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct elem e;
    struct pl_str s;
    elem_init(&e);
    if (elem_decode(7, 1, data, n, &e) == 0) {
        (void)prop_get(&e, PROP_CTYPE, NULL, &s);
        (void)prop_get(&e, PROP_XATTR, "user.a", &s);
        if (prop_set(&e, PROP_XATTR, "user.b", "v", 1) == 0)
            (void)prop_del(&e, PROP_XATTR, "user.b");
    }
    elem_release(&e);
    return 0;
}

/* libFuzzer: chunk index entries (locations) as read from disk. */
#include <stdint.h>
#include <stdlib.h>

#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct data_loc l;
    if (data_loc_decode(data, n, &l) == 0) {
        uint8_t out[DATA_LOC_ENC];
        data_loc_encode(&l, out);
        if (memcmp(out, data, DATA_LOC_ENC))
            abort(); /* decode and encode must round-trip */
    }
    return 0;
}

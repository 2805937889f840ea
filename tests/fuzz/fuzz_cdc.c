/* libFuzzer: the chunker's invariants on any input: cuts tile the input,
 * every chunk but the last is within [min, max]. */
#include <stdint.h>
#include <stdlib.h>

#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct data_cdc c;
    if (data_cdc_init(&c, 256, 1024, 4096))
        abort();
    size_t off = 0;
    while (off < n) {
        size_t l = data_cdc_cut(&c, data + off, n - off, 1);
        if (l == 0 || l > c.max || (off + l < n && l <= c.min))
            abort();
        off += l;
    }
    if (off != n)
        abort();
    return 0;
}

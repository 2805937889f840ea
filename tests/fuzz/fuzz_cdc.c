/* libFuzzer: the chunker's invariants on any input: cuts tile the input,
 * every chunk but the last is within [min, max]; and with stretches long
 * enough for its side-by-side hashing (the input repeated to 40 KiB), every
 * cut is the one a single pass over the bytes finds. */
#include <stdint.h>
#include <stdlib.h>

#include "../unit/cdc_model.h"
#include "data/data.h"

static uint64_t gear[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static uint8_t big[40 << 10];
    struct data_cdc c, w;
    if (data_cdc_init(&c, 256, 1024, 4096) || data_cdc_init(&w, 2048, 8192, 65536))
        abort();
    if (!gear[0])
        cdc_model_gear(gear);
    size_t off = 0;
    while (off < n) {
        size_t l = data_cdc_cut(&c, data + off, n - off, 1);
        if (l == 0 || l > c.max || (off + l < n && l <= c.min))
            abort();
        off += l;
    }
    if (off != n)
        abort();
    if (n == 0)
        return 0;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = data[i % n];
    for (off = 0; off < sizeof(big);) {
        size_t l = data_cdc_cut(&w, big + off, sizeof(big) - off, 1);
        if (l != cdc_model_cut(&w, gear, big + off, sizeof(big) - off, 1))
            abort();
        if (data_cdc_cut(&w, big + off, sizeof(big) - off, 0) !=
            cdc_model_cut(&w, gear, big + off, sizeof(big) - off, 0))
            abort();
        off += l;
    }
    return 0;
}

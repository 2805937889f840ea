/* libFuzzer: the chunker's invariants on any input: cuts tile the input,
 * every chunk but the last is within [min, max]; and with stretches long
 * enough for its side-by-side hashing (the input repeated to 40 KiB), every
 * cut is the one a single pass over the bytes finds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "data/data.h"

static uint64_t gear[256];

/* The definition: one pass from min, the stricter mask before avg. */
static size_t cut_one_pass(const struct data_cdc *c, const uint8_t *p, size_t n, int final)
{
    if (n <= c->min)
        return final ? n : 0;
    uint64_t h = 0;
    for (size_t i = c->min; i < n && i < c->max; i++) {
        h = (h << 1) + gear[p[i]];
        if (!(h & (i < c->avg ? c->mask_s : c->mask_l)))
            return i + 1;
    }
    return n >= c->max ? c->max : final ? n : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static uint8_t big[40 << 10];
    struct data_cdc c, w;
    if (data_cdc_init(&c, 256, 1024, 4096) || data_cdc_init(&w, 2048, 8192, 65536))
        abort();
    if (!gear[0]) {
        uint64_t s = 0x506c656e756d4344ull; /* the chunker's seed */
        for (int i = 0; i < 256; i++)
            gear[i] = pl_splitmix64(&s);
    }
    size_t off = 0;
    while (off < n) {
        size_t l = data_cdc_cut(&c, data + off, n - off, 1);
        if (l == 0 || l > c.max || (off + l < n && l <= c.min))
            abort();
        off += l;
    }
    if (off != n || n == 0)
        return 0;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = data[i % n];
    for (off = 0; off < sizeof(big);) {
        size_t l = data_cdc_cut(&w, big + off, sizeof(big) - off, 1);
        if (l != cut_one_pass(&w, big + off, sizeof(big) - off, 1))
            abort();
        if (data_cdc_cut(&w, big + off, sizeof(big) - off, 0) !=
            cut_one_pass(&w, big + off, sizeof(big) - off, 0))
            abort();
        off += l;
    }
    return 0;
}

/* The content-defined cut as one pass over the bytes computes it: the
 * definition the stored data's boundaries follow, which the chunker's
 * side-by-side hashing must match exactly. Shared by test_data and
 * fuzz_cdc. */
#ifndef PLENUM_TESTS_CDC_MODEL_H
#define PLENUM_TESTS_CDC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "data/data.h"

/* The chunker's gear table, from its fixed seed. */
static inline void cdc_model_gear(uint64_t g[256])
{
    uint64_t s = 0x506c656e756d4344ull;
    for (int i = 0; i < 256; i++)
        g[i] = pl_splitmix64(&s);
}

/* One pass from min, the stricter mask before avg. */
static inline size_t cdc_model_cut(const struct data_cdc *c, const uint64_t *g,
                                   const uint8_t *p, size_t n, int final)
{
    if (n <= c->min)
        return final ? n : 0;
    uint64_t h = 0;
    for (size_t i = c->min; i < n && i < c->max; i++) {
        h = (h << 1) + g[p[i]];
        if (!(h & (i < c->avg ? c->mask_s : c->mask_l)))
            return i + 1;
    }
    return n >= c->max ? c->max : final ? n : 0;
}

#endif

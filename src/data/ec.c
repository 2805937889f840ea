/* Reed-Solomon erasure coding over GF(2^8) with ISA-L: a systematic code
 * whose generator is the identity over a Cauchy matrix, so any k of the
 * k + m strips recover the rest. */
#include "data/ec.h"

#include <isa-l/erasure_code.h>
#include <stdlib.h>
#include <string.h>

int ec_code_init(struct ec_code *c, int k, int m)
{
    memset(c, 0, sizeof(*c));
    if (k < 1 || k > EC_MAX_K || m < 1 || m > EC_MAX_M)
        return PL_EINVAL;
    c->k = k;
    c->m = m;
    c->gen = malloc((size_t)(k + m) * (size_t)k);
    c->tbls = malloc((size_t)32 * (size_t)k * (size_t)m);
    if (!c->gen || !c->tbls) {
        ec_code_release(c);
        return PL_ENOMEM;
    }
    gf_gen_cauchy1_matrix(c->gen, k + m, k);
    ec_init_tables(k, m, c->gen + (size_t)k * (size_t)k, c->tbls);
    return 0;
}

void ec_code_release(struct ec_code *c)
{
    free(c->gen);
    free(c->tbls);
    memset(c, 0, sizeof(*c));
}

void ec_encode(const struct ec_code *c, size_t len, uint8_t **data, uint8_t **parity)
{
    ec_encode_data((int)len, c->k, c->m, c->tbls, data, parity);
}

int ec_recover(const struct ec_code *c, size_t len, const int *have, uint8_t **hbuf, int nwant,
               const int *want, uint8_t **wbuf)
{
    int k = c->k, rc = 0;
    size_t kk = (size_t)k * (size_t)k;
    uint8_t *sub = malloc(kk), *inv = malloc(kk), *rows = malloc((size_t)nwant * (size_t)k);
    uint8_t *tbls = malloc((size_t)32 * (size_t)k * (size_t)nwant);
    if (!sub || !inv || !rows || !tbls) {
        rc = PL_ENOMEM;
        goto out;
    }
    /* the rows of the generator we have, inverted, map what we have back to
     * the data; a wanted strip's row times that inverse maps it from what we have */
    for (int i = 0; i < k; i++)
        memcpy(sub + (size_t)i * (size_t)k, c->gen + (size_t)have[i] * (size_t)k, (size_t)k);
    if (gf_invert_matrix(sub, inv, k) < 0) {
        rc = PL_EINTERNAL; /* cannot happen with a Cauchy generator */
        goto out;
    }
    for (int w = 0; w < nwant; w++) {
        const uint8_t *g = c->gen + (size_t)want[w] * (size_t)k;
        for (int j = 0; j < k; j++) {
            uint8_t s = 0;
            for (int i = 0; i < k; i++)
                s ^= gf_mul(g[i], inv[(size_t)i * (size_t)k + (size_t)j]);
            rows[(size_t)w * (size_t)k + (size_t)j] = s;
        }
    }
    ec_init_tables(k, nwant, rows, tbls);
    ec_encode_data((int)len, k, nwant, tbls, hbuf, wbuf);
out:
    free(sub);
    free(inv);
    free(rows);
    free(tbls);
    return rc;
}

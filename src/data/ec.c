/* Reed-Solomon erasure coding over GF(2^8) with ISA-L: a systematic code
 * whose generator is the identity over a Cauchy matrix, so any k of the
 * k + m strips recover the rest. */
#include "data/ec.h"

#include <isa-l/erasure_code.h>
#include <pthread.h>
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

/* The last decode tables this thread made: degraded reads of one stripe ask
 * for the same recovery cell after cell. */
struct recover_cache {
    const struct ec_code *code;
    int k, m, nwant;
    int have[EC_MAX_K], want[EC_MAX_K + EC_MAX_M];
    uint8_t tbls[32 * EC_MAX_K * EC_MAX_M];
};
static pthread_key_t rcache_key;
static pthread_once_t rcache_once = PTHREAD_ONCE_INIT;

static void rcache_init(void)
{
    (void)pthread_key_create(&rcache_key, free); /* freed when its thread ends */
}

static int recover_tables(const struct ec_code *c, const int *have, int nwant, const int *want,
                          uint8_t *tbls)
{
    int k = c->k, rc = 0;
    size_t kk = (size_t)k * (size_t)k;
    uint8_t *sub = malloc(kk), *inv = malloc(kk), *rows = malloc((size_t)nwant * (size_t)k);
    if (!sub || !inv || !rows) {
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
out:
    free(sub);
    free(inv);
    free(rows);
    return rc;
}

int ec_recover(const struct ec_code *c, size_t len, const int *have, uint8_t **hbuf, int nwant,
               const int *want, uint8_t **wbuf)
{
    pthread_once(&rcache_once, rcache_init);
    struct recover_cache *rc_ = pthread_getspecific(rcache_key);
    if (nwant < 1 || nwant > EC_MAX_M)
        return PL_EINVAL;
    if (!rc_ || rc_->code != c || rc_->k != c->k || rc_->m != c->m || rc_->nwant != nwant ||
        memcmp(rc_->have, have, sizeof(int) * (size_t)c->k) ||
        memcmp(rc_->want, want, sizeof(int) * (size_t)nwant)) {
        if (!rc_) {
            rc_ = malloc(sizeof(*rc_));
            if (!rc_ || pthread_setspecific(rcache_key, rc_)) {
                free(rc_);
                return PL_ENOMEM;
            }
        }
        rc_->code = NULL;
        int rc = recover_tables(c, have, nwant, want, rc_->tbls);
        if (rc)
            return rc;
        rc_->code = c;
        rc_->k = c->k;
        rc_->m = c->m;
        rc_->nwant = nwant;
        memcpy(rc_->have, have, sizeof(int) * (size_t)c->k);
        memcpy(rc_->want, want, sizeof(int) * (size_t)nwant);
    }
    ec_encode_data((int)len, c->k, nwant, rc_->tbls, hbuf, wbuf);
    return 0;
}

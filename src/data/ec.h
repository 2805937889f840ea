/* Erasure coding: k data strips, m parity strips (ISA-L underneath). */
#ifndef PL_DATA_EC_H
#define PL_DATA_EC_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define EC_MAX_K 64
#define EC_MAX_M 4

struct ec_code {
    int k, m;
    uint8_t *gen;  /* (k + m) x k generator: identity, then Cauchy rows */
    uint8_t *tbls; /* expanded tables of the parity rows */
};

int ec_code_init(struct ec_code *c, int k, int m) PL_WUR;
void ec_code_release(struct ec_code *c);
/* parity[0..m) of len bytes from data[0..k). */
void ec_encode(const struct ec_code *c, size_t len, uint8_t **data, uint8_t **parity);
/* Rebuild strips want[0..nwant) (indices 0..k+m) into wbuf from the k strips
 * have[0..k) (distinct indices) in hbuf. */
int ec_recover(const struct ec_code *c, size_t len, const int *have, uint8_t **hbuf, int nwant,
               const int *want, uint8_t **wbuf) PL_WUR;

#endif

/* SASL PLAIN and SCRAM-SHA-256 for the Kafka head (ksasl.c). */
#ifndef PL_KSASL_H
#define PL_KSASL_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/store.h"

enum { KSASL_NONE, KSASL_PLAIN, KSASL_SCRAM256 };
#define KSASL_MSG_MAX 1024
#define KSASL_NONCE_MAX 160

struct ksasl {
    int mech, step, done, ok;
    char principal[64];
    char gs2[32];
    char client_first_bare[KSASL_MSG_MAX];
    char server_first[KSASL_MSG_MAX];
    char nonce[KSASL_NONCE_MAX * 2];
    uint8_t salted[32];
};

#define KSASL_MECHANISMS "PLAIN", "SCRAM-SHA-256"

/* PL_EINVAL for a mechanism we do not offer. */
int ksasl_start(struct ksasl *s, const char *mech) PL_WUR;
/* One client token in, the server's token out (*outn: capacity in, length
 * out). 0: go on, or done when s->done (then s->ok); PL_EACCES: the
 * credentials are wrong; PL_EPROTO: a malformed token. */
int ksasl_step(struct pl_store *st, struct ksasl *s, const uint8_t *in, size_t n, uint8_t *out,
               size_t *outn) PL_WUR;

#endif

/* SASL for the Kafka head: PLAIN (RFC 4616) and SCRAM-SHA-256 (RFC 5802,
 * RFC 7677) against Plenum access keys: the user name is an access key, the
 * password its secret (the same pair S3 signs with).
 *
 * SCRAM needs a salted password; we keep no SCRAM verifiers, so the server
 * derives one per login from the secret with a salt fixed per access key
 * (HMAC of a store-derived key), 4096 PBKDF2 iterations. An unknown user
 * gets a salt all the same and fails at the proof, so the exchange does not
 * say which names exist. */
#include "proto/kafka/ksasl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"

#define SCRAM_ITERS 4096

int ksasl_start(struct ksasl *s, const char *mech)
{
    memset(s, 0, sizeof(*s));
    if (!strcmp(mech, "PLAIN"))
        s->mech = KSASL_PLAIN;
    else if (!strcmp(mech, "SCRAM-SHA-256"))
        s->mech = KSASL_SCRAM256;
    else
        return PL_EINVAL;
    return 0;
}

static int secret_of(struct pl_store *st, const char *user, char secret[48])
{
    char owner[64];
    if (!*user || strlen(user) >= 32)
        return PL_EACCES;
    return pl_key_secret(st, user, secret, owner) ? PL_EACCES : 0;
}

static int plain_step(struct pl_store *st, struct ksasl *s, const uint8_t *in, size_t n)
{
    /* authzid NUL authcid NUL passwd */
    const uint8_t *a = memchr(in, 0, n);
    const uint8_t *b = a ? memchr(a + 1, 0, n - (size_t)(a + 1 - in)) : NULL;
    if (!b)
        return PL_EPROTO;
    size_t ul = (size_t)(b - a - 1), pl = n - (size_t)(b + 1 - in), zl = (size_t)(a - in);
    char user[64], pass[128], secret[48];
    if (ul >= sizeof(user) || pl >= sizeof(pass))
        return PL_EACCES;
    memcpy(user, a + 1, ul);
    user[ul] = 0;
    memcpy(pass, b + 1, pl);
    pass[pl] = 0;
    if (zl && (zl != ul || memcmp(in, user, ul)))
        return PL_EACCES; /* acting as someone else is not offered */
    int rc = secret_of(st, user, secret);
    size_t sl = strlen(secret);
    if (!rc && (sl != pl || CRYPTO_memcmp(secret, pass, sl)))
        rc = PL_EACCES;
    OPENSSL_cleanse(pass, sizeof(pass));
    OPENSSL_cleanse(secret, sizeof(secret));
    if (!rc)
        snprintf(s->principal, sizeof(s->principal), "%s", user);
    return rc;
}

static void hmac256(const uint8_t *key, size_t kn, const void *msg, size_t mn, uint8_t out[32])
{
    unsigned int ol = 32;
    HMAC(EVP_sha256(), key, (int)kn, msg, mn, out, &ol);
}

static size_t b64_enc(const uint8_t *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decode base64 text; returns the length or -1. */
static int b64_dec(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 || n / 4 * 3 > cap)
        return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (len < 0)
        return -1;
    if (n && in[n - 1] == '=')
        len--;
    if (n > 1 && in[n - 2] == '=')
        len--;
    return len;
}

/* The value of attribute "k=" in a comma list, NUL-terminated into out. */
static int attr(const char *msg, char k, char *out, size_t cap)
{
    for (const char *p = msg; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (p[0] == k && p[1] == '=') {
            size_t l = strcspn(p + 2, ",");
            if (l >= cap)
                return -1;
            memcpy(out, p + 2, l);
            out[l] = 0;
            return 0;
        }
    }
    return -1;
}

static int scram_first(struct pl_store *st, struct ksasl *s, const uint8_t *in, size_t n,
                       uint8_t *out, size_t *outn)
{
    char msg[KSASL_MSG_MAX], raw[80], cnonce[KSASL_NONCE_MAX];
    if (n >= sizeof(msg))
        return PL_EPROTO;
    memcpy(msg, in, n);
    msg[n] = 0;
    /* gs2 header: "n,," or "y,," (no channel binding over plain TCP) */
    if ((msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',')
        return PL_EPROTO;
    const char *bare = strchr(msg + 2, ',');
    if (!bare)
        return PL_EPROTO;
    bare++;
    snprintf(s->gs2, sizeof(s->gs2), "%.*s", (int)(bare - msg), msg);
    snprintf(s->client_first_bare, sizeof(s->client_first_bare), "%s", bare);
    if (attr(bare, 'n', raw, sizeof(raw)) || attr(bare, 'r', cnonce, sizeof(cnonce)))
        return PL_EPROTO;
    /* saslname: "=2C" is ',' and "=3D" is '='; access keys have neither */
    if (strchr(raw, '=') || strlen(raw) >= sizeof(s->principal))
        return PL_EACCES;
    snprintf(s->principal, sizeof(s->principal), "%s", raw);
    uint8_t salt_key[32], salt[32], rnd[18];
    char secret[48] = "";
    int known = secret_of(st, raw, secret) == 0;
    if (pl_store_derive_key(st, "kafka-scram-salt", salt_key) || pl_random(rnd, sizeof(rnd)))
        return PL_EIO;
    hmac256(salt_key, sizeof(salt_key), raw, strlen(raw), salt);
    /* an unknown user still gets a salt; the proof then cannot match */
    if (!known && pl_random((uint8_t *)secret, 24))
        return PL_EIO;
    PKCS5_PBKDF2_HMAC(secret, known ? (int)strlen(secret) : 24, salt, 16, SCRAM_ITERS,
                      EVP_sha256(), 32, s->salted);
    OPENSSL_cleanse(secret, sizeof(secret));
    char snonce[32], salt64[32];
    snonce[b64_enc(rnd, sizeof(rnd), snonce)] = 0;
    salt64[b64_enc(salt, 16, salt64)] = 0;
    snprintf(s->nonce, sizeof(s->nonce), "%s%s", cnonce, snonce);
    int w = snprintf(s->server_first, sizeof(s->server_first), "r=%s,s=%s,i=%d", s->nonce, salt64,
                     SCRAM_ITERS);
    if (w < 0 || (size_t)w >= sizeof(s->server_first) || (size_t)w > *outn)
        return PL_EPROTO;
    memcpy(out, s->server_first, (size_t)w);
    *outn = (size_t)w;
    s->step = 1;
    return 0;
}

static int scram_final(struct ksasl *s, const uint8_t *in, size_t n, uint8_t *out, size_t *outn)
{
    char msg[KSASL_MSG_MAX], cb[64], nonce[KSASL_NONCE_MAX * 2], proof64[64], gs2_64[64];
    uint8_t proof[48];
    if (n >= sizeof(msg))
        return PL_EPROTO;
    memcpy(msg, in, n);
    msg[n] = 0;
    char *p = strstr(msg, ",p=");
    if (!p || attr(msg, 'c', cb, sizeof(cb)) || attr(msg, 'r', nonce, sizeof(nonce)) ||
        attr(p + 1, 'p', proof64, sizeof(proof64)))
        return PL_EPROTO;
    gs2_64[b64_enc((const uint8_t *)s->gs2, strlen(s->gs2), gs2_64)] = 0;
    /* the nonce must end with ours: librdkafka sends its own part twice, and
     * Kafka brokers accept that */
    size_t nl = strlen(nonce), ml = strlen(s->nonce);
    if (strcmp(cb, gs2_64) || nl < ml || strcmp(nonce + nl - ml, s->nonce))
        return PL_EACCES;
    if (b64_dec(proof64, strlen(proof64), proof, sizeof(proof)) != 32)
        return PL_EACCES;
    char auth[KSASL_MSG_MAX * 3];
    int al = snprintf(auth, sizeof(auth), "%s,%s,%.*s", s->client_first_bare, s->server_first,
                      (int)(p - msg), msg);
    if (al < 0 || (size_t)al >= sizeof(auth))
        return PL_EPROTO;
    uint8_t client_key[32], stored[32], client_sig[32], server_key[32], server_sig[32];
    hmac256(s->salted, 32, "Client Key", 10, client_key);
    SHA256(client_key, 32, stored);
    hmac256(stored, 32, auth, (size_t)al, client_sig);
    uint8_t recovered[32], check[32];
    for (int i = 0; i < 32; i++)
        recovered[i] = proof[i] ^ client_sig[i];
    SHA256(recovered, 32, check);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (CRYPTO_memcmp(check, stored, 32))
        return PL_EACCES;
    hmac256(s->salted, 32, "Server Key", 10, server_key);
    hmac256(server_key, 32, auth, (size_t)al, server_sig);
    char v[64];
    v[b64_enc(server_sig, 32, v)] = 0;
    int w = snprintf((char *)out, *outn, "v=%s", v);
    if (w < 0 || (size_t)w >= *outn)
        return PL_EPROTO;
    *outn = (size_t)w;
    OPENSSL_cleanse(s->salted, sizeof(s->salted));
    return 0;
}

int ksasl_step(struct pl_store *st, struct ksasl *s, const uint8_t *in, size_t n, uint8_t *out,
               size_t *outn)
{
    int rc;
    size_t cap = *outn;
    *outn = 0;
    if (s->done)
        return PL_EPROTO;
    if (s->mech == KSASL_PLAIN) {
        rc = plain_step(st, s, in, n);
        s->done = 1;
        s->ok = rc == 0;
        return rc;
    }
    *outn = cap;
    if (s->step == 0)
        return scram_first(st, s, in, n, out, outn);
    rc = scram_final(s, in, n, out, outn);
    s->done = 1;
    s->ok = rc == 0;
    if (rc)
        *outn = 0;
    return rc;
}

/* Users and access keys. Secrets are stored encrypted (AES-256-GCM) with a
 * per-data-directory master key kept in "master.key" (mode 0600), so a copy
 * of the metadata alone does not leak them.
 * user record: name -> ctime LE64, flags LE64
 * key record: access key -> ulen(1) user nonce(12) tag(16) ciphertext */
#include "store/store_int.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <unistd.h>

static int user_name_valid(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len >= 64)
        return PL_EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '@'))
            return PL_EINVAL;
    }
    return 0;
}

static int master_key_load(struct pl_store *st, uint8_t key[32]);

/* The master key is read once per open store: every signed request needs it. */
static int master_key(struct pl_store *st, uint8_t key[32])
{
    int rc = 0;
    pthread_mutex_lock(&st->key_lock);
    if (!st->master_loaded) {
        rc = master_key_load(st, st->master);
        st->master_loaded = rc == 0;
    }
    if (!rc)
        memcpy(key, st->master, 32);
    pthread_mutex_unlock(&st->key_lock);
    return rc;
}

static int master_key_load(struct pl_store *st, uint8_t key[32])
{
    char p[PL_PATH_MAX];
    snprintf(p, sizeof(p), "%s/master.key", st->dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        int rc = pl_pread_all(fd, key, 32, 0);
        close(fd);
        return rc;
    }
    if (errno != ENOENT)
        return -errno;
    int rc = pl_random(key, 32);
    if (rc)
        return rc;
    char tmp[PL_PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    rc = pl_write_all(fd, key, 32);
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, p) < 0)
        rc = -errno;
    return rc ? rc : pl_fsync_dir(st->dir);
}

static int gcm(int enc, const uint8_t key[32], const uint8_t nonce[12], uint8_t tag[16],
               const uint8_t *in, int n, uint8_t *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len, ok = c != NULL;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, enc);
    ok = ok && EVP_CipherUpdate(c, out, &len, in, n);
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag);
    ok = ok && EVP_CipherFinal_ex(c, out + len, &len);
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : PL_ECORRUPT;
}

static int apply_user_create(struct meta_txn *t, void *arg)
{
    const char *name = arg;
    MDB_val v;
    int rc = meta_get(t->txn, t->env, META_USER, name, strlen(name), &v);
    if (rc != PL_ENOENT)
        return rc ? rc : PL_EEXIST;
    uint8_t rec[16] = {0};
    pl_put_le64(rec, (uint64_t)pl_now_ns());
    return meta_put(t, META_USER, name, strlen(name), rec, sizeof(rec));
}

int pl_user_create(struct pl_store *st, const char *name)
{
    if (user_name_valid(name))
        return PL_EINVAL;
    return meta_submit(st->meta, apply_user_create, (void *)name);
}

static int apply_user_delete(struct meta_txn *t, void *arg)
{
    const char *name = arg;
    size_t nl = strlen(name);
    int rc = meta_del(t, META_USER, name, nl);
    if (rc)
        return rc;
    MDB_cursor *c;
    MDB_val k, v;
    rc = meta_err(mdb_cursor_open(t->txn, meta_dbi(t->env, META_KEY), &c));
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        const uint8_t *p = v.mv_data;
        if (v.mv_size > 1 && p[0] == nl && !memcmp(p + 1, name, nl)) {
            rc = meta_err(mdb_cursor_del(c, 0));
            if (!rc)
                rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT));
            continue;
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc == PL_ENOENT || rc == PL_EINVAL ? 0 : rc;
}

int pl_user_delete(struct pl_store *st, const char *name)
{
    if (user_name_valid(name))
        return PL_ENOENT;
    return meta_submit(st->meta, apply_user_delete, (void *)name);
}

int pl_user_list(struct pl_store *st, pl_user_fn cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_USER), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct pl_user_info u = {0};
        if (k.mv_size < sizeof(u.name) && v.mv_size >= 8) {
            memcpy(u.name, k.mv_data, k.mv_size);
            u.ctime = (int64_t)pl_get_le64(v.mv_data);
            if (cb(arg, &u))
                break;
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    return rc == PL_ENOENT ? 0 : rc;
}

struct key_args {
    const char *user, *ak;
    const uint8_t *rec;
    size_t n;
    int replace;
};

static int apply_key_create(struct meta_txn *t, void *arg)
{
    struct key_args *a = arg;
    MDB_val v;
    int rc = meta_get(t->txn, t->env, META_USER, a->user, strlen(a->user), &v);
    if (rc)
        return rc;
    rc = meta_get(t->txn, t->env, META_KEY, a->ak, strlen(a->ak), &v);
    if (rc == 0 && !a->replace)
        return PL_EEXIST;
    if (rc && rc != PL_ENOENT)
        return rc;
    return meta_put(t, META_KEY, a->ak, strlen(a->ak), a->rec, a->n);
}

static void rand_chars(char *out, size_t n, const char *alphabet)
{
    uint8_t r[64];
    size_t al = strlen(alphabet);
    if (pl_random(r, n))
        memset(r, 0, n); /* getrandom cannot fail for small requests after boot */
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[r[i] % al];
    out[n] = 0;
}

int pl_key_create(struct pl_store *st, const char *user, char access_key[32], char secret[48])
{
    uint8_t mk[32], rec[1 + 64 + 12 + 16 + 48];
    int given = access_key[0] && secret[0];
    if (user_name_valid(user))
        return PL_EINVAL;
    if (given) {
        size_t al = strlen(access_key), sl = strlen(secret);
        if (al < 3 || al > 31 || sl < 8 || sl > 47)
            return PL_EINVAL;
    } else {
        memcpy(access_key, "PL", 2);
        rand_chars(access_key + 2, 18, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
        rand_chars(secret, 40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    }
    int rc = master_key(st, mk);
    if (rc)
        return rc;
    size_t ul = strlen(user), sl = strlen(secret);
    rec[0] = (uint8_t)ul;
    memcpy(rec + 1, user, ul);
    uint8_t *nonce = rec + 1 + ul, *tag = nonce + 12, *ct = tag + 16;
    rc = pl_random(nonce, 12);
    if (!rc)
        rc = gcm(1, mk, nonce, tag, (const uint8_t *)secret, (int)sl, ct);
    if (rc)
        return rc;
    struct key_args a = {user, access_key, rec, 1 + ul + 12 + 16 + sl, given};
    return meta_submit(st->meta, apply_key_create, &a);
}

static int apply_key_revoke(struct meta_txn *t, void *arg)
{
    const char *ak = arg;
    return meta_del(t, META_KEY, ak, strlen(ak));
}

int pl_key_revoke(struct pl_store *st, const char *access_key)
{
    if (!*access_key || strlen(access_key) > 31)
        return PL_ENOENT;
    return meta_submit(st->meta, apply_key_revoke, (void *)access_key);
}

int pl_key_list(struct pl_store *st, const char *user, pl_key_fn cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_KEY), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        struct pl_key_info ki = {0};
        const uint8_t *p = v.mv_data;
        if (k.mv_size < sizeof(ki.access_key) && v.mv_size > 1 && p[0] < sizeof(ki.user) &&
            v.mv_size >= 1u + p[0]) {
            memcpy(ki.access_key, k.mv_data, k.mv_size);
            memcpy(ki.user, p + 1, p[0]);
            if ((!user || !strcmp(user, ki.user)) && cb(arg, &ki))
                break;
        }
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    return rc == PL_ENOENT ? 0 : rc;
}

int pl_key_secret(struct pl_store *st, const char *access_key, char secret[48], char user[64])
{
    MDB_txn *txn;
    MDB_val v;
    uint8_t mk[32], rec[1 + 64 + 12 + 16 + 48];
    size_t n = 0;
    if (!*access_key || strlen(access_key) > 31)
        return PL_ENOENT;
    int rc = master_key(st, mk);
    if (rc)
        return rc;
    rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_get(txn, st->meta, META_KEY, access_key, strlen(access_key), &v);
    if (!rc && (v.mv_size > sizeof(rec) || v.mv_size < 1))
        rc = PL_ECORRUPT;
    if (!rc) {
        n = v.mv_size;
        memcpy(rec, v.mv_data, n);
    }
    meta_rtxn_end(txn);
    if (rc)
        return rc;
    size_t ul = rec[0];
    if (ul >= 64 || n < 1 + ul + 28 || n - 1 - ul - 28 >= 48)
        return PL_ECORRUPT;
    size_t sl = n - 1 - ul - 28;
    uint8_t *nonce = rec + 1 + ul, *tag = nonce + 12, *ct = tag + 16;
    rc = gcm(0, mk, nonce, tag, ct, (int)sl, (uint8_t *)secret);
    if (rc)
        return rc;
    secret[sl] = 0;
    memcpy(user, rec + 1, ul);
    user[ul] = 0;
    return 0;
}

int pl_store_derive_key(struct pl_store *st, const char *purpose, uint8_t out[32])
{
    uint8_t mk[32];
    unsigned int n = 32;
    int rc = master_key(st, mk);
    if (rc)
        return rc;
    /* HMAC-SHA256(master, purpose): one key per use, none revealing another */
    if (!HMAC(EVP_sha256(), mk, sizeof(mk), (const unsigned char *)purpose, strlen(purpose), out,
              &n))
        rc = PL_EINTERNAL;
    OPENSSL_cleanse(mk, sizeof(mk));
    return rc;
}

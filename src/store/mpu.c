/* Multipart uploads.
 *
 * An upload is a record naming a template element (anonymous, holding the
 * object's metadata) and the bucket/key. Each part is an anonymous element
 * written by an ordinary object writer and then owned by a part record (so it
 * outlives restarts, unlike a plain staging element). Completion copies the
 * parts' extent records into the template at shifted offsets, taking a chunk
 * reference per record; no chunk data is read or written. Then the template
 * is linked at the key and the parts are destroyed, dropping their references.
 */
#include "store/store_int.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#define UPLOAD_FIXED 16
#define PART_VAL_MIN 24

static size_t part_key(uint8_t *k, const char *uid, int number)
{
    memcpy(k, uid, PL_UPLOAD_ID_LEN);
    k[PL_UPLOAD_ID_LEN] = (uint8_t)(number >> 24);
    k[PL_UPLOAD_ID_LEN + 1] = (uint8_t)(number >> 16);
    k[PL_UPLOAD_ID_LEN + 2] = (uint8_t)(number >> 8);
    k[PL_UPLOAD_ID_LEN + 3] = (uint8_t)number;
    return PL_UPLOAD_ID_LEN + 4;
}

static int uid_valid(const char *uid)
{
    if (strlen(uid) != PL_UPLOAD_ID_LEN)
        return 0;
    for (const char *p = uid; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static int upload_get(MDB_txn *txn, struct meta_env *env, const char *uid, struct pl_mpu_info *info,
                      uint64_t *ret_tmpl)
{
    MDB_val v;
    if (!uid_valid(uid))
        return PL_ENOUPLOAD;
    int rc = meta_get(txn, env, META_UPLOAD, uid, PL_UPLOAD_ID_LEN, &v);
    if (rc == PL_ENOENT)
        return PL_ENOUPLOAD;
    if (rc)
        return rc;
    const uint8_t *p = v.mv_data;
    if (v.mv_size < UPLOAD_FIXED + 2)
        return PL_ECORRUPT;
    const char *b = (const char *)p + UPLOAD_FIXED;
    size_t rest = v.mv_size - UPLOAD_FIXED;
    size_t bl = strnlen(b, rest);
    if (bl == rest || bl >= sizeof(info->bucket) || rest - bl - 1 > PL_KEY_MAX)
        return PL_ECORRUPT;
    if (ret_tmpl)
        *ret_tmpl = pl_get_le64(p);
    if (info) {
        memcpy(info->upload_id, uid, PL_UPLOAD_ID_LEN + 1);
        info->initiated = (int64_t)pl_get_le64(p + 8);
        memcpy(info->bucket, b, bl + 1);
        memcpy(info->key, b + bl + 1, rest - bl - 1);
        info->key[rest - bl - 1] = 0;
    }
    return 0;
}

struct create_args {
    const char *bucket, *key;
    const struct pl_obj_meta *meta;
    char uid[PL_UPLOAD_ID_LEN + 1];
};

static int apply_create(struct meta_txn *t, void *arg)
{
    struct create_args *a = arg;
    struct elem e;
    struct dirent_rec d;
    elem_init(&e);
    int rc = dirent_get(t->txn, t->env, PL_ROOT_ID, a->bucket, PL_VIEW_LIVE, &d);
    if (rc) {
        rc = rc == PL_ENOENT ? PL_ENOBUCKET : rc;
        goto out;
    }
    /* the template carries the object's metadata until completion */
    e.flags = ELEM_F_STAGING;
    const struct pl_obj_meta *m = a->meta;
    if (m && m->content_type && *m->content_type)
        rc = prop_set(&e, PROP_CTYPE, NULL, m->content_type, strlen(m->content_type));
    for (const char *const *x = m ? m->xattrs : NULL; !rc && x && x[0]; x += 2)
        rc = prop_set(&e, PROP_XATTR, x[0], x[1], strlen(x[1]));
    if (!rc)
        rc = elem_new(t, &e, PL_T_FILE, 0644, 0, 0, 0);
    if (rc)
        goto out;
    struct pl_buf v;
    pl_buf_init(&v);
    uint8_t fixed[UPLOAD_FIXED];
    pl_put_le64(fixed, e.a.id);
    pl_put_le64(fixed + 8, (uint64_t)pl_now_ns());
    rc = pl_buf_add(&v, fixed, sizeof(fixed));
    if (!rc)
        rc = pl_buf_add(&v, a->bucket, strlen(a->bucket) + 1);
    if (!rc)
        rc = pl_buf_add(&v, a->key, strlen(a->key));
    if (!rc)
        rc = meta_put(t, META_UPLOAD, a->uid, PL_UPLOAD_ID_LEN, v.data, v.len);
    pl_buf_release(&v);
out:
    elem_release(&e);
    return rc;
}

int pl_mpu_create(struct pl_store *st, const char *bucket, const char *key,
                  const struct pl_obj_meta *meta, char upload_id[PL_UPLOAD_ID_LEN + 1])
{
    uint8_t rnd[PL_UPLOAD_ID_LEN / 2];
    int rc = pl_key_valid(key);
    if (rc)
        return rc;
    struct create_args a = {bucket, key, meta, ""};
    rc = pl_random(rnd, sizeof(rnd));
    if (rc)
        return rc;
    pl_hex(rnd, sizeof(rnd), a.uid);
    rc = meta_submit(st->meta, apply_create, &a);
    if (!rc)
        memcpy(upload_id, a.uid, sizeof(a.uid));
    return rc;
}

int pl_mpu_get(struct pl_store *st, const char *upload_id, struct pl_mpu_info *ret)
{
    MDB_txn *txn;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = upload_get(txn, st->meta, upload_id, ret, NULL);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- parts ---- */
/* Parts are plain object writers; this side table remembers which upload a
 * writer belongs to, keyed by the writer pointer. */
struct part_tag {
    struct pl_writer *w;
    struct pl_store *st;
    char uid[PL_UPLOAD_ID_LEN + 1];
    int number;
    struct part_tag *next;
};
static struct part_tag *tags;
static pthread_mutex_t tags_lock = PTHREAD_MUTEX_INITIALIZER;

int pl_mpu_part_begin(struct pl_store *st, const char *upload_id, int number,
                      struct pl_writer **ret)
{
    struct pl_mpu_info info;
    if (number < 1 || number > PL_PARTS_MAX)
        return PL_EINVAL;
    int rc = pl_mpu_get(st, upload_id, &info);
    if (rc)
        return rc;
    struct part_tag *t = calloc(1, sizeof(*t));
    if (!t)
        return PL_ENOMEM;
    rc = writer_open(st, info.bucket, info.key, ret);
    if (rc) {
        free(t);
        return rc;
    }
    t->w = *ret;
    t->st = st;
    memcpy(t->uid, upload_id, PL_UPLOAD_ID_LEN + 1);
    t->number = number;
    pthread_mutex_lock(&tags_lock);
    t->next = tags;
    tags = t;
    pthread_mutex_unlock(&tags_lock);
    return 0;
}

static struct part_tag *tag_take(struct pl_writer *w)
{
    pthread_mutex_lock(&tags_lock);
    struct part_tag **pp = &tags, *t = NULL;
    while (*pp && (*pp)->w != w)
        pp = &(*pp)->next;
    if (*pp) {
        t = *pp;
        *pp = t->next;
    }
    pthread_mutex_unlock(&tags_lock);
    return t;
}

struct part_args {
    const char *uid;
    int number;
    uint64_t elem, size;
    char etag[PL_ETAG_MAX];
    int64_t mtime;
};

static int drop_elem(struct meta_txn *t, uint64_t id)
{
    struct elem e;
    elem_init(&e);
    int rc = elem_get(t->txn, t->env, id, PL_VIEW_LIVE, &e);
    if (!rc)
        rc = elem_destroy(t, &e);
    elem_release(&e);
    return rc == PL_ENOENT ? 0 : rc;
}

static int apply_part(struct meta_txn *t, void *arg)
{
    struct part_args *a = arg;
    uint8_t k[PL_UPLOAD_ID_LEN + 4], sk[8];
    MDB_val old;
    int rc = upload_get(t->txn, t->env, a->uid, NULL, NULL);
    if (rc)
        return rc;
    size_t kn = part_key(k, a->uid, a->number);
    rc = meta_get(t->txn, t->env, META_PART, k, kn, &old);
    if (rc == 0 && old.mv_size >= PART_VAL_MIN) {
        rc = drop_elem(t, pl_get_le64(old.mv_data)); /* the part uploaded again */
    } else if (rc == PL_ENOENT) {
        rc = 0;
    }
    if (rc)
        return rc;
    uint8_t v[PART_VAL_MIN + PL_ETAG_MAX];
    size_t el = strlen(a->etag);
    pl_put_le64(v, a->elem);
    pl_put_le64(v + 8, a->size);
    pl_put_le64(v + 16, (uint64_t)a->mtime);
    memcpy(v + PART_VAL_MIN, a->etag, el);
    rc = meta_put(t, META_PART, k, kn, v, PART_VAL_MIN + el);
    pl_put_be64(sk, a->elem);
    if (!rc)
        rc = meta_del(t, META_STAGING, sk, 8); /* owned by the part record now */
    return rc;
}

int pl_mpu_part_commit(struct pl_writer *w, const uint8_t *content_md5, struct pl_part_info *ret)
{
    struct part_tag *tag = tag_take(w);
    uint8_t md5[16];
    uint64_t size = 0;
    int rc = tag ? 0 : PL_EINVAL;
    if (!rc)
        rc = writer_close(w, md5, &size);
    if (!rc && content_md5 && memcmp(content_md5, md5, 16))
        rc = PL_EDIGEST;
    if (!rc) {
        struct part_args a = {tag->uid, tag->number, writer_elem(w), size, "", pl_now_ns()};
        pl_hex(md5, 16, a.etag);
        rc = meta_submit(tag->st->meta, apply_part, &a);
        if (!rc) {
            writer_disown(w);
            if (ret) {
                ret->number = tag->number;
                ret->size = size;
                ret->mtime = a.mtime;
                memcpy(ret->etag, a.etag, sizeof(a.etag));
            }
        }
    }
    free(tag);
    pl_writer_abort(w);
    return rc;
}

static int part_decode(const MDB_val *k, const MDB_val *v, struct pl_part_info *p, uint64_t *elem)
{
    const uint8_t *kp = k->mv_data, *vp = v->mv_data;
    if (k->mv_size != PL_UPLOAD_ID_LEN + 4 || v->mv_size < PART_VAL_MIN ||
        v->mv_size - PART_VAL_MIN >= PL_ETAG_MAX)
        return PL_ECORRUPT;
    p->number = (int)((uint32_t)kp[PL_UPLOAD_ID_LEN] << 24 |
                      (uint32_t)kp[PL_UPLOAD_ID_LEN + 1] << 16 |
                      (uint32_t)kp[PL_UPLOAD_ID_LEN + 2] << 8 | kp[PL_UPLOAD_ID_LEN + 3]);
    if (elem)
        *elem = pl_get_le64(vp);
    p->size = pl_get_le64(vp + 8);
    p->mtime = (int64_t)pl_get_le64(vp + 16);
    memcpy(p->etag, vp + PART_VAL_MIN, v->mv_size - PART_VAL_MIN);
    p->etag[v->mv_size - PART_VAL_MIN] = 0;
    return 0;
}

/* Walk the parts of an upload (number > after) inside txn. */
typedef int (*part_walk_fn)(void *arg, const struct pl_part_info *p, uint64_t elem);
static int parts_walk(MDB_txn *txn, struct meta_env *env, const char *uid, int after,
                      part_walk_fn cb, void *arg)
{
    MDB_cursor *c;
    uint8_t k[PL_UPLOAD_ID_LEN + 4];
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(env, META_PART), &c));
    if (rc)
        return rc;
    MDB_val key = {part_key(k, uid, after + 1), k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc) {
        if (key.mv_size < PL_UPLOAD_ID_LEN || memcmp(key.mv_data, uid, PL_UPLOAD_ID_LEN))
            break;
        struct pl_part_info p;
        uint64_t elem;
        rc = part_decode(&key, &val, &p, &elem);
        if (rc)
            break;
        rc = cb(arg, &p, elem);
        if (rc)
            break;
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc == PL_ENOENT || rc > 0 ? 0 : rc;
}

struct list_cb_args {
    pl_part_fn cb;
    void *arg;
};

static int list_adapter(void *arg, const struct pl_part_info *p, uint64_t elem)
{
    (void)elem;
    struct list_cb_args *a = arg;
    return a->cb(a->arg, p) ? 1 : 0;
}

int pl_mpu_part_list(struct pl_store *st, const char *upload_id, int after, pl_part_fn cb,
                     void *arg)
{
    MDB_txn *txn;
    struct list_cb_args a = {cb, arg};
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = upload_get(txn, st->meta, upload_id, NULL, NULL);
    if (!rc)
        rc = parts_walk(txn, st->meta, upload_id, after, list_adapter, &a);
    meta_rtxn_end(txn);
    return rc;
}

/* ---- completion ---- */
struct complete_args {
    const char *uid;
    const struct pl_part_ref *parts;
    size_t n;
    struct pl_attr out;
};

/* Copy the live extents of part element src into dst at offset base. */
int extent_copy(struct meta_txn *t, uint64_t src, uint64_t dst, uint64_t base)
{
    uint64_t E;
    int rc = epoch_current(t, &E);
    if (rc)
        return rc;
    uint64_t from = 0;
    for (;;) {
        /* batches: we write to the same table we walk */
        struct {
            uint64_t off;
            uint8_t v[48];
        } batch[256];
        int n = 0;
        MDB_cursor *c;
        uint8_t k[24];
        rc = meta_err(mdb_cursor_open(t->txn, meta_dbi(t->env, META_EXTENT), &c));
        if (rc)
            return rc;
        MDB_val key = {key_extent(k, src, from, PL_EPOCH_INF), k}, val;
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
        while (!rc && n < 256) {
            const uint8_t *kp = key.mv_data;
            if (key.mv_size != 24 || pl_get_be64(kp) != src)
                break;
            if (val.mv_size != 48) {
                rc = PL_ECORRUPT;
                break;
            }
            if (pl_get_le64((const uint8_t *)val.mv_data + 40) == PL_EPOCH_INF) {
                batch[n].off = pl_get_be64(kp + 8);
                memcpy(batch[n].v, val.mv_data, 48);
                n++;
            }
            rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
        }
        mdb_cursor_close(c);
        if (rc && rc != PL_ENOENT)
            return rc;
        for (int i = 0; i < n; i++) {
            rc = chunk_ref(t, batch[i].v, NULL, NULL);
            if (!rc)
                rc = meta_put(t, META_EXTENT, k, key_extent(k, dst, base + batch[i].off, E),
                              batch[i].v, 48);
            if (rc)
                return rc;
        }
        if (n < 256)
            return 0;
        from = batch[n - 1].off + 1;
    }
}

struct drop_args {
    struct meta_txn *t;
    const char *uid;
};

static int drop_part(void *arg, const struct pl_part_info *p, uint64_t elem)
{
    struct drop_args *d = arg;
    uint8_t k[PL_UPLOAD_ID_LEN + 4];
    int rc = drop_elem(d->t, elem);
    if (!rc)
        rc = meta_del(d->t, META_PART, k, part_key(k, d->uid, p->number));
    return rc;
}

/* Destroy every part and the upload record (not the template). */
static int upload_forget(struct meta_txn *t, const char *uid)
{
    struct drop_args d = {t, uid};
    /* deleting while walking: restart the walk after each batch of one */
    for (;;) {
        MDB_cursor *c;
        uint8_t k[PL_UPLOAD_ID_LEN + 4];
        int rc = meta_err(mdb_cursor_open(t->txn, meta_dbi(t->env, META_PART), &c));
        if (rc)
            return rc;
        MDB_val key = {part_key(k, uid, 0), k}, val;
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
        struct pl_part_info p;
        uint64_t elem = 0;
        int found = !rc && key.mv_size >= PL_UPLOAD_ID_LEN &&
                    !memcmp(key.mv_data, uid, PL_UPLOAD_ID_LEN);
        if (found)
            rc = part_decode(&key, &val, &p, &elem);
        mdb_cursor_close(c);
        if (rc && rc != PL_ENOENT)
            return rc;
        if (!found)
            break;
        rc = drop_part(&d, &p, elem);
        if (rc)
            return rc;
    }
    return meta_del(t, META_UPLOAD, uid, PL_UPLOAD_ID_LEN);
}

static int apply_complete(struct meta_txn *t, void *arg)
{
    struct complete_args *a = arg;
    struct pl_mpu_info info;
    struct elem e;
    uint64_t tmpl;
    int rc = upload_get(t->txn, t->env, a->uid, &info, &tmpl);
    if (rc)
        return rc;
    if (a->n == 0 || a->n > PL_PARTS_MAX)
        return PL_EBADPART;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestInit_ex(md, EVP_md5(), NULL)) {
        EVP_MD_CTX_free(md);
        return PL_ENOMEM;
    }
    elem_init(&e);
    uint64_t base = 0;
    /* part sizes as runs (size LE64, count LE32): usually all equal but the last */
    struct pl_buf runs;
    pl_buf_init(&runs);
    for (size_t i = 0; i < a->n && !rc; i++) {
        const struct pl_part_ref *ref = &a->parts[i];
        if (i && ref->number <= a->parts[i - 1].number) {
            rc = PL_EPARTORDER;
            break;
        }
        uint8_t k[PL_UPLOAD_ID_LEN + 4], bin[16];
        MDB_val kv = {part_key(k, a->uid, ref->number), k}, v;
        struct pl_part_info p;
        uint64_t elem;
        if (ref->number < 1 || ref->number > PL_PARTS_MAX ||
            meta_get(t->txn, t->env, META_PART, k, kv.mv_size, &v)) {
            rc = PL_EBADPART;
            break;
        }
        rc = part_decode(&kv, &v, &p, &elem);
        if (rc)
            break;
        /* the client's ETag may be quoted */
        const char *want = ref->etag ? ref->etag : "";
        size_t wl = strlen(want);
        if (wl >= 2 && want[0] == '"' && want[wl - 1] == '"') {
            want++;
            wl -= 2;
        }
        if (wl != strlen(p.etag) || strncasecmp(want, p.etag, wl) || pl_unhex(p.etag, bin, 16)) {
            rc = PL_EBADPART;
            break;
        }
        if (i + 1 < a->n && p.size < PL_PART_MIN) {
            rc = PL_ETOOSMALL;
            break;
        }
        EVP_DigestUpdate(md, bin, 16);
        rc = extent_copy(t, elem, tmpl, base);
        base += p.size;
        if (!rc && runs.len >= 12 && pl_get_le64((const uint8_t *)runs.data + runs.len - 12) == p.size) {
            uint8_t *cnt = (uint8_t *)runs.data + runs.len - 4;
            pl_put_le32(cnt, pl_get_le32(cnt) + 1);
        } else if (!rc) {
            uint8_t run[12];
            pl_put_le64(run, p.size);
            pl_put_le32(run + 8, 1);
            rc = pl_buf_add(&runs, run, sizeof(run));
        }
    }
    uint8_t fin[16];
    unsigned int fl = 16;
    EVP_DigestFinal_ex(md, fin, &fl);
    EVP_MD_CTX_free(md);
    if (rc)
        goto out;
    rc = elem_get(t->txn, t->env, tmpl, PL_VIEW_LIVE, &e);
    if (rc)
        goto out;
    e.a.size = base;
    rc = prop_set(&e, PROP_PARTS, NULL, runs.data, runs.len);
    if (!rc)
        rc = elem_put(t, &e);
    if (rc)
        goto out;
    char etag[PL_ETAG_MAX];
    pl_hex(fin, 16, etag);
    snprintf(etag + 32, sizeof(etag) - 32, "-%zu", a->n);
    rc = upload_forget(t, a->uid);
    if (!rc)
        rc = obj_link(t, info.bucket, info.key, tmpl, etag, NULL, &a->out);
    if (!rc)
        rc = event_queue(t, EV_MPU, info.bucket, info.key, &a->out, NULL);
out:
    pl_buf_release(&runs);
    elem_release(&e);
    return rc;
}

int pl_obj_part(struct pl_store *st, uint64_t id, uint64_t view, int number, uint64_t *ret_off,
                uint64_t *ret_len, int *ret_count)
{
    MDB_txn *txn;
    struct elem e;
    struct pl_str s;
    elem_init(&e);
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = elem_get(txn, st->meta, id, view, &e);
    if (rc)
        goto out;
    if (prop_get(&e, PROP_PARTS, NULL, &s) || s.n % 12) {
        /* not uploaded in parts: one part, the whole object */
        *ret_count = 1;
        *ret_off = 0;
        *ret_len = e.a.size;
        rc = number == 1 ? 0 : PL_ERANGE;
        goto out;
    }
    uint64_t off = 0;
    int seen = 0, found = 0;
    for (size_t i = 0; i < s.n; i += 12) {
        uint64_t size = pl_get_le64((const uint8_t *)s.p + i);
        uint32_t cnt = pl_get_le32((const uint8_t *)s.p + i + 8);
        if (!found && number > seen && (uint64_t)number <= (uint64_t)seen + cnt) {
            *ret_off = off + size * (uint64_t)(number - seen - 1);
            *ret_len = size;
            found = 1;
        }
        off += size * cnt;
        seen += (int)cnt;
    }
    *ret_count = seen;
    rc = found ? 0 : PL_ERANGE;
out:
    elem_release(&e);
    meta_rtxn_end(txn);
    return rc;
}

int pl_mpu_complete(struct pl_store *st, const char *upload_id, const struct pl_part_ref *parts,
                    size_t n, struct pl_attr *ret)
{
    struct complete_args a = {upload_id, parts, n, {0}};
    if (!uid_valid(upload_id))
        return PL_ENOUPLOAD;
    /* chunk references are taken on existing chunks: keep the purge out */
    pl_gate_enter(&st->purge);
    int rc = meta_submit(st->meta, apply_complete, &a);
    pl_gate_leave(&st->purge);
    if (!rc && ret)
        *ret = a.out;
    return rc;
}

static int apply_abort(struct meta_txn *t, void *arg)
{
    const char *uid = arg;
    uint64_t tmpl;
    int rc = upload_get(t->txn, t->env, uid, NULL, &tmpl);
    if (!rc)
        rc = upload_forget(t, uid);
    if (!rc)
        rc = drop_elem(t, tmpl);
    return rc;
}

int pl_mpu_abort(struct pl_store *st, const char *upload_id)
{
    if (!uid_valid(upload_id))
        return PL_ENOUPLOAD;
    return meta_submit(st->meta, apply_abort, (void *)upload_id);
}

int pl_mpu_list(struct pl_store *st, const char *bucket, pl_mpu_fn cb, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = meta_rtxn_begin(st->meta, &txn);
    if (rc)
        return rc;
    rc = meta_err(mdb_cursor_open(txn, meta_dbi(st->meta, META_UPLOAD), &c));
    if (!rc)
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_FIRST));
    while (!rc) {
        char uid[PL_UPLOAD_ID_LEN + 1];
        struct pl_mpu_info *info = malloc(sizeof(*info));
        if (!info) {
            rc = PL_ENOMEM;
            break;
        }
        if (k.mv_size == PL_UPLOAD_ID_LEN) {
            memcpy(uid, k.mv_data, PL_UPLOAD_ID_LEN);
            uid[PL_UPLOAD_ID_LEN] = 0;
            if (upload_get(txn, st->meta, uid, info, NULL) == 0 &&
                (!bucket || !strcmp(bucket, info->bucket)) && cb(arg, info)) {
                free(info);
                break;
            }
        }
        free(info);
        rc = meta_err(mdb_cursor_get(c, &k, &v, MDB_NEXT));
    }
    if (c)
        mdb_cursor_close(c);
    meta_rtxn_end(txn);
    return rc == PL_ENOENT ? 0 : rc;
}

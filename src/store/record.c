/* Versioned records: elements, directory entries, epochs, the graveyard. */
#include "store/store_int.h"

#include <stdlib.h>

/* element record layout (little-endian):
 *   0 version(1)=1  1 type  2 flags LE16  4 mode  8 uid  12 gid  16 nlink  20 pad
 *   24 gen  32 size  40 atime  48 mtime  56 ctime  64 btime  72 death  80 parent
 *   88 etag length(1) 89 etag(47)  136 props TLV... */
#define ELEM_FIXED 136

size_t key_elem(uint8_t *k, uint64_t id, uint64_t birth)
{
    pl_put_be64(k, id);
    pl_put_be64(k + 8, ~birth);
    return 16;
}

size_t key_extent(uint8_t *k, uint64_t id, uint64_t off, uint64_t birth)
{
    pl_put_be64(k, id);
    pl_put_be64(k + 8, off);
    pl_put_be64(k + 16, ~birth);
    return 24;
}

size_t key_dirent(uint8_t *k, uint64_t parent, const char *name, char term, uint64_t birth)
{
    size_t n = strlen(name);
    pl_put_be64(k, parent);
    memcpy(k + 8, name, n);
    k[8 + n] = (uint8_t)term;
    pl_put_be64(k + 9 + n, ~birth);
    return 17 + n;
}

int name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > PL_NAME_MAX)
        return n ? PL_ENAMETOOLONG : PL_EINVAL;
    if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return PL_EINVAL;
    return 0;
}

void elem_init(struct elem *e)
{
    memset(e, 0, sizeof(*e));
    pl_buf_init(&e->props);
}

void elem_release(struct elem *e)
{
    pl_buf_release(&e->props);
}

static int elem_encode(const struct elem *e, struct pl_buf *out)
{
    uint8_t h[ELEM_FIXED] = {0};
    h[0] = 1;
    h[1] = e->a.type;
    h[2] = (uint8_t)e->flags;
    h[3] = (uint8_t)(e->flags >> 8);
    pl_put_le32(h + 4, e->a.mode);
    pl_put_le32(h + 8, e->a.uid);
    pl_put_le32(h + 12, e->a.gid);
    pl_put_le32(h + 16, e->a.nlink);
    pl_put_le64(h + 24, e->a.gen);
    pl_put_le64(h + 32, e->a.size);
    pl_put_le64(h + 40, (uint64_t)e->a.atime);
    pl_put_le64(h + 48, (uint64_t)e->a.mtime);
    pl_put_le64(h + 56, (uint64_t)e->a.ctime);
    pl_put_le64(h + 64, (uint64_t)e->a.btime);
    pl_put_le64(h + 72, e->death);
    pl_put_le64(h + 80, e->a.parent);
    size_t el = strnlen(e->a.etag, PL_ETAG_MAX - 1);
    h[88] = (uint8_t)el;
    memcpy(h + 89, e->a.etag, el);
    pl_buf_reset(out);
    int rc = pl_buf_add(out, h, sizeof(h));
    if (!rc)
        rc = pl_buf_add(out, e->props.data, e->props.len);
    return rc;
}

int elem_decode(uint64_t id, uint64_t birth, const uint8_t *p, size_t n, struct elem *e)
{
    if (n < ELEM_FIXED || p[0] != 1 || p[88] >= PL_ETAG_MAX)
        return PL_ECORRUPT;
    e->a.id = id;
    e->birth = birth;
    e->a.type = p[1];
    e->flags = (uint16_t)(p[2] | p[3] << 8);
    e->a.mode = pl_get_le32(p + 4);
    e->a.uid = pl_get_le32(p + 8);
    e->a.gid = pl_get_le32(p + 12);
    e->a.nlink = pl_get_le32(p + 16);
    e->a.gen = pl_get_le64(p + 24);
    e->a.size = pl_get_le64(p + 32);
    e->a.atime = (int64_t)pl_get_le64(p + 40);
    e->a.mtime = (int64_t)pl_get_le64(p + 48);
    e->a.ctime = (int64_t)pl_get_le64(p + 56);
    e->a.btime = (int64_t)pl_get_le64(p + 64);
    e->death = pl_get_le64(p + 72);
    e->a.parent = pl_get_le64(p + 80);
    memcpy(e->a.etag, p + 89, p[88]);
    e->a.etag[p[88]] = 0;
    pl_buf_reset(&e->props);
    int rc = pl_buf_add(&e->props, p + ELEM_FIXED, n - ELEM_FIXED);
    uint64_t seq;
    int null;
    e->a.version = 0;
    if (!rc && elem_version_get(e, &seq, &null) == 0 && !null)
        e->a.version = seq;
    return rc;
}

/* PROP_VERSION: seq LE64, null flag u8 */
int elem_version_get(const struct elem *e, uint64_t *ret_seq, int *ret_null)
{
    struct pl_str s;
    int rc = prop_get(e, PROP_VERSION, NULL, &s);
    if (rc)
        return rc;
    if (s.n != 9)
        return PL_ECORRUPT;
    *ret_seq = pl_get_le64((const uint8_t *)s.p);
    *ret_null = s.p[8] != 0;
    return 0;
}

int elem_version_set(struct elem *e, uint64_t seq, int null)
{
    uint8_t v[9];
    pl_put_le64(v, seq);
    v[8] = (uint8_t)(null != 0);
    e->a.version = null ? 0 : seq;
    return prop_set(e, PROP_VERSION, NULL, v, sizeof(v));
}

/* Position on the version of a primary key visible in view. prefix is the key
 * without its trailing ~birth. Returns PL_ENOENT when none is visible. */
static int version_find(MDB_txn *txn, MDB_dbi dbi, const uint8_t *prefix, size_t pn, uint64_t view,
                        size_t death_off, MDB_val *ret_key, MDB_val *ret_val)
{
    uint8_t k[PL_NAME_MAX + 64];
    MDB_cursor *c = NULL;
    int rc = meta_err(mdb_cursor_open(txn, dbi, &c));
    if (rc)
        return rc;
    memcpy(k, prefix, pn);
    pl_put_be64(k + pn, view == PL_VIEW_LIVE ? 0 : ~view);
    MDB_val key = {pn + 8, k}, val;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    if (rc)
        goto out;
    if (key.mv_size != pn + 8 || memcmp(key.mv_data, prefix, pn)) {
        rc = PL_ENOENT;
        goto out;
    }
    uint64_t birth = ~pl_get_be64((const uint8_t *)key.mv_data + pn);
    if (val.mv_size < death_off + 8) {
        rc = PL_ECORRUPT;
        goto out;
    }
    uint64_t death = pl_get_le64((const uint8_t *)val.mv_data + death_off);
    if (!view_sees(view, birth, death)) {
        rc = PL_ENOENT;
        goto out;
    }
    *ret_key = key;
    *ret_val = val;
out:
    mdb_cursor_close(c);
    return rc;
}

int elem_get(MDB_txn *txn, struct meta_env *env, uint64_t id, uint64_t view, struct elem *ret)
{
    uint8_t prefix[8];
    MDB_val k, v;
    pl_put_be64(prefix, id);
    int rc = version_find(txn, meta_dbi(env, META_ELEM), prefix, 8, view, 72, &k, &v);
    if (rc)
        return rc;
    return elem_decode(id, ~pl_get_be64((const uint8_t *)k.mv_data + 8), v.mv_data, v.mv_size, ret);
}

int epoch_current(struct meta_txn *t, uint64_t *ret)
{
    int rc = meta_sys_get(t->txn, t->env, "epoch", ret);
    if (!rc && *ret == 0)
        *ret = 1;
    return rc;
}

int epoch_must_cow(struct meta_txn *t, uint64_t birth, int *ret)
{
    uint64_t smax;
    int rc = meta_sys_get(t->txn, t->env, "snap_max", &smax);
    if (rc)
        return rc;
    *ret = smax != 0 && smax >= birth;
    return 0;
}

int grave_add(struct meta_txn *t, uint64_t death, uint8_t table, const uint8_t *key, size_t kn)
{
    uint8_t k[PL_NAME_MAX + 64];
    pl_put_be64(k, death);
    k[8] = table;
    memcpy(k + 9, key, kn);
    return meta_put(t, META_GRAVE, k, 9 + kn, "", 0);
}

static int elem_write_rec(struct meta_txn *t, struct elem *e)
{
    uint8_t k[16];
    struct pl_buf b;
    pl_buf_init(&b);
    int rc = elem_encode(e, &b);
    if (!rc)
        rc = meta_put(t, META_ELEM, k, key_elem(k, e->a.id, e->birth), b.data, b.len);
    pl_buf_release(&b);
    return rc;
}

/* Give the current version a death at E (keeping it for snapshots), or drop it. */
static int elem_retire(struct meta_txn *t, struct elem *e, uint64_t E, int cow)
{
    uint8_t k[16];
    size_t kn = key_elem(k, e->a.id, e->birth);
    if (!cow)
        return meta_del(t, META_ELEM, k, kn);
    struct elem old = *e;
    old.death = E;
    int rc = elem_write_rec(t, &old);
    if (!rc)
        rc = grave_add(t, E, META_ELEM, k, kn);
    return rc;
}

int elem_put(struct meta_txn *t, struct elem *e)
{
    uint64_t E;
    int cow, rc = epoch_current(t, &E);
    if (!rc)
        rc = epoch_must_cow(t, e->birth, &cow);
    if (rc)
        return rc;
    if (cow && e->birth != E) {
        rc = elem_retire(t, e, E, 1);
        if (rc)
            return rc;
        e->birth = E;
    }
    e->death = PL_EPOCH_INF;
    rc = elem_write_rec(t, e);
    if (!rc)
        rc = store_note(t, PL_CHANGE_ATTR, e->a.id, NULL);
    return rc;
}

int elem_new(struct meta_txn *t, struct elem *e, uint8_t type, uint32_t mode, uint32_t uid,
             uint32_t gid, uint64_t parent)
{
    uint64_t id, E;
    int rc = meta_sys_get(t->txn, t->env, "next_id", &id);
    if (!rc)
        rc = epoch_current(t, &E);
    if (rc)
        return rc;
    if (id <= PL_ROOT_ID)
        id = PL_ROOT_ID + 1;
    rc = meta_sys_put(t, "next_id", id + 1);
    if (rc)
        return rc;
    int64_t now = pl_now_ns();
    e->a.id = id;
    e->a.gen = 1;
    e->a.type = type;
    e->a.mode = mode;
    e->a.uid = uid;
    e->a.gid = gid;
    e->a.nlink = type == PL_T_DIR ? 2 : 1;
    e->a.parent = parent;
    e->a.atime = e->a.mtime = e->a.ctime = e->a.btime = now;
    e->birth = E;
    e->death = PL_EPOCH_INF;
    rc = elem_write_rec(t, e);
    if (!rc && !(e->flags & ELEM_F_STAGING))
        rc = meta_sys_add(t, "elements", 1); /* staging ones count when linked */
    return rc;
}

/* The last name of a pinned element went: keep it, nameless and uncounted,
 * in the staging table (so a crash drops it), until the last unpin. */
static int elem_orphan(struct meta_txn *t, struct elem *e)
{
    uint8_t k[8];
    int rc = 0;
    if (e->a.type == PL_T_FILE && !(e->flags & ELEM_F_STAGING))
        rc = meta_sys_add(t, "logical", -(int64_t)e->a.size);
    if (!rc && !(e->flags & ELEM_F_STAGING))
        rc = meta_sys_add(t, "elements", -1);
    e->flags |= ELEM_F_STAGING;
    e->flags &= (uint16_t)~ELEM_F_VERSION; /* its version record is gone */
    e->a.nlink = 0;
    if (!rc)
        rc = elem_put(t, e);
    pl_put_be64(k, e->a.id);
    if (!rc)
        rc = meta_put(t, META_STAGING, k, 8, "", 0);
    return rc;
}

int elem_destroy(struct meta_txn *t, struct elem *e)
{
    /* a noncurrent version is nameless but may be being read like any object */
    if (e->a.type == PL_T_FILE &&
        (!(e->flags & ELEM_F_STAGING) || (e->flags & ELEM_F_VERSION)) &&
        store_pin_orphan(meta_ctx(t->env), e->a.id))
        return elem_orphan(t, e);
    uint64_t E;
    int cow, rc = epoch_current(t, &E);
    if (!rc)
        rc = epoch_must_cow(t, e->birth, &cow);
    if (!rc && e->a.type == PL_T_FILE)
        rc = extent_punch(t, e->a.id, 0, UINT64_MAX);
    if (!rc)
        rc = elem_retire(t, e, E, cow);
    if (!rc && e->a.type == PL_T_FILE && !(e->flags & ELEM_F_STAGING))
        rc = meta_sys_add(t, "logical", -(int64_t)e->a.size);
    if (!rc && !(e->flags & ELEM_F_STAGING))
        rc = meta_sys_add(t, "elements", -1);
    return rc;
}

/* ---- properties: TLV tag(1) len(LE32) body; named props body = name\0value ---- */
static int prop_find(const struct elem *e, uint8_t tag, const char *name, size_t *ret_off,
                     size_t *ret_len)
{
    const uint8_t *p = (const uint8_t *)e->props.data;
    size_t n = e->props.len, off = 0, nl = name ? strlen(name) : 0;
    while (off + 5 <= n) {
        uint32_t len = pl_get_le32(p + off + 1);
        if (off + 5 + len > n)
            return PL_ECORRUPT;
        const uint8_t *body = p + off + 5;
        if (p[off] == tag &&
            (!name || (len > nl && !memcmp(body, name, nl) && body[nl] == 0))) {
            *ret_off = off;
            *ret_len = 5 + len;
            return 0;
        }
        off += 5 + len;
    }
    return PL_ENODATA;
}

int prop_get(const struct elem *e, uint8_t tag, const char *name, struct pl_str *ret)
{
    size_t off, len;
    int rc = prop_find(e, tag, name, &off, &len);
    if (rc)
        return rc;
    size_t skip = name ? strlen(name) + 1 : 0;
    ret->p = e->props.data + off + 5 + skip;
    ret->n = len - 5 - skip;
    return 0;
}

int prop_del(struct elem *e, uint8_t tag, const char *name)
{
    size_t off, len;
    int rc = prop_find(e, tag, name, &off, &len);
    if (rc)
        return rc;
    memmove(e->props.data + off, e->props.data + off + len, e->props.len - off - len);
    e->props.len -= len;
    e->props.data[e->props.len] = 0;
    return 0;
}

int prop_set(struct elem *e, uint8_t tag, const char *name, const void *v, size_t n)
{
    size_t nl = name ? strlen(name) + 1 : 0;
    if (n + nl > 65536 || e->props.len + n + nl > 256 * 1024)
        return PL_ERANGE;
    int rc = prop_del(e, tag, name);
    if (rc && rc != PL_ENODATA)
        return rc;
    uint8_t h[5];
    h[0] = tag;
    pl_put_le32(h + 1, (uint32_t)(n + nl));
    rc = pl_buf_add(&e->props, h, 5);
    if (!rc && name)
        rc = pl_buf_add(&e->props, name, nl);
    if (!rc)
        rc = pl_buf_add(&e->props, v, n);
    return rc;
}

/* ---- directory entries: value id(8 LE) type(1) death(8 LE) ---- */
int dirent_get(MDB_txn *txn, struct meta_env *env, uint64_t parent, const char *name,
               uint64_t view, struct dirent_rec *ret)
{
    static const char terms[2] = {'\0', '/'};
    uint8_t prefix[PL_NAME_MAX + 32];
    if (name_valid(name))
        return PL_ENOENT;
    for (int i = 0; i < 2; i++) {
        size_t pn = key_dirent(prefix, parent, name, terms[i], 0) - 8;
        MDB_val k, v;
        int rc = version_find(txn, meta_dbi(env, META_DIRENT), prefix, pn, view, 9, &k, &v);
        if (rc == PL_ENOENT)
            continue;
        if (rc)
            return rc;
        const uint8_t *p = v.mv_data;
        ret->id = pl_get_le64(p);
        ret->type = p[8];
        ret->death = pl_get_le64(p + 9);
        ret->birth = ~pl_get_be64((const uint8_t *)k.mv_data + pn);
        ret->term = terms[i];
        return 0;
    }
    return PL_ENOENT;
}

int dirent_add(struct meta_txn *t, uint64_t parent, const char *name, uint64_t id, uint8_t type)
{
    uint8_t k[PL_NAME_MAX + 32], v[17];
    uint64_t E;
    int rc = epoch_current(t, &E);
    if (rc)
        return rc;
    pl_put_le64(v, id);
    v[8] = type;
    pl_put_le64(v + 9, PL_EPOCH_INF);
    rc = meta_put(t, META_DIRENT, k, key_dirent(k, parent, name, type == PL_T_DIR ? '/' : '\0', E),
                  v, sizeof(v));
    if (!rc)
        rc = store_note(t, PL_CHANGE_ENTRY, parent, name);
    return rc;
}

int dirent_remove(struct meta_txn *t, uint64_t parent, const char *name, const struct dirent_rec *d)
{
    uint8_t k[PL_NAME_MAX + 32], v[17];
    uint64_t E;
    int cow, rc = epoch_current(t, &E);
    if (!rc)
        rc = epoch_must_cow(t, d->birth, &cow);
    if (rc)
        return rc;
    rc = store_note(t, PL_CHANGE_ENTRY, parent, name);
    if (rc)
        return rc;
    size_t kn = key_dirent(k, parent, name, d->term, d->birth);
    if (!cow)
        return meta_del(t, META_DIRENT, k, kn);
    pl_put_le64(v, d->id);
    v[8] = d->type;
    pl_put_le64(v + 9, E);
    rc = meta_put(t, META_DIRENT, k, kn, v, sizeof(v));
    if (!rc)
        rc = grave_add(t, E, META_DIRENT, k, kn);
    return rc;
}

int dir_is_empty(MDB_txn *txn, struct meta_env *env, uint64_t dir, int *ret)
{
    uint8_t k[8];
    MDB_cursor *c = NULL;
    pl_put_be64(k, dir);
    int rc = meta_err(mdb_cursor_open(txn, meta_dbi(env, META_DIRENT), &c));
    if (rc)
        return rc;
    MDB_val key = {8, k}, val;
    *ret = 1;
    rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_SET_RANGE));
    while (!rc && key.mv_size > 8 && !memcmp(key.mv_data, k, 8)) {
        if (val.mv_size >= 17 && pl_get_le64((const uint8_t *)val.mv_data + 9) == PL_EPOCH_INF) {
            *ret = 0;
            break;
        }
        rc = meta_err(mdb_cursor_get(c, &key, &val, MDB_NEXT));
    }
    mdb_cursor_close(c);
    return rc == PL_ENOENT ? 0 : rc;
}

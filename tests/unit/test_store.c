#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "base/base.h"
#include "plenum/store.h"
#include "testutil.h"

static void reopen(struct fix *f)
{
    struct pl_store_opts o = {.zstd_level = -1};
    pl_store_close(f->st);
    assert_int_equal(pl_store_open(f->dir, &o, &f->st), 0);
}

static void put(struct pl_store *st, const char *b, const char *k, const void *p, size_t n,
                struct pl_attr *ret)
{
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, b, k, &w), 0);
    size_t off = 0;
    while (off < n) { /* odd-sized pieces exercise the carry-over */
        size_t take = PL_MIN(n - off, (size_t)1234567);
        assert_int_equal(pl_writer_write(w, (const uint8_t *)p + off, take), 0);
        off += take;
    }
    assert_int_equal(pl_obj_put_commit(w, NULL, ret), 0);
}

static void read_all(struct pl_store *st, uint64_t id, uint64_t view, uint8_t *out, size_t n)
{
    size_t got;
    assert_int_equal(pl_elem_read(st, id, view, 0, out, n, &got), 0);
    assert_int_equal(got, n);
}

static void test_open_errors(void **state)
{
    (void)state;
    char d[256], p[300];
    struct pl_store *st;
    tu_tmpdir(d, sizeof(d));
    assert_int_equal(pl_store_open(d, NULL, &st), PL_ENOENT);
    assert_int_equal(mkdir(d, 0700), 0);
    snprintf(p, sizeof(p), "%s/somefile", d);
    FILE *fp = fopen(p, "w");
    fclose(fp);
    struct pl_store_opts o = {.zstd_level = -1, .create = 1};
    assert_int_equal(pl_store_open(d, &o, &st), PL_ENOTPLENUM);
    unlink(p);
    assert_int_equal(pl_store_open(d, &o, &st), 0);
    struct pl_store *st2;
    assert_int_equal(pl_store_open(d, &o, &st2), PL_ELOCKED);
    pl_store_close(st);
    tu_rmrf(d);
}

/* random writes at random offsets against an in-memory model */
static void test_posix_rw_model(void **state)
{
    struct fix *f = *state;
    struct pl_attr a;
    size_t cap = 3u << 20;
    uint8_t *model = calloc(1, cap), *buf = malloc(cap), *out = malloc(cap);
    uint64_t size = 0, s = 42;
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "f", 0644, 1, 2, 1, &a), 0);
    assert_int_equal(a.uid, 1);
    for (int i = 0; i < 60; i++) {
        uint64_t off = tu_rand(&s) % (cap - 300000);
        size_t n = 1 + tu_rand(&s) % 300000;
        if (i % 7 == 0)
            memset(buf, 0, n); /* zero runs become holes */
        else if (i % 3 == 0)
            tu_fill_text(buf, n, (uint64_t)i);
        else
            tu_fill(buf, n, (uint64_t)i);
        assert_int_equal(pl_elem_write(f->st, a.id, off, buf, n), 0);
        memcpy(model + off, buf, n);
        if (off + n > size)
            size = off + n;
        if (i % 10 == 9) {
            /* truncate down and back up: the tail must read as zeros */
            uint64_t ns = size / 2;
            struct pl_attr in = {.size = ns};
            assert_int_equal(pl_elem_setattr(f->st, a.id, PL_SET_SIZE, &in, NULL), 0);
            memset(model + ns, 0, size - ns);
            size = ns;
        }
        if (i == 30)
            reopen(f);
    }
    struct pl_attr st;
    assert_int_equal(pl_elem_getattr(f->st, a.id, PL_VIEW_LIVE, &st), 0);
    assert_int_equal(st.size, size);
    read_all(f->st, a.id, PL_VIEW_LIVE, out, size);
    assert_memory_equal(model, out, size);
    /* short read at the end, zero bytes past it */
    size_t got;
    assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, size - 10, out, 100, &got), 0);
    assert_int_equal(got, 10);
    assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, size + 10, out, 100, &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL) , 0);
    free(model);
    free(buf);
    free(out);
}

static int count_cb(void *arg, const char *name, const struct pl_attr *a)
{
    (void)name, (void)a;
    (*(int *)arg)++;
    return 0;
}

struct names {
    char n[64][32];
    int count, stop_at;
};

static int names_cb(void *arg, const char *name, const struct pl_attr *a)
{
    (void)a;
    struct names *ns = arg;
    snprintf(ns->n[ns->count++], 32, "%s", name);
    return ns->stop_at && ns->count == ns->stop_at;
}

static void test_namespace_ops(void **state)
{
    struct fix *f = *state;
    struct pl_attr d1, d2, x, y, l, s;
    char buf[64];
    assert_int_equal(pl_elem_mkdir(f->st, PL_ROOT_ID, "d1", 0755, 0, 0, &d1), 0);
    assert_int_equal(pl_elem_mkdir(f->st, d1.id, "d2", 0755, 0, 0, &d2), 0);
    assert_int_equal(pl_elem_mkdir(f->st, PL_ROOT_ID, "d1", 0755, 0, 0, NULL), PL_EEXIST);
    assert_int_equal(pl_elem_create(f->st, d1.id, "x", 0644, 0, 0, 1, &x), 0);
    assert_int_equal(pl_elem_create(f->st, d1.id, "x", 0644, 0, 0, 1, NULL), PL_EEXIST);
    assert_int_equal(pl_elem_create(f->st, d1.id, "x", 0644, 0, 0, 0, &y), 0);
    assert_int_equal(y.id, x.id); /* non-exclusive create returns the existing file */
    assert_int_equal(pl_elem_create(f->st, x.id, "bad", 0644, 0, 0, 1, NULL), PL_ENOTDIR);
    assert_int_equal(pl_elem_create(f->st, d1.id, "a/b", 0644, 0, 0, 1, NULL), PL_EINVAL);
    assert_int_equal(pl_elem_create(f->st, d1.id, "..", 0644, 0, 0, 1, NULL), PL_EINVAL);
    char longname[300];
    memset(longname, 'n', 299);
    longname[299] = 0;
    assert_int_equal(pl_elem_create(f->st, d1.id, longname, 0644, 0, 0, 1, NULL),
                     PL_ENAMETOOLONG);
    assert_int_equal(pl_elem_write(f->st, x.id, 0, "hello", 5), 0);
    /* hard link, nlink */
    assert_int_equal(pl_elem_link(f->st, x.id, d2.id, "x2", &l), 0);
    assert_int_equal(l.nlink, 2);
    assert_int_equal(pl_elem_link(f->st, d2.id, d1.id, "dirlink", NULL), PL_EPERM);
    assert_int_equal(pl_elem_unlink(f->st, d1.id, "x"), 0);
    assert_int_equal(pl_elem_getattr(f->st, x.id, PL_VIEW_LIVE, &y), 0);
    assert_int_equal(y.nlink, 1);
    assert_int_equal(y.size, 5);
    /* symlink */
    assert_int_equal(pl_elem_symlink(f->st, d1.id, "ln", "../target", 0, 0, &s), 0);
    assert_int_equal(pl_elem_readlink(f->st, s.id, PL_VIEW_LIVE, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "../target");
    assert_int_equal(pl_elem_readlink(f->st, s.id, PL_VIEW_LIVE, buf, 3), PL_ERANGE);
    /* rename: across dirs, replacing, into own subtree */
    assert_int_equal(pl_elem_rename(f->st, d2.id, "x2", d1.id, "moved"), 0);
    assert_int_equal(pl_elem_lookup(f->st, d1.id, "moved", PL_VIEW_LIVE, &y), 0);
    assert_int_equal(y.id, x.id);
    assert_int_equal(pl_elem_lookup(f->st, d2.id, "x2", PL_VIEW_LIVE, &y), PL_ENOENT);
    assert_int_equal(pl_elem_rename(f->st, PL_ROOT_ID, "d1", d2.id, "loop"), PL_EINVAL);
    struct pl_attr z;
    assert_int_equal(pl_elem_create(f->st, d1.id, "z", 0644, 0, 0, 1, &z), 0);
    assert_int_equal(pl_elem_rename(f->st, d1.id, "z", d1.id, "moved"), 0); /* replaces */
    assert_int_equal(pl_elem_getattr(f->st, x.id, PL_VIEW_LIVE, &y), PL_ENOENT);
    assert_int_equal(pl_elem_rename(f->st, d1.id, "moved", d1.id, "d2"), PL_EISDIR);
    assert_int_equal(pl_elem_rename(f->st, d1.id, "d2", d1.id, "moved"), PL_ENOTDIR);
    /* rmdir */
    assert_int_equal(pl_elem_rmdir(f->st, PL_ROOT_ID, "d1"), PL_ENOTEMPTY);
    assert_int_equal(pl_elem_unlink(f->st, d1.id, "d2"), PL_EISDIR);
    assert_int_equal(pl_elem_rmdir(f->st, d1.id, "d2"), 0);
    assert_int_equal(pl_elem_getattr(f->st, d1.id, PL_VIEW_LIVE, &y), 0);
    assert_int_equal(y.nlink, 2);
    /* path lookup */
    assert_int_equal(pl_path_lookup(f->st, "/d1/moved", PL_VIEW_LIVE, &y), 0);
    assert_int_equal(y.id, z.id);
    assert_int_equal(pl_path_lookup(f->st, "/d1/moved/x", PL_VIEW_LIVE, &y), PL_ENOTDIR);
    /* readdir, resumable */
    for (int i = 0; i < 20; i++) {
        char n[16];
        snprintf(n, sizeof(n), "e%02d", i);
        assert_int_equal(pl_elem_create(f->st, d2.id == 0 ? 0 : d1.id, n, 0644, 0, 0, 1, NULL),
                         0);
    }
    struct names ns = {.stop_at = 7};
    assert_int_equal(pl_dir_read(f->st, d1.id, PL_VIEW_LIVE, "", names_cb, &ns), 0);
    assert_int_equal(ns.count, 7);
    assert_string_equal(ns.n[0], "e00");
    char after[32];
    snprintf(after, sizeof(after), "%s", ns.n[6]);
    struct names rest = {0};
    assert_int_equal(pl_dir_read(f->st, d1.id, PL_VIEW_LIVE, after, names_cb, &rest), 0);
    assert_string_equal(rest.n[0], "e07");
    assert_int_equal(ns.count + rest.count, 22); /* e00..e19, ln, moved */
    int c = 0;
    assert_int_equal(pl_dir_read(f->st, z.id, PL_VIEW_LIVE, "", count_cb, &c), PL_ENOTDIR);
    /* xattrs */
    assert_int_equal(pl_xattr_set(f->st, z.id, "user.a", "1", 1), 0);
    assert_int_equal(pl_xattr_set(f->st, z.id, "user.b", "22", 2), 0);
    assert_int_equal(pl_xattr_set(f->st, z.id, "user.a", "333", 3), 0);
    assert_int_equal(pl_xattr_get(f->st, z.id, PL_VIEW_LIVE, "user.a", buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "333", 3);
    assert_int_equal(pl_xattr_list(f->st, z.id, PL_VIEW_LIVE, buf, sizeof(buf)), 14);
    assert_int_equal(pl_xattr_remove(f->st, z.id, "user.a"), 0);
    assert_int_equal(pl_xattr_get(f->st, z.id, PL_VIEW_LIVE, "user.a", NULL, 0), PL_ENODATA);
    /* setattr */
    struct pl_attr in = {.mode = 0600, .uid = 7};
    assert_int_equal(pl_elem_setattr(f->st, z.id, PL_SET_MODE | PL_SET_UID, &in, &y), 0);
    assert_int_equal(y.mode, 0600);
    assert_int_equal(y.uid, 7);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
}

struct keys {
    char k[64][64];
    int prefix[64];
    int n;
};

static int keys_cb(void *arg, const char *key, int is_prefix, const struct pl_attr *a)
{
    (void)a;
    struct keys *ks = arg;
    snprintf(ks->k[ks->n], 64, "%s", key);
    ks->prefix[ks->n++] = is_prefix;
    return ks->n == 64;
}

static void test_objects_and_listing(void **state)
{
    struct fix *f = *state;
    struct pl_attr a;
    assert_int_equal(pl_bucket_create(f->st, "Bad_Name"), PL_EINVAL);
    assert_int_equal(pl_bucket_create(f->st, "192.168.1.1"), PL_EINVAL);
    assert_int_equal(pl_bucket_create(f->st, "bk"), PL_EINVAL);
    assert_int_equal(pl_bucket_create(f->st, "bkt"), 0);
    assert_int_equal(pl_bucket_create(f->st, "bkt"), PL_EEXIST);
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(f->st, "nobucket", "k", &w), PL_ENOBUCKET);
    assert_int_equal(pl_obj_put_begin(f->st, "bkt", "a//b", &w), PL_EINVAL);
    assert_int_equal(pl_obj_put_begin(f->st, "bkt", "../x", &w), PL_EINVAL);
    const char *keys[] = {"a-c", "a/b", "a/c/d", "a0", "b", "a/c/e", "z/y/x/w"};
    for (size_t i = 0; i < 7; i++)
        put(f->st, "bkt", keys[i], keys[i], strlen(keys[i]), &a);
    /* "hello world" MD5 style ETag on a whole write */
    put(f->st, "bkt", "h", "hello world", 11, &a);
    assert_string_equal(a.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3");
    /* conflicts between a key and a prefix */
    assert_int_equal(pl_obj_put_begin(f->st, "bkt", "b/c", &w), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, NULL), PL_ECONFLICT);
    assert_int_equal(pl_obj_put_begin(f->st, "bkt", "a", &w), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, NULL), PL_ECONFLICT);
    assert_int_equal(pl_obj_lookup(f->st, "bkt", "a", PL_VIEW_LIVE, &a), PL_ENOENT);
    /* full listing in S3 key order */
    struct keys ks = {0};
    assert_int_equal(pl_obj_list(f->st, "bkt", "", "", 0, PL_VIEW_LIVE, keys_cb, &ks), 0);
    const char *want[] = {"a-c", "a/b", "a/c/d", "a/c/e", "a0", "b", "h", "z/y/x/w"};
    assert_int_equal(ks.n, 8);
    for (int i = 0; i < 8; i++)
        assert_string_equal(ks.k[i], want[i]);
    /* delimiter */
    memset(&ks, 0, sizeof(ks));
    assert_int_equal(pl_obj_list(f->st, "bkt", "a", "", '/', PL_VIEW_LIVE, keys_cb, &ks), 0);
    assert_int_equal(ks.n, 3);
    assert_string_equal(ks.k[0], "a-c");
    assert_string_equal(ks.k[1], "a/");
    assert_true(ks.prefix[1]);
    assert_string_equal(ks.k[2], "a0");
    memset(&ks, 0, sizeof(ks));
    assert_int_equal(pl_obj_list(f->st, "bkt", "a/", "", '/', PL_VIEW_LIVE, keys_cb, &ks), 0);
    assert_int_equal(ks.n, 2);
    assert_string_equal(ks.k[0], "a/b");
    assert_string_equal(ks.k[1], "a/c/");
    /* continuation after a key deep inside */
    memset(&ks, 0, sizeof(ks));
    assert_int_equal(pl_obj_list(f->st, "bkt", "", "a/c/d", 0, PL_VIEW_LIVE, keys_cb, &ks), 0);
    assert_int_equal(ks.n, 5);
    assert_string_equal(ks.k[0], "a/c/e");
    memset(&ks, 0, sizeof(ks));
    assert_int_equal(pl_obj_list(f->st, "bkt", "", "a/", '/', PL_VIEW_LIVE, keys_cb, &ks), 0);
    assert_string_equal(ks.k[0], "a0");
    /* replace, then delete: implicit directories go with their last key */
    put(f->st, "bkt", "a/c/d", "new", 3, &a);
    assert_int_equal(a.size, 3);
    assert_int_equal(pl_obj_delete(f->st, "bkt", "z/y/x/w"), 0);
    struct pl_attr d;
    assert_int_equal(pl_path_lookup(f->st, "/bkt/z", PL_VIEW_LIVE, &d), PL_ENOENT);
    assert_int_equal(pl_obj_delete(f->st, "bkt", "a/c/d"), 0);
    assert_int_equal(pl_path_lookup(f->st, "/bkt/a/c", PL_VIEW_LIVE, &d), 0);
    assert_int_equal(pl_obj_delete(f->st, "bkt", "a/c/e"), 0);
    assert_int_equal(pl_path_lookup(f->st, "/bkt/a/c", PL_VIEW_LIVE, &d), PL_ENOENT);
    assert_int_equal(pl_path_lookup(f->st, "/bkt/a", PL_VIEW_LIVE, &d), 0);
    /* a "dir/" marker is an explicit, listable directory */
    put(f->st, "bkt", "m/", "", 0, &a);
    assert_int_equal(a.type, PL_T_DIR);
    assert_int_equal(pl_obj_lookup(f->st, "bkt", "m/", PL_VIEW_LIVE, &a), 0);
    assert_int_equal(pl_bucket_delete(f->st, "bkt"), PL_ENOTEMPTY);
    assert_int_equal(pl_bucket_delete(f->st, "nob"), PL_ENOBUCKET);
    /* an aborted write leaves nothing */
    assert_int_equal(pl_obj_put_begin(f->st, "bkt", "aborted", &w), 0);
    assert_int_equal(pl_writer_write(w, "xyz", 3), 0);
    pl_writer_abort(w);
    assert_int_equal(pl_obj_lookup(f->st, "bkt", "aborted", PL_VIEW_LIVE, &a), PL_ENOENT);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    /* same bytes through the file view */
    assert_int_equal(pl_path_lookup(f->st, "/bkt/h", PL_VIEW_LIVE, &a), 0);
    uint8_t out[11];
    read_all(f->st, a.id, PL_VIEW_LIVE, out, 11);
    assert_memory_equal(out, "hello world", 11);
}

static void test_dedup_and_gc(void **state)
{
    struct fix *f = *state;
    size_t n = 20u << 20;
    uint8_t *p = malloc(n), *out = malloc(n);
    struct pl_attr a;
    struct pl_store_stats s0, s1, s2;
    tu_fill(p, n, 99);
    assert_int_equal(pl_bucket_create(f->st, "ddd"), 0);
    for (int i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof(k), "copy%d", i);
        put(f->st, "ddd", k, p, n, &a);
    }
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.logical_bytes, 5 * n);
    assert_int_equal(s0.unique_bytes, n);
    assert_true(s0.physical_bytes < 2 * n + (2u << 20)); /* about once, two mirrors */
    read_all(f->st, a.id, PL_VIEW_LIVE, out, n);
    assert_memory_equal(p, out, n);
    /* delete all copies: gc returns the space */
    for (int i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof(k), "copy%d", i);
        assert_int_equal(pl_obj_delete(f->st, "ddd", k), 0);
    }
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.logical_bytes, 0);
    assert_int_equal(s1.unique_bytes, 0);
    uint64_t freed;
    assert_int_equal(pl_store_gc(f->st, &freed), 0);
    assert_int_equal(pl_store_stats(f->st, &s2), 0);
    assert_true(s2.physical_bytes < s0.physical_bytes / 10);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(p);
    free(out);
}

/* compaction keeps live chunks readable while it moves them */
static void test_gc_compaction_moves_live(void **state)
{
    struct fix *f = *state;
    size_t n = 4u << 20;
    uint8_t *a = malloc(n), *b = malloc(n), *out = malloc(n);
    struct pl_attr ka, kb;
    tu_fill(a, n, 1);
    tu_fill(b, n, 2);
    assert_int_equal(pl_bucket_create(f->st, "ccc"), 0);
    put(f->st, "ccc", "keep", a, n, &ka);
    put(f->st, "ccc", "drop", b, n, &kb);
    assert_int_equal(pl_obj_delete(f->st, "ccc", "drop"), 0);
    uint64_t freed;
    assert_int_equal(pl_store_gc(f->st, &freed), 0);
    assert_true(freed > 0);
    read_all(f->st, ka.id, PL_VIEW_LIVE, out, n);
    assert_memory_equal(a, out, n);
    reopen(f);
    read_all(f->st, ka.id, PL_VIEW_LIVE, out, n);
    assert_memory_equal(a, out, n);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(a);
    free(b);
    free(out);
}

struct problem_log {
    int n;
    char where[256];
};

static void problem_cb(void *arg, const char *where, const char *what)
{
    (void)what;
    struct problem_log *l = arg;
    if (!l->n)
        snprintf(l->where, sizeof(l->where), "%s", where);
    l->n++;
}

static void corrupt_segments(const char *dir)
{
    /* flip a byte in the middle of every segment file of both mirrors */
    for (int m = 0; m < 2; m++) {
        char sd[400];
        snprintf(sd, sizeof(sd), "%s/buffer%d/seg", dir, m);
        DIR *d = opendir(sd);
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            char p[700];
            snprintf(p, sizeof(p), "%s/%s", sd, de->d_name);
            int fd = open(p, O_RDWR);
            struct stat st;
            fstat(fd, &st);
            if (st.st_size > 1000) {
                uint8_t c;
                assert_int_equal(pread(fd, &c, 1, st.st_size / 2), 1);
                c ^= 0xff;
                assert_int_equal(pwrite(fd, &c, 1, st.st_size / 2), 1);
            }
            close(fd);
        }
        closedir(d);
    }
}

static void test_corruption_reported(void **state)
{
    struct fix *f = *state;
    size_t n = 1u << 20;
    uint8_t *p = malloc(n), *out = malloc(n);
    struct pl_attr a, good;
    tu_fill(p, n, 5);
    assert_int_equal(pl_bucket_create(f->st, "cor"), 0);
    put(f->st, "cor", "victim", p, n, &a);
    pl_store_close(f->st);
    f->st = NULL;
    corrupt_segments(f->dir);
    struct pl_store_opts o = {.zstd_level = -1};
    assert_int_equal(pl_store_open(f->dir, &o, &f->st), 0);
    size_t got;
    assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, 0, out, n, &got), PL_ECORRUPT);
    struct problem_log log = {0};
    assert_true(pl_store_fsck(f->st, problem_cb, NULL, &log) > 0);
    assert_string_equal(log.where, "/cor/victim");
    /* the store keeps serving other data */
    put(f->st, "cor", "fresh", "fine", 4, &good);
    read_all(f->st, good.id, PL_VIEW_LIVE, out, 4);
    assert_memory_equal(out, "fine", 4);
    free(p);
    free(out);
}

struct thr {
    struct pl_store *st;
    int idx;
    int err;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    size_t n = 300000;
    uint8_t *p = malloc(n), *out = malloc(n);
    char k[32];
    for (int round = 0; round < 6 && !t->err; round++) {
        /* every thread writes its own key, and all share one hot key */
        tu_fill(p, n, (uint64_t)(t->idx * 100 + round));
        snprintf(k, sizeof(k), round % 2 ? "own/%d" : "shared", t->idx);
        if (round % 2 == 0)
            snprintf(k, sizeof(k), "shared");
        struct pl_writer *w;
        struct pl_attr a;
        if (pl_obj_put_begin(t->st, "mtt", k, &w) || pl_writer_write(w, p, n) ||
            pl_obj_put_commit(w, NULL, &a)) {
            t->err = 1;
            break;
        }
        if (round % 2) {
            size_t got;
            if (pl_elem_read(t->st, a.id, PL_VIEW_LIVE, 0, out, n, &got) || got != n ||
                memcmp(p, out, n))
                t->err = 2;
        } else {
            /* the shared key holds some thread's complete write, never a mix */
            struct pl_attr s;
            size_t got;
            if (pl_obj_lookup(t->st, "mtt", "shared", PL_VIEW_LIVE, &s) == 0 &&
                pl_elem_read(t->st, s.id, PL_VIEW_LIVE, 0, out, n, &got) == 0) {
                int match = 0;
                for (int i = 0; i < 8 && !match; i++)
                    for (int r = 0; r < 6 && !match; r += 2) {
                        tu_fill(p, n, (uint64_t)(i * 100 + r));
                        match = got == n && !memcmp(p, out, n);
                    }
                if (!match)
                    t->err = 3;
            }
        }
    }
    free(p);
    free(out);
    return NULL;
}

static void test_concurrency(void **state)
{
    struct fix *f = *state;
    assert_int_equal(pl_bucket_create(f->st, "mtt"), 0);
    pthread_t th[8];
    struct thr t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (struct thr){f->st, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].err, 0);
    }
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
}

static void test_enospc_injected(void **state)
{
    (void)state;
    char d[256];
    struct pl_store *st;
    struct pl_store_opts o = {.zstd_level = 0, .create = 1};
    tu_tmpdir(d, sizeof(d));
    setenv("PLENUM_FAULT_ENOSPC_AFTER", "3000000", 1);
    assert_int_equal(pl_store_open(d, &o, &st), 0);
    unsetenv("PLENUM_FAULT_ENOSPC_AFTER");
    size_t n = 2u << 20;
    uint8_t *p = malloc(n);
    tu_fill(p, n, 11);
    assert_int_equal(pl_bucket_create(st, "full"), 0);
    put(st, "full", "first", p, n, NULL);
    tu_fill(p, n, 12);
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, "full", "second", &w), 0);
    int rc = pl_writer_write(w, p, n);
    if (rc == 0)
        rc = pl_obj_put_commit(w, NULL, NULL);
    else
        pl_writer_abort(w);
    assert_int_equal(rc, PL_ENOSPC);
    struct pl_attr a;
    assert_int_equal(pl_obj_lookup(st, "full", "second", PL_VIEW_LIVE, &a), PL_ENOENT);
    assert_int_equal(pl_obj_lookup(st, "full", "first", PL_VIEW_LIVE, &a), 0);
    assert_int_equal(pl_store_fsck(st, NULL, NULL, NULL), 0);
    pl_store_close(st);
    tu_rmrf(d);
    free(p);
}

static void test_users_keys(void **state)
{
    struct fix *f = *state;
    char ak[32] = "", sk[48] = "", got[48], user[64];
    assert_int_equal(pl_user_create(f->st, "alice"), 0);
    assert_int_equal(pl_user_create(f->st, "alice"), PL_EEXIST);
    assert_int_equal(pl_user_create(f->st, "bad name"), PL_EINVAL);
    assert_int_equal(pl_key_create(f->st, "bob", ak, sk), PL_ENOENT);
    ak[0] = sk[0] = 0;
    assert_int_equal(pl_key_create(f->st, "alice", ak, sk), 0);
    assert_int_equal(strlen(ak), 20);
    assert_int_equal(strlen(sk), 40);
    assert_int_equal(pl_key_secret(f->st, ak, got, user), 0);
    assert_string_equal(got, sk);
    assert_string_equal(user, "alice");
    char ak2[32] = "GIVENKEY", sk2[48] = "given-secret-123";
    assert_int_equal(pl_key_create(f->st, "alice", ak2, sk2), 0);
    reopen(f);
    assert_int_equal(pl_key_secret(f->st, "GIVENKEY", got, user), 0);
    assert_string_equal(got, "given-secret-123");
    assert_int_equal(pl_key_revoke(f->st, ak), 0);
    assert_int_equal(pl_key_secret(f->st, ak, got, user), PL_ENOENT);
    assert_int_equal(pl_user_delete(f->st, "alice"), 0);
    assert_int_equal(pl_key_secret(f->st, "GIVENKEY", got, user), PL_ENOENT);
}

static void test_pin_keeps_unlinked_content(void **state)
{
    struct fix *f = *state;
    struct pl_attr a;
    uint8_t out[5];
    size_t got;
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "p", 0644, 0, 0, 1, &a), 0);
    assert_int_equal(pl_elem_write(f->st, a.id, 0, "hello", 5), 0);
    pl_elem_pin(f->st, a.id);
    assert_int_equal(pl_elem_unlink(f->st, PL_ROOT_ID, "p"), 0);
    /* nameless but readable while pinned; not counted as a live element */
    assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, 0, out, 5, &got), 0);
    assert_memory_equal(out, "hello", 5);
    struct pl_store_stats s;
    assert_int_equal(pl_store_stats(f->st, &s), 0);
    assert_int_equal(s.logical_bytes, 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    pl_elem_unpin(f->st, a.id);
    /* the drop runs on the pool: wait for it */
    for (int i = 0; i < 200 && pl_elem_getattr(f->st, a.id, PL_VIEW_LIVE, &a) == 0; i++)
        usleep(10000);
    assert_int_equal(pl_elem_getattr(f->st, a.id, PL_VIEW_LIVE, &a), PL_ENOENT);
    /* pinning a named element and unpinning it changes nothing */
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "q", 0644, 0, 0, 1, &a), 0);
    pl_elem_pin(f->st, a.id);
    pl_elem_unpin(f->st, a.id);
    assert_int_equal(pl_elem_lookup(f->st, PL_ROOT_ID, "q", PL_VIEW_LIVE, &a), 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
}

/* A near-copy (a small edit every 4 KiB: no chunk repeats) is stored as
 * deltas; deltas keep their references alive through deletes and GC. */
static void test_similarity(void **state)
{
    struct fix *f = *state;
    enum { N = 2 << 20 };
    uint8_t *a = malloc(N), *b = malloc(N), *back = malloc(N);
    tu_fill(a, N, 31);
    memcpy(b, a, N);
    for (size_t i = 100; i < N; i += 4096)
        b[i] ^= 0xA5;
    struct pl_attr aa, ab;
    struct pl_store_stats s0, s1, s2;
    assert_int_equal(pl_bucket_create(f->st, "sim"), 0);
    put(f->st, "sim", "a", a, N, &aa);
    /* the write path only stages: encoding happens at destage */
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.staged_bytes, s0.unique_bytes);
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    put(f->st, "sim", "b", b, N, &ab);
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_true(s1.delta_chunks > 0);
    /* the near-copy took a small fraction of what the original took */
    assert_true((s1.stored_bytes - s0.stored_bytes) * 5 < s0.stored_bytes);
    assert_true(s1.delta_saved > (uint64_t)N / 2);
    read_all(f->st, ab.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, b, N);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    /* the original goes; the deltas still read right, after GC and a restart too */
    assert_int_equal(pl_obj_delete(f->st, "sim", "a"), 0);
    uint64_t freed;
    assert_int_equal(pl_store_gc(f->st, &freed), 0);
    reopen(f);
    assert_int_equal(pl_obj_lookup(f->st, "sim", "b", PL_VIEW_LIVE, &ab), 0);
    read_all(f->st, ab.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, b, N);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    /* on stripes as well */
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    read_all(f->st, ab.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, b, N);
    /* everything gone: deltas, then their references, are reclaimed */
    assert_int_equal(pl_obj_delete(f->st, "sim", "b"), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pl_store_gc(f->st, &freed), 0);
    assert_int_equal(pl_store_stats(f->st, &s2), 0);
    assert_int_equal(s2.chunks, 0);
    assert_int_equal(s2.delta_chunks, 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(a);
    free(b);
    free(back);
}

/* Writes stage chunks raw; destage compresses them and finds near-copies
 * inside the same segment; everything reads back the same before, after and
 * across a restart, and the index stays consistent. */
static void test_destage_encodes(void **state)
{
    struct fix *f = *state;
    enum { N = 1 << 20 };
    uint8_t *t = malloc(N), *r = malloc(N), *r2 = malloc(N), *back = malloc(N);
    tu_fill_text(t, N, 77);
    tu_fill(r, N, 78);
    memcpy(r2, r, N);
    for (size_t i = 500; i < N; i += 4096)
        r2[i] ^= 0x3C;
    struct pl_attr at, ar, ar2;
    struct pl_store_stats s0, s1;
    assert_int_equal(pl_bucket_create(f->st, "enc"), 0);
    put(f->st, "enc", "text", t, N, &at);
    put(f->st, "enc", "r", r, N, &ar);
    put(f->st, "enc", "r2", r2, N, &ar2);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.staged_bytes, s0.unique_bytes);
    assert_int_equal(s0.delta_chunks, 0);
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.staged_bytes, 0);
    assert_int_equal(s1.unique_bytes, s0.unique_bytes);
    assert_true(s1.delta_chunks > 0);                        /* r2 against r, one segment */
    assert_true(s1.stored_bytes < s0.stored_bytes - N / 2);  /* text compressed, r2 deltas */
    assert_int_equal(s1.buffer_segments, 0);
    read_all(f->st, at.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, t, N);
    read_all(f->st, ar2.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, r2, N);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    /* the reference goes; compaction after that keeps the deltas readable */
    assert_int_equal(pl_obj_delete(f->st, "enc", "r"), 0);
    uint64_t freed;
    assert_int_equal(pl_store_gc(f->st, &freed), 0);
    reopen(f);
    assert_int_equal(pl_obj_lookup(f->st, "enc", "r2", PL_VIEW_LIVE, &ar2), 0);
    read_all(f->st, ar2.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, r2, N);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(t);
    free(r);
    free(r2);
    free(back);
}

/* Object i of orig (sz bytes each) as "o%05d", and its near-copy (one byte
 * changed) as "c%05d". */
static void near_copy(const uint8_t *orig, int sz, int i, uint8_t *copy)
{
    memcpy(copy, orig + (size_t)i * sz, (size_t)sz);
    copy[i % sz] ^= 0x5A;
}

static void put_original(struct pl_store *st, const char *bucket, const uint8_t *orig, int sz,
                         int i)
{
    char key[32];
    struct pl_attr a;
    snprintf(key, sizeof(key), "o%05d", i);
    put(st, bucket, key, orig + (size_t)i * sz, (size_t)sz, &a);
}

static void put_copy(struct pl_store *st, const char *bucket, const uint8_t *orig, int sz, int i)
{
    uint8_t *copy = malloc((size_t)sz);
    char key[32];
    struct pl_attr a;
    near_copy(orig, sz, i, copy);
    snprintf(key, sizeof(key), "c%05d", i);
    put(st, bucket, key, copy, (size_t)sz, &a);
    free(copy);
}

/* Read near-copies i in [lo, hi) and check their bytes. */
static void read_copies(struct pl_store *st, const char *bucket, const uint8_t *orig, int sz,
                        int lo, int hi)
{
    uint8_t *copy = malloc((size_t)sz), *back = malloc((size_t)sz);
    char key[32];
    struct pl_attr a;
    for (int i = lo; i < hi; i++) {
        near_copy(orig, sz, i, copy);
        snprintf(key, sizeof(key), "c%05d", i);
        assert_int_equal(pl_obj_lookup(st, bucket, key, PL_VIEW_LIVE, &a), 0);
        read_all(st, a.id, PL_VIEW_LIVE, back, (size_t)sz);
        assert_memory_equal(back, copy, (size_t)sz);
    }
    free(copy);
    free(back);
}

/* A segment of many small objects (tens of thousands of chunks in a
 * segment, as a tree of source files gives): each near-copy written after
 * its original in the same segment is stored as a delta against it. */
static void test_destage_many_small(void **state)
{
    struct fix *f = *state;
    enum { N = 4000, SZ = 3000 };
    uint8_t *orig = malloc((size_t)N * SZ);
    tu_fill(orig, (size_t)N * SZ, 55);
    struct pl_store_stats s0, s1;
    assert_int_equal(pl_bucket_create(f->st, "small"), 0);
    for (int i = 0; i < N; i++)
        put_original(f->st, "small", orig, SZ, i);
    for (int i = 0; i < N; i++)
        put_copy(f->st, "small", orig, SZ, i);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.chunks, 2 * N);
    assert_int_equal(s0.delta_chunks, 0);
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    /* random bytes: only the near-copies shrink, against their originals */
    assert_true(s1.delta_chunks > N * 9 / 10);
    assert_true(s1.delta_chunks <= N);
    for (int i = 0; i < N; i += 97)
        read_copies(f->st, "small", orig, SZ, i, i + 1);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(orig);
}

static void reopen_hot(struct fix *f, uint64_t hot_cache)
{
    pl_store_close(f->st);
    struct pl_store_opts o = {.zstd_level = -1, .hot_cache = hot_cache};
    assert_int_equal(pl_store_open(f->dir, &o, &f->st), 0);
}

/* A write and a change of mode, owner and times in one transaction. */
static void test_write_attrs(void **state)
{
    struct fix *f = *state;
    struct pl_attr a, want = {.mode = 0640, .uid = 7, .gid = 8, .atime = 11, .mtime = 12}, b;
    uint8_t buf[5000], back[5000];
    tu_fill(buf, sizeof(buf), 3);
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "wa", 0600, 0, 0, 1, &a), 0);
    struct pl_store_stats s0, s;
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(pl_elem_write_attrs(f->st, a.id, 0, buf, sizeof(buf),
                                         PL_SET_MODE | PL_SET_UID | PL_SET_GID | PL_SET_ATIME |
                                             PL_SET_MTIME,
                                         &want),
                     0);
    assert_int_equal(pl_store_stats(f->st, &s), 0);
    assert_int_equal(s.commits - s0.commits, 1);
    assert_int_equal(pl_elem_getattr(f->st, a.id, PL_VIEW_LIVE, &b), 0);
    assert_int_equal(b.size, sizeof(buf));
    assert_int_equal(b.mode, 0640);
    assert_int_equal(b.uid, 7);
    assert_int_equal(b.gid, 8);
    assert_int_equal(b.atime, 11);
    assert_int_equal(b.mtime, 12);
    assert_true(b.ctime > a.ctime);
    read_all(f->st, a.id, PL_VIEW_LIVE, back, sizeof(back));
    assert_memory_equal(back, buf, sizeof(buf));
    /* only the mode, owner and times */
    want.size = 1;
    assert_int_equal(pl_elem_write_attrs(f->st, a.id, 0, buf, 10, PL_SET_SIZE, &want), PL_EINVAL);
    /* only the bits asked for */
    struct pl_attr mode = {.mode = 0600};
    assert_int_equal(pl_elem_write_attrs(f->st, a.id, 0, buf, 10, PL_SET_MODE, &mode), 0);
    assert_int_equal(pl_elem_getattr(f->st, a.id, PL_VIEW_LIVE, &b), 0);
    assert_int_equal(b.mode, 0600);
    assert_int_equal(b.uid, 7);
    assert_true(b.mtime > 12);
}

/* A least-recently-used list of keys, counting hits and misses. */
struct lru_model {
    int keys[64], n, cap;
    uint64_t hits, misses;
};

static void lru_model_use(struct lru_model *m, int key)
{
    int at = -1;
    for (int i = 0; i < m->n; i++)
        if (m->keys[i] == key)
            at = i;
    if (at >= 0) {
        m->hits++;
        memmove(&m->keys[at], &m->keys[at + 1], (size_t)(m->n - at - 1) * sizeof(int));
        m->n--;
    } else {
        m->misses++;
        if (m->n == m->cap) {
            memmove(&m->keys[0], &m->keys[1], (size_t)(m->n - 1) * sizeof(int));
            m->n--;
        }
    }
    m->keys[m->n++] = key;
}

/* Delta references are decoded once and then found in the hot chunk cache;
 * the cache stays within its bound, keeps the most recently used, and
 * with none configured every read still decodes right. */
static void test_hot_cache(void **state)
{
    struct fix *f = *state;
    enum { N = 300, SZ = 3000 };
    uint8_t *orig = malloc((size_t)N * SZ);
    tu_fill(orig, (size_t)N * SZ, 77);
    struct pl_store_stats s0, s1;
    assert_int_equal(pl_bucket_create(f->st, "hot"), 0);
    for (int i = 0; i < N; i++) {
        put_original(f->st, "hot", orig, SZ, i);
        put_copy(f->st, "hot", orig, SZ, i);
    }
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    uint64_t deltas = s0.delta_chunks;
    assert_true(deltas > N * 9 / 10); /* random bytes: the near-copies, against their originals */

    reopen_hot(f, 0); /* the default: room for all */
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.hot_hits + s0.hot_misses + s0.hot_bytes, 0);
    int is_delta[N];
    for (int i = 0; i < N; i++) { /* which copies are deltas: those that look a reference up */
        read_copies(f->st, "hot", orig, SZ, i, i + 1);
        assert_int_equal(pl_store_stats(f->st, &s1), 0);
        is_delta[i] = s1.hot_misses != s0.hot_misses;
        s0 = s1;
    }
    assert_int_equal(s1.hot_misses, deltas);
    assert_int_equal(s1.hot_hits, 0);
    assert_int_equal(s1.hot_bytes, deltas * SZ);
    read_copies(f->st, "hot", orig, SZ, 0, N);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.hot_misses, deltas);
    assert_int_equal(s1.hot_hits, deltas);

    /* room for 20 references, least recently used out: the counts follow
     * a model of exactly that */
    reopen_hot(f, 20 * SZ);
    struct lru_model m = {.cap = 20};
    static const int seq[][2] = {{0, N}, {N - 20, N - 15}, {0, 10}, {N - 20, N - 15}, {N - 10, N}};
    for (size_t k = 0; k < PL_ARRAY_LEN(seq); k++) {
        read_copies(f->st, "hot", orig, SZ, seq[k][0], seq[k][1]);
        for (int i = seq[k][0]; i < seq[k][1]; i++)
            if (is_delta[i])
                lru_model_use(&m, i);
        assert_int_equal(pl_store_stats(f->st, &s1), 0);
        assert_int_equal(s1.hot_hits, m.hits);
        assert_int_equal(s1.hot_misses, m.misses);
        assert_int_equal(s1.hot_bytes, (uint64_t)m.n * SZ);
    }
    assert_true(m.hits >= 5); /* the model saw both kinds */

    reopen_hot(f, PL_HOT_CACHE_NONE);
    read_copies(f->st, "hot", orig, SZ, 0, N);
    read_copies(f->st, "hot", orig, SZ, 0, N);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.hot_hits, 0);
    assert_int_equal(s1.hot_bytes, 0);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(orig);
}

/* PL_WRITE_RAW: text that would compress is kept raw at destage (no zstd,
 * no sketch); the same text written plainly is compressed; both read back. */
static void test_write_raw(void **state)
{
    struct fix *f = *state;
    enum { N = 1 << 20 };
    uint8_t *t = malloc(N), *u = malloc(N), *back = malloc(N);
    tu_fill_text(t, N, 91);
    tu_fill_text(u, N, 92);
    struct pl_attr a, b;
    struct pl_store_stats s0, s1, s2;
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "raw", 0600, 0, 0, 1, &a), 0);
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "plain", 0600, 0, 0, 1, &b), 0);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(pl_elem_write_flags(f->st, a.id, 0, t, N, PL_WRITE_RAW), 0);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.staged_bytes - s0.staged_bytes, N); /* staged like any write */
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.staged_bytes, 0);
    assert_int_equal(s1.stored_bytes - s0.stored_bytes, N); /* raw: as many bytes as written */
    assert_int_equal(pl_elem_write_flags(f->st, b.id, 0, u, N, 0), 0);
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0);
    assert_int_equal(pl_store_stats(f->st, &s2), 0);
    assert_true(s2.stored_bytes - s1.stored_bytes < N / 2); /* the same kind of text, zstd */
    read_all(f->st, a.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, t, N);
    read_all(f->st, b.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, u, N);
    reopen(f);
    read_all(f->st, a.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, t, N);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    free(t);
    free(u);
    free(back);
}

/* A part of a chunk read on its own leaves the chunk decoded in the hot
 * cache for the next part; whole chunks do not go there. */
static void test_partial_reads_cached(void **state)
{
    struct fix *f = *state;
    enum { N = 1 << 20 };
    uint8_t *t = malloc(N), *back = malloc(N);
    struct pl_attr a;
    struct pl_store_stats s0, s1;
    tu_fill_text(t, N, 5);
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "parts", 0600, 0, 0, 1, &a), 0);
    assert_int_equal(pl_elem_write(f->st, a.id, 0, t, N), 0);
    assert_int_equal(pl_store_flush(f->st, NULL, NULL), 0); /* stored compressed */
    reopen_hot(f, 0);
    read_all(f->st, a.id, PL_VIEW_LIVE, back, N);
    assert_memory_equal(back, t, N);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.hot_bytes, 0);
    size_t got;
    /* two parts of the first chunk (chunks are 16 KiB at least) */
    assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, 1000, back, 4096, &got), 0);
    assert_int_equal(got, 4096);
    assert_memory_equal(back, t + 1000, 4096);
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_true(s1.hot_bytes >= 16384 && s1.hot_bytes <= 256 * 1024);
    assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, 7000, back, 9000, &got), 0);
    assert_memory_equal(back, t + 7000, 9000);
    assert_int_equal(pl_store_stats(f->st, &s0), 0);
    assert_int_equal(s0.hot_bytes, s1.hot_bytes);
    /* without a cache, parts read the same */
    reopen_hot(f, PL_HOT_CACHE_NONE);
    for (size_t off = 0; off + 5000 <= N; off += 99999) {
        assert_int_equal(pl_elem_read(f->st, a.id, PL_VIEW_LIVE, off, back, 5000, &got), 0);
        assert_memory_equal(back, t + off, 5000);
    }
    assert_int_equal(pl_store_stats(f->st, &s1), 0);
    assert_int_equal(s1.hot_bytes, 0);
    free(t);
    free(back);
}

/* Scattered ranges in one transaction against an in-memory model; ranges of
 * one call may overlap (applied in order) or be all zeros (holes). */
static void test_write_ranges(void **state)
{
    struct fix *f = *state;
    enum { CAP = 4 << 20, MAXR = 12 };
    uint8_t *model = calloc(1, CAP), *out = malloc(CAP);
    uint8_t *bufs[MAXR];
    struct pl_wrange r[MAXR];
    uint64_t size = 0, s = 7;
    struct pl_attr a, st;
    for (int k = 0; k < MAXR; k++)
        bufs[k] = malloc(80000);
    assert_int_equal(pl_elem_create(f->st, PL_ROOT_ID, "vol", 0600, 0, 0, 1, &a), 0);
    for (int i = 0; i < 40; i++) {
        size_t n = 1 + (size_t)(tu_rand(&s) % MAXR);
        for (size_t k = 0; k < n; k++) {
            size_t len = 1 + (size_t)(tu_rand(&s) % 80000);
            uint64_t off = tu_rand(&s) % (CAP - len);
            if ((i + k) % 5 == 0)
                memset(bufs[k], 0, len);
            else
                tu_fill(bufs[k], len, (uint64_t)(i * MAXR + k));
            r[k] = (struct pl_wrange){off, bufs[k], len};
            memcpy(model + off, bufs[k], len);
            size = PL_MAX(size, off + len);
        }
        assert_int_equal(pl_elem_write_ranges(f->st, a.id, r, n), 0);
        if (i == 20)
            reopen(f);
    }
    /* refused as a whole: a range of no bytes, a directory */
    r[0] = (struct pl_wrange){0, bufs[0], 100};
    r[1] = (struct pl_wrange){200, bufs[1], 0};
    assert_int_equal(pl_elem_write_ranges(f->st, a.id, r, 2), PL_EINVAL);
    r[1].n = 10;
    assert_int_equal(pl_elem_write_ranges(f->st, PL_ROOT_ID, r, 2), PL_EISDIR);
    assert_int_equal(pl_elem_write_ranges(f->st, a.id, r, 0), 0);
    assert_int_equal(pl_elem_getattr(f->st, a.id, PL_VIEW_LIVE, &st), 0);
    assert_int_equal(st.size, size);
    read_all(f->st, a.id, PL_VIEW_LIVE, out, size);
    assert_memory_equal(model, out, size);
    reopen(f);
    read_all(f->st, a.id, PL_VIEW_LIVE, out, size);
    assert_memory_equal(model, out, size);
    assert_int_equal(pl_store_fsck(f->st, NULL, NULL, NULL), 0);
    for (int k = 0; k < MAXR; k++)
        free(bufs[k]);
    free(model);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test_setup_teardown(test_posix_rw_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespace_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_objects_and_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_and_gc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_compaction_moves_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
        cmocka_unit_test(test_enospc_injected),
        cmocka_unit_test_setup_teardown(test_users_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin_keeps_unlinked_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_similarity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destage_many_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destage_encodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_attrs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_reads_cached, setup, teardown),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}

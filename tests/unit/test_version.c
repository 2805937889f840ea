/* Object versions: ids, delete markers, suspended buckets, listing, and that
 * every byte of every version stays readable until its version is deleted. */
#include "base/base.h"
#include "plenum/store.h"
#include "testutil.h"

static void put_str(struct pl_store *st, const char *b, const char *k, const char *body,
                    struct pl_attr *ret)
{
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, b, k, &w), 0);
    assert_int_equal(pl_writer_write(w, body, strlen(body)), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, ret), 0);
}

/* The body of key's version vid as a string (static buffer). */
static const char *body_of(struct pl_store *st, const char *b, const char *k, const char *vid)
{
    static char buf[256];
    struct pl_attr a;
    int dm = 0;
    size_t got = 0;
    int rc = pl_obj_lookup_version(st, b, k, vid, &a, &dm);
    if (rc)
        return pl_errname(rc);
    if (dm)
        return "DELETE-MARKER";
    assert_int_equal(pl_elem_read(st, a.id, PL_VIEW_LIVE, 0, buf, sizeof(buf) - 1, &got), 0);
    buf[got] = 0;
    return buf;
}

struct seen {
    char line[64][96];
    int n;
};

static int collect(void *arg, const struct pl_version_info *v)
{
    struct seen *s = arg;
    char vid[PL_VERSION_LEN];
    pl_version_str(v->version, vid);
    snprintf(s->line[s->n++], sizeof(s->line[0]), "%s %s%s%s", v->key,
             v->delete_marker ? "DM" : "obj", v->latest ? " latest" : "",
             v->version ? "" : " null");
    return s->n == 64;
}

static void test_versions_basic(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct pl_attr a1, a2, a3;
    char v1[PL_VERSION_LEN], v2[PL_VERSION_LEN], vm[PL_VERSION_LEN];
    assert_int_equal(pl_bucket_create(st, "vbk"), 0);
    put_str(st, "vbk", "k", "zero", &a1);
    assert_int_equal(a1.version, 0); /* written while unversioned */
    assert_int_equal(pl_bucket_versioning_set(st, "vbk", PL_VERSIONING_OFF), PL_EINVAL);
    assert_int_equal(pl_bucket_versioning_set(st, "vbk", PL_VERSIONING_ENABLED), 0);
    struct pl_bucket_info bi;
    assert_int_equal(pl_bucket_get(st, "vbk", &bi), 0);
    assert_int_equal(bi.versioning, PL_VERSIONING_ENABLED);

    put_str(st, "vbk", "k", "one", &a1);
    put_str(st, "vbk", "k", "two", &a2);
    assert_true(a1.version && a2.version > a1.version);
    pl_version_str(a1.version, v1);
    pl_version_str(a2.version, v2);
    assert_string_equal(body_of(st, "vbk", "k", NULL), "two");
    assert_string_equal(body_of(st, "vbk", "k", v1), "one");
    assert_string_equal(body_of(st, "vbk", "k", "null"), "zero");
    assert_string_equal(body_of(st, "vbk", "k", "00000000000fffff"), "PL_ENOVERSION");
    struct pl_attr x;
    int dm;
    assert_int_equal(pl_obj_lookup_version(st, "vbk", "k", "bogus", &x, &dm), PL_EINVAL);

    /* delete without a version: a marker hides the key, versions stay */
    uint64_t mv;
    assert_int_equal(pl_obj_delete_version(st, "vbk", "k", NULL, &dm, &mv), 0);
    assert_int_equal(dm, 1);
    pl_version_str(mv, vm);
    assert_int_equal(pl_obj_lookup(st, "vbk", "k", PL_VIEW_LIVE, &x), PL_ENOENT);
    assert_int_equal(pl_obj_lookup_version(st, "vbk", "k", NULL, &x, &dm), PL_ENOENT);
    assert_int_equal(dm, 1);
    assert_int_equal(x.version, mv);
    assert_string_equal(body_of(st, "vbk", "k", vm), "DELETE-MARKER");
    assert_string_equal(body_of(st, "vbk", "k", v2), "two");

    struct seen s = {0};
    assert_int_equal(pl_obj_versions(st, "vbk", "", "", "", collect, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.line[0], "k DM latest");
    assert_string_equal(s.line[1], "k obj");
    assert_string_equal(s.line[2], "k obj");
    assert_string_equal(s.line[3], "k obj null");
    assert_int_equal(pl_bucket_delete(st, "vbk"), PL_ENOTEMPTY);

    /* removing the marker brings the newest version back as the object */
    assert_int_equal(pl_obj_delete_version(st, "vbk", "k", vm, &dm, &mv), 0);
    assert_int_equal(dm, 1);
    assert_string_equal(body_of(st, "vbk", "k", NULL), "two");
    assert_int_equal(pl_obj_lookup(st, "vbk", "k", PL_VIEW_LIVE, &x), 0);
    assert_int_equal(x.version, a2.version);

    /* deleting the current version promotes the previous one */
    assert_int_equal(pl_obj_delete_version(st, "vbk", "k", v2, &dm, &mv), 0);
    assert_int_equal(dm, 0);
    assert_string_equal(body_of(st, "vbk", "k", NULL), "one");
    /* a noncurrent one just goes */
    assert_int_equal(pl_obj_delete_version(st, "vbk", "k", "null", &dm, &mv), 0);
    assert_string_equal(body_of(st, "vbk", "k", "null"), "PL_ENOVERSION");
    assert_string_equal(body_of(st, "vbk", "k", NULL), "one");
    /* and what is not there succeeds */
    assert_int_equal(pl_obj_delete_version(st, "vbk", "k", "00000000000fffff", &dm, &mv), 0);

    put_str(st, "vbk", "a/deep/key", "d1", &a3);
    put_str(st, "vbk", "a/deep/key", "d2", &a3);
    put_str(st, "vbk", "b", "b1", &a3);
    assert_int_equal(pl_obj_delete(st, "vbk", "a/deep/key"), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(pl_obj_versions(st, "vbk", "", "", "", collect, &s), 0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.line[0], "a/deep/key DM latest");
    assert_string_equal(s.line[1], "a/deep/key obj");
    assert_string_equal(s.line[2], "a/deep/key obj");
    assert_string_equal(s.line[3], "b obj latest");
    assert_string_equal(s.line[4], "k obj latest");
    /* resuming after a (key, version) marker */
    memset(&s, 0, sizeof(s));
    char d2[PL_VERSION_LEN];
    struct pl_attr dd;
    assert_int_equal(pl_obj_lookup_version(st, "vbk", "a/deep/key", NULL, &dd, &dm), PL_ENOENT);
    pl_version_str(dd.version, d2);
    assert_int_equal(pl_obj_versions(st, "vbk", "", "a/deep/key", d2, collect, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.line[0], "a/deep/key obj");
    memset(&s, 0, sizeof(s));
    assert_int_equal(pl_obj_versions(st, "vbk", "", "a/deep/key", "", collect, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.line[0], "b obj latest");
    memset(&s, 0, sizeof(s));
    assert_int_equal(pl_obj_versions(st, "vbk", "a/", "", "", collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(pl_store_fsck(st, NULL, NULL, NULL), 0);

    /* survives a restart */
    pl_store_close(f->st);
    struct pl_store_opts o = {.zstd_level = -1};
    assert_int_equal(pl_store_open(f->dir, &o, &f->st), 0);
    st = f->st;
    assert_string_equal(body_of(st, "vbk", "k", v1), "one");
    memset(&s, 0, sizeof(s));
    assert_int_equal(pl_obj_versions(st, "vbk", "", "", "", collect, &s), 0);
    assert_int_equal(s.n, 5);
}

static void test_versions_suspended(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct pl_attr a;
    int dm;
    uint64_t mv;
    assert_int_equal(pl_bucket_create(st, "sbk"), 0);
    assert_int_equal(pl_bucket_versioning_set(st, "sbk", PL_VERSIONING_ENABLED), 0);
    put_str(st, "sbk", "k", "v1", &a);
    char v1[PL_VERSION_LEN];
    pl_version_str(a.version, v1);
    assert_int_equal(pl_bucket_versioning_set(st, "sbk", PL_VERSIONING_SUSPENDED), 0);
    put_str(st, "sbk", "k", "n1", &a);
    assert_int_equal(a.version, 0);
    put_str(st, "sbk", "k", "n2", &a); /* replaces the null version */
    assert_string_equal(body_of(st, "sbk", "k", "null"), "n2");
    assert_string_equal(body_of(st, "sbk", "k", v1), "v1");
    struct seen s = {0};
    assert_int_equal(pl_obj_versions(st, "sbk", "", "", "", collect, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.line[0], "k obj latest null");
    /* a delete makes a null marker, dropping the null object */
    assert_int_equal(pl_obj_delete_version(st, "sbk", "k", NULL, &dm, &mv), 0);
    assert_int_equal(dm, 1);
    assert_int_equal(mv, 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(pl_obj_versions(st, "sbk", "", "", "", collect, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.line[0], "k DM latest null");
    assert_string_equal(s.line[1], "k obj");
    /* back on: the null marker stays until deleted by id */
    assert_int_equal(pl_bucket_versioning_set(st, "sbk", PL_VERSIONING_ENABLED), 0);
    assert_int_equal(pl_obj_delete_version(st, "sbk", "k", "null", &dm, &mv), 0);
    assert_int_equal(dm, 1);
    assert_string_equal(body_of(st, "sbk", "k", NULL), "v1");
    assert_int_equal(pl_obj_delete_version(st, "sbk", "k", v1, &dm, &mv), 0);
    assert_int_equal(pl_bucket_delete(st, "sbk"), 0);
    assert_int_equal(pl_store_fsck(st, NULL, NULL, NULL), 0);
}

/* An old version being read keeps its bytes when the version is deleted. */
static void test_version_pinned(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct pl_attr a1, a2;
    int dm;
    uint64_t mv;
    uint8_t *big = malloc(3 << 20), *back = malloc(3 << 20);
    tu_fill(big, 3 << 20, 7);
    assert_int_equal(pl_bucket_create(st, "pbk"), 0);
    assert_int_equal(pl_bucket_versioning_set(st, "pbk", PL_VERSIONING_ENABLED), 0);
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, "pbk", "k", &w), 0);
    assert_int_equal(pl_writer_write(w, big, 3 << 20), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, &a1), 0);
    put_str(st, "pbk", "k", "new", &a2);
    char v1[PL_VERSION_LEN];
    pl_version_str(a1.version, v1);
    pl_elem_pin(st, a1.id);
    assert_int_equal(pl_obj_delete_version(st, "pbk", "k", v1, &dm, &mv), 0);
    assert_string_equal(body_of(st, "pbk", "k", v1), "PL_ENOVERSION");
    size_t got;
    assert_int_equal(pl_elem_read(st, a1.id, PL_VIEW_LIVE, 0, back, 3 << 20, &got), 0);
    assert_int_equal(got, 3 << 20);
    assert_memory_equal(big, back, 3 << 20);
    pl_elem_unpin(st, a1.id);
    /* the last unpin drops it in the background */
    int gone = 0;
    for (int i = 0; i < 500 && !gone; i++) {
        gone = pl_elem_read(st, a1.id, PL_VIEW_LIVE, 0, back, 16, &got) != 0;
        if (!gone)
            usleep(10000);
    }
    assert_true(gone);
    uint64_t freed;
    assert_int_equal(pl_store_gc(st, &freed), 0);
    assert_int_equal(pl_store_fsck(st, NULL, NULL, NULL), 0);
    free(big);
    free(back);
}

static int vol_collect(void *arg, const struct pl_volume_info *v)
{
    struct seen *s = arg;
    snprintf(s->line[s->n++], sizeof(s->line[0]), "%s %s%s", v->name, v->object,
             v->missing ? " missing" : "");
    return s->n == 64;
}

/* A volume that is an object: opened by key, so a newer PUT is the volume
 * from then on; the version it replaced cannot be written any more. */
static void test_object_volume(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct pl_volume_info v, v2, snap;
    struct pl_attr a1, a2, in = {0};
    char vid[PL_VERSION_LEN];
    size_t got;
    assert_int_equal(pl_bucket_create(st, "ovb"), 0);
    assert_int_equal(pl_bucket_versioning_set(st, "ovb", PL_VERSIONING_ENABLED), 0);
    put_str(st, "ovb", "dir/img", "first body", &a1);
    assert_int_equal(pl_volume_link(st, "ov", "ovb/dir/img", 0, &v), 0);
    assert_int_equal(v.id, a1.id);
    assert_int_equal(v.size, 10);
    assert_string_equal(v.object, "ovb/dir/img");
    /* names and keys that cannot be, and objects that are not files */
    assert_int_equal(pl_volume_link(st, "ov", "ovb/dir/img", 0, NULL), PL_EEXIST);
    assert_int_equal(pl_volume_link(st, "o2", "ovb/dir", 0, NULL), PL_ENOENT);
    assert_int_equal(pl_volume_link(st, "o2", "ovb/none", 0, NULL), PL_ENOENT);
    assert_int_equal(pl_volume_link(st, "o2", "nob/x", 0, NULL), PL_ENOBUCKET);
    assert_int_equal(pl_volume_link(st, "o2", "ovb", 0, NULL), PL_EINVAL);
    assert_int_equal(pl_volume_link(st, "o2", "ovb/a/../b", 0, NULL), PL_EINVAL);
    assert_int_equal(pl_volume_link(st, "o@s", "ovb/dir/img", 0, NULL), PL_EINVAL);
    assert_int_equal(pl_volume_link(st, "o2", "ovb/dir/img", 99, NULL), PL_ESIZE);

    /* a snapshot copies what the object holds now */
    assert_int_equal(pl_volume_snapshot(st, "ov", "s", &snap), 0);
    assert_true(snap.readonly && !snap.object[0] && snap.id != a1.id);
    /* a newer PUT: the volume is the new object, the old version is read-only */
    put_str(st, "ovb", "dir/img", "second", &a2);
    assert_int_equal(pl_volume_get(st, "ov", &v2), 0);
    assert_int_equal(v2.id, a2.id);
    assert_int_equal(pl_elem_write(st, a1.id, 0, "X", 1), PL_EROFS);
    in.size = 1;
    assert_int_equal(pl_elem_setattr(st, a1.id, PL_SET_SIZE, &in, NULL), PL_EROFS);
    pl_version_str(a1.version, vid);
    assert_string_equal(body_of(st, "ovb", "dir/img", vid), "first body");
    char buf[16] = {0};
    assert_int_equal(pl_elem_read(st, snap.id, PL_VIEW_LIVE, 0, buf, 15, &got), 0);
    assert_string_equal(buf, "first body");
    /* writes to the volume are the object's */
    assert_int_equal(pl_elem_write(st, v2.id, 0, "S", 1), 0);
    assert_string_equal(body_of(st, "ovb", "dir/img", NULL), "Second");
    assert_int_equal(pl_volume_resize(st, "ov", 3), 0);
    assert_string_equal(body_of(st, "ovb", "dir/img", NULL), "Sec");

    /* size makes a missing object; the object's going leaves a listed name */
    assert_int_equal(pl_volume_link(st, "nw", "ovb/new", 1 << 20, &v), 0);
    assert_int_equal(pl_obj_lookup(st, "ovb", "new", PL_VIEW_LIVE, &a1), 0);
    assert_int_equal(a1.size, 1 << 20);
    assert_int_equal(pl_obj_delete(st, "ovb", "new"), 0);
    assert_int_equal(pl_volume_get(st, "nw", &v), PL_ENOENT);
    struct seen s = {0};
    assert_int_equal(pl_volume_list(st, vol_collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.line[0], "nw ovb/new missing");
    assert_string_equal(s.line[1], "ov ovb/dir/img");
    assert_string_equal(s.line[2], "ov@s ");
    /* deleting volumes leaves the object */
    assert_int_equal(pl_volume_delete(st, "nw"), 0);
    assert_int_equal(pl_volume_delete(st, "ov"), 0);
    assert_string_equal(body_of(st, "ovb", "dir/img", NULL), "Sec");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_versions_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_versions_suspended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_pinned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_volume, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

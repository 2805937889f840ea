/* Element events: what each change queues (type, bucket, key), nothing for
 * paths outside buckets, one event per run of writes; the batches the
 * publisher builds pass the broker's own validation; notification rules
 * match as S3's do. */
#include <pthread.h>
#include <unistd.h>

#include "base/base.h"
#include "broker/batch.h"
#include "broker/broker.h"
#include "plenum/store.h"
#include "testutil.h"

struct queued {
    char line[64][160];
    int n;
};

static int queued_cb(void *arg, const char *key, const void *val, size_t n)
{
    (void)key;
    struct queued *q = arg;
    const char *bucket = val, *k = bucket + strlen(bucket) + 1, *json = k + strlen(k) + 1;
    const char *type = strstr(json, "\"type\":\"");
    assert_non_null(type);
    type += 8;
    assert_true((const char *)val + n > json);
    snprintf(q->line[q->n++], sizeof(q->line[0]), "%s %s %.*s", bucket, k,
             (int)(strchr(type, '"') - type), type);
    return q->n == 64;
}

/* The queued events as "bucket key type" lines; the queue is emptied. */
static struct queued *drain(struct pl_store *st)
{
    static struct queued q;
    memset(&q, 0, sizeof(q));
    assert_int_equal(pl_svc_scan(st, PL_EVENT_PREFIX, queued_cb, &q), 0);
    assert_int_equal(pl_svc_delete_prefix(st, PL_EVENT_PREFIX), 0);
    return &q;
}

static void put_str(struct pl_store *st, const char *b, const char *k, const char *body)
{
    struct pl_writer *w;
    assert_int_equal(pl_obj_put_begin(st, b, k, &w), 0);
    assert_int_equal(pl_writer_write(w, body, strlen(body)), 0);
    assert_int_equal(pl_obj_put_commit(w, NULL, NULL), 0);
}

static void test_queue(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct pl_attr b1, b2, d, x, sys;
    assert_int_equal(pl_bucket_create(st, "one"), 0);
    assert_int_equal(pl_bucket_create(st, "two"), 0);
    assert_int_equal(drain(st)->n, 0); /* a bucket is not an element event */
    assert_int_equal(pl_path_lookup(st, "/one", PL_VIEW_LIVE, &b1), 0);
    assert_int_equal(pl_path_lookup(st, "/two", PL_VIEW_LIVE, &b2), 0);

    put_str(st, "one", "a/b/c.txt", "hello"); /* implicit directories: no events */
    assert_int_equal(pl_obj_delete(st, "one", "a/b/c.txt"), 0);
    struct queued *q = drain(st);
    assert_int_equal(q->n, 2);
    assert_string_equal(q->line[0], "one a/b/c.txt s3:ObjectCreated:Put");
    assert_string_equal(q->line[1], "one a/b/c.txt s3:ObjectRemoved:Delete");

    assert_int_equal(pl_elem_mkdir(st, b1.id, "d", 0755, 0, 0, &d), 0);
    assert_int_equal(pl_elem_create(st, d.id, "x", 0644, 0, 0, 1, &x), 0);
    assert_int_equal(pl_elem_write(st, x.id, 0, "abc", 3), 0);
    assert_int_equal(pl_elem_write(st, x.id, 3, "def", 3), 0);
    q = drain(st);
    assert_int_equal(q->n, 2); /* the writes wait for their writer to be done */
    assert_string_equal(q->line[0], "one d/ s3:ObjectCreated:Create");
    assert_string_equal(q->line[1], "one d/x s3:ObjectCreated:Create");
    assert_int_equal(pl_elem_written(st, x.id), 0);
    assert_int_equal(pl_elem_written(st, x.id), 0); /* once per run of writes */
    q = drain(st);
    assert_int_equal(q->n, 1);
    assert_string_equal(q->line[0], "one d/x s3:ObjectCreated:Write");

    /* a renamed directory names its files by their new path */
    assert_int_equal(pl_elem_rename(st, b1.id, "d", b1.id, "e"), 0);
    struct pl_attr in = {.mode = 0600};
    assert_int_equal(pl_elem_setattr(st, x.id, PL_SET_MODE, &in, NULL), 0);
    assert_int_equal(pl_xattr_set(st, x.id, "user.k", "v", 1), 0);
    q = drain(st);
    assert_int_equal(q->n, 3);
    assert_string_equal(q->line[0], "one e/ s3:ObjectRenamed");
    assert_string_equal(q->line[1], "one e/x s3:ObjectMetadata:Update");
    assert_string_equal(q->line[2], "one e/x s3:ObjectMetadata:Update");

    /* across buckets: a delete in one and a create in the other */
    assert_int_equal(pl_elem_rename(st, d.id, "x", b2.id, "y"), 0);
    q = drain(st);
    assert_int_equal(q->n, 2);
    assert_string_equal(q->line[0], "one e/x s3:ObjectRemoved:Delete");
    assert_string_equal(q->line[1], "two y s3:ObjectCreated:Create");

    /* an idle write becomes an event by the sweep */
    assert_int_equal(pl_elem_write(st, x.id, 0, "zz", 2), 0);
    assert_int_equal(pl_events_sweep(st, 3600LL * 1000000000), 0);
    assert_int_equal(drain(st)->n, 0);
    assert_int_equal(pl_events_sweep(st, 0), 0);
    q = drain(st);
    assert_int_equal(q->n, 1);
    assert_string_equal(q->line[0], "two y s3:ObjectCreated:Write");

    /* paths outside buckets (system directories) make no events */
    assert_int_equal(pl_elem_mkdir(st, PL_ROOT_ID, ".sys", 0700, 0, 0, &sys), 0);
    assert_int_equal(pl_elem_create(st, sys.id, "log", 0600, 0, 0, 1, &x), 0);
    assert_int_equal(pl_elem_write(st, x.id, 0, "abc", 3), 0);
    assert_int_equal(pl_elem_written(st, x.id), 0);
    assert_int_equal(pl_elem_unlink(st, sys.id, "log"), 0);
    assert_int_equal(drain(st)->n, 0);
    assert_int_equal(pl_store_fsck(st, NULL, NULL, NULL), 0);
}

static void test_versioned_delete(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    int dm;
    uint64_t v;
    assert_int_equal(pl_bucket_create(st, "ver"), 0);
    assert_int_equal(pl_bucket_versioning_set(st, "ver", PL_VERSIONING_ENABLED), 0);
    put_str(st, "ver", "k", "one");
    assert_int_equal(pl_obj_delete_version(st, "ver", "k", NULL, &dm, &v), 0);
    char vid[PL_VERSION_LEN];
    pl_version_str(v, vid);
    assert_int_equal(pl_obj_delete_version(st, "ver", "k", vid, &dm, &v), 0);
    assert_int_equal(pl_obj_delete_version(st, "ver", "k", "0000000000000042", &dm, &v), 0);
    struct queued *q = drain(st);
    assert_int_equal(q->n, 3); /* deleting a version that is not there changes nothing */
    assert_string_equal(q->line[0], "ver k s3:ObjectCreated:Put");
    assert_string_equal(q->line[1], "ver k s3:ObjectRemoved:DeleteMarkerCreated");
    assert_string_equal(q->line[2], "ver k s3:ObjectRemoved:Delete");
}

static void test_events_off(void **state)
{
    (void)state;
    char dir[256];
    struct pl_store *st;
    struct pl_store_opts o = {.zstd_level = -1, .create = 1, .events_off = 1};
    tu_tmpdir(dir, sizeof(dir));
    assert_int_equal(pl_store_open(dir, &o, &st), 0);
    assert_int_equal(pl_bucket_create(st, "quiet"), 0);
    put_str(st, "quiet", "k", "v");
    assert_int_equal(drain(st)->n, 0);
    pl_store_close(st);
    tu_rmrf(dir);
}

/* More buckets than one publishing round has room for: every bucket's event
 * still arrives, once. */
static void test_publish_many_buckets(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct broker *b;
    char name[32], topic[64];
    for (int i = 0; i < 150; i++) {
        snprintf(name, sizeof(name), "bkt-%03d", i);
        assert_int_equal(pl_bucket_create(st, name), 0);
        put_str(st, name, "k", "v");
    }
    struct broker_opts o = {.events = 1};
    assert_int_equal(broker_open(st, &o, &b), 0);
    int done = 0;
    for (int tries = 0; tries < 600 && !done; tries++) {
        done = 1;
        for (int i = 0; i < 150 && done; i++) {
            struct broker_part_info pi;
            snprintf(topic, sizeof(topic), BROKER_EV_TOPIC "bkt-%03d", i);
            done = broker_part_info(b, topic, 0, &pi) == 0 && pi.next == 1;
        }
        if (!done)
            usleep(50000);
    }
    assert_true(done);
    usleep(300000); /* nothing more follows */
    for (int i = 0; i < 150; i++) {
        struct broker_part_info pi;
        snprintf(topic, sizeof(topic), BROKER_EV_TOPIC "bkt-%03d", i);
        assert_int_equal(broker_part_info(b, topic, 0, &pi), 0);
        assert_int_equal(pi.next, 1);
    }
    assert_int_equal(drain(st)->n, 0); /* the queue is empty */
    broker_close(b);
}

/* ---- appends in two steps ---- */
struct committing {
    pthread_t th;
    struct broker_append *ba;
    int rc;
    int64_t base;
};

static void *commit_main(void *arg)
{
    struct committing *c = arg;
    broker_append_commit(c->ba, NULL, 0, 1, &c->rc, &c->base);
    return NULL;
}

/* One batch of nrec records of vn bytes each, in b. */
static void batch_of(struct pl_buf *b, int nrec, size_t vn)
{
    static char val[4096];
    struct batch_rec r[8];
    memset(val, 'v', sizeof(val));
    for (int i = 0; i < nrec; i++)
        r[i] = (struct batch_rec){"k", val, 1, vn};
    pl_buf_init(b);
    assert_int_equal(batch_build(b, r, nrec, 1700000000000), 0);
}

static void stage_one(struct broker *b, struct pl_buf *buf, int64_t want_base,
                      struct broker_append **ret)
{
    uint8_t *recs = (uint8_t *)buf->data;
    size_t len = buf->len;
    int rc;
    int64_t base;
    broker_append_stage(b, "t", 0, &recs, &len, 1, &rc, &base, ret);
    assert_int_equal(rc, 0);
    assert_int_equal(base, want_base);
    assert_non_null(*ret);
}

static int64_t next_of(struct broker *b)
{
    struct broker_part_info pi;
    assert_int_equal(broker_part_info(b, "t", 0, &pi), 0);
    return pi.next;
}

/* Later stages commit only after earlier ones (the log has no durable batch
 * after one that is not); a roll between stages keeps each segment whole; a
 * failed commit fails the stages after it, and writing goes on after them. */
static void test_append_stages(void **state)
{
    struct fix *f = *state;
    struct pl_store *st = f->st;
    struct broker *b;
    struct broker_opts o = {0};
    const char *cfg[] = {"segment.bytes", "4096", NULL};
    struct pl_buf bufs[5];
    struct broker_append *ba[5];
    struct committing c[5];
    assert_int_equal(broker_open(st, &o, &b), 0);
    assert_int_equal(broker_topic_create(b, "t", 1, cfg), 0);
    broker_write_hold(b);
    batch_of(&bufs[0], 2, 1400);
    batch_of(&bufs[1], 1, 1400);
    batch_of(&bufs[2], 3, 1400); /* past 4096: the next stage rolls */
    stage_one(b, &bufs[0], 0, &ba[0]);
    stage_one(b, &bufs[1], 2, &ba[1]);
    stage_one(b, &bufs[2], 3, &ba[2]);
    batch_of(&bufs[3], 1, 100);
    stage_one(b, &bufs[3], 6, &ba[3]); /* in a new segment, named 6 */
    for (int i = 3; i >= 1; i--) {
        c[i] = (struct committing){.ba = ba[i]};
        assert_int_equal(pthread_create(&c[i].th, NULL, commit_main, &c[i]), 0);
    }
    usleep(100000);
    assert_int_equal(next_of(b), 0); /* all wait for the first */
    c[0] = (struct committing){.ba = ba[0]};
    commit_main(&c[0]);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(pthread_join(c[i].th, NULL), 0);
    for (int i = 0; i <= 3; i++)
        assert_int_equal(c[i].rc, 0);
    assert_int_equal(next_of(b), 7);
    broker_write_release(b);

    /* the segment the next stage lands in vanishes before its commit */
    struct pl_attr seg;
    assert_int_equal(pl_path_lookup(st, "/.kafka/t/0/00000000000000000006", PL_VIEW_LIVE, &seg),
                     0);
    broker_write_hold(b);
    batch_of(&bufs[4], 1, 100);
    stage_one(b, &bufs[4], 7, &ba[4]);
    struct broker_append *after;
    struct pl_buf more;
    batch_of(&more, 2, 100);
    stage_one(b, &more, 8, &after);
    uint64_t parent = seg.parent;
    assert_int_equal(pl_elem_unlink(st, parent, "00000000000000000006"), 0);
    c[4] = (struct committing){.ba = ba[4]};
    commit_main(&c[4]);
    assert_int_not_equal(c[4].rc, 0);
    c[0] = (struct committing){.ba = after};
    commit_main(&c[0]);
    assert_int_equal(c[0].rc, c[4].rc); /* after a failed one: failed too */
    assert_int_equal(next_of(b), 7);
    broker_write_release(b);
    broker_close(b);

    /* a new start sees the committed batches in both segments */
    assert_int_equal(broker_open(st, &o, &b), 0);
    assert_int_equal(next_of(b), 6); /* the second segment is gone */
    uint8_t *got;
    size_t n;
    struct broker_part_info pi;
    assert_int_equal(broker_fetch(b, "t", 0, 0, 1 << 20, &got, &n, &pi), 0);
    assert_int_equal(n, bufs[0].len + bufs[1].len + bufs[2].len);
    int nb;
    int64_t nr;
    assert_int_equal(batch_validate(got, n, &nb, &nr), 0);
    assert_int_equal(nb, 3);
    assert_int_equal(nr, 6);
    free(got);
    /* and writing goes on */
    broker_write_hold(b);
    stage_one(b, &more, 6, &after);
    c[0] = (struct committing){.ba = after};
    commit_main(&c[0]);
    broker_write_release(b);
    assert_int_equal(c[0].rc, 0);
    assert_int_equal(next_of(b), 8);
    broker_close(b);
    for (int i = 0; i < 5; i++)
        pl_buf_release(&bufs[i]);
    pl_buf_release(&more);
}

static void test_batch_build(void **state)
{
    (void)state;
    struct pl_buf b;
    struct batch_rec r[3] = {{"k1", "v1", 2, 2}, {"", "", 0, 0}, {"key", "value", 3, 5}};
    int nb;
    int64_t nr;
    pl_buf_init(&b);
    assert_int_equal(batch_build(&b, r, 3, 1700000000000), 0);
    assert_int_equal(batch_build(&b, r, 1, 1700000000001), 0);
    assert_int_equal(batch_validate((uint8_t *)b.data, b.len, &nb, &nr), 0);
    assert_int_equal(nb, 2);
    assert_int_equal(nr, 4);
    int32_t delta;
    int64_t ts;
    assert_int_equal(batch_find_time((uint8_t *)b.data, b.len, 1700000000000, &delta, &ts), 0);
    assert_int_equal(delta, 0);
    assert_int_equal(batch_build(&b, r, 0, 0), PL_EINVAL);
    pl_buf_release(&b);
}

static void test_notify_match(void **state)
{
    (void)state;
    struct broker_notify_rule r = {.nevents = 2};
    snprintf(r.events[0], sizeof(r.events[0]), "s3:ObjectCreated:*");
    snprintf(r.events[1], sizeof(r.events[1]), "s3:ObjectRemoved:Delete");
    snprintf(r.prefix, sizeof(r.prefix), "img/");
    snprintf(r.suffix, sizeof(r.suffix), ".jpg");
    const char *put = "{\"id\":\"1\",\"type\":\"s3:ObjectCreated:Put\",\"data\":{\"type\":\"file\"}}";
    const char *dm = "{\"type\":\"s3:ObjectRemoved:DeleteMarkerCreated\"}";
    const char *del = "{\"type\":\"s3:ObjectRemoved:Delete\"}";
    assert_true(broker_notify_match(&r, put, strlen(put), "img/a.jpg", 9));
    assert_false(broker_notify_match(&r, put, strlen(put), "img/a.png", 9));
    assert_false(broker_notify_match(&r, put, strlen(put), "doc/a.jpg", 9));
    assert_false(broker_notify_match(&r, put, strlen(put), "img.jpg", 7));
    assert_true(broker_notify_match(&r, put, strlen(put), "img/.jpg", 8));
    assert_true(broker_notify_match(&r, del, strlen(del), "img/b.jpg", 9));
    assert_false(broker_notify_match(&r, dm, strlen(dm), "img/b.jpg", 9));
    assert_false(broker_notify_match(&r, "{}", 2, "img/b.jpg", 9));
    assert_true(broker_notify_event_valid("s3:ObjectRemoved:*"));
    assert_false(broker_notify_event_valid("s3:ObjectRemoved"));
    assert_false(broker_notify_event_valid("s3:ReducedRedundancyLostObject"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_versioned_delete, setup, teardown),
        cmocka_unit_test(test_events_off),
        cmocka_unit_test_setup_teardown(test_publish_many_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_stages, setup, teardown),
        cmocka_unit_test(test_batch_build),
        cmocka_unit_test(test_notify_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Crash-test helper.
 *   crash_writer write DIR SEED   writes, overwrites and deletes objects forever,
 *                                 logging "BEGIN"/"ACK" lines to stdout (flushed)
 *   crash_writer verify DIR LOG   checks that every acknowledged object reads back
 *                                 byte-identical and nothing half-written is visible
 * Content is a pure function of (seed, size, kind), so the verifier regenerates it. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "plenum/store.h"

#define NAMES 24
#define MAXSZ (8u << 20)

static uint64_t rnd(uint64_t *s)
{
    return pl_splitmix64(s);
}

/* kind 0 random, 1 text-like, 2 zeros with a random island */
static void gen(uint8_t *p, size_t n, uint64_t seed, int kind)
{
    uint64_t s = seed;
    if (kind == 2) {
        memset(p, 0, n);
        for (size_t i = n / 3; i < n / 3 + n / 10 && i < n; i++)
            p[i] = (uint8_t)rnd(&s);
        return;
    }
    for (size_t i = 0; i < n;) {
        uint64_t v = rnd(&s);
        if (kind == 1)
            v = 0x2061746164206120ull + (v % 4); /* " a data a " */
        for (int j = 0; j < 8 && i < n; j++, i++)
            p[i] = (uint8_t)(v >> (8 * j));
    }
}

static int do_write(const char *dir, uint64_t seed)
{
    struct pl_store_opts o = {.zstd_level = -1, .create = 1};
    struct pl_store *st;
    uint8_t *buf = malloc(MAXSZ);
    int rc = pl_store_open(dir, &o, &st);
    if (rc) {
        fprintf(stderr, "open: %s\n", pl_strerror(rc));
        return 1;
    }
    rc = pl_bucket_create(st, "crash");
    if (rc && rc != PL_EEXIST)
        return 1;
    uint64_t s = seed;
    for (;;) {
        char name[32];
        int n = (int)(rnd(&s) % NAMES);
        snprintf(name, sizeof(name), "d%d/obj%02d", n % 3, n);
        if (rnd(&s) % 10 == 0) {
            printf("BEGINDEL %s\n", name);
            fflush(stdout);
            rc = pl_obj_delete(st, "crash", name);
            if (rc && rc != PL_ENOENT)
                return 1;
            printf("ACKDEL %s\n", name);
            fflush(stdout);
            continue;
        }
        /* sizes: many small, some up to 8 MiB; some content repeats (dedup) */
        uint64_t r = rnd(&s) % 100;
        size_t size = r < 10 ? 0 : r < 60 ? rnd(&s) % 65536 : rnd(&s) % MAXSZ;
        uint64_t cseed = rnd(&s) % 4 == 0 ? rnd(&s) % 8 : rnd(&s);
        int kind = (int)(rnd(&s) % 3);
        printf("BEGIN %s %llu %zu %d\n", name, (unsigned long long)cseed, size, kind);
        fflush(stdout);
        gen(buf, size, cseed, kind);
        struct pl_writer *w;
        rc = pl_obj_put_begin(st, "crash", name, &w);
        size_t off = 0;
        while (!rc && off < size) {
            size_t piece = (size_t)(1 + rnd(&s) % (3u << 20));
            size_t take = PL_MIN(size - off, piece);
            rc = pl_writer_write(w, buf + off, take);
            off += take;
        }
        if (!rc)
            rc = pl_obj_put_commit(w, NULL, NULL);
        else
            pl_writer_abort(w);
        if (rc) {
            fprintf(stderr, "write %s: %s\n", name, pl_strerror(rc));
            return 1;
        }
        printf("ACK %s\n", name);
        fflush(stdout);
    }
}

struct state {
    char name[32];
    /* the acknowledged content, and the one in flight when the crash hit */
    int acked, acked_deleted;
    uint64_t seed;
    size_t size;
    int kind;
    int inflight, inflight_del;
    uint64_t fseed;
    size_t fsize;
    int fkind;
};

static struct state *find(struct state *sts, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(sts[i].name, name))
            return &sts[i];
    struct state *s = &sts[(*n)++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    return s;
}

static int matches(struct pl_store *st, const char *name, int deleted, uint64_t seed, size_t size,
                   int kind, uint8_t *exp, uint8_t *got)
{
    struct pl_attr a;
    int rc = pl_obj_lookup(st, "crash", name, PL_VIEW_LIVE, &a);
    if (deleted)
        return rc == PL_ENOENT;
    if (rc || a.size != size)
        return 0;
    size_t n;
    if (pl_elem_read(st, a.id, PL_VIEW_LIVE, 0, got, size, &n) || n != size)
        return 0;
    gen(exp, size, seed, kind);
    return memcmp(exp, got, size) == 0;
}

static int do_verify(const char *dir, const char *log)
{
    FILE *f = fopen(log, "r");
    struct state sts[NAMES];
    int nst = 0, bad = 0, checked = 0;
    char line[256];
    if (!f)
        return 2;
    while (fgets(line, sizeof(line), f)) {
        char name[32];
        unsigned long long seed;
        size_t size;
        int kind;
        if (sscanf(line, "BEGIN %31s %llu %zu %d", name, &seed, &size, &kind) == 4) {
            struct state *s = find(sts, &nst, name);
            s->inflight = 1;
            s->inflight_del = 0;
            s->fseed = seed;
            s->fsize = size;
            s->fkind = kind;
        } else if (sscanf(line, "BEGINDEL %31s", name) == 1) {
            struct state *s = find(sts, &nst, name);
            s->inflight = 1;
            s->inflight_del = 1;
        } else if (sscanf(line, "ACKDEL %31s", name) == 1 || sscanf(line, "ACK %31s", name) == 1) {
            struct state *s = find(sts, &nst, name);
            s->acked = 1;
            s->acked_deleted = s->inflight_del;
            s->seed = s->fseed;
            s->size = s->fsize;
            s->kind = s->fkind;
            s->inflight = 0;
        }
    }
    fclose(f);
    struct pl_store_opts o = {.zstd_level = -1};
    struct pl_store *st;
    int rc = pl_store_open(dir, &o, &st);
    int acked = 0;
    for (int i = 0; i < nst; i++)
        acked |= sts[i].acked;
    if (rc == PL_ENOENT && !acked)
        return 0; /* killed before the data directory was complete: nothing was promised */
    if (rc) {
        fprintf(stderr, "verify: open: %s\n", pl_strerror(rc));
        return 1;
    }
    uint8_t *exp = malloc(MAXSZ), *got = malloc(MAXSZ);
    for (int i = 0; i < nst; i++) {
        struct state *s = &sts[i];
        int ok = 0;
        if (s->acked)
            ok = matches(st, s->name, s->acked_deleted, s->seed, s->size, s->kind, exp, got);
        else
            ok = matches(st, s->name, 1, 0, 0, 0, exp, got); /* never acked: absent */
        if (!ok && s->inflight)
            ok = matches(st, s->name, s->inflight_del, s->fseed, s->fsize, s->fkind, exp, got);
        if (!ok) {
            fprintf(stderr, "verify: %s does not hold its acknowledged content\n", s->name);
            bad++;
        }
        checked++;
    }
    printf("verified %d objects, %d bad\n", checked, bad);
    free(exp);
    free(got);
    pl_store_close(st);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "write"))
        return do_write(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "verify"))
        return do_verify(argv[2], argv[3]);
    fprintf(stderr, "usage: crash_writer write DIR SEED | verify DIR LOG\n");
    return 2;
}

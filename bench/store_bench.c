/* bench/store_bench: write then read SIZE bytes through the store API.
 *   store_bench DIR SIZE_MIB MODE     MODE: random | text | dup90
 * Prints one line per phase: "<mode> write|read <MB/s> <seconds>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "plenum/store.h"

#define PIECE (4u << 20)

static uint64_t rnd(uint64_t *s)
{
    return pl_splitmix64(s);
}

static void fill_random(uint8_t *p, size_t n, uint64_t *s)
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v = rnd(s);
        memcpy(p + i, &v, 8);
    }
}

/* text-like: words from a small vocabulary (zstd -1 gets ~3-4x) */
static void fill_text(uint8_t *p, size_t n, uint64_t *s)
{
    static const char *w[] = {"the ", "data ", "plenum ", "object ", "stream ", "vector ",
                              "table ", "chunk ", "file ", "of ", "and ", "to ", "in ",
                              "model ", "train ", "token ", "0.125 ", "42 ", "\n", ", "};
    size_t i = 0;
    while (i < n) {
        const char *x = w[rnd(s) % 20];
        size_t l = strlen(x);
        for (size_t j = 0; j < l && i < n; j++)
            p[i++] = (uint8_t)x[j];
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: store_bench DIR SIZE_MIB random|text|dup90 [write|read]\n");
        return 2;
    }
    const char *dir = argv[1], *mode = argv[3], *phase = argc == 5 ? argv[4] : "both";
    uint64_t total = strtoull(argv[2], NULL, 10) << 20;
    struct pl_store_opts o = {.zstd_level = -1, .create = 1};
    struct pl_store *st;
    int rc = pl_store_open(dir, &o, &st);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", dir, pl_strerror(rc));
        return 1;
    }
    rc = pl_bucket_create(st, "bench");
    if (rc && rc != PL_EEXIST)
        return 1;
    uint8_t *buf = malloc(PIECE), *pool = NULL;
    uint64_t s = 12345;
    /* dup90: 10 % fresh random data, 90 % repeats of a 64 MiB pool */
    size_t pool_n = 64u << 20;
    if (!strcmp(mode, "dup90")) {
        pool = malloc(pool_n);
        fill_random(pool, pool_n, &s);
    }
    struct pl_writer *w;
    struct pl_attr a;
    if (!strcmp(phase, "read")) {
        rc = pl_obj_lookup(st, "bench", mode, PL_VIEW_LIVE, &a);
        if (rc) {
            fprintf(stderr, "nothing written yet: %s\n", pl_strerror(rc));
            return 1;
        }
        total = a.size;
        goto read;
    }
    rc = pl_obj_put_begin(st, "bench", mode, &w);
    uint64_t t0 = pl_mono_ns(), done = 0, gen_ns = 0;
    while (!rc && done < total) {
        size_t n = (size_t)PL_MIN((uint64_t)PIECE, total - done);
        uint64_t g0 = pl_mono_ns();
        if (!strcmp(mode, "random")) {
            fill_random(buf, n, &s);
        } else if (!strcmp(mode, "text")) {
            fill_text(buf, n, &s);
        } else {
            if (rnd(&s) % 10 == 0)
                fill_random(buf, n, &s);
            else
                memcpy(buf, pool + (rnd(&s) % (pool_n / PIECE)) * PIECE, n);
        }
        gen_ns += pl_mono_ns() - g0; /* generating input is not the store's time */
        rc = pl_writer_write(w, buf, n);
        done += n;
    }
    if (!rc)
        rc = pl_obj_put_commit(w, NULL, &a);
    double wsec = (double)(pl_mono_ns() - t0 - gen_ns) / 1e9;
    if (rc) {
        fprintf(stderr, "write: %s\n", pl_strerror(rc));
        return 1;
    }
    printf("%s write %.1f %.3f\n", mode, (double)total / wsec / 1e6, wsec);
    if (!strcmp(phase, "write")) {
        pl_store_close(st);
        free(buf);
        free(pool);
        return 0;
    }
read:
    pl_store_close(st);
    /* reopen so nothing is cached in the process */
    rc = pl_store_open(dir, &o, &st);
    if (rc)
        return 1;
    t0 = pl_mono_ns();
    uint64_t off = 0;
    while (off < total) {
        size_t got;
        rc = pl_elem_read(st, a.id, PL_VIEW_LIVE, off, buf, PIECE, &got);
        if (rc || got == 0) {
            fprintf(stderr, "read: %s\n", pl_strerror(rc));
            return 1;
        }
        off += got;
    }
    double rsec = (double)(pl_mono_ns() - t0) / 1e9;
    printf("%s read %.1f %.3f\n", mode, (double)total / rsec / 1e6, rsec);
    struct pl_store_stats ss;
    if (pl_store_stats(st, &ss) == 0)
        printf("%s stored %llu physical %llu logical %llu\n", mode,
               (unsigned long long)ss.stored_bytes, (unsigned long long)ss.physical_bytes,
               (unsigned long long)ss.logical_bytes);
    pl_store_close(st);
    free(buf);
    free(pool);
    return 0;
}

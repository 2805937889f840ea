/* Helpers shared by the unit tests. */
#ifndef PL_TESTUTIL_H
#define PL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base.h"

/* A fresh temporary directory path (not created) under TMPDIR. */
static inline void tu_tmpdir(char *out, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, n, "%s/pltest-XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(out))
        abort();
    rmdir(out); /* the store wants to create it */
}

static inline void tu_rmrf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

/* Deterministic pseudo-random bytes (splitmix64). */
static inline uint64_t tu_rand(uint64_t *s)
{
    return pl_splitmix64(s);
}

static inline void tu_fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = tu_rand(&s);
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)tu_rand(&s);
}

/* Text-like compressible bytes. */
static inline void tu_fill_text(uint8_t *p, size_t n, uint64_t seed)
{
    static const char *words[] = {"plenum ", "data ", "store ", "chunk ", "object ", "file ",
                                  "stream ", "table ", "vector ", "cache ", "the ", "of ",
                                  "and ", "\n"};
    uint64_t s = seed;
    size_t i = 0;
    while (i < n) {
        const char *w = words[tu_rand(&s) % 14];
        size_t l = strlen(w);
        for (size_t j = 0; j < l && i < n; j++)
            p[i++] = (uint8_t)w[j];
    }
}

#ifdef PLENUM_STORE_H
/* A store in a fresh temporary directory, per test. */
struct fix {
    char dir[256];
    struct pl_store *st;
};

static inline int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    struct pl_store_opts o = {.zstd_level = -1, .create = 1};
    tu_tmpdir(f->dir, sizeof(f->dir));
    assert_int_equal(pl_store_open(f->dir, &o, &f->st), 0);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    struct fix *f = *state;
    pl_store_close(f->st);
    tu_rmrf(f->dir);
    free(f);
    return 0;
}
#endif

#endif

/* For fuzz targets that drive a head end to end: a real store in a
 * temporary directory that goes when the fuzzer exits (libFuzzer exits
 * through exit()). */
#ifndef PL_FUZZ_STORE_H
#define PL_FUZZ_STORE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include "plenum/store.h"

static char fuzz_dir[64];

static int fuzz_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fuzz_cleanup(void)
{
    nftw(fuzz_dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new store under /tmp/plenum-fuzz-NAME-XXXXXX; aborts when it cannot. */
static struct pl_store *fuzz_store_open(const char *name)
{
    struct pl_store *st;
    struct pl_store_opts o = {.zstd_level = -1, .create = 1};
    snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/plenum-fuzz-%s-XXXXXX", name);
    if (!mkdtemp(fuzz_dir) || pl_store_open(fuzz_dir, &o, &st))
        abort();
    atexit(fuzz_cleanup);
    return st;
}

#endif

#include "data/data_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>

#include "base/xxh.h"

void data_loc_encode(const struct data_loc *l, uint8_t out[DATA_LOC_ENC])
{
    out[0] = l->kind;
    out[1] = l->codec;
    pl_put_le64(out + 2, l->seg);
    pl_put_le64(out + 10, l->off);
    pl_put_le32(out + 18, l->stored_len);
    pl_put_le32(out + 22, l->raw_len);
}

int data_loc_decode(const uint8_t *p, size_t n, struct data_loc *ret)
{
    if (n < DATA_LOC_ENC || p[0] != DATA_LOC_BUFFER || p[1] > DATA_CODEC_STAGED_RAW)
        return PL_ECORRUPT;
    ret->kind = p[0];
    ret->codec = p[1];
    ret->seg = pl_get_le64(p + 2);
    ret->off = pl_get_le64(p + 10);
    ret->stored_len = pl_get_le32(p + 18);
    ret->raw_len = pl_get_le32(p + 22);
    if (ret->raw_len > DATA_MAX_CHUNK || ret->stored_len > DATA_MAX_CHUNK + 1024)
        return PL_ECORRUPT;
    return 0;
}

static void seg_path(const struct data_store *ds, int m, uint64_t id, char *out, size_t n)
{
    snprintf(out, n, "%s/seg/%016" PRIx64 ".seg", ds->mirrors[m], id);
}

static void seg_close_fds(struct seg *s, int nm)
{
    for (int m = 0; m < nm; m++)
        if (s->fd[m] >= 0)
            close(s->fd[m]);
}

/* Open (create) a segment's files; caller holds map_lock for writing. */
static int seg_open_locked(struct data_store *ds, uint64_t id, int create, struct seg **ret)
{
    struct seg **slot = &ds->table[id % SEG_HASH];
    for (struct seg *s = *slot; s; s = s->next)
        if (s->id == id) {
            *ret = s;
            return 0;
        }
    struct seg *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_ENOMEM;
    s->id = id;
    for (int m = 0; m < SEG_MAX_MIRRORS; m++)
        s->fd[m] = -1;
    for (int m = 0; m < ds->nmirrors; m++) {
        char path[4200];
        seg_path(ds, m, id, path, sizeof(path));
        s->fd[m] = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
        if (s->fd[m] < 0) {
            int rc = -errno;
            seg_close_fds(s, ds->nmirrors);
            free(s);
            return rc;
        }
    }
    if (create) {
        for (int m = 0; m < ds->nmirrors; m++) {
            char dir[4200];
            snprintf(dir, sizeof(dir), "%s/seg", ds->mirrors[m]);
            int rc = pl_fsync_dir(dir);
            if (rc) {
                seg_close_fds(s, ds->nmirrors);
                free(s);
                return rc;
            }
        }
    }
    struct stat st;
    if (fstat(s->fd[0], &st) == 0)
        s->end = (uint64_t)st.st_size;
    s->next = *slot;
    *slot = s;
    *ret = s;
    return 0;
}

int seg_get_rd(struct data_store *ds, uint64_t id, struct seg **ret)
{
    pthread_rwlock_rdlock(&ds->map_lock);
    for (struct seg *s = ds->table[id % SEG_HASH]; s; s = s->next)
        if (s->id == id) {
            *ret = s;
            return 0;
        }
    pthread_rwlock_unlock(&ds->map_lock);
    pthread_rwlock_wrlock(&ds->map_lock);
    struct seg *s;
    int rc = seg_open_locked(ds, id, 0, &s);
    pthread_rwlock_unlock(&ds->map_lock);
    if (rc)
        return rc;
    pthread_rwlock_rdlock(&ds->map_lock);
    for (s = ds->table[id % SEG_HASH]; s; s = s->next)
        if (s->id == id) {
            *ret = s;
            return 0;
        }
    pthread_rwlock_unlock(&ds->map_lock);
    return PL_ENOENT; /* deleted between the two locks */
}

static int new_active(struct data_store *ds)
{
    struct seg *s;
    pthread_rwlock_wrlock(&ds->map_lock);
    int rc = seg_open_locked(ds, ds->next_seg, 1, &s);
    pthread_rwlock_unlock(&ds->map_lock);
    if (rc)
        return rc;
    ds->next_seg++;
    ds->active = s;
    return 0;
}

int data_open(const struct data_opts *o, struct data_store **ret)
{
    if (o->nmirrors < 1 || o->nmirrors > SEG_MAX_MIRRORS)
        return PL_EINVAL;
    struct data_store *ds = calloc(1, sizeof(*ds));
    int rc = 0;
    if (!ds)
        return PL_ENOMEM;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ds->map_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&ds->append_lock, NULL);
    pthread_mutex_init(&ds->pool_lock, NULL);
    pthread_mutex_init(&ds->dev_lock, NULL);
    ahead_init(&ds->ahead);
    ds->nmirrors = o->nmirrors;
    ds->seg_max = o->seg_max ? o->seg_max : (64u << 20);
    ds->zstd_level = o->zstd_level;
    ds->next_seg = o->first_seg ? o->first_seg : 1;
    const char *f = getenv("PLENUM_FAULT_ENOSPC_AFTER");
    if (f)
        ds->fault_enospc_after = strtoull(f, NULL, 10);
    for (int m = 0; m < o->nmirrors; m++) {
        ds->mirrors[m] = strdup(o->mirrors[m]);
        if (!ds->mirrors[m]) {
            rc = PL_ENOMEM;
            goto out;
        }
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/seg", ds->mirrors[m]);
        rc = pl_mkdirs(dir, 0700);
        if (rc)
            goto out;
    }
    uint64_t *ids = NULL;
    size_t nids = 0;
    rc = data_seg_list(ds, &ids, &nids);
    if (rc)
        goto out;
    for (size_t i = 0; i < nids; i++) {
        char path[4200];
        struct stat sb;
        seg_path(ds, 0, ids[i], path, sizeof(path));
        if (stat(path, &sb) == 0)
            ds->buffered += (uint64_t)sb.st_size;
    }
    free(ids);
    *ret = ds;
    return 0;
out:
    data_close(ds);
    return rc;
}

void data_close(struct data_store *ds)
{
    if (!ds)
        return;
    for (int i = 0; i < SEG_HASH; i++) {
        struct seg *s = ds->table[i];
        while (s) {
            struct seg *n = s->next;
            seg_close_fds(s, ds->nmirrors);
            stripe_free(s->sp);
            free(s);
            s = n;
        }
    }
    for (int m = 0; m < ds->nmirrors; m++)
        free(ds->mirrors[m]);
    for (int i = 0; i < ds->ndevs; i++)
        free(ds->devs[i].path);
    for (int k = 0; k <= EC_MAX_K; k++)
        for (int m = 0; m <= EC_MAX_M; m++)
            if (ds->codes[k][m]) {
                ec_code_release(ds->codes[k][m]);
                free(ds->codes[k][m]);
            }
    for (int i = 0; i < ds->ncctx; i++)
        ZSTD_freeCCtx(ds->cctx[i]);
    for (int i = 0; i < ds->ndctx; i++)
        ZSTD_freeDCtx(ds->dctx[i]);
    pthread_rwlock_destroy(&ds->map_lock);
    pthread_mutex_destroy(&ds->append_lock);
    pthread_mutex_destroy(&ds->pool_lock);
    pthread_mutex_destroy(&ds->dev_lock);
    ahead_free(&ds->ahead);
    free(ds);
}

static ZSTD_CCtx *cctx_get(struct data_store *ds)
{
    ZSTD_CCtx *c = NULL;
    pthread_mutex_lock(&ds->pool_lock);
    if (ds->ncctx)
        c = ds->cctx[--ds->ncctx];
    pthread_mutex_unlock(&ds->pool_lock);
    return c ? c : ZSTD_createCCtx();
}

static void cctx_put(struct data_store *ds, ZSTD_CCtx *c)
{
    pthread_mutex_lock(&ds->pool_lock);
    if (ds->ncctx < CTX_POOL) {
        ds->cctx[ds->ncctx++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&ds->pool_lock);
    ZSTD_freeCCtx(c);
}

static ZSTD_DCtx *dctx_get(struct data_store *ds)
{
    ZSTD_DCtx *c = NULL;
    pthread_mutex_lock(&ds->pool_lock);
    if (ds->ndctx)
        c = ds->dctx[--ds->ndctx];
    pthread_mutex_unlock(&ds->pool_lock);
    return c ? c : ZSTD_createDCtx();
}

static void dctx_put(struct data_store *ds, ZSTD_DCtx *c)
{
    pthread_mutex_lock(&ds->pool_lock);
    if (ds->ndctx < CTX_POOL) {
        ds->dctx[ds->ndctx++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&ds->pool_lock);
    ZSTD_freeDCtx(c);
}

static uint64_t block_sum(const uint8_t *hdr, const uint8_t *payload, size_t n)
{
    return XXH3_64bits_withSeed(payload, n, XXH3_64bits(hdr, 48));
}

/* Append header + payload to the active segment on every mirror. */
static int block_append(struct data_store *ds, const uint8_t hdr[DATA_BLOCK_HDR],
                        const void *payload, size_t pn, struct data_loc *ret_loc)
{
    int rc = 0;
    size_t n = DATA_BLOCK_HDR + pn;
    pthread_mutex_lock(&ds->append_lock);
    if (ds->fault_enospc_after && ds->appended + n > ds->fault_enospc_after) {
        pthread_mutex_unlock(&ds->append_lock);
        return PL_ENOSPC;
    }
    if (!ds->active || (ds->active->end > 0 && ds->active->end + n > ds->seg_max)) {
        rc = new_active(ds);
        if (rc) {
            pthread_mutex_unlock(&ds->append_lock);
            return rc;
        }
    }
    struct seg *s = ds->active;
    uint64_t off = s->end;
    s->end += n;
    ds->appended += n;
    pthread_mutex_unlock(&ds->append_lock);
    __atomic_add_fetch(&ds->buffered, n, __ATOMIC_RELAXED);
    /* the segment cannot be deleted while it may still be active */
    for (int m = 0; m < ds->nmirrors && !rc; m++) {
        struct iovec iov[2] = {{(void *)hdr, DATA_BLOCK_HDR}, {(void *)payload, pn}};
        rc = pl_pwritev_all(s->fd[m], iov, 2, (off_t)off);
    }
    if (rc)
        return rc;
    ret_loc->kind = DATA_LOC_BUFFER;
    ret_loc->codec = hdr[5];
    ret_loc->seg = s->id;
    ret_loc->off = off;
    ret_loc->raw_len = pl_get_le32(hdr + 8);
    ret_loc->stored_len = pl_get_le32(hdr + 12);
    return 0;
}

int data_block_append(struct data_store *ds, const uint8_t *block, size_t n,
                      struct data_loc *ret_loc)
{
    if (n < DATA_BLOCK_HDR || pl_get_le32(block + 12) != n - DATA_BLOCK_HDR)
        return PL_EINVAL;
    return block_append(ds, block, block + DATA_BLOCK_HDR, n - DATA_BLOCK_HDR, ret_loc);
}

/* Fill a block header for payload. */
static void block_seal(uint8_t *hdr, const uint8_t fp[DATA_FP_LEN], uint8_t codec, size_t raw_n,
                       const uint8_t *payload, size_t stored)
{
    memcpy(hdr, "PLCK", 4);
    hdr[4] = 1;
    hdr[5] = codec;
    hdr[6] = hdr[7] = 0;
    pl_put_le32(hdr + 8, (uint32_t)raw_n);
    pl_put_le32(hdr + 12, (uint32_t)stored);
    memcpy(hdr + 16, fp, DATA_FP_LEN);
    pl_put_le64(hdr + 48, block_sum(hdr, payload, stored));
}

/* zstd-compress raw into dst (capacity cap); 0 when it does not save 1/32:
 * decoding costs on every read. */
static size_t compress_plain(struct data_store *ds, uint8_t *dst, size_t cap, const void *raw,
                             size_t n)
{
    if (ds->zstd_level <= 0)
        return 0;
    ZSTD_CCtx *c = cctx_get(ds);
    if (!c)
        return 0;
    size_t z = ZSTD_compressCCtx(c, dst, cap, raw, n, ds->zstd_level);
    cctx_put(ds, c);
    return !ZSTD_isError(z) && z < n - n / 32 ? z : 0;
}

/* Blocks per pwritev: two iovecs each, under IOV_MAX. */
#define STAGE_GROUP 256

int data_chunks_stage(struct data_store *ds, const struct data_stage_in *in, size_t n,
                      int keep_raw, struct data_loc *locs)
{
    uint8_t codec = keep_raw ? DATA_CODEC_STAGED_RAW : DATA_CODEC_STAGED;
    uint8_t(*hdr)[DATA_BLOCK_HDR] = NULL;
    struct iovec *iov = NULL;
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if (in[i].n > DATA_MAX_CHUNK)
            return PL_EINVAL;
    if (n == 0)
        return 0;
    hdr = malloc(n * sizeof(*hdr));
    iov = malloc(2 * PL_MIN(n, (size_t)STAGE_GROUP) * sizeof(*iov));
    if (!hdr || !iov) {
        rc = PL_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        block_seal(hdr[i], in[i].fp, codec, in[i].n, in[i].raw, in[i].n);
    for (size_t i = 0; i < n && !rc;) {
        /* reserve as many as fit in the active segment (at least one) */
        pthread_mutex_lock(&ds->append_lock);
        uint64_t first = DATA_BLOCK_HDR + in[i].n;
        if (ds->fault_enospc_after && ds->appended + first > ds->fault_enospc_after)
            rc = PL_ENOSPC;
        else if (!ds->active || (ds->active->end > 0 && ds->active->end + first > ds->seg_max))
            rc = new_active(ds);
        if (rc) {
            pthread_mutex_unlock(&ds->append_lock);
            break;
        }
        struct seg *s = ds->active;
        uint64_t off = s->end, total = first;
        size_t k = i + 1;
        while (k < n && k - i < STAGE_GROUP) {
            uint64_t next = total + DATA_BLOCK_HDR + in[k].n;
            if (s->end + next > ds->seg_max ||
                (ds->fault_enospc_after && ds->appended + next > ds->fault_enospc_after))
                break;
            total = next;
            k++;
        }
        s->end += total;
        ds->appended += total;
        pthread_mutex_unlock(&ds->append_lock);
        __atomic_add_fetch(&ds->buffered, total, __ATOMIC_RELAXED);
        /* the segment cannot be deleted while it may still be active */
        for (int m = 0; m < ds->nmirrors && !rc; m++) {
            for (size_t j = i; j < k; j++) {
                iov[2 * (j - i)] = (struct iovec){hdr[j], DATA_BLOCK_HDR};
                iov[2 * (j - i) + 1] = (struct iovec){(void *)in[j].raw, in[j].n};
            }
            rc = pl_pwritev_all(s->fd[m], iov, 2 * (int)(k - i), (off_t)off);
        }
        for (size_t j = i; j < k && !rc; j++) {
            locs[j] = (struct data_loc){.kind = DATA_LOC_BUFFER, .codec = codec, .seg = s->id,
                                        .off = off, .raw_len = (uint32_t)in[j].n,
                                        .stored_len = (uint32_t)in[j].n};
            off += DATA_BLOCK_HDR + in[j].n;
        }
        i = k;
    }
out:
    free(hdr);
    free(iov);
    return rc;
}

int data_chunk_stage(struct data_store *ds, const uint8_t fp[DATA_FP_LEN], const void *raw,
                     size_t n, int keep_raw, struct data_loc *ret_loc)
{
    struct data_stage_in in = {fp, raw, n};
    return data_chunks_stage(ds, &in, 1, keep_raw, ret_loc);
}

/* zstd-compress raw with ref as history into dst; 0 on failure. The frame
 * checks its content: decoding against the wrong reference fails instead of
 * returning other bytes. */
static size_t compress_delta(struct data_store *ds, uint8_t *dst, size_t cap, const void *raw,
                             size_t n, const void *ref, size_t ref_n)
{
    ZSTD_CCtx *c = cctx_get(ds);
    if (!c)
        return 0;
    size_t d = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel,
                                      ds->zstd_level > 0 ? ds->zstd_level : 1);
    if (!ZSTD_isError(d))
        d = ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(d))
        d = ZSTD_CCtx_refPrefix(c, ref, ref_n);
    if (!ZSTD_isError(d))
        d = ZSTD_compress2(c, dst, cap, raw, n);
    ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
    cctx_put(ds, c);
    return ZSTD_isError(d) ? 0 : d;
}

int data_block_encode(struct data_store *ds, const uint8_t fp[DATA_FP_LEN], const void *raw,
                      size_t n, int plain, const uint8_t ref_fp[DATA_FP_LEN], const void *ref,
                      size_t ref_n, uint8_t **ret_blk, size_t *ret_n)
{
    if (n > DATA_MAX_CHUNK)
        return PL_EINVAL;
    size_t cap = DATA_BLOCK_HDR + DATA_FP_LEN + ZSTD_compressBound(n);
    uint8_t *blk = malloc(cap), *dblk = NULL;
    size_t d = 0, stored;
    uint8_t codec;
    if (!blk)
        return PL_ENOMEM;
    if (ref && ref_n && (dblk = malloc(cap)))
        d = compress_delta(ds, dblk + DATA_BLOCK_HDR + DATA_FP_LEN,
                           cap - DATA_BLOCK_HDR - DATA_FP_LEN, raw, n, ref, ref_n);
    if (d && DATA_FP_LEN + d < n / 16) {
        stored = 0; /* a near-copy: plain compression cannot come close, skip it */
    } else {
        size_t z = plain ? 0 : compress_plain(ds, blk + DATA_BLOCK_HDR, cap - DATA_BLOCK_HDR, raw, n);
        stored = z ? z : n;
        codec = z ? DATA_CODEC_ZSTD : DATA_CODEC_RAW;
        if (!z)
            memcpy(blk + DATA_BLOCK_HDR, raw, n);
    }
    if (d && (!stored || DATA_FP_LEN + d < stored - stored / 8)) {
        memcpy(dblk + DATA_BLOCK_HDR, ref_fp, DATA_FP_LEN);
        uint8_t *t = blk;
        blk = dblk;
        dblk = t;
        stored = DATA_FP_LEN + d;
        codec = DATA_CODEC_DELTA;
    }
    free(dblk);
    block_seal(blk, fp, codec, n, blk + DATA_BLOCK_HDR, stored);
    *ret_blk = blk;
    *ret_n = DATA_BLOCK_HDR + stored;
    return 0;
}

int data_sync(struct data_store *ds, uint64_t id)
{
    struct seg *s;
    int rc = seg_get_rd(ds, id, &s);
    if (rc)
        return rc;
    /* start every mirror's writeback before waiting on any: the copies go
     * to their devices at once instead of one after the other */
    for (int m = 0; m < ds->nmirrors && !s->sp && ds->nmirrors > 1; m++)
        (void)sync_file_range(s->fd[m], 0, 0, SYNC_FILE_RANGE_WRITE);
    for (int m = 0; m < ds->nmirrors && !rc && !s->sp; m++)
        if (fdatasync(s->fd[m]) < 0)
            rc = -errno;
    pthread_rwlock_unlock(&ds->map_lock);
    return rc;
}

/* Check a block read from one mirror. */
/* A block's header says what loc and fp say, and its sum holds. */
static int block_check(const uint8_t *hdr, const uint8_t *payload, const struct data_loc *loc,
                       const uint8_t *fp)
{
    if (memcmp(hdr, "PLCK", 4) || hdr[4] != 1 || hdr[5] != loc->codec ||
        pl_get_le32(hdr + 8) != loc->raw_len || pl_get_le32(hdr + 12) != loc->stored_len ||
        (fp && memcmp(hdr + 16, fp, DATA_FP_LEN)))
        return PL_ECORRUPT;
    if (pl_get_le64(hdr + 48) != block_sum(hdr, payload, loc->stored_len))
        return PL_ECORRUPT;
    return 0;
}

static int block_verify(const uint8_t *blk, const struct data_loc *loc, const uint8_t *fp)
{
    return block_check(blk, blk + DATA_BLOCK_HDR, loc, fp);
}

static int block_read_verified(struct data_store *ds, const struct data_loc *loc,
                               const uint8_t *fp, uint8_t *blk)
{
    struct seg *s;
    size_t n = DATA_BLOCK_HDR + loc->stored_len;
    int rc = seg_get_rd(ds, loc->seg, &s);
    if (rc)
        return rc;
    if (s->sp) {
        rc = stripe_read(ds, s, loc->off, blk, n);
        if (!rc)
            rc = block_verify(blk, loc, fp);
        pthread_rwlock_unlock(&ds->map_lock);
        return rc;
    }
    rc = PL_ECORRUPT;
    for (int m = 0; m < ds->nmirrors; m++) {
        int r = pl_pread_all(s->fd[m], blk, n, (off_t)loc->off);
        if (r == 0)
            r = block_verify(blk, loc, fp);
        if (r == 0) {
            rc = 0;
            break;
        }
        pl_log(PL_LOG_DEBUG, "data", "bad copy seg=%016" PRIx64 " off=%" PRIu64 " mirror=%d",
               loc->seg, loc->off, m);
        if (r != PL_ECORRUPT && r != PL_EIO)
            rc = r;
    }
    pthread_rwlock_unlock(&ds->map_lock);
    return rc;
}

/* Raw chunks are read straight into out (header apart) and verified there:
 * no bounce buffer on the common path. */
static int raw_read_verified(struct data_store *ds, const struct data_loc *loc, const uint8_t *fp,
                             uint8_t *out)
{
    struct seg *s;
    uint8_t hdr[DATA_BLOCK_HDR];
    int rc = seg_get_rd(ds, loc->seg, &s);
    if (rc)
        return rc;
    if (s->sp) {
        struct iovec iov[2] = {{hdr, DATA_BLOCK_HDR}, {out, loc->stored_len}};
        rc = stripe_readv(ds, s, loc->off, iov, 2);
        if (!rc)
            rc = block_check(hdr, out, loc, fp);
        pthread_rwlock_unlock(&ds->map_lock);
        return rc;
    }
    rc = PL_ECORRUPT;
    for (int m = 0; m < ds->nmirrors; m++) {
        struct iovec iov[2] = {{hdr, DATA_BLOCK_HDR}, {out, loc->stored_len}};
        size_t want = DATA_BLOCK_HDR + loc->stored_len;
        ssize_t r;
        do {
            r = preadv(s->fd[m], iov, 2, (off_t)loc->off);
        } while (r < 0 && errno == EINTR);
        int e = r < 0 ? -errno : (size_t)r != want ? PL_EIO : 0;
        if (!e)
            e = block_check(hdr, out, loc, fp);
        if (!e) {
            rc = 0;
            break;
        }
        if (e != PL_ECORRUPT && e != PL_EIO)
            rc = e;
    }
    pthread_rwlock_unlock(&ds->map_lock);
    return rc;
}

int data_chunk_read(struct data_store *ds, const struct data_loc *loc,
                    const uint8_t fp[DATA_FP_LEN], void *out)
{
    if (loc->codec == DATA_CODEC_DELTA)
        return PL_EINVAL; /* the caller reads its reference first */
    if (loc->codec == DATA_CODEC_RAW || DATA_CODEC_IS_STAGED(loc->codec))
        return loc->stored_len == loc->raw_len ? raw_read_verified(ds, loc, fp, out)
                                               : PL_ECORRUPT;
    size_t n = DATA_BLOCK_HDR + loc->stored_len;
    uint8_t *blk = malloc(n);
    int rc;
    if (!blk)
        return PL_ENOMEM;
    rc = block_read_verified(ds, loc, fp, blk);
    if (rc)
        goto out;
    ZSTD_DCtx *d = dctx_get(ds);
    if (!d) {
        rc = PL_ENOMEM;
        goto out;
    }
    size_t z = ZSTD_decompressDCtx(d, out, loc->raw_len, blk + DATA_BLOCK_HDR, loc->stored_len);
    dctx_put(ds, d);
    if (ZSTD_isError(z) || z != loc->raw_len)
        rc = PL_ECORRUPT;
out:
    free(blk);
    return rc;
}

int data_run_read(struct data_store *ds, const struct data_loc *locs,
                  const uint8_t (*fps)[DATA_FP_LEN], void *const *outs, size_t n)
{
    uint8_t hdr[DATA_RUN_MAX][DATA_BLOCK_HDR];
    struct iovec iov[2 * DATA_RUN_MAX];
    uint8_t *zbuf[DATA_RUN_MAX] = {0};
    size_t total = 0;
    int rc = n && n <= DATA_RUN_MAX ? 0 : PL_EINVAL;
    for (size_t i = 0; !rc && i < n; i++) {
        const struct data_loc *l = &locs[i];
        int raw = (l->codec == DATA_CODEC_RAW || DATA_CODEC_IS_STAGED(l->codec)) &&
                  l->stored_len == l->raw_len;
        if (l->kind != locs[0].kind || l->seg != locs[0].seg || l->off != locs[0].off + total ||
            (!raw && l->codec != DATA_CODEC_ZSTD)) {
            rc = PL_EINVAL;
            break;
        }
        if (!raw && !(zbuf[i] = malloc(l->stored_len))) {
            rc = PL_ENOMEM;
            break;
        }
        iov[2 * i] = (struct iovec){hdr[i], DATA_BLOCK_HDR};
        iov[2 * i + 1] = (struct iovec){raw ? outs[i] : zbuf[i], l->stored_len};
        total += DATA_BLOCK_HDR + l->stored_len;
    }
    struct seg *s;
    if (!rc)
        rc = seg_get_rd(ds, locs[0].seg, &s);
    if (!rc) {
        if (s->sp) {
            rc = stripe_readv(ds, s, locs[0].off, iov, (int)(2 * n));
        } else {
            ssize_t r;
            do {
                r = preadv(s->fd[0], iov, (int)(2 * n), (off_t)locs[0].off);
            } while (r < 0 && errno == EINTR);
            rc = r < 0 ? -errno : (size_t)r != total ? PL_EIO : 0;
        }
        pthread_rwlock_unlock(&ds->map_lock);
    }
    ZSTD_DCtx *d = NULL;
    for (size_t i = 0; !rc && i < n; i++) {
        const struct data_loc *l = &locs[i];
        rc = block_check(hdr[i], iov[2 * i + 1].iov_base, l, fps[i]);
        if (rc || !zbuf[i])
            continue;
        if (!d && !(d = dctx_get(ds))) {
            rc = PL_ENOMEM;
            break;
        }
        size_t z = ZSTD_decompressDCtx(d, outs[i], l->raw_len, zbuf[i], l->stored_len);
        if (ZSTD_isError(z) || z != l->raw_len)
            rc = PL_ECORRUPT;
    }
    if (d)
        dctx_put(ds, d);
    for (size_t i = 0; i < n && i < DATA_RUN_MAX; i++)
        free(zbuf[i]);
    return rc;
}

int data_delta_ref(struct data_store *ds, const struct data_loc *loc, uint8_t ref_fp[DATA_FP_LEN])
{
    uint8_t *blk;
    int rc = data_delta_load(ds, loc, NULL, &blk, ref_fp);
    if (!rc)
        free(blk);
    return rc;
}

int data_delta_load(struct data_store *ds, const struct data_loc *loc,
                    const uint8_t fp[DATA_FP_LEN], uint8_t **ret_blk,
                    uint8_t ref_fp[DATA_FP_LEN])
{
    if (loc->codec != DATA_CODEC_DELTA || loc->stored_len < DATA_FP_LEN)
        return PL_EINVAL;
    uint8_t *blk = malloc(DATA_BLOCK_HDR + loc->stored_len);
    if (!blk)
        return PL_ENOMEM;
    int rc = block_read_verified(ds, loc, fp, blk);
    if (rc) {
        free(blk);
        return rc;
    }
    memcpy(ref_fp, blk + DATA_BLOCK_HDR, DATA_FP_LEN);
    *ret_blk = blk;
    return 0;
}

int data_delta_decode(struct data_store *ds, const struct data_loc *loc, const uint8_t *blk,
                      const void *ref, size_t ref_n, void *out)
{
    ZSTD_DCtx *d = dctx_get(ds);
    if (!d)
        return PL_ENOMEM;
    int rc = 0;
    size_t z = ZSTD_DCtx_refPrefix(d, ref, ref_n);
    if (!ZSTD_isError(z))
        z = ZSTD_decompressDCtx(d, out, loc->raw_len, blk + DATA_BLOCK_HDR + DATA_FP_LEN,
                                loc->stored_len - DATA_FP_LEN);
    if (ZSTD_isError(z) || z != loc->raw_len)
        rc = PL_ECORRUPT;
    ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
    dctx_put(ds, d);
    return rc;
}

void data_prefetch(struct data_store *ds, const struct data_loc *loc, uint64_t span)
{
    struct seg *s;
    if (seg_get_rd(ds, loc->seg, &s))
        return;
    /* advice only: errors do not matter */
    if (s->sp)
        stripe_prefetch(ds, s, loc->off, (size_t)span);
    else
        (void)posix_fadvise(s->fd[0], (off_t)loc->off, (off_t)span, POSIX_FADV_WILLNEED);
    pthread_rwlock_unlock(&ds->map_lock);
}

int data_block_read(struct data_store *ds, const struct data_loc *loc, uint8_t **ret,
                    size_t *ret_n)
{
    size_t n = DATA_BLOCK_HDR + loc->stored_len;
    uint8_t *blk = malloc(n);
    if (!blk)
        return PL_ENOMEM;
    int rc = block_read_verified(ds, loc, NULL, blk);
    if (rc) {
        free(blk);
        return rc;
    }
    *ret = blk;
    *ret_n = n;
    return 0;
}

int data_seg_walk(struct data_store *ds, uint64_t id, uint64_t used, data_block_fn cb, void *arg)
{
    struct seg *s;
    int rc = seg_get_rd(ds, id, &s);
    if (rc)
        return rc;
    uint64_t off = 0;
    uint8_t hdr[DATA_BLOCK_HDR];
    int fd = s->fd[0];
    int striped = s->sp != NULL;
    pthread_rwlock_unlock(&ds->map_lock); /* walk runs while the caller owns the segment */
    while (off + DATA_BLOCK_HDR <= used) {
        if (striped) {
            rc = seg_get_rd(ds, id, &s);
            if (!rc) {
                rc = stripe_read(ds, s, off, hdr, sizeof(hdr));
                pthread_rwlock_unlock(&ds->map_lock);
            }
        } else {
            rc = pl_pread_all(fd, hdr, sizeof(hdr), (off_t)off);
        }
        if (rc)
            return rc;
        if (memcmp(hdr, "PLCK", 4) || hdr[4] != 1)
            return PL_ECORRUPT;
        struct data_loc loc = {
            .kind = DATA_LOC_BUFFER,
            .codec = hdr[5],
            .seg = id,
            .off = off,
            .raw_len = pl_get_le32(hdr + 8),
            .stored_len = pl_get_le32(hdr + 12),
        };
        if (loc.raw_len > DATA_MAX_CHUNK || loc.stored_len > DATA_MAX_CHUNK + 1024)
            return PL_ECORRUPT;
        rc = cb(arg, &loc, hdr + 16);
        if (rc < 0)
            return rc;
        off += DATA_BLOCK_HDR + loc.stored_len;
    }
    return 0;
}

void seg_forget_bytes(struct data_store *ds, uint64_t id)
{
    char path[4200];
    struct stat sb;
    seg_path(ds, 0, id, path, sizeof(path));
    if (stat(path, &sb) == 0)
        __atomic_sub_fetch(&ds->buffered, (uint64_t)sb.st_size, __ATOMIC_RELAXED);
}

uint64_t data_buffer_bytes(struct data_store *ds)
{
    return __atomic_load_n(&ds->buffered, __ATOMIC_RELAXED);
}

uint64_t data_seg_reserve(struct data_store *ds)
{
    pthread_mutex_lock(&ds->append_lock);
    uint64_t id = ds->next_seg++;
    pthread_mutex_unlock(&ds->append_lock);
    return id;
}

uint64_t data_active_seg(struct data_store *ds)
{
    pthread_mutex_lock(&ds->append_lock);
    uint64_t id = ds->active ? ds->active->id : 0;
    pthread_mutex_unlock(&ds->append_lock);
    return id;
}

int data_seal_active(struct data_store *ds)
{
    pthread_mutex_lock(&ds->append_lock);
    int rc = new_active(ds);
    pthread_mutex_unlock(&ds->append_lock);
    return rc;
}

int data_seg_truncate(struct data_store *ds, uint64_t id, uint64_t used)
{
    seg_forget_bytes(ds, id);
    __atomic_add_fetch(&ds->buffered, used, __ATOMIC_RELAXED);
    for (int m = 0; m < ds->nmirrors; m++) {
        char path[4200];
        seg_path(ds, m, id, path, sizeof(path));
        if (truncate(path, (off_t)used) < 0 && errno != ENOENT)
            return -errno;
    }
    return 0;
}

/* The names go under the lock (nobody can open the segment again); the last
 * close, which frees the files' cached pages (tens of milliseconds for a full
 * segment), happens after it, so readers of other segments never wait for it. */
int data_seg_delete(struct data_store *ds, uint64_t id)
{
    int rc = 0;
    struct seg *s = NULL;
    pthread_rwlock_wrlock(&ds->map_lock);
    struct seg **pp = &ds->table[id % SEG_HASH];
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    if (*pp) {
        s = *pp;
        *pp = s->next;
        if (s->sp)
            stripe_unlink(ds, id, &s->sp->g);
    }
    seg_forget_bytes(ds, id);
    for (int m = 0; m < ds->nmirrors; m++) {
        char path[4200];
        seg_path(ds, m, id, path, sizeof(path));
        if (unlink(path) < 0 && errno != ENOENT && !rc)
            rc = -errno;
    }
    pthread_rwlock_unlock(&ds->map_lock);
    if (s) {
        seg_close_fds(s, ds->nmirrors);
        stripe_free(s->sp);
        free(s);
    }
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int data_seg_list(struct data_store *ds, uint64_t **ret, size_t *ret_n)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/seg", ds->mirrors[0]);
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        uint64_t id = strtoull(de->d_name, &end, 16);
        if (end == de->d_name || strcmp(end, ".seg"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *t = realloc(ids, cap * sizeof(*ids));
            if (!t) {
                free(ids);
                closedir(d);
                return PL_ENOMEM;
            }
            ids = t;
        }
        ids[n++] = id;
    }
    closedir(d);
    if (n)
        qsort(ids, n, sizeof(*ids), cmp_u64);
    *ret = ids;
    *ret_n = n;
    return 0;
}

uint64_t data_disk_bytes(struct data_store *ds)
{
    uint64_t total = 0;
    for (int m = 0; m < ds->nmirrors; m++) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/seg", ds->mirrors[m]);
        DIR *d = opendir(dir);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            struct stat st;
            char path[8400];
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            if (de->d_name[0] != '.' && stat(path, &st) == 0)
                total += (uint64_t)st.st_blocks * 512;
        }
        closedir(d);
    }
    return total + stripe_disk_bytes(ds);
}

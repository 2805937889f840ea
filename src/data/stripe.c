/* Stripes: sealed segments erasure-coded across capacity devices.
 *
 * Strip file "<dev>/stripes/<seg:016x>.<idx:02>":
 *   0    magic "PLSTRIP1"    8  seg LE64     16 idx   17 k   18 m   19 reserved
 *   20   cell LE32           24 strip LE64   32 len LE64
 *   40   XXH3-64 of bytes 0..39
 *   4096 one XXH3-64 per cell of the payload (seeded by seg, idx and cell)
 *   then the payload (strip bytes), at a 4 KiB boundary.
 * Strips are written once (to a temporary name, synced, renamed); a repair
 * writes a whole new strip the same way. */
#include "data/data_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/xxh.h"

#define STRIP_HDR 4096u
#define STRIP_MAGIC "PLSTRIP1"
#define BIG_CELL (64u << 10)
#define SMALL_CELL (4u << 10)
#define REBUILD_PIECE (1u << 20)

size_t data_geom_encode(const struct data_geom *g, uint8_t *out)
{
    out[0] = g->k;
    out[1] = g->m;
    out[2] = out[3] = 0;
    pl_put_le32(out + 4, g->cell);
    pl_put_le64(out + 8, g->strip);
    pl_put_le64(out + 16, g->len);
    for (int i = 0; i < g->k + g->m; i++)
        pl_put_le16(out + 24 + 2 * i, g->dev[i]);
    return 24 + 2 * (size_t)(g->k + g->m);
}

int data_geom_decode(const uint8_t *p, size_t n, struct data_geom *g)
{
    if (n < 24)
        return PL_ECORRUPT;
    memset(g, 0, sizeof(*g));
    g->k = p[0];
    g->m = p[1];
    g->cell = pl_get_le32(p + 4);
    g->strip = pl_get_le64(p + 8);
    g->len = pl_get_le64(p + 16);
    if (g->k < 1 || g->k > EC_MAX_K || g->m < 1 || g->m > EC_MAX_M ||
        n != 24 + 2 * (size_t)(g->k + g->m) || !g->cell || g->strip % g->cell ||
        g->len > g->strip * g->k)
        return PL_ECORRUPT;
    for (int i = 0; i < g->k + g->m; i++)
        g->dev[i] = pl_get_le16(p + 24 + 2 * i);
    return 0;
}

uint64_t stripe_payload_off(const struct data_geom *g)
{
    uint64_t sums = (g->strip / g->cell) * 8;
    return STRIP_HDR + (sums + 4095) / 4096 * 4096;
}

static uint64_t cell_sum(const void *p, size_t n, uint64_t seg, int idx, uint64_t c)
{
    return XXH3_64bits_withSeed(p, n, (seg << 8 | (uint64_t)idx) ^ (c << 40) ^ 0x5045ull);
}

void data_counters_get(struct data_store *ds, struct data_counters *ret)
{
    pthread_mutex_lock(&ds->dev_lock);
    *ret = ds->cnt;
    pthread_mutex_unlock(&ds->dev_lock);
    ret->read_ahead_bytes = __atomic_load_n(&ds->cnt.read_ahead_bytes, __ATOMIC_RELAXED);
}

/* ---- devices ---- */
static struct dev *dev_find(struct data_store *ds, uint16_t id)
{
    for (int i = 0; i < ds->ndevs; i++)
        if (ds->devs[i].id == id)
            return &ds->devs[i];
    return NULL;
}

static void close_strip_fds(struct data_store *ds, int dev_id)
{
    pthread_rwlock_wrlock(&ds->map_lock);
    for (int h = 0; h < SEG_HASH; h++)
        for (struct seg *s = ds->table[h]; s; s = s->next)
            for (int i = 0; s->sp && i < s->sp->g.k + s->sp->g.m; i++)
                if ((dev_id < 0 || s->sp->g.dev[i] == dev_id) && s->sp->fd[i] >= 0) {
                    close(s->sp->fd[i]);
                    s->sp->fd[i] = -1;
                }
    pthread_rwlock_unlock(&ds->map_lock);
}

int data_dev_set(struct data_store *ds, uint16_t id, const char *path, int state)
{
    int rc = 0, moved = 0;
    pthread_mutex_lock(&ds->dev_lock);
    struct dev *d = dev_find(ds, id);
    if (!d && ds->ndevs == DATA_MAX_DEVS) {
        rc = PL_ENOSPC;
    } else if (!d) {
        d = &ds->devs[ds->ndevs++];
        d->id = id;
    }
    if (!rc) {
        moved = d->path && strcmp(d->path, path);
        char *p = strdup(path);
        if (!p) {
            rc = PL_ENOMEM;
        } else {
            free(d->path);
            d->path = p;
            d->state = (uint8_t)state;
            d->io_errors = 0;
        }
    }
    pthread_mutex_unlock(&ds->dev_lock);
    if (!rc && (moved || state != DATA_DEV_OK))
        close_strip_fds(ds, id); /* files opened on the old one must not be read */
    return rc;
}

int data_dev_state(struct data_store *ds, uint16_t id)
{
    pthread_mutex_lock(&ds->dev_lock);
    struct dev *d = dev_find(ds, id);
    int st = d ? d->state : DATA_DEV_FAILED;
    pthread_mutex_unlock(&ds->dev_lock);
    return st;
}

int data_dev_probe(struct data_store *ds, uint16_t id)
{
    char dir[4200];
    struct stat st;
    pthread_mutex_lock(&ds->dev_lock);
    struct dev *d = dev_find(ds, id);
    if (d)
        snprintf(dir, sizeof(dir), "%s/stripes", d->path);
    pthread_mutex_unlock(&ds->dev_lock);
    if (!d)
        return PL_ENOENT;
    if (stat(dir, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : PL_ENOTDIR;
}

int data_devs_probe(struct data_store *ds)
{
    uint16_t ids[DATA_MAX_DEVS];
    int n = 0, failed = 0;
    pthread_mutex_lock(&ds->dev_lock);
    for (int i = 0; i < ds->ndevs; i++)
        if (ds->devs[i].state == DATA_DEV_OK)
            ids[n++] = ds->devs[i].id;
    pthread_mutex_unlock(&ds->dev_lock);
    for (int i = 0; i < n; i++) {
        int rc = data_dev_probe(ds, ids[i]);
        if (!rc)
            continue;
        pthread_mutex_lock(&ds->dev_lock);
        struct dev *d = dev_find(ds, ids[i]);
        if (d && d->state == DATA_DEV_OK) {
            d->state = DATA_DEV_FAILED;
            failed++;
            pl_log(PL_LOG_ERROR, "data",
                   "capacity device %u (%s) is gone (%s); reads use parity until it is "
                   "replaced",
                   d->id, d->path, pl_strerror(rc));
        }
        pthread_mutex_unlock(&ds->dev_lock);
        close_strip_fds(ds, ids[i]);
    }
    return failed;
}

/* A device misbehaved: a missing directory or an I/O error fails it. */
static void dev_trouble(struct data_store *ds, uint16_t id, int err)
{
    int fail = err == PL_EIO || data_dev_probe(ds, id) != 0;
    pthread_mutex_lock(&ds->dev_lock);
    struct dev *d = dev_find(ds, id);
    if (d && fail && d->state == DATA_DEV_OK) {
        d->state = DATA_DEV_FAILED;
        pl_log(PL_LOG_ERROR, "data",
               "capacity device %u (%s) failed (%s); reads use parity until it is replaced",
               id, d->path, pl_strerror(err));
    }
    if (d && err == PL_EIO)
        d->io_errors++;
    pthread_mutex_unlock(&ds->dev_lock);
}

static int strip_path(struct data_store *ds, uint16_t dev, uint64_t seg, int idx, int tmp,
                      char *out, size_t n)
{
    int rc = 0;
    pthread_mutex_lock(&ds->dev_lock);
    struct dev *d = dev_find(ds, dev);
    if (!d)
        rc = PL_ENOENT;
    else
        snprintf(out, n, "%s/stripes/%016" PRIx64 ".%02d%s", d->path, seg, idx, tmp ? ".tmp" : "");
    pthread_mutex_unlock(&ds->dev_lock);
    return rc;
}

static const struct ec_code *code_get(struct data_store *ds, int k, int m)
{
    if (k < 1 || k > EC_MAX_K || m < 1 || m > EC_MAX_M)
        return NULL;
    pthread_mutex_lock(&ds->dev_lock);
    struct ec_code *c = ds->codes[k][m];
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (c && ec_code_init(c, k, m)) {
            free(c);
            c = NULL;
        }
        ds->codes[k][m] = c;
    }
    pthread_mutex_unlock(&ds->dev_lock);
    return c;
}

static void repair_queue(struct data_store *ds, uint64_t seg, int idx)
{
    pthread_mutex_lock(&ds->dev_lock);
    int dup = 0;
    for (int i = 0; i < ds->nrepairs; i++)
        dup |= ds->repairs[i].seg == seg && ds->repairs[i].idx == idx;
    if (!dup && ds->nrepairs < REPAIR_QUEUE)
        ds->repairs[ds->nrepairs++] = (struct repair){seg, idx};
    pthread_mutex_unlock(&ds->dev_lock);
}

int data_repair_next(struct data_store *ds, uint64_t *ret_seg, int *ret_idx)
{
    int got = 0;
    pthread_mutex_lock(&ds->dev_lock);
    if (ds->nrepairs) {
        *ret_seg = ds->repairs[0].seg;
        *ret_idx = ds->repairs[0].idx;
        memmove(ds->repairs, ds->repairs + 1, (size_t)(--ds->nrepairs) * sizeof(ds->repairs[0]));
        got = 1;
    }
    pthread_mutex_unlock(&ds->dev_lock);
    return got;
}

/* ---- reading strips ---- */
void stripe_free(struct stripe *sp)
{
    if (!sp)
        return;
    for (int i = 0; i < EC_MAX_K + EC_MAX_M; i++)
        if (sp->fd[i] >= 0)
            close(sp->fd[i]);
    pthread_mutex_destroy(&sp->fd_lock);
    free(sp);
}

int stripe_strip_open(struct data_store *ds, struct seg *s, int idx, int flags, int *ret_fd)
{
    uint16_t dev = s->sp->g.dev[idx];
    char path[4200];
    int rc = data_dev_state(ds, dev) == DATA_DEV_FAILED ? PL_EIO : 0;
    if (!rc)
        rc = strip_path(ds, dev, s->id, idx, 0, path, sizeof(path));
    if (!rc && (*ret_fd = open(path, O_RDONLY | O_CLOEXEC | flags)) < 0)
        rc = -errno;
    return rc;
}

static int strip_fd(struct data_store *ds, struct seg *s, int idx, int *ret_fd)
{
    struct stripe *sp = s->sp;
    int rc = 0;
    pthread_mutex_lock(&sp->fd_lock);
    if (sp->fd[idx] < 0)
        rc = stripe_strip_open(ds, s, idx, 0, &sp->fd[idx]);
    *ret_fd = sp->fd[idx];
    pthread_mutex_unlock(&sp->fd_lock);
    return rc;
}

/* Read cells [c0, c1) of strip idx into buf and verify them. */
static int strip_cells(struct data_store *ds, struct seg *s, int idx, uint64_t c0, uint64_t c1,
                       uint8_t *buf)
{
    const struct data_geom *g = &s->sp->g;
    size_t nc = (size_t)(c1 - c0);
    uint64_t stack_sums[32], *sums = nc <= 32 ? stack_sums : malloc(nc * 8);
    int fd, rc = sums ? strip_fd(ds, s, idx, &fd) : PL_ENOMEM;
    if (!rc)
        rc = pl_pread_all(fd, sums, nc * 8, (off_t)(STRIP_HDR + c0 * 8));
    if (!rc)
        rc = pl_pread_all(fd, buf, nc * g->cell, (off_t)(stripe_payload_off(g) + c0 * g->cell));
    for (size_t i = 0; !rc && i < nc; i++)
        if (cell_sum(buf + i * g->cell, g->cell, s->id, idx, c0 + i) != pl_get_le64((uint8_t *)&sums[i]))
            rc = PL_ECORRUPT;
    if (sums != stack_sums)
        free(sums);
    if (rc && rc != PL_ECORRUPT)
        dev_trouble(ds, g->dev[idx], rc);
    return rc;
}

/* Rebuild cells [c0, c1) of strip idx into out from k other strips. */
static int strip_reconstruct(struct data_store *ds, struct seg *s, int idx, uint64_t c0,
                             uint64_t c1, uint8_t *out)
{
    const struct data_geom *g = &s->sp->g;
    const struct ec_code *code = code_get(ds, g->k, g->m);
    size_t len = (size_t)(c1 - c0) * g->cell;
    uint8_t *hb[EC_MAX_K] = {0};
    int have[EC_MAX_K], got = 0, rc = code ? 0 : PL_ENOMEM;
    for (int j = 0; !rc && j < g->k + g->m && got < g->k; j++) {
        if (j == idx)
            continue;
        if (!hb[got] && !(hb[got] = malloc(len))) {
            rc = PL_ENOMEM;
            break;
        }
        if (strip_cells(ds, s, j, c0, c1, hb[got]) == 0)
            have[got++] = j;
    }
    if (!rc && got < g->k)
        rc = PL_ECORRUPT; /* more than m strips damaged here */
    uint8_t *wb[1] = {out};
    if (!rc)
        rc = ec_recover(code, len, have, hb, 1, &idx, wb);
    for (int i = 0; i < EC_MAX_K; i++)
        free(hb[i]);
    return rc;
}

/* Copies n bytes into the iovecs from where *at (vector index) and *in (bytes
 * into it) point, and moves them on. */
static void iov_fill(const struct iovec *iov, int niov, int *at, size_t *in, const uint8_t *src,
                     size_t n)
{
    while (n && *at < niov) {
        size_t take = PL_MIN(n, iov[*at].iov_len - *in);
        memcpy((uint8_t *)iov[*at].iov_base + *in, src, take);
        src += take;
        n -= take;
        *in += take;
        if (*in == iov[*at].iov_len) {
            (*at)++;
            *in = 0;
        }
    }
}

/* The next n bytes of the iovecs from the cursor (*at, *in) as vectors in
 * out (room for max); moves the cursor. Returns how many, or -1 when they
 * do not fit. */
static int iov_take(const struct iovec *iov, int niov, int *at, size_t *in, size_t n,
                    struct iovec *out, int max)
{
    int k = 0;
    while (n && *at < niov) {
        if (k == max)
            return -1;
        size_t take = PL_MIN(n, iov[*at].iov_len - *in);
        out[k++] = (struct iovec){(uint8_t *)iov[*at].iov_base + *in, take};
        n -= take;
        *in += take;
        if (*in == iov[*at].iov_len) {
            (*at)++;
            *in = 0;
        }
    }
    return n ? -1 : k;
}

static int preadv_all(int fd, struct iovec *v, int n, off_t off)
{
    while (n > 0) {
        ssize_t r = preadv(fd, v, PL_MIN(n, IOV_MAX), off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : PL_EIO;
        off += r;
        while (n > 0 && (size_t)r >= v->iov_len) {
            r -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + r;
            v->iov_len -= (size_t)r;
        }
    }
    return 0;
}

#define DIRECT_IOV 160

/* Read strip idx's file bytes at off (cell sums or payload) into the
 * vectors v (nv of them, which this may change): from pieces read ahead
 * where there are any, the rest from the file. */
static int strip_payload_read(struct data_store *ds, struct seg *s, int idx, int fd,
                              struct iovec *v, int nv, off_t off)
{
    if (!ahead_any(ds, s->id, idx))
        return preadv_all(fd, v, nv, off);
    size_t n = 0, in = 0, from_ahead = 0;
    for (int i = 0; i < nv; i++)
        n += v[i].iov_len;
    int at = 0, rc = 0;
    while (n && !rc) {
        uint64_t foff = (uint64_t)off / AHEAD_PIECE * AHEAD_PIECE;
        size_t take = (size_t)PL_MIN((uint64_t)n, foff + AHEAD_PIECE - (uint64_t)off);
        struct ahead_slot *sl = ahead_pin(ds, s->id, idx, foff);
        if (sl && (uint64_t)off + take <= foff + sl->len) {
            iov_fill(v, nv, &at, &in, sl->buf + ((uint64_t)off - foff), take);
            ahead_unpin(ds, sl, (uint64_t)off + take);
            from_ahead += take;
        } else {
            if (sl)
                ahead_unpin(ds, sl, 0);
            struct iovec part[DIRECT_IOV];
            int np = iov_take(v, nv, &at, &in, take, part, DIRECT_IOV);
            rc = np < 0 ? PL_EINVAL : preadv_all(fd, part, np, off);
        }
        off += (off_t)take;
        n -= take;
    }
    __atomic_fetch_add(&ds->cnt.read_ahead_bytes, (uint64_t)from_ahead, __ATOMIC_RELAXED);
    return rc;
}

/* Read cells [c0, c1) of strip idx straight into the vectors v (which cover
 * exactly those cells) and verify each cell across them. Any failure is
 * returned; the caller then takes the bounce path, which repairs. */
static int strip_cells_direct(struct data_store *ds, struct seg *s, int idx, uint64_t c0,
                              uint64_t c1, const struct iovec *v, int nv)
{
    const struct data_geom *g = &s->sp->g;
    size_t nc = (size_t)(c1 - c0);
    uint64_t stack_sums[32], *sums = nc <= 32 ? stack_sums : malloc(nc * 8);
    struct iovec rv[DIRECT_IOV];
    int fd, rc = sums ? strip_fd(ds, s, idx, &fd) : PL_ENOMEM;
    if (!rc) {
        struct iovec sv = {sums, nc * 8};
        rc = strip_payload_read(ds, s, idx, fd, &sv, 1, (off_t)(STRIP_HDR + c0 * 8));
    }
    if (!rc) {
        memcpy(rv, v, (size_t)nv * sizeof(*v)); /* the read moves along its copy */
        rc = strip_payload_read(ds, s, idx, fd, rv, nv,
                                (off_t)(stripe_payload_off(g) + c0 * g->cell));
    }
    XXH3_state_t *h = NULL;
    int at = 0;
    size_t in = 0;
    for (size_t i = 0; !rc && i < nc; i++) {
        struct iovec piece[DIRECT_IOV];
        int np = iov_take(v, nv, &at, &in, g->cell, piece, DIRECT_IOV);
        uint64_t seed = (s->id << 8 | (uint64_t)idx) ^ ((c0 + i) << 40) ^ 0x5045ull, sum;
        if (np == 1) {
            sum = XXH3_64bits_withSeed(piece[0].iov_base, piece[0].iov_len, seed);
        } else if (np > 1 && (h || (h = XXH3_createState()))) {
            XXH3_64bits_reset_withSeed(h, seed);
            for (int k = 0; k < np; k++)
                XXH3_64bits_update(h, piece[k].iov_base, piece[k].iov_len);
            sum = XXH3_64bits_digest(h);
        } else {
            rc = np < 0 ? PL_EINVAL : PL_ENOMEM;
            break;
        }
        if (sum != pl_get_le64((uint8_t *)&sums[i]))
            rc = PL_ECORRUPT;
    }
    XXH3_freeState(h);
    if (sums != stack_sums)
        free(sums);
    if (rc == PL_ECORRUPT)
        ahead_drop(ds, s->id, idx); /* the bounce path reads the file again */
    return rc;
}

/* A sequential reader: keep the next LEAD_WINDOW bytes read ahead on
 * other threads (ahead.c). Left to itself, the kernel's readahead starts
 * each strip file small, keeps one window in flight, and a reader that asks
 * for a megabyte at a time waits at every step: a cold nfs-cat of 16 MiB
 * strips spent half its time there. A read that finds the piece at the
 * window's far end not yet asked for asks for the window; the job skips the
 * pieces it has, so each read adds at most a piece or two, and the jobs of
 * successive reads keep two disk reads in flight. Past the segment's end the
 * window goes on in the next segment, where a file written in order went. */
#define LEAD_SEQ_SLACK (4u << 20)
#define LEAD_WINDOW (16u << 20)
static void stripe_lead(struct data_store *ds, struct seg *s, uint64_t off, size_t n)
{
    const struct data_geom *g = &s->sp->g;
    uint64_t last = __atomic_exchange_n(&s->sp->read_end, off + n, __ATOMIC_RELAXED);
    if (!ds->lead || off > last || last - off > LEAD_SEQ_SLACK)
        return;
    uint64_t from = off + n, to = from + LEAD_WINDOW;
    if (to <= g->len) {
        uint64_t far = to - 1;
        uint64_t foff = (stripe_payload_off(g) + far % g->strip) / AHEAD_PIECE * AHEAD_PIECE;
        if (ahead_has(ds, s->id, (int)(far / g->strip), foff))
            return;
    } else if (ahead_any(ds, s->id + 1, 0)) {
        return; /* the next segment's window is under way */
    }
    if (from < g->len)
        ds->lead(ds->lead_arg, s->id, from, PL_MIN(to, g->len) - from);
    if (to > g->len)
        ds->lead(ds->lead_arg, s->id + 1, 0, to - PL_MAX(from, g->len));
}

int stripe_readv(struct data_store *ds, struct seg *s, uint64_t off, const struct iovec *iov,
                 int niov)
{
    const struct data_geom *g = &s->sp->g;
    size_t n = 0;
    for (int i = 0; i < niov; i++)
        n += iov[i].iov_len;
    if (off + n > g->len)
        return PL_EIO;
    stripe_lead(ds, s, off, n);
    int at = 0;
    size_t in = 0;
    while (n) {
        int idx = (int)(off / g->strip);
        uint64_t a = off % g->strip, take = PL_MIN((uint64_t)n, g->strip - a);
        uint64_t c0 = a / g->cell, c1 = (a + take + g->cell - 1) / g->cell;
        /* straight into the caller's vectors, the partial cells at either
         * end through small buffers of their own */
        size_t head = (size_t)(a - c0 * g->cell), tail = (size_t)(c1 * g->cell - a - take);
        uint8_t *ends = malloc(head + tail + 1);
        struct iovec dv[DIRECT_IOV];
        int dn = 0, dat = at;
        size_t din = in;
        if (ends && head)
            dv[dn++] = (struct iovec){ends, head};
        int got = ends ? iov_take(iov, niov, &dat, &din, (size_t)take, dv + dn,
                                  DIRECT_IOV - 2 - dn)
                       : -1;
        if (got > 0) {
            dn += got;
            if (tail)
                dv[dn++] = (struct iovec){ends + head, tail};
            if (strip_cells_direct(ds, s, idx, c0, c1, dv, dn) == 0) {
                free(ends);
                at = dat;
                in = din;
                off += take;
                n -= (size_t)take;
                continue;
            }
        }
        free(ends);
        uint8_t *buf = malloc((size_t)(c1 - c0) * g->cell);
        if (!buf)
            return PL_ENOMEM;
        int rc = strip_cells(ds, s, idx, c0, c1, buf);
        if (rc == PL_ENOMEM) {
            free(buf);
            return rc;
        }
        if (rc) {
            /* a degraded read: the bytes come from parity, the strip gets repaired */
            repair_queue(ds, s->id, idx);
            rc = strip_reconstruct(ds, s, idx, c0, c1, buf);
            pthread_mutex_lock(&ds->dev_lock);
            if (rc)
                ds->cnt.unrecoverable++;
            else
                ds->cnt.degraded_reads++;
            pthread_mutex_unlock(&ds->dev_lock);
            if (rc) {
                pl_log(PL_LOG_ERROR, "data",
                       "segment %016" PRIx64 " offset %" PRIu64 ": more than %d strips "
                       "damaged, cannot reconstruct",
                       s->id, off, g->m);
                free(buf);
                return rc == PL_ENOMEM ? rc : PL_ECORRUPT;
            }
        }
        iov_fill(iov, niov, &at, &in, buf + (a - c0 * g->cell), (size_t)take);
        free(buf);
        off += take;
        n -= (size_t)take;
    }
    return 0;
}

void stripe_prefetch(struct data_store *ds, struct seg *s, uint64_t off, size_t n)
{
    const struct data_geom *g = &s->sp->g;
    n = (size_t)PL_MIN((uint64_t)n, g->len > off ? g->len - off : 0);
    while (n) {
        int fd, idx = (int)(off / g->strip);
        uint64_t a = off % g->strip, take = PL_MIN((uint64_t)n, g->strip - a);
        uint64_t c0 = a / g->cell, c1 = (a + take + g->cell - 1) / g->cell;
        if (strip_fd(ds, s, idx, &fd) == 0)
            (void)posix_fadvise(fd, (off_t)(stripe_payload_off(g) + c0 * g->cell),
                                (off_t)((c1 - c0) * g->cell), POSIX_FADV_WILLNEED);
        off += take;
        n -= (size_t)take;
    }
}

void data_set_lead(struct data_store *ds, data_lead_fn *fn, void *arg)
{
    ds->lead = fn;
    ds->lead_arg = arg;
}

int stripe_read(struct data_store *ds, struct seg *s, uint64_t off, void *out, size_t n)
{
    struct iovec iov = {out, n};
    return stripe_readv(ds, s, off, &iov, 1);
}

/* ---- writing strips ---- */
/* Write one strip file: header, cell sums, payload; synced and renamed into
 * place. */
static int strip_write(struct data_store *ds, uint64_t seg, int idx, uint16_t dev,
                       const struct data_geom *g, const uint8_t *payload)
{
    char tmp[4200], fin[4200], dir[4200];
    uint64_t ncells = g->strip / g->cell, po = stripe_payload_off(g);
    uint8_t *head = calloc(1, (size_t)po);
    int rc = head ? 0 : PL_ENOMEM;
    if (!rc)
        rc = strip_path(ds, dev, seg, idx, 1, tmp, sizeof(tmp));
    if (!rc)
        rc = strip_path(ds, dev, seg, idx, 0, fin, sizeof(fin));
    if (rc) {
        free(head);
        return rc;
    }
    memcpy(head, STRIP_MAGIC, 8);
    pl_put_le64(head + 8, seg);
    head[16] = (uint8_t)idx;
    head[17] = g->k;
    head[18] = g->m;
    pl_put_le32(head + 20, g->cell);
    pl_put_le64(head + 24, g->strip);
    pl_put_le64(head + 32, g->len);
    pl_put_le64(head + 40, XXH3_64bits(head, 40));
    for (uint64_t c = 0; c < ncells; c++)
        pl_put_le64(head + STRIP_HDR + c * 8,
                    cell_sum(payload + c * g->cell, g->cell, seg, idx, c));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        rc = -errno;
    if (!rc)
        rc = pl_pwrite_all(fd, head, (size_t)po, 0);
    if (!rc)
        rc = pl_pwrite_all(fd, payload, (size_t)g->strip, (off_t)po);
    if (!rc && fdatasync(fd) < 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (!rc && rename(tmp, fin) < 0)
        rc = -errno;
    if (!rc) {
        snprintf(dir, sizeof(dir), "%s", fin);
        *strrchr(dir, '/') = 0;
        rc = pl_fsync_dir(dir);
    }
    if (rc) {
        unlink(tmp);
        dev_trouble(ds, dev, rc);
    }
    free(head);
    return rc;
}

/* Copy the committed bytes of a buffer segment into buf, block by block from
 * whichever mirror holds a good copy. */
static int seg_gather(struct data_store *ds, struct seg *s, uint64_t used, uint8_t *buf)
{
    int rc = pl_pread_all(s->fd[0], buf, (size_t)used, 0);
    uint64_t off = 0;
    while (!rc && off + DATA_BLOCK_HDR <= used) {
        int ok = 0;
        uint64_t n = 0;
        for (int m = 0; m < ds->nmirrors && !ok; m++) {
            uint8_t *b = buf + off;
            if (m > 0 && pl_pread_all(s->fd[m], b, DATA_BLOCK_HDR, (off_t)off))
                continue;
            if (memcmp(b, "PLCK", 4) || b[4] != 1)
                continue;
            n = DATA_BLOCK_HDR + pl_get_le32(b + 12);
            if (off + n > used || pl_get_le32(b + 12) > DATA_MAX_CHUNK + 1024)
                continue;
            if (m > 0 && pl_pread_all(s->fd[m], b + DATA_BLOCK_HDR, (size_t)n - DATA_BLOCK_HDR,
                                      (off_t)(off + DATA_BLOCK_HDR)))
                continue;
            ok = pl_get_le64(b + 48) ==
                 XXH3_64bits_withSeed(b + DATA_BLOCK_HDR, n - DATA_BLOCK_HDR, XXH3_64bits(b, 48));
        }
        if (!ok) {
            pl_log(PL_LOG_ERROR, "data",
                   "segment %016" PRIx64 " offset %" PRIu64 ": no good copy in the buffer; "
                   "not destaged (run plenum fsck)",
                   s->id, off);
            return PL_ECORRUPT;
        }
        off += n;
    }
    return rc;
}

/* The geometry of a len-byte segment as a k+m stripe on devs. */
static void geom_plan(struct data_geom *g, uint64_t len, int k, int m, const uint16_t *devs)
{
    memset(g, 0, sizeof(*g));
    g->k = (uint8_t)k;
    g->m = (uint8_t)m;
    g->len = len;
    uint64_t per = (len + (uint64_t)k - 1) / (uint64_t)k;
    g->cell = per >= (1u << 20) ? BIG_CELL : SMALL_CELL;
    g->strip = PL_MAX((per + g->cell - 1) / g->cell * g->cell, (uint64_t)g->cell);
    memcpy(g->dev, devs, sizeof(uint16_t) * (size_t)(k + m));
}

/* Encode data (k strips, zero-padded) and write all k+m strip files. */
static int stripe_encode_write(struct data_store *ds, uint64_t seg, const struct data_geom *g,
                               uint8_t *data)
{
    const struct ec_code *code = code_get(ds, g->k, g->m);
    uint8_t *par = malloc((size_t)g->m * (size_t)g->strip);
    uint8_t *dp[EC_MAX_K], *pp[EC_MAX_M];
    int rc = code && par ? 0 : code ? PL_ENOMEM : PL_EINVAL;
    for (int i = 0; i < g->k; i++)
        dp[i] = data + (size_t)i * g->strip;
    for (int i = 0; par && i < g->m; i++)
        pp[i] = par + (size_t)i * g->strip;
    if (!rc)
        ec_encode(code, (size_t)g->strip, dp, pp);
    for (int i = 0; !rc && i < g->k + g->m; i++)
        rc = strip_write(ds, seg, i, g->dev[i], g, i < g->k ? dp[i] : pp[i - g->k]);
    if (rc) {
        char p[4200];
        for (int i = 0; i < g->k + g->m; i++)
            if (!strip_path(ds, g->dev[i], seg, i, 0, p, sizeof(p)))
                unlink(p);
    }
    free(par);
    return rc;
}

int data_stripe_build(struct data_store *ds, uint64_t seg, uint64_t used, int k, int m,
                      const uint16_t *devs, struct data_geom *ret)
{
    struct data_geom g;
    struct seg *s;
    if (k < 1 || k > EC_MAX_K || m < 1 || m > EC_MAX_M)
        return PL_EINVAL;
    geom_plan(&g, used, k, m, devs);
    uint8_t *data = calloc((size_t)k, (size_t)g.strip);
    int rc = data ? seg_get_rd(ds, seg, &s) : PL_ENOMEM;
    if (!rc) {
        rc = s->sp ? PL_EEXIST : seg_gather(ds, s, used, data);
        pthread_rwlock_unlock(&ds->map_lock);
    }
    if (!rc)
        rc = stripe_encode_write(ds, seg, &g, data);
    if (!rc)
        *ret = g;
    free(data);
    return rc;
}

int data_stripe_write(struct data_store *ds, uint64_t seg, const uint8_t *bytes, uint64_t len,
                      int k, int m, const uint16_t *devs, struct data_geom *ret)
{
    struct data_geom g;
    if (k < 1 || k > EC_MAX_K || m < 1 || m > EC_MAX_M || len == 0)
        return PL_EINVAL;
    geom_plan(&g, len, k, m, devs);
    /* the strips are encoded in place: a padded copy */
    uint8_t *data = malloc((size_t)k * (size_t)g.strip);
    if (!data)
        return PL_ENOMEM;
    memcpy(data, bytes, (size_t)len);
    memset(data + len, 0, (size_t)k * (size_t)g.strip - (size_t)len);
    int rc = stripe_encode_write(ds, seg, &g, data);
    if (!rc)
        *ret = g;
    free(data);
    return rc;
}

int data_stripe_attach(struct data_store *ds, uint64_t seg, const struct data_geom *g)
{
    struct stripe *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return PL_ENOMEM;
    sp->g = *g;
    for (int i = 0; i < EC_MAX_K + EC_MAX_M; i++)
        sp->fd[i] = -1;
    pthread_mutex_init(&sp->fd_lock, NULL);
    pthread_rwlock_wrlock(&ds->map_lock);
    struct seg **slot = &ds->table[seg % SEG_HASH], *s = *slot;
    while (s && s->id != seg)
        s = s->next;
    if (!s && (s = calloc(1, sizeof(*s)))) {
        s->id = seg;
        for (int m = 0; m < SEG_MAX_MIRRORS; m++)
            s->fd[m] = -1;
        s->next = *slot;
        *slot = s;
    }
    int rc = s ? 0 : PL_ENOMEM;
    if (s) {
        for (int m = 0; m < SEG_MAX_MIRRORS; m++)
            if (s->fd[m] >= 0) {
                close(s->fd[m]);
                s->fd[m] = -1;
            }
        stripe_free(s->sp);
        s->sp = sp;
        sp = NULL;
        ahead_drop(ds, seg, -1);
        /* the buffer copy is not needed any more */
        seg_forget_bytes(ds, seg);
        for (int m = 0; m < ds->nmirrors; m++) {
            char path[4200];
            snprintf(path, sizeof(path), "%s/seg/%016" PRIx64 ".seg", ds->mirrors[m], seg);
            if (unlink(path) < 0 && errno != ENOENT)
                pl_log(PL_LOG_WARN, "data", "cannot remove %s: %s", path, strerror(errno));
        }
    }
    pthread_rwlock_unlock(&ds->map_lock);
    stripe_free(sp);
    return rc;
}

void stripe_unlink(struct data_store *ds, uint64_t seg, const struct data_geom *g)
{
    ahead_drop(ds, seg, -1);
    for (int i = 0; i < g->k + g->m; i++) {
        char p[4200];
        if (!strip_path(ds, g->dev[i], seg, i, 0, p, sizeof(p)))
            unlink(p);
    }
}

/* Copy a stripe's geometry under the map lock (NULL when not striped). */
static int stripe_geom(struct data_store *ds, uint64_t seg, struct data_geom *g)
{
    struct seg *s;
    int rc = seg_get_rd(ds, seg, &s);
    if (rc)
        return rc;
    if (s->sp)
        *g = s->sp->g;
    else
        rc = PL_EINVAL;
    pthread_rwlock_unlock(&ds->map_lock);
    return rc;
}

int data_strip_rebuild(struct data_store *ds, uint64_t seg, int idx, uint16_t dev)
{
    struct data_geom g;
    struct seg *s;
    int rc = stripe_geom(ds, seg, &g);
    if (rc)
        return rc;
    if (idx < 0 || idx >= g.k + g.m)
        return PL_EINVAL;
    uint8_t *payload = malloc((size_t)g.strip);
    if (!payload)
        return PL_ENOMEM;
    rc = seg_get_rd(ds, seg, &s);
    if (!rc) {
        uint64_t per = PL_MAX(REBUILD_PIECE / g.cell, 1u), ncells = g.strip / g.cell;
        for (uint64_t c = 0; !rc && c < ncells; c += per)
            rc = strip_reconstruct(ds, s, idx, c, PL_MIN(c + per, ncells),
                                   payload + c * g.cell);
        pthread_rwlock_unlock(&ds->map_lock);
    }
    if (!rc)
        rc = strip_write(ds, seg, idx, dev, &g, payload);
    free(payload);
    if (rc)
        return rc;
    /* readers pick the new file (and device) up from here on */
    ahead_drop(ds, seg, idx);
    pthread_rwlock_wrlock(&ds->map_lock);
    for (s = ds->table[seg % SEG_HASH]; s && s->id != seg; s = s->next)
        ;
    if (s && s->sp) {
        if (s->sp->fd[idx] >= 0)
            close(s->sp->fd[idx]);
        s->sp->fd[idx] = -1;
        s->sp->g.dev[idx] = dev;
    }
    pthread_rwlock_unlock(&ds->map_lock);
    pthread_mutex_lock(&ds->dev_lock);
    ds->cnt.strips_repaired++;
    pthread_mutex_unlock(&ds->dev_lock);
    return 0;
}

int data_strip_check(struct data_store *ds, uint64_t seg, int idx)
{
    struct seg *s;
    int rc = seg_get_rd(ds, seg, &s);
    if (rc)
        return rc;
    if (!s->sp || idx >= s->sp->g.k + s->sp->g.m) {
        pthread_rwlock_unlock(&ds->map_lock);
        return PL_EINVAL;
    }
    /* look at the file as it is now, not at one we opened earlier */
    pthread_mutex_lock(&s->sp->fd_lock);
    if (s->sp->fd[idx] >= 0)
        close(s->sp->fd[idx]);
    s->sp->fd[idx] = -1;
    pthread_mutex_unlock(&s->sp->fd_lock);
    const struct data_geom *g = &s->sp->g;
    uint64_t per = PL_MAX(REBUILD_PIECE / g->cell, 1u), ncells = g->strip / g->cell;
    uint8_t *buf = malloc((size_t)per * g->cell);
    rc = buf ? 0 : PL_ENOMEM;
    for (uint64_t c = 0; !rc && c < ncells; c += per)
        rc = strip_cells(ds, s, idx, c, PL_MIN(c + per, ncells), buf);
    pthread_rwlock_unlock(&ds->map_lock);
    free(buf);
    if (rc == PL_ENOMEM)
        return rc;
    return rc == 0 ? 0 : rc == PL_ECORRUPT ? PL_ECORRUPT : PL_ENOENT;
}

int data_seg_scrub(struct data_store *ds, uint64_t seg, uint64_t used, uint64_t *ret_checked,
                   uint64_t *ret_repaired, uint64_t *ret_lost)
{
    struct seg *s;
    int rc = seg_get_rd(ds, seg, &s);
    if (rc)
        return rc;
    if (s->sp) {
        pthread_rwlock_unlock(&ds->map_lock);
        return PL_EINVAL;
    }
    uint8_t *copy[SEG_MAX_MIRRORS] = {0};
    uint64_t off = 0, checked = 0, repaired = 0, lost = 0;
    while (!rc && off + DATA_BLOCK_HDR <= used) {
        int good = -1, bad[SEG_MAX_MIRRORS] = {0};
        uint64_t n = 0;
        for (int m = 0; m < ds->nmirrors; m++) {
            uint8_t hdr[DATA_BLOCK_HDR];
            bad[m] = 1;
            if (pl_pread_all(s->fd[m], hdr, sizeof(hdr), (off_t)off) || memcmp(hdr, "PLCK", 4))
                continue;
            uint64_t bn = DATA_BLOCK_HDR + pl_get_le32(hdr + 12);
            if (bn > DATA_BLOCK_HDR + DATA_MAX_CHUNK + 1024 || off + bn > used)
                continue;
            free(copy[m]);
            copy[m] = malloc((size_t)bn);
            if (!copy[m]) {
                rc = PL_ENOMEM;
                break;
            }
            if (pl_pread_all(s->fd[m], copy[m], (size_t)bn, (off_t)off))
                continue;
            if (pl_get_le64(copy[m] + 48) ==
                XXH3_64bits_withSeed(copy[m] + DATA_BLOCK_HDR, bn - DATA_BLOCK_HDR,
                                     XXH3_64bits(copy[m], 48))) {
                bad[m] = 0;
                if (good < 0) {
                    good = m;
                    n = bn;
                }
            }
        }
        if (rc)
            break;
        checked++;
        if (good < 0) {
            lost++;
            pl_log(PL_LOG_ERROR, "data",
                   "segment %016" PRIx64 " offset %" PRIu64 ": every buffer copy is bad", seg,
                   off);
            break; /* block boundaries past here are unknown */
        }
        for (int m = 0; m < ds->nmirrors; m++)
            if (bad[m]) {
                rc = pl_pwrite_all(s->fd[m], copy[good], (size_t)n, (off_t)off);
                if (!rc && fdatasync(s->fd[m]) < 0)
                    rc = -errno;
                repaired++;
                pl_log(PL_LOG_WARN, "data",
                       "segment %016" PRIx64 " offset %" PRIu64 ": repaired mirror %d", seg, off,
                       m);
            }
        off += n;
    }
    pthread_rwlock_unlock(&ds->map_lock);
    for (int m = 0; m < SEG_MAX_MIRRORS; m++)
        free(copy[m]);
    *ret_checked += checked;
    *ret_repaired += repaired;
    *ret_lost += lost;
    return rc;
}

/* ---- housekeeping ---- */
/* "<dev>/stripes" of every device, malloc'd rows of 4096. */
static char (*dev_dirs(struct data_store *ds, int *ret_n))[4096]
{
    char(*paths)[4096] = malloc(sizeof(*paths) * DATA_MAX_DEVS);
    int n = 0;
    if (!paths)
        return NULL;
    pthread_mutex_lock(&ds->dev_lock);
    for (int i = 0; i < ds->ndevs; i++)
        snprintf(paths[n++], sizeof(paths[0]), "%s/stripes", ds->devs[i].path);
    pthread_mutex_unlock(&ds->dev_lock);
    *ret_n = n;
    return paths;
}

int data_stripes_sweep(struct data_store *ds, data_known_fn known, void *arg)
{
    int n = 0, rc = 0;
    char(*paths)[4096] = dev_dirs(ds, &n);
    if (!paths)
        return PL_ENOMEM;
    for (int i = 0; i < n && !rc; i++) {
        DIR *d = opendir(paths[i]);
        if (!d)
            continue; /* a missing device: its state says so */
        struct dirent *de;
        while ((de = readdir(d)) && !rc) {
            char *end;
            if (de->d_name[0] == '.')
                continue;
            uint64_t seg = strtoull(de->d_name, &end, 16);
            int tmp = strstr(de->d_name, ".tmp") != NULL;
            int r = tmp ? 0 : known(arg, seg);
            if (r < 0) {
                rc = r;
            } else if (!r) {
                char p[8300];
                snprintf(p, sizeof(p), "%s/%s", paths[i], de->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    free(paths);
    return rc;
}

uint64_t stripe_disk_bytes(struct data_store *ds)
{
    int n = 0;
    uint64_t total = 0;
    char(*paths)[4096] = dev_dirs(ds, &n);
    if (!paths)
        return 0;
    for (int i = 0; i < n; i++) {
        DIR *d = opendir(paths[i]);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d))) {
            struct stat st;
            char p[8300];
            snprintf(p, sizeof(p), "%s/%s", paths[i], de->d_name);
            if (de->d_name[0] != '.' && stat(p, &st) == 0)
                total += (uint64_t)st.st_blocks * 512;
        }
        closedir(d);
    }
    free(paths);
    return total;
}

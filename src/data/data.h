/* data: content-defined chunking, chunk encoding, and the write-buffer
 * segment log.
 *
 * Design note: the segment log
 * - A segment is an append-only file "seg/<id:016x>.seg" present once in each
 *   buffer mirror directory; the same bytes are written to every mirror.
 * - A block is a 56-byte header followed by the stored payload:
 *     0  magic "PLCK"         4  version (1)      5  codec (enum data_codec)
 *     6  reserved (2)         8  raw_len LE32     12 stored_len LE32
 *     16 fingerprint (32, SHA-256 of the raw bytes)
 *     48 checksum LE64: XXH3-64 of the payload seeded with XXH3-64 of bytes 0..47
 * - Callers never see file offsets: a chunk's position is a struct data_loc,
 *   an abstract address (kind + fields), so erasure-coded stripes can become
 *   another kind without touching callers.
 * - Nothing here is durable until data_sync() returns; the store commits
 *   metadata pointing at a block only after that.
 */
#ifndef PL_DATA_H
#define PL_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define DATA_FP_LEN 32
#define DATA_BLOCK_HDR 56
#define DATA_MAX_CHUNK (1u << 20) /* hard cap on any chunk, any config */

/* DELTA: the payload is the reference chunk's fingerprint, then a zstd frame
 * made with the reference's raw bytes as its prefix. STAGED: raw bytes whose
 * encoding (similarity, zstd) is still to be chosen: the acknowledgment path
 * only appends, destage encodes. STAGED_RAW: staged by a writer that knows
 * its bytes do not compress (KV tensors): destage stores them RAW without
 * sketching or compressing them. */
enum data_codec {
    DATA_CODEC_RAW = 0,
    DATA_CODEC_ZSTD = 1,
    DATA_CODEC_DELTA = 2,
    DATA_CODEC_STAGED = 3,
    DATA_CODEC_STAGED_RAW = 4,
};
#define DATA_CODEC_IS_STAGED(c) ((c) == DATA_CODEC_STAGED || (c) == DATA_CODEC_STAGED_RAW)
enum data_loc_kind { DATA_LOC_NONE = 0, DATA_LOC_BUFFER = 1 };

struct data_loc {
    uint8_t kind;        /* enum data_loc_kind */
    uint8_t codec;       /* enum data_codec */
    uint64_t seg;
    uint64_t off;        /* of the block header inside the segment */
    uint32_t stored_len; /* payload bytes on disk */
    uint32_t raw_len;
};
#define DATA_LOC_ENC 26
void data_loc_encode(const struct data_loc *l, uint8_t out[DATA_LOC_ENC]);
int data_loc_decode(const uint8_t *p, size_t n, struct data_loc *ret) PL_WUR;

struct data_cdc {
    uint32_t min, avg, max; /* avg a power of two; min < avg < max <= DATA_MAX_CHUNK */
    uint64_t mask_s, mask_l;
};
/* Validates and derives the masks. */
int data_cdc_init(struct data_cdc *c, uint32_t min, uint32_t avg, uint32_t max) PL_WUR;
/* Length of the next chunk at the start of p[0..n). Returns 0 when more input
 * is needed to decide (only when !final and n < max). */
size_t data_cdc_cut(const struct data_cdc *c, const uint8_t *p, size_t n, int final);

void data_fingerprint(const void *p, size_t n, uint8_t out[DATA_FP_LEN]);

/* Similarity sketch: DATA_SF super-features, each a hash of DATA_SF_FEATURES
 * features; a feature is the maximum over sampled positions of one linear
 * transform of a rolling hash. Chunks sharing a super-feature are likely
 * similar (resemblance detection, Broder; super-features, Shilane et al.). */
#define DATA_SF 3
#define DATA_SF_FEATURES 4
void data_sketch(const void *p, size_t n, uint64_t sf[DATA_SF]);
int data_is_zero(const void *p, size_t n);

struct data_opts {
    const char *const *mirrors; /* buffer directories, 1..4 */
    int nmirrors;
    uint64_t seg_max;           /* roll the active segment past this size */
    int zstd_level;             /* 0 disables compression */
    uint64_t first_seg;         /* next segment id to create */
};

struct data_store;

int data_open(const struct data_opts *o, struct data_store **ret) PL_WUR;
void data_close(struct data_store *ds);

/* Append chunks as they are (codec STAGED, or STAGED_RAW with keep_raw) to
 * the active segment on every mirror, back to back (one write's chunks stay
 * together for its readers, whatever other writers append meanwhile) and
 * with one pwritev per mirror for as many as fit in the segment. Not
 * durable until data_sync(). Fills locs[0..n). */
struct data_stage_in {
    const uint8_t *fp; /* DATA_FP_LEN bytes */
    const void *raw;
    size_t n;
};
int data_chunks_stage(struct data_store *ds, const struct data_stage_in *in, size_t n,
                      int keep_raw, struct data_loc *locs) PL_WUR;
/* One chunk: data_chunks_stage of one. */
int data_chunk_stage(struct data_store *ds, const uint8_t fp[DATA_FP_LEN], const void *raw,
                     size_t n, int keep_raw, struct data_loc *ret_loc) PL_WUR;
/* Encode a chunk into a block (header + payload) in memory: zstd when that
 * saves 1/32 (and plain is not set), else raw; with a reference (the raw bytes of the chunk ref_fp),
 * a delta when that beats plain encoding by an eighth (or is under 1/16 of
 * the chunk: plain encoding is then not tried). *ret_blk is malloc'd. */
int data_block_encode(struct data_store *ds, const uint8_t fp[DATA_FP_LEN], const void *raw,
                      size_t n, int plain, const uint8_t ref_fp[DATA_FP_LEN], const void *ref,
                      size_t ref_n, uint8_t **ret_blk, size_t *ret_n) PL_WUR;
/* The reference of a delta chunk. */
int data_delta_ref(struct data_store *ds, const struct data_loc *loc,
                   uint8_t ref_fp[DATA_FP_LEN]) PL_WUR;
/* Read and verify a delta chunk's block (*ret_blk, malloc'd; against fp too
 * unless NULL) and say which chunk it is a delta of; then decode it against
 * that chunk's raw bytes. */
int data_delta_load(struct data_store *ds, const struct data_loc *loc,
                    const uint8_t fp[DATA_FP_LEN], uint8_t **ret_blk,
                    uint8_t ref_fp[DATA_FP_LEN]) PL_WUR;
int data_delta_decode(struct data_store *ds, const struct data_loc *loc, const uint8_t *blk,
                      const void *ref, size_t ref_n, void *out) PL_WUR;
/* Append an already-encoded block (compaction moves blocks without recoding). */
int data_block_append(struct data_store *ds, const uint8_t *block, size_t n,
                      struct data_loc *ret_loc) PL_WUR;
/* Make every block appended to segment seg so far durable on all mirrors. */
int data_sync(struct data_store *ds, uint64_t seg) PL_WUR;

/* Read, verify and decode a chunk into out (capacity >= loc->raw_len).
 * Tries each mirror; PL_ECORRUPT when no copy verifies, PL_ENOENT when the
 * segment is gone (moved by compaction: look the location up again).
 * PL_EINVAL for a delta chunk: data_delta_load, read its reference, then
 * data_delta_decode. */
int data_chunk_read(struct data_store *ds, const struct data_loc *loc,
                    const uint8_t fp[DATA_FP_LEN], void *out) PL_WUR;
/* Read n chunks stored back to back in one segment (locs[i + 1] starts where
 * locs[i] ends; raw or zstd, no deltas) in one pass: a striped segment's
 * cells are read and verified once, not once per chunk. Any failure, even of
 * one block, fails the whole run (PL_EINVAL when the locations are not such a
 * run): the caller then reads chunk by chunk, which tries every mirror and
 * reports what is damaged. */
#define DATA_RUN_MAX 64
int data_run_read(struct data_store *ds, const struct data_loc *locs,
                  const uint8_t (*fps)[DATA_FP_LEN], void *const *outs, size_t n) PL_WUR;
/* Ask the kernel to start reading span bytes of loc's segment from loc's
 * block on (the blocks stored back to back after it), wanted soon. */
void data_prefetch(struct data_store *ds, const struct data_loc *loc, uint64_t span);
/* Read [off, off + len) of a striped segment ahead of a sequential reader
 * into the store's read-ahead pieces, skipping what the page cache holds
 * or is reading already: the reader then finds the bytes in memory. Waits
 * for the disk: run it on a thread of its own. */
void data_read_ahead(struct data_store *ds, uint64_t seg, uint64_t off, uint64_t len);
/* Who runs data_read_ahead for sequential readers of striped segments:
 * fn(arg, seg, off, len) should have it run soon on another thread. Without
 * one, readers are left to the kernel's readahead. */
typedef void data_lead_fn(void *arg, uint64_t seg, uint64_t off, uint64_t len);
void data_set_lead(struct data_store *ds, data_lead_fn *fn, void *arg);
/* Read the raw encoded block (header + payload) at loc into *ret (malloc'd). */
int data_block_read(struct data_store *ds, const struct data_loc *loc, uint8_t **ret,
                    size_t *ret_n) PL_WUR;

/* Walk the blocks of a sealed segment in order; cb returns < 0 to stop. */
typedef int (*data_block_fn)(void *arg, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN]);
int data_seg_walk(struct data_store *ds, uint64_t seg, uint64_t used, data_block_fn cb,
                  void *arg) PL_WUR;

/* ---- capacity devices and stripes ----
 * A sealed segment is destaged into a stripe: its bytes split into k data
 * strips plus m parity strips, one strip file per capacity device:
 * "<dev>/stripes/<seg:016x>.<idx:02>". A strip file is a 4 KiB header, an
 * XXH3-64 checksum per cell, and the payload; cells are verified on every
 * read, and a missing or corrupt strip is rebuilt from any k others on the
 * fly. The same data_loc addresses keep working: only the segment's home
 * changes. */
#define DATA_MAX_DEVS 128
#define DATA_GEOM_MAX (28 + 2 * (64 + 4))
enum data_dev_state { DATA_DEV_OK = 0, DATA_DEV_FAILED = 1, DATA_DEV_REBUILDING = 2 };
struct data_geom {
    uint8_t k, m;
    uint32_t cell;   /* bytes per checksummed cell */
    uint64_t strip;  /* payload bytes per strip (a multiple of cell) */
    uint64_t len;    /* bytes of the segment */
    uint16_t dev[64 + 4];
};
size_t data_geom_encode(const struct data_geom *g, uint8_t *out);
int data_geom_decode(const uint8_t *p, size_t n, struct data_geom *ret) PL_WUR;

struct data_counters {
    uint64_t degraded_reads;  /* reads that needed parity */
    uint64_t unrecoverable;   /* reads that failed even with parity */
    uint64_t strips_repaired;
    uint64_t read_ahead_bytes; /* bytes readers took from the read-ahead */
};
void data_counters_get(struct data_store *ds, struct data_counters *ret);

/* Add or change a capacity device; strips live in "<path>/stripes", which
 * the caller creates (a missing one is how a lost device shows). */
int data_dev_set(struct data_store *ds, uint16_t id, const char *path, int state) PL_WUR;
int data_dev_state(struct data_store *ds, uint16_t id);
/* Is the device's directory there and usable? */
int data_dev_probe(struct data_store *ds, uint16_t id) PL_WUR;
/* Probe every working device; fail the ones that are gone. Returns how many
 * failed now. */
int data_devs_probe(struct data_store *ds);

/* Write segment seg (its first used bytes, from the buffer) as a stripe on
 * devices devs[0..k+m): durable when this returns; reads still go to the
 * buffer until data_stripe_attach. Fills *ret. */
int data_stripe_build(struct data_store *ds, uint64_t seg, uint64_t used, int k, int m,
                      const uint16_t *devs, struct data_geom *ret) PL_WUR;
/* Like data_stripe_build, for a new segment whose bytes are in memory
 * (destage writes re-encoded blocks there). */
int data_stripe_write(struct data_store *ds, uint64_t seg, const uint8_t *bytes, uint64_t len,
                      int k, int m, const uint16_t *devs, struct data_geom *ret) PL_WUR;
/* Read seg from its stripe from now on, and drop its buffer files. */
int data_stripe_attach(struct data_store *ds, uint64_t seg, const struct data_geom *g) PL_WUR;
/* Write strip idx of seg anew onto device dev (from the other strips). */
int data_strip_rebuild(struct data_store *ds, uint64_t seg, int idx, uint16_t dev) PL_WUR;
/* Is strip idx of seg present and whole? 0 yes, PL_ENOENT missing, PL_ECORRUPT bad cells. */
int data_strip_check(struct data_store *ds, uint64_t seg, int idx) PL_WUR;
/* Next strip a read found damaged (1), or 0 when none is queued. */
int data_repair_next(struct data_store *ds, uint64_t *ret_seg, int *ret_idx);
/* Verify every copy of every block of a buffer segment; rewrite bad copies
 * from a good mirror. Adds blocks checked, copies repaired and blocks with no
 * good copy to the three counters. */
int data_seg_scrub(struct data_store *ds, uint64_t seg, uint64_t used, uint64_t *checked,
                   uint64_t *repaired, uint64_t *lost) PL_WUR;
/* Delete strip files no stripe owns (known(seg) == 0) on every device. */
typedef int (*data_known_fn)(void *arg, uint64_t seg);
int data_stripes_sweep(struct data_store *ds, data_known_fn known, void *arg) PL_WUR;

/* The segment appends currently go to. */
uint64_t data_active_seg(struct data_store *ds);
/* A fresh segment id for a segment built elsewhere (a destaged stripe). */
uint64_t data_seg_reserve(struct data_store *ds);
/* Bytes in buffer segment files (one mirror's worth): what destage has yet
 * to move to stripes. */
uint64_t data_buffer_bytes(struct data_store *ds);
/* Start a new active segment (so the old one can be compacted). */
int data_seal_active(struct data_store *ds) PL_WUR;
/* Truncate a segment to used bytes on every mirror (drops an unacknowledged tail). */
int data_seg_truncate(struct data_store *ds, uint64_t seg, uint64_t used) PL_WUR;
/* Delete a segment's files on every mirror. */
int data_seg_delete(struct data_store *ds, uint64_t seg) PL_WUR;
/* Ids of segment files present on mirror 0, ascending; *ret malloc'd. */
int data_seg_list(struct data_store *ds, uint64_t **ret, size_t *ret_n) PL_WUR;
/* Bytes of all segment files on all mirrors. */
uint64_t data_disk_bytes(struct data_store *ds);

#endif

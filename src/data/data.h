/* data: content-defined chunking, chunk encoding, and the write-buffer
 * segment log.
 *
 * Design note: the segment log
 * - A segment is an append-only file "seg/<id:016x>.seg" present once in each
 *   buffer mirror directory; the same bytes are written to every mirror.
 * - A block is a 56-byte header followed by the stored payload:
 *     0  magic "PLCK"         4  version (1)      5  codec (0 raw, 1 zstd)
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

enum data_codec { DATA_CODEC_RAW = 0, DATA_CODEC_ZSTD = 1 };
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

/* Encode (compress when it helps) and append a chunk to the active segment on
 * every mirror. Not durable until data_sync(). Fills *ret_loc. */
int data_chunk_append(struct data_store *ds, const uint8_t fp[DATA_FP_LEN], const void *raw,
                      size_t n, struct data_loc *ret_loc) PL_WUR;
/* Append an already-encoded block (compaction moves blocks without recoding). */
int data_block_append(struct data_store *ds, const uint8_t *block, size_t n,
                      struct data_loc *ret_loc) PL_WUR;
/* Make every block appended to segment seg so far durable on all mirrors. */
int data_sync(struct data_store *ds, uint64_t seg) PL_WUR;

/* Read, verify and decode a chunk into out (capacity >= loc->raw_len).
 * Tries each mirror; PL_ECORRUPT when no copy verifies, PL_ENOENT when the
 * segment is gone (moved by compaction: look the location up again). */
int data_chunk_read(struct data_store *ds, const struct data_loc *loc,
                    const uint8_t fp[DATA_FP_LEN], void *out) PL_WUR;
/* Ask the kernel to start reading a block we will want soon. */
void data_prefetch(struct data_store *ds, const struct data_loc *loc);
/* Read the raw encoded block (header + payload) at loc into *ret (malloc'd). */
int data_block_read(struct data_store *ds, const struct data_loc *loc, uint8_t **ret,
                    size_t *ret_n) PL_WUR;

/* Walk the blocks of a sealed segment in order; cb returns < 0 to stop. */
typedef int (*data_block_fn)(void *arg, const struct data_loc *loc, const uint8_t fp[DATA_FP_LEN]);
int data_seg_walk(struct data_store *ds, uint64_t seg, uint64_t used, data_block_fn cb,
                  void *arg) PL_WUR;

/* The segment appends currently go to. */
uint64_t data_active_seg(struct data_store *ds);
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

/* Write-back of writes a head may acknowledge before they are durable
 * (wb.c says when). One per head; any thread may call. */
#ifndef PL_PROTO_WB_H
#define PL_PROTO_WB_H

#include <stddef.h>
#include <stdint.h>

#include "plenum/store.h"

struct wb;

/* label names the head in log lines; origin tags the flusher's store
 * changes (pl_store_origin) so the head can tell its own from others'. */
int wb_new(struct pl_store *st, const char *label, const void *origin, struct wb **ret) PL_WUR;
/* Writes everything back first. Accepts NULL. */
void wb_free(struct wb *w);
/* Copies data; PL_ENOMEM, or an error of an earlier batch is reported at settle. */
int wb_write(struct wb *w, uint64_t id, uint64_t off, const void *data, size_t n) PL_WUR;
/* Everything written to id so far is durable; a failed write-back's error. */
int wb_settle(struct wb *w, uint64_t id) PL_WUR;
/* Keep a change of mode, owner or times (PL_SET_* in mask, no size) of a
 * file with data in flight, to be written after that data: 1 if kept, 0 if
 * the caller must make it (nothing in flight, or other bits in mask). */
int wb_setattr(struct wb *w, uint64_t id, unsigned mask, const struct pl_attr *in) PL_WUR;
/* Attributes as the data and changes in flight make them. */
void wb_attr(struct wb *w, struct pl_attr *a);

#endif

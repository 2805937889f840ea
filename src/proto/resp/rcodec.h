/* RESP request decoding: arrays of bulk strings (what clients send) and
 * inline commands (what a person types into telnet), fed in pieces as they
 * arrive. Every argument lands in its own kv_val, so a SET's value becomes
 * the cached value without a copy; a large bulk can be received straight
 * into its buffer (resp_direct). Limits are Redis's: 1 048 576 arguments,
 * 512 MiB per bulk, 64 KiB inline. Pure (no I/O): fuzzed. */
#ifndef PL_RCODEC_H
#define PL_RCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kv.h"

#define RESP_ARGS_MAX (1024 * 1024)
#define RESP_INLINE_MAX (64 * 1024)

struct resp_parser {
    int state;
    int64_t nargs;
    size_t bulk_len, bulk_have, bulk_cap;
    struct kv_val *bulk;
    char line[RESP_INLINE_MAX + 2];
    size_t line_n;
    struct kv_val **args;
    size_t argc, cap;
    const char *err; /* the protocol error, in Redis's words */
    char errbuf[64];
};

void resp_parser_init(struct resp_parser *p);
/* Drop the current command's arguments (and any partial one). */
void resp_parser_release(struct resp_parser *p);
/* Consume up to n bytes (*used tells how many): 1 when a whole command is
 * ready in p->args/p->argc (take it, then resp_next), 0 when more input is
 * needed, PL_EPROTO with p->err set (the connection must end), PL_ENOMEM. */
int resp_feed(struct resp_parser *p, const uint8_t *buf, size_t n, size_t *used);
/* Forget the delivered command (its args are the caller's now, or freed). */
void resp_next(struct resp_parser *p, int keep_args);
/* Where the rest of a large bulk being received goes, so the caller can
 * read the socket straight into it: *ret_n bytes at *ret (0 when none).
 * Report what arrived with resp_direct_done. */
void resp_direct(struct resp_parser *p, uint8_t **ret, size_t *ret_n);
void resp_direct_done(struct resp_parser *p, size_t n);

/* Glob matching as Redis's KEYS and SCAN MATCH do (*, ?, [a-z], [^x], \x). */
int resp_glob(const char *pat, size_t pn, const uint8_t *s, size_t sn, int nocase);

#endif

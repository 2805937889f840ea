/* RESP request decoding (rcodec.h), written from the protocol spec. */
#include "proto/resp/rcodec.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

enum { S_START, S_ARRAY, S_BULKHDR, S_BULKDATA, S_BULKCRLF, S_INLINE };

void resp_parser_init(struct resp_parser *p)
{
    memset(p, 0, sizeof(*p));
}

void resp_next(struct resp_parser *p, int keep_args)
{
    for (size_t i = 0; !keep_args && i < p->argc; i++)
        kv_val_unref(p->args[i]);
    p->argc = 0;
    p->nargs = 0;
    p->state = S_START;
    p->line_n = 0;
}

void resp_parser_release(struct resp_parser *p)
{
    resp_next(p, 0);
    kv_val_unref(p->bulk);
    p->bulk = NULL;
    free(p->args);
    p->args = NULL;
    p->cap = 0;
}

static int arg_push(struct resp_parser *p, struct kv_val *v)
{
    if (p->argc == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        struct kv_val **na = realloc(p->args, cap * sizeof(struct kv_val *));
        if (!na) {
            kv_val_unref(v);
            return PL_ENOMEM;
        }
        p->args = na;
        p->cap = cap;
    }
    p->args[p->argc++] = v;
    return 0;
}

static int arg_copy(struct resp_parser *p, const char *s, size_t n)
{
    struct kv_val *v = kv_val_new(n);
    if (!v)
        return PL_ENOMEM;
    memcpy(v->data, s, n);
    return arg_push(p, v);
}

/* Bulks grow as their bytes arrive: a client that announces 512 MiB and
 * stalls holds only what it sent (or a recycled buffer, memory already in
 * use by the process). */
#define BULK_FIRST (1u << 20)

static int bulk_grow(struct resp_parser *p)
{
    size_t cap = PL_MIN(p->bulk_len, p->bulk_cap * 2);
    int rc = kv_val_grow(&p->bulk, cap, p->bulk_have);
    if (!rc)
        p->bulk_cap = PL_MIN(p->bulk->cap, p->bulk_len);
    return rc;
}

static int fail(struct resp_parser *p, const char *msg)
{
    p->err = msg;
    return PL_EPROTO;
}

/* A decimal integer making up all of s (optional '-'). */
static int parse_num(const char *s, size_t n, int64_t *ret)
{
    int neg = n && s[0] == '-';
    size_t i = neg;
    int64_t v = 0;
    if (i == n || n - i > 18)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *ret = neg ? -v : v;
    return 0;
}

/* Split an inline command into arguments: spaces separate, "double" and
 * 'single' quotes group, \n \r \t \\ \" \xHH escapes inside double quotes. */
static int inline_split(struct resp_parser *p, const char *s, size_t n)
{
    char *word = malloc(n + 1);
    size_t i = 0;
    int rc = word ? 0 : PL_ENOMEM;
    while (!rc) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        if (i == n)
            break;
        size_t wn = 0;
        int quote = 0;
        for (; i < n; i++) {
            char c = s[i];
            if (quote == '"' && c == '\\' && i + 1 < n) {
                char e = s[++i];
                if (e == 'x' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                    isxdigit((unsigned char)s[i + 2])) {
                    char hx[3] = {s[i + 1], s[i + 2], 0};
                    word[wn++] = (char)strtol(hx, NULL, 16);
                    i += 2;
                } else {
                    word[wn++] = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
                }
            } else if (quote && c == quote) {
                quote = 0;
                /* a closing quote must end the word */
                if (i + 1 < n && !isspace((unsigned char)s[i + 1])) {
                    rc = fail(p, "Protocol error: unbalanced quotes in request");
                    break;
                }
            } else if (!quote && (c == '"' || c == '\'') && wn == 0) {
                quote = (unsigned char)c;
            } else if (!quote && isspace((unsigned char)c)) {
                break;
            } else {
                word[wn++] = c;
            }
        }
        if (!rc && quote)
            rc = fail(p, "Protocol error: unbalanced quotes in request");
        if (!rc)
            rc = arg_copy(p, word, wn);
    }
    free(word);
    return rc;
}

/* Accumulate a line; 1 when complete (without its CRLF). */
static int take_line(struct resp_parser *p, const uint8_t *buf, size_t n, size_t *at, int inl)
{
    while (*at < n) {
        uint8_t c = buf[(*at)++];
        if (c == '\n') {
            if (p->line_n && p->line[p->line_n - 1] == '\r')
                p->line_n--;
            return 1;
        }
        if (p->line_n >= RESP_INLINE_MAX)
            return fail(p, inl ? "Protocol error: too big inline request"
                               : "Protocol error: too big mbulk count string");
        p->line[p->line_n++] = (char)c;
    }
    return 0;
}

int resp_feed(struct resp_parser *p, const uint8_t *buf, size_t n, size_t *used)
{
    size_t at = 0;
    int rc = 0;
    while (at < n && !rc) {
        switch (p->state) {
        case S_START:
            p->line_n = 0;
            p->state = buf[at] == '*' ? S_ARRAY : S_INLINE;
            if (p->state == S_ARRAY)
                at++;
            break;
        case S_INLINE:
            rc = take_line(p, buf, n, &at, 1);
            if (rc == 1) {
                rc = inline_split(p, p->line, p->line_n);
                p->line_n = 0;
                if (!rc && p->argc)
                    rc = 1;
                else if (!rc)
                    p->state = S_START; /* an empty line is no command */
            }
            break;
        case S_ARRAY:
            rc = take_line(p, buf, n, &at, 0);
            if (rc == 1) {
                int64_t v;
                rc = 0;
                if (parse_num(p->line, p->line_n, &v) || v > RESP_ARGS_MAX)
                    rc = fail(p, "Protocol error: invalid multibulk length");
                else if (v <= 0)
                    p->state = S_START; /* *0 and *-1: nothing to run */
                else {
                    p->nargs = v;
                    p->state = S_BULKHDR;
                }
                p->line_n = 0;
            }
            break;
        case S_BULKHDR:
            if (p->line_n == 0 && buf[at] != '$') {
                snprintf(p->errbuf, sizeof(p->errbuf), "Protocol error: expected '$', got '%c'",
                         isprint(buf[at]) ? buf[at] : '?');
                rc = fail(p, p->errbuf);
                break;
            }
            rc = take_line(p, buf, n, &at, 0);
            if (rc == 1) {
                int64_t v;
                rc = 0;
                if (parse_num(p->line + 1, p->line_n - 1, &v) || v < 0 ||
                    (uint64_t)v > KV_VAL_MAX)
                    rc = fail(p, "Protocol error: invalid bulk length");
                else if (!(p->bulk = kv_val_reuse((size_t)v)) &&
                         !(p->bulk = kv_val_new(PL_MIN((size_t)v, (size_t)BULK_FIRST))))
                    rc = PL_ENOMEM;
                else {
                    p->bulk->n = (size_t)v;
                    p->bulk_cap = PL_MIN((size_t)v, p->bulk->cap);
                    p->bulk_len = (size_t)v;
                    p->bulk_have = 0;
                    p->state = S_BULKDATA;
                }
                p->line_n = 0;
            }
            break;
        case S_BULKDATA: {
            if (p->bulk_have == p->bulk_cap && p->bulk_have < p->bulk_len) {
                rc = bulk_grow(p);
                if (rc)
                    break;
            }
            size_t take = PL_MIN(n - at, p->bulk_cap - p->bulk_have);
            memcpy(p->bulk->data + p->bulk_have, buf + at, take);
            p->bulk_have += take;
            at += take;
            if (p->bulk_have == p->bulk_len) {
                p->state = S_BULKCRLF;
                p->line_n = 0;
            }
            break;
        }
        case S_BULKCRLF:
            at++; /* the CRLF after the data: Redis skips it unread */
            if (++p->line_n == 2) {
                p->line_n = 0;
                rc = arg_push(p, p->bulk);
                p->bulk = NULL;
                if (!rc && (int64_t)p->argc == p->nargs)
                    rc = 1;
                else if (!rc)
                    p->state = S_BULKHDR;
            }
            break;
        }
    }
    *used = at;
    return rc;
}

void resp_direct(struct resp_parser *p, uint8_t **ret, size_t *ret_n)
{
    *ret = NULL;
    *ret_n = 0;
    if (p->state != S_BULKDATA || !p->bulk)
        return;
    if (p->bulk_have == p->bulk_cap && p->bulk_have < p->bulk_len && bulk_grow(p))
        return; /* out of memory: the buffered path reports it */
    *ret = p->bulk->data + p->bulk_have;
    *ret_n = p->bulk_cap - p->bulk_have;
}

void resp_direct_done(struct resp_parser *p, size_t n)
{
    p->bulk_have += n;
    if (p->bulk_have == p->bulk_len) {
        p->state = S_BULKCRLF;
        p->line_n = 0;
    }
}

static int lower(int c, int nocase)
{
    return nocase ? tolower(c) : c;
}

int resp_glob(const char *pat, size_t pn, const uint8_t *s, size_t sn, int nocase)
{
    size_t pi = 0, si = 0, star_p = (size_t)-1, star_s = 0;
    while (si < sn) {
        if (pi < pn && pat[pi] == '*') {
            star_p = ++pi;
            star_s = si;
            continue;
        }
        int ok = 0;
        size_t next = pi + 1;
        if (pi < pn && pat[pi] == '?') {
            ok = 1;
        } else if (pi < pn && pat[pi] == '[') {
            size_t j = pi + 1;
            int neg = j < pn && pat[j] == '^';
            int hit = 0;
            j += neg;
            for (; j < pn && pat[j] != ']'; j++) {
                if (pat[j] == '\\' && j + 1 < pn) {
                    hit |= lower(pat[++j], nocase) == lower(s[si], nocase);
                } else if (j + 2 < pn && pat[j + 1] == '-' && pat[j + 2] != ']') {
                    int a = lower(pat[j], nocase), b = lower(pat[j + 2], nocase),
                        c = lower(s[si], nocase);
                    if (a > b) {
                        int t = a;
                        a = b;
                        b = t;
                    }
                    hit |= c >= a && c <= b;
                    j += 2;
                } else {
                    hit |= lower(pat[j], nocase) == lower(s[si], nocase);
                }
            }
            ok = neg ? !hit : hit;
            next = j < pn ? j + 1 : j;
        } else if (pi < pn && pat[pi] == '\\' && pi + 1 < pn) {
            ok = lower(pat[pi + 1], nocase) == lower(s[si], nocase);
            next = pi + 2;
        } else if (pi < pn) {
            ok = lower(pat[pi], nocase) == lower(s[si], nocase);
        }
        if (ok) {
            pi = next;
            si++;
        } else if (star_p != (size_t)-1) {
            pi = star_p;
            si = ++star_s;
        } else {
            return 0;
        }
    }
    while (pi < pn && pat[pi] == '*')
        pi++;
    return pi == pn;
}

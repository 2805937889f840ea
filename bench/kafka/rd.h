/* The few internals rdkafka_performance.c uses, for building it against the public library. */
#ifndef RD_SHIM_H
#define RD_SHIM_H
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h> /* getopt */
typedef int64_t rd_ts_t;
static inline rd_ts_t rd_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (rd_ts_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
#define rd_snprintf snprintf
#define RD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define RD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RD_UNUSED __attribute__((unused))
#endif

#include "base/base.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int64_t pl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t pl_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec pl_deadline_ms(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* ---- logging ---- */
static enum pl_log_level log_level = PL_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void pl_log_set_level(enum pl_log_level lvl)
{
    log_level = lvl;
}

void pl_log(enum pl_log_level lvl, const char *subsys, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (lvl < log_level)
        return;
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ldZ level=%s subsys=%s %s\n", ts, now.tv_nsec / 1000000, names[lvl],
            subsys, msg);
    pthread_mutex_unlock(&log_lock);
}

/* ---- pl_buf ---- */
static char buf_empty[1];

void pl_buf_init(struct pl_buf *b)
{
    b->data = buf_empty;
    b->len = 0;
    b->cap = 0;
}

void pl_buf_release(struct pl_buf *b)
{
    if (b->cap)
        free(b->data);
    pl_buf_init(b);
}

int pl_buf_reserve(struct pl_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < b->len + extra + 1) {
        if (ncap > SIZE_MAX / 2)
            return PL_ENOMEM;
        ncap *= 2;
    }
    char *n = b->cap ? realloc(b->data, ncap) : malloc(ncap);
    if (!n)
        return PL_ENOMEM;
    if (!b->cap)
        n[0] = 0;
    b->data = n;
    b->cap = ncap;
    return 0;
}

int pl_buf_add(struct pl_buf *b, const void *p, size_t n)
{
    int rc = pl_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int pl_buf_addstr(struct pl_buf *b, const char *s)
{
    return pl_buf_add(b, s, strlen(s));
}

int pl_buf_addf(struct pl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PL_EINVAL;
    int rc = pl_buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void pl_buf_reset(struct pl_buf *b)
{
    b->len = 0;
    if (b->cap)
        b->data[0] = 0;
}

char *pl_buf_detach(struct pl_buf *b, size_t *ret_len)
{
    char *p = b->cap ? b->data : calloc(1, 1);
    if (ret_len)
        *ret_len = b->len;
    pl_buf_init(b);
    return p;
}

/* ---- files ---- */
int pl_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Step *iov, *n past w bytes written. */
static void iov_advance(struct iovec **iov, int *n, size_t w)
{
    while (*n > 0 && w >= (*iov)->iov_len) {
        w -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + w;
        (*iov)->iov_len -= w;
    }
}

int pl_pwritev_all(int fd, struct iovec *iov, int n, off_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += w;
        iov_advance(&iov, &n, (size_t)w);
    }
    return 0;
}

int pl_writev_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, PL_MIN(n, IOV_MAX));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        iov_advance(&iov, &n, (size_t)w);
    }
    return 0;
}

int pl_pread_all(int fd, void *buf, size_t n, off_t off)
{
    char *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return PL_EIO;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int pl_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int pl_mkdirs(const char *path, unsigned mode)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n >= sizeof(tmp))
        return PL_ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != 0)
            continue;
        char c = tmp[i];
        tmp[i] = 0;
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -errno;
        tmp[i] = c;
    }
    return 0;
}

int pl_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int pl_map_huge(size_t len, void **ret)
{
    const size_t huge = 2u << 20;
    if (!len || len % huge)
        return PL_EINVAL;
    uint8_t *m = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return PL_ENOMEM;
    /* the kernel places huge pages only on 2 MiB boundaries: trim to one */
    uint8_t *p = (uint8_t *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (p + len < m + len + huge)
        munmap(p + len, (size_t)(m + len + huge - (p + len)));
    (void)madvise(p, len, MADV_HUGEPAGE); /* a kernel without THP still maps it */
    *ret = p;
    return 0;
}

int pl_random(void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

void pl_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

int pl_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pl_unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return PL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int hi = pl_hexval(s[2 * i]), lo = pl_hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return PL_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int pl_sockaddr_port(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET6) {
        struct sockaddr_in6 a6;
        memcpy(&a6, sa, sizeof(a6));
        return ntohs(a6.sin6_port);
    }
    struct sockaddr_in a4;
    memcpy(&a4, sa, sizeof(a4));
    return ntohs(a4.sin_port);
}

void pl_fmt_bytes(uint64_t n, char *out, size_t outsz)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < PL_ARRAY_LEN(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, outsz, "%llu B", (unsigned long long)n);
    else
        snprintf(out, outsz, "%.1f %s", v, units[u]);
}

/* bench/ec_bench: our erasure-coding path vs a bare ISA-L loop on the same
 * buffers, in the same run.
 *
 * encode: ec_encode() (what destage runs) vs ec_init_tables + ec_encode_data
 *   with tables made once.
 * degraded decode: ec_recover() of the first m data strips from the others,
 *   piece by piece as degraded reads and rebuilds do (it inverts the matrix
 *   per call), vs ec_encode_data with a decode matrix inverted once.
 * Throughput counts data bytes (k strips) per second. */
#include <isa-l/erasure_code.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "data/ec.h"

static double now_s(void)
{
    return (double)pl_mono_ns() / 1e9;
}

struct layout {
    int k, m;
};

int main(int argc, char **argv)
{
    size_t strip = (size_t)(argc > 1 ? atol(argv[1]) : 4) << 20; /* MiB per strip */
    size_t piece = (size_t)(argc > 2 ? atol(argv[2]) : 1024) << 10; /* KiB per decode call */
    double secs = argc > 3 ? atof(argv[3]) : 1.0;
    static const struct layout lay[] = {{4, 2}, {8, 3}, {20, 4}};
    printf("%-6s %-18s %12s %12s %7s\n", "layout", "test", "plenum_GB/s", "isal_GB/s", "ratio");
    double worst = 1e9;
    for (size_t li = 0; li < PL_ARRAY_LEN(lay); li++) {
        int k = lay[li].k, m = lay[li].m;
        uint8_t *buf[EC_MAX_K + EC_MAX_M], *out[EC_MAX_M];
        for (int i = 0; i < k + m; i++) {
            buf[i] = aligned_alloc(64, strip);
            memset(buf[i], 0, strip);
        }
        for (int i = 0; i < m; i++)
            out[i] = aligned_alloc(64, strip);
        uint64_t s = 42;
        for (int i = 0; i < k; i++)
            for (size_t j = 0; j < strip; j += 8) {
                uint64_t v = pl_splitmix64(&s);
                memcpy(buf[i] + j, &v, 8);
            }
        struct ec_code code;
        if (ec_code_init(&code, k, m))
            return 1;
        /* encode: ours vs bare, alternating, best of 3 */
        double ours = 0, bare = 0;
        uint8_t *gen = malloc((size_t)(k + m) * (size_t)k), *tbl = malloc(32u * (size_t)k * (size_t)m);
        gf_gen_cauchy1_matrix(gen, k + m, k);
        ec_init_tables(k, m, gen + k * k, tbl);
        for (int rep = 0; rep < 3; rep++) {
            int n = 0;
            double t0 = now_s(), t;
            do {
                ec_encode(&code, strip, buf, buf + k);
                n++;
            } while ((t = now_s() - t0) < secs);
            ours = PL_MAX(ours, (double)n * (double)strip * k / t / 1e9);
            n = 0;
            t0 = now_s();
            do {
                ec_encode_data((int)strip, k, m, tbl, buf, buf + k);
                n++;
            } while ((t = now_s() - t0) < secs);
            bare = PL_MAX(bare, (double)n * (double)strip * k / t / 1e9);
        }
        printf("%2d+%-3d %-18s %12.2f %12.2f %6.2fx\n", k, m, "encode", ours, bare, ours / bare);
        worst = PL_MIN(worst, ours / bare);
        /* degraded decode of the first m data strips from the next k strips */
        int have[EC_MAX_K], want[EC_MAX_M];
        for (int i = 0; i < k; i++)
            have[i] = m + i;
        for (int i = 0; i < m; i++)
            want[i] = i;
        uint8_t *sub = malloc((size_t)k * (size_t)k), *inv = malloc((size_t)k * (size_t)k);
        uint8_t *rows = malloc((size_t)m * (size_t)k), *dtbl = malloc(32u * (size_t)k * (size_t)m);
        for (int i = 0; i < k; i++)
            memcpy(sub + i * k, gen + have[i] * k, (size_t)k);
        gf_invert_matrix(sub, inv, k);
        for (int w = 0; w < m; w++)
            memcpy(rows + w * k, inv + want[w] * k, (size_t)k); /* data rows: the inverse's */
        ec_init_tables(k, m, rows, dtbl);
        ours = bare = 0;
        for (int rep = 0; rep < 3; rep++) {
            size_t done = 0;
            double t0 = now_s(), t;
            do {
                for (size_t off = 0; off < strip; off += piece) {
                    uint8_t *hp[EC_MAX_K], *op[EC_MAX_M];
                    for (int i = 0; i < k; i++)
                        hp[i] = buf[have[i]] + off;
                    for (int i = 0; i < m; i++)
                        op[i] = out[i] + off;
                    if (ec_recover(&code, PL_MIN(piece, strip - off), have, hp, m, want, op))
                        return 1;
                }
                done += strip;
            } while ((t = now_s() - t0) < secs);
            ours = PL_MAX(ours, (double)done * k / t / 1e9);
            done = 0;
            t0 = now_s();
            do {
                for (size_t off = 0; off < strip; off += piece) {
                    uint8_t *hp[EC_MAX_K], *op[EC_MAX_M];
                    for (int i = 0; i < k; i++)
                        hp[i] = buf[have[i]] + off;
                    for (int i = 0; i < m; i++)
                        op[i] = out[i] + off;
                    ec_encode_data((int)PL_MIN(piece, strip - off), k, m, dtbl, hp, op);
                }
                done += strip;
            } while ((t = now_s() - t0) < secs);
            bare = PL_MAX(bare, (double)done * k / t / 1e9);
        }
        for (int i = 0; i < m; i++)
            if (memcmp(out[i], buf[i], strip)) {
                fprintf(stderr, "%d+%d: decoded strip %d differs\n", k, m, i);
                return 1;
            }
        char name[32];
        snprintf(name, sizeof(name), "decode %zuK", piece >> 10);
        printf("%2d+%-3d %-18s %12.2f %12.2f %6.2fx\n", k, m, name, ours, bare, ours / bare);
        worst = PL_MIN(worst, ours / bare);
        free(sub);
        free(inv);
        free(rows);
        free(dtbl);
        free(gen);
        free(tbl);
        ec_code_release(&code);
        for (int i = 0; i < k + m; i++)
            free(buf[i]);
        for (int i = 0; i < m; i++)
            free(out[i]);
    }
    printf("worst ratio (plenum / bare ISA-L): %.2fx\n", worst);
    return 0;
}

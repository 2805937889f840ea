/* FastCDC-style content-defined chunking with normalized chunk sizes.
 *
 * The gear table is derived from a fixed seed so that chunk boundaries are the
 * same in every process and every release: changing it would break dedup
 * against everything already stored. */
#include "data/data.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

static uint64_t gear[256];
static pthread_once_t gear_once = PTHREAD_ONCE_INIT;

static void gear_fill(void)
{
    uint64_t s = 0x506c656e756d4344ull; /* "PlenumCD" */
    for (int i = 0; i < 256; i++)
        gear[i] = pl_splitmix64(&s);
}

static int log2u(uint32_t v)
{
    int b = 0;
    while ((1u << b) < v)
        b++;
    return b;
}

int data_cdc_init(struct data_cdc *c, uint32_t min, uint32_t avg, uint32_t max)
{
    if (!avg || (avg & (avg - 1)) || min < 64 || min >= avg || avg >= max ||
        max > DATA_MAX_CHUNK)
        return PL_EINVAL;
    pthread_once(&gear_once, gear_fill);
    int bits = log2u(avg);
    if (bits < 8 || bits > 20)
        return PL_EINVAL;
    c->min = min;
    c->avg = avg;
    c->max = max;
    /* normalization level 2: harder to cut before avg, easier after.
     * The shifted gear hash mixes the newest byte into the low bit, so the
     * high bits see the longest window: test those. */
    c->mask_s = ~0ull << (64 - (bits + 2));
    c->mask_l = ~0ull << (64 - (bits - 2));
    return 0;
}

/* The first cut in [i, to) under mask, or 0 with *hp the hash through
 * to - 1. On entry *hp is the hash through i - 1.
 *
 * The gear hash is one long dependency chain, one byte per step, and the
 * loop around it was a third of a Kafka broker's CPU for 1 KiB records. A
 * position's hash depends only on its own byte and the 63 before it (older
 * bytes are shifted out of the 64-bit word), so four stretches of CDC_LANE
 * bytes are hashed side by side, each after 64 bytes of warm-up, with the
 * very same hashes as one pass: the cuts never change (stored data dedups
 * against them). The earliest stretch's cut wins; the work past it, at most
 * three stretches, is the price. Measured here: 1.9 -> 2.6 GB/s. */
#define CDC_LANE 2048u
#define CDC_LANES 4u

static inline uint64_t gear_warm(const uint8_t *p, size_t at)
{
    uint64_t g = 0;
    for (size_t j = at - 64; j < at; j++)
        g = (g << 1) + gear[p[j]];
    return g;
}

static size_t cdc_scan(const uint8_t *p, size_t i, size_t to, uint64_t *hp, uint64_t mask)
{
    uint64_t h = *hp;
    while (to - i >= CDC_LANES * CDC_LANE) {
        const uint8_t *a = p + i, *b = a + CDC_LANE, *c = b + CDC_LANE, *d = c + CDC_LANE;
        uint64_t gb = gear_warm(p, i + CDC_LANE), gc = gear_warm(p, i + 2 * CDC_LANE),
                 gd = gear_warm(p, i + 3 * CDC_LANE);
        size_t cb = 0, cc = 0, cd = 0;
        for (size_t k = 0; k < CDC_LANE; k++) {
            h = (h << 1) + gear[a[k]];
            gb = (gb << 1) + gear[b[k]];
            gc = (gc << 1) + gear[c[k]];
            gd = (gd << 1) + gear[d[k]];
            if (__builtin_expect(!(h & mask), 0))
                return i + k + 1;
            if (__builtin_expect(!(gb & mask), 0) && !cb)
                cb = i + CDC_LANE + k + 1;
            if (__builtin_expect(!(gc & mask), 0) && !cc)
                cc = i + 2 * CDC_LANE + k + 1;
            if (__builtin_expect(!(gd & mask), 0) && !cd)
                cd = i + 3 * CDC_LANE + k + 1;
        }
        if (cb || cc || cd)
            return cb ? cb : cc ? cc : cd;
        h = gd;
        i += CDC_LANES * CDC_LANE;
    }
    for (; i < to; i++) {
        h = (h << 1) + gear[p[i]];
        if (!(h & mask))
            return i + 1;
    }
    *hp = h;
    return 0;
}

size_t data_cdc_cut(const struct data_cdc *c, const uint8_t *p, size_t n, int final)
{
    if (n <= c->min)
        return final ? n : 0;
    /* the hash starts at min: nothing before it can be a cut */
    uint64_t h = 0;
    size_t end = PL_MIN((size_t)c->max, n), avg = PL_MIN((size_t)c->avg, end), cut;
    cut = cdc_scan(p, c->min, avg, &h, c->mask_s);
    if (!cut)
        cut = cdc_scan(p, avg, end, &h, c->mask_l);
    if (cut)
        return cut;
    if (end >= c->max)
        return c->max;
    return final ? n : 0;
}

static EVP_MD *sha256_md;
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void sha_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void data_fingerprint(const void *p, size_t n, uint8_t out[DATA_FP_LEN])
{
    pthread_once(&sha_once, sha_fetch);
    unsigned int len = DATA_FP_LEN;
    EVP_Digest(p, n, out, &len, sha256_md, NULL);
}

int data_is_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    if (n == 0)
        return 1;
    if (b[0])
        return 0;
    /* compare the buffer with itself shifted: all equal and first is 0 */
    return memcmp(b, b + 1, n - 1) == 0;
}

/* Features: for each of the DATA_SF * DATA_SF_FEATURES transforms
 * t_i(h) = a_i * h + b_i, the maximum over positions where the rolling hash
 * has its low 5 bits zero (a 1/32 sample, so a sketch costs a fraction of a
 * pass). Fixed constants: sketches must agree across processes.
 *
 * Speed: the rolling hash is one long dependency chain, so the chunk is
 * hashed as two halves interleaved. A position's hash depends only on the 64
 * bytes before it (older bytes are shifted out), so the second half starts
 * 64 bytes early and its hashes are exactly the serial ones; the maximum does
 * not care about order. Sampled hashes are batched and folded into the
 * features with AVX-512 where the CPU has it. */
enum { SK_NF = DATA_SF * DATA_SF_FEATURES, SK_BATCH = 256 };

static const uint64_t sk_mul[SK_NF] = {
    0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0x2545f4914f6cdd1dull,
    0xd6e8feb86659fd93ull, 0xa0761d6478bd642full, 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull,
    0x589965cc75374cc3ull, 0x1d8e4e27c47d124full, 0xff51afd7ed558ccdull, 0xc4ceb9fe1a85ec53ull};

static uint64_t sk_add(int f)
{
    return (uint64_t)f * 0x632be59bd9b4e019ull;
}

static void sk_fold_scalar(const uint64_t *hs, size_t n, uint64_t feat[SK_NF])
{
    for (size_t k = 0; k < n; k++)
        for (int f = 0; f < SK_NF; f++) {
            uint64_t t = hs[k] * sk_mul[f] + sk_add(f);
            if (t > feat[f])
                feat[f] = t;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
_Static_assert(SK_NF > 8 && SK_NF <= 16, "features fill two 8-lane vectors");

__attribute__((target("avx512f,avx512dq"))) static void
sk_fold_avx512(const uint64_t *hs, size_t n, uint64_t feat[SK_NF])
{
    uint64_t mul[16] = {0}, add[16] = {0}, out[16] = {0};
    for (int f = 0; f < SK_NF; f++) {
        mul[f] = sk_mul[f];
        add[f] = sk_add(f);
        out[f] = feat[f];
    }
    __m512i ma = _mm512_loadu_si512(mul), mb = _mm512_loadu_si512(mul + 8);
    __m512i aa = _mm512_loadu_si512(add), ab = _mm512_loadu_si512(add + 8);
    __m512i fa = _mm512_loadu_si512(out), fb = _mm512_loadu_si512(out + 8);
    for (size_t k = 0; k < n; k++) {
        __m512i h = _mm512_set1_epi64((long long)hs[k]);
        fa = _mm512_max_epu64(fa, _mm512_add_epi64(_mm512_mullo_epi64(h, ma), aa));
        fb = _mm512_max_epu64(fb, _mm512_add_epi64(_mm512_mullo_epi64(h, mb), ab));
    }
    _mm512_storeu_si512(out, fa);
    _mm512_storeu_si512(out + 8, fb);
    memcpy(feat, out, sizeof(uint64_t) * SK_NF);
}
#endif

static void (*sk_fold)(const uint64_t *, size_t, uint64_t *) = sk_fold_scalar;

static void sk_pick(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
        sk_fold = sk_fold_avx512;
#endif
}

static pthread_once_t sk_once = PTHREAD_ONCE_INIT;

void data_sketch(const void *p, size_t n, uint64_t sf[DATA_SF])
{
    uint64_t feat[SK_NF] = {0}, hs[SK_BATCH + 2];
    const uint8_t *b = p;
    size_t ns = 0, half = n >= 256 ? n / 2 : 0, i = 0;
    uint64_t h1 = 0, h2 = 0;
    pthread_once(&gear_once, gear_fill);
    pthread_once(&sk_once, sk_pick);
    if (half) {
        h2 = gear_warm(b, half);
        for (i = 0; i < half; i++) {
            h1 = (h1 << 1) + gear[b[i]];
            h2 = (h2 << 1) + gear[b[half + i]];
            hs[ns] = h1;
            ns += !(h1 & 31);
            hs[ns] = h2;
            ns += !(h2 & 31);
            if (ns >= SK_BATCH) {
                sk_fold(hs, ns, feat);
                ns = 0;
            }
        }
        i = 2 * half; /* an odd length leaves one byte, which follows the second half */
        h1 = h2;
    }
    for (; i < n; i++) {
        h1 = (h1 << 1) + gear[b[i]];
        hs[ns] = h1;
        ns += !(h1 & 31);
        if (ns >= SK_BATCH) {
            sk_fold(hs, ns, feat);
            ns = 0;
        }
    }
    sk_fold(hs, ns, feat);
    for (int s = 0; s < DATA_SF; s++) {
        uint64_t x = 0x53696d4c6172ull + (uint64_t)s; /* "SimLar" */
        for (int f = 0; f < DATA_SF_FEATURES; f++) {
            x ^= feat[s * DATA_SF_FEATURES + f];
            x = pl_splitmix64(&x);
        }
        sf[s] = x;
    }
}

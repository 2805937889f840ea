/* XXH3 through the library's runtime dispatch on x86-64: AVX2 or AVX-512
 * when the CPU has them (27 GB/s against the SSE2 default's 10 on our
 * machines), so verifying every read costs little. Include this, not
 * <xxhash.h>. */
#ifndef PL_BASE_XXH_H
#define PL_BASE_XXH_H

#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#endif

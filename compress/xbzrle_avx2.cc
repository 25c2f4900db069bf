// AVX2 encoder. Compiled with a function-level target attribute only, so the
// binary still runs on any x86-64; xbzrle.cc dispatches to it at runtime.
#include <immintrin.h>

#include "compress/xbzrle_internal.h"

namespace romulus::compress::internal {

__attribute__((target("avx2,bmi,bmi2"))) int EncodeDeltaAvx2(const uint8_t* old_page,
                                                             const uint8_t* new_page,
                                                             uint8_t* out, size_t cap) {
  uint64_t bounds[64];
  uint64_t summary = 0, carry = 0;
  for (unsigned k = 0; k < 64; ++k) {
    const auto* o = reinterpret_cast<const __m256i*>(old_page + 64 * k);
    const auto* n = reinterpret_cast<const __m256i*>(new_page + 64 * k);
    // Two 32-byte equality masks make one 64-byte change mask.
    const __m256i e0 = _mm256_cmpeq_epi8(_mm256_loadu_si256(o), _mm256_loadu_si256(n));
    const __m256i e1 = _mm256_cmpeq_epi8(_mm256_loadu_si256(o + 1), _mm256_loadu_si256(n + 1));
    const uint64_t eq = static_cast<uint32_t>(_mm256_movemask_epi8(e0)) |
                        uint64_t{static_cast<uint32_t>(_mm256_movemask_epi8(e1))} << 32;
    bounds[k] = Boundaries(~eq, &carry);
    summary |= uint64_t{bounds[k] != 0} << k;
  }
  return WalkBoundaries(bounds, summary, new_page, out, cap);
}

}  // namespace romulus::compress::internal

// AVX-512BW encoder. Compiled with a function-level target attribute only, so
// the binary still runs on any x86-64; xbzrle.cc dispatches to it at runtime.
#include <immintrin.h>

#include "compress/xbzrle_internal.h"

namespace romulus::compress::internal {

__attribute__((target("avx512f,avx512bw,bmi,bmi2"))) int EncodeDeltaAvx512(
    const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap) {
  // vpcmpb yields the 64-byte change mask directly in a mask register.
  uint64_t bounds[64];
  uint64_t summary = 0, carry = 0;
  for (unsigned k = 0; k < 64; ++k) {
    const __m512i a = _mm512_loadu_si512(old_page + 64 * k);
    const __m512i b = _mm512_loadu_si512(new_page + 64 * k);
    bounds[k] = Boundaries(_mm512_cmpneq_epu8_mask(a, b), &carry);
    summary |= uint64_t{bounds[k] != 0} << k;
  }
  return WalkBoundaries(bounds, summary, new_page, out, cap);
}

}  // namespace romulus::compress::internal

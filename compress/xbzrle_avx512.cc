// AVX-512BW encoder. Compiled with a function-level target attribute only, so
// the binary still runs on any x86-64; xbzrle.cc dispatches to it at runtime.
#include <immintrin.h>

#include "compress/xbzrle_internal.h"

namespace romulus::compress::internal {

__attribute__((target("avx512f,avx512bw,bmi,bmi2"))) int EncodeDeltaAvx512(
    const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap) {
  RunWalker<0, 0> walker(new_page, out, cap);
  // 256 bytes per step: the four 64-byte change masks come straight out of
  // vpcmpb into mask registers; a step with no change inside a zero run
  // (the common case) costs one test and one branch.
  for (uint32_t off = 0; off < kPageSize; off += 256) {
    uint64_t m[4];
    for (int k = 0; k < 4; ++k) {
      const __m512i a = _mm512_loadu_si512(old_page + off + 64 * k);
      const __m512i b = _mm512_loadu_si512(new_page + off + 64 * k);
      m[k] = _mm512_cmpneq_epu8_mask(a, b);
    }
    if (((m[0] | m[1]) | (m[2] | m[3])) == 0 && !walker.in_change()) continue;
    for (int k = 0; k < 4; ++k)
      if (!walker.Block(off + 64 * k, m[k])) return -1;
  }
  return walker.Finish();
}

}  // namespace romulus::compress::internal

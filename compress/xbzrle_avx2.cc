// AVX2 encoder. Compiled with a function-level target attribute only, so the
// binary still runs on any x86-64; xbzrle.cc dispatches to it at runtime.
#include <immintrin.h>

#include "compress/xbzrle_internal.h"

namespace romulus::compress::internal {

namespace {

// Bit k set iff byte k of the 64 bytes at old/new differs.
__attribute__((target("avx2,bmi,bmi2"), always_inline)) inline uint64_t DiffMask64(
    const uint8_t* o, const uint8_t* n) {
  const __m256i e0 = _mm256_cmpeq_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(o)),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(n)));
  const __m256i e1 =
      _mm256_cmpeq_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + 32)),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(n + 32)));
  const uint64_t eq = static_cast<uint32_t>(_mm256_movemask_epi8(e0)) |
                      (uint64_t{static_cast<uint32_t>(_mm256_movemask_epi8(e1))} << 32);
  return ~eq;
}

}  // namespace

__attribute__((target("avx2,bmi,bmi2"))) int EncodeDeltaAvx2(const uint8_t* old_page,
                                                             const uint8_t* new_page,
                                                             uint8_t* out, size_t cap) {
  RunWalker<0, 0> walker(new_page, out, cap);
  for (uint32_t off = 0; off < kPageSize; off += 256) {
    if (!walker.in_change()) {
      // Skip 256 unchanged bytes with one OR-reduction of the XORs instead of
      // building four masks.
      __m256i acc = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i a =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(old_page + off + 32 * k));
        const __m256i b =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(new_page + off + 32 * k));
        acc = _mm256_or_si256(acc, _mm256_xor_si256(a, b));
      }
      if (_mm256_testz_si256(acc, acc)) continue;
    }
    for (uint32_t k = 0; k < 4; ++k) {
      const uint32_t base = off + 64 * k;
      if (!walker.Block(base, DiffMask64(old_page + base, new_page + base))) return -1;
    }
  }
  return walker.Finish();
}

}  // namespace romulus::compress::internal

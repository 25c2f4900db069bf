#include "compress/xbzrle_reference.h"

#include <immintrin.h>

#include <cstring>

#include "compress/page.h"
#include "compress/xbzrle_internal.h"

namespace romulus::compress {

namespace {

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

int EncodeDeltaQemuStyle(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out,
                         size_t cap) {
  constexpr size_t kWord = sizeof(uint64_t);
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  size_t i = 0, d = 0;
  while (i < kPageSize) {
    size_t zrun = 0, nzrun = 0;
    // Zero run: bytes until the remaining length is a multiple of the word,
    // then whole words, then bytes again to find the first change.
    size_t rem = (kPageSize - i) % kWord;
    while (rem && old_page[i] == new_page[i]) ++zrun, ++i, --rem;
    if (!rem) {
      while (i < kPageSize && Load64(old_page + i) == Load64(new_page + i)) i += kWord, zrun += kWord;
      while (i < kPageSize && old_page[i] == new_page[i]) ++zrun, ++i;
    }
    if (zrun == kPageSize) return 0;
    if (i == kPageSize) return static_cast<int>(d);  // trailing zero run omitted
    if (d + internal::RunLengthSize(static_cast<uint32_t>(zrun)) > cap) return -1;
    d += internal::PutRun(out + d, static_cast<uint32_t>(zrun));

    // Change run: bytes up to a word boundary, then words while no byte of
    // the XOR is zero, then bytes to find the exact end.
    rem = (kPageSize - i) % kWord;
    while (rem && old_page[i] != new_page[i]) ++nzrun, ++i, --rem;
    if (!rem) {
      while (i < kPageSize) {
        const uint64_t x = Load64(old_page + i) ^ Load64(new_page + i);
        if ((x - kOnes) & ~x & kHigh) {  // some byte of x is zero: the run ends here
          while (old_page[i] != new_page[i]) ++nzrun, ++i;
          break;
        }
        i += kWord, nzrun += kWord;
      }
    }
    if (d + internal::RunLengthSize(static_cast<uint32_t>(nzrun)) + nzrun > cap) return -1;
    d += internal::PutRun(out + d, static_cast<uint32_t>(nzrun));
    std::memcpy(out + d, new_page + i - nzrun, nzrun);
    d += nzrun;
  }
  return static_cast<int>(d);
}

namespace {

bool ReadBothScalar(const uint8_t* a, const uint8_t* b) {
  uint64_t acc = 0;
  for (size_t i = 0; i < kPageSize; i += 8) acc |= Load64(a + i) ^ Load64(b + i);
  return acc != 0;
}

__attribute__((target("avx2"))) bool ReadBothAvx2(const uint8_t* a, const uint8_t* b) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  for (size_t i = 0; i < kPageSize; i += 64) {
    const auto* pa = reinterpret_cast<const __m256i*>(a + i);
    const auto* pb = reinterpret_cast<const __m256i*>(b + i);
    acc0 = _mm256_or_si256(acc0, _mm256_xor_si256(_mm256_loadu_si256(pa), _mm256_loadu_si256(pb)));
    acc1 = _mm256_or_si256(acc1,
                           _mm256_xor_si256(_mm256_loadu_si256(pa + 1), _mm256_loadu_si256(pb + 1)));
  }
  acc0 = _mm256_or_si256(acc0, acc1);
  return !_mm256_testz_si256(acc0, acc0);
}

}  // namespace

bool ReadBothPages(const uint8_t* old_page, const uint8_t* new_page) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? ReadBothAvx2(old_page, new_page) : ReadBothScalar(old_page, new_page);
}

}  // namespace romulus::compress

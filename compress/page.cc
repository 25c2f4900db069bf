#include "compress/page.h"

#include <cstring>

namespace romulus::compress {

const char* PageKindName(PageKind kind) {
  switch (kind) {
    case PageKind::kZero: return "zero";
    case PageKind::kUnchanged: return "unchanged";
    case PageKind::kDelta: return "delta";
    case PageKind::kRaw: return "raw";
    case PageKind::kRawLz4: return "raw-lz4";
  }
  return "unknown";
}

bool IsZeroPage(const uint8_t* page) {
  // OR 256 bytes into one accumulator before each branch: the fixed-size
  // inner loop vectorizes (SSE2 on any x86-64) and a nonzero page usually
  // exits within the first chunk. memcpy keeps the loads alignment-agnostic.
  constexpr size_t kChunk = 256;
  for (size_t off = 0; off < kPageSize; off += kChunk) {
    uint64_t acc = 0;
    for (size_t i = 0; i < kChunk; i += sizeof(uint64_t)) {
      uint64_t w;
      std::memcpy(&w, page + off + i, sizeof w);
      acc |= w;
    }
    if (acc != 0) return false;
  }
  return true;
}

}  // namespace romulus::compress

// Basic page facts shared by the codec, the cache and the engine.
#pragma once

#include <cstddef>
#include <cstdint>

namespace romulus::compress {

inline constexpr size_t kPageShift = 12;
inline constexpr size_t kPageSize = size_t{1} << kPageShift;

// How one dirty page travels. Values are wire values (3 bits): never renumber.
enum class PageKind : uint8_t {
  kZero = 0,       // all bytes zero; no payload
  kUnchanged = 1,  // dirty but equal to the cached copy; no payload
  kDelta = 2,      // XBZRLE delta against the cached copy
  kRaw = 3,        // the whole page
  kRawLz4 = 4,     // the whole page, LZ4-compressed
};
inline constexpr int kNumPageKinds = 5;
const char* PageKindName(PageKind kind);

// True if all kPageSize bytes are zero.
bool IsZeroPage(const uint8_t* page);

}  // namespace romulus::compress

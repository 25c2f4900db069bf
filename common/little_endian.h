// Little-endian loads and stores on byte pointers: the one home for them.
// Every byte layout Romulus defines (wire frames and messages, the image
// journal, the sim guest's state blob, the page cache's digests) and the Xen
// migration-v2 records it parses are little-endian; each is read and written
// through these, never through a raw struct or a pointer cast, so the layout
// is the one the docs describe on every host.
//
// memcpy rather than a cast: the bytes are usually unaligned (inside a frame
// or a record) and reading them through a uint32_t* would break the aliasing
// rules; compilers turn each of these into one plain load or store (plus a
// byte swap on a big-endian host, never on x86).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace romulus {

namespace little_endian_internal {

inline uint16_t FromLE(uint16_t v) {
  if constexpr (std::endian::native == std::endian::big) return __builtin_bswap16(v);
  return v;
}
inline uint32_t FromLE(uint32_t v) {
  if constexpr (std::endian::native == std::endian::big) return __builtin_bswap32(v);
  return v;
}
inline uint64_t FromLE(uint64_t v) {
  if constexpr (std::endian::native == std::endian::big) return __builtin_bswap64(v);
  return v;
}

template <typename T>
inline T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return FromLE(v);
}

template <typename T>
inline void Store(uint8_t* p, T v) {
  v = FromLE(v);  // the swap is its own inverse
  std::memcpy(p, &v, sizeof v);
}

}  // namespace little_endian_internal

inline uint16_t LoadLE16(const uint8_t* p) { return little_endian_internal::Load<uint16_t>(p); }
inline uint32_t LoadLE32(const uint8_t* p) { return little_endian_internal::Load<uint32_t>(p); }
inline uint64_t LoadLE64(const uint8_t* p) { return little_endian_internal::Load<uint64_t>(p); }

inline void StoreLE16(uint8_t* p, uint16_t v) { little_endian_internal::Store(p, v); }
inline void StoreLE32(uint8_t* p, uint32_t v) { little_endian_internal::Store(p, v); }
inline void StoreLE64(uint8_t* p, uint64_t v) { little_endian_internal::Store(p, v); }

}  // namespace romulus

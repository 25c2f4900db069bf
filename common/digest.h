// MemoryDigest: an incremental digest of a whole guest memory image.
//
// digest = sum over pfns (mod 2^64) of PageHash(pfn, page), where an all-zero
// page hashes to 0 (so a fresh, zeroed guest has digest 0 and the first sync
// needs no special case). Because it is a sum, replacing one page costs one
// subtraction and one addition: both sides update it from the dirty pages
// only, O(dirty) per epoch, and compare at every checkpoint end. It guards
// against bugs and corruption (the channel itself is authenticated by TLS),
// not against an adversary choosing pages.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"

namespace romulus {

uint64_t PageHash(uint64_t pfn, const uint8_t* page);  // 4096 bytes

class MemoryDigest {
 public:
  static Result<std::unique_ptr<MemoryDigest>> Create(uint64_t guest_pages);
  // page must be 4096 bytes; pfn < guest_pages.
  void Update(uint64_t pfn, const uint8_t* page);
  // The same with the page's PageHash already known (pfn < guest_pages).
  void SetHash(uint64_t pfn, uint64_t hash) {
    sum_ = sum_ - hashes_[pfn] + hash;
    hashes_[pfn] = hash;
  }
  uint64_t hash(uint64_t pfn) const { return hashes_[pfn]; }
  // Becomes a copy of `other` (same guest size, else InvalidArgument).
  Status CopyFrom(const MemoryDigest& other);
  uint64_t value() const { return sum_; }
  uint64_t guest_pages() const { return pages_; }
  void Reset();  // back to an all-zero guest
  // Sum (mod 2^64) of the page hashes of pfns [first_pfn, first_pfn + count),
  // clamped to the guest: a per-region digest both ends can compare
  // (romulus drill verify). O(count).
  uint64_t RangeSum(uint64_t first_pfn, uint64_t count) const;

 private:
  explicit MemoryDigest(uint64_t pages);
  uint64_t pages_;
  uint64_t sum_ = 0;
  std::unique_ptr<uint64_t[]> hashes_;  // current PageHash of every pfn
};

// "0123456789abcdef"
std::string DigestHex(uint64_t digest);

}  // namespace romulus

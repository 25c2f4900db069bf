#include "common/digest.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

namespace romulus {

namespace {
constexpr size_t kPage = 4096;

bool AllZero(const uint8_t* p) {
  uint64_t acc = 0;
  for (size_t i = 0; i < kPage; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w;
  }
  return acc == 0;
}
}  // namespace

uint64_t PageHash(uint64_t pfn, const uint8_t* page) {
  if (AllZero(page)) return 0;
  return XXH3_64bits_withSeed(page, kPage, pfn);
}

MemoryDigest::MemoryDigest(uint64_t pages) : pages_(pages) {}

Result<std::unique_ptr<MemoryDigest>> MemoryDigest::Create(uint64_t guest_pages) {
  if (guest_pages == 0 || guest_pages > (uint64_t{1} << 36)) {
    return Status::InvalidArgument("digest: guest size of " + std::to_string(guest_pages) +
                                   " pages is out of range");
  }
  std::unique_ptr<MemoryDigest> d(new MemoryDigest(guest_pages));
  d->hashes_.reset(new (std::nothrow) uint64_t[guest_pages]());
  if (!d->hashes_) return Status::OutOfRange("digest: cannot allocate per-page hashes");
  return d;
}

void MemoryDigest::Update(uint64_t pfn, const uint8_t* page) { SetHash(pfn, PageHash(pfn, page)); }

Status MemoryDigest::CopyFrom(const MemoryDigest& other) {
  if (other.pages_ != pages_) {
    return Status::InvalidArgument("digest: copying a " + std::to_string(other.pages_) + "-page digest into a " +
                                   std::to_string(pages_) + "-page one");
  }
  std::memcpy(hashes_.get(), other.hashes_.get(), pages_ * sizeof(uint64_t));
  sum_ = other.sum_;
  return Status::Ok();
}

void MemoryDigest::Reset() {
  std::memset(hashes_.get(), 0, pages_ * sizeof(uint64_t));
  sum_ = 0;
}

uint64_t MemoryDigest::RangeSum(uint64_t first_pfn, uint64_t count) const {
  if (first_pfn >= pages_) return 0;
  const uint64_t end = first_pfn + std::min(count, pages_ - first_pfn);
  uint64_t sum = 0;
  for (uint64_t p = first_pfn; p < end; ++p) sum += hashes_[p];
  return sum;
}

std::string DigestHex(uint64_t digest) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(digest));
  return buf;
}

}  // namespace romulus

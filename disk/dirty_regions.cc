#include "disk/dirty_regions.h"

#include <algorithm>
#include <bit>

namespace romulus::disk {

DirtyRegions::DirtyRegions(uint64_t disk_bytes)
    : disk_bytes_(disk_bytes), regions_((disk_bytes + kRegionBytes - 1) / kRegionBytes) {}

DirtyRegions::Bucket& DirtyRegions::BucketFor(uint64_t tag) {
  // The first bucket whose range holds `tag`; a tag past the last bucket
  // opens a new one. (A tag at or before forgotten_ cannot come from a
  // front end that waits for its requests before sealing; it goes to the
  // oldest bucket, which only makes answers larger.)
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), tag,
                             [](const Bucket& b, uint64_t t) { return b.last_tag < t; });
  if (it != buckets_.end()) return *it;
  if (buckets_.size() > kMaxBuckets) {
    // Merge the two oldest: the merged bucket ends at the later's tag, so
    // it is in every answer either was in.
    Bucket& a = buckets_[0];
    Bucket& b = buckets_[1];
    if (b.bits.empty()) {
      b.bits = std::move(a.bits);
    } else if (!a.bits.empty()) {
      for (size_t i = 0; i < b.bits.size(); ++i) b.bits[i] |= a.bits[i];
    }
    buckets_.erase(buckets_.begin());
  }
  buckets_.push_back(Bucket{tag, {}});
  return buckets_.back();
}

void DirtyRegions::Mark(uint64_t tag, uint64_t offset, uint64_t length) {
  if (length == 0 || offset >= disk_bytes_) return;
  const uint64_t end = std::min(disk_bytes_, offset + std::min(length, disk_bytes_ - offset));
  Bucket& b = BucketFor(tag);
  if (b.bits.empty()) b.bits.assign((regions_ + 63) / 64, 0);
  // Whole words at a time: a TRIM of the whole disk is regions/64 stores.
  uint64_t r = offset / kRegionBytes;
  const uint64_t last = (end - 1) / kRegionBytes;
  for (; r <= last && r % 64 != 0; ++r) b.bits[r / 64] |= uint64_t{1} << (r % 64);
  for (; r + 63 <= last; r += 64) b.bits[r / 64] = ~uint64_t{0};
  for (; r <= last; ++r) b.bits[r / 64] |= uint64_t{1} << (r % 64);
}

void DirtyRegions::Forget(uint64_t tag) {
  if (tag <= forgotten_) return;
  forgotten_ = tag;
  auto keep = std::find_if(buckets_.begin(), buckets_.end(), [&](const Bucket& b) { return b.last_tag > tag; });
  buckets_.erase(buckets_.begin(), keep);
}

std::vector<uint64_t> DirtyRegions::UnionSince(uint64_t since) const {
  std::vector<uint64_t> out;
  for (const Bucket& b : buckets_) {
    if (b.last_tag <= since || b.bits.empty()) continue;
    if (out.empty()) {
      out = b.bits;
    } else {
      for (size_t i = 0; i < out.size(); ++i) out[i] |= b.bits[i];
    }
  }
  return out;
}

RegionSet::RegionSet(std::vector<uint64_t> bits, uint64_t regions, uint64_t disk_bytes, uint64_t region_bytes)
    : bits_(std::move(bits)), regions_(regions), disk_bytes_(disk_bytes), region_bytes_(region_bytes) {
  for (uint64_t w : bits_) count_ += static_cast<uint64_t>(std::popcount(w));
}

bool RegionSet::Next(uint64_t* cursor, std::pair<uint64_t, uint64_t>* range) const {
  if (bits_.empty()) return false;
  auto set = [&](uint64_t r) { return (bits_[r / 64] >> (r % 64) & 1) != 0; };
  uint64_t r = *cursor;
  // Skip clear regions a word at a time where the word is empty.
  while (r < regions_ && !set(r)) {
    if (r % 64 == 0 && bits_[r / 64] == 0) {
      r += 64;
    } else {
      ++r;
    }
  }
  if (r >= regions_) {
    *cursor = regions_;
    return false;
  }
  uint64_t e = r;
  while (e < regions_ && set(e)) {
    if (e % 64 == 0 && e + 64 <= regions_ && bits_[e / 64] == ~uint64_t{0}) {
      e += 64;
    } else {
      ++e;
    }
  }
  const uint64_t from = r * region_bytes_;
  *range = {from, std::min(disk_bytes_, e * region_bytes_) - from};
  *cursor = e;
  return true;
}

std::optional<RegionSet> DirtyRegions::ChangedSetSince(uint64_t since) const {
  if (since < forgotten_) return std::nullopt;
  return RegionSet(UnionSince(since), regions_, disk_bytes_, kRegionBytes);
}

std::optional<std::vector<std::pair<uint64_t, uint64_t>>> DirtyRegions::ChangedSince(uint64_t since) const {
  std::optional<RegionSet> set = ChangedSetSince(since);
  if (!set) return std::nullopt;
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t cursor = 0;
  std::pair<uint64_t, uint64_t> range;
  while (set->Next(&cursor, &range)) out.push_back(range);
  return out;
}

uint64_t DirtyRegions::RegionsSince(uint64_t since) const {
  if (since < forgotten_) return 0;
  uint64_t n = 0;
  for (uint64_t w : UnionSince(since)) n += static_cast<uint64_t>(std::popcount(w));
  return n;
}

}  // namespace romulus::disk

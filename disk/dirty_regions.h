// DirtyRegions: which regions of a disk the guest wrote after a given tag,
// so that a backup holding the disk as of that tag is brought up to date by
// copying those regions only (docs/DISK.md §7.2).
//
// Marks are kept per bucket of tags: a bucket covers the tags after the
// previous bucket's last tag up to its own `last_tag`, and holds a bitmap
// of kRegionBytes regions. ChangedSince(T) is the union of the buckets
// whose last tag is after T: every region written in a tag > T is in it. A
// merge of two buckets (when there are more than kMaxBuckets) only ever
// adds regions to that answer, never removes one, so it stays safe: a
// reconnect copies a few regions more than needed, never fewer.
//
// Forget(A) drops the buckets wholly at or before A: the backup committed
// A, so the next session's backup holds A or later. A backup that holds
// less (an older copy) gets "cannot tell" from ChangedSince, and the disk is
// copied whole.
//
// Memory: one bit per region per bucket, allocated when a bucket gets its
// first mark: 2 MiB per bucket for a 1 TiB disk, at most kMaxBuckets + 1.
// Not thread-safe: EpochDiskLog calls it under its own mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace romulus::disk {

// A snapshot of the regions that changed, as one bitmap (one bit per region:
// 2 MiB for a 1 TiB disk, whatever the pattern), iterated as byte ranges
// without ever listing them all: a scattered 1 TiB disk would otherwise
// need a list of up to 8 M ranges, built under the log's mutex.
class RegionSet {
 public:
  RegionSet() = default;
  // Regions named, ascending ranges: call with cursor 0, then with what it
  // returns until it returns false. *range is [offset, offset+length) of a
  // run of adjacent regions, clipped to the disk.
  bool Next(uint64_t* cursor, std::pair<uint64_t, uint64_t>* range) const;
  uint64_t count() const { return count_; }

 private:
  friend class DirtyRegions;
  RegionSet(std::vector<uint64_t> bits, uint64_t regions, uint64_t disk_bytes, uint64_t region_bytes);
  std::vector<uint64_t> bits_;
  uint64_t regions_ = 0;
  uint64_t disk_bytes_ = 0;
  uint64_t region_bytes_ = 0;
  uint64_t count_ = 0;
};

class DirtyRegions {
 public:
  static constexpr uint64_t kRegionBytes = uint64_t{64} << 10;
  static constexpr size_t kMaxBuckets = 8;

  explicit DirtyRegions(uint64_t disk_bytes);

  // [offset, offset+length) was written (or zeroed) with tag `tag`.
  // length 0 marks nothing; the range is clipped to the disk.
  void Mark(uint64_t tag, uint64_t offset, uint64_t length);
  // The backup holds the disk as of `tag`: marks of tags <= tag are no
  // longer needed. Later ChangedSince(t < tag) cannot answer.
  void Forget(uint64_t tag);

  // The byte ranges [offset, offset+length) of every region written with a
  // tag > `since`, ascending, adjacent regions merged, clipped to the disk;
  // nullopt when marks before `since` were forgotten (the tracker cannot
  // tell what changed: copy everything).
  std::optional<std::vector<std::pair<uint64_t, uint64_t>>> ChangedSince(uint64_t since) const;
  // The same answer as a snapshot to iterate (what a copy uses): memory is
  // one bitmap, whatever the number of ranges.
  std::optional<RegionSet> ChangedSetSince(uint64_t since) const;

  // How many regions ChangedSince(since) would name (0 when it cannot say).
  uint64_t RegionsSince(uint64_t since) const;
  uint64_t regions() const { return regions_; }
  // Tags <= this were forgotten.
  uint64_t forgotten_through() const { return forgotten_; }

 private:
  struct Bucket {
    uint64_t last_tag = 0;
    std::vector<uint64_t> bits;  // empty until the first mark
  };
  Bucket& BucketFor(uint64_t tag);
  std::vector<uint64_t> UnionSince(uint64_t since) const;

  const uint64_t disk_bytes_;
  const uint64_t regions_;
  uint64_t forgotten_ = 0;
  std::vector<Bucket> buckets_;  // ascending last_tag
};

}  // namespace romulus::disk

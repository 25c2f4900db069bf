// The backup's disk records between their arrival and their commit, shared
// by every sink that holds disks (sim/image_sink: journaled; xen/xen_disks:
// applied after libxenguest took the memory checkpoint). docs/DISK.md §6.
//
// One encoding, used for staging in memory and (sim) in the journal's disk
// section: per record a 24-byte head (u32 disk_id, u8 kind, u8 flags, u16 0,
// u64 offset, u64 length, little-endian) and, for a write, its `length`
// bytes. Kinds: kWrite and kZero (a TRIM is a zero range: what it leaves
// reads as zeros), and kFlush (length 0), which only a sink that orders its
// apply by flushes stages; the image sink's journal never holds one.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "buffer/reusable_buffer.h"
#include "common/status.h"
#include "protocol/disk_records.h"

namespace romulus::restore {

inline constexpr size_t kDiskEntryHead = 24;
inline constexpr uint8_t kDiskEntryWrite = 1;
inline constexpr uint8_t kDiskEntryZero = 3;
inline constexpr uint8_t kDiskEntryFlush = 5;

struct DiskEntry {
  uint32_t disk_id = 0;
  uint8_t kind = 0;
  uint8_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  const uint8_t* data = nullptr;  // kDiskEntryWrite: length bytes
};

void EncodeDiskEntryHead(const DiskEntry& e, uint8_t* out);
// Walks a section; Corruption for a truncated or unknown entry (nothing of
// a damaged section is trusted).
Status ForEachDiskEntry(std::span<const uint8_t> section, const std::function<Status(const DiskEntry&)>& fn);

// The entry for one record of a validated DISK frame, checked against the
// disk it is for: Corruption for a kind other than WRITE/ZERO/FLUSH (the
// receiver decompresses WRITE_LZ4), an empty range, a range beyond
// disk_size, or a write whose data is not `length` bytes. data points into
// the record (valid only as long as the record's bytes).
Result<DiskEntry> DiskEntryFromRecord(uint32_t disk_id, uint64_t disk_size, const protocol::DiskRecord& record);

// Applies one entry to the disk file or block device fd: pwrite; a zero
// range as a punched hole, else FALLOC_FL_ZERO_RANGE, else written zeros;
// a flush as fdatasync. Storage (with errno's text) on failure.
Status ApplyDiskEntry(int fd, const DiskEntry& e, const std::string& what);

// The records of the epoch being received, in stream order, in one reused
// buffer bounded by max_bytes (heads + write bytes). Not thread-safe: the
// receiver's thread stages, commits and discards.
class DiskStaging {
 public:
  explicit DiskStaging(size_t max_bytes) : buf_(0, max_bytes) {}

  // OutOfRange (nothing staged) when the entry would take the epoch over
  // the bound: the caller refuses the epoch (ERROR resource), so memory
  // stays bounded whatever the primary sends.
  Status Stage(uint64_t epoch, const DiskEntry& e);
  std::span<const uint8_t> view() const { return buf_.view(); }
  size_t size() const { return buf_.size(); }
  size_t max_bytes() const { return buf_.max_capacity(); }
  bool empty() const { return buf_.size() == 0; }
  void Clear() { buf_.Clear(); }  // keeps the capacity for the next epoch
  uint64_t reallocations() const { return buf_.reallocations(); }

 private:
  buffer::ReusableBuffer buf_;
};

}  // namespace romulus::restore

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
//
// Staging is bounded twice: in memory (--max-disk-staging), then, for an
// epoch larger than that, in an unlinked spill file on the backup's own
// storage (--max-disk-spill), so a large epoch (a resync under a held
// replica, a burst of guest writes) costs disk space, not memory. docs/DISK.md §6.2.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "buffer/reusable_buffer.h"
#include "common/status.h"
#include "protocol/disk_records.h"

namespace romulus::restore {

inline constexpr size_t kDiskEntryHead = 24;
inline constexpr uint8_t kDiskEntryWrite = 1;
inline constexpr uint8_t kDiskEntryZero = 3;
inline constexpr uint8_t kDiskEntryFlush = 5;
// Free space above twice a commit's need plus this lets a sink skip
// reserving blocks before its commit point (ReserveWrites).
inline constexpr uint64_t kReserveMargin = uint64_t{256} << 20;

struct DiskEntry {
  uint32_t disk_id = 0;
  uint8_t kind = 0;
  uint8_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  const uint8_t* data = nullptr;  // kDiskEntryWrite: length bytes
};

void EncodeDiskEntryHead(const DiskEntry& e, uint8_t* out);
using DiskEntryFn = std::function<Status(const DiskEntry&)>;
// Walks a section; Corruption for a truncated or unknown entry or a write
// longer than protocol::kMaxDiskWriteChunk (nothing of a damaged section is
// trusted; both walks accept exactly the same sections).
Status ForEachDiskEntry(std::span<const uint8_t> section, const DiskEntryFn& fn);
// The same walk over the `length` bytes at `offset` of a file (a journal's
// disk section, a spill file), read through *window (sized once to one
// largest entry, kDiskSectionWindow, whatever the section's size), so
// nothing read sizes an allocation. A failed read is Storage naming `what`.
inline constexpr size_t kDiskSectionWindow = kDiskEntryHead + protocol::kMaxDiskWriteChunk;
Status ForEachDiskEntryInFile(int fd, uint64_t offset, uint64_t length, std::vector<uint8_t>* window,
                              const DiskEntryFn& fn, const std::string& what);

// The entry for one record of a validated DISK frame, checked against the
// disk it is for: Corruption for a kind other than WRITE/ZERO/FLUSH (the
// receiver decompresses WRITE_LZ4), an empty range, a range beyond
// disk_size, a write longer than protocol::kMaxDiskWriteChunk (what every
// section reader accepts), or a write whose data is not `length` bytes. data points into
// the record (valid only as long as the record's bytes).
Result<DiskEntry> DiskEntryFromRecord(uint32_t disk_id, uint64_t disk_size, const protocol::DiskRecord& record);

// Applies one entry to the disk file or block device fd: pwrite; a zero
// range as a punched hole, else FALLOC_FL_ZERO_RANGE, else written zeros;
// a flush as fdatasync. Storage (with errno's text) on failure.
Status ApplyDiskEntry(int fd, const DiskEntry& e, const std::string& what);

// Where an epoch's records go once memory is full; max_bytes 0 or dir ""
// = no spilling (an epoch over the memory bound is refused).
struct DiskSpill {
  std::string dir;         // a directory on the backup's storage (the image's, --disk-dir)
  uint64_t max_bytes = 0;  // --max-disk-spill
};

// The records of the epoch being received, in stream order: in one reused
// buffer bounded by max_memory_bytes (heads + write bytes), then, once an
// entry does not fit there, this one and every later one of the epoch in
// the spill file (an O_TMPFILE in spill.dir: a crash leaves nothing
// behind), bounded by spill.max_bytes. Not thread-safe: the receiver's
// thread stages, commits and discards.
class DiskStaging {
 public:
  explicit DiskStaging(size_t max_memory_bytes, DiskSpill spill = {});
  ~DiskStaging();
  DiskStaging(const DiskStaging&) = delete;
  DiskStaging& operator=(const DiskStaging&) = delete;

  // InvalidArgument for a write longer than protocol::kMaxDiskWriteChunk
  // (DiskEntryFromRecord never makes one); OutOfRange (nothing staged) when the entry would take the epoch over
  // both bounds, Storage when the spill file cannot be created or written
  // (a full disk: nothing of the entry counts). Either way the caller
  // refuses the epoch (ERROR resource) and keeps the previous checkpoint,
  // so memory and disk stay bounded whatever the primary sends.
  Status Stage(uint64_t epoch, const DiskEntry& e);
  // The staged entries in stream order (memory, then the spill file read
  // back through a 1 MiB window); Storage if reading the spill fails.
  Status ForEachEntry(const DiskEntryFn& fn);
  // The staged bytes (the section encoding) in order: the memory part as
  // one piece, then the spill in pieces of at most kDiskSectionWindow; what
  // the image sink's journal copies.
  Status ForEachPiece(const std::function<Status(std::span<const uint8_t>)>& fn);
  // Allocates the blocks the staged writes will fill (fallocate, content
  // unchanged) in the file fd_of(disk_id) returns, so that running out of
  // space fails before a commit point rather than half-way through an
  // apply. *supported becomes false (and the rest is skipped) where the
  // filesystem cannot; Storage (ENOSPC, EIO) otherwise.
  Status ReserveWrites(const std::function<int(uint32_t)>& fd_of, bool* supported);
  uint64_t size() const { return buf_.size() + spill_len_; }
  uint64_t spilled_bytes() const { return spill_len_; }
  uint64_t write_bytes() const { return write_bytes_; }  // data of the staged writes
  size_t max_bytes() const { return buf_.max_capacity(); }
  bool empty() const { return size() == 0; }
  // Keeps the memory for the next epoch; gives the spill file's blocks back.
  void Clear();
  uint64_t reallocations() const { return buf_.reallocations(); }
  uint64_t spilled_epochs() const { return spilled_epochs_; }

 private:
  Status OpenSpill();

  buffer::ReusableBuffer buf_;
  DiskSpill spill_;
  int spill_fd_ = -1;
  uint64_t spill_len_ = 0;
  uint64_t spilled_epochs_ = 0;
  uint64_t write_bytes_ = 0;
  std::vector<uint8_t> window_;  // kDiskSectionWindow once the spill is read
};

}  // namespace romulus::restore

// File operations on an image that the sink and the read-only inspector
// share: locking, sparse writes, journal replay. All failures are
// Status::Storage except a lock held by someone else (InvalidArgument: the
// operator pointed two backups at one file).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/image_journal.h"

namespace romulus::sim {

// flock(LOCK_EX|LOCK_NB) on the image. Held until fd is closed. When another
// process holds it: "image PATH is in use by another romulus restore (pid N)"
// (the pid when /proc/locks tells it), and nothing about the file changes.
Status LockImage(int fd, const std::string& path);

// Makes pfn an all-zero page without allocating: a hole punched in place
// (or a written zero page where the filesystem cannot punch).
Status PunchImagePage(int fd, uint64_t pfn);


// Calls fn(offset, length) for each range of [0, size) that may hold data
// (SEEK_DATA/SEEK_HOLE; the whole file when the filesystem cannot tell).
// Ranges are page-aligned outward.
void ForEachDataRange(int fd, uint64_t size, const std::function<void(uint64_t, uint64_t)>& fn);

// Replays a complete journal record on disk: its pages into the image (holes
// for zero pages), then its PATH.state bytes installed atomically, then the
// journal reset. Idempotent: a crash during replay replays again at the next
// Open. Refuses (Corruption) a record that does not fit the image.
// A version-2 record's disk section is applied after the pages, in order,
// to disk_fd(id) (-1 for a disk the caller does not have: Corruption);
// re-applying a sequence of positional writes and zero ranges from its start
// gives the same bytes however much of it ran before, so replay stays
// idempotent with disks.
Status ReplayJournalRecord(int image_fd, int journal_fd, const JournalRecord& rec, const std::string& state_path,
                           size_t max_state, bool durable,
                           const std::function<int(uint32_t disk_id)>& disk_fd = nullptr);

// Applying one disk entry: restore::ApplyDiskEntry (restore/disk_staging.h).
using restore::ApplyDiskEntry;

// The whole-disk digest of [0, size) of fd: the memory digest's rule over
// 4 KiB blocks (block number as seed, all-zero block 0), the last partial
// block padded with zeros. Reads only the data ranges. Storage on a read error.
Result<uint64_t> DiskFileDigest(int fd, uint64_t size);
// Copies the first `size` bytes of `from` into `to` (truncated to `size`),
// data ranges only (SEEK_DATA/SEEK_HOLE): holes stay holes. Storage on failure.
Status CopySparse(int from, int to, uint64_t size, const std::string& what);
// PageHash of one 4 KiB block of a disk (block may be partial at the end:
// the caller pads it).
uint64_t DiskBlockHash(uint64_t block, const uint8_t* bytes4k);

// Bitmaps of pfns (one bit each).
inline bool TestBit(const std::vector<uint64_t>& bits, uint64_t i) { return (bits[i / 64] >> (i % 64)) & 1; }
inline void SetBit(std::vector<uint64_t>& bits, uint64_t i, bool on) {
  if (on) {
    bits[i / 64] |= uint64_t{1} << (i % 64);
  } else {
    bits[i / 64] &= ~(uint64_t{1} << (i % 64));
  }
}

}  // namespace romulus::sim

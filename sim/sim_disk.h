// The simulated guest's disk (issue 13, docs/DISK.md §10): what a SimGuest
// with `disk=SIZE` writes, and the pure check that a disk image holds
// exactly what the guest's memory believes it wrote.
//
// The writer appends numbered records k = 0, 1, 2, … ; record k goes to the
// 4 KiB block (k mod blocks). What record k is depends on k alone (and the
// spec's seed), so the expected content of every block after n records is a
// pure function of (spec, n):
//   - a DATA record: 4096 bytes, a header (magic, k, seed), a deterministic
//     pattern, and an XXH3 checksum of everything before it in the last 8
//     bytes;
//   - a ZERO record (k % kSimDiskZeroEvery == kSimDiskZeroPhase): the block is
//     zeroed, by WRITE_ZEROES, or by TRIM when k % (2*kSimDiskZeroEvery)
//     == kSimDiskZeroPhase (the store punches a hole; if it cannot, the
//     writer zeroes it instead so the content is the same either way).
// A DATA record is written with FUA when k % 4 == 1, and a FLUSH follows
// every record with k % 8 == 7. So every record kind of the wire format
// (WRITE, ZERO, ZERO+TRIM, FLUSH, FUA) travels.
//
// This header is shared with the backup side (restore/verify): it includes
// nothing of the engine.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "common/status.h"
#include "sim/sim_spec.h"

namespace romulus::sim {

inline constexpr uint64_t kSimDiskBlock = 4096;
inline constexpr uint64_t kSimDiskRecordMagic = 0x4b53494453524f52ull;  // "RORSDISK" little-endian-ish tag
inline constexpr uint64_t kSimDiskZeroEvery = 16;
inline constexpr uint64_t kSimDiskZeroPhase = 11;

// The kind of record k.
enum class SimDiskRecordKind : uint8_t { kData, kZero, kTrim };
SimDiskRecordKind SimDiskKindOf(uint64_t k);
inline bool SimDiskFuaOf(uint64_t k) { return k % 4 == 1; }
inline bool SimDiskFlushAfter(uint64_t k) { return k % 8 == 7; }
// Blocks of a spec's disk (0 without a disk).
inline uint64_t SimDiskBlocks(const SimSpec& spec) { return spec.disk_bytes / kSimDiskBlock; }
inline uint64_t SimDiskOffsetOf(const SimSpec& spec, uint64_t k) {
  return (k % SimDiskBlocks(spec)) * kSimDiskBlock;
}

// Fills `out` (exactly kSimDiskBlock bytes) with DATA record k of a guest
// seeded `seed`. (For a ZERO/TRIM record the block's content is zeros.)
void FillSimDiskRecord(uint64_t seed, uint64_t k, std::span<uint8_t> out);

// What one 4 KiB block holds: all zeros, a valid DATA record (its k), or
// Corruption (torn or garbled: bad magic, wrong seed, bad checksum, a
// pattern that is not record k's).
struct SimDiskBlockContent {
  bool zero = false;
  uint64_t k = 0;  // when !zero
};
Result<SimDiskBlockContent> ParseSimDiskBlock(uint64_t seed, std::span<const uint8_t> block);

// Reads `out.size()` bytes at `offset` of the disk image into `out`.
using SimDiskReadFn = std::function<Status(uint64_t offset, std::span<uint8_t> out)>;

// Proves that the image read through `read` holds exactly records
// 0 … records_written-1 of `spec`'s writer, that is: every block holds the
// newest record k < records_written with k mod blocks == block (DATA: that
// record, valid; ZERO/TRIM: zeros), or zeros if no such record exists.
// Corruption, naming the block and the records, for: a record from beyond
// the checkpoint (k >= records_written), a hole (zeros or an older record
// where a record is due), a torn or garbled block. InvalidArgument if the
// spec has no disk. Read errors are passed through.
Status CheckSimDisk(const SimSpec& spec, uint64_t records_written, const SimDiskReadFn& read);

// The number of disk records a SimGuest's CaptureState blob says were
// written (0 for a guest without a disk, or a blob of format version 1).
// Corruption for a malformed blob.
Result<uint64_t> SimDiskRecordsInState(std::span<const uint8_t> state);

}  // namespace romulus::sim

// DISK_DIGESTS (docs/PROTOCOL.md §3.11, design in docs/DISK.md §7.4): right
// after an accepting HELLO_ACK with kCapDiskDigests (and after the HELD
// table, if any), the backup describes what its copy of each disk holds, one
// hash per 1 MiB chunk, so that a session which must copy a disk whole (its
// backup's copy is of another lineage: an old primary taken back after a
// failover, a copy restored from elsewhere) sends only the chunks that
// differ. This file is the one home of the chunk hash and of the frame.
//
// What it trusts: two chunks with the same 128-bit XXH3 are taken as equal.
// XXH3 is not a cryptographic hash: a guest that wrote chunks colliding with
// its own old disk's could make its own replica differ there, which harms no
// one but itself (nobody else writes that disk). Accidental collisions have
// probability 2^-128 per chunk compared.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/frame.h"
#include "protocol/frame_io.h"
#include "protocol/messages.h"

namespace romulus::protocol {

// The chunk the table describes: the disk's bytes [i * kDiskChunkBytes,
// min(size, (i + 1) * kDiskChunkBytes)). The last chunk may be shorter.
inline constexpr uint64_t kDiskChunkBytes = uint64_t{1} << 20;
// The largest table: disks up to 4 TiB are described (64 MiB of hashes on
// the primary); a larger disk is sent ABSENT and copied whole.
inline constexpr uint64_t kMaxDiskChunks = uint64_t{1} << 22;
// Hashes in one frame at most (64 KiB + 24 bytes of payload).
inline constexpr uint32_t kMaxChunkHashesPerFrame = 4096;

struct ChunkHash {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const ChunkHash&) const = default;
};
// XXH3-128 of the chunk's bytes.
ChunkHash DiskChunkHash(std::span<const uint8_t> chunk);
// DiskChunkHash of `length` zero bytes (a hole), without reading anything
// for a whole chunk (computed once). REQUIRES: length <= kDiskChunkBytes.
ChunkHash ZeroChunkHash(uint64_t length);
// Chunks of a disk of `size` bytes.
inline uint64_t DiskChunks(uint64_t size) { return (size + kDiskChunkBytes - 1) / kDiskChunkBytes; }

// One disk's table on the primary: hashes[i] is the backup's chunk i.
using DiskChunkTable = std::vector<ChunkHash>;

// One DISK_DIGESTS frame: hashes of chunks [first_chunk, first_chunk +
// hashes.size()) of disk `disk_id`; kLast ends that disk's table; kAbsent
// (with kLast, no hashes) says the backup does not describe the disk.
struct DiskDigests {
  static constexpr FrameType kType = FrameType::kDiskDigests;
  static constexpr uint32_t kLast = 1;
  static constexpr uint32_t kAbsent = 2;
  static constexpr size_t kFixedSize = 24;
  uint32_t disk_id = 0;
  uint32_t flags = 0;
  uint64_t first_chunk = 0;
  std::vector<ChunkHash> hashes;  // 1..kMaxChunkHashesPerFrame; none with kAbsent

  bool last() const { return (flags & kLast) != 0; }
  bool absent() const { return (flags & kAbsent) != 0; }
  Status EncodeTo(std::vector<uint8_t>* out) const;
  // Corruption: unknown flags, kAbsent without kLast or with hashes, a count
  // out of range, a size that does not match the count.
  static Result<DiskDigests> Decode(std::span<const uint8_t> payload);
};

// The one rule for assembling a table from pieces (DISK_DIGESTS frames, the
// tap's DIGESTS messages): `hashes` of chunks [first_chunk, …) continue
// `table` exactly where it ends, stay within the disk's `chunks`, and
// `last` is set on exactly the piece that reaches its end. Corruption
// (naming `what`) otherwise; the table is left as it was.
Status AppendChunkHashes(DiskChunkTable* table, uint64_t chunks, uint64_t first_chunk,
                         std::span<const ChunkHash> hashes, bool last, const std::string& what);

// The backup's side. For each disk of the HELLO, in order: `describe(i,
// first_chunk, out)` fills out.size() hashes of disk i's chunks from
// first_chunk; Unsupported from it (asked for chunk 0) or a disk over
// kMaxDiskChunks sends the disk ABSENT; any other error ends the exchange.
// Each frame gets `per_frame` to go out once described; the primary's
// deadline per frame covers the describing too, so frames are small (64
// chunks: 64 MiB of disk read per frame at most).
using DescribeDiskFn = std::function<Status(size_t index, uint64_t first_chunk, std::span<ChunkHash> out)>;
Status SendDiskDigests(FrameWriter* writer, std::span<const DiskInfo> disks, const DescribeDiskFn& describe,
                       std::chrono::milliseconds per_frame);

// The primary's side: one table per disk of `disks`, in order (null: the
// backup did not describe it). Frames must come in HELLO order, each
// disk's chunks from 0 ascending without gaps, its LAST frame ending at its
// last chunk; anything else is Corruption. An ERROR from the backup is
// returned as its text; any other frame (a HEARTBEAT included) is
// Corruption. Memory: the tables, bounded
// by the disks' sizes (kMaxDiskChunks each).
Result<std::vector<std::shared_ptr<const DiskChunkTable>>> ReceiveDiskDigests(
    FrameReader* reader, std::span<const DiskInfo> disks, std::chrono::milliseconds per_frame);

}  // namespace romulus::protocol

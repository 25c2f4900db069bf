// The disk part of an epoch on the wire (docs/PROTOCOL.md §3.10, the design
// in docs/DISK.md §5): DISK frames carry a batch of one disk's records, and
// one DISK_END per disk closes the disk's records of the epoch with their
// count, size and digest. This file is the one home of that encoding.
//
// A record is what the primary's disk front end reported (disk/write_sink.h):
// a write with its bytes, a range that now reads as zeros (WRITE_ZEROES, or a
// punched TRIM), or a flush marker. Records apply in stream order.
//
// DiskFrameBuilder fills one DISK payload into a caller-owned buffer (no
// allocation once the buffer has its capacity); DiskFrameParser validates a
// received payload against the disk sizes of the session before it yields
// anything, so a frame is either applied whole or refused whole, and nothing
// it says (lengths, offsets, compressed sizes) can make the receiver
// allocate or read beyond its bounds.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "protocol/messages.h"

namespace romulus::protocol {

// Record kinds as they travel. kWriteLz4 is a kWrite whose data is LZ4
// compressed; the parser yields it as kWrite with the decompressed bytes.
enum class DiskRecordKind : uint8_t {
  kWrite = 1,
  kWriteLz4 = 2,
  kZero = 3,
  kFlush = 5,
};
inline constexpr uint8_t kDiskFlagFua = 0x01;
inline constexpr uint8_t kDiskFlagTrim = 0x02;  // kZero only: it was a TRIM

inline constexpr size_t kDiskFrameHeadSize = 8;    // disk_id u32, record_count u32
inline constexpr size_t kDiskRecordHeadSize = 20;  // kind, flags, reserved u16, length u32, offset u64, data_len u32
// The largest write one record carries: longer writes are split into several
// records (writes are positional, so splitting changes nothing). Also the
// receiver's decompression bound.
inline constexpr uint32_t kMaxDiskWriteChunk = uint32_t{1} << 20;
// The largest ZERO range one record carries (a u32 length).
inline constexpr uint64_t kMaxDiskZeroChunk = uint64_t{1} << 31;
inline constexpr size_t kDiskEndSize = 32;
inline constexpr size_t kDiskEndTaggedSize = 40;  // with kCapDiskDelta: + the epoch's tag

// The bound of DiskFrameParser's decompression arena: LZ4 records of one
// frame are decompressed once, at validation, into the arena while their
// total fits, and yielded from there. A frame is at most kMaxPayload (8 MiB)
// but LZ4 can expand it ~250-fold (zero-filled blocks), so a frame cannot be
// promised to fit in any bounded arena; 4 x kMaxPayload holds a full frame of
// writes that compress up to 4:1 (filesystem data, text). A record beyond the
// bound is validated through a 1 MiB scratch buffer and decompressed again
// when yielded (DiskFrameParser::Stats::lz4_redecoded counts them).
inline constexpr size_t kMaxDiskDecodeArena = 4 * kMaxPayload;
// ...and so is a record compressed more than this many times: such data
// (mostly zero blocks) decompresses at memset speed, and decompressing it
// again into the cache-resident scratch buffer costs less than writing it to
// the arena and reading it back from memory (docs/benchmarks.md, "Disk
// frames": text at 2.2:1 parses 2.3x faster from the arena, blocks at 39:1
// were 10-15% slower from it than decompressed twice).
inline constexpr uint32_t kDiskArenaMaxRatio = 8;

// A record as applied (never kWriteLz4: data is the uncompressed bytes).
struct DiskRecord {
  DiskRecordKind kind = DiskRecordKind::kFlush;
  uint8_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;              // bytes; 0 for kFlush
  std::span<const uint8_t> data;    // kWrite: `length` bytes
  bool fua() const { return (flags & kDiskFlagFua) != 0; }
  bool trim() const { return (flags & kDiskFlagTrim) != 0; }
};

// XXH3-64 over the records of one disk in one epoch, as applied: the same
// value whether a write travelled raw or LZ4-compressed. Both ends feed it
// the records in stream order; DISK_END carries the primary's.
class DiskRecordDigest {
 public:
  DiskRecordDigest();
  ~DiskRecordDigest();
  DiskRecordDigest(const DiskRecordDigest&) = delete;
  DiskRecordDigest& operator=(const DiskRecordDigest&) = delete;
  void Reset();
  void Add(const DiskRecord& record);
  uint64_t value() const;
  uint64_t records() const { return records_; }
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  void* state_;  // XXH3_state_t, opaque here
  uint64_t records_ = 0;
  uint64_t data_bytes_ = 0;
};

// Builds one DISK payload. Every Add is all-or-nothing: false when the
// record does not fit in what is left of `capacity` (send the frame, Reset,
// add again). The caller splits writes at kMaxDiskWriteChunk and zero ranges
// at kMaxDiskZeroChunk.
class DiskFrameBuilder {
 public:
  // capacity: the payload's bound (at most kMaxPayload).
  explicit DiskFrameBuilder(size_t capacity = kMaxPayload);
  void Reset(uint32_t disk_id);
  // try_lz4: compress when that makes the record smaller (zero-filled and
  // text-like blocks); else raw.
  bool AddWrite(uint64_t offset, std::span<const uint8_t> bytes, bool fua, bool try_lz4);
  bool AddZero(uint64_t offset, uint64_t length, bool trim, bool fua);
  bool AddFlush();
  uint32_t record_count() const { return count_; }
  bool empty() const { return count_ == 0; }
  // The payload so far (head patched with the count): valid until the next call.
  std::span<const uint8_t> payload();
  // Bytes of LZ4 output saved so far in this frame (stats).
  uint64_t lz4_saved() const { return lz4_saved_; }

 private:
  bool Head(DiskRecordKind kind, uint8_t flags, uint64_t offset, uint32_t length, uint32_t data_len);
  size_t capacity_;
  std::vector<uint8_t> buf_;  // capacity_ bytes, allocated once
  std::vector<uint8_t> lz4_;  // LZ4_compressBound(kMaxDiskWriteChunk), allocated once
  size_t pos_ = 0;
  uint32_t count_ = 0;
  uint64_t lz4_saved_ = 0;
};

// Reads one received DISK payload. Open() validates every record first
// (kinds, flags, reserved bits, bounds against the disk's size, data
// lengths inside the frame, LZ4 data that decompresses to exactly `length`)
// and only then does Next() yield them; a bad frame is Corruption, with
// nothing yielded (not even what a previous frame had left unread).
//
// Each LZ4 record is decompressed once: Open() decompresses it into the
// parser's arena (reused across frames, grown to a frame's need up to
// `arena_max`, never shrunk), and Next() yields a span of the arena. Only
// records past `arena_max` (a frame that expands beyond it) and records
// compressed more than kDiskArenaMaxRatio:1 (cheaper to decompress twice)
// are validated through a scratch buffer and decompressed again by Next.
// No allocation once the arena and, if ever needed, the scratch buffer have
// reached what the frames need.
class DiskFrameParser {
 public:
  struct Stats {
    uint64_t frames = 0;          // frames opened (validated or not)
    uint64_t lz4_records = 0;     // LZ4 records of validated frames
    uint64_t lz4_redecoded = 0;   // of those, decompressed again by Next (beyond the arena, or > 8:1)
    uint64_t allocations = 0;     // arena (re)allocations plus the scratch buffer's one
  };
  // arena_max: the arena's bound (kMaxDiskDecodeArena; tests use less). At
  // least kMaxDiskWriteChunk.
  explicit DiskFrameParser(size_t arena_max = kMaxDiskDecodeArena);
  // disks: the session's disks (HELLO). Corruption for an unknown disk id.
  Status Open(std::span<const uint8_t> payload, std::span<const DiskInfo> disks);
  uint32_t disk_id() const { return disk_id_; }
  uint32_t record_count() const { return count_; }
  // false at the end. The record's data stays valid until the next call.
  bool Next(DiskRecord* out);
  const Stats& stats() const { return stats_; }
  size_t arena_capacity() const { return arena_cap_; }

 private:
  // Every record's head and bounds; sums what the LZ4 records that go to
  // the arena need.
  Status CheckRecords(uint64_t* arena_need);
  // Decompresses every LZ4 record (those that go to the arena into it).
  Status DecodeLz4(bool use_arena);
  // Whether the LZ4 record of `length` bytes from `data_len` goes to the
  // arena, given that `used` bytes of it are taken by earlier records.
  bool ToArena(uint64_t used, uint32_t length, uint32_t data_len) const;
  bool Reserve(uint64_t need);
  std::span<const uint8_t> payload_;
  uint64_t disk_size_ = 0;
  uint32_t disk_id_ = 0;
  uint32_t count_ = 0;
  uint32_t yielded_ = 0;
  size_t pos_ = 0;
  size_t arena_max_;
  std::unique_ptr<uint8_t[]> arena_;  // arena_cap_ bytes, uninitialised
  size_t arena_cap_ = 0;
  bool use_arena_ = false;      // this frame's records that ToArena() picks are in the arena
  size_t arena_pos_ = 0;       // Next: where the next arena record starts
  std::vector<uint8_t> scratch_;  // kMaxDiskWriteChunk once a record falls beyond the arena
  Stats stats_;
};

// Adds one record to `builder` as the wire carries it: a write split at
// kMaxDiskWriteChunk, a zero range at kMaxDiskZeroChunk (positional, so the
// split changes nothing), each piece counted in `digest`. When the builder
// is full, flush() must send its payload and Reset it; the piece is then
// added again. The one home of this loop for every DISK frame producer (the
// engine's wire, the disk export's tap).
Status AddDiskRecordSplit(DiskFrameBuilder& builder, const DiskRecord& r, bool try_lz4, DiskRecordDigest& digest,
                          const std::function<Status()>& flush);

// DISK_END's sync state (§3.10, kCapDiskSync): whole, or a streaming copy's
// progress.
inline constexpr uint32_t kSyncWhole = 0;
inline constexpr uint32_t SyncStateOfPermille(uint32_t permille) { return 1 + (permille > 1000 ? 1000 : permille); }
// The percentage a sync state that is not whole reports (0..100).
inline constexpr uint32_t SyncPercent(uint32_t sync_state) { return sync_state == 0 ? 100 : (sync_state - 1) / 10; }

// DISK_END (§3.10): the epoch's records of one disk are complete.
struct DiskEnd {
  static constexpr FrameType kType = FrameType::kDiskEnd;
  uint32_t disk_id = 0;
  uint64_t record_count = 0;
  uint64_t data_bytes = 0;  // uncompressed bytes of the epoch's writes
  uint64_t digest = 0;      // DiskRecordDigest of the epoch's records
  // With kCapDiskSync (the word reserved before it): 0 = once this epoch is
  // applied the backup's copy of the disk is whole; 1 + p (p = 0..1000) = a
  // streaming copy (docs/DISK.md §7.1) is in progress, p permille of the
  // disk copied. A checkpoint whose disk is not whole cannot be resumed.
  uint32_t sync_state = 0;
  static constexpr uint32_t kMaxSyncState = 1001;
  bool whole() const { return sync_state == 0; }
  // With kCapDiskDelta (`has_tag`; 8 more bytes): the front end's tag of
  // this epoch, so the backup can say which tag its copy holds
  // (docs/DISK.md §7.2).
  bool has_tag = false;
  uint64_t tag = 0;

  Status EncodeTo(std::vector<uint8_t>* out) const;
  // Exactly 32 bytes, 40 with `delta_agreed` (then has_tag). Without
  // kCapDiskSync agreed (`sync_agreed` false) the sync word must be 0, as
  // the reserved word it was; with it, <= 1001.
  static Result<DiskEnd> Decode(std::span<const uint8_t> payload, bool sync_agreed = false,
                                bool delta_agreed = false);
};

}  // namespace romulus::protocol

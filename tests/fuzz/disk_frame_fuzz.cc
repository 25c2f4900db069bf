// libFuzzer: a DISK payload as a backup receives it (docs/PROTOCOL.md §3.10).
// Invariants: the parser never reads outside the payload or yields a record
// that breaks a rule it promises to check (inside the disk, sector aligned,
// a write's data exactly its length); a frame either opens and yields exactly
// record_count records or yields none; and what it yields, re-encoded by the
// primary's builder, parses to the same records (same digest); and a parser
// whose decompression arena is at its least bound (LZ4 records beyond it are
// decompressed again when yielded) accepts and refuses exactly the same
// frames and yields the same records.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "protocol/disk_records.h"

using namespace romulus::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<DiskInfo> disks = {{0, 1 << 20, "a"}, {1, uint64_t{1} << 40, "b"}};
  static DiskFrameParser parser;
  static DiskFrameParser reparser;
  static DiskFrameParser small(kMaxDiskWriteChunk);
  static DiskFrameBuilder builder;
  std::span<const uint8_t> in(data, size);

  (void)DiskEnd::Decode(in);
  const bool small_ok = small.Open(in, disks).ok();
  if (!parser.Open(in, disks).ok()) {
    DiskRecord r;
    if (parser.Next(&r)) std::abort();  // a refused frame yields nothing
    if (small_ok || small.Next(&r)) std::abort();
    return 0;
  }
  if (!small_ok) std::abort();
  DiskRecordDigest small_digest;
  {
    DiskRecord r;
    while (small.Next(&r)) small_digest.Add(r);
  }
  const uint64_t disk_size = parser.disk_id() == 0 ? disks[0].size_bytes : disks[1].size_bytes;
  DiskRecordDigest first, second;
  builder.Reset(parser.disk_id());
  bool rebuilt = true;
  uint32_t n = 0;
  DiskRecord r;
  while (parser.Next(&r)) {
    ++n;
    if (r.kind == DiskRecordKind::kWriteLz4) std::abort();
    if (r.kind != DiskRecordKind::kFlush) {
      if (r.length == 0 || r.offset % kDiskSectorSize || r.length % kDiskSectorSize) std::abort();
      if (r.offset > disk_size || r.length > disk_size - r.offset) std::abort();
    }
    if (r.kind == DiskRecordKind::kWrite && r.data.size() != r.length) std::abort();
    if (r.kind != DiskRecordKind::kWrite && !r.data.empty()) std::abort();
    first.Add(r);
    switch (r.kind) {
      case DiskRecordKind::kWrite: rebuilt = rebuilt && builder.AddWrite(r.offset, r.data, r.fua(), true); break;
      case DiskRecordKind::kZero: rebuilt = rebuilt && builder.AddZero(r.offset, r.length, r.trim(), r.fua()); break;
      case DiskRecordKind::kFlush: rebuilt = rebuilt && builder.AddFlush(); break;
      default: std::abort();
    }
  }
  if (n != parser.record_count()) std::abort();
  if (small_digest.value() != first.value() || small_digest.records() != n) std::abort();
  // LZ4 may not shrink what arrived raw, so a full frame may not fit again.
  if (!rebuilt) return 0;
  if (!reparser.Open(builder.payload(), disks).ok()) std::abort();
  while (reparser.Next(&r)) second.Add(r);
  if (first.value() != second.value() || first.records() != second.records()) std::abort();
  return 0;
}

#include "protocol/disk_digests.h"

#include <algorithm>
#include <string>

#include <xxhash.h>

#include "protocol/wire.h"

namespace romulus::protocol {

namespace {

std::string Str(uint64_t v) { return std::to_string(v); }

// Chunks the backup describes per frame: 64 MiB of disk, so even a slow
// disk (3 MB/s) reads a frame's worth within the primary's 30 s per frame.
constexpr uint32_t kChunksPerSentFrame = 64;

}  // namespace

ChunkHash DiskChunkHash(std::span<const uint8_t> chunk) {
  const XXH128_hash_t h = XXH3_128bits(chunk.data(), chunk.size());
  return ChunkHash{h.low64, h.high64};
}

ChunkHash ZeroChunkHash(uint64_t length) {
  static const std::vector<uint8_t> zeros(kDiskChunkBytes, 0);
  static const ChunkHash whole = DiskChunkHash(zeros);
  if (length == kDiskChunkBytes) return whole;
  return DiskChunkHash(std::span<const uint8_t>(zeros).first(std::min(length, kDiskChunkBytes)));
}

Status AppendChunkHashes(DiskChunkTable* table, uint64_t chunks, uint64_t first_chunk,
                         std::span<const ChunkHash> hashes, bool last, const std::string& what) {
  if (chunks > kMaxDiskChunks || first_chunk != table->size() || hashes.size() > chunks - first_chunk ||
      last != (first_chunk + hashes.size() == chunks)) {
    return Status::Corruption(what + ": " + Str(hashes.size()) + " hashes at chunk " + Str(first_chunk) +
                              (last ? " (last)" : "") + " do not continue a table of " + Str(table->size()) +
                              " of " + Str(chunks) + " chunks");
  }
  if (table->empty()) table->reserve(chunks);
  table->insert(table->end(), hashes.begin(), hashes.end());
  return Status::Ok();
}

Status DiskDigests::EncodeTo(std::vector<uint8_t>* out) const {
  if ((flags & ~(kLast | kAbsent)) != 0) return Status::InvalidArgument("DISK_DIGESTS: unknown flags");
  if (absent() ? (!last() || !hashes.empty()) : (hashes.empty() || hashes.size() > kMaxChunkHashesPerFrame)) {
    return Status::InvalidArgument("DISK_DIGESTS: " + Str(hashes.size()) + " hashes with flags " + Str(flags));
  }
  const size_t size = kFixedSize + 16 * hashes.size();
  out->resize(size);
  Writer w(*out);
  w.U32(disk_id);
  w.U32(flags);
  w.U64(first_chunk);
  w.U32(static_cast<uint32_t>(hashes.size()));
  w.U32(0);
  for (const ChunkHash& h : hashes) {
    w.U64(h.lo);
    w.U64(h.hi);
  }
  if (!w.ok() || w.size() != size) return Status::Internal("DISK_DIGESTS encoding size mismatch");
  return Status::Ok();
}

Result<DiskDigests> DiskDigests::Decode(std::span<const uint8_t> payload) {
  Reader r(payload);
  DiskDigests d;
  uint32_t count = 0, reserved = 0;
  if (!(r.U32(&d.disk_id) && r.U32(&d.flags) && r.U64(&d.first_chunk) && r.U32(&count) && r.U32(&reserved))) {
    return Status::Corruption("DISK_DIGESTS payload truncated");
  }
  if ((d.flags & ~(kLast | kAbsent)) != 0) return Status::Corruption("DISK_DIGESTS: unknown flags " + Str(d.flags));
  if (reserved != 0) return Status::Corruption("DISK_DIGESTS: reserved bytes are not zero");
  if (d.absent()) {
    if (!d.last() || count != 0) return Status::Corruption("DISK_DIGESTS: an absent disk with hashes or without LAST");
  } else if (count == 0 || count > kMaxChunkHashesPerFrame) {
    return Status::Corruption("DISK_DIGESTS: " + Str(count) + " hashes (1.." + Str(kMaxChunkHashesPerFrame) + ")");
  }
  if (payload.size() != kFixedSize + 16 * size_t{count}) {
    return Status::Corruption("DISK_DIGESTS payload is " + Str(payload.size()) + " bytes for " + Str(count) +
                              " hashes");
  }
  d.hashes.resize(count);
  for (ChunkHash& h : d.hashes) {
    r.U64(&h.lo);
    r.U64(&h.hi);
  }
  return d;
}

Status SendDiskDigests(FrameWriter* writer, std::span<const DiskInfo> disks, const DescribeDiskFn& describe,
                       std::chrono::milliseconds per_frame) {
  DiskDigests frame;
  frame.hashes.reserve(kChunksPerSentFrame);
  for (size_t i = 0; i < disks.size(); ++i) {
    const uint64_t chunks = DiskChunks(disks[i].size_bytes);
    frame.disk_id = disks[i].id;
    bool absent = chunks == 0 || chunks > kMaxDiskChunks;
    for (uint64_t at = 0; !absent && at < chunks;) {
      const uint64_t n = std::min<uint64_t>(kChunksPerSentFrame, chunks - at);
      frame.hashes.assign(n, ChunkHash{});
      Status st = describe(i, at, frame.hashes);
      if (!st.ok()) {
        // A disk the backup cannot describe is ABSENT, but only before its
        // first frame went out (a half-described disk cannot be taken back).
        if (st.code() == Code::kUnsupported && at == 0) {
          absent = true;
          break;
        }
        return st.With("describing disk '" + disks[i].name + "'");
      }
      frame.first_chunk = at;
      at += n;
      frame.flags = at == chunks ? DiskDigests::kLast : 0;
      ROMULUS_RETURN_IF_ERROR(
          writer->Send(frame, 0, transport::DeadlineIn(per_frame)).With("sending DISK_DIGESTS"));
    }
    if (absent) {
      frame.first_chunk = 0;
      frame.flags = DiskDigests::kLast | DiskDigests::kAbsent;
      frame.hashes.clear();
      ROMULUS_RETURN_IF_ERROR(
          writer->Send(frame, 0, transport::DeadlineIn(per_frame)).With("sending DISK_DIGESTS"));
    }
  }
  return Status::Ok();
}

Result<std::vector<std::shared_ptr<const DiskChunkTable>>> ReceiveDiskDigests(
    FrameReader* reader, std::span<const DiskInfo> disks, std::chrono::milliseconds per_frame) {
  std::vector<std::shared_ptr<const DiskChunkTable>> tables;
  for (const DiskInfo& disk : disks) {
    const uint64_t chunks = DiskChunks(disk.size_bytes);
    auto table = std::make_shared<DiskChunkTable>();
    for (;;) {
      auto f = reader->Next(transport::DeadlineIn(per_frame));
      if (!f.ok()) return f.status().With("reading the backup's DISK_DIGESTS for disk '" + disk.name + "'");
      // No HEARTBEAT here: the backup starts them after the table, and one
      // would restart the per-frame deadline.
      if (f->type() == FrameType::kError) {
        return Status::Corruption("backup reported an error instead of its disk digests: " +
                                  DescribeErrorPayload(f->payload));
      }
      if (f->type() != FrameType::kDiskDigests) {
        return Status::Corruption("expected DISK_DIGESTS, got " + FrameTypeName(f->header.type));
      }
      auto d = DiskDigests::Decode(f->payload);
      if (!d.ok()) return d.status();
      if (d->disk_id != disk.id) {
        return Status::Corruption("DISK_DIGESTS for disk id " + Str(d->disk_id) + " where disk '" + disk.name +
                                  "' (id " + Str(disk.id) + ") was due");
      }
      if (d->absent()) {
        if (!table->empty()) return Status::Corruption("DISK_DIGESTS: disk '" + disk.name + "' absent after hashes");
        table.reset();
        break;
      }
      ROMULUS_RETURN_IF_ERROR(AppendChunkHashes(table.get(), chunks, d->first_chunk, d->hashes, d->last(),
                                                "DISK_DIGESTS of disk '" + disk.name + "'"));
      if (d->last()) break;
    }
    tables.push_back(std::move(table));
  }
  return tables;
}

}  // namespace romulus::protocol

#include "protocol/disk_records.h"

#include <lz4.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>
#include <string>

#include "common/little_endian.h"
#include "protocol/wire.h"

namespace romulus::protocol {
namespace {

std::string Str(uint64_t v) { return std::to_string(v); }

// The canonical header the digest hashes per record: the record as applied,
// so a raw and an LZ4 write of the same bytes hash alike.
void CanonicalHead(const DiskRecord& r, uint8_t out[24]) {
  out[0] = static_cast<uint8_t>(r.kind);
  out[1] = r.flags;
  out[2] = 0;
  out[3] = 0;
  StoreLE32(out + 4, 0);
  StoreLE64(out + 8, r.offset);
  StoreLE64(out + 16, r.length);
}

bool KnownFlags(DiskRecordKind kind, uint8_t flags) {
  switch (kind) {
    case DiskRecordKind::kWrite:
    case DiskRecordKind::kWriteLz4: return (flags & ~kDiskFlagFua) == 0;
    case DiskRecordKind::kZero: return (flags & ~(kDiskFlagFua | kDiskFlagTrim)) == 0;
    case DiskRecordKind::kFlush: return flags == 0;
  }
  return false;
}

}  // namespace

// ---- DiskRecordDigest --------------------------------------------------------

DiskRecordDigest::DiskRecordDigest() : state_(XXH3_createState()) { Reset(); }
DiskRecordDigest::~DiskRecordDigest() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void DiskRecordDigest::Reset() {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
  records_ = 0;
  data_bytes_ = 0;
}

void DiskRecordDigest::Add(const DiskRecord& record) {
  uint8_t head[24];
  CanonicalHead(record, head);
  auto* st = static_cast<XXH3_state_t*>(state_);
  XXH3_64bits_update(st, head, sizeof head);
  if (record.kind == DiskRecordKind::kWrite && !record.data.empty()) {
    XXH3_64bits_update(st, record.data.data(), record.data.size());
    data_bytes_ += record.data.size();
  }
  ++records_;
}

uint64_t DiskRecordDigest::value() const {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

// ---- DiskFrameBuilder --------------------------------------------------------

DiskFrameBuilder::DiskFrameBuilder(size_t capacity)
    : capacity_(std::min(capacity, kMaxPayload)),
      buf_(capacity_),
      lz4_(static_cast<size_t>(LZ4_compressBound(static_cast<int>(kMaxDiskWriteChunk)))) {
  Reset(0);
}

void DiskFrameBuilder::Reset(uint32_t disk_id) {
  StoreLE32(buf_.data(), disk_id);
  StoreLE32(buf_.data() + 4, 0);
  pos_ = kDiskFrameHeadSize;
  count_ = 0;
  lz4_saved_ = 0;
}

bool DiskFrameBuilder::Head(DiskRecordKind kind, uint8_t flags, uint64_t offset, uint32_t length,
                            uint32_t data_len) {
  if (kDiskRecordHeadSize + size_t{data_len} > capacity_ - pos_) return false;
  uint8_t* p = buf_.data() + pos_;
  p[0] = static_cast<uint8_t>(kind);
  p[1] = flags;
  StoreLE16(p + 2, 0);
  StoreLE32(p + 4, length);
  StoreLE64(p + 8, offset);
  StoreLE32(p + 16, data_len);
  return true;
}

bool DiskFrameBuilder::AddWrite(uint64_t offset, std::span<const uint8_t> bytes, bool fua, bool try_lz4) {
  if (bytes.empty() || bytes.size() > kMaxDiskWriteChunk) return false;
  const uint8_t flags = fua ? kDiskFlagFua : 0;
  const auto length = static_cast<uint32_t>(bytes.size());
  if (try_lz4) {
    const int n = LZ4_compress_default(reinterpret_cast<const char*>(bytes.data()),
                                       reinterpret_cast<char*>(lz4_.data()), static_cast<int>(length),
                                       static_cast<int>(lz4_.size()));
    if (n > 0 && static_cast<uint32_t>(n) < length) {
      if (!Head(DiskRecordKind::kWriteLz4, flags, offset, length, static_cast<uint32_t>(n))) return false;
      std::memcpy(buf_.data() + pos_ + kDiskRecordHeadSize, lz4_.data(), static_cast<size_t>(n));
      pos_ += kDiskRecordHeadSize + static_cast<size_t>(n);
      ++count_;
      lz4_saved_ += length - static_cast<uint32_t>(n);
      return true;
    }
  }
  if (!Head(DiskRecordKind::kWrite, flags, offset, length, length)) return false;
  std::memcpy(buf_.data() + pos_ + kDiskRecordHeadSize, bytes.data(), bytes.size());
  pos_ += kDiskRecordHeadSize + bytes.size();
  ++count_;
  return true;
}

bool DiskFrameBuilder::AddZero(uint64_t offset, uint64_t length, bool trim, bool fua) {
  if (length == 0 || length > kMaxDiskZeroChunk) return false;
  const uint8_t flags = static_cast<uint8_t>((fua ? kDiskFlagFua : 0) | (trim ? kDiskFlagTrim : 0));
  if (!Head(DiskRecordKind::kZero, flags, offset, static_cast<uint32_t>(length), 0)) return false;
  pos_ += kDiskRecordHeadSize;
  ++count_;
  return true;
}

bool DiskFrameBuilder::AddFlush() {
  if (!Head(DiskRecordKind::kFlush, 0, 0, 0, 0)) return false;
  pos_ += kDiskRecordHeadSize;
  ++count_;
  return true;
}

std::span<const uint8_t> DiskFrameBuilder::payload() {
  StoreLE32(buf_.data() + 4, count_);
  return {buf_.data(), pos_};
}

// ---- DiskFrameParser ---------------------------------------------------------

DiskFrameParser::DiskFrameParser(size_t arena_max)
    : arena_max_(std::max<size_t>(arena_max, kMaxDiskWriteChunk)) {}

Status DiskFrameParser::Open(std::span<const uint8_t> payload, std::span<const DiskInfo> disks) {
  payload_ = {};
  count_ = yielded_ = 0;
  pos_ = 0;
  use_arena_ = false;
  arena_pos_ = 0;
  ++stats_.frames;
  if (payload.size() < kDiskFrameHeadSize) return Status::Corruption("DISK payload truncated");
  if (payload.size() > kMaxPayload) return Status::Corruption("DISK payload too large");
  disk_id_ = LoadLE32(payload.data());
  const uint32_t count = LoadLE32(payload.data() + 4);
  const auto it = std::find_if(disks.begin(), disks.end(), [&](const DiskInfo& d) { return d.id == disk_id_; });
  if (it == disks.end()) return Status::Corruption("DISK frame for disk id " + Str(disk_id_) + ", not in the session");
  if (count == 0) return Status::Corruption("DISK frame with no records");
  disk_size_ = it->size_bytes;
  payload_ = payload;
  count_ = count;
  // Two passes: every record's head and bounds first (cheap: the data is
  // skipped), which also says how much arena the LZ4 records need; then the
  // LZ4 records are decompressed, once, where Next will yield them from.
  uint64_t need = 0;
  Status s = CheckRecords(&need);
  // Without the memory for the arena every record goes through scratch_.
  const bool use_arena = s.ok() && Reserve(need);
  if (s.ok()) s = DecodeLz4(use_arena);
  if (!s.ok()) {
    payload_ = {};
    count_ = 0;
    return s;
  }
  use_arena_ = use_arena;
  pos_ = kDiskFrameHeadSize;
  return Status::Ok();
}

bool DiskFrameParser::ToArena(uint64_t used, uint32_t length, uint32_t data_len) const {
  return used + length <= arena_max_ && length <= uint64_t{data_len} * kDiskArenaMaxRatio;
}

Status DiskFrameParser::CheckRecords(uint64_t* arena_need) {
  Reader r(payload_.subspan(kDiskFrameHeadSize));
  uint64_t need = 0;
  for (uint32_t i = 0; i < count_; ++i) {
    const std::string at = "DISK record " + Str(i) + " of disk " + Str(disk_id_);
    uint8_t kind_raw = 0, flags = 0;
    uint16_t reserved = 0;
    uint32_t length = 0, data_len = 0;
    uint64_t offset = 0;
    if (!(r.U8(&kind_raw) && r.U8(&flags) && r.U16(&reserved) && r.U32(&length) && r.U64(&offset) &&
          r.U32(&data_len))) {
      return Status::Corruption(at + ": truncated (the frame says " + Str(count_) + " records)");
    }
    const auto kind = static_cast<DiskRecordKind>(kind_raw);
    if (kind != DiskRecordKind::kWrite && kind != DiskRecordKind::kWriteLz4 && kind != DiskRecordKind::kZero &&
        kind != DiskRecordKind::kFlush) {
      return Status::Corruption(at + ": unknown kind " + Str(kind_raw));
    }
    if (reserved != 0 || !KnownFlags(kind, flags)) {
      return Status::Corruption(at + ": undefined flags or reserved bits");
    }
    if (kind == DiskRecordKind::kFlush) {
      if (length != 0 || offset != 0 || data_len != 0) return Status::Corruption(at + ": FLUSH with a range");
      continue;
    }
    if (length == 0 || length % kDiskSectorSize != 0 || offset % kDiskSectorSize != 0) {
      return Status::Corruption(at + ": range " + Str(offset) + "+" + Str(length) +
                                " is empty or not sector aligned");
    }
    // offset + length <= size without overflow.
    if (offset > disk_size_ || length > disk_size_ - offset) {
      return Status::Corruption(at + ": range " + Str(offset) + "+" + Str(length) + " beyond the disk's " +
                                Str(disk_size_) + " bytes");
    }
    std::span<const uint8_t> data;
    switch (kind) {
      case DiskRecordKind::kWrite:
        if (length > kMaxDiskWriteChunk || data_len != length) {
          return Status::Corruption(at + ": write of " + Str(length) + " bytes with " + Str(data_len) +
                                    " data bytes (at most " + Str(kMaxDiskWriteChunk) + ")");
        }
        if (!r.Bytes(data_len, &data)) return Status::Corruption(at + ": data beyond the frame");
        break;
      case DiskRecordKind::kWriteLz4:
        if (length > kMaxDiskWriteChunk || data_len == 0 || data_len >= length) {
          return Status::Corruption(at + ": compressed write of " + Str(length) + " bytes with " + Str(data_len) +
                                    " data bytes");
        }
        if (!r.Bytes(data_len, &data)) return Status::Corruption(at + ": data beyond the frame");
        if (ToArena(need, length, data_len)) need += length;
        break;
      case DiskRecordKind::kZero:
        if (data_len != 0) return Status::Corruption(at + ": ZERO with data");
        break;
      case DiskRecordKind::kFlush: break;
    }
  }
  if (r.remaining() != 0) {
    return Status::Corruption("DISK frame of disk " + Str(disk_id_) + ": " + Str(r.remaining()) +
                              " bytes after its " + Str(count_) + " records");
  }
  *arena_need = need;
  return Status::Ok();
}

// Grows the arena to `need` (a power of two, so a slowly growing need does
// not reallocate every frame; at most arena_max_). Its old bytes are not
// kept: nothing in it is yielded any more.
bool DiskFrameParser::Reserve(uint64_t need) {
  if (need <= arena_cap_) return true;
  const size_t cap = std::min<size_t>(arena_max_, std::bit_ceil(static_cast<size_t>(need)));
  arena_.reset();
  arena_cap_ = 0;
  arena_.reset(new (std::nothrow) uint8_t[cap]);
  if (!arena_) return false;
  arena_cap_ = cap;
  ++stats_.allocations;
  return true;
}

Status DiskFrameParser::DecodeLz4(bool use_arena) {
  // The heads were checked: walk them again without checks.
  size_t pos = kDiskFrameHeadSize;
  size_t arena_pos = 0;
  uint32_t lz4 = 0;
  for (uint32_t i = 0; i < count_; ++i) {
    const uint8_t* p = payload_.data() + pos;
    const uint32_t length = LoadLE32(p + 4);
    const uint32_t data_len = LoadLE32(p + 16);
    pos += kDiskRecordHeadSize + data_len;
    if (static_cast<DiskRecordKind>(p[0]) != DiskRecordKind::kWriteLz4) continue;
    uint8_t* out;
    // The same choice, in the same order, as CheckRecords and Next make.
    if (use_arena && ToArena(arena_pos, length, data_len)) {
      out = arena_.get() + arena_pos;
      arena_pos += length;
    } else {
      if (scratch_.empty()) {
        scratch_.resize(kMaxDiskWriteChunk);
        ++stats_.allocations;
      }
      out = scratch_.data();
    }
    ++lz4;
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(p + kDiskRecordHeadSize),
                                      reinterpret_cast<char*>(out), static_cast<int>(data_len),
                                      static_cast<int>(length));
    if (n < 0 || static_cast<uint32_t>(n) != length) {
      return Status::Corruption("DISK record " + Str(i) + " of disk " + Str(disk_id_) +
                                ": LZ4 data does not decompress to " + Str(length) + " bytes");
    }
  }
  stats_.lz4_records += lz4;
  return Status::Ok();
}

bool DiskFrameParser::Next(DiskRecord* out) {
  if (yielded_ >= count_) return false;
  const uint8_t* p = payload_.data() + pos_;
  const auto kind = static_cast<DiskRecordKind>(p[0]);
  const uint32_t length = LoadLE32(p + 4);
  const uint32_t data_len = LoadLE32(p + 16);
  const uint8_t* data = p + kDiskRecordHeadSize;
  *out = DiskRecord{};
  out->flags = p[1];
  out->offset = LoadLE64(p + 8);
  out->length = length;
  switch (kind) {
    case DiskRecordKind::kWriteLz4:
      out->kind = DiskRecordKind::kWrite;
      if (use_arena_ && ToArena(arena_pos_, length, data_len)) {
        // Decompressed by Open, in stream order.
        out->data = {arena_.get() + arena_pos_, length};
        arena_pos_ += length;
      } else {
        // Beyond the arena's bound, or cheap to decompress: Open validated
        // it through scratch_, which a later record overwrote; again.
        LZ4_decompress_safe(reinterpret_cast<const char*>(data), reinterpret_cast<char*>(scratch_.data()),
                            static_cast<int>(data_len), static_cast<int>(length));
        out->data = {scratch_.data(), length};
        ++stats_.lz4_redecoded;
      }
      break;
    case DiskRecordKind::kWrite:
      out->kind = DiskRecordKind::kWrite;
      out->data = {data, length};
      break;
    default:
      out->kind = kind;
      break;
  }
  pos_ += kDiskRecordHeadSize + data_len;
  ++yielded_;
  return true;
}

// ---- DISK_END ----------------------------------------------------------------

Status DiskEnd::EncodeTo(std::vector<uint8_t>* out) const {
  const size_t size = has_tag ? kDiskEndTaggedSize : kDiskEndSize;
  out->resize(size);
  Writer w(*out);
  if (sync_state > kMaxSyncState) return Status::InvalidArgument("DISK_END sync state " + Str(sync_state) + " > 1001");
  w.U32(disk_id);
  w.U32(sync_state);
  w.U64(record_count);
  w.U64(data_bytes);
  w.U64(digest);
  if (has_tag) w.U64(tag);
  return w.ok() && w.size() == size ? Status::Ok() : Status::Internal("DISK_END encoding size mismatch");
}

Result<DiskEnd> DiskEnd::Decode(std::span<const uint8_t> payload, bool sync_agreed, bool delta_agreed) {
  const size_t want = delta_agreed ? kDiskEndTaggedSize : kDiskEndSize;
  if (payload.size() != want) {
    return Status::Corruption("DISK_END payload is " + Str(payload.size()) + " bytes, expected " + Str(want));
  }
  Reader r(payload);
  DiskEnd e;
  r.U32(&e.disk_id);
  r.U32(&e.sync_state);
  r.U64(&e.record_count);
  r.U64(&e.data_bytes);
  r.U64(&e.digest);
  if (delta_agreed) {
    e.has_tag = true;
    r.U64(&e.tag);
  }
  if (!sync_agreed && e.sync_state != 0) return Status::Corruption("DISK_END reserved field is not zero");
  if (e.sync_state > kMaxSyncState) {
    return Status::Corruption("DISK_END sync state " + Str(e.sync_state) + " is above 1001");
  }
  return e;
}

Status AddDiskRecordSplit(DiskFrameBuilder& builder, const DiskRecord& r, bool try_lz4, DiskRecordDigest& digest,
                          const std::function<Status()>& flush) {
  auto add = [&](const DiskRecord& piece) -> Status {
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool ok = false;
      switch (piece.kind) {
        case DiskRecordKind::kWrite:
          ok = builder.AddWrite(piece.offset, piece.data, piece.fua(), try_lz4);
          break;
        case DiskRecordKind::kZero:
          ok = builder.AddZero(piece.offset, piece.length, piece.trim(), piece.fua());
          break;
        case DiskRecordKind::kFlush:
          ok = builder.AddFlush();
          break;
        default:
          return Status::Internal("disk record kind " + std::to_string(static_cast<int>(piece.kind)) +
                                  " cannot be encoded");
      }
      if (ok) {
        digest.Add(piece);
        return Status::Ok();
      }
      ROMULUS_RETURN_IF_ERROR(flush());
    }
    return Status::Internal("a disk record does not fit an empty DISK frame");
  };
  const uint64_t chunk = r.kind == DiskRecordKind::kWrite  ? kMaxDiskWriteChunk
                         : r.kind == DiskRecordKind::kZero ? kMaxDiskZeroChunk
                                                           : 0;
  if (chunk == 0) return add(r);
  for (uint64_t at = 0; at < r.length; at += chunk) {
    DiskRecord c = r;
    c.offset = r.offset + at;
    c.length = std::min<uint64_t>(chunk, r.length - at);
    if (r.kind == DiskRecordKind::kWrite) c.data = r.data.subspan(at, c.length);
    ROMULUS_RETURN_IF_ERROR(add(c));
  }
  return Status::Ok();
}

}  // namespace romulus::protocol

// Page batch encoding (docs/CACHE-AND-BATCH.md §2).
//
//   batch  = entry*                     (ends where the input ends)
//   entry  = word payload
//   word   = ULEB128( (pfn - expected) << 3 | kind ),  expected = previous pfn + 1, or 0
//   payload: ZERO, UNCHANGED: nothing
//            DELTA:   ULEB128(len) len bytes, 1 <= len <= kMaxDeltaLen
//            RAW:     kPageSize bytes
//            RAW_LZ4: ULEB128(len) len bytes, 1 <= len <= kPageSize - 1
//
// Every varint must be canonical (shortest form, at most 10 bytes, fits in 64
// bits), so one batch has exactly one encoding: the fuzz target checks that
// every accepted input re-encodes to itself.

#include "compress/page_batch.h"

#include <cstring>
#include <limits>
#include <string>

namespace romulus::compress {

namespace {

constexpr uint64_t kMaxGap = (uint64_t{1} << 61) - 1;  // gap << 3 must fit in 64 bits
constexpr size_t kMaxVarint = 10;

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

size_t PutVarint(uint8_t* out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<uint8_t>(v) | 0x80;
    v >>= 7;
  }
  out[n++] = static_cast<uint8_t>(v);
  return n;
}

// Returns bytes consumed, or 0 if truncated, longer than 10 bytes, wider than
// 64 bits, or not in shortest form (a final byte of 0 after a continuation).
size_t GetVarint(const uint8_t* in, size_t len, uint64_t* v) {
  uint64_t r = 0;
  for (size_t i = 0; i < kMaxVarint && i < len; ++i) {
    const uint8_t b = in[i];
    if (i == kMaxVarint - 1 && b > 1) return 0;  // bits beyond 64
    r |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      if (b == 0 && i > 0) return 0;  // padded: 0x80 0x00 encodes 0 in two bytes
      *v = r;
      return i + 1;
    }
  }
  return 0;
}

bool HasLengthPrefix(PageKind kind) { return kind == PageKind::kDelta || kind == PageKind::kRawLz4; }

size_t MaxPayloadFor(PageKind kind) {
  switch (kind) {
    case PageKind::kDelta: return kMaxDeltaLen;
    case PageKind::kRawLz4: return kPageSize - 1;
    default: return 0;
  }
}

bool PayloadSizeOk(PageKind kind, size_t len) {
  switch (kind) {
    case PageKind::kZero:
    case PageKind::kUnchanged: return len == 0;
    case PageKind::kRaw: return len == kPageSize;
    case PageKind::kDelta:
    case PageKind::kRawLz4: return len >= 1 && len <= MaxPayloadFor(kind);
  }
  return false;  // not a kind
}

bool KindOk(PageKind kind) { return static_cast<unsigned>(kind) < kNumPageKinds; }

uint64_t Word(uint64_t gap, PageKind kind) { return gap << 3 | static_cast<uint64_t>(kind); }

}  // namespace

size_t BatchWriter::EntrySize(uint64_t pfn_gap, PageKind kind, size_t payload_len) {
  if (pfn_gap > kMaxGap) return std::numeric_limits<size_t>::max();
  size_t n = VarintSize(Word(pfn_gap, kind)) + payload_len;
  if (HasLengthPrefix(kind)) n += VarintSize(payload_len);
  return n;
}

Status BatchWriter::Append(const PageEntry& e) {
  // pfn == UINT64_MAX would wrap next_pfn_ to 0 and accept anything after it.
  if (e.pfn < next_pfn_ || e.pfn == std::numeric_limits<uint64_t>::max() || e.pfn - next_pfn_ > kMaxGap) {
    return Status::InvalidArgument("batch: pfn " + std::to_string(e.pfn) + " out of order (expected >= " +
                                   std::to_string(next_pfn_) + ")");
  }
  if (!KindOk(e.kind) || !PayloadSizeOk(e.kind, e.payload.size())) {
    return Status::InvalidArgument("batch: payload of " + std::to_string(e.payload.size()) +
                                   " bytes is invalid for kind " + std::to_string(static_cast<int>(e.kind)));
  }
  const uint64_t gap = e.pfn - next_pfn_;
  const size_t need = EntrySize(gap, e.kind, e.payload.size());
  if (need > cap_ - pos_) return Status::OutOfRange("batch full");
  uint8_t* p = out_ + pos_;
  p += PutVarint(p, Word(gap, e.kind));
  if (HasLengthPrefix(e.kind)) p += PutVarint(p, e.payload.size());
  if (!e.payload.empty()) std::memcpy(p, e.payload.data(), e.payload.size());
  pos_ += need;
  ++count_;
  next_pfn_ = e.pfn + 1;
  return Status::Ok();
}

uint8_t* BatchWriter::PayloadSlot(uint64_t pfn, PageKind kind, size_t max_len) {
  if (!HasLengthPrefix(kind) || max_len == 0 || max_len > MaxPayloadFor(kind)) return nullptr;
  if (pfn < next_pfn_ || pfn == std::numeric_limits<uint64_t>::max() || pfn - next_pfn_ > kMaxGap) return nullptr;
  const uint64_t gap = pfn - next_pfn_;
  // Reserve for the longest prefix max_len can need, so CommitPayload's
  // shift for a two-byte prefix always stays inside the batch.
  if (EntrySize(gap, kind, max_len) > cap_ - pos_) return nullptr;
  return out_ + pos_ + VarintSize(Word(gap, kind)) + 1;
}

Status BatchWriter::CommitPayload(uint64_t pfn, PageKind kind, size_t len) {
  if (pfn < next_pfn_ || pfn == std::numeric_limits<uint64_t>::max() || pfn - next_pfn_ > kMaxGap) {
    return Status::InvalidArgument("batch: pfn out of order");
  }
  if (!HasLengthPrefix(kind) || !PayloadSizeOk(kind, len)) {
    return Status::InvalidArgument("batch: bad in-place payload");
  }
  const uint64_t gap = pfn - next_pfn_;
  const size_t need = EntrySize(gap, kind, len);
  if (need > cap_ - pos_) return Status::OutOfRange("batch full");
  uint8_t* p = out_ + pos_;
  const size_t wlen = VarintSize(Word(gap, kind));
  uint8_t* payload = p + wlen + 1;  // where PayloadSlot put it
  if (VarintSize(len) == 2) std::memmove(payload + 1, payload, len);
  PutVarint(p, Word(gap, kind));
  PutVarint(p + wlen, len);
  pos_ += need;
  ++count_;
  next_pfn_ = pfn + 1;
  return Status::Ok();
}

Result<bool> BatchReader::Next(PageEntry* entry) {
  const size_t size = in_.size();
  if (pos_ == size) return false;
  const uint8_t* base = in_.data();
  size_t pos = pos_;
  auto bad = [&](const char* what) {
    return Status::Corruption(std::string("page batch: ") + what + " at offset " + std::to_string(pos_));
  };

  uint64_t word = 0;
  size_t n = GetVarint(base + pos, size - pos, &word);
  if (n == 0) return bad("truncated or non-canonical entry word");
  pos += n;
  const auto kind = static_cast<PageKind>(word & 7);
  if (!KindOk(kind)) return bad("unknown page kind");
  const uint64_t gap = word >> 3;
  if (gap > std::numeric_limits<uint64_t>::max() - next_pfn_) return bad("pfn overflow");
  const uint64_t pfn = next_pfn_ + gap;
  if (pfn >= max_pfn_) return bad("pfn beyond guest");

  size_t len = 0;
  if (kind == PageKind::kRaw) {
    len = kPageSize;
  } else if (HasLengthPrefix(kind)) {
    uint64_t v = 0;
    n = GetVarint(base + pos, size - pos, &v);
    if (n == 0) return bad("truncated or non-canonical payload length");
    if (v == 0 || v > MaxPayloadFor(kind)) return bad("payload length out of range");
    pos += n;
    len = static_cast<size_t>(v);
  }
  if (len > size - pos) return bad("truncated payload");

  entry->pfn = pfn;
  entry->kind = kind;
  entry->payload = in_.subspan(pos, len);
  pos_ = pos + len;
  next_pfn_ = pfn + 1;
  return true;
}

}  // namespace romulus::compress

// Page batches: the compact wire form of a run of (pfn, kind, payload)
// entries (format: docs/CACHE-AND-BATCH.md). Each entry starts with one ULEB128 word
// ((pfn - expected_pfn) << 3 | kind), where expected_pfn is the previous pfn
// + 1 (0 for the first entry), so ascending dense pfns cost one byte. Pfns
// must strictly increase within a batch. Payload by kind: ZERO, UNCHANGED:
// none; DELTA: ULEB128 length (1..kMaxDeltaLen) + delta bytes; RAW: kPageSize
// bytes; RAW_LZ4: ULEB128 length (1..kPageSize-1) + LZ4 block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/status.h"
#include "compress/page.h"

namespace romulus::compress {

inline constexpr size_t kMaxDeltaLen = kPageSize - 1;
// Worst-case bytes one entry can take (header word + length + raw page).
inline constexpr size_t kMaxEntryBytes = 10 + 2 + kPageSize;

struct PageEntry {
  uint64_t pfn = 0;
  PageKind kind = PageKind::kZero;
  std::span<const uint8_t> payload;  // empty for ZERO / UNCHANGED
};

// Appends entries into caller memory. Never allocates.
class BatchWriter {
 public:
  BatchWriter(uint8_t* out, size_t cap) : out_(out), cap_(cap) {}
  // Appends one entry; OutOfRange if it does not fit (the batch is unchanged),
  // InvalidArgument if pfn does not increase or payload size is wrong for kind.
  Status Append(const PageEntry& entry);
  // Space an entry of this kind/payload size would take (pfn_gap = pfn -
  // expected pfn; SIZE_MAX if the gap cannot be encoded, i.e. >= 2^61).
  static size_t EntrySize(uint64_t pfn_gap, PageKind kind, size_t payload_len);

  // In-place payloads, for encoders that write a DELTA or RAW_LZ4 payload
  // straight into the batch instead of into a scratch buffer first.
  // PayloadSlot returns where that payload goes if an entry for pfn with a
  // payload of up to max_len bytes fits (nullptr otherwise, or if pfn is out
  // of order, kind has no length prefix, or max_len is out of range). Write
  // at most max_len bytes there, then CommitPayload with the same pfn and
  // kind and the real length; until then the batch is unchanged. The slot
  // assumes a one-byte length prefix; CommitPayload moves a payload of 128
  // bytes or more up by one byte (space for that was reserved).
  uint8_t* PayloadSlot(uint64_t pfn, PageKind kind, size_t max_len);
  Status CommitPayload(uint64_t pfn, PageKind kind, size_t len);
  size_t size() const { return pos_; }
  size_t count() const { return count_; }
  size_t remaining() const { return cap_ - pos_; }
  void Reset() { pos_ = 0; count_ = 0; next_pfn_ = 0; }

 private:
  uint8_t* out_;
  size_t cap_;
  size_t pos_ = 0;
  size_t count_ = 0;
  uint64_t next_pfn_ = 0;
};

// Iterates a batch; strict (see docs/CACHE-AND-BATCH.md): an unknown kind, a
// truncated, over-long or non-canonical varint, a pfn that overflows or is
// >= max_pfn, a payload length out of range for its kind, or a payload that
// runs past the input is Corruption. Payload spans point into the input.
class BatchReader {
 public:
  // max_pfn: pfns >= max_pfn are rejected.
  BatchReader(std::span<const uint8_t> in, uint64_t max_pfn) : in_(in), max_pfn_(max_pfn) {}
  // Returns true and fills *entry, false at the clean end of the batch, or an
  // error for malformed input.
  Result<bool> Next(PageEntry* entry);

 private:
  std::span<const uint8_t> in_;
  uint64_t max_pfn_;
  size_t pos_ = 0;
  uint64_t next_pfn_ = 0;
};

}  // namespace romulus::compress

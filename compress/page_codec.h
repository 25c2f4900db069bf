// PageEncoder / PageDecoder: one page in, one batch entry out, and back,
// through the page cache. The two sides apply the same cache policy so the
// backup's mirror stays identical to the primary's cache.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "common/status.h"
#include "compress/page.h"
#include "compress/page_batch.h"
#include "compress/page_cache.h"
#include "compress/xbzrle.h"

namespace romulus::compress {

struct CodecOptions {
  uint64_t cache_pages = (64ull << 20) / kPageSize;  // 64 MiB
  // A delta longer than this goes RAW (counted as an overflow).
  size_t max_delta_len = kPageSize / 3;
  // LZ4 second stage for RAW pages: used when it saves at least this many
  // bytes per page (0 = LZ4 disabled).
  size_t lz4_min_saving = 0;
  EncodeFn encoder = nullptr;  // nullptr = BestEncoder()
};

struct KindCounters {
  std::array<uint64_t, kNumPageKinds> pages{};    // by PageKind
  std::array<uint64_t, kNumPageKinds> payload{};  // payload bytes by PageKind
};

class PageEncoder {
 public:
  static Result<std::unique_ptr<PageEncoder>> Create(const CodecOptions& opts, uint64_t guest_pages);
  // Encodes `page` (the snapshot bytes, never live memory) as the next entry of
  // `batch`. OutOfRange if the batch is full (nothing changed: flush the batch
  // and call again). Updates the cache from the same bytes.
  Status Encode(uint64_t pfn, const uint8_t* page, BatchWriter* batch);
  void Reset();  // new connection: forget the cache
  PageCache& cache();
  const KindCounters& kinds() const;
  ~PageEncoder();

 private:
  PageEncoder() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class PageDecoder {
 public:
  static Result<std::unique_ptr<PageDecoder>> Create(const CodecOptions& opts, uint64_t guest_pages);
  // Reconstructs the page for `entry` into out (kPageSize bytes) and updates the
  // mirror cache. Corruption if a DELTA/UNCHANGED entry has no cached base, or
  // the payload is malformed.
  Status Decode(const PageEntry& entry, uint8_t* out);
  void Reset();
  PageCache& cache();
  const KindCounters& kinds() const;
  ~PageDecoder();

 private:
  PageDecoder() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace romulus::compress

// libFuzzer target for page batches: BatchReader + PageDecoder on arbitrary
// bytes, against a small mirror cache prepopulated deterministically.
//
// Properties checked on every input (any failure aborts so libFuzzer keeps
// the input):
//   - nothing crashes, reads or writes out of bounds (ASan), or hits UB;
//   - every entry the reader accepts re-encodes, through BatchWriter, to
//     exactly the bytes it was read from (one encoding per batch, §2.2 of
//     docs/CACHE-AND-BATCH.md), and a clean end means the whole input was used;
//   - a decoded ZERO page is zeros, a RAW page equals its payload, an
//     UNCHANGED page equals the cached copy;
//   - a second cache fed only the successfully decoded pages ends in the
//     decoder's state (the mirror is a pure function of what was decoded, and
//     an entry that failed to decode left no trace).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "compress/page.h"
#include "compress/page_batch.h"
#include "compress/page_cache.h"
#include "compress/page_codec.h"

namespace page_batch_fuzz {

using namespace romulus::compress;

constexpr uint64_t kGuestPages = 64;
constexpr uint64_t kCachePages = 8;

inline void Check(bool ok) {
  if (!ok) std::abort();
}

// Page content for the prepopulation: some structure and some zero bytes so
// that short deltas against it are meaningful.
inline void FillPage(uint64_t pfn, uint8_t* page) {
  for (size_t i = 0; i < kPageSize; ++i) {
    page[i] = (i % 64 < 16) ? 0 : static_cast<uint8_t>(pfn * 37 + i * 13);
  }
}

// Sends pfns 0..11 twice each: with 8 slots, pfns 4..11 end up cached
// (MRU first: 11, 10, ..., 4); pfns 0..3 are only marked as sent once.
inline void Prepopulate(PageCache& cache) {
  static const std::vector<uint8_t> pages = [] {
    std::vector<uint8_t> v(12 * kPageSize);
    for (uint64_t pfn = 0; pfn < 12; ++pfn) FillPage(pfn, v.data() + pfn * kPageSize);
    return v;
  }();
  cache.Reset();
  for (int round = 0; round < 2; ++round) {
    for (uint64_t pfn = 0; pfn < 12; ++pfn) cache.OnSend(pfn, pages.data() + pfn * kPageSize);
  }
}

inline CodecOptions Options() {
  CodecOptions opts;
  opts.cache_pages = kCachePages;
  opts.lz4_min_saving = 1;
  return opts;
}

}  // namespace page_batch_fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace page_batch_fuzz;
  // Copy so ASan sees the input's exact extent.
  std::vector<uint8_t> in(data, data + size);

  // Created once; Reset() + Prepopulate() gives the same state every run
  // (Reset is exact: tests/compress/page_cache_test.cc).
  static std::unique_ptr<PageDecoder> dec_p = std::move(PageDecoder::Create(Options(), kGuestPages)).value();
  static std::unique_ptr<PageCache> shadow_p = std::move(PageCache::Create(kCachePages, kGuestPages)).value();
  PageDecoder& dec = *dec_p;
  PageCache& shadow = *shadow_p;
  dec.Reset();
  Prepopulate(dec.cache());
  Prepopulate(shadow);

  std::vector<uint8_t> rewritten(size + 1);
  BatchWriter writer(rewritten.data(), rewritten.size());
  BatchReader reader(in, kGuestPages);
  std::vector<uint8_t> out(kPageSize), before(kPageSize);
  bool clean_end = false;
  bool decoding = true;
  for (;;) {
    PageEntry e;
    auto more = reader.Next(&e);
    if (!more.ok()) break;
    if (!*more) {
      clean_end = true;
      break;
    }
    Check(e.pfn < kGuestPages);
    Check(e.payload.empty() || (e.payload.data() >= in.data() &&
                                e.payload.data() + e.payload.size() <= in.data() + in.size()));
    Check(writer.Append(e).ok());
    if (!decoding) continue;

    const uint8_t* cached = dec.cache().Peek(e.pfn);
    if (cached != nullptr) std::memcpy(before.data(), cached, kPageSize);
    if (!dec.Decode(e, out.data()).ok()) {
      // As the engine would: the epoch is abandoned. That the failed entry
      // left no trace in the mirror is checked by the shadow digest below.
      decoding = false;
      continue;
    }
    switch (e.kind) {
      case PageKind::kZero:
        for (uint8_t b : out) Check(b == 0);
        break;
      case PageKind::kUnchanged:
        Check(cached != nullptr && std::memcmp(out.data(), before.data(), kPageSize) == 0);
        break;
      case PageKind::kRaw:
        Check(std::memcmp(out.data(), e.payload.data(), kPageSize) == 0);
        break;
      case PageKind::kDelta:
        Check(cached != nullptr);
        break;
      case PageKind::kRawLz4:
        break;
    }
    shadow.OnSend(e.pfn, out.data());
  }
  // Canonical: what was accepted re-encodes to the same bytes.
  Check(writer.size() <= size);
  Check(writer.size() == 0 || std::memcmp(rewritten.data(), in.data(), writer.size()) == 0);
  if (clean_end) Check(writer.size() == size);
  Check(shadow.StateDigest() == dec.cache().StateDigest());
  return 0;
}

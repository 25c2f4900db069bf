// PageEncoder / PageDecoder.
//
// Mirror invariant: after every entry, both sides call cache.OnSend(pfn, P)
// with the same P -- the encoder with the snapshot bytes it encoded, the
// decoder with the bytes it reconstructed, which equal them if the entry
// decoded. So the two caches see the same OnSend sequence and, the policy
// being deterministic (page_cache.cc), hold the same state. That is why the
// encoder calls OnSend for ZERO and RAW pages too, and why an entry that did
// not make it into the batch must leave no trace in the cache.

#include "compress/page_codec.h"

#include <lz4.h>

#include <cstring>
#include <new>
#include <string>

namespace romulus::compress {

namespace {

Status CheckOptions(const CodecOptions& opts) {
  if (opts.max_delta_len > kMaxDeltaLen) {
    return Status::InvalidArgument("max_delta_len " + std::to_string(opts.max_delta_len) + " exceeds " +
                                   std::to_string(kMaxDeltaLen));
  }
  if (opts.lz4_min_saving >= kPageSize) {
    return Status::InvalidArgument("lz4_min_saving must be below the page size");
  }
  return Status::Ok();
}

}  // namespace

struct PageEncoder::Impl {
  CodecOptions opts;
  EncodeFn encode = nullptr;
  uint64_t guest_pages = 0;
  std::unique_ptr<PageCache> cache;
  KindCounters kinds;
  // Used only when the batch's tail is too short to encode in place.
  alignas(64) uint8_t scratch[kPageSize];

  // Appends a RAW or RAW_LZ4 entry; returns the kind/payload size used.
  Status AppendRaw(uint64_t pfn, const uint8_t* page, BatchWriter* batch, PageKind* kind, size_t* len);
};

Status PageEncoder::Impl::AppendRaw(uint64_t pfn, const uint8_t* page, BatchWriter* batch, PageKind* kind,
                                    size_t* len) {
  if (opts.lz4_min_saving > 0) {
    // Bounding LZ4's output by the largest size that still saves enough makes
    // "not worth it" and "incompressible" the same cheap failure (0).
    const size_t max_out = kPageSize - opts.lz4_min_saving;
    uint8_t* slot = batch->PayloadSlot(pfn, PageKind::kRawLz4, max_out);
    uint8_t* dst = slot ? slot : scratch;
    const int c = LZ4_compress_default(reinterpret_cast<const char*>(page), reinterpret_cast<char*>(dst),
                                       static_cast<int>(kPageSize), static_cast<int>(max_out));
    if (c > 0) {
      const auto n = static_cast<size_t>(c);
      Status st = slot ? batch->CommitPayload(pfn, PageKind::kRawLz4, n)
                       : batch->Append({pfn, PageKind::kRawLz4, {scratch, n}});
      if (st.ok()) {
        *kind = PageKind::kRawLz4;
        *len = n;
      }
      return st;
    }
  }
  ROMULUS_RETURN_IF_ERROR(batch->Append({pfn, PageKind::kRaw, {page, kPageSize}}));
  *kind = PageKind::kRaw;
  *len = kPageSize;
  return Status::Ok();
}

Result<std::unique_ptr<PageEncoder>> PageEncoder::Create(const CodecOptions& opts, uint64_t guest_pages) {
  ROMULUS_RETURN_IF_ERROR(CheckOptions(opts));
  auto cache = PageCache::Create(opts.cache_pages, guest_pages);
  if (!cache.ok()) return cache.status();
  std::unique_ptr<PageEncoder> enc(new (std::nothrow) PageEncoder());
  if (!enc) return Status::FromErrno("page encoder", ENOMEM);
  enc->impl_.reset(new (std::nothrow) Impl());
  if (!enc->impl_) return Status::FromErrno("page encoder", ENOMEM);
  Impl& m = *enc->impl_;
  m.opts = opts;
  m.encode = opts.encoder ? opts.encoder : BestEncoder();
  m.guest_pages = guest_pages;
  m.cache = std::move(cache).value();
  return enc;
}

PageEncoder::~PageEncoder() = default;

Status PageEncoder::Encode(uint64_t pfn, const uint8_t* page, BatchWriter* batch) {
  Impl& m = *impl_;
  if (pfn >= m.guest_pages) {
    return Status::InvalidArgument("pfn " + std::to_string(pfn) + " beyond guest of " +
                                   std::to_string(m.guest_pages) + " pages");
  }
  PageKind kind = PageKind::kZero;
  size_t len = 0;
  if (IsZeroPage(page)) {
    // No lookup: a zero page needs no base, so it counts neither hit nor miss.
    ROMULUS_RETURN_IF_ERROR(batch->Append({pfn, PageKind::kZero, {}}));
  } else {
    // Peek, not Lookup: counters move only once the entry is in the batch.
    const uint8_t* cached = m.cache->Peek(pfn);
    bool overflow = false;
    if (cached != nullptr) {
      const size_t max = m.opts.max_delta_len;
      uint8_t* slot = max > 0 ? batch->PayloadSlot(pfn, PageKind::kDelta, max) : nullptr;
      uint8_t* dst = slot ? slot : m.scratch;
      const int n = m.encode(cached, page, dst, max);
      if (n == 0) {
        ROMULUS_RETURN_IF_ERROR(batch->Append({pfn, PageKind::kUnchanged, {}}));
        kind = PageKind::kUnchanged;
      } else if (n > 0) {
        len = static_cast<size_t>(n);
        ROMULUS_RETURN_IF_ERROR(slot ? batch->CommitPayload(pfn, PageKind::kDelta, len)
                                     : batch->Append({pfn, PageKind::kDelta, {m.scratch, len}}));
        kind = PageKind::kDelta;
      } else {
        overflow = true;
      }
    }
    if (cached == nullptr || overflow) ROMULUS_RETURN_IF_ERROR(m.AppendRaw(pfn, page, batch, &kind, &len));
    m.cache->CountLookup(cached != nullptr);
    if (overflow) m.cache->CountOverflow();
  }
  m.cache->OnSend(pfn, page);
  const auto k = static_cast<size_t>(kind);
  ++m.kinds.pages[k];
  m.kinds.payload[k] += len;
  return Status::Ok();
}

void PageEncoder::Reset() {
  impl_->cache->Reset();
  impl_->kinds = KindCounters{};
}

PageCache& PageEncoder::cache() { return *impl_->cache; }
const KindCounters& PageEncoder::kinds() const { return impl_->kinds; }

struct PageDecoder::Impl {
  uint64_t guest_pages = 0;
  std::unique_ptr<PageCache> cache;
  KindCounters kinds;
};

Result<std::unique_ptr<PageDecoder>> PageDecoder::Create(const CodecOptions& opts, uint64_t guest_pages) {
  ROMULUS_RETURN_IF_ERROR(CheckOptions(opts));
  auto cache = PageCache::Create(opts.cache_pages, guest_pages);
  if (!cache.ok()) return cache.status();
  std::unique_ptr<PageDecoder> dec(new (std::nothrow) PageDecoder());
  if (!dec) return Status::FromErrno("page decoder", ENOMEM);
  dec->impl_.reset(new (std::nothrow) Impl());
  if (!dec->impl_) return Status::FromErrno("page decoder", ENOMEM);
  dec->impl_->guest_pages = guest_pages;
  dec->impl_->cache = std::move(cache).value();
  return dec;
}

PageDecoder::~PageDecoder() = default;

Status PageDecoder::Decode(const PageEntry& e, uint8_t* out) {
  Impl& m = *impl_;
  auto bad = [&](const std::string& what) {
    return Status::Corruption("page " + std::to_string(e.pfn) + ": " + what);
  };
  if (e.pfn >= m.guest_pages) return bad("pfn beyond guest");
  const size_t len = e.payload.size();
  // Entries normally come from BatchReader, which already checked lengths;
  // checking again keeps Decode safe for any caller.
  switch (e.kind) {
    case PageKind::kZero:
      if (len != 0) return bad("zero page with payload");
      std::memset(out, 0, kPageSize);
      break;
    case PageKind::kUnchanged: {
      if (len != 0) return bad("unchanged page with payload");
      const uint8_t* base = m.cache->Lookup(e.pfn);
      if (base == nullptr) return bad("unchanged page not in the mirror cache");
      std::memcpy(out, base, kPageSize);
      break;
    }
    case PageKind::kDelta: {
      if (len == 0 || len > kMaxDeltaLen) return bad("delta length out of range");
      const uint8_t* base = m.cache->Lookup(e.pfn);
      if (base == nullptr) return bad("delta without a base in the mirror cache");
      std::memcpy(out, base, kPageSize);
      Status st = DecodeDelta(e.payload.data(), len, out);
      if (!st.ok()) return Status::Corruption("page " + std::to_string(e.pfn) + ": " + st.message());
      break;
    }
    case PageKind::kRaw:
      if (len != kPageSize) return bad("raw page of wrong size");
      std::memcpy(out, e.payload.data(), kPageSize);
      break;
    case PageKind::kRawLz4: {
      if (len == 0 || len >= kPageSize) return bad("lz4 length out of range");
      const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(e.payload.data()),
                                        reinterpret_cast<char*>(out), static_cast<int>(len),
                                        static_cast<int>(kPageSize));
      if (n != static_cast<int>(kPageSize)) return bad("lz4 block does not decode to one page");
      break;
    }
    default:
      return bad("unknown page kind");
  }
  m.cache->OnSend(e.pfn, out);
  const auto k = static_cast<size_t>(e.kind);
  ++m.kinds.pages[k];
  m.kinds.payload[k] += len;
  return Status::Ok();
}

void PageDecoder::Reset() {
  impl_->cache->Reset();
  impl_->kinds = KindCounters{};
}

PageCache& PageDecoder::cache() { return *impl_->cache; }
const KindCounters& PageDecoder::kinds() const { return impl_->kinds; }

}  // namespace romulus::compress

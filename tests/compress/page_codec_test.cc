#include "compress/page_codec.h"

#include <gtest/gtest.h>
#include <lz4.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace romulus::compress {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr int K(PageKind k) { return static_cast<int>(k); }

struct Pair {
  std::unique_ptr<PageEncoder> enc;
  std::unique_ptr<PageDecoder> dec;
};

Pair MakePair(const CodecOptions& opts, uint64_t guest) {
  auto e = PageEncoder::Create(opts, guest);
  auto d = PageDecoder::Create(opts, guest);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return {std::move(e).value(), std::move(d).value()};
}

// Encodes one page into a fresh batch and returns the single entry's bytes.
Bytes EncodeOne(PageEncoder* enc, uint64_t pfn, const uint8_t* page) {
  Bytes buf(kMaxEntryBytes);
  BatchWriter w(buf.data(), buf.size());
  Status st = enc->Encode(pfn, page, &w);
  EXPECT_TRUE(st.ok()) << st.ToString();
  buf.resize(w.size());
  return buf;
}

PageEntry ReadOne(const Bytes& batch, uint64_t guest) {
  BatchReader r(batch, guest);
  PageEntry e;
  auto more = r.Next(&e);
  EXPECT_TRUE(more.ok() && *more);
  return e;
}

void RandomBytes(std::mt19937_64& rng, uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

// Mutates `page` the way one of several workloads would.
void Dirty(std::mt19937_64& rng, uint8_t* page) {
  switch (rng() % 8) {
    case 0:  // a few sparse bytes
    case 1: {
      int n = 1 + rng() % 8;
      for (int i = 0; i < n; ++i) page[rng() % kPageSize] ^= static_cast<uint8_t>(1 + rng() % 255);
      break;
    }
    case 2: {  // a short run
      size_t off = rng() % kPageSize, len = std::min<size_t>(1 + rng() % 300, kPageSize - off);
      RandomBytes(rng, page + off, len);
      break;
    }
    case 3:  // whole page random: delta overflows
      RandomBytes(rng, page, kPageSize);
      break;
    case 4:  // zeroed
      std::memset(page, 0, kPageSize);
      break;
    case 5:  // dirty but unchanged (a write of the same value)
      break;
    case 6: {  // compressible text-like content
      const char* words[] = {"checkpoint ", "remus ", "xen ", "page ", "cache "};
      for (size_t off = 0; off < kPageSize;) {
        const char* w = words[rng() % 5];
        size_t l = std::min(std::strlen(w), kPageSize - off);
        std::memcpy(page + off, w, l);
        off += l;
      }
      break;
    }
    default: {  // the seed pattern: 4 bytes at fixed offsets
      for (size_t off = 0; off < kPageSize; off += 1024) page[off]++;
      break;
    }
  }
}

struct Scenario {
  const char* encoder;
  size_t lz4_min_saving;
  size_t batch_cap;
  uint64_t cache_pages;
};

// The property the whole design rests on: over many epochs of mixed random
// workloads, encoding on one side and decoding on the other keeps the backup
// image equal to the source and the two caches identical -- including when
// batches fill up mid-page and the encoder has to be called again.
TEST(PageCodecTest, RandomEpochsKeepImageAndMirrorIdentical) {
  std::vector<Scenario> scenarios;
  for (const EncoderImpl& e : AvailableEncoders()) {
    scenarios.push_back({e.name, 0, 16 << 10, 48});
    scenarios.push_back({e.name, 64, 6000, 200});
  }
  scenarios.push_back({"scalar", 1, kMaxEntryBytes, 0});    // cache disabled
  scenarios.push_back({"scalar", 0, 1 << 20, 1 << 20});     // cache larger than the guest
  constexpr uint64_t kGuest = 256;
  for (const Scenario& sc : scenarios) {
    SCOPED_TRACE(std::string(sc.encoder) + " lz4=" + std::to_string(sc.lz4_min_saving) +
                 " batch=" + std::to_string(sc.batch_cap) + " cache=" + std::to_string(sc.cache_pages));
    CodecOptions opts;
    opts.cache_pages = sc.cache_pages;
    opts.lz4_min_saving = sc.lz4_min_saving;
    opts.encoder = EncoderByName(sc.encoder);
    ASSERT_NE(opts.encoder, nullptr);
    Pair p = MakePair(opts, kGuest);
    std::mt19937_64 rng(std::hash<std::string>()(sc.encoder) + sc.batch_cap);
    Bytes source(kGuest * kPageSize, 0), backup(kGuest * kPageSize, 0xEE);
    Bytes batch(sc.batch_cap);
    uint64_t flushes = 0;
    for (int epoch = 0; epoch < 60; ++epoch) {
      std::vector<uint64_t> dirty;
      if (epoch == 0) {
        for (uint64_t pfn = 0; pfn < kGuest; ++pfn) dirty.push_back(pfn);  // full sync
        for (uint64_t pfn = 0; pfn < kGuest; pfn += 3) Dirty(rng, source.data() + pfn * kPageSize);
      } else {
        const uint64_t hot = 24;
        const size_t n = 1 + rng() % 80;
        for (size_t i = 0; i < n; ++i) dirty.push_back(rng() % 3 ? rng() % hot : rng() % kGuest);
        std::sort(dirty.begin(), dirty.end());
        dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
        for (uint64_t pfn : dirty) Dirty(rng, source.data() + pfn * kPageSize);
      }
      BatchWriter w(batch.data(), batch.size());
      auto flush = [&]() {
        BatchReader r({batch.data(), w.size()}, kGuest);
        PageEntry e;
        for (;;) {
          auto more = r.Next(&e);
          ASSERT_TRUE(more.ok()) << more.status().ToString();
          if (!*more) break;
          Status st = p.dec->Decode(e, backup.data() + e.pfn * kPageSize);
          ASSERT_TRUE(st.ok()) << st.ToString();
        }
        w.Reset();
        ++flushes;
      };
      for (uint64_t pfn : dirty) {
        const uint8_t* page = source.data() + pfn * kPageSize;
        Status st = p.enc->Encode(pfn, page, &w);
        if (st.code() == Code::kOutOfRange) {
          flush();
          st = p.enc->Encode(pfn, page, &w);
        }
        ASSERT_TRUE(st.ok()) << st.ToString();
      }
      flush();
      ASSERT_EQ(source, backup) << "epoch " << epoch;
      ASSERT_EQ(p.enc->cache().StateDigest(), p.dec->cache().StateDigest()) << "epoch " << epoch;
    }
    const KindCounters& ke = p.enc->kinds();
    const KindCounters& kd = p.dec->kinds();
    EXPECT_EQ(ke.pages, kd.pages);
    EXPECT_EQ(ke.payload, kd.payload);
    EXPECT_GT(ke.pages[K(PageKind::kZero)], 0u);
    EXPECT_GT(ke.pages[K(PageKind::kRaw)], 0u);
    if (sc.cache_pages > 0) {
      EXPECT_GT(ke.pages[K(PageKind::kDelta)], 0u);
      EXPECT_GT(ke.pages[K(PageKind::kUnchanged)], 0u);
      EXPECT_GT(p.enc->cache().counters().overflows, 0u);
      EXPECT_GT(p.enc->cache().counters().hits, 0u);
    } else {
      EXPECT_EQ(ke.pages[K(PageKind::kDelta)], 0u);
    }
    if (sc.lz4_min_saving > 0) {
      EXPECT_GT(ke.pages[K(PageKind::kRawLz4)], 0u);
    } else {
      EXPECT_EQ(ke.pages[K(PageKind::kRawLz4)], 0u);
    }
    if (sc.batch_cap < (1 << 20)) {
      EXPECT_GT(flushes, 60u);  // the retry path ran
    }
  }
}

TEST(PageCodecTest, KindsFollowTheDocumentedDecisions) {
  CodecOptions opts;
  opts.cache_pages = 4;
  Pair p = MakePair(opts, 16);
  Bytes page(kPageSize, 0);
  EXPECT_EQ(ReadOne(EncodeOne(p.enc.get(), 1, page.data()), 16).kind, PageKind::kZero);
  EXPECT_EQ(p.enc->cache().counters().hits + p.enc->cache().counters().misses, 0u);  // no lookup
  page[10] = 1;
  EXPECT_EQ(ReadOne(EncodeOne(p.enc.get(), 1, page.data()), 16).kind, PageKind::kRaw);  // 2nd send: miss
  EXPECT_EQ(p.enc->cache().counters().misses, 1u);
  EXPECT_EQ(ReadOne(EncodeOne(p.enc.get(), 1, page.data()), 16).kind, PageKind::kUnchanged);
  page[20] = 2;
  Bytes b = EncodeOne(p.enc.get(), 1, page.data());
  PageEntry e = ReadOne(b, 16);
  EXPECT_EQ(e.kind, PageKind::kDelta);
  EXPECT_EQ(e.payload.size(), 3u);  // zrun 20, nzrun 1, byte 2
  std::mt19937_64 rng(3);
  RandomBytes(rng, page.data(), kPageSize);
  EXPECT_EQ(ReadOne(EncodeOne(p.enc.get(), 1, page.data()), 16).kind, PageKind::kRaw);  // overflow
  const CacheCounters& c = p.enc->cache().counters();
  EXPECT_EQ(c.hits, 3u);
  EXPECT_EQ(c.misses, 1u);
  EXPECT_EQ(c.overflows, 1u);
  const KindCounters& k = p.enc->kinds();
  EXPECT_EQ(k.pages[K(PageKind::kRaw)], 2u);
  EXPECT_EQ(k.payload[K(PageKind::kRaw)], 2 * kPageSize);
  EXPECT_EQ(k.payload[K(PageKind::kDelta)], 3u);
}

TEST(PageCodecTest, Lz4PathAndItsThreshold) {
  Bytes page(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) page[i] = static_cast<uint8_t>("abcdefgh"[i % 8]);
  {
    CodecOptions opts;
    opts.lz4_min_saving = 512;
    Pair p = MakePair(opts, 8);
    Bytes b = EncodeOne(p.enc.get(), 2, page.data());
    PageEntry e = ReadOne(b, 8);
    ASSERT_EQ(e.kind, PageKind::kRawLz4);
    EXPECT_LE(e.payload.size(), kPageSize - 512);
    Bytes out(kPageSize);
    ASSERT_TRUE(p.dec->Decode(e, out.data()).ok());
    EXPECT_EQ(out, page);
  }
  {
    // Random bytes never save 1 byte: RAW.
    CodecOptions opts;
    opts.lz4_min_saving = 1;
    Pair p = MakePair(opts, 8);
    std::mt19937_64 rng(9);
    Bytes r(kPageSize);
    RandomBytes(rng, r.data(), kPageSize);
    EXPECT_EQ(ReadOne(EncodeOne(p.enc.get(), 2, r.data()), 8).kind, PageKind::kRaw);
  }
  {
    // A half-random page saves about 2 KiB: LZ4 with a 1 KiB threshold,
    // RAW with a 3 KiB one.
    std::mt19937_64 rng(10);
    Bytes half(kPageSize, 0x41);
    RandomBytes(rng, half.data(), kPageSize / 2);
    CodecOptions lo, hi;
    lo.lz4_min_saving = 1024;
    hi.lz4_min_saving = 3072;
    Pair a = MakePair(lo, 8), b = MakePair(hi, 8);
    EXPECT_EQ(ReadOne(EncodeOne(a.enc.get(), 0, half.data()), 8).kind, PageKind::kRawLz4);
    EXPECT_EQ(ReadOne(EncodeOne(b.enc.get(), 0, half.data()), 8).kind, PageKind::kRaw);
  }
}

// A full batch must leave no trace: cache (state and counters), kind
// counters and the batch itself are as before, and the retry succeeds.
TEST(PageCodecTest, FullBatchLeavesNoTrace) {
  CodecOptions opts;
  opts.cache_pages = 8;
  opts.lz4_min_saving = 16;
  Pair p = MakePair(opts, 32);
  std::mt19937_64 rng(4);
  Bytes page(kPageSize);
  RandomBytes(rng, page.data(), kPageSize);
  // Make pfn 3 cached so the DELTA path is the one that runs out of room.
  EncodeOne(p.enc.get(), 3, page.data());
  EncodeOne(p.enc.get(), 3, page.data());
  for (int i = 0; i < 40; ++i) page[rng() % kPageSize] ^= 0xff;

  for (PageKind want : {PageKind::kDelta, PageKind::kRaw, PageKind::kZero}) {
    Bytes src = page;
    uint64_t pfn = 3;
    if (want == PageKind::kRaw) pfn = 5;  // never sent: miss
    if (want == PageKind::kZero) std::fill(src.begin(), src.end(), 0);
    const uint64_t digest = p.enc->cache().StateDigest();
    const CacheCounters cc = p.enc->cache().counters();
    const KindCounters kc = p.enc->kinds();
    // Every batch size from 0 up: all too small ones fail cleanly, the
    // first big enough one takes the entry.
    bool done = false;
    for (size_t cap = 0; cap <= kMaxEntryBytes && !done; ++cap) {
      Bytes buf(cap + 1, 0x5A);
      BatchWriter w(buf.data(), cap);
      Status st = p.enc->Encode(pfn, src.data(), &w);
      ASSERT_EQ(buf[cap], 0x5A) << "wrote past the batch at cap " << cap;
      if (st.ok()) {
        buf.resize(w.size());
        EXPECT_EQ(ReadOne(buf, 32).kind, want);
        EXPECT_EQ(w.size(), cap) << "a smaller batch would have fitted";
        done = true;
        break;
      }
      ASSERT_EQ(st.code(), Code::kOutOfRange) << cap;
      EXPECT_EQ(w.size(), 0u);
      EXPECT_EQ(w.count(), 0u);
      EXPECT_EQ(p.enc->cache().StateDigest(), digest);
      EXPECT_EQ(p.enc->cache().counters().hits, cc.hits);
      EXPECT_EQ(p.enc->cache().counters().misses, cc.misses);
      EXPECT_EQ(p.enc->cache().counters().overflows, cc.overflows);
      EXPECT_EQ(p.enc->kinds().pages, kc.pages);
    }
    EXPECT_TRUE(done);
  }
}

TEST(PageCodecTest, EncoderRejectsBadCallsWithoutSideEffects) {
  CodecOptions opts;
  Pair p = MakePair(opts, 16);
  Bytes page(kPageSize, 1), buf(2 * kPageSize);
  BatchWriter w(buf.data(), buf.size());
  EXPECT_EQ(p.enc->Encode(16, page.data(), &w).code(), Code::kInvalidArgument);
  ASSERT_TRUE(p.enc->Encode(5, page.data(), &w).ok());
  const uint64_t digest = p.enc->cache().StateDigest();
  EXPECT_EQ(p.enc->Encode(5, page.data(), &w).code(), Code::kInvalidArgument);  // not increasing
  EXPECT_EQ(p.enc->Encode(2, page.data(), &w).code(), Code::kInvalidArgument);
  EXPECT_EQ(p.enc->cache().StateDigest(), digest);
  EXPECT_EQ(w.count(), 1u);

  CodecOptions bad = opts;
  bad.max_delta_len = kMaxDeltaLen + 1;
  EXPECT_EQ(PageEncoder::Create(bad, 16).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(PageDecoder::Create(bad, 16).status().code(), Code::kInvalidArgument);
  bad = opts;
  bad.lz4_min_saving = kPageSize;
  EXPECT_EQ(PageEncoder::Create(bad, 16).status().code(), Code::kInvalidArgument);
}

// ---- Decoder corruption cases: each is an error, and none changes the
// mirror cache. ----

class DecoderCorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CodecOptions opts;
    opts.cache_pages = 4;
    auto d = PageDecoder::Create(opts, 16);
    ASSERT_TRUE(d.ok());
    dec_ = std::move(d).value();
    // pfn 1 is cached (sent twice), pfn 2 was sent once only.
    Bytes raw(kPageSize, 0x33);
    for (uint64_t pfn : {1, 1, 2}) ASSERT_TRUE(dec_->Decode({pfn, PageKind::kRaw, raw}, out_.data()).ok());
    digest_ = dec_->cache().StateDigest();
  }
  void ExpectCorrupt(const PageEntry& e) {
    Status st = dec_->Decode(e, out_.data());
    EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
    EXPECT_EQ(dec_->cache().StateDigest(), digest_);
  }
  std::unique_ptr<PageDecoder> dec_;
  Bytes out_ = Bytes(kPageSize);
  uint64_t digest_ = 0;
};

TEST_F(DecoderCorruptionTest, NoBaseInTheMirror) {
  ExpectCorrupt({2, PageKind::kUnchanged, {}});
  const uint8_t d[] = {0x00, 0x01, 0x7f};
  ExpectCorrupt({2, PageKind::kDelta, d});
  ExpectCorrupt({9, PageKind::kDelta, d});
  // Same entries against the cached pfn decode.
  ASSERT_TRUE(dec_->Decode({1, PageKind::kDelta, d}, out_.data()).ok());
  EXPECT_EQ(out_[0], 0x7f);
  EXPECT_EQ(out_[1], 0x33);
  ASSERT_TRUE(dec_->Decode({1, PageKind::kUnchanged, {}}, out_.data()).ok());
  EXPECT_EQ(out_[0], 0x7f);
}

TEST_F(DecoderCorruptionTest, MalformedDelta) {
  const uint8_t zero_nzrun[] = {0x00, 0x00};
  const uint8_t overrun[] = {0xff, 0x1f, 0x02, 0x01, 0x02};  // 4095 + 2 > page
  const uint8_t truncated[] = {0x00, 0x05, 0x01};
  const uint8_t bad_varint[] = {0x80};
  ExpectCorrupt({1, PageKind::kDelta, zero_nzrun});
  ExpectCorrupt({1, PageKind::kDelta, overrun});
  ExpectCorrupt({1, PageKind::kDelta, truncated});
  ExpectCorrupt({1, PageKind::kDelta, bad_varint});
  ExpectCorrupt({1, PageKind::kDelta, {}});
}

TEST_F(DecoderCorruptionTest, BadLz4Blocks) {
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x01};
  ExpectCorrupt({3, PageKind::kRawLz4, garbage});
  // A valid LZ4 block of 100 bytes, not one page.
  Bytes small(100, 7), block(LZ4_compressBound(100));
  int n = LZ4_compress_default(reinterpret_cast<const char*>(small.data()), reinterpret_cast<char*>(block.data()),
                               100, static_cast<int>(block.size()));
  ASSERT_GT(n, 0);
  ExpectCorrupt({3, PageKind::kRawLz4, {block.data(), static_cast<size_t>(n)}});
  // A valid block of two pages, truncated output must not be accepted.
  Bytes two(2 * kPageSize, 9), block2(LZ4_compressBound(2 * kPageSize));
  n = LZ4_compress_default(reinterpret_cast<const char*>(two.data()), reinterpret_cast<char*>(block2.data()),
                           static_cast<int>(two.size()), static_cast<int>(block2.size()));
  ASSERT_GT(n, 0);
  ExpectCorrupt({3, PageKind::kRawLz4, {block2.data(), static_cast<size_t>(n)}});
}

TEST_F(DecoderCorruptionTest, PayloadSizeWrongForKindOrPfnOutOfRange) {
  Bytes page(kPageSize, 1), short_page(kPageSize - 1, 1);
  ExpectCorrupt({3, PageKind::kRaw, short_page});
  ExpectCorrupt({3, PageKind::kZero, short_page});
  ExpectCorrupt({1, PageKind::kUnchanged, short_page});
  ExpectCorrupt({3, PageKind::kRawLz4, page});
  ExpectCorrupt({16, PageKind::kRaw, page});
  ExpectCorrupt({3, static_cast<PageKind>(6), {}});
}

TEST(PageCodecTest, ResetBringsBothSidesBackToEmpty) {
  CodecOptions opts;
  opts.cache_pages = 8;
  Pair p = MakePair(opts, 16), fresh = MakePair(opts, 16);
  Bytes page(kPageSize, 4), out(kPageSize);
  for (int i = 0; i < 3; ++i) {
    Bytes b = EncodeOne(p.enc.get(), 7, page.data());
    ASSERT_TRUE(p.dec->Decode(ReadOne(b, 16), out.data()).ok());
  }
  EXPECT_NE(p.enc->cache().StateDigest(), fresh.enc->cache().StateDigest());
  p.enc->Reset();
  p.dec->Reset();
  EXPECT_EQ(p.enc->cache().StateDigest(), fresh.enc->cache().StateDigest());
  EXPECT_EQ(p.dec->cache().StateDigest(), fresh.dec->cache().StateDigest());
  EXPECT_EQ(p.enc->kinds().pages, fresh.enc->kinds().pages);
  // After a reset the first send is RAW again and an UNCHANGED is refused.
  EXPECT_EQ(ReadOne(EncodeOne(p.enc.get(), 7, page.data()), 16).kind, PageKind::kRaw);
  EXPECT_EQ(p.dec->Decode({7, PageKind::kUnchanged, {}}, out.data()).code(), Code::kCorruption);
}

}  // namespace
}  // namespace romulus::compress

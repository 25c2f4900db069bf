#include "compress/page_batch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "compress/page_codec.h"
#include "protocol/frame.h"
#include "protocol/messages.h"

namespace romulus::compress {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

struct OwnedEntry {
  uint64_t pfn;
  PageKind kind;
  Bytes payload;
};

Result<std::vector<OwnedEntry>> ReadAll(const Bytes& in, uint64_t max_pfn) {
  BatchReader r(in, max_pfn);
  std::vector<OwnedEntry> out;
  for (;;) {
    PageEntry e;
    auto more = r.Next(&e);
    if (!more.ok()) return more.status();
    if (!*more) return out;
    out.push_back({e.pfn, e.kind, Bytes(e.payload.begin(), e.payload.end())});
  }
}

Code ReadCode(const Bytes& in, uint64_t max_pfn = kNoLimit) {
  auto r = ReadAll(in, max_pfn);
  return r.ok() ? Code::kOk : r.status().code();
}

TEST(PageBatchTest, DenseZeroAndUnchangedEntriesAreOneByteEach) {
  Bytes buf(1000);
  BatchWriter w(buf.data(), buf.size());
  for (uint64_t pfn = 0; pfn < 100; ++pfn) {
    ASSERT_TRUE(w.Append({pfn, pfn % 2 ? PageKind::kUnchanged : PageKind::kZero, {}}).ok());
    EXPECT_EQ(w.size(), pfn + 1);
  }
  EXPECT_EQ(w.count(), 100u);
  buf.resize(w.size());
  EXPECT_EQ(buf[0], 0x00);  // gap 0, ZERO
  EXPECT_EQ(buf[1], 0x01);  // gap 0, UNCHANGED
  auto all = ReadAll(buf, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 100u);
  for (uint64_t pfn = 0; pfn < 100; ++pfn) {
    EXPECT_EQ((*all)[pfn].pfn, pfn);
    EXPECT_EQ((*all)[pfn].kind, pfn % 2 ? PageKind::kUnchanged : PageKind::kZero);
  }
}

TEST(PageBatchTest, WorkedExampleBytes) {
  // The example of docs/CACHE-AND-BATCH.md §2.4.
  Bytes delta = {0x00, 0x01, 0xAA};
  Bytes buf(64);
  BatchWriter w(buf.data(), buf.size());
  ASSERT_TRUE(w.Append({5, PageKind::kZero, {}}).ok());
  ASSERT_TRUE(w.Append({6, PageKind::kDelta, delta}).ok());
  ASSERT_TRUE(w.Append({300, PageKind::kUnchanged, {}}).ok());
  buf.resize(w.size());
  EXPECT_EQ(buf, (Bytes{0x28, 0x02, 0x03, 0x00, 0x01, 0xAA, 0xA9, 0x12}));
}

TEST(PageBatchTest, RandomBatchesRoundTrip) {
  std::mt19937_64 rng(1);
  for (int iter = 0; iter < 300; ++iter) {
    Bytes buf(1 + rng() % 40000);
    BatchWriter w(buf.data(), buf.size());
    std::vector<OwnedEntry> want;
    uint64_t next = 0;
    for (;;) {
      uint64_t gap;
      switch (rng() % 4) {
        case 0: gap = 0; break;
        case 1: gap = rng() % 16; break;
        case 2: gap = rng() % 100000; break;
        default: gap = rng() % (uint64_t{1} << 40); break;
      }
      OwnedEntry e{next + gap, static_cast<PageKind>(rng() % kNumPageKinds), {}};
      size_t len = 0;
      if (e.kind == PageKind::kRaw) len = kPageSize;
      if (e.kind == PageKind::kDelta) len = 1 + rng() % (rng() % 2 ? 127 : kMaxDeltaLen);
      if (e.kind == PageKind::kRawLz4) len = 1 + rng() % (kPageSize - 1);
      e.payload.resize(len);
      for (auto& b : e.payload) b = static_cast<uint8_t>(rng());
      const size_t before = w.size();
      Status st = w.Append({e.pfn, e.kind, e.payload});
      if (st.code() == Code::kOutOfRange) {
        EXPECT_EQ(w.size(), before);
        EXPECT_GT(BatchWriter::EntrySize(gap, e.kind, len), w.remaining());
        break;
      }
      ASSERT_TRUE(st.ok()) << st.ToString();
      EXPECT_EQ(w.size() - before, BatchWriter::EntrySize(gap, e.kind, len));
      want.push_back(std::move(e));
      next = want.back().pfn + 1;
    }
    buf.resize(w.size());
    auto got = ReadAll(buf, next);  // the largest pfn is exactly max_pfn - 1
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->size(), want.size());
    ASSERT_EQ(w.count(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ((*got)[i].pfn, want[i].pfn);
      EXPECT_EQ((*got)[i].kind, want[i].kind);
      EXPECT_EQ((*got)[i].payload, want[i].payload);
    }
    if (!want.empty()) {
      EXPECT_EQ(ReadCode(buf, next - 1), Code::kCorruption);  // one pfn too many
    }
  }
}

TEST(PageBatchTest, WriterRejectsBadEntriesWithoutChangingTheBatch) {
  Bytes buf(100);
  BatchWriter w(buf.data(), buf.size());
  ASSERT_TRUE(w.Append({10, PageKind::kZero, {}}).ok());
  const size_t size = w.size();
  Bytes small(5, 1), page(kPageSize, 1), big(kPageSize + 1, 1);
  EXPECT_EQ(w.Append({10, PageKind::kZero, {}}).code(), Code::kInvalidArgument);  // not increasing
  EXPECT_EQ(w.Append({9, PageKind::kZero, {}}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kZero, small}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kUnchanged, small}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kDelta, {}}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kDelta, page}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kRaw, small}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kRaw, big}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kRawLz4, {}}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kRawLz4, page}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, static_cast<PageKind>(5), {}}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11 + (uint64_t{1} << 61), PageKind::kZero, {}}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({kNoLimit, PageKind::kZero, {}}).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.Append({11, PageKind::kRaw, page}).code(), Code::kOutOfRange);  // 4097 > 99
  EXPECT_EQ(w.size(), size);
  EXPECT_EQ(w.count(), 1u);
  // The largest encodable gap is accepted.
  ASSERT_TRUE(w.Append({11 + (uint64_t{1} << 61) - 1, PageKind::kZero, {}}).ok());
  EXPECT_EQ(w.size(), size + 10);  // (2^61-1) << 3 needs all 64 bits
}

TEST(PageBatchTest, FillsExactlyToCapacity) {
  Bytes delta(200, 7);
  const size_t entry = BatchWriter::EntrySize(0, PageKind::kDelta, delta.size());
  EXPECT_EQ(entry, 1u + 2u + 200u);
  Bytes buf(entry * 3);
  BatchWriter w(buf.data(), buf.size());
  for (uint64_t pfn = 0; pfn < 3; ++pfn) ASSERT_TRUE(w.Append({pfn, PageKind::kDelta, delta}).ok());
  EXPECT_EQ(w.remaining(), 0u);
  EXPECT_EQ(w.Append({3, PageKind::kZero, {}}).code(), Code::kOutOfRange);
  w.Reset();
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.count(), 0u);
  ASSERT_TRUE(w.Append({0, PageKind::kZero, {}}).ok());  // pfn order restarts
}

TEST(PageBatchTest, InPlacePayloadMatchesAppend) {
  std::mt19937_64 rng(5);
  for (size_t len : {size_t{1}, size_t{127}, size_t{128}, size_t{1000}, kMaxDeltaLen}) {
    for (PageKind kind : {PageKind::kDelta, PageKind::kRawLz4}) {
      Bytes payload(len);
      for (auto& b : payload) b = static_cast<uint8_t>(rng());
      Bytes a(8192), b(8192);
      BatchWriter wa(a.data(), a.size()), wb(b.data(), b.size());
      ASSERT_TRUE(wa.Append({3, PageKind::kZero, {}}).ok());
      ASSERT_TRUE(wb.Append({3, PageKind::kZero, {}}).ok());
      ASSERT_TRUE(wa.Append({1000, kind, payload}).ok());
      uint8_t* slot = wb.PayloadSlot(1000, kind, std::max(len, kMaxDeltaLen));
      ASSERT_NE(slot, nullptr);
      std::memcpy(slot, payload.data(), len);
      ASSERT_TRUE(wb.CommitPayload(1000, kind, len).ok());
      ASSERT_EQ(wa.size(), wb.size());
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), wa.size())) << len;
      EXPECT_EQ(wb.count(), 2u);
    }
  }
}

TEST(PageBatchTest, PayloadSlotRefusesWhatCannotFit) {
  // Room for word (1) + 2-byte length + 200 bytes: exactly a 200-byte max.
  Bytes buf(203);
  BatchWriter w(buf.data(), buf.size());
  EXPECT_NE(w.PayloadSlot(0, PageKind::kDelta, 200), nullptr);
  EXPECT_EQ(w.PayloadSlot(0, PageKind::kDelta, 201), nullptr);
  EXPECT_EQ(w.PayloadSlot(0, PageKind::kRaw, 100), nullptr);  // no length prefix
  EXPECT_EQ(w.PayloadSlot(0, PageKind::kDelta, 0), nullptr);
  Bytes big(kPageSize + 10);
  BatchWriter wb(big.data(), big.size());
  EXPECT_EQ(wb.PayloadSlot(0, PageKind::kDelta, kMaxDeltaLen + 1), nullptr);
  EXPECT_EQ(wb.PayloadSlot(0, PageKind::kRawLz4, kPageSize), nullptr);
  ASSERT_TRUE(w.Append({5, PageKind::kZero, {}}).ok());
  EXPECT_EQ(w.PayloadSlot(5, PageKind::kDelta, 10), nullptr);  // out of order
  EXPECT_EQ(w.CommitPayload(5, PageKind::kDelta, 10).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.CommitPayload(6, PageKind::kDelta, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.CommitPayload(6, PageKind::kDelta, 300).code(), Code::kOutOfRange);
  EXPECT_EQ(w.count(), 1u);
}

// ---- Reader rejection rules, one by one ----

TEST(PageBatchTest, ReaderAcceptsEmptyAndCanonicalExtremes) {
  EXPECT_EQ(ReadCode({}), Code::kOk);
  // 10-byte word: gap 2^60, kind ZERO -> value 2^63, the widest canonical form.
  Bytes ten(9, 0x80);
  ten.push_back(0x01);
  auto r = ReadAll(ten, kNoLimit);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)[0].pfn, uint64_t{1} << 60);
}

TEST(PageBatchTest, ReaderRejectsUnknownKinds) {
  for (uint8_t k : {5, 6, 7}) EXPECT_EQ(ReadCode({k}), Code::kCorruption) << int(k);
  EXPECT_EQ(ReadCode({0x00, 0x0f}), Code::kCorruption);  // second entry, gap 1, kind 7
}

TEST(PageBatchTest, ReaderRejectsBadVarints) {
  EXPECT_EQ(ReadCode({0x80}), Code::kCorruption);              // truncated word
  EXPECT_EQ(ReadCode({0x80, 0x00}), Code::kCorruption);        // 0 in two bytes
  EXPECT_EQ(ReadCode({0x88, 0x80, 0x00}), Code::kCorruption);  // 8 in three bytes
  Bytes eleven(10, 0x80);
  eleven.push_back(0x00);
  EXPECT_EQ(ReadCode(eleven), Code::kCorruption);  // over-long
  Bytes wide(9, 0xff);
  wide.push_back(0x02);  // bit 64
  EXPECT_EQ(ReadCode(wide), Code::kCorruption);
  Bytes wide2(9, 0x80);
  wide2.push_back(0x81);  // continuation on the 10th byte
  wide2.push_back(0x00);
  EXPECT_EQ(ReadCode(wide2), Code::kCorruption);
  // Length varints follow the same rules.
  EXPECT_EQ(ReadCode({0x02}), Code::kCorruption);                    // DELTA, no length
  EXPECT_EQ(ReadCode({0x02, 0x80}), Code::kCorruption);              // truncated length
  EXPECT_EQ(ReadCode({0x02, 0x81, 0x00, 0xAA}), Code::kCorruption);  // 1 in two bytes
  EXPECT_EQ(ReadCode({0x04, 0x81, 0x00, 0xAA}), Code::kCorruption);  // same, RAW_LZ4
}

TEST(PageBatchTest, ReaderRejectsPfnBeyondGuestOrOverflow) {
  EXPECT_EQ(ReadCode({0x00}, 0), Code::kCorruption);
  EXPECT_EQ(ReadCode({0x00}, 1), Code::kOk);
  EXPECT_EQ(ReadCode({0x00, 0x00}, 1), Code::kCorruption);  // pfn 1 with max 1
  EXPECT_EQ(ReadCode({0x50}, 10), Code::kCorruption);       // pfn 10
  EXPECT_EQ(ReadCode({0x48}, 10), Code::kOk);               // pfn 9
  // Walk the expected pfn up to 2^64 - 10, then ask for a gap of 100: the sum
  // wraps around 2^64 and must be refused, not read as a small pfn.
  Bytes buf(200);
  BatchWriter w(buf.data(), buf.size());
  const uint64_t target = kNoLimit - 10;  // last pfn written
  uint64_t pfn = 0;
  bool first = true;
  while (pfn < target) {
    uint64_t next = first ? 0 : pfn + 1;
    uint64_t step = std::min<uint64_t>((uint64_t{1} << 61) - 1, target - next);
    pfn = next + step;
    first = false;
    ASSERT_TRUE(w.Append({pfn, PageKind::kZero, {}}).ok());
  }
  buf.resize(w.size());
  EXPECT_EQ(ReadCode(buf), Code::kOk);
  Bytes wrap = buf;
  // word = 100 << 3 | ZERO = 800 = 0xA0 0x06
  wrap.push_back(0xA0);
  wrap.push_back(0x06);
  EXPECT_EQ(ReadCode(wrap), Code::kCorruption);
  Bytes last = buf;
  last.push_back(0x00);  // expected pfn 2^64 - 10 ... fine
  EXPECT_EQ(ReadCode(last), Code::kOk);
}

TEST(PageBatchTest, ReaderRejectsPayloadLengthsOutOfRange) {
  EXPECT_EQ(ReadCode({0x02, 0x00}), Code::kCorruption);        // DELTA length 0
  EXPECT_EQ(ReadCode({0x04, 0x00}), Code::kCorruption);        // RAW_LZ4 length 0
  Bytes d4096 = {0x02, 0x80, 0x20};                             // DELTA length 4096
  d4096.resize(3 + 4096);
  EXPECT_EQ(ReadCode(d4096), Code::kCorruption);
  Bytes l4096 = {0x04, 0x80, 0x20};
  l4096.resize(3 + 4096);
  EXPECT_EQ(ReadCode(l4096), Code::kCorruption);
  Bytes d4095 = {0x02, 0xff, 0x1f};  // 4095: the largest accepted
  d4095.resize(3 + 4095);
  EXPECT_EQ(ReadCode(d4095), Code::kOk);
  Bytes huge = {0x02, 0xff, 0xff, 0xff, 0xff, 0x0f};
  EXPECT_EQ(ReadCode(huge), Code::kCorruption);
}

TEST(PageBatchTest, ReaderRejectsTruncatedPayloads) {
  EXPECT_EQ(ReadCode({0x02, 0x05, 1, 2, 3, 4}), Code::kCorruption);
  EXPECT_EQ(ReadCode({0x02, 0x05, 1, 2, 3, 4, 5}), Code::kOk);
  Bytes raw = {0x03};
  raw.resize(1 + kPageSize - 1);
  EXPECT_EQ(ReadCode(raw), Code::kCorruption);
  raw.push_back(0);
  EXPECT_EQ(ReadCode(raw), Code::kOk);
  Bytes lz = {0x04, 0x10};
  lz.resize(2 + 15);
  EXPECT_EQ(ReadCode(lz), Code::kCorruption);
}

TEST(PageBatchTest, ReaderStopsAtTheFirstBadEntry) {
  Bytes in = {0x00, 0x09, 0x07};  // pfn 0 ZERO, pfn 2 UNCHANGED, then kind 7
  BatchReader r(in, 100);
  PageEntry e;
  auto a = r.Next(&e);
  ASSERT_TRUE(a.ok() && *a);
  EXPECT_EQ(e.pfn, 0u);
  auto b = r.Next(&e);
  ASSERT_TRUE(b.ok() && *b);
  EXPECT_EQ(e.pfn, 2u);
  EXPECT_EQ(e.kind, PageKind::kUnchanged);
  auto c = r.Next(&e);
  EXPECT_EQ(c.status().code(), Code::kCorruption);
  auto d = r.Next(&e);  // stays failed, does not skip ahead
  EXPECT_EQ(d.status().code(), Code::kCorruption);
}

// ---- The seed workload: 16 MiB, every page dirtied each pass with one byte
// changed at offsets 0/1024/2048/3072 (docs/CACHE-AND-BATCH.md §3). ----

TEST(PageBatchTest, SeedWorkloadCostsAtMost20WireBytesPerPage) {
  constexpr uint64_t kPages = 4096;       // 16 MiB
  constexpr size_t kBatchCap = 1 << 20;   // what one PAGES frame carries
  constexpr size_t kTlsRecord = 16384;    // TLS 1.3 record payload
  constexpr size_t kTlsOverhead = 22;     // 5 header + 1 type + 16 AEAD tag
  CodecOptions opts;  // defaults: 64 MiB cache, PAGE/3 delta cap, no LZ4
  auto enc = PageEncoder::Create(opts, kPages);
  auto dec = PageDecoder::Create(opts, kPages);
  ASSERT_TRUE(enc.ok() && dec.ok());
  std::vector<uint8_t> guest(kPages * kPageSize, 0), mirror(kPages * kPageSize, 1);
  Bytes batch(kBatchCap);

  double worst = 0;
  for (int epoch = 0; epoch < 12; ++epoch) {
    if (epoch > 0) {
      for (size_t i = 0; i < kPages * 4; ++i) guest[i * 1024]++;
    }
    size_t frame_bytes = 0, pages = 0;
    BatchWriter w(batch.data(), batch.size());
    auto flush = [&]() {
      // Decode what was sent into the backup's image.
      BatchReader r({batch.data(), w.size()}, kPages);
      PageEntry e;
      for (;;) {
        auto more = r.Next(&e);
        ASSERT_TRUE(more.ok()) << more.status().ToString();
        if (!*more) break;
        ASSERT_TRUE((*dec)->Decode(e, mirror.data() + e.pfn * kPageSize).ok());
      }
      frame_bytes += protocol::kFrameHeaderSize + w.size();
      w.Reset();
    };
    for (uint64_t pfn = 0; pfn < kPages; ++pfn) {
      Status st = (*enc)->Encode(pfn, guest.data() + pfn * kPageSize, &w);
      if (st.code() == Code::kOutOfRange) {
        flush();
        st = (*enc)->Encode(pfn, guest.data() + pfn * kPageSize, &w);
      }
      ASSERT_TRUE(st.ok()) << st.ToString();
      ++pages;
    }
    flush();
    frame_bytes += protocol::kFrameHeaderSize + protocol::kEpochEndSize;
    const size_t wire = frame_bytes + (frame_bytes + kTlsRecord - 1) / kTlsRecord * kTlsOverhead;
    const double per_page = static_cast<double>(wire) / static_cast<double>(pages);
    ASSERT_EQ(guest, mirror) << "epoch " << epoch;
    if (epoch >= 2) {  // epoch 0: all ZERO; epoch 1: first change, RAW (cache fills)
      worst = std::max(worst, per_page);
      EXPECT_LE(per_page, 20.0) << "epoch " << epoch;
    }
    RecordProperty("epoch" + std::to_string(epoch) + "_wire_bytes", static_cast<int>(wire));
  }
  const KindCounters& k = (*enc)->kinds();
  EXPECT_EQ(k.pages[static_cast<int>(PageKind::kZero)], kPages);
  EXPECT_EQ(k.pages[static_cast<int>(PageKind::kRaw)], kPages);
  EXPECT_EQ(k.pages[static_cast<int>(PageKind::kDelta)], 10 * kPages);
  EXPECT_EQ((*enc)->cache().StateDigest(), (*dec)->cache().StateDigest());
  std::printf("seed workload: %.3f wire bytes/page in steady state (frames + TLS included)\n", worst);
  EXPECT_GT(worst, 16.0);  // sanity: the measurement measured something
}

}  // namespace
}  // namespace romulus::compress

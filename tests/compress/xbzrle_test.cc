#include "compress/xbzrle.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compress/page.h"
#include "compress/xbzrle_reference.h"

namespace romulus::compress {
namespace {

using Page = std::vector<uint8_t>;
using Bytes = std::vector<uint8_t>;

constexpr size_t kBig = 2 * kPageSize + 64;  // more than any delta can need

Page RandomPage(std::mt19937_64& rng) {
  Page p(kPageSize);
  for (auto& b : p) b = static_cast<uint8_t>(rng());
  return p;
}

// Sets new[pos] to a value guaranteed to differ from old[pos].
void Flip(Page& page, size_t pos, uint8_t delta = 0x5a) { page[pos] ^= delta ? delta : 1; }

// Encodes with `fn` into a large buffer; returns the bytes (empty for 0).
Bytes Encode(EncodeFn fn, const Page& a, const Page& b, size_t cap = kBig) {
  Bytes out(std::max<size_t>(cap, 1));
  const int n = fn(a.data(), b.data(), out.data(), cap);
  EXPECT_GE(n, 0) << "unexpected overflow with cap " << cap;
  out.resize(n < 0 ? 0 : n);
  return out;
}

// Decoding `delta` on top of `a` must give `b`.
void ExpectRoundTrip(const Page& a, const Page& b, const Bytes& delta) {
  Page p = a;
  if (delta.empty()) {
    EXPECT_EQ(a, b);
    return;
  }
  Status s = DecodeDelta(delta.data(), delta.size(), p.data());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(p, b);
}

// All encoders that must produce identical bytes: the dispatched
// implementations plus the QEMU-shaped reference.
std::vector<EncoderImpl> AllEncoders() {
  auto avail = AvailableEncoders();
  std::vector<EncoderImpl> v(avail.begin(), avail.end());
  v.push_back({"qemu-style-scalar", &EncodeDeltaQemuStyle});
  return v;
}

// ---------------------------------------------------------------- varints

TEST(RunLength, EncodesBoundaryValues) {
  struct Case {
    uint32_t v;
    Bytes bytes;
  };
  const Case cases[] = {{0, {0x00}},         {1, {0x01}},         {127, {0x7f}},
                        {128, {0x80, 0x01}}, {129, {0x81, 0x01}}, {1000, {0xe8, 0x07}},
                        {4096, {0x80, 0x20}}, {16383, {0xff, 0x7f}}};
  for (const Case& c : cases) {
    uint8_t buf[2] = {0xcc, 0xcc};
    ASSERT_EQ(PutRunLength(buf, c.v), c.bytes.size()) << c.v;
    EXPECT_EQ(Bytes(buf, buf + c.bytes.size()), c.bytes) << c.v;
    uint32_t got = 0xdead;
    EXPECT_EQ(GetRunLength(c.bytes.data(), c.bytes.size(), &got), c.bytes.size()) << c.v;
    EXPECT_EQ(got, c.v);
  }
}

TEST(RunLength, RoundTripsEveryValue) {
  for (uint32_t v = 0; v <= kMaxRun; ++v) {
    uint8_t buf[4] = {0, 0, 0xee, 0xee};
    const size_t n = PutRunLength(buf, v);
    ASSERT_EQ(n, v < 128 ? 1u : 2u);
    EXPECT_EQ(buf[2], 0xee);  // never writes a third byte
    uint32_t got;
    ASSERT_EQ(GetRunLength(buf, n, &got), n) << v;
    ASSERT_EQ(got, v);
    // Truncating a two-byte form must be detected.
    if (n == 2) {
      EXPECT_EQ(GetRunLength(buf, 1, &got), 0u) << v;
    }
  }
}

TEST(RunLength, RejectsEmptyTruncatedOverlongAndNonCanonical) {
  uint32_t v;
  const uint8_t one[] = {0x05};
  EXPECT_EQ(GetRunLength(one, 0, &v), 0u);  // empty
  const uint8_t trunc[] = {0x80};
  EXPECT_EQ(GetRunLength(trunc, 1, &v), 0u);
  // 16384 needs three bytes in ULEB128: the second byte has bit 7 set.
  const uint8_t v16384[] = {0x80, 0x80, 0x01};
  EXPECT_EQ(GetRunLength(v16384, 3, &v), 0u);
  const uint8_t overlong[] = {0xff, 0xff, 0x7f};
  EXPECT_EQ(GetRunLength(overlong, 3, &v), 0u);
  // Values < 128 spelled in two bytes.
  const uint8_t zero2[] = {0x80, 0x00};
  EXPECT_EQ(GetRunLength(zero2, 2, &v), 0u);
  const uint8_t v127_2[] = {0xff, 0x00};
  EXPECT_EQ(GetRunLength(v127_2, 2, &v), 0u);
}

TEST(RunLength, AcceptsExactlyTheCanonicalTwoByteForms) {
  // Exhaustive over all two-byte inputs: accepted iff re-encoding gives the
  // same bytes (so every accepted input is canonical and every canonical one
  // is accepted).
  for (uint32_t x = 0; x < 65536; ++x) {
    const uint8_t in[2] = {static_cast<uint8_t>(x), static_cast<uint8_t>(x >> 8)};
    uint32_t v;
    const size_t n = GetRunLength(in, 2, &v);
    if (in[0] < 0x80) {
      ASSERT_EQ(n, 1u);
      ASSERT_EQ(v, in[0]);
      continue;
    }
    const bool canonical = in[1] != 0 && in[1] < 0x80;
    ASSERT_EQ(n, canonical ? 2u : 0u) << std::hex << x;
    if (canonical) {
      uint8_t re[2];
      ASSERT_EQ(PutRunLength(re, v), 2u);
      ASSERT_EQ(re[0], in[0]);
      ASSERT_EQ(re[1], in[1]);
    }
  }
}

// ---------------------------------------------------------------- pages

TEST(Page, IsZeroPage) {
  Page p(kPageSize, 0);
  EXPECT_TRUE(IsZeroPage(p.data()));
  for (size_t i = 0; i < kPageSize; ++i) {
    p[i] = static_cast<uint8_t>(1u << (i % 8));
    ASSERT_FALSE(IsZeroPage(p.data())) << i;
    p[i] = 0;
  }
}

TEST(Page, KindNames) {
  EXPECT_STREQ(PageKindName(PageKind::kZero), "zero");
  EXPECT_STREQ(PageKindName(PageKind::kUnchanged), "unchanged");
  EXPECT_STREQ(PageKindName(PageKind::kDelta), "delta");
  EXPECT_STREQ(PageKindName(PageKind::kRaw), "raw");
  EXPECT_STREQ(PageKindName(PageKind::kRawLz4), "raw-lz4");
  EXPECT_STREQ(PageKindName(static_cast<PageKind>(7)), "unknown");
}

// ---------------------------------------------------------------- dispatch

TEST(Dispatch, ScalarFirstAndLookupByName) {
  auto encs = AvailableEncoders();
  ASSERT_FALSE(encs.empty());
  EXPECT_STREQ(encs[0].name, "scalar");
  EXPECT_EQ(encs[0].fn, &EncodeDeltaScalar);
  for (const EncoderImpl& e : encs) EXPECT_EQ(EncoderByName(e.name), e.fn) << e.name;
  EXPECT_EQ(EncoderByName("no-such-encoder"), nullptr);
  EXPECT_EQ(EncoderByName(nullptr), nullptr);
  const EncodeFn best = BestEncoder();
  EXPECT_TRUE(std::any_of(encs.begin(), encs.end(), [&](const EncoderImpl& e) { return e.fn == best; }));
  EXPECT_EQ(BestEncoder(), best);  // chosen once
}

// ---------------------------------------------------------------- classic cases

class EachEncoder : public ::testing::TestWithParam<EncoderImpl> {};

TEST_P(EachEncoder, UnchangedPageGivesZero) {
  std::mt19937_64 rng(1);
  const Page a = RandomPage(rng);
  uint8_t out[8];
  EXPECT_EQ(GetParam().fn(a.data(), a.data(), out, sizeof out), 0);
  const Page z(kPageSize, 0);
  EXPECT_EQ(GetParam().fn(z.data(), z.data(), out, sizeof out), 0);
  // Identical pages need no output space at all.
  EXPECT_EQ(GetParam().fn(a.data(), a.data(), nullptr, 0), 0);
}

TEST_P(EachEncoder, FromZeroPageToFullyRandom) {
  std::mt19937_64 rng(2);
  const Page a(kPageSize, 0);
  Page b = RandomPage(rng);
  for (auto& x : b) x |= 1;  // every byte differs: one run of 4096
  const Bytes d = Encode(GetParam().fn, a, b);
  ASSERT_EQ(d.size(), 3 + kPageSize);
  EXPECT_EQ(d[0], 0x00);  // empty first zero run
  EXPECT_EQ(d[1], 0x80);  // 4096 = 0x80 0x20
  EXPECT_EQ(d[2], 0x20);
  ExpectRoundTrip(a, b, d);
}

TEST_P(EachEncoder, OnlyFirstByteChanged) {
  const Page a(kPageSize, 0x11);
  Page b = a;
  b[0] = 0x22;
  EXPECT_EQ(Encode(GetParam().fn, a, b), (Bytes{0x00, 0x01, 0x22}));
}

TEST_P(EachEncoder, OnlyLastByteChanged) {
  const Page a(kPageSize, 0x11);
  Page b = a;
  b[kPageSize - 1] = 0x22;
  const Bytes d = Encode(GetParam().fn, a, b);
  EXPECT_EQ(d, (Bytes{0xff, 0x1f, 0x01, 0x22}));  // zero run 4095, one byte
  ExpectRoundTrip(a, b, d);
}

TEST_P(EachEncoder, SeedWorkloadPage) {
  // One byte changed at 0, 1024, 2048 and 3072: 15 bytes, no trailing run.
  std::mt19937_64 rng(3);
  const Page a = RandomPage(rng);
  Page b = a;
  for (size_t off : {0, 1024, 2048, 3072}) Flip(b, off);
  const Bytes d = Encode(GetParam().fn, a, b);
  const Bytes want = {0x00, 0x01, b[0],    0xff, 0x07, 0x01, b[1024], 0xff,
                      0x07, 0x01, b[2048], 0xff, 0x07, 0x01, b[3072]};
  EXPECT_EQ(d, want);
  ExpectRoundTrip(a, b, d);
}

TEST_P(EachEncoder, EveryOtherByteOverflowsSmallCap) {
  std::mt19937_64 rng(4);
  const Page a = RandomPage(rng);
  Page b = a;
  for (size_t i = 1; i < kPageSize; i += 2) Flip(b, i);
  std::vector<uint8_t> out(kPageSize / 3);
  EXPECT_EQ(GetParam().fn(a.data(), b.data(), out.data(), out.size()), -1);
  // 2048 records of (1, 1, byte): 6144 bytes, fits a large cap.
  const Bytes d = Encode(GetParam().fn, a, b);
  EXPECT_EQ(d.size(), 3u * 2048);
  ExpectRoundTrip(a, b, d);
}

TEST_P(EachEncoder, CapExactlyNeededSucceedsAndOneLessFails) {
  std::mt19937_64 rng(5);
  for (int iter = 0; iter < 300; ++iter) {
    const Page a = RandomPage(rng);
    Page b = a;
    const int changes = 1 + static_cast<int>(rng() % 40);
    for (int c = 0; c < changes; ++c) {
      const size_t start = rng() % kPageSize;
      const size_t len = 1 + rng() % (iter % 3 == 0 ? 300 : 12);
      for (size_t i = start; i < std::min(kPageSize, start + len); ++i) Flip(b, i);
    }
    const Bytes want = Encode(&EncodeDeltaScalar, a, b);
    ASSERT_FALSE(want.empty());
    // An output buffer of exactly `cap` bytes: ASan catches any write past it.
    for (size_t cap : {want.size(), want.size() - 1}) {
      auto out = std::make_unique<uint8_t[]>(std::max<size_t>(cap, 1));
      const int n = GetParam().fn(a.data(), b.data(), out.get(), cap);
      if (cap == want.size()) {
        ASSERT_EQ(n, static_cast<int>(want.size())) << iter;
        EXPECT_EQ(Bytes(out.get(), out.get() + n), want);
      } else {
        ASSERT_EQ(n, -1) << iter;
      }
    }
  }
}

TEST_P(EachEncoder, RandomRangesRoundTripAndMatchScalar) {
  std::mt19937_64 rng(6);
  Page a = RandomPage(rng);
  for (int iter = 0; iter < 10000; ++iter) {
    if (iter % 100 == 0) a = RandomPage(rng);
    Page b = a;
    const int ranges = static_cast<int>(rng() % 12);
    for (int r = 0; r < ranges; ++r) {
      const size_t start = rng() % kPageSize;
      const size_t len = 1 + rng() % (rng() % 2 ? 8 : 600);
      // Random new values: some bytes keep their old value by chance, which
      // splits runs in ways a plain Flip never would.
      for (size_t i = start; i < std::min(kPageSize, start + len); ++i)
        b[i] = static_cast<uint8_t>(rng() % 4 ? rng() : b[i]);
    }
    Bytes out(kBig);
    const int n = GetParam().fn(a.data(), b.data(), out.data(), out.size());
    ASSERT_GE(n, 0);
    out.resize(n);
    ASSERT_EQ(out, Encode(&EncodeDeltaScalar, a, b)) << iter;
    ExpectRoundTrip(a, b, out);
  }
}

TEST_P(EachEncoder, RunsAcrossVectorBoundariesMatchScalar) {
  // Runs that start or end on either side of 8/32/64/256-byte boundaries and
  // at the page edges, each with caps around the needed length.
  std::mt19937_64 rng(7);
  std::vector<size_t> edges;
  for (size_t e = 0; e <= kPageSize; e += 32) edges.push_back(e);
  for (int iter = 0; iter < 4000; ++iter) {
    const Page a = RandomPage(rng);
    Page b = a;
    const int runs = 1 + static_cast<int>(rng() % 6);
    for (int r = 0; r < runs; ++r) {
      const size_t edge = edges[rng() % edges.size()];
      const long start = static_cast<long>(edge) + static_cast<long>(rng() % 5) - 2;
      const long len = 1 + static_cast<long>(rng() % (rng() % 4 ? 4 : 140));
      for (long i = std::max(0L, start); i < std::min<long>(kPageSize, start + len); ++i) Flip(b, i);
    }
    const Bytes want = Encode(&EncodeDeltaScalar, a, b);
    const Bytes got = Encode(GetParam().fn, a, b);
    ASSERT_EQ(got, want) << iter;
    ExpectRoundTrip(a, b, got);
    // Random caps near the answer: same success/-1 verdict as the length says.
    for (int c = 0; c < 3; ++c) {
      const size_t cap = want.size() + 3 - std::min<size_t>(want.size() + 3, rng() % 7);
      auto out = std::make_unique<uint8_t[]>(std::max<size_t>(cap, 1));
      const int n = GetParam().fn(a.data(), b.data(), out.get(), cap);
      if (cap >= want.size()) {
        ASSERT_EQ(n, static_cast<int>(want.size()));
        ASSERT_EQ(Bytes(out.get(), out.get() + n), want);
      } else {
        ASSERT_EQ(n, -1) << "cap " << cap << " need " << want.size();
      }
    }
  }
}

TEST_P(EachEncoder, EverySingleBytePositionAndMaskShape) {
  // Every position of a single change, and of a change pair with a one-byte
  // gap, exercises every bit of the change masks.
  std::mt19937_64 rng(8);
  const Page a = RandomPage(rng);
  for (size_t pos = 0; pos < kPageSize; ++pos) {
    Page b = a;
    Flip(b, pos);
    if (pos + 2 < kPageSize) Flip(b, pos + 2);
    const Bytes got = Encode(GetParam().fn, a, b);
    ASSERT_EQ(got, Encode(&EncodeDeltaScalar, a, b)) << pos;
    ExpectRoundTrip(a, b, got);
  }
}

// Out-of-bounds safety without relying on a sanitizer: the output buffer and
// the input pages end exactly at an inaccessible guard page.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes) {
    const size_t pg = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    usable_ = (bytes + pg - 1) / pg * pg;
    base_ = static_cast<uint8_t*>(
        mmap(nullptr, usable_ + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base_ == MAP_FAILED) {
      base_ = nullptr;
      return;
    }
    mprotect(base_ + usable_, pg, PROT_NONE);
    total_ = usable_ + pg;
  }
  ~GuardedBuffer() {
    if (base_) munmap(base_, total_);
  }
  bool ok() const { return base_ != nullptr; }
  uint8_t* last(size_t n) { return base_ + usable_ - n; }  // n bytes ending at the guard

 private:
  uint8_t* base_ = nullptr;
  size_t usable_ = 0, total_ = 0;
};

TEST_P(EachEncoder, NeverTouchesMemoryPastPagesOrCap) {
  GuardedBuffer old_buf(kPageSize), new_buf(kPageSize), out_buf(kBig);
  ASSERT_TRUE(old_buf.ok() && new_buf.ok() && out_buf.ok());
  uint8_t* a = old_buf.last(kPageSize);
  uint8_t* b = new_buf.last(kPageSize);
  std::mt19937_64 rng(9);
  for (int iter = 0; iter < 2000; ++iter) {
    for (size_t i = 0; i < kPageSize; ++i) a[i] = b[i] = static_cast<uint8_t>(rng());
    // Short runs near the end of the page stress the fixed-size copies.
    const int runs = 1 + static_cast<int>(rng() % 8);
    for (int r = 0; r < runs; ++r) {
      const size_t pos = kPageSize - 1 - rng() % (iter % 2 ? 64 : kPageSize);
      const size_t len = 1 + rng() % 20;
      for (size_t i = pos; i < std::min(kPageSize, pos + len); ++i) b[i] ^= 0x33;
    }
    Bytes want(kBig);
    const int need = EncodeDeltaScalar(a, b, want.data(), want.size());
    ASSERT_GT(need, 0);
    // A roomy cap takes the fast paths right up to the page end; exact and
    // short caps take the careful ones.
    for (size_t cap : {kBig, size_t(need), size_t(need) - 1, size_t(need) / 2, size_t{1}, size_t{0}}) {
      uint8_t* out = out_buf.last(cap);
      const int n = GetParam().fn(a, b, out, cap);
      ASSERT_EQ(n, cap >= size_t(need) ? need : -1);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Xbzrle, EachEncoder, ::testing::ValuesIn(AllEncoders()),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// ---------------------------------------------------------------- decoder rules

class Decode : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(10);
    old_ = RandomPage(rng);
  }
  Status Run(const Bytes& in) {
    page_ = old_;
    return DecodeDelta(in.data(), in.size(), page_.data());
  }
  void ExpectRejected(const Bytes& in) {
    Status s = Run(in);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Code::kCorruption) << s.ToString();
  }
  Page old_, page_;
};

TEST_F(Decode, AcceptsFirstZeroRunOfZeroAndRunToPageEnd) {
  ASSERT_TRUE(Run({0x00, 0x02, 0xaa, 0xbb}).ok());
  EXPECT_EQ(page_[0], 0xaa);
  EXPECT_EQ(page_[1], 0xbb);
  EXPECT_TRUE(std::equal(page_.begin() + 2, page_.end(), old_.begin() + 2));
  // A change run that ends exactly at the page end.
  ASSERT_TRUE(Run({0xfe, 0x1f, 0x02, 0x01, 0x02}).ok());
  EXPECT_EQ(page_[4094], 0x01);
  EXPECT_EQ(page_[4095], 0x02);
  // The whole page in one change run.
  Bytes whole = {0x00, 0x80, 0x20};
  whole.resize(3 + kPageSize, 0x77);
  ASSERT_TRUE(Run(whole).ok());
  EXPECT_EQ(page_, Page(kPageSize, 0x77));
}

TEST_F(Decode, RejectsEmptyInput) { ExpectRejected({}); }

TEST_F(Decode, RejectsTruncatedZeroRunLength) { ExpectRejected({0x00, 0x01, 0xaa, 0x85}); }

TEST_F(Decode, RejectsOverlongZeroRunLength) { ExpectRejected({0x80, 0x80, 0x01, 0x01, 0xaa}); }

TEST_F(Decode, RejectsNonCanonicalZeroRunLength) { ExpectRejected({0x85, 0x00, 0x01, 0xaa}); }

TEST_F(Decode, RejectsTruncatedChangeRunLength) { ExpectRejected({0x05, 0x81}); }

TEST_F(Decode, RejectsOverlongChangeRunLength) { ExpectRejected({0x05, 0x81, 0x81, 0x01, 0xaa}); }

TEST_F(Decode, RejectsNonCanonicalChangeRunLength) { ExpectRejected({0x05, 0x81, 0x00, 0xaa}); }

TEST_F(Decode, RejectsZeroLengthChangeRun) {
  ExpectRejected({0x00, 0x00});
  ExpectRejected({0x05, 0x00, 0xaa});
}

TEST_F(Decode, RejectsZeroLengthZeroRunAfterTheFirst) {
  ExpectRejected({0x00, 0x01, 0xaa, 0x00, 0x01, 0xbb});
}

TEST_F(Decode, RejectsZeroRunOverrunningThePage) {
  ExpectRejected({0x81, 0x20, 0x01, 0xaa});  // 4097
  ExpectRejected({0x00, 0x01, 0xaa, 0x80, 0x20, 0x01, 0xbb});  // 1 + 4096
}

TEST_F(Decode, RejectsTrailingZeroRun) {
  // Canonical deltas omit it, so it is refused even though harmless.
  ExpectRejected({0x00, 0x01, 0xaa, 0xff, 0x1f});  // 1 + 4095 = 4096
  ExpectRejected({0x80, 0x20});                    // the whole page unchanged
}

TEST_F(Decode, RejectsInputEndingAfterAZeroRun) {
  ExpectRejected({0x05});
  ExpectRejected({0x00, 0x01, 0xaa, 0x10});
}

TEST_F(Decode, RejectsChangeRunOverrunningThePage) {
  ExpectRejected({0xff, 0x1f, 0x02, 0x01, 0x02});  // 4095 + 2
  Bytes big = {0x00, 0x81, 0x20};                   // 4097 bytes from 0
  big.resize(3 + kPageSize + 1, 0x33);
  ExpectRejected(big);
}

TEST_F(Decode, RejectsChangeRunOverrunningTheInput) {
  ExpectRejected({0x00, 0x05, 0x01, 0x02, 0x03});
  ExpectRejected({0x00, 0x01});
}

TEST_F(Decode, RejectsGarbageAfterAValidDelta) {
  // A complete delta followed by one stray byte reads as a zero run with no
  // change run after it.
  ExpectRejected({0x00, 0x01, 0xaa, 0x07});
}

TEST_F(Decode, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(11);
  int accepted = 0;
  for (int iter = 0; iter < 100000; ++iter) {
    Bytes in(rng() % 24);
    for (auto& x : in) x = static_cast<uint8_t>(rng() % 3 ? rng() % 8 : rng());
    if (Run(in).ok()) ++accepted;
  }
  EXPECT_GT(accepted, 0);  // the generator does hit valid inputs too
}

}  // namespace
}  // namespace romulus::compress

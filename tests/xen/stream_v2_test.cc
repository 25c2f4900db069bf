#include "xen/stream_v2.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "tests/xen/fuzz_seeds.h"
#include "tests/xen/stream_test_util.h"
#include "xen/stream_split.h"

namespace romulus::xen {
namespace {

using testing::SampleRemusStream;
using testing::StreamBuilder;

// Parses `in` (fed in the given chunk sizes) straight into a reconstructor.
Status RoundTrip(const std::vector<uint8_t>& in, const std::vector<size_t>& chunks,
                 std::vector<uint8_t>* out, ParserStats* stats = nullptr) {
  out->clear();
  StreamReconstructor rec([out](std::span<const uint8_t> b) {
    out->insert(out->end(), b.begin(), b.end());
    return Status::Ok();
  });
  StreamParser parser(&rec);
  size_t off = 0;
  for (size_t c : chunks) {
    c = std::min(c, in.size() - off);
    ROMULUS_RETURN_IF_ERROR(parser.Feed(std::span(in.data() + off, c)));
    off += c;
  }
  ROMULUS_RETURN_IF_ERROR(parser.Feed(std::span(in.data() + off, in.size() - off)));
  if (stats) *stats = parser.stats();
  return parser.Finish();
}

Status ParseAll(const std::vector<uint8_t>& in, ParserLimits limits = {}) {
  StreamReconstructor rec([](std::span<const uint8_t>) { return Status::Ok(); });
  StreamParser parser(&rec, limits);
  ROMULUS_RETURN_IF_ERROR(parser.Feed(in));
  return parser.Finish();
}

TEST(StreamV2Test, RoundTripIsByteIdentical) {
  auto in = SampleRemusStream(3);
  std::vector<uint8_t> out;
  ParserStats st;
  ASSERT_TRUE(RoundTrip(in, {}, &out, &st).ok());
  EXPECT_EQ(out, in);
  EXPECT_EQ(st.checkpoints, 3u);
  EXPECT_EQ(st.page_data_records, 6u);
  // Live phase: 5 (6,5,7 + pinned 10, 11) + 3 (5, L1 7) + 0; then 3 per checkpoint.
  EXPECT_EQ(st.pages, 5u + 2u + 0u + 9u);
  EXPECT_EQ(st.bytes, in.size());
}

TEST(StreamV2Test, EverySplitPointInTwoChunks) {
  auto in = SampleRemusStream(1);
  std::vector<uint8_t> out;
  for (size_t split = 0; split <= in.size(); split++) {
    ASSERT_TRUE(RoundTrip(in, {split}, &out).ok()) << "split " << split;
    ASSERT_EQ(out, in) << "split " << split;
  }
}

TEST(StreamV2Test, ByteAtATimeAndRandomChunks) {
  auto in = SampleRemusStream(2);
  std::vector<uint8_t> out;
  ASSERT_TRUE(RoundTrip(in, std::vector<size_t>(in.size(), 1), &out).ok());
  EXPECT_EQ(out, in);
  std::mt19937 rng(42);
  for (int iter = 0; iter < 50; iter++) {
    std::vector<size_t> chunks;
    for (size_t total = 0; total < in.size();) {
      size_t c = std::uniform_int_distribution<size_t>(0, 9000)(rng);
      chunks.push_back(c);
      total += c;
    }
    ASSERT_TRUE(RoundTrip(in, chunks, &out).ok());
    ASSERT_EQ(out, in);
  }
}

TEST(StreamV2Test, EndRecordThenNothingMore) {
  auto b = StreamBuilder().ImageHeader().DomainHeader();
  b.Record(kRecX86PvInfo, 8, 1).Record(kRecEnd, {});
  std::vector<uint8_t> out;
  ASSERT_TRUE(RoundTrip(b.bytes, {}, &out).ok());
  EXPECT_EQ(out, b.bytes);
  b.bytes.push_back(0);
  Status s = ParseAll(b.bytes);
  EXPECT_EQ(s.code(), Code::kCorruption) << s.ToString();
}

TEST(StreamV2Test, TruncationIsReportedByFinish) {
  auto in = SampleRemusStream(1);
  StreamReconstructor rec([](std::span<const uint8_t>) { return Status::Ok(); });
  for (size_t cut : {size_t(0), size_t(10), size_t(30), size_t(45), in.size() - 4, in.size() - 5000}) {
    StreamParser p(&rec);
    rec.Reset();
    ASSERT_TRUE(p.Feed(std::span(in.data(), cut)).ok());
    EXPECT_EQ(p.Finish().code(), Code::kClosed) << "cut " << cut;
  }
}

// Each malformed stream must be rejected with a clear Status, never a crash.
TEST(StreamV2Test, MalformedInputIsRejected) {
  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
    Code code;
  };
  std::vector<Case> cases;
  auto base = [] { return StreamBuilder().ImageHeader().DomainHeader(); };
  {
    auto b = StreamBuilder().ImageHeader();
    b.bytes[3] = 0;
    cases.push_back({"legacy marker", b.bytes, Code::kCorruption});
  }
  {
    auto b = StreamBuilder().ImageHeader();
    b.bytes[9] = 'Y';
    cases.push_back({"bad id", b.bytes, Code::kCorruption});
  }
  cases.push_back({"version 4", StreamBuilder().ImageHeader(4).bytes, Code::kUnsupported});
  cases.push_back({"big endian", StreamBuilder().ImageHeader(3, 1).bytes, Code::kUnsupported});
  cases.push_back({"domain type 7", StreamBuilder().ImageHeader().DomainHeader(7).bytes, Code::kUnsupported});
  cases.push_back({"page shift 16", StreamBuilder().ImageHeader().DomainHeader(1, 16).bytes, Code::kUnsupported});
  {
    auto b = base();
    b.PutLe32(kRecX86PvInfo);
    b.PutLe32(0xFFFFFFF0);
    cases.push_back({"record too long", b.bytes, Code::kOutOfRange});
  }
  {
    auto b = base();
    b.PutLe32(kRecPageData);
    b.PutLe32(4);
    cases.push_back({"page data shorter than its header", b.bytes, Code::kCorruption});
  }
  {
    auto b = base();
    b.PutLe32(kRecPageData);
    b.PutLe32(8);
    b.PutLe32(0);
    b.PutLe32(0);
    cases.push_back({"count 0", b.bytes, Code::kCorruption});
  }
  {
    auto b = base();
    b.PutLe32(kRecPageData);
    b.PutLe32(16);
    b.PutLe32(2);
    b.PutLe32(0);
    cases.push_back({"count beyond length", b.bytes, Code::kCorruption});
  }
  {
    auto b = base();
    b.PageData({{0x0, 1}}, 0);
    b.bytes[40 + 4] += 8;  // body_length says one more pfn's worth
    cases.push_back({"length mismatch", b.bytes, Code::kCorruption});
  }
  {
    auto b = base();
    b.PageData({{0x5, 1}}, 0);
    cases.push_back({"reserved page type", b.bytes, Code::kCorruption});
  }
  {
    auto b = base();
    b.Record(kRecX86PvVcpuXsave, 5, 1);
    b.bytes.back() = 1;
    cases.push_back({"non-zero padding", b.bytes, Code::kCorruption});
  }
  {
    auto b = base();
    b.Record(kRecCheckpoint, 8, 1);
    cases.push_back({"checkpoint with a body", b.bytes, Code::kCorruption});
  }
  for (auto& c : cases) {
    Status s = ParseAll(c.bytes);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.ToString();
    EXPECT_FALSE(s.message().empty());
  }
  // Limits are honoured.
  ParserLimits tight;
  tight.max_state_record_length = 1000;
  EXPECT_EQ(ParseAll(SampleRemusStream(1), tight).code(), Code::kOutOfRange);
  tight = {};
  tight.max_pfns_per_record = 3;
  EXPECT_EQ(ParseAll(SampleRemusStream(1), tight).code(), Code::kOutOfRange);
}

TEST(StreamV2Test, ErrorsAreSticky) {
  auto b = StreamBuilder().ImageHeader(9);
  StreamReconstructor rec([](std::span<const uint8_t>) { return Status::Ok(); });
  StreamParser p(&rec);
  Status first = p.Feed(b.bytes);
  ASSERT_FALSE(first.ok());
  auto good = SampleRemusStream(1);
  EXPECT_EQ(p.Feed(good).ToString(), first.ToString());
  EXPECT_EQ(p.Finish().ToString(), first.ToString());
}

TEST(StreamV2Test, VisitorErrorStopsTheParser) {
  struct Refuse : StreamReconstructor {
    Refuse() : StreamReconstructor([](std::span<const uint8_t>) { return Status::Ok(); }) {}
    Status OnPage(uint64_t, const uint8_t*) override { return Status::IoError("sink full"); }
  } v;
  StreamParser p(&v);
  Status s = p.Feed(SampleRemusStream(1));
  EXPECT_EQ(s.code(), Code::kIoError);
  EXPECT_NE(s.message().find("sink full"), std::string::npos);
}

TEST(StreamReconstructorTest, RejectsPagesOutOfOrder) {
  auto b = StreamBuilder().PageData({{0x0, 1}, {0xF, 2}, {0x0, 3}}, 0);
  std::span<const uint8_t> sk(b.bytes.data(), 8 + 8 + 3 * 8);
  std::vector<uint8_t> out;
  StreamReconstructor rec([&](std::span<const uint8_t> x) {
    out.insert(out.end(), x.begin(), x.end());
    return Status::Ok();
  });
  uint8_t page[4096] = {};
  EXPECT_EQ(rec.OnPage(1, page).code(), Code::kCorruption);  // no skeleton yet
  ASSERT_TRUE(rec.OnPageData(sk).ok());
  EXPECT_FALSE(rec.idle());
  EXPECT_EQ(rec.OnPage(3, page).code(), Code::kCorruption);  // expects pfn 1 first
  ASSERT_TRUE(rec.OnPage(1, page).ok());
  ASSERT_TRUE(rec.OnPage(3, page).ok());
  EXPECT_TRUE(rec.idle());
  EXPECT_EQ(out.size(), sk.size() + 2 * 4096);
}

// ---- The primary/backup split through the STATE envelope -------------------

struct Item {
  bool is_page;
  uint64_t pfn;
  std::vector<uint8_t> bytes;
};
struct Epoch {
  uint64_t n;
  std::vector<Item> items;
  bool ended = false;
};

struct RecordingSink : EpochSink {
  std::vector<Epoch> epochs;
  Status BeginEpoch(uint64_t e) override {
    if (!epochs.empty() && !epochs.back().ended) return Status::Internal("epoch not ended");
    epochs.push_back({e, {}});
    return Status::Ok();
  }
  Status AddState(std::span<const uint8_t> b) override {
    epochs.back().items.push_back({false, 0, {b.begin(), b.end()}});
    return Status::Ok();
  }
  Status AddPage(uint64_t pfn, const uint8_t* p) override {
    epochs.back().items.push_back({true, pfn, {p, p + 4096}});
    return Status::Ok();
  }
  Status EndEpoch(uint64_t e) override {
    if (epochs.back().n != e) return Status::Internal("epoch mismatch");
    epochs.back().ended = true;
    return Status::Ok();
  }
};

std::vector<Epoch> Split(const std::vector<uint8_t>& in) {
  RecordingSink sink;
  StreamSplitter splitter(&sink);
  StreamParser parser(&splitter);
  EXPECT_TRUE(parser.Feed(in).ok());
  EXPECT_TRUE(parser.Finish().ok());
  return sink.epochs;
}

TEST(StreamSplitTest, SplitAndAssembleIsByteIdentical) {
  auto in = SampleRemusStream(3);
  auto epochs = Split(in);
  ASSERT_EQ(epochs.size(), 3u);
  EXPECT_EQ(epochs[0].n, 1u);
  EXPECT_EQ(epochs[2].n, 3u);
  std::vector<uint8_t> out;
  StreamAssembler asmb([&](std::span<const uint8_t> b) {
    out.insert(out.end(), b.begin(), b.end());
    return Status::Ok();
  });
  for (auto& e : epochs) {
    ASSERT_TRUE(e.ended);
    for (auto& it : e.items) {
      ASSERT_TRUE((it.is_page ? asmb.OnPage(it.pfn, it.bytes.data()) : asmb.OnState(it.bytes)).ok());
    }
    ASSERT_TRUE(asmb.Commit().ok());
  }
  EXPECT_EQ(out, in);
  EXPECT_EQ(asmb.checkpoints(), 3u);
}

// A sender that ships an epoch's state first and its pages after (or any
// order keeping pages in skeleton order) still rebuilds the same bytes.
TEST(StreamSplitTest, StateFirstThenPagesIsByteIdentical) {
  auto in = SampleRemusStream(2);
  auto epochs = Split(in);
  std::vector<uint8_t> out;
  StreamAssembler asmb([&](std::span<const uint8_t> b) {
    out.insert(out.end(), b.begin(), b.end());
    return Status::Ok();
  });
  for (auto& e : epochs) {
    for (auto& it : e.items) {
      if (!it.is_page) {
        ASSERT_TRUE(asmb.OnState(it.bytes).ok());
      }
    }
    for (auto& it : e.items) {
      if (it.is_page) {
        ASSERT_TRUE(asmb.OnPage(it.pfn, it.bytes.data()).ok());
      }
    }
    ASSERT_TRUE(asmb.Commit().ok());
  }
  EXPECT_EQ(out, in);
}

TEST(StreamSplitTest, CommitWithMissingPagesFailsAndDiscardPoisons) {
  auto epochs = Split(SampleRemusStream(2));
  std::vector<uint8_t> out;
  StreamAssembler asmb([&](std::span<const uint8_t> b) {
    out.insert(out.end(), b.begin(), b.end());
    return Status::Ok();
  });
  for (auto& it : epochs[0].items)
    ASSERT_TRUE((it.is_page ? asmb.OnPage(it.pfn, it.bytes.data()) : asmb.OnState(it.bytes)).ok());
  ASSERT_TRUE(asmb.Commit().ok());
  size_t committed = out.size();
  asmb.Discard();  // nothing of epoch 2 written yet: harmless
  EXPECT_FALSE(asmb.broken());
  // Epoch 2 arrives but its last page never does.
  auto& items = epochs[1].items;
  for (size_t i = 0; i + 1 < items.size(); i++) {
    if (items[i].is_page && i + 1 == items.size() - 1) break;
    ASSERT_TRUE((items[i].is_page ? asmb.OnPage(items[i].pfn, items[i].bytes.data())
                                  : asmb.OnState(items[i].bytes)).ok());
  }
  asmb.Discard();
  EXPECT_TRUE(asmb.broken());
  EXPECT_FALSE(asmb.Commit().ok());
  EXPECT_FALSE(asmb.OnState(items[0].bytes).ok());
  // The CHECKPOINT of epoch 1 is the last one in the output.
  EXPECT_GE(out.size(), committed);
}

TEST(StreamSplitTest, BadEnvelopesAreRejected) {
  StreamAssembler asmb([](std::span<const uint8_t>) { return Status::Ok(); });
  std::vector<uint8_t> blob = {'X', '2', 9, 0};
  EXPECT_EQ(asmb.OnState(blob).code(), Code::kCorruption);
  StreamAssembler a2([](std::span<const uint8_t>) { return Status::Ok(); });
  std::vector<uint8_t> rec;
  WrapRecord(kRecX86TscInfo, std::vector<uint8_t>(24, 1), &rec);
  rec.pop_back();  // body shorter than its length field
  EXPECT_EQ(a2.OnState(rec).code(), Code::kCorruption);
  StreamAssembler a3([](std::span<const uint8_t>) { return Status::Ok(); });
  EXPECT_EQ(a3.OnState(std::vector<uint8_t>{'Q'}).code(), Code::kCorruption);
}

// Romulus' own envelopes (domain info, an HVM guest's device-model state)
// travel in the epoch but are not libxenguest's stream: the assembler passes
// over them, and the stream it rebuilds is the same without them.
TEST(StreamSplitTest, DomainInfoAndDeviceModelStateAreNotPartOfTheRebuiltStream) {
  std::vector<uint8_t> written;
  StreamAssembler asmb([&](std::span<const uint8_t> b) {
    written.insert(written.end(), b.begin(), b.end());
    return Status::Ok();
  });
  std::vector<uint8_t> blob;
  const std::string info = "name=g\ntype=hvm\n";
  WrapEnvelope(EnvelopeKind::kDomainInfo, std::span(reinterpret_cast<const uint8_t*>(info.data()), info.size()),
               &blob);
  EXPECT_EQ(EnvelopeKindOf(blob), 5);
  ASSERT_TRUE(asmb.OnState(blob).ok());
  const std::vector<uint8_t> qevm = {'Q', 'E', 'V', 'M', 0, 0, 0, 3, 0xaa};
  WrapEnvelope(EnvelopeKind::kDeviceModelState, qevm, &blob);
  EXPECT_EQ(EnvelopeKindOf(blob), 6);
  EXPECT_EQ(std::vector<uint8_t>(blob.begin() + kEnvelopeHeaderSize, blob.end()), qevm);
  ASSERT_TRUE(asmb.OnState(blob).ok());
  EXPECT_TRUE(written.empty()) << "neither is a v2 record";
  // and the kind after it is still unknown
  blob[2] = 7;
  EXPECT_EQ(asmb.OnState(blob).code(), Code::kCorruption);
}

// The committed seed corpus is exactly what the xen_fuzz_seeds tool writes
// (tests/xen/fuzz_seeds.h): reproducible from source, and regenerated when
// the synthetic streams change (run build/<dir>/tests/xen_fuzz_seeds
// tests/fuzz/corpus/xen_stream_fuzz).
TEST(StreamV2Test, FuzzSeedsAreUpToDate) {
  const auto seeds = testing::XenStreamFuzzSeeds();
  ASSERT_FALSE(seeds.empty());
  for (const auto& seed : seeds) {
    const std::string path = std::string(ROMULUS_SOURCE_DIR) + "/tests/fuzz/corpus/xen_stream_fuzz/" + seed.name;
    FILE* f = fopen(path.c_str(), "rb");
    ASSERT_NE(f, nullptr) << path << " is missing: run xen_fuzz_seeds";
    std::vector<uint8_t> got;
    for (int c; (c = fgetc(f)) != EOF;) got.push_back(static_cast<uint8_t>(c));
    fclose(f);
    EXPECT_EQ(got, seed.bytes) << path << " differs from what xen_fuzz_seeds writes";
    // Each seed is a stream the parser accepts whole (byte 0 is the fuzzer's chunking seed).
    EXPECT_TRUE(ParseAll(std::vector<uint8_t>(seed.bytes.begin() + 1, seed.bytes.end())).ok()) << seed.name;
  }
}

}  // namespace
}  // namespace romulus::xen

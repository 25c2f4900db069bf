// Real migration-v2 REMUS streams recorded in the Xen lab (tests/xen/fixtures,
// see tests/xen/fixtures/README.md): tap -> split -> assemble must rebuild
// them byte for byte, at any chunking.
#include <gtest/gtest.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <vector>

#include "xen/stream_split.h"
#include "xen/stream_v2.h"

namespace romulus::xen {
namespace {

std::vector<std::filesystem::path> Fixtures() {
  std::vector<std::filesystem::path> out;
  std::filesystem::path dir = std::filesystem::path(ROMULUS_SOURCE_DIR) / "tests/xen/fixtures";
  if (!std::filesystem::exists(dir)) return out;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".zst") out.push_back(e.path());
  return out;
}

std::vector<uint8_t> Decompress(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<uint8_t> z(std::istreambuf_iterator<char>(f), {});
  unsigned long long n = ZSTD_getFrameContentSize(z.data(), z.size());
  if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > (64ull << 20)) return {};
  std::vector<uint8_t> out(n);
  size_t got = ZSTD_decompress(out.data(), out.size(), z.data(), z.size());
  if (ZSTD_isError(got)) return {};
  out.resize(got);
  return out;
}

struct Bridge : EpochSink {
  StreamAssembler* a;
  uint64_t epochs = 0;
  Status BeginEpoch(uint64_t) override { return Status::Ok(); }
  Status AddState(std::span<const uint8_t> b) override { return a->OnState(b); }
  Status AddPage(uint64_t pfn, const uint8_t* p) override { return a->OnPage(pfn, p); }
  Status EndEpoch(uint64_t) override { epochs++; return a->Commit(); }
};

TEST(StreamFixtureTest, RealStreamsRebuildByteIdentical) {
  auto files = Fixtures();
  if (files.empty()) GTEST_SKIP() << "no recorded fixtures in tests/xen/fixtures";
  for (auto& path : files) {
    SCOPED_TRACE(path.filename().string());
    auto in = Decompress(path);
    ASSERT_FALSE(in.empty());
    for (size_t chunk : {size_t(1) << 20, size_t(4093), size_t(65536 + 7)}) {
      std::vector<uint8_t> out;
      StreamAssembler asmb([&](std::span<const uint8_t> b) {
        out.insert(out.end(), b.begin(), b.end());
        return Status::Ok();
      });
      Bridge bridge;
      bridge.a = &asmb;
      StreamSplitter split(&bridge);
      StreamParser parser(&split);
      for (size_t off = 0; off < in.size(); off += chunk) {
        ASSERT_TRUE(parser.Feed(std::span(in.data() + off, std::min(chunk, in.size() - off))).ok());
      }
      EXPECT_TRUE(parser.Finish().ok());
      EXPECT_EQ(parser.version(), 3u);
      // pv-*: x86 PV (1); pvh-*: libxenguest streams PVH as x86 HVM (2).
      const bool pvh = path.filename().string().rfind("pvh-", 0) == 0;
      EXPECT_EQ(parser.domain_type(), pvh ? kDomainTypeX86Hvm : kDomainTypeX86Pv);
      EXPECT_EQ(parser.xen_major(), 4);
      EXPECT_GE(bridge.epochs, 2u);
      ASSERT_EQ(out.size(), in.size());
      EXPECT_TRUE(out == in);
    }
  }
}

// Which record types a stream carries (pages and checkpoints aside).
struct RecordCounter : StreamVisitor {
  std::map<uint32_t, int> records;
  Status OnImageHeader(std::span<const uint8_t>) override { return Status::Ok(); }
  Status OnDomainHeader(std::span<const uint8_t>) override { return Status::Ok(); }
  Status OnRecord(uint32_t type, std::span<const uint8_t>) override {
    records[type]++;
    return Status::Ok();
  }
  Status OnPageData(std::span<const uint8_t>) override { return Status::Ok(); }
  Status OnPage(uint64_t, const uint8_t*) override { return Status::Ok(); }
  Status OnCheckpoint() override { return Status::Ok(); }
};

// The PVH recording is what docs/XEN-STREAM.md §3.1 says a PVH stream is:
// per checkpoint TSC, HVM context and HVM params, and none of PV's records.
TEST(StreamFixtureTest, PvhStreamCarriesHvmState) {
  const auto path = std::filesystem::path(ROMULUS_SOURCE_DIR) / "tests/xen/fixtures/pvh-remus-3ckpt.v2.zst";
  auto in = Decompress(path);
  ASSERT_FALSE(in.empty()) << path;
  RecordCounter c;
  StreamParser parser(&c);
  ASSERT_TRUE(parser.Feed(in).ok());
  const uint64_t checkpoints = parser.stats().checkpoints;
  EXPECT_EQ(checkpoints, 3u);
  for (uint32_t t : {kRecX86TscInfo, kRecHvmContext, kRecHvmParams}) {
    EXPECT_EQ(uint64_t(c.records[t]), checkpoints) << RecordTypeName(t) << " once per checkpoint";
  }
  EXPECT_EQ(c.records.count(kRecX86PvInfo), 0u) << "no PV records in a PVH stream";
}

}  // namespace
}  // namespace romulus::xen

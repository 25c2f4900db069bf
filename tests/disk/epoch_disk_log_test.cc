// disk::RequestExecutor (the one write path) and disk::EpochDiskLog (the
// engine's sink): order of tag/report/release, epochs across an advance,
// zero detection, the budget and what happens when it overflows, the
// re-read of failed ranges.
#include "disk/epoch_disk_log.h"

#include <gtest/gtest.h>

#include <thread>

#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/request_executor.h"
#include "protocol/disk_records.h"
#include "tests/disk/disk_test_util.h"

namespace romulus::disk {
namespace {

using protocol::DiskRecordKind;
using testing::Pattern;
using testing::RecordingSink;
using testing::SinkEvent;
using testing::TempDir;

std::unique_ptr<BackingStore> OpenStore(const TempDir& dir, uint64_t size) {
  std::string path = dir.path() + "/disk.img";
  testing::WriteFile(path, std::vector<uint8_t>(size, 0));
  BackingStoreOptions o;
  o.max_request = 1u << 20;
  auto s = BackingStore::Open(path, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

struct Rec {
  DiskRecordKind kind;
  uint8_t flags;
  uint64_t offset, length;
  std::vector<uint8_t> data;
};

std::vector<Rec> Sealed(const EpochDiskLog& log) {
  std::vector<Rec> out;
  log.ForEachSealed([&](const protocol::DiskRecord& r) {
    out.push_back(Rec{r.kind, r.flags, r.offset, r.length, std::vector<uint8_t>(r.data.begin(), r.data.end())});
  });
  return out;
}

// A clock that records the order of Acquire/Release around the sink's calls.
class OrderClock final : public EpochClock {
 public:
  explicit OrderClock(std::vector<std::string>* log) : log_(log) {}
  uint64_t Acquire() override {
    log_->push_back("acquire");
    return 7;
  }
  void Release(uint64_t tag) override { log_->push_back("release " + std::to_string(tag)); }

 private:
  std::vector<std::string>* log_;
};

class OrderSink final : public DiskWriteSink {
 public:
  explicit OrderSink(std::vector<std::string>* log) : log_(log) {}
  void OnWrite(uint64_t e, uint64_t, std::span<const uint8_t>, bool) override { log_->push_back("write " + std::to_string(e)); }
  void OnZero(uint64_t e, uint64_t, uint64_t, bool trim, bool) override {
    log_->push_back(std::string(trim ? "trim " : "zero ") + std::to_string(e));
  }
  void OnFlush(uint64_t e) override { log_->push_back("flush " + std::to_string(e)); }
  void OnWriteFailed(uint64_t e, uint64_t, uint64_t) override { log_->push_back("failed " + std::to_string(e)); }

 private:
  std::vector<std::string>* log_;
};

TEST(RequestExecutor, TagsReportsThenReleases) {
  TempDir dir;
  auto store = OpenStore(dir, 1 << 20);
  ASSERT_TRUE(store);
  std::vector<std::string> order;
  OrderClock clock(&order);
  OrderSink sink(&order);
  RequestExecutor ex(store.get(), &clock, &sink);
  std::vector<uint8_t> data = Pattern(4096, 1);
  ASSERT_TRUE(ex.WriteBytes(8192, data, /*fua=*/true).ok());
  ASSERT_TRUE(ex.Zero(0, 4096, /*trim=*/false, false).ok());
  ASSERT_TRUE(ex.FlushAll().ok());
  EXPECT_EQ(order, (std::vector<std::string>{"acquire", "write 7", "release 7", "acquire", "zero 7", "release 7",
                                             "acquire", "flush 7", "release 7"}));
  // Out of bounds: refused before a tag is taken, nothing reported.
  order.clear();
  EXPECT_EQ(ex.WriteBytes((1 << 20) - 100, data, false).code(), Code::kInvalidArgument);
  EXPECT_TRUE(order.empty());
  // The write landed.
  auto back = store->Read(8192, 4096);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), back->begin()));
}

TEST(RequestExecutor, NoClockNoSinkStillWrites) {
  TempDir dir;
  auto store = OpenStore(dir, 1 << 20);
  ASSERT_TRUE(store);
  RequestExecutor ex(store.get(), nullptr, nullptr);
  std::vector<uint8_t> data = Pattern(4096, 2);
  ASSERT_TRUE(ex.WriteBytes(0, data, false).ok());
  auto back = store->Read(0, 4096);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), back->begin()));
}

TEST(RequestExecutor, AbandonedTicketReleases) {
  EpochCounter clock(3);
  TempDir dir;
  auto store = OpenStore(dir, 1 << 20);
  ASSERT_TRUE(store);
  RecordingSink sink;
  RequestExecutor ex(store.get(), &clock, &sink);
  {
    RequestExecutor::Ticket t = ex.Begin();
    EXPECT_EQ(t.tag(), 3u);
    EXPECT_FALSE(clock.Drained(3));
  }
  EXPECT_TRUE(clock.Drained(3));
  EXPECT_TRUE(sink.events().empty());
}

TEST(EpochDiskLog, AWriteHeldAcrossAdvanceStaysInItsEpoch) {
  TempDir dir;
  auto store = OpenStore(dir, 1 << 20);
  ASSERT_TRUE(store);
  EpochCounter clock(5);
  EpochDiskLog log(0, store.get());
  RequestExecutor ex(store.get(), &clock, &log);
  std::vector<uint8_t> a = Pattern(4096, 3), b = Pattern(4096, 4);

  // Request A's header is read in epoch 5; the advance passes while it executes.
  RequestExecutor::Ticket ta = ex.Begin();
  EXPECT_EQ(clock.Advance(), 5u);
  EXPECT_FALSE(clock.Drained(5));
  auto buf = store->WriteBuffer(0, 4096);
  std::copy(a.begin(), a.end(), buf.begin());
  EXPECT_EQ(ex.Write(ta, 0, buf, false), DiskOutcome::kDone);
  ta.Release();
  EXPECT_TRUE(clock.Drained(5));
  // B arrives after the advance: epoch 6.
  ASSERT_TRUE(ex.WriteBytes(4096, b, false).ok());

  ASSERT_TRUE(log.Seal(5).ok());
  std::vector<Rec> five = Sealed(log);
  ASSERT_EQ(five.size(), 1u);
  EXPECT_EQ(five[0].offset, 0u);
  EXPECT_EQ(five[0].data, a);
  ASSERT_TRUE(log.Seal(6).ok());
  std::vector<Rec> six = Sealed(log);
  ASSERT_EQ(six.size(), 1u);
  EXPECT_EQ(six[0].offset, 4096u);
  EXPECT_EQ(six[0].data, b);
}

TEST(EpochDiskLog, KeepsOrderKindsAndFlags) {
  EpochDiskLog log(0, nullptr);
  std::vector<uint8_t> d = Pattern(8192, 5);
  log.OnWrite(1, 4096, d, /*fua=*/true);
  log.OnZero(1, 0, 4096, /*trim=*/true, false);
  log.OnFlush(1);
  log.OnZero(2, 512, 1024, false, true);
  ASSERT_TRUE(log.Seal(1).ok());
  std::vector<Rec> r = Sealed(log);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].kind, DiskRecordKind::kWrite);
  EXPECT_EQ(r[0].flags, protocol::kDiskFlagFua);
  EXPECT_EQ(r[0].data, d);
  EXPECT_EQ(r[1].kind, DiskRecordKind::kZero);
  EXPECT_EQ(r[1].flags, protocol::kDiskFlagTrim);
  EXPECT_EQ(r[2].kind, DiskRecordKind::kFlush);
  ASSERT_TRUE(log.Seal(2).ok());
  r = Sealed(log);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].offset, 512u);
  EXPECT_EQ(r[0].flags, protocol::kDiskFlagFua);
  // Nothing left: an empty epoch seals empty.
  ASSERT_TRUE(log.Seal(3).ok());
  EXPECT_TRUE(Sealed(log).empty());
}

TEST(EpochDiskLog, AllZeroWriteBecomesZeroRecord) {
  EpochDiskLog log(0, nullptr);
  std::vector<uint8_t> z(16384, 0);
  log.OnWrite(1, 0, z, false);
  std::vector<uint8_t> nz(4096, 0);
  nz[4095] = 1;  // the last byte: a check that stops early would miss it
  log.OnWrite(1, 16384, nz, false);
  ASSERT_TRUE(log.Seal(1).ok());
  std::vector<Rec> r = Sealed(log);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kind, DiskRecordKind::kZero);
  EXPECT_EQ(r[0].length, 16384u);
  EXPECT_TRUE(r[0].data.empty());
  EXPECT_EQ(r[1].kind, DiskRecordKind::kWrite);
  EXPECT_EQ(log.stats().zero_writes, 1u);
  EXPECT_EQ(log.stats().write_bytes, 4096u);
}

TEST(EpochDiskLog, BudgetOverflowNeedsResyncAndSendsNothingPartial) {
  EpochDiskLogOptions o;
  o.budget_bytes = 3 * 4096;
  EpochDiskLog log(2, nullptr, o);
  std::vector<uint8_t> d = Pattern(4096, 6);
  log.OnWrite(1, 0, d, false);
  ASSERT_TRUE(log.Seal(1).ok());  // one block: fits
  for (int i = 0; i < 4; ++i) log.OnWrite(2, 4096 * i, d, false);  // the fourth does not fit
  Status s = log.Seal(2);
  EXPECT_EQ(s.code(), Code::kOutOfRange);
  EXPECT_NE(s.message().find("resync"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("epoch 2"), std::string::npos) << s.message();
  // Later epochs cannot be sealed either: the disk is no longer in step.
  EXPECT_FALSE(log.Seal(3).ok());
  // A new session starts over.
  log.Reset();
  log.OnWrite(4, 0, d, false);
  EXPECT_TRUE(log.Seal(4).ok());
}

TEST(EpochDiskLog, ArenasAreReusedInTheSteadyState) {
  EpochDiskLog log(0, nullptr);
  std::vector<uint8_t> d = Pattern(65536, 7);
  for (uint64_t e = 1; e <= 4; ++e) {
    log.OnWrite(e, 0, d, false);
    ASSERT_TRUE(log.Seal(e).ok());
  }
  const uint64_t grown = log.stats().reallocations;
  for (uint64_t e = 5; e <= 50; ++e) {
    log.OnWrite(e, 0, d, false);
    log.OnWrite(e + 1, 65536, d, false);  // one of the next epoch, moved back at the seal
    ASSERT_TRUE(log.Seal(e).ok());
    ASSERT_EQ(Sealed(log).size(), e == 5 ? 1u : 2u);
  }
  EXPECT_EQ(log.stats().reallocations, grown);
  EXPECT_LE(log.stats().high_water, 3 * 65536u);
}

TEST(EpochDiskLog, FailedWriteReReadsTheRangeNow) {
  TempDir dir;
  auto store = OpenStore(dir, 1 << 20);
  ASSERT_TRUE(store);
  std::vector<uint8_t> landed = Pattern(4096, 8);
  {
    auto buf = store->WriteBuffer(4096, 4096);
    std::copy(landed.begin(), landed.end(), buf.begin());
    ASSERT_TRUE(store->Write(4096, 4096, false).ok());
  }
  EpochDiskLog log(0, store.get());
  log.OnWriteFailed(3, 4096 + 100, 200);  // widened to the sector [4096, 4608)
  ASSERT_TRUE(log.Seal(3).ok());
  std::vector<Rec> r = Sealed(log);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, DiskRecordKind::kWrite);
  EXPECT_EQ(r[0].offset, 4096u);
  EXPECT_EQ(r[0].length, 512u);
  EXPECT_TRUE(std::equal(r[0].data.begin(), r[0].data.end(), landed.begin()));
  // Without a store the epoch cannot be captured.
  EpochDiskLog blind(0, nullptr);
  blind.OnWriteFailed(3, 0, 512);
  EXPECT_FALSE(blind.Seal(3).ok());
}

TEST(EpochDiskLog, FullCopyCoversTheDiskWithZeroRuns) {
  TempDir dir;
  auto store = OpenStore(dir, 3u << 20);
  ASSERT_TRUE(store);
  std::vector<uint8_t> d = Pattern(8192, 9);
  auto buf = store->WriteBuffer((1u << 20) + 4096, 8192);
  std::copy(d.begin(), d.end(), buf.begin());
  ASSERT_TRUE(store->Write((1u << 20) + 4096, 8192, false).ok());
  EpochDiskLog log(0, store.get());
  log.OnWrite(1, 0, d, false);  // superseded by the copy after Reset
  log.Reset();
  ASSERT_TRUE(log.CaptureFullCopy(1, store.get()).ok());
  ASSERT_TRUE(log.Seal(1).ok());
  std::vector<Rec> r = Sealed(log);
  // zeros [0, 1M+4K), data [1M+4K, 1M+12K), zeros to the end.
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].kind, DiskRecordKind::kZero);
  EXPECT_EQ(r[0].offset, 0u);
  EXPECT_EQ(r[0].length, (1u << 20) + 4096);
  EXPECT_EQ(r[1].kind, DiskRecordKind::kWrite);
  EXPECT_EQ(r[1].data, d);
  EXPECT_EQ(r[2].kind, DiskRecordKind::kZero);
  EXPECT_EQ(r[2].offset + r[2].length, 3u << 20);
  // A budget smaller than the disk's data: the copy cannot be taken.
  EpochDiskLogOptions o;
  o.budget_bytes = 4096;
  EpochDiskLog small(0, store.get(), o);
  EXPECT_EQ(small.CaptureFullCopy(1, store.get()).code(), Code::kOutOfRange);
}

TEST(EpochDiskLog, ACopyOfChangesCarriesExactlyTheRegionsWrittenAfterTheTag) {
  TempDir dir;
  constexpr uint64_t R = DirtyRegions::kRegionBytes;
  auto store = OpenStore(dir, 16 * R);
  ASSERT_TRUE(store);
  EpochDiskLog log(0, store.get());
  log.TrackChanges(store->size());
  auto write = [&](uint64_t tag, uint64_t off, uint8_t seed) {
    std::vector<uint8_t> d = Pattern(4096, seed);
    auto buf = store->WriteBuffer(off, 4096);
    std::copy(d.begin(), d.end(), buf.begin());
    ASSERT_TRUE(store->Write(off, 4096, false).ok());
    log.OnWrite(tag, off, d, false);
  };
  write(1, 0, 1);
  write(2, 5 * R + 8192, 2);
  write(3, 9 * R, 3);
  log.OnZero(3, 12 * R, 4096, /*trim=*/false, false);
  // The backup holds tag 1: regions 5, 9 and 12 changed since; region 0 did not.
  auto n = log.CaptureChangedSince(4, store.get(), 1);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 3u);
  ASSERT_TRUE(log.Seal(4).ok());
  uint64_t covered = 0;
  for (const Rec& r : Sealed(log)) {
    // Only the changed regions, each whole, and nothing of the log from
    // before (the copy supersedes it).
    EXPECT_TRUE(r.offset / R == 5 || r.offset / R == 9 || r.offset / R == 12) << r.offset;
    EXPECT_EQ((r.offset + r.length - 1) / R, r.offset / R) << "a record beyond its region";
    covered += r.length;
    if (r.kind == DiskRecordKind::kWrite) {
      auto back = store->Read(r.offset, static_cast<uint32_t>(r.length));
      ASSERT_TRUE(back.ok());
      EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), back->begin()));
    }
  }
  EXPECT_EQ(covered, 3 * R);
  // The backup acked tag 2: a copy as of 1 can no longer be brought up,
  // and says so without touching the log; as of 2, region 9 and 12 only.
  log.ForgetChangesThrough(2);
  EXPECT_EQ(log.CaptureChangedSince(4, store.get(), 1).status().code(), Code::kUnsupported);
  auto m = log.CaptureChangedSince(4, store.get(), 2);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, 2u);
  // Marks survive Reset (a new session forgets records, not changes).
  log.Reset();
  auto k = log.CaptureChangedSince(4, store.get(), 2);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, 2u);
  // Without tracking there is nothing to answer with.
  EpochDiskLog plain(0, store.get());
  EXPECT_EQ(plain.CaptureChangedSince(1, store.get(), 0).status().code(), Code::kUnsupported);
}

}  // namespace
}  // namespace romulus::disk

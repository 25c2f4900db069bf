// sim/sim_disk.h: the simulated disk's records, and CheckSimDisk catching
// every way a disk image can disagree with the guest's memory.
#include "sim/sim_disk.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "disk/epoch_clock.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"
#include "tests/disk/disk_test_util.h"

namespace romulus::sim {
namespace {

SimSpec DiskSpec(const std::string& text = "sim:size=1M,workload=seed,seed=7,disk=64K") {
  Result<SimSpec> r = ParseSimSpec(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : SimSpec{};
}

// An image as the writer leaves it after n records (built here from the
// record definition, independently of CheckSimDisk's reasoning).
std::vector<uint8_t> ImageAfter(const SimSpec& spec, uint64_t n) {
  std::vector<uint8_t> img(spec.disk_bytes, 0);
  for (uint64_t k = 0; k < n; ++k) {
    std::span<uint8_t> block(img.data() + SimDiskOffsetOf(spec, k), kSimDiskBlock);
    if (SimDiskKindOf(k) == SimDiskRecordKind::kData) {
      FillSimDiskRecord(spec.seed, k, block);
    } else {
      std::memset(block.data(), 0, block.size());
    }
  }
  return img;
}

Status Check(const SimSpec& spec, uint64_t n, const std::vector<uint8_t>& img) {
  return CheckSimDisk(spec, n, [&](uint64_t off, std::span<uint8_t> out) {
    if (off + out.size() > img.size()) return Status::OutOfRange("beyond the image");
    std::memcpy(out.data(), img.data() + off, out.size());
    return Status::Ok();
  });
}

TEST(SimDiskSpec, ParsesAndPrintsDisk) {
  SimSpec s = DiskSpec("sim:size=64M,workload=seed,disk=16M");
  EXPECT_EQ(s.disk_bytes, uint64_t{16} << 20);
  EXPECT_EQ(s.ToString(), "sim:size=64M,workload=seed,seed=1,rate=200,disk=16M");
  Result<SimSpec> again = ParseSimSpec(s.ToString());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->disk_bytes, s.disk_bytes);
  // No disk: the identity is what it always was.
  EXPECT_EQ(DiskSpec("sim:size=64M,disk=0").ToString(), "sim:size=64M,workload=seed,seed=1,rate=200");
  for (const char* bad : {"sim:disk=", "sim:disk=4097", "sim:disk=32K", "sim:disk=65G", "sim:disk=x",
                          "sim:disk=1M,disk=2M"}) {
    EXPECT_FALSE(ParseSimSpec(bad).ok()) << bad;
  }
}

TEST(SimDiskRecord, RoundTripsAndRejectsGarble) {
  std::vector<uint8_t> b(kSimDiskBlock);
  FillSimDiskRecord(7, 1234, b);
  Result<SimDiskBlockContent> c = ParseSimDiskBlock(7, b);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->zero);
  EXPECT_EQ(c->k, 1234u);
  EXPECT_FALSE(ParseSimDiskBlock(8, b).ok());  // another guest's record
  b[2000] ^= 1;
  EXPECT_EQ(ParseSimDiskBlock(7, b).status().code(), Code::kCorruption);
  std::vector<uint8_t> z(kSimDiskBlock, 0);
  ASSERT_TRUE(ParseSimDiskBlock(7, z).ok());
  EXPECT_TRUE(ParseSimDiskBlock(7, z)->zero);
  // Two records differ in their pattern, not only in their header.
  std::vector<uint8_t> a(kSimDiskBlock), d(kSimDiskBlock);
  FillSimDiskRecord(7, 1, a);
  FillSimDiskRecord(7, 2, d);
  EXPECT_NE(0, std::memcmp(a.data() + 24, d.data() + 24, 4064));
}

TEST(SimDiskRecord, EveryKindOccurs) {
  int data = 0, zero = 0, trim = 0, fua = 0, flush = 0;
  for (uint64_t k = 0; k < 64; ++k) {
    switch (SimDiskKindOf(k)) {
      case SimDiskRecordKind::kData: ++data; break;
      case SimDiskRecordKind::kZero: ++zero; break;
      case SimDiskRecordKind::kTrim: ++trim; break;
    }
    fua += SimDiskFuaOf(k);
    flush += SimDiskFlushAfter(k);
  }
  EXPECT_GT(data, 0);
  EXPECT_GT(zero, 0);
  EXPECT_GT(trim, 0);
  EXPECT_GT(fua, 0);
  EXPECT_GT(flush, 0);
}

TEST(CheckSimDisk, AcceptsExactImages) {
  SimSpec spec = DiskSpec();  // 16 blocks
  for (uint64_t n : {0, 1, 11, 12, 15, 16, 17, 40, 100}) {
    EXPECT_TRUE(Check(spec, n, ImageAfter(spec, n)).ok()) << n << ": " << Check(spec, n, ImageAfter(spec, n)).ToString();
  }
}

TEST(CheckSimDisk, CatchesARecordFromBeyondTheCheckpoint) {
  SimSpec spec = DiskSpec();
  // The image went one record further than memory believes.
  for (uint64_t n : {0, 5, 20, 33}) {
    if (SimDiskKindOf(n) != SimDiskRecordKind::kData) continue;
    Status s = Check(spec, n, ImageAfter(spec, n + 1));
    EXPECT_EQ(s.code(), Code::kCorruption) << n;
    EXPECT_NE(s.message().find("beyond the checkpoint"), std::string::npos) << s.message();
  }
}

TEST(CheckSimDisk, CatchesAHole) {
  SimSpec spec = DiskSpec();
  // Memory believes 21 records; the image lost record 20 (block 4 keeps record 4).
  std::vector<uint8_t> img = ImageAfter(spec, 20);
  Status s = Check(spec, 21, img);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("hole"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("record 20"), std::string::npos) << s.message();
  // A record due in a block never written before: zeros instead.
  s = Check(spec, 3, ImageAfter(spec, 2));
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("hole"), std::string::npos) << s.message();
}

TEST(CheckSimDisk, CatchesATornRecord) {
  SimSpec spec = DiskSpec();
  std::vector<uint8_t> img = ImageAfter(spec, 10);
  // Half of record 3 is an older content (zeros): torn.
  std::memset(img.data() + 3 * kSimDiskBlock + 2048, 0, 2048);
  Status s = Check(spec, 10, img);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("block 3"), std::string::npos) << s.message();
}

TEST(CheckSimDisk, CatchesDataWhereZerosAreDue) {
  SimSpec spec = DiskSpec();
  ASSERT_NE(SimDiskKindOf(11), SimDiskRecordKind::kData);
  // Record 11 zeroes block 11 (a TRIM): an image holding data there missed it.
  std::vector<uint8_t> img = ImageAfter(spec, 12);  // record 11 zeroed block 11
  FillSimDiskRecord(spec.seed, 11, std::span<uint8_t>(img.data() + 11 * kSimDiskBlock, kSimDiskBlock));
  Status s = Check(spec, 12, img);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("should read as zeros"), std::string::npos) << s.message();
}

TEST(CheckSimDisk, NeedsADiskAndPassesReadErrors) {
  SimSpec none = DiskSpec("sim:size=1M");
  EXPECT_EQ(CheckSimDisk(none, 0, nullptr).code(), Code::kInvalidArgument);
  SimSpec spec = DiskSpec();
  Status s = CheckSimDisk(spec, 1, [](uint64_t, std::span<uint8_t>) { return Status::IoError("boom"); });
  EXPECT_EQ(s.code(), Code::kIoError);
}

TEST(SimDiskState, RecordsInStateBlob) {
  Result<std::unique_ptr<SimGuest>> g = SimGuest::Create(DiskSpec());
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  std::vector<uint8_t> st;
  ASSERT_TRUE((*g)->CaptureState(&st).ok());
  EXPECT_EQ(st.size(), SimGuest::kStateBytesWithDisk);
  Result<uint64_t> n = SimDiskRecordsInState(st);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, (*g)->disk_records());
  st[3] ^= 1;
  EXPECT_EQ(SimDiskRecordsInState(st).status().code(), Code::kCorruption);
  // A guest without a disk: version 1, no records.
  Result<std::unique_ptr<SimGuest>> plain = SimGuest::Create(DiskSpec("sim:size=1M"));
  ASSERT_TRUE(plain.ok());
  std::vector<uint8_t> st1;
  ASSERT_TRUE((*plain)->CaptureState(&st1).ok());
  EXPECT_EQ(st1.size(), SimGuest::kStateBytes);
  EXPECT_EQ(*SimDiskRecordsInState(st1), 0u);
  // A disk blob does not restore a guest without a disk, nor vice versa.
  std::vector<uint8_t> image(uint64_t{1} << 20, 0);
  st[3] ^= 1;
  EXPECT_EQ(SimGuest::Restore(DiskSpec("sim:size=1M,seed=7"), image, st).status().code(), Code::kCorruption);
}

Status CheckFile(const SimSpec& spec, uint64_t n, const std::string& path) {
  return Check(spec, n, disk::testing::ReadFile(path));
}

std::unique_ptr<SimGuest> WithDisk(const SimSpec& spec, const std::string& path, disk::EpochClock* clock = nullptr) {
  auto g = SimGuest::Create(spec);
  EXPECT_TRUE(g.ok());
  EXPECT_TRUE(SimGuest::CreateDiskFile(path, spec.disk_bytes).ok());
  Status st = (*g)->OpenDisk(path, clock, nullptr);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return std::move(*g);
}

TEST(SimDiskWriter, DeterministicAndChecked) {
  disk::testing::TempDir dir;
  SimSpec spec = DiskSpec("sim:size=1M,workload=sparse,seed=3,disk=64K");
  auto a = WithDisk(spec, dir.path() + "/a");
  auto b = WithDisk(spec, dir.path() + "/b");
  ASSERT_TRUE(a->RunSteps(4 * 37 + 2).ok());
  ASSERT_TRUE(b->RunSteps(4 * 37 + 2).ok());
  EXPECT_EQ(a->disk_records(), 37u);
  EXPECT_EQ(a->disk_errors(), 0u);
  EXPECT_EQ(disk::testing::ReadFile(dir.path() + "/a"), disk::testing::ReadFile(dir.path() + "/b"));
  Status st = CheckFile(spec, a->disk_records(), dir.path() + "/a");
  EXPECT_TRUE(st.ok()) << st.ToString();
  // The file is one record ahead of a memory that believes one fewer.
  EXPECT_EQ(CheckFile(spec, a->disk_records() - 1, dir.path() + "/a").code(), Code::kCorruption);
}

TEST(SimDiskWriter, NeedsItsDiskOpen) {
  auto g = SimGuest::Create(DiskSpec());
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->RunSteps(1).code(), Code::kInvalidArgument);
  EXPECT_EQ((*g)->Start().code(), Code::kInvalidArgument);
  auto plain = SimGuest::Create(DiskSpec("sim:size=1M"));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->OpenDisk("/nonexistent").code(), Code::kInvalidArgument);
}

TEST(SimDiskWriter, EveryRecordIsTaggedByTheClock) {
  disk::testing::TempDir dir;
  SimSpec spec = DiskSpec();
  disk::EpochCounter clock(4);
  auto g = WithDisk(spec, dir.path() + "/d", &clock);
  ASSERT_TRUE(g->RunSteps(4 * 10).ok());
  EXPECT_EQ(clock.in_flight(), 0u);  // every request released
  EXPECT_TRUE(clock.Drained(4));
}

TEST(SimDiskWriter, RestoredGuestContinuesTheRecords) {
  disk::testing::TempDir dir;
  SimSpec spec = DiskSpec("sim:size=1M,workload=hotset,seed=9,disk=64K");
  auto a = WithDisk(spec, dir.path() + "/a");
  ASSERT_TRUE(a->RunSteps(4 * 21).ok());
  std::vector<uint8_t> state;
  ASSERT_TRUE(a->CaptureState(&state).ok());
  EXPECT_EQ(*SimDiskRecordsInState(state), 21u);
  // The backup's copy of the disk at this checkpoint.
  disk::testing::WriteFile(dir.path() + "/b", disk::testing::ReadFile(dir.path() + "/a"));
  auto b = SimGuest::Restore(spec, std::span<const uint8_t>(a->memory(), spec.size_bytes), state);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE((*b)->OpenDisk(dir.path() + "/b").ok());
  EXPECT_EQ((*b)->disk_records(), 21u);
  ASSERT_TRUE(a->RunSteps(4 * 30).ok());
  ASSERT_TRUE((*b)->RunSteps(4 * 30).ok());
  EXPECT_EQ((*b)->disk_records(), 51u);
  EXPECT_EQ(disk::testing::ReadFile(dir.path() + "/a"), disk::testing::ReadFile(dir.path() + "/b"));
  Status st = CheckFile(spec, 51, dir.path() + "/b");
  EXPECT_TRUE(st.ok()) << st.ToString();
}

}  // namespace
}  // namespace romulus::sim

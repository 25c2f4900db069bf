// The Xen backup's disks (xen/xen_disks.h), without a hypervisor: the image
// files, the direct first epoch, staging and its bound, the order memory →
// disks, the held replica's images kept until the new session commits, and
// a failed apply (ENOSPC on a small tmpfs) that must refuse activation.
#include "xen/xen_disks.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace romulus::xen {
namespace {

namespace fs = std::filesystem;
using protocol::DiskInfo;
using protocol::DiskRecord;
using protocol::DiskRecordKind;

std::string MakeTempDir(const char* tag) {
  std::string t = std::string("/tmp/romulus-") + tag + "-XXXXXX";
  char* d = ::mkdtemp(t.data());
  EXPECT_NE(d, nullptr);
  return t;
}

DiskRecord Write(uint64_t off, const std::vector<uint8_t>& data) {
  DiskRecord r;
  r.kind = DiskRecordKind::kWrite;
  r.offset = off;
  r.length = data.size();
  r.data = data;
  return r;
}

DiskRecord Zero(uint64_t off, uint64_t len) {
  DiskRecord r;
  r.kind = DiskRecordKind::kZero;
  r.offset = off;
  r.length = len;
  return r;
}

DiskRecord Flush() {
  DiskRecord r;
  r.kind = DiskRecordKind::kFlush;
  return r;
}

std::vector<uint8_t> ReadFile(const std::string& path, uint64_t off, size_t n) {
  std::vector<uint8_t> out(n, 0xee);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  if (fd >= 0) {
    EXPECT_EQ(::pread(fd, out.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
    ::close(fd);
  }
  return out;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

class XenDisksTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("xendisks"); }
  void TearDown() override { fs::remove_all(dir_); }

  XenDiskOptions Opts(size_t staging = size_t{64} << 20) { return XenDiskOptions{dir_, staging}; }
  std::string Image(const std::string& disk) const { return XenDiskSet::ImagePath(dir_, "g1--incoming", disk); }

  std::string dir_;
  const std::vector<DiskInfo> disks_ = {{1, 1 << 20, "xvdb"}, {2, 2 << 20, "xvdc"}};
};

TEST_F(XenDisksTest, WithoutADiskDirAPrimaryWithDisksIsRefusedNamingTheFlag) {
  XenDiskSet set(XenDiskOptions{"", 1 << 20});
  Status st = set.BeginSession("g1--incoming", disks_, false);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("--disk-dir"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("xvdb"), std::string::npos) << st.message();
  // A guest without disks needs none.
  EXPECT_TRUE(set.BeginSession("g1--incoming", {}, false).ok());
  EXPECT_FALSE(set.has_disks());
}

// A checkpoint without disks (a diskless session committed) is never given
// images it did not have: a session with disks waits until it is not the
// only checkpoint.
TEST_F(XenDisksTest, ADisklessCheckpointIsNotGivenNewDisks) {
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", {}, false).ok());
  ASSERT_TRUE(set.Commit(1).ok());
  Status st = set.BeginSession("g1--incoming", disks_, /*checkpoint=*/true);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("has no disks"), std::string::npos) << st.message();
  EXPECT_FALSE(set.has_disks());
  EXPECT_EQ(set.activation_refusal(), "");
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(XenDisksTest, RefusesBadNamesSizesAndRepeatsBeforeCreatingAnything) {
  XenDiskSet set(Opts());
  const std::vector<std::vector<DiskInfo>> bad = {
      {{1, 1 << 20, "../../etc/passwd"}},
      {{1, 1 << 20, "xvdb1"}},
      {{1, 1 << 20, "xvdb"}, {2, 1 << 20, "xvdb"}},  // one vdev twice
      {{1, 1 << 20, "xvdb"}, {1, 1 << 20, "xvdc"}},  // one id twice
      {{1, 1000, "xvdb"}},                           // not whole sectors
  };
  for (const auto& d : bad) {
    Status st = set.BeginSession("g1--incoming", d, false);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << d[0].name << ": " << st.ToString();
  }
  EXPECT_EQ(set.BeginSession("../g1", disks_, false).code(), Code::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(dir_)) << "a refused session created files";
}

TEST_F(XenDisksTest, FirstEpochWithoutACheckpointIsWrittenAsItArrives) {
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  EXPECT_TRUE(set.direct());
  ASSERT_EQ(set.images().size(), 2u);
  EXPECT_EQ(set.images()[0].path, dir_ + "/g1--incoming.xvdb.img");
  EXPECT_EQ(set.images()[0].devid, 51728u);
  EXPECT_EQ(FileSize(Image("xvdb")), 1u << 20);
  EXPECT_EQ(FileSize(Image("xvdc")), 2u << 20);
  const std::vector<uint8_t> a(8192, 0xa1);
  ASSERT_TRUE(set.OnDisk(1, 1, Write(4096, a)).ok());
  EXPECT_EQ(ReadFile(Image("xvdb"), 4096, a.size()), a) << "the direct first epoch is not in the image";
  EXPECT_EQ(set.staged_bytes(), 0u);
  // Until it commits, a guest must not run on images holding it.
  EXPECT_FALSE(set.activation_refusal().empty());
  ASSERT_TRUE(set.Commit(1).ok());
  EXPECT_EQ(set.activation_refusal(), "");
  // Later epochs are staged: nothing reaches the image before Commit.
  const std::vector<uint8_t> b(4096, 0xb2);
  ASSERT_TRUE(set.OnDisk(2, 1, Write(4096, b)).ok());
  EXPECT_EQ(ReadFile(Image("xvdb"), 4096, 4096), std::vector<uint8_t>(4096, 0xa1));
  EXPECT_GT(set.staged_bytes(), 4096u);
}

// Lineage claims (docs/DISK.md §7.2): a whole commit N writes the claim of
// the session's commit N-1; a restarted backup (a new set, no checkpoint)
// names it; a session of another lineage voids it before writing anything;
// a failed apply voids it too (tested with ENOSPC below).
TEST_F(XenDisksTest, ALineageClaimNamesTheCommitBeforeTheLastAndIsVoidedForAnotherLineage) {
  const uint64_t L = 0x1111, M = 0x2222;
  {
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
    EXPECT_TRUE(set.held().empty());
    const uint64_t lineages[] = {L, L};
    ASSERT_TRUE(set.SetSessionLineages(lineages).ok());
    for (uint64_t e = 1; e <= 3; ++e) {
      ASSERT_TRUE(set.OnDisk(e, 1, Write(4096 * e, std::vector<uint8_t>(4096, static_cast<uint8_t>(e)))).ok());
      set.StageLineage(1, L, 100 + e);
      set.StageLineage(2, L, 200 + e);
      ASSERT_TRUE(set.Commit(e).ok());
      if (e == 1) {
        EXPECT_TRUE(set.held().empty()) << "nothing is claimed by a session's first commit";
      }
    }
    // After commit 3 the claim names commit 2's tags.
    ASSERT_EQ(set.held().size(), 2u);
    EXPECT_EQ(set.held()[0], (protocol::DiskHeld{1, L, 102}));
    EXPECT_EQ(set.held()[1], (protocol::DiskHeld{2, L, 202}));
    // An epoch of a streaming copy changes no claim.
    set.StageLineage(1, L, 104);
    ASSERT_TRUE(set.Commit(4, /*whole=*/false).ok());
    EXPECT_EQ(set.held()[0].tag, 102u);
  }
  {
    // A restarted backup: the files say what the images hold.
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
    ASSERT_EQ(set.held().size(), 2u);
    EXPECT_EQ(set.held()[0], (protocol::DiskHeld{1, L, 102}));
    // The same lineage keeps it; another voids it at once, on disk.
    const uint64_t same_then_other[] = {L, M};
    ASSERT_TRUE(set.SetSessionLineages(same_then_other).ok());
    ASSERT_EQ(set.held().size(), 1u);
    EXPECT_EQ(set.held()[0].disk_id, 1u);
  }
  {
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
    ASSERT_EQ(set.held().size(), 1u) << "the voided claim stays void";
    // A claim file of another size, or damaged, is no claim.
    std::vector<uint8_t> bytes = ReadFile(XenDiskSet::ClaimPath(Image("xvdb")), 0, 56);
    bytes[20] ^= 1;
    int fd = ::open(XenDiskSet::ClaimPath(Image("xvdb")).c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), 56);
    ::close(fd);
  }
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  EXPECT_TRUE(set.held().empty());
}

// The claim belongs to its image and to no running guest: a deleted and
// recreated image, a resized one, an activated guest (VoidClaims) end it;
// a claim file that claims nothing valid is voided by the next session of
// any lineage, so it can never come back to life.
TEST_F(XenDisksTest, AClaimEndsWithItsImageAndWhenAGuestRunsOnIt) {
  const uint64_t L = 0x1111;
  const std::vector<DiskInfo> one = {{1, 1 << 20, "xvdb"}};
  auto claim = [&](XenDiskSet& set) {
    const uint64_t l[] = {L};
    ASSERT_TRUE(set.SetSessionLineages(l).ok());
    for (uint64_t e = 1; e <= 2; ++e) {
      set.StageLineage(1, L, 10 + e);
      ASSERT_TRUE(set.Commit(e).ok());
    }
    ASSERT_EQ(set.held().size(), 1u);
  };
  auto reopened_held = [&](size_t want) {
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", one, false).ok());
    EXPECT_EQ(set.held().size(), want);
  };
  {
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", one, false).ok());
    claim(set);
  }
  reopened_held(1);
  // Deleted (an operator freeing space): the new all-zero image is not it.
  fs::remove(Image("xvdb"));
  reopened_held(0);
  {
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", one, false).ok());
    claim(set);
  }
  // Resized behind our back.
  ASSERT_EQ(::truncate(Image("xvdb").c_str(), 512 << 10), 0);
  reopened_held(0);
  {
    // Of another size when found, so no claim; a session of lineage M then
    // writes it: the stale file is voided on disk first, never revived.
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", one, false).ok());
    const uint64_t m[] = {0x2222};
    ASSERT_TRUE(set.SetSessionLineages(m).ok());
    EXPECT_EQ(ReadFile(XenDiskSet::ClaimPath(Image("xvdb")), 0, 56), std::vector<uint8_t>(56, 0));
    claim(set);  // and L's again
  }
  {
    // An activated guest writes the images: no claim from then on.
    XenDiskSet set(Opts());
    ASSERT_TRUE(set.BeginSession("g1--incoming", one, false).ok());
    ASSERT_EQ(set.held().size(), 1u);
    ASSERT_TRUE(set.VoidClaims().ok());
    EXPECT_TRUE(set.held().empty());
  }
  reopened_held(0);
}

// A streaming copy (docs/DISK.md §7.1): its epochs before the disks are
// whole are no checkpoint, so they keep being written as they arrive (no
// staging bound: a copy epoch may carry the whole allowance) and the
// images stay refused; the first whole epoch makes them a checkpoint.
TEST_F(XenDisksTest, EpochsOfAStreamingCopyStayDirectUntilTheFirstWholeOne) {
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  const std::vector<uint8_t> a(8192, 0xa1), b(4096, 0xb2), c(4096, 0xc3);
  ASSERT_TRUE(set.OnDisk(1, 1, Write(0, a)).ok());
  ASSERT_TRUE(set.Commit(1, /*whole=*/false).ok());
  EXPECT_FALSE(set.activation_refusal().empty()) << "a partial copy is no checkpoint";
  ASSERT_TRUE(set.OnDisk(2, 1, Write(8192, b)).ok());
  EXPECT_EQ(ReadFile(Image("xvdb"), 8192, 4096), b) << "a later epoch of the copy is not written as it arrives";
  EXPECT_EQ(set.staged_bytes(), 0u);
  ASSERT_TRUE(set.Commit(2, /*whole=*/false).ok());
  EXPECT_FALSE(set.activation_refusal().empty());
  ASSERT_TRUE(set.OnDisk(3, 1, Write(12288, c)).ok());
  ASSERT_TRUE(set.Commit(3).ok());  // whole
  EXPECT_EQ(set.activation_refusal(), "");
  // From here on, staged as usual.
  ASSERT_TRUE(set.OnDisk(4, 1, Write(0, c)).ok());
  EXPECT_EQ(ReadFile(Image("xvdb"), 0, 4096), std::vector<uint8_t>(4096, 0xa1));
  EXPECT_GT(set.staged_bytes(), 0u);
}

TEST_F(XenDisksTest, CommitAppliesInStreamOrderAndDiscardDropsTheEpoch) {
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  ASSERT_TRUE(set.Commit(1).ok());
  const std::vector<uint8_t> x(8192, 0x11), y(4096, 0x22);
  ASSERT_TRUE(set.OnDisk(2, 2, Write(0, x)).ok());
  ASSERT_TRUE(set.OnDisk(2, 2, Zero(0, 4096)).ok());
  ASSERT_TRUE(set.OnDisk(2, 2, Flush()).ok());
  ASSERT_TRUE(set.OnDisk(2, 2, Write(4096, y)).ok());
  ASSERT_TRUE(set.Commit(2).ok());
  EXPECT_EQ(ReadFile(Image("xvdc"), 0, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(ReadFile(Image("xvdc"), 4096, 4096), y);
  // A discarded epoch never reaches the image, nor a later commit.
  ASSERT_TRUE(set.OnDisk(3, 2, Write(0, x)).ok());
  set.Discard();
  ASSERT_TRUE(set.Commit(3).ok());
  EXPECT_EQ(ReadFile(Image("xvdc"), 0, 4096), std::vector<uint8_t>(4096, 0));
  // Records outside a disk, or for an unknown one, are refused.
  EXPECT_EQ(set.OnDisk(4, 1, Write((1 << 20) - 4096, x)).code(), Code::kCorruption);
  EXPECT_EQ(set.OnDisk(4, 9, Write(0, y)).code(), Code::kCorruption);
}

TEST_F(XenDisksTest, MemoryFirstThenDisks) {
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  ASSERT_TRUE(set.Commit(1).ok());
  const std::vector<uint8_t> x(4096, 0x33);
  ASSERT_TRUE(set.OnDisk(2, 1, Write(0, x)).ok());
  // A memory commit that fails: the images stay the previous checkpoint's
  // and the epoch's records are gone.
  bool image_untouched_during_memory = false;
  Status st = CommitMemoryThenDisks(
      2,
      [&] {
        image_untouched_during_memory = ReadFile(Image("xvdb"), 0, 4096) == std::vector<uint8_t>(4096, 0);
        return Status::IoError("xc_domain_restore ended");
      },
      &set);
  EXPECT_EQ(st.code(), Code::kIoError);
  EXPECT_TRUE(image_untouched_during_memory);
  EXPECT_EQ(ReadFile(Image("xvdb"), 0, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(set.staged_bytes(), 0u);
  EXPECT_EQ(set.activation_refusal(), "");
  // Memory taken: only then the disks.
  ASSERT_TRUE(set.OnDisk(3, 1, Write(0, x)).ok());
  image_untouched_during_memory = false;
  st = CommitMemoryThenDisks(
      3,
      [&] {
        image_untouched_during_memory = ReadFile(Image("xvdb"), 0, 4096) == std::vector<uint8_t>(4096, 0);
        return Status::Ok();
      },
      &set);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(image_untouched_during_memory) << "disk records were applied before memory was taken";
  EXPECT_EQ(ReadFile(Image("xvdb"), 0, 4096), x);
}

TEST_F(XenDisksTest, StagingIsBounded) {
  XenDiskSet set(Opts(1 << 20));
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  ASSERT_TRUE(set.Commit(1).ok());
  const std::vector<uint8_t> big(600 << 10, 0x44);
  ASSERT_TRUE(set.OnDisk(2, 2, Write(0, big)).ok());
  Status st = set.OnDisk(2, 2, Write(1 << 20, big));
  EXPECT_EQ(st.code(), Code::kOutOfRange);
  EXPECT_NE(st.message().find("--max-disk-staging"), std::string::npos) << st.message();
  EXPECT_LE(set.staged_bytes(), size_t{1} << 20);
}

// With --max-disk-spill the same epoch spills into the disk directory and is
// applied at the commit, after memory, in stream order.
TEST_F(XenDisksTest, AnEpochBeyondMemorySpillsIntoTheDiskDirectory) {
  XenDiskOptions o = Opts(1 << 20);
  o.max_spill_bytes = uint64_t{8} << 20;
  XenDiskSet set(o);
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  ASSERT_TRUE(set.Commit(1).ok());
  const std::vector<uint8_t> a(600 << 10, 0x44), b(600 << 10, 0x45);
  ASSERT_TRUE(set.OnDisk(2, 2, Write(0, a)).ok());
  ASSERT_TRUE(set.OnDisk(2, 2, Write(1 << 20, b)).ok());
  ASSERT_TRUE(set.OnDisk(2, 2, Write(300 << 10, b)).ok());  // overlaps a: order matters
  EXPECT_GT(set.spilled_bytes(), 0u);
  EXPECT_EQ(ReadFile(Image("xvdc"), 0, 4096), std::vector<uint8_t>(4096, 0)) << "applied before the commit";
  ASSERT_TRUE(CommitMemoryThenDisks(2, [] { return Status::Ok(); }, &set).ok());
  EXPECT_EQ(set.spilled_bytes(), 0u);
  EXPECT_EQ(ReadFile(Image("xvdc"), 0, 300 << 10), std::vector<uint8_t>(300 << 10, 0x44));
  EXPECT_EQ(ReadFile(Image("xvdc"), 300 << 10, 600 << 10), b);
  EXPECT_EQ(ReadFile(Image("xvdc"), 1 << 20, 600 << 10), b);
  // Beyond both bounds: refused, naming both flags.
  const std::vector<uint8_t> mb(1 << 20, 0x46);
  Status st;
  for (int i = 0; i < 12 && st.ok(); ++i) st = set.OnDisk(3, 2, Write(0, mb));
  EXPECT_EQ(st.code(), Code::kOutOfRange) << st.ToString();
  EXPECT_NE(st.message().find("--max-disk-spill"), std::string::npos) << st.message();
  set.Discard();
  EXPECT_EQ(set.spilled_bytes(), 0u);
}

// A resync while a held replica exists: the images are its disks until the
// new session's first commit, so its first epoch (a full copy) is staged.
TEST_F(XenDisksTest, HeldReplicasImagesAreKeptUntilTheNewSessionCommits) {
  XenDiskSet set(Opts());
  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, false).ok());
  const std::vector<uint8_t> old_data(4096, 0x55), new_data(4096, 0x66);
  ASSERT_TRUE(set.OnDisk(1, 1, Write(0, old_data)).ok());
  ASSERT_TRUE(set.Commit(1).ok());

  // Other disks than the checkpoint's: refused, images untouched.
  const std::vector<DiskInfo> other = {{1, 4 << 20, "xvdb"}};
  Status st = set.BeginSession("g1--incoming", other, /*checkpoint=*/true);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("only checkpoint"), std::string::npos) << st.message();
  EXPECT_EQ(FileSize(Image("xvdb")), 1u << 20);
  EXPECT_EQ(set.BeginSession("g1--incoming", {}, true).code(), Code::kInvalidArgument);

  ASSERT_TRUE(set.BeginSession("g1--incoming", disks_, /*checkpoint=*/true).ok());
  EXPECT_FALSE(set.direct());
  ASSERT_TRUE(set.OnDisk(7, 1, Write(0, new_data)).ok());
  EXPECT_EQ(ReadFile(Image("xvdb"), 0, 4096), old_data) << "the held replica's disk changed before the new commit";
  EXPECT_EQ(set.activation_refusal(), "");
  set.Discard();  // the primary died mid-sync: failover to the held replica
  EXPECT_EQ(ReadFile(Image("xvdb"), 0, 4096), old_data);
  EXPECT_EQ(set.activation_refusal(), "");
  ASSERT_TRUE(set.OnDisk(7, 1, Write(0, new_data)).ok());
  ASSERT_TRUE(set.Commit(7).ok());
  EXPECT_EQ(ReadFile(Image("xvdb"), 0, 4096), new_data);
}

std::string Image2(const std::string& dir) { return XenDiskSet::ImagePath(dir, "g1--incoming", "xvdb"); }

std::string MountSmallTmpfs(uint64_t bytes) {
  std::string dir = MakeTempDir("xendisks-enospc");
  const std::string opts = "size=" + std::to_string(bytes);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
    fs::remove_all(dir);
    return "";
  }
  return dir;
}

// ENOSPC: found by the reservation before memory N is taken, the commit
// fails and nothing is lost; while applying epoch N after memory N was
// taken, memory and disk differ, so Commit fails (no ACK) and activation is
// refused with the reason, until a new session's first epoch (a full copy)
// commits whole.
TEST(XenDisksEnospcTest, AFailedApplyRefusesActivationUntilAFullCopyCommits) {
  const std::string dir = MountSmallTmpfs(2 << 20);
  if (dir.empty()) GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "): needs root";
  {
    XenDiskSet set(XenDiskOptions{dir, size_t{64} << 20});
    const std::vector<DiskInfo> disks = {{1, 8 << 20, "xvdb"}};
    ASSERT_TRUE(set.BeginSession("g1--incoming", disks, false).ok());
    const uint64_t lineage[] = {0x77};
    ASSERT_TRUE(set.SetSessionLineages(lineage).ok());
    const std::vector<uint8_t> small(4096, 0x77);
    ASSERT_TRUE(set.OnDisk(1, 1, Write(0, small)).ok());
    set.StageLineage(1, 0x77, 5);
    ASSERT_TRUE(set.Commit(1).ok());
    set.StageLineage(1, 0x77, 6);
    ASSERT_TRUE(set.Commit(1).ok());
    ASSERT_EQ(set.held().size(), 1u);

    const std::vector<uint8_t> mb(1 << 20, 0x88);  // 3 of them: more than the tmpfs holds
    auto stage_big = [&] {
      for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(set.OnDisk(2, 1, Write(i << 20, mb)).ok());
    };
    // Through CommitMemoryThenDisks the full disk is found before memory 2
    // is taken: the commit fails, the images still are epoch 1's, and the
    // held replica stays resumable (ReserveForCommit).
    stage_big();
    bool memory_taken = false;
    Status st = CommitMemoryThenDisks(2, [&] { memory_taken = true; return Status::Ok(); }, &set);
    ASSERT_EQ(st.code(), Code::kStorage) << st.ToString();
    EXPECT_FALSE(memory_taken) << "memory 2 was taken although its disk writes cannot fit";
    EXPECT_NE(st.message().find("still hold the previous checkpoint"), std::string::npos) << st.message();
    EXPECT_EQ(set.activation_refusal(), "");
    EXPECT_EQ(set.held().size(), 1u);
    EXPECT_EQ(ReadFile(Image2(dir), 0, 4096), small);
    EXPECT_EQ(ReadFile(Image2(dir), 1 << 20, 4096), std::vector<uint8_t>(4096, 0));

    // An apply that fails anyway after memory 2 was taken (here: Commit
    // called directly, past the reservation).
    stage_big();
    st = set.Commit(2);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), Code::kStorage);
    EXPECT_NE(st.message().find("disk xvdb failed to apply epoch 2"), std::string::npos) << st.message();
    const std::string why = set.activation_refusal();
    EXPECT_NE(why.find("disk xvdb failed to apply epoch 2"), std::string::npos) << why;
    EXPECT_NE(why.find("will not resume a guest whose disk and memory differ"), std::string::npos) << why;
    EXPECT_NE(why.find("No space left"), std::string::npos) << why;
    // When in doubt, no claim: a restarted backup would get the disk whole.
    EXPECT_TRUE(set.held().empty());
    EXPECT_EQ(ReadFile(XenDiskSet::ClaimPath(set.images()[0].path), 0, 56), std::vector<uint8_t>(56, 0))
        << "the claim file was not voided";

    // A later epoch of the same session does not repair it.
    ASSERT_TRUE(set.OnDisk(3, 1, Write(0, small)).ok());
    ASSERT_TRUE(set.Commit(3).ok());
    EXPECT_FALSE(set.activation_refusal().empty());

    // A new session (held replica: a checkpoint exists, but its images are
    // broken, so its first epoch is written directly): its full copy, zero
    // ranges punching the space back, commits and the images are whole.
    ASSERT_TRUE(set.BeginSession("g1--incoming", disks, /*checkpoint=*/true).ok());
    EXPECT_TRUE(set.direct());
    ASSERT_TRUE(set.OnDisk(1, 1, Write(0, small)).ok());
    ASSERT_TRUE(set.OnDisk(1, 1, Zero(4096, (8 << 20) - 4096)).ok());
    ASSERT_TRUE(set.Commit(1).ok());
    EXPECT_EQ(set.activation_refusal(), "");
  }
  ::umount2(dir.c_str(), MNT_DETACH);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace romulus::xen

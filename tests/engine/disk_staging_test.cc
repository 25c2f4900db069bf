// restore::DiskStaging (docs/DISK.md §6.2): an epoch's disk records in
// memory up to its bound, the rest in an unlinked spill file, read back in
// stream order; refused beyond both bounds and on a full disk with nothing
// of the refused entry counted; and the file walk of a disk section
// (journal, spill) refusing damaged sections without sizing an allocation.
#include "restore/disk_staging.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace romulus::restore {
namespace {

namespace fs = std::filesystem;

std::string MakeTempDir() {
  std::string dir = (fs::temp_directory_path() / "disk_staging.XXXXXX").string();
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

struct Rec {
  uint32_t disk_id;
  uint8_t kind;
  uint64_t offset, length;
  std::vector<uint8_t> data;
};

DiskEntry EntryOf(const Rec& r) {
  DiskEntry e;
  e.disk_id = r.disk_id;
  e.kind = r.kind;
  e.offset = r.offset;
  e.length = r.length;
  e.data = r.kind == kDiskEntryWrite ? r.data.data() : nullptr;
  return e;
}

// Writes of 1 byte .. 64 KiB, zero ranges and flushes, deterministic.
std::vector<Rec> MakeRecords(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Rec> out;
  for (size_t i = 0; i < n; ++i) {
    Rec r{static_cast<uint32_t>(1 + rng() % 3), kDiskEntryWrite, (rng() % 4096) * 512, 0, {}};
    const unsigned k = rng() % 8;
    if (k == 0) {
      r.kind = kDiskEntryFlush;
      r.offset = 0;
    } else if (k == 1) {
      r.kind = kDiskEntryZero;
      r.length = (1 + rng() % 64) * 4096;
    } else {
      r.length = 1 + rng() % (64 << 10);
      r.data.resize(r.length);
      for (auto& b : r.data) b = static_cast<uint8_t>(rng());
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<uint8_t> Encoding(const std::vector<Rec>& recs) {
  std::vector<uint8_t> out;
  for (const Rec& r : recs) {
    uint8_t head[kDiskEntryHead];
    EncodeDiskEntryHead(EntryOf(r), head);
    out.insert(out.end(), head, head + kDiskEntryHead);
    out.insert(out.end(), r.data.begin(), r.data.end());
  }
  return out;
}

void ExpectStagedAre(DiskStaging& st, const std::vector<Rec>& want) {
  size_t i = 0;
  Status s = st.ForEachEntry([&](const DiskEntry& e) -> Status {
    EXPECT_LT(i, want.size());
    if (i >= want.size()) return Status::Ok();
    const Rec& r = want[i++];
    EXPECT_EQ(e.disk_id, r.disk_id) << "entry " << i - 1;
    EXPECT_EQ(e.kind, r.kind) << "entry " << i - 1;
    EXPECT_EQ(e.offset, r.offset) << "entry " << i - 1;
    EXPECT_EQ(e.length, r.length) << "entry " << i - 1;
    if (r.kind == kDiskEntryWrite) {
      EXPECT_EQ(std::memcmp(e.data, r.data.data(), r.length), 0) << "entry " << i - 1 << "'s data";
    }
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(i, want.size());
  std::vector<uint8_t> pieces;
  s = st.ForEachPiece([&](std::span<const uint8_t> p) {
    EXPECT_LE(p.size(), kDiskSectionWindow);
    pieces.insert(pieces.end(), p.begin(), p.end());
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(pieces == Encoding(want)) << "the pieces are not the section encoding";
  EXPECT_EQ(st.size(), pieces.size());
}

TEST(DiskStagingTest, AnEpochBeyondMemoryIsSpilledAndReadBackInStreamOrder) {
  const std::string dir = MakeTempDir();
  DiskStaging st(256 << 10, DiskSpill{dir, uint64_t{64} << 20});
  for (int epoch = 1; epoch <= 3; ++epoch) {
    SCOPED_TRACE("epoch " + std::to_string(epoch));
    // Epoch 2 fits in memory; 1 and 3 spill (3 after a Clear that reused the file).
    const std::vector<Rec> recs = MakeRecords(epoch == 2 ? 6 : 120, static_cast<uint32_t>(epoch));
    uint64_t writes = 0;
    for (const Rec& r : recs) {
      ASSERT_TRUE(st.Stage(epoch, EntryOf(r)).ok());
      if (r.kind == kDiskEntryWrite) writes += r.length;
    }
    EXPECT_EQ(st.write_bytes(), writes);
    if (epoch == 2) {
      ASSERT_LT(Encoding(recs).size(), size_t{256} << 10);
      EXPECT_EQ(st.spilled_bytes(), 0u);
    } else {
      EXPECT_GT(st.spilled_bytes(), 0u);
      EXPECT_LE(st.size() - st.spilled_bytes(), size_t{256} << 10) << "memory beyond its bound";
    }
    ExpectStagedAre(st, recs);
    st.Clear();
    EXPECT_TRUE(st.empty());
    EXPECT_EQ(st.spilled_bytes(), 0u);
    EXPECT_EQ(st.write_bytes(), 0u);
  }
  EXPECT_EQ(st.spilled_epochs(), 2u);
  // The spill file has no name: nothing is left in the directory.
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

TEST(DiskStagingTest, AnEpochBeyondBothBoundsIsRefusedWithNothingOfTheEntryStaged) {
  const std::string dir = MakeTempDir();
  DiskStaging st(8192, DiskSpill{dir, 100000});
  const std::vector<uint8_t> data(4000, 0x3c);
  std::vector<Rec> staged;
  Status s;
  for (int i = 0; i < 100 && s.ok(); ++i) {
    Rec r{1, kDiskEntryWrite, uint64_t(i) * 4096, data.size(), data};
    s = st.Stage(7, EntryOf(r));
    if (s.ok()) staged.push_back(r);
  }
  ASSERT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  EXPECT_NE(s.message().find("epoch 7"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--max-disk-spill"), std::string::npos) << s.message();
  EXPECT_LE(st.spilled_bytes(), 100000u);
  EXPECT_GT(st.spilled_bytes(), 100000u - 4024);
  ExpectStagedAre(st, staged);
  fs::remove_all(dir);
}

TEST(DiskStagingTest, WithoutASpillDirectoryAnEpochBeyondMemoryIsRefused) {
  DiskStaging st(8192);
  const std::vector<uint8_t> data(5000, 1);
  Rec r{1, kDiskEntryWrite, 0, data.size(), data};
  ASSERT_TRUE(st.Stage(1, EntryOf(r)).ok());
  Status s = st.Stage(1, EntryOf(r));
  ASSERT_EQ(s.code(), Code::kOutOfRange);
  EXPECT_NE(s.message().find("no spilling"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--max-disk-staging"), std::string::npos) << s.message();
  EXPECT_EQ(st.size(), kDiskEntryHead + data.size());
}

TEST(DiskStagingTest, ASpillDirectoryThatCannotHoldAFileIsAStorageError) {
  DiskStaging st(4096, DiskSpill{"/nonexistent/romulus-spill", 1 << 20});
  const std::vector<uint8_t> data(5000, 1);
  Rec r{1, kDiskEntryWrite, 0, data.size(), data};
  Status s = st.Stage(1, EntryOf(r));
  ASSERT_EQ(s.code(), Code::kStorage) << s.ToString();
  EXPECT_NE(s.message().find("/nonexistent/romulus-spill"), std::string::npos) << s.message();
  EXPECT_TRUE(st.empty());
}

// The backup's disk fills up while an epoch spills: a Storage error, the
// entries before it still read back exactly, and after Clear the space is
// free again (the next epoch spills as much).
TEST(DiskStagingTest, AFullDiskWhileSpillingIsAStorageErrorAndKeepsWhatWasStaged) {
  std::string dir = MakeTempDir();
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=262144") != 0) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno) << "): needs root";
  }
  DiskStaging st(4096, DiskSpill{dir, uint64_t{1} << 30});
  const std::vector<uint8_t> data(30000, 0x77);
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::vector<Rec> staged;
    Status s;
    for (int i = 0; i < 100 && s.ok(); ++i) {
      Rec r{2, kDiskEntryWrite, uint64_t(i) << 16, data.size(), data};
      s = st.Stage(3, EntryOf(r));
      if (s.ok()) staged.push_back(r);
    }
    ASSERT_EQ(s.code(), Code::kStorage) << s.ToString();
    EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.message();
    ASSERT_GE(staged.size(), 5u);
    ExpectStagedAre(st, staged);
    st.Clear();
  }
  ::umount2(dir.c_str(), MNT_DETACH);
  fs::remove_all(dir);
}

// ForEachDiskEntryInFile over a section in the middle of a file, whole and
// damaged in each way a journal or spill file could be.
TEST(DiskStagingTest, TheFileWalkReadsASectionAndRefusesDamagedOnes) {
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/section";
  std::vector<Rec> recs = MakeRecords(200, 9);
  // Entries of exactly the window (a largest write) among small ones, so
  // the window refills at every alignment and holds a whole-window entry.
  for (size_t at : {size_t{17}, size_t{18}, size_t{120}}) {
    Rec big{2, kDiskEntryWrite, 0, protocol::kMaxDiskWriteChunk, std::vector<uint8_t>(protocol::kMaxDiskWriteChunk)};
    for (size_t i = 0; i < big.data.size(); ++i) big.data[i] = static_cast<uint8_t>(i * 7 + at);
    recs.insert(recs.begin() + static_cast<long>(at), std::move(big));
  }
  std::vector<uint8_t> sec = Encoding(recs);
  auto walk = [&](const std::vector<uint8_t>& section, size_t* count) -> Status {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    EXPECT_GE(fd, 0);
    std::vector<uint8_t> file(777, 0xaa);
    file.insert(file.end(), section.begin(), section.end());
    file.resize(file.size() + 100, 0xbb);
    EXPECT_EQ(::pwrite(fd, file.data(), file.size(), 0), static_cast<ssize_t>(file.size()));
    std::vector<uint8_t> window;
    *count = 0;
    Status s = ForEachDiskEntryInFile(fd, 777, section.size(), &window, [&](const DiskEntry& e) {
      if (*count < recs.size()) {
        EXPECT_EQ(e.offset, recs[*count].offset);
        EXPECT_EQ(e.length, recs[*count].length);
        if (e.kind == kDiskEntryWrite) {
          EXPECT_EQ(std::memcmp(e.data, recs[*count].data.data(), e.length), 0);
        }
      }
      ++*count;
      return Status::Ok();
    }, "reading the test section");
    EXPECT_LE(window.size(), kDiskSectionWindow) << "the window grew beyond one largest entry";
    ::close(fd);
    return s;
  };
  size_t n = 0;
  ASSERT_TRUE(walk(sec, &n).ok());
  EXPECT_EQ(n, recs.size());

  // Truncated inside a head, inside a write's data.
  std::vector<uint8_t> cut(sec.begin(), sec.begin() + kDiskEntryHead / 2);
  EXPECT_EQ(walk(cut, &n).code(), Code::kCorruption);
  EXPECT_EQ(n, 0u);
  size_t first_write = 0;
  while (recs[first_write].kind != kDiskEntryWrite) ++first_write;
  size_t at = Encoding({recs.begin(), recs.begin() + static_cast<long>(first_write)}).size();
  cut.assign(sec.begin(), sec.begin() + static_cast<long>(at + kDiskEntryHead + 1));
  EXPECT_EQ(walk(cut, &n).code(), Code::kCorruption);
  EXPECT_EQ(n, first_write);
  // A write that claims 2^60 bytes: refused before any allocation.
  std::vector<uint8_t> huge = sec;
  for (int i = 0; i < 8; ++i) huge[at + 16 + i] = i == 7 ? 0x10 : 0;
  EXPECT_EQ(walk(huge, &n).code(), Code::kCorruption);
  EXPECT_EQ(n, first_write);
  // A write one byte over the largest a record can carry, data present:
  // both walks refuse it (a section they disagree on could commit and then
  // not replay), and so does Stage.
  {
    Rec over{1, kDiskEntryWrite, 0, protocol::kMaxDiskWriteChunk + 1,
             std::vector<uint8_t>(protocol::kMaxDiskWriteChunk + 1, 1)};
    const std::vector<uint8_t> one = Encoding({over});
    EXPECT_EQ(walk(one, &n).code(), Code::kCorruption);
    EXPECT_EQ(ForEachDiskEntry(one, [](const DiskEntry&) { return Status::Ok(); }).code(), Code::kCorruption);
    DiskStaging st(8 << 20);
    EXPECT_EQ(st.Stage(1, EntryOf(over)).code(), Code::kInvalidArgument);
    EXPECT_TRUE(st.empty());
  }
  // An unknown kind, a flush with a range.
  std::vector<uint8_t> kind = sec;
  kind[at + 4] = 9;
  EXPECT_EQ(walk(kind, &n).code(), Code::kCorruption);
  DiskEntry flush;
  flush.kind = kDiskEntryFlush;
  flush.offset = 4096;
  std::vector<uint8_t> bad(kDiskEntryHead);
  EncodeDiskEntryHead(flush, bad.data());
  EXPECT_EQ(walk(bad, &n).code(), Code::kCorruption);
  // A read that fails (the section claims more than the file holds).
  {
    int fd = ::open(path.c_str(), O_RDONLY);
    std::vector<uint8_t> window;
    Status s = ForEachDiskEntryInFile(fd, 1 << 30, 4096, &window, [](const DiskEntry&) { return Status::Ok(); },
                                      "reading the test section");
    ::close(fd);
    EXPECT_EQ(s.code(), Code::kStorage) << s.ToString();
    EXPECT_NE(s.message().find("reading the test section"), std::string::npos) << s.message();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace romulus::restore

// BackingStore against a reference model: every read must equal what a
// plain byte vector says, for aligned and unaligned requests, through
// O_DIRECT and buffered I/O, and the file on disk must agree.
#include "disk/backing_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cerrno>

#include "tests/disk/disk_test_util.h"

namespace romulus::disk {
namespace {

using testing::Pattern;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

std::unique_ptr<BackingStore> OpenOrDie(const std::string& path, BackingStoreOptions o) {
  auto s = BackingStore::Open(path, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

void WriteThrough(BackingStore* s, uint64_t off, const std::vector<uint8_t>& data, bool fua) {
  auto buf = s->WriteBuffer(off, static_cast<uint32_t>(data.size()));
  ASSERT_EQ(buf.size(), data.size());
  std::copy(data.begin(), data.end(), buf.begin());
  Status st = s->Write(off, static_cast<uint32_t>(data.size()), fua);
  ASSERT_TRUE(st.ok()) << st.ToString();
}

class BackingStoreModes : public ::testing::TestWithParam<DirectIo> {};

TEST_P(BackingStoreModes, UnalignedWritesKeepTheirNeighbours) {
  TempDir dir;
  const std::string path = dir.path() + "/disk.img";
  std::vector<uint8_t> model = Pattern(1 << 20, 1);
  WriteFile(path, model);
  BackingStoreOptions o;
  o.direct = GetParam();
  o.max_request = 256 * 1024;
  auto s = OpenOrDie(path, o);
  ASSERT_TRUE(s);
  if (GetParam() == DirectIo::kOff) {
    EXPECT_FALSE(s->direct());
    EXPECT_EQ(s->alignment(), 1u);
  }
  EXPECT_EQ(s->size(), model.size());
  EXPECT_FALSE(s->io_mode().empty());

  struct W { uint64_t off; size_t len; } writes[] = {
      {0, 4096}, {1, 1}, {4095, 2}, {4096 * 3 + 17, 9000}, {100, 10}, {8191, 4097},
      {(1 << 20) - 1, 1}, {(1 << 20) - 5000, 5000}, {12345, 256 * 1024}, {0, 0}};
  uint32_t seed = 10;
  for (const W& w : writes) {
    auto data = Pattern(w.len, seed++);
    WriteThrough(s.get(), w.off, data, seed % 2 == 0);
    std::copy(data.begin(), data.end(), model.begin() + w.off);
  }
  // Reads of every shape agree with the model.
  struct R { uint64_t off; uint32_t len; } reads[] = {
      {0, 1 << 18}, {1, 100}, {4095, 4098}, {(1 << 20) - 3, 3}, {777777, 77777}, {1 << 20, 0}};
  for (const R& r : reads) {
    auto got = s->Read(r.off, r.len);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->size(), r.len);
    EXPECT_TRUE(std::equal(got->begin(), got->end(), model.begin() + r.off)) << r.off << "+" << r.len;
  }
  ASSERT_TRUE(s->Flush().ok());
  s.reset();
  EXPECT_EQ(ReadFile(path), model);
}

TEST_P(BackingStoreModes, ZeroesAndTrimReadBackAsZeroes) {
  TempDir dir;
  const std::string path = dir.path() + "/disk.img";
  std::vector<uint8_t> model = Pattern(1 << 20, 2);
  WriteFile(path, model);
  BackingStoreOptions o;
  o.direct = GetParam();
  o.max_request = 64 * 1024;
  auto s = OpenOrDie(path, o);
  ASSERT_TRUE(s);
  // Zeroing larger than max_request (the written-zeros fallback must loop),
  // unaligned, with and without holes.
  ASSERT_TRUE(s->WriteZeroes(1000, 200000, /*may_punch=*/false, /*fua=*/true).ok());
  std::fill(model.begin() + 1000, model.begin() + 201000, 0);
  ASSERT_TRUE(s->WriteZeroes(300000, 5, /*may_punch=*/true, false).ok());
  std::fill(model.begin() + 300000, model.begin() + 300005, 0);
  auto t = s->Trim(512 * 1024, 128 * 1024, false);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  // ext4 and tmpfs punch holes; a store that cannot keeps its data and says so.
  if (*t) std::fill(model.begin() + 512 * 1024, model.begin() + 640 * 1024, 0);
  auto all = s->Read(0, 64 * 1024);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(std::equal(all->begin(), all->end(), model.begin()));
  s.reset();
  EXPECT_EQ(ReadFile(path), model);
}

INSTANTIATE_TEST_SUITE_P(, BackingStoreModes, ::testing::Values(DirectIo::kAuto, DirectIo::kOff),
                         [](const auto& info) { return info.param == DirectIo::kAuto ? "Auto" : "Buffered"; });

TEST(BackingStore, DirectWhenTheFileSystemHasIt) {
  TempDir dir;
  const std::string path = dir.path() + "/disk.img";
  WriteFile(path, Pattern(64 * 1024, 3));
  BackingStoreOptions o;
  o.direct = DirectIo::kRequire;
  auto s = BackingStore::Open(path, o);
  if (!s.ok() && s.status().code() == Code::kUnsupported) {
    GTEST_SKIP() << "no O_DIRECT here: " << s.status().ToString();
  }
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE((*s)->direct());
  EXPECT_EQ((*s)->alignment(), 4096u);
  EXPECT_EQ((*s)->io_mode(), "O_DIRECT, 4096-byte blocks");
}

TEST(BackingStore, OddSizeFallsBackToBufferedAndSaysWhy) {
  TempDir dir;
  const std::string path = dir.path() + "/odd.img";
  auto model = Pattern(10000, 4);  // not a multiple of 4096
  WriteFile(path, model);
  auto s = OpenOrDie(path, BackingStoreOptions{});
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->direct());
  EXPECT_NE(s->io_mode().find("not a multiple of 4096"), std::string::npos) << s->io_mode();
  // The last partial block is writable without growing the file.
  auto tail = Pattern(10, 5);
  WriteThrough(s.get(), 9990, tail, false);
  std::copy(tail.begin(), tail.end(), model.begin() + 9990);
  s.reset();
  EXPECT_EQ(ReadFile(path), model);
  // ... and O_DIRECT, when required, is refused with the reason.
  BackingStoreOptions req;
  req.direct = DirectIo::kRequire;
  auto r = BackingStore::Open(path, req);
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
}

TEST(BackingStore, BoundsAreCheckedBeforeAnyIo) {
  TempDir dir;
  const std::string path = dir.path() + "/disk.img";
  auto model = Pattern(1 << 16, 6);
  WriteFile(path, model);
  BackingStoreOptions o;
  o.max_request = 8192;
  auto s = OpenOrDie(path, o);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->Read(0, 8193).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Read(1 << 16, 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Read(UINT64_MAX, 2).status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(s->WriteBuffer((1 << 16) - 1, 2).empty());
  EXPECT_TRUE(s->WriteBuffer(0, 8193).empty());
  // A Write without its WriteBuffer is refused, not a write of stale bytes.
  EXPECT_EQ(s->Write(0, 10, false).code(), Code::kInternal);
  EXPECT_FALSE(s->WriteZeroes(1 << 16, 1, true, false).ok());
  EXPECT_EQ(s->last_errno(), ENOSPC);
  EXPECT_FALSE(s->Trim(UINT64_MAX, 1, false).ok());
  s.reset();
  EXPECT_EQ(ReadFile(path), model);
}

TEST(BackingStore, ReadOnlyRefusesWrites) {
  TempDir dir;
  const std::string path = dir.path() + "/disk.img";
  auto model = Pattern(1 << 16, 7);
  WriteFile(path, model);
  BackingStoreOptions o;
  o.read_only = true;
  auto s = OpenOrDie(path, o);
  ASSERT_TRUE(s);
  auto buf = s->WriteBuffer(0, 10);
  ASSERT_EQ(buf.size(), 10u);
  EXPECT_EQ(s->Write(0, 10, false).code(), Code::kStorage);
  EXPECT_EQ(s->last_errno(), EPERM);
  EXPECT_FALSE(s->WriteZeroes(0, 10, true, false).ok());
  EXPECT_FALSE(s->Trim(0, 10, false).ok());
  auto r = s->Read(0, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(std::equal(r->begin(), r->end(), model.begin()));
}

TEST(BackingStore, RefusesWhatIsNotADisk) {
  TempDir dir;
  auto d = BackingStore::Open(dir.path(), {});  // a directory cannot be opened for writing
  EXPECT_EQ(d.status().code(), Code::kStorage);
  EXPECT_NE(d.status().message().find("Is a directory"), std::string::npos) << d.status().message();
  BackingStoreOptions ro;
  ro.read_only = true;  // ... and read-only it is not a disk either
  EXPECT_EQ(BackingStore::Open(dir.path(), ro).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(BackingStore::Open("/dev/null", {}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(BackingStore::Open(dir.path() + "/missing", {}).status().code(), Code::kStorage);
  BackingStoreOptions o;
  o.max_request = 0;
  EXPECT_EQ(BackingStore::Open(dir.path() + "/missing", o).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace romulus::disk

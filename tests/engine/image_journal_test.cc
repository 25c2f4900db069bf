// Crash-atomic commit of the ImageSink (docs/IMAGE-FORMAT.md): kill-points at
// every commit step, ENOSPC on a small tmpfs, the image lock, sparse images,
// and the read-only ImageView that `romulus verify` uses.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <vector>

#include "common/digest.h"
#include "sim/image_sink.h"
#include "sim/image_view.h"

namespace romulus::sim {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 64;
const std::string kIdentity = "sim:size=256K,workload=sparse";

std::string MakeTempDir(const char* name) {
  std::string dir = (fs::temp_directory_path() / (std::string(name) + ".XXXXXX")).string();
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

// What each epoch of the model guest holds: memory and state after it.
struct Epoch {
  std::vector<uint8_t> memory;
  std::vector<uint8_t> state;
  uint64_t digest = 0;
};

uint64_t DigestOf(const std::vector<uint8_t>& mem) {
  uint64_t sum = 0;
  for (uint64_t pfn = 0; pfn < mem.size() / kPage; ++pfn) sum += PageHash(pfn, mem.data() + pfn * kPage);
  return sum;
}

// Epoch 1 fills every third page; each later epoch rewrites some pages,
// zeroes some (hole punches) and fills some holes (block reservations).
std::vector<Epoch> BuildModel(uint64_t epochs) {
  std::vector<Epoch> m(epochs + 1);
  m[0].memory.assign(kPages * kPage, 0);
  std::mt19937_64 rng(11);
  for (uint64_t e = 1; e <= epochs; ++e) {
    m[e].memory = m[e - 1].memory;
    const uint64_t n = e == 1 ? kPages : 12;
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t pfn = e == 1 ? i : rng() % kPages;
      uint8_t* p = m[e].memory.data() + pfn * kPage;
      if (e == 1 ? pfn % 3 != 0 : i % 4 == 0) {
        std::memset(p, 0, kPage);
      } else {
        std::memset(p, static_cast<int>(e * 7 + i), kPage);
        std::memcpy(p, &e, 8);
      }
    }
    m[e].state = {static_cast<uint8_t>(e), 0xee, static_cast<uint8_t>(e * 3)};
    m[e].digest = DigestOf(m[e].memory);
  }
  return m;
}

// Sends epoch e as the difference from e-1 (every page of epoch 1).
Status SendEpoch(ImageSink& sink, const std::vector<Epoch>& m, uint64_t e) {
  for (uint64_t pfn = 0; pfn < kPages; ++pfn) {
    const uint8_t* now = m[e].memory.data() + pfn * kPage;
    if (e > 1 && std::memcmp(now, m[e - 1].memory.data() + pfn * kPage, kPage) == 0) continue;
    ROMULUS_RETURN_IF_ERROR(sink.OnPage(e, pfn, now));
  }
  ROMULUS_RETURN_IF_ERROR(sink.OnState(e, m[e].state));
  return sink.Commit(e);
}

uint64_t FileHash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return XXH3_64bits(b.data(), b.size()) ^ (b.size() << 1) ^ 1;
}

std::map<std::string, uint64_t> DirHashes(const std::string& dir) {
  std::map<std::string, uint64_t> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename()] = FileHash(e.path());
  return out;
}

// The files at `path` recover to exactly epoch `e` of the model: through the
// read-only view (verify) without changing a byte, then through a sink.
void ExpectRecoversTo(const std::string& dir, const std::string& path, const std::vector<Epoch>& m, uint64_t e) {
  const auto before = DirHashes(dir);
  {
    auto v = ImageView::Open(path);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ((*v)->epoch(), e);
    EXPECT_EQ((*v)->recorded_digest(), m[e].digest);
    EXPECT_EQ(std::memcmp((*v)->image(), m[e].memory.data(), kPages * kPage), 0);
    EXPECT_EQ((*v)->state(), m[e].state);
  }
  EXPECT_EQ(DirHashes(dir), before) << "the read-only view changed a file";
  ImageSinkOptions o;
  o.path = path;
  o.run_activated = false;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ImageSink& sink = **r;
  ASSERT_TRUE(sink.has_committed()) << sink.recovery_note();
  EXPECT_EQ(sink.last_committed_epoch(), e);
  EXPECT_EQ(sink.digest(), m[e].digest);
  EXPECT_EQ(sink.ComputeImageDigest(), m[e].digest);
  EXPECT_EQ(std::memcmp(sink.image(), m[e].memory.data(), kPages * kPage), 0);
  EXPECT_EQ(std::vector<uint8_t>(sink.committed_state().begin(), sink.committed_state().end()), m[e].state);
}

// Forks a backup that commits epochs 1..k, then dies at `step` inside the
// commit of k+1 (k = 0: inside the first, direct, commit).
void CrashChild(const std::string& path, const std::vector<Epoch>& m, uint64_t k, CommitStep step, bool durable) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ImageSinkOptions o;
    o.path = path;
    o.durable = durable;
    o.run_activated = false;
    auto r = ImageSink::Open(o);
    if (!r.ok() || !(*r)->BeginSession(kPages, kIdentity).ok()) _exit(2);
    for (uint64_t e = 1; e <= k; ++e) {
      if (!SendEpoch(**r, m, e).ok()) _exit(3);
    }
    (*r)->set_crash_at(step);
    Status s = SendEpoch(**r, m, k + 1);
    _exit(s.ok() ? 4 : 5);  // the kill-point was not reached
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << CommitStepName(step) << ": child ended with status " << status;
}

TEST(ImageJournalTest, EveryCommitStepNameParses) {
  EXPECT_EQ(CommitStepNames().size(), 8u);
  for (const std::string& name : CommitStepNames()) {
    CommitStep s = CommitStep::kNone;
    ASSERT_TRUE(ParseCommitStep(name, &s)) << name;
    EXPECT_EQ(CommitStepName(s), name);
  }
  CommitStep s;
  EXPECT_FALSE(ParseCommitStep("none", &s));
  EXPECT_FALSE(ParseCommitStep("", &s));
}

TEST(ImageJournalTest, ACrashAtEveryCommitStepRecoversToExactlyOneEpoch) {
  const uint64_t k = 3;
  const std::vector<Epoch> m = BuildModel(k + 2);
  for (bool durable : {false, true}) {
    for (const std::string& name : CommitStepNames()) {
      SCOPED_TRACE(name + (durable ? " (durable)" : ""));
      CommitStep step;
      ASSERT_TRUE(ParseCommitStep(name, &step));
      const std::string dir = MakeTempDir("image_crash");
      const std::string path = dir + "/g.img";
      CrashChild(path, m, k, step, durable);
      // Before the commit marker the commit never happened; from it on, it did.
      const uint64_t expect = step < CommitStep::kJournalMarker ? k : k + 1;
      ExpectRecoversTo(dir, path, m, expect);
      // Recovery left a clean image: the next commit works and survives.
      {
        ImageSinkOptions o;
        o.path = path;
        o.run_activated = false;
        auto r = ImageSink::Open(o);
        ASSERT_TRUE(r.ok());
        EXPECT_TRUE((*r)->recovery_note().empty()) << (*r)->recovery_note();
        ASSERT_TRUE((*r)->BeginSession(kPages, kIdentity).ok());
        for (uint64_t e = expect + 1; e <= k + 2; ++e) ASSERT_TRUE(SendEpoch(**r, m, e).ok());
      }
      ExpectRecoversTo(dir, path, m, k + 2);
      fs::remove_all(dir);
    }
  }
}

TEST(ImageJournalTest, ACrashInTheFirstCommitLeavesNothingOrEpochOne) {
  const std::vector<Epoch> m = BuildModel(2);
  for (CommitStep step : {CommitStep::kStateTmp, CommitStep::kStateRename}) {
    SCOPED_TRACE(CommitStepName(step));
    const std::string dir = MakeTempDir("image_crash1");
    const std::string path = dir + "/g.img";
    CrashChild(path, m, 0, step, false);
    if (step == CommitStep::kStateTmp) {
      EXPECT_FALSE(ImageView::Open(path).ok());  // verify: no committed checkpoint
      ImageSinkOptions o;
      o.path = path;
      auto r = ImageSink::Open(o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_FALSE((*r)->has_committed());
    } else {
      ExpectRecoversTo(dir, path, m, 1);
    }
    fs::remove_all(dir);
  }
}

// Mounts a tmpfs of `bytes` on a fresh directory; "" when mounting is not
// possible here (not root, no mount namespace).
std::string MountSmallTmpfs(uint64_t bytes) {
  std::string dir = MakeTempDir("image_enospc");
  std::string opts = "size=" + std::to_string(bytes);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
    fs::remove_all(dir);
    return "";
  }
  return dir;
}

void Unmount(const std::string& dir) {
  ::umount2(dir.c_str(), MNT_DETACH);
  fs::remove_all(dir);
}

uint64_t FreeBytes(const std::string& dir) {
  struct statvfs v;
  return ::statvfs(dir.c_str(), &v) == 0 ? uint64_t{v.f_bavail} * v.f_frsize : 0;
}

// Leaves `want` bytes free on the filesystem of dir.
void FillTo(const std::string& dir, uint64_t want) {
  const std::string filler = dir + "/filler";
  ::unlink(filler.c_str());
  const uint64_t free = FreeBytes(dir);
  if (free <= want) return;
  int fd = ::open(filler.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fallocate(fd, 0, 0, static_cast<off_t>(free - want)), 0) << strerror(errno);
  ::close(fd);
}

TEST(ImageJournalTest, DiskFullDuringACommitKeepsThePreviousEpoch) {
  const std::string dir = MountSmallTmpfs(4 << 20);
  if (dir.empty()) GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno) << "): needs root";
  const std::string path = dir + "/g.img";
  const uint64_t k = 30;
  const std::vector<Epoch> m = BuildModel(k);
  ImageSinkOptions o;
  o.path = path;
  o.run_activated = false;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<ImageSink> sink = std::move(*r);
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  ASSERT_TRUE(SendEpoch(*sink, m, 1).ok());
  uint64_t held = 1, failures = 0;
  std::map<std::string, int> where;  // which step ran out of space
  // Every epoch starts on a full disk and gets one more free page per try,
  // so commits fail at each point that needs space (journal, image block
  // reservation, PATH.state.tmp), and each failure must leave the previous
  // epoch intact.
  for (uint64_t want = 0, tries = 0; held < k && tries < 2000; ++tries) {
    FillTo(dir, want);
    Status s = SendEpoch(*sink, m, held + 1);
    if (s.ok()) {
      ++held;
      want = 0;
      continue;
    }
    want += kPage;
    ++failures;
    ASSERT_EQ(s.code(), Code::kStorage) << s.ToString();
    for (const char* step : {"journal", "reserving", "state.tmp"}) {
      if (s.message().find(step) != std::string::npos) ++where[step];
    }
    ASSERT_TRUE(sink->has_committed());
    ASSERT_EQ(sink->last_committed_epoch(), held);
    ASSERT_EQ(sink->digest(), m[held].digest);
    ASSERT_EQ(sink->ComputeImageDigest(), m[held].digest);
    ASSERT_FALSE(sink->replay_pending());
    // And on disk, for a restarted backup (the lock is released first).
    sink.reset();
    ::unlink((dir + "/filler").c_str());
    ExpectRecoversTo(dir, path, m, held);
    auto again = ImageSink::Open(o);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    sink = std::move(*again);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  }
  std::printf("%llu commits failed with ENOSPC (journal %d, reservation %d, state.tmp %d), each kept the "
              "previous epoch; reached epoch %llu\n",
              static_cast<unsigned long long>(failures), where["journal"], where["reserving"], where["state.tmp"],
              static_cast<unsigned long long>(held));
  EXPECT_GT(where["journal"], 0);
  EXPECT_GT(where["reserving"], 0);
  EXPECT_GT(where["state.tmp"], 0);
  EXPECT_EQ(held, k);
  sink.reset();
  Unmount(dir);
}

TEST(ImageJournalTest, AnImageThatCannotGrowIsAnErrorNotASignal) {
  const std::string dir = MountSmallTmpfs(1 << 20);
  if (dir.empty()) GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno) << "): needs root";
  ImageSinkOptions o;
  o.path = dir + "/g.img";
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  const uint64_t pages = 2048;  // 8 MiB guest on a 1 MiB filesystem
  ASSERT_TRUE((*r)->BeginSession(pages, "sim:size=8M").ok());
  std::vector<uint8_t> page(kPage, 0x42);
  Status s;
  uint64_t pfn = 0;
  for (; pfn < pages && s.ok(); ++pfn) s = (*r)->OnPage(1, pfn, page.data());
  EXPECT_EQ(s.code(), Code::kStorage) << s.ToString();
  std::printf("first sync stopped at page %llu: %s\n", static_cast<unsigned long long>(pfn), s.ToString().c_str());
  EXPECT_FALSE((*r)->has_committed());
  r->reset();  // releases the sink before the unmount
  Unmount(dir);
}

TEST(ImageJournalTest, ASecondSinkOnTheSameImageIsRefusedWithoutTouchingIt) {
  const std::string dir = MakeTempDir("image_lock");
  const std::vector<Epoch> m = BuildModel(2);
  ImageSinkOptions o;
  o.path = dir + "/g.img";
  auto first = ImageSink::Open(o);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->BeginSession(kPages, kIdentity).ok());
  ASSERT_TRUE(SendEpoch(**first, m, 1).ok());
  const auto before = DirHashes(dir);
  for (bool start_over : {false, true}) {
    ImageSinkOptions o2 = o;
    o2.start_over = start_over;  // not even --start-over truncates a locked image
    auto second = ImageSink::Open(o2);
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.status().message().find("is in use by another romulus restore (pid " +
                                             std::to_string(getpid()) + ")"),
              std::string::npos)
        << second.status().ToString();
  }
  EXPECT_EQ(DirHashes(dir), before);
  ASSERT_TRUE(SendEpoch(**first, m, 2).ok());  // the first keeps working
  first->reset();
  ExpectRecoversTo(dir, o.path, m, 2);
  fs::remove_all(dir);
}

TEST(ImageJournalTest, TheReadOnlyViewCreatesNothing) {
  const std::string dir = MakeTempDir("image_view");
  auto v = ImageView::Open(dir + "/missing.img");
  EXPECT_EQ(v.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

TEST(ImageJournalTest, ZeroPagesAreNeverWrittenSoTheImageStaysSparse) {
  const std::string dir = MakeTempDir("image_sparse");
  ImageSinkOptions o;
  o.path = dir + "/g.img";
  o.run_activated = false;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  ImageSink& sink = **r;
  const uint64_t pages = uint64_t{4} << 18;  // 4 GiB
  ASSERT_TRUE(sink.BeginSession(pages, "sim:size=4G").ok());
  std::vector<uint8_t> zero(kPage, 0), data(kPage, 0x3c);
  uint64_t nonzero = 0;
  for (uint64_t pfn = 0; pfn < pages; ++pfn) {
    const bool write = pfn % 1024 == 7;  // 0.1% of the guest holds data
    nonzero += write;
    ASSERT_TRUE(sink.OnPage(1, pfn, write ? data.data() : zero.data()).ok());
  }
  ASSERT_TRUE(sink.Commit(1).ok());
  // A later epoch that zeroes data pages punches them out again.
  for (uint64_t pfn = 7; pfn < pages / 2; pfn += 1024) ASSERT_TRUE(sink.OnPage(2, pfn, zero.data()).ok());
  ASSERT_TRUE(sink.Commit(2).ok());
  struct stat st;
  ASSERT_EQ(::stat(o.path.c_str(), &st), 0);
  const uint64_t allocated = uint64_t(st.st_blocks) * 512;
  const uint64_t live = (nonzero - nonzero / 2) * kPage;
  std::printf("4 GiB guest, %llu non-zero pages (%llu KiB) after epoch 2: file %llu MiB, du %llu KiB\n",
              static_cast<unsigned long long>(nonzero - nonzero / 2), static_cast<unsigned long long>(live >> 10),
              static_cast<unsigned long long>(st.st_size >> 20), static_cast<unsigned long long>(allocated >> 10));
  EXPECT_EQ(uint64_t(st.st_size), pages * kPage);
  // Allocation within a few blocks per data page of the non-zero data (file
  // systems round extents), far from the 4 GiB a dense image takes.
  EXPECT_LE(allocated, 4 * live + (1 << 20));
  EXPECT_EQ(sink.digest(), sink.ComputeImageDigest());
  fs::remove_all(dir);
}

// Prints the steady-state cost of a commit on a file image (no pass
// criterion on time: the figures are for docs and reports). Two dirty-page
// patterns: scattered single pages (worst case for the apply) and runs of 16
// adjacent pages.
TEST(ImageSinkBench, SteadyStateCommitCost) {
  std::string dir = MakeTempDir("image_bench");
  for (bool durable : {false, true}) {
    for (uint64_t run : {uint64_t{1}, uint64_t{16}}) {
      ImageSinkOptions o;
      o.path = dir + "/g.img";
      o.start_over = true;
      o.durable = durable;
      o.run_activated = false;
      auto r = ImageSink::Open(o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ImageSink& sink = **r;
      const uint64_t pages = 65536;  // 256 MiB
      ASSERT_TRUE(sink.BeginSession(pages, "sim:size=256M").ok());
      std::vector<uint8_t> page(kPage, 0x5a);
      for (uint64_t pfn = 0; pfn < pages; pfn += 2) ASSERT_TRUE(sink.OnPage(1, pfn, page.data()).ok());
      ASSERT_TRUE(sink.Commit(1).ok());
      std::mt19937_64 rng(3);
      const int epochs = durable ? 20 : 100;
      const uint64_t per_epoch = 2000;  // 8 MiB dirty per epoch
      double total_us = 0;
      for (int e = 2; e < 2 + epochs; ++e) {
        for (uint64_t i = 0; i < per_epoch; i += run) {
          const uint64_t first = rng() % (pages - run);
          for (uint64_t k = 0; k < run; ++k) {
            std::memcpy(page.data(), &i, 8);
            page[8] = static_cast<uint8_t>(e);
            ASSERT_TRUE(sink.OnPage(e, first + k, page.data()).ok());
          }
        }
        auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE(sink.Commit(e).ok());
        total_us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      }
      std::printf("commit of %llu pages in runs of %llu (%s): %.0f us mean over %d epochs\n",
                  static_cast<unsigned long long>(per_epoch), static_cast<unsigned long long>(run),
                  durable ? "durable" : "not durable", total_us / epochs, epochs);
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace romulus::sim

namespace romulus::sim {
namespace {

// PATH.state's version is the oldest that holds what it says: an image with
// disks but no lineage stays readable by a romulus that predates lineages
// (version 2); one with a lineage or tag needs version 3. Both round-trip.
TEST(StateFileVersion, TheOldestVersionThatSaysItAll) {
  StateFile sf;
  sf.committed = true;
  sf.epoch = 7;
  sf.pages = 16;
  sf.digest = 0x1234;
  sf.identity = "sim:size=64K,disk=1M";
  sf.state = {1, 2, 3};
  std::vector<uint8_t> bytes;
  EncodeStateFile(sf, &bytes);
  EXPECT_EQ(bytes[8], 1) << "no disks: version 1";

  DiskState d;
  d.id = 0;
  d.size = 1 << 20;
  d.name = "xvda";
  d.has_digest = true;
  d.digest = 99;
  sf.disks = {d};
  EncodeStateFile(sf, &bytes);
  EXPECT_EQ(bytes[8], 2) << "disks, no lineage: version 2";
  StateFile back;
  ASSERT_TRUE(DecodeStateFile(bytes, 1 << 20, "state", &back).ok());
  ASSERT_EQ(back.disks.size(), 1u);
  EXPECT_EQ(back.disks[0].name, "xvda");
  EXPECT_EQ(back.disks[0].digest, 99u);
  EXPECT_EQ(back.disks[0].lineage, 0u);

  for (auto [lineage, tag] : {std::pair<uint64_t, uint64_t>{0xabcdef, 42}, {0, 5}, {3, 0}}) {
    sf.disks[0].lineage = lineage;
    sf.disks[0].tag = tag;
    EncodeStateFile(sf, &bytes);
    EXPECT_EQ(bytes[8], 3) << "a lineage or tag: version 3";
    StateFile v3;
    ASSERT_TRUE(DecodeStateFile(bytes, 1 << 20, "state", &v3).ok());
    ASSERT_EQ(v3.disks.size(), 1u);
    EXPECT_EQ(v3.disks[0].lineage, lineage);
    EXPECT_EQ(v3.disks[0].tag, tag);
    EXPECT_EQ(v3.disks[0].name, "xvda");
    EXPECT_EQ(v3.epoch, 7u);
  }
}

}  // namespace
}  // namespace romulus::sim

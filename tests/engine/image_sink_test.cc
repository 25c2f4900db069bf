#include "sim/image_sink.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "common/digest.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"

namespace romulus::sim {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 256;  // 1 MiB guests
const std::string kIdentity = "sim:size=1M,workload=sparse,seed=5,rate=500";

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "image_sink_test.XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

std::vector<uint8_t> PageOf(uint8_t fill, uint64_t tag) {
  std::vector<uint8_t> p(kPage, fill);
  std::memcpy(p.data(), &tag, 8);
  return p;
}

std::unique_ptr<ImageSink> OpenSink(const ImageSinkOptions& o) {
  Result<std::unique_ptr<ImageSink>> r = ImageSink::Open(o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

std::unique_ptr<ImageSink> MemorySink() {
  ImageSinkOptions o;
  o.run_activated = false;
  return OpenSink(o);
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

uint64_t DigestOf(const uint8_t* image, uint64_t pages) {
  uint64_t sum = 0;
  for (uint64_t pfn = 0; pfn < pages; ++pfn) sum += PageHash(pfn, image + pfn * kPage);
  return sum;
}

// Sends a full first epoch of `pages` pages from a model memory.
void FullSync(ImageSink& sink, uint64_t epoch, const std::vector<uint8_t>& model) {
  for (uint64_t pfn = 0; pfn < model.size() / kPage; ++pfn) {
    ASSERT_TRUE(sink.OnPage(epoch, pfn, model.data() + pfn * kPage).ok());
  }
  ASSERT_TRUE(sink.Commit(epoch).ok());
}

TEST(ImageSinkTest, CommitAppliesExactlyTheStagedEpoch) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink);
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  EXPECT_FALSE(sink->has_committed());
  std::vector<uint8_t> model(kPages * kPage, 0);
  for (uint64_t pfn = 0; pfn < kPages; pfn += 3) std::memset(model.data() + pfn * kPage, int(pfn), kPage);
  FullSync(*sink, 1, model);
  EXPECT_TRUE(sink->has_committed());
  EXPECT_EQ(sink->last_committed_epoch(), 1u);
  ASSERT_EQ(std::memcmp(sink->image(), model.data(), model.size()), 0);
  EXPECT_EQ(sink->digest(), DigestOf(model.data(), kPages));

  std::mt19937_64 rng(1);
  for (uint64_t epoch = 2; epoch < 20; ++epoch) {
    std::vector<uint8_t> next = model;
    for (int i = 0; i < 20; ++i) {
      uint64_t pfn = rng() % kPages;
      std::vector<uint8_t> page = PageOf(static_cast<uint8_t>(rng()), epoch * 1000 + i);
      std::memcpy(next.data() + pfn * kPage, page.data(), kPage);
      ASSERT_TRUE(sink->OnPage(epoch, pfn, page.data()).ok());
      // Staged, not applied: the image still holds the previous epoch.
      ASSERT_EQ(std::memcmp(sink->image(), model.data(), model.size()), 0);
    }
    EXPECT_EQ(sink->digest(), DigestOf(model.data(), kPages));
    ASSERT_TRUE(sink->Commit(epoch).ok());
    model = next;
    ASSERT_EQ(std::memcmp(sink->image(), model.data(), model.size()), 0) << "epoch " << epoch;
    EXPECT_EQ(sink->last_committed_epoch(), epoch);
    EXPECT_EQ(sink->digest(), DigestOf(model.data(), kPages));
    EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
    EXPECT_EQ(sink->staged_pages(), 0u);
  }
}

TEST(ImageSinkTest, DuplicatePageInAnEpochLaterCopyWins) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  std::vector<uint8_t> zero(kPages * kPage, 0);
  FullSync(*sink, 1, zero);
  auto a = PageOf(1, 1), b = PageOf(2, 2);
  ASSERT_TRUE(sink->OnPage(2, 7, a.data()).ok());
  ASSERT_TRUE(sink->OnPage(2, 7, b.data()).ok());
  EXPECT_EQ(sink->staged_pages(), 1u);  // one slot: staging stays bounded by the guest size
  ASSERT_TRUE(sink->Commit(2).ok());
  EXPECT_EQ(std::memcmp(sink->image() + 7 * kPage, b.data(), kPage), 0);
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
}

TEST(ImageSinkTest, DiscardLeavesTheCommittedImageIntact) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  std::vector<uint8_t> model(kPages * kPage, 0x5a);
  FullSync(*sink, 1, model);
  std::vector<uint8_t> state1 = {1, 2, 3};
  ASSERT_TRUE(sink->OnState(2, state1).ok());
  ASSERT_TRUE(sink->Commit(2).ok());
  const uint64_t digest = sink->digest();

  for (uint64_t pfn = 0; pfn < kPages; pfn += 2) {
    ASSERT_TRUE(sink->OnPage(3, pfn, PageOf(0x11, pfn).data()).ok());
  }
  std::vector<uint8_t> state2 = {9, 9};
  ASSERT_TRUE(sink->OnState(3, state2).ok());
  sink->Discard();
  EXPECT_EQ(std::memcmp(sink->image(), model.data(), model.size()), 0);
  EXPECT_EQ(sink->digest(), digest);
  EXPECT_EQ(sink->last_committed_epoch(), 2u);
  EXPECT_EQ(std::vector<uint8_t>(sink->committed_state().begin(), sink->committed_state().end()), state1);

  // The same epoch number may be received again after a discard.
  ASSERT_TRUE(sink->OnPage(3, 4, PageOf(0x22, 4).data()).ok());
  ASSERT_TRUE(sink->Commit(3).ok());
  EXPECT_EQ(sink->image()[4 * kPage + 100], 0x22);
  EXPECT_EQ(sink->image()[6 * kPage + 100], 0x5a);  // staged in the discarded epoch: never applied
  EXPECT_EQ(sink->image()[2 * kPage + 100], 0x5a);
  // An epoch without a state record keeps the previous state.
  EXPECT_EQ(std::vector<uint8_t>(sink->committed_state().begin(), sink->committed_state().end()), state1);
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
}

TEST(ImageSinkTest, StateRecordsOfAnEpochAreConcatenatedAndBounded) {
  ImageSinkOptions o;
  o.max_state_bytes = 8;
  auto sink = OpenSink(o);
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  std::vector<uint8_t> a = {1, 2, 3}, b = {4, 5};
  ASSERT_TRUE(sink->OnState(1, a).ok());
  ASSERT_TRUE(sink->OnState(1, b).ok());
  ASSERT_TRUE(sink->Commit(1).ok());
  EXPECT_EQ(std::vector<uint8_t>(sink->committed_state().begin(), sink->committed_state().end()),
            (std::vector<uint8_t>{1, 2, 3, 4, 5}));
  std::vector<uint8_t> big(9, 7);
  EXPECT_EQ(sink->OnState(2, big).code(), Code::kOutOfRange);
  ASSERT_TRUE(sink->OnState(2, a).ok());
  EXPECT_EQ(sink->OnState(2, std::vector<uint8_t>(6, 0)).code(), Code::kOutOfRange);
}

TEST(ImageSinkTest, RejectsOutOfRangePagesAndEpochMisuse) {
  auto sink = MemorySink();
  auto page = PageOf(3, 3);
  EXPECT_EQ(sink->OnPage(1, 0, page.data()).code(), Code::kInvalidArgument);  // no session
  EXPECT_EQ(sink->Commit(1).code(), Code::kInvalidArgument);
  EXPECT_FALSE(sink->BeginSession(0, kIdentity).ok());
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  // Out of range: refused in the first (direct) epoch...
  EXPECT_EQ(sink->OnPage(1, kPages, page.data()).code(), Code::kCorruption);
  EXPECT_EQ(sink->OnPage(1, UINT64_MAX, page.data()).code(), Code::kCorruption);
  EXPECT_EQ(sink->OnPage(1, uint64_t{1} << 52, page.data()).code(), Code::kCorruption);
  ASSERT_TRUE(sink->OnPage(1, kPages - 1, page.data()).ok());
  ASSERT_TRUE(sink->Commit(1).ok());
  // ...and in staged epochs.
  EXPECT_EQ(sink->OnPage(2, kPages, page.data()).code(), Code::kCorruption);
  // Epochs already committed, and two epochs mixed in one staging.
  EXPECT_EQ(sink->OnPage(1, 0, page.data()).code(), Code::kCorruption);
  EXPECT_EQ(sink->Commit(1).code(), Code::kCorruption);
  ASSERT_TRUE(sink->OnPage(2, 0, page.data()).ok());
  EXPECT_EQ(sink->OnPage(3, 1, page.data()).code(), Code::kCorruption);
  EXPECT_EQ(sink->Commit(3).code(), Code::kCorruption);
  ASSERT_TRUE(sink->Commit(2).ok());
  EXPECT_EQ(sink->last_committed_epoch(), 2u);
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
}

TEST(ImageSinkTest, FirstEpochIsWrittenDirectlyLaterOnesAreStaged) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  auto p = PageOf(0x77, 1);
  ASSERT_TRUE(sink->OnPage(5, 10, p.data()).ok());
  EXPECT_EQ(sink->staged_pages(), 0u);
  EXPECT_EQ(sink->image()[10 * kPage + 100], 0x77);  // nothing to protect yet
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
  EXPECT_EQ(sink->Activate("too early").code(), Code::kInvalidArgument);
  // A new session keeps what the unfinished first sync wrote, and says so
  // page by page (the HELD table): the primary resends only what differs.
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  EXPECT_EQ(sink->image()[10 * kPage + 100], 0x77);
  ASSERT_NE(sink->held_pages(), nullptr);
  EXPECT_EQ(sink->held_pages()->hash(10), PageHash(10, p.data()));
  EXPECT_EQ(sink->held_pages()->value(), sink->ComputeImageDigest());
  ASSERT_TRUE(sink->OnPage(1, 10, p.data()).ok());
  ASSERT_TRUE(sink->Commit(1).ok());
  ASSERT_TRUE(sink->OnPage(2, 11, p.data()).ok());
  EXPECT_EQ(sink->staged_pages(), 1u);
  EXPECT_EQ(sink->image()[11 * kPage + 100], 0);
}

TEST(ImageSinkTest, DiscardedDirectEpochRequiresANewSession) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  auto p = PageOf(0x77, 1);
  ASSERT_TRUE(sink->OnPage(1, 10, p.data()).ok());
  sink->Discard();
  EXPECT_EQ(sink->OnPage(2, 11, p.data()).code(), Code::kCorruption);
  EXPECT_EQ(sink->Commit(2).code(), Code::kCorruption);
  EXPECT_FALSE(sink->has_committed());
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  // The discarded epoch's page stayed in the image, and the new session's
  // base says so: a primary whose page 10 differs sends it, one whose page
  // matches skips it, and the epoch digest checks the result either way.
  ASSERT_NE(sink->held_pages(), nullptr);
  EXPECT_EQ(sink->held_pages()->hash(10), PageHash(10, p.data()));
  ASSERT_TRUE(sink->OnPage(1, 11, p.data()).ok());
  ASSERT_TRUE(sink->Commit(1).ok());
  EXPECT_EQ(sink->image()[10 * kPage + 100], 0x77);
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
}

TEST(ImageSinkTest, AnotherGuestSizeStartsFromZero) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  auto p = PageOf(0x77, 1);
  ASSERT_TRUE(sink->OnPage(1, 10, p.data()).ok());
  sink->Discard();
  ASSERT_TRUE(sink->BeginSession(kPages * 2, kIdentity).ok());
  ASSERT_NE(sink->held_pages(), nullptr);
  EXPECT_EQ(sink->held_pages()->value(), 0u);
  EXPECT_EQ(sink->image()[10 * kPage + 100], 0);
}

TEST(ImageSinkTest, NoStagingReallocationsAfterWarmUp) {
  auto sink = MemorySink();
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  std::vector<uint8_t> zero(kPages * kPage, 0);
  FullSync(*sink, 1, zero);
  std::mt19937_64 rng(7);
  auto run_epoch = [&](uint64_t epoch) {
    const uint64_t n = 90 + rng() % 21;  // 90..110 distinct pages
    std::vector<uint64_t> pfns(kPages);
    for (uint64_t i = 0; i < kPages; ++i) pfns[i] = i;
    std::shuffle(pfns.begin(), pfns.end(), rng);
    for (uint64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(sink->OnPage(epoch, pfns[i], PageOf(uint8_t(epoch), i).data()).ok());
    }
    std::vector<uint8_t> st(80, uint8_t(epoch));
    ASSERT_TRUE(sink->OnState(epoch, st).ok());
    ASSERT_TRUE(sink->Commit(epoch).ok());
  };
  uint64_t epoch = 2;
  for (; epoch < 30; ++epoch) run_epoch(epoch);  // warm-up: reaches the high-water mark
  const uint64_t warm = sink->staging_reallocations();
  EXPECT_GT(warm, 0u);
  for (; epoch < 500; ++epoch) run_epoch(epoch);
  EXPECT_EQ(sink->staging_reallocations(), warm);
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
}

// ---------------------------------------------------------------------------
// Files

TEST(ImageSinkFileTest, StateFileIsWrittenAtEveryCommitAndReloaded) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("guest.img");
  o.run_activated = false;
  std::vector<uint8_t> model(kPages * kPage, 0);
  uint64_t digest = 0;
  {
    auto sink = OpenSink(o);
    ASSERT_TRUE(sink);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    EXPECT_TRUE(fs::exists(sink->state_path()));  // marks the image as ours from the start
    EXPECT_EQ(fs::file_size(o.path), kPages * kPage);
    std::memset(model.data() + 3 * kPage, 0x33, kPage);
    FullSync(*sink, 1, model);
    for (uint64_t e = 2; e <= 4; ++e) {
      auto page = PageOf(uint8_t(e), e);
      std::memcpy(model.data() + e * kPage, page.data(), kPage);
      ASSERT_TRUE(sink->OnPage(e, e, page.data()).ok());
      std::vector<uint8_t> st = {uint8_t(e), 0xee};
      ASSERT_TRUE(sink->OnState(e, st).ok());
      ASSERT_TRUE(sink->Commit(e).ok());
      EXPECT_FALSE(fs::exists(sink->state_path() + ".tmp"));  // renamed into place, not left behind
    }
    // An uncommitted epoch must not reach the state file.
    ASSERT_TRUE(sink->OnPage(5, 9, PageOf(9, 9).data()).ok());
    std::vector<uint8_t> st5 = {5};
    ASSERT_TRUE(sink->OnState(5, st5).ok());
    digest = sink->digest();
    // The file on disk is the committed image.
    std::vector<uint8_t> file = ReadFile(o.path);
    ASSERT_EQ(file.size(), model.size());
    EXPECT_EQ(file, model);
    EXPECT_EQ(DigestOf(file.data(), kPages), digest);
  }  // the backup process "dies" with epoch 5 staged
  auto again = OpenSink(o);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->recovery_note().empty()) << again->recovery_note();
  EXPECT_TRUE(again->has_committed());
  EXPECT_EQ(again->last_committed_epoch(), 4u);
  EXPECT_EQ(again->committed_identity(), kIdentity);
  EXPECT_EQ(std::vector<uint8_t>(again->committed_state().begin(), again->committed_state().end()),
            (std::vector<uint8_t>{4, 0xee}));
  EXPECT_EQ(again->digest(), digest);
  // A new session of the same size keeps the committed epoch, and stages.
  ASSERT_TRUE(again->BeginSession(kPages, kIdentity).ok());
  EXPECT_TRUE(again->has_committed());
  ASSERT_TRUE(again->OnPage(1, 0, PageOf(1, 1).data()).ok());  // epochs restart in a new session
  EXPECT_EQ(again->staged_pages(), 1u);
  ASSERT_TRUE(again->Commit(1).ok());
  EXPECT_EQ(again->last_committed_epoch(), 1u);
}

TEST(ImageSinkFileTest, StateFileIsReplacedAtomically) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("guest.img");
  auto sink = OpenSink(o);
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  std::vector<uint8_t> zero(kPages * kPage, 0);
  FullSync(*sink, 1, zero);
  // A reader holding the old file keeps seeing the old, complete contents:
  // the commit renames a new file over it rather than rewriting it in place.
  int old_fd = ::open(sink->state_path().c_str(), O_RDONLY);
  ASSERT_GE(old_fd, 0);
  struct stat before;
  ASSERT_EQ(::fstat(old_fd, &before), 0);
  std::vector<uint8_t> old_bytes = ReadFile(sink->state_path());
  std::vector<uint8_t> st(80, 0xab);
  ASSERT_TRUE(sink->OnState(2, st).ok());
  ASSERT_TRUE(sink->Commit(2).ok());
  struct stat after_old, after_new;
  ASSERT_EQ(::fstat(old_fd, &after_old), 0);
  ASSERT_EQ(::stat(sink->state_path().c_str(), &after_new), 0);
  EXPECT_NE(after_new.st_ino, before.st_ino);           // a different file now has the name
  EXPECT_EQ(after_old.st_size, before.st_size);          // the old one was never touched
  std::vector<uint8_t> reread(old_bytes.size());
  ASSERT_EQ(::pread(old_fd, reread.data(), reread.size(), 0), static_cast<ssize_t>(reread.size()));
  EXPECT_EQ(reread, old_bytes);
  ::close(old_fd);
  EXPECT_EQ(ReadFile(sink->state_path()).size(), old_bytes.size() + 80);
  // A stale temporary from a crash is harmless and not mistaken for the state.
  { std::ofstream(sink->state_path() + ".tmp") << "garbage"; }
  ASSERT_TRUE(sink->Commit(3).ok());
  EXPECT_FALSE(fs::exists(sink->state_path() + ".tmp"));
}

TEST(ImageSinkFileTest, CorruptOrForeignFilesAreRefused) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("precious.img");
  { std::ofstream(o.path) << "not a guest image"; }
  EXPECT_EQ(ImageSink::Open(o).status().code(), Code::kInvalidArgument);  // no PATH.state: not ours
  EXPECT_EQ(ReadFile(o.path).size(), 17u);                                // and untouched

  // A damaged state file is refused (one flipped byte).
  o.path = dir.File("guest.img");
  {
    auto sink = OpenSink(o);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    std::vector<uint8_t> zero(kPages * kPage, 0);
    FullSync(*sink, 1, zero);
  }
  std::vector<uint8_t> st = ReadFile(o.path + ".state");
  st[20] ^= 1;
  { std::ofstream(o.path + ".state", std::ios::binary).write(reinterpret_cast<char*>(st.data()), st.size()); }
  EXPECT_EQ(ImageSink::Open(o).status().code(), Code::kCorruption);
  // Unless told to start over.
  o.start_over = true;
  auto fresh = OpenSink(o);
  ASSERT_TRUE(fresh);
  EXPECT_FALSE(fresh->has_committed());
}

TEST(ImageSinkFileTest, InterruptedCommitIsDetectedOnReopen) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("guest.img");
  {
    auto sink = OpenSink(o);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    std::vector<uint8_t> model(kPages * kPage, 0x42);
    FullSync(*sink, 1, model);
  }
  // Simulate a backup that died half-way through applying epoch 2.
  {
    int fd = ::open(o.path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    auto p = PageOf(0x99, 2);
    ASSERT_EQ(::pwrite(fd, p.data(), kPage, 17 * kPage), static_cast<ssize_t>(kPage));
    ::close(fd);
  }
  auto sink = OpenSink(o);
  ASSERT_TRUE(sink);
  EXPECT_FALSE(sink->has_committed());
  EXPECT_NE(sink->recovery_note().find("interrupted"), std::string::npos) << sink->recovery_note();
  EXPECT_EQ(sink->Activate("primary lost").code(), Code::kInvalidArgument);
  // It is still ours: a new session resumes on it. Nothing in it is
  // trusted as a checkpoint, but every page is described by its hash.
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  ASSERT_NE(sink->held_pages(), nullptr);
  EXPECT_EQ(sink->held_pages()->value(), sink->ComputeImageDigest());
  auto p = PageOf(0x99, 2);
  EXPECT_EQ(sink->held_pages()->hash(17), PageHash(17, p.data()));
}

// The backup dies during its first sync and is started again: the image has
// no committed epoch, but what the sync wrote is read back (data ranges
// only) so the next session resumes rather than starting over.
TEST(ImageSinkFileTest, AnUnfinishedFirstSyncSurvivesARestart) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("guest.img");
  std::vector<uint64_t> hashes;
  {
    auto sink = OpenSink(o);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    for (uint64_t pfn = 0; pfn < kPages / 2; ++pfn) {
      auto p = PageOf(static_cast<uint8_t>(pfn), pfn);
      ASSERT_TRUE(sink->OnPage(1, pfn, p.data()).ok());
    }
    // The process dies here: no Commit, no Discard.
  }
  auto sink = OpenSink(o);
  ASSERT_TRUE(sink);
  EXPECT_FALSE(sink->has_committed());
  EXPECT_EQ(sink->Activate("primary lost").code(), Code::kInvalidArgument);
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  ASSERT_NE(sink->held_pages(), nullptr);
  for (uint64_t pfn = 0; pfn < kPages; ++pfn) {
    auto p = PageOf(static_cast<uint8_t>(pfn), pfn);
    const uint64_t want = pfn < kPages / 2 ? PageHash(pfn, p.data()) : 0;
    ASSERT_EQ(sink->held_pages()->hash(pfn), want) << "pfn " << pfn;
  }
  // Finish the sync with the other half; the result is the whole guest.
  for (uint64_t pfn = kPages / 2; pfn < kPages; ++pfn) {
    auto p = PageOf(static_cast<uint8_t>(pfn), pfn);
    ASSERT_TRUE(sink->OnPage(1, pfn, p.data()).ok());
  }
  ASSERT_TRUE(sink->Commit(1).ok());
  EXPECT_EQ(sink->digest(), sink->ComputeImageDigest());
  // A later epoch (staged), then a new session: its table is the checkpoint.
  auto p = PageOf(0x5a, 99);
  ASSERT_TRUE(sink->OnPage(2, 3, p.data()).ok());
  ASSERT_TRUE(sink->Commit(2).ok());
  ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
  ASSERT_NE(sink->held_pages(), nullptr);
  EXPECT_EQ(sink->held_pages()->value(), sink->ComputeImageDigest());
  EXPECT_EQ(sink->held_pages()->hash(3), PageHash(3, p.data()));
}

TEST(ImageSinkFileTest, SizeChangeIsRefusedWhileCommittedUnlessStartingOver) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("guest.img");
  {
    auto sink = OpenSink(o);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    // Before anything is committed a size change is just a resize.
    ASSERT_TRUE(sink->BeginSession(kPages * 2, kIdentity).ok());
    EXPECT_EQ(fs::file_size(o.path), 2 * kPages * kPage);
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    std::vector<uint8_t> model(kPages * kPage, 1);
    FullSync(*sink, 1, model);
    Status s = sink->BeginSession(kPages * 2, kIdentity);
    EXPECT_EQ(s.code(), Code::kInvalidArgument);
    EXPECT_NE(s.message().find("refusing"), std::string::npos) << s.ToString();
    EXPECT_TRUE(sink->has_committed());  // the refusal keeps what was there
    EXPECT_EQ(fs::file_size(o.path), kPages * kPage);
  }
  {
    auto sink = OpenSink(o);  // also across a restart
    EXPECT_EQ(sink->BeginSession(kPages * 2, kIdentity).code(), Code::kInvalidArgument);
    EXPECT_TRUE(sink->has_committed());
  }
  o.start_over = true;
  auto sink = OpenSink(o);
  ASSERT_TRUE(sink->BeginSession(kPages * 2, kIdentity).ok());
  EXPECT_FALSE(sink->has_committed());
  EXPECT_EQ(fs::file_size(o.path), 2 * kPages * kPage);
  EXPECT_EQ(sink->ComputeImageDigest(), 0u);
}

// ---------------------------------------------------------------------------
// Activation: the end-to-end property the simulated guest exists for.

// Drives a SimGuest through the sink the way the engine does (pause, harvest,
// copy, capture, resume), commits some epochs, then fails over and checks the
// resumed guest continues exactly as the primary would have.
void ReplicateAndFailOver(ImageSink& sink, const std::string& spec_text) {
  Result<SimSpec> spec = ParseSimSpec(spec_text);
  ASSERT_TRUE(spec.ok());
  auto primary = SimGuest::Create(*spec);
  ASSERT_TRUE(primary.ok());
  SimGuest& g = **primary;
  ASSERT_TRUE(sink.BeginSession(g.guest_pages(), g.identity()).ok());
  std::vector<uint64_t> pfns;
  std::vector<uint8_t> state;
  uint64_t committed_steps = 0, committed_digest = 0;
  std::vector<uint8_t> committed_memory;
  for (uint64_t epoch = 1; epoch <= 12; ++epoch) {
    ASSERT_TRUE(g.RunSteps(7).ok());
    ASSERT_TRUE(g.Pause().ok());
    ASSERT_TRUE(g.HarvestDirty(&pfns).ok());
    for (uint64_t pfn : pfns) ASSERT_TRUE(sink.OnPage(epoch, pfn, g.PageData(pfn)).ok());
    ASSERT_TRUE(g.CaptureState(&state).ok());
    ASSERT_TRUE(sink.OnState(epoch, state).ok());
    if (epoch == 12) {  // the primary dies in the middle of epoch 12
      ASSERT_TRUE(g.Resume().ok());
      break;
    }
    ASSERT_TRUE(sink.Commit(epoch).ok());
    EXPECT_EQ(sink.digest(), g.ComputeDigest()) << "epoch " << epoch;
    committed_steps = g.steps();
    committed_digest = g.ComputeDigest();
    committed_memory.assign(g.memory(), g.memory() + g.size_bytes());
    ASSERT_TRUE(g.Resume().ok());
  }
  ASSERT_TRUE(sink.Activate("heartbeat lost").ok());
  SimGuest* b = sink.activated_guest();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(sink.activation_reason(), "heartbeat lost");
  EXPECT_EQ(b->identity(), g.identity());
  EXPECT_EQ(b->steps(), committed_steps);
  EXPECT_EQ(b->ComputeDigest(), committed_digest);
  ASSERT_EQ(std::memcmp(b->memory(), committed_memory.data(), committed_memory.size()), 0);
  // The resumed guest continues deterministically: same as a replay of the
  // primary from the committed point.
  Result<std::unique_ptr<SimGuest>> replay = SimGuest::Restore(*spec, committed_memory, sink.committed_state());
  ASSERT_TRUE(replay.ok());
  ASSERT_TRUE(b->RunSteps(100).ok());
  ASSERT_TRUE((*replay)->RunSteps(100).ok());
  EXPECT_EQ(std::memcmp(b->memory(), (*replay)->memory(), b->size_bytes()), 0);
  EXPECT_EQ(sink.Activate("again").code(), Code::kInvalidArgument);
}

TEST(ImageSinkActivateTest, ResumesEveryWorkloadFromTheLastCommit) {
  for (const char* w : {"seed", "sparse", "hotset", "sequential"}) {
    SCOPED_TRACE(w);
    auto sink = MemorySink();
    ReplicateAndFailOver(*sink, std::string("sim:size=2M,seed=3,workload=") + w);
  }
}

TEST(ImageSinkActivateTest, ResumesFromAnImageFileAfterABackupRestart) {
  TempDir dir;
  ImageSinkOptions o;
  o.path = dir.File("guest.img");
  o.run_activated = false;
  uint64_t digest = 0, steps = 0;
  {
    auto sink = OpenSink(o);
    auto g = SimGuest::Create(*ParseSimSpec("sim:size=2M,workload=hotset,seed=8"));
    ASSERT_TRUE(g.ok());
    ASSERT_TRUE(sink->BeginSession((*g)->guest_pages(), (*g)->identity()).ok());
    std::vector<uint64_t> pfns;
    std::vector<uint8_t> st;
    for (uint64_t e = 1; e <= 3; ++e) {
      ASSERT_TRUE((*g)->RunSteps(5).ok());
      ASSERT_TRUE((*g)->HarvestDirty(&pfns).ok());
      for (uint64_t pfn : pfns) ASSERT_TRUE(sink->OnPage(e, pfn, (*g)->PageData(pfn)).ok());
      ASSERT_TRUE((*g)->CaptureState(&st).ok());
      ASSERT_TRUE(sink->OnState(e, st).ok());
      ASSERT_TRUE(sink->Commit(e).ok());
    }
    digest = (*g)->ComputeDigest();
    steps = (*g)->steps();
  }
  auto sink = OpenSink(o);
  ASSERT_TRUE(sink->Activate("drill").ok());
  EXPECT_EQ(sink->activated_guest()->ComputeDigest(), digest);
  EXPECT_EQ(sink->activated_guest()->steps(), steps);
}

TEST(ImageSinkActivateTest, ActivationStartsTheWorkloadWhenAsked) {
  ImageSinkOptions o;  // run_activated defaults to true
  auto sink = OpenSink(o);
  auto g = SimGuest::Create(*ParseSimSpec("sim:size=1M,workload=sequential,rate=max"));
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(sink->BeginSession((*g)->guest_pages(), (*g)->identity()).ok());
  std::vector<uint64_t> pfns;
  std::vector<uint8_t> st;
  ASSERT_TRUE((*g)->RunSteps(3).ok());
  ASSERT_TRUE((*g)->HarvestDirty(&pfns).ok());
  for (uint64_t pfn : pfns) ASSERT_TRUE(sink->OnPage(1, pfn, (*g)->PageData(pfn)).ok());
  ASSERT_TRUE((*g)->CaptureState(&st).ok());
  ASSERT_TRUE(sink->OnState(1, st).ok());
  ASSERT_TRUE(sink->Commit(1).ok());
  ASSERT_TRUE(sink->Activate("drill").ok());
  SimGuest* b = sink->activated_guest();
  EXPECT_EQ(b->RunSteps(1).code(), Code::kInvalidArgument);  // its thread is running
  // Bounded: a workload thread that never runs fails the test instead of hanging it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (b->steps() < 10 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_GE(b->steps(), 10u) << "the activated guest's workload did not run within 30 s";
  ASSERT_TRUE(b->Pause().ok());
  b->Stop();
}

TEST(ImageSinkActivateTest, RefusesNonSimOrStatelessGuests) {
  {
    auto sink = MemorySink();
    ASSERT_TRUE(sink->BeginSession(kPages, "xen:domid=7").ok());
    ASSERT_TRUE(sink->Commit(1).ok());
    EXPECT_EQ(sink->Activate("x").code(), Code::kUnsupported);
  }
  {
    auto sink = MemorySink();
    ASSERT_TRUE(sink->BeginSession(kPages, kIdentity).ok());
    ASSERT_TRUE(sink->Commit(1).ok());  // no state record ever
    EXPECT_EQ(sink->Activate("x").code(), Code::kCorruption);
  }
  {
    auto sink = MemorySink();  // identity says 1 MiB, session says 2 MiB
    ASSERT_TRUE(sink->BeginSession(kPages * 2, kIdentity).ok());
    ASSERT_TRUE(sink->Commit(1).ok());
    EXPECT_EQ(sink->Activate("x").code(), Code::kCorruption);
  }
}

}  // namespace
}  // namespace romulus::sim

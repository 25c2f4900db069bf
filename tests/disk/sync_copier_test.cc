// disk::SyncCopier (docs/DISK.md §7.1): the streaming copy of a disk while
// a writer keeps changing it. The backup's image, rebuilt from each sealed
// epoch's records in order, must equal the disk at that epoch's pause on
// every byte the copy has reached, and everywhere once the copy's
// complete_epoch is committed; the pacing keeps the log within half its
// budget; errors leave nothing half-done.
#include "disk/sync_copier.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/request_executor.h"
#include "protocol/disk_digests.h"
#include "protocol/disk_records.h"
#include "tests/disk/disk_test_util.h"

namespace romulus::disk {
namespace {

using protocol::DiskRecordKind;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kBlock = 4096;

// The front end's one-request-at-a-time lock, as NbdServer's exec_mu_.
class MutexHold final : public FrontEndHold {
 public:
  Status Hold(Clock::time_point deadline) override {
    if (!mu.try_lock_until(deadline)) return Status::Timeout("held by a request");
    ++holds;
    return Status::Ok();
  }
  void Unhold() override { mu.unlock(); }
  std::timed_mutex mu;
  int holds = 0;
};

struct Disk {
  testing::TempDir dir;
  std::string path;
  std::unique_ptr<BackingStore> guest_store, copy_store;
};

Disk MakeDisk(uint64_t size, uint32_t seed) {
  Disk d;
  d.path = d.dir.path() + "/disk.img";
  // Some data, some zero blocks: the copy sends both kinds.
  std::vector<uint8_t> init(size, 0);
  std::mt19937 rng(seed);
  for (uint64_t b = 0; b < size / kBlock; ++b) {
    if (rng() % 3 == 0) continue;
    for (uint64_t i = 0; i < kBlock; ++i) init[b * kBlock + i] = static_cast<uint8_t>(rng());
  }
  testing::WriteFile(d.path, init);
  BackingStoreOptions o;
  o.max_request = 1u << 20;
  auto g = BackingStore::Open(d.path, o);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  o.read_only = true;
  auto c = BackingStore::Open(d.path, o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  d.guest_store = std::move(*g);
  d.copy_store = std::move(*c);
  return d;
}

std::vector<uint8_t> ReadAll(BackingStore* s) {
  std::vector<uint8_t> out(s->size());
  for (uint64_t pos = 0; pos < s->size(); pos += s->max_request()) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(s->max_request(), s->size() - pos));
    auto r = s->Read(pos, n);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) std::memcpy(out.data() + pos, r->data(), n);
  }
  return out;
}

void ApplySealed(const EpochDiskLog& log, std::vector<uint8_t>* image) {
  log.ForEachSealed([&](const protocol::DiskRecord& r) {
    ASSERT_LE(r.offset + r.length, image->size());
    if (r.kind == DiskRecordKind::kWrite) std::memcpy(image->data() + r.offset, r.data.data(), r.length);
    if (r.kind == DiskRecordKind::kZero) std::memset(image->data() + r.offset, 0, r.length);
  });
}

TEST(SyncMayCopyTest, KeepsHalfTheBudgetAndTheEpochAllowance) {
  EXPECT_TRUE(SyncMayCopy(0, 64, 0, 100, 32));
  EXPECT_FALSE(SyncMayCopy(1, 64, 0, 100, 32));   // would pass half the budget
  EXPECT_FALSE(SyncMayCopy(0, 64, 80, 100, 32));  // would pass the allowance
  EXPECT_TRUE(SyncMayCopy(0, 64, 68, 100, 32));
  EXPECT_FALSE(SyncMayCopy(0, 64, 0, 100, 0));
  EXPECT_FALSE(SyncMayCopy(UINT64_MAX, UINT64_MAX, 0, UINT64_MAX, UINT64_MAX));  // no overflow
  EXPECT_FALSE(SyncMayCopy(0, 64, UINT64_MAX, 100, 1));
}

// The writer runs on its own thread through the front end's lock while the
// copier and the "engine" (pause, advance, seal, apply) run on this one.
// The backup's copy at the start of the session, and whether the copier is
// told what it holds (DISK_DIGESTS, docs/DISK.md §7.4).
enum class BackupStart { kGarbage, kOldCopyCompared };

// *skipped: the bytes the copier left out.
void HammerWhileCopying(BackupStart start, uint64_t* skipped) {
  constexpr uint64_t kSize = 8u << 20;
  Disk d = MakeDisk(kSize, 1);
  // The backup starts from nothing: an image of garbage, so a byte the
  // copy never reached cannot match by luck. Or from an old copy of this
  // disk that differs in a few chunks (one byte, one block, a whole chunk
  // zeroed, the disk's last byte), which the copier is told about.
  std::vector<uint8_t> backup(kSize, 0xA5);
  std::shared_ptr<protocol::DiskChunkTable> table;
  if (start == BackupStart::kOldCopyCompared) {
    backup = ReadAll(d.copy_store.get());
    backup[2 * protocol::kDiskChunkBytes + 17] ^= 1;
    std::memset(backup.data() + 5 * protocol::kDiskChunkBytes + 8 * kBlock, 0x5A, kBlock);
    std::memset(backup.data() + 6 * protocol::kDiskChunkBytes, 0, protocol::kDiskChunkBytes);
    backup[kSize - 1] ^= 0x80;
    table = std::make_shared<protocol::DiskChunkTable>();
    for (uint64_t c = 0; c < protocol::DiskChunks(kSize); ++c) {
      table->push_back(protocol::DiskChunkHash(
          std::span<const uint8_t>(backup).subspan(c * protocol::kDiskChunkBytes, protocol::kDiskChunkBytes)));
    }
  }
  EpochCounter clock(1);
  EpochDiskLogOptions lo;
  lo.budget_bytes = 16u << 20;
  EpochDiskLog log(0, d.guest_store.get(), lo);
  RequestExecutor exec(d.guest_store.get(), &clock, &log);
  MutexHold hold;
  SyncCopierOptions co;
  co.chunk_bytes = 512u << 10;
  co.epoch_allowance = 1u << 20;  // two chunks an epoch: the copy spans many epochs
  SyncCopier copier(&log, &clock, d.copy_store.get(), &hold, co, table);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  // Writes the writer may still do in this epoch: a fixed number per epoch
  // (40 of at most 64 KiB), so an epoch's log never nears its budget however
  // the threads are scheduled.
  constexpr int kWritesPerEpoch = 40;
  std::atomic<int> credit{0};
  // The chunk the copier is about to read: half the writes aim at it, so a
  // copy that read without holding the front end would race with them.
  std::atomic<uint64_t> hot{0};
  std::thread writer([&] {
    std::mt19937 rng(7);
    std::vector<uint8_t> buf(16 * kBlock);
    while (!stop.load()) {
      if (credit.load() <= 0) {
        std::this_thread::yield();
        continue;
      }
      // Mostly small writes, some large, some zeroes; biased to the first
      // quarter so already-copied chunks are rewritten again and again.
      const uint64_t blocks = 1 + rng() % 16;
      const uint64_t max_at = (rng() % 4 == 0 ? kSize : kSize / 4) / kBlock - blocks;
      uint64_t at = (rng() % max_at) * kBlock;
      const uint64_t h = hot.load();
      if (rng() % 2 == 0 && h + co.chunk_bytes <= kSize) at = h + (rng() % (co.chunk_bytes / kBlock - blocks)) * kBlock;
      std::lock_guard<std::timed_mutex> lk(hold.mu);
      if (rng() % 5 == 0) {
        ASSERT_TRUE(exec.Zero(at, blocks * kBlock, false, false).ok());
      } else {
        for (auto& b : buf) b = static_cast<uint8_t>(rng());
        ASSERT_TRUE(exec.WriteBytes(at, std::span<const uint8_t>(buf.data(), blocks * kBlock), false).ok());
      }
      writes.fetch_add(1);
      credit.fetch_sub(1);
    }
  });
  // Joined on every way out, a failed ASSERT included.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } joiner{stop, writer};

  uint64_t checked_whole = 0;
  for (int epoch_steps = 0; epoch_steps < 200 && checked_whole < 3; ++epoch_steps) {
    // The epoch runs: the writer writes its share while the copier copies
    // what the pacing allows.
    credit = kWritesPerEpoch;
    for (;;) {
      hot = copier.copied_bytes();
      auto stepped = copier.Step(Clock::now() + std::chrono::seconds(10));
      ASSERT_TRUE(stepped.ok()) << stepped.status().ToString();
      if (!*stepped) break;
    }
    const auto writer_deadline = Clock::now() + std::chrono::seconds(30);
    while (credit.load() > 0) {
      ASSERT_LT(Clock::now(), writer_deadline) << "the writer stopped writing";
      std::this_thread::yield();
    }
    // The pause: the front end held, the disk as the guest's memory sees it.
    ASSERT_TRUE(hold.Hold(Clock::now() + std::chrono::seconds(10)).ok());
    const std::vector<uint8_t> at_pause = ReadAll(d.copy_store.get());
    const uint64_t copied = copier.copied_bytes();
    const uint64_t n = clock.Advance();
    hold.Unhold();
    copier.OnEpochAdvanced();
    ASSERT_TRUE(clock.WaitDrained(n, Clock::now() + std::chrono::seconds(10)).ok());
    ASSERT_TRUE(log.Seal(n).ok());
    ApplySealed(log, &backup);
    // What the copy has reached equals the disk at this pause...
    ASSERT_EQ(0, std::memcmp(backup.data(), at_pause.data(), copied)) << "epoch " << n << ", copied " << copied;
    // ... and once the epoch that completes it is committed, all of it.
    if (copier.done() && n >= copier.complete_epoch()) {
      ASSERT_EQ(backup, at_pause) << "epoch " << n << " (complete at " << copier.complete_epoch() << ")";
      ++checked_whole;
    }
    EXPECT_LE(log.stats().high_water, lo.budget_bytes);
  }
  stop = true;
  writer.join();
  EXPECT_TRUE(copier.done());
  EXPECT_EQ(copier.permille(), 1000u);
  EXPECT_EQ(checked_whole, 3u);
  EXPECT_GT(writes.load(), 100u);
  if (start == BackupStart::kGarbage) EXPECT_GE(hold.holds, static_cast<int>(kSize / co.chunk_bytes));
  *skipped = copier.skipped_bytes();
}

TEST(SyncCopierTest, TheImageMatchesEveryPauseWhileAWriterHammersTheDisk) {
  uint64_t skipped = 0;
  HammerWhileCopying(BackupStart::kGarbage, &skipped);
  EXPECT_EQ(skipped, 0u);
}

// The same invariants when the backup holds an old copy and the copier
// leaves out the chunks whose hash matches it: a left-out chunk plus the
// guest's earlier writes to it is the disk as it is, so every pause still
// matches byte for byte (a chunk wrongly left out fails the memcmp).
TEST(SyncCopierTest, LeavingOutWhatTheBackupHoldsKeepsEveryPauseExact) {
  uint64_t skipped = 0;
  HammerWhileCopying(BackupStart::kOldCopyCompared, &skipped);
  // The four perturbed chunks are never left out; most others are (the
  // writer rewrote some before the copier reached them).
  EXPECT_LE(skipped, (8u << 20) - 4 * protocol::kDiskChunkBytes);
  EXPECT_GT(skipped, 0u);
}

TEST(SyncCopierTest, PacedOutUntilTheNextEpochAndProgressIsExact) {
  Disk d = MakeDisk(4u << 20, 2);
  EpochCounter clock(5);
  EpochDiskLog log(0, d.guest_store.get());
  MutexHold hold;
  SyncCopierOptions co;
  co.chunk_bytes = 1u << 20;
  co.epoch_allowance = 2u << 20;
  SyncCopier copier(&log, &clock, d.copy_store.get(), &hold, co);
  EXPECT_EQ(copier.permille(), 0u);
  EXPECT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_FALSE(*copier.Step(Clock::now() + std::chrono::seconds(1)));  // the allowance is spent
  EXPECT_EQ(copier.permille(), 500u);
  clock.Advance();
  copier.OnEpochAdvanced();
  EXPECT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_TRUE(copier.done());
  EXPECT_EQ(copier.complete_epoch(), 6u);  // the tag of the last chunk
  EXPECT_FALSE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_EQ(clock.in_flight(), 0u);
}

// The in-pause copy against the backup's table (EpochDiskLog::CaptureUnlike)
// on a sparse disk: a hole the backup holds as zeros and a data chunk it
// holds alike are left out; a data chunk that differs is copied as it is
// now; a hole where the backup holds data becomes a ZERO record; a table of
// the wrong size is refused before anything is captured.
TEST(CaptureUnlikeTest, LeavesOutExactlyTheChunksTheBackupHolds) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/sparse.img";
  constexpr uint64_t kChunk = protocol::kDiskChunkBytes;
  constexpr uint64_t kSize = 5 * kChunk + 8 * kBlock;  // a short last chunk
  std::vector<uint8_t> disk(kSize, 0);
  {
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, kSize), 0);
    // Chunks 1 and 3 and the last hold data; 0, 2 and 4 are holes.
    for (uint64_t at : {kChunk + 3 * kBlock, 3 * kChunk, 5 * kChunk + kBlock}) {
      std::vector<uint8_t> blk(kBlock, static_cast<uint8_t>(at / kBlock + 1));
      ASSERT_EQ(::pwrite(fd, blk.data(), blk.size(), static_cast<off_t>(at)), static_cast<ssize_t>(kBlock));
      std::memcpy(disk.data() + at, blk.data(), kBlock);
    }
    ::close(fd);
  }
  BackingStoreOptions o;
  o.max_request = 1u << 20;
  o.read_only = true;
  auto store = BackingStore::Open(path, o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  // The backup: chunk 1 alike, chunk 3 one byte off, chunk 4 holds data
  // where the disk has a hole, the last chunk alike.
  std::vector<uint8_t> backup = disk;
  backup[3 * kChunk + 100] ^= 1;
  backup[4 * kChunk + 5] = 9;
  protocol::DiskChunkTable table;
  for (uint64_t c = 0; c < protocol::DiskChunks(kSize); ++c) {
    const uint64_t n = std::min(kChunk, kSize - c * kChunk);
    table.push_back(protocol::DiskChunkHash(std::span<const uint8_t>(backup).subspan(c * kChunk, n)));
  }
  EpochDiskLog log(0, store->get());
  uint64_t skipped = 0;
  protocol::DiskChunkTable short_table(table.begin(), table.end() - 1);
  EXPECT_EQ(log.CaptureUnlike(1, store->get(), 0, kSize, short_table, &skipped).code(), Code::kInvalidArgument);
  EXPECT_EQ(log.CaptureUnlike(1, store->get(), kBlock, kChunk, table, &skipped).code(), Code::kInvalidArgument)
      << "an unaligned range";
  ASSERT_TRUE(log.CaptureUnlike(1, store->get(), 0, kSize, table, &skipped).ok());
  EXPECT_EQ(skipped, kSize - 2 * kChunk);
  ASSERT_TRUE(log.Seal(1).ok());
  std::vector<uint64_t> touched;
  log.ForEachSealed([&](const protocol::DiskRecord& r) { touched.push_back(r.offset / kChunk); });
  for (uint64_t c : touched) EXPECT_TRUE(c == 3 || c == 4) << "a record in chunk " << c;
  ApplySealed(log, &backup);
  EXPECT_EQ(backup, disk);
}

// A hole (SEEK_DATA) is copied as one ZERO record in one step, read from
// nowhere and charged nothing against the epoch's allowance: a sparse disk
// is not paced like a full one. Only the data chunk counts.
TEST(SyncCopierTest, AHoleIsOneZeroRecordAndCostsNoAllowance) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/sparse.img";
  constexpr uint64_t kSize = 64u << 20;
  {
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, kSize), 0);
    std::vector<uint8_t> blk(kBlock, 0x5a);
    ASSERT_EQ(::pwrite(fd, blk.data(), blk.size(), kSize - kBlock), static_cast<ssize_t>(kBlock));
    ::close(fd);
  }
  BackingStoreOptions o;
  o.max_request = 1u << 20;
  o.read_only = true;
  auto store = BackingStore::Open(path, o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  if ((*store)->DataFrom(0) == 0) GTEST_SKIP() << "this file system does not report holes (SEEK_DATA)";
  EpochCounter clock(1);
  EpochDiskLog log(0, store->get());
  MutexHold hold;
  SyncCopierOptions co;
  co.chunk_bytes = 1u << 20;
  co.epoch_allowance = 1u << 20;  // one data chunk an epoch
  SyncCopier copier(&log, &clock, store->get(), &hold, co);
  ASSERT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_GE(copier.copied_bytes(), kSize - (1u << 20)) << "the hole was not taken in one step";
  EXPECT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));  // the data: the allowance is untouched
  EXPECT_TRUE(copier.done());
  ASSERT_TRUE(log.Seal(clock.current()).ok());
  uint64_t zero = 0, written = 0;
  log.ForEachSealed([&](const protocol::DiskRecord& r) {
    if (r.kind == DiskRecordKind::kZero) zero += r.length;
    if (r.kind == DiskRecordKind::kWrite) written += r.length;
  });
  EXPECT_EQ(zero, kSize - kBlock);
  EXPECT_EQ(written, kBlock);
}

// The whole copy step (tag, read, log, release) happens inside the hold:
// a step that let go of the front end before logging would let a guest
// write land between its read and its record.
TEST(SyncCopierTest, TheChunkIsReadAndLoggedUnderTheHold) {
  Disk d = MakeDisk(2u << 20, 5);
  EpochCounter clock(1);
  EpochDiskLog log(0, d.guest_store.get());
  struct Watching final : FrontEndHold {
    Status Hold(Clock::time_point) override {
      held = true;
      records_at_hold = log->stats().records;
      return Status::Ok();
    }
    void Unhold() override {
      held = false;
      records_at_unhold = log->stats().records;
      in_flight_at_unhold = clock->in_flight();
    }
    EpochDiskLog* log;
    EpochCounter* clock;
    bool held = false;
    uint64_t records_at_hold = 0, records_at_unhold = 0, in_flight_at_unhold = 99;
  } hold;
  hold.log = &log;
  hold.clock = &clock;
  SyncCopier copier(&log, &clock, d.copy_store.get(), &hold);
  ASSERT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));
  EXPECT_FALSE(hold.held);
  EXPECT_EQ(hold.records_at_hold, 0u);
  EXPECT_GT(hold.records_at_unhold, 0u);
  EXPECT_EQ(hold.records_at_unhold, log.stats().records);
  EXPECT_EQ(hold.in_flight_at_unhold, 0u);
}

TEST(SyncCopierTest, AHeldFrontEndTimesOutAndNothingIsCopied) {
  Disk d = MakeDisk(2u << 20, 3);
  EpochCounter clock(1);
  EpochDiskLog log(0, d.guest_store.get());
  MutexHold hold;
  SyncCopier copier(&log, &clock, d.copy_store.get(), &hold);
  hold.mu.lock();  // a request executing for ever
  auto stepped = copier.Step(Clock::now() + std::chrono::milliseconds(20));
  hold.mu.unlock();
  ASSERT_FALSE(stepped.ok());
  EXPECT_EQ(stepped.status().code(), Code::kTimeout);
  EXPECT_EQ(copier.copied_bytes(), 0u);
  EXPECT_EQ(clock.in_flight(), 0u);
  EXPECT_EQ(log.stats().records, 0u);
  EXPECT_TRUE(*copier.Step(Clock::now() + std::chrono::seconds(1)));  // and it goes on afterwards
}

TEST(SyncCopierTest, ACopyRangeBeyondTheDiskIsRefused) {
  Disk d = MakeDisk(1u << 20, 4);
  EpochDiskLog log(0, d.guest_store.get());
  EXPECT_EQ(log.CaptureRange(1, d.copy_store.get(), 1u << 20, 1).code(), Code::kInvalidArgument);
  EXPECT_EQ(log.CaptureRange(1, d.copy_store.get(), 4096, UINT64_MAX).code(), Code::kInvalidArgument);
  EXPECT_EQ(log.CaptureRange(1, nullptr, 0, 4096).code(), Code::kInvalidArgument);
  EXPECT_EQ(log.stats().records, 0u);
  EXPECT_TRUE(log.CaptureRange(1, d.copy_store.get(), 0, 1u << 20).ok());
}

}  // namespace
}  // namespace romulus::disk

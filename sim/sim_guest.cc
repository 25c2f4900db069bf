#include "sim/sim_guest.h"

#include <sys/mman.h>
#include <xxhash.h>

#include <algorithm>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <numeric>

#include "common/digest.h"
#include "common/little_endian.h"
#include "common/thread_name.h"
#include "compress/page.h"
#include "disk/backing_store.h"
#include "disk/request_executor.h"
#include "sim/sim_disk.h"

namespace romulus::sim {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSeedRegionPages = (uint64_t{16} << 20) / kPage;  // the seed's 16 MiB
constexpr int kWritesPerStep = 64;                                      // sparse, hotset
constexpr uint64_t kHotCluster = 16;                                    // hotset: pages per cluster
constexpr uint64_t kHotSpacing = 160;                                   // one cluster every 160 pages

// State blob, format version 1, little-endian, kStateBytes long:
//   0  magic "RSIM"       4  u16 version, u8 workload, u8 zero
//   8  u64 guest pages   16  u64 seed          24  u64 steps
//  32  u64 rng[4]        64  u64 cursor        72  u64 XXH3 of bytes 0..71
// Format version 2 (a guest with a disk, kStateBytesWithDisk long): bytes
// 0..71 as version 1, then
//  72  u64 disk records written   80  u64 disk bytes   88  u64 XXH3 of 0..87
// A guest without a disk keeps writing version 1, so its blobs (and what a
// backup of an older build reads) do not change.
constexpr uint8_t kMagic[4] = {'R', 'S', 'I', 'M'};
constexpr uint16_t kStateVersion = 1;
constexpr uint16_t kStateVersionDisk = 2;

// Checks the framing of a blob (size for its version, magic, checksum);
// returns its version.
Result<uint16_t> CheckStateFrame(std::span<const uint8_t> state) {
  if (state.size() < 8) return Status::Corruption("sim guest state: " + std::to_string(state.size()) + " bytes");
  const uint8_t* p = state.data();
  if (std::memcmp(p, kMagic, 4) != 0) return Status::Corruption("sim guest state: bad magic");
  uint16_t version = LoadLE16(p + 4);
  size_t want = 0;
  if (version == kStateVersion) {
    want = SimGuest::kStateBytes;
  } else if (version == kStateVersionDisk) {
    want = SimGuest::kStateBytesWithDisk;
  } else {
    return Status::Corruption("sim guest state: unsupported version " + std::to_string(version));
  }
  if (state.size() != want) {
    return Status::Corruption("sim guest state: " + std::to_string(state.size()) + " bytes, expected " +
                              std::to_string(want) + " for version " + std::to_string(version));
  }
  if (LoadLE64(p + want - 8) != XXH3_64bits(p, want - 8)) {
    return Status::Corruption("sim guest state: checksum mismatch");
  }
  return version;
}


uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

SimGuest::SimGuest(const SimSpec& spec) : spec_(spec), pages_(spec.pages()) {
  // The hot set's position depends on the seed only, so it needs no room in
  // the state blob.
  uint64_t x = spec_.seed ^ 0x686f74736574ull;  // "hotset"
  hot_base_ = SplitMix64(&x) % pages_;
  uint64_t s = spec_.seed;
  for (auto& r : rng_) r = SplitMix64(&s);
}

SimGuest::~SimGuest() {
  Stop();
  if (mem_ != nullptr) munmap(mem_, spec_.size_bytes);
}

Status SimGuest::CreateDiskFile(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("sim disk: creating " + path, errno);
  Status st = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0
                  ? Status::Ok()
                  : Status::FromErrno("sim disk: sizing " + path + " to " + std::to_string(bytes) + " bytes", errno);
  ::close(fd);
  return st;
}

Status SimGuest::OpenDisk(const std::string& path, disk::EpochClock* clock, disk::DiskWriteSink* sink) {
  if (spec_.disk_bytes == 0) return Status::InvalidArgument("sim guest " + spec_.ToString() + " has no disk");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (started_) return Status::InvalidArgument("sim guest: OpenDisk after Start");
  }
  if (disk_store_) return Status::InvalidArgument("sim guest: disk already open");
  disk::BackingStoreOptions o;
  o.max_request = 1u << 20;  // the full copy reads in 1 MiB chunks; records are 4 KiB
  auto store = disk::BackingStore::Open(path, o);
  if (!store.ok()) return store.status().With("sim guest disk");
  if ((*store)->size() < spec_.disk_bytes) {
    return Status::InvalidArgument("sim guest disk " + path + " has " + std::to_string((*store)->size()) +
                                   " bytes, the spec needs " + std::to_string(spec_.disk_bytes));
  }
  disk_store_ = std::move(*store);
  disk_exec_ = std::make_unique<disk::RequestExecutor>(disk_store_.get(), clock, sink);
  disk_block_.assign(kSimDiskBlock, 0);
  return Status::Ok();
}

void SimGuest::WriteDiskRecord() {
  const uint64_t k = disk_records_;
  const uint64_t off = SimDiskOffsetOf(spec_, k);
  Status st;
  // One whole record at a time against a streaming copy (docs/DISK.md §7.1).
  disk_gate_.Enter();
  switch (SimDiskKindOf(k)) {
    case SimDiskRecordKind::kData:
      FillSimDiskRecord(spec_.seed, k, disk_block_);
      st = disk_exec_->WriteBytes(off, disk_block_, SimDiskFuaOf(k));
      break;
    case SimDiskRecordKind::kZero:
      st = disk_exec_->Zero(off, kSimDiskBlock, /*trim=*/false, /*fua=*/false);
      break;
    case SimDiskRecordKind::kTrim:
      st = disk_exec_->Zero(off, kSimDiskBlock, /*trim=*/true, /*fua=*/false);
      break;
  }
  if (st.ok() && SimDiskFlushAfter(k)) st = disk_exec_->FlushAll();
  disk_gate_.Leave();
  if (!st.ok()) {
    // Like a guest that saw EIO: the record is not counted, it is written
    // again at the next opportunity (the writes are idempotent).
    disk_errors_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  disk_records_ = k + 1;
}

Status SimGuest::Map() {
  void* p = mmap(nullptr, spec_.size_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Status::FromErrno("sim guest: mapping " + std::to_string(spec_.size_bytes) + " bytes", errno);
  mem_ = static_cast<uint8_t*>(p);
  dirty_words_ = (pages_ + 63) / 64;
  dirty_.reset(new (std::nothrow) std::atomic<uint64_t>[dirty_words_]());
  written_.reset(new (std::nothrow) std::atomic<uint64_t>[dirty_words_]());
  if (!dirty_ || !written_) return Status::FromErrno("sim guest: allocating the dirty log", ENOMEM);
  return Status::Ok();
}

Result<std::unique_ptr<SimGuest>> SimGuest::Create(const SimSpec& spec) {
  ROMULUS_RETURN_IF_ERROR(spec.Validate());
  std::unique_ptr<SimGuest> g(new SimGuest(spec));
  ROMULUS_RETURN_IF_ERROR(g->Map());
  return g;
}

Result<std::unique_ptr<SimGuest>> SimGuest::Restore(const SimSpec& spec, std::span<const uint8_t> image,
                                                     std::span<const uint8_t> state,
                                                     const std::function<bool(uint64_t)>& may_hold_data) {
  ROMULUS_RETURN_IF_ERROR(spec.Validate());
  if (image.size() != spec.size_bytes) {
    return Status::InvalidArgument("sim guest: image of " + std::to_string(image.size()) +
                                   " bytes for a guest of " + std::to_string(spec.size_bytes));
  }
  std::unique_ptr<SimGuest> g(new SimGuest(spec));
  ROMULUS_RETURN_IF_ERROR(g->LoadState(state));
  ROMULUS_RETURN_IF_ERROR(g->Map());
  // Zero pages are already zero in the fresh mapping: skipping them keeps a
  // mostly-empty guest mostly unbacked.
  for (uint64_t pfn = 0; pfn < g->pages_; ++pfn) {
    if (may_hold_data && !may_hold_data(pfn)) continue;
    const uint8_t* src = image.data() + pfn * kPage;
    if (!compress::IsZeroPage(src)) {
      std::memcpy(g->mem_ + pfn * kPage, src, kPage);
      g->written_[pfn >> 6].fetch_or(uint64_t{1} << (pfn & 63), std::memory_order_relaxed);
    }
  }
  return g;
}

Result<uint64_t> SimDiskRecordsInState(std::span<const uint8_t> state) {
  Result<uint16_t> version = CheckStateFrame(state);
  if (!version.ok()) return version.status();
  if (*version == kStateVersion) return uint64_t{0};
  return LoadLE64(state.data() + 72);
}

Status SimGuest::LoadState(std::span<const uint8_t> state) {
  Result<uint16_t> frame = CheckStateFrame(state);
  if (!frame.ok()) return frame.status();
  const uint16_t version = *frame;
  const uint8_t* p = state.data();
  const bool has_disk = spec_.disk_bytes != 0;
  if (has_disk != (version == kStateVersionDisk)) {
    return Status::Corruption(has_disk ? "sim guest state: taken from a guest without a disk"
                                       : "sim guest state: taken from a guest with a disk");
  }
  uint64_t disk_records = 0;
  if (has_disk) {
    if (LoadLE64(p + 80) != spec_.disk_bytes) {
      return Status::Corruption("sim guest state: taken from a guest with a disk of " +
                                std::to_string(LoadLE64(p + 80)) + " bytes, this one has " +
                                std::to_string(spec_.disk_bytes));
    }
    disk_records = LoadLE64(p + 72);
  }
  if (p[6] != static_cast<uint8_t>(spec_.workload) || p[7] != 0) {
    return Status::Corruption("sim guest state: taken from a different workload");
  }
  if (LoadLE64(p + 8) != pages_) {
    return Status::Corruption("sim guest state: taken from a guest of " + std::to_string(LoadLE64(p + 8)) +
                              " pages, this one has " + std::to_string(pages_));
  }
  if (LoadLE64(p + 16) != spec_.seed) return Status::Corruption("sim guest state: taken with a different seed");
  uint64_t rng[4];
  for (int i = 0; i < 4; ++i) rng[i] = LoadLE64(p + 32 + 8 * i);
  if ((rng[0] | rng[1] | rng[2] | rng[3]) == 0) return Status::Corruption("sim guest state: RNG state is zero");
  uint64_t cursor = LoadLE64(p + 64);
  if (cursor >= pages_) return Status::Corruption("sim guest state: cursor beyond the guest");
  std::memcpy(rng_, rng, sizeof rng_);
  cursor_ = cursor;
  disk_records_ = disk_records;
  steps_.store(LoadLE64(p + 24), std::memory_order_release);
  return Status::Ok();
}

Status SimGuest::CaptureState(std::vector<uint8_t>* state) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!WriterStopped()) return Status::InvalidArgument("sim guest: CaptureState while the workload runs");
  }
  const bool has_disk = spec_.disk_bytes != 0;
  state->assign(has_disk ? kStateBytesWithDisk : kStateBytes, 0);
  uint8_t* p = state->data();
  std::memcpy(p, kMagic, 4);
  StoreLE16(p + 4, has_disk ? kStateVersionDisk : kStateVersion);
  p[6] = static_cast<uint8_t>(spec_.workload);
  p[7] = 0;
  StoreLE64(p + 8, pages_);
  StoreLE64(p + 16, spec_.seed);
  StoreLE64(p + 24, steps());
  for (int i = 0; i < 4; ++i) StoreLE64(p + 32 + 8 * i, rng_[i]);
  StoreLE64(p + 64, cursor_);
  if (has_disk) {
    StoreLE64(p + 72, disk_records_);
    StoreLE64(p + 80, spec_.disk_bytes);
    StoreLE64(p + 88, XXH3_64bits(p, 88));
  } else {
    StoreLE64(p + 72, XXH3_64bits(p, 72));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Workloads

uint64_t SimGuest::NextRandom() {  // xoshiro256**
  const uint64_t result = Rotl(rng_[1] * 5, 7) * 9;
  const uint64_t t = rng_[1] << 17;
  rng_[2] ^= rng_[0];
  rng_[3] ^= rng_[1];
  rng_[1] ^= rng_[2];
  rng_[0] ^= rng_[3];
  rng_[2] ^= t;
  rng_[3] = Rotl(rng_[3], 45);
  return result;
}

uint64_t SimGuest::RandomBelow(uint64_t n) {
  // Multiply-shift: a tiny bias for huge n is irrelevant here, and unlike
  // rejection sampling it draws exactly one number per call.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(NextRandom()) * n) >> 64);
}

uint64_t SimGuest::hot_pages() const {
  return (pages_ / kHotSpacing) * kHotCluster + std::min(kHotCluster, pages_ % kHotSpacing);
}

uint64_t SimGuest::HotPfn(uint64_t k) const {
  uint64_t d = (k / kHotCluster) * kHotSpacing + k % kHotCluster;  // < pages_ for k < hot_pages()
  return (hot_base_ + d) % pages_;
}

bool SimGuest::IsHotPage(uint64_t pfn) const {
  if (pfn >= pages_) return false;
  uint64_t d = (pfn + pages_ - hot_base_) % pages_;
  return d % kHotSpacing < kHotCluster;
}

void SimGuest::MarkDirty(uint64_t pfn) {
  std::atomic<uint64_t>& w = dirty_[pfn >> 6];
  const uint64_t bit = uint64_t{1} << (pfn & 63);
  // Read first: re-dirtying a page (the common case) then costs no atomic RMW.
  if ((w.load(std::memory_order_relaxed) & bit) == 0) w.fetch_or(bit, std::memory_order_relaxed);
  std::atomic<uint64_t>& e = written_[pfn >> 6];
  if ((e.load(std::memory_order_relaxed) & bit) == 0) e.fetch_or(bit, std::memory_order_relaxed);
}

bool SimGuest::MayHoldData(uint64_t pfn) const {
  if (pfn >= pages_) return false;
  return (written_[pfn >> 6].load(std::memory_order_relaxed) & (uint64_t{1} << (pfn & 63))) != 0;
}

void SimGuest::Write8(uint64_t pfn, uint64_t word, uint64_t value) {
  std::memcpy(mem_ + pfn * kPage + word * 8, &value, 8);
  MarkDirty(pfn);
}

void SimGuest::Step() {
  switch (spec_.workload) {
    case Workload::kSeed: {
      const uint64_t region = std::min(pages_, kSeedRegionPages);
      for (uint64_t pfn = 0; pfn < region; ++pfn) {
        uint8_t* page = mem_ + pfn * kPage;
        for (int i = 0; i < 4; ++i) page[i * 1024]++;
        MarkDirty(pfn);
      }
      break;
    }
    case Workload::kSparse:
      for (int i = 0; i < kWritesPerStep; ++i) {
        uint64_t pfn = RandomBelow(pages_);
        uint64_t word = RandomBelow(kPage / 8);
        Write8(pfn, word, NextRandom());
      }
      break;
    case Workload::kHotset: {
      const uint64_t hot = hot_pages();
      for (int i = 0; i < kWritesPerStep; ++i) {
        uint64_t pfn = (NextRandom() & 15) == 0 ? RandomBelow(pages_) : HotPfn(RandomBelow(hot));
        uint64_t word = RandomBelow(kPage / 8);
        Write8(pfn, word, NextRandom());
      }
      break;
    }
    case Workload::kSequential: {
      // Every word differs from what the previous lap left there, so each
      // page is fully rewritten: the codec's worst case (RAW pages).
      const uint64_t base = steps() * (kPage / 8) + 1;
      uint8_t* page = mem_ + cursor_ * kPage;
      for (uint64_t j = 0; j < kPage / 8; ++j) {
        uint64_t v = base + j;
        std::memcpy(page + j * 8, &v, 8);
      }
      MarkDirty(cursor_);
      cursor_ = cursor_ + 1 == pages_ ? 0 : cursor_ + 1;
      break;
    }
    case Workload::kIdle:
      break;
  }
  // The disk writer: one record every kSimDiskStepsPerRecord steps, so its
  // rate follows the workload's and Pause lands between records.
  if (disk_exec_ && spec_.workload != Workload::kIdle &&
      (steps_.load(std::memory_order_relaxed) + 1) % kSimDiskStepsPerRecord == 0) {
    WriteDiskRecord();
  }
  steps_.store(steps_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

Status SimGuest::RunSteps(uint64_t n) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (started_) return Status::InvalidArgument("sim guest: RunSteps while the workload thread exists");
  }
  if (spec_.disk_bytes != 0 && !disk_exec_) return Status::InvalidArgument("sim guest: the disk is not open (OpenDisk)");
  for (uint64_t i = 0; i < n; ++i) Step();
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Workload thread

Status SimGuest::Start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (started_) return Status::InvalidArgument("sim guest: workload already started");
  if (spec_.disk_bytes != 0 && !disk_exec_) return Status::InvalidArgument("sim guest: the disk is not open (OpenDisk)");
  started_ = true;
  stop_ = false;
  worker_ = std::thread([this] {
    NameThisThread("sim-guest");
    WorkerLoop();
  });
  return Status::Ok();
}

void SimGuest::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!started_) return;
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  std::lock_guard<std::mutex> lk(mu_);
  started_ = false;
  stop_ = false;
}

void SimGuest::WorkerLoop() {
  using Clock = std::chrono::steady_clock;
  std::unique_lock<std::mutex> lk(mu_);
  // The rate schedule: step anchor_steps + n is due at anchor + n / rate.
  // Time spent paused is moved out of the schedule (anchor shifts by it), so
  // the engine's per-epoch pauses neither cost steps nor cause a catch-up
  // burst after a long pause.
  bool anchored = false;
  Clock::time_point anchor;
  uint64_t anchor_steps = 0;
  bool was_paused = false;
  Clock::time_point paused_at;
  while (!stop_) {
    if (paused_ || spec_.workload == Workload::kIdle) {
      if (!was_paused) {
        was_paused = true;
        paused_at = Clock::now();
      }
      cv_.wait(lk);
      continue;
    }
    if (was_paused) {
      was_paused = false;
      anchor += Clock::now() - paused_at;
    }
    if (spec_.rate != 0) {
      if (!anchored) {
        anchor = Clock::now();
        anchor_steps = steps();
        anchored = true;
      }
      const double ahead = static_cast<double>(steps() - anchor_steps) / static_cast<double>(spec_.rate);
      const auto due = anchor + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(ahead));
      const auto now = Clock::now();
      if (now < due) {
        cv_.wait_until(lk, due);  // Pause/Stop/Resume wake us; the loop re-checks
        continue;
      }
      if (now - due > std::chrono::milliseconds(100)) {
        // Starved of CPU: forget the backlog rather than burst to repay it.
        anchor = now;
        anchor_steps = steps();
      }
    }
    in_step_ = true;
    lk.unlock();
    Step();
    lk.lock();
    in_step_ = false;
    if (paused_) cv_.notify_all();  // a Pause() is waiting for this step
  }
}

bool SimGuest::WriterStopped() const { return !started_ || (paused_ && !in_step_); }

bool SimGuest::paused() const {
  std::lock_guard<std::mutex> lk(mu_);
  return paused_;
}

Status SimGuest::Pause() {
  std::unique_lock<std::mutex> lk(mu_);
  paused_ = true;
  cv_.wait(lk, [this] { return !in_step_; });
  return Status::Ok();
}

Status SimGuest::Resume() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    paused_ = false;
  }
  cv_.notify_all();
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Dirty log and memory access

Status SimGuest::HarvestDirty(std::vector<uint64_t>* pfns) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!WriterStopped()) return Status::InvalidArgument("sim guest: HarvestDirty while the workload runs");
  }
  pfns->clear();
  if (all_dirty_.exchange(false)) {
    for (uint64_t w = 0; w < dirty_words_; ++w) dirty_[w].store(0, std::memory_order_relaxed);
    pfns->resize(pages_);
    std::iota(pfns->begin(), pfns->end(), uint64_t{0});
    return Status::Ok();
  }
  // Word scan: O(pages/64) plus one iteration per dirty page.
  for (uint64_t w = 0; w < dirty_words_; ++w) {
    if (dirty_[w].load(std::memory_order_relaxed) == 0) continue;
    uint64_t bits = dirty_[w].exchange(0, std::memory_order_relaxed);
    while (bits != 0) {
      pfns->push_back(w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
      bits &= bits - 1;
    }
  }
  return Status::Ok();
}

const uint8_t* SimGuest::PageData(uint64_t pfn) {
  if (pfn >= pages_) return nullptr;
  return mem_ + pfn * kPage;
}

void SimGuest::MarkAllDirty() { all_dirty_.store(true); }

uint64_t SimGuest::ComputeDigest() const {
  uint64_t sum = 0;
  for (uint64_t pfn = 0; pfn < pages_; ++pfn) sum += PageHash(pfn, mem_ + pfn * kPage);
  return sum;
}

}  // namespace romulus::sim

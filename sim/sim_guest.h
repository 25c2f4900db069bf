// SimGuest: a guest without a hypervisor, for tests, benchmarks and the demo.
//
// Memory is an anonymous MAP_NORESERVE mapping (zero-filled, lazily backed,
// so a 1 GiB guest that writes 16 MiB costs 16 MiB), a software dirty log
// (one atomic bit per page) records every page the workload writes, and a
// workload (see sim_spec.h) writes memory in "steps".
//
// Determinism. The workload is a pure function of (memory, state): its whole
// state is the step count, an xoshiro256** RNG and a cursor, serialised by
// CaptureState into a small versioned little-endian blob. Restore() rebuilds
// a guest from a memory image plus such a blob, and it then writes exactly
// what the original would have written. This is what lets the backup resume
// the simulated guest after failover from the last committed checkpoint, and
// lets tests compare two guests byte for byte.
//
// Two ways to drive it:
//   - Start(): a workload thread runs steps at spec.rate steps/s (0 =
//     unthrottled). Pause() waits for the step in progress to finish, so the
//     memory is always "after k whole steps" while paused: no torn writes.
//     Resume() restarts it. Time spent paused does not count against the
//     rate, and a workload starved of CPU drops its backlog (beyond 100 ms)
//     instead of bursting to repay it.
//   - RunSteps(n): n steps on the caller's thread, for deterministic tests.
//     Refused while the workload thread exists.
//
// GuestSource calls (HarvestDirty, PageData, CaptureState) need a stopped
// writer: the guest paused, or no workload thread. HarvestDirty refuses
// otherwise rather than return a racy answer.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "disk/front_end_hold.h"
#include "replicator/guest_source.h"
#include "sim/sim_spec.h"

namespace romulus::disk {
class BackingStore;
class DiskWriteSink;
class EpochClock;
class RequestExecutor;
}  // namespace romulus::disk

namespace romulus::sim {

class SimGuest : public replicator::GuestSource {
 public:
  // A fresh, zeroed guest at step 0. Does not start the workload thread.
  static Result<std::unique_ptr<SimGuest>> Create(const SimSpec& spec);
  // A guest resumed from image (exactly spec.size_bytes) and a CaptureState
  // blob taken at the same point. Corruption if the blob is malformed or
  // belongs to a different guest (size, workload, seed). The image is copied
  // (zero pages are skipped, so the copy stays sparse). Every page is dirty.
  // `may_hold_data` (optional): false for a pfn the image holds as zeros
  // without looking (a hole): it is not read at all.
  static Result<std::unique_ptr<SimGuest>> Restore(const SimSpec& spec, std::span<const uint8_t> image,
                                                   std::span<const uint8_t> state,
                                                   const std::function<bool(uint64_t)>& may_hold_data = nullptr);
  ~SimGuest() override;  // stops the workload thread, unmaps memory

  SimGuest(const SimGuest&) = delete;
  SimGuest& operator=(const SimGuest&) = delete;

  // ---- The simulated disk (spec.disk_bytes > 0; sim/sim_disk.h) ----
  // Creates (or truncates) a sparse, zero-filled disk file of `bytes` bytes.
  static Status CreateDiskFile(const std::string& path, uint64_t bytes);
  // Opens the file the guest's disk writer writes to (at least
  // spec.disk_bytes; only that much is used). Every record goes through a
  // disk::RequestExecutor: tagged by `clock`, reported to `sink` (both may be
  // null: a disk that is not replicated, e.g. the backup's activated guest).
  // A restored guest continues with record SimDiskRecordsInState(state).
  // REQUIRES: called before Start/RunSteps, at most once; clock and sink
  // outlive the guest. InvalidArgument for a spec without a disk.
  Status OpenDisk(const std::string& path, disk::EpochClock* clock = nullptr, disk::DiskWriteSink* sink = nullptr);
  // The disk's store (null before OpenDisk): the engine's full copy reads it.
  disk::BackingStore* disk_store() const { return disk_store_.get(); }
  // Holds the disk writer still between records (the streaming copy's
  // FrontEndHold, disk/sync_copier.h).
  disk::FrontEndHold* disk_hold() { return &disk_gate_; }
  // Disk requests that failed locally (the writer retries the record).
  uint64_t disk_errors() const { return disk_errors_.load(std::memory_order_relaxed); }

  // Starts the workload thread; it runs unless Pause() was called before (it
  // then waits for Resume). InvalidArgument if already started, or if the
  // spec has a disk and OpenDisk was not called.
  Status Start();
  // Joins the workload thread (after the step in progress); idempotent.
  // RunSteps may be used again afterwards.
  void Stop();
  // Runs n steps synchronously. InvalidArgument while the thread exists.
  Status RunSteps(uint64_t n);

  // Steps completed so far (including those before a Restore).
  uint64_t steps() const { return steps_.load(std::memory_order_acquire); }
  bool paused() const;
  const SimSpec& spec() const { return spec_; }
  uint64_t size_bytes() const { return spec_.size_bytes; }
  // The guest's memory (size_bytes()); stable only while no writer runs.
  const uint8_t* memory() const { return mem_; }
  // MemoryDigest value of the whole memory, computed from scratch: O(size).
  // Needs a stopped writer like the GuestSource calls.
  uint64_t ComputeDigest() const;
  // The hotset workload's hot pages (also meaningful for tests of the other
  // workloads, which ignore it).
  bool IsHotPage(uint64_t pfn) const;
  uint64_t hot_pages() const;

  // GuestSource.
  uint64_t guest_pages() const override { return pages_; }
  std::string identity() const override { return spec_.ToString(); }
  Status Pause() override;
  Status HarvestDirty(std::vector<uint64_t>* pfns) override;
  // nullptr if pfn is out of range.
  const uint8_t* PageData(uint64_t pfn) override;
  Status CaptureState(std::vector<uint8_t>* state) override;
  Status Resume() override;
  void MarkAllDirty() override;
  bool MayHoldData(uint64_t pfn) const override;

  // Size of a CaptureState blob (fixed for format version 1).
  static constexpr size_t kStateBytes = 80;
  // Format version 2, a guest with a disk (adds the disk records written).
  static constexpr size_t kStateBytesWithDisk = 96;
  // Disk records written so far (sim/sim_disk.h); 0 without a disk.
  uint64_t disk_records() const { return disk_records_; }

 private:
  explicit SimGuest(const SimSpec& spec);
  Status Map();
  Status LoadState(std::span<const uint8_t> state);
  void Step();  // one workload step: writes memory, marks pages dirty
  void WriteDiskRecord();  // the disk writer's next record (inside a step)
  void MarkDirty(uint64_t pfn);
  void Write8(uint64_t pfn, uint64_t word, uint64_t value);
  uint64_t NextRandom();
  uint64_t RandomBelow(uint64_t n);
  uint64_t HotPfn(uint64_t k) const;
  void WorkerLoop();
  bool WriterStopped() const;  // caller holds mu_

  const SimSpec spec_;
  const uint64_t pages_;
  uint8_t* mem_ = nullptr;
  std::unique_ptr<std::atomic<uint64_t>[]> dirty_;  // one bit per page
  // One bit per page ever written (or restored with data): the pages a
  // first sync must read; the others are zero without looking.
  std::unique_ptr<std::atomic<uint64_t>[]> written_;
  uint64_t dirty_words_ = 0;
  std::atomic<bool> all_dirty_{true};

  // Workload state (what CaptureState serialises). Touched only by the
  // thread running steps, or by anyone while the writer is stopped.
  std::atomic<uint64_t> steps_{0};
  uint64_t rng_[4] = {};
  uint64_t cursor_ = 0;     // sequential: next page to fill
  uint64_t hot_base_ = 0;   // hotset: where the hot clusters start (from the seed)
  uint64_t disk_records_ = 0;  // disk: records the guest believes written
  std::unique_ptr<disk::BackingStore> disk_store_;
  std::unique_ptr<disk::RequestExecutor> disk_exec_;
  disk::RequestGate disk_gate_;
  std::vector<uint8_t> disk_block_;  // one record, reused
  std::atomic<uint64_t> disk_errors_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
  bool started_ = false;
  bool stop_ = false;
  bool paused_ = false;
  bool in_step_ = false;
};

}  // namespace romulus::sim

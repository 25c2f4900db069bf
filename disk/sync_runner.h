// SyncRunner: the thread that drives one disk's SyncCopier while the guest
// runs (docs/DISK.md §7.1), and the one place that says whether a sealed
// epoch leaves the backup's copy of the disk whole.
//
//   engine thread                         copier thread
//   Start()        (guest paused, log     Step() … paced out → waits for
//                   reset, clock about     Kick() or 100 ms … Step() …
//                   to advance)            done, or a fatal error: exits
//   EpochAdvanced() after Pause; Kick() after Seal
//   SyncStateAt(t) after Seal(t)
//   Stop()         a new session, the tap's end
//
// Pacing lives in SyncCopier (pure SyncMayCopy); this class only decides
// when to try again. A hold that times out (a request executing too long)
// is retried; any other copier error is the session's end: the epoch log
// cannot hold a consistent copy any more, and SyncStateAt reports it so the
// engine resyncs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "disk/sync_copier.h"
#include "protocol/disk_records.h"

namespace romulus::disk {

class SyncRunner {
 public:
  // Every pointer outlives the runner.
  SyncRunner(EpochDiskLog* log, EpochCounter* clock, BackingStore* store, FrontEndHold* hold,
             SyncCopierOptions options = {});
  ~SyncRunner();
  SyncRunner(const SyncRunner&) = delete;
  SyncRunner& operator=(const SyncRunner&) = delete;

  // Starts a copy of the whole disk from its first byte (stopping one in
  // progress first), leaving out the chunks `backup` (may be null) says
  // the backup holds (SyncCopier). Engine thread.
  void Start(std::shared_ptr<const protocol::DiskChunkTable> backup = nullptr);
  // Abandons a copy in progress and joins the thread. Idempotent.
  void Stop();
  // A new epoch began (the clock advanced): the copy's allowance is fresh.
  // Any thread.
  void EpochAdvanced();
  // An epoch was sealed: the log may have room again. Any thread.
  void Kick();

  // The sync state of the epoch tagged `tag`, just sealed (REQUIRES: the
  // log sealed every tag <= tag, so a chunk tagged <= tag is in it): whole
  // (protocol::kSyncWhole) when no copy is in progress or the finished copy's last
  // chunk is tagged <= tag (the copy is then retired); else
  // protocol::SyncStateOfPermille(the part of the disk whose chunks are
  // tagged <= tag: what the backup holds once that epoch commits). The
  // copier's fatal error, once.
  Result<uint32_t> SyncStateAt(uint64_t tag);

  bool active() const;
  uint32_t permille() const;
  // Of the copy started last: bytes of disk walked, and of those left out
  // (the backup held them).
  uint64_t walked_bytes() const;
  uint64_t skipped_bytes() const;

 private:
  void Run();

  EpochDiskLog* const log_;
  EpochCounter* const clock_;
  BackingStore* const store_;
  FrontEndHold* const hold_;
  const SyncCopierOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  bool kicked_ GUARDED_BY(mu_) = false;
  bool advanced_ GUARDED_BY(mu_) = false;
  bool active_ GUARDED_BY(mu_) = false;     // a copy is in progress or done but not yet retired
  bool done_ GUARDED_BY(mu_) = false;
  uint64_t complete_tag_ GUARDED_BY(mu_) = 0;
  uint32_t permille_ GUARDED_BY(mu_) = 0;
  uint64_t walked_ GUARDED_BY(mu_) = 0;
  uint64_t skipped_ GUARDED_BY(mu_) = 0;
  std::shared_ptr<const protocol::DiskChunkTable> backup_ GUARDED_BY(mu_);
  // Progress as the backup will see it: after the last chunk of each tag
  // copied but not yet sealed (tags ascend; a few entries at most), and as
  // of the last sealed tag.
  struct Mark {
    uint64_t tag;
    uint32_t permille;
  };
  std::deque<Mark> marks_ GUARDED_BY(mu_);
  uint32_t sealed_permille_ GUARDED_BY(mu_) = 0;
  Status error_ GUARDED_BY(mu_);
  std::thread thread_;  // engine thread: Start/Stop only
};

}  // namespace romulus::disk

// SyncCopier: the streaming copy of one disk to a backup that does not
// have it (docs/DISK.md §7.1), one chunk at a time while the guest runs.
//
// A chunk is copied as if it were one more request of the guest's front
// end: the copier holds the front end (no request executes; none holds a
// tag), takes a tag from the disk's epoch clock, appends the chunk's
// current content to the epoch log as records of that tag, releases the
// tag and the front end. The log is then one total order of the guest's
// writes and the copy, and the backup, which applies each epoch's records
// in that order, never lets a chunk overwrite a later write. Nothing is
// paused and no bitmap is needed.
//
// The copy is complete, and the backup's disk whole, once the epoch tagged
// `complete_epoch()` is committed: every write that executed before the
// last chunk has a tag <= that epoch.
//
// Pacing (`SyncMayCopy`, pure) keeps the log bounded: a chunk is copied
// only while the open epochs hold at most half the log's budget after it,
// and while this epoch's allowance is not spent; the guest's writes keep
// the rest. Not thread-safe: one thread (the export's copier, or the
// engine) drives it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "common/status.h"
#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/front_end_hold.h"
#include "protocol/disk_digests.h"

namespace romulus::disk {

struct SyncCopierOptions {
  uint64_t chunk_bytes = uint64_t{1} << 20;
  // Bytes the copy may add to one epoch (the backup stages an epoch whole,
  // bounded by its --max-disk-staging and --max-disk-spill).
  uint64_t epoch_allowance = uint64_t{64} << 20;
};

// May one more chunk of `chunk` bytes go into the open epoch? Only while
// the log keeps half its budget for the guest's writes and the epoch's
// allowance is not spent.
bool SyncMayCopy(uint64_t open_bytes, uint64_t budget, uint64_t copied_this_epoch, uint64_t allowance,
                 uint64_t chunk);

class SyncCopier {
 public:
  // Copies [0, store->size()). All must outlive the copier; `store` is the
  // copier's own handle on the disk (it reads while the front end is held,
  // never through the front end's buffers).
  // `backup` (may be null): what the backup's copy holds, one hash per
  // chunk (DISK_DIGESTS, docs/DISK.md §7.4); a chunk whose content matches
  // it is stepped over, logging nothing.
  SyncCopier(EpochDiskLog* log, EpochCounter* clock, BackingStore* store, FrontEndHold* hold,
             SyncCopierOptions options = {}, std::shared_ptr<const protocol::DiskChunkTable> backup = nullptr);

  // Copies one chunk if pacing allows: true if it did, false if paced out
  // (call again after the next epoch began) or done. Errors: the hold timed
  // out (nothing copied, retry later), the read failed or the log's budget
  // broke (the session needs a resync: the log says so at Seal too).
  Result<bool> Step(std::chrono::steady_clock::time_point hold_deadline);
  // A new epoch began (the engine advanced the clock): the allowance is
  // fresh.
  void OnEpochAdvanced() { copied_this_epoch_ = 0; }

  bool done() const { return next_ >= total_; }
  uint64_t copied_bytes() const { return next_; }  // of the disk, walked so far (skipped included)
  uint64_t skipped_bytes() const { return skipped_; }  // of those, held by the backup already
  uint64_t total_bytes() const { return total_; }
  // 0..1000, for progress reports.
  uint32_t permille() const;
  // The tag of the last chunk copied (0 before the first).
  uint64_t last_tag() const { return last_tag_; }
  // The epoch whose commit completes the copy. REQUIRES: done().
  uint64_t complete_epoch() const { return complete_epoch_; }

 private:
  Result<bool> StepCompared(std::chrono::steady_clock::time_point hold_deadline);

  EpochDiskLog* log_;
  EpochCounter* clock_;
  BackingStore* store_;
  FrontEndHold* hold_;
  const SyncCopierOptions options_;
  const uint64_t total_;
  uint64_t next_ = 0;
  uint64_t copied_this_epoch_ = 0;
  uint64_t complete_epoch_ = 0;
  uint64_t last_tag_ = 0;
  const std::shared_ptr<const protocol::DiskChunkTable> backup_;
  uint64_t skipped_ = 0;
};

}  // namespace romulus::disk

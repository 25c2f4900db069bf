// LocalDiskTap: the DiskTap of a disk whose front end runs in this process
// (the simulated guest's writer, sim/sim_guest.h): the engine reaches the
// front end's EpochCounter and EpochDiskLog directly.
//
// The in-pause full copy needs a quiescent front end, which the caller
// provides: the simulated guest's writer runs between the guest's steps, so
// nothing is in flight while the guest is paused. (A front end that keeps
// executing requests while the guest is paused, like the NBD server, lives
// behind RemoteDiskTap in `romulus disk-export`, which holds its server
// still.) The streaming copy (CopyMode::kStream) runs beside the guest on a
// SyncRunner thread of the tap's own and excludes the writer through `hold`
// (the writer's RequestGate); without a hold the tap cannot stream.
#pragma once

#include "disk/backing_store.h"
#include "disk/disk_tap.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/sync_runner.h"

#include <memory>

namespace romulus::disk {

class LocalDiskTap final : public DiskTap {
 public:
  // Every pointer outlives the tap. REQUIRES: the front end has not written
  // yet (the tap makes `log` track changes, for CopyMode::kChanged).
  LocalDiskTap(protocol::DiskInfo info, BackingStore* store, EpochCounter* clock, EpochDiskLog* log,
               FrontEndHold* hold = nullptr, SyncCopierOptions sync = {});

  const protocol::DiskInfo& info() const override { return info_; }
  bool can_stream() const override { return sync_ != nullptr; }
  uint64_t lineage() const override { return lineage_; }
  void Acked(uint64_t tag) override { log_->ForgetChangesThrough(tag); }
  uint64_t change_floor() const override { return log_->changes_forgotten_through(); }
  uint64_t copied_regions() const override { return copied_regions_; }
  bool can_compare() const override { return true; }
  uint64_t walked_bytes() const override;
  uint64_t skipped_bytes() const override;
  Result<uint64_t> Pause(CopyMode copy, uint64_t since = 0, uint64_t lineage = 0,
                         std::shared_ptr<const protocol::DiskChunkTable> backup = nullptr) override;
  Status Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) override;
  void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const override;
  uint32_t sealed_sync_state() const override { return sealed_sync_state_; }

  // Stops a streaming copy in progress (before the guest's writer and the
  // log go away).
  void StopSync();

 private:
  const protocol::DiskInfo info_;
  BackingStore* const store_;
  EpochCounter* const clock_;
  EpochDiskLog* const log_;
  std::unique_ptr<SyncRunner> sync_;  // null without a hold
  uint32_t sealed_sync_state_ = protocol::kSyncWhole;
  const uint64_t lineage_;
  uint64_t copied_regions_ = 0;
  // The last in-pause copy's (a streaming copy's are its runner's).
  uint64_t walked_ = 0, skipped_ = 0;
  bool streamed_ = false;  // the last whole copy was streamed
};

}  // namespace romulus::disk

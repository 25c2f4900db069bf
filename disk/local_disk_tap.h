// LocalDiskTap: the DiskTap of a disk whose front end runs in this process
// (the simulated guest's writer, sim/sim_guest.h): the engine reaches the
// front end's EpochCounter and EpochDiskLog directly.
//
// The full copy needs a quiescent front end, which the caller provides: the
// simulated guest's writer runs between the guest's steps, so nothing is in
// flight while the guest is paused. (A front end that keeps executing
// requests while the guest is paused, like the NBD server, lives behind
// RemoteDiskTap in `romulus disk-export`, which holds its server still.)
#pragma once

#include "disk/backing_store.h"
#include "disk/disk_tap.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"

namespace romulus::disk {

class LocalDiskTap final : public DiskTap {
 public:
  // Every pointer outlives the tap.
  LocalDiskTap(protocol::DiskInfo info, BackingStore* store, EpochCounter* clock, EpochDiskLog* log)
      : info_(std::move(info)), store_(store), clock_(clock), log_(log) {}

  const protocol::DiskInfo& info() const override { return info_; }
  Result<uint64_t> Pause(bool full_copy) override;
  Status Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) override;
  void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const override;

 private:
  const protocol::DiskInfo info_;
  BackingStore* const store_;
  EpochCounter* const clock_;
  EpochDiskLog* const log_;
};

}  // namespace romulus::disk

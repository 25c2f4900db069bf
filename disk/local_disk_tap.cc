#include "disk/local_disk_tap.h"

namespace romulus::disk {

Result<uint64_t> LocalDiskTap::Pause(bool full_copy) {
  if (full_copy) {
    // The backup's copy may be anything (none, an old one): the first epoch
    // carries the whole disk as it is at this pause, and what the log held
    // from before is superseded by it.
    log_->Reset();
    Status st = log_->CaptureFullCopy(clock_->current(), store_);
    if (!st.ok()) return st;
  }
  return clock_->Advance();
}

Status LocalDiskTap::Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) {
  // A request read before the advance may still be executing: its report
  // belongs to this epoch (DISK.md §3).
  ROMULUS_RETURN_IF_ERROR(clock_->WaitDrained(tag, deadline));
  return log_->Seal(tag);
}

void LocalDiskTap::ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const {
  log_->ForEachSealed(fn);
}

}  // namespace romulus::disk

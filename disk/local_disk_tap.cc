#include "disk/local_disk_tap.h"

#include "common/random_id.h"

namespace romulus::disk {

LocalDiskTap::LocalDiskTap(protocol::DiskInfo info, BackingStore* store, EpochCounter* clock, EpochDiskLog* log,
                           FrontEndHold* hold, SyncCopierOptions sync)
    : info_(std::move(info)), store_(store), clock_(clock), log_(log), lineage_(RandomNonZeroId()) {
  if (!log_->tracks_changes()) log_->TrackChanges(info_.size_bytes);
  if (hold != nullptr) sync_ = std::make_unique<SyncRunner>(log, clock, store, hold, sync);
}

void LocalDiskTap::StopSync() {
  if (sync_) sync_->Stop();
}

uint64_t LocalDiskTap::walked_bytes() const { return streamed_ ? sync_->walked_bytes() : walked_; }
uint64_t LocalDiskTap::skipped_bytes() const { return streamed_ ? sync_->skipped_bytes() : skipped_; }

Result<uint64_t> LocalDiskTap::Pause(CopyMode copy, uint64_t since, uint64_t lineage,
                                     std::shared_ptr<const protocol::DiskChunkTable> backup) {
  // A table that does not describe this disk is not used (the copy is whole),
  // as the export and the copier do.
  if (backup && backup->size() != protocol::DiskChunks(info_.size_bytes)) backup.reset();
  if (copy == CopyMode::kStream && !sync_) {
    return Status::Unsupported("disk " + info_.name + ": no streaming copy without a front-end hold");
  }
  if (copy == CopyMode::kChanged && lineage != lineage_) {
    return Status::Unsupported("disk " + info_.name + ": the backup's copy is of another front end");
  }
  if (copy == CopyMode::kChanged && (since >= clock_->current() || !log_->ChangesKnownSince(since))) {
    // Refused before anything (a copy in progress included) is touched: the
    // engine copies the whole disk instead.
    return Status::Unsupported("disk " + info_.name + ": the changes since tag " + std::to_string(since) +
                               " are not known");
  }
  if (copy == CopyMode::kChanged) {
    StopSync();
    Result<uint64_t> regions = log_->CaptureChangedSince(clock_->current(), store_, since);
    if (!regions.ok()) return regions.status();
    copied_regions_ = *regions;
  } else if (copy != CopyMode::kNone) {
    // The backup's copy may be anything (none, an old one): what the log
    // held from before is superseded by the new session's copy. A copy
    // still running for an earlier session is abandoned first (its chunks
    // are in the log being forgotten).
    StopSync();
    log_->Reset();
  }
  if (copy == CopyMode::kInPause) {
    // The whole disk as it is at this pause, less what the backup holds.
    walked_ = skipped_ = 0;
    streamed_ = false;
    Status st = backup ? log_->CaptureUnlike(clock_->current(), store_, 0, store_->size(), *backup, &skipped_)
                       : log_->CaptureFullCopy(clock_->current(), store_);
    if (!st.ok()) return st;
    walked_ = store_->size();
  }
  const uint64_t tag = clock_->Advance();
  // The copy's chunks are tagged from the next epoch on (the ending one
  // carries no record of this session: its log was just forgotten).
  if (copy == CopyMode::kStream) {
    streamed_ = true;
    sync_->Start(std::move(backup));
  } else if (sync_) {
    sync_->EpochAdvanced();
  }
  return tag;
}

Status LocalDiskTap::Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) {
  // A request read before the advance may still be executing: its report
  // belongs to this epoch (DISK.md §3); so may a chunk of the copy.
  ROMULUS_RETURN_IF_ERROR(clock_->WaitDrained(tag, deadline));
  ROMULUS_RETURN_IF_ERROR(log_->Seal(tag));
  sealed_sync_state_ = protocol::kSyncWhole;
  if (sync_) {
    Result<uint32_t> state = sync_->SyncStateAt(tag);
    if (!state.ok()) return state.status();
    sealed_sync_state_ = *state;
    sync_->Kick();
  }
  return Status::Ok();
}

void LocalDiskTap::ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const {
  log_->ForEachSealed(fn);
}

}  // namespace romulus::disk

#include "replicator/disk_replicator.h"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "common/units.h"
#include "disk/dirty_regions.h"
#include "replicator/checkpoint_sender.h"

namespace romulus::replicator {

namespace {
// One DISK frame holds at least one whole 1 MiB write record; 2 MiB keeps the
// frames large enough to amortise their headers and well under the 8 MiB bound.
constexpr size_t kDiskFrameCapacity = size_t{2} << 20;
}  // namespace

DiskReplicator::DiskReplicator(std::vector<disk::DiskTap*> disks)
    : disks_(std::move(disks)), builder_(kDiskFrameCapacity) {}

std::vector<protocol::DiskInfo> DiskReplicator::infos() const {
  std::vector<protocol::DiskInfo> out;
  for (const disk::DiskTap* d : disks_) out.push_back(d->info());
  return out;
}

bool DiskReplicator::can_compare() const {
  for (const disk::DiskTap* d : disks_) {
    if (!d->can_compare()) return false;
  }
  return !disks_.empty();
}

bool DiskReplicator::can_stream() const {
  for (const disk::DiskTap* d : disks_) {
    if (!d->can_stream()) return false;
  }
  return !disks_.empty();
}

void DiskReplicator::Refresh() {
  for (disk::DiskTap* d : disks_) d->Refresh();
}

std::vector<uint64_t> DiskReplicator::lineages() const {
  std::vector<uint64_t> out;
  for (const disk::DiskTap* d : disks_) {
    if (d->lineage() == 0) return {};
    out.push_back(d->lineage());
  }
  return out;
}

std::vector<uint64_t> DiskReplicator::change_floors() const {
  if (lineages().empty()) return {};
  std::vector<uint64_t> out;
  for (const disk::DiskTap* d : disks_) out.push_back(d->change_floor());
  return out;
}

bool DiskReplicator::WholeAt(uint64_t epoch) const {
  if (disks_.empty()) return true;
  const uint64_t w = first_whole_.load(std::memory_order_acquire);
  return w != 0 && epoch >= w;
}

Status DiskReplicator::Paused(uint64_t epoch, bool first, const DiskSessionCopy& copy) {
  if (disks_.empty()) return Status::Ok();
  if (first) {
    pending_.clear();
    {
      std::lock_guard<std::mutex> lk(unacked_mu_);
      unacked_.clear();
      prev_acked_tags_.clear();
    }
    first_whole_.store(0, std::memory_order_release);
    logged_percent_.assign(disks_.size(), 0);
    resync_regions_.store(0, std::memory_order_relaxed);
    disks_copied_whole_.store(0, std::memory_order_relaxed);
  }
  Pending p;
  p.epoch = epoch;
  for (size_t i = 0; i < disks_.size(); ++i) {
    disk::DiskTap* d = disks_[i];
    const protocol::DiskInfo& info = d->info();
    Result<uint64_t> tag = Status::Ok();
    disk::CopyMode mode = disk::CopyMode::kNone;
    if (first) {
      // The backup's copy may be anything (none, an old one): the session
      // starts by bringing it up to date. What it holds as of one of this
      // tap's tags needs only the regions changed since; else the whole
      // disk, streamed beside the guest or captured as it is at this pause.
      const protocol::DiskHeld* held = nullptr;
      for (const protocol::DiskHeld& h : copy.held) {
        if (h.disk_id == info.id && d->lineage() != 0 && h.lineage == d->lineage()) held = &h;
      }
      if (held != nullptr) {
        // Even where a streaming copy was agreed: the changes fit one pause
        // far more often than the disk does.
        mode = disk::CopyMode::kChanged;
        tag = d->Pause(mode, held->tag, held->lineage);
        if (tag.ok()) {
          const uint64_t regions = d->copied_regions();
          resync_regions_.fetch_add(regions, std::memory_order_relaxed);
          spdlog::info("disk {}: the backup holds it as of tag {}: copying the {} region(s) of {} changed since "
                       "({} of {})",
                       info.name, held->tag, regions, FormatSize(disk::DirtyRegions::kRegionBytes),
                       FormatSize(regions * disk::DirtyRegions::kRegionBytes), FormatSize(info.size_bytes));
        } else if (tag.status().code() == Code::kUnsupported || tag.status().code() == Code::kOutOfRange) {
          // Not known (an older copy than the marks reach), or more than a
          // pause can carry: the whole disk, as for any other backup.
          spdlog::info("disk {}: the backup holds it as of tag {}, but {}: copying it whole", info.name, held->tag,
                       tag.status().message());
          mode = disk::CopyMode::kNone;
        }
      }
      if (mode != disk::CopyMode::kChanged) {
        mode = copy.stream ? disk::CopyMode::kStream : disk::CopyMode::kInPause;
        // What the backup's copy holds, where it said (DISK.md §7.4): only
        // the chunks that differ are copied.
        std::shared_ptr<const protocol::DiskChunkTable> backup;
        if (i < copy.digests.size() && d->can_compare() && copy.digests[i] &&
            copy.digests[i]->size() == protocol::DiskChunks(info.size_bytes)) {
          backup = copy.digests[i];
        }
        tag = d->Pause(mode, 0, 0, backup);
        if (tag.ok()) disks_copied_whole_.fetch_add(1, std::memory_order_relaxed);
        if (tag.ok() && backup && mode == disk::CopyMode::kInPause && d->walked_bytes() > 0) {
          spdlog::info("disk {}: the backup's copy held {} of its {} already: copied the rest in the first epoch",
                       info.name, FormatSize(d->skipped_bytes()), FormatSize(info.size_bytes));
        } else if (tag.ok() && backup && mode == disk::CopyMode::kInPause) {
          spdlog::info("disk {}: copied what the backup's copy lacks in the first epoch (its export logs how much)",
                       info.name);
        } else if (tag.ok() && backup) {
          spdlog::info("disk {}: copying what the backup's copy lacks, chunk by chunk ({} chunks of {} compared)",
                       info.name, backup->size(), FormatSize(protocol::kDiskChunkBytes));
        }
      }
      if (tag.ok() && i < copy.lineages.size() && copy.lineages[i] != d->lineage()) {
        // The front end restarted since the session's HELLO named its
        // lineage (a disk-export that was restarted and reconnected): the
        // tags this session would send belong to another lineage. End the
        // session; the next HELLO names the new one.
        return Status::Closed("disk '" + info.name + "': its front end restarted since the session began (lineage " +
                              std::to_string(copy.lineages[i]) + " is now " + std::to_string(d->lineage()) + ")");
      }
    } else {
      tag = d->Pause(mode);
    }
    if (!tag.ok()) {
      return tag.status().With("disk '" + info.name + "'" +
                               (mode == disk::CopyMode::kInPause   ? ": the first epoch's full copy"
                                : mode == disk::CopyMode::kChanged ? ": the first epoch's copy of what changed"
                                : mode == disk::CopyMode::kStream  ? ": starting its copy"
                                                                   : ""));
    }
    p.tags.push_back(*tag);
  }
  pending_.push_back(std::move(p));
  return Status::Ok();
}

void DiskReplicator::Acked(uint64_t epoch) {
  std::lock_guard<std::mutex> lk(unacked_mu_);
  size_t n = 0;
  const std::vector<uint64_t>* tags = nullptr;
  for (; n < unacked_.size() && unacked_[n].epoch <= epoch; ++n) tags = &unacked_[n].tags;
  if (tags == nullptr) return;
  // One ack behind: a backup may name the tag of the epoch before its
  // last commit (the Xen sink writes its claim without a sync of its own,
  // DISK.md §7.2), so the changes since that one are kept too.
  for (size_t i = 0; i < disks_.size() && i < prev_acked_tags_.size(); ++i) disks_[i]->Acked(prev_acked_tags_[i]);
  prev_acked_tags_ = *tags;
  unacked_.erase(unacked_.begin(), unacked_.begin() + static_cast<std::ptrdiff_t>(n));
}

Status DiskReplicator::SendEpoch(uint64_t epoch, CheckpointSender& sender,
                                 std::chrono::steady_clock::time_point deadline, DiskEpochStats* st) {
  if (disks_.empty()) return Status::Ok();
  auto it = std::find_if(pending_.begin(), pending_.end(), [&](const Pending& p) { return p.epoch == epoch; });
  if (it == pending_.end()) {
    return Status::Internal("disk part of epoch " + std::to_string(epoch) + " sent without its pause");
  }
  const std::vector<uint64_t> tags = it->tags;
  pending_.erase(pending_.begin(), it + 1);
  // Kept until acked (a few epochs: the sender bounds what is in flight).
  {
    std::lock_guard<std::mutex> lk(unacked_mu_);
    unacked_.push_back(Pending{epoch, tags});
  }
  const bool tagged = sender.disk_delta_agreed();
  bool all_whole = true;
  uint32_t least = 1000;
  for (size_t i = 0; i < disks_.size(); ++i) {
    disk::DiskTap& d = *disks_[i];
    const protocol::DiskInfo& info = d.info();
    ROMULUS_RETURN_IF_ERROR(
        d.Seal(tags[i], deadline).With("disk '" + info.name + "': sealing epoch " + std::to_string(epoch)));
    digest_.Reset();
    builder_.Reset(info.id);
    Status failed;
    // One std::function for the whole disk (not one conversion per record).
    const std::function<Status()> flush = [&]() -> Status {
      if (builder_.empty()) return Status::Ok();
      if (st) st->lz4_saved += builder_.lz4_saved();
      Status s = sender.AddDiskFrame(builder_.payload());
      builder_.Reset(info.id);
      return s;
    };
    d.ForEachSealed([&](const protocol::DiskRecord& r) {
      if (failed.ok()) failed = protocol::AddDiskRecordSplit(builder_, r, /*try_lz4=*/true, digest_, flush);
    });
    ROMULUS_RETURN_IF_ERROR(failed);
    ROMULUS_RETURN_IF_ERROR(flush());
    protocol::DiskEnd end;
    end.disk_id = info.id;
    end.record_count = digest_.records();
    end.data_bytes = digest_.data_bytes();
    end.digest = digest_.value();
    end.sync_state = d.sealed_sync_state();
    end.has_tag = tagged;
    end.tag = tags[i];
    ROMULUS_RETURN_IF_ERROR(sender.AddDiskEnd(end));
    LogSyncProgress(i, epoch, end.sync_state);
    if (!end.whole()) {
      all_whole = false;
      least = std::min(least, (end.sync_state - 1));
    }
    if (st) {
      st->records += end.record_count;
      st->data_bytes += end.data_bytes;
    }
  }
  sync_permille_.store(least, std::memory_order_relaxed);
  if (all_whole) {
    uint64_t none = 0;
    first_whole_.compare_exchange_strong(none, epoch, std::memory_order_acq_rel);
  }
  return Status::Ok();
}

void DiskReplicator::LogSyncProgress(size_t i, uint64_t epoch, uint32_t sync_state) {
  if (logged_percent_.size() != disks_.size()) logged_percent_.assign(disks_.size(), 0);
  const protocol::DiskInfo& info = disks_[i]->info();
  if (sync_state == protocol::kSyncWhole) {
    if (logged_percent_[i] != 0) {
      const uint64_t skipped = disks_[i]->skipped_bytes();
      spdlog::info("disk {}: copy to the backup complete with epoch {}: checkpoints from it on include the disk{}",
                   info.name, epoch,
                   skipped == 0 ? std::string()
                                : " (" + FormatSize(skipped) + " of " + FormatSize(disks_[i]->walked_bytes()) +
                                      " left out: the backup held them already)");
      logged_percent_[i] = 0;
    }
    return;
  }
  // A line per 10%, and one when the copy starts (logged_percent_ 0 = none).
  const uint32_t pct = protocol::SyncPercent(sync_state);
  const uint32_t step = pct / 10 * 10 + 1;  // 1, 11, 21, …: never 0
  if (step == logged_percent_[i]) return;
  logged_percent_[i] = step;
  spdlog::info("disk {}: copying to the backup: {}% of {} (epoch {}); the backup cannot resume the guest until "
               "it completes",
               info.name, pct, FormatSize(info.size_bytes), epoch);
}

}  // namespace romulus::replicator

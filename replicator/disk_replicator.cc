#include "replicator/disk_replicator.h"

#include <algorithm>
#include <utility>

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

Status DiskReplicator::Paused(uint64_t epoch, bool first) {
  if (disks_.empty()) return Status::Ok();
  if (first) pending_.clear();
  Pending p;
  p.epoch = epoch;
  for (disk::DiskTap* d : disks_) {
    // first: the backup's copy may be anything (none, an old one), so the
    // first epoch carries the whole disk as it is at this pause.
    Result<uint64_t> tag = d->Pause(first);
    if (!tag.ok()) {
      return tag.status().With("disk '" + d->info().name + "'" + (first ? ": the first epoch's full copy" : ""));
    }
    p.tags.push_back(*tag);
  }
  pending_.push_back(std::move(p));
  return Status::Ok();
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
    ROMULUS_RETURN_IF_ERROR(sender.AddDiskEnd(end));
    if (st) {
      st->records += end.record_count;
      st->data_bytes += end.data_bytes;
    }
  }
  return Status::Ok();
}

}  // namespace romulus::replicator

// DiskReplicator: the engine's half of disk replication on the primary
// (docs/DISK.md §3–§5, docs/PROTOCOL.md §3.10), written once for every
// guest type. The controller calls it at two points of each epoch N:
//
//   Paused(N)     right after the guest of N is paused (checkpoint thread):
//                 pauses every disk's tap (disk/disk_tap.h), so requests
//                 read from now on belong to N+1. In the session's first
//                 epoch each tap starts the backup's copy of its disk: with
//                 kCapDiskSync agreed, a streaming copy that runs while the
//                 guest does (DISK.md §7.1; the backup's checkpoints are not
//                 resumable until it completes); otherwise a full copy
//                 captured inside this pause, bounded by the log's budget;
//                 or, when the backup holds the disk as of one of the tap's
//                 own tags (kCapDiskDelta, DISK.md §7.2), only the regions
//                 written since, captured inside this pause.
//   SendEpoch(N)  before EPOCH_END N (data path): seals N in each tap
//                 (bounded by the deadline) and writes its records as DISK
//                 frames (LZ4 where it pays) and one DISK_END per disk.
//
// A tap is in this process (LocalDiskTap: the simulated guest) or in a
// long-lived `romulus disk-export` (RemoteDiskTap: a kernel NBD client's
// server); the replicator does not care which.
//
// An epoch that could not be captured (a log over its budget, a failed
// write that could not be re-read, the full copy of a disk larger than the
// budget) fails SendEpoch/Paused with OutOfRange naming the cause: the
// controller ends the session (the backup hears kResync), and the next
// session starts over from a full copy. Nothing partial is ever sent.
//
// Limits (documented in DISK.md §7): without kCapDiskSync (a backup that
// holds a checkpoint, an export too old to stream) the full copy is taken
// inside the first epoch's pause and must fit the log's budget.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "disk/disk_tap.h"
#include "protocol/disk_digests.h"
#include "protocol/disk_records.h"
#include "protocol/messages.h"

namespace romulus::replicator {

class CheckpointSender;


// What the disks cost in one epoch (EpochStats' disk fields).
struct DiskEpochStats {
  uint64_t records = 0;
  uint64_t data_bytes = 0;
  uint64_t lz4_saved = 0;
};

// How the session's first epoch copies the disks: `stream` when the backup
// agreed kCapDiskSync (REQUIRES DiskReplicator::can_stream()); `held`: what
// the backup's committed disks are (HELLO_ACK, kCapDiskDelta), so a disk
// held as of one of its tap's tags is brought up to date with the regions
// changed since.
// `lineages`: what the session's HELLO named (empty: none), checked after
// each disk's first pause: a front end that restarted meanwhile ends the
// session rather than tag its epochs under another's lineage.
struct DiskSessionCopy {
  bool stream = false;
  std::vector<protocol::DiskHeld> held;
  std::vector<uint64_t> lineages;
  // kCapDiskDigests: what the backup's copy of each disk holds, in infos()
  // order (null: not described); a disk copied whole leaves out the chunks
  // that match (DISK.md §7.4).
  std::vector<std::shared_ptr<const protocol::DiskChunkTable>> digests;
};

class DiskReplicator {
 public:
  // Every tap outlives the replicator. At most protocol::kMaxDisks.
  explicit DiskReplicator(std::vector<disk::DiskTap*> disks);

  std::vector<protocol::DiskInfo> infos() const;
  bool empty() const { return disks_.empty(); }

  // Whether every disk can stream its copy (the HELLO offers kCapDiskSync).
  bool can_stream() const;
  // Whether every disk can leave out what the backup holds (the HELLO
  // offers kCapDiskDigests).
  bool can_compare() const;
  // Each disk's lineage (disk/disk_tap.h), in infos() order; empty unless
  // every disk has one (the HELLO offers kCapDiskDelta).
  std::vector<uint64_t> lineages() const;
  // Each disk's change floor (DiskTap::change_floor), in infos() order;
  // empty when lineages() is (the HELLO offers kCapDiskFloor).
  std::vector<uint64_t> change_floors() const;
  // Before lineages() for a session's HELLO: every tap reconnects what
  // broke (DiskTap::Refresh).
  void Refresh();

  // REQUIRES: the guest of `epoch` is paused. first: the session's first
  // epoch (then `copy` says how it copies the disks).
  Status Paused(uint64_t epoch, bool first, const DiskSessionCopy& copy = {});
  // REQUIRES: Paused(epoch) happened; the sender's epoch `epoch` is open.
  Status SendEpoch(uint64_t epoch, CheckpointSender& sender, std::chrono::steady_clock::time_point deadline,
                   DiskEpochStats* st);

  // Whether the backup's disks are whole once `epoch` (sent) commits: the
  // checkpoint is resumable. Any thread.
  bool WholeAt(uint64_t epoch) const;
  // The backup acked `epoch` (committed it): each tap may forget what
  // changed up to the tag of the epoch acked before it (one behind: the Xen
  // sink names its last commit but one). Data path (with SendEpoch).
  void Acked(uint64_t epoch);
  // The session's first copy: regions copied because they changed since
  // the backup's copy (kChanged disks), and disks copied whole. Any thread.
  uint64_t resync_regions() const { return resync_regions_.load(std::memory_order_relaxed); }
  uint64_t disks_copied_whole() const { return disks_copied_whole_.load(std::memory_order_relaxed); }
  // The session's copy of its disks: 1000 when whole, else the least
  // progress of any disk (permille). Any thread.
  uint32_t sync_permille() const { return sync_permille_.load(std::memory_order_relaxed); }

 private:
  void LogSyncProgress(size_t i, uint64_t epoch, uint32_t sync_state);

  std::vector<disk::DiskTap*> disks_;
  // Per epoch paused and not yet sent: each disk's tag of it. Two
  // entries at most in practice (N being sent, N+1 paused already is not a
  // thing for the drivers today, but the list does not assume it).
  struct Pending {
    uint64_t epoch = 0;
    std::vector<uint64_t> tags;
  };
  std::vector<Pending> pending_;
  // Epochs sent and not yet acked, with their tags (Acked forgets them).
  std::mutex unacked_mu_;
  std::vector<Pending> unacked_ GUARDED_BY(unacked_mu_);
  std::vector<uint64_t> prev_acked_tags_ GUARDED_BY(unacked_mu_);  // the ack before the last
  std::atomic<uint64_t> resync_regions_{0};
  std::atomic<uint64_t> disks_copied_whole_{0};
  // The session's first epoch whose disks are all whole (0: none sent yet).
  std::atomic<uint64_t> first_whole_{0};
  std::atomic<uint32_t> sync_permille_{1000};
  std::vector<uint32_t> logged_percent_;  // per disk: the copy's progress last logged
  protocol::DiskFrameBuilder builder_;
  protocol::DiskRecordDigest digest_;
};

}  // namespace romulus::replicator

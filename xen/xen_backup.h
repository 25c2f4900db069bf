// The backup's Xen sink: PV replica domains created with libxenctrl (route
// (a) of LAB-NOTES: no libxl framing to fake), restored continuously by
// xc_domain_restore(XC_STREAM_REMUS) from the byte-identical v2 stream that
// StreamAssembler rebuilds from the engine's events. One replica domain's
// lifecycle is xen/xen_replica.h; this class decides which replicas exist.
//
//   OnState/OnPage -> StreamAssembler -> the current replica's restore
//   OnDisk         -> the disks' images (xen/xen_disks.h): staged
//   Commit(N)      -> writes CHECKPOINT, returns once libxenguest's
//                     checkpoint callback saw it (epoch N is libxenguest's);
//                     only then applies N's staged disk records (memory
//                     first: docs/DISK.md §6)
//   Activate       -> EOF: libxenguest applies the last complete checkpoint,
//                     then store/console wiring, xs_introduce_domain, VBDs
//                     on block devices over the images (loop devices, or
//                     disk exports: XenRestoreOptions::disk_device), NICs,
//                     unpause, rename
//
// A new primary session (a resync after a stall or a lost link) starts a
// new migration stream, which libxenguest cannot splice onto the old one:
// the sink needs a new replica domain. Until that replica's first epoch
// commits (a whole-memory sync), the old one is kept as the *held replica*
// (EOF applied: it holds the previous session's last checkpoint, paused,
// named NAME--held), so the backup always has a checkpoint to activate
// (docs/FAILURE-MODEL.md, first law; docs/XEN-STREAM.md §4).
//
// Created through CreateXenSink (xen/xen_facade.h).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "restore/guest_sink.h"
#include "xen/stream_split.h"
#include "xen/xen_disks.h"
#include "xen/xen_facade.h"
#include "xen/xen_env.h"
#include "xen/xen_replica.h"

namespace romulus::xen {

class XenSink final : public restore::GuestSink {
 public:
  XenSink(const XenRestoreOptions& opts, std::unique_ptr<XenHandles> h, uint32_t xen_release);
  ~XenSink() override;

  Status BeginSession(uint64_t guest_pages, const std::string& identity) override;
  // Disks need restore --xen --disk-dir; without it a primary with disks is
  // refused at BeginSessionWithDisks with a sentence naming the flag.
  bool supports_disks() const override { return true; }
  Status BeginSessionWithDisks(uint64_t guest_pages, const std::string& identity,
                               std::span<const protocol::DiskInfo> disks) override;
  Status OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record) override;
  Status OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) override;
  Status OnState(uint64_t epoch, std::span<const uint8_t> record) override;
  Status Commit(uint64_t epoch) override;
  // kCapDiskSync (docs/DISK.md §7.1): an epoch whose disks are still being
  // copied is taken like any (memory into the replica, disk records onto
  // the images) but is no checkpoint: has_committed() stays false and
  // Activate refuses until a whole epoch commits. Only while no replica is
  // held (the receiver agrees to streaming only then).
  bool supports_disk_sync() const override { return !opts_.disk_dir.empty(); }
  // kCapDiskDelta (docs/DISK.md §7.2): each image's lineage claim
  // (xen/xen_disks.h), so a restarted backup gets only what changed.
  bool supports_disk_delta() const override { return !opts_.disk_dir.empty(); }
  std::vector<protocol::DiskHeld> held_disks() const override { return disks_.held(); }
  uint32_t xen_release() const override { return xen_release_; }
  Status SetSessionDiskLineages(std::span<const uint64_t> lineages) override {
    return disks_.SetSessionLineages(lineages);
  }
  void StageDiskLineage(uint32_t disk_id, uint64_t lineage, uint64_t tag) override {
    disks_.StageLineage(disk_id, lineage, tag);
  }
  // kCapDiskDigests (docs/DISK.md §7.4): the images as they are (the held
  // replica's, or what a first sync left), chunk by chunk.
  bool supports_disk_digests() const override { return !opts_.disk_dir.empty(); }
  Status DescribeDisk(uint32_t disk_id, uint64_t first_chunk, std::span<protocol::ChunkHash> out) override {
    return disks_.Describe(disk_id, first_chunk, out);
  }
  Status CommitIncomplete(uint64_t epoch) override;
  void Discard() override;
  Status Activate(const std::string& reason) override;
  // The current session's replica once it committed, else the held replica.
  // Read by the control socket's thread too, hence the atomics.
  bool has_committed() const override {
    return (committed_.load() > 0 && !disks_partial_.load()) || has_held_.load();
  }
  uint64_t last_committed_epoch() const override {
    // A partial replica's epoch is no checkpoint (disks_partial_).
    return committed_.load() > 0 && !disks_partial_.load() ? last_epoch_.load() : held_epoch_.load();
  }

  bool activated() const { return activated_.load(); }
  bool has_disks() const { return disks_.has_disks(); }
  const std::string& domain_name() const { return activated_name_; }

 private:
  Status CommitEpoch(uint64_t epoch, bool disks_partial);
  // The replica for the session's domain-info record.
  Status CreateReplica(const std::map<std::string, std::string>& info);
  // Refuses (kStorage) when the hypervisor lacks the memory for one more
  // copy of the guest: never destroy a checkpoint to make room.
  Status CheckFreeMemory(uint64_t need_kb) const;
  // This host can build the container (HVM, HAP or shadow); may switch
  // spec->hap to what the host has.
  Status CheckHostCanRestore(GuestType type, ReplicaSpec* spec) const;
  // Fixes the replica's names from the guest's (once, by the first session).
  void FixNames(const std::string& orig);
  // The replica name's lock file: another live `restore --xen` with the
  // same name refuses. The name also names the disk images, so it is taken
  // before they are touched.
  Status LockReplicaName();
  // Before creating a replica: LockReplicaName, then destroy any
  // domain named NAME--incoming or NAME--held a killed predecessor left
  // behind (never our own held replica).
  Status ReclaimReplicaName();
  // The current replica will never be activated: EOF, wait, destroy.
  void DropCurrent(const char* why);
  void DropHeld(const char* why);
  // Finish (EOF, libxenguest returns) and CheckReplicaEpochs: Ok when the
  // paused domain holds a checkpoint it may run from (epoch: the last
  // committed, for messages; has_disks: whether that checkpoint has disks).
  Status FinishReplica(XenReplica* r, uint64_t epoch, bool has_disks);
  // The finished replica's disks, NICs, device model; unpause.
  Status ResumeReplica(XenReplica* r);

  XenRestoreOptions opts_;
  std::unique_ptr<XenHandles> h_;
  const uint32_t xen_release_;
  std::unique_ptr<StreamAssembler> asm_;
  std::string identity_;
  uint64_t guest_pages_ = 0;

  // Names: the current replica's (NAME--incoming, or --domain-name D), the
  // held replica's (NAME--held, or D--held), the one taken after failover,
  // and the one the activated domain has.
  std::string name_, held_name_, final_name_, activated_name_;
  int name_lock_fd_ = -1;  // flock on /run/lock/romulus-NAME.lock while we own the name

  // The disks' images: those of the checkpoint Activate would use (the
  // current replica's once it committed, else the held replica's), plus
  // the open epoch's staged records.
  XenDiskSet disks_;

  std::unique_ptr<XenReplica> cur_;   // fed by the current session
  std::unique_ptr<XenReplica> held_;  // the previous session's last checkpoint

  std::atomic<uint64_t> committed_{0};   // checkpoints committed in the current stream
  // The current replica's disks are still being copied: its epochs are not
  // checkpoints (CommitIncomplete).
  std::atomic<bool> disks_partial_{false};
  std::atomic<uint64_t> last_epoch_{0};  // the last of them
  std::atomic<uint64_t> held_epoch_{0};  // the held replica's epoch
  std::atomic<bool> has_held_{false};    // held_ exists (or was activated)
  std::atomic<bool> activated_{false};
};

}  // namespace romulus::xen

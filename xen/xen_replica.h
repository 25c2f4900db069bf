// One replica domain on the backup and its lifecycle: created paused with
// libxenctrl, restored continuously by xc_domain_restore(XC_STREAM_REMUS)
// from a socketpair, finished by an EOF (libxenguest then applies the last
// complete checkpoint and returns), and then either activated (store/console
// wiring, xs_introduce_domain, NICs, unpause) or destroyed.
//
// XenSink (xen/xen_backup.h) owns one or two of these: the replica the
// current primary session feeds, and during a resync the *held* replica,
// which keeps the previous session's last checkpoint until the new session
// commits (docs/XEN-STREAM.md §4).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "devicemodel/device_model_process.h"
#include "devicemodel/device_state_slot.h"
#include "disk/block_device.h"
#include "xen/replica_spec.h"
#include "xen/vbd_spec.h"
#include "xen/xen_facade.h"
#include "xen/xen_env.h"

namespace romulus::xen {

class XenReplica {
 public:
  XenReplica(XenHandles* h, const XenRestoreOptions& opts)
      : h_(h), opts_(opts), dm_state_(opts.max_device_state) {}
  // Destroys the domain unless it was activated.
  ~XenReplica();
  XenReplica(const XenReplica&) = delete;
  XenReplica& operator=(const XenReplica&) = delete;

  // The domain (paused, no memory yet) and its xenstore skeleton. On failure
  // whatever was created is destroyed by the destructor.
  Status Create(const ReplicaSpec& spec);
  // The restore thread, reading what Write/Flush send.
  Status StartRestore();
  // Coalesced writes of the rebuilt stream; Flush pushes them out.
  Status Write(std::span<const uint8_t> b);
  Status Flush();
  // Waits until libxenguest took its `count`-th CHECKPOINT record (epoch:
  // for messages).
  Status WaitCheckpoint(uint64_t count, uint64_t epoch);
  // EOF to libxenguest and wait for xc_domain_restore to return. Ok when it
  // applied the last complete checkpoint: the paused domain then holds
  // exactly that checkpoint, and Activate may run it later.
  Status Finish();
  // Destroys the domain and its xenstore nodes (a replica never activated).
  void Destroy();
  Status Rename(const std::string& name);
  // After Finish: store/console, xs_introduce_domain, the disks (each image
  // on a block device served by blkback, from opts.disk_device or a loop
  // device: a failure leaves the domain paused
  // and fails the activation, a guest must not run without its disks), the
  // NICs (best effort), unpause.
  Status Resume(const std::vector<VbdDevice>& disks = {});
  // HVM replicas: the device model's state (STATE kind 6) of the open epoch,
  // kept as the committed one once its memory is libxenguest's
  // (devicemodel::DeviceStateSlot). A PV or PVH replica refuses one.
  Status StageDeviceState(uint64_t epoch, std::span<const uint8_t> state);
  bool HasStagedDeviceState(uint64_t epoch) const { return dm_state_.HasStaged(epoch); }
  // The sink committed the epoch whose CHECKPOINT libxenguest just took
  // (WaitCheckpoint): counted, and an HVM replica's staged device state
  // becomes the committed one.
  void CheckpointCommitted();
  // CHECKPOINT records libxenguest took, and those the sink committed. They
  // differ when libxenguest took one after Commit gave up waiting for it:
  // after Finish the domain's memory is then of an epoch never committed
  // (CheckReplicaEpochs says whether it may run).
  uint64_t checkpoints_applied() const;
  uint64_t checkpoints_committed() const;
  void DiscardDeviceState() { dm_state_.Discard(); }
  // After Resume: take `final_name` once no other domain holds it (waits up
  // to opts.rename_wait; still held then: a warning, the old name stays).
  Status TakeName(const std::string& final_name);

  // The node an activation writes under the domain's xenstore directory
  // right before it unpauses it (only dom0 can write it; it goes with the
  // domain): a later backup never takes such a domain for a leftover replica.
  static std::string ActivatedMarkPath(uint32_t domid);

  uint32_t domid() const { return domid_; }
  bool created() const { return created_; }
  bool activated() const { return activated_; }
  const std::string& name() const { return spec_.name; }
  GuestType type() const { return spec_.type; }

 private:
  // The HVM container's settings libxl makes before a restore and the
  // stream does not carry.
  Status PrepareHvmContainer();
  Status WriteXenstoreSkeleton();
  // Why the restore ended early, as a Status (ENOMEM: kStorage, this host's
  // resource, never the primary's fault).
  Status RestoreEnded(const std::string& what);
  // Each disk: a block device over its image (opts.disk_device, else a
  // loop device), then its blkback nodes.
  Status CreateVbds(const std::vector<VbdDevice>& disks);
  Status WriteVbdNodes(const VbdDevice& d);
  // Until blkback holds every disk's device (bounded by opts.vbd_wait):
  // only then may the devices be let go and the guest run.
  Status WaitVbdsServed(const std::vector<VbdDevice>& disks);
  void CreateVifs();
  void AttachEmulatedNics();
  Status RunVifScript(unsigned devid, bool tap);
  Status WriteVifNodes(const VifSpec& v);
  Status RunVifHotplug(const VifSpec& v);
  static int CheckpointCb(void* data);
  // HVM: the device model, from the committed device state (Resume).
  Status StartDeviceModel();
  // Resume's store and console nodes and xs_introduce_domain.
  Status WireStoreAndConsole(unsigned long store_mfn, unsigned long console_mfn);

  XenHandles* h_;
  XenRestoreOptions opts_;
  ReplicaSpec spec_;
  uint32_t domid_ = 0;
  bool created_ = false, activated_ = false, finished_ = false;
  // Resume's steps done by an activation that failed later (a retry skips them).
  bool introduced_ = false, devices_attached_ = false;
  // /vm/UUID-DOMID, not /vm/UUID: the held replica, the new one and (on a
  // shared host) the primary carry the same UUID, and each must be able to
  // go away without removing another's node. libxl and xl follow
  // /local/domain/D/vm, whatever it names.
  std::string vm_path_;
  int store_port_ = -1, console_port_ = -1;

  int out_fd_ = -1, in_fd_ = -1;
  std::vector<uint8_t> out_buf_;
  std::thread restore_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t restore_checkpoints_ GUARDED_BY(mu_) = 0;  // CHECKPOINT records libxenguest took
  bool restore_done_ = false;
  int restore_rc_ = 0;
  int restore_errno_ = 0;
  unsigned long store_mfn_ = 0, console_mfn_ = 0;
  // Held until the replica object goes (the process's end for the
  // activated one): by then blkback holds each device (a loop device's
  // autoclear then detaches it when the guest's disk goes away; an exported
  // disk was told Served() and outlives this process).
  std::vector<std::unique_ptr<disk::BlockDevice>> devices_;
  std::vector<std::string> device_vdevs_;  // devices_[i] serves this disk
  // HVM: see StageDeviceState. The committed state is what activation
  // starts the device model from; dm_ the one it started.
  devicemodel::DeviceStateSlot dm_state_;
  // Checkpoints the sink committed (CheckpointCommitted), against
  // restore_checkpoints_.
  uint64_t checkpoints_committed_ GUARDED_BY(mu_) = 0;
  devicemodel::ProcessRef dm_;
};

}  // namespace romulus::xen

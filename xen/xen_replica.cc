#include "xen/xen_replica.h"

#include "common/thread_name.h"
#include "devicemodel/device_model_process.h"
#include "xen/incoming_device_model.h"
#include "xen/loop_device.h"

#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace romulus::xen {

using Clock = std::chrono::steady_clock;

XenReplica::~XenReplica() {
  if (!activated_) {
    (void)Finish();
    Destroy();
  }
  if (restore_.joinable()) restore_.join();
  if (out_fd_ >= 0) close(out_fd_);
  if (in_fd_ >= 0) close(in_fd_);
}

Status XenReplica::Create(const ReplicaSpec& spec) {
  spec_ = spec;
  struct xen_domctl_createdomain cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.ssidref = 0;
  // The primary's UUID. The hypervisor does not require handles to be unique
  // (libxl does, we do not go through it): while a held replica exists, it
  // and the new one carry the same handle.
  memcpy(cfg.handle, spec_.handle, sizeof spec_.handle);
  cfg.flags = 0;  // PV
  if (spec_.type != GuestType::kPv) {
    // libxenguest picks its restore ops from the target domain's type: a
    // PVH stream needs an HVM container, with HAP when the primary had it.
    cfg.flags = XEN_DOMCTL_CDF_hvm | (spec_.hap ? XEN_DOMCTL_CDF_hap : 0);
    cfg.arch.emulation_flags = spec_.emulation_flags;
    cfg.arch.misc_flags = spec_.misc_flags;
  }
  cfg.max_vcpus = spec_.max_vcpus;
  cfg.max_evtchn_port = 1023;
  cfg.max_grant_frames = -1;
  cfg.max_maptrack_frames = -1;
  cfg.grant_opts = XEN_DOMCTL_GRANT_version(1);  // 0 is rejected
  uint32_t domid = 0;                            // Xen chooses
  if (xc_domain_create(h_->xch(), &domid, &cfg) != 0) {
    return Status::FromErrno("xc_domain_create (" + h_->RecentErrors() + ")", errno);
  }
  domid_ = domid;
  created_ = true;  // from here on Destroy cleans up
  vm_path_ = "/vm/" + spec_.uuid + "-" + std::to_string(domid_);
  if (xc_domain_max_vcpus(h_->xch(), domid_, spec_.max_vcpus) != 0) {
    return Status::FromErrno("xc_domain_max_vcpus", errno);
  }
  // libxl's slack: the guest's balloon driver and the restore need headroom.
  if (xc_domain_setmaxmem(h_->xch(), domid_, spec_.max_memkb + 1024) != 0) {
    return Status::FromErrno("xc_domain_setmaxmem", errno);
  }
  store_port_ = xc_evtchn_alloc_unbound(h_->xch(), domid_, 0);
  console_port_ = xc_evtchn_alloc_unbound(h_->xch(), domid_, 0);
  if (store_port_ < 0 || console_port_ < 0) return Status::FromErrno("xc_evtchn_alloc_unbound", errno);
  if (spec_.type != GuestType::kPv) ROMULUS_RETURN_IF_ERROR(PrepareHvmContainer());
  return WriteXenstoreSkeleton();
}

Status XenReplica::PrepareHvmContainer() {
  // The HAP (or shadow) pool holds the container's p2m: Xen's own default
  // (256 pages) is too small for any real guest, and the restore would fail
  // deep in populate_physmap. The primary's size, never below libxl's floor.
  const uint64_t pool_kb = std::max(spec_.paging_pool_kb, MinPagingPoolKb(spec_.max_memkb, spec_.max_vcpus));
  if (xc_set_paging_mempool_size(h_->xch(), domid_, pool_kb * 1024) != 0) {
    return Status::FromErrno("xc_set_paging_mempool_size(" + std::to_string(pool_kb) + " KiB)", errno);
  }
  // Not in the migration stream (libxl sets it before every restore).
  if (xc_hvm_param_set(h_->xch(), domid_, HVM_PARAM_TIMER_MODE, spec_.timer_mode) != 0) {
    return Status::FromErrno("setting HVM_PARAM_TIMER_MODE", errno);
  }
  if (spec_.type == GuestType::kHvm) {
    // libxl's hvm_set_conf_params for HVM, which the stream leaves out too.
    if (xc_hvm_param_set(h_->xch(), domid_, HVM_PARAM_HPET_ENABLED, spec_.hpet ? 1 : 0) != 0) {
      return Status::FromErrno("setting HVM_PARAM_HPET_ENABLED", errno);
    }
    if (xc_hvm_param_set(h_->xch(), domid_, HVM_PARAM_VPT_ALIGN, spec_.vpt_align ? 1 : 0) != 0) {
      return Status::FromErrno("setting HVM_PARAM_VPT_ALIGN", errno);
    }
  }
  return Status::Ok();
}

// The nodes libxl__domain_make writes for a PV domain, minus devices.
Status XenReplica::WriteXenstoreSkeleton() {
  struct xs_handle* xs = h_->xsh();
  const std::string dom = "/local/domain/" + std::to_string(domid_);
  const std::string& vm = vm_path_;
  const struct xs_permissions owner{0, XS_PERM_NONE}, guest_reads{domid_, XS_PERM_READ};
  const struct xs_permissions guest_owns{domid_, XS_PERM_NONE};
  return XsTransact(xs, "the replica's xenstore skeleton", [&](XsTxn& t) {
    t.Remove(dom);
    t.MakeDir(dom, {owner, guest_reads});
    t.MakeDir(vm, {owner, guest_reads});
    t.Write(dom + "/vm", vm);
    t.Write(dom + "/name", spec_.name);
    t.Write(dom + "/domid", std::to_string(domid_));
    t.Write(vm + "/name", spec_.name);
    t.Write(vm + "/uuid", spec_.uuid);
    for (const char* d : {"control", "data", "drivers", "feature", "attr", "error"}) t.MakeDir(dom + "/" + d, {guest_owns});
    t.Write(dom + "/control/shutdown", "");
    t.Write(dom + "/control/sysrq", "");
    t.MakeDir(dom + "/control/shutdown", {guest_owns});
    t.MakeDir(dom + "/control/sysrq", {guest_owns});
    t.MakeDir(dom + "/device", {owner, guest_reads});
    t.MakeDir(dom + "/memory", {owner, guest_reads});
    t.Write(dom + "/memory/static-max", std::to_string(spec_.max_memkb));
    t.Write(dom + "/memory/target", std::to_string(spec_.target_kb));
    for (unsigned i = 0; i < spec_.max_vcpus; i++) t.Write(dom + "/cpu/" + std::to_string(i) + "/availability", "online");
  });
}

Status XenReplica::StartRestore() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Status::FromErrno("socketpair", errno);
  out_fd_ = sv[0];
  in_fd_ = sv[1];
  int sz = 4 << 20;
  setsockopt(out_fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  setsockopt(in_fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  restore_ = std::thread([this] {
    NameThisThread("xc-restore");
    struct restore_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.checkpoint = &XenReplica::CheckpointCb;
    cb.data = this;
    unsigned long store_mfn = 0, console_mfn = 0;
    // No receive timeout here: failure detection lives in the engine, which
    // calls Activate; the EOF we then give libxenguest ends the restore.
    int rc = xc_domain_restore(h_->xch(), in_fd_, domid_, unsigned(store_port_), &store_mfn, 0,
                               unsigned(console_port_), &console_mfn, 0, XC_STREAM_REMUS, &cb, -1);
    int err = errno;
    {
      std::lock_guard<std::mutex> lock(mu_);
      restore_done_ = true;
      restore_rc_ = rc;
      restore_errno_ = err;
      store_mfn_ = store_mfn;
      console_mfn_ = console_mfn;
    }
    cv_.notify_all();
    // Nobody reads any more: a writer blocked on the full socketpair (a
    // restore that failed mid-epoch, e.g. out of memory) gets EPIPE instead
    // of waiting for ever. restore_done_ is set first, so Flush can say why.
    shutdown(in_fd_, SHUT_RDWR);
  });
  return Status::Ok();
}

Status XenReplica::RestoreEnded(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string why = "xc_domain_restore ended (rc " + std::to_string(restore_rc_) + ", " +
                          strerror(restore_errno_) + ") " + what + ": " + h_->RecentErrors();
  if (restore_errno_ == ENOMEM) {
    return Status::Storage("not enough free hypervisor memory for replica " + spec_.name + ": " + why);
  }
  return Status::IoError(why);
}

Status XenReplica::Write(std::span<const uint8_t> b) {
  // Coalesce the many small writes (8-byte headers, 4 KiB pages) into large
  // ones; Commit flushes.
  if (out_buf_.size() + b.size() > (1u << 20)) ROMULUS_RETURN_IF_ERROR(Flush());
  out_buf_.insert(out_buf_.end(), b.begin(), b.end());
  if (out_buf_.size() >= (1u << 20)) return Flush();
  return Status::Ok();
}

Status XenReplica::Flush() {
  if (out_fd_ < 0) return Status::Internal("replica " + spec_.name + ": no restore running");
  size_t off = 0;
  while (off < out_buf_.size()) {
    ssize_t n = send(out_fd_, out_buf_.data() + off, out_buf_.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      out_buf_.clear();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!restore_done_) {
          return Status::FromErrno("writing the rebuilt stream to xc_domain_restore (" + h_->RecentErrors() + ")",
                                   err);
        }
      }
      return RestoreEnded("while the stream was being written");
    }
    off += size_t(n);
  }
  out_buf_.clear();
  return Status::Ok();
}

Status XenReplica::WaitCheckpoint(uint64_t count, uint64_t epoch) {
  // libxenguest calls its checkpoint callback when it reads the CHECKPOINT
  // record: from then on an EOF restores this epoch. (The first checkpoint's
  // records were applied as they streamed; later ones are buffered and
  // applied right after the callback.)
  std::unique_lock<std::mutex> lock(mu_);
  bool ok = cv_.wait_for(lock, std::chrono::seconds(120),
                         [&]() REQUIRES(mu_) { return restore_checkpoints_ >= count || restore_done_; });
  if (restore_checkpoints_ >= count) return Status::Ok();
  if (restore_done_) {
    lock.unlock();
    return RestoreEnded("before taking checkpoint " + std::to_string(epoch));
  }
  (void)ok;
  return Status::Timeout("libxenguest did not take checkpoint " + std::to_string(epoch) + " in 120 s");
}

int XenReplica::CheckpointCb(void* data) {
  auto* self = static_cast<XenReplica*>(data);
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->restore_checkpoints_++;
  }
  self->cv_.notify_all();
  return XGR_CHECKPOINT_SUCCESS;
}

Status XenReplica::Finish() {
  if (out_fd_ >= 0 && !finished_) {
    out_buf_.clear();  // whatever is unflushed belongs to an uncommitted epoch
    shutdown(out_fd_, SHUT_WR);
  }
  finished_ = true;
  if (restore_.joinable()) restore_.join();
  if (!created_) return Status::Internal("replica " + spec_.name + " was never created");
  std::lock_guard<std::mutex> lock(mu_);
  if (!restore_done_ || restore_rc_ != 0 || restore_checkpoints_ == 0) {
    return Status::IoError("xc_domain_restore did not complete a checkpoint on " + spec_.name + " (rc " +
                           std::to_string(restore_rc_) + ", " + strerror(restore_errno_) + ", " +
                           std::to_string(restore_checkpoints_) + " checkpoints): " + h_->RecentErrors());
  }
  return Status::Ok();
}

std::string XenReplica::ActivatedMarkPath(uint32_t domid) {
  return "/local/domain/" + std::to_string(domid) + "/romulus-activated";
}

void XenReplica::CheckpointCommitted() {
  if (spec_.type == GuestType::kHvm) dm_state_.Commit();
  std::lock_guard<std::mutex> lock(mu_);
  checkpoints_committed_++;
}

uint64_t XenReplica::checkpoints_applied() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restore_checkpoints_;
}

uint64_t XenReplica::checkpoints_committed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return checkpoints_committed_;
}

Status XenReplica::StageDeviceState(uint64_t epoch, std::span<const uint8_t> state) {
  if (spec_.type != GuestType::kHvm) {
    return Status::Corruption(std::string("a device model's state in the stream of a ") + GuestTypeName(spec_.type) +
                              " guest, which has no device model");
  }
  return dm_state_.Stage(epoch, state);
}

Status XenReplica::StartDeviceModel() {
  // Memory and devices of one epoch: XenSink::Activate checked the counts
  // (CheckReplicaEpochs) before Resume.
  if (!spec_.device_model || dm_state_.committed().empty()) {
    return Status::Internal("HVM replica " + spec_.name + " has no committed device state to start from");
  }
  IncomingDeviceModelOptions o;
  o.binary = opts_.device_model;
  o.log_dir = opts_.device_model_log_dir;
  o.wait = opts_.device_model_wait;
  o.kernel = spec_.device_model->kernel;  // resolved and allowed when the session began
  // Each emulated disk (IDE slot or AHCI port) on the block device blkback serves the same
  // disk from (the replica's copy), as the primary's QEMU and blkback
  // share its NBD device.
  for (unsigned slot : spec_.device_model->ide_disks) {
    auto vdev = devicemodel::IdeDiskVdev(slot, device_vdevs_);
    if (!vdev.ok()) return vdev.status().With("the device model of " + spec_.name);
    const size_t i = size_t(std::find(device_vdevs_.begin(), device_vdevs_.end(), *vdev) - device_vdevs_.begin());
    o.ide_paths[slot] = devices_[i]->path();
  }
  auto dm = StartIncomingDeviceModel(h_, domid_, spec_.name, *spec_.device_model, dm_state_.committed(), o);
  if (!dm.ok()) return dm.status();
  dm_ = std::move(*dm);
  AttachEmulatedNics();
  return Status::Ok();
}

void XenReplica::Destroy() {
  if (!created_) return;
  if (dm_.valid()) {
    StopIncomingDeviceModel(h_, domid_, dm_);
    dm_.Reset();
  }
  xc_domain_destroy(h_->xch(), domid_);
  std::string dom = "/local/domain/" + std::to_string(domid_);
  xs_rm(h_->xsh(), XBT_NULL, dom.c_str());
  xs_rm(h_->xsh(), XBT_NULL, vm_path_.c_str());
  created_ = false;
}

Status XenReplica::Rename(const std::string& name) {
  std::string dom = "/local/domain/" + std::to_string(domid_);
  ROMULUS_RETURN_IF_ERROR(XsWrite(h_->xsh(), XBT_NULL, dom + "/name", name));
  ROMULUS_RETURN_IF_ERROR(XsWrite(h_->xsh(), XBT_NULL, vm_path_ + "/name", name));
  spec_.name = name;
  return Status::Ok();
}

Status XenReplica::Resume(const std::vector<VbdDevice>& disks) {
  if (activated_) return Status::Ok();
  if (!finished_) ROMULUS_RETURN_IF_ERROR(Finish());
  unsigned long store_mfn, console_mfn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (restore_rc_ != 0 || !restore_done_) {
      return Status::IoError("xc_domain_restore failed at failover (rc " + std::to_string(restore_rc_) + ", " +
                             strerror(restore_errno_) + "): " + h_->RecentErrors());
    }
    store_mfn = store_mfn_;
    console_mfn = console_mfn_;
  }
  // A retried activation (the first failed after some of these steps: an
  // HVM guest's device model that did not start) does each step once.
  if (!introduced_) ROMULUS_RETURN_IF_ERROR(WireStoreAndConsole(store_mfn, console_mfn));
  if (!devices_attached_) {
    // Before the guest runs: its blkfront and netfront reconnect on resume
    // (blkfront re-issues the requests it had outstanding, docs/DISK.md §4).
    ROMULUS_RETURN_IF_ERROR(CreateVbds(disks));
    CreateVifs();
    devices_attached_ = true;
  }
  // An HVM guest's emulated devices run before its vCPUs do: Xen forwards
  // its port and MMIO accesses to QEMU's ioreq server, which is on only
  // while QEMU runs (libxl unpauses after the device model too).
  if (spec_.type == GuestType::kHvm && dm_.valid() && !dm_.Alive()) {
    // Started by an attempt that failed later, gone since: start it again.
    spdlog::warn("the device model of {} (pid {}) is gone: starting it again", spec_.name, dm_.pid());
    StopIncomingDeviceModel(h_, domid_, dm_);
    dm_.Reset();
  }
  if (spec_.type == GuestType::kHvm && !dm_.valid()) ROMULUS_RETURN_IF_ERROR(StartDeviceModel());
  // Marked before it may run: a backup killed from here on leaves a domain
  // that ReclaimReplicaName must never destroy (it may be the only copy).
  ROMULUS_RETURN_IF_ERROR(XsWrite(h_->xsh(), XBT_NULL, ActivatedMarkPath(domid_), "1")
                              .With("marking replica " + spec_.name + " as activated"));
  if (xc_domain_unpause(h_->xch(), domid_) != 0) return Status::FromErrno("xc_domain_unpause", errno);
  activated_ = true;
  // Only now does a running guest depend on its disks' devices: whatever
  // serves them must outlive this process (a failed activation above tears
  // them down with the replica).
  for (auto& d : devices_) d->Served();
  return Status::Ok();
}

Status XenReplica::WireStoreAndConsole(unsigned long store_mfn, unsigned long console_mfn) {
  struct xs_handle* xs = h_->xsh();
  const std::string dom = "/local/domain/" + std::to_string(domid_);
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/store/port", std::to_string(store_port_)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/store/ring-ref", std::to_string(store_mfn)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/port", std::to_string(console_port_)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/ring-ref", std::to_string(console_mfn)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/type", "xenconsoled"));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/limit", "1048576"));
  // Without the introduction xenstored ignores the guest's ring and
  // xenconsoled never attaches.
  if (!xs_introduce_domain(xs, domid_, store_mfn, unsigned(store_port_))) {
    return Status::FromErrno("xs_introduce_domain(" + std::to_string(domid_) + ")", errno);
  }
  introduced_ = true;
  return Status::Ok();
}

Status XenReplica::TakeName(const std::string& final_name) {
  // The original name, once no other domain holds it (the primary is gone).
  struct xs_handle* xs = h_->xsh();
  if (final_name != spec_.name) {
    auto deadline = Clock::now() + opts_.rename_wait;
    for (;;) {
      bool taken = false;
      unsigned int num = 0;
      char** ents = xs_directory(xs, XBT_NULL, "/local/domain", &num);
      for (unsigned i = 0; ents && i < num; i++) {
        if (strtoul(ents[i], nullptr, 10) == domid_) continue;
        if (XsRead(xs, std::string("/local/domain/") + ents[i] + "/name") == final_name) taken = true;
      }
      free(ents);
      if (!taken) {
        Status s = Rename(final_name);
        if (s.ok()) spdlog::info("domain {} renamed to {}", domid_, final_name);
        return s;
      }
      if (Clock::now() >= deadline) {
        spdlog::warn("a domain named {} still exists; the replica keeps the name {}", final_name, spec_.name);
        return Status::Ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return Status::Ok();
}

// The nodes of one disk (xen/vbd_spec.h) in one transaction: the frontend
// directory owned by the guest, the backend directory owned by dom0, each
// readable by the other side, as for a vif. blkback opens the device named
// by physical-device itself: no hotplug script runs.
Status XenReplica::WriteVbdNodes(const VbdDevice& d) {
  struct xs_handle* xs = h_->xsh();
  const std::string be = VbdBackendPath(domid_, d.devid);
  const std::string fe = VbdFrontendPath(domid_, d.devid);
  const XsNodes be_nodes = VbdBackendNodes(domid_, d);
  const XsNodes fe_nodes = VbdFrontendNodes(domid_, d);
  return XsTransact(xs, "disk " + d.vdev + "'s xenstore nodes", [&](XsTxn& t) {
    t.Remove(be);
    t.MakeDir(be, {{0, XS_PERM_NONE}, {domid_, XS_PERM_READ}});
    t.MakeDir(fe, {{domid_, XS_PERM_NONE}, {0, XS_PERM_READ}});
    for (const XsNodes* nodes : {&be_nodes, &fe_nodes}) {
      for (const auto& [path, val] : *nodes) t.Write(path, val);
    }
  });
}

Status XenReplica::CreateVbds(const std::vector<VbdDevice>& disks) {
  std::vector<VbdDevice> attached;
  Status st = [&]() -> Status {
    for (VbdDevice d : disks) {
      std::unique_ptr<disk::BlockDevice> dev = opts_.disk_device ? opts_.disk_device(d.params, d.vdev) : nullptr;
      if (!dev) {
        auto loop = LoopDevice::Attach(d.params);
        if (!loop.ok()) return loop.status().With("disk " + d.vdev + " of the activated guest");
        dev = std::move(*loop);
      }
      d.major = dev->dev_major();
      d.minor = dev->dev_minor();
      devices_.push_back(std::move(dev));
      device_vdevs_.push_back(d.vdev);
      attached.push_back(d);
      ROMULUS_RETURN_IF_ERROR(WriteVbdNodes(d).With("disk " + d.vdev + " of the activated guest"));
    }
    return WaitVbdsServed(attached);
  }();
  if (!st.ok()) {
    // A retried activation starts the disks over: this attempt's nodes go
    // (blkback lets its devices go) and so do its block devices, or a retry
    // would add a second device per image and wait on the stale one.
    for (const VbdDevice& d : attached) {
      xs_rm(h_->xsh(), XBT_NULL, VbdBackendPath(domid_, d.devid).c_str());
      xs_rm(h_->xsh(), XBT_NULL, VbdFrontendPath(domid_, d.devid).c_str());
    }
    devices_.clear();
    device_vdevs_.clear();
  }
  return st;
}

Status XenReplica::WaitVbdsServed(const std::vector<VbdDevice>& disks) {
  struct xs_handle* xs = h_->xsh();
  const auto start = Clock::now();
  const auto deadline = start + opts_.vbd_wait;
  for (size_t i = 0; i < disks.size(); ++i) {
    const VbdDevice& d = disks[i];
    const std::string sysfs = VbdBackendSysfsPhysicalDevice(domid_, d.devid);
    const std::string where = "disk " + d.vdev + " of the activated guest";
    for (;;) {
      VbdBackendLook look;
      look.state = XsRead(xs, VbdBackendPath(domid_, d.devid) + "/state");
      std::ifstream in(sysfs);
      look.sysfs_present = bool(in);
      if (in) std::getline(in, look.sysfs_physical);
      auto sectors = devices_[i]->Sectors();
      if (!sectors.ok()) return sectors.status().With(where);
      look.device_sectors = *sectors;
      std::string why;
      const VbdBackendProgress p = JudgeVbdBackend(d, look, &why);
      if (p == VbdBackendProgress::kServed) {
        spdlog::info("disk {} (devid {}) of domain {}: {} on {} ({}:{}, {} sectors), opened by blkback after {} ms",
                     d.vdev, d.devid, domid_, d.params, devices_[i]->path(), d.major, d.minor, look.device_sectors,
                     std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
        break;
      }
      if (p == VbdBackendProgress::kFailed) {
        const std::string err = XsRead(xs, VbdBackendErrorPath(domid_, d.devid));
        return Status::IoError(where + ": " + why + (err.empty() ? "" : ": " + err) + "; the guest stays paused");
      }
      if (Clock::now() >= deadline) {
        return Status::Timeout(where + ": " + why + " after " + std::to_string(opts_.vbd_wait.count()) +
                               " ms (is xen-blkback loaded?); the guest stays paused");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return Status::Ok();
}

// The nodes libxl writes for a PV NIC served by dom0: the frontend directory
// owned by the guest, the backend directory owned by dom0, each readable by
// the other side. netback creates vif<domid>.<devid> when it sees them.
Status XenReplica::WriteVifNodes(const VifSpec& v) {
  struct xs_handle* xs = h_->xsh();
  const std::string id = std::to_string(v.devid);
  const std::string fe = "/local/domain/" + std::to_string(domid_) + "/device/vif/" + id;
  const std::string be = "/local/domain/0/backend/vif/" + std::to_string(domid_) + "/" + id;
  const bool emulated = spec_.device_model &&
                        std::any_of(spec_.device_model->nics.begin(), spec_.device_model->nics.end(),
                                    [&](const auto& n) { return n.devid == v.devid; });
  // The primary's vifname= (firewall rules and accounting key on it): the
  // hotplug script renames the interface, as on the primary. Not when this
  // host already has an interface of that name: the script would then act
  // on it (Xen's vif-common.sh skips the rename and takes the existing one
  // as the guest's), so the guest keeps the default name and the log says why.
  std::string vifname = v.vifname;
  if (!vifname.empty()) {
    auto exists = [](const std::string& n) { return access(("/sys/class/net/" + n).c_str(), F_OK) == 0; };
    const std::string taken = exists(vifname)                         ? vifname
                              : emulated && exists(vifname + "-emu") ? vifname + "-emu"
                                                                      : "";
    if (!taken.empty()) {
      spdlog::warn("vif {} of the activated guest: this host already has an interface {}, so it keeps the default "
                   "name vif{}.{} instead of the primary's vifname {}",
                   id, taken, domid_, id, v.vifname);
      vifname.clear();
    }
  }
  return XsTransact(xs, "vif " + id + "'s xenstore nodes", [&](XsTxn& t) {
    t.Remove(be);
    t.MakeDir(be, {{0, XS_PERM_NONE}, {domid_, XS_PERM_READ}});
    t.MakeDir(fe, {{domid_, XS_PERM_NONE}, {0, XS_PERM_READ}});
    t.Write(be + "/frontend", fe);
    t.Write(be + "/frontend-id", std::to_string(domid_));
    t.Write(be + "/online", "1");
    t.Write(be + "/state", "1");  // XenbusStateInitialising
    t.Write(be + "/script", opts_.vif_script);
    t.Write(be + "/mac", v.mac);
    if (!v.bridge.empty()) t.Write(be + "/bridge", v.bridge);
    t.Write(be + "/handle", id);
    if (!vifname.empty()) t.Write(be + "/vifname", vifname);
    // libxl's nic type: "vif_ioemu" when an emulated NIC shares this vif's
    // nodes, so xl treats the pair as libxl would (hotplug of the tap too).
    t.Write(be + "/type", emulated ? "vif_ioemu" : "vif");
    t.Write(fe + "/backend", be);
    t.Write(fe + "/backend-id", "0");
    t.Write(fe + "/state", "1");
    t.Write(fe + "/handle", id);
    t.Write(fe + "/mac", v.mac);
  });
}

// Runs the operator's vif hotplug script for vif `devid` as libxl does
// (libxl_linux.c): `online type_if=vif` for netback's vif, `add
// type_if=tap` for an emulated NIC's tap, the type as an argument; `vif`
// names netback's interface and, for a tap, `INTERFACE` the tap (Xen's
// vif-common.sh takes the device from there). Both read vif `devid`'s
// backend nodes (its bridge).
Status XenReplica::RunVifScript(unsigned devid, bool tap) {
  const std::string id = std::to_string(devid);
  const std::string vif = "vif" + std::to_string(domid_) + "." + id;
  const std::string ifname = tap ? devicemodel::EmulatedNicTap(domid_, devid) : vif;
  const std::string be_rel = "backend/vif/" + std::to_string(domid_) + "/" + id;
  std::vector<std::string> env = {"vif=" + vif, "XENBUS_PATH=" + be_rel, "XENBUS_TYPE=vif",
                                  "XENBUS_BASE_PATH=backend", "script=" + opts_.vif_script, "netdev=",
                                  "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  if (tap) env.push_back("INTERFACE=" + ifname);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const char* command = tap ? "add" : "online";
  std::string script = opts_.vif_script, arg = command, type = tap ? "type_if=tap" : "type_if=vif";
  char* argv[] = {script.data(), arg.data(), type.data(), nullptr};
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno("fork", errno);
  if (pid == 0) {
    execve(script.c_str(), argv, envp.data());
    _exit(127);
  }
  int st = 0;
  const auto script_deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return Status::FromErrno("waitpid", errno);
    if (Clock::now() >= script_deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return Status::Timeout(opts_.vif_script + " " + command + " " + ifname + " took more than 30 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return Status::IoError(opts_.vif_script + " " + command + " " + ifname + " failed (" +
                           (WIFEXITED(st) ? "exit " + std::to_string(WEXITSTATUS(st)) : std::string("signal")) + ")");
  }
  return Status::Ok();
}

// Runs `vif_script online` as libxl would, once netback created the netdev,
// and waits for the script's hotplug-status (netback connects only then).
Status XenReplica::RunVifHotplug(const VifSpec& v) {
  const std::string vif = "vif" + std::to_string(domid_) + "." + std::to_string(v.devid);
  const std::string be_rel = "backend/vif/" + std::to_string(domid_) + "/" + std::to_string(v.devid);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (access(("/sys/class/net/" + vif).c_str(), F_OK) != 0) {
    if (Clock::now() >= deadline) return Status::Timeout("netback did not create " + vif + " within 10 s (is xen-netback loaded?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ROMULUS_RETURN_IF_ERROR(RunVifScript(v.devid, /*tap=*/false));
  const std::string hs = "/local/domain/0/" + be_rel + "/hotplug-status";
  while (XsRead(h_->xsh(), hs) != "connected") {
    if (Clock::now() >= deadline + std::chrono::seconds(30)) {
      return Status::Timeout(opts_.vif_script + " did not write hotplug-status=connected for " + vif);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Ok();
}

// An HVM guest's emulated NICs: QEMU created their taps when it started;
// each is attached like its vif (same backend nodes, same script), as libxl
// does once the device model runs. Like a vif that fails, a tap that fails
// leaves that NIC without network and the guest running (the operator sees
// why in the log).
void XenReplica::AttachEmulatedNics() {
  if (!spec_.device_model || spec_.device_model->nics.empty()) return;
  if (!opts_.create_vifs) {
    spdlog::warn("the guest's {} emulated NIC(s) are not attached (--no-vifs): they have no network",
                 spec_.device_model->nics.size());
    return;
  }
  for (const auto& nic : spec_.device_model->nics) {
    const std::string tap = devicemodel::EmulatedNicTap(domid_, nic.devid);
    Status s;
    if (std::none_of(spec_.vifs.begin(), spec_.vifs.end(), [&](const VifSpec& v) { return v.devid == nic.devid; })) {
      s = Status::InvalidArgument("no vif " + std::to_string(nic.devid) + " to take its bridge from");
    } else if (access(("/sys/class/net/" + tap).c_str(), F_OK) != 0) {
      s = Status::IoError("the device model created no " + tap);
    } else {
      s = RunVifScript(nic.devid, /*tap=*/true);
    }
    if (s.ok()) {
      spdlog::info("{} (emulated {}, mac {}) attached for the activated guest", tap, nic.model, nic.mac);
    } else {
      spdlog::warn("emulated NIC {} ({}) of the activated guest: {}", nic.devid, tap, s.ToString());
    }
  }
}

void XenReplica::CreateVifs() {
  if (spec_.vifs.empty()) return;
  if (!opts_.create_vifs) {
    spdlog::warn("the guest had {} vif(s); not recreated (--no-vifs): it has no network", spec_.vifs.size());
    return;
  }
  for (const VifSpec& v : spec_.vifs) {
    Status s = WriteVifNodes(v);
    if (s.ok()) s = RunVifHotplug(v);
    if (s.ok()) {
      spdlog::info("vif{}.{} (mac {}{}{}) recreated for the activated guest", domid_, v.devid,
              v.mac, v.bridge.empty() ? "" : ", bridge ", v.bridge);
    } else {
      spdlog::warn("vif {} (mac {}) of the activated guest: {}", v.devid, v.mac,
              s.ToString());
    }
  }
}

}  // namespace romulus::xen

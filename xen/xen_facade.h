// The Xen backend as the rest of Romulus sees it: the primary's checkpoint
// driver, the backup's sink, and a probe. This header includes no Xen
// header, so cli/ can include it; the implementations live in xen/ and exist
// only when libxen-dev was found (ROMULUS_HAVE_XEN=1, set by xen/CMakeLists).
//
//   romulus replicate --domain NAME|DOMID --to HOST:PORT
//     -> xen::OpenXenDriver(opts) gives the PrimaryController its driver
//   romulus restore --xen [--domain-name NAME]
//     -> xen::CreateXenSink(opts) gives the receiver its GuestSink
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "replicator/checkpoint_driver.h"
#include "restore/guest_sink.h"
#include "disk/block_device.h"

namespace romulus::xen {

struct XenDriverOptions {
  std::string domain;                               // name or numeric domid
  std::chrono::milliseconds suspend_timeout{5000};  // "guest will not suspend" after this
  // An HVM guest's device model: its stop and state save, and its cont, each
  // within this (a hung QEMU; apart from the guest's own suspend time).
  std::chrono::milliseconds device_model_timeout{5000};
  // Raw stream bytes staged between the pipe and the sender, so the guest's
  // suspended window never waits on the network (blocks of 1 MiB, reused).
  uint64_t staging_bytes = 256ull << 20;
  bool verbose = false;  // libxenguest logging to stderr
  std::string tee_path;  // also write libxenguest's raw v2 stream here (fixtures, debugging)
  // The guest's disks replicated with its memory (GuestFacts::disks): the
  // same list the controller's DiskReplicator serves (`--disk-tap`).
  std::vector<protocol::DiskInfo> disks;
  // An HVM guest's device state (QEMU's, per epoch) larger than this fails
  // the checkpoint (OutOfRange): a bound on what one epoch may carry.
  size_t max_device_state = size_t{16} << 20;
  // The interfaces whose output is buffered (replicate --netbuf-vif): when
  // any is, every interface the guest sends on must be (its vifs, an HVM
  // guest's emulated NIC taps), or the start is refused.
  std::vector<std::string> buffered_interfaces;
};

// Opens the hypervisor, resolves the domain and checks it can be protected:
// a PV, PVH or HVM domain (HVM: with libxl's qemu-xen device model in dom0,
// stopped, saved and continued in every checkpoint) that is not shutting
// down, not handed over to a backup by an earlier switchover (a domain left
// suspended by a dead replicator is resumed). The driver runs xc_domain_save(XC_STREAM_REMUS) per session and
// taps its v2 stream into the session's page path; the domain is left
// running with log-dirty off after each session.
Result<std::unique_ptr<replicator::CheckpointDriver>> OpenXenDriver(const XenDriverOptions& opts);

struct XenRestoreOptions {
  // Name of the domain while it is a backup; default "<original>--incoming".
  std::string domain_name;
  // Name after failover; default: the primary's name (the session identity).
  std::string final_name;
  // After failover, how long to wait for the original name to become free
  // (the primary domain destroyed) before giving up renaming.
  std::chrono::milliseconds rename_wait{30000};
  // The guest's PV NICs (from the primary's domain info) are recreated at
  // activation, served by dom0's netback and brought up with this hotplug
  // script ("online", libxl's environment). Never a path from the stream.
  bool create_vifs = true;
  std::string vif_script = "/etc/xen/scripts/vif-bridge";
  // The guest's replicated disks (docs/DISK.md §6, §8): one sparse image per
  // disk in this directory; "" refuses a primary with disks. Staged disk
  // data of one epoch is bounded by max_disk_staging.
  std::string disk_dir;
  size_t max_disk_staging = size_t{64} << 20;
  uint64_t max_disk_spill = 0;  // beyond max_disk_staging, into disk_dir
  // At activation, how long blkback may take to open each disk's device
  // before the activation fails with the guest still paused (a guest that
  // ran without its disk would see it empty).
  std::chrono::milliseconds vbd_wait{20000};
  // At activation, the block device each disk image is served from; null
  // (or a factory returning null): a loop device over the image.
  disk::BlockDeviceFactory disk_device;
  // HVM guests (docs/DEVICE-MODEL.md §3): each epoch's device state is kept
  // with its memory, bounded by max_device_state (more: the epoch is
  // refused, ERROR resource); at activation device_model (Debian's
  // qemu-system-xen, at libxl's path) is started from the last committed
  // one, logging into device_model_log_dir, and must run within
  // device_model_wait or the replica stays paused.
  size_t max_device_state = size_t{16} << 20;
  std::string device_model = "/usr/libexec/xen-qemu-system-i386";
  std::string device_model_log_dir = "/var/log/xen";
  std::chrono::milliseconds device_model_wait{60000};
  // A directly booted HVM guest's device model must load a kernel to have
  // the primary's devices (devicemodel::DeviceModelConfig::kernel): the
  // path the primary names is used only if it resolves into one of these.
  std::vector<std::string> guest_kernel_dirs{"/boot"};
  bool verbose = false;
};

// The backup's sink: a paused PV domain restored by xc_domain_restore from the
// rebuilt stream; Activate() finishes it and unpauses it.
Result<std::unique_ptr<restore::GuestSink>> CreateXenSink(const XenRestoreOptions& opts);
// The name of the domain a Xen sink activated ("" for another sink, or
// before the activation): what a reverse replication protects.
std::string ActivatedDomainName(const restore::GuestSink& sink);
// The activated guest runs on replicated disks (VBDs on the --disk-dir
// images): --reverse-to can protect it only if every disk was served
// through a disk export (XenRestoreOptions::disk_device); memory alone would
// give the new backup checkpoints whose disk is not the guest's.
bool ActivatedWithDisks(const restore::GuestSink& sink);

// "Xen 4.17.5 (tools 4.17)" or a clear error (no privcmd, not dom0, version
// mismatch between the hypervisor and the libraries we were built against).
Result<std::string> ProbeXen();

}  // namespace romulus::xen

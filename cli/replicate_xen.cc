// `romulus replicate --domain`: the Xen driver (xen/xen_facade.h) under the
// same PrimaryController as every other guest.
#include <spdlog/spdlog.h>

#include <memory>
#include <set>
#include <vector>

#include "cli/commands.h"
#include "cli/replicate_setup.h"
#include "common/units.h"
#include "disk/remote_disk_tap.h"
#include "replicator/disk_replicator.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_facade.h"
#endif

namespace romulus::cli {

int RunReplicateXen(const ReplicateSetup& setup, const std::string& domain, const std::vector<std::string>& disk_taps,
                    const transport::HostPort& target, std::shared_ptr<const transport::SecurityContext> sec) {
#if ROMULUS_HAVE_XEN
  auto probe = xen::ProbeXen();
  if (!probe.ok()) {
    spdlog::error("{}", probe.status().ToString());
    return kExitFailure;
  }
  spdlog::info("{}", *probe);
  xen::XenDriverOptions opts;
  opts.domain = domain;
  opts.suspend_timeout = setup.suspend_timeout;
  opts.device_model_timeout = setup.device_model_timeout;
  opts.buffered_interfaces = setup.netbuf_vifs;
  // The guest's disks: each served by a long-lived `romulus disk-export`
  // (the guest's phy:/dev/nbdN), reached over its tap socket. The export
  // keeps serving the guest when this process ends (docs/DISK.md §8).
  std::vector<std::unique_ptr<disk::RemoteDiskTap>> taps;
  std::vector<disk::DiskTap*> tap_ptrs;
  std::set<std::string> names;
  for (const std::string& path : disk_taps) {
    disk::RemoteDiskTapOptions to;
    to.disk_id = static_cast<uint32_t>(taps.size());
    auto tap = disk::RemoteDiskTap::Connect(path, to);
    if (!tap.ok()) {
      spdlog::error("cannot protect domain {}: disk tap {}: {} (is `romulus disk-export --tap-socket {}` running?)",
                    domain, path, tap.status().ToString(), path);
      return kExitFailure;
    }
    const protocol::DiskInfo& info = (*tap)->info();
    if (!names.insert(info.name).second) {
      spdlog::error("cannot protect domain {}: two disk taps serve a disk named '{}' ({})", domain, info.name, path);
      return kExitFailure;
    }
    spdlog::info("disk {}: {} through the disk export at {}", info.name, FormatSize(info.size_bytes), path);
    opts.disks.push_back(info);
    tap_ptrs.push_back(tap->get());
    taps.push_back(std::move(*tap));
  }
  auto driver = xen::OpenXenDriver(opts);
  if (!driver.ok()) {
    spdlog::error("cannot protect domain {}: {}", domain, driver.status().ToString());
    return kExitFailure;
  }
  replicator::DiskReplicator disks(tap_ptrs);
  ReplicateSetup with_disks = setup;
  if (!disks.empty()) with_disks.loop.disks = &disks;
  return RunPrimary(with_disks, std::move(*driver), target, std::move(sec));
#else
  (void)setup, (void)target, (void)sec;
  if (!disk_taps.empty()) {
    spdlog::error("cannot protect Xen domain '{}' with disks: this romulus was built without the Xen backend", domain);
    return kExitFailure;
  }
  spdlog::error("cannot protect Xen domain '{}': this romulus was built without the Xen backend", domain);
  return kExitFailure;
#endif
}

}  // namespace romulus::cli

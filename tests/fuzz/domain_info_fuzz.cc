// libFuzzer target for the backup's reading of the primary's domain-info
// record (xen/replica_spec.h): the record a hostile or broken primary sends
// first, from which the backup builds a domain.
//
// Invariants: never a crash; an accepted spec is one the backup can build
// safely — a known guest type, vCPUs and memory inside their bounds, a PVH
// container with LAPIC-only emulation and known misc flags, a memory need
// that does not overflow.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "xen/replica_spec.h"

using namespace romulus;
using namespace romulus::xen;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto info = ParseDomainInfo(std::span(data, size));
  auto spec = ReplicaSpecFromInfo(info);
  if (!spec.ok()) return 0;
  if (spec->type != GuestType::kPv && spec->type != GuestType::kPvh && spec->type != GuestType::kHvm) abort();
  // Exactly an HVM guest has a device model, and its facts agree with the
  // domain; the backup's command line for it is built without a comma
  // smuggled in (its values are numbers and fixed words).
  if (spec->device_model.has_value() != (spec->type == GuestType::kHvm)) abort();
  if (spec->device_model) {
    const auto& dm = *spec->device_model;
    if (dm.maxcpus != spec->max_vcpus || dm.vcpus == 0 || dm.vcpus > dm.maxcpus) abort();
    if (dm.memory_mib == 0 || dm.memory_mib > (uint64_t{1} << 24)) abort();
    if (dm.serials.size() > 4) abort();
    if ((spec->emulation_flags | XEN_X86_EMU_USE_PIRQ) != (XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI)) abort();
    devicemodel::IncomingDeviceModel where;
    where.domid = 1;
    where.name = "n";
    where.serial_files.assign(dm.serials.size(), "/s");
    if (!dm.kernel.empty() && !devicemodel::PlainAbsolutePath(dm.kernel)) abort();
    where.kernel = "/k";
    where.state_fd = 3;
    // Emulated disk slots name the backup's own devices, never a path from
    // the record: at most the bus's slots (four IDE, six AHCI ports), each once.
    const unsigned max_slot = devicemodel::MaxEmulatedDiskSlot(dm.disk_bus);
    if (dm.ide_disks.size() > max_slot + 1 || max_slot > 5) abort();
    for (unsigned slot : dm.ide_disks) {
      if (slot > max_slot || where.ide_paths.count(slot)) abort();
      where.ide_paths[slot] = "/dev/loop" + std::to_string(slot);
    }
    if (dm.nics.size() > 16) abort();
    auto args = devicemodel::IncomingDeviceModelArgs(dm, where);
    if (!args.ok()) abort();
    for (size_t i = 0; i + 1 < args->size(); i++) {
      if ((*args)[i] == "-m" && (*args)[i + 1].find_first_not_of("0123456789") != std::string::npos) abort();
    }
  }
  // Vif names reach xenstore and the hotplug script: plain interface names.
  if (spec->vifs.size() > kMaxVifs) abort();
  for (const VifSpec& v : spec->vifs) {
    for (const std::string* name : {&v.bridge, &v.vifname}) {
      if (name->size() > 15 || name->find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                                   std::string::npos) {
        abort();
      }
    }
  }
  if (spec->max_vcpus == 0 || spec->max_vcpus > 512) abort();
  if (spec->max_memkb == 0 || spec->max_memkb > (uint64_t{1} << 40)) abort();
  if (spec->target_kb == 0 || spec->target_kb > spec->max_memkb) abort();
  if (spec->type != GuestType::kPv) {
    if (spec->type == GuestType::kPvh && spec->emulation_flags != XEN_X86_EMU_LAPIC) abort();
    if (spec->misc_flags & ~uint32_t(XEN_X86_MSR_RELAXED)) abort();
    if (spec->timer_mode > 3) abort();
    if (spec->paging_pool_kb > (uint64_t{1} << 30)) abort();
  }
  const uint64_t need = ReplicaMemoryKb(*spec);
  if (need < spec->target_kb) abort();  // overflow
  return 0;
}

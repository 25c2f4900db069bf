#include "xen/replica_spec.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "protocol/messages.h"

namespace romulus::xen {

namespace {

bool ParseUuid(const std::string& s, uint8_t out[16]) {
  std::string hex;
  for (char c : s)
    if (c != '-') hex += c;
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return false;
  for (int i = 0; i < 16; i++) {
    unsigned v;
    if (sscanf(hex.c_str() + 2 * i, "%2x", &v) != 1) return false;
    out[i] = uint8_t(v);
  }
  return true;
}

std::string Get(const std::map<std::string, std::string>& info, const char* key) {
  auto it = info.find(key);
  return it == info.end() ? "" : it->second;
}

// A decimal number no larger than `max`, or kCorruption naming the key.
Result<uint64_t> Number(const std::map<std::string, std::string>& info, const char* key, uint64_t max) {
  const std::string v = Get(info, key);
  if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos) {
    return Status::Corruption(std::string("domain info: missing or bad ") + key + " \"" + protocol::Printable(v) + "\"");
  }
  errno = 0;
  const unsigned long long n = strtoull(v.c_str(), nullptr, 10);
  if (errno == ERANGE || n > max) {
    return Status::Corruption(std::string("domain info: ") + key + " " + v + " out of range (at most " +
                              std::to_string(max) + ")");
  }
  return uint64_t(n);
}

Result<GuestType> TypeFromInfo(const std::map<std::string, std::string>& info) {
  const std::string hvm = Get(info, "hvm");
  // A primary that predates "type" sends hvm=0 and protects PV guests only.
  const std::string name = Get(info, "type").empty() && hvm != "1" ? "pv" : Get(info, "type");
  GuestType t;
  if (name == "pv") {
    t = GuestType::kPv;
  } else if (name == "pvh") {
    t = GuestType::kPvh;
  } else if (name == "hvm") {
    t = GuestType::kHvm;
  } else {
    return Status::Unsupported("domain info: unknown guest type \"" + protocol::Printable(name) +
                               "\" (a newer primary? this backup restores pv, pvh and hvm guests)");
  }
  if ((t == GuestType::kPv) != (hvm != "1")) {
    return Status::Corruption("domain info: guest type " + name + " with hvm=\"" + protocol::Printable(hvm) + "\"");
  }
  return t;
}

// A PVH guest's HVM-container settings.
Status ContainerFromInfo(const std::map<std::string, std::string>& info, ReplicaSpec* spec) {
  auto hap = Number(info, "hap", 1);
  if (!hap.ok()) return hap.status();
  auto emu = Number(info, "emu_flags", UINT32_MAX);
  if (!emu.ok()) return emu.status();
  auto misc = Number(info, "misc_flags", UINT32_MAX);
  if (!misc.ok()) return misc.status();
  // HVM_PARAM_TIMER_MODE: 0..3 are defined (HVMPTM_*).
  auto timer = Number(info, "timer_mode", 3);
  if (!timer.ok()) return timer.status();
  // A pool over 1 TiB is a damaged record, not a guest.
  auto pool = Number(info, "paging_pool_kb", uint64_t{1} << 30);
  if (!pool.ok()) return pool.status();
  // Xen accepts exactly LAPIC emulation for a PVH domU and everything but
  // vPCI for an HVM domU (libxl may leave out PIRQ use); anything else is a
  // damaged record.
  constexpr uint32_t kHvmEmulation = XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI;
  if (spec->type == GuestType::kPvh && *emu != XEN_X86_EMU_LAPIC) {
    return Status::Corruption("domain info: a PVH guest with emulation flags " + std::to_string(*emu) +
                              " (PVH emulates the local APIC only, flags " + std::to_string(XEN_X86_EMU_LAPIC) + ")");
  }
  if (spec->type == GuestType::kHvm && (*emu | XEN_X86_EMU_USE_PIRQ) != kHvmEmulation) {
    return Status::Corruption("domain info: an HVM guest with emulation flags " + std::to_string(*emu) +
                              " (HVM emulates everything but vPCI, flags " + std::to_string(kHvmEmulation) + ")");
  }
  if (*misc & ~uint64_t(XEN_X86_MSR_RELAXED)) {
    return Status::Unsupported("domain info: misc flags " + std::to_string(*misc) + " unknown to this backup");
  }
  spec->hap = *hap == 1;
  spec->emulation_flags = uint32_t(*emu);
  spec->misc_flags = uint32_t(*misc);
  spec->timer_mode = *timer;
  spec->paging_pool_kb = *pool;
  if (spec->type != GuestType::kHvm) return Status::Ok();
  auto hpet = Number(info, "hpet", 1);
  if (!hpet.ok()) return hpet.status();
  auto vpt = Number(info, "vpt_align", 1);
  if (!vpt.ok()) return vpt.status();
  spec->hpet = *hpet == 1;
  spec->vpt_align = *vpt == 1;
  auto dm = devicemodel::DeviceModelConfigFromInfo(info);
  if (!dm.ok()) return dm.status();
  // QEMU binds one ioreq event channel per possible vCPU: facts that
  // disagree with the domain's are a damaged record.
  if (dm->maxcpus != spec->max_vcpus) {
    return Status::Corruption("domain info: the device model has " + std::to_string(dm->maxcpus) +
                              " possible vCPUs, the domain " + std::to_string(spec->max_vcpus));
  }
  // Not compared with max_memkb: that is Xen's current limit (libxl's
  // target plus slack, lowered by `xl mem-set`), while -m is the static
  // maximum minus video memory; DeviceModelConfigFromInfo bounds it.
  spec->device_model = *dm;
  return Status::Ok();
}

}  // namespace

std::map<std::string, std::string> ParseDomainInfo(std::span<const uint8_t> payload) {
  std::map<std::string, std::string> out;
  std::istringstream in(std::string(payload.begin(), payload.end()));
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

Result<ReplicaSpec> ReplicaSpecFromInfo(const std::map<std::string, std::string>& info) {
  ReplicaSpec spec;
  auto type = TypeFromInfo(info);
  if (!type.ok()) return type.status();
  spec.type = *type;
  // A bad UUID costs only the replica's identity, never the checkpoint.
  if (!ParseUuid(Get(info, "uuid"), spec.handle)) memset(spec.handle, 0, sizeof spec.handle);
  spec.uuid = FormatUuid(spec.handle);
  auto vcpus = Number(info, "max_vcpus", 512);
  if (!vcpus.ok() || *vcpus == 0) return Status::Corruption("domain info: bad max_vcpus");
  auto max_kb = Number(info, "max_memkb", uint64_t{1} << 40);
  if (!max_kb.ok() || *max_kb == 0) return Status::Corruption("domain info: bad max_memkb");
  spec.max_vcpus = unsigned(*vcpus);
  spec.max_memkb = *max_kb;
  auto target = Number(info, "target_kb", spec.max_memkb);
  spec.target_kb = target.ok() && *target != 0 ? *target : spec.max_memkb;
  auto vifs = VifSpecsFromInfo(info);
  if (!vifs.ok()) return vifs.status();
  spec.vifs = std::move(*vifs);
  if (spec.type != GuestType::kPv) ROMULUS_RETURN_IF_ERROR(ContainerFromInfo(info, &spec));
  return spec;
}

uint64_t ReplicaMemoryKb(const ReplicaSpec& spec) {
  if (spec.type == GuestType::kPv) return spec.target_kb;
  return spec.target_kb + std::max(spec.paging_pool_kb, MinPagingPoolKb(spec.max_memkb, spec.max_vcpus));
}

Status CheckReplicaEpochs(GuestType type, bool has_disks, uint64_t applied, uint64_t committed, uint64_t epoch) {
  if (applied == committed) return Status::Ok();
  const std::string counts = "libxenguest applied " + std::to_string(applied) + " checkpoints, " +
                             std::to_string(committed) + " were committed (the last as epoch " +
                             std::to_string(epoch) + ")";
  if (applied < committed) return Status::Internal(counts + ": a committed epoch was never applied");
  if (type == GuestType::kHvm || has_disks) {
    return Status::Corruption(counts + ": its memory is of a later epoch than its " +
                              (type == GuestType::kHvm ? std::string("device model's state") : std::string("disks")) +
                              " (libxenguest took a checkpoint after the commit gave up waiting); the replica "
                              "cannot run");
  }
  return Status::Ok();
}

}  // namespace romulus::xen

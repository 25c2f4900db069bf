// The replica a backup builds, as the primary's domain-info record
// describes it (docs/XEN-STREAM.md §3): parsed and validated here, apart
// from the hypervisor calls that build it (xen/xen_replica.*), so hostile
// or damaged records are unit-tested and fuzzed without a Xen host.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "devicemodel/device_model_config.h"
#include "xen/vif_spec.h"
#include "xen/xen_env.h"

namespace romulus::xen {

// What the primary's domain-info record says the replica must look like.
struct ReplicaSpec {
  std::string name;  // xenstore name while it is a backup (NAME--incoming); set by the sink
  std::string uuid;  // 8-4-4-4-12, the primary's handle
  uint8_t handle[16] = {};
  unsigned max_vcpus = 1;
  uint64_t max_memkb = 0, target_kb = 0;
  std::vector<VifSpec> vifs;
  // PV, or an HVM container: a PVH guest, or an HVM guest with its device
  // model (started at activation from the typed facts below).
  GuestType type = GuestType::kPv;
  // HVM containers only: built as the primary's was.
  bool hap = true;
  uint32_t emulation_flags = 0, misc_flags = 0;
  uint64_t timer_mode = 1;      // HVM_PARAM_TIMER_MODE (the stream does not carry it)
  uint64_t paging_pool_kb = 0;  // at least MinPagingPoolKb
  // HVM guests only: params the stream does not carry, and the device model.
  bool hpet = false, vpt_align = false;
  std::optional<devicemodel::DeviceModelConfig> device_model;
};

// The record's "key=value" lines (later keys win; lines without '=' are
// skipped).
std::map<std::string, std::string> ParseDomainInfo(std::span<const uint8_t> payload);

// Everything but the name: uuid, vCPUs, memory, NICs, guest type, (PVH,
// HVM) the HVM container's settings and (HVM) the device model's facts.
// kCorruption for a damaged record, kUnsupported for a guest type this
// backup does not know.
Result<ReplicaSpec> ReplicaSpecFromInfo(const std::map<std::string, std::string>& info);

// Free hypervisor memory the replica needs: its pages plus, for an HVM
// container, its paging pool.
uint64_t ReplicaMemoryKb(const ReplicaSpec& spec);

// Whether a finished replica may run (docs/FAILURE-MODEL.md §4): libxenguest
// applied `applied` checkpoints, the sink committed `committed`, the last as
// `epoch`. Equal: the domain holds exactly that epoch. More applied (it took
// a CHECKPOINT after the commit gave up waiting): its memory is the next,
// never committed, epoch; refused (kCorruption) when that would pair it with
// disks (has_disks) or an HVM device state of the committed epoch, allowed
// for a guest whose memory is its whole state (the caller says so: the
// guest resumes past the last acknowledged epoch, whose output the primary
// never released). Fewer applied: kInternal (a commit waits for its
// CHECKPOINT).
Status CheckReplicaEpochs(GuestType type, bool has_disks, uint64_t applied, uint64_t committed, uint64_t epoch);

}  // namespace romulus::xen

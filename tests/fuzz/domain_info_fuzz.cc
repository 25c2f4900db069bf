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

#include "xen/replica_spec.h"

using namespace romulus;
using namespace romulus::xen;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto info = ParseDomainInfo(std::span(data, size));
  auto spec = ReplicaSpecFromInfo(info);
  if (!spec.ok()) return 0;
  if (spec->type != GuestType::kPv && spec->type != GuestType::kPvh) abort();
  if (spec->max_vcpus == 0 || spec->max_vcpus > 512) abort();
  if (spec->max_memkb == 0 || spec->max_memkb > (uint64_t{1} << 40)) abort();
  if (spec->target_kb == 0 || spec->target_kb > spec->max_memkb) abort();
  if (spec->type == GuestType::kPvh) {
    if (spec->emulation_flags != XEN_X86_EMU_LAPIC) abort();
    if (spec->misc_flags & ~uint32_t(XEN_X86_MSR_RELAXED)) abort();
    if (spec->timer_mode > 3) abort();
    if (spec->paging_pool_kb > (uint64_t{1} << 30)) abort();
  }
  const uint64_t need = ReplicaMemoryKb(*spec);
  if (need < spec->target_kb) abort();  // overflow
  return 0;
}

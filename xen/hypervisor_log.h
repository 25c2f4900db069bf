// What the hypervisor's console ring (`xl dmesg`) says about one domain.
// Includes no Xen header: the ring is read in xen_env.cc, picked apart here
// (and tested anywhere).
//
// Why: a guest that dies while it is being checkpointed is reported by Xen
// only as a shutdown reason. An HVM or PVH guest that triple-faults is shut
// down with HVM_PARAM_TRIPLE_FAULT_REASON, SHUTDOWN_reboot by default, so
// "shut down (reboot) instead of suspending" may mean that the guest's kernel
// died, not that anyone asked it to reboot. The hypervisor's log says which
// (when its guest_loglvl lets it print guest messages).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace romulus::xen {

struct DomainLogExcerpt {
  // The ring's lines about the domain, oldest first, at most max_lines: those
  // naming it (d7, d7v0, Dom7) and the register dump that follows
  // "Dumping Dom7 vcpu#N state". Left out: the per-checkpoint HVM context
  // save/restore records and upcall-vector lines, which every epoch writes.
  std::vector<std::string> lines;
  // The line reporting a triple fault of one of its vCPUs, if any.
  std::string triple_fault;
  // The line reporting a domain_crash, if any.
  std::string crash;
};

DomainLogExcerpt ExcerptForDomain(std::string_view ring, uint32_t domid, size_t max_lines = 24);

// A sentence to append to "domain X shut down (REASON) instead of
// suspending": what the hypervisor's log says happened, or that it says
// nothing (and why it may not). With no reason (the domain is gone or being
// destroyed), "" when the log has nothing about it.
std::string ExplainUnexpectedShutdown(const DomainLogExcerpt& ex, uint32_t domid, std::string_view reason);

}  // namespace romulus::xen

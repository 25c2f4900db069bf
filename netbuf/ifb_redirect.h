// IfbRedirect: gives a Xen vif's transmit a queue that can be plugged.
//
// The guest's transmit arrives in dom0 as the vif's INGRESS, which has no
// queue. As Remus did: an ingress qdisc on the vif, a u32 match-all filter
// whose mirred action redirects every packet to the egress of an IFB device
// Romulus creates; the plug then sits as that IFB's root qdisc (plug_qdisc.h).
// IFB re-injects released packets into the vif's receive path, so bridging and
// routing behind the vif are unchanged.
//
// Ownership: the IFB is named IfbNameFor(vif) and carries the ifalias
// "romulus-netbuf <vif>"; the filter sits at priority kFilterPrio. That is how
// CleanupStaleVif recognises a crashed run's leftovers, and how it knows to
// leave alone what is not Romulus'.
//
// Not thread-safe: PlugQdisc calls it under its own mutex.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

struct nl_sock;

namespace romulus::netbuf {

inline constexpr uint16_t kFilterPrio = 0x524d;  // "RM"
inline constexpr const char* kIfbPrefix = "rmb-";
inline constexpr const char* kIfbAliasPrefix = "romulus-netbuf ";

// The IFB name Romulus uses for VIF (IFNAMSIZ-bounded, deterministic).
std::string IfbNameFor(const std::string& vif);

// Remove leftovers of a crashed Romulus run on VIF: our u32 filter, the
// ingress qdisc if it is then empty, our IFB. Nothing found is not an error.
// PlugQdisc::CreateForVif calls it itself; the CLI may call it for an
// explicit cleanup.
Status CleanupStaleVif(const std::string& vif, int* removed = nullptr);

class IfbRedirect {
 public:
  IfbRedirect(std::string vif, int vif_ifindex);

  // Creates the IFB, marks it as ours, brings it up. Returns its ifindex.
  Result<int> CreateIfb(nl_sock* sock);
  // Adds the ingress qdisc on the vif (unless one is there) and the redirect
  // filter. Call it once the IFB is plugged: no packet may reach an unplugged
  // IFB.
  Status Redirect(nl_sock* sock);
  // Undoes what was done, redirect first (once the IFB is gone it would
  // black-hole the guest's transmit), the IFB last (deleting it destroys its
  // plug and the queue). Goes on after an error and returns the first one.
  Status Remove(nl_sock* sock);

  const std::string& vif() const { return vif_; }
  const std::string& ifb() const { return ifb_; }

 private:
  std::string vif_, ifb_;
  int vif_ifindex_ = 0;
  int ifb_ifindex_ = 0;            // 0 until CreateIfb succeeded
  bool created_ingress_ = false;  // we added the ingress qdisc, so we remove it
};

}  // namespace romulus::netbuf

// The guest's PV network interfaces, carried from the primary to the backup
// in Romulus' domain-info record (docs/XEN-STREAM.md §2) so that the backup
// can give the activated domain the same NICs. Xen-free: the primary reads
// them from xenstore (xen_env), the backup creates them (xen_backup).
//
// One info line per vif:  vif.<devid>=<mac>[ <bridge>]
//   e.g.  vif.0=00:16:3e:4c:00:03 xenbr0
// The backup never takes a script path or any command from the stream: the
// hotplug script is its own operator's choice (restore --vif-script).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::xen {

inline constexpr unsigned kMaxVifs = 16;
inline constexpr unsigned kMaxVifDevid = 255;

struct VifSpec {
  unsigned devid = 0;
  std::string mac;     // "xx:xx:xx:xx:xx:xx", lower case
  std::string bridge;  // "" = none (the hotplug script decides)

  bool operator==(const VifSpec&) const = default;
};

// The info lines for `vifs` (each ends in '\n'). InvalidArgument for a spec
// that VifSpecsFromInfo would refuse, so a bad xenstore value never travels.
Result<std::string> VifInfoLines(const std::vector<VifSpec>& vifs);
// Every "vif.N" entry of a parsed domain-info record, by devid, validated:
// a well-formed MAC, a bridge of 1..15 characters [A-Za-z0-9_.-], devid <=
// kMaxVifDevid, at most kMaxVifs. Corruption names the offending entry.
Result<std::vector<VifSpec>> VifSpecsFromInfo(const std::map<std::string, std::string>& info);

// The dom0 interfaces a guest's transmit arrives on: vif<domid>.<devid>
// for each vif (netback) and vif<domid>.<devid>-emu for each emulated NIC
// (the tap of an HVM guest's device model; devicemodel::EmulatedNicTap).
std::vector<std::string> GuestInterfaces(uint32_t domid, const std::vector<VifSpec>& vifs,
                                         const std::vector<unsigned>& emulated_nics);
// Output commit is all or nothing (docs/OUTPUT-COMMIT.md): when some
// interfaces are buffered (`buffered`, the --netbuf-vif list, not empty),
// every interface in `guest` must be, or the guest's output on one that is
// not would leave before its epoch is acked while the stats say "committed".
// InvalidArgument naming the first one missing and the flag that adds it.
Status CheckEveryInterfaceBuffered(const std::vector<std::string>& guest, const std::vector<std::string>& buffered);

}  // namespace romulus::xen

// The guest's PV network interfaces, carried from the primary to the backup
// in Romulus' domain-info record (docs/XEN-STREAM.md §2) so that the backup
// can give the activated domain the same NICs. Xen-free: the primary reads
// them from xenstore (xen_env), the backup creates them (xen_backup).
//
// One info line per vif:  vif.<devid>=<mac>[ <bridge>]
//   e.g.  vif.0=00:16:3e:4c:00:03 xenbr0
// and for a vif with xl's vifname= a second:  vifname.<devid>=<name>
// (a line of its own: a backup that predates it ignores it and names the
// interface vif<domid>.<devid>).
// The backup never takes a script path or any command from the stream: the
// hotplug script is its own operator's choice (restore --vif-script).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
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
  std::string vifname;  // xl's vifname= ("" = the default vif<domid>.<devid>)

  bool operator==(const VifSpec&) const = default;
};

// The info lines for `vifs` (each ends in '\n'). InvalidArgument for a spec
// that VifSpecsFromInfo would refuse, so a bad xenstore value never travels.
Result<std::string> VifInfoLines(const std::vector<VifSpec>& vifs);
// Every "vif.N" entry of a parsed domain-info record, by devid, validated:
// a well-formed MAC, a bridge of 1..15 characters [A-Za-z0-9_.-], devid <=
// kMaxVifDevid, at most kMaxVifs; with its "vifname.N", a name by the
// bridge's rules. Corruption names the offending entry (a vifname.N
// without its vif.N too).
Result<std::vector<VifSpec>> VifSpecsFromInfo(const std::map<std::string, std::string>& info);

// Where one PV NIC's transmit comes out (the primary's own reading, never
// sent): every vif of the guest, recreated on the backup or not.
inline constexpr uint32_t kUnknownBackendDomain = UINT32_MAX;
struct VifPlace {
  unsigned devid = 0;
  std::string vifname;         // the backend's vifname= (xl's vifname=); "" for the default name
  uint32_t backend_domid = 0;  // the domain whose netback serves it (0: dom0; kUnknownBackendDomain)
};

// The domain whose netback serves vif `devid` of domain `domid`, from the
// backend path libxl records for it in dom0's own
// /libxl/<domid>/device/vif/<devid>/backend: exactly
// "/local/domain/<B>/backend/vif/<domid>/<devid>". nullopt for anything
// else.
std::optional<uint32_t> VifBackendDomain(const std::string& backend_path, uint32_t domid, unsigned devid);

// The interface an emulated NIC's output leaves dom0 by: the tap its device
// model was started with (libxl's vif<domid>.<devid>-emu), which the
// hotplug script renames to <vifname>-emu when vif `devid` has a vifname
// (vif-common.sh, type_if=tap).
std::string EmulatedNicInterface(const std::string& qemu_tap, unsigned devid, const std::vector<VifPlace>& vifs);

// One interface the guest transmits on, as output commit sees it.
struct GuestInterface {
  std::string name;            // dom0's interface; for a vif served elsewhere, "vif<domid>.<devid>"
  uint32_t backend_domid = 0;  // 0: in dom0, where --netbuf-vif can plug it
  bool operator==(const GuestInterface&) const = default;
};

// The interfaces a guest's transmit arrives on: for each vif (netback)
// vif<domid>.<devid>, or its vifname= (libxl's hotplug script renames the
// interface to it), and each emulated NIC's (EmulatedNicInterface).
std::vector<GuestInterface> GuestInterfaces(uint32_t domid, const std::vector<VifPlace>& vifs,
                                            const std::vector<std::string>& emulated_taps);
// Output commit is all or nothing (docs/OUTPUT-COMMIT.md): when some
// interfaces are buffered (`buffered`, the --netbuf-vif list, not empty),
// every interface in `guest` must be, or the guest's output on one that is
// not would leave before its epoch is acked while the stats say "committed".
// InvalidArgument naming the first one missing and the flag that adds it;
// for a vif whose netback runs in another domain (a driver domain), whose
// output never passes through this dom0's plugs, saying so.
Status CheckEveryInterfaceBuffered(const std::vector<GuestInterface>& guest, const std::vector<std::string>& buffered);

}  // namespace romulus::xen

// Handles on the hypervisor and xenstore, and the domain facts both sides
// need. Includes Xen headers: only xen/*.cc may include this file.
#pragma once

// Some of Xen's tool headers lack extern "C" guards.
extern "C" {
#include <xenctrl.h>
#include <xenguest.h>
#include <xenstore.h>
}

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "devicemodel/device_model_config.h"
#include "xen/vif_spec.h"

namespace romulus::xen {

// Owns an xc_interface and an xs_handle. Not copyable.
class XenHandles {
 public:
  // verbose: libxenctrl/libxenguest log to stderr at DEBUG, else errors only.
  static Result<std::unique_ptr<XenHandles>> Open(bool verbose);
  ~XenHandles();
  xc_interface* xch() const { return xch_; }
  struct xs_handle* xsh() const { return xsh_; }
  // The last warnings/errors libxenctrl/libxenguest logged (they explain a
  // failure better than its return code: "Failed to enable logdirty: ...").
  std::string RecentErrors() const;
  bool LogContains(const std::string& needle) const;

  struct Logger;  // a xentoollog_logger that also keeps recent errors

 private:
  XenHandles() = default;
  Logger* logger_ = nullptr;
  xc_interface* xch_ = nullptr;
  struct xs_handle* xsh_ = nullptr;
};

// What kind of x86 guest a domain is, as the hypervisor sees it (never
// libxl's /libxl/D/type: a replica Romulus activated has no libxl node).
//   PV   no XEN_DOMINF_hvm_guest;
//   PVH  an HVM container whose only emulated device is the local APIC;
//   HVM  anything else (a device model emulates the platform).
enum class GuestType { kPv, kPvh, kHvm };
const char* GuestTypeName(GuestType t);  // "pv", "pvh", "hvm"

// How the primary stops its guest for a checkpoint (docs/DEVICE-MODEL.md
// §2.1). Asking (control/shutdown = suspend) lets the guest's PV drivers
// suspend it: they disconnect and reconnect, which is what lets its front
// ends find the backup's devices after a failover. An HVM guest without PV
// drivers never answers, and one asleep in an ACPI S state cannot: the
// hypervisor suspends those (xc_domain_shutdown SHUTDOWN_suspend), with no
// guest involvement, and they are resumed without touching their registers.
// A guest has PV drivers when it set up the event channel callback
// (HVM_PARAM_CALLBACK_IRQ non-zero: libxl's test; Linux 6.0+ with per-vCPU
// upcall vectors sets it to 1 for the toolstack's sake) or when its drivers
// announced that they handle a suspend (control/feature-suspend = 1, which
// Linux's xenbus writes; a second signal, for drivers that take upcall
// vectors without setting the parameter). The guest owns that node: by
// writing it without PV drivers it only makes itself unsuspendable, i.e.
// unprotected, never anything worse. PV and PVH guests are always asked
// (no other consistent way).
enum class SuspendWay { kAskGuest, kHypervisor };
SuspendWay ChooseSuspendWay(GuestType type, bool announces_suspend, uint64_t callback_irq, uint64_t acpi_s_state);
const char* SuspendWayName(SuspendWay w);  // "ask-guest", "hypervisor"

// One domain as XEN_DOMCTL_getdomaininfo reports it. Read through
// xc_domain_getinfolist, which Xen 4.17 and 4.20 both have
// (xc_domain_getinfo and xc_dominfo_t are gone from 4.18 on).
struct DomInfo {
  uint32_t domid = 0;
  bool dying = false;
  bool shutdown = false;
  unsigned shutdown_reason = 0;  // SHUTDOWN_* when shutdown
  bool paused = false;
  bool hvm = false;
  bool hap = false;
  unsigned max_vcpu_id = 0;
  uint64_t max_memkb = 0;
  uint8_t handle[16] = {};
  uint32_t emulation_flags = 0;  // XEN_X86_EMU_*
  uint32_t misc_flags = 0;       // XEN_X86_MSR_RELAXED ...
  GuestType type() const;
};

struct DomainFacts {
  uint32_t domid = 0;
  std::string name;
  std::string uuid;            // xen_domain_handle_t as 8-4-4-4-12 hex
  uint8_t handle[16] = {};
  GuestType type = GuestType::kPv;
  bool hap = false;               // hardware-assisted paging (HVM containers)
  uint32_t emulation_flags = 0;   // XEN_X86_EMU_*: what Xen emulates for it
  uint32_t misc_flags = 0;        // XEN_X86_MSR_RELAXED ...
  uint64_t timer_mode = 0;        // HVM_PARAM_TIMER_MODE (HVM containers)
  uint64_t paging_pool_kb = 0;    // HAP/shadow pool (xc_get_paging_mempool_size)
  // HVM guests: the params libxl sets before a restore and the stream does
  // not carry, and the device model as typed facts (OpenXenDriver reads
  // them from its command line: docs/DEVICE-MODEL.md §3.1).
  uint64_t hpet_enabled = 0, vpt_align = 0;
  std::optional<devicemodel::DeviceModelConfig> device_model;
  unsigned max_vcpus = 1;      // max_vcpu_id + 1
  uint64_t max_memkb = 0;
  uint64_t target_kb = 0;      // xenstore memory/target (falls back to max)
  uint64_t guest_pages = 0;    // max(max gpfn + 1, max_memkb / 4)
  bool shutdown = false;
  unsigned shutdown_reason = 0;
  bool dying = false;
  // PV NICs served by dom0 (read from dom0's own xenstore records, never
  // the guest's frontend directory), for the backup to recreate; others are
  // skipped with a warning on stderr.
  std::vector<VifSpec> vifs;
  // Every PV NIC, wherever served and recreated or not: where its transmit
  // comes out, for output commit (CheckEveryInterfaceBuffered).
  std::vector<VifPlace> vif_places;
};

// One domain's hypervisor info; kInvalidArgument if it does not exist.
Result<DomInfo> GetDomainInfo(xc_interface* xch, uint32_t domid);

// What this host's hypervisor can do for log-dirty tracking: PV guests need
// shadow paging (Debian's recent 4.17 security builds have none); PVH and
// HVM guests need HAP or shadow.
struct HostCaps {
  bool hvm = false, hap = false, shadow = false;
};
Result<HostCaps> GetHostCaps(xc_interface* xch);
// Ok when this host can track `type` guests' dirty pages; else a clear
// kUnsupported saying what is missing.
Status CheckCanProtect(const HostCaps& caps, GuestType type, bool hap, const std::string& domain);
// libxl's floor for an HVM container's paging pool, in KiB: 1 MiB per vCPU
// plus a page per MiB of RAM for the p2m and one more for shadow.
uint64_t MinPagingPoolKb(uint64_t max_memkb, unsigned vcpus);
// Resolves "guest1" or "7" (a name is looked up in xenstore /local/domain/*/name).
Result<DomainFacts> ResolveDomain(const XenHandles& h, const std::string& name_or_id);
// An HVM guest's device model as typed facts, from the command line of the
// process xenstore names (/local/domain/D/image/device-model-pid): what the
// backup needs to start the same devices. kUnsupported naming a device it
// could not reproduce (devicemodel::ParseDeviceModelArgs).
Result<devicemodel::DeviceModelConfig> ReadDeviceModelConfig(const XenHandles& h, uint32_t domid);

// xenstore helpers: "" when the key is missing.
std::string XsRead(struct xs_handle* xsh, const std::string& path);
Status XsWrite(struct xs_handle* xsh, xs_transaction_t t, const std::string& path, const std::string& value);

// The edits of one xenstore transaction. The first failing edit records
// errno and turns the rest into no-ops, so a body reads as a plain list.
class XsTxn {
 public:
  XsTxn(struct xs_handle* xs, xs_transaction_t t) : xs_(xs), t_(t) {}
  void Remove(const std::string& path);  // a missing node is fine
  // The directory, readable per `perms` (owner first, as xs_set_permissions).
  void MakeDir(const std::string& path, std::initializer_list<struct xs_permissions> perms);
  void Write(const std::string& path, const std::string& value);
  bool ok() const { return ok_; }
  int error() const { return errno_; }

 private:
  void Fail();
  struct xs_handle* xs_;
  xs_transaction_t t_;
  bool ok_ = true;
  int errno_ = 0;
};
// Runs body in a transaction and commits it; a commit that conflicts with
// another writer (EAGAIN) runs the body again, up to 5 times. `what` names
// the edits for the error ("disk xvdb's xenstore nodes").
Status XsTransact(struct xs_handle* xsh, const std::string& what, const std::function<void(XsTxn&)>& body);

// The hypervisor's console ring (`xl dmesg`), its last max_bytes; "" when it
// cannot be read. Read-only: the ring is not cleared.
std::string ReadConsoleRing(xc_interface* xch, size_t max_bytes = 256u << 10);

// The hypervisor's "major.minor", and a check that it matches the 4.x series
// the libraries and headers we were built with speak (same major.minor).
Result<std::string> HypervisorVersion(xc_interface* xch);
Status CheckVersionMatch(xc_interface* xch);
// The running hypervisor's release as protocol::XenRelease (major << 16 |
// minor): what the primary's HELLO names and the backup compares with
// (kCapXenRelease). After CheckVersionMatch it is also the tools' release.
Result<uint32_t> HypervisorRelease(xc_interface* xch);

std::string FormatUuid(const uint8_t handle[16]);

}  // namespace romulus::xen

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
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
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

struct DomainFacts {
  uint32_t domid = 0;
  std::string name;
  std::string uuid;            // xen_domain_handle_t as 8-4-4-4-12 hex
  uint8_t handle[16] = {};
  bool hvm = false;
  unsigned max_vcpus = 1;      // max_vcpu_id + 1
  uint64_t max_memkb = 0;
  uint64_t target_kb = 0;      // xenstore memory/target (falls back to max)
  uint64_t guest_pages = 0;    // max(max gpfn + 1, max_memkb / 4)
  bool shutdown = false;
  unsigned shutdown_reason = 0;
  bool dying = false;
  // PV NICs served by dom0 (device/vif/N with backend-id 0), for the backup
  // to recreate; others are skipped with a warning on stderr.
  std::vector<VifSpec> vifs;
};

// One domain's hypervisor info; kInvalidArgument if it does not exist.
Result<xc_dominfo_t> GetDomainInfo(xc_interface* xch, uint32_t domid);
// Resolves "guest1" or "7" (a name is looked up in xenstore /local/domain/*/name).
Result<DomainFacts> ResolveDomain(const XenHandles& h, const std::string& name_or_id);

// xenstore helpers: "" when the key is missing.
std::string XsRead(struct xs_handle* xsh, const std::string& path);
Status XsWrite(struct xs_handle* xsh, xs_transaction_t t, const std::string& path, const std::string& value);

// The hypervisor's "major.minor", and a check that it matches the 4.x series
// the libraries and headers we were built with speak (same major.minor).
Result<std::string> HypervisorVersion(xc_interface* xch);
Status CheckVersionMatch(xc_interface* xch);

std::string FormatUuid(const uint8_t handle[16]);

}  // namespace romulus::xen

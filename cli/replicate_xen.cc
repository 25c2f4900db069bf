// `romulus replicate --domain`: the Xen driver (xen/xen_facade.h) under the
// same PrimaryController as every other guest.
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/replicate_setup.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_facade.h"
#endif

namespace romulus::cli {

int RunReplicateXen(const ReplicateSetup& setup, const std::string& domain, const transport::HostPort& target,
                    std::shared_ptr<const transport::SecurityContext> sec) {
#if ROMULUS_HAVE_XEN
  auto probe = xen::ProbeXen();
  if (!probe.ok()) {
    spdlog::error("{}", probe.status().ToString());
    return kExitFailure;
  }
  spdlog::info("{}", *probe);
  xen::XenDriverOptions opts;
  opts.domain = domain;
  auto driver = xen::OpenXenDriver(opts);
  if (!driver.ok()) {
    spdlog::error("cannot protect domain {}: {}", domain, driver.status().ToString());
    return kExitFailure;
  }
  return RunPrimary(setup, std::move(*driver), target, std::move(sec));
#else
  (void)setup, (void)target, (void)sec;
  spdlog::error("cannot protect Xen domain '{}': this romulus was built without the Xen backend", domain);
  return kExitFailure;
#endif
}

}  // namespace romulus::cli

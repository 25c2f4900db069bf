#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/replicate_setup.h"

namespace romulus::cli {

int RunReplicateXen(const ReplicateSetup&, const std::string& domain, const transport::HostPort&,
                    std::shared_ptr<const transport::SecurityContext>) {
  spdlog::error("cannot protect Xen domain '{}': this romulus was built without the Xen backend", domain);
  return kExitFailure;
}

}  // namespace romulus::cli

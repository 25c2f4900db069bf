#include <spdlog/spdlog.h>

#include "cli/replicate_setup.h"
#if ROMULUS_HAVE_LIBNL
#include "netbuf/plug_qdisc.h"
#endif

namespace romulus::cli {

Result<std::unique_ptr<replicator::OutputCommit>> MakeOutputCommit(const ReplicateSetup& setup) {
  if (setup.netbuf_dev.empty() && setup.netbuf_vif.empty()) {
    return std::unique_ptr<replicator::OutputCommit>(new replicator::NoOutputCommit());
  }
#if ROMULUS_HAVE_LIBNL
  auto plug = setup.netbuf_vif.empty() ? netbuf::PlugQdisc::Create(setup.netbuf_dev)
                                       : netbuf::PlugQdisc::CreateForVif(setup.netbuf_vif);
  if (!plug.ok()) return plug.status();
  spdlog::info("output commit: {}", (*plug)->Describe());
  return std::unique_ptr<replicator::OutputCommit>(std::move(*plug));
#else
  return Status::Unsupported("this romulus was built without libnl-route-3: no network buffering");
#endif
}

}  // namespace romulus::cli

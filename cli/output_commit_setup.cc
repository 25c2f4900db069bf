#include <spdlog/spdlog.h>

#include "cli/replicate_setup.h"
#include "replicator/output_commit_group.h"
#if ROMULUS_HAVE_LIBNL
#include "netbuf/plug_qdisc.h"
#endif

namespace romulus::cli {

Result<std::unique_ptr<replicator::OutputCommit>> MakeOutputCommit(const ReplicateSetup& setup) {
  if (setup.netbuf_dev.empty() && setup.netbuf_vifs.empty()) {
    return std::unique_ptr<replicator::OutputCommit>(new replicator::NoOutputCommit());
  }
#if ROMULUS_HAVE_LIBNL
  if (!setup.netbuf_dev.empty()) {
    auto plug = netbuf::PlugQdisc::Create(setup.netbuf_dev);
    if (!plug.ok()) return plug.status();
    spdlog::info("output commit: {}", (*plug)->Describe());
    return std::unique_ptr<replicator::OutputCommit>(std::move(*plug));
  }
  // One plug per interface the guest sends on; a plug that cannot be
  // installed fails the start (the ones before it are removed with it).
  std::vector<std::unique_ptr<replicator::OutputCommit>> plugs;
  for (const std::string& vif : setup.netbuf_vifs) {
    auto plug = netbuf::PlugQdisc::CreateForVif(vif);
    if (!plug.ok()) return plug.status();
    spdlog::info("output commit: {}", (*plug)->Describe());
    plugs.push_back(std::move(*plug));
  }
  if (plugs.size() == 1) return std::move(plugs.front());
  return std::unique_ptr<replicator::OutputCommit>(new replicator::OutputCommitGroup(std::move(plugs)));
#else
  return Status::Unsupported("this romulus was built without libnl-route-3: no network buffering");
#endif
}

}  // namespace romulus::cli

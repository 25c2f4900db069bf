// `romulus replicate --domain`: the Xen path, where libxenguest drives the
// epochs through callbacks (xen/) and the engine's CheckpointSender streams them.
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/replicate_setup.h"
#include "common/units.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_cli.h"
#endif

namespace romulus::cli {

int RunReplicateXen(const ReplicateSetup& setup, const std::string& domain, const transport::HostPort& target,
                    std::shared_ptr<const transport::SecurityContext> sec) {
#if ROMULUS_HAVE_XEN
  StartSignalWatcher();
  auto probe = xen::ProbeXen();
  if (!probe.ok()) {
    spdlog::error("{}", probe.status().ToString());
    return kExitFailure;
  }
  spdlog::info("{}", *probe);
  auto output = MakeOutputCommit(setup);
  if (!output.ok()) {
    spdlog::error("output commit: {}", output.status().ToString());
    return kExitFailure;
  }
  if (!(*output)->commits_output()) {
    spdlog::warn("network output is NOT buffered (use --netbuf-vif vifD.0 to commit output on acks)");
  }
  xen::XenReplicateOptions opts;
  opts.domain = domain;
  opts.interval = std::chrono::duration_cast<std::chrono::milliseconds>(setup.loop.interval);
  opts.ack_timeout = std::max(setup.loop.ack_timeout, std::chrono::milliseconds(1000));
  opts.max_epochs = setup.loop.max_epochs;
  opts.duration = std::chrono::duration_cast<std::chrono::milliseconds>(setup.duration);
  if (!setup.stats_json.empty()) opts.stats_path = setup.stats_json;
  replicator::SenderOptions sender = setup.sender;
  auto connect = [target, sec, sender](const replicator::GuestInfo& info)
      -> Result<std::unique_ptr<replicator::CheckpointSender>> {
    auto stream = transport::Connect(target.host, target.port, sec, std::chrono::seconds(5));
    if (!stream.ok()) return stream.status();
    return replicator::CheckpointSender::Start(std::move(*stream), sender, info);
  };
  xen::ReplicateSummary summary;
  Status st = xen::RunReplicateDomain(opts, connect, output->get(), &StopFlag(), &summary);
  spdlog::info("{} checkpoints acked, {} pages, {} on the wire, pause median {} max {}", summary.epochs,
               summary.pages, FormatSize(summary.wire_bytes), FormatDuration(summary.pause_median),
               FormatDuration(summary.pause_max));
  if (!st.ok()) {
    spdlog::error("replication of domain {} ended: {}", domain, st.ToString());
    return kExitFailure;
  }
  return kExitOk;
#else
  (void)setup, (void)target, (void)sec;
  spdlog::error("cannot protect Xen domain '{}': this romulus was built without the Xen backend", domain);
  return kExitFailure;
#endif
}

}  // namespace romulus::cli

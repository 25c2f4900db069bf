// `romulus replicate --domain`: the Xen path, where libxenguest drives the
// epochs through callbacks (xen/) and the engine's CheckpointSender streams them.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cli/commands.h"
#include "cli/kill_point.h"
#include "cli/replicate_setup.h"
#include "common/units.h"
#include "events/event_log.h"
#include "replicator/metrics.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_cli.h"
#include "xen/xen_primary_state.h"
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
  opts.interval = setup.loop.interval;
  opts.ack_timeout = std::max(setup.loop.ack_timeout, std::chrono::milliseconds(1000));
  opts.max_epochs = setup.loop.max_epochs;
  opts.duration = std::chrono::duration_cast<std::chrono::milliseconds>(setup.duration);
  if (!setup.stats_json.empty()) opts.stats_path = setup.stats_json;
  // Kept in memory always (`ctl wait`); written to a file with --events-json.
  events::EventLog events("primary");
  if (!setup.events_json.empty() && !events.Open(setup.events_json)) {
    spdlog::error("cannot write --events-json {}: {}", setup.events_json, std::strerror(errno));
    return kExitFailure;
  }
  opts.events = &events;
  // Like the engine on a terminal, but epochs come ten a second: at most one
  // human line a second, every epoch with --log-level debug.
  opts.human_stats = isatty(STDERR_FILENO);
  opts.human_min_gap = spdlog::get_level() <= spdlog::level::debug ? std::chrono::milliseconds(0)
                                                                     : std::chrono::milliseconds(1000);
  // Status, stats and live tuning over the control socket (docs/CONTROL.md);
  // the default path needs the domain's name, known once it is resolved.
  xen::XenPrimaryState live;
  live.set_cache_size(setup.sender.codec.cache_pages * 4096);
  std::unique_ptr<replicator::ControlServer> control;
  std::unique_ptr<replicator::MetricsTextfile> metrics;
  opts.live = &live;
  opts.on_domain = [&setup, &live, &control, &metrics, &events](const std::string& name) -> Status {
    if (!setup.metrics_textfile.empty()) {
      // Labelled with the domain's name, also when it was given by domid.
      auto m = replicator::MetricsTextfile::Open(setup.metrics_textfile, name);
      if (!m.ok()) return m.status();
      metrics = std::move(*m);
      // A paused or disconnected primary has no epochs to report it.
      metrics->SetRefresher([m = metrics.get(), &live] { m->SetLiveState(live.protected_now(), live.paused()); });
    }
    auto c = StartControlSocket(setup, name,
                                replicator::WithEventWaits(
                                    WithStatusExtra(xen::XenPrimaryControlHandler(&live), setup.status_extra),
                                    &events, &StopFlag()));
    if (!c.ok()) return c.status();
    control = std::move(*c);
    return Status::Ok();
  };
  const bool commits = (*output)->commits_output();
  opts.on_epoch = [&metrics, &live, commits](const replicator::EpochStats& e) {
    if (metrics) metrics->OnEpoch(e, commits, live.resyncs());
  };
  if (setup.kill_enabled) opts.phase_hook = KillAtHook(setup.kill_phase, setup.kill_epoch);
  replicator::SenderOptions sender = setup.sender;
  // Epoch 1's writes may make no progress for long (the backup's libxenguest
  // applying a burst): only the backup's silence ends them, as for any
  // guest (SenderOptions::first_epoch_write_timeout = 0; PROTOCOL.md §6.1).
  sender.first_epoch_write_timeout = std::chrono::milliseconds(0);
  auto connect = [target, sec, sender, &live](const replicator::GuestInfo& info)
      -> Result<std::unique_ptr<replicator::CheckpointSender>> {
    auto stream = transport::Connect(target.host, target.port, sec, std::chrono::seconds(5));
    if (!stream.ok()) return stream.status();
    // A reconnection keeps the cache size last set live (`set cache-size`).
    replicator::SenderOptions s = sender;
    s.codec.cache_pages = live.cache_size() / 4096;
    auto started = replicator::CheckpointSender::Start(std::move(*stream), s, info);
    if (started.ok() || started.status().code() != Code::kOutOfRange ||
        s.codec.cache_pages == sender.codec.cache_pages) {
      return started;
    }
    // This backup's --max-cache-size is below the size set live (a backup
    // restarted with other flags, say): go back to the configured size
    // rather than stay unprotected.
    spdlog::warn("{}; retrying with the configured cache of {}", started.status().ToString(),
                 FormatSize(sender.codec.cache_pages * 4096));
    auto again = transport::Connect(target.host, target.port, sec, std::chrono::seconds(5));
    if (!again.ok()) return again.status();
    auto retried = replicator::CheckpointSender::Start(std::move(*again), sender, info);
    if (retried.ok()) live.set_cache_size(sender.codec.cache_pages * 4096);
    return retried;
  };
  // The totals line (and object in --stats-json) is written by the session.
  Status st = xen::RunReplicateDomain(opts, connect, output->get(), &StopFlag(), nullptr);
  control.reset();  // before `live`, which its handler reads
  if (metrics) {
    metrics->SetRefresher(nullptr);  // before `live`, which it reads
    metrics->SetLiveState(false, live.paused());
    metrics->Close();
  }
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

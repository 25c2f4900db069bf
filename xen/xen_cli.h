// Entry points of the Xen backend for the CLI. This header includes no Xen
// header, so cli/ can include it; the implementations live in xen/ and exist
// only when libxen-dev was found (ROMULUS_HAVE_XEN=1, set by xen/CMakeLists).
//
//   romulus replicate --domain NAME|DOMID --to HOST:PORT [--interval 100ms]
//     -> xen::RunReplicateDomain(opts, connect, output, stop)
//   romulus restore --xen [--domain-name NAME]
//     -> xen::CreateXenSink(opts) gives the receiver its GuestSink
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/epoch_loop.h"  // Phase
#include "replicator/output_commit.h"
#include "restore/guest_sink.h"

namespace romulus::events {
class EventLog;
}

namespace romulus::xen {

class XenPrimaryState;  // xen/xen_primary_state.h (Xen-free)

struct XenReplicateOptions {
  std::string domain;                               // name or numeric domid
  // Counted from the previous suspend; the session's XenPrimaryState holds
  // the live value (`set interval` changes it from the next epoch).
  std::chrono::microseconds interval{100000};
  std::chrono::milliseconds suspend_timeout{5000};  // "guest will not suspend" after this
  // Waiting for epoch N's ack in the checkpoint callback. The first epoch
  // of a session (whole memory, live iterations) waits as long as the
  // backup is alive (heartbeats; PROTOCOL.md §6.1), with no fixed budget.
  std::chrono::milliseconds ack_timeout{5000};
  // Raw stream bytes staged between the pipe and the sender, so the guest's
  // suspended window never waits on the network (blocks of 1 MiB, reused).
  uint64_t staging_bytes = 256ull << 20;
  uint64_t max_epochs = 0;                          // 0: until stopped
  std::chrono::milliseconds duration{0};            // 0: until stopped
  // --stats-json: one JSON line per epoch and the totals at exit, the
  // engine's keys plus Xen-only extras (docs/STATS.md). "" = none.
  std::string stats_path;
  // The engine's human line per epoch on stderr, at most once per
  // human_min_gap (epochs come ten a second); 0 = every epoch.
  bool human_stats = false;
  std::chrono::milliseconds human_min_gap{1000};
  bool verbose = false;                             // libxenguest logging to stderr
  std::string tee_path;  // also write libxenguest's raw v2 stream here (fixtures, debugging)
  // Shared with a control socket (may be null: the session keeps its own).
  // Must outlive the call.
  XenPrimaryState* live = nullptr;
  // Structured events (docs/EVENTS.md); not owned, may be null.
  events::EventLog* events = nullptr;
  // Called once the domain is resolved (with its name) and `live` is set up,
  // before connecting to the backup: the CLI starts its control socket here.
  // An error ends the call with that error.
  std::function<Status(const std::string& domain_name)> on_domain;
  // Called with each epoch's stats after its --stats-json line (the metrics
  // textfile); on libxenguest's thread, so it must not block.
  std::function<void(const replicator::EpochStats&)> on_epoch;
  // Failover drills (--kill-at): called at each kill-point of each epoch, on
  // the thread that reaches it: s, s2, r, r2, c, c2 on libxenguest's callback
  // thread, m on the stream worker right after the epoch's first page went to
  // the sender. Where they fall in a Xen checkpoint: docs/XEN-STREAM.md.
  std::function<void(replicator::Phase, uint64_t epoch)> phase_hook;
  // A lost backup (docs/PROTOCOL.md §6): the domain runs on unprotected while
  // the call reconnects with back-off and starts a new session, a full
  // resync whose epochs continue the numbering. false: the loss ends the call.
  bool reconnect = true;
  std::chrono::milliseconds reconnect_min{200};
  std::chrono::milliseconds reconnect_max{5000};
};

// Connects to the backup and performs the handshake; called once the domain
// is resolved, with its size (guest_pages = max gpfn + 1) and identity (name).
using SenderFactory =
    std::function<Result<std::unique_ptr<replicator::CheckpointSender>>(const replicator::GuestInfo&)>;

struct ReplicateSummary {
  uint64_t epochs = 0;           // checkpoints acked by the backup
  uint64_t pages = 0;            // pages sent in all epochs
  uint64_t wire_bytes = 0;
  std::chrono::microseconds pause_median{0}, pause_max{0};  // suspend -> resumed
};

// Protects the domain until `*stop` becomes true (clean stop: BYE, the backup
// does not fail over), max_epochs/duration is reached, or something fails (the
// backup will fail over). Always leaves the primary running with log-dirty off.
// `output` may be null (no output commit). Returns why it stopped.
Status RunReplicateDomain(const XenReplicateOptions& opts, const SenderFactory& connect,
                          replicator::OutputCommit* output, const std::atomic<bool>* stop,
                          ReplicateSummary* summary);

struct XenRestoreOptions {
  // Name of the domain while it is a backup; default "<original>--incoming".
  std::string domain_name;
  // Name after failover; default: the primary's name (the session identity).
  std::string final_name;
  // After failover, how long to wait for the original name to become free
  // (the primary domain destroyed) before giving up renaming.
  std::chrono::milliseconds rename_wait{30000};
  // The guest's PV NICs (from the primary's domain info) are recreated at
  // activation, served by dom0's netback and brought up with this hotplug
  // script ("online", libxl's environment). Never a path from the stream.
  bool create_vifs = true;
  std::string vif_script = "/etc/xen/scripts/vif-bridge";
  bool verbose = false;
};

// The backup's sink: a paused PV domain restored by xc_domain_restore from the
// rebuilt stream; Activate() finishes it and unpauses it.
Result<std::unique_ptr<restore::GuestSink>> CreateXenSink(const XenRestoreOptions& opts);
// The name of the domain a Xen sink activated ("" for another sink, or
// before the activation): what a reverse replication protects.
std::string ActivatedDomainName(const restore::GuestSink& sink);

// "Xen 4.17.5 (tools 4.17)" or a clear error (no privcmd, not dom0, version
// mismatch between the hypervisor and the libraries we were built against).
Result<std::string> ProbeXen();

}  // namespace romulus::xen

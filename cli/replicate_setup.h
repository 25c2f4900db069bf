// What `replicate` and `demo` share: the tuning flags of the primary and the
// code that runs the epoch loop with signals, stats and output commit.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "cli/options.h"
#include "replicator/control.h"
#include "replicator/checkpoint_driver.h"
#include "replicator/phase.h"
#include "replicator/primary_controller.h"
#include "transport/security.h"
#include "transport/tcp.h"

namespace romulus::cli {

struct ReplicateSetup {
  replicator::SenderOptions sender;
  replicator::ControllerOptions loop;
  bool progress_bar = false;  // the first sync of a simulated guest as a bar (stderr is a TTY)
  std::string stats_json;
  std::string events_json;  // --events-json (docs/EVENTS.md); "" = none
  std::chrono::microseconds duration{0};  // 0 = until stopped
  // Xen: a guest not suspended this long after the request fails the
  // checkpoint (--suspend-timeout; xen::XenDriverOptions::suspend_timeout).
  std::chrono::milliseconds suspend_timeout{5000};
  // How long an HVM guest's device model may take at a checkpoint
  // (--device-model-timeout; xen::XenDriverOptions::device_model_timeout).
  std::chrono::milliseconds device_model_timeout{5000};
  std::string netbuf_dev;
  std::vector<std::string> netbuf_vifs;  // Xen: buffer these interfaces' guest transmit, each through an IFB
  bool no_net_buffering = false;
  bool kill_enabled = false;
  replicator::Phase kill_phase = replicator::Phase::kBeforeSuspend;
  uint64_t kill_epoch = 0;  // 0 = the first epoch after protection
  // Operations (docs/CONTROL.md): "" = the default (/run/romulus/<guest>.sock
  // when that directory is writable), "none" = no control socket.
  std::string control_socket;
  std::string metrics_textfile;  // Prometheus textfile collector; "" = off
  // Extra JSON members (without braces, e.g. "\"x\":1") appended to the
  // control socket's `status` answer: how a restore that became a primary
  // (--reverse-to) says where its guest came from. "" = none.
  std::string status_extra;
};

void AddReplicateTuningOptions(po::options_description* desc);
bool ParseReplicateTuning(const std::string& command, const po::variables_map& vm, ReplicateSetup* out);
// The setup `romulus replicate` gets with no tuning flag at all (its
// defaults, parsed by the same code, so the two cannot drift apart).
ReplicateSetup DefaultReplicateSetup();

// Blocks SIGINT/SIGTERM in this thread and every thread started after it and
// turns them into a stop request. Call before starting any thread.
// One watcher per process: only the first call starts it, later calls (e.g.
// RunPrimary's, when `restore --reverse-to` turns a backup into a primary)
// do nothing, so two sigwait threads never compete for one signal.
// `on_signal`, if given, runs on the watcher thread right after the stop
// flag is set (instead of the default log line): a caller that blocks in
// accept/read shuts its sockets down there.
void StartSignalWatcher(std::function<void(int sig)> on_signal = nullptr);
const std::atomic<bool>& StopFlag();
void RequestStop();

Result<std::unique_ptr<replicator::OutputCommit>> MakeOutputCommit(const ReplicateSetup& setup);

// The primary's control socket (docs/CONTROL.md): --control-socket PATH, else
// /run/romulus/<identity>.sock when that directory is writable (failing to
// serve the default only warns: replicate without it), or none ("none").
// nullptr when there is none; an error only for an explicit PATH.
Result<std::unique_ptr<replicator::ControlServer>> StartControlSocket(const ReplicateSetup& setup,
                                                                      const std::string& identity,
                                                                      replicator::ControlHandler handler);

// `handler` whose `status` answer ends with `extra` (JSON members, e.g. a
// reverse replication's "replicating_to"); `handler` itself when extra is "".
replicator::ControlHandler WithStatusExtra(replicator::ControlHandler handler, const std::string& extra);

// Runs the primary controller over `driver` until SIGINT/SIGTERM, --epochs,
// --duration or a switchover, with stats, events, metrics, output commit and
// the control socket. Exit code.
int RunPrimary(const ReplicateSetup& setup, std::unique_ptr<replicator::CheckpointDriver> driver,
               const transport::HostPort& target, std::shared_ptr<const transport::SecurityContext> sec);
// The Xen path: opens the domain's driver (xen/xen_facade.h) and runs it;
// exits 1 with a clear message when this build has no Xen support.
// disk_taps: the tap sockets of the `romulus disk-export`s serving the
// guest's disks, replicated with its memory (docs/DISK.md §8).
int RunReplicateXen(const ReplicateSetup& setup, const std::string& domain, const std::vector<std::string>& disk_taps,
                    const transport::HostPort& target, std::shared_ptr<const transport::SecurityContext> sec);

}  // namespace romulus::cli

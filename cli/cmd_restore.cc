// romulus restore: the backup. Receives checkpoints, commits each one only
// when complete and verified, and fails over to the last committed one when
// the primary dies.
//
// With --reverse-to HOST:PORT (or `ctl set reverse-to HOST:PORT`), once the
// simulated guest is activated here this process becomes its primary and
// replicates it to HOST:PORT (a `romulus restore` on the old host), in
// process, with the same channel security; see docs/CONTROL.md.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "cli/commands.h"
#include "cli/net_options.h"
#include "cli/options.h"
#include "cli/replicate_setup.h"
#include "cli/restore_events.h"
#include "common/digest.h"
#include "common/units.h"
#include "replicator/control.h"
#include "replicator/metrics.h"
#include "restore/checkpoint_receiver.h"
#include "sim/image_sink.h"
#include "transport/tcp.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_cli.h"
#endif

namespace romulus::cli {

namespace {

const char kCmd[] = "restore";

// The stop request is replicate_setup's StopFlag(): one flag and one signal
// watcher for the whole process, because after an activation with
// --reverse-to this process runs the primary's epoch loop, which stops on
// that same flag.
std::mutex g_mu;
transport::Listener* g_listener = nullptr;  // guarded by g_mu
transport::Stream* g_stream = nullptr;      // guarded by g_mu
std::atomic<bool> g_activated{false};       // the guest runs here now
std::atomic<bool> g_reversing{false};       // ... and this process replicates it (--reverse-to)

void ShutdownConnections() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_listener) g_listener->Shutdown();
  if (g_stream) g_stream->Shutdown();
}

// SIGINT/SIGTERM: stop serving without failing over (an operator stopping
// the backup is not a primary failure). Once activated, the same signal stops
// the reverse replication cleanly (BYE: its backup does not fail over).
void StartStopWatcher() {
  StartSignalWatcher([](int sig) {
    const char* name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (g_reversing.load()) {
      spdlog::info("{}: stopping the activated guest and its replication after the current epoch (clean stop)", name);
    } else if (g_activated.load()) {
      spdlog::info("{}: stopping the activated guest", name);
    } else {
      spdlog::info("{}: backup stopping; the guest is NOT activated", name);
    }
    ShutdownConnections();
  });
}

// A --reverse-to / `set reverse-to` target: HOST:PORT that can be connected
// to (a host and a non-zero port, unlike a listen address).
Status CheckReverseTarget(const std::string& text) {
  auto hp = transport::ParseHostPort(text);
  if (!hp.ok()) return hp.status();
  if (hp->host.empty() || hp->host == "*" || hp->port == 0) {
    return Status::InvalidArgument("'" + text + "' needs a host and a port to connect to (HOST:PORT)");
  }
  return Status::Ok();
}

// Live state for the control socket (docs/CONTROL.md), written by the
// receiver thread, read by the control thread.
struct BackupControlState {
  std::mutex mu;
  std::condition_variable cv;
  std::string state = "waiting";  // waiting | receiving | failing-over | activated | stopped
  std::string peer;
  std::string failover_reason;
  bool failover_requested = false;  // operator: `romulus ctl failover`
  bool activation_done = false;
  Status activation;
  // After activation, replicate the guest to this HOST:PORT ("" = do not).
  // Read once, right after a successful activation (reverse_decided); later
  // `set reverse-to` requests are refused rather than silently ignored.
  std::string reverse_to;
  bool reverse_decided = false;
  // `digest EPOCH REGIONS`: answered by the commit callback of EPOCH, when
  // the image is exactly that epoch and nothing else touches it.
  struct {
    bool pending = false, done = false;
    uint64_t epoch = 0;
    uint32_t regions = 16;
    Status status;
    std::string members;
  } digest;
};
BackupControlState g_ctl;

std::string RegionDigestMembers(const sim::ImageSink& img, uint64_t epoch, uint32_t regions) {
  const uint64_t pages = img.guest_pages();
  const uint64_t per = pages / regions;
  std::vector<uint64_t> sums(regions, 0);
  for (uint32_t r = 0; r < regions; ++r) {
    const uint64_t first = r * per, end = r + 1 == regions ? pages : first + per;
    for (uint64_t pfn = first; pfn < end; ++pfn) sums[r] += PageHash(pfn, img.image() + pfn * 4096);
  }
  uint64_t total = 0;
  std::string list;
  for (uint32_t r = 0; r < regions; ++r) {
    total += sums[r];
    list += (r ? ",\"" : "\"") + DigestHex(sums[r]) + "\"";
  }
  return "\"epoch\":" + std::to_string(epoch) + ",\"digest\":\"" + DigestHex(total) +
         "\",\"guest_pages\":" + std::to_string(pages) + ",\"regions\":[" + list + "]";
}

replicator::ControlHandler BackupControlHandler(restore::GuestSink* sink, sim::ImageSink* image,
                                                std::atomic<uint64_t>* last_digest) {
  using replicator::ControlReply;
  return [sink, image, last_digest](const std::vector<std::string>& w) -> ControlReply {
    const std::string& cmd = w[0];
    if (cmd == "status" && w.size() == 1) {
      std::lock_guard<std::mutex> lock(g_ctl.mu);
      const bool held = sink->has_committed();
      const bool protecting = held && g_ctl.state == "receiving";
      return ControlReply::Ok(
          "\"role\":\"backup\",\"state\":" + replicator::JsonString(g_ctl.state) +
          ",\"epoch\":" + std::to_string(held ? sink->last_committed_epoch() : 0) +
          ",\"committed_epoch\":" + std::to_string(held ? sink->last_committed_epoch() : 0) +
          ",\"digest\":\"" + DigestHex(last_digest->load()) + "\",\"protection\":" +
          (protecting ? "\"PROTECTED\"" : "\"UNPROTECTED\"") + ",\"primary\":" +
          replicator::JsonString(g_ctl.peer) + ",\"failover\":" +
          (g_ctl.state == "activated" ? "true" : "false") +
          (g_ctl.failover_reason.empty() ? "" : ",\"failover_reason\":" + replicator::JsonString(g_ctl.failover_reason)) +
          (g_ctl.reverse_to.empty() ? "" : ",\"reverse_to\":" + replicator::JsonString(g_ctl.reverse_to)) +
          ",\"output_commit\":\"primary side\"");
    }
    if (cmd == "failover" && w.size() == 1) {
      std::unique_lock<std::mutex> lock(g_ctl.mu);
      if (g_ctl.state == "activated") return ControlReply::Fail("already activated");
      if (!sink->has_committed()) return ControlReply::Fail("nothing committed yet: no checkpoint to activate");
      g_ctl.failover_requested = true;
      lock.unlock();
      spdlog::warn("control: operator requested failover");
      ShutdownConnections();
      lock.lock();
      if (!g_ctl.cv.wait_for(lock, std::chrono::seconds(60), [] { return g_ctl.activation_done; })) {
        return ControlReply::Fail("activation did not finish within 60 s");
      }
      if (!g_ctl.activation.ok()) return ControlReply::Fail("activation failed: " + g_ctl.activation.message());
      return ControlReply::Ok("\"activated\":true,\"epoch\":" + std::to_string(sink->last_committed_epoch()));
    }
    if (cmd == "digest" && (w.size() == 2 || w.size() == 3)) {
      if (!image) return ControlReply::Fail("digest: only for a simulated guest's image (not --xen)");
      uint64_t epoch = 0, regions = 16;
      try {
        size_t used = 0;
        epoch = std::stoull(w[1], &used);
        if (used != w[1].size()) throw std::invalid_argument(w[1]);
        if (w.size() == 3) {
          regions = std::stoull(w[2], &used);
          if (used != w[2].size()) throw std::invalid_argument(w[2]);
        }
      } catch (const std::exception&) {
        epoch = 0;
      }
      if (epoch == 0 || regions == 0 || regions > 4096) return ControlReply::Usage("usage: digest EPOCH [REGIONS 1..4096]");
      std::unique_lock<std::mutex> lock(g_ctl.mu);
      if (g_ctl.digest.pending) return ControlReply::Fail("another digest request is in progress");
      if (sink->has_committed() && sink->last_committed_epoch() >= epoch) {
        return ControlReply::Fail("epoch " + std::to_string(epoch) + " already passed (committed " +
                                  std::to_string(sink->last_committed_epoch()) + "); ask for a later one");
      }
      g_ctl.digest = {};
      g_ctl.digest.pending = true;
      g_ctl.digest.epoch = epoch;
      g_ctl.digest.regions = static_cast<uint32_t>(regions);
      bool done = g_ctl.cv.wait_for(lock, std::chrono::seconds(20), [] { return g_ctl.digest.done; });
      g_ctl.digest.pending = false;
      if (!done) return ControlReply::Fail("epoch " + std::to_string(epoch) + " was not committed within 20 s");
      if (!g_ctl.digest.status.ok()) return ControlReply::Fail(g_ctl.digest.status.message());
      return ControlReply::Ok(g_ctl.digest.members);
    }
    if (cmd == "set" && w.size() >= 2 && w[1] == "reverse-to") {
      if (w.size() != 3) return ControlReply::Usage("usage: set reverse-to HOST:PORT|none");
      std::string target;
      if (w[2] != "none") {
        if (Status st = CheckReverseTarget(w[2]); !st.ok()) {
          return ControlReply::Usage("set reverse-to: " + st.message());
        }
        target = w[2];
      }
      std::lock_guard<std::mutex> lock(g_ctl.mu);
      if (g_ctl.reverse_decided) {
        return ControlReply::Fail("too late: the guest is already activated" +
                                  (g_ctl.reverse_to.empty() ? std::string(" (no reverse replication)")
                                                            : " and replicates to " + g_ctl.reverse_to));
      }
      g_ctl.reverse_to = target;
      spdlog::info("control: after activation, {}",
                   target.empty() ? "no reverse replication" : "replicate the guest back to " + target);
      return ControlReply::Ok("\"reverse_to\":" + replicator::JsonString(target));
    }
    if (cmd == "set" || cmd == "pause" || cmd == "resume" || cmd == "switchover" || cmd == "stats") {
      return ControlReply::Fail("'" + cmd + "' is a primary command; this is the backup (romulus ctl --socket PRIMARY.sock ...)");
    }
    return ControlReply::Usage("unknown or malformed command '" + cmd +
                               "' (backup: status, failover, digest EPOCH [REGIONS], set reverse-to HOST:PORT|none)");
  };
}

// Runs the operator's fence hook; activation goes ahead only if it exits 0.
bool RunFence(const std::string& cmd, const std::string& reason, uint64_t epoch) {
  if (cmd.empty()) return true;
  setenv("ROMULUS_REASON", reason.c_str(), 1);
  setenv("ROMULUS_EPOCH", std::to_string(epoch).c_str(), 1);
  spdlog::info("running fence command: {}", cmd);
  int rc = std::system(cmd.c_str());
  if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    spdlog::error("fence command failed ({}): NOT activating the guest, to avoid two live copies",
                  rc == -1 ? "could not run" : "exit " + std::to_string(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1));
    return false;
  }
  return true;
}

}  // namespace

int RunRestore(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("listen", po::value<std::string>(), "address to listen on, ADDR:PORT (e.g. 0.0.0.0:7000)")
      ("image", po::value<std::string>(), "memory image file of the simulated guest's standby copy")
      ("xen", po::bool_switch(), "receive a Xen domain: restore it paused with libxenguest, unpause on failover")
      ("domain-name", po::value<std::string>(), "with --xen: name of the standby domain (default NAME--incoming)")
      ("vif-script", po::value<std::string>(),
       "with --xen: hotplug script for the guest's NICs recreated at activation (default /etc/xen/scripts/vif-bridge)")
      ("no-vifs", po::bool_switch(), "with --xen: do not recreate the guest's NICs at activation")
      ("start-over", po::bool_switch(), "discard whatever an existing --image holds")
      ("durable", po::bool_switch(), "fsync the image at every commit (survives host power loss)")
      ("failover-timeout", po::value<std::string>()->default_value("1s"),
       "fail over when the primary is silent this long")
      ("fence-cmd", po::value<std::string>(),
       "run this before activating; a non-zero exit aborts activation (env: ROMULUS_REASON, ROMULUS_EPOCH)")
      ("events-json", po::value<std::string>(), "write commit and failover events, one JSON object per line")
      ("max-cache-size", po::value<std::string>()->default_value("1G"), "largest mirror cache a primary may ask for")
      ("max-guest-size", po::value<std::string>()->default_value("64G"), "largest guest a primary may send")
      ("run-after-failover", po::value<std::string>()->default_value("0s"),
       "keep the activated simulated guest running this long before exiting (with --reverse-to: replicate it "
       "this long, then stop cleanly; 0 = until stopped)")
      ("control-socket", po::value<std::string>(), "live control (romulus ctl) on this UNIX socket")
      ("reverse-to", po::value<std::string>(),
       "once the simulated guest is activated here, replicate it to HOST:PORT (a `romulus restore` there) with "
       "this process's channel security and replicate's default tuning; runs until stopped, or "
       "--run-after-failover if set (also `ctl set reverse-to`)")
      ("metrics-textfile", po::value<std::string>(),
       "write Prometheus metrics to FILE (textfile collector; atomic, at most once per second)");
  AddSecurityOptions(&desc);
  int code = 0;
  auto vm = ParseOptions(kCmd, "--listen ADDR:PORT --psk-file FILE --image PATH [options]", desc, argc, argv, &code);
  if (!vm) return code;
  if (!vm->count("listen")) {
    UsageError(kCmd, "--listen ADDR:PORT is required");
    return kExitUsage;
  }
  std::chrono::microseconds failover{}, run_after{};
  uint64_t max_cache = 0, max_guest = 0;
  if (!GetDuration(kCmd, *vm, "failover-timeout", &failover) || !GetDuration(kCmd, *vm, "run-after-failover", &run_after) ||
      !GetSize(kCmd, *vm, "max-cache-size", &max_cache) || !GetSize(kCmd, *vm, "max-guest-size", &max_guest)) {
    return kExitUsage;
  }
  if (!CheckRange(kCmd, "failover-timeout", failover.count(), 20000, 600e6, "20ms", "10m")) return kExitUsage;
  auto listen = transport::ParseHostPort((*vm)["listen"].as<std::string>());
  if (!listen.ok()) {
    UsageError(kCmd, "--listen: " + listen.status().message());
    return kExitUsage;
  }
  auto sec = LoadSecurity(kCmd, *vm);
  if (!sec) return kExitUsage;
  EventLog events;
  if (vm->count("events-json") && !events.Open((*vm)["events-json"].as<std::string>())) {
    spdlog::error("cannot write --events-json: {}", std::strerror(errno));
    return kExitFailure;
  }

  const bool xen = (*vm)["xen"].as<bool>();
  if (xen && vm->count("image")) {
    UsageError(kCmd, "--xen and --image exclude each other");
    return kExitUsage;
  }
  if (!xen && (vm->count("vif-script") || (*vm)["no-vifs"].as<bool>() || vm->count("domain-name"))) {
    UsageError(kCmd, "--domain-name, --vif-script and --no-vifs need --xen");
    return kExitUsage;
  }
  if (vm->count("vif-script") && access((*vm)["vif-script"].as<std::string>().c_str(), X_OK) != 0) {
    UsageError(kCmd, "--vif-script " + (*vm)["vif-script"].as<std::string>() + ": " + std::strerror(errno) +
                         " (an executable hotplug script is needed)");
    return kExitUsage;
  }
  if (vm->count("reverse-to")) {
    // The Xen sink does not hand the activated domain to this process, so
    // there is nothing here to replicate from; say so now, not after a failover.
    const std::string target = (*vm)["reverse-to"].as<std::string>();
    if (Status st = CheckReverseTarget(target); !st.ok()) {
      UsageError(kCmd, "--reverse-to: " + st.message());
      return kExitUsage;
    }
    g_ctl.reverse_to = target;
  }
  StartStopWatcher();
  // After the watcher: the metrics thread must inherit the blocked SIGINT/SIGTERM.
  std::unique_ptr<replicator::MetricsTextfile> metrics;
  if (vm->count("metrics-textfile")) {
    auto m = replicator::MetricsTextfile::Open((*vm)["metrics-textfile"].as<std::string>(),
                                               (*vm)["listen"].as<std::string>());
    if (!m.ok()) {
      spdlog::error("{}", m.status().ToString());
      return kExitFailure;
    }
    metrics = std::move(*m);
    metrics->Set("romulus_failover", "gauge", "1 once this backup activated the guest.", 0);
    metrics->Set("romulus_committed_epoch", "gauge", "Last epoch committed by the backup.", 0);
    metrics->Set("romulus_receive_reallocations", "gauge",
                 "Receive-buffer reallocations in steady state (last session).", 0);
  }
  std::unique_ptr<restore::GuestSink> sink;
  sim::ImageSink* image_sink = nullptr;  // the simulated guest's sink, when that is what we hold
  uint64_t last_digest = 0;
  if (xen) {
#if ROMULUS_HAVE_XEN
    auto probe = xen::ProbeXen();
    if (!probe.ok()) {
      spdlog::error("{}", probe.status().ToString());
      return kExitFailure;
    }
    xen::XenRestoreOptions xopts;
    if (vm->count("domain-name")) xopts.domain_name = (*vm)["domain-name"].as<std::string>();
    xopts.create_vifs = !(*vm)["no-vifs"].as<bool>();
    if (vm->count("vif-script")) xopts.vif_script = (*vm)["vif-script"].as<std::string>();
    auto xs = xen::CreateXenSink(xopts);
    if (!xs.ok()) {
      spdlog::error("{}", xs.status().ToString());
      return kExitFailure;
    }
    sink = std::move(*xs);
#else
    spdlog::error("--xen: this romulus was built without the Xen backend");
    return kExitFailure;
#endif
  } else {
    sim::ImageSinkOptions sink_opts;
    sink_opts.path = vm->count("image") ? (*vm)["image"].as<std::string>() : "";
    sink_opts.start_over = (*vm)["start-over"].as<bool>();
    sink_opts.durable = (*vm)["durable"].as<bool>();
    if (sink_opts.path.empty()) spdlog::warn("no --image: the standby copy lives in memory only");
    auto is = sim::ImageSink::Open(sink_opts);
    if (!is.ok()) {
      spdlog::error("{}", is.status().ToString());
      return kExitFailure;
    }
    image_sink = is->get();
    if (!image_sink->recovery_note().empty()) spdlog::warn("{}", image_sink->recovery_note());
    if (image_sink->has_committed()) {
      last_digest = image_sink->digest();
      spdlog::info("image holds committed epoch {} (digest {})", image_sink->last_committed_epoch(),
                   DigestHex(last_digest));
    }
    sink = std::move(*is);
  }

  auto listener = transport::Listener::Bind(listen->host, listen->port, sec);
  if (!listener.ok()) {
    spdlog::error("cannot listen on {}: {}", (*vm)["listen"].as<std::string>(), listener.status().ToString());
    return kExitFailure;
  }
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_listener = listener->get();
  }
  spdlog::info("backup listening on {} ({})", (*listener)->address(), transport::ModeName(sec->mode()));

  std::atomic<uint64_t> shared_digest{last_digest};
  std::unique_ptr<replicator::ControlServer> control;
  const std::string control_path = vm->count("control-socket") ? (*vm)["control-socket"].as<std::string>() : "";
  if (!control_path.empty() && control_path != "none") {
    auto c = replicator::ControlServer::Start(control_path,
                                              BackupControlHandler(sink.get(), image_sink, &shared_digest));
    if (!c.ok()) {
      spdlog::error("{}", c.status().ToString());
      return kExitFailure;
    }
    control = std::move(*c);
  }
  auto set_state = [](const std::string& state, const std::string& peer) {
    std::lock_guard<std::mutex> lock(g_ctl.mu);
    g_ctl.state = state;
    g_ctl.peer = peer;
  };
  auto failover_requested = [] {
    std::lock_guard<std::mutex> lock(g_ctl.mu);
    return g_ctl.failover_requested;
  };
  // The activation outcome for a waiting `ctl failover` (and status).
  auto activation_done = [&](const Status& st, const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(g_ctl.mu);
      g_ctl.activation_done = true;
      g_ctl.activation = st;
      g_ctl.state = st.ok() ? "activated" : "stopped";
      g_ctl.failover_reason = reason;
      // Nobody will commit any more: fail a pending digest request.
      if (g_ctl.digest.pending && !g_ctl.digest.done) {
        g_ctl.digest.done = true;
        g_ctl.digest.status = Status::Closed("the backup stopped receiving");
      }
    }
    g_ctl.cv.notify_all();
    if (metrics) metrics->Set("romulus_failover", "gauge", "1 once this backup activated the guest.", st.ok() ? 1 : 0);
  };

  restore::ReceiverOptions ropts;
  ropts.cache_pages = max_cache / 4096;
  ropts.max_guest_pages = max_guest / 4096;
  ropts.failover_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(failover);
  restore::CheckpointReceiver receiver(ropts);
  const std::string fence = vm->count("fence-cmd") ? (*vm)["fence-cmd"].as<std::string>() : "";

  // When the last session ended in a way that leaves the primary alive
  // (corrupt stream: it will reconnect and resynchronise), wait this long for
  // it before failing over.
  std::optional<std::chrono::steady_clock::time_point> grace_until;
  Status why;
  bool handover = false;
  while (!StopFlag().load()) {
    auto deadline = grace_until ? *grace_until : transport::NoDeadline();
    auto stream = (*listener)->Accept(deadline);
    if (!stream.ok()) {
      if (StopFlag().load()) break;
      if (failover_requested()) {
        why = Status::Closed("failover requested by the operator (romulus ctl failover)");
        break;
      }
      if (stream.status().code() == Code::kTimeout && grace_until) {
        why = why.With("primary did not come back within " + FormatDuration(failover));
        break;
      }
      spdlog::warn("{}", stream.status().ToString());
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_stream = stream->get();
    }
    spdlog::info("connection from {}", (*stream)->Peer());
    set_state("receiving", (*stream)->Peer());
    if (failover_requested()) (*stream)->Shutdown();  // raced with `ctl failover`
    auto end = receiver.Serve(**stream, *sink, [&](const restore::CommitEvent& e) {
      events.Commit(e.epoch, e.digest);
      last_digest = e.digest;
      shared_digest.store(e.digest);
      if (metrics) {
        metrics->Set("romulus_committed_epoch", "gauge", "Last epoch committed by the backup.", static_cast<double>(e.epoch));
        metrics->Add("romulus_commits_total", "Epochs committed.", 1);
        metrics->Add("romulus_wire_bytes_total", "Bytes received from the primary.", static_cast<double>(e.wire_bytes));
      }
      {
        // Here, between Commit(N) and the next epoch, the image is exactly N.
        std::lock_guard<std::mutex> lock(g_ctl.mu);
        auto& d = g_ctl.digest;
        if (d.pending && !d.done && e.epoch >= d.epoch) {
          if (e.epoch == d.epoch && image_sink) d.members = RegionDigestMembers(*image_sink, e.epoch, d.regions);
          else d.status = Status::OutOfRange("epoch " + std::to_string(d.epoch) + " was skipped (resync?)");
          d.done = true;
          g_ctl.cv.notify_all();
        }
      }
      spdlog::debug("committed epoch {} ({} pages, {} on the wire)", e.epoch, e.pages, FormatSize(e.wire_bytes));
    });
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_stream = nullptr;
    }
    spdlog::info("session ended after {} committed epochs; {} receive-buffer reallocations in steady state",
                 end.epochs_committed, end.receive_reallocations);
    set_state("waiting", "");
    if (metrics) {
      metrics->Set("romulus_receive_reallocations", "gauge",
                   "Receive-buffer reallocations in steady state (last session).",
                   static_cast<double>(end.receive_reallocations));
    }
    if (StopFlag().load()) break;
    if (!end.established && !failover_requested()) {
      // Not our primary (a probe, a refused HELLO): keep serving, and keep
      // any grace period that a real primary's loss started.
      spdlog::warn("connection ended before a session began: {}; still waiting for the primary",
                   end.reason.ToString());
      continue;
    }
    grace_until.reset();
    if (failover_requested() && sink->has_committed()) {
      why = Status::Closed("failover requested by the operator (romulus ctl failover)");
      break;
    }
    if (end.clean_stop && end.bye_reason == protocol::ByeReason::kHandover) {
      // Planned switchover: the primary stopped its guest right after the
      // epoch we just committed and acked; take over from exactly there.
      handover = true;
      why = Status::Closed("planned switchover: the primary handed over after epoch " +
                           std::to_string(sink->last_committed_epoch()));
      break;
    }
    if (end.clean_stop) {
      events.Stop(sink->last_committed_epoch(), last_digest);
      activation_done(Status::Closed("the primary stopped replication cleanly"), "");
      return kExitOk;
    }
    spdlog::error("primary lost: {}", end.reason.ToString());
    if (!sink->has_committed()) {
      spdlog::warn("nothing committed yet: no checkpoint to fail over to; waiting for the primary");
      continue;
    }
    why = end.reason;
    if (end.reason.code() == Code::kCorruption || end.reason.code() == Code::kOutOfRange ||
        end.reason.code() == Code::kUnsupported) {
      // The primary is alive (it just sent us bad bytes): it will reconnect
      // and resynchronise. Keep the last good epoch meanwhile.
      spdlog::warn("keeping epoch {}; waiting up to {} for the primary to resynchronise",
                   sink->last_committed_epoch(), FormatDuration(failover));
      grace_until = std::chrono::steady_clock::now() + failover;
      continue;
    }
    break;
  }
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_listener = nullptr;
  }
  if (StopFlag().load()) {
    activation_done(Status::Closed("backup stopped"), "");
    return kExitOk;
  }

  // Failover.
  set_state("failing-over", "");
  if (handover) spdlog::info("handover from the primary: activating (no epoch lost)");
  const uint64_t epoch = sink->last_committed_epoch();
  const std::string reason = why.ToString();
  spdlog::warn("FAILOVER: {}; activating the guest from epoch {} (digest {})", reason, epoch,
               DigestHex(last_digest));
  if (!RunFence(fence, reason, epoch)) {
    events.Failover(reason, epoch, last_digest, false);
    activation_done(Status::Internal("the fence command refused activation"), reason);
    return kExitFailure;
  }
  auto t0 = std::chrono::steady_clock::now();
  Status st = sink->Activate(reason);
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  events.Failover(reason, epoch, last_digest, st.ok());
  activation_done(st, reason);
  if (!st.ok()) {
    spdlog::error("activation failed: {}", st.ToString());
    return kExitFailure;
  }
  spdlog::info("guest resumed from epoch {} in {}", epoch, FormatDuration(took));
  g_activated.store(true);
  std::string reverse_to;
  {
    std::lock_guard<std::mutex> lock(g_ctl.mu);
    g_ctl.reverse_decided = true;
    reverse_to = g_ctl.reverse_to;
  }
  auto* guest = image_sink ? image_sink->activated_guest() : nullptr;
  std::string xen_domain;
#if ROMULUS_HAVE_XEN
  if (xen) xen_domain = xen::ActivatedDomainName(*sink);
#endif
  if ((guest || !xen_domain.empty()) && !reverse_to.empty()) {
    // Become the guest's primary, in this process (a simulated guest lives
    // here; a Xen domain is protected by the Xen path, as by replicate
    // --domain). The backup's listener, control socket and metrics are
    // replaced by the primary's: same control path (now answering the
    // primary command set), same metrics file (now a primary's metrics).
    auto target = transport::ParseHostPort(reverse_to);  // checked when it was set
    g_reversing.store(true);
    listener->reset();
    control.reset();
    if (metrics) {
      metrics->Close();
      metrics.reset();
    }
    ReplicateSetup setup = DefaultReplicateSetup();
    setup.control_socket = control_path.empty() ? "none" : control_path;  // restore has no default socket
    if (vm->count("metrics-textfile")) setup.metrics_textfile = (*vm)["metrics-textfile"].as<std::string>();
    setup.duration = run_after;  // 0: until SIGINT/SIGTERM or a switchover
    setup.status_extra = "\"replicating_to\":" + replicator::JsonString(reverse_to) +
                         ",\"activated_from_epoch\":" + std::to_string(epoch);
    spdlog::info("replicating the activated guest to {} (the new backup; default tuning: interval {})", reverse_to,
                 FormatDuration(setup.loop.interval));
    if (!xen_domain.empty()) return RunReplicateXen(setup, xen_domain, *target, sec);
    return RunEpochLoop(setup, *guest, *target, sec);
  }
  if (guest && run_after.count() > 0) {
    uint64_t before = guest->steps();
    auto until = std::chrono::steady_clock::now() + run_after;
    while (!StopFlag().load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    spdlog::info("resumed guest ran {} workload steps (from step {})", guest->steps() - before, before);
  }
  return kExitOk;
}

}  // namespace romulus::cli

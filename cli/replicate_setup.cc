#include "cli/replicate_setup.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>

#include "cli/commands.h"
#include "cli/kill_point.h"
#include "common/thread_name.h"
#include "common/units.h"
#include "compress/page.h"
#include "compress/xbzrle.h"
#include "events/catalog.h"
#include "replicator/control.h"
#include "replicator/metrics.h"
#include "replicator/output_commit.h"

namespace romulus::cli {

using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {
// 10^12 checkpoints: 158 years at the shortest interval, far from any wrap.
constexpr uint64_t kMaxEpochsFlag = 1000000000000ull;
}  // namespace

void AddReplicateTuningOptions(po::options_description* desc) {
  desc->add_options()
      ("interval", po::value<std::string>()->default_value("100ms"),
       "checkpoint period, counted from the previous suspend (5ms .. 60s)")
      ("cache-size", po::value<std::string>()->default_value("64M"), "page cache for deltas (0 disables)")
      ("outbuf-size", po::value<std::string>()->default_value("16M"), "preallocated output buffer")
      ("lz4-min-saving", po::value<std::string>()->default_value("0"),
       "send raw pages LZ4-compressed when that saves at least this many bytes (0 = off)")
      ("encoder", po::value<std::string>(), "delta encoder: scalar, avx2, avx512 (default: fastest)")
      ("epochs", po::value<std::string>()->default_value("0"), "stop cleanly after N checkpoints (0 = never)")
      ("duration", po::value<std::string>(), "stop cleanly after this long (e.g. 30s)")
      ("ack-timeout", po::value<std::string>()->default_value("1s"),
       "backup lost when an epoch's ack takes longer")
      ("heartbeat", po::value<std::string>()->default_value("100ms"), "heartbeat period")
      ("suspend-timeout", po::value<std::string>()->default_value("5s"),
       "Xen: how long the guest may take to suspend at a checkpoint before that checkpoint fails (\"guest "
       "will not suspend\"; the guest runs on unprotected and the next session retries) (100ms .. 10m)")
      ("device-model-timeout", po::value<std::string>()->default_value("5s"),
       "Xen, HVM guests: how long the device model (QEMU) may take to stop and save its state at a "
       "checkpoint. One that stays silent (a disk that hangs its stop, a QEMU gone) has the guest kept "
       "suspended and handed to the backup when it holds a checkpoint of this session (docs/DEVICE-MODEL.md "
       "2.3); raise it for storage that stalls this long and recovers (1s .. 10m)")
      ("stats-json", po::value<std::string>(), "write one JSON object per epoch to FILE")
      ("events-json", po::value<std::string>(),
       "append events (session, protected/unprotected and why, pause, switchover, stop) to FILE, one JSON "
       "object per line (docs/EVENTS.md)")
      ("netbuf-dev", po::value<std::string>(), "buffer this interface's egress until each epoch is acked (sch_plug)")
      ("netbuf-vif", po::value<std::vector<std::string>>(),
       "Xen: buffer the guest's transmit on this vif (e.g. vif3.0) via an IFB; repeat for every interface the guest "
       "sends on (more vifs, an HVM guest's emulated NIC tap vif3.0-emu): buffering some but not all is refused")
      ("no-net-buffering", po::bool_switch(), "do not buffer guest output (stats say: output not committed)")
      ("control-socket", po::value<std::string>(),
       "live control (romulus ctl) on this UNIX socket; default /run/romulus/GUEST.sock if writable, 'none' = off")
      ("metrics-textfile", po::value<std::string>(),
       "write Prometheus metrics to FILE (textfile collector; atomic, at most once per second)")
      ("kill-at", po::value<std::string>(),
       "drill: SIGKILL this process at PHASE[:EPOCH] (s, s2, r, r2, c, c2, m=mid-stream)");
}

bool ParseReplicateTuning(const std::string& cmd, const po::variables_map& vm, ReplicateSetup* out) {
  microseconds interval{}, ack{}, hb{}, duration{}, suspend{}, dm{};
  uint64_t cache = 0, outbuf = 0, lz4 = 0;
  if (!GetDuration(cmd, vm, "interval", &interval) || !GetDuration(cmd, vm, "ack-timeout", &ack) ||
      !GetDuration(cmd, vm, "heartbeat", &hb) || !GetDuration(cmd, vm, "duration", &duration) ||
      !GetDuration(cmd, vm, "suspend-timeout", &suspend) || !GetDuration(cmd, vm, "device-model-timeout", &dm) ||
      !GetSize(cmd, vm, "cache-size", &cache) || !GetSize(cmd, vm, "outbuf-size", &outbuf) ||
      !GetSize(cmd, vm, "lz4-min-saving", &lz4)) {
    return false;
  }
  if (!CheckRange(cmd, "interval", interval.count(), 5000, 60e6, "5ms", "60s") ||
      !CheckRange(cmd, "ack-timeout", ack.count(), 10000, 600e6, "10ms", "10m") ||
      !CheckRange(cmd, "heartbeat", hb.count(), 10000, 10e6, "10ms", "10s") ||
      !CheckRange(cmd, "suspend-timeout", suspend.count(), 100000, 600e6, "100ms", "10m") ||
      !CheckRange(cmd, "device-model-timeout", dm.count(), 1e6, 600e6, "1s", "10m") ||
      !CheckRange(cmd, "cache-size", static_cast<double>(cache), 0, 64.0 * (1ull << 30), "0", "64G") ||
      !CheckRange(cmd, "outbuf-size", static_cast<double>(outbuf), 2 << 20, 1024.0 * (1 << 20), "2M", "1G") ||
      !CheckRange(cmd, "lz4-min-saving", static_cast<double>(lz4), 0, 4095, "0", "4095")) {
    return false;
  }
  // An explicit --duration is a bound the operator asked for: 0 would
  // silently mean "until stopped" (omit the flag for that).
  if (vm.count("duration") && duration.count() <= 0) {
    UsageError(cmd, "--duration: must be positive (omit it to run until stopped)");
    return false;
  }
  uint64_t epochs = 0;
  if (!GetCount(cmd, vm, "epochs", 0, kMaxEpochsFlag, &epochs)) return false;
  if (cache % compress::kPageSize != 0) {
    UsageError(cmd, "--cache-size: must be a multiple of 4K");
    return false;
  }
  if (ack < 2 * hb) {
    UsageError(cmd, "--ack-timeout must be at least twice --heartbeat");
    return false;
  }
  out->loop.interval = interval;
  out->loop.ack_timeout = std::chrono::duration_cast<milliseconds>(ack);
  out->suspend_timeout = std::chrono::duration_cast<milliseconds>(suspend);
  out->device_model_timeout = std::chrono::duration_cast<milliseconds>(dm);
  out->loop.max_epochs = epochs;
  out->progress_bar = isatty(STDERR_FILENO);
  out->duration = duration;
  out->sender.codec.cache_pages = cache / compress::kPageSize;
  out->sender.codec.lz4_min_saving = lz4;
  out->sender.outbuf_bytes = outbuf;
  out->sender.max_batch_bytes = std::min<size_t>(1 << 20, outbuf / 2);
  out->sender.heartbeat_interval = std::chrono::duration_cast<milliseconds>(hb);
  out->sender.peer_timeout = out->loop.ack_timeout;
  if (vm.count("encoder")) {
    const std::string name = vm["encoder"].as<std::string>();
    out->sender.codec.encoder = compress::EncoderByName(name.c_str());
    if (!out->sender.codec.encoder) {
      UsageError(cmd, "--encoder: '" + name + "' is unknown or not supported by this CPU");
      return false;
    }
  }
  // An empty path would quietly switch the feature off (no stats, no
  // output buffering): say so instead.
  for (const char* flag : {"stats-json", "events-json", "metrics-textfile", "netbuf-dev"}) {
    if (vm.count(flag) && vm[flag].as<std::string>().empty()) {
      UsageError(cmd, std::string("--") + flag + ": empty value");
      return false;
    }
  }
  if (vm.count("control-socket")) {
    out->control_socket = vm["control-socket"].as<std::string>();
    if (out->control_socket.empty()) {
      UsageError(cmd, "--control-socket: empty path (use 'none' to disable)");
      return false;
    }
  }
  if (vm.count("metrics-textfile")) out->metrics_textfile = vm["metrics-textfile"].as<std::string>();
  if (vm.count("stats-json")) out->stats_json = vm["stats-json"].as<std::string>();
  if (vm.count("events-json")) out->events_json = vm["events-json"].as<std::string>();
  out->no_net_buffering = vm["no-net-buffering"].as<bool>();
  if (vm.count("netbuf-dev")) {
    if (out->no_net_buffering) {
      UsageError(cmd, "--netbuf-dev and --no-net-buffering contradict each other");
      return false;
    }
    out->netbuf_dev = vm["netbuf-dev"].as<std::string>();
  }
  if (vm.count("netbuf-vif")) {
    if (out->no_net_buffering || !out->netbuf_dev.empty()) {
      UsageError(cmd, "--netbuf-vif cannot be combined with --netbuf-dev or --no-net-buffering");
      return false;
    }
    for (const std::string& vif : vm["netbuf-vif"].as<std::vector<std::string>>()) {
      if (vif.empty()) {
        UsageError(cmd, "--netbuf-vif: empty value");
        return false;
      }
      if (std::find(out->netbuf_vifs.begin(), out->netbuf_vifs.end(), vif) != out->netbuf_vifs.end()) {
        UsageError(cmd, "--netbuf-vif " + vif + " given twice");
        return false;
      }
      out->netbuf_vifs.push_back(vif);
    }
  }
  if (vm.count("kill-at")) {
    std::string spec = vm["kill-at"].as<std::string>();
    std::string phase = spec.substr(0, spec.find(':'));
    if (!replicator::ParsePhase(phase, &out->kill_phase)) {
      UsageError(cmd, "--kill-at: unknown phase '" + phase + "' (s, s2, r, r2, c, c2, m)");
      return false;
    }
    if (spec.find(':') != std::string::npos) {
      try {
        size_t used = 0;
        std::string num = spec.substr(spec.find(':') + 1);
        // Digits only: stoull would take "-1" (wrapped to 2^64-1) and " 5".
        if (num.empty() || num.size() > 19 || num.find_first_not_of("0123456789") != std::string::npos) {
          throw std::invalid_argument(num);
        }
        out->kill_epoch = std::stoull(num, &used);
        if (used != num.size() || out->kill_epoch == 0) throw std::invalid_argument(num);
      } catch (const std::exception&) {
        UsageError(cmd, "--kill-at: the epoch after ':' must be a positive integer");
        return false;
      }
    }
    out->kill_enabled = true;
  }
  return true;
}

ReplicateSetup DefaultReplicateSetup() {
  po::options_description desc;
  AddReplicateTuningOptions(&desc);
  po::variables_map vm;
  const char* argv[] = {"romulus"};
  po::store(po::parse_command_line(1, argv, desc), vm);
  po::notify(vm);
  ReplicateSetup setup;
  // The defaults are valid by construction; a failure here is a bug in them.
  if (!ParseReplicateTuning("replicate", vm, &setup)) std::abort();
  return setup;
}

namespace {
std::atomic<bool> g_stop{false};
}  // namespace

const std::atomic<bool>& StopFlag() { return g_stop; }
void RequestStop() { g_stop.store(true); }

namespace {

// Signals are taken by a thread with sigwait, so the stop request is an
// ordinary atomic store, not async-signal-unsafe work in a handler.
class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void(int)> on_signal) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    thread_ = std::thread([set, on_signal = std::move(on_signal)] {
      NameThisThread("signal-wait");
      int sig = 0;
      sigwait(&set, &sig);
      if (!on_signal) {
        spdlog::info("{}: stopping replication after the current epoch", sig == SIGINT ? "SIGINT" : "SIGTERM");
      }
      g_stop.store(true);
      if (on_signal) on_signal(sig);
    });
    thread_.detach();
  }

 private:
  std::thread thread_;
};

}  // namespace

void StartSignalWatcher(std::function<void(int)> on_signal) {
  // A function-local static: constructed (thread started) by the first call only.
  static SignalWatcher watcher(std::move(on_signal));
}

replicator::ControlHandler WithStatusExtra(replicator::ControlHandler handler, const std::string& extra) {
  if (extra.empty()) return handler;
  // `extra` is JSON members text ("\"k\":v,..."), read once here.
  control::Json members = control::Json::parse("{" + extra + "}", nullptr, /*allow_exceptions=*/false);
  if (members.is_discarded()) members = control::Json::object();
  return [inner = std::move(handler), members](const control::Request& r) {
    auto reply = inner(r);
    if (reply.ok && std::holds_alternative<control::StatusReq>(r)) reply.members.update(members);
    return reply;
  };
}

Result<std::unique_ptr<replicator::ControlServer>> StartControlSocket(const ReplicateSetup& setup,
                                                                      const std::string& identity,
                                                                      replicator::ControlHandler handler) {
  std::string path = setup.control_socket;
  if (path.empty()) path = replicator::DefaultControlSocket(identity);
  if (path.empty() || path == "none") return std::unique_ptr<replicator::ControlServer>();
  auto c = replicator::ControlServer::Start(path, std::move(handler));
  if (!c.ok() && setup.control_socket.empty()) {
    // The default is a convenience: replicate without it rather than not at all.
    spdlog::warn("no control socket: {}", c.status().ToString());
    return std::unique_ptr<replicator::ControlServer>();
  }
  return c;
}

int RunPrimary(const ReplicateSetup& setup, std::unique_ptr<replicator::CheckpointDriver> driver,
               const transport::HostPort& target, std::shared_ptr<const transport::SecurityContext> sec) {
  StartSignalWatcher();
  const replicator::GuestFacts facts = driver->facts();
  replicator::StatsWriter stats;
  if (!setup.stats_json.empty() && !stats.OpenJson(setup.stats_json)) {
    spdlog::error("cannot write --stats-json {}: {}", setup.stats_json, std::strerror(errno));
    return kExitFailure;
  }
  // Epochs come ten a second: at most one human line a second on a
  // terminal, every epoch with --log-level debug.
  stats.set_human(isatty(STDERR_FILENO));
  stats.set_human_min_gap(spdlog::get_level() <= spdlog::level::debug ? std::chrono::milliseconds(0)
                                                                        : std::chrono::milliseconds(1000));
  auto output = MakeOutputCommit(setup);
  if (!output.ok()) {
    spdlog::error("output commit: {}", output.status().ToString());
    return kExitFailure;
  }
  if (!(*output)->commits_output()) {
    spdlog::warn("network output is NOT buffered: the outside world may see output of epochs the backup "
                 "never received (use {})",
                 facts.backend == "xen" ? "--netbuf-vif vifD.0" : "--netbuf-dev IFACE");
  }
  replicator::ControllerOptions opts = setup.loop;
  // Kept in memory always (`ctl wait`); written to a file with --events-json.
  events::EventLog events("primary");
  if (!setup.events_json.empty() && !events.Open(setup.events_json)) {
    spdlog::error("cannot write --events-json {}: {}", setup.events_json, std::strerror(errno));
    return kExitFailure;
  }
  opts.events = &events;
  std::unique_ptr<replicator::MetricsTextfile> metrics;
  if (!setup.metrics_textfile.empty()) {
    auto m = replicator::MetricsTextfile::Open(setup.metrics_textfile, facts.identity);
    if (!m.ok()) {
      spdlog::error("{}", m.status().ToString());
      return kExitFailure;
    }
    metrics = std::move(*m);
  }
  // The controller exists only below; on_epoch runs on its thread, after it.
  replicator::PrimaryController* engine_ptr = nullptr;
  if (metrics) {
    const bool commits = (*output)->commits_output();
    opts.on_epoch = [m = metrics.get(), commits, &engine_ptr](const replicator::EpochStats& e) {
      m->OnEpoch(e, commits, engine_ptr ? engine_ptr->totals().resyncs : 0);
    };
  }
  if (setup.kill_enabled) opts.phase_hook = KillAtHook(setup.kill_phase, setup.kill_epoch);
  auto connect = [target, sec]() {
    return transport::Connect(target.host, target.port, sec, std::chrono::seconds(5));
  };
  replicator::PrimaryController engine(std::move(driver), **output, connect, setup.sender, opts, &stats);
  engine_ptr = &engine;
  std::unique_ptr<replicator::ControlServer> control;
  {
    auto handler = replicator::WithEventWaits(
        WithStatusExtra(replicator::PrimaryControlHandler(&engine), setup.status_extra), &events, &g_stop);
    auto c = StartControlSocket(setup, facts.identity, std::move(handler));
    if (!c.ok()) {
      spdlog::error("{}", c.status().ToString());
      return kExitFailure;
    }
    control = std::move(*c);
  }
  if (metrics) {
    // Live gauges: a paused or disconnected primary has no epochs to report them.
    metrics->SetRefresher([m = metrics.get(), &engine] { m->SetLiveState(engine.protected_now(), engine.paused()); });
  }
  spdlog::info("replicating {} ({}) every {}", facts.identity, FormatSize(facts.guest_pages * compress::kPageSize),
               FormatDuration(engine.interval()));
  // --duration is a stop request like SIGTERM: it also ends a wait for the
  // first sync's commit.
  std::thread timer;
  if (setup.duration.count() > 0) {
    timer = std::thread([d = setup.duration] {
      NameThisThread("duration");
      auto until = std::chrono::steady_clock::now() + d;
      while (!g_stop.load() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      g_stop.store(true);
    });
  }
  Status st = engine.Run(g_stop);
  if (metrics) metrics->SetRefresher(nullptr);
  g_stop.store(true);
  if (timer.joinable()) timer.join();
  control.reset();  // after Run: a switchover request is answered before the socket goes
  if (metrics) {
    metrics->SetLiveState(false, engine.paused());
    metrics->Close();
  }
  if (engine.handed_over() && st.ok()) {
    spdlog::warn("switchover complete: the backup runs the guest from epoch {}; this copy stays paused",
                 engine.last_acked_epoch());
  }
  stats.Totals(engine.totals());
  events::PrimaryStop(opts.events, engine.last_acked_epoch(),
                      st.ok() ? (engine.handed_over() ? "switchover" : "stopped") : st.ToString());
  if (!st.ok()) {
    spdlog::error("replication of {} ended: {}", facts.identity, st.ToString());
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace romulus::cli

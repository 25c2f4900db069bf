// romulus restore: the backup. Receives checkpoints, commits each one only
// when complete and verified, and fails over to the last committed one when
// the primary dies.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "cli/commands.h"
#include "cli/net_options.h"
#include "cli/options.h"
#include "cli/restore_events.h"
#include "common/digest.h"
#include "common/units.h"
#include "restore/checkpoint_receiver.h"
#include "sim/image_sink.h"
#include "transport/tcp.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_cli.h"
#endif

namespace romulus::cli {

namespace {

const char kCmd[] = "restore";

std::atomic<bool> g_stop{false};
std::mutex g_mu;
transport::Listener* g_listener = nullptr;  // guarded by g_mu
transport::Stream* g_stream = nullptr;      // guarded by g_mu

// SIGINT/SIGTERM: stop serving without failing over (an operator stopping
// the backup is not a primary failure).
void StartStopWatcher() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    spdlog::info("{}: backup stopping; the guest is NOT activated", sig == SIGINT ? "SIGINT" : "SIGTERM");
    g_stop.store(true);
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_listener) g_listener->Shutdown();
    if (g_stream) g_stream->Shutdown();
  }).detach();
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
       "keep the activated simulated guest running this long before exiting");
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
  StartStopWatcher();
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
  while (!g_stop.load()) {
    auto deadline = grace_until ? *grace_until : transport::NoDeadline();
    auto stream = (*listener)->Accept(deadline);
    if (!stream.ok()) {
      if (g_stop.load()) break;
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
    grace_until.reset();
    spdlog::info("primary connected: {}", (*stream)->Peer());
    auto end = receiver.Serve(**stream, *sink, [&](const restore::CommitEvent& e) {
      events.Commit(e.epoch, e.digest);
      last_digest = e.digest;
      spdlog::debug("committed epoch {} ({} pages, {} on the wire)", e.epoch, e.pages, FormatSize(e.wire_bytes));
    });
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_stream = nullptr;
    }
    spdlog::info("session ended after {} committed epochs; {} receive-buffer reallocations in steady state",
                 end.epochs_committed, end.receive_reallocations);
    if (g_stop.load()) break;
    if (end.clean_stop) {
      events.Stop(sink->last_committed_epoch(), last_digest);
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
  if (g_stop.load()) return kExitOk;

  // Failover.
  const uint64_t epoch = sink->last_committed_epoch();
  const std::string reason = why.ToString();
  spdlog::warn("FAILOVER: {}; activating the guest from epoch {} (digest {})", reason, epoch,
               DigestHex(last_digest));
  if (!RunFence(fence, reason, epoch)) {
    events.Failover(reason, epoch, last_digest, false);
    return kExitFailure;
  }
  auto t0 = std::chrono::steady_clock::now();
  Status st = sink->Activate(reason);
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  events.Failover(reason, epoch, last_digest, st.ok());
  if (!st.ok()) {
    spdlog::error("activation failed: {}", st.ToString());
    return kExitFailure;
  }
  spdlog::info("guest resumed from epoch {} in {}", epoch, FormatDuration(took));
  if (auto* guest = image_sink ? image_sink->activated_guest() : nullptr; guest && run_after.count() > 0) {
    uint64_t before = guest->steps();
    auto until = std::chrono::steady_clock::now() + run_after;
    while (!g_stop.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    spdlog::info("resumed guest ran {} workload steps (from step {})", guest->steps() - before, before);
  }
  return kExitOk;
}

}  // namespace romulus::cli

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
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "cli/commands.h"
#include "cli/net_options.h"
#include "cli/options.h"
#include "cli/replicate_setup.h"
#include "cli/spawn.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/exported_disk.h"
#include "disk/local_disk_tap.h"
#include "replicator/disk_replicator.h"
#include "replicator/timer_driver.h"
#include "events/catalog.h"
#include "common/digest.h"
#include "common/units.h"
#include "replicator/control.h"
#include "replicator/metrics.h"
#include "restore/backup_control.h"
#include "restore/backup_service.h"
#include "restore/fence.h"
#include "sim/image_sink.h"
#include "transport/tcp.h"
#if ROMULUS_HAVE_XEN
#include "xen/xen_facade.h"
#endif

namespace romulus::cli {

namespace {

const char kCmd[] = "restore";

// The stop request is replicate_setup's StopFlag(): one flag and one signal
// watcher for the whole process, because after an activation with
// --reverse-to this process runs the primary's epoch loop, which stops on
// that same flag.
std::mutex g_mu;
restore::BackupService* g_service = nullptr;  // guarded by g_mu
std::atomic<bool> g_activated{false};          // the guest runs here now
std::atomic<bool> g_reversing{false};          // ... and this process replicates it (--reverse-to)

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
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_service) g_service->Stop();
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

// `digest EPOCH REGIONS` for a simulated guest's image, which holds exactly
// EPOCH when this is called (from the commit callback).
Result<control::DigestAnswer> RegionDigest(const sim::ImageSink& img, uint64_t epoch, uint32_t regions) {
  const uint64_t pages = img.guest_pages();
  const uint64_t per = pages / regions;
  std::vector<uint64_t> sums(regions, 0);
  for (uint32_t r = 0; r < regions; ++r) {
    const uint64_t first = r * per, end = r + 1 == regions ? pages : first + per;
    for (uint64_t pfn = first; pfn < end; ++pfn) sums[r] += PageHash(pfn, img.image() + pfn * 4096);
  }
  control::DigestAnswer a;
  a.epoch = epoch;
  a.guest_pages = pages;
  for (uint64_t sum : sums) a.digest += sum;
  a.regions = std::move(sums);
  return a;
}

// Events file and metrics: what the service observes, written down.
class BackupRecorder : public restore::BackupObserver {
 public:
  BackupRecorder(events::EventLog* events, replicator::MetricsTextfile* metrics) : events_(events), metrics_(metrics) {}
  std::function<void(uint64_t epoch)> on_commit;  // drills

  void OnState(const std::string& state, const std::string& peer) override {
    if (state == "receiving") events::SessionStart(events_, peer);
  }
  void OnDecision(const restore::Decision& d) override {
    events::Decision(events_, restore::DecisionName(d.kind), d.why);
  }
  void OnCommit(const restore::CommitEvent& e) override {
    events::Commit(events_, e.epoch, e.digest, e.incomplete);
    LogSyncProgress(e);
    if (on_commit) on_commit(e.epoch);
    if (metrics_) {
      metrics_->Set("romulus_committed_epoch", "gauge", "Last epoch committed by the backup.", static_cast<double>(e.epoch));
      metrics_->Add("romulus_commits_total", "Epochs committed.", 1);
      metrics_->Add("romulus_wire_bytes_total", "Bytes received from the primary.", static_cast<double>(e.wire_bytes));
    }
    spdlog::debug("committed epoch {} ({} pages, {} on the wire)", e.epoch, e.pages, FormatSize(e.wire_bytes));
  }
  // The backup's side of a streaming disk copy: a line per 10%, one when
  // its checkpoints become resumable.
  void LogSyncProgress(const restore::CommitEvent& e) {
    if (e.incomplete.empty()) {
      if (syncing_) spdlog::info("epoch {}: the disks are whole: this checkpoint can be resumed", e.epoch);
      syncing_ = false;
      sync_logged_ = 0;
      return;
    }
    syncing_ = true;
    if (++sync_logged_ % 50 == 1) {
      spdlog::info("epoch {} committed but not resumable: {}", e.epoch, e.incomplete);
    }
  }
  void OnSessionEnd(const restore::SessionEnd& end) override {
    if (end.established) {
      events::SessionEnd(events_, restore::EndCauseName(end.cause), end.reason.ToString(), end.epochs_committed);
    }
    if (metrics_ && end.established) {
      metrics_->Set("romulus_receive_reallocations", "gauge",
                    "Receive-buffer reallocations in steady state (last session).",
                    static_cast<double>(end.receive_reallocations));
    }
  }
  void OnFence(const Status& result, const std::string& reason, uint64_t epoch, uint64_t digest) override {
    if (metrics_) metrics_->Add("romulus_fence_runs_total", "Fence command runs.", 1);
    events::Fence(events_, result.ok(), result.ok() ? "confirmed" : result.message(), epoch);
    if (result.ok()) return;
    if (metrics_) metrics_->Add("romulus_fence_failures_total", "Fence command refusals.", 1);
    // A failover that was decided and not carried out.
    events::Failover(events_, reason + " (fence: " + result.message() + ")", epoch, digest, false);
  }
  void OnActivationFailed(const Status& result, const std::string& reason, uint64_t epoch,
                          uint64_t digest) override {
    if (metrics_) metrics_->Add("romulus_activation_failures_total", "Activations that failed (checkpoint kept).", 1);
    events::Failover(events_, reason + " (activation: " + result.message() + ")", epoch, digest, false);
  }

 private:
  bool syncing_ = false;
  uint64_t sync_logged_ = 0;
  events::EventLog* events_;
  replicator::MetricsTextfile* metrics_;
};

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
      ("disk-dir", po::value<std::string>(),
       "with --xen: keep the guest's replicated disks here, one sparse image per disk (DIR/REPLICA.xvdb.img, "
       "committed with memory); at activation each is attached to a loop device and given to the guest as its "
       "VBD. Without it a primary that replicates disks is refused")
      ("device-model", po::value<std::string>(),
       "with --xen: the device model started for an HVM guest at activation, from the last checkpoint's device "
       "state (default /usr/libexec/xen-qemu-system-i386, libxl's path for Debian's qemu-system-xen); its QEMU "
       "release must be the primary's or newer (checked when a session starts)")
      ("guest-kernel-dir", po::value<std::vector<std::string>>(),
       "with --xen, HVM guests booted directly (kernel= in their config): the device model may load the kernel "
       "the primary names only from here (repeatable; default /boot)")
      ("max-device-state", po::value<std::string>()->default_value("16M"),
       "with --xen: largest device model state of one HVM epoch; a larger one is refused and the last "
       "checkpoint kept")
      ("start-over", po::bool_switch(), "discard whatever an existing --image holds")
      ("durable", po::bool_switch(), "fsync the image at every commit (survives host power loss)")
      ("failover-timeout", po::value<std::string>()->default_value("1s"),
       "fail over when the primary is silent this long, counted while this backup runs (a stall of the "
       "backup itself is not primary silence); a primary whose last word was an ERROR or a corrupt frame "
       "is alive and unprotected: the backup holds instead, until a new session commits or ctl failover")
      ("fence-cmd", po::value<std::string>(),
       "before activating on silence, run this command; activate only if it exits 0 within --fence-timeout "
       "(env: ROMULUS_REASON, ROMULUS_EPOCH). It must make the primary unable to reach the world (power off, "
       "cut its port, STONITH). One of --fence-cmd and --no-fence is required")
      ("no-fence", po::bool_switch(),
       "activate on silence alone, without fencing. RISK: a network partition then makes two live copies of "
       "the guest; use only where a partition cannot happen or a human watches")
      ("fence-timeout", po::value<std::string>()->default_value("30s"),
       "a fence command that has not exited after this long counts as failed")
      ("events-json", po::value<std::string>(), "append events (sessions, commits, decisions, fence, failover) to FILE, one JSON object per line (docs/EVENTS.md)")
      ("max-cache-size", po::value<std::string>()->default_value("1G"), "largest mirror cache a primary may ask for")
      ("max-disk-staging", po::value<std::string>()->default_value("64M"),
       "disk data of one epoch staged in memory until its commit; the rest of a larger epoch is spilled "
       "(--max-disk-spill). The first epoch of a new image is written directly and not bounded")
      ("max-disk-spill", po::value<std::string>()->default_value("16G"),
       "disk data of one epoch beyond --max-disk-staging, spilled to an unlinked file beside the image (or in "
       "--disk-dir) until its commit; an epoch larger than both is refused, the last checkpoint kept. 0 = no spilling")
      ("max-guest-size", po::value<std::string>()->default_value("64G"), "largest guest a primary may send")
      ("run-after-failover", po::value<std::string>()->default_value("0s"),
       "keep the activated simulated guest running this long before exiting (with --reverse-to: replicate it "
       "this long, then stop cleanly; 0 = until stopped)")
      ("control-socket", po::value<std::string>(), "live control (romulus ctl) on this UNIX socket")
      ("reverse-to", po::value<std::string>(),
       "once the guest is activated here, replicate it to HOST:PORT (a `romulus restore` there) with "
       "this process's channel security and replicate's default tuning; runs until stopped, or "
       "--run-after-failover if set (also `ctl set reverse-to`). A Xen guest's disks are then served by "
       "`romulus disk-export` processes through nbd-client (/dev/nbdK), which outlive this one")
      ("metrics-textfile", po::value<std::string>(),
       "write Prometheus metrics to FILE (textfile collector; atomic, at most once per second)")
      ("kill-at-commit", po::value<std::string>(),
       "crash drill: SIGKILL this backup at STEP of the commit of EPOCH (STEP:EPOCH; steps: journal-pages, "
       "journal-body, state-tmp, journal-marker, apply-half, applied, state-rename, journal-reset); "
       "simulated guest images only");
  AddSecurityOptions(&desc);
  int code = 0;
  auto vm = ParseOptions(kCmd, "--listen ADDR:PORT --psk-file FILE --image PATH (--fence-cmd CMD | --no-fence) [options]",
                         desc, argc, argv, &code);
  if (!vm) return code;
  if (!vm->count("listen")) {
    UsageError(kCmd, "--listen ADDR:PORT is required");
    return kExitUsage;
  }
  std::chrono::microseconds failover{}, run_after{}, fence_timeout{};
  uint64_t max_cache = 0, max_guest = 0, max_disk_staging = 0, max_disk_spill = 0, max_device_state = 0;
  if (!GetDuration(kCmd, *vm, "failover-timeout", &failover) || !GetDuration(kCmd, *vm, "run-after-failover", &run_after) ||
      !GetDuration(kCmd, *vm, "fence-timeout", &fence_timeout) ||
      !GetSizeAtLeast(kCmd, *vm, "max-cache-size", 4096, &max_cache) ||
      !GetSizeAtLeast(kCmd, *vm, "max-guest-size", 4096, &max_guest) ||
      !GetSizeAtLeast(kCmd, *vm, "max-disk-staging", 64 << 10, &max_disk_staging) ||
      !GetSizeAtLeast(kCmd, *vm, "max-disk-spill", 0, &max_disk_spill) ||
      !GetSizeAtLeast(kCmd, *vm, "max-device-state", 4096, &max_device_state)) {
    return kExitUsage;
  }
  if (!CheckRange(kCmd, "failover-timeout", failover.count(), 20000, 600e6, "20ms", "10m")) return kExitUsage;
  if (!CheckRange(kCmd, "fence-timeout", fence_timeout.count(), 100000, 3600e6, "100ms", "1h")) return kExitUsage;
  if (run_after.count() < 0) {
    UsageError(kCmd, "--run-after-failover must not be negative");
    return kExitUsage;
  }
  // Partitions: an explicit choice, never a default (docs/FAILURE-MODEL.md §6).
  const bool no_fence = (*vm)["no-fence"].as<bool>();
  const std::string fence = vm->count("fence-cmd") ? (*vm)["fence-cmd"].as<std::string>() : "";
  if (vm->count("fence-cmd") && no_fence) {
    UsageError(kCmd, "--fence-cmd and --no-fence exclude each other");
    return kExitUsage;
  }
  if (!vm->count("fence-cmd") && !no_fence) {
    UsageError(kCmd,
               "choose how a network partition is handled: --fence-cmd CMD (fence the primary before activating) "
               "or --no-fence (activate on silence alone; a partition then makes two live copies)");
    return kExitUsage;
  }
  if (vm->count("fence-cmd")) {
    if (Status st = restore::CheckFenceCommand(fence); !st.ok()) {
      UsageError(kCmd, st.message());
      return kExitUsage;
    }
  }
  auto listen = transport::ParseHostPort((*vm)["listen"].as<std::string>());
  if (!listen.ok()) {
    UsageError(kCmd, "--listen: " + listen.status().message());
    return kExitUsage;
  }
  auto sec = LoadSecurity(kCmd, *vm);
  if (!sec) return kExitUsage;
  events::EventLog events("backup");
  if (vm->count("events-json") && !events.Open((*vm)["events-json"].as<std::string>())) {
    spdlog::error("cannot write --events-json: {}", std::strerror(errno));
    return kExitFailure;
  }

  const bool xen = (*vm)["xen"].as<bool>();
  if (xen && vm->count("image")) {
    UsageError(kCmd, "--xen and --image exclude each other");
    return kExitUsage;
  }
  if (!xen && (vm->count("vif-script") || (*vm)["no-vifs"].as<bool>() || vm->count("domain-name") ||
               vm->count("disk-dir") || vm->count("device-model") || vm->count("guest-kernel-dir"))) {
    UsageError(kCmd,
               "--domain-name, --vif-script, --no-vifs, --disk-dir, --device-model and --guest-kernel-dir need --xen");
    return kExitUsage;
  }
  if (vm->count("device-model") && (*vm)["device-model"].as<std::string>().rfind('/', 0) != 0) {
    UsageError(kCmd, "--device-model " + (*vm)["device-model"].as<std::string>() + ": an absolute path is needed");
    return kExitUsage;
  }
  if (vm->count("device-model") && access((*vm)["device-model"].as<std::string>().c_str(), X_OK) != 0) {
    UsageError(kCmd, "--device-model " + (*vm)["device-model"].as<std::string>() + ": " + std::strerror(errno) +
                         " (an executable qemu-system-xen is needed)");
    return kExitUsage;
  }
  if (vm->count("guest-kernel-dir")) {
    for (const std::string& d : (*vm)["guest-kernel-dir"].as<std::vector<std::string>>()) {
      struct stat st;
      if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        UsageError(kCmd, "--guest-kernel-dir " + d + ": not a directory");
        return kExitUsage;
      }
    }
  }
  if (max_device_state > (uint64_t{1} << 30)) {
    UsageError(kCmd, "--max-device-state above 1G: a device model's state is kilobytes to a few megabytes");
    return kExitUsage;
  }
  if (vm->count("vif-script") && access((*vm)["vif-script"].as<std::string>().c_str(), X_OK) != 0) {
    UsageError(kCmd, "--vif-script " + (*vm)["vif-script"].as<std::string>() + ": " + std::strerror(errno) +
                         " (an executable hotplug script is needed)");
    return kExitUsage;
  }
  // --kill-at-commit STEP:EPOCH
  sim::CommitStep kill_step = sim::CommitStep::kNone;
  uint64_t kill_epoch = 0;
  if (vm->count("kill-at-commit")) {
    const std::string text = (*vm)["kill-at-commit"].as<std::string>();
    const size_t colon = text.rfind(':');
    bool ok = colon != std::string::npos && sim::ParseCommitStep(text.substr(0, colon), &kill_step);
    if (ok) {
      try {
        size_t used = 0;
        kill_epoch = std::stoull(text.substr(colon + 1), &used);
        ok = used == text.size() - colon - 1 && kill_epoch >= 1 && text[colon + 1] != '-';
      } catch (const std::exception&) {
        ok = false;
      }
    }
    if (!ok) {
      std::string steps;
      for (const auto& n : sim::CommitStepNames()) steps += (steps.empty() ? "" : ", ") + n;
      UsageError(kCmd, "--kill-at-commit '" + text + "': expected STEP:EPOCH with EPOCH >= 1 and STEP one of " + steps);
      return kExitUsage;
    }
    if ((*vm)["xen"].as<bool>()) {
      UsageError(kCmd, "--kill-at-commit is for simulated guest images, not --xen");
      return kExitUsage;
    }
  }
  std::string reverse_to_flag;
  if (vm->count("reverse-to")) {
    reverse_to_flag = (*vm)["reverse-to"].as<std::string>();
    if (Status st = CheckReverseTarget(reverse_to_flag); !st.ok()) {
      UsageError(kCmd, "--reverse-to: " + st.message());
      return kExitUsage;
    }
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
  // A simulated guest's disk, like a Xen guest's below: with a reverse
  // target its writes are tagged by this clock and logged here from the
  // activation on. Declared before the sink, whose resumed guest writes
  // through them until it is stopped.
  disk::EpochCounter sim_disk_clock;
  disk::EpochDiskLog sim_disk_log(0, nullptr);
  bool sim_disk_logged = false;
  std::unique_ptr<restore::GuestSink> sink;
  sim::ImageSink* image_sink = nullptr;  // the simulated guest's sink, when that is what we hold
  // A Xen guest with disks and a reverse target (docs/DISK.md §8b): at the
  // activation, when blkback is given each disk, the reverse target is
  // decided; with one, each image is served by a disk export (its tap is
  // what the reverse replication attaches to), else by a loop device. Per
  // disk name: the export's tap, or "" where it could not be made.
  std::function<bool()> reverse_wanted;
  std::map<std::string, std::string> reverse_taps;
  uint64_t loaded_digest = 0;
  if (xen) {
#if ROMULUS_HAVE_XEN
    auto probe = xen::ProbeXen();
    if (!probe.ok()) {
      spdlog::error("{}", probe.status().ToString());
      return kExitFailure;
    }
    spdlog::info("{}", *probe);
    xen::XenRestoreOptions xopts;
    if (vm->count("domain-name")) xopts.domain_name = (*vm)["domain-name"].as<std::string>();
    xopts.create_vifs = !(*vm)["no-vifs"].as<bool>();
    if (vm->count("vif-script")) xopts.vif_script = (*vm)["vif-script"].as<std::string>();
    if (vm->count("disk-dir")) xopts.disk_dir = (*vm)["disk-dir"].as<std::string>();
    if (vm->count("device-model")) xopts.device_model = (*vm)["device-model"].as<std::string>();
    xopts.max_device_state = static_cast<size_t>(max_device_state);
    if (vm->count("guest-kernel-dir")) xopts.guest_kernel_dirs = (*vm)["guest-kernel-dir"].as<std::vector<std::string>>();
    xopts.max_disk_staging = static_cast<size_t>(max_disk_staging);
    xopts.max_disk_spill = max_disk_spill;
    xopts.disk_device = [&reverse_wanted, &reverse_taps](const std::string& image,
                                                         const std::string& vdev) -> std::unique_ptr<disk::BlockDevice> {
      if (!reverse_wanted || !reverse_wanted()) return nullptr;
      disk::ExportedDiskOptions eo;
      // This very binary, even after a package upgrade replaced the file.
      eo.romulus = "/proc/self/exe";
      auto d = disk::ExportedDisk::Start(image, vdev, eo);
      if (!d.ok()) {
        // The guest runs on a loop device instead: its disk matters more
        // than its protection.
        spdlog::error("disk {}: cannot serve {} through a disk export for the reverse replication: {}", vdev, image,
                      d.status().ToString());
        reverse_taps[vdev] = "";
        return nullptr;
      }
      spdlog::info("disk {}: {} served by a disk export (pid {}) on {}; replicator tap {} (log {})", vdev, image,
                   (*d)->export_pid(), (*d)->path(), (*d)->tap_socket(), (*d)->log());
      reverse_taps[vdev] = (*d)->tap_socket();
      return std::move(*d);
    };
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
    sink_opts.max_disk_staging_bytes = static_cast<size_t>(max_disk_staging);
    sink_opts.max_disk_spill_bytes = max_disk_spill;
    sink_opts.open_activated_disk = [&](sim::SimGuest& guest, const std::string& path) -> Status {
      if (!reverse_wanted || !reverse_wanted()) return guest.OpenDisk(path);
      // Changes tracked from the guest's first write (the tap would start it
      // only later, when the reverse primary is built).
      sim_disk_log.TrackChanges(guest.spec().disk_bytes);
      ROMULUS_RETURN_IF_ERROR(guest.OpenDisk(path, &sim_disk_clock, &sim_disk_log));
      sim_disk_log.AttachStore(guest.disk_store());
      sim_disk_logged = true;
      return Status::Ok();
    };
    if (sink_opts.path.empty()) spdlog::warn("no --image: the standby copy lives in memory only");
    auto is = sim::ImageSink::Open(sink_opts);
    if (!is.ok()) {
      spdlog::error("{}", is.status().ToString());
      return kExitFailure;
    }
    image_sink = is->get();
    if (kill_epoch == 1) image_sink->set_crash_at(kill_step);
    if (!image_sink->recovery_note().empty()) spdlog::warn("{}", image_sink->recovery_note());
    if (image_sink->has_committed()) {
      loaded_digest = image_sink->digest();
      spdlog::info("image holds committed epoch {} (digest {})", image_sink->last_committed_epoch(),
                   DigestHex(loaded_digest));
    }
    sink = std::move(*is);
  }

  auto listener = transport::Listener::Bind(listen->host, listen->port, sec);
  if (!listener.ok()) {
    spdlog::error("cannot listen on {}: {}", (*vm)["listen"].as<std::string>(), listener.status().ToString());
    return kExitFailure;
  }
  spdlog::info("backup listening on {} ({}; {})", (*listener)->address(), transport::ModeName(sec->mode()),
               no_fence ? "no fencing: activation on silence alone" : "fenced by --fence-cmd");

  restore::BackupServiceOptions sopts;
  sopts.receiver.cache_pages = max_cache / 4096;
  sopts.receiver.max_guest_pages = max_guest / 4096;
  sopts.receiver.failover_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(failover);
  sopts.judge.failover_timeout = failover;
  sopts.judge.fencing = no_fence ? restore::Fencing::kNone : restore::Fencing::kCommand;
  sopts.fence_cmd = fence;
  sopts.fence_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(fence_timeout);
  sopts.loaded_digest = loaded_digest;

  BackupRecorder recorder(&events, metrics.get());
  if (image_sink && kill_epoch > 1) {
    // Armed right after EPOCH-1 is committed, so the commit of EPOCH dies.
    recorder.on_commit = [image_sink, kill_step, kill_epoch](uint64_t committed) {
      if (committed + 1 == kill_epoch) {
        spdlog::warn("drill: this backup dies at step {} of the commit of epoch {}", sim::CommitStepName(kill_step),
                     kill_epoch);
        image_sink->set_crash_at(kill_step);
      }
    };
  }
  restore::BackupControl control_state(
      sink.get(),
      image_sink ? restore::BackupControl::RegionDigestFn(
                       [image_sink](uint64_t epoch, uint32_t regions) {
                         return RegionDigest(*image_sink, epoch, regions);
                       })
                 : nullptr,
      CheckReverseTarget, &recorder);
  if (!reverse_to_flag.empty()) control_state.SetReverseTo(reverse_to_flag);
  reverse_wanted = [&control_state] { return !control_state.DecideReverseTo().empty(); };
  restore::BackupService service(listener->get(), sink.get(), sopts, &control_state);
  control_state.Attach(&service);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_service = &service;
  }
  std::unique_ptr<replicator::ControlServer> control;
  const std::string control_path = vm->count("control-socket") ? (*vm)["control-socket"].as<std::string>() : "";
  if (!control_path.empty() && control_path != "none") {
    auto c = replicator::ControlServer::Start(control_path,
                                              replicator::WithEventWaits(control_state.Handler(), &events, &StopFlag()));
    if (!c.ok()) {
      spdlog::error("{}", c.status().ToString());
      return kExitFailure;
    }
    control = std::move(*c);
  }
  if (StopFlag().load()) service.Stop();  // a signal before g_service was set

  restore::BackupOutcome out = service.Run();
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_service = nullptr;
  }
  switch (out.kind) {
    case restore::BackupOutcome::kStopped:
      control_state.ActivationDone(Status::Closed("backup stopped"), "");
      return kExitOk;
    case restore::BackupOutcome::kCleanStop:
      events::BackupStop(&events, out.epoch, out.digest);
      control_state.ActivationDone(Status::Closed("the primary stopped replication cleanly"), "");
      return kExitOk;
    case restore::BackupOutcome::kActivationFailed:
      events::Failover(&events, out.reason, out.epoch, out.digest, false);
      control_state.ActivationDone(out.status, out.reason);
      spdlog::error("activation failed: {}", out.status.ToString());
      return kExitFailure;
    case restore::BackupOutcome::kActivated:
      break;
  }
  events::Failover(&events, out.reason, out.epoch, out.digest, true);
  control_state.ActivationDone(Status::Ok(), out.reason);
  if (metrics) metrics->Set("romulus_failover", "gauge", "1 once this backup activated the guest.", 1);
  spdlog::info("guest resumed from epoch {} in {}", out.epoch, FormatDuration(out.activation_time));
  g_activated.store(true);
  const uint64_t epoch = out.epoch;
  const std::string reverse_to = control_state.DecideReverseTo();
  auto* guest = image_sink ? image_sink->activated_guest() : nullptr;
  std::string xen_domain;
  bool reverse_refused = false;
  std::vector<std::string> disk_taps;
#if ROMULUS_HAVE_XEN
  if (xen) xen_domain = xen::ActivatedDomainName(*sink);
  if (!xen_domain.empty() && !reverse_to.empty() && xen::ActivatedWithDisks(*sink)) {
    for (const auto& [vdev, tap] : reverse_taps) {
      if (tap.empty()) reverse_refused = true;
      disk_taps.push_back(tap);
    }
    if (reverse_taps.empty()) reverse_refused = true;
    if (reverse_refused) {
      // Replicating its memory alone would give the new backup checkpoints
      // whose disk is not the guest's: a failover there would corrupt it.
      spdlog::error("not replicating {} to {}: not every disk of the guest is served through a disk export (see "
                    "above), so its writes cannot be replicated; it runs UNPROTECTED (docs/DISK.md §8b)",
                    xen_domain, reverse_to);
      disk_taps.clear();
    }
  }
#endif
  if (guest && guest->spec().disk_bytes != 0 && !reverse_to.empty() && !sim_disk_logged) {
    // (The decision is latched at the activation, so this is a guard.)
    spdlog::error("not replicating the activated guest to {}: its disk's writes since the activation were not "
                  "logged, so its disk cannot be replicated with its memory; it runs UNPROTECTED",
                  reverse_to);
    reverse_refused = true;
  }
  if ((guest || !xen_domain.empty()) && !reverse_to.empty() && !reverse_refused) {
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
    // A guest with disks gets here only with every disk behind an export.
    if (!xen_domain.empty()) return RunReplicateXen(setup, xen_domain, disk_taps, *target, sec);
    replicator::TimerDriverOptions topts{setup.progress_bar};
    std::unique_ptr<disk::LocalDiskTap> sim_tap;
    std::unique_ptr<replicator::DiskReplicator> sim_disks;
    if (guest->spec().disk_bytes != 0) {
      // Its disk travels with its memory, as under replicate --guest; a
      // session's first epoch copies it whole (the new backup's is of
      // another front end).
      protocol::DiskInfo info{0, guest->spec().disk_bytes, "xvda"};
      topts.disks = {info};
      sim_tap = std::make_unique<disk::LocalDiskTap>(info, guest->disk_store(), &sim_disk_clock, &sim_disk_log,
                                                     guest->disk_hold());
      sim_disks = std::make_unique<replicator::DiskReplicator>(std::vector<disk::DiskTap*>{sim_tap.get()});
      setup.loop.disks = sim_disks.get();
    }
    int rc = RunPrimary(setup, replicator::MakeTimerDriver(*guest, topts), *target, sec);
    // The copy and the guest's writer use the disk's tap, clock and log:
    // stopped before those go.
    if (sim_tap) sim_tap->StopSync();
    guest->Stop();
    return rc;
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

// romulus replicate: the primary. Protects one guest by streaming a
// checkpoint to the backup every --interval.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/net_options.h"
#include "cli/options.h"
#include "cli/replicate_setup.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/local_disk_tap.h"
#include "replicator/disk_replicator.h"
#include "replicator/timer_driver.h"
#include "common/units.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"
#include "transport/tcp.h"

namespace romulus::cli {

namespace {
const char kCmd[] = "replicate";

// A file in $TMPDIR removed when this goes (the default simulated disk).
class TempFile {
 public:
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  Result<std::string> Create(const std::string& stem) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + stem + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    int fd = ::mkstemp(buf.data());
    if (fd < 0) return Status::FromErrno("creating a temporary file " + tmpl, errno);
    ::close(fd);
    path_ = buf.data();
    return path_;
  }

 private:
  std::string path_;
};

}  // namespace

int RunReplicate(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("guest", po::value<std::string>(),
       "simulated guest: sim:size=1G,workload=seed|sparse|hotset|sequential|idle[,disk=SIZE]")
      ("sim-disk", po::value<std::string>(),
       "the simulated guest's disk file (with disk=SIZE in --guest): created or truncated to SIZE, "
       "kept at exit; default: a temporary file removed at exit")
      ("domain", po::value<std::string>(), "Xen domain name or id to protect (needs dom0)")
      ("disk-tap", po::value<std::vector<std::string>>()->composing(),
       "with --domain: the tap socket of a `romulus disk-export` serving one of the guest's disks; its "
       "writes are replicated with the guest's memory, in the same epochs (repeat for each disk, at most 8)")
      ("to", po::value<std::string>(), "backup address HOST:PORT");
  AddSecurityOptions(&desc);
  AddReplicateTuningOptions(&desc);
  int code = 0;
  auto vm = ParseOptions(kCmd, "(--guest SPEC | --domain NAME) --to HOST:PORT --psk-file FILE [options]",
                         desc, argc, argv, &code);
  if (!vm) return code;
  if (!vm->count("to")) {
    UsageError(kCmd, "--to HOST:PORT is required (where `romulus restore` listens)");
    return kExitUsage;
  }
  if (vm->count("guest") == vm->count("domain")) {
    UsageError(kCmd, "give exactly one of --guest sim:... and --domain NAME");
    return kExitUsage;
  }
  ReplicateSetup setup;
  if (!ParseReplicateTuning(kCmd, *vm, &setup)) return kExitUsage;
  transport::HostPort target;
  if (!ParsePeerAddress(kCmd, "to", (*vm)["to"].as<std::string>(), &target)) return kExitUsage;
  auto sec = LoadSecurity(kCmd, *vm);
  if (!sec) return kExitUsage;

  std::vector<std::string> disk_taps;
  if (vm->count("disk-tap")) disk_taps = (*vm)["disk-tap"].as<std::vector<std::string>>();
  if (!disk_taps.empty() && !vm->count("domain")) {
    UsageError(kCmd, "--disk-tap is for --domain (a simulated guest's disk is disk=SIZE in --guest)");
    return kExitUsage;
  }
  if (disk_taps.size() > protocol::kMaxDisks) {
    UsageError(kCmd, "--disk-tap: at most " + std::to_string(protocol::kMaxDisks) + " disks");
    return kExitUsage;
  }
  if (vm->count("domain")) return RunReplicateXen(setup, (*vm)["domain"].as<std::string>(), disk_taps, target, sec);

  StartSignalWatcher();
  auto spec = sim::ParseSimSpec((*vm)["guest"].as<std::string>());
  if (!spec.ok()) {
    UsageError(kCmd, "--guest: " + spec.status().message());
    return kExitUsage;
  }
  if (vm->count("sim-disk") && spec->disk_bytes == 0) {
    UsageError(kCmd, "--sim-disk needs a guest with a disk (disk=SIZE in --guest)");
    return kExitUsage;
  }
  auto guest = sim::SimGuest::Create(*spec);
  if (!guest.ok()) {
    spdlog::error("cannot create the simulated guest: {}", guest.status().ToString());
    return kExitFailure;
  }
  // The simulated disk: its file, its epoch clock and the engine's log.
  // Declared before the controller runs and destroyed after it.
  TempFile temp_disk;
  disk::EpochCounter disk_clock;
  disk::EpochDiskLog disk_log(0, nullptr);
  std::unique_ptr<disk::LocalDiskTap> disk_tap;
  std::unique_ptr<replicator::DiskReplicator> disks;
  replicator::TimerDriverOptions topts{setup.progress_bar, {}};
  if (spec->disk_bytes != 0) {
    std::string path;
    if (vm->count("sim-disk")) {
      path = (*vm)["sim-disk"].as<std::string>();
    } else {
      Result<std::string> t = temp_disk.Create("romulus-sim-disk");
      if (!t.ok()) {
        spdlog::error("{}", t.status().ToString());
        return kExitFailure;
      }
      path = *t;
    }
    Status st = sim::SimGuest::CreateDiskFile(path, spec->disk_bytes);
    if (st.ok()) st = (*guest)->OpenDisk(path, &disk_clock, &disk_log);
    if (!st.ok()) {
      spdlog::error("the simulated guest's disk: {}", st.ToString());
      return kExitFailure;
    }
    disk_log.AttachStore((*guest)->disk_store());
    protocol::DiskInfo info{0, spec->disk_bytes, "xvda"};
    topts.disks = {info};
    disk_tap = std::make_unique<disk::LocalDiskTap>(info, (*guest)->disk_store(), &disk_clock, &disk_log,
                                                    (*guest)->disk_hold());
    disks = std::make_unique<replicator::DiskReplicator>(std::vector<disk::DiskTap*>{disk_tap.get()});
    setup.loop.disks = disks.get();
    spdlog::info("simulated disk xvda: {} in {}{}", FormatSize(spec->disk_bytes), path,
                 vm->count("sim-disk") ? "" : " (temporary)");
  }
  Status st = (*guest)->Start();
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return kExitFailure;
  }
  spdlog::info("simulated guest {} running", spec->ToString());
  int rc = RunPrimary(setup, replicator::MakeTimerDriver(**guest, topts), target, sec);
  // The copy and the guest's writer use the disk's clock and log: stop them
  // before they go.
  if (disk_tap) disk_tap->StopSync();
  (*guest)->Stop();
  return rc;
}

}  // namespace romulus::cli

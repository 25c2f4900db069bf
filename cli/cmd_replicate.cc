// romulus replicate: the primary. Protects one guest by streaming a
// checkpoint to the backup every --interval.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/net_options.h"
#include "cli/options.h"
#include "cli/replicate_setup.h"
#include "replicator/timer_driver.h"
#include "common/units.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"
#include "transport/tcp.h"

namespace romulus::cli {

namespace {
const char kCmd[] = "replicate";
}

int RunReplicate(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("guest", po::value<std::string>(), "simulated guest: sim:size=1G,workload=seed|sparse|hotset|sequential|idle")
      ("domain", po::value<std::string>(), "Xen domain name or id to protect (needs dom0)")
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

  if (vm->count("domain")) return RunReplicateXen(setup, (*vm)["domain"].as<std::string>(), target, sec);

  StartSignalWatcher();
  auto spec = sim::ParseSimSpec((*vm)["guest"].as<std::string>());
  if (!spec.ok()) {
    UsageError(kCmd, "--guest: " + spec.status().message());
    return kExitUsage;
  }
  auto guest = sim::SimGuest::Create(*spec);
  if (!guest.ok()) {
    spdlog::error("cannot create the simulated guest: {}", guest.status().ToString());
    return kExitFailure;
  }
  Status st = (*guest)->Start();
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return kExitFailure;
  }
  spdlog::info("simulated guest {} running", spec->ToString());
  return RunPrimary(setup, replicator::MakeTimerDriver(**guest, {setup.progress_bar}), target, sec);
}

}  // namespace romulus::cli

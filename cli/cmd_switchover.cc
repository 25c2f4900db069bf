// romulus switchover: planned handover from the primary to the backup with
// no lost epoch (maintenance of the primary host).
//
// Through the primary's control socket: the primary takes a final
// checkpoint and leaves its guest PAUSED, waits for the backup's ack of it,
// releases its output, and ends the session with BYE reason "handover"; the
// backup, on that BYE, activates the guest from exactly that epoch (running
// its fence command first, like any activation), and the primary process
// exits. With --backup-socket we also wait until the backup reports the
// guest activated at the final epoch.
//
// --reverse (replicate back from the new primary to the old host) is not
// implemented: start `romulus replicate` on the new primary by hand.
#include <iostream>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spawn.h"
#include "replicator/control.h"

namespace romulus::cli {

namespace {
const char kCmd[] = "switchover";
using std::chrono::milliseconds;
}  // namespace

int RunSwitchover(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("socket", po::value<std::string>(), "the primary's control socket")
      ("backup-socket", po::value<std::string>(), "the backup's control socket: wait until it has activated")
      ("timeout", po::value<std::string>()->default_value("60s"), "give up after this long")
      ("json", po::bool_switch(), "one JSON object on stdout")
      ("reverse", po::bool_switch(), "not implemented: replicate back afterwards");
  int code = 0;
  auto vm = ParseOptions(kCmd, "--socket PRIMARY.sock [--backup-socket BACKUP.sock]", desc, argc, argv, &code);
  if (!vm) return code;
  if (!vm->count("socket")) {
    UsageError(kCmd, "--socket PRIMARY.sock is required");
    return kExitUsage;
  }
  if ((*vm)["reverse"].as<bool>()) {
    UsageError(kCmd, "--reverse is not implemented yet: after the switchover, run `romulus replicate` on the new "
                     "primary towards a `romulus restore` on the old host");
    return kExitUsage;
  }
  std::chrono::microseconds timeout{};
  if (!GetDuration(kCmd, *vm, "timeout", &timeout)) return kExitUsage;
  const auto tmo = std::chrono::duration_cast<milliseconds>(timeout);
  const std::string psock = (*vm)["socket"].as<std::string>();
  const std::string bsock = vm->count("backup-socket") ? (*vm)["backup-socket"].as<std::string>() : "";

  auto st = replicator::ControlCall(psock, "status", milliseconds(10000));
  if (!st.ok()) {
    std::cerr << "romulus switchover: primary: " << st.status().message() << "\n";
    return kExitFailure;
  }
  if (JsonField(*st, "role") != "primary") {
    std::cerr << "romulus switchover: " << psock << " is not a primary's control socket\n";
    return kExitUsage;
  }
  if (JsonField(*st, "protection") != "PROTECTED") {
    std::cerr << "romulus switchover: the primary is " << JsonField(*st, "protection")
              << ": no backup holds its current epoch; refusing\n";
    return kExitFailure;
  }
  auto reply = replicator::ControlCall(psock, "switchover", tmo + milliseconds(5000));
  if (!reply.ok()) {
    std::cerr << "romulus switchover: " << reply.status().message() << "\n";
    return kExitFailure;
  }
  if (reply->rfind("{\"ok\":true", 0) != 0) {
    std::cerr << "romulus switchover: " << JsonField(*reply, "error") << "\n";
    return kExitFailure;
  }
  const long long final_epoch = std::atoll(JsonField(*reply, "final_epoch").c_str());
  long long backup_epoch = -1;
  std::string backup_state = "not asked";
  bool ok = true;
  if (!bsock.empty()) {
    // The backup activates on the BYE; it may exit right after (no
    // --run-after-failover), taking its socket with it.
    ok = false;
    auto until = std::chrono::steady_clock::now() + tmo;
    while (std::chrono::steady_clock::now() < until) {
      auto b = replicator::ControlCall(bsock, "status", milliseconds(5000));
      if (!b.ok()) {
        backup_state = "gone before it could be asked (" + b.status().message() + ")";
        break;
      }
      backup_state = JsonField(*b, "state");
      backup_epoch = std::atoll(JsonField(*b, "committed_epoch").c_str());
      if (backup_state == "activated" || backup_state == "stopped") {
        ok = backup_state == "activated" && backup_epoch == final_epoch;
        break;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
  }
  if ((*vm)["json"].as<bool>()) {
    std::cout << "{\"final_epoch\":" << final_epoch << ",\"backup_state\":" << replicator::JsonString(backup_state)
              << ",\"backup_epoch\":" << backup_epoch << ",\"lost_epochs\":"
              << (backup_epoch >= 0 ? final_epoch - backup_epoch : -1) << ",\"ok\":" << (ok ? "true" : "false")
              << "}\n";
  } else {
    std::cout << "switchover: the primary took final checkpoint " << final_epoch
              << " with its guest paused and handed over\n";
    if (!bsock.empty()) {
      std::cout << "  backup: " << backup_state << (backup_epoch >= 0 ? " at epoch " + std::to_string(backup_epoch) : "")
                << (ok ? " -- no epoch lost" : " -- NOT the final epoch") << "\n";
    }
  }
  return ok ? kExitOk : kExitFailure;
}

}  // namespace romulus::cli

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
// --reverse HOST:PORT (needs --backup-socket): before the handover the
// backup is told `set reverse-to HOST:PORT`, so once it has activated the
// guest it becomes its primary and replicates it to HOST:PORT, where the
// operator runs a `romulus restore --listen` on the old host (we do not start
// it). Its control socket is then replaced by a primary's on the same path;
// we give that primary the old primary's checkpoint interval (the rest of
// its tuning is replicate's defaults) and wait until it answers PROTECTED.
#include <iostream>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spawn.h"
#include "common/units.h"
#include "replicator/control.h"
#include "transport/tcp.h"

namespace romulus::cli {

namespace {
const char kCmd[] = "switchover";
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
}  // namespace

int RunSwitchover(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("socket", po::value<std::string>(), "the primary's control socket")
      ("backup-socket", po::value<std::string>(), "the backup's control socket: wait until it has activated")
      ("timeout", po::value<std::string>()->default_value("60s"), "give up waiting for the handover after this long")
      ("reverse-timeout", po::value<std::string>(),
       "with --reverse: give up waiting for the reverse replication to be PROTECTED after this long (its first "
       "epoch carries the whole guest; default: --timeout)")
      ("json", po::bool_switch(), "one JSON object on stdout")
      ("reverse", po::value<std::string>(),
       "HOST:PORT: afterwards the new primary replicates the guest back to a `romulus restore --listen HOST:PORT` "
       "that you started on the old host (needs --backup-socket)");
  int code = 0;
  auto vm = ParseOptions(kCmd, "--socket PRIMARY.sock [--backup-socket BACKUP.sock [--reverse HOST:PORT]]", desc,
                         argc, argv, &code);
  if (!vm) return code;
  if (!vm->count("socket")) {
    UsageError(kCmd, "--socket PRIMARY.sock is required");
    return kExitUsage;
  }
  std::chrono::microseconds timeout{};
  if (!GetDuration(kCmd, *vm, "timeout", &timeout) ||
      !CheckRange(kCmd, "timeout", static_cast<double>(timeout.count()), 1e6, 86400e6, "1s", "24h")) {
    return kExitUsage;
  }
  const auto tmo = std::chrono::duration_cast<milliseconds>(timeout);
  std::chrono::microseconds reverse_timeout = timeout;
  if (vm->count("reverse-timeout")) {
    if (!vm->count("reverse")) {
      UsageError(kCmd, "--reverse-timeout needs --reverse HOST:PORT");
      return kExitUsage;
    }
    if (!GetDuration(kCmd, *vm, "reverse-timeout", &reverse_timeout) ||
        !CheckRange(kCmd, "reverse-timeout", static_cast<double>(reverse_timeout.count()), 1e6, 86400e6, "1s",
                    "24h")) {
      return kExitUsage;
    }
  }
  const auto reverse_tmo = std::chrono::duration_cast<milliseconds>(reverse_timeout);
  const std::string psock = (*vm)["socket"].as<std::string>();
  const std::string bsock = vm->count("backup-socket") ? (*vm)["backup-socket"].as<std::string>() : "";
  const std::string reverse = vm->count("reverse") ? (*vm)["reverse"].as<std::string>() : "";
  if (vm->count("reverse")) {
    // The reverse is configured and watched through the backup's socket.
    if (bsock.empty()) {
      UsageError(kCmd, "--reverse needs --backup-socket BACKUP.sock (the new primary is set up through it)");
      return kExitUsage;
    }
    auto hp = transport::ParseHostPort(reverse);
    if (!hp.ok() || hp->host.empty() || hp->host == "*" || hp->port == 0) {
      UsageError(kCmd, "--reverse: '" + reverse + "' is not HOST:PORT of a `romulus restore --listen` to connect to" +
                           (hp.ok() ? "" : " (" + hp.status().message() + ")"));
      return kExitUsage;
    }
  }

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
  std::string previous_reverse;  // the backup's own reverse_to (e.g. from --reverse-to), "" = none
  if (!reverse.empty()) {
    // Before the handover: if the backup cannot take the reverse (wrong
    // socket, --xen, too old), nothing has happened yet and we stop here.
    auto b = replicator::ControlCall(bsock, "status", milliseconds(10000));
    if (!b.ok() || JsonField(*b, "role") != "backup") {
      std::cerr << "romulus switchover: " << bsock << " is not a backup's control socket"
                << (b.ok() ? "" : " (" + b.status().message() + ")") << "; nothing was handed over\n";
      return kExitFailure;
    }
    previous_reverse = JsonField(*b, "reverse_to");
    auto r = replicator::ControlCall(bsock, "set reverse-to " + reverse, milliseconds(10000));
    if (!r.ok() || r->rfind("{\"ok\":true", 0) != 0) {
      std::cerr << "romulus switchover: the backup refused `set reverse-to " << reverse
                << "`: " << (r.ok() ? JsonField(*r, "error") : r.status().message()) << "; nothing was handed over\n";
      return kExitFailure;
    }
  }
  auto reply = replicator::ControlCall(psock, "switchover", tmo + milliseconds(5000));
  if (!reply.ok()) {
    std::cerr << "romulus switchover: " << reply.status().message() << "\n";
    return kExitFailure;
  }
  if (reply->rfind("{\"ok\":true", 0) != 0) {
    std::cerr << "romulus switchover: " << JsonField(*reply, "error") << "\n";
    if (!reverse.empty()) {
      // Not handed over: put the backup's reverse setting back as it was, so
      // that a later unplanned failover does not act on our request.
      (void)replicator::ControlCall(bsock, "set reverse-to " + (previous_reverse.empty() ? "none" : previous_reverse),
                                    milliseconds(5000));
    }
    return kExitFailure;
  }
  const long long final_epoch = std::atoll(JsonField(*reply, "final_epoch").c_str());
  long long backup_epoch = -1;
  std::string backup_state = "not asked";
  bool ok = true;
  if (!bsock.empty()) {
    // The backup activates on the BYE; it may exit right after (no
    // --run-after-failover), taking its socket with it. With --reverse its
    // socket is replaced by the new primary's, possibly before we see
    // "activated": then the primary's `activated_from_epoch` tells the epoch,
    // and a missing or refusing socket is the replacement in progress.
    ok = false;
    auto until = Clock::now() + tmo;
    while (Clock::now() < until) {
      auto b = replicator::ControlCall(bsock, "status", milliseconds(5000));
      if (!b.ok()) {
        backup_state = "gone before it could be asked (" + b.status().message() + ")";
        if (!reverse.empty()) {
          std::this_thread::sleep_for(milliseconds(50));
          continue;
        }
        break;
      }
      if (!reverse.empty() && JsonField(*b, "role") == "primary") {
        backup_state = "activated";
        backup_epoch = std::atoll(JsonField(*b, "activated_from_epoch").c_str());
        ok = backup_epoch == final_epoch;
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
  // The reverse replication: the new primary connects to the old host and
  // sends it the whole guest first, so this wait has its own time limit.
  std::string rev_protection = "not started";
  long long rev_epoch = -1;
  bool rev_ok = reverse.empty();
  long long rev_interval_us = -1;
  if (ok && !reverse.empty()) {
    // The operator chose the old primary's interval for this guest; the new
    // primary starts with replicate's default, so carry it over (live, from
    // its next epoch). Not the cache size: the old host's restore may have a
    // smaller --max-cache-size than this backup had.
    const std::string old_interval_us = JsonField(*st, "interval_us");
    bool interval_set = old_interval_us.empty();
    auto until = Clock::now() + reverse_tmo;
    while (Clock::now() < until) {
      auto p = replicator::ControlCall(bsock, "status", milliseconds(5000));
      if (p.ok() && JsonField(*p, "role") == "primary") {
        if (!interval_set) {
          interval_set = true;  // once: on failure warn, and go on with the default interval
          auto r = replicator::ControlCall(bsock, "set interval " + old_interval_us + "us", milliseconds(5000));
          if (!r.ok() || r->rfind("{\"ok\":true", 0) != 0) {
            std::cerr << "romulus switchover: warning: could not give the new primary the old interval ("
                      << (r.ok() ? JsonField(*r, "error") : r.status().message()) << ")\n";
          }
          continue;  // ask status again: it then shows the interval in force
        }
        rev_interval_us = std::atoll(JsonField(*p, "interval_us").c_str());
        rev_protection = JsonField(*p, "protection");
        rev_epoch = std::atoll(JsonField(*p, "last_acked").c_str());
        if (rev_protection == "PROTECTED") {
          rev_ok = true;
          break;
        }
      } else if (!p.ok()) {
        rev_protection = "no answer (" + p.status().message() + ")";
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  }
  if ((*vm)["json"].as<bool>()) {
    std::cout << "{\"final_epoch\":" << final_epoch << ",\"backup_state\":" << replicator::JsonString(backup_state)
              << ",\"backup_epoch\":" << backup_epoch << ",\"lost_epochs\":"
              << (backup_epoch >= 0 ? final_epoch - backup_epoch : -1);
    if (!reverse.empty()) {
      std::cout << ",\"reverse_to\":" << replicator::JsonString(reverse)
                << ",\"reverse_protection\":" << replicator::JsonString(rev_protection)
                << ",\"reverse_epoch\":" << rev_epoch << ",\"reverse_interval_us\":" << rev_interval_us;
    }
    std::cout << ",\"ok\":" << (ok && rev_ok ? "true" : "false") << "}\n";
  } else {
    std::cout << "switchover: the primary took final checkpoint " << final_epoch
              << " with its guest paused and handed over\n";
    if (!bsock.empty()) {
      std::cout << "  backup: " << backup_state << (backup_epoch >= 0 ? " at epoch " + std::to_string(backup_epoch) : "")
                << (ok ? " -- no epoch lost" : " -- NOT the final epoch") << "\n";
    }
    if (!reverse.empty() && rev_ok) {
      std::cout << "  replicating back to " << reverse << ": PROTECTED at epoch " << rev_epoch << "\n";
    }
  }
  if (ok && !rev_ok) {
    std::cerr << "romulus switchover: the guest runs on the new primary (activated at epoch " << backup_epoch
              << ") but is NOT protected: replicating back to " << reverse << " did not become PROTECTED within "
              << FormatDuration(reverse_timeout) << " (last seen: " << rev_protection
              << "). Is `romulus restore --listen " << reverse
              << "` running on the old host with the same key? The new primary keeps retrying.\n";
  }
  return ok && rev_ok ? kExitOk : kExitFailure;
}

}  // namespace romulus::cli

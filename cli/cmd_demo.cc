// romulus demo: a replicated guest and a failover, in one command.
//
// Runs the real programs as separate processes over loopback TLS (a fresh
// pre-shared key): `romulus restore` as the backup, `romulus replicate` with
// a simulated guest as the primary. After --run it kills the primary with
// SIGKILL — a crash, not a clean stop — waits for the backup to notice and
// fail over, then proves with `romulus verify` that the backup resumed from
// an exact checkpoint, and prints what happened.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spawn.h"
#include "common/units.h"
#include "transport/security.h"

namespace romulus::cli {

namespace {

const char kCmd[] = "demo";
using Clock = std::chrono::steady_clock;

}  // namespace

int RunDemo(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("guest", po::value<std::string>()->default_value("sim:size=256M,workload=hotset"), "simulated guest")
      ("interval", po::value<std::string>()->default_value("50ms"), "checkpoint interval")
      ("run", po::value<std::string>()->default_value("8s"), "replicate this long, then crash the primary")
      ("port", po::value<int>()->default_value(0), "loopback port (0 = pick one)")
      ("dir", po::value<std::string>(), "keep the key, image, logs and stats here (default: a temp dir)");
  int code = 0;
  auto vm = ParseOptions(kCmd, "[--guest SPEC] [--interval 50ms] [--run 8s]", desc, argc, argv, &code);
  if (!vm) return code;
  std::chrono::microseconds run{};
  if (!GetDuration(kCmd, *vm, "run", &run)) return kExitUsage;
  if (!CheckRange(kCmd, "run", run.count(), 1e6, 3600e6, "1s", "1h")) return kExitUsage;
  if (!CheckRange(kCmd, "port", (*vm)["port"].as<int>(), 0, 65535, "0", "65535")) return kExitUsage;
  std::string dir;
  if (vm->count("dir")) {
    dir = (*vm)["dir"].as<std::string>();
    mkdir(dir.c_str(), 0700);
  } else {
    char tmpl[] = "/tmp/romulus-demo-XXXXXX";
    if (!mkdtemp(tmpl)) {
      spdlog::error("cannot create a temp dir: {}", std::strerror(errno));
      return kExitFailure;
    }
    dir = tmpl;
  }
  int port = (*vm)["port"].as<int>();
  if (port == 0) port = 20000 + static_cast<int>(getpid() % 20000);
  const std::string self = SelfExe(), key = dir + "/psk.key", image = dir + "/backup.img",
                    events = dir + "/events.json", stats = dir + "/stats.json";
  unlink(key.c_str());
  Status st = transport::WritePskFile(key);
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return kExitFailure;
  }
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  std::printf("romulus demo: %s replicated to a backup over TLS 1.3 (PSK) on %s, checkpoint every %s\n",
              (*vm)["guest"].as<std::string>().c_str(), addr.c_str(), (*vm)["interval"].as<std::string>().c_str());
  std::printf("  files in %s\n\n", dir.c_str());

  pid_t backup = Spawn({self, "restore", "--listen", addr, "--psk-file", key, "--image", image, "--start-over",
                        "--events-json", events, "--run-after-failover", "2s",
                        // One host: the demo's own kill of the primary is the fence.
                        "--no-fence"},
                       dir + "/backup.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  pid_t primary = Spawn({self, "replicate", "--guest", (*vm)["guest"].as<std::string>(), "--to", addr,
                         "--psk-file", key, "--interval", (*vm)["interval"].as<std::string>(), "--stats-json",
                         stats,
                         // Both ends share this machine's cores and disk: on a busy
                         // laptop one journaled commit can outlast the 1 s default.
                         "--ack-timeout", "5s"},
                        dir + "/primary.log");
  if (backup < 0 || primary < 0) {
    spdlog::error("cannot start the backup or the primary");
    if (backup > 0) kill(backup, SIGKILL);
    if (primary > 0) kill(primary, SIGKILL);
    return kExitFailure;
  }

  // The run counts from the first acked checkpoint (after the full sync).
  std::printf("  initial synchronisation...\n");
  std::fflush(stdout);
  auto sync_deadline = Clock::now() + std::chrono::minutes(5);
  while (LastLineWith(stats, "\"acked\":true").empty()) {
    int st2 = 0;
    if (Clock::now() > sync_deadline || waitpid(primary, &st2, WNOHANG) == primary ||
        waitpid(backup, &st2, WNOHANG) == backup) {
      kill(primary, SIGKILL);
      kill(backup, SIGKILL);
      std::printf("romulus demo: FAIL: no checkpoint was acked (see %s/primary.log and backup.log)\n", dir.c_str());
      return kExitFailure;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf("  protected: the backup holds a complete checkpoint\n");

  // Live view: one line per second from the primary's stats.
  auto until = Clock::now() + run;
  while (Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    std::string line = LastLineWith(stats, "\"epoch\"");
    {
      std::printf("  epoch %-5s pause %6.2f ms  dirty %6s pages  %7s B/page on the wire  ack %6.2f ms  %s\n",
                  JsonField(line, "epoch").c_str(), std::atof(JsonField(line, "pause_us").c_str()) / 1e3,
                  JsonField(line, "dirty_pages").c_str(), JsonField(line, "wire_bytes_per_page").c_str(),
                  std::atof(JsonField(line, "ack_latency_us").c_str()) / 1e3,
                  JsonField(line, "acked") == "true" ? "acked" : "NOT acked");
    }
    std::fflush(stdout);
  }

  std::string last_acked = LastLineWith(stats, "\"acked\":true");
  std::printf("\n  crashing the primary (SIGKILL) after epoch %s...\n", JsonField(last_acked, "epoch").c_str());
  const long long kill_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch()).count();
  kill(primary, SIGKILL);
  int status = 0;
  waitpid(primary, &status, 0);
  bool exited = WaitExit(backup, std::chrono::seconds(30), &status);
  if (!exited) {
    kill(backup, SIGKILL);
    waitpid(backup, &status, 0);
    std::printf("romulus demo: FAIL: the backup did not fail over within 30 s (see %s/backup.log)\n", dir.c_str());
    return kExitFailure;
  }
  std::string fo = LastLineWith(events, "\"failover\"");
  const long long failover_ms = std::atoll(JsonField(fo, "time_ms").c_str()) - kill_ms;
  std::printf("  backup failed over: %s\n", JsonField(fo, "reason").c_str());
  std::printf("  resumed from epoch %s (digest %s), activated %lld ms after the crash\n",
              JsonField(fo, "last_committed_epoch").c_str(), JsonField(fo, "digest").c_str(),
              static_cast<long long>(failover_ms));
  std::string resumed = LastLineWith(dir + "/backup.log", "resumed guest ran");
  if (!resumed.empty()) std::printf("  %s\n", resumed.substr(resumed.find("resumed guest")).c_str());

  pid_t verify = Spawn({self, "verify", "--image", image}, dir + "/verify.log");
  int vstatus = 0;
  waitpid(verify, &vstatus, 0);
  std::string verdict = LastLineWith(dir + "/verify.log", "checkpoint");
  std::printf("  verify: %s\n", verdict.c_str());
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && WIFEXITED(vstatus) && WEXITSTATUS(vstatus) == 0 &&
                  JsonField(fo, "digest") == JsonField(LastLineWith(events, "\"epoch\":" + JsonField(fo, "last_committed_epoch") + ","), "digest");
  std::printf("\nromulus demo: %s\n", ok ? "PASS: the backup resumed the guest from its last complete checkpoint"
                                        : "FAIL (see the logs above)");
  return ok ? kExitOk : kExitFailure;
}

}  // namespace romulus::cli

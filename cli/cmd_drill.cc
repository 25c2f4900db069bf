// romulus drill: failover drills with real processes on loopback.
//
//   romulus drill --kill-at PHASE [--epoch N] | --all      kill drills
//   romulus drill verify --socket P.sock --backup-socket B.sock
//
// A kill drill runs `romulus restore` and `romulus replicate --kill-at
// PHASE:N` (fresh PSK, TLS over 127.0.0.1), waits for the primary to die
// and the backup to fail over, and checks:
//   - the primary's stats end at acked epoch N-1 (its stats line for N is
//     written after the epoch, so the kill always comes first);
//   - the backup resumed from exactly the right epoch: N-1 for s, s2, r, r2
//     and m (nothing or only part of N reached it: the partial epoch is
//     discarded), N for c (EPOCH_END N was written before the kill: the
//     whole epoch is in the backup's socket, it verifies and commits N — the
//     ack is simply never read) and c2 (ack N arrived, the stats line not
//     yet written). Both N-1 and N are consistent with the outside world in
//     c (N's output is released only on ack N); on loopback no bytes are
//     lost, so each phase has one exact answer;
//   - the failover digest is the digest the backup committed for that epoch;
//   - `romulus verify` proves the image is exactly that checkpoint;
// and reports the failover time: the primary's "killing" log line to the
// backup's failover event (both wall clock, same host).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spawn.h"
#include "common/thread_name.h"
#include "replicator/control.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "transport/security.h"

namespace romulus::cli {

namespace {

const char kCmd[] = "drill";
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct DrillResult {
  std::string phase;
  bool passed = false;
  long long acked = -1, want = -1, backup_epoch = -1, verify_epoch = -1;
  long long failover_ms = -1;
  std::string digest, problem;
};

bool WaitForLine(const std::string& path, const std::string& needle, pid_t pid, milliseconds timeout) {
  auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    if (!LastLineWith(path, needle).empty()) return true;
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

DrillResult RunOne(const std::string& self, const std::string& dir, const std::string& key, const std::string& phase,
                   uint64_t epoch, const std::string& guest, const std::string& interval) {
  DrillResult r;
  r.phase = phase;
  const std::string d = dir + "/" + phase;
  mkdir(d.c_str(), 0700);
  const std::string img = d + "/backup.img", events = d + "/events.json", stats = d + "/stats.json",
                    blog = d + "/backup.log", plog = d + "/primary.log";
  unlink(events.c_str());
  unlink(stats.c_str());
  const int port = FreeLoopbackPort();
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  auto fail = [&](const std::string& why) {
    r.problem = why + " (logs in " + d + ")";
    return r;
  };
  pid_t backup = Spawn({self, "restore", "--listen", addr, "--psk-file", key, "--image", img, "--start-over",
                        "--events-json", events, "--failover-timeout", "1s",
                        // The drill kills the primary itself: that is the fence.
                        "--no-fence"},
                       blog);
  if (backup < 0) return fail("cannot start the backup");
  if (!WaitForLine(blog, "backup listening on", backup, seconds(60))) {
    KillAndReap(backup);
    return fail("the backup did not start listening");
  }
  pid_t primary = Spawn({self, "replicate", "--guest", guest, "--to", addr, "--psk-file", key, "--interval",
                         interval, "--stats-json", stats, "--kill-at", phase + ":" + std::to_string(epoch),
                         "--control-socket", "none"},
                        plog);
  if (primary < 0) {
    KillAndReap(backup);
    return fail("cannot start the primary");
  }
  int pst = 0, bst = 0;
  if (!WaitExit(primary, std::chrono::minutes(5), &pst)) {
    KillAndReap(primary);
    KillAndReap(backup);
    return fail("the primary did not reach the kill-point within 5 min");
  }
  if (!WIFSIGNALED(pst) || WTERMSIG(pst) != SIGKILL) {
    KillAndReap(backup);
    return fail("the primary ended without being killed (exit " +
                std::to_string(WIFEXITED(pst) ? WEXITSTATUS(pst) : -1) + ")");
  }
  if (!WaitExit(backup, seconds(60), &bst)) {
    KillAndReap(backup);
    return fail("the backup did not fail over within 60 s of the kill");
  }
  const std::string kill_line = LastLineWith(plog, "drill: killing the primary");
  const std::string fo = LastLineWith(events, "\"failover\"");
  r.acked = std::atoll(JsonField(LastLineWith(stats, "\"acked\":true"), "epoch").c_str());
  if (LastLineWith(stats, "\"acked\":true").empty()) r.acked = -1;
  const bool ahead = phase == "c" || phase == "c2" || phase == "before-commit" || phase == "after-commit";
  r.want = static_cast<long long>(epoch) - (ahead ? 0 : 1);
  if (fo.empty()) return fail("no failover event (backup exit " + std::to_string(WIFEXITED(bst) ? WEXITSTATUS(bst) : -1) + ")");
  r.backup_epoch = std::atoll(JsonField(fo, "last_committed_epoch").c_str());
  r.digest = JsonField(fo, "digest");
  long long kill_ms = LogLineTimeMs(kill_line);
  long long fo_ms = std::atoll(JsonField(fo, "time_ms").c_str());
  if (kill_ms > 0 && fo_ms > 0) r.failover_ms = fo_ms - kill_ms;
  const std::string commit = LastLineWith(events, "\"epoch\":" + std::to_string(r.backup_epoch) + ",");
  std::string vlog = d + "/verify.log";
  unlink(vlog.c_str());
  int vrc = RunToExit({self, "verify", "--image", img, "--json"}, vlog);
  r.verify_epoch = std::atoll(JsonField(LastLineWith(vlog, "\"match\""), "epoch").c_str());

  if (r.acked != static_cast<long long>(epoch) - 1) {
    return fail("primary's stats end at acked epoch " + std::to_string(r.acked) + ", expected " +
                std::to_string(epoch - 1));
  }
  if (!WIFEXITED(bst) || WEXITSTATUS(bst) != 0) return fail("backup exit status is not 0");
  if (JsonField(fo, "activated") != "true") return fail("the backup did not activate the guest");
  if (r.backup_epoch != r.want) {
    return fail("backup resumed from epoch " + std::to_string(r.backup_epoch) + ", expected exactly " +
                std::to_string(r.want));
  }
  if (commit.empty() || JsonField(commit, "digest") != r.digest) {
    return fail("failover digest " + r.digest + " is not the digest committed for epoch " +
                std::to_string(r.backup_epoch));
  }
  if (r.backup_epoch <= r.acked) {
    const std::string pline = LastLineWith(stats, "\"epoch\":" + std::to_string(r.backup_epoch) + ",");
    if (JsonField(pline, "digest") != r.digest) return fail("the primary's digest of that epoch differs");
  }
  if (vrc != 0 || r.verify_epoch != r.backup_epoch) {
    return fail("romulus verify failed (exit " + std::to_string(vrc) + ", epoch " + std::to_string(r.verify_epoch) + ")");
  }
  r.passed = true;
  unlink(img.c_str());
  return r;
}

std::string ResultJson(const DrillResult& r) {
  std::ostringstream o;
  o << "{\"phase\":\"" << r.phase << "\",\"passed\":" << (r.passed ? "true" : "false") << ",\"acked\":" << r.acked
    << ",\"want_epoch\":" << r.want << ",\"backup_epoch\":" << r.backup_epoch << ",\"digest\":\"" << r.digest
    << "\",\"verify_epoch\":" << r.verify_epoch << ",\"failover_ms\":" << r.failover_ms
    << ",\"problem\":" << replicator::JsonString(r.problem) << "}";
  return o.str();
}

// ---- drill verify ----

struct Digest {
  bool ok = false;
  std::string error, digest;
  std::vector<std::string> regions;
  std::string raw;
};

Digest AskDigest(const std::string& sock, uint64_t epoch, uint32_t regions) {
  Digest d;
  auto r = replicator::ControlCall(sock, "digest " + std::to_string(epoch) + " " + std::to_string(regions),
                                   milliseconds(60000));
  if (!r.ok()) {
    d.error = r.status().message();
    return d;
  }
  d.raw = *r;
  if (r->rfind("{\"ok\":true", 0) != 0) {
    d.error = JsonField(*r, "error");
    return d;
  }
  d.ok = true;
  d.digest = JsonField(*r, "digest");
  auto p = r->find("\"regions\":[");
  if (p != std::string::npos) {
    std::string list = r->substr(p + 11, r->find(']', p) - p - 11);
    std::string cur;
    for (char c : list) {
      if (c == ',') {
        d.regions.push_back(cur);
        cur.clear();
      } else if (c != '"') {
        cur += c;
      }
    }
    if (!cur.empty()) d.regions.push_back(cur);
  }
  return d;
}

int RunDrillVerify(int argc, char** argv) {
  const std::string cmd = "drill verify";
  po::options_description desc("Options");
  desc.add_options()
      ("socket", po::value<std::string>(), "the primary's control socket")
      ("backup-socket", po::value<std::string>(), "the backup's control socket")
      ("regions", po::value<std::string>()->default_value("16"), "compare this many per-region digests (1..4096)")
      ("ahead", po::value<std::string>()->default_value("5"), "compare at the epoch this many after the last acked one")
      ("json", po::bool_switch(), "one JSON object on stdout");
  int code = 0;
  auto vm = ParseOptions(cmd, "--socket PRIMARY.sock --backup-socket BACKUP.sock [--regions 16]", desc, argc, argv,
                         &code);
  if (!vm) return code;
  if (!vm->count("socket") || !vm->count("backup-socket")) {
    UsageError(cmd, "--socket PRIMARY.sock and --backup-socket BACKUP.sock are required");
    return kExitUsage;
  }
  // Parsed as text: Boost wraps a negative number given to an unsigned option.
  uint64_t regions64 = 0, ahead64 = 0;
  if (!GetCount(cmd, *vm, "regions", 1, 4096, &regions64) || !GetCount(cmd, *vm, "ahead", 1, 1000, &ahead64)) {
    return kExitUsage;
  }
  const uint32_t regions = static_cast<uint32_t>(regions64), ahead = static_cast<uint32_t>(ahead64);
  const std::string psock = (*vm)["socket"].as<std::string>(), bsock = (*vm)["backup-socket"].as<std::string>();
  // Both sides answer at the boundary of the same future epoch N: the
  // primary right after N's ack, the backup right after committing N, each
  // from its own per-page hashes. Registering both requests before N
  // happens is what makes the comparison exact; if we were too slow (an
  // answer says "already passed"), try again further ahead.
  for (uint32_t attempt = 0, a = ahead; attempt < 4; ++attempt, a *= 2) {
    auto st = replicator::ControlCall(psock, "status", milliseconds(10000));
    if (!st.ok()) {
      std::cerr << "romulus drill verify: primary: " << st.status().message() << "\n";
      return kExitFailure;
    }
    if (JsonField(*st, "role") != "primary") {
      std::cerr << "romulus drill verify: " << psock << " is not a primary's control socket\n";
      return kExitUsage;
    }
    if (JsonField(*st, "paused") == "true") {
      std::cerr << "romulus drill verify: the primary is paused: resume it first (no epochs to compare at)\n";
      return kExitFailure;
    }
    // A Xen backup has no image to split into regions: its one digest per
    // epoch is the stream digest (docs/CONTROL.md), unless --regions says
    // otherwise (which it then refuses, clearly).
    const uint32_t want_regions = JsonField(*st, "backend") == "xen" && (*vm)["regions"].defaulted() ? 1 : regions;
    long long acked = std::atoll(JsonField(*st, "last_acked").c_str());
    if (acked < 1) {
      std::cerr << "romulus drill verify: the primary is not protected yet (no acked epoch)\n";
      return kExitFailure;
    }
    const uint64_t n = static_cast<uint64_t>(acked) + a;
    auto ask = [want_regions, n](const char* name, std::string sock) {
      NameThisThread(name);
      return AskDigest(sock, n, want_regions);
    };
    auto fb = std::async(std::launch::async, ask, "ask-backup", bsock);
    auto fp = std::async(std::launch::async, ask, "ask-primary", psock);
    Digest b = fb.get(), p = fp.get();
    if (!p.ok || !b.ok) {
      const std::string err = !p.ok ? "primary: " + p.error : "backup: " + b.error;
      if (err.find("already passed") != std::string::npos) continue;
      std::cerr << "romulus drill verify: " << err << "\n";
      return kExitFailure;
    }
    std::vector<size_t> differ;
    for (size_t i = 0; i < std::max(p.regions.size(), b.regions.size()); ++i) {
      if (i >= p.regions.size() || i >= b.regions.size() || p.regions[i] != b.regions[i]) differ.push_back(i);
    }
    const bool match = p.digest == b.digest && differ.empty() && p.regions.size() == want_regions;
    if ((*vm)["json"].as<bool>()) {
      std::cout << "{\"epoch\":" << n << ",\"primary_digest\":\"" << p.digest << "\",\"backup_digest\":\""
                << b.digest << "\",\"regions\":" << want_regions << ",\"differing_regions\":[";
      for (size_t i = 0; i < differ.size(); ++i) std::cout << (i ? "," : "") << differ[i];
      std::cout << "],\"match\":" << (match ? "true" : "false") << "}\n";
    } else {
      std::printf("epoch %llu: primary %s, backup %s, %u regions: %s\n", static_cast<unsigned long long>(n),
                  p.digest.c_str(), b.digest.c_str(), want_regions,
                  match ? "MATCH" : ("MISMATCH in " + std::to_string(differ.size()) + " region(s)").c_str());
      for (size_t i : differ) {
        std::printf("  region %zu: primary %s, backup %s\n", i, i < p.regions.size() ? p.regions[i].c_str() : "-",
                    i < b.regions.size() ? b.regions[i].c_str() : "-");
      }
    }
    return match ? kExitOk : kExitFailure;
  }
  std::cerr << "romulus drill verify: could not register both requests before the epoch passed; retry with "
               "a larger --ahead\n";
  return kExitFailure;
}

}  // namespace

int RunDrill(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "verify") return RunDrillVerify(argc - 1, argv + 1);
  po::options_description desc("Options");
  desc.add_options()
      ("kill-at", po::value<std::string>(), "phase to kill the primary at: s, s2, r, r2, m, c, c2")
      ("all", po::bool_switch(), "run every phase (s s2 r r2 m c c2) and print a table")
      ("epoch", po::value<std::string>()->default_value("15"), "kill in this epoch (>= 3)")
      ("guest", po::value<std::string>()->default_value("sim:size=64M,workload=seed"), "simulated guest")
      ("interval", po::value<std::string>()->default_value("50ms"), "checkpoint interval")
      ("dir", po::value<std::string>(), "keep key, images, logs and stats here (default: a temp dir)")
      ("json", po::bool_switch(), "one JSON object per drill on stdout instead of the table");
  int code = 0;
  auto vm = ParseOptions(kCmd,
                         "(--kill-at PHASE | --all) [--epoch N] [--guest SPEC] [--interval 50ms] [--json]\n"
                         "       romulus drill verify --socket PRIMARY.sock --backup-socket BACKUP.sock",
                         desc, argc, argv, &code);
  if (!vm) return code;
  std::vector<std::string> phases;
  const bool all = (*vm)["all"].as<bool>();
  if (all == (vm->count("kill-at") > 0)) {
    UsageError(kCmd, "give exactly one of --kill-at PHASE and --all");
    return kExitUsage;
  }
  if (all) {
    phases = {"s", "s2", "r", "r2", "m", "c", "c2"};
  } else {
    replicator::Phase p;
    const std::string ph = (*vm)["kill-at"].as<std::string>();
    if (!replicator::ParsePhase(ph, &p)) {
      UsageError(kCmd, "--kill-at: unknown phase '" + ph + "' (s, s2, r, r2, m, c, c2)");
      return kExitUsage;
    }
    phases = {ph};
  }
  uint64_t epoch = 0;
  if (!GetCount(kCmd, *vm, "epoch", 3, 100000, &epoch)) return kExitUsage;
  std::chrono::microseconds interval{};
  if (!GetDuration(kCmd, *vm, "interval", &interval) ||
      !CheckRange(kCmd, "interval", interval.count(), 5000, 10e6, "5ms", "10s")) {
    return kExitUsage;
  }
  if ((*vm)["guest"].as<std::string>().rfind("sim:", 0) != 0) {
    UsageError(kCmd, "--guest: drills run a simulated guest (sim:...)");
    return kExitUsage;
  }
  std::string dir;
  if (vm->count("dir")) {
    dir = (*vm)["dir"].as<std::string>();
    mkdir(dir.c_str(), 0700);
  } else {
    dir = MakeTempDir("romulus-drill");
  }
  if (dir.empty()) {
    std::cerr << "romulus drill: cannot create a working directory\n";
    return kExitFailure;
  }
  const std::string key = dir + "/psk.key", self = SelfExe();
  unlink(key.c_str());
  Status st = transport::WritePskFile(key);
  if (!st.ok()) {
    std::cerr << "romulus drill: " << st.ToString() << "\n";
    return kExitFailure;
  }
  const bool json = (*vm)["json"].as<bool>();
  if (!json) {
    std::printf("romulus drill: %s, interval %s, kill in epoch %llu; files in %s\n\n",
                (*vm)["guest"].as<std::string>().c_str(), (*vm)["interval"].as<std::string>().c_str(),
                static_cast<unsigned long long>(epoch), dir.c_str());
    std::printf("%-6s %-7s %-13s %-8s %-12s %-7s %s\n", "phase", "acked", "backup epoch", "want", "failover",
                "verify", "result");
    std::fflush(stdout);
  }
  bool all_ok = true;
  for (const auto& ph : phases) {
    DrillResult r = RunOne(self, dir, key, ph, epoch, (*vm)["guest"].as<std::string>(),
                           (*vm)["interval"].as<std::string>());
    all_ok = all_ok && r.passed;
    if (json) {
      std::printf("%s\n", ResultJson(r).c_str());
    } else {
      std::printf("%-6s %-7lld %-13lld %-8lld %-12s %-7s %s\n", ph.c_str(), r.acked, r.backup_epoch, r.want,
                  r.failover_ms >= 0 ? (std::to_string(r.failover_ms) + " ms").c_str() : "-",
                  r.verify_epoch == r.backup_epoch && r.passed ? "ok" : "-",
                  r.passed ? "PASS" : ("FAIL: " + r.problem).c_str());
    }
    std::fflush(stdout);
  }
  if (!json) {
    std::printf("\nwant: s s2 r r2 m -> acked (epoch %llu never completed: discarded); c c2 -> acked+1 (EPOCH_END "
                "was sent before the kill; the ack, or its stats line, never made it back)\n",
                static_cast<unsigned long long>(epoch));
    std::printf("romulus drill: %s\n", all_ok ? "PASS" : "FAIL");
  }
  return all_ok ? kExitOk : kExitFailure;
}

}  // namespace romulus::cli

// romulus ctl: talk to a running `replicate` or `restore` over its control
// socket (docs/CONTROL.md). One request, one answer: rendered for people
// (control/human.h) by default, the raw JSON line with --json (for tools).
#include <dirent.h>

#include <algorithm>
#include <variant>

#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "control/human.h"
#include "control/reply.h"
#include "replicator/control.h"

namespace romulus::cli {

namespace {

const char kCmd[] = "ctl";

// With no --socket: the only *.sock in /run/romulus, if there is exactly one.
std::string GuessSocket(std::string* why) {
  std::vector<std::string> found;
  if (DIR* d = opendir("/run/romulus")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".sock") == 0) found.push_back("/run/romulus/" + n);
    }
    closedir(d);
  }
  if (found.size() == 1) return found[0];
  *why = found.empty() ? "no control socket in /run/romulus: give --socket PATH"
                       : "several replications in /run/romulus: give --socket PATH";
  return "";
}

}  // namespace

int RunCtl(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("socket", po::value<std::string>(), "control socket (default: the only one in /run/romulus)")
      ("timeout", po::value<std::string>()->default_value("70s"), "give up waiting for the answer after this long")
      ("json", po::bool_switch(), "print the answer as the one JSON line the daemon sent (for scripts)")
      ("words", po::value<std::vector<std::string>>(), "the request");
  po::positional_options_description pos;
  pos.add("words", -1);
  int code = 0;
  auto vm = ParseOptions(kCmd,
                         "[--socket PATH] [--json] status | stats | set interval 50ms | set cache-size 128M | pause | resume"
                         " | failover | digest EPOCH [REGIONS] | switchover | set reverse-to HOST:PORT|none"
                         " | wait EVENT [after SEQ] [within D]",
                         desc, argc, argv, &code, &pos);
  if (!vm) return code;
  if (!vm->count("words")) {
    UsageError(kCmd, "what to ask? status, stats, set interval D, set cache-size S, pause, resume, failover, digest, "
                     "switchover, set reverse-to, wait EVENT (docs/CONTROL.md)");
    return kExitUsage;
  }
  std::chrono::microseconds timeout{};
  // 0 would fail every request at once; days would hang a script on a dead daemon.
  if (!GetDuration(kCmd, *vm, "timeout", &timeout) ||
      !CheckRange(kCmd, "timeout", static_cast<double>(timeout.count()), 1000, 86400e6, "1ms", "24h")) {
    return kExitUsage;
  }
  std::string request;
  for (const auto& w : (*vm)["words"].as<std::vector<std::string>>()) request += (request.empty() ? "" : " ") + w;
  // Parsed here too, so that a mistake is reported before any socket is opened.
  auto parsed = control::ParseRequestLine(request);
  if (!parsed.ok()) {
    UsageError(kCmd, parsed.status().message());
    return kExitUsage;
  }
  // A wait answers when its event happens, up to `within`: give the answer
  // that long, and a little more, to arrive.
  if (const auto* w = std::get_if<control::WaitReq>(&*parsed)) {
    timeout = std::max<std::chrono::microseconds>(timeout, w->within + std::chrono::seconds(5));
  }
  std::string path;
  if (vm->count("socket")) {
    path = (*vm)["socket"].as<std::string>();
  } else {
    std::string why;
    path = GuessSocket(&why);
    if (path.empty()) {
      UsageError(kCmd, why);
      return kExitUsage;
    }
  }
  auto reply = replicator::ControlCall(path, request,
                                       std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  if (!reply.ok()) {
    std::cerr << "romulus ctl: " << reply.status().message() << "\n";
    return kExitFailure;
  }
  const bool json = (*vm)["json"].as<bool>();
  auto answer = control::ParseReply(*reply);
  if (!answer.ok()) {
    // Not an answer of ours: show it as it came.
    if (json) std::cout << *reply << "\n";
    std::cerr << "romulus ctl: " << answer.status().message() << ": " << reply->substr(0, 400) << "\n";
    return kExitFailure;
  }
  if (json) std::cout << *reply << "\n";
  if (answer->ok) {
    if (!json) std::cout << control::RenderHuman(*parsed, answer->body);
    return kExitOk;
  }
  // The daemon's verdict: a malformed request is a usage error (2), a
  // refused or failed one a runtime failure (1).
  std::cerr << "romulus ctl: " << (json ? reply->substr(0, 400) : answer->error) << "\n";
  return answer->usage ? kExitUsage : kExitFailure;
}

}  // namespace romulus::cli

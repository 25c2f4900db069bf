// Live control of a running replication over a UNIX stream socket
// (`--control-socket PATH`, `romulus ctl`). Protocol (docs/CONTROL.md):
// the client connects, writes ONE request line — printable ASCII words
// separated by spaces, at most kMaxControlRequest bytes, ending in '\n' —
// and the server answers with ONE JSON line, then closes:
//
//   {"ok":true, ...}                       success, command-specific members
//   {"ok":false,"error":"...","usage":B}   failure; usage=true: bad request
//
// The request is parsed once (control/request.h) into a typed request; a
// line that does not parse is answered with the usage error and never
// reaches a handler. The server accepts on one thread and serves each
// client on a thread of its own (at most 8 at once; more get a "busy"
// reply), so a handler that blocks (`digest`, `failover`, `switchover`)
// never delays `status`; a receive timeout drops a silent client. Handlers
// must be thread-safe. The socket file is created 0600 (only its owner,
// normally root, may control replication); a stale file left by a dead
// process is removed at start, a live one is refused.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "control/reply.h"
#include "control/request.h"

namespace romulus::events {
class EventLog;
}

namespace romulus::replicator {

class PrimaryController;

inline constexpr size_t kMaxControlRequest = control::kMaxRequestBytes;  // bytes, newline included
inline constexpr size_t kMaxControlWords = control::kMaxRequestWords;
inline constexpr size_t kMaxControlReply = 1 << 20;  // client side bound

using ControlReply = control::Reply;
inline std::string RenderControlReply(const ControlReply& r) { return control::Render(r); }
// "\"...\"" with JSON escapes (control::Quote), for text that embeds a string.
inline std::string JsonString(std::string_view s) { return control::Quote(s); }

// A role's dispatcher: takes a parsed request (control/request.h).
using ControlHandler = std::function<ControlReply(const control::Request&)>;

// Wraps a role's dispatcher with the rules every role shares: `help` lists
// the role's commands, and a command the role does not have is refused by
// control::Refusal before `dispatch` sees it.
ControlHandler ForRole(control::Role role, ControlHandler dispatch);
// Answers `wait EVENT [after SEQ] [within D]` from `log` (every role keeps its
// events in memory, docs/EVENTS.md) and passes everything else to `inner`.
// The wait ends early, unanswered, once `cancel` (may be null) is set.
ControlHandler WithEventWaits(ControlHandler inner, const events::EventLog* log, const std::atomic<bool>* cancel);

// Parses `words` and answers them with `handler` (a usage error if they do
// not parse); what the server does after splitting a line. Tests use it.
ControlReply HandleWords(const ControlHandler& handler, const std::vector<std::string>& words);

class ControlServer {
 public:
  // Binds `path` and starts serving. Fails if the path is held by a live
  // server, is not a socket, or cannot be created.
  static Result<std::unique_ptr<ControlServer>> Start(const std::string& path, ControlHandler handler);
  ~ControlServer();  // stops the thread (after the request in progress), unlinks the path

  const std::string& path() const { return path_; }
  // Answers one request line as the server would (tests, and the server itself).
  std::string HandleLine(std::string_view line) const;

 private:
  ControlServer() = default;
  void Loop();
  void Serve(int fd) const;  // one client: read a line, answer, close
  struct Impl;
  std::string path_;
  ControlHandler handler_;
  std::unique_ptr<Impl> impl_;
};

// Client: sends one request, returns the reply line. Clear errors for a
// missing socket ("no such socket") and a dead daemon ("not running").
Result<std::string> ControlCall(const std::string& path, const std::string& request,
                                std::chrono::milliseconds timeout);

// The default socket of a replication: /run/romulus/<sanitised guest>.sock
// when /run/romulus is a writable directory, else "" (none).
std::string DefaultControlSocket(const std::string& guest_identity);

// The primary's command set, for every guest type (control::Role::kPrimary):
//   status | stats | set interval D | set cache-size S | pause | resume |
//   digest EPOCH [REGIONS] | switchover | help
// `on_switchover` (may be empty) runs after a successful handover (the
// replicate command stops then).
ControlHandler PrimaryControlHandler(PrimaryController* primary, std::function<void()> on_switchover = nullptr);

}  // namespace romulus::replicator

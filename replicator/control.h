// Live control of a running replication over a UNIX stream socket
// (`--control-socket PATH`, `romulus ctl`). Protocol (docs/CONTROL.md):
// the client connects, writes ONE request line — printable ASCII words
// separated by spaces, at most kMaxControlRequest bytes, ending in '\n' —
// and the server answers with ONE JSON line, then closes:
//
//   {"ok":true, ...}                       success, command-specific members
//   {"ok":false,"error":"...","usage":B}   failure; usage=true: bad request
//
// The server accepts on one thread and serves each client on a thread of
// its own (at most 8 at once; more get a "busy" reply), so a handler that
// blocks (`digest`, `failover`, `switchover`) never delays `status`; a
// receive timeout drops a silent client. Handlers must be thread-safe. The socket file is created
// 0600 (only its owner, normally root, may control replication); a stale
// file left by a dead process is removed at start, a live one is refused.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace romulus::replicator {

class EpochLoop;

inline constexpr size_t kMaxControlRequest = 512;   // bytes, newline included
inline constexpr size_t kMaxControlWords = 8;
inline constexpr size_t kMaxControlReply = 1 << 20;  // client side bound

// Splits a request line (with or without its '\n') into words.
// InvalidArgument for an empty, over-long or non-printable request.
Result<std::vector<std::string>> ParseControlRequest(std::string_view line);

struct ControlReply {
  bool ok = true;
  bool usage = false;   // with !ok: the request itself was wrong
  std::string members;  // JSON members without braces: "\"epoch\":3,\"x\":true"
  std::string error;

  static ControlReply Ok(std::string members = "") { return {true, false, std::move(members), ""}; }
  static ControlReply Fail(std::string error) { return {false, false, "", std::move(error)}; }
  static ControlReply Usage(std::string error) { return {false, true, "", std::move(error)}; }
};
// One JSON line, without the trailing '\n'.
std::string RenderControlReply(const ControlReply& r);
// "\"...\"" with JSON escapes.
std::string JsonString(std::string_view s);

using ControlHandler = std::function<ControlReply(const std::vector<std::string>& words)>;

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

// ---- What every primary's handler shares (the engine's below, the Xen
// path's in xen/xen_primary_state.h), so that both answer alike.

// The members of a primary's `status` answer (docs/CONTROL.md), in order:
// role, guest, epoch, last_acked, last_ack_age_ms, protection, paused,
// output_commit, interval_us, interval, cache_size[, cache_size_next_session]
// [, unprotected_reason] and then `extra`.
struct PrimaryStatusView {
  std::string guest;
  uint64_t epoch = 0;                          // last started
  int64_t last_acked = -1;                     // -1 before the first ack
  std::chrono::milliseconds last_ack_age{-1};  // -1 before the first ack
  bool protected_now = false;
  bool paused = false;
  std::string output_commit;
  std::chrono::microseconds interval{0};
  uint64_t cache_size = 0;
  std::optional<uint64_t> cache_size_next_session;  // absent where it cannot change
  std::string unprotected_reason;  // why not PROTECTED; rendered only when unprotected
  std::string extra;  // further JSON members without braces ("\"domid\":3"), or ""
};
std::string PrimaryStatusMembers(const PrimaryStatusView& v);

// `set interval D`: D parsed and within 5ms .. 60s, or nullopt with the usage
// reply in *error.
std::optional<std::chrono::microseconds> ParseControlInterval(const std::string& word, ControlReply* error);
// `set cache-size S`: S parsed, a multiple of 4 KiB and at most 64G, or
// nullopt with the usage reply in *error.
std::optional<uint64_t> ParseControlCacheSize(const std::string& word, ControlReply* error);
// The answer to an accepted `set interval` (and its log line).
ControlReply IntervalSetReply(std::chrono::microseconds interval);
// The answer to `pause` / `resume` (and its log line).
ControlReply PauseReply(bool paused);
// The answer to `stats` from {"last":...,"totals":...}.
ControlReply StatsReply(const std::string& stats_json);

// The primary's command set bound to a running EpochLoop:
//   status | stats | set interval D | set cache-size S | pause | resume |
//   failover (refused: this is the primary) | digest EPOCH [REGIONS] | switchover
// `identity` names the guest in status; `on_switchover` (may be empty) runs
// after a successful handover (the replicate command stops then).
ControlHandler PrimaryControlHandler(EpochLoop* loop, std::string identity,
                                     std::function<void()> on_switchover = nullptr);

}  // namespace romulus::replicator

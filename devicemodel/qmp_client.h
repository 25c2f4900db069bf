// QmpClient: one connection to a QEMU Machine Protocol socket (QEMU started
// with -qmp unix:PATH,server=on,wait=off), the control channel of an HVM
// guest's device model (docs/DEVICE-MODEL.md). Romulus is the only client:
// one command at a time, each tagged with an id and matched to its reply;
// asynchronous events that arrive meanwhile are kept (the last 64) for
// whoever asks (the last 64 of at most 64 KiB each; the rest are counted).
//
// QEMU is a separate process that can die, hang or (in a test) be anything
// at all on the other end of the socket, so: every call has a deadline, a
// message is at most kMaxQmpMessage bytes and kMaxQmpDepth levels deep
// (more is Corruption, never an allocation or a recursion), anything that
// is not a JSON object is Corruption, a peer that never stops talking still
// ends a call at its deadline, EOF is Closed naming the socket, and an
// error quotes what the peer sent as it arrived. Not thread-safe.
#pragma once

#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::devicemodel {

inline constexpr size_t kMaxQmpMessage = size_t{1} << 20;
// Arrays and objects nested deeper than this refuse the message before it
// is parsed (QEMU's answers nest a few levels; a hostile 1 MiB "[[[[…" must
// not reach anything that recurses).
inline constexpr size_t kMaxQmpDepth = 64;
inline constexpr size_t kMaxQmpEvents = 64;
inline constexpr size_t kMaxQmpEventBytes = size_t{64} << 10;  // larger events are dropped, counted

class QmpClient {
 public:
  // Connects, reads QEMU's greeting and leaves capabilities negotiation
  // (qmp_capabilities), all by `deadline`.
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path, transport::Deadline deadline);
  // Over an already connected stream (tests); `name` names it in messages.
  // `socket_fd`, when the stream is a Unix socket, is its descriptor: it
  // lets ExecuteWithFd pass descriptors (the stream still owns it).
  static Result<std::unique_ptr<QmpClient>> Open(std::unique_ptr<transport::Stream> stream, std::string name,
                                                 transport::Deadline deadline, int socket_fd = -1);
  ~QmpClient();

  // Runs `command` with `arguments` (an object, or null for none) and
  // returns its "return" value. A QMP error reply is Unsupported for
  // CommandNotFound, InvalidArgument otherwise, with QEMU's class and text;
  // Timeout when no reply came by the deadline (the connection is then
  // unusable: a late reply cannot be told from the next one's).
  Result<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments,
                                 transport::Deadline deadline);
  // The same with `pass_fd` sent alongside the command's text (SCM_RIGHTS),
  // as QMP's add-fd and getfd expect; QEMU gets its own copy, the caller
  // keeps `pass_fd`. InvalidArgument when this connection is not a Unix
  // socket.
  Result<nlohmann::json> ExecuteWithFd(const std::string& command, const nlohmann::json& arguments, int pass_fd,
                                       transport::Deadline deadline);

  // "7.2.22" from the greeting.
  const std::string& qemu_version() const { return version_; }
  // Events received so far (oldest first), and forgets them.
  std::vector<nlohmann::json> TakeEvents();
  uint64_t dropped_events() const { return dropped_events_; }
  // True once the connection is out of step or gone (a timeout, EOF, a
  // reply that does not fit): every later call is Closed; reconnect.
  bool broken() const { return broken_; }
  const std::string& name() const { return name_; }

 private:
  QmpClient(std::unique_ptr<transport::Stream> stream, std::string name, int socket_fd);
  Result<nlohmann::json> Exchange(const std::string& command, const nlohmann::json& arguments, int pass_fd,
                                  transport::Deadline deadline);
  // The next complete message (one line of JSON) as an object; *raw (if
  // given) its line as received.
  Result<nlohmann::json> ReadMessage(transport::Deadline deadline, std::string* raw = nullptr);

  std::unique_ptr<transport::Stream> stream_;
  std::string name_;
  int socket_fd_;  // the stream's Unix socket, or -1; owned by stream_
  std::string version_;
  std::string buf_;     // bytes read past the last complete message
  size_t scanned_ = 0;  // buf_[0, scanned_) holds no newline
  uint64_t next_id_ = 1;
  bool broken_ = false;
  std::deque<nlohmann::json> events_;
  uint64_t dropped_events_ = 0;
};

}  // namespace romulus::devicemodel

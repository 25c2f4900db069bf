// Internal to transport/: the rate-limited report of connections a Listener
// dropped before they authenticated. Anyone who can reach the port can cause
// such a drop, so each one must not cost a log line: the first of a quiet
// period is reported in full, the rest are summed into one line at most
// every `interval`.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "transport/stream.h"

namespace romulus::transport::internal {

class DropLog {
 public:
  explicit DropLog(std::chrono::milliseconds interval) : interval_(interval) {}

  // A drop at `now`; returns the line to log now, if any.
  std::optional<std::string> Record(Clock::time_point now, const std::string& peer,
                                    const std::string& reason);
  // The summary due at `now`, if any: "N unauthenticated connections dropped
  // in the last 10 s (last from ADDR: reason)".
  std::optional<std::string> Flush(Clock::time_point now);
  // When Flush next has something to say; time_point::max() if nothing waits.
  Clock::time_point NextFlush() const;

 private:
  std::chrono::milliseconds interval_;
  std::optional<Clock::time_point> last_line_;  // when we last logged anything
  uint64_t held_ = 0;                           // drops since then, not yet reported
  std::string last_peer_, last_reason_;
};

}  // namespace romulus::transport::internal

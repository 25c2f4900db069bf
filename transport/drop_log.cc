#include "transport/drop_log.h"

#include <cmath>

namespace romulus::transport::internal {

std::optional<std::string> DropLog::Record(Clock::time_point now, const std::string& peer,
                                           const std::string& reason) {
  if (held_ == 0 && (!last_line_ || now - *last_line_ >= interval_)) {
    last_line_ = now;
    return "unauthenticated connection from " + peer + " dropped: " + reason +
           " (further drops are summarised at most every " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(interval_).count()) +
           " s)";
  }
  ++held_;
  last_peer_ = peer;
  last_reason_ = reason;
  return Flush(now);
}

std::optional<std::string> DropLog::Flush(Clock::time_point now) {
  if (held_ == 0 || now < NextFlush()) return std::nullopt;
  double secs = std::chrono::duration<double>(now - *last_line_).count();
  std::string line = std::to_string(held_) + " unauthenticated connection" + (held_ == 1 ? "" : "s") +
                     " dropped in the last " + std::to_string(std::lround(secs)) + " s (last from " +
                     last_peer_ + ": " + last_reason_ + ")";
  held_ = 0;
  last_line_ = now;
  return line;
}

Clock::time_point DropLog::NextFlush() const {
  if (held_ == 0 || !last_line_) return Clock::time_point::max();
  return *last_line_ + interval_;
}

}  // namespace romulus::transport::internal

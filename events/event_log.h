// EventLog: the structured events of one Romulus process (docs/EVENTS.md).
//
// Both roles write the same kind of stream: one JSON object per line,
//   {"event":TYPE, ...the event's own fields..., "time_ms":T, "seq":N, "role":R}
// appended to --events-json FILE when one is given (never truncated, so a
// restarted process keeps its predecessors' history; a torn last line left
// by a killed predecessor is not glued to ours), and kept in memory (the
// last kKeep) for waiters (`romulus ctl wait`). "event" comes first and each
// event's fields keep their order, so line-oriented readers stay simple.
//
// A failed write (full disk, EIO) never stops the process: it is logged once
// per run of failures (and once more when writes work again), counted, and
// the event is still delivered to waiters.
//
// Thread-safe: events come from the session thread, the control thread and
// the service thread alike.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/thread_annotations.h"

namespace romulus::events {

using Json = nlohmann::ordered_json;

class EventLog {
 public:
  static constexpr size_t kKeep = 1024;

  explicit EventLog(std::string role);
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  ~EventLog();

  // Opens (creating if needed) `path` for appending. False with errno set.
  bool Open(const std::string& path);

  // Records one event: `fields` is a JSON object (or null for none). Returns
  // its sequence number (1, 2, …).
  uint64_t Emit(std::string_view type, const Json& fields = Json());

  // The first kept event of `type` ("" = any) with seq > `after`, waiting up
  // to `timeout` for one to happen; nullopt on timeout or once `cancel` is
  // set. An `after` older than what is kept matches from the oldest kept.
  std::optional<Json> WaitFor(std::string_view type, uint64_t after, std::chrono::milliseconds timeout,
                              const std::atomic<bool>* cancel = nullptr) const;

  uint64_t last_seq() const;
  // False while the last write to the file failed (until one succeeds again).
  bool healthy() const;
  // Lines that could not be written since Open.
  uint64_t failed_writes() const;

 private:
  bool WriteLine(const std::string& line) REQUIRES(mu_);
  bool WriteAll(const std::string& data) REQUIRES(mu_);

  const std::string role_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  uint64_t seq_ GUARDED_BY(mu_) = 0;
  std::deque<Json> kept_ GUARDED_BY(mu_);  // the last kKeep events
  int fd_ GUARDED_BY(mu_) = -1;
  std::string path_ GUARDED_BY(mu_);
  bool failing_ GUARDED_BY(mu_) = false;  // inside a run of failed writes (logged once)
  bool torn_ GUARDED_BY(mu_) = false;     // the file may end in a partial line
  uint64_t failed_writes_ GUARDED_BY(mu_) = 0;
};

}  // namespace romulus::events

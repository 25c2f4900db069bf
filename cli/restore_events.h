// The backup's event log (--events-json): one JSON object per line, written
// at once so a test or a monitor reading the file sees every commit. Stable
// keys (docs/STATS.md):
//   {"event":"commit","epoch":N,"digest":"…"}
//   {"event":"failover","reason":"…","last_committed_epoch":N,"digest":"…","activated":true}
//   {"event":"stop","last_committed_epoch":N,"digest":"…"}
// The file is appended to, never truncated: a restarted backup keeps the
// history of the ones before it. A failed write (full disk, EIO) never stops
// the backup: it is logged once per run of failures (and once more when
// writes work again), and `healthy()`/`failed_writes()` let the caller report it.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

namespace romulus::cli {

class EventLog {
 public:
  EventLog() = default;
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  ~EventLog();

  // Opens (creating if needed) `path` for appending. False with errno set.
  bool Open(const std::string& path);
  // Each returns whether the line reached the file (true when no file is open).
  bool Commit(uint64_t epoch, uint64_t digest);
  bool Failover(const std::string& reason, uint64_t epoch, uint64_t digest, bool activated);
  bool Stop(uint64_t epoch, uint64_t digest);

  // False while the last write failed (until one succeeds again).
  bool healthy() const;
  // Lines that could not be written since Open.
  uint64_t failed_writes() const;

 private:
  bool Line(const std::string& json);
  bool WriteAll(const std::string& data);

  mutable std::mutex mu_;  // lines may come from the session and the control thread
  int fd_ = -1;
  std::string path_;
  bool failing_ = false;      // inside a run of failed writes (logged once)
  bool torn_ = false;         // the file may end in a partial line: start the next on a new one
  uint64_t failed_writes_ = 0;
};

}  // namespace romulus::cli

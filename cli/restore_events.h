// The backup's event log (--events-json): one JSON object per line, flushed
// at once so a test or a monitor reading the file sees every commit. Stable
// keys (docs/STATS.md):
//   {"event":"commit","epoch":N,"digest":"…"}
//   {"event":"failover","reason":"…","last_committed_epoch":N,"digest":"…","activated":true}
//   {"event":"stop","last_committed_epoch":N,"digest":"…"}
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace romulus::cli {

class EventLog {
 public:
  ~EventLog();
  bool Open(const std::string& path);
  void Commit(uint64_t epoch, uint64_t digest);
  void Failover(const std::string& reason, uint64_t epoch, uint64_t digest, bool activated);
  void Stop(uint64_t epoch, uint64_t digest);

 private:
  void Line(const std::string& json);
  FILE* f_ = nullptr;
};

}  // namespace romulus::cli

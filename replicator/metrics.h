// Prometheus textfile-collector output (`--metrics-textfile PATH`): the
// node_exporter reads PATH (e.g. /var/lib/node_exporter/textfile/romulus.prom).
//
// The file is rewritten whole, atomically (PATH.tmp + rename, so the
// collector never sees half a file), at most once per second: a background
// thread writes when something changed, and Close() writes the final values.
// Values are set from the replication threads (on_epoch, commit callbacks)
// under a mutex; nothing here blocks them on I/O.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "replicator/stats.h"

namespace romulus::replicator {

class MetricsTextfile {
 public:
  // Checks that PATH.tmp can be created now (clear error at start-up, not later).
  static Result<std::unique_ptr<MetricsTextfile>> Open(const std::string& path, const std::string& guest);
  ~MetricsTextfile();  // Close()

  // A gauge or counter; `type` is "gauge" or "counter". Declared on first use.
  void Set(const std::string& name, const std::string& type, const std::string& help, double value);
  void Add(const std::string& name, const std::string& help, double delta);  // counter
  // The pause histogram (romulus_pause_seconds) and last-pause gauge.
  void ObservePause(std::chrono::microseconds pause);

  // Primary: fold one epoch in (call from EpochLoopOptions::on_epoch).
  // output_commits: the OutputCommit really holds output back (sch_plug).
  void OnEpoch(const EpochStats& e, bool output_commits, uint64_t resyncs);
  // Primary: the gauges that change without an epoch (romulus_protected,
  // romulus_paused); call from the refresher.
  void SetLiveState(bool protected_now, bool paused);

  // Called by the writer thread once a second (not under any lock of this
  // class) to refresh gauges that change without an epoch, e.g. protected
  // while paused. Set it before and clear it (nullptr) after the lifetime of
  // what it reads: clearing waits for a refresh in progress.
  void SetRefresher(std::function<void()> fn);

  // The text that would be written now (tests).
  std::string Render() const;
  void Close();

 private:
  MetricsTextfile() = default;
  Status WriteNow();
  struct Metric {
    std::string type, help;
    double value = 0;
  };
  std::string path_, guest_label_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Metric> metrics_ GUARDED_BY(mu_);
  std::vector<uint64_t> pause_buckets_ GUARDED_BY(mu_);  // counts per kPauseBuckets bound
  uint64_t pause_count_ GUARDED_BY(mu_) = 0;
  double pause_sum_ GUARDED_BY(mu_) = 0;
  bool dirty_ GUARDED_BY(mu_) = false;
  bool closed_ GUARDED_BY(mu_) = false;
  std::thread writer_;
  std::mutex refresh_mu_;
  std::function<void()> refresher_ GUARDED_BY(refresh_mu_);
};

}  // namespace romulus::replicator

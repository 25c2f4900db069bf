// EpochLoop: the primary's timer-driven checkpoint engine for a GuestSource.
//
// Every `interval` (counted from the previous suspend, not from the commit):
// pause the guest, mark an output-commit boundary, harvest the dirty log,
// copy the dirty pages into the staging snapshot, capture state, resume —
// nothing else happens while the guest is paused — then encode and stream
// the snapshot while the guest runs, wait for the backup's ack and release
// the epoch's buffered output.
//
// A new connection starts with a full synchronisation folded into its first
// epoch: every page is streamed while the guest runs (copied one page at a
// time, so torn reads are harmless: the page is dirty again and goes out in
// the paused part of the same epoch), then the first checkpoint proper.
//
// Without a backup the guest keeps running unprotected (output released),
// the loop says so loudly and reconnects with back-off, then resynchronises.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/guest_source.h"
#include "replicator/output_commit.h"
#include "replicator/stats.h"

namespace romulus::transport {
class Stream;
}
namespace romulus::events {
class EventLog;
}

namespace romulus::replicator {

// Points in an epoch where a failover drill can kill the primary; the names
// follow legacy Remus' kill-points (s, s2, r, r2, c, c2).
enum class Phase {
  kBeforeSuspend,  // s
  kAfterSuspend,   // s2: guest paused, snapshot not yet taken
  kBeforeResume,   // r:  snapshot taken, guest still paused
  kAfterResume,    // r2: guest running, epoch not yet streamed
  kBeforeCommit,   // c:  epoch streamed (EPOCH_END sent), ack not yet received
  kAfterCommit,    // c2: ack received, output released
  kStreaming,      //     in the middle of streaming the epoch's pages
};
const char* PhaseName(Phase p);
// Accepts "s", "s2", ..., and the long names ("before-suspend", "streaming").
bool ParsePhase(const std::string& text, Phase* out);

struct EpochLoopOptions {
  std::chrono::microseconds interval{100000};
  uint64_t max_epochs = 0;  // stop after this many checkpoints; 0 = until stopped
  std::chrono::milliseconds ack_timeout{1000};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  bool progress_bar = false;  // initial sync progress on a TTY
  // Called at every phase (drills, tests). Must be cheap.
  std::function<void(Phase, uint64_t epoch)> phase_hook;
  // Called with every epoch's statistics (benchmarks, control socket).
  std::function<void(const EpochStats&)> on_epoch;
  // Structured events (docs/EVENTS.md): session_start, protected,
  // unprotected, paused/resumed, switchover, stop. Not owned; may be null.
  events::EventLog* events = nullptr;
};

// Initial sync progress: guest bytes streamed so far, their rate (MB/s,
// 10^6 bytes: what the wire carries) and the time left at that rate.
struct SyncProgress {
  uint64_t done = 0;
  double percent = 0;
  std::string rate;  // "512 MB/s"
  std::string eta;   // "18 s", "?" before any progress
};
SyncProgress MeasureSync(uint64_t done, uint64_t total, std::chrono::nanoseconds elapsed);

using ConnectFn = std::function<Result<std::unique_ptr<transport::Stream>>()>;

class EpochLoop {
 public:
  EpochLoop(GuestSource& guest, OutputCommit& output, ConnectFn connect, SenderOptions sender,
            EpochLoopOptions opts, StatsWriter* stats);
  ~EpochLoop();

  // Runs until `stop` becomes true or max_epochs checkpoints were taken; a
  // clean stop sends BYE so the backup does not fail over. Errors from the
  // guest itself are fatal; errors from the backup are not (the loop
  // reconnects).
  Status Run(const std::atomic<bool>& stop);

  // Live tuning (control socket): applies from the next epoch.
  void SetInterval(std::chrono::microseconds interval);
  std::chrono::microseconds interval() const;

  // ---- Operations (control socket, docs/CONTROL.md). All thread-safe; each
  // takes effect at an epoch boundary of the thread in Run(). ----

  // Page-cache size (bytes, multiple of 4 KiB). The backup's mirror must
  // equal the primary's cache at all times, so the size changes either
  //  - live: when the session's backup agreed to kCapCacheResize, the new
  //    cache is allocated here (on the caller's thread) and the next epoch
  //    starts with CACHE_RESIZE, both ends resizing before its first page
  //    (docs/PROTOCOL.md §3.8); returns true. A size above the backup's
  //    --max-cache-size is InvalidArgument and a failed allocation an
  //    error; nothing changes then;
  //  - or from the next session (no backup, or one without the capability);
  //    returns false.
  // Either way later sessions start with this size. A newer request made
  // before the boundary replaces a pending one.
  Result<bool> SetCacheSize(uint64_t bytes);
  uint64_t cache_size_next() const { return next_cache_pages_.load() * 4096; }
  uint64_t cache_size_active() const { return active_cache_pages_.load() * 4096; }
  // The session's page cache, nullptr without a session. Only from the loop
  // thread between epochs (on_epoch, phase hooks): tests compare its
  // StateDigest with the backup's mirror.
  const compress::PageCache* session_cache() const { return sender_ ? &sender_->cache() : nullptr; }

  // Pause: no more checkpoints. The guest keeps running, UNPROTECTED, and
  // its buffered output is released (nobody holds the checkpoint it would
  // wait for); the session stays up (heartbeats). Resume: the next epoch
  // carries everything dirtied meanwhile, no full resync needed.
  void SetPaused(bool paused);
  bool paused() const { return paused_.load(); }
  // Why the guest runs UNPROTECTED now ("" while PROTECTED): the lost
  // backup's reason, the failed connection's, or the operator's pause.
  std::string unprotected_reason() const;

  // OutputCommit::Describe() as of the last epoch (Describe itself is only
  // called from the loop thread).
  std::string output_state() const;
  // {"last":<last epoch's stats JSON>,"totals":<totals JSON>} ("null" before the first).
  std::string StatsJson() const;

  // Digest of the guest as checkpointed in `epoch`, whole and per region
  // (regions equal pfn ranges), taken at the boundary right after `epoch`
  // was acked. Blocks until then. Fails if that boundary already passed,
  // the epoch was not acked, or `timeout` expires.
  struct RegionDigest {
    uint64_t epoch = 0;
    uint64_t digest = 0;
    uint64_t guest_pages = 0;
    std::vector<uint64_t> regions;
  };
  Result<RegionDigest> RegionDigestsAt(uint64_t epoch, uint32_t regions, std::chrono::milliseconds timeout);

  // Planned switchover: at the next boundary take a final checkpoint and
  // leave the guest PAUSED, wait for its ack, release its output, send BYE
  // kHandover (the backup activates) and make Run() return. Blocks until
  // done; returns the final epoch. If the final epoch is not acked the guest
  // is resumed and replication carries on (error returned).
  Result<uint64_t> Handover(std::chrono::milliseconds timeout);
  bool handed_over() const { return handed_over_.load(); }

  const TotalStats& totals() const { return totals_; }
  bool protected_now() const { return protected_.load(); }
  uint64_t current_epoch() const { return epoch_.load(); }
  int64_t last_acked_epoch() const { return last_acked_.load(); }
  // Time since the last ack arrived; negative before the first one.
  std::chrono::milliseconds since_last_ack() const;

 private:
  Status EnsureConnected(const std::atomic<bool>& stop);
  Status LiveSync(uint64_t epoch);
  // BeginEpoch, then a pending live cache resize of this session, if any.
  Status BeginEpoch(uint64_t epoch);
  void SetSession(CheckpointSender* sender);  // publishes what the control thread needs; nullptr: none
  Status Checkpoint(uint64_t epoch, EpochStats* st, bool leave_paused = false);
  // Streams the snapshot of `epoch`, sends EPOCH_END, waits for the ack;
  // fills the wire part of *st. The error is the backup's, not the guest's.
  Status StreamAndCommit(uint64_t epoch, EpochStats* st);
  void Publish(const EpochStats& st);  // totals, stats file, on_epoch, StatsJson
  void ServeOps();                     // at a boundary: answer a pending RegionDigestsAt
  Status DoHandover(uint64_t* epoch);
  void LoseBackup(const Status& why);
  void Hook(Phase p, uint64_t epoch) {
    if (opts_.phase_hook) opts_.phase_hook(p, epoch);
  }

  GuestSource& guest_;
  OutputCommit& output_;
  ConnectFn connect_;
  SenderOptions sender_opts_;
  EpochLoopOptions opts_;
  StatsWriter* stats_;
  std::unique_ptr<CheckpointSender> sender_;
  std::atomic<int64_t> interval_us_;
  std::atomic<bool> protected_{false};
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int64_t> last_acked_{-1};
  bool need_full_sync_ = true;
  uint64_t full_sync_epoch_ = 0;  // the epoch carrying the current session's full sync
  const std::atomic<bool>* stop_ = nullptr;  // Run()'s stop flag
  std::chrono::milliseconds backoff_;
  TotalStats totals_;
  struct Snapshot;
  std::unique_ptr<Snapshot> snap_;

  // Operations state (see the public section above).
  std::atomic<uint64_t> next_cache_pages_{0};
  uint64_t configured_cache_pages_ = 0;  // --cache-size: the fallback when a backup refuses a live-set size
  std::atomic<uint64_t> active_cache_pages_{0};
  std::atomic<bool> paused_{false};
  std::atomic<bool> handed_over_{false};
  std::atomic<int64_t> last_ack_ns_{-1};  // steady_clock of the last ack
  // The live session as the control thread sees it, and a resize waiting
  // for the next boundary (its cache already allocated). Guarded by ops_mu_.
  struct SessionInfo {
    uint64_t generation = 0;  // bumped at every connect and loss
    bool live = false;
    bool can_resize = false;
    uint64_t max_cache_pages = 0;
  } session_;
  struct CacheResizeRequest {
    uint64_t generation = 0;  // the session it was prepared for
    uint64_t pages = 0;
    std::unique_ptr<compress::PageCache> cache;
  } cache_req_;
  std::mutex cache_set_mu_;  // one SetCacheSize at a time
  bool paused_logged_ = false;  // loop thread only
  mutable std::mutex ops_mu_;
  std::condition_variable ops_cv_;
  std::string output_state_;                 // guarded by ops_mu_
  std::string last_epoch_json_ = "null";     // guarded by ops_mu_
  std::string totals_json_ = "null";         // guarded by ops_mu_
  std::string unprotected_why_ = "not connected to the backup yet";  // guarded by ops_mu_
  bool unprotected_event_ = false;  // an "unprotected" event since the last "protected" (epoch thread)
  void SetUnprotected(std::string why);
  struct RegionRequest {
    bool pending = false, done = false;
    uint64_t epoch = 0;
    uint32_t regions = 0;
    Status status;
    RegionDigest result;
  } region_req_;  // guarded by ops_mu_
  struct HandoverRequest {
    bool pending = false, done = false;
    Status status;
    uint64_t epoch = 0;
  } handover_req_;  // guarded by ops_mu_
};

}  // namespace romulus::replicator

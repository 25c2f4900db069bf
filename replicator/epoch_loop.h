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
#include <functional>
#include <memory>

#include "common/status.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/guest_source.h"
#include "replicator/output_commit.h"
#include "replicator/stats.h"

namespace romulus::transport {
class Stream;
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
};

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

  const TotalStats& totals() const { return totals_; }
  bool protected_now() const { return protected_.load(); }
  uint64_t current_epoch() const { return epoch_.load(); }
  int64_t last_acked_epoch() const { return last_acked_.load(); }

 private:
  Status EnsureConnected(const std::atomic<bool>& stop);
  Status LiveSync(uint64_t epoch);
  Status Checkpoint(uint64_t epoch, EpochStats* st);
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
  std::chrono::milliseconds backoff_;
  TotalStats totals_;
  struct Snapshot;
  std::unique_ptr<Snapshot> snap_;
};

}  // namespace romulus::replicator

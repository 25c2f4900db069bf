// PrimaryController: the primary's one engine, for every guest type.
//
// It owns the backup session and every policy around it, and drives a
// CheckpointDriver (replicator/checkpoint_driver.h) for the guest-specific
// mechanism:
//
//   Run ─▶ connect (back-off) ─▶ HELLO (cache fallback) ─▶ driver.RunSession(*this)
//    ▲        │ no backup: the guest runs UNPROTECTED       │ epochs: NextEpoch, Suspended,
//    │        ▼                                             │ BeginEpoch..EndEpoch, Commit, Publish
//    └──── backup lost: release output, resync from the next epoch number
//
// Operations (control socket, docs/CONTROL.md) are thread-safe and take
// effect at an epoch boundary of the driver's checkpoint thread: interval,
// cache size (live at the next epoch when the backup agreed to it, else
// from the next session), pause/resume, switchover, per-region digests.
//
// Without a backup the guest keeps running unprotected (output released);
// the controller says so loudly, reconnects with back-off and resyncs.
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
#include "common/thread_annotations.h"
#include "control/replies.h"
#include "replicator/checkpoint_driver.h"
#include "replicator/disk_replicator.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/output_commit.h"
#include "replicator/phase.h"
#include "replicator/stats.h"

namespace romulus::transport {
class Stream;
}
namespace romulus::events {
class EventLog;
}

namespace romulus::replicator {

struct ControllerOptions {
  std::chrono::microseconds interval{100000};  // counted from the previous suspend
  uint64_t max_epochs = 0;                     // stop after this many checkpoints; 0 = until stopped
  std::chrono::milliseconds ack_timeout{1000};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  // A lost backup: reconnect and resync (true), or end Run with the error.
  bool reconnect = true;
  // Called at every kill-point (drills, tests), on the thread that reaches
  // it. Must be cheap.
  std::function<void(Phase, uint64_t epoch)> phase_hook;
  // Called with every epoch's statistics (metrics, benchmarks, tests), on
  // the checkpoint thread, after its stats line. Must not block.
  std::function<void(const EpochStats&)> on_epoch;
  // Structured events (docs/EVENTS.md). Not owned; may be null.
  events::EventLog* events = nullptr;
  // The guest's disks (replicator/disk_replicator.h). Not owned; null: none.
  DiskReplicator* disks = nullptr;
};

using ConnectFn = std::function<Result<std::unique_ptr<transport::Stream>>()>;

class PrimaryController final : private EpochSession {
 public:
  PrimaryController(std::unique_ptr<CheckpointDriver> driver, OutputCommit& output, ConnectFn connect,
                    SenderOptions sender, ControllerOptions opts, StatsWriter* stats);
  ~PrimaryController() override;

  // Runs until `stop` becomes true (a signal, --duration), --epochs is reached, a
  // switchover completed, or the guest fails. A clean end sends BYE (the
  // backup does not fail over). Errors from the guest end Run; errors from
  // the backup do not (reconnect), unless ControllerOptions::reconnect is off.
  Status Run(const std::atomic<bool>& stop);

  // ---- Operations (any thread) ----
  void SetInterval(std::chrono::microseconds interval);
  std::chrono::microseconds interval() const;
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
  // Either way later sessions start with this size; a backup that refuses
  // it at the handshake gets the configured --cache-size instead. A newer
  // request made before the boundary replaces a pending one.
  Result<bool> SetCacheSize(uint64_t bytes);
  uint64_t cache_size_next() const { return next_cache_pages_.load() * 4096; }
  uint64_t cache_size_active() const { return active_cache_pages_.load() * 4096; }
  // The session's page cache, nullptr without a session. Only from the
  // checkpoint thread between epochs (on_epoch, phase hooks): tests compare
  // its StateDigest with the backup's mirror.
  const compress::PageCache* session_cache() const { return sender_ ? &sender_->cache() : nullptr; }

  // Pause: no more checkpoints. The guest keeps running, UNPROTECTED, and
  // its buffered output is released (nobody holds the checkpoint it would
  // wait for); the session stays up (heartbeats). Resume: the next epoch
  // carries everything dirtied meanwhile, no resync needed.
  void SetPaused(bool paused);
  bool paused() const { return paused_.load(); }

  // Digest of the guest as checkpointed in `epoch`, whole and per region
  // (regions equal pfn ranges): the sender's mirror of what the backup
  // holds, taken at the boundary right after `epoch` was acked. Blocks until
  // then. Fails if that boundary already passed, the epoch was not acked, or
  // `timeout` expires.
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
  // done; returns the final epoch. Refused at once unless PROTECTED and not
  // paused. If the final epoch is not acked the guest is resumed and
  // replication carries on (error returned).
  Result<uint64_t> Handover(std::chrono::milliseconds timeout);
  bool handed_over() const { return handed_over_.load(); }

  // `status` (control/replies.h): the same fields for every guest type.
  control::PrimaryStatus StatusView() const;
  // {"last":<last epoch's stats JSON>,"totals":<totals JSON>} ("null" before the first).
  std::string StatsJson() const;
  // Why the guest runs UNPROTECTED now ("" while PROTECTED).
  std::string unprotected_reason() const;
  std::string output_state() const;
  TotalStats totals() const;
  bool protected_now() const { return protected_.load(); }
  uint64_t current_epoch() const { return epoch_.load(); }
  int64_t last_acked_epoch() const { return last_acked_.load(); }
  std::chrono::milliseconds since_last_ack() const;  // negative before the first ack
  const GuestFacts& facts() const { return facts_; }

 private:
  struct SessionInfo {
    uint64_t generation = 0;  // bumped at every connect and loss
    bool live = false;
    bool can_resize = false;
    uint64_t max_cache_pages = 0;
  };
  struct CacheResizeRequest {
    uint64_t generation = 0;  // the session it was prepared for
    uint64_t pages = 0;
    std::unique_ptr<compress::PageCache> cache;
  };
  struct RegionRequest {
    bool pending = false, done = false;
    uint64_t epoch = 0;
    uint32_t regions = 0;
    Status status;
    RegionDigest result;
  };
  struct HandoverRequest {
    bool pending = false, taken = false, done = false;
    Status status;
    uint64_t epoch = 0;
  };

  // EpochSession (the driver's side).
  uint64_t first_epoch() const override { return session_first_epoch_; }
  Next NextEpoch() override;
  Status Suspended(uint64_t epoch) override;
  Status GuestPaused(uint64_t epoch) override;
  void Reached(Phase phase, uint64_t epoch) override;
  bool stopping() const override { return stop_ && stop_->load(); }
  Status BeginEpoch(uint64_t epoch) override;
  Status AddPage(uint64_t pfn, const uint8_t* page) override;
  Status AddState(std::span<const uint8_t> record) override;
  bool SkipKnownZeroPage(uint64_t pfn) override;
  uint64_t epoch_pages_kept() const override;
  Result<EpochWireStats> EndEpoch() override;
  Status Commit(uint64_t epoch, EpochStats* st) override;
  void Publish(const EpochStats& st) override;
  std::chrono::milliseconds ack_timeout() const override { return opts_.ack_timeout; }
  std::optional<uint64_t> HandOverPoint() const override;
  void Relinquish(uint64_t epoch, Status why, bool hand_over) override;

  // Connects and performs the handshake (with the cache fallback); on
  // failure waits the back-off. Ok: sender_ is a fresh session.
  Status Connect();
  Status StartSender(const GuestInfo& info);
  void SetSession(CheckpointSender* sender);  // publishes what the control thread needs; nullptr: none
  void LoseBackup(const Status& why);
  void SetUnprotected(std::string why);
  bool EndDue() const;                        // stop, --epochs
  void ServeOps();                            // at a boundary: a pending RegionDigestsAt
  void FailPendingOps(const Status& why);
  Status FinishHandover(uint64_t epoch);      // after the final epoch was committed
  Status FinishRelinquish();                  // after a session whose driver called Relinquish
  void WaitOrStop(std::chrono::milliseconds d) const;
  void UseEpoch(uint64_t epoch);              // last_epoch_used_ = max(last_epoch_used_, epoch)
  void PausedWait();                          // one step of an operator pause (logs and releases once)
  Status BackupError(Status s);               // remembers that the backup (not the guest) failed

  std::unique_ptr<CheckpointDriver> driver_;
  const GuestFacts facts_;
  OutputCommit& output_;
  ConnectFn connect_;
  SenderOptions sender_opts_;
  const uint64_t configured_cache_pages_;  // --cache-size: the fallback when a backup refuses a live-set size
  ControllerOptions opts_;
  StatsWriter* stats_;
  const std::atomic<bool>* stop_ = nullptr;  // Run()'s flag

  // Checkpoint thread (and the data path, which the driver serialises with it).
  std::unique_ptr<CheckpointSender> sender_;
  uint64_t session_first_epoch_ = 1;
  std::vector<uint64_t> session_disk_lineages_;  // what the session's HELLO named
  uint64_t open_epoch_ = 0;  // data path: the epoch BeginEpoch opened
  // The highest epoch number begun so far: written by the checkpoint thread
  // (Suspended) and the data path (BeginEpoch), which may be two threads.
  std::atomic<uint64_t> last_epoch_used_{0};
  uint64_t checkpoints_ = 0;       // epochs taken in this Run (--epochs)
  std::atomic<bool> backup_failed_{false};  // the session's error came from the backup (either thread)
  bool final_taken_ = false;       // NextEpoch answered kFinal in this session
  bool final_committed_ = false;
  // Relinquish: the epoch that could not be committed (0: none) and why.
  uint64_t relinquished_epoch_ = 0;
  Status relinquish_why_;
  bool relinquish_hand_over_ = false;  // the driver recorded that its copy never runs again
  bool unprotected_event_ = false;  // an "unprotected" event since the last "protected"
  bool paused_logged_ = false;
  std::chrono::steady_clock::time_point last_suspend_;
  // What the epoch being taken began with (its stats record says so).
  bool cur_protected_ = false;
  std::string cur_output_;
  std::chrono::microseconds cur_period_{0};
  std::chrono::microseconds cur_disk_cut_{0};  // GuestPaused of epoch_

  std::atomic<int64_t> interval_us_;
  std::atomic<bool> protected_{false};
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int64_t> last_acked_{-1};
  std::atomic<int64_t> last_ack_ns_{-1};  // steady_clock of the last ack
  std::atomic<uint64_t> next_cache_pages_{0};
  std::atomic<uint64_t> active_cache_pages_{0};
  std::atomic<bool> paused_{false};
  std::atomic<bool> handed_over_{false};

  std::mutex cache_set_mu_;  // one SetCacheSize at a time (it allocates unlocked)
  mutable std::mutex ops_mu_;
  std::condition_variable ops_cv_;
  SessionInfo session_ GUARDED_BY(ops_mu_);
  CacheResizeRequest cache_req_ GUARDED_BY(ops_mu_);
  RegionRequest region_req_ GUARDED_BY(ops_mu_);
  HandoverRequest handover_req_ GUARDED_BY(ops_mu_);
  TotalStats totals_ GUARDED_BY(ops_mu_);
  std::string output_state_ GUARDED_BY(ops_mu_);
  std::string last_epoch_json_ GUARDED_BY(ops_mu_) = "null";
  std::string totals_json_ GUARDED_BY(ops_mu_) = "null";
  std::string unprotected_why_ GUARDED_BY(ops_mu_) = "not connected to the backup yet";
};

}  // namespace romulus::replicator

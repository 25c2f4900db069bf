// The live state of a Xen primary session, for its statistics and its control
// socket. Xen-free (no Xen header), so it is unit-tested without a hypervisor.
//
//   xc_domain_save thread (xen_primary.cc)      control socket thread
//   EpochStarted / Published / EnterPause  ──▶  XenPrimaryState  ◀── status, stats,
//   reads interval() and paused()                                    set interval, pause, resume
//
// Statistics use the engine's EpochStats and its renderers (replicator/
// stats.h), so `--stats-json` lines carry the same keys as for a simulated
// guest, plus the Xen-only extras of MakeXenEpochStats (docs/STATS.md).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "compress/page_cache.h"

#include "replicator/checkpoint_sender.h"
#include "control/replies.h"
#include "replicator/control.h"
#include "replicator/stats.h"

namespace romulus::xen {

// What the session measured about one epoch, besides its wire stats.
struct XenEpochFacts {
  using Clock = std::chrono::steady_clock;
  uint64_t epoch = 0;
  bool acked = false;
  bool protected_ = false;              // a backup held the previous epoch at this suspend
  Clock::time_point previous_suspend;   // the previous epoch's suspend request (epoch 1: session start)
  Clock::time_point suspend_requested;  // control/shutdown=suspend written
  Clock::time_point suspended;          // the domain reached SHUTDOWN_suspend
  Clock::time_point resumed;            // xc_domain_resume returned
  std::chrono::microseconds ack_latency{0};  // EPOCH_END written -> ack
  std::chrono::microseconds ack_wait{0};     // checkpoint callback entered -> ack
  uint64_t stream_bytes = 0;            // libxenguest's v2 stream bytes of this epoch
  std::string output_commit;            // OutputCommit::Describe() at the suspend
};

// The engine's per-epoch record for a Xen epoch: pause_us from the suspend
// request to the guest running again (suspend_us is the part until the guest
// stopped), period_us between suspend requests, and the Xen-only extras
// state_records, ack_wait_us and xen_stream_bytes.
replicator::EpochStats MakeXenEpochStats(const replicator::EpochWireStats& wire, const XenEpochFacts& facts);

class XenPrimaryState {
 public:
  using Clock = std::chrono::steady_clock;

  // Session start, before the first epoch and before a control socket serves it.
  void Begin(std::string domain, uint32_t domid, std::chrono::microseconds interval, std::string output_commit);
  // The page cache of the session now (status).
  void set_cache_size(uint64_t bytes) { cache_size_.store(bytes); }
  uint64_t cache_size() const { return cache_size_.load(); }
  // What the backup agreed to at the handshake (before the control socket
  // serves `set cache-size`).
  void SetCacheLimits(bool can_resize, uint64_t backup_max_pages, uint64_t guest_pages);
  // Until then `set cache-size` is refused (Unavailable).

  // ---- control side (any thread) ----
  void SetInterval(std::chrono::microseconds interval) { interval_us_.store(interval.count()); }
  std::chrono::microseconds interval() const { return std::chrono::microseconds(interval_us_.load()); }
  // Paused: the session takes no checkpoint after the current one until resumed.
  void SetPaused(bool paused) { paused_.store(paused); }
  bool paused() const { return paused_.load(); }
  // The `status` answer's fields (the same struct, hence the same schema, as
  // a simulated guest's: backend "xen", domain and domid set).
  control::PrimaryStatus StatusView(Clock::time_point now) const;
  // {"last":<last epoch's JSON line>|null,"totals":<totals JSON>|null}
  std::string StatsJson() const;
  // `set cache-size`: allocates the new cache here (so a failure changes
  // nothing) and queues it for the next epoch boundary, where both ends
  // resize (docs/PROTOCOL.md §3.8). InvalidArgument above the backup's
  // --max-cache-size, Unsupported when the backup cannot resize live. A
  // newer request replaces a pending one.
  Status RequestCacheSize(uint64_t bytes);

  // ---- session side (the xc_domain_save thread) ----
  void EpochStarted(uint64_t epoch, const std::string& output_commit);
  // After an epoch was acked (or found unacked): totals, last JSON, protection.
  void Published(const replicator::EpochStats& e, Clock::time_point now);
  // Checkpointing stopped (operator pause, or the session ended): unprotected.
  void Unprotected(const std::string& output_commit);
  // Why the domain runs UNPROTECTED (status: unprotected_reason); the next
  // acked epoch clears it.
  void SetUnprotectedReason(std::string why);
  bool protected_now() const { return protected_.load(); }
  replicator::TotalStats totals() const;
  // A new session after a lost backup (romulus_resyncs_total).
  void CountResync();
  uint64_t resyncs() const;
  // The stream worker, right after BeginEpoch: the queued cache (nullptr
  // when none) and its size in pages.
  std::unique_ptr<compress::PageCache> TakeCacheRequest(uint64_t* pages);

  // ---- planned switchover (docs/CONTROL.md) ----
  // Control thread: asks for a final checkpoint that leaves the domain
  // suspended and hands over to the backup; blocks until the session
  // reports the outcome or `timeout` passes. The final epoch, or why not.
  // Refused at once unless PROTECTED and not paused.
  Result<uint64_t> RequestSwitchover(std::chrono::milliseconds timeout);
  // Session, before a suspend: true once per request (this epoch is final).
  bool TakeSwitchover();
  // Session: the outcome of a taken request (no-op without one).
  void SwitchoverDone(const Status& st, uint64_t final_epoch);

 private:
  std::atomic<int64_t> interval_us_{100000};
  std::atomic<bool> paused_{false};
  std::atomic<bool> protected_{false};
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int64_t> last_acked_{-1};
  std::atomic<int64_t> last_ack_ns_{-1};  // steady_clock time of the last ack
  std::atomic<uint64_t> cache_size_{0};
  std::atomic<uint32_t> domid_{0};
  std::string unprotected_why_ = "not connected to the backup yet";  // guarded by mu_
  mutable std::mutex mu_;
  std::string domain_;             // guarded by mu_
  std::string output_commit_;      // guarded by mu_
  std::string last_json_ = "null";
  std::string totals_json_ = "null";
  replicator::TotalStats totals_;  // guarded by mu_
  bool can_resize_ = false;        // guarded by mu_
  uint64_t backup_max_pages_ = 0;  // guarded by mu_
  uint64_t guest_pages_ = 0;       // guarded by mu_
  uint64_t requested_pages_ = 0;   // guarded by mu_, with:
  std::unique_ptr<compress::PageCache> requested_;
  std::mutex request_mu_;  // one RequestCacheSize at a time (it allocates unlocked)
  struct Switchover {
    bool requested = false, taken = false, done = false;
    Status status;
    uint64_t epoch = 0;
  } switchover_;  // guarded by mu_
  std::condition_variable switchover_cv_;
};

// The control socket's command set for a Xen primary (docs/CONTROL.md,
// control::Role::kXenPrimary): status | stats | set interval D |
// set cache-size S | pause | resume | switchover | help; the others (failover,
// digest, set reverse-to) are refused by control::Refusal.
replicator::ControlHandler XenPrimaryControlHandler(XenPrimaryState* state);

}  // namespace romulus::xen

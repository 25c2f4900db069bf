// BackupControl: the backup's command set on the control socket
// (docs/CONTROL.md): status | failover | digest EPOCH [REGIONS] |
// set reverse-to HOST:PORT|none | help, as control::Role::kBackup (with a
// region digest function: an image to split into regions) or kXenBackup
// (without: `digest N 1` answers the epoch's stream digest). Primary
// commands are refused by control::Refusal, naming the primary's socket.
//
// It observes the BackupService (commit, state, activation) so that
// `digest EPOCH` is answered exactly between Commit(EPOCH) and the next
// epoch, and `failover` returns once the activation finished. Observer calls
// are forwarded to `next` (events, metrics) after its own bookkeeping.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/thread_annotations.h"
#include "control/replies.h"
#include "replicator/control.h"
#include "restore/backup_service.h"

namespace romulus::restore {

class BackupControl : public BackupObserver {
 public:
  // The `digest` answer for the sink as it is now (it holds exactly
  // `epoch`), or an error; empty function: one region only, the epoch's
  // stream digest (CommitEvent::digest).
  using RegionDigestFn = std::function<Result<control::DigestAnswer>(uint64_t epoch, uint32_t regions)>;
  // Checks a reverse-to target; Ok or the usage error.
  using TargetCheckFn = std::function<Status(const std::string&)>;

  BackupControl(GuestSink* sink, RegionDigestFn digest_fn, TargetCheckFn check_target, BackupObserver* next);
  void Attach(BackupService* service) { service_ = service; }

  replicator::ControlHandler Handler();

  // The reverse-to target as decided at activation ("" = none); after this
  // call `set reverse-to` is refused.
  std::string DecideReverseTo();
  void SetReverseTo(const std::string& target);  // --reverse-to at start

  // Tells waiting `failover` requests how the activation went.
  void ActivationDone(const Status& st, const std::string& reason);

  // BackupObserver.
  void OnState(const std::string& state, const std::string& peer) override;
  void OnCommit(const CommitEvent& e) override;
  void OnSessionEnd(const SessionEnd& end) override;
  void OnDecision(const Decision& d) override;
  void OnFence(const Status& result, const std::string& reason, uint64_t epoch, uint64_t digest) override;
  void OnActivationFailed(const Status& result, const std::string& reason, uint64_t epoch,
                          uint64_t digest) override;

 private:
  replicator::ControlReply Dispatch(const control::Request& r);
  replicator::ControlReply Status_();
  replicator::ControlReply Failover();
  replicator::ControlReply Digest(const control::DigestReq& r);
  replicator::ControlReply SetReverse(const control::SetReverseToReq& r);

  GuestSink* sink_;
  RegionDigestFn digest_fn_;
  TargetCheckFn check_target_;
  BackupObserver* next_;
  BackupService* service_ = nullptr;

  std::mutex mu_;
  std::condition_variable cv_;
  std::string state_ GUARDED_BY(mu_) = "waiting";
  bool activation_done_ GUARDED_BY(mu_) = false;
  Status activation_ GUARDED_BY(mu_);
  std::string failover_reason_ GUARDED_BY(mu_);
  std::string reverse_to_ GUARDED_BY(mu_);
  bool reverse_decided_ GUARDED_BY(mu_) = false;
  struct {
    bool pending = false, done = false;
    uint64_t epoch = 0;
    uint32_t regions = 16;
    Status status;
    control::DigestAnswer answer;
  } digest_ GUARDED_BY(mu_);
};

}  // namespace romulus::restore

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
#include <deque>
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
  void OnFailoverRequest(uint64_t ticket, const std::string& refused) override;

 private:
  replicator::ControlReply Dispatch(const control::Request& r);
  replicator::ControlReply Status_();
  replicator::ControlReply Failover();
  replicator::ControlReply Digest(const control::DigestReq& r);
  replicator::ControlReply SetReverse(const control::SetReverseToReq& r);
  // The activation the operator's accepted requests started ended with `result`.
  void AnswerAccepted(const Status& result);

  GuestSink* sink_;
  RegionDigestFn digest_fn_;
  TargetCheckFn check_target_;
  BackupObserver* next_;
  BackupService* service_ = nullptr;

  std::mutex mu_;
  std::condition_variable cv_;
  std::string state_ GUARDED_BY(mu_) = "waiting";
  // `failover` requests by ticket (BackupService::RequestFailover): each
  // waits for an answer to its own ticket, never for the end of an
  // activation it did not ask for (one started by the primary's silence).
  uint64_t failover_accepted_ GUARDED_BY(mu_) = 0;  // taken, an activation follows
  struct FailoverAnswer {
    uint64_t upto = 0;     // answers every request from the previous answer's upto + 1
    Status status;
    bool refused = false;  // the judge's refusal, not an activation's end
  };
  // The latest answers, oldest first (bounded: a waiter finds its own even
  // if later ones came before it woke).
  std::deque<FailoverAnswer> failover_answers_ GUARDED_BY(mu_);
  uint64_t failover_answered() const REQUIRES(mu_) {
    return failover_answers_.empty() ? 0 : failover_answers_.back().upto;
  }
  void AddFailoverAnswer(FailoverAnswer a) REQUIRES(mu_);
  bool service_ended_ GUARDED_BY(mu_) = false;  // ActivationDone: activation_ answers every request
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

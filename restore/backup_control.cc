#include "restore/backup_control.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "control/replies.h"

namespace romulus::restore {

using replicator::ControlReply;

BackupControl::BackupControl(GuestSink* sink, RegionDigestFn digest_fn, TargetCheckFn check_target,
                             BackupObserver* next)
    : sink_(sink), digest_fn_(std::move(digest_fn)), check_target_(std::move(check_target)), next_(next) {}

replicator::ControlHandler BackupControl::Handler() {
  const control::Role role = digest_fn_ ? control::Role::kBackup : control::Role::kXenBackup;
  return replicator::ForRole(role, [this](const control::Request& r) { return Dispatch(r); });
}

ControlReply BackupControl::Dispatch(const control::Request& r) {
  if (std::holds_alternative<control::StatusReq>(r)) return Status_();
  if (std::holds_alternative<control::FailoverReq>(r)) return Failover();
  if (const auto* d = std::get_if<control::DigestReq>(&r)) return Digest(*d);
  if (const auto* t = std::get_if<control::SetReverseToReq>(&r)) return SetReverse(*t);
  // ForRole refused everything else already; kept for a future command.
  return control::Refusal(digest_fn_ ? control::Role::kBackup : control::Role::kXenBackup, r);
}

ControlReply BackupControl::Status_() {
  BackupService::View v;
  if (service_) v = service_->view();
  std::lock_guard<std::mutex> lock(mu_);
  control::BackupStatus s;
  const bool held = sink_->has_committed();
  s.state = state_;
  s.committed_epoch = held ? sink_->last_committed_epoch() : 0;
  s.digest = v.digest;
  s.protecting = held && state_ == "receiving";
  s.primary = v.peer;
  s.failed_over = state_ == "activated";
  s.decision = v.decision;
  s.decision_reason = v.why;
  s.sessions = v.sessions;
  s.strays = v.strays;
  s.failover_reason = failover_reason_;
  s.reverse_to = reverse_to_;
  return ControlReply::Ok(control::ToJson(s));
}

ControlReply BackupControl::Failover() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == "activated") return ControlReply::Fail("already activated");
    if (service_ended_) return ControlReply::Fail("the backup stopped: " + activation_.message());
  }
  if (!sink_->has_committed()) return ControlReply::Fail("nothing committed yet: no checkpoint to activate");
  if (!service_) return ControlReply::Fail("the backup is not serving yet");
  const uint64_t ticket = service_->RequestFailover();
  std::unique_lock<std::mutex> lock(mu_);
  // Bounded above the activation's own bounds (an HVM guest's device model
  // may take up to a minute to load its state).
  if (!cv_.wait_for(lock, std::chrono::seconds(150),
                    [&]() REQUIRES(mu_) { return service_ended_ || failover_answered() >= ticket; })) {
    return ControlReply::Fail("activation did not finish within 150 s");
  }
  const FailoverAnswer* mine = nullptr;
  for (const FailoverAnswer& a : failover_answers_) {
    if (a.upto >= ticket) {
      mine = &a;
      break;
    }
  }
  if (mine && mine->refused) return ControlReply::Fail("failover refused: " + mine->status.message());
  const Status answer = mine ? mine->status : activation_;
  if (!answer.ok()) return ControlReply::Fail("activation failed: " + answer.message());
  return ControlReply::Ok(control::FailoverJson(sink_->last_committed_epoch()));
}

ControlReply BackupControl::Digest(const control::DigestReq& r) {
  const uint64_t epoch = r.epoch;
  std::unique_lock<std::mutex> lock(mu_);
  if (digest_.pending) return ControlReply::Fail("another digest request is in progress");
  if (sink_->has_committed() && sink_->last_committed_epoch() >= epoch) {
    return ControlReply::Fail("epoch " + std::to_string(epoch) + " already passed (committed " +
                              std::to_string(sink_->last_committed_epoch()) + "); ask for a later one");
  }
  digest_ = {};
  digest_.pending = true;
  digest_.epoch = epoch;
  digest_.regions = r.regions;
  bool done = cv_.wait_for(lock, std::chrono::seconds(20), [&]() REQUIRES(mu_) { return digest_.done; });
  digest_.pending = false;
  if (!done) return ControlReply::Fail("epoch " + std::to_string(epoch) + " was not committed within 20 s");
  if (!digest_.status.ok()) return ControlReply::Fail(digest_.status.message());
  return ControlReply::Ok(control::ToJson(digest_.answer));
}

ControlReply BackupControl::SetReverse(const control::SetReverseToReq& r) {
  const std::string& target = r.target;
  if (!target.empty()) {
    if (Status st = check_target_ ? check_target_(target) : Status::Ok(); !st.ok()) {
      return ControlReply::Usage("set reverse-to: " + st.message());
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (reverse_decided_) {
    return ControlReply::Fail("too late: the guest is already activated" +
                              (reverse_to_.empty() ? std::string(" (no reverse replication)")
                                                   : " and replicates to " + reverse_to_));
  }
  reverse_to_ = target;
  spdlog::info("control: after activation, {}",
               target.empty() ? "no reverse replication" : "replicate the guest back to " + target);
  return ControlReply::Ok(control::ReverseToJson(target));
}

std::string BackupControl::DecideReverseTo() {
  std::lock_guard<std::mutex> lock(mu_);
  reverse_decided_ = true;
  return reverse_to_;
}

void BackupControl::SetReverseTo(const std::string& target) {
  std::lock_guard<std::mutex> lock(mu_);
  reverse_to_ = target;
}

void BackupControl::ActivationDone(const Status& st, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    service_ended_ = true;
    activation_ = st;
    state_ = st.ok() ? "activated" : "stopped";
    failover_reason_ = reason;
    // Nobody will commit any more: fail a pending digest request.
    if (digest_.pending && !digest_.done) {
      digest_.done = true;
      digest_.status = Status::Closed("the backup stopped receiving");
    }
  }
  cv_.notify_all();
}

void BackupControl::OnState(const std::string& state, const std::string& peer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != "activated") state_ = state;
  }
  if (next_) next_->OnState(state, peer);
}

void BackupControl::OnCommit(const CommitEvent& e) {
  {
    // Here, between Commit(N) and the next epoch, the sink holds exactly N.
    std::lock_guard<std::mutex> lock(mu_);
    if (digest_.pending && !digest_.done && e.epoch >= digest_.epoch) {
      if (e.epoch == digest_.epoch && digest_fn_) {
        auto m = digest_fn_(e.epoch, digest_.regions);
        if (m.ok()) digest_.answer = *m;
        else digest_.status = m.status();
      } else if (e.epoch == digest_.epoch) {
        // No image to split into regions (a Xen backup: libxenguest holds
        // the memory): the epoch's stream digest, the receiver's mirror of
        // every page as committed, is the one region there is.
        if (digest_.regions == 1) {
          digest_.answer = control::DigestAnswer{e.epoch, e.digest, e.guest_pages, {e.digest}};
        } else {
          digest_.status = Status::InvalidArgument(
              "a Xen backup keeps one digest per epoch (its stream digest): ask for 1 region");
        }
      } else {
        digest_.status = Status::OutOfRange("epoch " + std::to_string(digest_.epoch) + " was skipped (resync?)");
      }
      digest_.done = true;
      cv_.notify_all();
    }
  }
  if (next_) next_->OnCommit(e);
}

void BackupControl::OnSessionEnd(const SessionEnd& end) {
  if (next_) next_->OnSessionEnd(end);
}
void BackupControl::OnDecision(const Decision& d) {
  if (next_) next_->OnDecision(d);
}
void BackupControl::OnFence(const Status& result, const std::string& reason, uint64_t epoch, uint64_t digest) {
  if (!result.ok()) AnswerAccepted(result.With("fence command"));
  if (next_) next_->OnFence(result, reason, epoch, digest);
}
void BackupControl::OnActivationFailed(const Status& result, const std::string& reason, uint64_t epoch,
                                       uint64_t digest) {
  AnswerAccepted(result);  // a waiting `ctl failover` learns why; a later one retries
  if (next_) next_->OnActivationFailed(result, reason, epoch, digest);
}

void BackupControl::AnswerAccepted(const Status& result) {
  {
    // Only the requests this activation was started for: one the primary's
    // silence started answers nobody (a request taken later retries).
    std::lock_guard<std::mutex> lock(mu_);
    if (failover_accepted_ <= failover_answered()) return;
    AddFailoverAnswer({failover_accepted_, result, false});
  }
  cv_.notify_all();
}

void BackupControl::AddFailoverAnswer(FailoverAnswer a) {
  failover_answers_.push_back(std::move(a));
  while (failover_answers_.size() > 16) failover_answers_.pop_front();
}

void BackupControl::OnFailoverRequest(uint64_t ticket, const std::string& refused) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (refused.empty()) {
      failover_accepted_ = std::max(failover_accepted_, ticket);
    } else if (ticket > failover_answered()) {
      AddFailoverAnswer({ticket, Status::InvalidArgument(refused), true});
    }
  }
  cv_.notify_all();
  if (next_) next_->OnFailoverRequest(ticket, refused);
}

}  // namespace romulus::restore

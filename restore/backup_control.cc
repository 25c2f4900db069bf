#include "restore/backup_control.h"

#include <spdlog/spdlog.h>

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
  std::unique_lock<std::mutex> lock(mu_);
  if (state_ == "activated") return ControlReply::Fail("already activated");
  if (!sink_->has_committed()) return ControlReply::Fail("nothing committed yet: no checkpoint to activate");
  activation_done_ = false;
  lock.unlock();
  if (service_) service_->RequestFailover();
  lock.lock();
  // Bounded above the activation's own bounds (an HVM guest's device model
  // may take up to a minute to load its state).
  if (!cv_.wait_for(lock, std::chrono::seconds(150), [&]() REQUIRES(mu_) { return activation_done_; })) {
    return ControlReply::Fail("activation did not finish within 150 s");
  }
  if (!activation_.ok()) return ControlReply::Fail("activation failed: " + activation_.message());
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
    activation_done_ = true;
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
  if (!result.ok()) {
    // A waiting `ctl failover` learns that the fence refused.
    std::lock_guard<std::mutex> lock(mu_);
    activation_done_ = true;
    activation_ = result.With("fence command");
    cv_.notify_all();
  }
  if (next_) next_->OnFence(result, reason, epoch, digest);
}
void BackupControl::OnActivationFailed(const Status& result, const std::string& reason, uint64_t epoch,
                                       uint64_t digest) {
  {
    // A waiting `ctl failover` learns why; a later one retries.
    std::lock_guard<std::mutex> lock(mu_);
    activation_done_ = true;
    activation_ = result;
  }
  cv_.notify_all();
  if (next_) next_->OnActivationFailed(result, reason, epoch, digest);
}

}  // namespace romulus::restore

#include "restore/backup_control.h"

#include <spdlog/spdlog.h>

#include "common/digest.h"

namespace romulus::restore {

using replicator::ControlReply;
using replicator::JsonString;

BackupControl::BackupControl(GuestSink* sink, RegionDigestFn digest_fn, TargetCheckFn check_target,
                             BackupObserver* next)
    : sink_(sink), digest_fn_(std::move(digest_fn)), check_target_(std::move(check_target)), next_(next) {}

replicator::ControlHandler BackupControl::Handler() {
  return [this](const std::vector<std::string>& w) -> ControlReply {
    const std::string& cmd = w[0];
    if (cmd == "status" && w.size() == 1) return Status_();
    if (cmd == "failover" && w.size() == 1) return Failover();
    if (cmd == "digest" && (w.size() == 2 || w.size() == 3)) return Digest(w);
    if (cmd == "set" && w.size() >= 2 && w[1] == "reverse-to") return SetReverse(w);
    if (cmd == "set" || cmd == "pause" || cmd == "resume" || cmd == "switchover" || cmd == "stats") {
      return ControlReply::Fail("'" + cmd +
                                "' is a primary command; this is the backup (romulus ctl --socket PRIMARY.sock ...)");
    }
    return ControlReply::Usage("unknown or malformed command '" + cmd +
                               "' (backup: status, failover, digest EPOCH [REGIONS], set reverse-to HOST:PORT|none)");
  };
}

ControlReply BackupControl::Status_() {
  BackupService::View v;
  if (service_) v = service_->view();
  std::lock_guard<std::mutex> lock(mu_);
  const bool held = sink_->has_committed();
  const uint64_t epoch = held ? sink_->last_committed_epoch() : 0;
  const bool protecting = held && state_ == "receiving";
  std::string m = "\"role\":\"backup\",\"state\":" + JsonString(state_) + ",\"epoch\":" + std::to_string(epoch) +
                  ",\"committed_epoch\":" + std::to_string(epoch) + ",\"digest\":\"" + DigestHex(v.digest) +
                  "\",\"protection\":" + (protecting ? "\"PROTECTED\"" : "\"UNPROTECTED\"") +
                  ",\"primary\":" + JsonString(v.peer) + ",\"failover\":" + (state_ == "activated" ? "true" : "false") +
                  ",\"decision\":" + JsonString(v.decision) + ",\"decision_reason\":" + JsonString(v.why) +
                  ",\"sessions\":" + std::to_string(v.sessions) + ",\"strays\":" + std::to_string(v.strays);
  if (!failover_reason_.empty()) m += ",\"failover_reason\":" + JsonString(failover_reason_);
  if (!reverse_to_.empty()) m += ",\"reverse_to\":" + JsonString(reverse_to_);
  m += ",\"output_commit\":\"primary side\"";
  return ControlReply::Ok(m);
}

ControlReply BackupControl::Failover() {
  std::unique_lock<std::mutex> lock(mu_);
  if (state_ == "activated") return ControlReply::Fail("already activated");
  if (!sink_->has_committed()) return ControlReply::Fail("nothing committed yet: no checkpoint to activate");
  activation_done_ = false;
  lock.unlock();
  if (service_) service_->RequestFailover();
  lock.lock();
  if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return activation_done_; })) {
    return ControlReply::Fail("activation did not finish within 60 s");
  }
  if (!activation_.ok()) return ControlReply::Fail("activation failed: " + activation_.message());
  return ControlReply::Ok("\"activated\":true,\"epoch\":" + std::to_string(sink_->last_committed_epoch()));
}

ControlReply BackupControl::Digest(const std::vector<std::string>& w) {
  if (!digest_fn_) return ControlReply::Fail("digest: only for a simulated guest's image (not --xen)");
  uint64_t epoch = 0, regions = 16;
  try {
    size_t used = 0;
    epoch = std::stoull(w[1], &used);
    if (used != w[1].size()) throw std::invalid_argument(w[1]);
    if (w.size() == 3) {
      regions = std::stoull(w[2], &used);
      if (used != w[2].size()) throw std::invalid_argument(w[2]);
    }
  } catch (const std::exception&) {
    epoch = 0;
  }
  if (epoch == 0 || regions == 0 || regions > 4096) return ControlReply::Usage("usage: digest EPOCH [REGIONS 1..4096]");
  std::unique_lock<std::mutex> lock(mu_);
  if (digest_.pending) return ControlReply::Fail("another digest request is in progress");
  if (sink_->has_committed() && sink_->last_committed_epoch() >= epoch) {
    return ControlReply::Fail("epoch " + std::to_string(epoch) + " already passed (committed " +
                              std::to_string(sink_->last_committed_epoch()) + "); ask for a later one");
  }
  digest_ = {};
  digest_.pending = true;
  digest_.epoch = epoch;
  digest_.regions = static_cast<uint32_t>(regions);
  bool done = cv_.wait_for(lock, std::chrono::seconds(20), [&] { return digest_.done; });
  digest_.pending = false;
  if (!done) return ControlReply::Fail("epoch " + std::to_string(epoch) + " was not committed within 20 s");
  if (!digest_.status.ok()) return ControlReply::Fail(digest_.status.message());
  return ControlReply::Ok(digest_.members);
}

ControlReply BackupControl::SetReverse(const std::vector<std::string>& w) {
  if (w.size() != 3) return ControlReply::Usage("usage: set reverse-to HOST:PORT|none");
  std::string target;
  if (w[2] != "none") {
    if (Status st = check_target_ ? check_target_(w[2]) : Status::Ok(); !st.ok()) {
      return ControlReply::Usage("set reverse-to: " + st.message());
    }
    target = w[2];
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
  return ControlReply::Ok("\"reverse_to\":" + JsonString(target));
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
      if (e.epoch == digest_.epoch) {
        auto m = digest_fn_(e.epoch, digest_.regions);
        if (m.ok()) digest_.members = *m;
        else digest_.status = m.status();
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

}  // namespace romulus::restore

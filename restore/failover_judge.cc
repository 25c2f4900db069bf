#include "restore/failover_judge.h"

namespace romulus::restore {

namespace {

std::string Ms(std::chrono::nanoseconds d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

}  // namespace

const char* EndCauseName(EndCause cause) {
  switch (cause) {
    case EndCause::kNotEstablished: return "not-established";
    case EndCause::kByeStop: return "bye-stop";
    case EndCause::kByeGuestStopped: return "bye-guest-stopped";
    case EndCause::kByeHandover: return "bye-handover";
    case EndCause::kPeerError: return "primary-error";
    case EndCause::kCorruptStream: return "corrupt-stream";
    case EndCause::kConnectionLost: return "connection-lost";
    case EndCause::kSilence: return "silence";
    case EndCause::kSuperseded: return "superseded";
    case EndCause::kLocalFailure: return "local-failure";
    case EndCause::kShutdown: return "shutdown";
  }
  return "?";
}

const char* DecisionName(Decision::Kind kind) {
  switch (kind) {
    case Decision::kWait: return "wait";
    case Decision::kActivate: return "activate";
    case Decision::kStop: return "stop";
    case Decision::kHold: return "hold";
  }
  return "?";
}

void FailoverJudge::CheckpointLoaded(uint64_t epoch) {
  has_checkpoint_ = true;
  checkpoint_epoch_ = epoch;
  // Loaded from disk: whatever the primary did since that backup stopped is
  // unknown, so it is trusted only once a session of ours commits on top.
  trusted_ = false;
  untrusted_why_ = "checkpoint " + std::to_string(epoch) +
                   " was loaded from the image, and no session has committed since";
}

void FailoverJudge::SessionStarted(Duration now) {
  in_session_ = true;
  // A handover the judge could not honour (a checkpoint that could not be
  // resumed) is over once the primary is back.
  handover_ = false;
  session_committed_ = false;
  // The primary is back: it is protected again, the failed activation moot.
  activation_failed_.clear();
  PrimaryHeard(now);
  if (has_checkpoint_ && trusted_) {
    // A new session means the primary lost the previous one and ran
    // unprotected (its output released) until now: checkpoint N is older
    // than what the world has seen, until this session commits.
    trusted_ = false;
    untrusted_why_ = "a new session began after checkpoint " + std::to_string(checkpoint_epoch_) +
                     " and has not committed yet (the primary ran unprotected in between)";
  }
}

void FailoverJudge::PrimaryRefused(Duration now, const std::string& why) {
  PrimaryHeard(now);
  if (!has_checkpoint_) return;
  trusted_ = false;
  untrusted_why_ = "the guest's primary connected again and this backup refused it (" + why +
                   "), so it runs unprotected and checkpoint " + std::to_string(checkpoint_epoch_) +
                   " is older than the guest's visible state";
}

void FailoverJudge::PrimaryHeard(Duration now) {
  if (!heard_ || now > heard_at_) heard_at_ = now;
  heard_ = true;
}

void FailoverJudge::Committed(uint64_t epoch, Duration now, const std::string& incomplete) {
  incomplete_ = incomplete;
  // An operator's request taken for a whole checkpoint does not carry over
  // to one that cannot be resumed.
  if (!incomplete_.empty()) operator_failover_ = false;
  has_checkpoint_ = true;
  checkpoint_epoch_ = epoch;
  trusted_ = true;
  untrusted_why_.clear();
  session_committed_ = true;
  PrimaryHeard(now);
}

void FailoverJudge::SessionEnded(EndCause cause, const std::string& detail, Duration now) {
  if (cause == EndCause::kNotEstablished) return;  // strays prove nothing and move nothing
  in_session_ = false;
  last_end_ = cause;
  last_detail_ = detail;
  switch (cause) {
    case EndCause::kByeStop:
    case EndCause::kByeGuestStopped:
      stopped_ = true;
      guest_stopped_ = cause == EndCause::kByeGuestStopped;
      stop_detail_ = detail;
      break;
    case EndCause::kByeHandover:
      handover_ = true;
      handover_detail_ = detail;  // a planned switchover, or why the primary relinquished its guest
      PrimaryHeard(now);
      break;
    case EndCause::kPeerError:
    case EndCause::kCorruptStream:
      // The primary sent these bytes just now: it is alive, and its session is
      // over. It goes on without this backup (UNPROTECTED, its buffered output
      // released, FAILURE-MODEL.md §7) until a new session commits, so the
      // checkpoint held is older than what the world has seen, exactly as
      // once a new session begins (SessionStarted). Its silence from now on is
      // a primary that cannot reach us, not proof of its death: activating on
      // it would run a second, older copy beside the live guest (--no-fence)
      // or kill the live guest for an older one (a fence).
      PrimaryHeard(now);
      if (has_checkpoint_ && trusted_) {
        trusted_ = false;
        untrusted_why_ = "the primary ended the session alive (" + std::string(EndCauseName(cause)) +
                         (detail.empty() ? "" : ": " + detail) + ") and runs unprotected until a new session commits, so " +
                         "checkpoint " + std::to_string(checkpoint_epoch_) + " is older than the guest's visible state";
      }
      break;
    case EndCause::kSuperseded:
      // The primary sent these bytes just now: it is alive (SessionStarted
      // follows and says what that means for the checkpoint).
      PrimaryHeard(now);
      break;
    case EndCause::kLocalFailure:
      trusted_ = false;
      untrusted_why_ = "this backup's own resources failed: storage or memory (" + detail + "); the primary was told and runs unprotected" +
                       (has_checkpoint_ ? ", so checkpoint " + std::to_string(checkpoint_epoch_) +
                                              " is older than the guest's visible state"
                                        : std::string());
      break;
    case EndCause::kConnectionLost:
    case EndCause::kSilence:
    case EndCause::kShutdown:
    case EndCause::kNotEstablished:
      break;  // no new evidence about the primary
  }
}

std::string FailoverJudge::OperatorFailover() {
  // A refused request is not remembered: it must never fire later, when a
  // checkpoint appears and a session ends for some other reason.
  if (!has_checkpoint_) return "nothing is committed: no checkpoint to activate";
  if (!incomplete_.empty()) {
    return "checkpoint " + std::to_string(checkpoint_epoch_) + " cannot be resumed: " + incomplete_;
  }
  operator_failover_ = true;
  fence_failed_.clear();
  activation_failed_.clear();
  return "";
}

void FailoverJudge::FenceFailed(const std::string& detail) {
  fence_failed_ = detail;
  operator_failover_ = false;
}

void FailoverJudge::ActivationFailed(const std::string& detail) {
  activation_failed_ = detail;
  operator_failover_ = false;
}

Decision FailoverJudge::Decide(Duration now) const {
  Decision d;
  const std::string held = "checkpoint " + std::to_string(checkpoint_epoch_);
  if (stopped_) {
    d.kind = Decision::kStop;
    if (guest_stopped_) {
      // Not the operator's stop: the guest itself ended (a poweroff, or a
      // crash the primary saw instead of a suspend). Its last checkpoint is
      // of a guest on its way out; running it again is for a person to decide.
      d.why = "the primary reports that its guest stopped (" +
              (stop_detail_.empty() ? std::string("no reason given") : stop_detail_) + "); not failing over: " +
              (has_checkpoint_ ? held + " is of a guest that was about to shut down or die, so whether to start "
                                        "it again is the operator's decision"
                               : std::string("nothing was committed"));
    } else {
      d.why = "the primary stopped replication cleanly (BYE)";
    }
    return d;
  }
  if (!fence_failed_.empty()) {
    d.kind = Decision::kHold;
    d.why = "the fence command did not confirm (" + fence_failed_ +
            "): not activating, the primary may still run; `romulus ctl failover` retries";
    return d;
  }
  if (!activation_failed_.empty()) {
    d.kind = Decision::kHold;
    d.why = "activating " + held + " failed (" + activation_failed_ +
            "): the checkpoint is kept, not running; `romulus ctl failover` retries";
    return d;
  }
  if (has_checkpoint_ && !incomplete_.empty()) {
    // Resuming memory on a partial disk would run a second, corrupt guest.
    d.kind = Decision::kHold;
    d.why = held + " cannot be resumed: " + incomplete_ +
            "; the backup holds no disk to resume the guest on until the copy completes";
    if (in_session_) {
      d.kind = Decision::kWait;
      d.deadline = heard_at_ + config_.failover_timeout;
    }
    return d;
  }
  if (handover_ && has_checkpoint_) {
    d.kind = Decision::kActivate;
    d.handover = true;
    d.why = "the primary handed over after epoch " + std::to_string(checkpoint_epoch_) + ": " +
            (handover_detail_.empty() ? std::string("planned switchover") : handover_detail_);
    return d;  // the primary paused its guest for good and said so: no fence
  }
  if (operator_failover_) {  // taken only with a checkpoint to resume
    d.kind = Decision::kActivate;
    d.run_fence = config_.fencing == Fencing::kCommand;
    d.why = "failover requested by the operator (romulus ctl failover)";
    return d;
  }
  if (in_session_) {
    d.kind = Decision::kWait;
    d.deadline = heard_at_ + config_.failover_timeout;
    d.why = "serving the primary";
    return d;
  }
  if (!has_checkpoint_) {
    d.kind = Decision::kHold;
    d.why = "nothing committed yet: no checkpoint to fail over to; waiting for the primary";
    return d;
  }
  if (!heard_) {
    d.kind = Decision::kHold;
    d.why = held + " held; waiting for the primary to connect (no session since this backup started, "
                   "so its silence proves nothing)";
    return d;
  }
  if (!trusted_) {
    d.kind = Decision::kHold;
    d.why = held + " is not activated on silence: " + untrusted_why_ +
            "; `romulus ctl failover` activates it on the operator's word";
    return d;
  }
  const Duration silent = now - heard_at_;
  const std::string after = std::string(EndCauseName(last_end_)) + (last_detail_.empty() ? "" : ": " + last_detail_);
  if (silent < config_.failover_timeout) {
    d.kind = Decision::kWait;
    d.deadline = heard_at_ + config_.failover_timeout;
    d.why = "primary last heard " + Ms(silent) + " ago (running time) after " + after + "; waiting up to " +
            Ms(config_.failover_timeout) + " for it to come back";
    return d;
  }
  if (config_.fencing == Fencing::kUnset) {
    d.kind = Decision::kHold;
    d.why = "primary silent for " + Ms(silent) + " after " + after +
            ", but no fencing choice was made (--fence-cmd or --no-fence): not activating";
    return d;
  }
  d.kind = Decision::kActivate;
  d.run_fence = config_.fencing == Fencing::kCommand;
  d.why = "primary silent for " + Ms(silent) + " (running time; failover timeout " + Ms(config_.failover_timeout) +
          ") after " + after;
  return d;
}

}  // namespace romulus::restore

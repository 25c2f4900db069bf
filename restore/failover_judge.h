// FailoverJudge: the backup's failover decision, as one pure function of what
// it observed (docs/FAILURE-MODEL.md §2-§6).
//
// The backup service feeds it facts as they happen (a session began, bytes
// came from the primary, an epoch was committed, a session ended and why, the
// operator asked, the fence failed) together with the running time of each
// (restore/running_clock.h), and asks Decide(now) after every fact and at
// every wake-up. No clock, no I/O, no threads here: the unit test drives it
// with tables of event sequences.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace romulus::restore {

// Why a connection with the primary ended (filled in by the receiver).
enum class EndCause {
  kNotEstablished,  // ended before an accepted HELLO: a stray, a probe, a refused peer
  kByeStop,         // BYE operator-stop: replication stopped on purpose
  kByeGuestStopped, // BYE guest-shutdown: the primary's guest shut down or died (the detail says how)
  kByeHandover,     // BYE handover: planned switchover, activate now
  kPeerError,       // ERROR from the primary (e.g. resync): it is alive
  kCorruptStream,   // bad bytes, digest mismatch, protocol violation: it is alive
  kConnectionLost,  // EOF, reset, failed write: proves nothing about the primary
  kSilence,         // no byte for the failover timeout of running time
  kSuperseded,      // a new authenticated HELLO from the primary took over
  kLocalFailure,    // this backup's own storage failed (ENOSPC, EIO)
  kShutdown,        // this process is stopping, or the operator asked to fail over
};
const char* EndCauseName(EndCause cause);

enum class Fencing {
  kUnset,    // neither --fence-cmd nor --no-fence: never activate on silence
  kCommand,  // --fence-cmd: fence, then activate
  kNone,     // --no-fence: activate on silence alone (partition = two copies)
};

struct JudgeConfig {
  std::chrono::nanoseconds failover_timeout{std::chrono::seconds(1)};
  Fencing fencing = Fencing::kUnset;
};

struct Decision {
  enum Kind {
    kWait,      // keep serving; re-ask by `deadline` (running time) at the latest
    kActivate,  // fence (if configured), then activate the last checkpoint
    kStop,      // exit without activating (BYE operator-stop or guest-shutdown)
    kHold,      // do not activate on our own; keep serving; `why` says why
  };
  Kind kind = kWait;
  std::chrono::nanoseconds deadline{0};  // with kWait: when silence reaches the timeout
  bool run_fence = false;                // with kActivate
  bool handover = false;                 // with kActivate: on the primary's BYE handover (no epoch lost)
  std::string why;                       // the evidence, for logs, events and status
};
const char* DecisionName(Decision::Kind kind);

class FailoverJudge {
 public:
  using Duration = std::chrono::nanoseconds;
  explicit FailoverJudge(const JudgeConfig& config) : config_(config) {}

  // At start: the image already holds a committed epoch (from an earlier run).
  void CheckpointLoaded(uint64_t epoch);
  // An authenticated HELLO was accepted: a session with the primary begins.
  void SessionStarted(Duration now);
  // Bytes arrived from the primary on the session.
  void PrimaryHeard(Duration now);
  // An authenticated HELLO for the guest this backup holds was refused (the
  // primary's Xen is newer than ours, the guest outgrew a limit, ...): the
  // primary is alive, and runs unprotected from now on, so the checkpoint is
  // older than what the world has seen and is never activated on silence.
  void PrimaryRefused(Duration now, const std::string& why);
  // `incomplete`: empty when the checkpoint can be resumed; otherwise why
  // not (a disk still being copied, docs/DISK.md §7.1). Such a checkpoint is
  // never activated, not even on the operator's word or at a handover.
  void Committed(uint64_t epoch, Duration now, const std::string& incomplete = "");
  void SessionEnded(EndCause cause, const std::string& detail, Duration now);
  // `romulus ctl failover`.
  // Returns "" when taken (the next Decide activates, fence permitting);
  // otherwise why not (nothing committed, a checkpoint that cannot be
  // resumed), and nothing is remembered.
  std::string OperatorFailover();
  // The fence command did not confirm (non-zero exit, timeout, not runnable).
  void FenceFailed(const std::string& detail);
  // Activating the checkpoint failed and the sink still holds it (an HVM
  // guest's device model that did not start, a disk blkback did not take):
  // hold it and say why until the operator retries (`romulus ctl failover`)
  // or the primary is back (a new session).
  void ActivationFailed(const std::string& detail);

  Decision Decide(Duration now) const;

  bool has_checkpoint() const { return has_checkpoint_; }
  uint64_t checkpoint_epoch() const { return checkpoint_epoch_; }
  bool in_session() const { return in_session_; }

 private:
  JudgeConfig config_;
  bool has_checkpoint_ = false;
  uint64_t checkpoint_epoch_ = 0;
  // The checkpoint may be activated on silence: it was committed by the most
  // recent session, and nothing since told the primary to run unprotected
  // (a local failure, a new session that has not committed yet).
  bool trusted_ = false;
  bool heard_ = false;     // the primary was heard since this process started
  Duration heard_at_{0};   // running time of the last byte from the primary
  bool in_session_ = false;
  bool session_committed_ = false;
  bool operator_failover_ = false;
  bool handover_ = false;
  std::string handover_detail_;  // the BYE's text
  bool stopped_ = false;
  bool guest_stopped_ = false;  // with stopped_: BYE guest-shutdown, not the operator's stop
  std::string stop_detail_;     // with stopped_: what the primary said
  std::string fence_failed_;  // non-empty once the fence refused
  std::string activation_failed_;  // non-empty once an activation failed
  EndCause last_end_ = EndCause::kNotEstablished;
  std::string last_detail_;
  std::string untrusted_why_;
  std::string incomplete_;  // the checkpoint cannot be resumed, and why
};

}  // namespace romulus::restore

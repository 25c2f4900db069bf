// BackupService: the backup's whole lifecycle (docs/FAILURE-MODEL.md).
//
//   accept ──▶ read HELLO (concurrently, bounded) ──▶ session ──▶ decide ──▶ fence ──▶ activate
//      ▲                                                  │           │
//      └──────────────────── wait / hold ◀────────────────┴───────────┘
//
// Threads: Run() is the service thread: it serves one session at a time
// (CheckpointReceiver) and asks the FailoverJudge after every fact and at
// every wake-up (~100 ms), measuring silence on its RunningClock. An
// acceptor thread takes connections from the Listener (which completes TLS
// handshakes concurrently, bounded) and reads each one's HELLO on a thread
// of its own under a short deadline, at most `max_pending_hellos` at once;
// only a valid HELLO reaches the service thread, so a stray can neither hold
// the session slot nor move a deadline. A valid HELLO for the guest being
// served while a session is open supersedes that session (the primary lost
// it before we did; docs/PROTOCOL.md §4).
//
// What the service does not own: flags (cli/), the event file and metrics
// (the observer), the control socket (restore/backup_control.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "restore/checkpoint_receiver.h"
#include "restore/failover_judge.h"
#include "restore/guest_sink.h"
#include "transport/tcp.h"

namespace romulus::restore {

struct BackupServiceOptions {
  ReceiverOptions receiver;
  JudgeConfig judge;
  std::string fence_cmd;  // with judge.fencing == kCommand
  std::chrono::milliseconds fence_timeout{30000};
  size_t max_pending_hellos = 32;
  uint64_t loaded_digest = 0;  // digest of the checkpoint the sink held at start
};

// Hooks for events, metrics and the control socket. Called from the service
// thread unless said otherwise; must not block for long.
class BackupObserver {
 public:
  virtual ~BackupObserver() = default;
  // waiting | receiving | holding | fencing | activating | activated | stopped
  virtual void OnState(const std::string& /*state*/, const std::string& /*peer*/) {}
  // Between Commit(N) and the next epoch: the sink holds exactly N.
  virtual void OnCommit(const CommitEvent& /*e*/) {}
  virtual void OnSessionEnd(const SessionEnd& /*end*/) {}
  // Each time the decision's kind or reason changes.
  virtual void OnDecision(const Decision& /*d*/) {}
  // The fence command ran for `reason`, before activating `epoch` (digest).
  virtual void OnFence(const Status& /*result*/, const std::string& /*reason*/, uint64_t /*epoch*/,
                       uint64_t /*digest*/) {}
  // Activating `epoch` for `reason` failed with `result`, and the sink still
  // holds the checkpoint: the backup holds it, not running, until the
  // operator retries or the primary is back.
  virtual void OnActivationFailed(const Status& /*result*/, const std::string& /*reason*/, uint64_t /*epoch*/,
                                  uint64_t /*digest*/) {}
  // The operator's failover requests up to `ticket` (RequestFailover) were
  // taken: `refused` says why the judge turned them down, or is empty and
  // an activation follows at once (its end answers them: OnFence with a
  // failure, OnActivationFailed, or the service's end).
  virtual void OnFailoverRequest(uint64_t /*ticket*/, const std::string& /*refused*/) {}
};

struct BackupOutcome {
  enum Kind {
    kStopped,           // Stop() (a signal): the guest is not activated
    kCleanStop,         // the primary said BYE: not activated
    kActivated,         // the guest runs here now
    kActivationFailed,  // the sink could not resume it, nor does it hold the checkpoint any more
  };
  Kind kind = kStopped;
  std::string reason;
  uint64_t epoch = 0;     // the checkpoint activated (or held)
  uint64_t digest = 0;    // its digest, as committed
  bool handover = false;  // planned switchover
  Status status;          // with kActivationFailed
  std::chrono::microseconds activation_time{0};
};

class BackupService {
 public:
  BackupService(transport::Listener* listener, GuestSink* sink, const BackupServiceOptions& options,
                BackupObserver* observer);
  ~BackupService();

  // Serves until activation, a clean stop or Stop(). Call once.
  BackupOutcome Run();

  // Thread-safe. Stop(): leave without activating. RequestFailover(): the
  // operator's `ctl failover` (fence if configured, then activate); returns
  // the request's ticket, which OnFailoverRequest reports as taken.
  void Stop();
  uint64_t RequestFailover();

  // Thread-safe snapshot for `ctl status`.
  struct View {
    std::string state = "waiting";
    std::string peer;
    std::string decision;  // DecisionName
    std::string why;       // the judge's reason
    uint64_t digest = 0;   // of the last committed epoch (0 if none)
    uint64_t sessions = 0, strays = 0, superseded = 0;
  };
  View view() const;

 private:
  struct Pending;
  void AcceptLoop();
  void ReadHelloOf(std::shared_ptr<Pending> p);
  void ReapPending() REQUIRES(mu_);
  void SetState(const std::string& state, const std::string& peer);
  void Publish(const Decision& d);
  BackupOutcome Activate(const Decision& d);

  // Written under mu_ (nullptr once Run() returned, so Stop() never touches a
  // dropped listener); the acceptor reads it without mu_, which is safe as it
  // is joined before that write. Hence no GUARDED_BY.
  transport::Listener* listener_;
  GuestSink* sink_;
  BackupServiceOptions options_;
  BackupObserver* observer_;
  BackupObserver null_observer_;
  CheckpointReceiver receiver_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  bool failover_requested_ GUARDED_BY(mu_) = false;
  uint64_t failover_ticket_ GUARDED_BY(mu_) = 0;  // the latest request's
  struct Ready {
    std::unique_ptr<transport::Stream> stream;
    protocol::Hello hello;
  };
  std::deque<Ready> ready_ GUARDED_BY(mu_);                      // valid HELLOs waiting
  std::list<std::shared_ptr<Pending>> pending_ GUARDED_BY(mu_);  // HELLO readers
  transport::Stream* session_stream_ GUARDED_BY(mu_) = nullptr;
  std::string session_identity_ GUARDED_BY(mu_);
  bool superseded_ GUARDED_BY(mu_) = false;
  View view_ GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point next_stray_log_ GUARDED_BY(mu_) = {};
  uint64_t strays_since_log_ GUARDED_BY(mu_) = 0;
  std::thread acceptor_;
  uint64_t last_digest_ = 0;  // service thread
  // The guest of the last session that was established (service thread): a
  // refused HELLO naming it came from our guest's primary.
  std::string held_identity_;
};

}  // namespace romulus::restore

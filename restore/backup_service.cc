#include "restore/backup_service.h"

#include <spdlog/spdlog.h>

#include "common/digest.h"
#include "common/thread_name.h"
#include "protocol/messages.h"
#include "restore/fence.h"
#include "restore/running_clock.h"

namespace romulus::restore {

using Clock = std::chrono::steady_clock;

// A connection whose HELLO is being read on a thread of its own.
struct BackupService::Pending {
  std::unique_ptr<transport::Stream> stream;  // moved out once the HELLO is valid
  transport::Stream* raw = nullptr;           // for Shutdown while the reader holds it
  std::thread thread;
  Clock::time_point since;
  // The thread is finishing. Guarded by BackupService::mu_ (another object's
  // mutex, which an annotation on this struct cannot name).
  bool done = false;
};

BackupService::BackupService(transport::Listener* listener, GuestSink* sink, const BackupServiceOptions& options,
                             BackupObserver* observer)
    : listener_(listener),
      sink_(sink),
      options_(options),
      observer_(observer ? observer : &null_observer_),
      receiver_(options.receiver) {}

BackupService::~BackupService() {
  Stop();
  if (acceptor_.joinable()) acceptor_.join();
  std::list<std::shared_ptr<Pending>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(pending_);
  }
  for (auto& p : left) {
    if (p->thread.joinable()) p->thread.join();
  }
}

void BackupService::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = true;
  if (session_stream_) session_stream_->Shutdown();
  for (auto& p : pending_) {
    if (!p->done && p->raw) p->raw->Shutdown();
  }
  if (listener_) listener_->Shutdown();
  cv_.notify_all();
}

uint64_t BackupService::RequestFailover() {
  std::lock_guard<std::mutex> lock(mu_);
  failover_requested_ = true;
  const uint64_t ticket = ++failover_ticket_;
  if (session_stream_) session_stream_->Shutdown();
  cv_.notify_all();
  return ticket;
}

BackupService::View BackupService::view() const {
  std::lock_guard<std::mutex> lock(mu_);
  return view_;
}

void BackupService::SetState(const std::string& state, const std::string& peer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    view_.state = state;
    view_.peer = peer;
  }
  observer_->OnState(state, peer);
}

// Joins the HELLO readers that have finished.
void BackupService::ReapPending() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if ((*it)->done) {
      if ((*it)->thread.joinable()) (*it)->thread.join();
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

void BackupService::AcceptLoop() {
  while (true) {
    auto s = listener_->Accept(transport::NoDeadline());
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_) return;
    if (!s.ok()) {
      if (s.status().code() == Code::kClosed) return;  // the listener was shut down
      if (s.status().code() == Code::kTimeout) continue;
      // The listening socket itself failed (it repeats on every call): say
      // so, and retry at a calm pace rather than spin.
      spdlog::error("cannot accept connections: {}; retrying in 1 s", s.status().ToString());
      cv_.wait_for(lock, std::chrono::seconds(1), [&]() REQUIRES(mu_) { return stop_; });
      continue;
    }
    ReapPending();
    if (pending_.size() >= options_.max_pending_hellos) {
      // Full: drop the oldest pending connection. A real primary sends its
      // HELLO at once, so the oldest is almost surely a silent stray, and
      // a flood of new ones cannot pin the slots it took first.
      auto oldest = pending_.front();
      if (!oldest->done && oldest->raw) oldest->raw->Shutdown();
    }
    auto p = std::make_shared<Pending>();
    p->raw = s->get();
    p->stream = std::move(*s);
    p->since = Clock::now();
    pending_.push_back(p);
    p->thread = std::thread([this, p] {
      NameThisThread("hello-reader");
      ReadHelloOf(p);
    });
  }
}

void BackupService::ReadHelloOf(std::shared_ptr<Pending> p) {
  auto hello = CheckpointReceiver::ReadHello(*p->stream, transport::DeadlineIn(options_.receiver.hello_timeout));
  std::lock_guard<std::mutex> lock(mu_);
  if (!hello.ok() || stop_) {
    p->stream->Shutdown();
    if (!stop_) {
      // A stray: it never touches the session, a deadline or the judge.
      ++view_.strays;
      ++strays_since_log_;
      const auto now = Clock::now();
      if (now >= next_stray_log_) {
        spdlog::warn("dropped {} connection(s) that sent no valid HELLO (last from {}: {})", strays_since_log_,
                     p->stream->Peer(), hello.status().ToString());
        strays_since_log_ = 0;
        next_stray_log_ = now + std::chrono::seconds(10);
      }
    }
    p->done = true;
    return;
  }
  if (session_stream_ && hello->identity == session_identity_) {
    // The primary reconnected: it lost the open session before we noticed.
    spdlog::info("new session from the primary ({}) supersedes the open one", p->stream->Peer());
    superseded_ = true;
    session_stream_->Shutdown();
  }
  ready_.push_back(Ready{std::move(p->stream), std::move(*hello)});
  p->raw = nullptr;
  p->done = true;
  cv_.notify_all();
}

void BackupService::Publish(const Decision& d) {
  bool changed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string kind = DecisionName(d.kind);
    // A wait's reason counts milliseconds: only a change of kind is news.
    changed = view_.decision != kind || (d.kind != Decision::kWait && view_.why != d.why);
    view_.decision = kind;
    view_.why = d.why;
  }
  if (!changed) return;
  switch (d.kind) {
    case Decision::kHold:
      spdlog::warn("not activating: {}", d.why);
      SetState("holding", "");
      break;
    case Decision::kWait:
      spdlog::info("{}", d.why);
      break;
    default:
      break;
  }
  observer_->OnDecision(d);
}

BackupOutcome BackupService::Activate(const Decision& d) {
  BackupOutcome out;
  out.epoch = sink_->last_committed_epoch();
  out.digest = last_digest_;
  out.reason = d.why;
  out.handover = d.handover;
  SetState("activating", "");
  if (out.handover) spdlog::info("handover from the primary: activating (no epoch lost)");
  spdlog::warn("FAILOVER: {}; activating the guest from epoch {} (digest {})", d.why, out.epoch,
               DigestHex(last_digest_));
  const auto t0 = Clock::now();
  out.status = sink_->Activate(d.why);
  out.activation_time = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
  out.kind = out.status.ok() ? BackupOutcome::kActivated : BackupOutcome::kActivationFailed;
  // A failure's state is Run's to say: holding (the checkpoint kept) or stopped.
  if (out.status.ok()) SetState("activated", "");
  return out;
}

BackupOutcome BackupService::Run() {
  if (sink_->has_committed()) last_digest_ = options_.loaded_digest;
  acceptor_ = std::thread([this] {
    NameThisThread("backup-accept");
    AcceptLoop();
  });
  RunningClock clock(Clock::now());
  FailoverJudge judge(options_.judge);
  if (sink_->has_committed()) judge.CheckpointLoaded(sink_->last_committed_epoch());
  const auto tick = std::chrono::duration_cast<std::chrono::milliseconds>(RunningClock::kTick);
  BackupOutcome outcome;

  while (true) {
    const auto now = clock.Advance(Clock::now());
    uint64_t taken = 0;  // the operator's requests up to this one are answered by this round
    std::string refused;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        outcome.kind = BackupOutcome::kStopped;
        break;
      }
      if (failover_requested_) {
        failover_requested_ = false;
        taken = failover_ticket_;
        spdlog::warn("control: operator requested failover");
        refused = judge.OperatorFailover();
        if (!refused.empty()) spdlog::warn("control: operator failover refused: {}", refused);
      }
    }
    if (taken != 0) observer_->OnFailoverRequest(taken, refused);
    Decision d = judge.Decide(now);
    Publish(d);
    if (d.kind == Decision::kStop) {
      outcome.kind = BackupOutcome::kCleanStop;
      outcome.epoch = sink_->last_committed_epoch();
      outcome.digest = last_digest_;
      outcome.reason = d.why;
      break;
    }
    if (d.kind == Decision::kActivate) {
      if (d.run_fence) {
        SetState("fencing", "");
        spdlog::info("running fence command: {}", options_.fence_cmd);
        Status fenced = RunFenceCommand(options_.fence_cmd, d.why, sink_->last_committed_epoch(),
                                        options_.fence_timeout);
        observer_->OnFence(fenced, d.why, sink_->last_committed_epoch(), last_digest_);
        if (!fenced.ok()) {
          spdlog::error("fence command failed ({}): NOT activating the guest, to avoid two live copies",
                        fenced.message());
          judge.FenceFailed(fenced.message());
          continue;
        }
        spdlog::info("fence command confirmed: the primary is fenced");
      }
      outcome = Activate(d);
      if (outcome.kind == BackupOutcome::kActivationFailed && sink_->has_committed()) {
        // First law: a failed activation must not cost the checkpoint. The
        // sink still holds it, not running (an HVM guest's device model that
        // did not start, a disk blkback did not take): hold it, say why, and
        // let the operator retry once the cause is fixed, or the primary
        // come back.
        spdlog::error("activation failed: {}; holding checkpoint {}, not running: `romulus ctl failover` retries",
                      outcome.status.ToString(), outcome.epoch);
        observer_->OnActivationFailed(outcome.status, d.why, outcome.epoch, outcome.digest);
        judge.ActivationFailed(outcome.status.message());
        SetState("holding", "");
        continue;
      }
      if (outcome.kind == BackupOutcome::kActivationFailed) SetState("stopped", "");
      break;
    }

    // Wait for a valid HELLO, an operator request or the next tick.
    Ready next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, tick, [&]() REQUIRES(mu_) { return stop_ || failover_requested_ || !ready_.empty(); });
      if (stop_ || failover_requested_ || ready_.empty()) continue;
      next = std::move(ready_.front());
      ready_.pop_front();
      session_stream_ = next.stream.get();
      session_identity_ = next.hello.identity;
      superseded_ = false;
    }

    // One session.
    const std::string peer = next.stream->Peer();
    spdlog::info("connection from {}", peer);
    SetState("receiving", peer);
    const auto started_at = clock.Advance(Clock::now());
    bool started = false;
    auto start_once = [&] {
      if (!started) {
        judge.SessionStarted(started_at);
        std::lock_guard<std::mutex> lock(mu_);
        ++view_.sessions;
      }
      started = true;
    };
    SessionEnd end = receiver_.Serve(
        *next.stream, next.hello, *sink_, clock,
        [&](const CommitEvent& e) {
          start_once();
          judge.Committed(e.epoch, clock.now(), e.incomplete);
          last_digest_ = e.digest;
          {
            std::lock_guard<std::mutex> lock(mu_);
            view_.digest = e.digest;
          }
          observer_->OnCommit(e);
          // `ctl status` and the events follow the session as it goes,
          // not only when it ends.
          Publish(judge.Decide(clock.now()));
        },
        [&](std::chrono::nanoseconds heard) {
          if (started) judge.PrimaryHeard(heard);
        });
    {
      std::lock_guard<std::mutex> lock(mu_);
      session_stream_ = nullptr;
      // Our own Shutdown of the superseded stream shows as a lost
      // connection; any cause the session found first (a local failure, the
      // primary's ERROR) is the better evidence and stays.
      if (superseded_ && end.established && end.cause == EndCause::kConnectionLost) {
        end.cause = EndCause::kSuperseded;
        end.reason = Status::Closed("superseded by a new session from the primary");
        ++view_.superseded;
      }
      if ((stop_ || failover_requested_) && end.established && end.cause == EndCause::kConnectionLost) {
        end.cause = EndCause::kShutdown;
      }
      superseded_ = false;
    }
    next.stream.reset();
    if (end.established) start_once();
    if (end.established) judge.PrimaryHeard(end.last_heard);
    if (end.established) held_identity_ = next.hello.identity;
    if (!end.established && !end.refused_identity.empty() && end.refused_identity == held_identity_) {
      // Refused, but it is our guest's primary: alive, and from now on
      // unprotected. Its silence must not activate what we hold.
      spdlog::error("refused the primary of guest '{}', whose checkpoint this backup holds: it runs unprotected; "
                    "not failing over on its silence ({})",
                    protocol::Printable(held_identity_), end.reason.ToString());
      judge.PrimaryRefused(clock.Advance(Clock::now()), end.reason.ToString());
    }
    // A BYE's evidence is its text (the primary's words), not the OK status.
    judge.SessionEnded(end.cause, end.clean_stop ? end.bye_text : end.reason.ToString(), clock.Advance(Clock::now()));
    observer_->OnSessionEnd(end);
    spdlog::info("session ended ({}) after {} committed epochs; {} receive-buffer reallocations in steady state",
                 EndCauseName(end.cause), end.epochs_committed, end.receive_reallocations);
    if (!end.established) {
      spdlog::warn("connection ended before a session began: {}; still waiting for the primary",
                   end.reason.ToString());
    } else if (!end.clean_stop && end.cause != EndCause::kShutdown) {
      spdlog::error("primary connection lost ({}): {}", EndCauseName(end.cause), end.reason.ToString());
      if (sink_->has_committed()) {
        if (end.cause == EndCause::kPeerError || end.cause == EndCause::kCorruptStream) {
          // The judge holds: its silence is never taken for its death.
          spdlog::warn("keeping epoch {}; waiting for the primary, which ended the session alive (not activated "
                       "on its silence; ctl failover activates)",
                       sink_->last_committed_epoch());
        } else {
          spdlog::warn("keeping epoch {}; waiting up to {} ms (running time) for the primary",
                       sink_->last_committed_epoch(), options_.receiver.failover_timeout.count());
        }
      }
    }
    SetState("waiting", "");
  }

  // Nothing more is accepted: the guest runs here now, or we are leaving.
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (auto& p : pending_) {
      if (!p->done && p->raw) p->raw->Shutdown();
    }
    ready_.clear();
    if (listener_) listener_->Shutdown();
  }
  if (acceptor_.joinable()) acceptor_.join();
  {
    // The caller may now drop the listener (after an activation with
    // --reverse-to it becomes a primary): never touch it again.
    std::lock_guard<std::mutex> lock(mu_);
    listener_ = nullptr;
  }
  if (outcome.kind == BackupOutcome::kStopped) SetState("stopped", "");
  return outcome;
}

}  // namespace romulus::restore

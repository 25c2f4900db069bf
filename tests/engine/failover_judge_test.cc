// The backup's failover decision as a table: event sequences -> decision
// (docs/FAILURE-MODEL.md §4). Times are running time in milliseconds.
#include "restore/failover_judge.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "restore/running_clock.h"

namespace romulus::restore {
namespace {

using std::chrono::milliseconds;

struct Ev {
  enum Kind { kLoad, kStart, kHeard, kCommit, kEnd, kOperator, kFenceFailed, kRefused, kActivationFailed } kind;
  long at_ms = 0;
  uint64_t epoch = 0;
  EndCause cause = EndCause::kConnectionLost;
};
Ev Load(uint64_t e) { return {Ev::kLoad, 0, e}; }
Ev Start(long t) { return {Ev::kStart, t}; }
Ev Heard(long t) { return {Ev::kHeard, t}; }
Ev Commit(long t, uint64_t e) { return {Ev::kCommit, t, e}; }
Ev End(long t, EndCause c) { return {Ev::kEnd, t, 0, c}; }
Ev Operator() { return {Ev::kOperator}; }
Ev FenceFailed() { return {Ev::kFenceFailed}; }
Ev ActivationFailed() { return {Ev::kActivationFailed}; }
Ev Refused(long t) { return {Ev::kRefused, t}; }

struct Row {
  const char* name;
  Fencing fencing;
  std::vector<Ev> events;
  long ask_at_ms;
  Decision::Kind want;
  bool want_fence = false;
  const char* why_contains = "";
};

Decision Judge(const Row& r) {
  JudgeConfig cfg;
  cfg.failover_timeout = milliseconds(1000);
  cfg.fencing = r.fencing;
  FailoverJudge j(cfg);
  for (const Ev& e : r.events) {
    const auto t = milliseconds(e.at_ms);
    switch (e.kind) {
      case Ev::kLoad: j.CheckpointLoaded(e.epoch); break;
      case Ev::kStart: j.SessionStarted(t); break;
      case Ev::kHeard: j.PrimaryHeard(t); break;
      case Ev::kCommit: j.Committed(e.epoch, t); break;
      case Ev::kEnd: j.SessionEnded(e.cause, "detail", t); break;
      case Ev::kOperator: j.OperatorFailover(); break;
      case Ev::kFenceFailed: j.FenceFailed("exit 1"); break;
      case Ev::kActivationFailed: j.ActivationFailed("device model did not start"); break;
      case Ev::kRefused: j.PrimaryRefused(t, "Xen 4.20 > 4.17"); break;
    }
  }
  return j.Decide(milliseconds(r.ask_at_ms));
}

const Fencing kCmd = Fencing::kCommand;
const Fencing kNoFence = Fencing::kNone;

TEST(FailoverJudgeTest, Table) {
  const std::vector<Row> rows = {
      // --- the primary dies: activation only after a full timeout of silence
      {"eof, asked at once", kNoFence, {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost)}, 20,
       Decision::kWait},
      {"eof, timeout not yet reached", kNoFence, {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost)}, 1009,
       Decision::kWait},
      {"eof, timeout reached", kNoFence, {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost)}, 1010,
       Decision::kActivate, false, "primary silent for 1000 ms"},
      {"silence ends the session", kCmd, {Start(0), Commit(10, 7), End(1010, EndCause::kSilence)}, 1010,
       Decision::kActivate, true, "after silence"},
      {"fenced activation runs the fence", kCmd, {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost)}, 5000,
       Decision::kActivate, true},
      {"no fencing choice: hold", Fencing::kUnset,
       {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost)}, 5000, Decision::kHold, false,
       "no fencing choice"},
      // --- the primary ended the session alive (ERROR, corruption): it runs
      // unprotected from then on, so its silence never activates the older
      // checkpoint; the operator may, and a new session that commits restores
      // the usual rule
      {"primary error: it is alive", kNoFence,
       {Start(0), Commit(10, 1), End(900, EndCause::kPeerError)}, 1500, Decision::kHold, false,
       "ended the session alive (primary-error: detail) and runs unprotected"},
      {"primary error, never back: hold, not activate on its silence", kNoFence,
       {Start(0), Commit(10, 1), End(900, EndCause::kPeerError)}, 99999, Decision::kHold, false,
       "checkpoint 1 is older than the guest's visible state"},
      {"corrupt stream, never back: hold", kCmd,
       {Start(0), Commit(10, 1), End(900, EndCause::kCorruptStream)}, 99999, Decision::kHold, false,
       "corrupt-stream"},
      {"primary error: the operator may still activate", kCmd,
       {Start(0), Commit(10, 1), End(900, EndCause::kPeerError), Operator()}, 1000, Decision::kActivate, true},
      {"primary error, then a session that commits: trusted again", kNoFence,
       {Start(0), Commit(10, 1), End(900, EndCause::kPeerError), Start(950), Commit(990, 2),
        End(1000, EndCause::kConnectionLost)},
       2000, Decision::kActivate},
      {"primary error, then a session that never commits: hold", kNoFence,
       {Start(0), Commit(10, 1), End(900, EndCause::kPeerError), Start(950), End(1000, EndCause::kConnectionLost)},
       99999, Decision::kHold},
      {"primary error before anything was committed: nothing to hold", kNoFence,
       {Start(0), End(900, EndCause::kPeerError)}, 99999, Decision::kHold, false, "nothing committed"},
      {"bytes heard late in the session count", kNoFence,
       {Start(0), Commit(10, 1), Heard(800), End(850, EndCause::kConnectionLost)}, 1700, Decision::kWait},
      // --- strays never move anything
      {"stray after eof does not reset the wait", kNoFence,
       {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost), End(500, EndCause::kNotEstablished)}, 1020,
       Decision::kActivate},
      {"stray before any session: hold", kNoFence, {Load(4), End(500, EndCause::kNotEstablished)}, 99999,
       Decision::kHold, false, "waiting for the primary to connect"},
      // --- nothing to activate
      {"nothing committed", kNoFence, {Start(0), End(20, EndCause::kConnectionLost)}, 99999, Decision::kHold,
       false, "nothing committed"},
      {"loaded checkpoint, never heard", kNoFence, {Load(9)}, 99999, Decision::kHold},
      {"loaded checkpoint, session never committed", kNoFence,
       {Load(9), Start(0), End(20, EndCause::kConnectionLost)}, 99999, Decision::kHold, false, "loaded"},
      {"loaded checkpoint, session committed", kNoFence,
       {Load(9), Start(0), Commit(5, 10), End(20, EndCause::kConnectionLost)}, 1020, Decision::kActivate},
      // --- a new session that has not committed: the primary ran unprotected
      {"resync session not committed", kNoFence,
       {Start(0), Commit(10, 5), End(20, EndCause::kSuperseded), Start(30), End(40, EndCause::kConnectionLost)},
       99999, Decision::kHold, false, "has not committed"},
      {"resync session committed", kNoFence,
       {Start(0), Commit(10, 5), End(20, EndCause::kSuperseded), Start(30), Commit(35, 9),
        End(40, EndCause::kConnectionLost)},
       1040, Decision::kActivate},
      // --- our guest's primary came back and was refused: alive, unprotected
      {"refused primary after eof: hold, not activate on its silence", kNoFence,
       {Start(0), Commit(10, 5), End(20, EndCause::kConnectionLost), Refused(500)}, 99999, Decision::kHold, false,
       "refused it (Xen 4.20 > 4.17)"},
      {"refused primary: the operator may still activate", kCmd,
       {Start(0), Commit(10, 5), End(20, EndCause::kConnectionLost), Refused(500), Operator()}, 600,
       Decision::kActivate, true},
      {"refused primary, then an accepted session commits: trusted again", kNoFence,
       {Start(0), Commit(10, 5), End(20, EndCause::kConnectionLost), Refused(500), Start(600), Commit(700, 9),
        End(800, EndCause::kConnectionLost)},
       1800, Decision::kActivate},
      {"refused before anything was committed: nothing to hold", kNoFence, {Refused(500)}, 99999, Decision::kHold,
       false, "nothing committed"},
      // --- local failures never activate on their own
      {"local failure: hold", kNoFence, {Start(0), Commit(10, 37), End(20, EndCause::kLocalFailure)}, 99999,
       Decision::kHold, false, "own resources failed"},
      {"local failure, then a session commits: trusted again", kNoFence,
       {Start(0), Commit(10, 37), End(20, EndCause::kLocalFailure), Start(100), Commit(200, 40),
        End(300, EndCause::kConnectionLost)},
       1300, Decision::kActivate},
      {"local failure: operator may still activate", kCmd,
       {Start(0), Commit(10, 37), End(20, EndCause::kLocalFailure), Operator()}, 30, Decision::kActivate, true},
      // --- in a session: wait, whatever the clock says (the receiver ends it on silence)
      {"in session", kNoFence, {Start(0), Commit(10, 1)}, 99999, Decision::kWait},
      // --- explicit words
      {"bye stop", kNoFence, {Start(0), Commit(10, 1), End(20, EndCause::kByeStop)}, 99999, Decision::kStop, false,
       "stopped replication cleanly"},
      // issue 12: the guest died (or shut down) on the primary: no failover, and the why says so
      {"bye guest stopped", kNoFence, {Start(0), Commit(10, 5), End(20, EndCause::kByeGuestStopped)}, 99999,
       Decision::kStop, false,
       "the primary reports that its guest stopped (detail); not failing over: checkpoint 5 is of a guest that was "
       "about to shut down or die"},
      {"bye guest stopped, nothing committed", kCmd, {Start(0), End(20, EndCause::kByeGuestStopped)}, 99999,
       Decision::kStop, false, "nothing was committed"},
      {"bye handover activates at once, no fence", kCmd,
       {Start(0), Commit(10, 3), End(20, EndCause::kByeHandover)}, 20, Decision::kActivate, false,
       "the primary handed over after epoch 3: detail"},
      {"operator failover", kNoFence, {Start(0), Commit(10, 3), Operator()}, 11, Decision::kActivate},
      // Refused (OperatorFailover says why) and not remembered: still serving.
      {"operator failover with nothing committed", kNoFence, {Start(0), Operator()}, 11, Decision::kWait},
      {"fence failed: hold", kCmd,
       {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost), FenceFailed()}, 99999, Decision::kHold,
       false, "fence"},
      {"fence failed, operator retries", kCmd,
       {Start(0), Commit(10, 1), End(20, EndCause::kConnectionLost), FenceFailed(), Operator()}, 99999,
       Decision::kActivate, true},
      // A failed activation that left the checkpoint intact: held (never
      // retried on silence alone, however long), the reason said.
      {"activation failed: hold", kNoFence,
       {Start(0), Commit(10, 4), End(20, EndCause::kConnectionLost), ActivationFailed()}, 99999, Decision::kHold,
       false, "activating checkpoint 4 failed (device model did not start): the checkpoint is kept"},
      {"activation failed, operator retries (fencing again)", kCmd,
       {Start(0), Commit(10, 4), End(20, EndCause::kConnectionLost), ActivationFailed(), Operator()}, 99999,
       Decision::kActivate, true},
      {"activation failed again after the operator's retry: hold", kNoFence,
       {Start(0), Commit(10, 4), End(20, EndCause::kConnectionLost), ActivationFailed(), Operator(),
        ActivationFailed()},
       99999, Decision::kHold, false, "activating checkpoint 4 failed"},
      // A handover whose activation failed is held too, not retried every tick.
      {"handover whose activation failed: hold", kNoFence,
       {Start(0), Commit(10, 3), End(20, EndCause::kByeHandover), ActivationFailed()}, 21, Decision::kHold, false,
       "activating checkpoint 3 failed"},
      // Back, then gone again before its new session committed: the primary
      // ran unprotected in between, so its silence activates nothing.
      {"activation failed, the primary back and gone before committing: hold", kNoFence,
       {Start(0), Commit(10, 4), End(20, EndCause::kConnectionLost), ActivationFailed(), Start(30),
        End(40, EndCause::kConnectionLost)},
       99999, Decision::kHold, false, "has not committed yet"},
      // The primary came back: it is served again, and its later silence
      // activates as usual.
      {"activation failed, then the primary is back", kNoFence,
       {Start(0), Commit(10, 4), End(20, EndCause::kConnectionLost), ActivationFailed(), Start(30), Commit(40, 5)},
       45, Decision::kWait},
  };
  for (const Row& r : rows) {
    Decision d = Judge(r);
    EXPECT_EQ(DecisionName(d.kind), std::string(DecisionName(r.want))) << r.name << ": " << d.why;
    if (r.want == Decision::kActivate) {
      EXPECT_EQ(d.run_fence, r.want_fence) << r.name;
    }
    EXPECT_NE(d.why.find(r.why_contains), std::string::npos) << r.name << ": why = " << d.why;
    EXPECT_FALSE(d.why.empty()) << r.name;
  }
}

TEST(FailoverJudgeTest, AGuestThatDiedIsNotAnOperatorStop) {
  FailoverJudge j(JudgeConfig{});
  j.SessionStarted(milliseconds(0));
  j.Committed(12, milliseconds(10));
  j.SessionEnded(EndCause::kByeGuestStopped,
                 "domain guest3 shut down (reboot) instead of suspending; the hypervisor logged \"d5v0 Triple fault\"",
                 milliseconds(20));
  Decision d = j.Decide(milliseconds(20));
  EXPECT_EQ(d.kind, Decision::kStop);
  EXPECT_EQ(d.why,
            "the primary reports that its guest stopped (domain guest3 shut down (reboot) instead of suspending; the "
            "hypervisor logged \"d5v0 Triple fault\"); not failing over: checkpoint 12 is of a guest that was about to "
            "shut down or die, so whether to start it again is the operator's decision");
  EXPECT_EQ(d.why.find("stopped replication cleanly"), std::string::npos);
  EXPECT_EQ(std::string(EndCauseName(EndCause::kByeGuestStopped)), "bye-guest-stopped");
}

// A primary that relinquished its guest (an epoch it could not commit, a
// copy that must not run on) hands over like a switchover; the decision
// says why, in the primary's words.
TEST(FailoverJudgeTest, AHandoverSaysWhyThePrimaryHandedOver) {
  JudgeConfig cfg;
  cfg.fencing = Fencing::kCommand;
  FailoverJudge j(cfg);
  j.SessionStarted(std::chrono::seconds(0));
  j.Committed(4, std::chrono::seconds(1), "");
  j.SessionEnded(EndCause::kByeHandover, "epoch 5 cannot be committed: flushing /dev/nbd0: EIO",
                 std::chrono::seconds(2));
  Decision d = j.Decide(std::chrono::seconds(2));
  EXPECT_EQ(d.kind, Decision::kActivate);
  EXPECT_TRUE(d.handover);
  EXPECT_FALSE(d.run_fence) << "the primary keeps its copy suspended and said so";
  EXPECT_EQ(d.why, "the primary handed over after epoch 4: epoch 5 cannot be committed: flushing /dev/nbd0: EIO");
  FailoverJudge planned(cfg);
  planned.SessionStarted(std::chrono::seconds(0));
  planned.Committed(7, std::chrono::seconds(1), "");
  planned.SessionEnded(EndCause::kByeHandover, "", std::chrono::seconds(2));
  EXPECT_EQ(planned.Decide(std::chrono::seconds(2)).why, "the primary handed over after epoch 7: planned switchover");
}

// A checkpoint whose disk is still being copied (docs/DISK.md §7.1) is
// never resumed: not on silence, not on the operator's word, not at a
// handover; the first whole one is.
TEST(FailoverJudgeTest, ACheckpointWithAPartialDiskIsNeverActivated) {
  JudgeConfig cfg;
  cfg.failover_timeout = std::chrono::seconds(1);
  cfg.fencing = Fencing::kNone;
  for (int how = 0; how < 3; ++how) {
    FailoverJudge j(cfg);
    j.SessionStarted(std::chrono::seconds(0));
    j.Committed(4, std::chrono::seconds(1), "disk xvda is still being copied (37%)");
    Decision d = j.Decide(std::chrono::seconds(1));
    EXPECT_EQ(d.kind, Decision::kWait) << "in session: serving, and saying why it could not resume";
    EXPECT_NE(d.why.find("37%"), std::string::npos) << d.why;
    if (how == 0) j.SessionEnded(EndCause::kConnectionLost, "eof", std::chrono::seconds(2));
    if (how == 1) {
      j.SessionEnded(EndCause::kConnectionLost, "eof", std::chrono::seconds(2));
      EXPECT_NE(j.OperatorFailover().find("still being copied (37%)"), std::string::npos);
    }
    if (how == 2) j.SessionEnded(EndCause::kByeHandover, "", std::chrono::seconds(2));
    d = j.Decide(std::chrono::seconds(60));
    EXPECT_EQ(d.kind, Decision::kHold) << how << ": " << d.why;
    EXPECT_NE(d.why.find("checkpoint 4 cannot be resumed: disk xvda is still being copied (37%)"),
              std::string::npos)
        << d.why;
  }
  // A refused operator request, or a handover that could not be honoured,
  // is not remembered: once a later session commits whole and then ends
  // with the primary just heard (alive), nothing activates.
  for (int how = 0; how < 2; ++how) {
    FailoverJudge j(cfg);
    j.SessionStarted(std::chrono::seconds(0));
    j.Committed(4, std::chrono::seconds(1), "disk xvda is still being copied (37%)");
    if (how == 0) {
      j.SessionEnded(EndCause::kConnectionLost, "eof", std::chrono::seconds(2));
      EXPECT_FALSE(j.OperatorFailover().empty());
    } else {
      j.SessionEnded(EndCause::kByeHandover, "", std::chrono::seconds(2));
    }
    EXPECT_EQ(j.Decide(std::chrono::seconds(3)).kind, Decision::kHold);
    j.SessionStarted(std::chrono::seconds(4));
    j.Committed(5, std::chrono::seconds(5));
    j.SessionEnded(EndCause::kPeerError, "the primary said so", std::chrono::seconds(6));
    Decision d = j.Decide(std::chrono::seconds(6));
    EXPECT_NE(d.kind, Decision::kActivate) << how << ": a stale request fired: " << d.why;
  }
  // Once an epoch commits whole, the ordinary rules apply again.
  FailoverJudge j(cfg);
  j.SessionStarted(std::chrono::seconds(0));
  j.Committed(4, std::chrono::seconds(1), "disk xvda is still being copied (99%)");
  j.Committed(5, std::chrono::seconds(2));
  j.SessionEnded(EndCause::kConnectionLost, "eof", std::chrono::seconds(3));
  Decision d = j.Decide(std::chrono::seconds(10));
  EXPECT_EQ(d.kind, Decision::kActivate) << d.why;
}

TEST(FailoverJudgeTest, WaitDeadlineIsLastHeardPlusTimeout) {
  JudgeConfig cfg;
  cfg.failover_timeout = milliseconds(1000);
  cfg.fencing = Fencing::kNone;
  FailoverJudge j(cfg);
  j.SessionStarted(milliseconds(0));
  j.Committed(1, milliseconds(100));
  j.SessionEnded(EndCause::kConnectionLost, "eof", milliseconds(400));
  Decision d = j.Decide(milliseconds(400));
  ASSERT_EQ(d.kind, Decision::kWait);
  EXPECT_EQ(d.deadline, milliseconds(1100));
}

TEST(RunningClockTest, StallsAreNotCounted) {
  using Tp = std::chrono::steady_clock::time_point;
  Tp t0{};
  RunningClock c(t0);
  EXPECT_EQ(c.Advance(t0 + milliseconds(100)), milliseconds(100));
  EXPECT_EQ(c.Advance(t0 + milliseconds(200)), milliseconds(200));
  // Not scheduled for 5 s (SIGSTOP): only kMaxStep counts.
  EXPECT_EQ(c.Advance(t0 + milliseconds(5200)), milliseconds(200) + RunningClock::kMaxStep);
  EXPECT_EQ(c.stalls(), 1u);
  EXPECT_EQ(c.stalled(), milliseconds(5000) - RunningClock::kMaxStep);
  // Time never goes backwards.
  EXPECT_EQ(c.Advance(t0 + milliseconds(5000)), milliseconds(200) + RunningClock::kMaxStep);
}

TEST(RunningClockTest, StalledBackupMustWaitAFullTimeoutAfterResuming) {
  // The primary was last heard at running time 0; the backup is then stopped
  // for 10 s. On resume, the judge must still wait (only kMaxStep passed).
  using Tp = std::chrono::steady_clock::time_point;
  Tp t0{};
  RunningClock c(t0);
  JudgeConfig cfg;
  cfg.failover_timeout = milliseconds(1000);
  cfg.fencing = Fencing::kNone;
  FailoverJudge j(cfg);
  j.SessionStarted(c.now());
  j.Committed(3, c.now());
  j.SessionEnded(EndCause::kConnectionLost, "reset", c.now());
  EXPECT_EQ(j.Decide(c.Advance(t0 + milliseconds(10000))).kind, Decision::kWait);
  // Then it runs, waking every 100 ms: activation once 1 s of running time passed.
  auto t = t0 + milliseconds(10000);
  int ticks = 0;
  while (j.Decide(c.now()).kind == Decision::kWait && ticks < 100) {
    t += milliseconds(100);
    c.Advance(t);
    ++ticks;
  }
  EXPECT_EQ(j.Decide(c.now()).kind, Decision::kActivate);
  EXPECT_EQ(ticks, 8);  // 1000 - 250 ms counted for the stall = 750 ms -> 8 ticks of 100 ms
}

}  // namespace
}  // namespace romulus::restore

// The PrimaryController's policies, each tested once for both guest types:
// "sim" is the TimerDriver over a simulated guest; "xen" is FakeDriver, which
// drives its guest the way the Xen driver drives a domain (page path on a
// worker thread, live pass before the first suspend) and has a Xen domain's
// facts. The backup is the real CheckpointReceiver over a socketpair with an
// in-memory sink that records what it committed.
#include "replicator/primary_controller.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "compress/page.h"
#include "replicator/timer_driver.h"
#include "restore/checkpoint_receiver.h"
#include "restore/guest_sink.h"
#include "sim/sim_guest.h"
#include "tests/engine/fake_driver.h"
#include "transport/fd_stream.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;
using replicator::Phase;

// A backup's sink that keeps everything in memory and counts what it did.
class MemorySink final : public restore::GuestSink {
 public:
  Status BeginSession(uint64_t guest_pages, const std::string&) override {
    std::lock_guard<std::mutex> lock(mu);
    pages = guest_pages;
    staged.clear();
    ++sessions;
    return Status::Ok();
  }
  Status OnPage(uint64_t, uint64_t pfn, const uint8_t* page) override {
    std::lock_guard<std::mutex> lock(mu);
    staged[pfn].assign(page, page + compress::kPageSize);
    return Status::Ok();
  }
  Status OnState(uint64_t, std::span<const uint8_t>) override { return Status::Ok(); }
  Status Commit(uint64_t epoch) override {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [pfn, bytes] : staged) image[pfn] = bytes;
    staged.clear();
    committed.push_back(epoch);
    return Status::Ok();
  }
  void Discard() override {
    std::lock_guard<std::mutex> lock(mu);
    staged.clear();
  }
  Status Activate(const std::string&) override { return Status::Ok(); }
  bool has_committed() const override {
    std::lock_guard<std::mutex> lock(mu);
    return !committed.empty();
  }
  uint64_t last_committed_epoch() const override {
    std::lock_guard<std::mutex> lock(mu);
    return committed.empty() ? 0 : committed.back();
  }
  std::vector<uint64_t> Committed() const {
    std::lock_guard<std::mutex> lock(mu);
    return committed;
  }
  int Sessions() const {
    std::lock_guard<std::mutex> lock(mu);
    return sessions;
  }

  mutable std::mutex mu;
  uint64_t pages = 0;
  int sessions = 0;
  std::map<uint64_t, std::vector<uint8_t>> staged, image;
  std::vector<uint64_t> committed;
};

// An output commit that records what it was asked.
class RecordingOutput final : public replicator::OutputCommit {
 public:
  Status Checkpoint(uint64_t) override { return Status::Ok(); }
  Status Release(uint64_t epoch) override {
    released.store(epoch);
    return Status::Ok();
  }
  Status ReleaseAll() override {
    ++release_all;
    return Status::Ok();
  }
  Status Discard() override {
    ++discards;
    return Status::Ok();
  }
  std::string Describe() const override { return "recording"; }
  bool commits_output() const override { return true; }
  std::atomic<uint64_t> released{0};
  std::atomic<int> release_all{0};
  std::atomic<int> discards{0};
};

// Backups on demand: every connect() gets a fresh socketpair served by a
// CheckpointReceiver into the same MemorySink (a restarted backup keeps its
// image). Cut() breaks the current link, as a dead backup host would.
class Backups {
 public:
  explicit Backups(restore::ReceiverOptions opts = {}) : opts_(opts) {}
  ~Backups() { JoinAll(); }

  replicator::ConnectFn Connect() {
    return [this]() -> Result<std::unique_ptr<transport::Stream>> {
      if (refuse_.load()) return Status::Closed("test: no backup");
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return Status::FromErrno("socketpair", errno);
      auto a = transport::OpenFdStream(sv[0], sv[0], "primary-end", true);
      auto b = transport::OpenFdStream(sv[1], sv[1], "backup-end", true);
      if (!a.ok() || !b.ok()) return Status::Internal("fd streams");
      std::lock_guard<std::mutex> lock(mu_);
      backup_fd_ = sv[1];
      auto stream = std::shared_ptr<transport::Stream>(std::move(*b));
      threads_.emplace_back([this, stream] {
        restore::CheckpointReceiver receiver(opts_);
        restore::SessionEnd end = receiver.Serve(*stream, sink, [this](const restore::CommitEvent& e) {
          std::lock_guard<std::mutex> lock(mu_);
          commits_.push_back(e);
        });
        std::lock_guard<std::mutex> lock(mu_);
        ends_.push_back(end);
      });
      return std::move(*a);
    };
  }
  // Shuts the current backup's socket down: both directions fail at once.
  void Cut() {
    std::lock_guard<std::mutex> lock(mu_);
    if (backup_fd_ >= 0) shutdown(backup_fd_, SHUT_RDWR);
  }
  void Refuse(bool r) { refuse_.store(r); }
  void JoinAll() {
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  std::vector<restore::CommitEvent> Commits() {
    std::lock_guard<std::mutex> lock(mu_);
    return commits_;
  }
  std::vector<restore::SessionEnd> Ends() {
    std::lock_guard<std::mutex> lock(mu_);
    return ends_;
  }

  MemorySink sink;

 private:
  restore::ReceiverOptions opts_;
  std::mutex mu_;
  int backup_fd_ = -1;
  std::atomic<bool> refuse_{false};
  std::vector<std::thread> threads_;
  std::vector<restore::CommitEvent> commits_;
  std::vector<restore::SessionEnd> ends_;
};

// One guest type: its driver, and whether its guest is paused now.
struct Guest {
  std::unique_ptr<sim::SimGuest> sim;
  testing::FakeDriver* fake = nullptr;
  std::unique_ptr<replicator::CheckpointDriver> driver;
  bool paused() const { return sim ? sim->paused() : fake->paused(); }
};

Guest MakeGuest(const std::string& type) {
  Guest g;
  if (type == "sim") {
    sim::SimSpec spec;
    spec.size_bytes = 1 << 20;
    spec.workload = sim::Workload::kHotset;
    spec.rate = sim::DefaultRate(spec.workload);
    g.sim = std::move(*sim::SimGuest::Create(spec));
    EXPECT_TRUE(g.sim->Start().ok());
    g.driver = replicator::MakeTimerDriver(*g.sim);
  } else {
    auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
    g.fake = fake.get();
    g.driver = std::move(fake);
  }
  return g;
}

replicator::SenderOptions FastSender() {
  replicator::SenderOptions s;
  s.codec.cache_pages = 64;
  s.heartbeat_interval = 20ms;
  s.peer_timeout = 2000ms;
  s.drain_timeout = 100ms;
  return s;
}

replicator::ControllerOptions FastController() {
  replicator::ControllerOptions o;
  o.interval = 5ms;
  o.ack_timeout = 2000ms;
  o.reconnect_min = 5ms;
  o.reconnect_max = 20ms;
  return o;
}

// Runs the controller on a thread; Stop() ends it and returns its status.
struct Running {
  Running(replicator::PrimaryController& c) : controller(c), thread([this] { status = controller.Run(stop); }) {}
  ~Running() {
    stop.store(true);
    if (thread.joinable()) thread.join();
  }
  Status Stop() {
    stop.store(true);
    thread.join();
    return status;
  }
  // Polls `pred` (bounded); the test fails on the caller's assertion if it never holds.
  template <typename Pred>
  static bool WaitFor(Pred pred, std::chrono::milliseconds bound = 20000ms) {
    const auto until = std::chrono::steady_clock::now() + bound;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }
  replicator::PrimaryController& controller;
  std::atomic<bool> stop{false};
  Status status;
  std::thread thread;
};

class ControllerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ControllerTest, KillPointsComeInOrderInEveryEpoch) {
  Guest g = MakeGuest(GetParam());
  Backups backups;
  replicator::NoOutputCommit output;
  auto opts = FastController();
  opts.max_epochs = 4;
  std::mutex mu;
  std::vector<std::pair<Phase, uint64_t>> seen;
  std::map<uint64_t, uint64_t> dirty;
  opts.phase_hook = [&](Phase p, uint64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    seen.emplace_back(p, e);
  };
  opts.on_epoch = [&](const replicator::EpochStats& st) { dirty[st.epoch] = st.dirty_pages; };
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), opts, nullptr);
  std::atomic<bool> stop{false};
  ASSERT_TRUE(c.Run(stop).ok());
  backups.JoinAll();
  const std::vector<Phase> order = {Phase::kBeforeSuspend, Phase::kAfterSuspend, Phase::kBeforeResume,
                                    Phase::kAfterResume,   Phase::kBeforeCommit, Phase::kAfterCommit};
  for (uint64_t e = 1; e <= 4; ++e) {
    std::vector<Phase> got;
    bool streaming = false;
    for (const auto& [p, epoch] : seen) {
      if (epoch != e) continue;
      if (p == Phase::kStreaming) {
        streaming = true;
      } else {
        got.push_back(p);
      }
    }
    EXPECT_EQ(got, order) << "epoch " << e;
    // m is reached in every epoch that streams pages: the first (the whole
    // guest) always does; later ones when the guest wrote something.
    if (e == 1 || dirty[e] > 0) {
      EXPECT_TRUE(streaming) << "epoch " << e << " streamed pages: m is reached";
    }
  }
  EXPECT_EQ(backups.sink.Committed(), (std::vector<uint64_t>{1, 2, 3, 4}));
  ASSERT_EQ(backups.Ends().size(), 1u);
  EXPECT_TRUE(backups.Ends()[0].clean_stop) << "a clean end says BYE: the backup must not fail over";
}

TEST_P(ControllerTest, ALostBackupIsReconnectedAndTheEpochNumbersContinue) {
  Guest g = MakeGuest(GetParam());
  Backups backups;
  RecordingOutput output;
  auto opts = FastController();
  std::atomic<bool> cut{false};
  opts.phase_hook = [&](Phase p, uint64_t e) {
    if (p == Phase::kAfterCommit && e == 3 && !cut.exchange(true)) backups.Cut();
  };
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), opts, nullptr);
  {
    Running r(c);
    ASSERT_TRUE(Running::WaitFor([&] { return backups.sink.Sessions() == 2 && c.last_acked_epoch() >= 8; }))
        << "sessions " << backups.sink.Sessions() << ", last acked " << c.last_acked_epoch();
    EXPECT_TRUE(c.protected_now());
    EXPECT_TRUE(c.unprotected_reason().empty()) << "PROTECTED again: " << c.unprotected_reason();
    ASSERT_TRUE(r.Stop().ok());
  }
  backups.JoinAll();
  const auto committed = backups.sink.Committed();
  // Session 1 committed 1..3; epoch 4 was begun on the dead link, so the
  // resync is epoch 5 and the count goes on from there.
  ASSERT_GE(committed.size(), 5u);
  EXPECT_EQ(std::vector<uint64_t>(committed.begin(), committed.begin() + 4), (std::vector<uint64_t>{1, 2, 3, 5}));
  for (size_t i = 4; i < committed.size(); ++i) EXPECT_EQ(committed[i], committed[i - 1] + 1);
  EXPECT_EQ(c.totals().resyncs, 1u);
  EXPECT_GE(output.release_all.load(), 1) << "a lost backup releases the held output";
}

TEST_P(ControllerTest, ARefusedLiveSetCacheFallsBackToTheConfiguredSize) {
  Guest g = MakeGuest(GetParam());
  restore::ReceiverOptions ro;
  ro.cache_pages = 128;  // the backup's --max-cache-size
  Backups backups(ro);
  replicator::NoOutputCommit output;
  backups.Refuse(true);
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  // No backup yet: the size is kept for the next session...
  auto set = c.SetCacheSize(256 * 4096);
  ASSERT_TRUE(set.ok());
  EXPECT_FALSE(*set);
  EXPECT_EQ(c.cache_size_next(), 256u * 4096);
  // ...whose backup refuses it: the configured 64 pages instead, not UNPROTECTED forever.
  backups.Refuse(false);
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= 2; }));
  EXPECT_EQ(c.cache_size_active(), 64u * 4096);
  EXPECT_EQ(c.cache_size_next(), 64u * 4096);
  EXPECT_EQ(backups.sink.Sessions(), 1) << "the refused HELLO made no session";
  ASSERT_TRUE(r.Stop().ok());
}

TEST_P(ControllerTest, ALiveResizeTakesEffectAtTheNextEpochOnBothEnds) {
  Guest g = MakeGuest(GetParam());
  Backups backups;
  replicator::NoOutputCommit output;
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  ASSERT_TRUE(Running::WaitFor([&] { return c.protected_now(); }));
  // Above the backup's limit (64 MiB by default): refused, nothing changes.
  EXPECT_EQ(c.SetCacheSize(128ull << 20).status().code(), Code::kInvalidArgument);
  auto set = c.SetCacheSize(32 * 4096);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_TRUE(*set) << "applied live";
  const int64_t asked_at = c.last_acked_epoch();
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= asked_at + 3; }));
  EXPECT_EQ(c.cache_size_active(), 32u * 4096);
  bool seen = false;
  for (const auto& e : backups.Commits()) {
    if (static_cast<int64_t>(e.epoch) > asked_at + 1) {
      EXPECT_EQ(e.cache_pages, 32u) << "epoch " << e.epoch;
      seen = true;
    }
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(backups.sink.Sessions(), 1) << "no resync for a live resize";
  ASSERT_TRUE(r.Stop().ok());
}

TEST_P(ControllerTest, PauseStopsCheckpointsReleasesOutputAndResumesWithoutResync) {
  Guest g = MakeGuest(GetParam());
  Backups backups;
  RecordingOutput output;
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= 3; }));
  c.SetPaused(true);
  ASSERT_TRUE(Running::WaitFor([&] { return output.release_all.load() >= 1; })) << "paused: output released";
  const uint64_t at = c.current_epoch();
  std::this_thread::sleep_for(100ms);  // twenty intervals: none may start
  EXPECT_EQ(c.current_epoch(), at);
  EXPECT_FALSE(c.protected_now());
  EXPECT_NE(c.unprotected_reason().find("paused by the operator"), std::string::npos) << c.unprotected_reason();
  EXPECT_FALSE(g.paused()) << "the guest runs while checkpointing is paused";
  c.SetPaused(false);
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= static_cast<int64_t>(at) + 2; }));
  EXPECT_TRUE(c.protected_now());
  EXPECT_EQ(backups.sink.Sessions(), 1) << "resume needs no resync";
  EXPECT_EQ(c.totals().resyncs, 0u);
  ASSERT_TRUE(r.Stop().ok());
}

TEST_P(ControllerTest, SwitchoverHandsTheFinalEpochOverAndLeavesTheGuestPaused) {
  Guest g = MakeGuest(GetParam());
  Backups backups;
  RecordingOutput output;
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= 2; }));
  auto fin = c.Handover(20000ms);
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  ASSERT_TRUE(r.Stop().ok());
  backups.JoinAll();
  EXPECT_TRUE(c.handed_over());
  EXPECT_TRUE(g.paused()) << "the old primary must not run past the final epoch";
  EXPECT_EQ(backups.sink.last_committed_epoch(), *fin) << "the backup holds exactly the final epoch";
  ASSERT_EQ(backups.Ends().size(), 1u);
  EXPECT_TRUE(backups.Ends()[0].clean_stop);
  EXPECT_EQ(backups.Ends()[0].bye_reason, protocol::ByeReason::kHandover);
  if (g.sim) g.sim->Stop();
}

TEST_P(ControllerTest, SwitchoverWithoutABackupIsRefusedAtOnce) {
  Guest g = MakeGuest(GetParam());
  Backups backups;
  backups.Refuse(true);
  replicator::NoOutputCommit output;
  replicator::PrimaryController c(std::move(g.driver), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  auto fin = c.Handover(20000ms);
  ASSERT_FALSE(fin.ok());
  EXPECT_NE(fin.status().message().find("not PROTECTED"), std::string::npos) << fin.status().ToString();
  EXPECT_FALSE(g.paused());
  ASSERT_TRUE(r.Stop().ok());
}

INSTANTIATE_TEST_SUITE_P(GuestTypes, ControllerTest, ::testing::Values("sim", "xen"),
                         [](const auto& info) { return info.param; });

// A Xen domain that went away while its backup was lost ends the replication.
TEST(ControllerXen, AGuestThatIsGoneEndsTheReplication) {
  auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
  testing::FakeDriver* driver = fake.get();
  Backups backups;
  replicator::NoOutputCommit output;
  auto opts = FastController();
  opts.phase_hook = [&](Phase p, uint64_t e) {
    if (p == Phase::kAfterCommit && e == 2) {
      driver->set_lives(false);
      backups.Cut();
    }
  };
  replicator::PrimaryController c(std::move(fake), output, backups.Connect(), FastSender(), opts, nullptr);
  std::atomic<bool> stop{false};
  Status st = c.Run(stop);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("went away"), std::string::npos) << st.ToString();
  EXPECT_EQ(backups.sink.Sessions(), 1) << "no reconnection for a guest that is gone";
}

// A guest that dies under protection (issue 12): the primary ends the session
// with BYE guest-shutdown carrying why, not the operator's stop, and the
// backup records that its guest stopped.
TEST(ControllerXen, AGuestThatDiesTellsTheBackupWhy) {
  auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
  const std::string why =
      "domain fake-domain shut down (reboot) instead of suspending; the hypervisor logged \"d7v0 Triple fault\"";
  fake->DieAt(4, why);
  Backups backups;
  replicator::NoOutputCommit output;
  replicator::PrimaryController c(std::move(fake), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  std::atomic<bool> stop{false};
  Status st = c.Run(stop);
  backups.JoinAll();
  EXPECT_FALSE(st.ok()) << "a guest that died is not a clean end of replication";
  EXPECT_NE(st.message().find("Triple fault"), std::string::npos) << st.ToString();
  EXPECT_EQ(backups.sink.last_committed_epoch(), 3u);
  EXPECT_EQ(backups.sink.Sessions(), 1) << "no reconnection for a guest that died";
  const std::vector<restore::SessionEnd> ends = backups.Ends();
  ASSERT_EQ(ends.size(), 1u);
  const restore::SessionEnd& end = ends[0];
  EXPECT_TRUE(end.clean_stop);
  EXPECT_EQ(end.bye_reason, protocol::ByeReason::kGuestShutdown);
  EXPECT_EQ(end.cause, restore::EndCause::kByeGuestStopped);
  EXPECT_NE(end.bye_text.find(why), std::string::npos) << end.bye_text;
  EXPECT_EQ(end.bye_text.find("operator"), std::string::npos) << end.bye_text;
}

// One replication whose driver relinquishes its guest (FakeDriver::
// LoseWritesWhen), run to its end: what the primary, its output and the
// backups saw.
struct Relinquished {
  Status status;
  bool handed_over = false, paused = false;
  uint64_t committed = 0, released = 0;
  int sessions = 0, discards = 0, release_all = 0;
  std::vector<restore::SessionEnd> ends;
};

Relinquished RunRelinquished(std::function<bool(uint64_t, uint64_t)> when, const std::string& why,
                             bool unrecorded = false,
                             std::function<void(replicator::ControllerOptions&, Backups&)> tune = nullptr) {
  auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
  testing::FakeDriver* driver = fake.get();
  fake->LoseWritesWhen(std::move(when), why, unrecorded);
  Backups backups;
  RecordingOutput output;
  auto opts = FastController();
  if (tune) tune(opts, backups);
  replicator::PrimaryController c(std::move(fake), output, backups.Connect(), FastSender(), opts, nullptr);
  std::atomic<bool> stop{false};
  Relinquished r;
  r.status = c.Run(stop);
  backups.JoinAll();
  r.handed_over = c.handed_over();
  r.paused = driver->paused();
  r.committed = backups.sink.last_committed_epoch();
  r.sessions = backups.sink.Sessions();
  r.released = output.released.load();
  r.discards = output.discards.load();
  r.release_all = output.release_all.load();
  r.ends = backups.Ends();
  return r;
}

// An epoch the driver cannot commit, whose guest must not run on (an
// emulated disk lost a write the guest saw complete): the backup, which
// holds the epoch before it, taken while protected, takes the guest over;
// the unacked output is dropped, never released; no reconnection.
TEST(ControllerRelinquish, TheBackupTakesOverFromTheEpochBefore) {
  const auto r = RunRelinquished([](uint64_t epoch, uint64_t) { return epoch == 5; },
                                 "flushing /dev/nbd0: a write the guest saw complete did not reach the disk");
  ASSERT_FALSE(r.status.ok()) << "a relinquished guest is not a clean end of replication";
  EXPECT_EQ(r.status.code(), Code::kStorage) << r.status.ToString();
  EXPECT_NE(r.status.message().find("epoch 5 cannot be committed"), std::string::npos) << r.status.ToString();
  EXPECT_NE(r.status.message().find("from epoch 4"), std::string::npos) << r.status.ToString();
  EXPECT_TRUE(r.handed_over);
  EXPECT_TRUE(r.paused) << "the guest must stay suspended here";
  EXPECT_EQ(r.committed, 4u);
  EXPECT_EQ(r.sessions, 1) << "no reconnection";
  EXPECT_EQ(r.released, 4u);
  EXPECT_EQ(r.discards, 1) << "epoch 5's output must be dropped";
  EXPECT_EQ(r.release_all, 0) << "epoch 5's output must never be released";
  ASSERT_EQ(r.ends.size(), 1u);
  EXPECT_EQ(r.ends[0].bye_reason, protocol::ByeReason::kHandover);
  EXPECT_EQ(r.ends[0].cause, restore::EndCause::kByeHandover);
  EXPECT_NE(r.ends[0].bye_text.find("epoch 5 cannot be committed"), std::string::npos) << r.ends[0].bye_text;
}

// A switchover whose final epoch loses a write: the operator's request is
// answered with what happened (relinquished, handed over from the epoch
// before), not "replication stopped".
TEST(ControllerRelinquish, ASwitchoverInFlightIsToldTheGuestWasRelinquished) {
  auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
  testing::FakeDriver* driver = fake.get();
  driver->LoseWritesInTheFinalEpoch("flushing /dev/nbd0: EIO");
  Backups backups;
  RecordingOutput output;
  replicator::PrimaryController c(std::move(fake), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= 2; }));
  auto fin = c.Handover(20000ms);
  ASSERT_FALSE(fin.ok()) << "the final epoch was never committed, yet the switchover reports epoch " << *fin;
  const std::string m = fin.status().message();  // a copy: status() returns a temporary
  EXPECT_NE(m.find("relinquished"), std::string::npos) << m;
  EXPECT_NE(m.find("cannot be committed: flushing /dev/nbd0: EIO"), std::string::npos) << m;
  EXPECT_NE(m.find("handed over to the backup, which resumes the guest from epoch " +
                   std::to_string(backups.sink.last_committed_epoch())),
            std::string::npos)
      << m;
  EXPECT_EQ(m.find("replication stopped"), std::string::npos) << m;
  Status st = r.Stop();
  backups.JoinAll();
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(c.handed_over());
  EXPECT_TRUE(driver->paused());
  ASSERT_EQ(backups.Ends().size(), 1u);
  EXPECT_EQ(backups.Ends()[0].bye_reason, protocol::ByeReason::kHandover);
}

// Nothing committed yet: no checkpoint to hand over. The backup is told the
// guest stopped (it does not fail over) and the guest waits, suspended.
TEST(ControllerRelinquish, WithNothingCommittedTheGuestWaitsForTheOperator) {
  const auto r = RunRelinquished([](uint64_t epoch, uint64_t) { return epoch == 1; }, "flushing /dev/nbd0: EIO");
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("holds no checkpoint"), std::string::npos) << r.status.ToString();
  EXPECT_FALSE(r.handed_over);
  EXPECT_TRUE(r.paused);
  EXPECT_EQ(r.sessions, 1);
  EXPECT_EQ(r.discards, 1);
  EXPECT_EQ(r.release_all, 0);
  ASSERT_EQ(r.ends.size(), 1u);
  EXPECT_EQ(r.ends[0].cause, restore::EndCause::kByeGuestStopped) << "the backup must not fail over";
  EXPECT_NE(r.ends[0].bye_text.find("epoch 1 cannot be committed"), std::string::npos) << r.ends[0].bye_text;
}

// A driver that could not record that its copy must never run again (so a
// later replicator might resume it) does not get its guest handed over:
// the backup must not run a second copy.
TEST(ControllerRelinquish, WithoutTheDriversRecordTheBackupDoesNotTakeOver) {
  const auto r = RunRelinquished([](uint64_t epoch, uint64_t) { return epoch == 5; }, "flushing /dev/nbd0: EIO",
                                 /*unrecorded=*/true);
  ASSERT_FALSE(r.status.ok());
  EXPECT_FALSE(r.handed_over);
  EXPECT_NE(r.status.message().find("could not be marked"), std::string::npos) << r.status.ToString();
  EXPECT_EQ(r.discards, 1);
  EXPECT_EQ(r.release_all, 0);
  ASSERT_EQ(r.ends.size(), 1u);
  EXPECT_EQ(r.ends[0].cause, restore::EndCause::kByeGuestStopped);
}

// A checkpoint from an earlier session is not the guest: between the
// sessions it ran unprotected and its output went out. Relinquished at the
// new session's first epoch, the guest is not handed over to it.
TEST(ControllerRelinquish, ACheckpointOfAnEarlierSessionIsNotHandedOver) {
  std::atomic<uint64_t> sessions{0};
  const auto r = RunRelinquished(
      [&](uint64_t epoch, uint64_t first) {
        if (epoch == first) sessions++;
        return sessions.load() == 2 && epoch == first;
      },
      "flushing /dev/nbd0: EIO", false,
      [&](replicator::ControllerOptions& opts, Backups& backups) {
        opts.phase_hook = [&](Phase p, uint64_t e) {
          if (p == Phase::kAfterCommit && e == 3 && sessions.load() == 1) backups.Cut();
        };
      });
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(sessions.load(), 2u);
  EXPECT_GE(r.committed, 3u);
  EXPECT_FALSE(r.handed_over) << "the backup's checkpoint predates output the world saw";
  EXPECT_NE(r.status.message().find("older than what the guest's output already showed"), std::string::npos)
      << r.status.ToString();
  ASSERT_EQ(r.ends.size(), 2u);
  EXPECT_EQ(r.ends[1].cause, restore::EndCause::kByeGuestStopped);
}

// A longer account than BYE's 256 bytes is cut (at a character boundary),
// not dropped: without its BYE the backup would see EOF and fail over.
TEST(ControllerXen, AGuestThatDiesWithALongStoryStillSaysBye) {
  auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
  std::string why = "domain fake-domain shut down (crash) instead of suspending; the hypervisor logged ";
  while (why.size() < 250) why += "x";
  why += "\u00e9\u00e9\u00e9";  // two-byte characters across the cut
  while (why.size() < 600) why += "y";
  fake->DieAt(3, why);
  Backups backups;
  replicator::NoOutputCommit output;
  replicator::PrimaryController c(std::move(fake), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  std::atomic<bool> stop{false};
  EXPECT_FALSE(c.Run(stop).ok());
  backups.JoinAll();
  const std::vector<restore::SessionEnd> ends = backups.Ends();
  ASSERT_EQ(ends.size(), 1u);
  const restore::SessionEnd& end = ends[0];
  EXPECT_EQ(end.cause, restore::EndCause::kByeGuestStopped);
  EXPECT_EQ(end.bye_text.rfind("domain fake-domain shut down (crash)", 0), 0u) << end.bye_text;
  EXPECT_EQ(end.bye_text.substr(end.bye_text.size() - 3), "...");
}

// An operator's stop still says so.
TEST(ControllerXen, AnOperatorStopIsAnOperatorStop) {
  auto fake = std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike());
  Backups backups;
  replicator::NoOutputCommit output;
  replicator::PrimaryController c(std::move(fake), output, backups.Connect(), FastSender(), FastController(),
                                  nullptr);
  Running r(c);
  ASSERT_TRUE(Running::WaitFor([&] { return c.last_acked_epoch() >= 2; }));
  ASSERT_TRUE(r.Stop().ok());
  backups.JoinAll();
  ASSERT_EQ(backups.Ends().size(), 1u);
  EXPECT_EQ(backups.Ends()[0].bye_reason, protocol::ByeReason::kOperatorStop);
  EXPECT_EQ(backups.Ends()[0].cause, restore::EndCause::kByeStop);
  EXPECT_EQ(backups.Ends()[0].bye_text, "replication stopped by operator");
}

}  // namespace
}  // namespace romulus

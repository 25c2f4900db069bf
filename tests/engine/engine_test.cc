// The engine end to end in one process: EpochLoop + CheckpointSender on one
// end of a socketpair, CheckpointReceiver + ImageSink on the other, a running
// simulated guest. Real threads, real frames, real codec and cache.
#include <gtest/gtest.h>
#include <unistd.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "common/digest.h"
#include "compress/page_batch.h"
#include "protocol/frame_io.h"
#include "protocol/messages.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "restore/checkpoint_receiver.h"
#include "sim/image_sink.h"
#include "sim/sim_guest.h"
#include "transport/fd_stream.h"
#include "tests/engine/stream_pair.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;

using test_engine::MakeStreamPair;
using test_engine::StreamPair;

// Reads a --stats-json file: epoch -> digest of every acked epoch.
std::map<uint64_t, std::string> AckedDigests(const std::string& path) {
  std::map<uint64_t, std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"acked\":true") == std::string::npos) continue;
    auto e = line.find("\"epoch\":");
    auto d = line.find("\"digest\":\"");
    if (e == std::string::npos || d == std::string::npos) continue;
    out[std::stoull(line.substr(e + 8))] = line.substr(d + 10, 16);
  }
  return out;
}

class EngineTest : public ::testing::TestWithParam<sim::Workload> {};

TEST_P(EngineTest, EveryAckedEpochIsAnExactCheckpointOnTheBackup) {
  sim::SimSpec spec;
  spec.size_bytes = 32 << 20;
  spec.workload = GetParam();
  spec.rate = sim::DefaultRate(spec.workload);
  auto guest = sim::SimGuest::Create(spec);
  ASSERT_TRUE(guest.ok());
  sim::ImageSinkOptions sopts;
  sopts.run_activated = false;
  auto sink = sim::ImageSink::Open(sopts);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();

  auto pair = MakeStreamPair();
  restore::ReceiverOptions ropts;
  restore::CheckpointReceiver receiver(ropts);
  std::map<uint64_t, std::string> committed;  // what the backup committed, by epoch
  restore::SessionEnd end;
  std::thread backup([&] {
    end = receiver.Serve(*pair.backup, **sink, [&](const restore::CommitEvent& e) {
      committed[e.epoch] = DigestHex(e.digest);
      // The image really is at the committed digest, not just the counter.
      EXPECT_EQ((*sink)->digest(), e.digest);
    });
  });

  // Per process: the release and ASan builds run this case too, maybe at once.
  const std::string stats_path = ::testing::TempDir() + "/engine_stats_" +
                                 sim::WorkloadName(spec.workload) + "." + std::to_string(::getpid()) + ".json";
  struct RemoveAtEnd {
    const std::string& path;
    ~RemoveAtEnd() { std::remove(path.c_str()); }
  } remove_stats{stats_path};
  replicator::StatsWriter stats;
  ASSERT_TRUE(stats.OpenJson(stats_path));
  replicator::NoOutputCommit output;
  replicator::SenderOptions sopt;
  sopt.codec.cache_pages = 2048;  // smaller than the guest: evictions happen
  replicator::ControllerOptions lopt;
  lopt.interval = 5ms;
  lopt.max_epochs = 60;
  lopt.ack_timeout = 5000ms;
  std::unique_ptr<transport::Stream> primary_end = std::move(pair.primary);
  auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!primary_end) return Status::Closed("test: only one connection");
    return std::move(primary_end);
  };
  ASSERT_TRUE((*guest)->Start().ok());
  replicator::PrimaryController loop(replicator::MakeTimerDriver(**guest), output, connect, sopt, lopt, &stats);
  std::atomic<bool> stop{false};
  Status st = loop.Run(stop);
  (*guest)->Stop();
  backup.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(end.clean_stop) << end.reason.ToString();
  EXPECT_EQ(end.epochs_committed, 60u);
  EXPECT_EQ(loop.totals().acked, 60u);

  auto acked = AckedDigests(stats_path);
  ASSERT_EQ(acked.size(), 60u);
  for (const auto& [epoch, digest] : acked) {
    ASSERT_TRUE(committed.count(epoch)) << "epoch " << epoch << " acked but not committed";
    EXPECT_EQ(committed[epoch], digest) << "epoch " << epoch;
  }
  // The final image is exactly the guest's memory at the last checkpoint:
  // replay the deterministic workload to the committed step count.
  auto resumed = sim::SimGuest::Restore(spec, {(*sink)->image(), spec.size_bytes}, (*sink)->committed_state());
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  auto replay = sim::SimGuest::Create(spec);
  ASSERT_TRUE(replay.ok());
  ASSERT_TRUE((*replay)->RunSteps((*resumed)->steps()).ok());
  EXPECT_EQ(std::memcmp((*replay)->memory(), (*sink)->image(), spec.size_bytes), 0);
  EXPECT_EQ((*replay)->ComputeDigest(), (*sink)->digest());
  EXPECT_GT((*resumed)->steps(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Workloads, EngineTest,
                         ::testing::Values(sim::Workload::kSeed, sim::Workload::kSparse, sim::Workload::kHotset,
                                           sim::Workload::kSequential),
                         [](const auto& info) { return std::string(sim::WorkloadName(info.param)); });

// One session of the engine against `sink` over a socketpair: `epochs`
// checkpoints, then a clean stop (BYE). on_epoch sees every epoch's stats.
struct SessionResult {
  Status status;
  restore::SessionEnd end;
};
SessionResult RunOneSession(replicator::GuestSource& guest, restore::GuestSink& sink, uint64_t epochs,
                            std::function<void(const replicator::EpochStats&)> on_epoch) {
  auto pair = MakeStreamPair();
  restore::CheckpointReceiver receiver(restore::ReceiverOptions{});
  SessionResult r;
  std::thread backup([&] { r.end = receiver.Serve(*pair.backup, sink, nullptr); });
  replicator::NoOutputCommit output;
  replicator::SenderOptions sopt;
  sopt.codec.cache_pages = 2048;
  replicator::ControllerOptions lopt;
  lopt.interval = 5ms;
  lopt.max_epochs = epochs;
  lopt.ack_timeout = 5000ms;
  lopt.on_epoch = std::move(on_epoch);
  std::unique_ptr<transport::Stream> primary_end = std::move(pair.primary);
  auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!primary_end) return Status::Closed("test: only one connection");
    return std::move(primary_end);
  };
  replicator::PrimaryController loop(replicator::MakeTimerDriver(guest), output, connect, sopt, lopt, nullptr);
  std::atomic<bool> stop{false};
  r.status = loop.Run(stop);
  backup.join();
  return r;
}

// A resync (new session, same backup) sends only the pages the backup does
// not hold (HELD, docs/PROTOCOL.md §3.9), not the whole guest again; a fresh
// backup gets only the non-zero pages. The image is still exact.
TEST(EngineResync, ASecondSessionSendsOnlyWhatTheBackupLacks) {
  sim::SimSpec spec;
  spec.size_bytes = 64 << 20;
  spec.workload = sim::Workload::kSparse;
  spec.rate = sim::DefaultRate(spec.workload);
  auto guest = sim::SimGuest::Create(spec);
  ASSERT_TRUE(guest.ok());
  sim::ImageSinkOptions sopts;
  sopts.run_activated = false;
  auto sink = sim::ImageSink::Open(sopts);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  // No workload thread: the guest changes only by the steps run here, so
  // what the resync must send is known exactly (no timing in the test).
  // First the sparse workload spreads writes over much of the memory.
  ASSERT_TRUE((*guest)->RunSteps(2000).ok());
  uint64_t nonzero_first = 0;
  for (uint64_t pfn = 0; pfn < spec.pages(); ++pfn) {
    nonzero_first += PageHash(pfn, (*guest)->memory() + pfn * 4096) != 0;
  }

  std::vector<replicator::EpochStats> first_epochs;  // the first epoch of each session
  auto run_session = [&](uint64_t epochs) {
    bool first = true;
    SessionResult r = RunOneSession(**guest, **sink, epochs, [&](const replicator::EpochStats& st) {
      if (first) first_epochs.push_back(st);
      first = false;
    });
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_TRUE(r.end.clean_stop) << r.end.reason.ToString();
    EXPECT_EQ(r.end.epochs_committed, epochs);
  };
  run_session(3);
  ASSERT_FALSE(HasFatalFailure());
  // Between the sessions (the backup lost, say) the guest writes on: 10
  // steps of 64 random words, at most 640 pages.
  std::vector<uint8_t> before((*guest)->memory(), (*guest)->memory() + spec.size_bytes);
  ASSERT_TRUE((*guest)->RunSteps(10).ok());
  uint64_t changed = 0;
  for (uint64_t pfn = 0; pfn < spec.pages(); ++pfn) {
    changed += std::memcmp(&before[pfn * 4096], (*guest)->memory() + pfn * 4096, 4096) != 0;
  }
  run_session(3);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(first_epochs.size(), 2u);

  uint64_t nonzero = 0;
  for (uint64_t pfn = 0; pfn < spec.pages(); ++pfn) {
    nonzero += PageHash(pfn, (*sink)->image() + pfn * 4096) != 0;
  }
  auto sent = [](const replicator::EpochStats& st) {
    uint64_t n = 0;
    for (uint64_t k : st.pages_by_kind) n += k;
    return n;
  };
  std::printf("first sync: %llu pages sent of %llu (non-zero: %llu); %llu pages changed; resync: %llu sent\n",
              static_cast<unsigned long long>(sent(first_epochs[0])),
              static_cast<unsigned long long>(spec.pages()), static_cast<unsigned long long>(nonzero),
              static_cast<unsigned long long>(changed), static_cast<unsigned long long>(sent(first_epochs[1])));
  ASSERT_GT(nonzero, spec.pages() / 4) << "the workload did not spread: the test proves nothing";
  ASSERT_GT(changed, 0u);
  // The first sync sent every non-zero page; the resync exactly the pages
  // that changed since the last commit, not the non-zero guest again.
  EXPECT_EQ(sent(first_epochs[0]), nonzero_first) << "the first sync sends each non-zero page once";
  EXPECT_EQ(sent(first_epochs[1]), changed);
  // And the image is exactly the guest at the last checkpoint.
  auto resumed = sim::SimGuest::Restore(spec, {(*sink)->image(), spec.size_bytes}, (*sink)->committed_state());
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  auto replay = sim::SimGuest::Create(spec);
  ASSERT_TRUE(replay.ok());
  ASSERT_TRUE((*replay)->RunSteps((*resumed)->steps()).ok());
  EXPECT_EQ(std::memcmp((*replay)->memory(), (*sink)->image(), spec.size_bytes), 0);
}

// A fresh backup holds zero pages (HELD: an empty table), so the first sync
// sends only the guest's non-zero pages: its cost follows the data, not the
// guest's size.
TEST(EngineResync, AFreshBackupGetsOnlyTheNonZeroPages) {
  sim::SimSpec spec;
  spec.size_bytes = 128 << 20;
  spec.workload = sim::Workload::kSeed;  // writes the first 16 MiB only
  spec.rate = sim::DefaultRate(spec.workload);
  auto guest = sim::SimGuest::Create(spec);
  ASSERT_TRUE(guest.ok());
  sim::ImageSinkOptions sopts;
  sopts.run_activated = false;
  auto sink = sim::ImageSink::Open(sopts);
  ASSERT_TRUE(sink.ok());
  std::vector<replicator::EpochStats> epochs;
  ASSERT_TRUE((*guest)->Start().ok());
  SessionResult r = RunOneSession(**guest, **sink, 3, [&](const replicator::EpochStats& st) { epochs.push_back(st); });
  (*guest)->Stop();
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.end.epochs_committed, 3u);
  ASSERT_FALSE(epochs.empty());
  uint64_t sent = 0;
  for (uint64_t k : epochs[0].pages_by_kind) sent += k;
  std::printf("first sync of a %llu-page guest with 4096 written pages: %llu pages sent\n",
              static_cast<unsigned long long>(spec.pages()), static_cast<unsigned long long>(sent));
  // At most the written pages twice (the live pass, then the paused part);
  // every zero page used to be sent too.
  EXPECT_LE(sent, 2u * 4096u);
  EXPECT_EQ((*sink)->digest(), (*sink)->ComputeImageDigest());
}

// A hand-driven primary: speaks the protocol frame by frame so a test can
// send exactly the wrong thing.
class RawPrimary {
 public:
  explicit RawPrimary(transport::Stream* s) : writer_(s), rb_(4096, 1 << 20), reader_(s, &rb_) {}
  void Hello(uint64_t guest_pages) {
    protocol::Hello h;
    h.cache_pages = 64;
    h.guest_pages = guest_pages;
    h.session_id = 42;
    h.identity = "sim:size=1M,workload=idle";
    ASSERT_TRUE(writer_.Send(h, 0).ok());
    auto f = reader_.Next(transport::DeadlineIn(5000ms));
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_EQ(f->type(), protocol::FrameType::kHelloAck);
    auto ack = protocol::HelloAck::Decode(f->payload);
    ASSERT_TRUE(ack.ok() && ack->accepted) << (ack.ok() ? ack->text : "");
  }
  // One RAW page filled with `fill` at pfn, then EPOCH_END with `digest`.
  Status Epoch(uint64_t epoch, uint64_t pfn, uint8_t fill, uint64_t digest) {
    uint8_t page[4096];
    std::memset(page, fill, sizeof page);
    uint8_t batch[8192];
    compress::BatchWriter w(batch, sizeof batch);
    ROMULUS_RETURN_IF_ERROR(w.Append({pfn, compress::PageKind::kRaw, {page, sizeof page}}));
    ROMULUS_RETURN_IF_ERROR(writer_.Write(protocol::FrameType::kPages, epoch, {batch, w.size()}));
    protocol::EpochEnd end;
    end.page_count = 1;
    end.frame_count = 1;
    end.payload_bytes = w.size();
    end.digest = digest;
    return writer_.Send(end, epoch);
  }
  Result<protocol::Frame> Next() { return reader_.Next(transport::DeadlineIn(5000ms)); }
  // Skips heartbeats.
  Result<protocol::Frame> NextNonHeartbeat() {
    while (true) {
      auto f = Next();
      if (!f.ok() || f->type() != protocol::FrameType::kHeartbeat) return f;
    }
  }

 private:
  protocol::FrameWriter writer_;
  buffer::ReusableBuffer rb_;
  protocol::FrameReader reader_;
};

uint64_t DigestOfFilledPage(uint64_t pfn, uint8_t fill) {
  uint8_t page[4096];
  std::memset(page, fill, sizeof page);
  return PageHash(pfn, page);
}

// A backup (in-memory ImageSink + CheckpointReceiver) serving one end of a
// socketpair on its own thread; the test plays the primary on the other end.
class ReceiverTest : public ::testing::Test {
 protected:
  void StartBackup(restore::ReceiverOptions opts = {}) {
    auto sink = sim::ImageSink::Open({});
    ASSERT_TRUE(sink.ok());
    sink_ = std::move(*sink);
    pair_ = MakeStreamPair();
    receiver_ = std::make_unique<restore::CheckpointReceiver>(opts);
    backup_ = std::thread([this] { end_ = receiver_->Serve(*pair_.backup, *sink_, nullptr); });
  }
  // Waits for the session to end.
  void JoinBackup() { backup_.join(); }
  void TearDown() override {
    if (backup_.joinable()) backup_.join();
  }
  transport::Stream* primary() { return pair_.primary.get(); }

  std::unique_ptr<sim::ImageSink> sink_;
  StreamPair pair_;
  std::unique_ptr<restore::CheckpointReceiver> receiver_;
  restore::SessionEnd end_;
  std::thread backup_;
};

TEST_F(ReceiverTest, DigestMismatchNeverCommitsAndKeepsTheLastGoodEpoch) {
  StartBackup();
  RawPrimary p(primary());
  p.Hello(256);
  const uint64_t good = DigestOfFilledPage(3, 0xab);
  ASSERT_TRUE(p.Epoch(1, 3, 0xab, good).ok());
  auto ack = p.NextNonHeartbeat();
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  ASSERT_EQ(ack->type(), protocol::FrameType::kAck);
  EXPECT_EQ(ack->epoch(), 1u);

  // Epoch 2 claims a digest that does not match what it carries.
  ASSERT_TRUE(p.Epoch(2, 7, 0xcd, good + 1).ok());
  auto err = p.NextNonHeartbeat();
  ASSERT_TRUE(err.ok()) << err.status().ToString();
  EXPECT_EQ(err->type(), protocol::FrameType::kError);
  JoinBackup();

  EXPECT_EQ(end_.reason.code(), Code::kCorruption);
  EXPECT_NE(end_.reason.message().find("digest mismatch"), std::string::npos) << end_.reason.ToString();
  EXPECT_FALSE(end_.clean_stop);
  EXPECT_EQ(sink_->last_committed_epoch(), 1u);
  EXPECT_EQ(sink_->digest(), good);
  const uint8_t* pfn7 = sink_->image() + 7 * 4096;
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(pfn7[i], 0) << "epoch 2 leaked into the image";
  EXPECT_EQ(sink_->image()[3 * 4096], 0xab);
}

TEST_F(ReceiverTest, FrameOfTheWrongEpochIsAProtocolError) {
  StartBackup();
  RawPrimary p(primary());
  p.Hello(256);
  ASSERT_TRUE(p.Epoch(5, 1, 1, DigestOfFilledPage(1, 1)).ok());  // first_epoch is 1
  JoinBackup();
  EXPECT_EQ(end_.reason.code(), Code::kCorruption);
  EXPECT_FALSE(sink_->has_committed());
}

TEST_F(ReceiverTest, SilentPrimaryEndsTheSessionAfterThePeerTimeout) {
  StartBackup();
  RawPrimary p(primary());
  p.Hello(256);  // peer_timeout 1000 ms by default; then silence
  JoinBackup();
  EXPECT_EQ(end_.reason.code(), Code::kTimeout) << end_.reason.ToString();
}

TEST_F(ReceiverTest, OversizedGuestIsRefusedAtTheHandshake) {
  restore::ReceiverOptions ropts;
  ropts.max_guest_pages = 1000;
  StartBackup(ropts);
  protocol::FrameWriter w(primary());
  protocol::Hello h;
  h.cache_pages = 64;
  h.guest_pages = uint64_t{1} << 40;  // a 4 PiB "guest": must be refused before any allocation
  h.session_id = 1;
  h.identity = "huge";
  ASSERT_TRUE(w.Send(h, 0).ok());
  buffer::ReusableBuffer rb(4096, 1 << 20);
  protocol::FrameReader r(primary(), &rb);
  auto f = r.Next(transport::DeadlineIn(5000ms));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->type(), protocol::FrameType::kHelloAck);
  auto ack = protocol::HelloAck::Decode(f->payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_FALSE(ack->accepted);
  JoinBackup();
  EXPECT_FALSE(end_.reason.ok());
}

}  // namespace
}  // namespace romulus

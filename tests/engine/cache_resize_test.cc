// Live cache resize (`romulus ctl set cache-size`, docs/PROTOCOL.md §3.8):
// the real engine on both ends of a socketpair resizes at one epoch
// boundary and the two caches stay identical; an older backup gets the
// next-session fallback; a backup refuses CACHE_RESIZE frames that break
// the rules.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "common/digest.h"
#include "compress/page_batch.h"
#include "protocol/frame_io.h"
#include "protocol/messages.h"
#include "replicator/control.h"
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
using Pair = test_engine::StreamPair;

bool Has(const std::string& reply, const std::string& what) { return reply.find(what) != std::string::npos; }

// One primary (EpochLoop over a simulated guest) and one backup
// (CheckpointReceiver + in-memory image) for `epochs` epochs. `at_epoch`
// runs on the loop thread right after an epoch is acked and published, so a
// control request made there applies at exactly the next epoch.
struct PairRun {
  sim::SimSpec spec;
  restore::ReceiverOptions ropts;
  uint64_t cache_pages = 1024;
  uint64_t epochs = 40;
  std::function<void(uint64_t epoch, const replicator::ControlHandler&)> at_epoch;

  // Results, by epoch.
  std::map<uint64_t, uint64_t> primary_digest, backup_digest;  // cache StateDigest
  std::map<uint64_t, uint64_t> primary_cap, backup_cap;        // cache capacity
  std::map<uint64_t, uint64_t> hits;                           // primary cache hits
  restore::SessionEnd end;
  Status status;
  uint64_t resyncs = 0, active_cache_size = 0, next_cache_size = 0;
  bool image_exact = false;

  void Go() {
    spec.size_bytes = 32 << 20;
    spec.workload = sim::Workload::kHotset;  // rewrites a hot set: cache hits, deltas
    spec.rate = sim::DefaultRate(spec.workload);
    auto guest = sim::SimGuest::Create(spec);
    ASSERT_TRUE(guest.ok());
    sim::ImageSinkOptions so;
    so.run_activated = false;
    auto sink = sim::ImageSink::Open(so);
    ASSERT_TRUE(sink.ok());
    auto pair = MakeStreamPair();
    ropts.digest_cache_on_commit = true;
    restore::CheckpointReceiver receiver(ropts);
    std::mutex mu;  // the maps are written by both threads
    std::thread backup([&] {
      end = receiver.Serve(*pair.backup, **sink, [&](const restore::CommitEvent& e) {
        // Every committed image is exact, so deltas against the resized
        // mirror decoded to the primary's bytes.
        EXPECT_EQ((*sink)->digest(), e.digest) << "epoch " << e.epoch;
        std::lock_guard<std::mutex> lock(mu);
        backup_digest[e.epoch] = e.cache_digest;
        backup_cap[e.epoch] = e.cache_pages;
      });
    });

    replicator::NoOutputCommit output;
    replicator::SenderOptions sopt;
    sopt.codec.cache_pages = cache_pages;
    replicator::ControllerOptions lopt;
    lopt.interval = 5ms;
    lopt.max_epochs = epochs;
    lopt.ack_timeout = 10000ms;
    replicator::PrimaryController* loop_ptr = nullptr;
    replicator::ControlHandler handle;
    lopt.on_epoch = [&](const replicator::EpochStats& st) {
      const compress::PageCache* cache = loop_ptr->session_cache();
      ASSERT_NE(cache, nullptr);
      {
        std::lock_guard<std::mutex> lock(mu);
        primary_digest[st.epoch] = cache->StateDigest();
        primary_cap[st.epoch] = cache->capacity_pages();
        hits[st.epoch] = st.cache_hits;
      }
      if (at_epoch) at_epoch(st.epoch, handle);
    };
    std::unique_ptr<transport::Stream> primary_end = std::move(pair.primary);
    auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
      if (!primary_end) return Status::Closed("test: only one connection");
      return std::move(primary_end);
    };
    ASSERT_TRUE((*guest)->Start().ok());
    replicator::PrimaryController loop(replicator::MakeTimerDriver(**guest), output, connect, sopt, lopt, nullptr);
    loop_ptr = &loop;
    handle = replicator::PrimaryControlHandler(&loop);
    std::atomic<bool> stop{false};
    status = loop.Run(stop);
    (*guest)->Stop();
    backup.join();
    resyncs = loop.totals().resyncs;
    active_cache_size = loop.cache_size_active();
    next_cache_size = loop.cache_size_next();

    // The final image is the guest at the last checkpoint, byte for byte.
    auto resumed = sim::SimGuest::Restore(spec, {(*sink)->image(), spec.size_bytes}, (*sink)->committed_state());
    ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
    auto replay = sim::SimGuest::Create(spec);
    ASSERT_TRUE(replay.ok());
    ASSERT_TRUE((*replay)->RunSteps((*resumed)->steps()).ok());
    image_exact = std::memcmp((*replay)->memory(), (*sink)->image(), spec.size_bytes) == 0;
  }
};

std::string Call(const replicator::ControlHandler& h, std::vector<std::string> words) {
  return replicator::RenderControlReply(replicator::HandleWords(h, words));
}

TEST(LiveCacheResize, BothEndsResizeAtTheSameBoundaryAndStayIdentical) {
  PairRun r;
  r.ropts.cache_pages = 4096;  // the backup's --max-cache-size: 16M
  std::map<uint64_t, std::string> replies;
  r.at_epoch = [&](uint64_t e, const replicator::ControlHandler& h) {
    if (e == 10) replies[e] = Call(h, {"set", "cache-size", "12M"});  // grow 1024 -> 3072 pages
    if (e == 20) replies[e] = Call(h, {"set", "cache-size", "2M"});   // shrink to 512
    if (e == 25) replies[e] = Call(h, {"set", "cache-size", "32M"});  // above the backup's max
    if (e == 30) replies[e] = Call(h, {"set", "cache-size", "0"});    // disable
    if (e == 33) replies[e] = Call(h, {"set", "cache-size", "8M"});   // and back: 2048
  };
  r.Go();
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_TRUE(r.end.clean_stop) << r.end.reason.ToString();
  EXPECT_EQ(r.end.epochs_committed, 40u);
  EXPECT_EQ(r.resyncs, 0u) << "resized live, not through a resynchronisation";

  EXPECT_TRUE(Has(replies[10], "\"ok\":true")) << replies[10];
  EXPECT_TRUE(Has(replies[10], "\"applies\":\"next epoch\"")) << replies[10];
  EXPECT_TRUE(Has(replies[10], "\"cache_size\":12582912")) << replies[10];
  EXPECT_TRUE(Has(replies[25], "\"usage\":true")) << replies[25];
  EXPECT_TRUE(Has(replies[25], "max-cache-size")) << replies[25];

  // The same capacity on both ends at every epoch, changing exactly at the
  // epoch after each request; the refused one changed nothing.
  const std::map<uint64_t, uint64_t> expect_cap = {{10, 1024}, {11, 3072}, {20, 3072}, {21, 512},
                                                   {26, 512},  {30, 512},  {31, 0},    {33, 0},
                                                   {34, 2048}, {40, 2048}};
  for (auto [epoch, cap] : expect_cap) {
    EXPECT_EQ(r.primary_cap[epoch], cap) << "epoch " << epoch;
    EXPECT_EQ(r.backup_cap[epoch], cap) << "epoch " << epoch;
  }
  // Byte-identical caches (entries, LRU order, sent-once set) after every epoch.
  ASSERT_EQ(r.primary_digest.size(), 40u);
  ASSERT_EQ(r.backup_digest.size(), 40u);
  for (uint64_t e = 1; e <= 40; ++e) {
    EXPECT_EQ(r.primary_digest[e], r.backup_digest[e]) << "caches diverged at epoch " << e;
  }
  // Deltas really ran against the resized caches (and none while disabled).
  uint64_t hits_after_grow = 0, hits_after_shrink = 0, hits_disabled = 0;
  for (uint64_t e = 11; e <= 20; ++e) hits_after_grow += r.hits[e];
  for (uint64_t e = 21; e <= 30; ++e) hits_after_shrink += r.hits[e];
  for (uint64_t e = 31; e <= 33; ++e) hits_disabled += r.hits[e];
  EXPECT_GT(hits_after_grow, 0u);
  EXPECT_GT(hits_after_shrink, 0u);
  EXPECT_EQ(hits_disabled, 0u);
  EXPECT_TRUE(r.image_exact);
  EXPECT_EQ(r.active_cache_size, 8u << 20);
}

// A backup without kCapCacheResize: the request is accepted for the next
// session, nothing is sent, the running session keeps its cache.
TEST(LiveCacheResize, OlderBackupGetsTheNextSessionFallback) {
  PairRun r;
  r.ropts.capabilities = protocol::kCapAllKnown & ~protocol::kCapCacheResize;
  r.epochs = 10;
  std::string reply;
  r.at_epoch = [&](uint64_t e, const replicator::ControlHandler& h) {
    if (e == 3) reply = Call(h, {"set", "cache-size", "8M"});
  };
  r.Go();
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.end.epochs_committed, 10u);
  EXPECT_TRUE(Has(reply, "\"ok\":true")) << reply;
  EXPECT_TRUE(Has(reply, "\"cache_size_next_session\":8388608")) << reply;
  EXPECT_TRUE(Has(reply, "next session")) << reply;
  for (uint64_t e = 1; e <= 10; ++e) {
    EXPECT_EQ(r.primary_cap[e], 1024u) << e;
    EXPECT_EQ(r.backup_cap[e], 1024u) << e;
    EXPECT_EQ(r.primary_digest[e], r.backup_digest[e]) << e;
  }
  EXPECT_EQ(r.active_cache_size, 4u << 20);
  EXPECT_EQ(r.next_cache_size, 8u << 20);
}

// ---- The backup's checks on CACHE_RESIZE, with a hand-driven primary ----

class RawResize : public ::testing::Test {
 protected:
  void StartBackup(uint64_t max_cache_pages) {
    auto sink = sim::ImageSink::Open({});
    ASSERT_TRUE(sink.ok());
    sink_ = std::move(*sink);
    pair_ = MakeStreamPair();
    restore::ReceiverOptions opts;
    opts.cache_pages = max_cache_pages;
    receiver_ = std::make_unique<restore::CheckpointReceiver>(opts);
    backup_ = std::thread([this] {
      end_ = receiver_->Serve(*pair_.backup, *sink_, [this](const restore::CommitEvent& e) {
        commit_cache_pages_ = e.cache_pages;
      });
    });
    writer_ = std::make_unique<protocol::FrameWriter>(pair_.primary.get());
    reader_ = std::make_unique<protocol::FrameReader>(pair_.primary.get(), &rb_);
  }
  void TearDown() override {
    if (backup_.joinable()) backup_.join();
  }
  protocol::HelloAck Hello(uint64_t caps) {
    protocol::Hello h;
    h.capabilities = caps;
    h.cache_pages = 64;
    h.guest_pages = 256;
    h.session_id = 9;
    h.identity = "raw";
    EXPECT_TRUE(writer_->Send(h, 0).ok());
    auto f = NextNonHeartbeat();
    EXPECT_TRUE(f.ok() && f->type() == protocol::FrameType::kHelloAck);
    auto ack = protocol::HelloAck::Decode(f->payload);
    EXPECT_TRUE(ack.ok() && ack->accepted);
    return ack.ok() ? *ack : protocol::HelloAck{};
  }
  Status Resize(uint64_t epoch, uint64_t pages) {
    protocol::CacheResize c;
    c.cache_pages = pages;
    return writer_->Send(c, epoch);
  }
  // One RAW page at pfn 1; with_end: then EPOCH_END.
  Status Page(uint64_t epoch, bool with_end) {
    uint8_t page[4096];
    std::memset(page, 0x42, sizeof page);
    uint8_t batch[8192];
    compress::BatchWriter w(batch, sizeof batch);
    ROMULUS_RETURN_IF_ERROR(w.Append({1, compress::PageKind::kRaw, {page, sizeof page}}));
    ROMULUS_RETURN_IF_ERROR(writer_->Write(protocol::FrameType::kPages, epoch, {batch, w.size()}));
    if (!with_end) return Status::Ok();
    protocol::EpochEnd end;
    end.page_count = 1;
    end.frame_count = 1;
    end.payload_bytes = w.size();
    end.digest = PageHash(1, page);
    return writer_->Send(end, epoch);
  }
  Result<protocol::Frame> NextNonHeartbeat() {
    while (true) {
      auto f = reader_->Next(transport::DeadlineIn(5000ms));
      if (!f.ok() || f->type() != protocol::FrameType::kHeartbeat) return f;
    }
  }
  // The next frame must be ERROR with `code`.
  void ExpectError(protocol::ErrorCode code) {
    auto f = NextNonHeartbeat();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_EQ(f->type(), protocol::FrameType::kError);
    auto err = protocol::Error::Decode(f->payload);
    ASSERT_TRUE(err.ok());
    EXPECT_EQ(err->code, static_cast<uint16_t>(code)) << err->text;
  }

  std::unique_ptr<sim::ImageSink> sink_;
  Pair pair_;
  std::unique_ptr<restore::CheckpointReceiver> receiver_;
  restore::SessionEnd end_;
  std::atomic<uint64_t> commit_cache_pages_{0};
  std::thread backup_;
  buffer::ReusableBuffer rb_{4096, 1 << 20};
  std::unique_ptr<protocol::FrameWriter> writer_;
  std::unique_ptr<protocol::FrameReader> reader_;
};

TEST_F(RawResize, AppliedAsFirstFrameThenRefusedMidEpoch) {
  StartBackup(100);
  auto ack = Hello(protocol::kCapCacheResize);
  EXPECT_TRUE(ack.has_max_cache());
  EXPECT_EQ(ack.max_cache_pages, 100u) << "the backup tells its limit";
  ASSERT_TRUE(Resize(1, 100).ok());  // at the limit: fine
  ASSERT_TRUE(Page(1, true).ok());
  auto f = NextNonHeartbeat();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->type(), protocol::FrameType::kAck);
  // Epoch 2: a page first, then CACHE_RESIZE: too late in the epoch.
  ASSERT_TRUE(Page(2, false).ok());
  ASSERT_TRUE(Resize(2, 50).ok());
  ExpectError(protocol::ErrorCode::kProtocol);
  backup_.join();
  EXPECT_EQ(end_.reason.code(), Code::kCorruption) << end_.reason.ToString();
  EXPECT_EQ(sink_->last_committed_epoch(), 1u);
  EXPECT_EQ(commit_cache_pages_.load(), 100u) << "epoch 1 committed with the resized mirror";
}

TEST_F(RawResize, AboveTheBackupsLimitIsAResourceError) {
  StartBackup(100);
  Hello(protocol::kCapCacheResize);
  ASSERT_TRUE(Resize(1, 101).ok());
  ExpectError(protocol::ErrorCode::kResource);
  backup_.join();
  // OutOfRange: the primary is alive and will resynchronise, no failover.
  EXPECT_EQ(end_.reason.code(), Code::kOutOfRange) << end_.reason.ToString();
  EXPECT_TRUE(end_.established);
}

TEST_F(RawResize, WithoutTheCapabilityIsAProtocolError) {
  StartBackup(100);
  auto ack = Hello(0);
  EXPECT_FALSE(ack.has_max_cache());
  ASSERT_TRUE(Resize(1, 10).ok());
  ExpectError(protocol::ErrorCode::kProtocol);
  backup_.join();
  EXPECT_EQ(end_.reason.code(), Code::kCorruption) << end_.reason.ToString();
}

TEST_F(RawResize, TwiceInOneEpochIsAProtocolError) {
  StartBackup(0);  // no limit: the HELLO_ACK says so
  auto ack = Hello(protocol::kCapCacheResize);
  EXPECT_EQ(ack.max_cache_pages, protocol::HelloAck::kNoCacheLimit);
  ASSERT_TRUE(Resize(1, 10).ok());
  ASSERT_TRUE(Resize(1, 20).ok());
  ExpectError(protocol::ErrorCode::kProtocol);
  backup_.join();
}

}  // namespace
}  // namespace romulus

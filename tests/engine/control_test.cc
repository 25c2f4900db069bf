// The control socket (replicator/control.h): request parsing and its
// bounds, the server over a real UNIX socket (permissions, stale and live
// sockets, oversized and garbage requests), the primary's commands reaching
// a real EpochLoop, per-region digests equal on both ends, a planned
// handover, and the metrics text.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "common/digest.h"
#include "replicator/control.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "replicator/metrics.h"
#include "restore/checkpoint_receiver.h"
#include "sim/image_sink.h"
#include "sim/sim_guest.h"
#include "transport/fd_stream.h"
#include "tests/engine/stream_pair.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;
using replicator::ControlReply;

std::string TempSocket(const std::string& name) {
  std::string p = "/tmp/romulus-ctltest-" + std::to_string(getpid()) + "-" + name + ".sock";
  unlink(p.c_str());
  return p;
}

TEST(ControlParse, RepliesAreJson) {
  EXPECT_EQ(replicator::RenderControlReply(ControlReply::Ok()), "{\"ok\":true}");
  EXPECT_EQ(replicator::RenderControlReply(ControlReply::Ok(control::Json{{"a", 1}})), "{\"ok\":true,\"a\":1}");
  EXPECT_EQ(replicator::RenderControlReply(ControlReply::Usage("bad \"x\"\n")),
            "{\"ok\":false,\"error\":\"bad \\\"x\\\"\\n\",\"usage\":true}");
}

TEST(ControlServer, ServesOverASocketWith0600AndBoundedRequests) {
  const std::string path = TempSocket("srv");
  std::atomic<int> calls{0};
  auto srv = replicator::ControlServer::Start(path, [&](const control::Request& r) {
    ++calls;
    if (std::holds_alternative<control::HelpReq>(r)) return ControlReply::Ok(control::Json{{"pong", true}});
    return ControlReply::Fail("not here");
  });
  ASSERT_TRUE(srv.ok()) << srv.status().ToString();
  struct stat sb;
  ASSERT_EQ(stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);

  auto r = replicator::ControlCall(path, "help", 5000ms);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "{\"ok\":true,\"pong\":true}");
  // An unknown command is a usage error from the parser: the handler never sees it.
  const int seen = calls.load();
  r = replicator::ControlCall(path, "nonsense", 5000ms);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->find("\"usage\":true"), std::string::npos);
  EXPECT_EQ(calls.load(), seen);

  // An oversized request (no newline, far beyond the bound) gets a usage
  // error, not a crash, and the handler is never called with it.
  int before = calls.load();
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string big(64 * 1024, 'x');
  (void)!send(fd, big.data(), big.size(), MSG_NOSIGNAL);
  char buf[512] = {};
  ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
  close(fd);
  ASSERT_GT(n, 0);
  EXPECT_NE(std::string(buf).find("longer than"), std::string::npos) << buf;
  EXPECT_EQ(calls.load(), before);

  // A second server on a live socket is refused.
  auto second = replicator::ControlServer::Start(path, [](const control::Request&) { return ControlReply::Ok(); });
  EXPECT_FALSE(second.ok());
  srv->reset();
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "socket file removed at exit";
  auto missing = replicator::ControlCall(path, "ping", 1000ms);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no such socket"), std::string::npos);
}

TEST(ControlServer, RemovesAStaleSocketFile) {
  const std::string path = TempSocket("stale");
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(fd);  // bound, never listened: what a killed process leaves
  auto dead = replicator::ControlCall(path, "ping", 1000ms);
  ASSERT_FALSE(dead.ok());
  EXPECT_NE(dead.status().message().find("not running"), std::string::npos);
  auto srv = replicator::ControlServer::Start(path, [](const control::Request&) { return ControlReply::Ok(); });
  ASSERT_TRUE(srv.ok()) << srv.status().ToString();
  EXPECT_TRUE(replicator::ControlCall(path, "status", 5000ms).ok());
}

// A request that waits (digest, failover) must not hold up `status`.
TEST(ControlServer, ASlowRequestDoesNotBlockOthers) {
  const std::string path = TempSocket("slow");
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, slow_started = false;
  auto srv = replicator::ControlServer::Start(path, [&](const control::Request& r) {
    if (std::holds_alternative<control::SwitchoverReq>(r)) {
      std::unique_lock<std::mutex> lock(mu);
      slow_started = true;
      cv.notify_all();
      cv.wait_for(lock, 30s, [&] { return release; });
      return ControlReply::Ok(control::Json{{"slow", true}});
    }
    return ControlReply::Ok(control::Json{{"status", true}});
  });
  ASSERT_TRUE(srv.ok()) << srv.status().ToString();
  std::thread slow([&] { EXPECT_TRUE(replicator::ControlCall(path, "switchover", 40000ms).ok()); });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return slow_started; }));
  }
  // While `slow` is still being handled, `status` is answered.
  auto st = replicator::ControlCall(path, "status", 10000ms);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_NE(st->find("\"status\":true"), std::string::npos);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_FALSE(release) << "status was answered only after the slow request finished";
    release = true;
  }
  cv.notify_all();
  slow.join();
}

using test_engine::MakeStreamPair;

sim::SimSpec SmallSpec() {
  sim::SimSpec spec;
  spec.size_bytes = 16 << 20;
  spec.workload = sim::Workload::kHotset;
  spec.rate = sim::DefaultRate(spec.workload);
  return spec;
}

TEST(PrimaryControl, CommandsReachTheLoop) {
  auto guest = sim::SimGuest::Create(SmallSpec());
  ASSERT_TRUE(guest.ok());
  replicator::NoOutputCommit output;
  replicator::SenderOptions sopt;
  sopt.codec.cache_pages = 1024;
  replicator::ControllerOptions lopt;
  lopt.interval = 100ms;
  replicator::PrimaryController loop(replicator::MakeTimerDriver(**guest), output, [] { return Result<std::unique_ptr<transport::Stream>>(Status::Closed("none")); },
                             sopt, lopt, nullptr);
  auto handle = replicator::PrimaryControlHandler(&loop);
  auto call = [&](std::vector<std::string> w) {
    return replicator::RenderControlReply(replicator::HandleWords(handle, w));
  };

  EXPECT_EQ(call({"set", "interval", "20ms"}).rfind("{\"ok\":true", 0), 0u);
  EXPECT_EQ(loop.interval(), 20ms);
  std::string status = call({"status"});
  EXPECT_NE(status.find("\"role\":\"primary\""), std::string::npos) << status;
  EXPECT_NE(status.find("\"interval_us\":20000"), std::string::npos) << status;
  EXPECT_NE(status.find("\"protection\":\"UNPROTECTED\""), std::string::npos) << status;
  EXPECT_NE(status.find("\"unprotected_reason\":\"not connected to the backup yet\""), std::string::npos) << status;
  EXPECT_NE(status.find("\"last_ack_age_ms\":-1,"), std::string::npos) << status;
  EXPECT_NE(status.find("\"output_commit\":\"none (output not committed)\""), std::string::npos) << status;

  EXPECT_NE(call({"set", "interval", "1ms"}).find("\"usage\":true"), std::string::npos);
  EXPECT_NE(call({"set", "interval", "soon"}).find("\"usage\":true"), std::string::npos);
  EXPECT_EQ(loop.interval(), 20ms) << "a refused value changes nothing";

  EXPECT_EQ(call({"set", "cache-size", "128M"}).rfind("{\"ok\":true", 0), 0u);
  EXPECT_EQ(loop.cache_size_next(), 128ull << 20);
  EXPECT_NE(call({"set", "cache-size", "4097"}).find("\"usage\":true"), std::string::npos);

  EXPECT_EQ(call({"pause"}).rfind("{\"ok\":true", 0), 0u);
  EXPECT_TRUE(loop.paused());
  EXPECT_NE(call({"status"}).find("\"unprotected_reason\":\"checkpointing paused by the operator"), std::string::npos);
  EXPECT_EQ(call({"resume"}).rfind("{\"ok\":true", 0), 0u);
  EXPECT_FALSE(loop.paused());

  std::string fo = call({"failover"});
  EXPECT_NE(fo.find("\"ok\":false"), std::string::npos);
  EXPECT_NE(fo.find("'failover' is not a command of this primary"), std::string::npos) << fo;
  EXPECT_NE(fo.find("\"usage\":false"), std::string::npos);
  EXPECT_NE(call({"digest", "x"}).find("\"usage\":true"), std::string::npos);
  EXPECT_NE(call({"frobnicate"}).find("\"usage\":true"), std::string::npos);
}

std::vector<uint64_t> ImageRegions(const sim::ImageSink& img, uint32_t regions) {
  std::vector<uint64_t> out(regions, 0);
  const uint64_t pages = img.guest_pages(), per = pages / regions;
  for (uint32_t r = 0; r < regions; ++r) {
    uint64_t first = r * per, end = r + 1 == regions ? pages : first + per;
    for (uint64_t p = first; p < end; ++p) out[r] += PageHash(p, img.image() + p * 4096);
  }
  return out;
}

// The running engine: region digests at an epoch are the same on both ends;
// pause stops epochs; a handover leaves the guest paused and the backup
// holding the final epoch, told so by BYE kHandover.
TEST(PrimaryControl, RegionDigestsPauseAndHandoverOnARunningLoop) {
  const sim::SimSpec spec = SmallSpec();
  auto guest = sim::SimGuest::Create(spec);
  ASSERT_TRUE(guest.ok());
  sim::ImageSinkOptions so;
  so.run_activated = false;
  auto sink = sim::ImageSink::Open(so);
  ASSERT_TRUE(sink.ok());
  auto pair = MakeStreamPair();
  restore::CheckpointReceiver receiver(restore::ReceiverOptions{});
  std::mutex mu;
  std::map<uint64_t, std::vector<uint64_t>> backup_regions;  // epoch -> regions, for wanted epochs
  std::atomic<uint64_t> want_epoch{0};
  restore::SessionEnd end;
  std::thread backup([&] {
    end = receiver.Serve(*pair.backup, **sink, [&](const restore::CommitEvent& e) {
      if (e.epoch == want_epoch.load()) {
        std::lock_guard<std::mutex> lock(mu);
        backup_regions[e.epoch] = ImageRegions(**sink, 16);
      }
    });
  });
  replicator::NoOutputCommit output;
  replicator::SenderOptions sopt;
  sopt.codec.cache_pages = 1024;
  replicator::ControllerOptions lopt;
  lopt.interval = 10ms;
  lopt.ack_timeout = 10000ms;
  std::unique_ptr<transport::Stream> primary_end = std::move(pair.primary);
  auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!primary_end) return Status::Closed("test: only one connection");
    return std::move(primary_end);
  };
  ASSERT_TRUE((*guest)->Start().ok());
  replicator::PrimaryController loop(replicator::MakeTimerDriver(**guest), output, connect, sopt, lopt, nullptr);
  std::atomic<bool> stop{false};
  Status run_status;
  std::thread runner([&] { run_status = loop.Run(stop); });

  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (loop.last_acked_epoch() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  ASSERT_GE(loop.last_acked_epoch(), 2);

  // Region digests at a future epoch (registered on the backup side first).
  Result<replicator::PrimaryController::RegionDigest> rd = Status::Internal("unset");
  for (int attempt = 0; attempt < 5; ++attempt) {
    uint64_t n = static_cast<uint64_t>(loop.last_acked_epoch()) + 4 + 4 * attempt;
    want_epoch.store(n);
    rd = loop.RegionDigestsAt(n, 16, 30000ms);
    if (rd.ok() || rd.status().code() != Code::kOutOfRange) break;
  }
  ASSERT_TRUE(rd.ok()) << rd.status().ToString();
  // The backup acks before its commit callback runs: wait for its record.
  deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (backup_regions.count(rd->epoch)) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_TRUE(backup_regions.count(rd->epoch));
    EXPECT_EQ(backup_regions[rd->epoch], rd->regions);
  }
  uint64_t sum = 0;
  for (uint64_t v : rd->regions) sum += v;
  EXPECT_EQ(sum, rd->digest);
  EXPECT_EQ(rd->regions.size(), 16u);
  // An epoch long gone is refused, not answered with today's digest.
  EXPECT_FALSE(loop.RegionDigestsAt(1, 16, 5000ms).ok());

  // Pause: epochs stop (poll until the in-flight one is done), guest runs.
  loop.SetPaused(true);
  uint64_t e0 = 0;
  deadline = std::chrono::steady_clock::now() + 30s;
  do {
    e0 = loop.current_epoch();
    std::this_thread::sleep_for(100ms);
  } while (loop.current_epoch() != e0 && std::chrono::steady_clock::now() < deadline);
  uint64_t steps0 = (*guest)->steps();
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(loop.current_epoch(), e0);
  EXPECT_GT((*guest)->steps(), steps0) << "the guest keeps running while paused";
  EXPECT_FALSE(loop.protected_now());
  loop.SetPaused(false);

  // Handover.
  auto fin = loop.Handover(60000ms);
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  runner.join();
  backup.join();
  EXPECT_TRUE(run_status.ok()) << run_status.ToString();
  EXPECT_TRUE(loop.handed_over());
  EXPECT_GT(*fin, e0);
  EXPECT_TRUE(end.clean_stop);
  EXPECT_EQ(end.bye_reason, protocol::ByeReason::kHandover);
  EXPECT_EQ((*sink)->last_committed_epoch(), *fin) << "no lost epoch";
  uint64_t steps1 = (*guest)->steps();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ((*guest)->steps(), steps1) << "the primary's guest stays paused after a handover";
  // The backup's image is the paused primary's memory, exactly.
  EXPECT_EQ(std::memcmp((*guest)->memory(), (*sink)->image(), spec.size_bytes), 0);
  (*guest)->Stop();
}

TEST(Metrics, TextfileFormat) {
  // Per process: the release and ASan builds run this case too, maybe at once.
  const std::string path = ::testing::TempDir() + "/romulus_metrics_test." + std::to_string(::getpid()) + ".prom";
  auto m = replicator::MetricsTextfile::Open(path, "g\"1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  replicator::EpochStats e;
  e.epoch = 7;
  e.acked = true;
  e.pause = std::chrono::microseconds(1500);
  e.wire_bytes = 1000;
  e.dirty_pages = 10;
  e.cache_hits = 3;
  (*m)->OnEpoch(e, false, 2);
  e.epoch = 8;
  (*m)->OnEpoch(e, false, 2);
  std::string text = (*m)->Render();
  EXPECT_NE(text.find("romulus_epoch{guest=\"g\\\"1\"} 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_last_acked_epoch{guest=\"g\\\"1\"} 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_wire_bytes_total{guest=\"g\\\"1\"} 2000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_resyncs_total{guest=\"g\\\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_protected{guest=\"g\\\"1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_output_committed{guest=\"g\\\"1\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_pause_seconds_bucket{guest=\"g\\\"1\",le=\"0.002\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_pause_seconds_bucket{guest=\"g\\\"1\",le=\"0.001\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_pause_seconds_count{guest=\"g\\\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE romulus_pause_seconds histogram"), std::string::npos);
  (*m)->Close();
  std::ifstream in(path);
  std::string onfile((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(onfile, text);
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0);
}

TEST(Digest, RangeSumsAddUpToTheDigest) {
  auto d = MemoryDigest::Create(100);
  ASSERT_TRUE(d.ok());
  uint8_t page[4096];
  for (uint64_t p = 0; p < 100; p += 7) {
    std::memset(page, static_cast<int>(p + 1), sizeof page);
    (*d)->Update(p, page);
  }
  EXPECT_EQ((*d)->RangeSum(0, 50) + (*d)->RangeSum(50, 50), (*d)->value());
  EXPECT_EQ((*d)->RangeSum(0, 1000), (*d)->value());
  EXPECT_EQ((*d)->RangeSum(100, 5), 0u);
  EXPECT_EQ((*d)->RangeSum(1, 6), 0u);  // pages 1..6 never written
}

}  // namespace
}  // namespace romulus

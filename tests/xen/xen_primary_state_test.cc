// The Xen primary's statistics and control socket without a hypervisor
// (xen/xen_primary_state.h): the --stats-json line of a Xen epoch (the
// engine's keys, then the Xen-only extras), the live state behind `status`
// and `stats`, and the command set, also over a real UNIX socket.
#include "xen/xen_primary_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "control/replies.h"
#include "replicator/control.h"
#include "replicator/stats.h"
#include "tests/common/flat_json.h"

namespace romulus::xen {
namespace {

using namespace std::chrono_literals;
using replicator::ControlReply;
using test_json::Keys;
using test_json::ParseFlatObject;
using test_json::Value;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kXenKeys = {
    "epoch",          "digest",        "acked",          "protected",       "pause_us",
    "suspend_us",     "period_us",     "dirty_pages",    "pages_zero",      "pages_unchanged",
    "pages_delta",    "pages_raw",     "pages_lz4",      "raw_bytes",       "wire_bytes",
    "wire_bytes_per_page", "cache_hits", "cache_misses", "cache_overflows", "encode_us",
    "ack_latency_us", "outbuf_high_water", "output_commit",
    // Xen-only siblings (docs/STATS.md)
    "state_records",  "ack_wait_us",   "xen_stream_bytes"};

replicator::EpochWireStats SampleWire() {
  replicator::EpochWireStats w;
  w.epoch = 7;
  w.pages = 300;
  w.state_records = 9;
  w.raw_bytes = 300 * 4096 + 2000;
  w.wire_bytes = 6000;
  w.pages_by_kind = {40, 60, 180, 15, 5};
  w.cache_hits = 240;
  w.cache_misses = 60;
  w.cache_overflows = 2;
  w.encode_time = 700us;
  w.digest = 0xfedcba9876543210ull;
  w.outbuf_high_water = 1 << 20;
  return w;
}

XenEpochFacts SampleFacts(Clock::time_point t0) {
  XenEpochFacts f;
  f.epoch = 7;
  f.acked = true;
  f.protected_ = true;
  f.previous_suspend = t0;
  f.suspend_requested = t0 + 100ms;
  f.suspended = t0 + 100ms + 3ms;
  f.resumed = t0 + 100ms + 3ms + 28ms;
  f.ack_latency = 4200us;
  f.ack_wait = 9100us;
  f.stream_bytes = 1234567;
  f.output_commit = "sch_plug on ifb-vif3.0";
  return f;
}

TEST(XenEpochStats, TimesAndCountersMapOntoTheEngineKeys) {
  const auto t0 = Clock::time_point() + 1000s;
  const replicator::EpochStats e = MakeXenEpochStats(SampleWire(), SampleFacts(t0));
  EXPECT_EQ(e.epoch, 7u);
  EXPECT_TRUE(e.acked);
  EXPECT_TRUE(e.protected_);
  EXPECT_EQ(e.pause, 31ms) << "from the suspend request to the guest running again";
  EXPECT_EQ(e.suspend, 3ms) << "the part of pause until the guest stopped";
  EXPECT_EQ(e.period, 100ms) << "between suspend requests";
  EXPECT_EQ(e.dirty_pages, 300u);
  EXPECT_EQ(e.pages_by_kind[2], 180u);
  EXPECT_EQ(e.cache_overflows, 2u);
  EXPECT_EQ(e.ack_latency, 4200us);
  EXPECT_EQ(e.digest, 0xfedcba9876543210ull);
  EXPECT_EQ(e.output_commit, "sch_plug on ifb-vif3.0");
}

TEST(XenEpochStats, JsonLineIsTheEngineLinePlusXenExtras) {
  const auto t0 = Clock::time_point() + 1000s;
  const std::string line = replicator::EpochStatsJson(MakeXenEpochStats(SampleWire(), SampleFacts(t0)));
  const auto m = ParseFlatObject(line);
  EXPECT_EQ(Keys(m), kXenKeys) << line;
  EXPECT_EQ(Value(m, "epoch"), "7");
  EXPECT_EQ(Value(m, "digest"), "\"fedcba9876543210\"");
  EXPECT_EQ(Value(m, "acked"), "true");
  EXPECT_EQ(Value(m, "pause_us"), "31000");
  EXPECT_EQ(Value(m, "suspend_us"), "3000");
  EXPECT_EQ(Value(m, "period_us"), "100000");
  EXPECT_EQ(Value(m, "dirty_pages"), "300");
  EXPECT_EQ(Value(m, "wire_bytes_per_page"), "20.00");
  EXPECT_EQ(Value(m, "encode_us"), "700");
  EXPECT_EQ(Value(m, "ack_latency_us"), "4200");
  EXPECT_EQ(Value(m, "state_records"), "9");
  EXPECT_EQ(Value(m, "ack_wait_us"), "9100");
  EXPECT_EQ(Value(m, "xen_stream_bytes"), "1234567");
}

TEST(XenEpochStats, UnackedEpochHasNoAckLatencyAndOutOfOrderTimesClampToZero) {
  const auto t0 = Clock::time_point() + 1000s;
  XenEpochFacts f = SampleFacts(t0);
  f.acked = false;
  f.resumed = {};  // the epoch failed before the guest was resumed
  const replicator::EpochStats e = MakeXenEpochStats(SampleWire(), f);
  EXPECT_FALSE(e.acked);
  EXPECT_EQ(e.ack_latency, 0us);
  EXPECT_EQ(e.pause, 0us);
  const auto m = ParseFlatObject(replicator::EpochStatsJson(e));
  EXPECT_EQ(Value(m, "acked"), "false");
  EXPECT_EQ(Value(m, "ack_latency_us"), "0");
}

class XenStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state.Begin("guest1", 3, 100ms, "none (output not committed)");
    state.set_cache_size(64ull << 20);
  }
  replicator::EpochStats Epoch(uint64_t n, bool acked) {
    XenEpochFacts f = SampleFacts(t0);
    f.epoch = n;
    f.acked = acked;
    return MakeXenEpochStats(SampleWire(), f);
  }
  std::string StatusLine(Clock::time_point now) {
    return control::Dump(control::ToJson(state.StatusView(now)));
  }
  const Clock::time_point t0 = Clock::time_point() + 1000s;
  XenPrimaryState state;
};

TEST_F(XenStateTest, StatusFollowsEpochsAcksAndProtection) {
  auto m = ParseFlatObject(StatusLine(t0));
  EXPECT_EQ(Keys(m), (std::vector<std::string>{"role", "guest", "epoch", "last_acked", "last_ack_age_ms",
                                               "protection", "paused", "output_commit", "interval_us",
                                               "interval", "cache_size", "cache_size_next_session",
                                               "unprotected_reason", "backend", "domain", "domid"}));
  EXPECT_EQ(Value(m, "unprotected_reason"), "\"not connected to the backup yet\"");
  EXPECT_EQ(Value(m, "role"), "\"primary\"");
  EXPECT_EQ(Value(m, "guest"), "\"guest1\"");
  EXPECT_EQ(Value(m, "domain"), "\"guest1\"");
  EXPECT_EQ(Value(m, "domid"), "3");
  EXPECT_EQ(Value(m, "backend"), "\"xen\"");
  EXPECT_EQ(Value(m, "last_acked"), "-1");
  EXPECT_EQ(Value(m, "last_ack_age_ms"), "-1");
  EXPECT_EQ(Value(m, "protection"), "\"UNPROTECTED\"");
  EXPECT_EQ(Value(m, "interval_us"), "100000");
  EXPECT_EQ(Value(m, "cache_size"), "67108864");
  EXPECT_EQ(Value(m, "cache_size_next_session"), "67108864") << "a new session starts with the size last applied";

  state.EpochStarted(1, "sch_plug on ifb-vif3.0");
  state.Published(Epoch(1, true), t0);
  EXPECT_TRUE(state.protected_now());
  state.EpochStarted(2, "sch_plug on ifb-vif3.0");
  m = ParseFlatObject(StatusLine(t0 + 250ms));
  EXPECT_EQ(Value(m, "epoch"), "2");
  EXPECT_EQ(Value(m, "last_acked"), "1");
  EXPECT_EQ(Value(m, "last_ack_age_ms"), "250");
  EXPECT_EQ(Value(m, "protection"), "\"PROTECTED\"");
  EXPECT_EQ(Value(m, "unprotected_reason"), "null") << "no reason while PROTECTED";
  EXPECT_EQ(Value(m, "output_commit"), "\"sch_plug on ifb-vif3.0\"");

  state.Published(Epoch(2, false), t0 + 300ms);
  m = ParseFlatObject(StatusLine(t0 + 300ms));
  EXPECT_EQ(Value(m, "protection"), "\"UNPROTECTED\"") << "an unacked epoch loses protection";
  state.SetUnprotectedReason("backup lost after epoch 2: Timeout: no ack");
  m = ParseFlatObject(StatusLine(t0 + 300ms));
  EXPECT_EQ(Value(m, "unprotected_reason"), "\"backup lost after epoch 2: Timeout: no ack\"");
  EXPECT_EQ(Value(m, "last_acked"), "1");

  state.Published(Epoch(3, true), t0 + 400ms);
  state.Unprotected("sch_plug on ifb-vif3.0 (released: paused)");
  m = ParseFlatObject(StatusLine(t0 + 400ms));
  EXPECT_EQ(Value(m, "protection"), "\"UNPROTECTED\"");
  EXPECT_EQ(Value(m, "output_commit"), "\"sch_plug on ifb-vif3.0 (released: paused)\"");
}

TEST_F(XenStateTest, StatsAreTheLastLineAndTheTotals) {
  EXPECT_EQ(state.StatsJson(), "{\"last\":null,\"totals\":null}");
  const replicator::EpochStats a = Epoch(1, true), b = Epoch(2, false);
  state.Published(a, t0);
  state.Published(b, t0);
  const std::string j = state.StatsJson();
  EXPECT_EQ(j, "{\"last\":" + replicator::EpochStatsJson(b) + ",\"totals\":" +
                   replicator::TotalStatsJson(state.totals()) + "}");
  EXPECT_EQ(state.totals().epochs, 2u);
  EXPECT_EQ(state.totals().acked, 1u);
  EXPECT_EQ(state.totals().dirty_pages, 600u);
  // A session after a lost backup counts in the totals and in the next line's JSON.
  state.CountResync();
  EXPECT_EQ(state.resyncs(), 1u);
  EXPECT_EQ(state.totals().resyncs, 1u);
  state.Published(Epoch(3, true), t0);
  EXPECT_NE(state.StatsJson().find("\"resyncs\":1"), std::string::npos) << state.StatsJson();
}

TEST_F(XenStateTest, CommandsDriveTheStateOrAreRefusedClearly) {
  auto handle = XenPrimaryControlHandler(&state);
  auto call = [&](std::vector<std::string> w) { return replicator::RenderControlReply(replicator::HandleWords(handle, w)); };

  EXPECT_EQ(call({"set", "interval", "50ms"}), "{\"ok\":true,\"interval_us\":50000,\"applies\":\"next epoch\"}");
  EXPECT_EQ(state.interval(), 50ms);
  EXPECT_NE(call({"set", "interval", "1ms"}).find("\"usage\":true"), std::string::npos);
  EXPECT_NE(call({"set", "interval", "soon"}).find("\"usage\":true"), std::string::npos);
  EXPECT_EQ(state.interval(), 50ms) << "a refused value changes nothing";

  std::string status = call({"status"});
  EXPECT_EQ(status.rfind("{\"ok\":true,\"role\":\"primary\"", 0), 0u) << status;
  EXPECT_NE(status.find("\"interval_us\":50000"), std::string::npos) << status;
  EXPECT_NE(status.find("\"paused\":false"), std::string::npos) << status;

  std::string paused = call({"pause"});
  EXPECT_EQ(paused.rfind("{\"ok\":true,\"paused\":true,\"warning\":", 0), 0u) << paused;
  EXPECT_TRUE(state.paused());
  status = call({"status"});
  EXPECT_NE(status.find("\"paused\":true"), std::string::npos) << status;
  EXPECT_NE(status.find("\"unprotected_reason\":\"checkpointing paused by the operator"), std::string::npos)
      << status;
  EXPECT_EQ(call({"resume"}), "{\"ok\":true,\"paused\":false}");
  EXPECT_FALSE(state.paused());

  state.Published(Epoch(1, true), t0);
  std::string stats = call({"stats"});
  EXPECT_EQ(stats.rfind("{\"ok\":true,\"last\":{\"epoch\":1,", 0), 0u) << stats;
  EXPECT_NE(stats.find("\"xen_stream_bytes\":1234567},\"totals\":{\"totals\":true,\"epochs\":1,"),
            std::string::npos) << stats;

  for (std::vector<std::string> refused : {std::vector<std::string>{"failover"},
                                           std::vector<std::string>{"digest", "5"}}) {
    std::string r = call(refused);
    EXPECT_EQ(r.rfind("{\"ok\":false,", 0), 0u) << r;
    EXPECT_NE(r.find("is not a command of this Xen primary"), std::string::npos) << r;
    EXPECT_NE(r.find("\"usage\":false"), std::string::npos) << r;
  }
  EXPECT_NE(call({"frobnicate"}).find("\"usage\":true"), std::string::npos);
  EXPECT_NE(call({"status", "now"}).find("\"usage\":true"), std::string::npos);
  EXPECT_NE(call({"set", "colour", "red"}).find("\"usage\":true"), std::string::npos);
}

// `set cache-size` queues a cache allocated on the control thread for the
// stream worker, within what the backup agreed to at the handshake.
TEST_F(XenStateTest, SetCacheSizeQueuesACacheForTheNextEpoch) {
  auto handler = XenPrimaryControlHandler(&state);
  auto call = [&](std::vector<std::string> w) { return replicator::RenderControlReply(replicator::HandleWords(handler, w)); };
  uint64_t pages = 99;
  std::string before = call({"set", "cache-size", "8M"});
  EXPECT_NE(before.find("\"ok\":false"), std::string::npos) << before;
  EXPECT_NE(before.find("not connected"), std::string::npos) << before;
  EXPECT_EQ(state.TakeCacheRequest(&pages), nullptr);

  state.SetCacheLimits(/*can_resize=*/true, /*backup_max_pages=*/4096, /*guest_pages=*/1 << 16);
  std::string ok = call({"set", "cache-size", "8M"});
  EXPECT_EQ(ok, "{\"ok\":true,\"cache_size\":8388608,\"cache_size_next_session\":8388608,\"applies\":\"next "
                "epoch\"}");
  // A newer request replaces the pending one.
  EXPECT_EQ(call({"set", "cache-size", "4M"}).rfind("{\"ok\":true", 0), 0u);
  auto cache = state.TakeCacheRequest(&pages);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(pages, 1024u);
  EXPECT_EQ(cache->capacity_pages(), 1024u);
  EXPECT_EQ(state.TakeCacheRequest(&pages), nullptr) << "taken once";

  std::string over = call({"set", "cache-size", "32M"});  // > 4096 pages
  EXPECT_NE(over.find("\"usage\":true"), std::string::npos) << over;
  EXPECT_NE(over.find("max-cache-size"), std::string::npos) << over;
  for (const char* bad : {"12345", "lots", "65G"}) {
    std::string r = call({"set", "cache-size", bad});
    EXPECT_NE(r.find("\"usage\":true"), std::string::npos) << bad << ": " << r;
  }
  EXPECT_EQ(state.TakeCacheRequest(&pages), nullptr) << "refused requests queue nothing";

  state.SetCacheLimits(/*can_resize=*/false, 0, 1 << 16);
  std::string old_backup = call({"set", "cache-size", "8M"});
  EXPECT_NE(old_backup.find("\"usage\":false"), std::string::npos) << old_backup;
  EXPECT_NE(old_backup.find("cannot resize"), std::string::npos) << old_backup;
}

// `switchover` is answered by the session: the control thread waits until
// the final epoch's outcome is reported (here by a thread playing the
// xc_domain_save side), and is refused outright when nothing is protected.
TEST_F(XenStateTest, SwitchoverWaitsForTheSessionsOutcome) {
  auto handler = XenPrimaryControlHandler(&state);
  auto call = [&](std::vector<std::string> w) { return replicator::RenderControlReply(replicator::HandleWords(handler, w)); };
  std::string unprotected = call({"switchover"});
  EXPECT_NE(unprotected.find("not PROTECTED"), std::string::npos) << unprotected;
  EXPECT_FALSE(state.TakeSwitchover()) << "a refused request leaves nothing for the session";

  const auto t0 = Clock::now();
  state.EpochStarted(4, "none");
  state.Published(Epoch(4, true), t0);  // acked: PROTECTED
  ASSERT_TRUE(state.protected_now());
  state.SetPaused(true);
  EXPECT_NE(call({"switchover"}).find("resume first"), std::string::npos);
  state.SetPaused(false);

  std::thread session([&] {
    while (!state.TakeSwitchover()) std::this_thread::yield();
    EXPECT_FALSE(state.TakeSwitchover()) << "taken once";
    state.SwitchoverDone(Status::Ok(), 5);
  });
  std::string ok = call({"switchover"});
  session.join();
  EXPECT_EQ(ok.rfind("{\"ok\":true,\"final_epoch\":5,", 0), 0u) << ok;

  std::thread failing([&] {
    while (!state.TakeSwitchover()) std::this_thread::yield();
    state.SwitchoverDone(Status::Timeout("no ack of epoch 6"), 6);
  });
  std::string failed = call({"switchover"});
  failing.join();
  EXPECT_NE(failed.find("\"ok\":false"), std::string::npos) << failed;
  EXPECT_NE(failed.find("no ack of epoch 6"), std::string::npos) << failed;
  state.SwitchoverDone(Status::Ok(), 7);  // no request: ignored
  EXPECT_FALSE(state.TakeSwitchover());
}

TEST_F(XenStateTest, ServedOverAControlSocket) {
  const std::string path = "/tmp/romulus-xenctl-" + std::to_string(getpid()) + ".sock";
  unlink(path.c_str());
  auto srv = replicator::ControlServer::Start(path, XenPrimaryControlHandler(&state));
  ASSERT_TRUE(srv.ok()) << srv.status().ToString();
  auto r = replicator::ControlCall(path, "status", 5000ms);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto m = ParseFlatObject(*r);
  EXPECT_EQ(Value(m, "ok"), "true");
  EXPECT_EQ(Value(m, "domain"), "\"guest1\"");
  r = replicator::ControlCall(path, "set interval 200ms", 5000ms);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(state.interval(), 200ms);
}

}  // namespace
}  // namespace romulus::xen

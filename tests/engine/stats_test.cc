// The per-epoch statistics renderers (replicator/stats.h) the engine and the
// Xen path share: the stable keys of docs/STATS.md in their order, the
// backend extras after them, the human-line throttle, and the shared parts of
// a primary's `status` answer (replicator/control.h).
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "control/replies.h"
#include "replicator/control.h"
#include "replicator/stats.h"
#include "tests/common/flat_json.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;
using test_json::Keys;
using test_json::Members;
using test_json::ParseFlatObject;
using test_json::Value;

// docs/STATS.md, in the order the engine writes them.
const std::vector<std::string> kStableKeys = {
    "epoch",          "digest",        "acked",          "protected",       "pause_us",
    "suspend_us",     "period_us",     "dirty_pages",    "pages_zero",      "pages_unchanged",
    "pages_delta",    "pages_raw",     "pages_lz4",      "raw_bytes",       "wire_bytes",
    "wire_bytes_per_page", "cache_hits", "cache_misses", "cache_overflows", "encode_us",
    "ack_latency_us", "outbuf_high_water", "output_commit"};

replicator::EpochStats SampleEpoch() {
  replicator::EpochStats e;
  e.epoch = 42;
  e.acked = true;
  e.protected_ = true;
  e.pause = 1500us;
  e.suspend = 400us;
  e.period = 100000us;
  e.dirty_pages = 200;
  e.pages_by_kind = {10, 20, 150, 15, 5};
  e.raw_bytes = 200 * 4096;
  e.wire_bytes = 5000;
  e.cache_hits = 170;
  e.cache_misses = 30;
  e.encode_time = 900us;
  e.ack_latency = 2500us;
  e.digest = 0x0123456789abcdefull;
  e.output_commit = "sch_plug on vif3.0";
  return e;
}

TEST(StatsJson, EngineLineHasExactlyTheStableKeysInOrder) {
  const auto m = ParseFlatObject(replicator::EpochStatsJson(SampleEpoch()));
  EXPECT_EQ(Keys(m), kStableKeys);
  EXPECT_EQ(Value(m, "epoch"), "42");
  EXPECT_EQ(Value(m, "digest"), "\"0123456789abcdef\"");
  EXPECT_EQ(Value(m, "pause_us"), "1500");
  EXPECT_EQ(Value(m, "pages_delta"), "150");
  EXPECT_EQ(Value(m, "wire_bytes_per_page"), "25.0");  // shortest form (docs/STATS.md, Numbers)
  EXPECT_EQ(Value(m, "output_commit"), "\"sch_plug on vif3.0\"");
}

TEST(StatsJson, ExtrasFollowTheStableKeysInTheirOrder) {
  replicator::EpochStats e = SampleEpoch();
  const std::string plain = replicator::EpochStatsJson(e);
  e.extra = {{"state_records", 7}, {"ack_wait_us", 3100}};
  const std::string line = replicator::EpochStatsJson(e);
  // The engine's line is a prefix: extras only add siblings.
  EXPECT_EQ(line.substr(0, plain.size() - 1), plain.substr(0, plain.size() - 1));
  const auto m = ParseFlatObject(line);
  std::vector<std::string> want = kStableKeys;
  want.push_back("state_records");
  want.push_back("ack_wait_us");
  EXPECT_EQ(Keys(m), want);
  EXPECT_EQ(Value(m, "state_records"), "7");
  EXPECT_EQ(Value(m, "ack_wait_us"), "3100");
}

TEST(StatsJson, TotalsObject) {
  replicator::TotalStats t;
  replicator::EpochStats a = SampleEpoch(), b = SampleEpoch();
  b.acked = false;
  b.pause = 2500us;
  t.Add(a);
  t.Add(b);
  const auto m = ParseFlatObject(replicator::TotalStatsJson(t));
  EXPECT_EQ(Keys(m), (std::vector<std::string>{"totals", "epochs", "acked", "dirty_pages", "raw_bytes",
                                               "wire_bytes", "compression_ratio", "pause_mean_us",
                                               "pause_max_us", "resyncs"}));
  EXPECT_EQ(Value(m, "epochs"), "2");
  EXPECT_EQ(Value(m, "acked"), "1");
  EXPECT_EQ(Value(m, "pause_mean_us"), "2000.0");
  EXPECT_EQ(Value(m, "pause_max_us"), "2500");
}

TEST(EpochLineThrottle, AtMostOnePerGapButEveryUnackedEpoch) {
  replicator::EpochLineThrottle th(1s);
  const auto t0 = std::chrono::steady_clock::time_point() + 100s;
  EXPECT_TRUE(th.Due(t0, true)) << "the first epoch always";
  EXPECT_FALSE(th.Due(t0 + 100ms, true));
  EXPECT_FALSE(th.Due(t0 + 999ms, true));
  EXPECT_TRUE(th.Due(t0 + 1000ms, true));
  EXPECT_FALSE(th.Due(t0 + 1100ms, true));
  EXPECT_TRUE(th.Due(t0 + 1200ms, false)) << "an unacked epoch is never hidden";
  EXPECT_FALSE(th.Due(t0 + 2100ms, true)) << "the gap counts from the last line printed";
  EXPECT_TRUE(th.Due(t0 + 2200ms, true));
}

TEST(EpochLineThrottle, ZeroGapLetsEveryEpochThrough) {
  replicator::EpochLineThrottle th;
  const auto t0 = std::chrono::steady_clock::time_point() + 100s;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(th.Due(t0, true)) << i;
}

TEST(PrimaryStatus, IntervalRequestsAreBounded) {
  auto d = control::ParseInterval("50ms");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, 50ms);
  EXPECT_FALSE(control::ParseInterval("4ms").ok());
  EXPECT_FALSE(control::ParseInterval("61s").ok());
  EXPECT_FALSE(control::ParseInterval("soon").ok());
  EXPECT_EQ(replicator::RenderControlReply(replicator::ControlReply::Ok(control::IntervalSetJson(20ms))),
            "{\"ok\":true,\"interval_us\":20000,\"applies\":\"next epoch\"}");
}

}  // namespace
}  // namespace romulus

// The --stats-json line of a Xen epoch (xen/xen_epoch_stats.h), without a
// hypervisor: the engine's keys, then the Xen-only extras. What the
// controller adds to it (acked, protected, period, output_commit) is tested
// with the controller (tests/engine/controller_test.cc).
#include "xen/xen_epoch_stats.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "replicator/stats.h"
#include "tests/common/flat_json.h"

namespace romulus::xen {
namespace {

using namespace std::chrono_literals;
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
  f.suspend_requested = t0 + 100ms;
  f.suspended = t0 + 100ms + 3ms;
  f.resumed = t0 + 100ms + 3ms + 28ms;
  f.ack_wait = 9100us;
  f.stream_bytes = 1234567;
  return f;
}

TEST(XenEpochStats, TimesAndCountersMapOntoTheEngineKeys) {
  const auto t0 = Clock::time_point() + 1000s;
  const replicator::EpochStats e = MakeXenEpochStats(SampleWire(), SampleFacts(t0));
  EXPECT_EQ(e.epoch, 7u);
  EXPECT_FALSE(e.acked) << "the controller's Commit says whether it was acked";
  EXPECT_EQ(e.pause, 31ms) << "from the suspend request to the guest running again";
  EXPECT_EQ(e.suspend, 3ms) << "the part of pause until the guest stopped";
  EXPECT_EQ(e.dirty_pages, 300u);
  EXPECT_EQ(e.pages_by_kind[2], 180u);
  EXPECT_EQ(e.cache_overflows, 2u);
  EXPECT_EQ(e.digest, 0xfedcba9876543210ull);
}

TEST(XenEpochStats, JsonLineIsTheEngineLinePlusXenExtras) {
  const auto t0 = Clock::time_point() + 1000s;
  replicator::EpochStats e = MakeXenEpochStats(SampleWire(), SampleFacts(t0));
  e.acked = true;
  e.ack_latency = 4200us;
  e.period = 100ms;
  const std::string line = replicator::EpochStatsJson(e);
  const auto m = ParseFlatObject(line);
  EXPECT_EQ(Keys(m), kXenKeys) << line;
  EXPECT_EQ(Value(m, "epoch"), "7");
  EXPECT_EQ(Value(m, "digest"), "\"fedcba9876543210\"");
  EXPECT_EQ(Value(m, "acked"), "true");
  EXPECT_EQ(Value(m, "pause_us"), "31000");
  EXPECT_EQ(Value(m, "suspend_us"), "3000");
  EXPECT_EQ(Value(m, "period_us"), "100000");
  EXPECT_EQ(Value(m, "dirty_pages"), "300");
  EXPECT_EQ(Value(m, "wire_bytes_per_page"), "20.0");
  EXPECT_EQ(Value(m, "encode_us"), "700");
  EXPECT_EQ(Value(m, "ack_latency_us"), "4200");
  EXPECT_EQ(Value(m, "state_records"), "9");
  EXPECT_EQ(Value(m, "ack_wait_us"), "9100");
  EXPECT_EQ(Value(m, "xen_stream_bytes"), "1234567");
}

TEST(XenEpochStats, AGuestWithADeviceModelAddsItsShareOfThePause) {
  const auto t0 = Clock::time_point() + 1000s;
  XenEpochFacts f = SampleFacts(t0);
  EXPECT_EQ(Keys(ParseFlatObject(replicator::EpochStatsJson(MakeXenEpochStats(SampleWire(), f)))), kXenKeys)
      << "PV and PVH guests have no device model: no dm_* keys";
  f.device_model = true;
  f.dm_save = 182000us;
  f.dm_resume = 23000us;
  f.dm_state_bytes = 6159;
  f.dm_flush = 1400us;
  const auto m = ParseFlatObject(replicator::EpochStatsJson(MakeXenEpochStats(SampleWire(), f)));
  std::vector<std::string> want = kXenKeys;
  want.insert(want.end(), {"dm_save_us", "dm_resume_us", "dm_state_bytes", "dm_flush_us"});
  EXPECT_EQ(Keys(m), want);
  EXPECT_EQ(Value(m, "dm_save_us"), "182000");
  EXPECT_EQ(Value(m, "dm_resume_us"), "23000");
  EXPECT_EQ(Value(m, "dm_state_bytes"), "6159");
  EXPECT_EQ(Value(m, "dm_flush_us"), "1400");
}

TEST(XenEpochStats, TimesNotReachedClampToZero) {
  const auto t0 = Clock::time_point() + 1000s;
  XenEpochFacts f = SampleFacts(t0);
  f.resumed = {};  // the epoch failed before the guest was resumed
  f.ack_wait = -5us;
  const replicator::EpochStats e = MakeXenEpochStats(SampleWire(), f);
  EXPECT_EQ(e.pause, 0us);
  const auto m = ParseFlatObject(replicator::EpochStatsJson(e));
  EXPECT_EQ(Value(m, "ack_wait_us"), "0");
}

}  // namespace
}  // namespace romulus::xen

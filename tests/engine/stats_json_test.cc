// The stats lines as text (replicator/stats.h, docs/STATS.md): byte-exact
// goldens, so a change of key order, number form or escaping shows up here,
// and the metrics textfile's label escaping, which is not JSON.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "replicator/metrics.h"
#include "replicator/stats.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;

replicator::EpochStats Sample() {
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
  e.outbuf_high_water = 1048576;
  e.digest = 0x0123456789abcdefull;
  e.output_commit = "sch_plug on vif3.0";
  return e;
}

TEST(StatsJsonText, EpochLineGolden) {
  EXPECT_EQ(replicator::EpochStatsJson(Sample()),
            "{\"epoch\":42,\"digest\":\"0123456789abcdef\",\"acked\":true,\"protected\":true,"
            "\"pause_us\":1500,\"suspend_us\":400,\"period_us\":100000,\"dirty_pages\":200,"
            "\"pages_zero\":10,\"pages_unchanged\":20,\"pages_delta\":150,\"pages_raw\":15,\"pages_lz4\":5,"
            "\"raw_bytes\":819200,\"wire_bytes\":5000,\"wire_bytes_per_page\":25.0,"
            "\"cache_hits\":170,\"cache_misses\":30,\"cache_overflows\":0,\"encode_us\":900,"
            "\"ack_latency_us\":2500,\"outbuf_high_water\":1048576,\"output_commit\":\"sch_plug on vif3.0\"}");
}

TEST(StatsJsonText, XenExtrasGolden) {
  replicator::EpochStats e = Sample();
  e.extra = {{"state_records", 14}, {"ack_wait_us", 3350}, {"xen_stream_bytes", 371508}};
  const std::string line = replicator::EpochStatsJson(e);
  const std::string tail =
      ",\"output_commit\":\"sch_plug on vif3.0\",\"state_records\":14,\"ack_wait_us\":3350,"
      "\"xen_stream_bytes\":371508}";
  ASSERT_GE(line.size(), tail.size());
  EXPECT_EQ(line.substr(line.size() - tail.size()), tail);
}

TEST(StatsJsonText, RatiosAreRoundedAndShortest) {
  replicator::EpochStats e = Sample();
  e.dirty_pages = 86;
  e.wire_bytes = 22650;  // 263.3720...
  auto j = nlohmann::json::parse(replicator::EpochStatsJson(e));
  EXPECT_EQ(j["wire_bytes_per_page"].dump(), "263.37");
  e.dirty_pages = 0;  // no pages: 0, not a division by zero
  j = nlohmann::json::parse(replicator::EpochStatsJson(e));
  EXPECT_EQ(j["wire_bytes_per_page"].dump(), "0.0");
  EXPECT_TRUE(j["wire_bytes_per_page"].is_number_float());
  e.period = -5us;  // durations are signed integers
  j = nlohmann::json::parse(replicator::EpochStatsJson(e));
  EXPECT_EQ(j["period_us"].dump(), "-5");
}

TEST(StatsJsonText, TotalsGolden) {
  replicator::TotalStats t;
  replicator::EpochStats a = Sample(), b = Sample();
  b.acked = false;
  b.pause = 2501us;
  t.Add(a);
  t.Add(b);
  t.resyncs = 3;
  EXPECT_EQ(replicator::TotalStatsJson(t),
            "{\"totals\":true,\"epochs\":2,\"acked\":1,\"dirty_pages\":400,\"raw_bytes\":1638400,"
            "\"wire_bytes\":10000,\"compression_ratio\":163.84,\"pause_mean_us\":2000.5,"
            "\"pause_max_us\":2501,\"resyncs\":3}");
  EXPECT_EQ(replicator::TotalStatsJson(replicator::TotalStats()),
            "{\"totals\":true,\"epochs\":0,\"acked\":0,\"dirty_pages\":0,\"raw_bytes\":0,\"wire_bytes\":0,"
            "\"compression_ratio\":0.0,\"pause_mean_us\":0.0,\"pause_max_us\":0,\"resyncs\":0}");
}

TEST(StatsJsonText, StringsAreEscapedAndNeverThrow) {
  replicator::EpochStats e = Sample();
  e.output_commit = "sch_plug on \"a\\b\"\n";
  auto j = nlohmann::json::parse(replicator::EpochStatsJson(e));
  EXPECT_EQ(j["output_commit"], "sch_plug on \"a\\b\"\n");
  e.output_commit = std::string("bad \xff utf-8");  // replaced, not fatal
  std::string line;
  ASSERT_NO_THROW(line = replicator::EpochStatsJson(e));
  EXPECT_TRUE(nlohmann::json::accept(line));
}

TEST(MetricsText, LabelValuesUseTheExpositionEscapesNotJson) {
  char dir[] = "/tmp/romulus-metrics-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/m.prom";
  auto m = replicator::MetricsTextfile::Open(path, "a\tb\"c\\d\ne");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  (*m)->Set("romulus_epoch", "gauge", "Last checkpoint epoch taken.", 8);
  const std::string text = (*m)->Render();
  // Backslash, quote and newline escaped; the tab stays a tab (JSON's \t
  // would be an invalid escape for the exposition parser).
  EXPECT_NE(text.find("romulus_epoch{guest=\"a\tb\\\"c\\\\d\\ne\"} 8\n"), std::string::npos) << text;
  (*m)->Close();
  m->reset();
  std::remove(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace romulus

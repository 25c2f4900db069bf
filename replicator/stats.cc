#include "replicator/stats.h"

#include <cinttypes>
#include <cmath>

#include "common/digest.h"
#include "common/units.h"
#include "control/reply.h"

namespace romulus::replicator {

namespace {
double Ratio(uint64_t a, uint64_t b) { return b ? static_cast<double>(a) / b : 0.0; }

// A ratio as the stats lines give it: rounded to `decimals` places, so a
// reader gets 263.37 rather than 263.3720930232558. The library prints the
// shortest text that reads back as the same double, hence 25.0, not 25.00
// (docs/STATS.md, "Numbers").
double Rounded(double v, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(v * scale) / scale;
}
}  // namespace

void TotalStats::Add(const EpochStats& e) {
  ++epochs;
  if (e.acked) ++acked;
  dirty_pages += e.dirty_pages;
  raw_bytes += e.raw_bytes;
  wire_bytes += e.wire_bytes;
  pause_sum += e.pause;
  if (e.pause > pause_max) pause_max = e.pause;
}

std::string EpochStatsJson(const EpochStats& e) {
  // Keys in the order docs/STATS.md lists them (ordered_json keeps insertion
  // order); durations as signed integers, as before.
  control::Json j;
  j["epoch"] = e.epoch;
  j["digest"] = DigestHex(e.digest);
  j["acked"] = e.acked;
  j["protected"] = e.protected_;
  j["pause_us"] = static_cast<int64_t>(e.pause.count());
  j["suspend_us"] = static_cast<int64_t>(e.suspend.count());
  j["period_us"] = static_cast<int64_t>(e.period.count());
  j["dirty_pages"] = e.dirty_pages;
  static_assert(compress::kNumPageKinds == 5, "one pages_* key per page kind");
  j["pages_zero"] = e.pages_by_kind[0];
  j["pages_unchanged"] = e.pages_by_kind[1];
  j["pages_delta"] = e.pages_by_kind[2];
  j["pages_raw"] = e.pages_by_kind[3];
  j["pages_lz4"] = e.pages_by_kind[4];
  j["raw_bytes"] = e.raw_bytes;
  j["wire_bytes"] = e.wire_bytes;
  j["wire_bytes_per_page"] = Rounded(Ratio(e.wire_bytes, e.dirty_pages), 2);
  j["cache_hits"] = e.cache_hits;
  j["cache_misses"] = e.cache_misses;
  j["cache_overflows"] = e.cache_overflows;
  j["encode_us"] = static_cast<int64_t>(e.encode_time.count());
  j["ack_latency_us"] = static_cast<int64_t>(e.ack_latency.count());
  j["outbuf_high_water"] = static_cast<uint64_t>(e.outbuf_high_water);
  j["output_commit"] = e.output_commit;
  if (e.has_disks) {
    j["disk_records"] = e.disk_records;
    j["disk_bytes"] = e.disk_bytes;
    j["disk_wire_bytes"] = e.disk_wire_bytes;
    j["disk_cut_us"] = static_cast<int64_t>(e.disk_cut.count());
  }
  // Backend extras after the stable keys; a key that repeats a stable one
  // would overwrite it in place, which no backend does.
  for (const auto& [key, value] : e.extra) j[key] = value;
  return control::Dump(j);
}

std::string EpochStatsLine(const EpochStats& e) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "epoch %-6" PRIu64 " pause %7.2f ms  dirty %7" PRIu64
                "  wire %9s (%6.1f B/page)  hit %5.1f%%  ack %6.2f ms  %s%s",
                e.epoch, e.pause.count() / 1e3, e.dirty_pages, FormatSize(e.wire_bytes).c_str(),
                Ratio(e.wire_bytes, e.dirty_pages),
                100.0 * Ratio(e.cache_hits, e.cache_hits + e.cache_misses),
                e.ack_latency.count() / 1e3, e.acked ? "acked" : "NOT ACKED",
                e.output_commit.rfind("none", 0) == 0 ? "  [output not committed]" : "");
  return buf;
}

std::string TotalStatsJson(const TotalStats& t) {
  control::Json j;
  j["totals"] = true;
  j["epochs"] = t.epochs;
  j["acked"] = t.acked;
  j["dirty_pages"] = t.dirty_pages;
  j["raw_bytes"] = t.raw_bytes;
  j["wire_bytes"] = t.wire_bytes;
  j["compression_ratio"] = Rounded(Ratio(t.raw_bytes, t.wire_bytes), 2);
  j["pause_mean_us"] = Rounded(t.epochs ? static_cast<double>(t.pause_sum.count()) / t.epochs : 0.0, 1);
  j["pause_max_us"] = static_cast<int64_t>(t.pause_max.count());
  j["resyncs"] = t.resyncs;
  return control::Dump(j);
}

std::string TotalStatsLine(const TotalStats& t) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%" PRIu64 " epochs (%" PRIu64 " acked, %" PRIu64
                " resyncs), %s of dirty pages sent as %s (%.1fx), pause mean %.2f ms max %.2f ms",
                t.epochs, t.acked, t.resyncs, FormatSize(t.raw_bytes).c_str(),
                FormatSize(t.wire_bytes).c_str(), Ratio(t.raw_bytes, t.wire_bytes),
                t.epochs ? t.pause_sum.count() / 1e3 / t.epochs : 0.0, t.pause_max.count() / 1e3);
  return buf;
}

bool EpochLineThrottle::Due(std::chrono::steady_clock::time_point now, bool acked) {
  if (any_ && acked && now - last_ < gap_) return false;
  any_ = true;
  last_ = now;
  return true;
}

StatsWriter::~StatsWriter() {
  if (json_) std::fclose(json_);
}

bool StatsWriter::OpenJson(const std::string& path) {
  json_ = std::fopen(path.c_str(), "w");
  return json_ != nullptr;
}

void StatsWriter::Epoch(const EpochStats& e) {
  if (json_) {
    std::fprintf(json_, "%s\n", EpochStatsJson(e).c_str());
    std::fflush(json_);
  }
  if (human_ && throttle_.Due(std::chrono::steady_clock::now(), e.acked)) {
    std::fprintf(stderr, "%s\n", EpochStatsLine(e).c_str());
  }
}

void StatsWriter::Totals(const TotalStats& t) {
  if (json_) {
    std::fprintf(json_, "%s\n", TotalStatsJson(t).c_str());
    std::fflush(json_);
  }
  std::fprintf(stderr, "romulus: %s\n", TotalStatsLine(t).c_str());
}

void StatsWriter::Event(const std::string& json_line) {
  if (json_) {
    std::fprintf(json_, "%s\n", json_line.c_str());
    std::fflush(json_);
  }
}

}  // namespace romulus::replicator

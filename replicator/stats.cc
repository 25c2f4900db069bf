#include "replicator/stats.h"

#include <cinttypes>

#include "common/digest.h"
#include "common/units.h"

namespace romulus::replicator {

namespace {
double Ratio(uint64_t a, uint64_t b) { return b ? static_cast<double>(a) / b : 0.0; }

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out;
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
  char buf[1024];
  std::snprintf(
      buf, sizeof buf,
      "{\"epoch\":%" PRIu64 ",\"digest\":\"%s\",\"acked\":%s,\"protected\":%s,"
      "\"pause_us\":%lld,\"suspend_us\":%lld,\"period_us\":%lld,\"dirty_pages\":%" PRIu64 ","
      "\"pages_zero\":%" PRIu64 ",\"pages_unchanged\":%" PRIu64 ",\"pages_delta\":%" PRIu64
      ",\"pages_raw\":%" PRIu64 ",\"pages_lz4\":%" PRIu64 ","
      "\"raw_bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64 ",\"wire_bytes_per_page\":%.2f,"
      "\"cache_hits\":%" PRIu64 ",\"cache_misses\":%" PRIu64 ",\"cache_overflows\":%" PRIu64 ","
      "\"encode_us\":%lld,\"ack_latency_us\":%lld,\"outbuf_high_water\":%zu,"
      "\"output_commit\":\"%s\"}",
      e.epoch, DigestHex(e.digest).c_str(), e.acked ? "true" : "false",
      e.protected_ ? "true" : "false", static_cast<long long>(e.pause.count()),
      static_cast<long long>(e.suspend.count()),
      static_cast<long long>(e.period.count()), e.dirty_pages, e.pages_by_kind[0],
      e.pages_by_kind[1], e.pages_by_kind[2], e.pages_by_kind[3], e.pages_by_kind[4], e.raw_bytes,
      e.wire_bytes, Ratio(e.wire_bytes, e.dirty_pages), e.cache_hits, e.cache_misses,
      e.cache_overflows, static_cast<long long>(e.encode_time.count()),
      static_cast<long long>(e.ack_latency.count()), e.outbuf_high_water,
      JsonEscape(e.output_commit).c_str());
  std::string out = buf;
  if (!e.extra.empty()) {
    out.pop_back();  // the closing brace
    for (const auto& [key, value] : e.extra) {
      out += ",\"" + JsonEscape(key) + "\":" + std::to_string(value);
    }
    out += '}';
  }
  return out;
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
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"totals\":true,\"epochs\":%" PRIu64 ",\"acked\":%" PRIu64
                ",\"dirty_pages\":%" PRIu64 ",\"raw_bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64
                ",\"compression_ratio\":%.2f,\"pause_mean_us\":%.1f,\"pause_max_us\":%lld,"
                "\"resyncs\":%" PRIu64 "}",
                t.epochs, t.acked, t.dirty_pages, t.raw_bytes, t.wire_bytes,
                Ratio(t.raw_bytes, t.wire_bytes),
                t.epochs ? static_cast<double>(t.pause_sum.count()) / t.epochs : 0.0,
                static_cast<long long>(t.pause_max.count()), t.resyncs);
  return buf;
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

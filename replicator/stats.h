// Per-epoch statistics of the primary: one JSON object per line for tools
// (--stats-json FILE), one concise line for people (on a TTY), and totals at
// exit. Keys are a stable contract (docs/STATS.md): every line has "epoch"
// (integer), "digest" (hex string) and "acked" (bool).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "compress/page.h"

namespace romulus::replicator {

struct EpochStats {
  uint64_t epoch = 0;
  bool acked = false;
  bool protected_ = false;  // a backup held the previous epoch when this one began
  std::chrono::microseconds pause{0};        // guest paused: suspend .. resume
  std::chrono::microseconds suspend{0};      // part of pause spent waiting for the guest to stop
  std::chrono::microseconds period{0};       // this suspend - previous suspend
  uint64_t dirty_pages = 0;
  std::array<uint64_t, compress::kNumPageKinds> pages_by_kind{};
  uint64_t raw_bytes = 0;
  uint64_t wire_bytes = 0;
  uint64_t cache_hits = 0, cache_misses = 0, cache_overflows = 0;
  std::chrono::microseconds encode_time{0};
  std::chrono::microseconds ack_latency{0};
  size_t outbuf_high_water = 0;
  uint64_t digest = 0;
  std::string output_commit;  // "sch_plug on veth0" / "none (output not committed)"
  // The disk part (docs/DISK.md), shown when has_disks: records, their
  // uncompressed write bytes, wire bytes of DISK + DISK_END frames.
  bool has_disks = false;
  uint64_t disk_records = 0, disk_bytes = 0, disk_wire_bytes = 0;
  // Part of `pause` spent cutting the disks' epoch (each tap's Pause: one
  // round trip to a disk-export, or a session's in-pause copy).
  std::chrono::microseconds disk_cut{0};
  // Backend-specific integer members rendered after the stable keys, in this
  // order (the Xen path: "state_records", ...; docs/STATS.md). Empty for the
  // engine. Keys are plain identifiers.
  std::vector<std::pair<std::string, uint64_t>> extra;
};

struct TotalStats {
  uint64_t epochs = 0, acked = 0, dirty_pages = 0, raw_bytes = 0, wire_bytes = 0;
  std::chrono::microseconds pause_sum{0}, pause_max{0};
  uint64_t resyncs = 0;
  void Add(const EpochStats& e);
};

std::string EpochStatsJson(const EpochStats& e);
std::string EpochStatsLine(const EpochStats& e);  // for people
std::string TotalStatsJson(const TotalStats& t);
std::string TotalStatsLine(const TotalStats& t);

// Which epochs get a human line when epochs are frequent: at most one per
// `gap` (the first epoch and every unacked epoch always get one). A zero gap
// lets every epoch through. Pure: the caller passes the time.
class EpochLineThrottle {
 public:
  explicit EpochLineThrottle(std::chrono::nanoseconds gap = std::chrono::nanoseconds(0)) : gap_(gap) {}
  bool Due(std::chrono::steady_clock::time_point now, bool acked);

 private:
  std::chrono::nanoseconds gap_;
  bool any_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// Writes JSON lines to a file (flushed per line, so a killed process leaves
// every completed epoch on disk) and/or human lines to stderr.
class StatsWriter {
 public:
  StatsWriter() = default;
  ~StatsWriter();
  bool OpenJson(const std::string& path);  // false + errno on failure
  void set_human(bool on) { human_ = on; }
  // Human lines at most once per `gap` (EpochLineThrottle); default: every epoch.
  void set_human_min_gap(std::chrono::nanoseconds gap) { throttle_ = EpochLineThrottle(gap); }
  void Epoch(const EpochStats& e);
  void Totals(const TotalStats& t);
  void Event(const std::string& json_line);  // any other object, one line

 private:
  FILE* json_ = nullptr;
  bool human_ = false;
  EpochLineThrottle throttle_;
};

}  // namespace romulus::replicator

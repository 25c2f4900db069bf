// Micro-benchmark of the backup's side of a DISK frame (docs/PROTOCOL.md
// §3.10): DiskFrameParser::Open (validates the whole frame) and Next (yields
// every record), over 2 MiB frames as the primary's DiskFrameBuilder fills
// them with 64 KiB writes. Throughput is bytes of write data as applied
// (decompressed) per second; `wire_ratio` is those bytes over the frame's.
//
// Workloads (docs/benchmarks.md, "Disk frames"):
//   text    log-like lines with varying numbers: LZ4 shrinks them ~2-4x
//   sparse  mostly zero blocks with a few random words: LZ4 shrinks them ~50x,
//           so one 2 MiB frame holds far more than its size once decompressed
//   raw     random bytes: LZ4 cannot shrink them, the records travel raw
// `Parse` only walks the records; `ParseDigest` also feeds each to the
// DiskRecordDigest, as the receiver does before staging.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "protocol/disk_records.h"

namespace romulus::protocol {
namespace {

constexpr size_t kFrameBytes = size_t{2} << 20;
constexpr size_t kWriteBytes = size_t{64} << 10;

enum Workload { kText, kSparse, kRaw };

std::vector<uint8_t> Block(Workload w, std::mt19937_64& rng) {
  std::vector<uint8_t> b(kWriteBytes, 0);
  switch (w) {
    case kText: {
      static const char* const kWords[] = {"request", "done", "GET", "/api/v1/items", "cache", "miss",
                                           "ok",      "warn", "user", "session",       "flush", "commit"};
      size_t pos = 0;
      char line[160];
      while (pos < b.size()) {
        const int n = std::snprintf(line, sizeof line, "2026-12-04T02:%02u:%02u.%03u host%02u %s %s id=%08llx in %u ms\n",
                                    unsigned(rng() % 60), unsigned(rng() % 60), unsigned(rng() % 1000),
                                    unsigned(rng() % 16), kWords[rng() % 12], kWords[rng() % 12],
                                    static_cast<unsigned long long>(rng() & 0xffffffffu), unsigned(rng() % 500));
        const size_t take = std::min(b.size() - pos, static_cast<size_t>(n));
        std::memcpy(b.data() + pos, line, take);
        pos += take;
      }
      break;
    }
    case kSparse:
      for (size_t off = 0; off + 8 <= b.size(); off += 512) {
        const uint64_t v = rng();
        std::memcpy(b.data() + off, &v, 8);
      }
      break;
    case kRaw:
      for (size_t off = 0; off + 8 <= b.size(); off += 8) {
        const uint64_t v = rng();
        std::memcpy(b.data() + off, &v, 8);
      }
      break;
  }
  return b;
}

struct Frame {
  std::vector<uint8_t> payload;
  uint64_t data_bytes = 0;  // decompressed bytes of its writes
  uint32_t records = 0;
};

const Frame& GetFrame(Workload w) {
  static Frame frames[3];
  Frame& f = frames[w];
  if (!f.payload.empty()) return f;
  std::mt19937_64 rng(42 + w);
  DiskFrameBuilder b(kFrameBytes);
  b.Reset(1);
  uint64_t offset = 0;
  for (;;) {
    const auto block = Block(w, rng);
    if (!b.AddWrite(offset, block, false, /*try_lz4=*/true)) break;
    offset += block.size();
    f.data_bytes += block.size();
  }
  const auto p = b.payload();
  f.payload.assign(p.begin(), p.end());
  f.records = b.record_count();
  return f;
}

const std::vector<DiskInfo>& Disks() {
  static const std::vector<DiskInfo> disks = {{1, uint64_t{1} << 40, "xvda"}};
  return disks;
}

void Report(benchmark::State& state, const Frame& f) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * f.data_bytes));
  state.counters["records"] = f.records;
  state.counters["wire_ratio"] = static_cast<double>(f.data_bytes) / static_cast<double>(f.payload.size());
  state.counters["frame_MiB"] = static_cast<double>(f.payload.size()) / (1 << 20);
}

void BM_Parse(benchmark::State& state, Workload w) {
  const Frame& f = GetFrame(w);
  DiskFrameParser parser;
  for (auto _ : state) {
    if (!parser.Open(f.payload, Disks()).ok()) {
      state.SkipWithError("frame refused");
      return;
    }
    DiskRecord r;
    uint64_t bytes = 0;
    while (parser.Next(&r)) {
      benchmark::DoNotOptimize(r.data.data());
      bytes += r.data.size();
    }
    if (bytes != f.data_bytes) {
      state.SkipWithError("wrong byte count");
      return;
    }
  }
  Report(state, f);
}

void BM_ParseDigest(benchmark::State& state, Workload w) {
  const Frame& f = GetFrame(w);
  DiskFrameParser parser;
  DiskRecordDigest digest;
  for (auto _ : state) {
    if (!parser.Open(f.payload, Disks()).ok()) {
      state.SkipWithError("frame refused");
      return;
    }
    digest.Reset();
    DiskRecord r;
    while (parser.Next(&r)) digest.Add(r);
    benchmark::DoNotOptimize(digest.value());
  }
  Report(state, f);
}

BENCHMARK_CAPTURE(BM_Parse, text, kText);
BENCHMARK_CAPTURE(BM_Parse, sparse, kSparse);
BENCHMARK_CAPTURE(BM_Parse, raw, kRaw);
BENCHMARK_CAPTURE(BM_ParseDigest, text, kText);
BENCHMARK_CAPTURE(BM_ParseDigest, sparse, kSparse);
BENCHMARK_CAPTURE(BM_ParseDigest, raw, kRaw);

}  // namespace
}  // namespace romulus::protocol

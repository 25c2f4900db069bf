// Micro-benchmark of the backup's staging of one large epoch's disk data
// (restore/disk_staging.h, docs/DISK.md §6.2): 128 MiB of 1 MiB writes (the
// largest a DISK record carries) staged, then read back the two ways a
// commit reads it — ForEachPiece (the image sink's copy into its journal,
// hashed as copied: XXH3 here) and ForEachEntry (the apply's walk; the
// entries' bytes are summed so the read cannot be skipped).
//   Memory  --max-disk-staging above the epoch: everything in RAM
//   Spill   --max-disk-staging 64K: all but the first entry in the spill
//           file (O_TMPFILE in $ROMULUS_SPILL_DIR, default /tmp)
// Throughput is epoch bytes per second for the whole cycle (stage, copy,
// walk, clear). The spill's reads may be served from the page cache: the
// figure is the cost on a backup with free memory, not of a cold disk.
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "restore/disk_staging.h"

namespace romulus::restore {
namespace {

constexpr uint64_t kEpochBytes = uint64_t{128} << 20;
constexpr size_t kWrite = protocol::kMaxDiskWriteChunk;

std::string SpillDir() {
  const char* d = std::getenv("ROMULUS_SPILL_DIR");
  return d != nullptr && *d != '\0' ? d : "/tmp";
}

void Cycle(benchmark::State& state, size_t memory_bytes) {
  std::vector<uint8_t> data(kWrite);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  DiskStaging st(memory_bytes, DiskSpill{SpillDir(), kEpochBytes * 2});
  uint64_t sink = 0;
  for (auto _ : state) {
    for (uint64_t off = 0; off < kEpochBytes; off += kWrite) {
      DiskEntry e;
      e.disk_id = 1;
      e.kind = kDiskEntryWrite;
      e.offset = off;
      e.length = kWrite;
      e.data = data.data();
      if (!st.Stage(1, e).ok()) state.SkipWithError("stage failed");
    }
    XXH3_state_t* h = XXH3_createState();
    XXH3_64bits_reset(h);
    if (!st.ForEachPiece([&](std::span<const uint8_t> p) {
           XXH3_64bits_update(h, p.data(), p.size());
           return Status::Ok();
         }).ok()) {
      state.SkipWithError("copy failed");
    }
    sink += XXH3_64bits_digest(h);
    XXH3_freeState(h);
    if (!st.ForEachEntry([&](const DiskEntry& e) {
           sink += e.data[e.length - 1];
           return Status::Ok();
         }).ok()) {
      state.SkipWithError("walk failed");
    }
    state.counters["spilled_MiB"] = static_cast<double>(st.spilled_bytes() >> 20);
    st.Clear();
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kEpochBytes));
}

void Memory(benchmark::State& state) { Cycle(state, kEpochBytes * 2); }
void Spill(benchmark::State& state) { Cycle(state, 64 << 10); }

BENCHMARK(Memory)->Unit(benchmark::kMillisecond)->MinTime(2);
BENCHMARK(Spill)->Unit(benchmark::kMillisecond)->MinTime(2);

}  // namespace
}  // namespace romulus::restore

// Micro-benchmarks of the XBZRLE encoders and decoder, per implementation and
// workload. Two working-set sizes: 1 MiB of pages (cache-resident: shows the
// encoder's own cost) and 16 MiB (bound by memory, like a real checkpoint).
// Throughput is reported as bytes of new page processed per second, the same
// definition as `romulus bench codec` (docs/benchmarks.md).
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/page.h"
#include "compress/xbzrle.h"
#include "compress/xbzrle_reference.h"

namespace romulus::compress {
namespace {

enum Workload { kSeed, kRandom8, kRandom64, kRuns, kRewrite, kNumWorkloads };
const char* const kWorkloadNames[] = {"seed", "random8", "random64", "runs", "rewrite"};

struct PageSet {
  std::vector<uint8_t> old_img, new_img;
  size_t pages;
};

PageSet MakeSet(Workload w, size_t bytes) {
  PageSet s{std::vector<uint8_t>(bytes), {}, bytes / kPageSize};
  std::mt19937_64 rng(42);
  for (auto& b : s.old_img) b = static_cast<uint8_t>(rng());
  s.new_img = s.old_img;
  for (size_t p = 0; p < s.pages; ++p) {
    uint8_t* np = s.new_img.data() + p * kPageSize;
    auto flip = [&](size_t i) { np[i] ^= static_cast<uint8_t>(1 + rng() % 255); };
    switch (w) {
      case kSeed:
        for (size_t off : {0, 1024, 2048, 3072}) flip(off);
        break;
      case kRandom8:
      case kRandom64:
        for (int i = 0; i < (w == kRandom8 ? 8 : 64); ++i) flip(rng() % kPageSize);
        break;
      case kRuns:
        for (int r = 0, n = 1 + rng() % 8; r < n; ++r) {
          const size_t start = rng() % kPageSize, len = 1 + rng() % 256;
          for (size_t i = start; i < std::min(kPageSize, start + len); ++i) flip(i);
        }
        break;
      case kRewrite:
        for (size_t i = 0; i < kPageSize; ++i) flip(i);
        break;
      default:
        break;
    }
  }
  return s;
}

const PageSet& GetSet(Workload w, size_t bytes) {
  static std::vector<std::pair<std::pair<int, size_t>, PageSet>> cache;
  for (auto& [key, set] : cache)
    if (key.first == w && key.second == bytes) return set;
  cache.push_back({{w, bytes}, MakeSet(w, bytes)});
  return cache.back().second;
}

void BM_Encode(benchmark::State& state, EncodeFn fn, Workload w, size_t bytes) {
  const PageSet& s = GetSet(w, bytes);
  constexpr size_t kCap = kPageSize / 3;
  std::vector<uint8_t> out(kCap);
  for (auto _ : state) {
    for (size_t p = 0; p < s.pages; ++p) {
      int n = fn(s.old_img.data() + p * kPageSize, s.new_img.data() + p * kPageSize, out.data(), kCap);
      benchmark::DoNotOptimize(n);
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
}

void BM_Decode(benchmark::State& state, Workload w) {
  const PageSet& s = GetSet(w, size_t{1} << 20);
  std::vector<std::vector<uint8_t>> deltas(s.pages);
  for (size_t p = 0; p < s.pages; ++p) {
    deltas[p].resize(2 * kPageSize + 8);
    int n = EncodeDeltaScalar(s.old_img.data() + p * kPageSize, s.new_img.data() + p * kPageSize,
                              deltas[p].data(), deltas[p].size());
    deltas[p].resize(n > 0 ? n : 0);
  }
  std::vector<uint8_t> work = s.old_img;
  for (auto _ : state) {
    for (size_t p = 0; p < s.pages; ++p) {
      if (deltas[p].empty()) continue;
      Status st = DecodeDelta(deltas[p].data(), deltas[p].size(), work.data() + p * kPageSize);
      benchmark::DoNotOptimize(st.ok());
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * s.old_img.size());
}

void BM_IsZeroPage(benchmark::State& state) {
  std::vector<uint8_t> page(kPageSize, 0);
  for (auto _ : state) benchmark::DoNotOptimize(IsZeroPage(page.data()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kPageSize);
}
BENCHMARK(BM_IsZeroPage);

int Register() {
  std::vector<EncoderImpl> encs(AvailableEncoders().begin(), AvailableEncoders().end());
  encs.push_back({"qemu-style-scalar", &EncodeDeltaQemuStyle});
  for (size_t bytes : {size_t{1} << 20, size_t{16} << 20}) {
    const std::string size = bytes == (size_t{1} << 20) ? "1MiB" : "16MiB";
    for (int w = 0; w < kNumWorkloads; ++w) {
      for (const EncoderImpl& e : encs) {
        benchmark::RegisterBenchmark(
            ("Encode/" + std::string(kWorkloadNames[w]) + "/" + size + "/" + e.name).c_str(),
            BM_Encode, e.fn, static_cast<Workload>(w), bytes);
      }
    }
  }
  for (int w = 0; w < kNumWorkloads; ++w)
    benchmark::RegisterBenchmark(("Decode/" + std::string(kWorkloadNames[w])).c_str(), BM_Decode,
                                 static_cast<Workload>(w));
  return 0;
}
const int kRegistered = Register();

}  // namespace
}  // namespace romulus::compress

// libFuzzer target for the migration-v2 tap (xen/stream_v2.h, no Xen headers).
//
// Input: byte 0 picks a chunking seed, the rest is the stream. Invariants:
// the parser never crashes or over-reads, and whatever it accepted is rebuilt
// byte for byte by the reconstructor (its output is always a prefix of the
// input), whatever the chunking.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "xen/stream_split.h"
#include "xen/stream_v2.h"

using namespace romulus;
using namespace romulus::xen;

namespace {
// Also exercise the backup half: split into envelopes, reassemble.
struct Bridge : EpochSink {
  StreamAssembler* asmb;
  Status BeginEpoch(uint64_t) override { return Status::Ok(); }
  Status AddState(std::span<const uint8_t> b) override { return asmb->OnState(b); }
  Status AddPage(uint64_t pfn, const uint8_t* p) override { return asmb->OnPage(pfn, p); }
  Status EndEpoch(uint64_t) override { return asmb->Commit(); }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint32_t seed = data[0];
  data++, size--;
  ParserLimits limits;
  limits.max_state_record_length = 1u << 20;  // keep the fuzzer's memory small

  std::vector<uint8_t> out;
  StreamReconstructor rec(
      [&](std::span<const uint8_t> b) {
        out.insert(out.end(), b.begin(), b.end());
        return Status::Ok();
      },
      limits);
  StreamParser parser(&rec, limits);

  std::vector<uint8_t> out2;
  StreamAssembler asmb(
      [&](std::span<const uint8_t> b) {
        out2.insert(out2.end(), b.begin(), b.end());
        return Status::Ok();
      },
      limits);
  Bridge bridge;
  bridge.asmb = &asmb;
  StreamSplitter splitter(&bridge);
  StreamParser parser2(&splitter, limits);

  size_t off = 0;
  bool ok = true, ok2 = true;
  while (off < size) {
    seed = seed * 1103515245u + 12345u;
    size_t chunk = 1 + (seed >> 16) % 5000;
    if (chunk > size - off) chunk = size - off;
    std::span<const uint8_t> piece(data + off, chunk);
    if (ok) ok = parser.Feed(piece).ok();
    if (ok2) ok2 = parser2.Feed(piece).ok();
    off += chunk;
  }
  (void)parser.Finish();
  if (out.size() > size || (!out.empty() && memcmp(out.data(), data, out.size()) != 0)) abort();
  // The assembler writes CHECKPOINT only when the splitter ended an epoch,
  // i.e. exactly where the input had one: still a prefix.
  if (out2.size() > size || (!out2.empty() && memcmp(out2.data(), data, out2.size()) != 0)) abort();
  if (ok && parser.at_record_boundary() && out.size() != size) abort();
  return 0;
}

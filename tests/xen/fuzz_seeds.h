// The seed inputs of the xen_stream_fuzz target (tests/fuzz/corpus/
// xen_stream_fuzz/), built from the same synthetic streams as the unit
// tests. One definition, used by the `xen_fuzz_seeds` tool that writes them
// and by the test that checks the committed files still equal its output, so
// the corpus is reproducible from source.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tests/xen/stream_test_util.h"

namespace romulus::xen::testing {

struct FuzzSeed {
  std::string name;
  std::vector<uint8_t> bytes;  // byte 0: the fuzzer's chunking seed, then the stream
};

inline FuzzSeed MakeFuzzSeed(std::string name, uint8_t chunk_seed, const std::vector<uint8_t>& stream) {
  FuzzSeed s{std::move(name), {chunk_seed}};
  s.bytes.insert(s.bytes.end(), stream.begin(), stream.end());
  return s;
}

inline std::vector<FuzzSeed> XenStreamFuzzSeeds() {
  auto plain = StreamBuilder().ImageHeader().DomainHeader();
  plain.Record(kRecX86PvInfo, 8, 1).PageData({{0xF, 1}, {0x0, 2}}, 3).Record(kRecEnd, {});
  return {MakeFuzzSeed("remus-1", 7, SampleRemusStream(1)), MakeFuzzSeed("remus-2", 200, SampleRemusStream(2)),
          MakeFuzzSeed("plain-end", 1, plain.bytes)};
}

}  // namespace romulus::xen::testing

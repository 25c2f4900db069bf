// xen_fuzz_seeds DIR: writes the xen_stream_fuzz seed corpus (tests/xen/
// fuzz_seeds.h) into DIR, e.g.
//   build/release/tests/xen_fuzz_seeds tests/fuzz/corpus/xen_stream_fuzz
// A tool, not a test: StreamV2Test.FuzzSeedsAreUpToDate checks the
// committed files equal what this writes.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/xen/fuzz_seeds.h"

int main(int argc, char** argv) {
  if (argc != 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: %s DIR   (writes the xen_stream_fuzz seeds into DIR)\n", argv[0]);
    return 2;
  }
  for (const auto& seed : romulus::xen::testing::XenStreamFuzzSeeds()) {
    const std::string path = std::string(argv[1]) + "/" + seed.name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
      std::fprintf(stderr, "xen_fuzz_seeds: %s: %s\n", path.c_str(), std::strerror(errno));
      return 1;
    }
    const bool ok = std::fwrite(seed.bytes.data(), 1, seed.bytes.size(), f) == seed.bytes.size();
    if (std::fclose(f) != 0 || !ok) {
      std::fprintf(stderr, "xen_fuzz_seeds: cannot write %s\n", path.c_str());
      return 1;
    }
    std::printf("%s (%zu bytes)\n", path.c_str(), seed.bytes.size());
  }
  return 0;
}

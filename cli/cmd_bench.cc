#include <cstring>
#include <iostream>

#include "cli/commands.h"

namespace romulus::cli {

int RunBench(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    (argc < 2 ? std::cerr : std::cout)
        << "Usage: romulus bench codec --old OLD.img --new NEW.img [--json]\n"
           "       romulus bench e2e [--size 1G] [--interval 25ms] ...\n";
    return argc < 2 ? kExitUsage : kExitOk;
  }
  if (!std::strcmp(argv[1], "codec")) return RunBenchCodec(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "e2e")) return RunBenchE2e(argc - 1, argv + 1);
  std::cerr << "romulus bench: unknown benchmark '" << argv[1] << "' (codec or e2e)\n";
  return kExitUsage;
}

}  // namespace romulus::cli

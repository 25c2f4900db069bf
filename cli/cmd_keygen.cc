// romulus keygen FILE: a fresh 32-byte pre-shared key, mode 0600, never
// overwriting an existing file (docs/PROTOCOL.md §1.3).
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "transport/security.h"

namespace romulus::cli {

int RunKeygen(int argc, char** argv) {
  const char kCmd[] = "keygen";
  po::options_description desc("Options");
  desc.add_options()("file", po::value<std::string>(), "where to write the key");
  po::positional_options_description pos;
  pos.add("file", 1);
  int code = 0;
  auto vm = ParseOptions(kCmd, "FILE", desc, argc, argv, &code, &pos);
  if (!vm) return code;
  if (!vm->count("file")) {
    UsageError(kCmd, "give the key file to create (copy it to the other host over a secure channel)");
    return kExitUsage;
  }
  const std::string path = (*vm)["file"].as<std::string>();
  Status st = transport::WritePskFile(path);
  if (!st.ok()) {
    UsageError(kCmd, st.message());
    return kExitFailure;
  }
  std::printf("wrote a new pre-shared key to %s (mode 0600); give both ends --psk-file %s\n", path.c_str(),
              path.c_str());
  return kExitOk;
}

}  // namespace romulus::cli

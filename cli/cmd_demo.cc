#include <iostream>

#include "cli/commands.h"

namespace romulus::cli {

// Placeholder until the component lands; exits 1 so nothing mistakes it for success.
int RunDemo(int, char**) {
  std::cerr << "romulus: this command is not built yet\n";
  return kExitFailure;
}

}  // namespace romulus::cli

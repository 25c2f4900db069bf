#include <spdlog/spdlog.h>

#include "cli/replicate_setup.h"

namespace romulus::cli {

Result<std::unique_ptr<replicator::OutputCommit>> MakeOutputCommit(const ReplicateSetup& setup) {
  if (setup.netbuf_dev.empty()) {
    return std::unique_ptr<replicator::OutputCommit>(new replicator::NoOutputCommit());
  }
  return Status::Unsupported("network buffering (--netbuf-dev) is not available in this build yet");
}

}  // namespace romulus::cli

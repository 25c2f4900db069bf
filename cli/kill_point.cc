#include "cli/kill_point.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

namespace romulus::cli {

std::function<void(replicator::Phase, uint64_t)> KillAtHook(replicator::Phase phase, uint64_t at) {
  return [phase, at](replicator::Phase p, uint64_t epoch) {
    if (p != phase || (at != 0 && epoch != at)) return;
    // The drill's failover time is measured from this line: get it out first.
    spdlog::warn("drill: killing the primary at {} of epoch {}", replicator::PhaseName(p), epoch);
    spdlog::default_logger()->flush();
    kill(getpid(), SIGKILL);
  };
}

}  // namespace romulus::cli

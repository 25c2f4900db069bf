// --kill-at PHASE[:EPOCH]: the primary SIGKILLs itself at a kill-point, so a
// failover drill rehearses a primary that dies at exactly that phase. Shared
// by the engine path and the Xen path (ControllerOptions::phase_hook).
#pragma once

#include <cstdint>
#include <functional>

#include "replicator/phase.h"

namespace romulus::cli {

// A phase hook that logs one line, flushes the log and SIGKILLs this process
// the first time `phase` is reached in epoch `epoch` (0: in any epoch).
std::function<void(replicator::Phase, uint64_t)> KillAtHook(replicator::Phase phase, uint64_t epoch);

}  // namespace romulus::cli

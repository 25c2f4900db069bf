// The fence hook: before a backup activates on silence, the operator's
// command makes sure the primary can no longer write to the world
// (docs/FAILURE-MODEL.md §6).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace romulus::restore {

// Start-up check of --fence-cmd: not empty, and its program (the first word;
// a bare name is looked up in PATH) exists and is executable. The command is
// run by /bin/sh -c, so this catches typos, not every failure.
Status CheckFenceCommand(const std::string& cmd);

// Runs `/bin/sh -c cmd` with ROMULUS_REASON and ROMULUS_EPOCH in its
// environment and waits at most `timeout` (then kills its process group).
// Ok only for exit status 0; otherwise says why (exit N, signal, timeout).
Status RunFenceCommand(const std::string& cmd, const std::string& reason, uint64_t epoch,
                       std::chrono::milliseconds timeout);

}  // namespace romulus::restore

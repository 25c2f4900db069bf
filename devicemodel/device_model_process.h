// Starting a device model process that outlives its starter.
//
// The backup starts the replica's device model at failover and then may
// exit (the guest is no longer its business); the device model must run on
// as the guest's, like the one libxl starts: its own session, reparented to
// init, stdin /dev/null, stdout and stderr into a log, no descriptor of
// ours but the one it is handed (the checkpoint's device state).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::devicemodel {

struct SpawnSpec {
  std::string binary;              // absolute path; never searched in PATH
  std::vector<std::string> args;   // without argv[0] (the binary)
  std::vector<std::string> env;    // the whole environment, KEY=VALUE
  std::string log_path;            // stdout and stderr, appended (created 0640)
  int inherit_fd = -1;             // stays open under its number (>= 3); -1: none
};

// The device model's pid once exec succeeded; the exec's own failure
// (ENOENT, EACCES, …) is returned as an error naming the binary. The
// process is not our child: nothing to reap, and it outlives us.
Result<pid_t> SpawnDetached(const SpawnSpec& spec);

// Whether `pid` still runs (a detached process is reaped by init, so a dead
// one is gone, never a zombie of ours).
bool ProcessAlive(pid_t pid);

}  // namespace romulus::devicemodel

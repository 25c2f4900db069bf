// Starting a device model process that outlives its starter.
//
// The backup starts the replica's device model at failover and then may
// exit (the guest is no longer its business); the device model must run on
// as the guest's, like the one libxl starts: its own session, reparented to
// init, stdin /dev/null, stdout and stderr into a log, no descriptor of
// ours but the one it is handed (the checkpoint's device state).
#pragma once

#include <sys/types.h>

#include <cstdint>
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

// A pid as xenstore's image/device-model-pid holds it: decimal digits only,
// 1..INT32_MAX; kInvalidArgument otherwise.
Result<pid_t> ParsePid(const std::string& text);

// The command line of process `pid` as /proc/PID/cmdline gives it (argv[0]
// included; at most 1 MiB read). kIoError when the process is gone.
Result<std::vector<std::string>> ReadProcessArgv(pid_t pid);

// Whether a device model's command line serves domain `domid` (libxl's
// "-xen-domid D"): a pid read from xenstore is killed only if it does, as
// the number may have been reused since.
bool ArgvServesDomain(const std::vector<std::string>& argv, uint32_t domid);

}  // namespace romulus::devicemodel

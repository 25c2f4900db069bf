// Starting a device model process that outlives its starter.
//
// The backup starts the replica's device model at failover and then may
// exit (the guest is no longer its business); the device model must run on
// as the guest's, like the one libxl starts: its own session, reparented to
// init, stdin /dev/null, stdout and stderr into a log, no descriptor of
// ours but the one it is handed (the checkpoint's device state).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::devicemodel {

// A process that is not our child (a detached device model), held by a
// pidfd: every later liveness check and signal reaches that process, never
// one that was given its pid after it exited (init reaps a detached process,
// so its number can be reused while we still hold it). Without pidfd support
// (kernels before 5.3) it falls back to the bare pid, with that race. Move-only.
class ProcessRef {
 public:
  ProcessRef() = default;
  // The process that runs as `pid` now; invalid (pid() -1) when none does.
  static ProcessRef Open(pid_t pid);
  ProcessRef(ProcessRef&& other) noexcept;
  ProcessRef& operator=(ProcessRef&& other) noexcept;
  ProcessRef(const ProcessRef&) = delete;
  ProcessRef& operator=(const ProcessRef&) = delete;
  ~ProcessRef();

  bool valid() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // It has not exited (a zombie counts as exited).
  bool Alive() const;
  // False when it is gone (or the signal was refused).
  bool Signal(int sig) const;
  // SIGTERM, then up to `grace` for it to exit, then SIGKILL. Not reaped:
  // not ours to reap.
  void Stop(std::chrono::milliseconds grace) const;
  // Forgets the process (invalid afterwards).
  void Reset();

 private:
  pid_t pid_ = -1;
  int fd_ = -1;  // the pidfd; -1 without pidfd support
};

struct SpawnSpec {
  std::string binary;              // absolute path; never searched in PATH
  std::vector<std::string> args;   // without argv[0] (the binary)
  std::vector<std::string> env;    // the whole environment, KEY=VALUE
  std::string log_path;            // stdout and stderr, appended (created 0640)
  int inherit_fd = -1;             // stays open under its number (>= 3); -1: none
};

// The device model once exec succeeded; the exec's own failure (ENOENT,
// EACCES, …) is returned as an error naming the binary. The process is not
// our child: nothing to reap, and it outlives us.
Result<ProcessRef> SpawnDetached(const SpawnSpec& spec);


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

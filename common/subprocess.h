// Child processes: spawned with posix_spawnp (argv[0] is looked up in PATH
// when it has no '/'), their output in a log file, and waited for with a
// deadline. Used by the whole-program commands (demo, drill, switchover)
// and by the disk export an activated guest's disk is served from
// (disk/exported_disk.h).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace romulus {

// Every child gets an empty signal mask and none of our descriptors beyond
// 0-2.
enum class SpawnMode {
  kAttached,  // a helper of this process: in its session
  // A process that must outlive this one (a disk export serving a running
  // guest): its own session (no terminal's or process group's signals),
  // default SIGINT, SIGTERM, SIGHUP, SIGPIPE; stdin from /dev/null.
  kDetached,
};

// args[0] with args; stdout+stderr to `log` (truncated) if not empty. -1 on
// failure.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log, SpawnMode mode = SpawnMode::kAttached);
// waitpid with a deadline; false (child still running) on timeout.
bool WaitExit(pid_t pid, std::chrono::milliseconds timeout, int* status);
// SIGKILL + reap, for cleanup paths; ignores pid <= 0.
void KillAndReap(pid_t pid);
// SIGTERM, up to `grace` for it to exit, then SIGKILL; reaped either way.
void StopAndReap(pid_t pid, std::chrono::milliseconds grace);
// Runs args to completion; returns its exit code (-1 if it could not run,
// was killed, or — timeout > 0 — was still running after `timeout`, then
// SIGKILLed) and appends its output to `log`.
// *ran (optional) is the child's pid (-1 if it could not be spawned), for a
// caller that must tell what it left behind.
int RunToExit(const std::vector<std::string>& args, const std::string& log,
              std::chrono::milliseconds timeout = std::chrono::milliseconds(0), pid_t* ran = nullptr);

// The last non-empty line of the file at `path` that contains `needle`
// ("": any line), or "" — for reading a child's log.
std::string LastLineWith(const std::string& path, const std::string& needle);

}  // namespace romulus

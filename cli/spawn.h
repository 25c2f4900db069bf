// Child processes for the whole-program commands (demo, drill, switchover):
// the same romulus binary run as `romulus restore` / `romulus replicate`
// with its output in a log file, and small readers for the JSON-lines files
// those children write (docs/STATS.md).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace romulus::cli {

// /proc/self/exe (the running romulus), or "romulus" from PATH.
std::string SelfExe();
// Spawn, WaitExit, KillAndReap, StopAndReap, RunToExit: common/subprocess.h.

// Value of "key": in a flat JSON line: a string without quotes, or the raw
// number/bool text ("" if absent).
std::string JsonField(const std::string& line, const std::string& key);
// Wall-clock milliseconds of a log line starting "YYYY-mm-dd HH:MM:SS.mmm"
// (local time, spdlog's pattern in main.cc); -1 if it does not parse.
long long LogLineTimeMs(const std::string& line);
long long NowMs();  // wall clock, ms since the Unix epoch
// A free TCP port on 127.0.0.1 (bound and released; 0 on failure).
int FreeLoopbackPort();
// mkdtemp under /tmp with this prefix; "" on failure.
std::string MakeTempDir(const std::string& prefix);

}  // namespace romulus::cli

#include "cli/kill_point.h"

#include <dirent.h>
#include <linux/sockios.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace romulus::cli {
namespace {

// True while any socket of this process still holds bytes it has written
// but the peer's kernel has not acknowledged (SIOCOUTQ).
bool SendQueuesPending() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return false;
  bool pending = false;
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    int outq = 0;
    if (::ioctl(static_cast<int>(fd), SIOCOUTQ, &outq) == 0 && outq > 0) {
      pending = true;
      break;
    }
  }
  ::closedir(dir);
  return pending;
}

}  // namespace

std::function<void(replicator::Phase, uint64_t)> KillAtHook(replicator::Phase phase, uint64_t at) {
  return [phase, at](replicator::Phase p, uint64_t epoch) {
    if (p != phase || (at != 0 && epoch != at)) return;
    // What was written before the kill point must reach the backup, as the
    // drill's phases promise (c: EPOCH_END written, so the epoch commits).
    // A process killed with unread input resets its TCP connections, and the
    // kernel then drops what it had not sent yet: under load, the tail of a
    // large first epoch (seen: a 16 MiB epoch cut at 0.3 MiB). So wait, at
    // most 10 s, until every socket's send queue is acknowledged.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (SendQueuesPending() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // The drill's failover time is measured from this line: get it out first.
    spdlog::warn("drill: killing the primary at {} of epoch {}", replicator::PhaseName(p), epoch);
    spdlog::default_logger()->flush();
    kill(getpid(), SIGKILL);
  };
}

}  // namespace romulus::cli

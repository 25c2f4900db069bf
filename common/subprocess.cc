#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <thread>

extern char** environ;

namespace romulus {

using Clock = std::chrono::steady_clock;

pid_t Spawn(const std::vector<std::string>& args, const std::string& log, SpawnMode mode) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // No child inherits our descriptors beyond 0-2 (our sockets, event and
  // metrics files) or our blocked signals (the CLI blocks SIGINT/SIGTERM in
  // every thread for sigwait: a child that kept that mask could not be
  // stopped but by SIGKILL).
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  short flags = POSIX_SPAWN_SETSIGMASK;
  if (mode == SpawnMode::kDetached) {
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    sigset_t defaults;
    sigemptyset(&defaults);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, sig);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    flags |= POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF;
  }
  posix_spawnattr_setflags(&attr, flags);
  if (!log.empty()) {
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_APPEND, 0644);
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ) != 0) pid = -1;
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

bool WaitExit(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto until = Clock::now() + timeout;
  while (true) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void KillAndReap(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
}

void StopAndReap(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int st = 0;
  if (!WaitExit(pid, grace, &st)) KillAndReap(pid);
}

int RunToExit(const std::vector<std::string>& args, const std::string& log, std::chrono::milliseconds timeout,
              pid_t* ran) {
  std::string tmp = log.empty() ? "" : log + ".part";
  pid_t pid = Spawn(args, tmp);
  if (ran != nullptr) *ran = pid;
  if (pid < 0) return -1;
  int st = -1;  // not "exited 0" if someone else reaped it (ECHILD)
  bool exited = false;
  if (timeout.count() > 0) {
    exited = WaitExit(pid, timeout, &st);
    if (!exited) KillAndReap(pid);
  } else {
    for (;;) {
      const pid_t r = waitpid(pid, &st, 0);
      if (r == pid) {
        exited = true;
        break;
      }
      if (r < 0 && errno != EINTR) break;
    }
  }
  if (!log.empty()) {
    std::ifstream in(tmp);
    std::ofstream out(log, std::ios::app);
    // (Inserting an empty rdbuf sets failbit, which would drop the line below.)
    if (in && in.peek() != std::ifstream::traits_type::eof()) out << in.rdbuf();
    if (!exited) out << "(killed: still running after " << timeout.count() << " ms)\n";
    unlink(tmp.c_str());
  }
  if (!exited) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string LastLineWith(const std::string& path, const std::string& needle) {
  std::ifstream in(path);
  std::string line, found;
  while (std::getline(in, line)) {
    if (!line.empty() && line.find(needle) != std::string::npos) found = line;
  }
  return found;
}

}  // namespace romulus

#include "restore/fence.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

namespace romulus::restore {

namespace {

bool Executable(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

Status CheckFenceCommand(const std::string& cmd) {
  std::istringstream words(cmd);
  std::string program;
  words >> program;
  if (program.empty()) return Status::InvalidArgument("--fence-cmd is empty");
  if (program.find('/') != std::string::npos) {
    if (!Executable(program)) {
      return Status::InvalidArgument("--fence-cmd: " + program + " is not an executable file");
    }
    return Status::Ok();
  }
  // Shell builtins that a fence command may reasonably start with.
  for (const char* builtin : {"exec", "exit", "echo", "test", "[", ":", "true", "false", "kill", "command"}) {
    if (program == builtin) return Status::Ok();
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && Executable(dir + "/" + program)) return Status::Ok();
  }
  return Status::InvalidArgument("--fence-cmd: '" + program + "' is not an executable in PATH");
}

Status RunFenceCommand(const std::string& cmd, const std::string& reason, uint64_t epoch,
                       std::chrono::milliseconds timeout) {
  const std::string epoch_text = std::to_string(epoch);
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("fence: fork", errno);
  if (pid == 0) {
    ::setpgid(0, 0);  // its own process group: a timeout kills all of it
    ::setenv("ROMULUS_REASON", reason.c_str(), 1);
    ::setenv("ROMULUS_EPOCH", epoch_text.c_str(), 1);
    // Undo the parent's blocked stop signals (the signal watcher blocks them).
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  const auto until = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return Status::FromErrno("fence: waitpid", errno);
    if (std::chrono::steady_clock::now() >= until) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Status::Timeout("fence command did not finish within " + std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  if (WIFEXITED(status)) {
    return Status::Internal("fence command exited " + std::to_string(WEXITSTATUS(status)));
  }
  return Status::Internal("fence command killed by signal " + std::to_string(WTERMSIG(status)));
}

}  // namespace romulus::restore

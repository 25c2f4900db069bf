#include "devicemodel/device_model_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

namespace romulus::devicemodel {

namespace {

// Between fork and exec only async-signal-safe calls (the parent has
// threads): everything the child needs is prepared before the fork.
[[noreturn]] void Fail(int report_fd, int err) {
  (void)!write(report_fd, &err, sizeof err);
  _exit(127);
}

void CloseFrom(unsigned first, unsigned last) {
  if (first > last) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, first, last, 0) == 0) return;
#endif
  const long max = sysconf(_SC_OPEN_MAX);
  for (long fd = first; fd <= last && fd < max; fd++) close(int(fd));
}

bool ReadAll(int fd, void* buf, size_t n, int timeout_ms) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    struct pollfd pfd = {fd, POLLIN, 0};
    const int r = poll(&pfd, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    const ssize_t k = read(fd, p + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    got += size_t(k);
  }
  return true;
}

}  // namespace

Result<ProcessRef> SpawnDetached(const SpawnSpec& spec) {
  if (spec.binary.empty() || spec.binary[0] != '/') {
    return Status::InvalidArgument("device model binary \"" + spec.binary + "\" is not an absolute path");
  }
  if (spec.inherit_fd >= 0 && spec.inherit_fd < 3) {
    return Status::InvalidArgument("a descriptor below 3 cannot be handed on (it is stdin/out/err)");
  }
  std::vector<char*> argv, envp;
  argv.push_back(const_cast<char*>(spec.binary.c_str()));
  for (const std::string& a : spec.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  // Two report pipes: the middle process sends the device model's pid (or
  // -errno when it could not start it); the device model itself sends its
  // errno only if exec failed (exec success closes it, O_CLOEXEC: EOF).
  // Two, because the device model may fail before its pid was sent.
  int pid_pipe[2], err_pipe[2];
  if (pipe2(pid_pipe, O_CLOEXEC) != 0) return Status::FromErrno("pipe2", errno);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    close(pid_pipe[0]);
    close(pid_pipe[1]);
    return Status::FromErrno("pipe2", err);
  }
  // A process started with 0-2 closed gets pipes there, which the child's
  // dup2 onto 0-2 would clobber: move them above.
  for (int* fd : {&pid_pipe[0], &pid_pipe[1], &err_pipe[0], &err_pipe[1]}) {
    if (*fd > 2) continue;
    const int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    const int err = errno;
    close(*fd);
    *fd = moved;
    if (moved < 0) {
      for (int f : {pid_pipe[0], pid_pipe[1], err_pipe[0], err_pipe[1]}) {
        if (f >= 0) close(f);
      }
      return Status::FromErrno("moving a pipe above stdin/stdout/stderr", err);
    }
  }
  const pid_t child = fork();
  if (child < 0) {
    const int err = errno;
    for (int fd : {pid_pipe[0], pid_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    return Status::FromErrno("fork", err);
  }
  if (child == 0) {
    close(pid_pipe[0]);
    close(err_pipe[0]);
    pid_t grandchild = -1;
    if (setsid() >= 0) grandchild = fork();
    if (grandchild != 0) {
      // The middle process: say who runs, then go, so init adopts it.
      if (grandchild < 0) grandchild = -errno;
      (void)!write(pid_pipe[1], &grandchild, sizeof grandchild);
      _exit(0);
    }
    const int w = err_pipe[1];
    // Above 2, so the dup2s below always make a copy without O_CLOEXEC.
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0 || (in = fcntl(in, F_DUPFD_CLOEXEC, 3)) < 0) Fail(w, errno);
    int log = open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log < 0 || (log = fcntl(log, F_DUPFD_CLOEXEC, 3)) < 0) Fail(w, errno);
    if (dup2(in, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0) Fail(w, errno);
    // Nothing of the backup's leaks into the device model but the state
    // (and the error pipe, close-on-exec, until exec).
    unsigned keep_a = unsigned(w), keep_b = spec.inherit_fd >= 0 ? unsigned(spec.inherit_fd) : unsigned(w);
    if (keep_a > keep_b) std::swap(keep_a, keep_b);
    CloseFrom(3, keep_a - 1);
    CloseFrom(keep_a + 1, keep_b - 1);
    CloseFrom(keep_b + 1, ~0U);
    if (spec.inherit_fd >= 0) {
      const int flags = fcntl(spec.inherit_fd, F_GETFD);
      if (flags < 0 || fcntl(spec.inherit_fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) Fail(w, errno);
    }
    // Default dispositions (ours may ignore SIGPIPE) and no blocked signal.
    for (int sig = 1; sig < NSIG; sig++) {
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(spec.binary.c_str(), argv.data(), envp.data());
    Fail(w, errno);
  }
  close(pid_pipe[1]);
  close(err_pipe[1]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  pid_t pid = 0;
  int err = 0;
  const bool got_pid = ReadAll(pid_pipe[0], &pid, sizeof pid, 10000);
  // Held from before its exec completes: it cannot have been reaped and its
  // number reused yet unless it already failed (then the error says so).
  ProcessRef ref = got_pid && pid > 0 ? ProcessRef::Open(pid) : ProcessRef();
  // Blocks until exec (EOF) or its failure: bounded for a binary that hangs
  // in the kernel's exec.
  const bool got_err = got_pid && pid > 0 && ReadAll(err_pipe[0], &err, sizeof err, 10000);
  close(pid_pipe[0]);
  close(err_pipe[0]);
  if (!got_pid) return Status::IoError("starting " + spec.binary + ": the starter process died");
  if (pid < 0) return Status::FromErrno("starting " + spec.binary + " (setsid/fork)", -pid);
  if (got_err) return Status::FromErrno("starting the device model " + spec.binary, err);
  if (!ref.valid()) return Status::IoError("starting " + spec.binary + ": pid " + std::to_string(pid) + " exited at once");
  return ref;
}

ProcessRef ProcessRef::Open(pid_t pid) {
  ProcessRef ref;
  if (pid <= 0) return ref;
#ifdef SYS_pidfd_open
  const long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    ref.pid_ = pid;
    ref.fd_ = int(fd);
    // pidfd_open's descriptor is close-on-exec already.
    return ref;
  }
  // Only ESRCH says the process is gone. Anything else (no pidfd support,
  // a seccomp filter's EPERM, no descriptor left) must not make a running
  // device model look dead: fall back to the bare pid.
  if (errno == ESRCH) return ref;
#endif
  if (kill(pid, 0) == 0 || errno == EPERM) ref.pid_ = pid;
  return ref;
}

ProcessRef::ProcessRef(ProcessRef&& other) noexcept : pid_(other.pid_), fd_(other.fd_) {
  other.pid_ = -1;
  other.fd_ = -1;
}

ProcessRef& ProcessRef::operator=(ProcessRef&& other) noexcept {
  if (this != &other) {
    Reset();
    pid_ = other.pid_;
    fd_ = other.fd_;
    other.pid_ = -1;
    other.fd_ = -1;
  }
  return *this;
}

ProcessRef::~ProcessRef() { Reset(); }

void ProcessRef::Reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  pid_ = -1;
}

bool ProcessRef::Alive() const {
  if (pid_ <= 0) return false;
  if (fd_ >= 0) {
    // A pidfd polls readable once its process has exited.
    struct pollfd pfd = {fd_, POLLIN, 0};
    int r;
    while ((r = poll(&pfd, 1, 0)) < 0 && errno == EINTR) {
    }
    return r == 0;
  }
  return kill(pid_, 0) == 0 || errno == EPERM;
}

bool ProcessRef::Signal(int sig) const {
  if (pid_ <= 0) return false;
#ifdef SYS_pidfd_send_signal
  // An exited process not yet reaped (a zombie) still takes signals: gone.
  if (fd_ >= 0) {
    if (!Alive()) return false;
    if (syscall(SYS_pidfd_send_signal, fd_, sig, nullptr, 0) == 0) return true;
    if (errno != ENOSYS && errno != EPERM) return false;  // ESRCH: it exited meanwhile
    // A kernel with pidfd_open but a filter against pidfd_send_signal: the
    // pidfd still says it lives, so the pid is still its own.
  }
#endif
  return kill(pid_, sig) == 0;
}

void ProcessRef::Stop(std::chrono::milliseconds grace) const {
  if (!Alive()) return;
  (void)Signal(SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  while (Alive() && std::chrono::steady_clock::now() < until) {
    if (fd_ >= 0) {
      struct pollfd pfd = {fd_, POLLIN, 0};
      (void)poll(&pfd, 1, 20);  // wakes at the exit
    } else {
      usleep(20000);
    }
  }
  if (Alive()) (void)Signal(SIGKILL);
}

Result<pid_t> ParsePid(const std::string& text) {
  if (text.empty() || text.size() > 10 || text.find_first_not_of("0123456789") != std::string::npos) {
    return Status::InvalidArgument("not a pid: \"" + text.substr(0, 32) + "\"");
  }
  const unsigned long long n = std::stoull(text);
  if (n == 0 || n > 0x7fffffffULL) return Status::InvalidArgument("not a pid: " + text);
  return pid_t(n);
}

Result<std::vector<std::string>> ReadProcessArgv(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/cmdline";
  std::ifstream in(path, std::ios::binary);
  std::string raw;
  raw.resize(1 << 20);  // far above any libxl command line
  in.read(raw.data(), std::streamsize(raw.size()));
  raw.resize(size_t(in.gcount()));
  if (raw.empty()) return Status::IoError("reading " + path + ": process " + std::to_string(pid) + " is gone");
  std::vector<std::string> argv;
  size_t start = 0;
  while (start < raw.size()) {
    const size_t end = raw.find('\0', start);
    argv.push_back(raw.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return argv;
}

bool ArgvServesDomain(const std::vector<std::string>& argv, uint32_t domid) {
  for (size_t i = 0; i + 1 < argv.size(); i++) {
    if (argv[i] == "-xen-domid" && argv[i + 1] == std::to_string(domid)) return true;
  }
  return false;
}

}  // namespace romulus::devicemodel

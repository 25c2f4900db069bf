#include "disk/export_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

namespace romulus::disk {
namespace {

bool MakeAddr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr->sun_path) return false;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

}  // namespace

size_t MaxUnixSocketPath() { return sizeof(sockaddr_un::sun_path) - 1; }

Status CheckUnixSocketPath(const std::string& path, const std::string& what) {
  sockaddr_un addr;
  if (!MakeAddr(path, &addr)) {
    return Status::InvalidArgument(what + " path '" + path + "' is empty or longer than " +
                                   std::to_string(MaxUnixSocketPath()) + " bytes");
  }
  struct stat sb;
  if (lstat(path.c_str(), &sb) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(what + " " + path, errno);
  }
  if (!S_ISSOCK(sb.st_mode)) return Status::InvalidArgument(what + " path " + path + " exists and is not a socket");
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return Status::FromErrno(what + ": socket", errno);
  const bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(probe);
  if (live) return Status::InvalidArgument(what + " " + path + " is in use by a running process (another disk-export?)");
  return Status::Ok();
}

Result<int> ListenUnix(const std::string& path, const std::string& what, int backlog) {
  ROMULUS_RETURN_IF_ERROR(CheckUnixSocketPath(path, what));
  sockaddr_un addr;
  MakeAddr(path, &addr);
  struct stat sb;
  if (lstat(path.c_str(), &sb) == 0) {
    // Checked above: a socket nobody accepts on, left by a dead export.
    if (unlink(path.c_str()) != 0) return Status::FromErrno("removing stale " + what + " " + path, errno);
    spdlog::info("removed stale {} {}", what, path);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(what + ": socket", errno);
  // 0600 from the start: no window in which others could connect.
  mode_t old = umask(0177);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  umask(old);
  if (rc != 0) {
    close(fd);
    return Status::FromErrno("binding " + what + " " + path, err);
  }
  if (chmod(path.c_str(), 0600) != 0 || listen(fd, backlog) != 0) {
    err = errno;
    close(fd);
    unlink(path.c_str());
    return Status::FromErrno("listening on " + what + " " + path, err);
  }
  return fd;
}

namespace {

// One connect: blocking, or (with a deadline) non-blocking attempts until
// the listener's backlog has room or the deadline passed.
Result<int> ConnectUnixUntil(const std::string& path, const std::string& what,
                             const transport::Deadline* deadline) {
  sockaddr_un addr;
  if (!MakeAddr(path, &addr)) {
    return Status::InvalidArgument(what + " path '" + path + "' is empty or longer than " +
                                   std::to_string(MaxUnixSocketPath()) + " bytes");
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (deadline ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return Status::FromErrno(what + ": socket", errno);
  auto wait = std::chrono::milliseconds(1);
  while (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    if (err == EINTR) continue;
    // A Unix listener whose backlog is full makes a non-blocking connect
    // fail with EAGAIN (a blocking one would sleep until someone accepts).
    if (err == EAGAIN && deadline) {
      const auto now = transport::Clock::now();
      if (now < *deadline) {
        std::this_thread::sleep_for(std::min<transport::Clock::duration>(wait, *deadline - now));
        wait = std::min(wait * 2, std::chrono::milliseconds(16));
        continue;
      }
      close(fd);
      return Status::Timeout("connecting to " + what + " " + path +
                             ": its listener accepts nobody (backlog full: another client holds it?)");
    }
    close(fd);
    if (err == ENOENT || err == ECONNREFUSED) {
      return Status::Closed("nothing serves " + what + " " + path + " (" + std::strerror(err) +
                            "): is its process running?");
    }
    return Status::FromErrno("connecting to " + what + " " + path, err);
  }
  if (deadline) {
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
      const int err = errno;
      close(fd);
      return Status::FromErrno(what + ": making the socket blocking", err);
    }
  }
  return fd;
}

}  // namespace

Result<int> ConnectUnix(const std::string& path, const std::string& what) {
  return ConnectUnixUntil(path, what, nullptr);
}

Result<int> ConnectUnix(const std::string& path, const std::string& what, transport::Deadline deadline) {
  return ConnectUnixUntil(path, what, &deadline);
}

Status CheckPeer(int fd, const std::string& what) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Status::FromErrno(what + ": SO_PEERCRED", errno);
  }
  if (cred.uid == 0 || cred.uid == geteuid()) return Status::Ok();
  return Status::Unauthenticated(what + ": peer pid " + std::to_string(cred.pid) + " runs as uid " +
                                 std::to_string(cred.uid) + ", only uid " + std::to_string(geteuid()) +
                                 " or root may connect");
}

std::string PeerName(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return "unknown peer";
  return "pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid);
}

}  // namespace romulus::disk

#include "transport/fd_stream.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "transport/io_util.h"

namespace romulus::transport {
namespace {

using internal::IoErrno;
using internal::WaitFd;

class FdStream final : public Stream {
 public:
  FdStream(int rfd, int wfd, int wake, int rflags, int wflags, bool wsock, std::string name,
           bool own)
      : rfd_(rfd), wfd_(wfd), wake_(wake), rflags_(rflags), wflags_(wflags), wsock_(wsock),
        name_(std::move(name)), own_(own) {}
  ~FdStream() override { Close(); }

  Status WriteAll(std::span<const uint8_t> data, Deadline deadline) override {
    if (!write_status_.ok()) return write_status_;
    size_t done = 0;
    while (done < data.size()) {
      if (shut_.load()) return Fail(Status::Closed("stream shut down locally"));
      // send(MSG_NOSIGNAL) on sockets: EPIPE instead of a process-killing SIGPIPE.
      ssize_t n = wsock_ ? ::send(wfd_, data.data() + done, data.size() - done, MSG_NOSIGNAL)
                         : ::write(wfd_, data.data() + done, data.size() - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        Status st = WaitFd(wfd_, POLLOUT, wake_, deadline, "writing");
        if (!st.ok()) return Fail(st);
        continue;
      }
      return Fail(IoErrno("write to " + name_, n < 0 ? errno : EPIPE));
    }
    return Status::Ok();
  }

  Result<size_t> ReadSome(std::span<uint8_t> out, Deadline deadline) override {
    if (out.empty()) return size_t{0};
    for (;;) {
      if (shut_.load()) return Status::Closed("stream shut down locally");
      ssize_t n = ::read(rfd_, out.data(), out.size());
      if (n > 0) return static_cast<size_t>(n);
      if (n == 0) return Status::Closed("peer closed the connection");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return IoErrno("read from " + name_, errno);
      ROMULUS_RETURN_IF_ERROR(WaitFd(rfd_, POLLIN, wake_, deadline, "waiting for data"));
    }
  }

  void Shutdown() override {
    shut_.store(true);
    uint64_t one = 1;
    (void)!::write(wake_, &one, sizeof one);
  }

  void ShutdownWrite() override {
    if (wsock_) ::shutdown(wfd_, SHUT_WR);  // a socket half-closes; a pipe cannot without closing
  }

  void Close() override {
    if (closed_) return;
    closed_ = true;
    // Restore the blocking mode we found: stdio descriptors are shared with
    // whoever started us.
    if (rflags_ >= 0) (void)::fcntl(rfd_, F_SETFL, rflags_);
    if (wflags_ >= 0) (void)::fcntl(wfd_, F_SETFL, wflags_);
    if (own_) {
      ::close(rfd_);
      if (wfd_ != rfd_) ::close(wfd_);
    }
    ::close(wake_);
  }

  std::string Peer() const override { return name_; }

 private:
  Status Fail(Status st) {
    write_status_ = st;
    return st;
  }
  int rfd_, wfd_, wake_;
  int rflags_, wflags_;
  bool wsock_;
  std::string name_;
  bool own_;
  bool closed_ = false;
  std::atomic<bool> shut_{false};
  Status write_status_;  // writer thread only
};

}  // namespace

Result<std::unique_ptr<Stream>> OpenFdStream(int read_fd, int write_fd, std::string name,
                                             bool own_fds) {
  int rflags = ::fcntl(read_fd, F_GETFL);
  int wflags = ::fcntl(write_fd, F_GETFL);
  if (rflags < 0 || wflags < 0) {
    return Status::InvalidArgument("stream " + name + ": bad file descriptor");
  }
  struct stat st {};
  bool wsock = ::fstat(write_fd, &st) == 0 && S_ISSOCK(st.st_mode);
  if (!wsock) {
    // A write to a pipe whose reader is gone raises SIGPIPE, which would
    // kill the process instead of returning EPIPE (sockets use MSG_NOSIGNAL).
    ::signal(SIGPIPE, SIG_IGN);
  }
  ROMULUS_RETURN_IF_ERROR(internal::SetNonBlocking(read_fd, true));
  ROMULUS_RETURN_IF_ERROR(internal::SetNonBlocking(write_fd, true));
  int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) return Status::FromErrno("eventfd", errno);
  return std::unique_ptr<Stream>(
      new FdStream(read_fd, write_fd, wake, rflags, wflags, wsock, std::move(name), own_fds));
}

Result<std::unique_ptr<Stream>> OpenStdioStream() {
  return OpenFdStream(STDIN_FILENO, STDOUT_FILENO, "stdio", /*own_fds=*/false);
}

}  // namespace romulus::transport

#include "disk/nbd_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "transport/iovec_cursor.h"

namespace romulus::disk {
namespace {

timeval ToTimeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

bool Passed(transport::Deadline d) { return transport::Clock::now() >= d; }

// A reply is a header plus at most one data span: two parts, more is a bug.
constexpr size_t kMaxParts = 4;

}  // namespace

Result<std::unique_ptr<NbdSocket>> NbdSocket::Adopt(int fd, std::string name) {
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    Status st = Status::FromErrno(name + ": getsockopt(SO_TYPE)", errno);
    ::close(fd);
    return st;
  }
  if (type != SOCK_STREAM) {
    ::close(fd);
    return Status::InvalidArgument(name + ": not a stream socket");
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    Status st = Status::FromErrno(name + ": fcntl", errno);
    ::close(fd);
    return st;
  }
  return std::unique_ptr<NbdSocket>(new NbdSocket(fd, std::move(name)));
}

NbdSocket::~NbdSocket() { ::close(fd_); }

Status NbdSocket::SetTimeouts(std::chrono::milliseconds read, std::chrono::milliseconds write) {
  if (read.count() <= 0 || write.count() <= 0) {
    return Status::InvalidArgument(name_ + ": socket timeouts must be positive");
  }
  timeval r = ToTimeval(read), w = ToTimeval(write);
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof r) != 0 ||
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &w, sizeof w) != 0) {
    return Status::FromErrno(name_ + ": setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)", errno);
  }
  return Status::Ok();
}

Status NbdSocket::Errno(const char* what, int err) const {
  if (err == EAGAIN || err == EWOULDBLOCK) return Status::Timeout(name_ + ": timed out " + what);
  if (err == EPIPE || err == ECONNRESET || err == ENOTCONN || err == ESHUTDOWN) {
    return Status::Closed(name_ + ": " + what + ": " + std::strerror(err));
  }
  return Status::FromErrno(name_ + ": " + what, err);
}

Status NbdSocket::ReadExact(std::span<uint8_t> out, transport::Deadline give_up, size_t* got) {
  size_t done = 0;
  Status st;
  while (done < out.size()) {
    // Checked before every call, the first included: a caller that reads in
    // chunks under one give-up time (a refused payload discarded, the
    // handshake's options) is bounded by it, not by a timeout per chunk.
    if (Passed(give_up)) {
      st = Status::Timeout(name_ + ": timed out reading (" + std::to_string(done) + " of " +
                           std::to_string(out.size()) + " bytes)");
      break;
    }
    // MSG_WAITALL: the kernel collects the page-sized pieces a WRITE payload
    // arrives in and returns once all are there (or the timeout, a signal, a
    // close or Shutdown cuts it short). On a UNIX socket the timeout counts
    // for the whole call, not per piece.
    ssize_t n = ::recv(fd_, out.data() + done, out.size() - done, MSG_WAITALL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      st = Status::Closed(name_ + ": the connection was closed");
      break;
    }
    if (errno == EINTR) continue;
    st = Errno("reading", errno);
    break;
  }
  if (got) *got = done;
  return st;
}

Status NbdSocket::WriteAll(std::span<const std::span<const uint8_t>> parts, transport::Deadline give_up) {
  transport::IovecCursor<kMaxParts> left;
  if (!left.Init(parts)) return Status::Internal(name_ + ": too many parts in one write");
  while (!left.done()) {
    // Non-blocking sends and a poll bounded by what is left: a blocking
    // send's SO_SNDTIMEO restarts for every socket buffer it waits for, so a
    // client reading a large READ reply slowly could stretch one call far
    // past give_up. A client that keeps up costs one sendmsg.
    msghdr msg = left.Message();
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return Errno("writing", errno);
      const int wait_ms = transport::PollTimeoutMs(give_up);
      if (wait_ms == 0) return Status::Timeout(name_ + ": timed out writing");
      pollfd pfd{fd_, POLLOUT, 0};
      if (::poll(&pfd, 1, wait_ms) < 0 && errno != EINTR) return Status::FromErrno(name_ + ": poll", errno);
      continue;  // ready, timed out (caught above next time) or hung up (sendmsg says which)
    }
    left.Advance(static_cast<size_t>(n));
  }
  return Status::Ok();
}

void NbdSocket::Shutdown() { ::shutdown(fd_, SHUT_RDWR); }

}  // namespace romulus::disk

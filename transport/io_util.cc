#include "transport/io_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace romulus::transport {

int PollTimeoutMs(Deadline deadline, int max_ms) {
  if (deadline == Deadline::max()) return -1;
  auto now = Clock::now();
  if (deadline <= now) return 0;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return left > max_ms ? max_ms : static_cast<int>(left);
}

Status Stream::WriteAllV(std::span<const std::span<const uint8_t>> parts, Deadline deadline) {
  for (auto part : parts) {
    if (part.empty()) continue;
    ROMULUS_RETURN_IF_ERROR(WriteAll(part, deadline));
  }
  return Status::Ok();
}

Status Stream::ReadExact(std::span<uint8_t> out, Deadline deadline, size_t* got) {
  size_t done = 0;
  Status st;
  while (done < out.size()) {
    auto n = ReadSome(out.subspan(done), deadline);
    if (!n.ok()) {
      st = n.status();
      break;
    }
    done += *n;
  }
  if (got) *got = done;
  return st;
}

namespace internal {

Status WaitFd(int fd, short events, int wake_fd, Deadline deadline, const char* what) {
  for (;;) {
    pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
    int nfds = wake_fd >= 0 ? 2 : 1;
    int timeout = PollTimeoutMs(deadline);
    int r = ::poll(fds, nfds, timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(std::string("poll while ") + what, errno);
    }
    if (nfds == 2 && (fds[1].revents & POLLIN)) return Status::Closed("stream shut down locally");
    if (r > 0 && fds[0].revents) return Status::Ok();
    if (Clock::now() >= deadline) return Status::Timeout(std::string("timed out ") + what);
  }
}

Status IoErrno(const std::string& what, int err) {
  if (err == ECONNRESET || err == EPIPE || err == ENOTCONN || err == ESHUTDOWN) {
    return Status::Closed(what + ": " + std::strerror(err));
  }
  return Status::FromErrno(what, err);
}

Status SetNonBlocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return Status::FromErrno("fcntl(F_GETFL)", errno);
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want != flags && ::fcntl(fd, F_SETFL, want) < 0) {
    return Status::FromErrno("fcntl(F_SETFL)", errno);
  }
  return Status::Ok();
}

Status TuneTcpSocket(int fd) {
  int one = 1;
  // Acks and heartbeats are tiny and latency-critical; big frames are
  // written in large chunks anyway, so Nagle only adds delay.
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
    return Status::FromErrno("setsockopt(TCP_NODELAY)", errno);
  }
  // Backstop for half-open connections; protocol heartbeats are the primary
  // failure detector (PROTOCOL.md §6).
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0) {
    return Status::FromErrno("setsockopt(SO_KEEPALIVE)", errno);
  }
  int idle = 10, intvl = 5, cnt = 3;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) (void)::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  return SetNonBlocking(fd, true);
}

std::string SockaddrToString(const sockaddr* sa, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "unknown";
}

std::string PeerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "unknown";
  return SockaddrToString(reinterpret_cast<sockaddr*>(&ss), len);
}

Result<size_t> SendOnce(int fd, const void* data, size_t len) {
  for (;;) {
    ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
    return IoErrno("send", errno);
  }
}

Status SendAll(int fd, const uint8_t* data, size_t len, int wake_fd, Deadline deadline) {
  size_t done = 0;
  while (done < len) {
    auto n = SendOnce(fd, data + done, len - done);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      ROMULUS_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, wake_fd, deadline, "writing"));
      continue;
    }
    done += *n;
  }
  return Status::Ok();
}

}  // namespace internal
}  // namespace romulus::transport

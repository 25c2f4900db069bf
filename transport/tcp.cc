#include "transport/tcp.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "transport/io_util.h"
#include "transport/iovec_cursor.h"
#include "transport/resolve.h"
#include "transport/tcp_stream.h"

namespace romulus::transport {
namespace internal {
namespace {

class TcpStream final : public Stream {
 public:
  TcpStream(int fd, std::string peer) : fd_(fd), peer_("tcp " + std::move(peer)) {}
  ~TcpStream() override { Close(); }

  Status WriteAll(std::span<const uint8_t> data, Deadline deadline) override {
    const std::span<const uint8_t> parts[1] = {data};
    return WriteAllV(parts, deadline);
  }

  // One sendmsg for header + payload; loops on partial writes.
  Status WriteAllV(std::span<const std::span<const uint8_t>> parts, Deadline deadline) override {
    if (write_broken_) return Status::Closed("stream unusable after an earlier write failure");
    IovecCursor<8> left;
    if (!left.Init(parts)) return Status::Internal("too many parts in WriteAllV");
    while (!left.done()) {
      msghdr msg = left.Message();
      ssize_t w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          Status st = WaitFd(fd_, POLLOUT, -1, deadline, "writing");
          if (!st.ok()) return Broken(st);
          continue;
        }
        return Broken(Shut() ? Status::Closed("stream shut down locally")
                             : IoErrno("send to " + peer_, errno));
      }
      left.Advance(static_cast<size_t>(w));
    }
    return Status::Ok();
  }

  Result<size_t> ReadSome(std::span<uint8_t> out, Deadline deadline) override {
    if (out.empty()) return size_t{0};
    for (;;) {
      ssize_t r = ::recv(fd_, out.data(), out.size(), 0);
      if (r > 0) return static_cast<size_t>(r);
      if (r == 0) {
        return Shut() ? Status::Closed("stream shut down locally")
                      : Status::Closed("peer closed the connection");
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return IoErrno("recv from " + peer_, errno);
      ROMULUS_RETURN_IF_ERROR(WaitFd(fd_, POLLIN, -1, deadline, "waiting for data"));
    }
  }

  void Shutdown() override {
    shut_.store(true);
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);  // wakes pollers in both directions
  }
  void ShutdownWrite() override {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);  // FIN after the queued data; reads go on
  }
  void Close() override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::string Peer() const override { return peer_; }

 private:
  bool Shut() const { return shut_.load(); }
  Status Broken(Status st) {
    write_broken_ = true;
    return st;
  }
  int fd_;
  std::string peer_;
  std::atomic<bool> shut_{false};
  bool write_broken_ = false;  // writer thread only
};

}  // namespace

std::unique_ptr<Stream> NewTcpStream(int fd, std::string peer) {
  return std::make_unique<TcpStream>(fd, std::move(peer));
}

}  // namespace internal

using internal::WaitFd;

Result<HostPort> ParseHostPort(const std::string& text) {
  HostPort hp;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::InvalidArgument("bad address '" + text + "' (expected [v6addr]:port)");
    }
    hp.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      return Status::InvalidArgument("bad address '" + text +
                                     "' (expected host:port, [v6addr]:port or :port)");
    }
    hp.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535) {
    return Status::InvalidArgument("bad port in '" + text + "'");
  }
  hp.port = static_cast<uint16_t>(std::stoul(port));
  if (hp.host == "*") hp.host.clear();
  return hp;
}

namespace {

// Outgoing side: tunes the socket and runs the TLS handshake inline (the
// Listener runs its handshakes concurrently instead, see listener.cc).
Result<std::unique_ptr<Stream>> Finish(int fd, const SecurityContext& sec, Deadline deadline) {
  Status st = internal::TuneTcpSocket(fd);
  if (!st.ok()) {
    ::close(fd);
    return st;
  }
  std::string peer = internal::PeerAddress(fd);
  if (!sec.tls()) return internal::NewTcpStream(fd, peer);
  return internal::NewTlsStream(fd, peer, sec, /*server=*/false, deadline);
}

}  // namespace

Result<std::unique_ptr<Stream>> Connect(const std::string& host, uint16_t port,
                                        std::shared_ptr<const SecurityContext> sec,
                                        std::chrono::milliseconds timeout) {
  if (!sec) return Status::InvalidArgument("Connect without a security context");
  Deadline deadline = DeadlineIn(timeout);
  auto addrs = internal::ResolveWithin(host, port, timeout);
  if (!addrs.ok()) return addrs.status();
  Status last = Status::IoError("no address for '" + host + "'");
  for (const internal::ResolvedAddr& ai : *addrs) {
    const sockaddr* sa = reinterpret_cast<const sockaddr*>(&ai.addr);
    int fd = ::socket(ai.family, ai.socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.protocol);
    if (fd < 0) {
      last = Status::FromErrno("socket", errno);
      continue;
    }
    std::string where = internal::SockaddrToString(sa, ai.len);
    int r = ::connect(fd, sa, ai.len);
    if (r < 0 && errno == EINPROGRESS) {
      Status st = WaitFd(fd, POLLOUT, -1, deadline, "connecting");
      if (!st.ok()) {
        ::close(fd);
        last = Status::Timeout("connecting to " + where + ": timed out");
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      r = err == 0 ? 0 : -1;
      errno = err;
    }
    if (r < 0) {
      last = Status::FromErrno("connecting to " + where, errno);
      ::close(fd);
      continue;
    }
    return Finish(fd, *sec, deadline);
  }
  return last;
}

}  // namespace romulus::transport

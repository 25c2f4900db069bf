#include "transport/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "transport/io_util.h"

namespace romulus::transport {

Status SendWithFd(int socket_fd, std::span<const uint8_t> bytes, int pass_fd, Deadline deadline,
                  const std::string& what) {
  if (bytes.empty()) return Status::InvalidArgument(what + ": a descriptor needs at least one byte to travel with");
  if (pass_fd < 0) return Status::InvalidArgument(what + ": no descriptor to pass");
  // The first sendmsg that moves any byte carries the descriptor; retried
  // (with the descriptor) only while nothing has left.
  for (;;) {
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    const ssize_t n = ::sendmsg(socket_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      const size_t sent = static_cast<size_t>(n);
      if (sent == bytes.size()) return Status::Ok();
      return internal::SendAll(socket_fd, bytes.data() + sent, bytes.size() - sent, -1, deadline)
          .With(what);
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const std::string waiting = "waiting to send to " + what;
      ROMULUS_RETURN_IF_ERROR(internal::WaitFd(socket_fd, POLLOUT, -1, deadline, waiting.c_str()));
      continue;
    }
    return internal::IoErrno("passing a descriptor to " + what, n < 0 ? errno : EPIPE);
  }
}

}  // namespace romulus::transport

// Test helper of tests/devicemodel: the receiving side of
// transport::SendWithFd, as a QMP server would read a command that carries
// descriptors.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstring>
#include <vector>

namespace romulus::devicemodel {
namespace {

// One recvmsg on `fd` into buf; the descriptors that came with the bytes
// are appended to *fds (close-on-exec). Returns what recvmsg returned.
inline ssize_t RecvWithFds(int fd, char* buf, size_t len, std::vector<int>* fds) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) return n;
  for (cmsghdr* h = CMSG_FIRSTHDR(&msg); h != nullptr; h = CMSG_NXTHDR(&msg, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
    for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(h) + i * sizeof(int), sizeof passed);
      fds->push_back(passed);
    }
  }
  return n;
}

}  // namespace
}  // namespace romulus::devicemodel

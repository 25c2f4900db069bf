// Internal to transport/: poll-with-deadline and socket helpers shared by the
// TCP, TLS and fd streams. Not part of the transport API.
#pragma once

#include <sys/socket.h>

#include <string>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::transport::internal {

// Waits until fd is ready for `events` (POLLIN/POLLOUT) or the deadline
// passes (Timeout). If wake_fd >= 0 and becomes readable, returns Closed
// (a Shutdown from another thread). Readiness includes error/hangup: the
// following read/write call reports the actual condition.
Status WaitFd(int fd, short events, int wake_fd, Deadline deadline, const char* what);

// Maps a failed read/write errno to a Status: resets and broken pipes are
// Closed (the peer went away), the rest IoError.
Status IoErrno(const std::string& what, int err);

Status SetNonBlocking(int fd, bool on);
// TCP_NODELAY + SO_KEEPALIVE (with short-ish probes) + CLOEXEC.
Status TuneTcpSocket(int fd);
// "127.0.0.1:7000" / "[::1]:7000" for a connected socket's peer or local end.
std::string SockaddrToString(const sockaddr* sa, socklen_t len);
std::string PeerAddress(int fd);

// Sends with MSG_NOSIGNAL, one attempt: bytes sent, 0 on EAGAIN, or error.
Result<size_t> SendOnce(int fd, const void* data, size_t len);
// Sends all of data on a non-blocking socket, waiting with the deadline.
Status SendAll(int fd, const uint8_t* data, size_t len, int wake_fd, Deadline deadline);

}  // namespace romulus::transport::internal

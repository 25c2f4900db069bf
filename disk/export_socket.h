// Local UNIX stream sockets of a disk export (docs/DISK.md §8a): the NBD
// socket the kernel client connects to and the tap socket of the replicator.
// Both are created mode 0600 (no window in which another user could
// connect), a stale file left by a dead export is replaced, a live one is
// refused, and every accepted peer is checked with SO_PEERCRED.
#pragma once

#include <string>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::disk {

// The longest path a sockaddr_un holds (107 bytes on Linux).
size_t MaxUnixSocketPath();

// Checks `path` can be bound: fits a sockaddr_un, and is absent, or a stale
// socket file (nobody accepts on it), or — Busy, reported as
// InvalidArgument — a socket a live process serves. Not a socket:
// InvalidArgument. `what` names the socket in messages ("tap socket").
Status CheckUnixSocketPath(const std::string& path, const std::string& what);

// Binds and listens on `path` (mode 0600, close-on-exec), replacing a stale
// socket file. Returns the listening fd.
Result<int> ListenUnix(const std::string& path, const std::string& what, int backlog = 8);

// Connects to `path` (close-on-exec, blocking). IoError/Closed naming the path.
Result<int> ConnectUnix(const std::string& path, const std::string& what);
// The same, given up at `deadline` (Timeout naming the path) when the
// listener's backlog is full: a peer that accepts nobody (QEMU's QMP socket
// while it serves another client has a backlog of one) must not block a
// caller that holds a guest paused. The descriptor returned is blocking.
Result<int> ConnectUnix(const std::string& path, const std::string& what, transport::Deadline deadline);

// The connected peer's credentials are acceptable: the same uid as this
// process, or root. Unauthenticated otherwise (with its uid and pid).
Status CheckPeer(int fd, const std::string& what);
// "pid 1234 uid 0" for log lines, or "unknown peer".
std::string PeerName(int fd);

}  // namespace romulus::disk

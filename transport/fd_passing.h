// Passing a file descriptor over a Unix stream socket (SCM_RIGHTS) together
// with bytes: the receiver gets the descriptor with the first byte. QEMU's
// QMP `add-fd` takes the descriptor that arrived with the command's own
// text (docs/DEVICE-MODEL.md §6), which is why the two travel together.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::transport {

// Sends all of `bytes` on `socket_fd` (REQUIRES: non-blocking, as an
// FdStream leaves it: the deadline is kept by polling), `pass_fd` attached
// to the first byte that leaves; the rest follows as plain bytes, waiting
// for room until `deadline` (Timeout). A peer that went away is Closed; a
// socket that cannot carry descriptors (not AF_UNIX) is the kernel's error.
// `bytes` must not be empty: a descriptor needs at least one byte to ride on.
Status SendWithFd(int socket_fd, std::span<const uint8_t> bytes, int pass_fd, Deadline deadline,
                  const std::string& what);

}  // namespace romulus::transport

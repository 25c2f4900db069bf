// A Stream over a pair of file descriptors: stdin/stdout for the ssh
// transport (`ssh backup romulus restore --stdio`), or a socketpair/pipes in
// tests. Plaintext: use it only inside an authenticated, encrypted pipe.
// The descriptors are switched to non-blocking mode (restored on Close) so
// deadlines work; Shutdown wakes blocked calls through an eventfd.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::transport {

// Takes ownership of the fds if own_fds (closes them on Close()).
Result<std::unique_ptr<Stream>> OpenFdStream(int read_fd, int write_fd, std::string name,
                                             bool own_fds);
// fd 0 / fd 1, not owned. Logging must go to stderr.
Result<std::unique_ptr<Stream>> OpenStdioStream();

}  // namespace romulus::transport

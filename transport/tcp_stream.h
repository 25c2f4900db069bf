// Internal to transport/: the concrete socket streams behind Connect() and
// Listener::Accept().
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "transport/security.h"
#include "transport/stream.h"

namespace romulus::transport::internal {

// Plain TCP over a connected, tuned, non-blocking socket (takes ownership).
std::unique_ptr<Stream> NewTcpStream(int fd, std::string peer);

// Runs the TLS 1.3 handshake on a connected non-blocking socket (takes
// ownership; closes it on failure) and returns the encrypted stream.
// Unauthenticated on any handshake failure, Timeout if the peer is silent.
Result<std::unique_ptr<Stream>> NewTlsStream(int fd, std::string peer, const SecurityContext& sec,
                                             bool server, Deadline deadline);

}  // namespace romulus::transport::internal

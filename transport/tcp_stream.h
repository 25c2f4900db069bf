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

// A TLS 1.3 handshake in progress on a connected non-blocking socket,
// advanced without ever blocking by whoever polls fd(): the Listener's
// acceptor runs many of these at once, NewTlsStream one to completion.
class TlsHandshake {
 public:
  virtual ~TlsHandshake() = default;  // closes the socket unless released
  virtual int fd() const = 0;
  virtual std::string Peer() const = 0;
  // Advances as far as possible: 0 once complete, else the poll events
  // (POLLIN/POLLOUT) to wait for. Unauthenticated on any handshake failure.
  virtual Result<short> Step() = 0;
  // After Step() returned 0: the established stream.
  virtual std::unique_ptr<Stream> Release() = 0;
  // True once the peer has proven it holds the pre-shared key (PSK mode,
  // server side: its ClientHello's binder verified), before the handshake
  // completes. Always false in certificate mode.
  virtual bool KeyProven() const = 0;
};

// Takes ownership of fd (closes it on failure).
Result<std::unique_ptr<TlsHandshake>> StartTls(int fd, std::string peer, const SecurityContext& sec,
                                               bool server);

// Runs the TLS 1.3 handshake to completion (takes ownership of fd; closes it
// on failure) and returns the encrypted stream. Unauthenticated on any
// handshake failure, Timeout if the peer is silent past the deadline.
// Logs a failure (the outgoing side's only report of it).
Result<std::unique_ptr<Stream>> NewTlsStream(int fd, std::string peer, const SecurityContext& sec,
                                             bool server, Deadline deadline);

// " (is the peer using the same key file ...?)" for an unexplained
// Unauthenticated handshake failure, "" otherwise.
std::string HandshakeHint(const Status& st, const SecurityContext& sec);

}  // namespace romulus::transport::internal

// TCP endpoints: Listener (backup side) and Connect (primary side). With a
// TLS SecurityContext both perform the TLS 1.3 handshake before returning a
// Stream, bounded by Security::handshake_timeout_ms, so an unauthenticated
// or silent peer costs a socket and a log line, nothing more.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "transport/security.h"
#include "transport/stream.h"

namespace romulus::transport {

struct HostPort {
  std::string host;  // "10.0.0.2", "::1", "backup.example", "" / "*" = any
  uint16_t port = 0;
};
// "host:port", "[v6addr]:port", ":port". InvalidArgument on anything else.
Result<HostPort> ParseHostPort(const std::string& text);

// Connects to host:port (resolving it; tries each address), sets
// TCP_NODELAY + SO_KEEPALIVE, then runs the TLS handshake if sec is TLS.
// Timeout covers connect and handshake together.
//   Unauthenticated  the TLS handshake failed (wrong key, bad certificate,
//                    peer not speaking TLS);
//   Timeout / IoError (connection refused, unreachable).
Result<std::unique_ptr<Stream>> Connect(const std::string& host, uint16_t port,
                                        std::shared_ptr<const SecurityContext> sec,
                                        std::chrono::milliseconds timeout);

class Listener {
 public:
  // Binds and listens (SO_REUSEADDR). Port 0 picks a free port (see port()).
  static Result<std::unique_ptr<Listener>> Bind(const std::string& addr, uint16_t port,
                                                std::shared_ptr<const SecurityContext> sec);
  ~Listener();

  // Waits for one connection until the deadline (Timeout), then completes
  // the TLS handshake within the context's handshake timeout. A peer that
  // fails the handshake is logged and dropped: Unauthenticated (Timeout if
  // it stayed silent); call Accept again to keep serving.
  Result<std::unique_ptr<Stream>> Accept(Deadline deadline);

  uint16_t port() const { return port_; }
  std::string address() const;  // "0.0.0.0:7000"
  // Wakes a blocked Accept (returns Closed). Thread-safe.
  void Shutdown();

 private:
  Listener(int fd, int wake_fd, uint16_t port, std::string addr,
           std::shared_ptr<const SecurityContext> sec);
  int fd_;
  int wake_fd_;  // eventfd polled with the listening socket
  uint16_t port_;
  std::string addr_;
  std::shared_ptr<const SecurityContext> sec_;
};

}  // namespace romulus::transport

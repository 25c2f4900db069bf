// TCP endpoints: Listener (backup side) and Connect (primary side). With a
// TLS SecurityContext both perform the TLS 1.3 handshake before returning a
// Stream. The Listener runs its handshakes concurrently, each under a short
// pre-authentication deadline, with a bounded number in progress, so
// unauthenticated or silent peers cost a socket for a moment and a
// rate-limited log line, never the backup's attention (PROTOCOL.md §1.6).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstddef>
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
// Timeout covers name resolution, connect and handshake together.
//   Unauthenticated  the TLS handshake failed (wrong key, bad certificate,
//                    peer not speaking TLS);
//   Timeout          "resolving 'HOST' took longer than N ms", or connect or
//                    handshake timed out;
//   IoError          "cannot resolve 'HOST': ...", connection refused, unreachable.
Result<std::unique_ptr<Stream>> Connect(const std::string& host, uint16_t port,
                                        std::shared_ptr<const SecurityContext> sec,
                                        std::chrono::milliseconds timeout);

// How a Listener treats connections before they authenticate.
struct ListenerOptions {
  // Pre-authentication deadline: an incoming connection must complete its
  // TLS handshake this long after it was accepted, or it is dropped.
  std::chrono::milliseconds handshake_timeout{2000};
  // Handshakes in progress at once. A connection arriving when this many are
  // pending evicts the oldest of them (see listener.cc for why).
  size_t max_pending = 64;
  // Authenticated streams (any stream with --insecure) waiting for Accept();
  // when full, the oldest is closed to make room for the newest.
  size_t max_ready = 8;
  // Dropped connections are logged: the first in full, then one summary at
  // most this often.
  std::chrono::milliseconds log_interval{10000};
  int backlog = 128;  // listen(2) backlog
};

// Counters, for status output and tests.
struct ListenerStats {
  uint64_t accepted = 0;       // TCP connections accepted
  uint64_t authenticated = 0;  // handed to the ready queue (handshake done, or --insecure)
  uint64_t dropped = 0;        // closed before authenticating: failed, timed out or evicted
  uint64_t evicted = 0;        // of those, evicted because max_pending were in progress
  uint64_t ready_dropped = 0;  // authenticated streams closed because nobody accepted them
  size_t pending = 0;          // handshakes in progress now
  size_t pending_high_water = 0;  // the most ever in progress at once (<= max_pending)
  size_t ready = 0;            // streams waiting for Accept() now
  // The latest drop: Unauthenticated (handshake failed or evicted) or
  // Timeout (no handshake within the deadline), "ADDR: reason"; Ok if none.
  Status last_drop;
};

class Listener {
 public:
  // Binds and listens (SO_REUSEADDR), then starts the acceptor thread, which
  // accepts every connection at once and runs TLS handshakes concurrently.
  // Port 0 picks a free port (see port()).
  static Result<std::unique_ptr<Listener>> Bind(const std::string& addr, uint16_t port,
                                                std::shared_ptr<const SecurityContext> sec,
                                                ListenerOptions options = {});
  // Stops and joins the acceptor; closes every socket it holds.
  ~Listener();

  // Returns the next authenticated stream (with --insecure: the next
  // connection), waiting until the deadline: Timeout "timed out waiting for a
  // connection". Peers that fail or stall in the handshake never come out
  // of here; they are dropped and logged (rate-limited) by the acceptor.
  // Closed after Shutdown().
  Result<std::unique_ptr<Stream>> Accept(Deadline deadline);

  uint16_t port() const { return port_; }
  std::string address() const { return addr_; }  // "0.0.0.0:7000"
  // Wakes a blocked Accept (returns Closed, and so does every later call)
  // and stops accepting. Thread-safe.
  void Shutdown();
  ListenerStats stats() const;

  struct State;

 private:
  Listener(std::unique_ptr<State> state, uint16_t port, std::string addr);
  std::unique_ptr<State> state_;
  uint16_t port_;
  std::string addr_;
};

}  // namespace romulus::transport

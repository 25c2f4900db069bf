// Stream: a full-duplex byte stream with deadlines, the only thing the
// protocol layer knows about the network. Implementations: plain TCP
// (--insecure), TLS 1.3 over TCP (tls.h) and an fd pair (stdio, fd_stream.h).
//
// Concurrency contract (docs/PROTOCOL.md §1.5): one thread may be inside a
// read call while another is inside a write call on the same Stream;
// Shutdown() may be called from any thread at any time and wakes both.
// Two concurrent readers or two concurrent writers are not allowed
// (FrameWriter serialises writers).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"

namespace romulus::transport {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline NoDeadline() { return Deadline::max(); }
inline Deadline DeadlineIn(std::chrono::milliseconds d) { return Clock::now() + d; }
// Milliseconds left until `deadline` for poll(): -1 for NoDeadline, 0 if past,
// capped at max_ms.
int PollTimeoutMs(Deadline deadline, int max_ms = 1 << 30);

class Stream {
 public:
  virtual ~Stream() = default;
  Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Writes all of data, or fails. Timeout if the deadline passes first; the
  // stream is then unusable for writing (a partial write cannot be undone).
  // Closed if the peer is gone or Shutdown() was called.
  virtual Status WriteAll(std::span<const uint8_t> data, Deadline deadline) = 0;
  // Writes parts back to back as one logical write (plain TCP: one sendmsg).
  virtual Status WriteAllV(std::span<const std::span<const uint8_t>> parts, Deadline deadline);

  // Reads at least 1 and at most out.size() bytes. Closed on EOF (clean or
  // not) and after Shutdown(); Timeout if nothing arrived by the deadline
  // (the stream stays usable).
  virtual Result<size_t> ReadSome(std::span<uint8_t> out, Deadline deadline) = 0;
  // Reads exactly out.size() bytes. *got (optional) counts bytes read even on
  // failure, so a caller can resume after a Timeout.
  Status ReadExact(std::span<uint8_t> out, Deadline deadline, size_t* got = nullptr);

  // Stops all I/O in both directions and wakes any blocked reader/writer
  // (they return Closed). Thread-safe, idempotent. Sends TLS close_notify
  // when it can do so without blocking.
  virtual void Shutdown() = 0;
  // Half-close: ends our direction only (the peer reads EOF after what was
  // written; TLS sends close_notify) while reads go on, so the peer's last
  // words are read rather than answered with a reset. Call with no write in
  // progress. Streams that cannot half-close (pipes, stdio) do nothing: the
  // peer then sees EOF when the stream is shut down or closed.
  virtual void ShutdownWrite() {}
  // Releases the descriptors. Not concurrent with other calls.
  virtual void Close() = 0;

  // "tls-psk 10.0.0.2:7000", "tcp 127.0.0.1:53412", "stdio" — for log lines.
  virtual std::string Peer() const = 0;
};

}  // namespace romulus::transport

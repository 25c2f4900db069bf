// The NBD export's end of its client connection: a local stream socket in
// blocking mode.
//
// Why not a transport::Stream: Linux's NBD client sends a WRITE's payload one
// bio segment at a time — a page, for O_DIRECT from user memory — so a 1 MiB
// write reaches the server as 256 socket buffers. A non-blocking reader wakes,
// reads what has arrived, polls and wakes again, up to 256 times per request,
// each time through the scheduler; under emulation (the Xen lab) that cost the
// sequential-write benchmark most of its throughput (docs/benchmarks.md).
// recv(MSG_WAITALL) on a blocking socket takes the whole payload in one system
// call and one wake-up per arrival inside the kernel. Bounded waits come from
// SO_RCVTIMEO/SO_SNDTIMEO (set per phase, not per call: no extra system call on
// the hot path) plus a give-up time checked between calls; Shutdown() from
// another thread wakes a blocked call.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::disk {

class NbdSocket {
 public:
  // Takes ownership of `fd`, a connected stream socket (closed on failure
  // too), and puts it in blocking mode.
  static Result<std::unique_ptr<NbdSocket>> Adopt(int fd, std::string name);
  ~NbdSocket();
  NbdSocket(const NbdSocket&) = delete;
  NbdSocket& operator=(const NbdSocket&) = delete;

  // Bounds every later blocking read: one that gets nothing for `read`
  // fails with Timeout. (`write` bounds a blocking send, which WriteAll does
  // not make; set for any other use of the fd.) Positive.
  Status SetTimeouts(std::chrono::milliseconds read, std::chrono::milliseconds write);

  // Exactly out.size() bytes. Closed: the peer closed or Shutdown(); Timeout:
  // the read timeout passed inside a call, or `give_up` had passed before a
  // call (checked before each, the first included), so a sequence of reads
  // under one give_up lasts at most give_up plus one read timeout. *got (if
  // given) is how many bytes arrived either way.
  Status ReadExact(std::span<uint8_t> out, transport::Deadline give_up, size_t* got = nullptr);

  // All of `parts`, in order, as one stream of bytes (one sendmsg when the
  // socket has room), by `give_up` at the latest (poll, not SO_SNDTIMEO).
  // Errors as ReadExact's.
  Status WriteAll(std::span<const std::span<const uint8_t>> parts, transport::Deadline give_up);

  // From any thread, while the owner may be blocked in a call: that call and
  // every later one return Closed. The fd stays open until destruction.
  void Shutdown();

  const std::string& name() const { return name_; }

 private:
  NbdSocket(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  Status Errno(const char* what, int err) const;

  int fd_;
  std::string name_;
};

}  // namespace romulus::disk

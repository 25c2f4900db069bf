// FrameWriter and FrameReader: frames over a transport::Stream.
//
// FrameWriter is shared by the threads that send (epoch + heartbeat): each
// call writes whole frames under one mutex, so frames never interleave. The
// first write error is sticky: after a timeout or EOF mid-frame the stream is
// unusable and every later call returns the same status.
//
// FrameReader is owned by the single reading thread. It validates each
// header before reserving any memory (PROTOCOL.md §2.2), reads the payload
// into the caller's ReusableBuffer (capacity kept across frames: no
// allocation in steady state), verifies it and returns a view of it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "buffer/reusable_buffer.h"
#include "common/status.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "transport/stream.h"

namespace romulus::protocol {

class FrameWriter {
 public:
  // write_timeout bounds each call of the deadline-less overloads.
  explicit FrameWriter(transport::Stream* stream,
                       std::chrono::milliseconds write_timeout = std::chrono::seconds(10));

  // One frame. payload.size() must be within the type's bound (OutOfRange
  // otherwise, nothing written). Small payloads are copied next to the
  // header so the frame costs one write; large ones go out with writev.
  Status Write(FrameType type, uint64_t epoch, std::span<const uint8_t> payload,
               uint8_t flags = 0);
  Status Write(FrameType type, uint64_t epoch, std::span<const uint8_t> payload, uint8_t flags,
               transport::Deadline deadline);

  // A buffer holding one or more complete frames built with
  // EncodeFrameHeader (the engine's OutBuffer flush). The frame headers are
  // walked first (Internal if malformed: a local bug must not reach the
  // wire), then the whole buffer is written in one call under the mutex.
  Status WriteFrames(std::span<const uint8_t> frames);
  Status WriteFrames(std::span<const uint8_t> frames, transport::Deadline deadline);

  // Encodes a control message (Hello, Ack, Heartbeat, ...) and writes it.
  template <typename Msg>
  Status Send(const Msg& msg, uint64_t epoch) {
    return Send(msg, epoch, transport::DeadlineIn(write_timeout_));
  }
  template <typename Msg>
  Status Send(const Msg& msg, uint64_t epoch, transport::Deadline deadline) {
    std::lock_guard<std::mutex> lock(mu_);
    ROMULUS_RETURN_IF_ERROR(broken_);
    Status st = msg.EncodeTo(&scratch_);
    if (!st.ok()) return st;
    return WriteLocked(Msg::kType, epoch, scratch_, 0, deadline);
  }

  // Frames and bytes (headers included) written successfully so far.
  uint64_t frames_written() const { return frames_.load(std::memory_order_relaxed); }
  uint64_t bytes_written() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  Status WriteLocked(FrameType type, uint64_t epoch, std::span<const uint8_t> payload,
                     uint8_t flags, transport::Deadline deadline);
  transport::Stream* stream_;
  std::chrono::milliseconds write_timeout_;
  std::mutex mu_;
  Status broken_;                 // guarded by mu_
  std::vector<uint8_t> scratch_;  // guarded by mu_: encoded control payloads
  std::vector<uint8_t> small_;    // guarded by mu_: header+small payload in one write
  std::atomic<uint64_t> frames_{0};
  std::atomic<uint64_t> bytes_{0};
};

struct Frame {
  FrameHeader header;
  // The verified payload, inside the ReusableBuffer: valid until the next
  // Next() call or any change to the buffer.
  std::span<const uint8_t> payload;
  // Offset of the payload within the buffer (stays meaningful if the buffer
  // later grows and moves, e.g. when appending a whole epoch).
  size_t offset = 0;

  FrameType type() const { return header.frame_type(); }
  uint64_t epoch() const { return header.epoch; }
};

class FrameReader {
 public:
  enum class Placement {
    kReplace,  // Clear() the buffer, payload at offset 0 (one frame at a time)
    kAppend,   // payload after the buffer's current contents (accumulate an epoch)
  };

  // Neither pointer is owned. The buffer's max_capacity is the bound on what
  // one frame (kReplace) or an accumulated epoch (kAppend) may occupy.
  FrameReader(transport::Stream* stream, buffer::ReusableBuffer* buffer);

  // Next frame, verified. Errors:
  //   Timeout          nothing complete by the deadline; the partial frame
  //                    (if any) is kept and the next call resumes it — do not
  //                    touch the buffer in between;
  //   Closed           EOF at a frame boundary or inside a frame (truncated);
  //   Corruption       header or payload checksum, reserved bits, flags;
  //   Unsupported      unknown frame type without the ignorable flag;
  //   OutOfRange       length above the type's bound or the buffer's bound,
  //                    detected before any allocation;
  //   Unauthenticated  the peer speaks TLS and this end is plaintext.
  // After any error but Timeout the reader is finished (sticky error).
  // Unknown frames with the ignorable flag are skipped silently (counted).
  Result<Frame> Next(transport::Deadline deadline, Placement placement = Placement::kReplace);

  uint64_t frames_read() const { return frames_; }
  uint64_t bytes_read() const { return bytes_; }
  uint64_t frames_skipped() const { return skipped_; }
  // Clock time at which the last byte arrived (liveness, PROTOCOL.md §6).
  transport::Clock::time_point last_byte_time() const { return last_byte_; }

 private:
  Status Fail(Status st);
  transport::Stream* stream_;
  buffer::ReusableBuffer* buf_;
  Status broken_;
  // Resumable state of the frame in progress.
  uint8_t header_bytes_[kFrameHeaderSize];
  size_t header_got_ = 0;
  bool have_header_ = false;
  FrameHeader header_;
  size_t payload_base_ = 0;  // buffer offset where the payload starts
  size_t payload_got_ = 0;
  uint64_t frames_ = 0, bytes_ = 0, skipped_ = 0;
  transport::Clock::time_point last_byte_{};
};

}  // namespace romulus::protocol

#include "protocol/frame_io.h"

#include <cstring>

namespace romulus::protocol {
namespace {

// Payloads up to this size are copied next to their header and written in
// one call (one syscall, one TLS record); bigger ones use a gather write.
constexpr size_t kCoalesceLimit = 16 * 1024;

}  // namespace

// ---- FrameWriter --------------------------------------------------------------

FrameWriter::FrameWriter(transport::Stream* stream, std::chrono::milliseconds write_timeout)
    : stream_(stream), write_timeout_(write_timeout) {
  small_.reserve(kFrameHeaderSize + kCoalesceLimit);
}

Status FrameWriter::Write(FrameType type, uint64_t epoch, std::span<const uint8_t> payload,
                          uint8_t flags) {
  return Write(type, epoch, payload, flags, transport::DeadlineIn(write_timeout_));
}

Status FrameWriter::Write(FrameType type, uint64_t epoch, std::span<const uint8_t> payload,
                          uint8_t flags, transport::Deadline deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  ROMULUS_RETURN_IF_ERROR(broken_);
  return WriteLocked(type, epoch, payload, flags, deadline);
}

Status FrameWriter::WriteLocked(FrameType type, uint64_t epoch, std::span<const uint8_t> payload,
                                uint8_t flags, transport::Deadline deadline) {
  const uint8_t raw = static_cast<uint8_t>(type);
  if (payload.size() > MaxPayloadFor(raw)) {
    return Status::OutOfRange("refusing to send a " + FrameTypeName(raw) + " frame of " +
                              std::to_string(payload.size()) + " bytes (limit " +
                              std::to_string(MaxPayloadFor(raw)) + ")");
  }
  const uint8_t allowed = type == FrameType::kState ? (kFlagMore | kFlagIgnorable) : kFlagIgnorable;
  if (flags & ~allowed) {
    return Status::InvalidArgument("undefined flags for " + FrameTypeName(raw) + " frame");
  }
  uint8_t header[kFrameHeaderSize];
  EncodeFrameHeader(header, type, epoch, payload, flags);
  Status st;
  if (payload.size() <= kCoalesceLimit) {
    small_.resize(kFrameHeaderSize + payload.size());
    std::memcpy(small_.data(), header, kFrameHeaderSize);
    if (!payload.empty()) std::memcpy(small_.data() + kFrameHeaderSize, payload.data(), payload.size());
    st = stream_->WriteAll(small_, deadline);
  } else {
    const std::span<const uint8_t> parts[2] = {{header, kFrameHeaderSize}, payload};
    st = stream_->WriteAllV(parts, deadline);
  }
  if (!st.ok()) {
    broken_ = st.With("writing " + FrameTypeName(raw) + " frame");
    return broken_;
  }
  frames_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(kFrameHeaderSize + payload.size(), std::memory_order_relaxed);
  return Status::Ok();
}

Status FrameWriter::WriteFrames(std::span<const uint8_t> frames) {
  return WriteFrames(frames, transport::DeadlineIn(write_timeout_));
}

Status FrameWriter::WriteFrames(std::span<const uint8_t> frames, transport::Deadline deadline) {
  // Validated outside the lock: it only reads the caller's buffer.
  size_t count = 0;
  ROMULUS_RETURN_IF_ERROR(CheckFrameSequence(frames, &count));
  if (frames.empty()) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  ROMULUS_RETURN_IF_ERROR(broken_);
  Status st = stream_->WriteAll(frames, deadline);
  if (!st.ok()) {
    broken_ = st.With("writing " + std::to_string(count) + " frames");
    return broken_;
  }
  frames_.fetch_add(count, std::memory_order_relaxed);
  bytes_.fetch_add(frames.size(), std::memory_order_relaxed);
  return Status::Ok();
}

// ---- FrameReader --------------------------------------------------------------

FrameReader::FrameReader(transport::Stream* stream, buffer::ReusableBuffer* buffer)
    : stream_(stream), buf_(buffer) {}

Status FrameReader::Fail(Status st) {
  broken_ = st;
  return st;
}

Result<Frame> FrameReader::Next(transport::Deadline deadline, Placement placement) {
  if (!broken_.ok()) return broken_;
  for (;;) {
    if (!have_header_) {
      size_t got = 0;
      Status st = stream_->ReadExact(
          std::span<uint8_t>(header_bytes_ + header_got_, kFrameHeaderSize - header_got_),
          deadline, &got);
      if (got > 0) last_byte_ = transport::Clock::now();
      header_got_ += got;
      bytes_ += got;
      if (!st.ok()) {
        if (st.code() == Code::kTimeout) return st;
        if (st.code() == Code::kClosed) {
          if (header_got_ == 0) return Fail(Status::Closed("peer closed the connection"));
          if (LooksLikeTls({header_bytes_, header_got_})) {
            return Fail(Status::Unauthenticated(
                "peer speaks TLS; this end is --insecure (configure the same key or "
                "certificates on both ends)"));
          }
          return Fail(Status::Closed("truncated frame: connection closed after " +
                                     std::to_string(header_got_) + " of " +
                                     std::to_string(kFrameHeaderSize) + " header bytes"));
        }
        return Fail(st);
      }
      auto h = DecodeFrameHeader({header_bytes_, kFrameHeaderSize});
      if (!h.ok()) return Fail(h.status());
      header_ = *h;
      if (placement == Placement::kReplace) buf_->Clear();
      payload_base_ = buf_->size();
      payload_got_ = 0;
      if (header_.length > 0) {
        // The length is now trusted to be within the type's bound; the
        // buffer enforces its own (epoch) bound before allocating.
        auto room = buf_->Append(header_.length);
        if (!room.ok()) {
          return Fail(Status::OutOfRange(
              FrameTypeName(header_.type) + " frame of " + std::to_string(header_.length) +
              " bytes does not fit the receive buffer: " + room.status().message()));
        }
      }
      have_header_ = true;
    }
    if (payload_got_ < header_.length) {
      // Recomputed from data() each time: Append() above may have moved it.
      uint8_t* dst = buf_->data() + payload_base_ + payload_got_;
      size_t got = 0;
      Status st = stream_->ReadExact(std::span<uint8_t>(dst, header_.length - payload_got_),
                                     deadline, &got);
      if (got > 0) last_byte_ = transport::Clock::now();
      payload_got_ += got;
      bytes_ += got;
      if (!st.ok()) {
        if (st.code() == Code::kTimeout) return st;
        if (st.code() == Code::kClosed) {
          return Fail(Status::Closed("truncated frame: connection closed after " +
                                     std::to_string(payload_got_) + " of " +
                                     std::to_string(header_.length) + " payload bytes of " +
                                     FrameTypeName(header_.type)));
        }
        return Fail(st);
      }
    }
    std::span<const uint8_t> payload(buf_->data() + payload_base_, header_.length);
    if (header_.length == 0) payload = {};
    Status st = VerifyPayload(header_, payload);
    if (!st.ok()) return Fail(st);
    have_header_ = false;
    header_got_ = 0;
    if (!header_.known()) {
      ++skipped_;  // ignorable unknown frame: never committed to the buffer
      continue;
    }
    if (header_.length > 0) buf_->Commit(header_.length);
    ++frames_;
    return Frame{header_, payload, payload_base_};
  }
}

}  // namespace romulus::protocol

#include "protocol/frame.h"

#include <xxhash.h>

#include <cassert>
#include <cstdio>

#include "common/little_endian.h"

namespace romulus::protocol {
namespace {

// Flag bits a known type may carry (besides kFlagIgnorable, which only
// means something for unknown types and is harmless on known ones).
uint8_t AllowedFlags(uint8_t type) {
  if (type == static_cast<uint8_t>(FrameType::kState)) return kFlagMore | kFlagIgnorable;
  return kFlagIgnorable;
}

}  // namespace

bool IsKnownFrameType(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
    case FrameType::kHelloAck:
    case FrameType::kPages:
    case FrameType::kState:
    case FrameType::kEpochEnd:
    case FrameType::kAck:
    case FrameType::kCacheResize:
    case FrameType::kHeld:
    case FrameType::kDisk:
    case FrameType::kDiskEnd:
    case FrameType::kDiskDigests:
    case FrameType::kHeartbeat:
    case FrameType::kBye:
    case FrameType::kError:
      return true;
  }
  return false;
}

std::string FrameTypeName(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello: return "HELLO";
    case FrameType::kHelloAck: return "HELLO_ACK";
    case FrameType::kPages: return "PAGES";
    case FrameType::kState: return "STATE";
    case FrameType::kEpochEnd: return "EPOCH_END";
    case FrameType::kAck: return "ACK";
    case FrameType::kCacheResize: return "CACHE_RESIZE";
    case FrameType::kHeld: return "HELD";
    case FrameType::kDisk: return "DISK";
    case FrameType::kDiskEnd: return "DISK_END";
    case FrameType::kDiskDigests: return "DISK_DIGESTS";
    case FrameType::kHeartbeat: return "HEARTBEAT";
    case FrameType::kBye: return "BYE";
    case FrameType::kError: return "ERROR";
  }
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", type);
  return buf;
}

size_t MaxPayloadFor(uint8_t type) {
  // Keep in sync with docs/PROTOCOL.md §3 and §9.
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello: return 1024;
    case FrameType::kHelloAck: return 1024;
    case FrameType::kPages: return kMaxPayload;
    case FrameType::kState: return kMaxPayload;
    case FrameType::kEpochEnd: return 32;
    case FrameType::kAck: return 16;
    case FrameType::kCacheResize: return 16;
    case FrameType::kHeld: return 16 + 8 * 8192;  // Held::kMaxHashes
    case FrameType::kDisk: return kMaxPayload;
    case FrameType::kDiskEnd: return 40;  // kDiskEndTaggedSize
    case FrameType::kDiskDigests: return 24 + 16 * 4096;  // DiskDigests, kMaxChunkHashesPerFrame
    case FrameType::kHeartbeat: return 24;
    case FrameType::kBye: return 260;
    case FrameType::kError: return 1028;
  }
  return kMaxPayload;
}

uint32_t Check32(std::span<const uint8_t> data) {
  return static_cast<uint32_t>(XXH3_64bits(data.data(), data.size()));
}

size_t EncodeFrameHeader(uint8_t* out, FrameType type, uint64_t epoch,
                         std::span<const uint8_t> payload, uint8_t flags) {
  assert(payload.size() <= MaxPayloadFor(static_cast<uint8_t>(type)));
  assert((flags & ~AllowedFlags(static_cast<uint8_t>(type))) == 0);
  out[0] = static_cast<uint8_t>(type);
  out[1] = flags;
  StoreLE16(out + 2, 0);
  StoreLE32(out + 4, static_cast<uint32_t>(payload.size()));
  StoreLE64(out + 8, epoch);
  StoreLE32(out + 16, Check32(payload));
  StoreLE32(out + 20, Check32({out, 20}));
  return kFrameHeaderSize;
}

bool LooksLikeTls(std::span<const uint8_t> prefix) {
  return prefix.size() >= 2 && (prefix[0] == 0x16 || prefix[0] == 0x15) && prefix[1] == 0x03;
}

Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> in) {
  if (in.size() < kFrameHeaderSize) {
    return Status::Corruption("frame header truncated (" + std::to_string(in.size()) + " of " +
                              std::to_string(kFrameHeaderSize) + " bytes)");
  }
  const uint8_t* p = in.data();
  if (LoadLE32(p + 20) != Check32({p, 20})) {
    if (LooksLikeTls(in)) {
      return Status::Unauthenticated(
          "peer speaks TLS; this end is --insecure (configure the same key or certificates on "
          "both ends)");
    }
    return Status::Corruption("frame header checksum mismatch");
  }
  FrameHeader h;
  h.type = p[0];
  h.flags = p[1];
  h.length = LoadLE32(p + 4);
  h.epoch = LoadLE64(p + 8);
  h.payload_check = LoadLE32(p + 16);
  if (LoadLE16(p + 2) != 0) {
    return Status::Corruption("frame header reserved field is not zero");
  }
  const std::string name = FrameTypeName(h.type);
  if (!h.known()) {
    if (!(h.flags & kFlagIgnorable)) {
      return Status::Unsupported("unknown frame type " + name);
    }
  } else if (h.flags & ~AllowedFlags(h.type)) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", h.flags);
    return Status::Corruption("undefined flags " + std::string(buf) + " on " + name + " frame");
  }
  size_t limit = MaxPayloadFor(h.type);
  if (h.length > limit) {
    return Status::OutOfRange("frame length " + std::to_string(h.length) + " exceeds limit " +
                              std::to_string(limit) + " for " + name);
  }
  return h;
}

Status VerifyPayload(const FrameHeader& header, std::span<const uint8_t> payload) {
  if (payload.size() != header.length) {
    return Status::Corruption("payload length " + std::to_string(payload.size()) +
                              " differs from header length " + std::to_string(header.length));
  }
  if (Check32(payload) != header.payload_check) {
    return Status::Corruption("frame payload checksum mismatch (" + FrameTypeName(header.type) +
                              ", epoch " + std::to_string(header.epoch) + ", " +
                              std::to_string(header.length) + " bytes)");
  }
  return Status::Ok();
}

Status CheckFrameSequence(std::span<const uint8_t> frames, size_t* frame_count) {
  size_t off = 0, n = 0;
  while (off < frames.size()) {
    if (frames.size() - off < kFrameHeaderSize) {
      return Status::Internal("frame buffer ends inside a header at offset " +
                              std::to_string(off));
    }
    auto h = DecodeFrameHeader(frames.subspan(off, kFrameHeaderSize));
    if (!h.ok()) {
      return Status::Internal("bad frame at offset " + std::to_string(off) + ": " +
                              h.status().ToString());
    }
    if (frames.size() - off - kFrameHeaderSize < h->length) {
      return Status::Internal("frame buffer ends inside a payload at offset " +
                              std::to_string(off));
    }
    off += kFrameHeaderSize + h->length;
    ++n;
  }
  if (frame_count) *frame_count = n;
  return Status::Ok();
}

}  // namespace romulus::protocol

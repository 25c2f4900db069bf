// Frame header: type, flags, payload length, epoch and two truncated XXH3
// checks (header, payload). docs/PROTOCOL.md §2 is the normative layout.
//
// Receiving is split in two so that nothing is allocated for a frame whose
// header is not trustworthy: DecodeFrameHeader() verifies the header check,
// reserved bits, type and per-type length bound; only then does the caller
// reserve `length` bytes, read them, and call VerifyPayload().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"

namespace romulus::protocol {

inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderSize = 24;
// Global bound on a payload; the per-type bounds below are tighter.
inline constexpr size_t kMaxPayload = size_t{8} << 20;
inline constexpr uint32_t kPageSize = 4096;

enum class FrameType : uint8_t {
  kHello = 0x01,
  kHelloAck = 0x02,
  kPages = 0x10,
  kState = 0x11,
  kEpochEnd = 0x12,
  kAck = 0x13,
  kCacheResize = 0x14,  // needs kCapCacheResize (docs/PROTOCOL.md §3.8)
  kHeld = 0x15,         // needs kCapHeldPages (docs/PROTOCOL.md §3.9)
  kDisk = 0x16,         // needs kCapDisk (docs/PROTOCOL.md §3.10)
  kDiskEnd = 0x17,      // needs kCapDisk
  kDiskDigests = 0x18,  // needs kCapDiskDigests (docs/PROTOCOL.md §3.11)
  kHeartbeat = 0x20,
  kBye = 0x30,
  kError = 0x31,
};

// Flag bits (docs/PROTOCOL.md §2.1). Bits not defined for a type must be 0.
inline constexpr uint8_t kFlagMore = 0x01;        // STATE: record continues in the next STATE frame
inline constexpr uint8_t kFlagIgnorable = 0x80;   // unknown type with this bit: skip, don't fail

// "PAGES", "HELLO_ACK", or "0x7f" for an unassigned value.
std::string FrameTypeName(uint8_t type);
bool IsKnownFrameType(uint8_t type);
// Largest payload a frame of this (known) type may carry; kMaxPayload for unknown types.
size_t MaxPayloadFor(uint8_t type);

struct FrameHeader {
  uint8_t type = 0;  // raw: may be an unknown-but-ignorable type
  uint8_t flags = 0;
  uint32_t length = 0;
  uint64_t epoch = 0;
  uint32_t payload_check = 0;

  FrameType frame_type() const { return static_cast<FrameType>(type); }
  bool known() const { return IsKnownFrameType(type); }
};

// low 32 bits of XXH3_64bits(data).
uint32_t Check32(std::span<const uint8_t> data);

// Writes the 24-byte header for `payload` at out[0..24) and returns
// kFrameHeaderSize. The payload need not follow the header in memory, but in
// the engine's OutBuffer it does: reserve header space, write the payload
// after it, then fill the header in place. The caller guarantees
// payload.size() <= MaxPayloadFor(type) and valid flags (checked in debug
// builds only: this is on the per-batch hot path and the inputs are ours).
size_t EncodeFrameHeader(uint8_t* out, FrameType type, uint64_t epoch,
                         std::span<const uint8_t> payload, uint8_t flags = 0);

// Decodes and verifies a received header (checks 2-5 of PROTOCOL.md §2.2):
//   Corruption   header check mismatch, reserved bits, undefined flags;
//   Unsupported  unknown type without kFlagIgnorable;
//   OutOfRange   length above the type's bound (nothing allocated yet).
// Also recognises a TLS record arriving at a plaintext endpoint
// (Unauthenticated). `in` must hold at least kFrameHeaderSize bytes.
Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> in);

// Corruption if payload does not match header.payload_check (or its length).
Status VerifyPayload(const FrameHeader& header, std::span<const uint8_t> payload);

// True if the first bytes look like a TLS record (handshake 0x16 or alert
// 0x15, version major 3): the peer speaks TLS and we do not.
bool LooksLikeTls(std::span<const uint8_t> prefix);

// Walks a buffer that should contain only complete, well-formed frames
// (as built with EncodeFrameHeader); Internal with the offset of the first
// bad one otherwise. Cost: header checks only, payloads are not hashed.
Status CheckFrameSequence(std::span<const uint8_t> frames, size_t* frame_count = nullptr);

}  // namespace romulus::protocol

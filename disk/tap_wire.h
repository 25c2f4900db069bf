// The tap protocol between a `romulus disk-export` process and the one
// replicator attached to it (docs/DISK.md §8a, normative). This file is the
// one home of its encoding: pure functions over byte spans, no I/O.
//
// Every message is a 16-byte header followed by `length` bytes of payload:
//
//   magic u32 "RTAP" | version u16 (1) | type u16 | length u32 | reserved u32 (0)
//
// all little-endian. A header is validated whole (magic, version, known
// type, reserved zero, length within the type's bound) before a byte of its
// payload is read, so nothing a peer says can make the reader allocate more
// than the type's fixed bound. The records of a SEAL travel as DISK frame
// payloads (docs/PROTOCOL.md §3.10, protocol/disk_records.h), disk id 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "protocol/disk_digests.h"

namespace romulus::disk::tap {

inline constexpr uint32_t kMagic = 0x50415452;  // "RTAP" little-endian
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;

enum class MsgType : uint16_t {
  kHello = 1,    // export → replicator, first message on a connection
  kPause = 2,    // replicator → export
  kPaused = 3,   // export → replicator: the ending epoch's tag
  kSeal = 4,     // replicator → export
  kRecords = 5,  // export → replicator: one DISK frame payload of the sealed epoch
  kSealed = 6,   // export → replicator: the sealed epoch's records are complete
  kError = 7,    // export → replicator: a request failed (or the connection is refused)
  kAcked = 8,    // replicator → export: the backup committed this tag (no reply)
  kDigests = 9,  // replicator → export: the backup's chunk hashes, before a copy PAUSE (no reply)
  kFloorQuery = 10,  // replicator → export: how far back are the changes known? (no payload)
  kFloor = 11,       // export → replicator: the tag through which it forgot its change marks
};
const char* MsgTypeName(MsgType t);

// Payload sizes and bounds.
inline constexpr size_t kMaxName = 64;                   // = protocol::kMaxDiskName
inline constexpr size_t kHelloFixed = 40;                // before the name
inline constexpr size_t kPauseSize = 8;
inline constexpr size_t kPauseChangedSize = 24;  // mode 3: + since, lineage
inline constexpr size_t kPausedSize = 8;
inline constexpr size_t kPausedChangedSize = 16;  // answering mode 3: + regions
inline constexpr size_t kAckedSize = 8;
inline constexpr size_t kFloorSize = 8;
inline constexpr size_t kSealSize = 16;
inline constexpr size_t kSealedSize = 32;
inline constexpr size_t kSealedSyncSize = 40;  // with the sync state (a streaming attachment)
inline constexpr size_t kErrorFixed = 4;                 // code u16, reserved u16
inline constexpr size_t kMaxErrorText = 1024;
inline constexpr size_t kMaxRecordsPayload = size_t{8} << 20;  // = protocol::kMaxPayload
// The longest SEAL wait the export grants (a larger timeout is refused).
inline constexpr uint32_t kMaxSealTimeoutMs = 600'000;

// Whether the type is one of MsgType's.
bool IsKnownType(MsgType t);
// The largest payload a message of this type may carry (0 for unknown types,
// and for FLOOR?, which has none).
size_t MaxPayload(MsgType t);
// The smallest payload a message of this type may carry.
size_t MinPayload(MsgType t);

struct Header {
  MsgType type = MsgType::kHello;
  uint32_t length = 0;
};
void EncodeHeader(std::span<uint8_t, kHeaderSize> out, MsgType type, uint32_t length);
// Corruption: bad magic, version, reserved bits, unknown type; OutOfRange: a
// length outside [MinPayload, MaxPayload] of its type.
Result<Header> DecodeHeader(std::span<const uint8_t, kHeaderSize> in);

// HELLO: who the export is. instance_id is drawn at the export's start: a
// different one means the export restarted (its log, its clock are new).
// HELLO feature bits (byte 34; a replicator ignores bits it does not know).
inline constexpr uint8_t kFeatureStream = 1;  // PAUSE{stream}: the export's streaming copy (DISK.md §7.1)
// PAUSE{changed} and ACKED: the export tracks which regions each tag wrote,
// and its instance_id is the disk's lineage (DISK.md §7.2).
inline constexpr uint8_t kFeatureChanges = 2;
// DIGESTS: the export's whole copies (PAUSE mode 1 and 2) leave out the
// chunks the backup's copy holds already (DISK.md §7.4).
inline constexpr uint8_t kFeatureDigests = 4;
// FLOOR?: the export says through which tag it forgot its change marks, so a
// replicator that did not send every ACKED itself (it restarted) still knows
// which backup copies a delta can bring up to date (DISK.md §7.4).
inline constexpr uint8_t kFeatureFloor = 8;

struct Hello {
  uint64_t instance_id = 0;
  uint64_t disk_size = 0;    // > 0, a multiple of 512
  uint64_t log_budget = 0;   // the export's log budget, bytes of write data per epoch
  uint64_t next_tag = 0;     // the tag requests get now
  uint8_t features = 0;      // kFeature* bits
  std::string name;          // 1..kMaxName bytes of [A-Za-z0-9._-]
};
// A clean export name: 1..kMaxName bytes of [A-Za-z0-9._-] (it appears on
// nbd-client command lines, in file names and in the HELLO to the backup).
bool IsCleanName(std::string_view name);
// Returns the payload's size. REQUIRES: out.size() >= kHelloFixed + kMaxName.
size_t EncodeHello(const Hello& h, std::span<uint8_t> out);
Result<Hello> DecodeHello(std::span<const uint8_t> payload);

// PAUSE's mode byte: 0 an ordinary epoch, 1 the in-pause full copy, 2 the
// start of a streaming copy (only to an export whose HELLO has
// kFeatureStream), 3 the in-pause copy of the regions written after tag
// `since` of the export instance `lineage` (24 bytes: `since` u64 at 8,
// `lineage` u64 at 16; only with kFeatureChanges; an export of another
// instance refuses it, Unsupported). Any copy starts an attachment's logging.
struct Pause {
  bool full_copy = false;
  bool stream = false;   // never two of these
  bool changed = false;
  uint64_t since = 0;    // changed only
  uint64_t lineage = 0;  // changed only
};
// Returns the payload's size (kPauseSize, kPauseChangedSize for mode 3).
size_t EncodePause(std::span<uint8_t, kPauseChangedSize> out, const Pause& p);
Result<Pause> DecodePause(std::span<const uint8_t> payload);

// PAUSED: the ending epoch's tag; answering a mode-3 PAUSE, also how many
// regions it copied (16 bytes).
struct Paused {
  uint64_t tag = 0;
  bool with_regions = false;
  uint64_t regions = 0;
};
size_t EncodePaused(std::span<uint8_t, kPausedChangedSize> out, const Paused& p);
Result<Paused> DecodePaused(std::span<const uint8_t> payload);

// DIGESTS: hashes (protocol::DiskChunkHash) of the backup's chunks
// [first_chunk, first_chunk + hashes.size()); `last` ends the table. The
// replicator sends a whole table, chunk 0 first, right before the copy
// PAUSE that uses it (docs/DISK.md §8a).
inline constexpr size_t kDigestsFixed = 16;  // first_chunk u64, count u32, flags u32
inline constexpr uint32_t kMaxDigestsPerMessage = 4096;
struct Digests {
  uint64_t first_chunk = 0;
  bool last = false;
  std::vector<protocol::ChunkHash> hashes;  // 1..kMaxDigestsPerMessage
};
// Returns the payload's size. REQUIRES: 1..kMaxDigestsPerMessage hashes,
// out.size() >= kDigestsFixed + 16 * hashes.
size_t EncodeDigests(const Digests& d, std::span<uint8_t> out);
Result<Digests> DecodeDigests(std::span<const uint8_t> payload);

// ACKED: the backup committed the epoch of this tag; the export may forget
// the changes up to it. Tag > 0.
void EncodeAcked(std::span<uint8_t, kAckedSize> out, uint64_t tag);
Result<uint64_t> DecodeAcked(std::span<const uint8_t> payload);

// FLOOR: the answer to FLOOR?: the export's changes since any tag >= this
// one are known (PAUSE mode 3 answers); 0 when none were forgotten.
void EncodeFloor(std::span<uint8_t, kFloorSize> out, uint64_t forgotten_through);
Result<uint64_t> DecodeFloor(std::span<const uint8_t> payload);

struct Seal {
  uint64_t tag = 0;
  uint32_t timeout_ms = 0;  // 1..kMaxSealTimeoutMs: how long the export waits for the epoch's requests
};
void EncodeSeal(std::span<uint8_t, kSealSize> out, const Seal& s);
Result<Seal> DecodeSeal(std::span<const uint8_t> payload);

struct Sealed {
  uint64_t tag = 0;
  uint64_t record_count = 0;
  uint64_t data_bytes = 0;  // uncompressed bytes of the epoch's writes
  uint64_t digest = 0;      // protocol::DiskRecordDigest of the records, in order
  // Sent (40-byte SEALED) on an attachment whose copy was streamed: DISK_END's
  // sync state (protocol::kSyncWhole or SyncStateOfPermille). A 32-byte
  // SEALED means whole.
  bool with_sync = false;
  uint32_t sync_state = 0;
};
// Returns the payload's size (kSealedSize, or kSealedSyncSize with_sync).
size_t EncodeSealed(std::span<uint8_t, kSealedSyncSize> out, const Sealed& s);
Result<Sealed> DecodeSealed(std::span<const uint8_t> payload);

// ERROR: a Status as it travels. The code is romulus::Code's value (1..);
// the text is made printable by the reader.
struct ErrorMsg {
  Code code = Code::kInternal;
  std::string text;
  Status ToStatus() const { return Status::Error(code, text); }
};
// out >= kErrorFixed + kMaxErrorText; the text is cut at kMaxErrorText.
size_t EncodeError(std::span<uint8_t> out, Code code, std::string_view text);
Result<ErrorMsg> DecodeError(std::span<const uint8_t> payload);

}  // namespace romulus::disk::tap

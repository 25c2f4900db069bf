// Control messages (docs/PROTOCOL.md §3): explicit encode/decode of each
// payload. PAGES and STATE payloads are opaque to this layer.
//
// Decode() functions take only the payload bytes and are total: any input
// yields either a message or a Corruption status, never a crash or an
// unbounded allocation (strings are bounded before they are copied). They
// check syntax; semantic checks that depend on local policy (versions,
// geometry) live in handshake.h.
//
// EncodeTo() clears *out and writes the payload. It validates the message
// first (string bounds, reserved values) and returns InvalidArgument for a
// message that could not be decoded on the other side. Reusing one vector
// keeps steady-state encoding allocation-free.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/frame.h"

namespace romulus::protocol {

// HELLO magic: "ROMULUS" followed by a zero byte.
inline constexpr uint8_t kHelloMagic[8] = {'R', 'O', 'M', 'U', 'L', 'U', 'S', 0};
inline constexpr size_t kHelloFixedSize = 76;
inline constexpr size_t kHelloAckFixedSize = 32;
inline constexpr size_t kMaxIdentity = 256;
inline constexpr size_t kMaxShortText = 256;   // HELLO_ACK, BYE
inline constexpr size_t kMaxErrorText = 1024;  // ERROR
inline constexpr size_t kEpochEndSize = 32;
inline constexpr size_t kAckSize = 16;
inline constexpr size_t kHeartbeatSize = 24;
inline constexpr size_t kCacheResizeSize = 16;

// Capability bits (docs/PROTOCOL.md §10).
inline constexpr uint64_t kCapXenStream = uint64_t{1} << 0;
inline constexpr uint64_t kCapLz4Pages = uint64_t{1} << 1;
inline constexpr uint64_t kCapSimGuest = uint64_t{1} << 2;
// The primary may resize the cache mid-session with CACHE_RESIZE; an
// accepting HELLO_ACK then carries the backup's largest cache (§3.2, §3.8).
inline constexpr uint64_t kCapCacheResize = uint64_t{1} << 3;
// After an accepting HELLO_ACK the backup sends HELD frames: what its image
// holds, as page hashes; the session's first epoch then carries only the
// pages that differ (§3.9). Offered by the primary, never required.
inline constexpr uint64_t kCapHeldPages = uint64_t{1} << 4;
// The guest's disks are replicated with its memory: the HELLO lists them
// (Hello::disks), and every epoch carries DISK frames and one DISK_END per
// disk (§3.10, docs/DISK.md §5). A primary with disks requires it.
inline constexpr uint64_t kCapDisk = uint64_t{1} << 5;
// DISK_END carries the disk's sync state (§3.10): a primary may stream a
// disk's first copy over several epochs (docs/DISK.md §7.1), and the backup
// keeps such checkpoints but never resumes one whose disk is not whole.
inline constexpr uint64_t kCapDiskSync = uint64_t{1} << 6;
// A reconnect copies only what changed (docs/DISK.md §7.2): the HELLO names
// each disk's lineage (the front end whose tags number its epochs), DISK_END
// carries the epoch's tag, and an accepting HELLO_ACK says which lineage and
// tag each of the backup's committed disks holds. Offered by the primary,
// never required.
inline constexpr uint64_t kCapDiskDelta = uint64_t{1} << 7;
// The HELLO says which Xen saves the guest (Hello::xen_release), so a backup
// whose Xen is older refuses the session at once: Xen restores a stream from
// its own or an older release, not from a newer one (4.20's records carry
// fields 4.17 does not know), and a checkpoint the backup could not restore
// at failover is no checkpoint. Offered by a Xen primary, never required.
inline constexpr uint64_t kCapXenRelease = uint64_t{1} << 8;
// After an accepting HELLO_ACK (and the HELD table, if any) the backup sends
// DISK_DIGESTS: one hash per 1 MiB chunk of what its copy of each disk holds,
// so that a disk copied whole carries only the chunks that differ
// (§3.11, docs/DISK.md §7.4). Offered by a primary whose disks can compare,
// never required.
inline constexpr uint64_t kCapDiskDigests = uint64_t{1} << 9;
// The HELLO names, per disk, the oldest tag its front end can still bring up
// to date by its changed regions (Hello::disk_change_floors), so a backup
// holding a disk of the session's own lineage as of an older tag (restored
// from an old copy) describes it in DISK_DIGESTS too: its whole copy then
// carries only the chunks that differ (docs/DISK.md §7.4). Needs
// kCapDiskDelta; offered by the primary, never required.
inline constexpr uint64_t kCapDiskFloor = uint64_t{1} << 10;
// kCapDisk: the receiver applies DISK frames (restore/checkpoint_receiver.cc),
// agreed only when its sink holds disks (GuestSink::supports_disks).
inline constexpr uint64_t kCapAllKnown =
    kCapXenStream | kCapLz4Pages | kCapSimGuest | kCapCacheResize | kCapHeldPages | kCapDisk | kCapDiskSync |
    kCapDiskDelta | kCapXenRelease | kCapDiskDigests | kCapDiskFloor;

// A Xen release as xc_version(XENVER_version) gives it: major << 16 | minor.
constexpr uint32_t XenRelease(uint16_t major, uint16_t minor) { return uint32_t{major} << 16 | minor; }
std::string XenReleaseName(uint32_t release);  // "4.20"

// One protected disk, as the HELLO announces it (§3.1 disk list).
inline constexpr size_t kMaxDisks = 8;
inline constexpr size_t kMaxDiskName = 64;
inline constexpr uint64_t kDiskSectorSize = 512;  // sizes, offsets, lengths: multiples of this
struct DiskInfo {
  uint32_t id = 0;          // unique within the HELLO; names the disk in DISK frames
  uint64_t size_bytes = 0;  // > 0, a multiple of kDiskSectorSize
  std::string name;         // 1..kMaxDiskName clean bytes ("xvda")
  bool operator==(const DiskInfo&) const = default;
};

// kCapDiskDelta: what the backup's committed copy of one disk is (§3.2):
// the content the front end `lineage` had at its tag `tag`.
struct DiskHeld {
  uint32_t disk_id = 0;
  uint64_t lineage = 0;  // non-zero
  uint64_t tag = 0;
  bool operator==(const DiskHeld&) const = default;
};

enum class ResyncReason : uint8_t {
  kInitial = 0,
  kBackupReconnect = 1,  // backup came back after being lost
  kLinkReset = 2,        // link failed, same backup
  kPrimaryRestart = 3,   // the primary agent restarted while the guest ran on
};
const char* ResyncReasonName(ResyncReason r);

// Codes carried by ERROR and by a refusing HELLO_ACK.
enum class ErrorCode : uint16_t {
  kNone = 0,
  kProtocol = 1,
  kChecksum = 2,
  kVersion = 3,
  kCapabilities = 4,
  kGeometry = 5,
  kResource = 6,
  kDigestMismatch = 7,
  kDecode = 8,
  kBusy = 9,
  kIdentity = 10,
  kInternal = 11,
  kShutdown = 12,
  // The sender abandons this session and will start a new one (it gave up
  // on an ack, a write or a stalled peer, or decided to resynchronise); the
  // peer must not treat this as a failure of the sender (PROTOCOL.md §6.3).
  kResync = 13,
};
// "digest-mismatch"; "code-42" for unassigned values.
std::string ErrorCodeName(uint16_t code);
// The ERROR code that best describes a local failure status (for sending
// ERROR before closing): Corruption -> kProtocol, OutOfRange -> kResource, ...
ErrorCode ErrorCodeFor(const Status& status);

enum class ByeReason : uint8_t {
  kOperatorStop = 0,
  kGuestShutdown = 1,
  kBackupStopping = 2,
  kHandover = 3,
};
const char* ByeReasonName(ByeReason r);

struct Hello {
  static constexpr FrameType kType = FrameType::kHello;
  uint16_t version_min = kProtocolVersion;
  uint16_t version_max = kProtocolVersion;
  uint32_t page_size = kPageSize;
  uint64_t capabilities = 0;
  uint64_t required = 0;
  uint64_t cache_pages = 0;
  uint64_t guest_pages = 0;
  uint64_t session_id = 0;
  uint64_t first_epoch = 1;
  uint32_t heartbeat_ms = 100;
  uint32_t peer_timeout_ms = 1000;
  ResyncReason resync_reason = ResyncReason::kInitial;
  std::string identity;
  // Extension after the identity, on the wire exactly when `capabilities`
  // has kCapDisk: the disks replicated with the guest (0..kMaxDisks).
  std::vector<DiskInfo> disks;
  // Extension after the disk list, on the wire exactly when `capabilities`
  // has kCapDiskDelta (which needs kCapDisk): one non-zero lineage per disk,
  // in the list's order (docs/DISK.md §7.2).
  std::vector<uint64_t> disk_lineages;
  // Extension after the lineages (or the disk list, or the identity), on the
  // wire exactly when `capabilities` has kCapXenRelease: the Xen release
  // (XenRelease) whose libxenguest saves the guest; non-zero.
  uint32_t xen_release = 0;
  // Extension after the Xen release (or whatever came before it), on the
  // wire exactly when `capabilities` has kCapDiskFloor (which needs
  // kCapDiskDelta): one u64 per disk, in the list's order: the front end
  // can name the regions changed after any of its tags >= this one
  // (docs/DISK.md §7.2); a copy held as of an older tag is copied whole.
  std::vector<uint64_t> disk_change_floors;

  // The payload's size, when EncodeTo succeeds: at most
  // MaxPayloadFor(kHello), which EncodeTo enforces (a primary drops its
  // optional extensions rather than send more).
  size_t EncodedSize() const;
  Status EncodeTo(std::vector<uint8_t>* out) const;
  // Syntax only: magic, identity length 1..256 and printable, reserved 0,
  // resync reason known, required ⊆ capabilities; with kCapDisk a disk list
  // of unique ids, sizes that are non-zero sector multiples, clean names.
  // Trailing bytes after the last known field are ignored (future
  // extensions, PROTOCOL.md §3.1).
  static Result<Hello> Decode(std::span<const uint8_t> payload);
};

struct HelloAck {
  static constexpr FrameType kType = FrameType::kHelloAck;
  bool accepted = false;
  uint16_t version = kProtocolVersion;
  ErrorCode error = ErrorCode::kNone;  // why, when refused
  uint64_t capabilities = 0;
  uint64_t session_id = 0;
  uint64_t backup_epoch = 0;
  std::string text;  // <= kMaxShortText
  // Extension after `text`, on the wire exactly when the ack is accepted
  // with kCapCacheResize in `capabilities`: the largest cache (pages) the
  // backup accepts in a CACHE_RESIZE; kNoCacheLimit when it has no bound.
  // Ignored (and not encoded) otherwise.
  uint64_t max_cache_pages = 0;
  static constexpr uint64_t kNoCacheLimit = UINT64_MAX;
  // Extension after max_cache_pages (or `text`), on the wire exactly when
  // the ack is accepted with kCapDiskDelta: the backup's committed disks
  // whose lineage it knows (u16 count <= kMaxDisks, then per disk u32 id,
  // u64 lineage, u64 tag); ids unique, lineages non-zero.
  std::vector<DiskHeld> disks_held;

  bool has_max_cache() const { return accepted && (capabilities & kCapCacheResize) != 0; }
  bool has_disks_held() const { return accepted && (capabilities & kCapDiskDelta) != 0; }
  Status EncodeTo(std::vector<uint8_t>* out) const;
  // Bytes after `text` (after max_cache_pages when present) are ignored:
  // future extensions. A missing max_cache_pages is Corruption.
  static Result<HelloAck> Decode(std::span<const uint8_t> payload);
};

struct EpochEnd {
  static constexpr FrameType kType = FrameType::kEpochEnd;
  uint64_t page_count = 0;
  uint32_t state_count = 0;
  uint32_t frame_count = 0;
  uint64_t payload_bytes = 0;
  uint64_t digest = 0;

  Status EncodeTo(std::vector<uint8_t>* out) const;
  static Result<EpochEnd> Decode(std::span<const uint8_t> payload);
};

struct Ack {
  static constexpr FrameType kType = FrameType::kAck;
  uint64_t epoch = 0;  // must equal the frame header's epoch (checked by DecodeAckFrame)
  uint64_t digest = 0;

  Status EncodeTo(std::vector<uint8_t>* out) const;
  static Result<Ack> Decode(std::span<const uint8_t> payload);
};

// CACHE_RESIZE (§3.8): the first frame of its epoch; both ends resize their
// page cache to `cache_pages` before that epoch's first page. Syntax only
// here; the bound (the backup's max) is the receiver's policy.
struct CacheResize {
  static constexpr FrameType kType = FrameType::kCacheResize;
  uint64_t cache_pages = 0;

  Status EncodeTo(std::vector<uint8_t>* out) const;
  static Result<CacheResize> Decode(std::span<const uint8_t> payload);  // exactly 16 bytes, reserved 0
};

// One HELD frame (§3.9): the page hashes of pfns [first_pfn, first_pfn +
// hashes.size()), or, with kLast, the end of the table and the sum of every
// hash in it (the backup's image digest). Pfns no frame names hold a zero page.
struct Held {
  static constexpr FrameType kType = FrameType::kHeld;
  static constexpr uint32_t kMaxHashes = 8192;
  static constexpr uint32_t kLast = 1;  // flags: the table ends here
  uint64_t first_pfn = 0;
  uint32_t flags = 0;
  std::vector<uint64_t> hashes;  // 1..kMaxHashes; none with kLast
  uint64_t digest = 0;           // with kLast only

  bool last() const { return (flags & kLast) != 0; }
  Status EncodeTo(std::vector<uint8_t>* out) const;
  // Corruption for unknown flags, a count out of range, or a size that does
  // not match the count.
  static Result<Held> Decode(std::span<const uint8_t> payload);
};

struct Heartbeat {
  static constexpr FrameType kType = FrameType::kHeartbeat;
  uint64_t send_ns = 0;
  uint64_t echo_ns = 0;
  uint64_t committed = 0;

  Status EncodeTo(std::vector<uint8_t>* out) const;
  static Result<Heartbeat> Decode(std::span<const uint8_t> payload);
};

struct Bye {
  static constexpr FrameType kType = FrameType::kBye;
  ByeReason reason = ByeReason::kOperatorStop;
  std::string text;  // <= kMaxShortText

  Status EncodeTo(std::vector<uint8_t>* out) const;
  static Result<Bye> Decode(std::span<const uint8_t> payload);
};

struct Error {
  static constexpr FrameType kType = FrameType::kError;
  uint16_t code = 0;  // an ErrorCode; unknown values are kept as received
  std::string text;   // <= kMaxErrorText

  // Builds an ERROR, truncating text to the bound (for sending any Status).
  static Error Make(ErrorCode code, std::string text);
  Status EncodeTo(std::vector<uint8_t>* out) const;
  static Result<Error> Decode(std::span<const uint8_t> payload);
};

// Checks the Ack's epoch against the header epoch it arrived with.
Result<Ack> DecodeAckFrame(uint64_t header_epoch, std::span<const uint8_t> payload);

// Text received from the peer, made safe for a log line: control and
// non-ASCII bytes become '?'.
std::string Printable(std::string_view text);
// An ERROR frame's payload as text for a log or a Status: "CODE: text",
// or "malformed ERROR" (the peer's words are made printable).
std::string DescribeErrorPayload(std::span<const uint8_t> payload);

}  // namespace romulus::protocol

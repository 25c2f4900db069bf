// Xen migration stream v2 (libxc "Domain Image Format", revision 3): a tap
// that parses the stream xc_domain_save writes, and the inverse that rebuilds
// the byte-identical stream for xc_domain_restore.
//
// Deliberately free of Xen headers: the constants below come from
// docs/specs/libxc-migration-stream.pandoc, so this file builds, is unit
// tested and fuzzed on any Linux. See docs/XEN-STREAM.md for how the
// primary splits the stream into STATE blobs + pages and how the backup
// reassembles it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/little_endian.h"
#include "common/status.h"

namespace romulus::xen {

// ---- Format constants (spec revision 3, Xen 4.17) --------------------------
constexpr size_t kImageHeaderSize = 24;   // big-endian
constexpr size_t kDomainHeaderSize = 16;  // little-endian
// The domain header's type (u32 at offset 0). libxenguest streams PVH as HVM.
constexpr uint32_t kDomainTypeX86Pv = 1;
constexpr uint32_t kDomainTypeX86Hvm = 2;
constexpr size_t kRecordHeaderSize = 8;   // {u32 type, u32 body_length}
constexpr size_t kPageDataHeaderSize = 8; // {u32 count, u32 reserved}
constexpr size_t kXenPageSize = 4096;
constexpr uint64_t kImageMarker = 0xFFFFFFFFFFFFFFFFull;
constexpr uint32_t kImageId = 0x58454E46;  // "XENF"
// libxc's REC_LENGTH_MAX: the restorer refuses anything longer.
constexpr uint32_t kRecLengthMax = 128u << 20;

enum RecordType : uint32_t {
  kRecEnd = 0x0,
  kRecPageData = 0x1,
  kRecX86PvInfo = 0x2,
  kRecX86PvP2mFrames = 0x3,
  kRecX86PvVcpuBasic = 0x4,
  kRecX86PvVcpuExtended = 0x5,
  kRecX86PvVcpuXsave = 0x6,
  kRecSharedInfo = 0x7,
  kRecX86TscInfo = 0x8,
  kRecHvmContext = 0x9,
  kRecHvmParams = 0xA,
  kRecToolstack = 0xB,
  kRecX86PvVcpuMsrs = 0xC,
  kRecVerify = 0xD,
  kRecCheckpoint = 0xE,
  kRecCheckpointDirtyPfnList = 0xF,
  kRecStaticDataEnd = 0x10,
  kRecX86CpuidPolicy = 0x11,
  kRecX86MsrPolicy = 0x12,
};
constexpr uint32_t kRecOptionalBit = 0x80000000u;

// PAGE_DATA pfn words: bits 63-60 XEN_DOMCTL_PFINFO_* type, 51-0 pfn.
constexpr uint64_t kPfnMask = (1ull << 52) - 1;
constexpr unsigned kPfnTypeShift = 60;
constexpr uint32_t kPageTypeBroken = 0xD;
constexpr uint32_t kPageTypeXalloc = 0xE;
constexpr uint32_t kPageTypeXtab = 0xF;

// The types libxc's restorer knows (is_known_page_type): NOTAB, L1-L4 TAB
// (pinned or not), BROKEN, XALLOC, XTAB. 0x5-0x8 are reserved: rejected.
bool IsKnownPageType(uint32_t type);
// NOTAB and L1-L4 (pinned or not) carry 4096 bytes; BROKEN/XALLOC/XTAB none.
inline bool PageTypeHasData(uint32_t type) { return type < kPageTypeBroken; }
const char* RecordTypeName(uint32_t type);

// ---- The tap ----------------------------------------------------------------

// Receives the parsed stream. Every span is valid only during the call.
// A non-OK return stops the parser, which then returns that Status.
class StreamVisitor {
 public:
  virtual ~StreamVisitor() = default;
  virtual Status OnImageHeader(std::span<const uint8_t> hdr) = 0;   // 24 bytes
  virtual Status OnDomainHeader(std::span<const uint8_t> hdr) = 0;  // 16 bytes
  // Any record but PAGE_DATA and CHECKPOINT: body without padding.
  virtual Status OnRecord(uint32_t type, std::span<const uint8_t> body) = 0;
  // PAGE_DATA "skeleton": record header + count/reserved + count pfn words,
  // i.e. the record minus its page bytes. Then OnPage for each pfn word whose
  // type carries data, in pfn-array order (a pfn may repeat across records).
  virtual Status OnPageData(std::span<const uint8_t> skeleton) = 0;
  virtual Status OnPage(uint64_t pfn, const uint8_t* page) = 0;
  virtual Status OnCheckpoint() = 0;
};

struct ParserLimits {
  // Longest record accepted at all (PAGE_DATA streams through, never buffered).
  uint32_t max_record_length = kRecLengthMax;
  // Longest non-page record: these are buffered whole before OnRecord.
  uint32_t max_state_record_length = 16u << 20;
  // Most pfns in one PAGE_DATA record (libxc writes at most 1024).
  uint32_t max_pfns_per_record = 1u << 16;
};

struct ParserStats {
  uint64_t bytes = 0;
  uint64_t records = 0;
  uint64_t page_data_records = 0;
  uint64_t pages = 0;       // pages with data
  uint64_t pfns = 0;        // pfn words, data-less included
  uint64_t checkpoints = 0;
};

// Incremental parser: feed it whatever read() returned. Memory use is bounded
// by the limits and grows only with bytes actually received, so garbage
// cannot make it allocate ahead of the data.
class StreamParser {
 public:
  explicit StreamParser(StreamVisitor* visitor, ParserLimits limits = {});

  // Parses `data`. After the first error every later call returns it again.
  Status Feed(std::span<const uint8_t> data);
  // End of input: OK only at a record boundary after the headers.
  Status Finish() const;

  bool at_record_boundary() const {
    return (state_ == State::kRecordHeader && buf_.empty()) || state_ == State::kDone;
  }
  bool saw_end() const { return state_ == State::kDone; }
  uint32_t version() const { return version_; }
  uint32_t domain_type() const { return domain_type_; }
  uint16_t xen_major() const { return xen_major_; }
  uint16_t xen_minor() const { return xen_minor_; }
  const ParserStats& stats() const { return stats_; }

 private:
  enum class State { kImageHeader, kDomainHeader, kRecordHeader, kBody, kPadding,
                     kPageHeader, kPfns, kPages, kDone, kFailed };
  Status Fail(Status s);
  Status OnHeaderComplete();
  Status OnRecordHeader();
  Status OnBodyComplete();
  Status OnPfnsComplete();
  Status NextDataPage();

  StreamVisitor* visitor_;
  ParserLimits limits_;
  State state_ = State::kImageHeader;
  Status error_;
  ParserStats stats_;
  uint32_t version_ = 0, domain_type_ = 0;
  uint16_t xen_major_ = 0, xen_minor_ = 0;

  std::vector<uint8_t> buf_;  // header / body / skeleton being assembled
  size_t need_ = 0;           // bytes buf_ must reach for the current state
  uint32_t rec_type_ = 0, rec_len_ = 0;
  size_t pad_left_ = 0;
  uint32_t count_ = 0;        // pfns in the current PAGE_DATA
  uint32_t next_pfn_ = 0;     // index of the next pfn word to look at
  uint64_t page_pfn_ = 0;     // pfn of the page being received
  std::vector<uint8_t> page_; // partial page across Feed calls
  size_t page_fill_ = 0;
};

// ---- The inverse ------------------------------------------------------------

// Where rebuilt bytes go (the restore pipe, a vector in tests).
using ByteWriter = std::function<Status(std::span<const uint8_t>)>;

// Rebuilds the byte-identical stream from the visitor events. Pages must
// follow their skeleton in skeleton order, but the event order is otherwise
// forgiving: skeletons and records that arrive while an earlier skeleton still
// waits for pages are queued (small) and written once it is complete, so "all
// state first, then all pages" rebuilds the same bytes too. Page bytes are
// never buffered: they go straight to the writer.
class StreamReconstructor : public StreamVisitor {
 public:
  explicit StreamReconstructor(ByteWriter out, ParserLimits limits = {});

  Status OnImageHeader(std::span<const uint8_t> hdr) override;
  Status OnDomainHeader(std::span<const uint8_t> hdr) override;
  Status OnRecord(uint32_t type, std::span<const uint8_t> body) override;
  Status OnPageData(std::span<const uint8_t> skeleton) override;
  Status OnPage(uint64_t pfn, const uint8_t* page) override;
  Status OnCheckpoint() override;

  // Nothing queued and no page outstanding: the output ends at a record boundary.
  bool idle() const { return queue_.empty() && pages_left_ == 0; }
  uint64_t bytes_written() const { return bytes_; }
  // Forget queued items and the half-filled record (the epoch was discarded).
  void Reset();

 private:
  struct Item {
    enum Kind { kRaw, kSkeleton, kCheckpoint } kind;
    std::vector<uint8_t> bytes;  // complete bytes to write (padding included)
  };
  Status Write(std::span<const uint8_t> b);
  Status StartSkeleton(std::span<const uint8_t> skeleton);
  Status Drain();
  Status Enqueue(Item::Kind kind, std::span<const uint8_t> bytes, size_t pad);

  ByteWriter out_;
  ParserLimits limits_;
  std::deque<Item> queue_;
  std::vector<uint64_t> want_;  // pfns (with data) the current skeleton awaits
  size_t want_next_ = 0;
  size_t pages_left_ = 0;
  uint64_t bytes_ = 0;
};

// Validates a PAGE_DATA skeleton (as emitted by OnPageData) and returns the
// pfns that carry data, in order.
Result<std::vector<uint64_t>> SkeletonDataPfns(std::span<const uint8_t> skeleton,
                                               const ParserLimits& limits = {});

// ---- STATE envelope ---------------------------------------------------------
//
// The primary ships every non-page item as one CheckpointSender STATE record:
//   u8 'X', u8 '2', u8 kind, u8 0, then the payload:
//   kind 1 image header (24 B), 2 domain header (16 B),
//   3 record: record header + body (no padding; body_length must match),
//   4 PAGE_DATA skeleton: record header + count/reserved + pfn words,
//   5 Romulus domain info ("key=value\n" lines: name, uuid, max_vcpus,
//     max_memkb, target_kb, ...), sent first in epoch 1 so the backup can
//     create the domain before the stream starts; not part of the v2 stream,
//   6 device-model state: an HVM guest's QEMU device state of this epoch
//     (QEMU's own stream, "QEVM"), once per epoch before its end, so the
//     epoch digest covers it and the backup keeps it with memory N
//     (docs/DEVICE-MODEL.md §4); not part of the v2 stream either.
// CHECKPOINT is never shipped: the epoch end is the checkpoint, and the
// backup writes the CHECKPOINT record itself when it commits the epoch.
enum class EnvelopeKind : uint8_t {
  kImageHeader = 1,
  kDomainHeader = 2,
  kRecord = 3,
  kSkeleton = 4,
  kDomainInfo = 5,
  kDeviceModelState = 6,
};
constexpr size_t kEnvelopeHeaderSize = 4;

// Appends the envelope for (kind, payload) to `out` (cleared first).
void WrapEnvelope(EnvelopeKind kind, std::span<const uint8_t> payload, std::vector<uint8_t>* out);
// Same for a record given as type + body.
void WrapRecord(uint32_t type, std::span<const uint8_t> body, std::vector<uint8_t>* out);
// Decodes one envelope and passes it to the visitor (OnImageHeader, ...).
// Domain-info and device-model envelopes are valid and ignored: they are
// not part of libxenguest's stream (the caller handles them).
Status DispatchEnvelope(std::span<const uint8_t> blob, StreamVisitor* visitor);

// The kind of a well-formed envelope, or 0.
uint8_t EnvelopeKindOf(std::span<const uint8_t> blob);

// Big-endian loads: only the image header is big-endian (Xen's
// docs/specs/libxc-migration-stream.pandoc); every record after it is
// little-endian, read with common/little_endian.h.
uint32_t LoadBe32(const uint8_t* p);
uint64_t LoadBe64(const uint8_t* p);

}  // namespace romulus::xen

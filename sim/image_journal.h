// On-disk pieces of an ImageSink checkpoint (docs/IMAGE-FORMAT.md): the
// PATH.state file, the PATH.journal redo record, and the commit steps a test
// can crash at.
//
// Everything here is file plumbing with no sink state: the sink (image_sink.cc)
// drives the commit protocol, the read-only inspector (image_view.cc) and the
// sink's recovery at Open both decode with the same functions, so "what a
// crash recovers to" has one definition.
//
// Every failure of a local file operation is Status::Storage (Code::kStorage):
// the backup's own disk, never the network.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/positional_io.h"
#include "common/status.h"
#include "restore/disk_staging.h"

namespace romulus::sim {

inline constexpr uint64_t kImagePage = 4096;
inline constexpr size_t kMaxImageIdentity = 4096;
// A pfn table entry with this bit set is an all-zero page: the apply punches
// a hole instead of writing (its bytes are still in the record).
inline constexpr uint64_t kJournalZeroPage = uint64_t{1} << 63;

// ---------------------------------------------------------------------------
// Kill-points inside a commit, in the order a commit passes them (see
// docs/IMAGE-FORMAT.md). ImageSinkOptions::crash_at = X raises SIGKILL when
// the commit reaches X, so a test (or `restore --kill-at-commit X`) can prove
// that every step recovers to exactly one checkpoint.
enum class CommitStep {
  kNone = 0,
  kJournalPages,    // half of the record's pages are in the journal
  kJournalBody,     // the whole record is written, no commit marker yet
  kStateTmp,        // PATH.state.tmp is written (space for it is reserved)
  kJournalMarker,   // the commit marker is written: the commit point
  kApplyHalf,       // half of the pages are applied to the image
  kApplied,         // all pages applied, PATH.state still the old one
  kStateRename,     // PATH.state replaced, journal not yet reset
  kJournalReset,    // journal reset: the commit is complete
};

// "journal-pages", ... (kNone is not listed).
const std::vector<std::string>& CommitStepNames();
const char* CommitStepName(CommitStep step);
bool ParseCommitStep(const std::string& name, CommitStep* out);
// raise(SIGKILL) if at == step (never returns then).
void CrashIfAt(CommitStep at, CommitStep step);

// ---------------------------------------------------------------------------
// PATH.state

// A disk kept next to the image (PATH.disk<id>, docs/IMAGE-FORMAT.md).
struct DiskState {
  uint32_t id = 0;
  uint64_t size = 0;
  std::string name;
  // The whole-disk digest of the committed disk (DiskFileDigest's rule);
  // only kept for disks up to kMaxDigestedDisk (see image_sink.h).
  bool has_digest = false;
  uint64_t digest = 0;
  // What the disk holds (docs/DISK.md §7.2): the content front end
  // `lineage` had at its tag `tag`; 0, 0 when not known.
  uint64_t lineage = 0;
  uint64_t tag = 0;
};
inline constexpr size_t kMaxImageDisks = 8;
inline constexpr size_t kMaxImageDiskName = 64;

struct StateFile {
  bool committed = false;
  uint64_t epoch = 0;
  uint64_t pages = 0;
  uint64_t digest = 0;
  std::string identity;
  std::vector<uint8_t> state;
  std::vector<DiskState> disks;  // format version 2 (3 with a lineage or tag) when not empty
};

// Serialises into *out (capacity reused).
void EncodeStateFile(const StateFile& sf, std::vector<uint8_t>* out);
// Checks magic, version, lengths (bounded by max_state) and checksum.
Status DecodeStateFile(std::span<const uint8_t> bytes, size_t max_state, const std::string& what, StateFile* out);
// Reads and decodes path; a missing file is ok() with *exists = false.
Status ReadStateFile(const std::string& path, size_t max_state, bool* exists, StateFile* out);
// Writes bytes to path + ".tmp" (fsync if durable); the caller renames.
Status WriteStateTmp(const std::string& path, std::span<const uint8_t> bytes, bool durable);
// rename(path.tmp, path), then fsync of the directory if durable.
Status InstallStateTmp(const std::string& path, bool durable);
// fsync of the directory holding path (a new or renamed name is durable).
Status SyncDirOf(const std::string& path);

// ---------------------------------------------------------------------------
// PATH.journal: at most one redo record, at offset 0.

struct JournalRecord {
  bool present = false;   // a valid header (a record was begun)
  bool complete = false;  // header, body and commit marker all check out
  uint64_t epoch = 0;
  uint64_t guest_pages = 0;
  std::vector<uint64_t> pfns;       // with kJournalZeroPage flags
  std::vector<uint8_t> state_file;  // the PATH.state bytes of the epoch
  uint64_t pages_offset = 0;        // file offset of page i = pages_offset + i * 4096
  // Version 2: the epoch's disk records (the DiskEntry encoding below),
  // disk_len bytes at disk_offset, after the pages, applied in order after
  // them. Read from the file when used (ForEachDiskEntryInFile): a section
  // is as large as the epoch's disk data, spilled epochs included.
  uint64_t disk_offset = 0;
  uint64_t disk_len = 0;
};

// ---------------------------------------------------------------------------
// Disk records as staged and journaled: the encoding is restore/disk_staging.h
// (shared with the Xen backup's disks). Flush records are never journaled:
// the image's unit of durability is the commit.
using restore::DiskEntry;
using restore::EncodeDiskEntryHead;
using restore::ForEachDiskEntry;
using restore::ForEachDiskEntryInFile;
using restore::kDiskEntryHead;
using restore::kDiskEntryWrite;
using restore::kDiskEntryZero;

// Lays out one record. The caller writes the head, then the pages, then the
// marker, at the offsets given (see docs/IMAGE-FORMAT.md).
struct JournalLayout {
  std::vector<uint8_t> head;  // header block + pfn table + state file, padded to a page
  uint64_t pages_offset = 0;
  uint64_t disk_offset = 0;
  uint64_t marker_offset = 0;
};
// disk_bytes > 0 (or with_disks) writes a version-2 record whose disk
// section of disk_bytes follows the pages (disk_offset); the marker follows it.
void BuildJournalHead(uint64_t epoch, uint64_t guest_pages, std::span<const uint64_t> pfns,
                      std::span<const uint8_t> state_file, JournalLayout* out, uint64_t disk_bytes = 0,
                      bool with_disks = false);
// The 32-byte commit marker; body_hash is XXH3 over head and pages.
std::vector<uint8_t> BuildJournalMarker(uint64_t epoch, uint64_t body_hash);

// Reads the record of an open journal (O_RDONLY is enough). An absent or
// invalid header is present = false; a record whose marker or body hash does
// not check out is present, not complete. Bounded by max_pages/max_state
// before anything is allocated.
Status ReadJournal(int fd, uint64_t max_pages, size_t max_state, JournalRecord* out);
// Invalidates the record in place (zeroes its header), fdatasync if durable.
Status ResetJournal(int fd, bool durable);

// ---------------------------------------------------------------------------
// Plumbing shared by the sink and the inspector.

using romulus::PreadAll;  // common/positional_io.h
using romulus::PwriteAll;
using romulus::PwritevAll;
bool IsZeroImagePage(const uint8_t* page);

}  // namespace romulus::sim

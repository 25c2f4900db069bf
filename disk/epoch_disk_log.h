// EpochDiskLog: the replication engine's DiskWriteSink for one disk
// (docs/DISK.md §2, §3, §5). It keeps the records of the open epochs — what
// the front end reported, tagged — in bounded memory, and hands the engine
// one epoch's records at a time once that epoch is sealed.
//
//   front end thread (I/O path)        engine thread
//   OnWrite/OnZero/OnFlush/…  ──▶ open log ──Seal(N)──▶ sealed records of N
//                                                        ForEachSealed(…)
//
// Memory: one byte budget (options.budget_bytes) bounds the data of the
// open epochs. Two arenas (open and sealed) are reused from epoch to epoch;
// they grow geometrically up to the budget and every growth is counted
// (stats().reallocations), so a steady state allocates nothing.
//
// When an epoch's writes do not fit, its records are NOT kept partially:
// the log stops recording, and Seal of that epoch (or a later one) fails
// with a status that says the session needs a resync (the engine ends the
// session with ERROR kResync). Nothing of an incomplete epoch is ever sent.
//
// A failed write (OnWriteFailed) leaves its range's content unknown. The
// log re-reads the range from the store right there, on the front end's
// thread before the request's tag is released: the front end executes one
// request at a time, so that read sees exactly the writes tagged up to this
// one and never a write of a later epoch (§4). If that read fails too, the
// epoch cannot be captured (resync, as above).
//
// A write whose bytes are all zero travels as a ZERO record (no data).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "disk/backing_store.h"
#include "disk/dirty_regions.h"
#include "disk/write_sink.h"
#include "protocol/disk_digests.h"
#include "protocol/disk_records.h"

namespace romulus::disk {

struct EpochDiskLogOptions {
  // Bytes of write data the open epochs may hold (per disk).
  uint64_t budget_bytes = uint64_t{64} << 20;
};

struct EpochDiskLogStats {
  uint64_t records = 0;        // records logged (all epochs)
  uint64_t write_bytes = 0;    // data bytes logged
  uint64_t zero_writes = 0;    // writes that were all zeros, logged as ZERO
  uint64_t failed_rereads = 0; // failed writes whose range was re-read
  uint64_t reallocations = 0;  // arena growths (steady state: none)
  uint64_t high_water = 0;     // most data bytes the open log held
};

class EpochDiskLog final : public DiskWriteSink {
 public:
  // store: re-read failed ranges from it (on the front end's thread; may be
  // null, then a failed write makes the epoch need a resync).
  EpochDiskLog(uint32_t disk_id, BackingStore* store, EpochDiskLogOptions options = {});

  // DiskWriteSink: the front end's thread.
  void OnWrite(uint64_t epoch, uint64_t offset, std::span<const uint8_t> bytes, bool fua) override;
  void OnZero(uint64_t epoch, uint64_t offset, uint64_t length, bool trim, bool fua) override;
  void OnFlush(uint64_t epoch) override;
  void OnWriteFailed(uint64_t epoch, uint64_t offset, uint64_t length) override;

  // Sets the store failed ranges are re-read from, when it exists only
  // after the log (the simulated guest opens its store with the log as its
  // sink). REQUIRES: before the front end's first request.
  void AttachStore(BackingStore* store) { store_ = store; }
  // Keeps, beside the records, which regions of a disk of `disk_bytes` each
  // tag wrote (DirtyRegions), whatever happens to the records (Reset, a
  // lost epoch), so that a backup holding the disk as of a tag can be
  // brought up to date with the regions changed since (docs/DISK.md §7.2).
  // REQUIRES: before the front end's first request.
  void TrackChanges(uint64_t disk_bytes);
  bool tracks_changes() const { return changes_ != nullptr; }
  // Marks [offset, offset+length) as written with tag `tag` without logging
  // a record: a front end whose records are not wanted (no replicator
  // attached) still says what changed. Any thread; no-op unless tracking.
  void MarkChanged(uint64_t tag, uint64_t offset, uint64_t length);

  // ---- Engine thread ----
  // Forgets everything (a new session: its first epoch starts from a full
  // copy of the disk).
  void Reset();
  // Appends the whole disk as records of `epoch`: WRITE for data, ZERO for
  // 4 KiB blocks that read as zeros and for the store's holes (not read). REQUIRES: no request of this disk is in
  // flight or can start until it returns (the simulated guest is paused;
  // an NBD front end would have to be held — not provided yet). Fails like
  // Seal (resync) when the disk does not fit the budget.
  Status CaptureFullCopy(uint64_t epoch, BackingStore* store);
  // Appends [offset, offset+length) of the disk as records of `epoch`, as
  // CaptureFullCopy does the whole disk: one step of the streaming sync
  // (DISK.md §7.1). REQUIRES: no request of this disk executes until it
  // returns (the caller holds the front end), and `epoch` is the clock's
  // current tag taken under that hold: every write that executed before
  // has a tag <= epoch, every later one a tag >= epoch, so replaying the
  // log in order never lets the copy overwrite a later write. Any thread.
  // InvalidArgument for a range beyond the disk; fails like Seal (resync)
  // when the records do not fit the budget.
  Status CaptureRange(uint64_t epoch, BackingStore* store, uint64_t offset, uint64_t length);
  // As CaptureRange, but each chunk (protocol::kDiskChunkBytes, aligned)
  // whose content hashes to `backup`'s entry for it is left out: the
  // backup's copy holds it already (DISK_DIGESTS, docs/DISK.md §7.4).
  // Adds the bytes left out to *skipped. REQUIRES as CaptureRange, offset
  // chunk-aligned, `backup` one entry per chunk of the disk (else
  // InvalidArgument, nothing captured).
  Status CaptureUnlike(uint64_t epoch, BackingStore* store, uint64_t offset, uint64_t length,
                       const protocol::DiskChunkTable& backup, uint64_t* skipped);
  // A new session's copy of only the regions the front end wrote with a
  // tag > `since` (its backup holds the disk as of `since`): forgets every
  // record (as Reset) and appends those regions as CaptureFullCopy does the
  // whole disk. Returns how many regions were captured. Same REQUIRES as
  // CaptureFullCopy. Unsupported, capturing nothing, when no changes are
  // tracked or marks after `since` were forgotten (copy the whole disk).
  Result<uint64_t> CaptureChangedSince(uint64_t epoch, BackingStore* store, uint64_t since);
  // Whether CaptureChangedSince(since) could answer now (changes tracked,
  // none after `since` forgotten).
  bool ChangesKnownSince(uint64_t since) const;
  // The least `since` ChangesKnownSince accepts (marks of tags up to it
  // were forgotten); 0 when nothing was forgotten or no changes are tracked.
  uint64_t changes_forgotten_through() const;
  // The backup committed `tag`: change marks of tags <= tag are dropped.
  void ForgetChangesThrough(uint64_t tag);
  // Data bytes the open epochs hold now (the copier's pacing reads it).
  uint64_t open_bytes() const;
  uint64_t budget_bytes() const { return options_.budget_bytes; }
  // Moves the records tagged <= epoch out of the open log. REQUIRES:
  // Drained(epoch) on the disk's clock. Errors: the epoch could not be
  // captured (budget, failed re-read): the session needs a resync.
  Status Seal(uint64_t epoch);
  // The records of the last Seal, in stream order; their data stays valid
  // until the next Seal.
  void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const;
  uint64_t sealed_records() const { return sealed_.size(); }

  uint32_t disk_id() const { return disk_id_; }
  EpochDiskLogStats stats() const;

 private:
  struct Entry {
    uint64_t epoch = 0;
    protocol::DiskRecordKind kind = protocol::DiskRecordKind::kFlush;
    uint8_t flags = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
    size_t data_at = 0;  // kWrite: where its bytes start in the arena
  };
  // Appends one record (data: kWrite bytes). REQUIRES: mu_ held.
  void AppendLocked(uint64_t epoch, protocol::DiskRecordKind kind, uint8_t flags, uint64_t offset,
                    uint64_t length, std::span<const uint8_t> data) REQUIRES(mu_);
  void AppendZeroRunLocked(uint64_t epoch, uint64_t from, uint64_t to) REQUIRES(mu_);
  void LostLocked(uint64_t epoch, std::string why) REQUIRES(mu_);
  void ResetLocked() REQUIRES(mu_);
  struct CaptureCursor;
  Status CaptureChunk(uint64_t epoch, BackingStore* store, uint64_t pos, uint32_t n, CaptureCursor& c,
                      const char* what);
  // CaptureChunk's second half: `data` (read from pos) as records.
  Status CaptureData(uint64_t epoch, uint64_t pos, std::span<const uint8_t> data, CaptureCursor& c,
                     const char* what);
  Status CaptureFinish(uint64_t epoch, uint64_t end, CaptureCursor& c, const char* what);
  // The one copy loop of CaptureFullCopy and CaptureRange (arguments checked).
  Status CaptureSpan(uint64_t epoch, BackingStore* store, uint64_t offset, uint64_t length, const char* what);
  static uint64_t CaptureChunkBytes(const BackingStore& store);

  const uint32_t disk_id_;
  BackingStore* store_;  // set before the front end starts, then only read
  const EpochDiskLogOptions options_;

  mutable std::mutex mu_;
  std::vector<Entry> open_ GUARDED_BY(mu_);
  std::vector<uint8_t> open_data_ GUARDED_BY(mu_);
  // The first epoch that could not be captured (0: none), and why.
  uint64_t lost_epoch_ GUARDED_BY(mu_) = 0;
  std::string lost_why_ GUARDED_BY(mu_);
  EpochDiskLogStats stats_ GUARDED_BY(mu_);
  // Set by TrackChanges before the front end starts; its content under mu_.
  std::unique_ptr<DirtyRegions> changes_;
  void MarkLocked(uint64_t epoch, uint64_t offset, uint64_t length) REQUIRES(mu_) {
    if (changes_) changes_->Mark(epoch, offset, length);
  }

  // Engine thread only.
  std::vector<Entry> sealed_;
  std::vector<uint8_t> sealed_data_;
  std::vector<uint8_t> reread_;  // OnWriteFailed's copy of the re-read range (front end thread)
};

}  // namespace romulus::disk

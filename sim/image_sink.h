// ImageSink: the backup's GuestSink for the simulated guest (and any guest
// whose checkpoint is "memory image + opaque state").
//
// The image is a sparse file (--image PATH) sized to the guest, or, with an
// empty path, anonymous memory (tests, benchmarks). Next to it, PATH.state
// says what the image is (guest size, identity, last committed epoch, its
// state blob and memory digest) and PATH.journal holds at most one redo
// record. docs/IMAGE-FORMAT.md describes the three files, the commit protocol
// step by step and the recovery at Open.
//
// Crash-atomic commit. Commit(N) appends N's pages and PATH.state bytes to
// the journal, reserves the image blocks the apply needs (fallocate) and
// writes PATH.state.tmp, then writes the commit marker: the commit point.
// Only then are the pages applied to the image (pwrite, zero pages punched as
// holes), PATH.state renamed into place and the journal reset. Open replays a
// complete record (idempotent) and drops an incomplete one, so after a crash,
// power loss (durable) or ENOSPC/EIO at any step the files hold exactly one
// committed checkpoint: N-1 or N. A failure before the commit point leaves the
// sink at N-1 in the process too (digest, Activate); one after it leaves N
// committed in the journal and the sink re-applies it before its next use.
// Local file failures are Status::Storage (Code::kStorage), never kIoError.
//
// No SIGBUS: the image is only ever written with pwrite/fallocate; the
// mapping behind image() is read-only and never extends past the file.
//
// Lock: Open takes flock(LOCK_EX|LOCK_NB) on the image for the sink's life;
// a second sink on the same path fails with "in use" before touching it.
//
// Staging. Pages of the epoch being received are copied into two reusable
// ReusableBuffers (pfns, page bytes) whose capacity is kept across epochs, so
// after the largest epoch has been seen no further allocation happens
// (staging_reallocations() stops moving). A pfn sent twice in one epoch
// overwrites its staged slot (a per-pfn slot index, 4 bytes per guest page),
// so staging never exceeds one copy of the guest. Discard() drops staging
// and leaves the image at the last commit.
//
// First-epoch shortcut. Until the first commit the image holds nothing anyone
// could resume from (Activate refuses, PATH.state says "no committed epoch"),
// so the pages of that epoch, the full synchronisation, are written straight
// into the image, all-zero pages skipped where the image has a hole: no
// guest-sized staging and no journal for the largest epoch of all. Once
// anything is committed, every later epoch (including a resync after a
// reconnect) goes through the journal.
//
// Resumable sync. held_pages() is the digest: one PageHash per page of what
// the image holds, committed or left by an unfinished first sync (kept by
// BeginSession for a guest of the same size, also across a restart: Open
// reads it from the data ranges). The receiver sends it to the primary
// (HELD, docs/PROTOCOL.md §3.9), which then sends only the pages that differ.
//
// digest() is the MemoryDigest of the committed image (always equal to a
// from-scratch digest of it), updated O(applied pages) per epoch; after
// Commit(N) it equals the primary's digest at N.
//
// Sessions and sizes. BeginSession with the size the image already has keeps
// the committed data (it is what failover would use until the new session
// commits). A different size is refused while the image holds committed data
// unless options.start_over; without committed data the image is simply
// resized (and zeroed). Open() refuses a non-empty existing file that has no
// valid PATH.state (it is not ours: never overwrite an unknown file) unless
// start_over. An image whose digest does not match PATH.state is treated as
// holding no committed data, and recovery_note() says so.
//
// Durability: by default a commit survives the backup process dying (the
// page cache holds the writes); options.durable adds fsync/fdatasync at each
// ordering point of the protocol so it also survives the host losing power.
//
// Activation resumes a simulated guest: the committed identity is parsed as a
// SimSpec and a SimGuest is restored from the image and the committed state,
// then (options.run_activated) its workload thread started.
//
// Disks (docs/DISK.md §6, docs/IMAGE-FORMAT.md). Each disk of the session
// is a sparse file PATH.disk<id> (anonymous memfds without a path), sized at
// BeginSession; a different disk list or size while committed data exists
// is refused unless start_over, as for memory. An epoch's disk records are
// staged in one reusable buffer bounded by max_disk_staging_bytes (beyond
// it the epoch is refused, OutOfRange → ERROR resource: memory stays bounded
// whatever the primary sends), journaled in the SAME record as the epoch's
// pages (a version-2 record with a disk section), committed by the same
// marker and applied after the pages. The first-epoch shortcut writes disk
// records straight into the disk files too (nothing committed can be lost).
// PATH.state lists the disks with the whole-disk digest of each committed
// disk up to kMaxDigestedDisk bytes (computed per commit from the old and new
// contents of the blocks the epoch touched: O(touched bytes) reads).
//
// Threading: the GuestSink calls come from one thread (the receiver);
// has_committed(), last_committed_epoch() and digest() may be read from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "buffer/reusable_buffer.h"
#include "common/digest.h"
#include "common/status.h"
#include "protocol/disk_records.h"
#include "restore/disk_staging.h"
#include "restore/guest_sink.h"
#include "sim/image_journal.h"
#include "sim/sim_guest.h"

namespace romulus::sim {

struct ImageSinkOptions {
  std::string path;          // "" = anonymous memory, no state file
  bool start_over = false;   // ignore/discard whatever an existing image holds
  bool durable = false;      // fsync/fdatasync at every ordering point of a commit
  bool run_activated = true; // Activate() starts the resumed guest's workload thread
  // Opens the resumed guest's disk (a copy of the checkpoint's, at `path`),
  // before its workload starts; null: guest.OpenDisk(path), its writes
  // untagged. A reverse replication needs them tagged and logged, so it
  // passes its epoch clock and log here (docs/DISK.md §8b), decided at the
  // activation as the Xen backup decides its disks' devices.
  std::function<Status(SimGuest& guest, const std::string& path)> open_activated_disk;
  size_t max_state_bytes = size_t{1} << 20;  // per epoch; more is OutOfRange
  CommitStep crash_at = CommitStep::kNone;   // raise(SIGKILL) at this step of a commit (tests)
  // Staged disk records of one epoch (heads + write bytes) in memory; more
  // is spilled to a file beside the image up to max_disk_spill_bytes (0 =
  // no spilling, and never for an anonymous image); more than both is refused.
  size_t max_disk_staging_bytes = size_t{64} << 20;
  uint64_t max_disk_spill_bytes = 0;
};

// Disks up to this size keep a whole-disk digest in PATH.state (its
// per-commit cost is bounded by the disk's size; larger disks: none kept).
inline constexpr uint64_t kMaxDigestedDisk = uint64_t{64} << 20;

class ImageSink : public restore::GuestSink {
 public:
  static Result<std::unique_ptr<ImageSink>> Open(const ImageSinkOptions& options);
  ~ImageSink() override;

  ImageSink(const ImageSink&) = delete;
  ImageSink& operator=(const ImageSink&) = delete;

  // GuestSink.
  Status BeginSession(uint64_t guest_pages, const std::string& identity) override;
  bool supports_disks() const override { return true; }
  Status BeginSessionWithDisks(uint64_t guest_pages, const std::string& identity,
                               std::span<const protocol::DiskInfo> disks) override;
  // Staged (or written directly in the first epoch); FLUSH records are not
  // kept (the commit is the unit of durability). Corruption for an unknown
  // disk or a range beyond it; OutOfRange beyond max_disk_staging_bytes.
  Status OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record) override;
  // Corruption for pfn >= guest pages, an epoch at or below the last one
  // committed in this session, or pages of two epochs mixed in one staging.
  Status OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) override;
  // The epoch's state is the concatenation of its state records; an epoch
  // without any keeps the previous epoch's state.
  Status OnState(uint64_t epoch, std::span<const uint8_t> record) override;
  // Crash-atomic (see above). A failure returns Storage (local disk) and the
  // receiver must not ack the epoch; before the commit point the sink stays
  // at the previous epoch, after it the epoch is committed (journal) and
  // re-applied at the sink's next use or Open.
  Status Commit(uint64_t epoch) override;
  // kCapDiskSync: agreed only while nothing is committed (direct mode).
  bool supports_disk_sync() const override { return true; }
  // kCapDiskDelta: each committed disk's lineage and tag are kept in
  // PATH.state (version 3) with the commit that made them true.
  bool supports_disk_delta() const override { return true; }
  std::vector<protocol::DiskHeld> held_disks() const override;
  void StageDiskLineage(uint32_t disk_id, uint64_t lineage, uint64_t tag) override;
  // kCapDiskDigests: the session's disk file as it is (the committed disk,
  // or what an unfinished first sync wrote), chunk by chunk.
  bool supports_disk_digests() const override { return true; }
  Status DescribeDisk(uint32_t disk_id, uint64_t first_chunk, std::span<protocol::ChunkHash> out) override;
  Status CommitIncomplete(uint64_t epoch) override;
  // Epochs applied by CommitIncomplete (a disk still being copied).
  uint64_t incomplete_commits() const { return incomplete_commits_; }
  void Discard() override;
  Status Activate(const std::string& reason) override;
  bool has_committed() const override { return has_committed_.load(std::memory_order_acquire); }
  // The digest, while it describes the image page by page (always, but after
  // a failed direct write: then nullptr until the next zeroed image).
  const MemoryDigest* held_pages() const override { return digest_known_ ? digest_.get() : nullptr; }
  uint64_t last_committed_epoch() const override { return last_committed_.load(std::memory_order_acquire); }

  // MemoryDigest value of the image (see above).
  uint64_t digest() const { return digest_value_.load(std::memory_order_acquire); }
  // From scratch, read with pread (holes count as zero pages without being
  // read): for verification.
  uint64_t ComputeImageDigest() const;
  uint64_t guest_pages() const { return pages_; }
  const uint8_t* image() const { return image_; }
  const std::string& path() const { return options_.path; }
  std::string state_path() const { return options_.path + ".state"; }
  std::string journal_path() const { return options_.path + ".journal"; }
  // The committed epoch's identity and state blob.
  const std::string& committed_identity() const { return committed_identity_; }
  std::span<const uint8_t> committed_state() const { return committed_state_; }
  // Pages staged for the epoch in progress (0 in the first-epoch shortcut).
  uint64_t staged_pages() const { return staged_count_; }
  // Growths of the staging buffers since Open (all sizes, all sessions).
  uint64_t staging_reallocations() const;
  // What Open recovered ("" for a clean image or a new one): a replayed or
  // dropped journal record, or why an existing image was not taken as committed.
  const std::string& recovery_note() const { return recovery_note_; }
  // A committed epoch whose apply failed is waiting to be re-applied.
  bool replay_pending() const { return replay_pending_; }
  // PATH.disk<id> (the disk files next to the image).
  std::string disk_path(uint32_t id) const { return options_.path + ".disk" + std::to_string(id); }
  // The committed disks (ids, sizes, names, whole-disk digests).
  const std::vector<DiskState>& committed_disks() const { return committed_disks_; }
  // An open fd of the session's or the committed disk `id`, or -1.
  int disk_fd(uint32_t id) const;
  // Bytes of disk records staged for the epoch in progress.
  uint64_t staged_disk_bytes() const { return disk_staged_ ? disk_staged_->size() : 0; }
  uint64_t spilled_disk_bytes() const { return disk_staged_ ? disk_staged_->spilled_bytes() : 0; }
  // Changes the kill-point of later commits (tests; see ImageSinkOptions).
  void set_crash_at(CommitStep step) { options_.crash_at = step; }
  // The guest Activate() resumed (nullptr before); owned by the sink.
  SimGuest* activated_guest() { return activated_.get(); }
  const std::string& activation_reason() const { return activation_reason_; }

 private:
  explicit ImageSink(const ImageSinkOptions& options);
  Status LockAndOpen();
  Status LoadExisting();
  Status RecoverJournal();
  Status MapImage(uint64_t pages, bool zero);
  void UnmapImage();
  void ResetDigestFromImage();
  // pread of whole pages (the memory image: memcpy). The sink never reads
  // its own image through the mapping: on tmpfs a read fault on a hole
  // allocates, and on a full tmpfs that is a SIGBUS.
  Status ReadPages(uint64_t pfn, uint64_t count, uint8_t* out) const;
  Status WriteStateFile(const StateFile& sf, bool committing);
  StateFile StagedStateFile() const;
  Status CheckEpoch(uint64_t epoch, const char* what);
  Status EnsureApplied();
  Status WritePageDirect(uint64_t pfn, const uint8_t* page);
  Status CommitDirect(uint64_t epoch);
  Status CommitStaged(uint64_t epoch);
  Status ReserveImageBlocks();
  Status WriteRecord();
  Status ApplyStaged();
  Status FailBeforeCommitPoint(const Status& s, uint64_t epoch);
  void FinishCommit(uint64_t epoch);
  void RollBackDigest();
  void ClearStaging();
  Result<int> OpenDisk(uint32_t id, bool create);
  Status PrepareDiskDigests();
  Status ApplyDiskSection();
  Status SyncDisks();

  ImageSinkOptions options_;
  int fd_ = -1;          // the image, flock'ed for the sink's life
  int journal_fd_ = -1;  // PATH.journal
  uint8_t* image_ = nullptr;  // read-only shared mapping of fd_ (anonymous read-write without a path)
  uint64_t pages_ = 0;
  std::unique_ptr<MemoryDigest> digest_;
  std::atomic<uint64_t> digest_value_{0};
  // digest_ holds the PageHash of every page of the image (what HELD tells
  // the primary); false after a direct write failed half-way.
  bool digest_known_ = false;

  // Committed.
  std::atomic<bool> has_committed_{false};
  std::atomic<uint64_t> last_committed_{0};
  std::string committed_identity_;
  std::vector<uint8_t> committed_state_;
  bool replay_pending_ = false;  // journal holds the committed epoch, image not yet applied

  // Session.
  bool in_session_ = false;
  bool session_committed_ = false;  // a commit happened in this session
  uint64_t incomplete_commits_ = 0;
  bool need_resync_ = false;        // a directly written first epoch was discarded
  std::string session_identity_;

  // Staging (epoch being received).
  bool staging_active_ = false;
  bool direct_ = false;  // first-epoch shortcut in use for this epoch
  uint64_t staging_epoch_ = 0;
  std::unique_ptr<buffer::ReusableBuffer> staged_pfns_;   // uint64_t per staged page
  std::unique_ptr<buffer::ReusableBuffer> staged_bytes_;  // 4096 bytes per staged page
  std::unique_ptr<uint32_t[]> slot_;                     // pfn -> staged slot, or kNoSlot
  uint64_t staged_count_ = 0;
  uint64_t retired_reallocations_ = 0;  // from staging buffers of earlier sizes
  std::vector<uint8_t> staged_state_;
  bool staged_has_state_ = false;
  // Bitmap: pfns whose image block holds data we wrote (the others are holes,
  // or blocks we do not know of). Decides which zero pages need a punch and
  // which blocks a commit must reserve before its commit point.
  std::vector<uint64_t> allocated_;

  // Commit scratch, reused at every commit.
  std::vector<uint64_t> record_pfns_;    // staged pfns, kJournalZeroPage on zero pages
  std::vector<uint8_t> state_file_buf_;
  JournalLayout layout_;
  uint64_t record_hash_ = 0;        // XXH3 of the record's head and pages
  bool reserve_supported_ = true;   // the filesystem has fallocate
  std::vector<uint64_t> sorted_pfns_;
  std::vector<uint64_t> apply_order_;  // staged slots in pfn order
  // Disks: open fds by id (kept for the sink's life), the session's disks
  // (digests: what the files hold as of the last commit), the committed
  // list, the list the staged epoch would commit, and the staged records.
  std::vector<std::pair<uint32_t, int>> disk_fds_;
  std::vector<DiskState> session_disks_;
  std::vector<DiskState> committed_disks_;
  std::vector<DiskState> staged_disks_;
  std::unique_ptr<restore::DiskStaging> disk_staged_;
  std::string recovery_note_;
  std::unique_ptr<SimGuest> activated_;
  std::string activation_reason_;
};

}  // namespace romulus::sim

// GuestSink: where the backup puts checkpoints.
//
// The receiver decodes each epoch's frames and hands the sink pages and state
// records in stream order (OnPage / OnState), all belonging to the epoch being
// received, which is NOT yet committed: the sink stages them. When the whole
// epoch has arrived and its digest verified, the receiver calls Commit(N) and
// only then acks N to the primary. Commit must make N the state Activate()
// resumes from, atomically: a partial epoch is never applied. Discard() drops
// a staged, unverified epoch (connection lost or digest mismatch).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/digest.h"
#include "common/status.h"
#include "protocol/disk_records.h"
#include "protocol/disk_digests.h"
#include "protocol/messages.h"

namespace romulus::restore {

class GuestSink {
 public:
  virtual ~GuestSink() = default;

  // A new primary session (handshake accepted). guest_pages is the size the
  // primary announced; identity names the guest. A sink may refuse a guest it
  // cannot hold. resync = true when this session replaces an earlier one.
  virtual Status BeginSession(uint64_t guest_pages, const std::string& identity) = 0;

  // Disks (docs/DISK.md §6, PROTOCOL.md §3.10). The receiver agrees kCapDisk
  // only when supports_disks(); a primary that requires it is refused
  // otherwise. With kCapDisk it starts the session with
  // BeginSessionWithDisks (the HELLO's disk list, possibly empty) instead of
  // BeginSession; a sink that holds disks overrides both.
  virtual bool supports_disks() const { return false; }
  virtual Status BeginSessionWithDisks(uint64_t guest_pages, const std::string& identity,
                                       std::span<const protocol::DiskInfo> disks) {
    if (!disks.empty()) return Status::Unsupported("this backup's guest sink cannot hold disks");
    return BeginSession(guest_pages, identity);
  }
  // One record of a validated DISK frame, in stream order, staged with the
  // epoch's pages (never applied before Commit(epoch)). disk_id is one of the
  // session's disks; the record lies inside it; record.data is only valid
  // during the call.
  virtual Status OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record) {
    (void)epoch;
    (void)disk_id;
    (void)record;
    return Status::Unsupported("this backup's guest sink cannot hold disks");
  }
  // Streaming disk copies (kCapDiskSync, docs/DISK.md §7.1): the receiver
  // agrees to them only when supports_disk_sync() and nothing is committed.
  // An epoch whose disks are not whole yet is applied with
  // CommitIncomplete(epoch) instead of Commit: its data is kept like a
  // first sync in progress (the next epochs build on it), but it is not a
  // checkpoint: has_committed() stays false, nothing activates it, and a
  // restart finds no committed epoch. The first whole epoch is Commit()ed.
  virtual bool supports_disk_sync() const { return false; }
  virtual Status CommitIncomplete(uint64_t epoch) {
    (void)epoch;
    return Status::Unsupported("this backup's guest sink cannot keep a partial disk copy");
  }
  // Copies of only what changed (kCapDiskDelta, docs/DISK.md §7.2): the
  // receiver agrees only when supports_disk_delta(). held_disks(), after
  // BeginSessionWithDisks: what each committed disk of the session holds
  // (the content front end `lineage` had at its tag `tag`), the base the
  // first epoch applies on; disks it cannot name are left out (they are
  // copied whole). SetSessionDiskLineages, right after BeginSessionWithDisks
  // (before held_disks() and any record): the session's lineage of each disk
  // in HELLO order (0: none), so a sink whose claims are not crash-atomic
  // with its commits voids the claims of other lineages first. StageDiskLineage, before each Commit/CommitIncomplete:
  // what the disk holds once that epoch is applied (lineage 0: nothing
  // nameable); a sink records it with a whole (Commit) epoch only.
  virtual bool supports_disk_delta() const { return false; }
  // The Xen release (protocol::XenRelease) this sink restores with; 0: not
  // a Xen sink. A primary naming a newer one is refused (kCapXenRelease).
  virtual uint32_t xen_release() const { return 0; }
  virtual std::vector<protocol::DiskHeld> held_disks() const { return {}; }
  virtual Status SetSessionDiskLineages(std::span<const uint64_t> lineages) {
    (void)lineages;
    return Status::Ok();
  }
  virtual void StageDiskLineage(uint32_t disk_id, uint64_t lineage, uint64_t tag) {
    (void)disk_id;
    (void)lineage;
    (void)tag;
  }
  // DISK_DIGESTS (kCapDiskDigests, docs/DISK.md §7.4): after
  // BeginSessionWithDisks, the hashes (protocol::DiskChunkHash) of disk
  // `disk_id`'s chunks from `first_chunk`, as the disk is now: the base the
  // session's first epoch applies on, so a disk copied whole carries only
  // the chunks that differ. Unsupported: this sink cannot describe it.
  virtual bool supports_disk_digests() const { return false; }
  virtual Status DescribeDisk(uint32_t disk_id, uint64_t first_chunk, std::span<protocol::ChunkHash> out) {
    (void)disk_id;
    (void)first_chunk;
    (void)out;
    return Status::Unsupported("this backup's guest sink cannot describe its disks");
  }
  virtual Status OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) = 0;
  virtual Status OnState(uint64_t epoch, std::span<const uint8_t> record) = 0;
  virtual Status Commit(uint64_t epoch) = 0;
  virtual void Discard() = 0;

  // Failover: resume the guest from the last committed epoch.
  virtual Status Activate(const std::string& reason) = 0;
  virtual bool has_committed() const = 0;
  // After BeginSession: what the sink holds now, as per-page hashes (the
  // base the session's first epoch is applied on, committed or not), so the
  // primary sends only the pages that differ (docs/PROTOCOL.md §3.9).
  // nullptr: the sink cannot say, and every page must be sent.
  virtual const MemoryDigest* held_pages() const { return nullptr; }
  virtual uint64_t last_committed_epoch() const = 0;
};

}  // namespace romulus::restore

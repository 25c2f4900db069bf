// DiskTap: what the replication engine (replicator/disk_replicator.h) needs
// of one replicated disk, wherever the disk's front end runs (docs/DISK.md
// §3, §8):
//
//   LocalDiskTap   (disk/local_disk_tap.h)  the front end is in this process:
//                  the simulated guest's writer;
//   RemoteDiskTap  (disk/remote_disk_tap.h) the front end is a long-lived
//                  `romulus disk-export` process (the kernel NBD client's
//                  server), reached over a local socket, so the guest's disk
//                  outlives a replicator that is killed or restarted.
//
// One epoch, as the engine drives it:
//
//   Pause(copy)        the guest of the ending epoch is paused: returns that
//                      epoch's tag; requests read from now on get the next.
//   Seal(tag, …)       before EPOCH_END: waits until no request tagged <= tag
//                      is in flight, then makes that epoch's records the
//                      sealed set;
//   ForEachSealed(fn)  yields them in stream order;
//   sealed_sync_state() says whether they leave the backup's disk whole.
//
// Engine thread only; implementations are not thread-safe across these calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "common/status.h"
#include "protocol/disk_digests.h"
#include "protocol/disk_records.h"
#include "protocol/messages.h"

namespace romulus::disk {

// How a pause starts a session's copy of the disk (docs/DISK.md §7).
enum class CopyMode : uint8_t {
  kNone,     // an ordinary epoch
  kInPause,  // the session's first epoch: the whole disk, read inside this
             // pause, as records of the ending epoch (bounded by the log's
             // budget)
  kStream,   // the session's first epoch: forget the open records and start
             // the streaming copy (§7.1); it runs while the guest does, and
             // sealed_sync_state() says when the backup's disk is whole.
             // REQUIRES: can_stream()
  kChanged,  // the session's first epoch, the backup holding this disk as of
             // one of the tap's own tags (§7.2): as kInPause, but only the
             // regions written after that tag. REQUIRES: lineage() != 0
};

class DiskTap {
 public:
  virtual ~DiskTap() = default;

  // The disk as the HELLO announces it (id, size, name).
  virtual const protocol::DiskInfo& info() const = 0;

  // Whether CopyMode::kStream is available (the backup must agree
  // kCapDiskSync too).
  virtual bool can_stream() const { return false; }

  // Non-zero when the tap tracks which regions each of its tags wrote
  // (CopyMode::kChanged): names the front end whose tags these are, random
  // per front end instance, so a backup's "as of tag T" is only believed
  // for the front end that numbered T (docs/DISK.md §7.2).
  virtual uint64_t lineage() const { return 0; }
  // Before a session's HELLO names lineage(): a front end reached over a
  // connection that broke reconnects now, so the lineage is the instance the
  // session's pauses will reach (an export restarted meanwhile has a new
  // one). Failures are kept for the first Pause to report.
  virtual void Refresh() {}
  // The backup committed the epoch of `tag`: the tap may forget what
  // changed up to it. Any thread.
  virtual void Acked(uint64_t tag) { (void)tag; }
  // With a lineage: a tag F such that Pause(kChanged, since) can answer for
  // every since >= F (the marks before F are forgotten, Acked): a backup
  // holding the disk as of an older tag needs the whole disk, and is asked
  // to describe it (the HELLO's change floor, docs/DISK.md §7.4). Where the
  // front end is remote, as its export says (FLOOR?) or, from an export too
  // old to say, a lower bound: the acks this replicator passed on.
  virtual uint64_t change_floor() const { return 0; }
  // After a successful Pause(kChanged): how many regions it copied.
  virtual uint64_t copied_regions() const { return 0; }
  // Whether a whole copy (kInPause, kStream) can leave out the chunks the
  // backup's copy holds already (Pause's `backup`; the HELLO offers
  // kCapDiskDigests, docs/DISK.md §7.4).
  virtual bool can_compare() const { return false; }
  // Of the session's whole copy: bytes of disk walked and, of those, left
  // out because the backup held them (kInPause: after Pause; kStream: so
  // far).
  virtual uint64_t walked_bytes() const { return 0; }
  virtual uint64_t skipped_bytes() const { return 0; }

  // REQUIRES: the guest of the ending epoch is paused.
  // kInPause: forget every open record, then capture the whole disk as
  // records of the ending epoch, with the front end held still while it is
  // read (no request executes meanwhile). kStream: forget every open record
  // and start the streaming copy with the next epoch. Then advance the
  // clock. Returns the ending epoch's tag (the front end's own numbering;
  // the engine maps its epochs to tags). kChanged: as kInPause, but only the
  // regions written after tag `since` of lineage `lineage` (the backup holds
  // the disk as of it); another lineage than the tap's is Unsupported.
  // `backup` (kInPause, kStream; may be null; REQUIRES can_compare()): one
  // hash per chunk of what the backup's copy holds (DISK_DIGESTS): a chunk
  // whose content matches is left out of the copy.
  // Errors: OutOfRange (the copy does not fit the log's budget: the session
  // needs a resync), Unsupported (kChanged: the tap cannot tell what changed
  // since `since`; nothing was paused, copy the whole disk), Closed/IoError
  // (a remote export went away).
  virtual Result<uint64_t> Pause(CopyMode copy, uint64_t since = 0, uint64_t lineage = 0,
                                 std::shared_ptr<const protocol::DiskChunkTable> backup = nullptr) = 0;

  // Waits (bounded by deadline) until no request tagged <= tag is in flight,
  // then seals the records tagged <= tag; ForEachSealed yields them until the
  // next Seal. Errors: Timeout (requests still in flight at the deadline),
  // OutOfRange (the epoch could not be captured: resync), Closed/IoError/
  // Corruption (a remote export went away or sent something invalid).
  virtual Status Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) = 0;

  // The records of the last successful Seal, in stream order; each record's
  // data is valid until the next Seal.
  virtual void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const = 0;

  // DISK_END's sync state of the last successful Seal: protocol::kSyncWhole
  // when the backup's copy of the disk is whole once that epoch commits,
  // else protocol::SyncStateOfPermille(the streaming copy's progress).
  virtual uint32_t sealed_sync_state() const { return protocol::kSyncWhole; }
};

}  // namespace romulus::disk

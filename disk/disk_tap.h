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
//   Pause(full_copy)   the guest of the ending epoch is paused: returns that
//                      epoch's tag; requests read from now on get the next.
//   Seal(tag, …)       before EPOCH_END: waits until no request tagged <= tag
//                      is in flight, then makes that epoch's records the
//                      sealed set;
//   ForEachSealed(fn)  yields them in stream order.
//
// Engine thread only; implementations are not thread-safe across these calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "common/status.h"
#include "protocol/disk_records.h"
#include "protocol/messages.h"

namespace romulus::disk {

class DiskTap {
 public:
  virtual ~DiskTap() = default;

  // The disk as the HELLO announces it (id, size, name).
  virtual const protocol::DiskInfo& info() const = 0;

  // REQUIRES: the guest of the ending epoch is paused.
  // full_copy (a session's first epoch): forget every open record, then
  // capture the whole disk as records of the ending epoch, with the front end
  // held still while it is read (no request executes meanwhile). Then advance
  // the clock. Returns the ending epoch's tag (the front end's own numbering;
  // the engine maps its epochs to tags).
  // Errors: OutOfRange (the copy does not fit the log's budget: the session
  // needs a resync), Closed/IoError (a remote export went away).
  virtual Result<uint64_t> Pause(bool full_copy) = 0;

  // Waits (bounded by deadline) until no request tagged <= tag is in flight,
  // then seals the records tagged <= tag; ForEachSealed yields them until the
  // next Seal. Errors: Timeout (requests still in flight at the deadline),
  // OutOfRange (the epoch could not be captured: resync), Closed/IoError/
  // Corruption (a remote export went away or sent something invalid).
  virtual Status Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) = 0;

  // The records of the last successful Seal, in stream order; each record's
  // data is valid until the next Seal.
  virtual void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const = 0;
};

}  // namespace romulus::disk

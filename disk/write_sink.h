// What the primary's disk front end tells the replication engine: every
// mutating request, once done on the local store, with its epoch tag
// (docs/DISK.md §2). The engine stages it into that epoch's disk stream.
//
// Contract, relied on by the consistency argument (§4):
//  - a call happens after the local operation completed and before the
//    client is answered, so a write the guest saw complete has been reported;
//  - calls for one disk come from one thread, in the order the requests were
//    executed (which is the order they were read);
//  - the sink never fails and never blocks for long: it runs on the guest's
//    I/O path. A sink that cannot keep the data marks the range dirty for the
//    resync (§7) instead; a replication problem never becomes a guest I/O
//    error.
#pragma once

#include <cstdint>
#include <span>

namespace romulus::disk {

class DiskWriteSink {
 public:
  virtual ~DiskWriteSink() = default;
  // `bytes` were written at `offset`. The span is valid during the call only.
  virtual void OnWrite(uint64_t epoch, uint64_t offset, std::span<const uint8_t> bytes, bool fua) = 0;
  // [offset, offset+length) now reads as zeros: WRITE_ZEROES (trim=false) or
  // a TRIM whose hole was punched (trim=true). A TRIM the store could not
  // punch changed nothing and is not reported.
  virtual void OnZero(uint64_t epoch, uint64_t offset, uint64_t length, bool trim, bool fua) = 0;
  // Everything reported before is durable on the primary: an ordering marker.
  virtual void OnFlush(uint64_t epoch) = 0;
  // A mutating request failed locally (the client was told): part of it may
  // have landed, so the range's local content is unknown and must be re-read
  // and re-sent (resync of that range).
  virtual void OnWriteFailed(uint64_t epoch, uint64_t offset, uint64_t length) = 0;
};

}  // namespace romulus::disk

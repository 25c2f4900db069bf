// The one home of the primary's per-request disk write path (docs/DISK.md
// §2): take the epoch tag → do it on the BackingStore → report it to the
// DiskWriteSink → release the tag. Every front end goes through it: the NBD
// server (disk/nbd_server.h) and the simulated guest's disk writer
// (sim/sim_guest.h), which has no socket.
//
// Order contract (relied on by DISK.md §4):
//   - the tag is taken by Begin(), which a front end calls as soon as it
//     has the request's header, before anything of the request is done;
//   - the report happens inside Write/Flush/Trim/WriteZeroes, after the
//     local operation, before they return; so before the Ticket releases
//     the tag and before the front end answers its client.
//
// Not thread-safe: one front end thread drives one executor (like its store).
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/write_sink.h"

namespace romulus::disk {

// What became of one mutating request.
enum class DiskOutcome : uint8_t {
  kDone,         // done locally and reported
  kTrimIgnored,  // a TRIM the store could not punch: data kept, nothing reported
  kFailed,       // failed locally; reported as OnWriteFailed; errno in last_errno()
};

class RequestExecutor {
 public:
  // store must outlive the executor. clock and sink may be null (a store
  // that is not replicated: the backup's activated simulated guest); then
  // no tag is taken and nothing is reported.
  RequestExecutor(BackingStore* store, EpochClock* clock, DiskWriteSink* sink)
      : store_(store), clock_(clock), sink_(sink) {}

  // The epoch tag of one request, released exactly once: explicitly after
  // the report (before answering the client), or on destruction when the
  // request is abandoned (the client vanished, a refused request).
  class Ticket {
   public:
    Ticket(Ticket&& o) noexcept : clock_(o.clock_), tag_(o.tag_), held_(o.held_) { o.held_ = false; }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket() { Release(); }
    void Release() {
      if (held_ && clock_ != nullptr) clock_->Release(tag_);
      held_ = false;
    }
    uint64_t tag() const { return tag_; }

   private:
    friend class RequestExecutor;
    Ticket(EpochClock* clock, uint64_t tag) : clock_(clock), tag_(tag) {}
    EpochClock* clock_;
    uint64_t tag_;
    bool held_ = true;
  };

  // The request's header is here: its tag, from now until Release.
  Ticket Begin() { return clock_ != nullptr ? Ticket(clock_, clock_->Acquire()) : Ticket(nullptr, 0); }

  // WRITE whose payload the front end received into `payload`, the span
  // store()->WriteBuffer(offset, length) returned. REQUIRES: the request is
  // in bounds (validated by the front end).
  DiskOutcome Write(const Ticket& t, uint64_t offset, std::span<const uint8_t> payload, bool fua);
  DiskOutcome Flush(const Ticket& t);
  DiskOutcome Trim(const Ticket& t, uint64_t offset, uint64_t length, bool fua);
  DiskOutcome WriteZeroes(const Ticket& t, uint64_t offset, uint64_t length, bool may_punch, bool fua);

  // Whole requests for a front end without a socket (Begin … Release in
  // one call). InvalidArgument out of bounds; the local failure otherwise
  // (already reported to the sink as OnWriteFailed).
  Status WriteBytes(uint64_t offset, std::span<const uint8_t> bytes, bool fua);
  Status FlushAll();
  // TRIM (trim=true; a store that cannot punch falls back to writing zeros
  // so the range reads as zeros either way) or WRITE_ZEROES.
  Status Zero(uint64_t offset, uint64_t length, bool trim, bool fua);

  BackingStore* store() const { return store_; }
  // errno behind the last kFailed (the store's).
  int last_errno() const { return store_->last_errno(); }
  // Why the last kFailed failed (for the front end's log).
  const Status& last_failure() const { return last_failure_; }

 private:
  DiskOutcome Failed(const Ticket& t, uint64_t offset, uint64_t length, Status why);

  BackingStore* store_;
  EpochClock* clock_;
  DiskWriteSink* sink_;
  Status last_failure_;
};

}  // namespace romulus::disk

// The export's side of the tap protocol (docs/DISK.md §8a): one replicator
// at a time drives the epoch bookkeeping of a long-lived disk export —
// PAUSE (advance the clock; a full copy with the NBD front end held), SEAL
// (wait for the epoch's requests, seal it in the log, stream its records).
//
//   kernel NBD client ─▶ NbdServer ─▶ LoggingGate ─(attached)─▶ EpochDiskLog
//                                                                  │ SEAL
//   replicator (RemoteDiskTap) ◀─ tap socket ─ TapServer ◀─────────┘
//
// While no replicator is attached the gate is shut: the guest's writes are
// executed and answered as always and nothing is logged, so the log cannot
// fill up. A replicator's first PAUSE must be a copy (full, streamed,
// or of the changes since a tag); it opens the gate.
// When the replicator goes away (EOF, error, SIGKILL, a garbage message) the
// gate shuts, the log is reset, and the guest never notices: a replication
// problem never becomes a guest I/O error (write_sink.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/nbd_server.h"
#include "disk/sync_runner.h"
#include "disk/tap_wire.h"
#include "disk/write_sink.h"
#include "protocol/disk_records.h"
#include "transport/stream.h"


namespace romulus::disk {

// Forwards the front end's reports to the log only while a replicator is
// attached. Flipped only while the front end is held (or, at detach, with
// at worst a report racing in that the next attach's Reset discards).
// While shut, what changed still reaches `changes` (DISK.md §7.2): a
// backup that held the disk before the replicator went away is brought up
// to date with those regions when one attaches again.
class LoggingGate final : public DiskWriteSink {
 public:
  explicit LoggingGate(DiskWriteSink* inner, EpochDiskLog* changes = nullptr) : inner_(inner), changes_(changes) {}
  void set_logging(bool on) { on_.store(on, std::memory_order_release); }
  bool logging() const { return on_.load(std::memory_order_acquire); }

  void OnWrite(uint64_t epoch, uint64_t offset, std::span<const uint8_t> bytes, bool fua) override {
    if (logging()) inner_->OnWrite(epoch, offset, bytes, fua);
    else Mark(epoch, offset, bytes.size());
  }
  void OnZero(uint64_t epoch, uint64_t offset, uint64_t length, bool trim, bool fua) override {
    if (logging()) inner_->OnZero(epoch, offset, length, trim, fua);
    else Mark(epoch, offset, length);
  }
  void OnFlush(uint64_t epoch) override {
    if (logging()) inner_->OnFlush(epoch);
  }
  void OnWriteFailed(uint64_t epoch, uint64_t offset, uint64_t length) override {
    if (logging()) inner_->OnWriteFailed(epoch, offset, length);
    else Mark(epoch, offset, length);
  }

 private:
  void Mark(uint64_t epoch, uint64_t offset, uint64_t length) {
    if (changes_ != nullptr) changes_->MarkChanged(epoch, offset, length);
  }
  DiskWriteSink* inner_;
  EpochDiskLog* changes_;
  std::atomic<bool> on_{false};
};

struct TapServerOptions {
  // Once a message's first byte has arrived, the rest must follow within
  // this; a client idle mid-message is dropped.
  std::chrono::milliseconds message_timeout{10000};
  // Between messages: a replicator that sends nothing for this long is
  // detached (the log is reset), so a stopped (SIGSTOP) or hung replicator
  // cannot lock every other one out of the disk for ever. Harmless to a
  // live one: RemoteDiskTap reconnects at its next session's full copy,
  // and a session pauses at least every --interval (≤ 60 s). An operator
  // pause longer than this costs the disks a resync (a full copy).
  std::chrono::milliseconds idle_timeout{120000};
  // Writing one reply — for SEAL all of its records — must finish within this.
  std::chrono::milliseconds reply_timeout{30000};
  // PAUSE{full_copy}: the front end's request in progress must finish within this.
  std::chrono::milliseconds hold_timeout{10000};
  // The streaming copy's chunking and pacing (disk/sync_copier.h).
  SyncCopierOptions sync;
  // Tests only: runs inside a full copy, with the front end held, after the
  // copy is captured and before the clock advances.
  std::function<void()> during_full_copy;
};

struct TapServerStats {
  uint64_t attaches = 0, detaches = 0, refused = 0, dropped = 0;
  uint64_t pauses = 0, full_copies = 0, streamed_copies = 0, seals = 0, records = 0, data_bytes = 0,
           wire_bytes = 0;
  uint64_t changed_copies = 0, changed_regions = 0, acks = 0;  // DISK.md §7.2
  uint64_t compared_copies = 0, skipped_bytes = 0;              // DISK.md §7.4 (in-pause copies' skips)
};

// What the tap drives. Every pointer outlives the server.
struct TapTarget {
  NbdServer* nbd = nullptr;           // Hold/Unhold around a full copy and each streamed chunk
  BackingStore* copy_store = nullptr; // read by the copies: not the front end's (its bounce buffer is busy)
  EpochCounter* clock = nullptr;
  EpochDiskLog* log = nullptr;
  LoggingGate* gate = nullptr;
  uint64_t instance_id = 0;
  uint64_t log_budget = 0;
  std::string name;
};

class TapServer {
 public:
  static Result<std::unique_ptr<TapServer>> Create(TapTarget target, TapServerOptions options = {});

  // Serves one tap connection (takes ownership of fd) until it ends. A
  // peer of another uid, or a second replicator while one is attached, is
  // answered with ERROR and closed (the first keeps working). Returns why
  // the connection ended: Ok for a clean close between messages.
  Status Serve(int fd);
  // From any thread: ends the connection in progress, refuses later ones.
  void Stop();

  bool attached() const;
  TapServerStats stats() const;

 private:
  TapServer(TapTarget target, TapServerOptions options);

  Status ServeAttached(transport::Stream* s);
  Status SendError(transport::Stream* s, const Status& why, transport::Deadline deadline);
  Status HandlePause(transport::Stream* s, const tap::Pause& p,
                     std::shared_ptr<const protocol::DiskChunkTable> backup);
  // One DIGESTS message into table_ (Corruption for one out of order).
  Status TakeDigests(const tap::Digests& d);
  // Holds the front end, empties the log, runs `work` unlogged, then logs
  // again and advances the clock: the new tag (see tap_server.cc).
  Result<uint64_t> AdvanceUnderHold(const char* what, const std::function<Status()>& work);
  Status HandleSeal(transport::Stream* s, const tap::Seal& p);
  Status SendRecords(transport::Stream* s, uint64_t tag, uint32_t sync_state, transport::Deadline deadline);
  void Detach(const Status& why);
  // Ends a streaming copy in progress (joins its thread).
  void StopSync();

  const TapTarget t_;
  const TapServerOptions options_;

  mutable std::mutex mu_;
  transport::Stream* active_ GUARDED_BY(mu_) = nullptr;
  std::string active_peer_ GUARDED_BY(mu_);
  bool stopped_ GUARDED_BY(mu_) = false;
  TapServerStats stats_ GUARDED_BY(mu_);

  // The attached connection's thread only.
  bool need_full_copy_ = true;  // no PAUSE{full_copy or stream} yet on this attachment
  bool streaming_ = false;      // this attachment's copy was streamed: SEALED says how far
  bool copy_reported_ = false;  // the streamed copy's completion was logged
  bool copy_compared_ = false;  // the streamed copy had the backup's table
  std::unique_ptr<SyncRunner> sync_;
  uint64_t last_sealed_ = 0;
  // The backup's chunk hashes for the next copy PAUSE (DIGESTS), and
  // whether the table is whole; dropped by every PAUSE.
  std::shared_ptr<protocol::DiskChunkTable> table_;
  bool table_whole_ = false;
  std::vector<uint8_t> digests_buf_;  // one DIGESTS payload, allocated on first use
  protocol::DiskFrameBuilder builder_;
  protocol::DiskRecordDigest digest_;
};

}  // namespace romulus::disk

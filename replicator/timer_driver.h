// TimerDriver: the checkpoint driver for any GuestSource (today the
// simulated guest), paced by the controller's timer.
//
// Each epoch: pause the guest, mark the output-commit boundary, harvest the
// dirty log, copy the dirty pages into the staging snapshot, capture state,
// resume — nothing else happens while the guest is paused — then stream the
// snapshot while the guest runs and commit it.
//
// A session starts with a synchronisation folded into its first epoch: every
// page is streamed while the guest runs (copied one page at a time, so torn
// reads are harmless: the page is dirty again and goes out in the paused
// part of the same epoch), then the first checkpoint proper.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "buffer/reusable_buffer.h"
#include "replicator/checkpoint_driver.h"
#include "replicator/guest_source.h"

namespace romulus::replicator {

struct TimerDriverOptions {
  bool progress_bar = false;  // the first sync's progress as a bar (a TTY) rather than log lines
  // The guest's disks (GuestFacts::disks); replicated by the controller's
  // DiskReplicator, which this driver serves by calling GuestPaused.
  std::vector<protocol::DiskInfo> disks;
};

class TimerDriver final : public CheckpointDriver {
 public:
  explicit TimerDriver(GuestSource& guest, TimerDriverOptions opts = {});
  GuestFacts facts() const override;
  Status RunSession(EpochSession& s) override;
  bool GuestLives() override { return guest_error_.ok(); }

 private:
  // Streams every page while the guest runs (the dirty log was just cleared
  // by MarkAllDirty + harvest, so whatever the guest writes meanwhile goes
  // out again, consistently, in the paused part of the epoch).
  Status LiveSync(EpochSession& s, uint64_t epoch);
  // Pause, boundary, harvest + copy + state, resume (unless `final`).
  Status Snapshot(EpochSession& s, uint64_t epoch, bool final, EpochStats* st);
  // Streams the snapshot and sends EPOCH_END; the error is the backup's.
  Status Stream(EpochSession& s, uint64_t epoch, EpochStats* st);
  Status GuestError(Status st);  // remembers that the guest (not the backup) failed
  void Streaming(EpochSession& s, uint64_t epoch);

  GuestSource& guest_;
  TimerDriverOptions opts_;
  Status guest_error_;
  uint64_t streaming_reached_ = 0;  // the last epoch whose m kill-point was reached
  // The staging snapshot: dirty pages copied while the guest is paused. One
  // reusable buffer, bounded by the guest size; no reallocation once it has
  // seen the largest dirty set.
  std::vector<uint64_t> pfns_;
  std::vector<uint8_t> state_;
  buffer::ReusableBuffer pages_;
};

// Convenience for callers that hold a GuestSource.
std::unique_ptr<CheckpointDriver> MakeTimerDriver(GuestSource& guest, TimerDriverOptions opts = {});

// Initial sync progress: guest bytes streamed so far, their rate (MB/s,
// 10^6 bytes: what the wire carries) and the time left at that rate.
struct SyncProgress {
  uint64_t done = 0;
  double percent = 0;
  std::string rate;  // "512 MB/s"
  std::string eta;   // "18 s", "?" before any progress
};
SyncProgress MeasureSync(uint64_t done, uint64_t total, std::chrono::nanoseconds elapsed);

}  // namespace romulus::replicator

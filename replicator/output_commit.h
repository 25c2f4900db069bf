// OutputCommit: Remus' promise to the outside world. Output the guest
// produces while running speculatively after checkpoint N's suspend must not
// leave the host before the backup holds checkpoint N. The engine calls
// Checkpoint(N) at every suspend (start a new buffer: what follows belongs to
// the next epoch) and Release(N) once the backup acked N. On failover the
// backup side never sees the unreleased output; on a clean stop the primary
// releases everything.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace romulus::replicator {

class OutputCommit {
 public:
  virtual ~OutputCommit() = default;
  // At suspend of epoch N (guest paused): output produced so far belongs to N.
  virtual Status Checkpoint(uint64_t epoch) = 0;
  // The backup acked N: output up to N's checkpoint may leave.
  virtual Status Release(uint64_t epoch) = 0;
  // Replication stops or the backup is gone: stop buffering, let everything through.
  virtual Status ReleaseAll() = 0;
  // The epochs not released yet will never be acked (the guest's copy here
  // must not go on: PrimaryController::Relinquish): their output is dropped,
  // never sent, and the device stays plugged.
  virtual Status Discard() = 0;
  // "sch_plug on eth0", "none (output not committed)".
  virtual std::string Describe() const = 0;
  virtual bool commits_output() const = 0;
};

// The default when network buffering is off: says so loudly in the stats.
class NoOutputCommit final : public OutputCommit {
 public:
  Status Checkpoint(uint64_t) override { return Status::Ok(); }
  Status Release(uint64_t) override { return Status::Ok(); }
  Status ReleaseAll() override { return Status::Ok(); }
  Status Discard() override { return Status::Ok(); }
  std::string Describe() const override { return "none (output not committed)"; }
  bool commits_output() const override { return false; }
};

}  // namespace romulus::replicator

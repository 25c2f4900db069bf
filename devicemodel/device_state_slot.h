// The backup's copy of an HVM replica's device state (docs/DEVICE-MODEL.md
// §4): the open epoch's (a STATE record of kind 6) and the last committed
// one, which activation starts the device model from. The pair commits
// with the epoch's memory or not at all, like every part of a checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"

namespace romulus::devicemodel {

class DeviceStateSlot {
 public:
  explicit DeviceStateSlot(size_t max_bytes) : max_bytes_(max_bytes) {}

  // The open epoch's state. kCorruption for a second one in the same epoch
  // or one that is not a QEMU migration stream ("QEVM"); kStorage over the
  // bound (this backup's limit, the primary's state is not at fault).
  Status Stage(uint64_t epoch, std::span<const uint8_t> state);
  bool HasStaged(uint64_t epoch) const { return staged_epoch_ == epoch && !staged_.empty(); }
  // The staged state becomes the committed one (buffers swapped: no copy,
  // and no allocation once the largest state was seen).
  // REQUIRES: HasStaged(epoch) for the epoch being committed.
  void Commit();
  // The open epoch will never commit.
  void Discard() {
    staged_epoch_ = 0;
    staged_.clear();
  }

  std::span<const uint8_t> committed() const { return committed_; }
  uint64_t committed_epoch() const { return committed_epoch_; }

 private:
  const size_t max_bytes_;
  std::vector<uint8_t> staged_, committed_;
  uint64_t staged_epoch_ = 0, committed_epoch_ = 0;
};

}  // namespace romulus::devicemodel

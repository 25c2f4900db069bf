#include "devicemodel/device_state_slot.h"

#include <string>

namespace romulus::devicemodel {

Status DeviceStateSlot::Stage(uint64_t epoch, std::span<const uint8_t> state) {
  if (HasStaged(epoch)) return Status::Corruption("two device model states in epoch " + std::to_string(epoch));
  if (state.empty()) return Status::Corruption("an empty device model state in epoch " + std::to_string(epoch));
  // QEMU's migration stream starts with its magic: anything else would only
  // be found out by the device model at failover.
  if (state.size() < 4 || state[0] != 'Q' || state[1] != 'E' || state[2] != 'V' || state[3] != 'M') {
    return Status::Corruption("the device model state of epoch " + std::to_string(epoch) +
                              " is not a QEMU migration stream (no QEVM magic)");
  }
  if (state.size() > max_bytes_) {
    return Status::Storage("the device model's state of epoch " + std::to_string(epoch) + " is " +
                           std::to_string(state.size()) + " bytes, over this backup's bound of " +
                           std::to_string(max_bytes_) + " (restore --max-device-state)");
  }
  staged_.assign(state.begin(), state.end());
  staged_epoch_ = epoch;
  return Status::Ok();
}

void DeviceStateSlot::Commit() {
  committed_.swap(staged_);
  committed_epoch_ = staged_epoch_;
  Discard();
}

}  // namespace romulus::devicemodel

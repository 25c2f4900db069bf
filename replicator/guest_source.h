// GuestSource: what the primary's epoch loop needs from a guest that it
// drives on its own timer (the simulated guest; any hypervisor backend whose
// checkpoints are not driven by a library of its own). Xen's libxenguest
// drives epochs through callbacks instead and feeds CheckpointSender directly.
//
// Call sequence per epoch: Pause, HarvestDirty, PageData* (copied into the
// staging snapshot by the engine), CaptureState, Resume. Only harvest and
// copy happen while the guest is paused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::replicator {

class GuestSource {
 public:
  virtual ~GuestSource() = default;
  virtual uint64_t guest_pages() const = 0;
  // Stable name of the guest, sent in the handshake ("sim:size=1G,workload=seed").
  virtual std::string identity() const = 0;

  virtual Status Pause() = 0;
  // While paused: the pfns written since the previous harvest in ascending
  // order (every page at the first harvest or after MarkAllDirty), and clears
  // the dirty log.
  virtual Status HarvestDirty(std::vector<uint64_t>* pfns) = 0;
  // While paused: the current 4096 bytes of pfn (valid until Resume).
  virtual const uint8_t* PageData(uint64_t pfn) = 0;
  // While paused: CPU/device state as opaque bytes (bounded, small).
  virtual Status CaptureState(std::vector<uint8_t>* state) = 0;
  virtual Status Resume() = 0;
  // The next harvest returns every page (full resynchronisation).
  virtual void MarkAllDirty() = 0;
  // false: pfn has never been written, so it reads as zeros and need not be
  // read at all (a first sync then skips it without touching it, when the
  // backup holds a zero page there too). true when unsure. Any thread.
  virtual bool MayHoldData(uint64_t pfn) const {
    (void)pfn;
    return true;
  }
};

}  // namespace romulus::replicator

// What the Xen driver measured about one epoch, as the engine's EpochStats.
// Xen-free (no Xen header), so it is unit-tested without a hypervisor.
#pragma once

#include <chrono>
#include <cstdint>

#include "replicator/checkpoint_sender.h"
#include "replicator/stats.h"

namespace romulus::xen {

struct XenEpochFacts {
  using Clock = std::chrono::steady_clock;
  uint64_t epoch = 0;
  Clock::time_point suspend_requested;  // control/shutdown=suspend written
  Clock::time_point suspended;          // the domain reached SHUTDOWN_suspend
  Clock::time_point resumed;            // xc_domain_resume returned (or the final epoch's postcopy)
  std::chrono::microseconds ack_wait{0};  // checkpoint callback entered -> ack (or its failure)
  uint64_t stream_bytes = 0;            // libxenguest's v2 stream bytes of this epoch
  // An HVM guest's device model (docs/DEVICE-MODEL.md §2): its part of the
  // pause, split in the stop + save (DeviceModelPause::Begin) and the cont
  // (End), and the size of the state it saved.
  bool device_model = false;
  std::chrono::microseconds dm_save{0};
  std::chrono::microseconds dm_resume{0};
  uint64_t dm_state_bytes = 0;
  // Flushing its emulated IDE disks' files after the stop, to hear of a
  // write-back error QEMU's own flush swallowed (devicemodel/writeback_watch.h).
  std::chrono::microseconds dm_flush{0};
};

// The engine's per-epoch record of a Xen epoch: pause_us from the suspend
// request to the guest running again (suspend_us is the part until the
// guest stopped), dirty_pages the pages libxenguest sent, and the Xen-only
// extras state_records, ack_wait_us and xen_stream_bytes, and for a guest
// with a device model dm_save_us, dm_resume_us, dm_state_bytes and dm_flush_us
// (docs/STATS.md).
// The controller adds what it knows (acked, ack latency, protected,
// output_commit, period).
replicator::EpochStats MakeXenEpochStats(const replicator::EpochWireStats& wire, const XenEpochFacts& facts);

}  // namespace romulus::xen

#include "xen/xen_epoch_stats.h"

#include "replicator/checkpoint_driver.h"

namespace romulus::xen {

using std::chrono::duration_cast;
using std::chrono::microseconds;

namespace {
// Clamped at zero: a time not reached (a failed suspend) is not negative.
microseconds Since(XenEpochFacts::Clock::time_point from, XenEpochFacts::Clock::time_point to) {
  return to > from ? duration_cast<microseconds>(to - from) : microseconds(0);
}
}  // namespace

replicator::EpochStats MakeXenEpochStats(const replicator::EpochWireStats& w, const XenEpochFacts& f) {
  replicator::EpochStats e;
  e.epoch = f.epoch;
  e.pause = Since(f.suspend_requested, f.resumed);
  e.suspend = Since(f.suspend_requested, f.suspended);
  e.dirty_pages = w.pages;
  replicator::ApplyWireStats(w, &e);
  e.extra = {{"state_records", w.state_records},
             {"ack_wait_us", static_cast<uint64_t>(f.ack_wait.count() > 0 ? f.ack_wait.count() : 0)},
             {"xen_stream_bytes", f.stream_bytes}};
  if (f.device_model) {
    auto us = [](microseconds d) { return static_cast<uint64_t>(d.count() > 0 ? d.count() : 0); };
    e.extra.emplace_back("dm_save_us", us(f.dm_save));
    e.extra.emplace_back("dm_resume_us", us(f.dm_resume));
    e.extra.emplace_back("dm_state_bytes", f.dm_state_bytes);
    e.extra.emplace_back("dm_flush_us", us(f.dm_flush));
  }
  return e;
}

}  // namespace romulus::xen

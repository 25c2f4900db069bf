#include "replicator/timer_driver.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/units.h"
#include "compress/page.h"

namespace romulus::replicator {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using compress::kPageSize;

TimerDriver::TimerDriver(GuestSource& guest, TimerDriverOptions opts)
    : guest_(guest), opts_(opts), pages_(0, guest.guest_pages() * kPageSize) {
  pfns_.reserve(1024);
}

std::unique_ptr<CheckpointDriver> MakeTimerDriver(GuestSource& guest, TimerDriverOptions opts) {
  return std::make_unique<TimerDriver>(guest, opts);
}

GuestFacts TimerDriver::facts() const {
  GuestFacts f;
  f.backend = "sim";
  f.identity = guest_.identity();
  f.guest_pages = guest_.guest_pages();
  f.disks = opts_.disks;
  return f;
}

// m, once per epoch: half-way through its pages (the first epoch: through
// its live pass).
void TimerDriver::Streaming(EpochSession& s, uint64_t epoch) {
  if (streaming_reached_ == epoch) return;
  streaming_reached_ = epoch;
  s.Reached(Phase::kStreaming, epoch);
}

Status TimerDriver::GuestError(Status st) {
  if (!st.ok() && guest_error_.ok()) guest_error_ = st;
  return st;
}

SyncProgress MeasureSync(uint64_t done, uint64_t total, std::chrono::nanoseconds elapsed) {
  SyncProgress p;
  p.done = done;
  p.percent = total == 0 ? 100.0 : 100.0 * static_cast<double>(done) / static_cast<double>(total);
  const double secs = std::chrono::duration<double>(elapsed).count();
  if (secs <= 0 || done == 0) {
    p.rate = "? MB/s";
    p.eta = "?";
    return p;
  }
  const double bytes_per_s = static_cast<double>(done) / secs;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MB/s", bytes_per_s / 1e6);
  p.rate = buf;
  const double left_s = static_cast<double>(total - done) / bytes_per_s;
  p.eta = FormatDuration(microseconds(static_cast<int64_t>(std::min(left_s, 1e9) * 1e6)));
  return p;
}

Status TimerDriver::RunSession(EpochSession& s) {
  uint64_t epoch = s.first_epoch();
  // The first epoch carries the synchronisation: every page, while the guest runs.
  guest_.MarkAllDirty();
  Status net = LiveSync(s, epoch);
  bool final = false;
  for (;;) {
    EpochStats st;
    st.epoch = epoch;
    ROMULUS_RETURN_IF_ERROR(Snapshot(s, epoch, final, &st));
    if (net.ok()) net = Stream(s, epoch, &st);
    if (net.ok()) net = s.Commit(epoch, &st);
    s.Publish(st);
    if (!net.ok()) {
      // A final checkpoint left the guest paused: it runs on, unprotected.
      if (final) ROMULUS_RETURN_IF_ERROR(GuestError(guest_.Resume()).With("resuming the guest after a failed switchover"));
      return net;
    }
    if (final) return Status::Ok();  // the backup holds it; the guest stays paused
    switch (s.NextEpoch()) {
      case EpochSession::Next::kStop: return Status::Ok();
      case EpochSession::Next::kFinal: final = true; break;
      case EpochSession::Next::kCheckpoint: break;
    }
    ++epoch;
    net = s.BeginEpoch(epoch);
  }
}

Status TimerDriver::LiveSync(EpochSession& s, uint64_t epoch) {
  ROMULUS_RETURN_IF_ERROR(GuestError(guest_.Pause()));
  std::vector<uint64_t> all;
  Status st = guest_.HarvestDirty(&all);  // every page: MarkAllDirty was called
  Status resumed = guest_.Resume();
  ROMULUS_RETURN_IF_ERROR(GuestError(st));
  ROMULUS_RETURN_IF_ERROR(GuestError(resumed));
  ROMULUS_RETURN_IF_ERROR(s.BeginEpoch(epoch));
  alignas(64) static thread_local uint8_t page[kPageSize];
  const bool bar = opts_.progress_bar;
  const size_t step = std::max<size_t>(all.size() / 1000, 1);
  const uint64_t total = all.size() * kPageSize;
  auto t0 = Clock::now();
  int logged_tenths = -1;
  auto last_log = t0;
  for (size_t i = 0; i < all.size(); ++i) {
    // A page never written, where the backup holds zeros too, is not even
    // read: the first sync then costs the guest's data, not its size.
    if (guest_.MayHoldData(all[i]) || !s.SkipKnownZeroPage(all[i])) {
      std::memcpy(page, guest_.PageData(all[i]), kPageSize);
      ROMULUS_RETURN_IF_ERROR(s.AddPage(all[i], page));
    }
    if (i == all.size() / 2) Streaming(s, epoch);
    if (i % step != 0 && i + 1 != all.size()) continue;
    if (s.stopping()) return Status::Closed("stop requested during the first sync");
    const auto now = Clock::now();
    const SyncProgress p = MeasureSync((i + 1) * kPageSize, total, now - t0);
    if (bar) {
      int filled = static_cast<int>(p.percent / 2.5);
      std::fprintf(stderr, "\rinitial sync [%-40s] %5.1f%%  %s / %s  %s  ETA %s   ",
                   std::string(filled, '#').c_str(), p.percent, FormatSize(p.done).c_str(),
                   FormatSize(total).c_str(), p.rate.c_str(), p.eta.c_str());
    } else if (static_cast<int>(p.percent / 10) > logged_tenths || now - last_log >= std::chrono::seconds(10) ||
               i + 1 == all.size()) {
      // Every 10 %, and every 10 s when the backup sets a slow pace.
      logged_tenths = static_cast<int>(p.percent / 10);
      last_log = now;
      spdlog::info("initial sync: {:.0f}% ({} of {}), {}, ETA {}", p.percent, FormatSize(p.done),
                   FormatSize(total), p.rate, p.eta);
    }
  }
  if (bar) std::fprintf(stderr, "\n");
  auto secs = duration_cast<microseconds>(Clock::now() - t0).count() / 1e6;
  const uint64_t kept = s.epoch_pages_kept();
  spdlog::info("initial sync went through {} pages ({}) in {:.2f} s, {}: {} sent, {} held by the backup already; "
               "the backup commits it next",
               all.size(), FormatSize(total), secs, MeasureSync(total, total, Clock::now() - t0).rate,
               all.size() - kept, kept);
  return Status::Ok();
}

Status TimerDriver::Snapshot(EpochSession& s, uint64_t epoch, bool final, EpochStats* st) {
  auto t0 = Clock::now();
  s.Reached(Phase::kBeforeSuspend, epoch);
  ROMULUS_RETURN_IF_ERROR(GuestError(guest_.Pause()));
  st->suspend = duration_cast<microseconds>(Clock::now() - t0);
  Status oc = s.Suspended(epoch);
  // Inside the pause: the disks' cut is this instant (docs/DISK.md §3).
  if (oc.ok()) oc = s.GuestPaused(epoch);
  s.Reached(Phase::kAfterSuspend, epoch);
  Status gs = oc.ok() ? guest_.HarvestDirty(&pfns_) : Status::Ok();
  pages_.Clear();
  if (oc.ok() && gs.ok()) {
    auto dst = pages_.Append(pfns_.size() * kPageSize);
    if (!dst.ok()) {
      gs = dst.status();
    } else {
      uint8_t* p = *dst;
      for (uint64_t pfn : pfns_) {
        std::memcpy(p, guest_.PageData(pfn), kPageSize);
        p += kPageSize;
      }
      pages_.Commit(pfns_.size() * kPageSize);
      state_.clear();
      gs = guest_.CaptureState(&state_);
    }
  }
  s.Reached(Phase::kBeforeResume, epoch);
  // A switchover's final checkpoint leaves the guest paused for good:
  // nothing it could do afterwards would reach the backup.
  Status resumed = final && oc.ok() && gs.ok() ? Status::Ok() : guest_.Resume();
  st->pause = duration_cast<microseconds>(Clock::now() - t0);
  s.Reached(Phase::kAfterResume, epoch);
  ROMULUS_RETURN_IF_ERROR(GuestError(gs).With("taking checkpoint " + std::to_string(epoch)));
  ROMULUS_RETURN_IF_ERROR(GuestError(resumed).With("resuming the guest"));
  ROMULUS_RETURN_IF_ERROR(oc);
  st->dirty_pages = pfns_.size();
  return Status::Ok();
}

Status TimerDriver::Stream(EpochSession& s, uint64_t epoch, EpochStats* st) {
  const uint8_t* p = pages_.data();
  for (size_t i = 0; i < pfns_.size(); ++i) {
    ROMULUS_RETURN_IF_ERROR(s.AddPage(pfns_[i], p + i * kPageSize));
    if (i == pfns_.size() / 2) Streaming(s, epoch);
  }
  ROMULUS_RETURN_IF_ERROR(s.AddState(state_));
  auto wire = s.EndEpoch();
  if (!wire.ok()) return wire.status();
  ApplyWireStats(*wire, st);
  return Status::Ok();
}

}  // namespace romulus::replicator

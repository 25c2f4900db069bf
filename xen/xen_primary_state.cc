#include "xen/xen_primary_state.h"

#include <string>
#include <vector>

#include "common/units.h"

namespace romulus::xen {

using std::chrono::duration_cast;
using std::chrono::microseconds;

namespace {
microseconds Since(XenEpochFacts::Clock::time_point from, XenEpochFacts::Clock::time_point to) {
  return to > from ? duration_cast<microseconds>(to - from) : microseconds(0);
}
}  // namespace

replicator::EpochStats MakeXenEpochStats(const replicator::EpochWireStats& w, const XenEpochFacts& f) {
  replicator::EpochStats e;
  e.epoch = f.epoch;
  e.acked = f.acked;
  e.protected_ = f.protected_;
  e.pause = Since(f.suspend_requested, f.resumed);
  e.suspend = Since(f.suspend_requested, f.suspended);
  e.period = Since(f.previous_suspend, f.suspend_requested);
  e.dirty_pages = w.pages;
  e.pages_by_kind = w.pages_by_kind;
  e.raw_bytes = w.raw_bytes;
  e.wire_bytes = w.wire_bytes;
  e.cache_hits = w.cache_hits;
  e.cache_misses = w.cache_misses;
  e.cache_overflows = w.cache_overflows;
  e.encode_time = w.encode_time;
  e.ack_latency = f.acked ? f.ack_latency : microseconds(0);
  e.outbuf_high_water = w.outbuf_high_water;
  e.digest = w.digest;
  e.output_commit = f.output_commit;
  e.extra = {{"state_records", w.state_records},
             {"ack_wait_us", static_cast<uint64_t>(f.ack_wait.count() > 0 ? f.ack_wait.count() : 0)},
             {"xen_stream_bytes", f.stream_bytes}};
  return e;
}

void XenPrimaryState::Begin(std::string domain, uint32_t domid, microseconds interval, std::string output_commit) {
  interval_us_.store(interval.count());
  domid_.store(domid);
  std::lock_guard<std::mutex> lock(mu_);
  domain_ = std::move(domain);
  output_commit_ = std::move(output_commit);
}

control::PrimaryStatus XenPrimaryState::StatusView(Clock::time_point now) const {
  control::PrimaryStatus v;
  v.epoch = epoch_.load();
  v.last_acked = last_acked_.load();
  const int64_t at = last_ack_ns_.load();
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  v.last_ack_age = std::chrono::milliseconds(at < 0 ? -1 : (now_ns - at) / 1000000);
  v.protected_now = protected_.load();
  v.paused = paused_.load();
  v.interval = interval();
  v.cache_size = cache_size_.load();
  // A new session (after a lost backup) starts with the size last applied.
  v.cache_size_next_session = v.cache_size;
  v.backend = "xen";
  v.domid = domid_.load();
  std::lock_guard<std::mutex> lock(mu_);
  v.guest = domain_;
  v.domain = domain_;
  v.output_commit = output_commit_;
  v.unprotected_reason = v.paused ? "checkpointing paused by the operator (until resume)" : unprotected_why_;
  return v;
}

std::string XenPrimaryState::StatsJson() const {
  std::lock_guard<std::mutex> lock(mu_);
  return "{\"last\":" + last_json_ + ",\"totals\":" + totals_json_ + "}";
}

void XenPrimaryState::EpochStarted(uint64_t epoch, const std::string& output_commit) {
  epoch_.store(epoch);
  std::lock_guard<std::mutex> lock(mu_);
  output_commit_ = output_commit;
}

void XenPrimaryState::Published(const replicator::EpochStats& e, Clock::time_point now) {
  if (e.acked) {
    last_acked_.store(static_cast<int64_t>(e.epoch));
    last_ack_ns_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count());
  }
  protected_.store(e.acked);
  std::lock_guard<std::mutex> lock(mu_);
  if (e.acked) unprotected_why_.clear();
  totals_.Add(e);
  last_json_ = replicator::EpochStatsJson(e);
  totals_json_ = replicator::TotalStatsJson(totals_);
}

void XenPrimaryState::SetUnprotectedReason(std::string why) {
  std::lock_guard<std::mutex> lock(mu_);
  unprotected_why_ = std::move(why);
}

void XenPrimaryState::Unprotected(const std::string& output_commit) {
  protected_.store(false);
  std::lock_guard<std::mutex> lock(mu_);
  output_commit_ = output_commit;
}

replicator::TotalStats XenPrimaryState::totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return totals_;
}

void XenPrimaryState::CountResync() {
  std::lock_guard<std::mutex> lock(mu_);
  ++totals_.resyncs;
}

uint64_t XenPrimaryState::resyncs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return totals_.resyncs;
}

void XenPrimaryState::SetCacheLimits(bool can_resize, uint64_t backup_max_pages, uint64_t guest_pages) {
  std::lock_guard<std::mutex> lock(mu_);
  can_resize_ = can_resize;
  backup_max_pages_ = backup_max_pages;
  guest_pages_ = guest_pages;
}

Status XenPrimaryState::RequestCacheSize(uint64_t bytes) {
  std::lock_guard<std::mutex> serial(request_mu_);
  const uint64_t pages = bytes / 4096;
  uint64_t guest_pages = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (guest_pages_ == 0) return Status::Closed("not connected to the backup yet; try again in a moment");
    if (!can_resize_) {
      return Status::Unsupported("the backup cannot resize its cache live (an older romulus restore); "
                                 "restart romulus replicate with --cache-size");
    }
    if (pages > backup_max_pages_) {
      return Status::InvalidArgument("cache of " + FormatSize(bytes) + " exceeds the backup's --max-cache-size " +
                                     FormatSize(backup_max_pages_ * 4096));
    }
    guest_pages = guest_pages_;
  }
  // Without the lock: the worker must not wait for an allocation.
  auto fresh = compress::PageCache::Create(pages, guest_pages);
  if (!fresh.ok()) return fresh.status().With("allocating the new page cache");
  std::unique_ptr<compress::PageCache> replaced;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  replaced = std::move(requested_);
  requested_ = std::move(*fresh);
  requested_pages_ = pages;
  return Status::Ok();
}

std::unique_ptr<compress::PageCache> XenPrimaryState::TakeCacheRequest(uint64_t* pages) {
  std::lock_guard<std::mutex> lock(mu_);
  *pages = requested_pages_;
  return std::move(requested_);
}

Result<uint64_t> XenPrimaryState::RequestSwitchover(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (switchover_.requested && !switchover_.done) return Status::Closed("a switchover is already in progress");
  if (paused_.load()) return Status::Closed("checkpointing is paused: resume first (the final checkpoint needs it)");
  if (!protected_.load()) {
    return Status::Closed("no backup holds the current epoch (not PROTECTED): switchover refused");
  }
  switchover_ = Switchover{};
  switchover_.requested = true;
  const bool finished = switchover_cv_.wait_for(lock, timeout, [&] { return switchover_.done; });
  if (!finished) {
    if (!switchover_.taken) {
      switchover_.requested = false;  // withdrawn: the session never saw it
      return Status::Timeout("no checkpoint began within " + std::to_string(timeout.count()) +
                             " ms; nothing changed");
    }
    return Status::Timeout("the final checkpoint did not complete within " + std::to_string(timeout.count()) +
                           " ms; see the replicator's log");
  }
  if (!switchover_.status.ok()) return switchover_.status;
  return switchover_.epoch;
}

bool XenPrimaryState::TakeSwitchover() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!switchover_.requested || switchover_.taken || switchover_.done) return false;
  switchover_.taken = true;
  return true;
}

void XenPrimaryState::SwitchoverDone(const Status& st, uint64_t final_epoch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!switchover_.requested || switchover_.done) return;
    switchover_.done = true;
    switchover_.status = st;
    switchover_.epoch = final_epoch;
  }
  switchover_cv_.notify_all();
}

namespace {

// The Xen primary's dispatcher (control::Role::kXenPrimary): every request
// here is one the role has (ForRole refused the others).
struct XenDispatch {
  XenPrimaryState* state;

  replicator::ControlReply operator()(const control::StatusReq&) const {
    return replicator::ControlReply::Ok(control::ToJson(state->StatusView(XenPrimaryState::Clock::now())));
  }
  replicator::ControlReply operator()(const control::StatsReq&) const {
    return replicator::StatsReply(state->StatsJson());
  }
  replicator::ControlReply operator()(const control::SetIntervalReq& r) const {
    state->SetInterval(r.interval);
    return replicator::IntervalSetReply(r.interval);
  }
  replicator::ControlReply operator()(const control::SetCacheSizeReq& r) const {
    // Always live or refused: a Xen session has no next-session fallback.
    Status st = state->RequestCacheSize(r.bytes);
    return replicator::CacheSizeReply(r.bytes, st.ok() ? Result<bool>(true) : Result<bool>(st));
  }
  replicator::ControlReply operator()(const control::PauseReq&) const {
    state->SetPaused(true);
    return replicator::PauseReply(true);
  }
  replicator::ControlReply operator()(const control::ResumeReq&) const {
    state->SetPaused(false);
    return replicator::PauseReply(false);
  }
  replicator::ControlReply operator()(const control::SwitchoverReq&) const {
    auto e = state->RequestSwitchover(std::chrono::milliseconds(60000));
    if (!e.ok()) return replicator::ControlReply::Fail("switchover: " + e.status().message());
    return replicator::ControlReply::Ok(control::SwitchoverJson(
        *e, "domain left suspended here; the backup activates from final_epoch. "
            "Destroy this copy (xl destroy) once the backup runs the guest"));
  }
  template <typename Other>
  replicator::ControlReply operator()(const Other& r) const {
    return control::Refusal(control::Role::kXenPrimary, control::Request(r));
  }
};

}  // namespace

replicator::ControlHandler XenPrimaryControlHandler(XenPrimaryState* state) {
  return replicator::ForRole(control::Role::kXenPrimary, [state](const control::Request& r) {
    return std::visit(XenDispatch{state}, r);
  });
}

}  // namespace romulus::xen

// The PrimaryController's operations: what the control socket (any thread)
// asks of it, kept apart from the session algorithm in primary_controller.cc.
// Each request is checked here and acted on by the checkpoint thread at an
// epoch boundary (NextEpoch, BeginEpoch), under ops_mu_.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/units.h"
#include "compress/page.h"
#include "compress/page_cache.h"
#include "events/catalog.h"
#include "replicator/primary_controller.h"

namespace romulus::replicator {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using compress::kPageSize;

void PrimaryController::SetInterval(microseconds interval) { interval_us_.store(interval.count()); }
microseconds PrimaryController::interval() const { return microseconds(interval_us_.load()); }

std::chrono::milliseconds PrimaryController::since_last_ack() const {
  const int64_t at = last_ack_ns_.load();
  if (at < 0) return milliseconds(-1);
  const int64_t now = duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  return milliseconds((now - at) / 1000000);
}

void PrimaryController::SetPaused(bool paused) {
  if (paused_.exchange(paused) != paused) events::Paused(opts_.events, paused);
}

Result<bool> PrimaryController::SetCacheSize(uint64_t bytes) {
  std::lock_guard<std::mutex> serial(cache_set_mu_);
  const uint64_t pages = bytes / kPageSize;
  // The session may change (loss, reconnect) while the cache is allocated
  // without the lock; then decide again against the new one.
  for (int attempt = 0; attempt < 3; ++attempt) {
    SessionInfo s;
    {
      std::lock_guard<std::mutex> lock(ops_mu_);
      s = session_;
      if (!s.live || !s.can_resize) {
        next_cache_pages_.store(pages);  // the next handshake carries it
        return false;
      }
    }
    if (pages > s.max_cache_pages) {
      return Status::InvalidArgument("cache of " + FormatSize(bytes) + " exceeds the backup's --max-cache-size " +
                                     FormatSize(s.max_cache_pages * kPageSize));
    }
    auto fresh = compress::PageCache::Create(pages, facts_.guest_pages);
    if (!fresh.ok()) return fresh.status();
    std::lock_guard<std::mutex> lock(ops_mu_);
    if (session_.generation != s.generation) continue;
    cache_req_.generation = s.generation;
    cache_req_.pages = pages;
    cache_req_.cache = std::move(*fresh);
    next_cache_pages_.store(pages);
    return true;
  }
  return Status::Closed("the backup session kept changing; try again");
}

Result<PrimaryController::RegionDigest> PrimaryController::RegionDigestsAt(uint64_t epoch, uint32_t regions,
                                                                           milliseconds timeout) {
  std::unique_lock<std::mutex> lock(ops_mu_);
  if (region_req_.pending) return Status::Unsupported("another digest request is in progress");
  region_req_ = RegionRequest{};
  region_req_.pending = true;
  region_req_.epoch = epoch;
  region_req_.regions = std::clamp<uint32_t>(regions, 1, 4096);
  bool done = ops_cv_.wait_for(lock, timeout, [&] { return region_req_.done; });
  region_req_.pending = false;
  if (!done) {
    return Status::Timeout("epoch " + std::to_string(epoch) + " was not acked within " + FormatDuration(timeout));
  }
  if (!region_req_.status.ok()) return region_req_.status;
  return region_req_.result;
}

Result<uint64_t> PrimaryController::Handover(milliseconds timeout) {
  std::unique_lock<std::mutex> lock(ops_mu_);
  if (handover_req_.pending && !handover_req_.done) return Status::Unsupported("a switchover is already in progress");
  if (paused_.load()) return Status::Closed("checkpointing is paused: resume first; switchover refused");
  // Whether the backup holds the current epoch is decided at the boundary
  // (right after a resume, the next ack makes it PROTECTED again); without
  // a session there is no boundary to wait for.
  if (!session_.live) return Status::Closed("no backup holds the current epoch (not PROTECTED): switchover refused");
  handover_req_ = HandoverRequest{};
  handover_req_.pending = true;
  bool done = ops_cv_.wait_for(lock, timeout, [&] { return handover_req_.done; });
  if (!done) {
    // Left pending: the checkpoint thread still acts on it, and a second
    // Handover() must not start another one meanwhile.
    return Status::Timeout("switchover did not complete within " + FormatDuration(timeout));
  }
  handover_req_.pending = false;
  if (!handover_req_.status.ok()) return handover_req_.status;
  return handover_req_.epoch;
}

control::PrimaryStatus PrimaryController::StatusView() const {
  control::PrimaryStatus v;
  v.guest = facts_.identity;
  v.epoch = epoch_.load();
  v.last_acked = last_acked_.load();
  v.last_ack_age = since_last_ack();
  v.protected_now = protected_.load();
  v.paused = paused_.load();
  v.output_commit = output_state();
  v.interval = interval();
  v.cache_size = cache_size_active();
  v.cache_size_next_session = cache_size_next();
  v.unprotected_reason = unprotected_reason();
  v.backend = facts_.backend;
  v.domain = facts_.domain;
  v.domid = facts_.domid;
  v.guest_type = facts_.guest_type;
  if (opts_.disks != nullptr && !opts_.disks->empty()) {
    control::PrimaryStatus::Disks d;
    d.copy_permille = opts_.disks->sync_permille();
    d.resync_regions = opts_.disks->resync_regions();
    d.copied_whole = opts_.disks->disks_copied_whole();
    v.disks = d;
  }
  return v;
}

std::string PrimaryController::unprotected_reason() const {
  if (paused_.load()) return "checkpointing paused by the operator (until resume)";
  if (protected_.load()) return "";
  std::lock_guard<std::mutex> lock(ops_mu_);
  return unprotected_why_;
}

std::string PrimaryController::output_state() const {
  std::lock_guard<std::mutex> lock(ops_mu_);
  return output_state_;
}

std::string PrimaryController::StatsJson() const {
  std::lock_guard<std::mutex> lock(ops_mu_);
  return "{\"last\":" + last_epoch_json_ + ",\"totals\":" + totals_json_ + "}";
}

TotalStats PrimaryController::totals() const {
  std::lock_guard<std::mutex> lock(ops_mu_);
  return totals_;
}

}  // namespace romulus::replicator

#include "replicator/epoch_loop.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "buffer/receive_buffer.h"
#include "common/units.h"
#include "compress/page.h"
#include "events/catalog.h"
#include "transport/stream.h"

namespace romulus::replicator {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using compress::kPageSize;

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kBeforeSuspend: return "before-suspend";
    case Phase::kAfterSuspend: return "after-suspend";
    case Phase::kBeforeResume: return "before-resume";
    case Phase::kAfterResume: return "after-resume";
    case Phase::kBeforeCommit: return "before-commit";
    case Phase::kAfterCommit: return "after-commit";
    case Phase::kStreaming: return "streaming";
  }
  return "?";
}

bool ParsePhase(const std::string& text, Phase* out) {
  static const struct {
    const char* shortname;
    Phase phase;
  } kNames[] = {{"s", Phase::kBeforeSuspend}, {"s2", Phase::kAfterSuspend},
                {"r", Phase::kBeforeResume},  {"r2", Phase::kAfterResume},
                {"c", Phase::kBeforeCommit},  {"c2", Phase::kAfterCommit},
                {"m", Phase::kStreaming}};
  for (const auto& n : kNames) {
    if (text == n.shortname || text == PhaseName(n.phase)) {
      *out = n.phase;
      return true;
    }
  }
  return false;
}

// The staging snapshot: dirty pages copied while the guest is paused. One
// reusable buffer, bounded by the guest size; zero reallocations once it has
// seen the largest dirty set.
struct EpochLoop::Snapshot {
  std::vector<uint64_t> pfns;
  std::vector<uint8_t> state;
  buffer::ReceiveBuffer pages;
  explicit Snapshot(uint64_t guest_pages) : pages(0, guest_pages * kPageSize) {}
};

EpochLoop::EpochLoop(GuestSource& guest, OutputCommit& output, ConnectFn connect,
                     SenderOptions sender, EpochLoopOptions opts, StatsWriter* stats)
    : guest_(guest),
      output_(output),
      connect_(std::move(connect)),
      sender_opts_(std::move(sender)),
      opts_(std::move(opts)),
      stats_(stats),
      interval_us_(opts_.interval.count()),
      backoff_(opts_.reconnect_min),
      snap_(std::make_unique<Snapshot>(guest.guest_pages())) {
  snap_->pfns.reserve(1024);
  next_cache_pages_.store(sender_opts_.codec.cache_pages);
  configured_cache_pages_ = sender_opts_.codec.cache_pages;
  output_state_ = output_.Describe();
}

EpochLoop::~EpochLoop() = default;

void EpochLoop::SetInterval(microseconds interval) { interval_us_.store(interval.count()); }
microseconds EpochLoop::interval() const { return microseconds(interval_us_.load()); }

std::chrono::milliseconds EpochLoop::since_last_ack() const {
  const int64_t at = last_ack_ns_.load();
  if (at < 0) return std::chrono::milliseconds(-1);
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  return std::chrono::milliseconds((now - at) / 1000000);
}

Result<bool> EpochLoop::SetCacheSize(uint64_t bytes) {
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
    // Allocated here, before anything is sent: if the memory cannot be had,
    // the request fails and the session goes on unchanged.
    auto fresh = compress::PageCache::Create(pages, guest_.guest_pages());
    if (!fresh.ok()) return fresh.status().With("allocating the new page cache");
    CacheResizeRequest replaced;  // freed after the lock is released
    std::lock_guard<std::mutex> lock(ops_mu_);
    if (session_.generation != s.generation) continue;
    next_cache_pages_.store(pages);
    replaced = std::move(cache_req_);
    cache_req_ = CacheResizeRequest{s.generation, pages, std::move(*fresh)};
    return true;
  }
  return Status::Unsupported("the backup connection kept changing; try again");
}

void EpochLoop::SetSession(CheckpointSender* sender) {
  CacheResizeRequest stale;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(ops_mu_);
  ++session_.generation;
  session_.live = sender != nullptr;
  session_.can_resize = sender != nullptr && sender->can_resize_cache();
  session_.max_cache_pages = sender != nullptr ? sender->backup_max_cache_pages() : 0;
  stale = std::move(cache_req_);
  cache_req_ = CacheResizeRequest{};
}

// The epoch boundary where a live cache resize happens: CACHE_RESIZE is the
// epoch's first frame, and the cache changes before its first page.
Status EpochLoop::BeginEpoch(uint64_t epoch) {
  ROMULUS_RETURN_IF_ERROR(sender_->BeginEpoch(epoch));
  CacheResizeRequest req;
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    if (!cache_req_.cache) return Status::Ok();
    req = std::move(cache_req_);
    cache_req_ = CacheResizeRequest{};
    // Prepared for an earlier session: that one's successor already
    // started with next_cache_pages_.
    if (req.generation != session_.generation) return Status::Ok();
  }
  ROMULUS_RETURN_IF_ERROR(sender_->ResizeCache(req.pages, std::move(req.cache)).With("resizing the page cache"));
  active_cache_pages_.store(req.pages);
  spdlog::info("page cache resized to {} at epoch {} (primary and backup)", FormatSize(req.pages * kPageSize),
               epoch);
  return Status::Ok();
}

void EpochLoop::SetPaused(bool paused) {
  if (paused_.exchange(paused) != paused) events::Paused(opts_.events, paused);
}

// Epoch thread. One "unprotected" event per loss of protection, with the
// first reason; the status keeps the latest one.
void EpochLoop::SetUnprotected(std::string why) {
  if (!unprotected_event_) {
    unprotected_event_ = true;
    events::Unprotected(opts_.events, why);
  }
  std::lock_guard<std::mutex> lock(ops_mu_);
  unprotected_why_ = std::move(why);
}

std::string EpochLoop::unprotected_reason() const {
  if (paused_.load()) return "checkpointing paused by the operator (until resume)";
  if (protected_.load()) return "";
  std::lock_guard<std::mutex> lock(ops_mu_);
  return unprotected_why_;
}

std::string EpochLoop::output_state() const {
  std::lock_guard<std::mutex> lock(ops_mu_);
  return output_state_;
}

std::string EpochLoop::StatsJson() const {
  std::lock_guard<std::mutex> lock(ops_mu_);
  return "{\"last\":" + last_epoch_json_ + ",\"totals\":" + totals_json_ + "}";
}

Result<EpochLoop::RegionDigest> EpochLoop::RegionDigestsAt(uint64_t epoch, uint32_t regions,
                                                           std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(ops_mu_);
  if (region_req_.pending) return Status::Unsupported("another digest request is in progress");
  region_req_ = RegionRequest{};
  region_req_.pending = true;
  region_req_.epoch = epoch;
  region_req_.regions = std::clamp<uint32_t>(regions, 1, 4096);
  bool done = ops_cv_.wait_for(lock, timeout, [&] { return region_req_.done; });
  region_req_.pending = false;
  if (!done) return Status::Timeout("epoch " + std::to_string(epoch) + " was not acked within " +
                                    FormatDuration(timeout));
  if (!region_req_.status.ok()) return region_req_.status;
  return region_req_.result;
}

// Runs on the loop thread between epochs, when the sender's digest is
// exactly the last epoch sent and nothing is being added to it.
void EpochLoop::ServeOps() {
  std::lock_guard<std::mutex> lock(ops_mu_);
  RegionRequest& r = region_req_;
  if (!r.pending || r.done) return;
  const uint64_t started = epoch_.load();
  const int64_t acked = last_acked_.load();
  if (started < r.epoch) return;  // not there yet
  if (started == r.epoch && acked == static_cast<int64_t>(r.epoch) && sender_) {
    r.result.epoch = r.epoch;
    r.result.regions = sender_->RegionSums(r.regions);
    r.result.guest_pages = sender_->guest_pages();
    r.result.digest = 0;
    for (uint64_t v : r.result.regions) r.result.digest += v;
  } else if (started == r.epoch) {
    r.status = Status::Closed("epoch " + std::to_string(r.epoch) + " was not acked by the backup");
  } else {
    r.status = Status::OutOfRange("epoch " + std::to_string(r.epoch) + " already passed (now at " +
                                  std::to_string(started) + "); ask for a later one");
  }
  r.done = true;
  ops_cv_.notify_all();
}

Result<uint64_t> EpochLoop::Handover(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(ops_mu_);
  if (handover_req_.pending && !handover_req_.done) {
    return Status::Unsupported("a switchover is already in progress");
  }
  handover_req_ = HandoverRequest{};
  handover_req_.pending = true;
  bool done = ops_cv_.wait_for(lock, timeout, [&] { return handover_req_.done; });
  if (!done) {
    // Leave the request pending: the loop will still act on it, and a
    // second Handover() must not start another one meanwhile.
    return Status::Timeout("switchover did not complete within " + FormatDuration(timeout));
  }
  handover_req_.pending = false;
  if (!handover_req_.status.ok()) return handover_req_.status;
  return handover_req_.epoch;
}

void EpochLoop::LoseBackup(const Status& why) {
  if (sender_) {
    spdlog::error("backup lost: {} -- the guest keeps running UNPROTECTED; reconnecting",
                  why.ToString());
  }
  sender_.reset();
  SetSession(nullptr);
  protected_.store(false);
  SetUnprotected("backup lost: " + why.ToString());
  need_full_sync_ = true;
  // Nobody can hold the speculative output any more: let it through rather
  // than cut the guest off the network while it runs unprotected.
  Status st = output_.ReleaseAll();
  if (!st.ok()) spdlog::error("output commit: {}", st.ToString());
}

Status EpochLoop::EnsureConnected(const std::atomic<bool>& stop) {
  if (sender_ && sender_->healthy()) return Status::Ok();
  if (sender_) LoseBackup(sender_->failure());
  auto stream = connect_();
  if (stream.ok()) {
    GuestInfo info;
    info.guest_pages = guest_.guest_pages();
    info.identity = guest_.identity();
    info.first_epoch = epoch_.load() + 1;
    info.resync_reason = totals_.epochs > 0 ? 1 : 0;
    // A cache size set live (SetCacheSize) applies from this session on.
    sender_opts_.codec.cache_pages = next_cache_pages_.load();
    auto sender = CheckpointSender::Start(std::move(*stream), sender_opts_, info);
    if (!sender.ok() && sender.status().code() == Code::kOutOfRange &&
        sender_opts_.codec.cache_pages != configured_cache_pages_) {
      // A backup whose --max-cache-size is below the size set live (one
      // restarted with other flags, say): go back to the configured size
      // rather than stay unprotected.
      spdlog::warn("{}; retrying with the configured cache of {}", sender.status().ToString(),
                   FormatSize(configured_cache_pages_ * kPageSize));
      sender_opts_.codec.cache_pages = configured_cache_pages_;
      next_cache_pages_.store(configured_cache_pages_);
      if (auto again = connect_(); again.ok()) {
        sender = CheckpointSender::Start(std::move(*again), sender_opts_, info);
      } else {
        sender = again.status();
      }
    }
    if (sender.ok()) {
      sender_ = std::move(*sender);
      active_cache_pages_.store(sender_opts_.codec.cache_pages);
      SetSession(sender_.get());
      backoff_ = opts_.reconnect_min;
      need_full_sync_ = true;
      SetUnprotected("connected: the backup does not hold a checkpoint of this session yet (first sync)");
      if (totals_.epochs > 0) ++totals_.resyncs;
      events::Connected(opts_.events, epoch_.load() + 1, sender_->backup_sent_held(), sender_->backup_held_pages());
      if (sender_->backup_sent_held()) {
        spdlog::info("connected to backup; it holds {} non-zero pages: synchronising the pages of {} that differ",
                     sender_->backup_held_pages(), FormatSize(guest_.guest_pages() * kPageSize));
      } else {
        spdlog::info("connected to backup; full synchronisation of {} follows",
                     FormatSize(guest_.guest_pages() * kPageSize));
      }
      return Status::Ok();
    }
    stream = sender.status();
  }
  SetUnprotected("no backup: " + stream.status().ToString());
  spdlog::warn("UNPROTECTED: no backup ({}); retrying in {}", stream.status().ToString(),
               FormatDuration(backoff_));
  auto until = Clock::now() + backoff_;
  while (!stop.load() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  backoff_ = std::min(backoff_ * 2, opts_.reconnect_max);
  return stream.status();
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

// Streams every page while the guest runs. The dirty log was cleared just
// before, so whatever the guest writes meanwhile is sent again, consistently,
// by the paused part of this epoch.
Status EpochLoop::LiveSync(uint64_t epoch) {
  ROMULUS_RETURN_IF_ERROR(guest_.Pause());
  std::vector<uint64_t> all;
  Status st = guest_.HarvestDirty(&all);  // every page: MarkAllDirty was called
  Status resumed = guest_.Resume();
  ROMULUS_RETURN_IF_ERROR(st);
  ROMULUS_RETURN_IF_ERROR(resumed);
  ROMULUS_RETURN_IF_ERROR(BeginEpoch(epoch));
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
    if (guest_.MayHoldData(all[i]) || !sender_->SkipKnownZeroPage(all[i])) {
      std::memcpy(page, guest_.PageData(all[i]), kPageSize);
      ROMULUS_RETURN_IF_ERROR(sender_->AddPage(all[i], page));
    }
    if (i % step != 0 && i + 1 != all.size()) continue;
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
  const uint64_t kept = sender_->epoch_pages_kept();
  spdlog::info("initial sync went through {} pages ({}) in {:.2f} s, {}: {} sent, {} held by the backup already; "
               "the backup commits it next",
               all.size(), FormatSize(total), secs, MeasureSync(total, total, Clock::now() - t0).rate,
               all.size() - kept, kept);
  return Status::Ok();
}

Status EpochLoop::Checkpoint(uint64_t epoch, EpochStats* st, bool leave_paused) {
  Snapshot& s = *snap_;
  auto t0 = Clock::now();
  Hook(Phase::kBeforeSuspend, epoch);
  ROMULUS_RETURN_IF_ERROR(guest_.Pause());
  st->suspend = duration_cast<microseconds>(Clock::now() - t0);
  Status oc = output_.Checkpoint(epoch);
  if (!oc.ok()) spdlog::error("output commit boundary for epoch {}: {}", epoch, oc.ToString());
  Hook(Phase::kAfterSuspend, epoch);
  Status gs = guest_.HarvestDirty(&s.pfns);
  s.pages.Clear();
  if (gs.ok()) {
    auto dst = s.pages.Append(s.pfns.size() * kPageSize);
    if (!dst.ok()) {
      gs = dst.status();
    } else {
      uint8_t* p = *dst;
      for (uint64_t pfn : s.pfns) {
        std::memcpy(p, guest_.PageData(pfn), kPageSize);
        p += kPageSize;
      }
      s.pages.Commit(s.pfns.size() * kPageSize);
      s.state.clear();
      gs = guest_.CaptureState(&s.state);
    }
  }
  Hook(Phase::kBeforeResume, epoch);
  // A handover's final checkpoint leaves the guest paused for good: nothing
  // it could do afterwards would reach the backup.
  Status resumed = leave_paused ? Status::Ok() : guest_.Resume();
  st->pause = duration_cast<microseconds>(Clock::now() - t0);
  Hook(Phase::kAfterResume, epoch);
  ROMULUS_RETURN_IF_ERROR(gs.With("taking checkpoint " + std::to_string(epoch)));
  ROMULUS_RETURN_IF_ERROR(resumed.With("resuming the guest"));
  st->dirty_pages = s.pfns.size();
  return Status::Ok();
}

Status EpochLoop::StreamAndCommit(uint64_t epoch, EpochStats* st) {
  Status net;
  const uint8_t* p = snap_->pages.data();
  for (size_t i = 0; i < snap_->pfns.size() && net.ok(); ++i) {
    net = sender_->AddPage(snap_->pfns[i], p + i * kPageSize);
    if (i == snap_->pfns.size() / 2) Hook(Phase::kStreaming, epoch);
  }
  if (net.ok()) net = sender_->AddState(snap_->state);
  if (net.ok()) {
    auto wire = sender_->EndEpoch();
    if (wire.ok()) {
      st->pages_by_kind = wire->pages_by_kind;
      st->raw_bytes = wire->raw_bytes;
      st->wire_bytes = wire->wire_bytes;
      st->cache_hits = wire->cache_hits;
      st->cache_misses = wire->cache_misses;
      st->cache_overflows = wire->cache_overflows;
      st->encode_time = wire->encode_time;
      st->outbuf_high_water = wire->outbuf_high_water;
      st->digest = wire->digest;
    } else {
      net = wire.status();
    }
  }
  if (net.ok()) {
    Hook(Phase::kBeforeCommit, epoch);
    // The full sync's commit takes as long as the backup's disk needs: wait
    // while the backup is alive (heartbeats). Later epochs are small; an ack
    // later than --ack-timeout there means a stuck receive loop (§6).
    // A stop requested meanwhile ends that wait; the session stays up for BYE.
    net = full_sync_epoch_ == epoch ? sender_->WaitAck(epoch, CheckpointSender::kWhileAlive, stop_)
                                    : sender_->WaitAck(epoch, opts_.ack_timeout);
  }
  if (!net.ok()) return net;
  st->acked = true;
  st->ack_latency = sender_->last_ack_latency();
  last_acked_.store(static_cast<int64_t>(epoch));
  last_ack_ns_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
  if (!protected_.exchange(true)) {
    spdlog::info("PROTECTED: backup holds epoch {}", epoch);
    unprotected_event_ = false;
    events::Protected(opts_.events, epoch);
  }
  Status rel = output_.Release(epoch);
  if (!rel.ok()) spdlog::error("output release for epoch {}: {}", epoch, rel.ToString());
  Hook(Phase::kAfterCommit, epoch);
  return Status::Ok();
}

void EpochLoop::Publish(const EpochStats& st) {
  totals_.Add(st);
  if (stats_) stats_->Epoch(st);
  if (opts_.on_epoch) opts_.on_epoch(st);
  std::lock_guard<std::mutex> lock(ops_mu_);
  last_epoch_json_ = EpochStatsJson(st);
  totals_json_ = TotalStatsJson(totals_);
}

// The final epoch of a planned switchover: like any epoch, except that the
// guest is not resumed after the snapshot, and that on its ack the session
// ends with BYE kHandover so the backup activates from exactly this epoch.
Status EpochLoop::DoHandover(uint64_t* epoch) {
  if (!sender_ || !sender_->healthy() || last_acked_.load() < 0 ||
      last_acked_.load() != static_cast<int64_t>(*epoch)) {
    return Status::Closed("no backup holds the current epoch (not PROTECTED): switchover refused");
  }
  const uint64_t e = *epoch + 1;
  spdlog::warn("SWITCHOVER: final checkpoint {} with the guest left paused", e);
  epoch_.store(e);
  EpochStats st;
  st.epoch = e;
  st.protected_ = protected_.load();
  st.output_commit = output_.Describe();
  Status net = sender_->BeginEpoch(e);
  ROMULUS_RETURN_IF_ERROR(Checkpoint(e, &st, /*leave_paused=*/true));
  *epoch = e;
  if (net.ok()) net = StreamAndCommit(e, &st);
  Publish(st);
  if (!net.ok()) {
    Status resumed = guest_.Resume();
    LoseBackup(net);
    ROMULUS_RETURN_IF_ERROR(resumed.With("resuming the guest after a failed switchover"));
    return net.With("switchover: final epoch " + std::to_string(e) + " not acked; guest resumed");
  }
  Status bye = sender_->Stop(protocol::ByeReason::kHandover);
  sender_.reset();
  SetSession(nullptr);
  protected_.store(false);
  handed_over_.store(true);
  ROMULUS_RETURN_IF_ERROR(bye.With("sending the handover"));
  spdlog::warn("SWITCHOVER: the backup holds epoch {} and takes over; this guest stays paused", e);
  return output_.ReleaseAll();
}

Status EpochLoop::Run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  uint64_t epoch = 0;
  uint64_t checkpoints = 0;
  auto last_suspend = Clock::now();
  while (!stop.load() && (opts_.max_epochs == 0 || checkpoints < opts_.max_epochs)) {
    ServeOps();
    bool handover = false;
    {
      std::lock_guard<std::mutex> lock(ops_mu_);
      handover = handover_req_.pending && !handover_req_.done;
    }
    if (handover) {
      uint64_t final_epoch = epoch;
      Status hs = DoHandover(&final_epoch);
      events::Switchover(opts_.events, final_epoch, hs.ok(), hs.ok() ? "handed over" : hs.ToString());
      epoch = final_epoch;
      {
        std::lock_guard<std::mutex> lock(ops_mu_);
        handover_req_.done = true;
        handover_req_.status = hs;
        handover_req_.epoch = final_epoch;
      }
      ops_cv_.notify_all();
      if (hs.ok()) return Status::Ok();  // guest stays paused; the backup activates
      last_suspend = Clock::now();
      continue;
    }
    if (paused_.load()) {
      // Operator pause: no checkpoints, guest running unprotected, output
      // released (nobody will ever ack what it would wait for). The session
      // stays up on heartbeats; the dirty log keeps accumulating, so the
      // first epoch after resume carries everything written meanwhile.
      if (!paused_logged_) {
        paused_logged_ = true;
        protected_.store(false);
        spdlog::error("PAUSED by operator after epoch {}: the guest runs UNPROTECTED until `resume`", epoch);
        Status rel = output_.ReleaseAll();
        if (!rel.ok()) spdlog::error("output commit: {}", rel.ToString());
        std::lock_guard<std::mutex> lock(ops_mu_);
        output_state_ = output_.Describe() + " (released: paused)";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    if (paused_logged_) {
      paused_logged_ = false;
      spdlog::warn("resumed by operator: the next checkpoint carries everything dirtied while paused");
    }
    if (!EnsureConnected(stop).ok()) continue;
    ++epoch;
    epoch_.store(epoch);
    EpochStats st;
    st.epoch = epoch;
    st.protected_ = protected_.load();
    st.output_commit = output_.Describe();
    {
      std::lock_guard<std::mutex> lock(ops_mu_);
      output_state_ = st.output_commit;
    }

    // The sender sends while the guest runs; a failure here means the backup
    // is gone (not the guest), so the loop carries on without it.
    Status net;
    bool full = need_full_sync_;
    if (full) {
      guest_.MarkAllDirty();
      full_sync_epoch_ = epoch;
      net = LiveSync(epoch);
      need_full_sync_ = false;
    } else {
      net = BeginEpoch(epoch);
    }

    auto now = Clock::now();
    st.period = duration_cast<microseconds>(now - last_suspend);
    last_suspend = now;
    ROMULUS_RETURN_IF_ERROR(Checkpoint(epoch, &st));
    ++checkpoints;

    if (net.ok()) net = StreamAndCommit(epoch, &st);
    // A stop during the full sync's commit leaves a healthy session: it ends
    // below with BYE, not as a lost backup.
    if (!net.ok() && !(stop.load() && sender_ && sender_->healthy())) LoseBackup(net);
    Publish(st);
    ServeOps();

    // Fixed period: the next suspend is due `interval` after this one.
    auto due = last_suspend + microseconds(interval_us_.load());
    while (!stop.load() && Clock::now() < due) {
      ServeOps();
      {
        std::lock_guard<std::mutex> lock(ops_mu_);
        if (handover_req_.pending && !handover_req_.done) break;  // act now, not at the next tick
      }
      auto left = due - Clock::now();
      std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(20)));
    }
  }
  {
    // Nobody will serve a pending digest request any more.
    std::lock_guard<std::mutex> lock(ops_mu_);
    if (region_req_.pending && !region_req_.done) {
      region_req_.status = Status::Closed("replication stopped");
      region_req_.done = true;
    }
    if (handover_req_.pending && !handover_req_.done) {
      handover_req_.status = Status::Closed("replication stopped before the switchover");
      handover_req_.done = true;
    }
  }
  ops_cv_.notify_all();
  if (sender_) {
    Status bye = sender_->Stop();
    if (!bye.ok()) spdlog::warn("stopping replication: {}", bye.ToString());
    else spdlog::info("replication stopped cleanly; the backup will not fail over");
    sender_.reset();
    SetSession(nullptr);
  }
  return output_.ReleaseAll();
}

}  // namespace romulus::replicator

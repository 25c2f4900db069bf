#include "replicator/primary_controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "common/units.h"
#include "compress/page.h"
#include "compress/page_cache.h"
#include "events/catalog.h"
#include "transport/stream.h"

namespace romulus::replicator {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using compress::kPageSize;

namespace {
int64_t NowNs() { return duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }
}  // namespace

void ApplyWireStats(const EpochWireStats& wire, EpochStats* st) {
  st->pages_by_kind = wire.pages_by_kind;
  st->raw_bytes = wire.raw_bytes;
  st->wire_bytes = wire.wire_bytes;
  st->cache_hits = wire.cache_hits;
  st->cache_misses = wire.cache_misses;
  st->cache_overflows = wire.cache_overflows;
  st->encode_time = wire.encode_time;
  st->outbuf_high_water = wire.outbuf_high_water;
  st->digest = wire.digest;
  st->disk_records = wire.disk_records;
  st->disk_bytes = wire.disk_bytes;
  st->disk_wire_bytes = wire.disk_wire_bytes;
}

PrimaryController::PrimaryController(std::unique_ptr<CheckpointDriver> driver, OutputCommit& output,
                                     ConnectFn connect, SenderOptions sender, ControllerOptions opts,
                                     StatsWriter* stats)
    : driver_(std::move(driver)),
      facts_(driver_->facts()),
      output_(output),
      connect_(std::move(connect)),
      sender_opts_(std::move(sender)),
      configured_cache_pages_(sender_opts_.codec.cache_pages),
      opts_(std::move(opts)),
      stats_(stats),
      interval_us_(opts_.interval.count()) {
  if (facts_.unbounded_first_epoch_writes) sender_opts_.first_epoch_write_timeout = milliseconds(0);
  opts_.ack_timeout = std::max(opts_.ack_timeout, facts_.min_ack_timeout);
  next_cache_pages_.store(configured_cache_pages_);
  std::lock_guard<std::mutex> lock(ops_mu_);
  output_state_ = output_.Describe();
}

PrimaryController::~PrimaryController() = default;

// ---- Session management --------------------------------------------------------

void PrimaryController::SetSession(CheckpointSender* sender) {
  std::lock_guard<std::mutex> lock(ops_mu_);
  ++session_.generation;
  session_.live = sender != nullptr;
  session_.can_resize = sender && sender->can_resize_cache();
  session_.max_cache_pages = sender ? sender->backup_max_cache_pages() : 0;
  // A resize prepared for the previous session dies with it: the new
  // session's handshake carried next_cache_pages_ already.
  if (cache_req_.cache && cache_req_.generation != session_.generation) {
    cache_req_ = CacheResizeRequest{};
  }
}

// Checkpoint thread. One "unprotected" event per loss of protection, with the
// first reason; the status keeps the latest one.
void PrimaryController::SetUnprotected(std::string why) {
  if (!unprotected_event_) {
    unprotected_event_ = true;
    events::Unprotected(opts_.events, why);
  }
  std::lock_guard<std::mutex> lock(ops_mu_);
  unprotected_why_ = std::move(why);
}

void PrimaryController::LoseBackup(const Status& why) {
  if (sender_) {
    spdlog::error("backup lost: {} -- the guest keeps running UNPROTECTED (after epoch {}); reconnecting",
                  why.ToString(), last_epoch_used_.load());
  }
  sender_.reset();
  SetSession(nullptr);
  protected_.store(false);
  SetUnprotected("backup lost after epoch " + std::to_string(last_epoch_used_.load()) + ": " + why.ToString());
  // Nobody can hold the speculative output any more: let it through rather
  // than cut the guest off the network while it runs unprotected.
  Status st = output_.ReleaseAll();
  if (!st.ok()) spdlog::error("output commit: {}", st.ToString());
  std::lock_guard<std::mutex> lock(ops_mu_);
  output_state_ = output_.Describe() + " (released: no backup)";
}

Status PrimaryController::StartSender(const GuestInfo& info) {
  auto sender = CheckpointSender::Start(connect_, sender_opts_, info);
  if (!sender.ok()) return sender.status();
  sender_ = std::move(*sender);
  return Status::Ok();
}

Status PrimaryController::Connect() {
  GuestInfo info;
  info.guest_pages = facts_.guest_pages;
  info.identity = facts_.identity;
  info.capabilities = facts_.capabilities;
  info.xen_release = facts_.xen_release;
  info.first_epoch = last_epoch_used_.load() + 1;
  info.resync_reason = last_epoch_used_.load() > 0 ? 1 : 0;
  if (opts_.disks != nullptr) {
    info.disks = opts_.disks->infos();
    info.offer_disk_sync = opts_.disks->can_stream();
    opts_.disks->Refresh();
    info.disk_lineages = opts_.disks->lineages();
    info.disk_change_floors = opts_.disks->change_floors();
    info.offer_disk_digests = opts_.disks->can_compare();
  }
  session_disk_lineages_ = info.disk_lineages;
  if (info.disks != facts_.disks) {
    // Replicating memory without the disks the guest has (or the other way
    // round) would give the backup an inconsistent machine: refuse.
    return Status::InvalidArgument("the guest has " + std::to_string(facts_.disks.size()) +
                                   " disk(s) but disk replication is set up for " +
                                   std::to_string(info.disks.size()));
  }
  // A cache size set live (SetCacheSize) applies from this session on.
  sender_opts_.codec.cache_pages = next_cache_pages_.load();
  Status st = StartSender(info);
  if (st.code() == Code::kOutOfRange && sender_opts_.codec.cache_pages != configured_cache_pages_) {
    // A backup whose --max-cache-size is below the size set live (one
    // restarted with other flags, say): go back to the configured size
    // rather than stay unprotected.
    spdlog::warn("{}; retrying with the configured cache of {}", st.ToString(),
                 FormatSize(configured_cache_pages_ * kPageSize));
    sender_opts_.codec.cache_pages = configured_cache_pages_;
    next_cache_pages_.store(configured_cache_pages_);
    st = StartSender(info);
  }
  if (st.ok()) {
    active_cache_pages_.store(sender_opts_.codec.cache_pages);
    SetSession(sender_.get());
    session_first_epoch_ = info.first_epoch;
    backup_failed_.store(false);
    final_taken_ = final_committed_ = false;
    SetUnprotected("connected: the backup does not hold a checkpoint of this session yet (first sync)");
    if (info.resync_reason != 0) {
      std::lock_guard<std::mutex> lock(ops_mu_);
      ++totals_.resyncs;
    }
    events::Connected(opts_.events, info.first_epoch, sender_->backup_sent_held(), sender_->backup_held_pages());
    const std::string what = sender_->backup_sent_held()
                                 ? "it holds " + std::to_string(sender_->backup_held_pages()) +
                                       " non-zero pages: synchronising the pages of " +
                                       FormatSize(facts_.guest_pages * kPageSize) + " that differ"
                                 : "full synchronisation of " + FormatSize(facts_.guest_pages * kPageSize) +
                                       " follows";
    spdlog::info("{}; session from epoch {}; {}", info.resync_reason ? "reconnected to the backup" : "connected to backup",
                 info.first_epoch, what);
    return Status::Ok();
  }
  return st;
}

void PrimaryController::WaitOrStop(milliseconds d) const {
  for (auto until = Clock::now() + d; Clock::now() < until && !stopping() && !EndDue();) {
    std::this_thread::sleep_for(std::min<Clock::duration>(until - Clock::now(), milliseconds(20)));
  }
}

bool PrimaryController::EndDue() const {
  if (stop_ && stop_->load()) return true;
  return opts_.max_epochs != 0 && checkpoints_ >= opts_.max_epochs;
}

Status PrimaryController::BackupError(Status s) {
  if (!s.ok()) backup_failed_.store(true);
  return s;
}

Status PrimaryController::Run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  last_suspend_ = Clock::now();
  milliseconds backoff = opts_.reconnect_min;
  Status result;
  bool guest_ended = false;  // the guest shut down or died: the BYE says so, not "operator"
  while (!EndDue()) {
    if (paused_.load()) {
      ServeOps();
      PausedWait();
      continue;
    }
    Status connected = Connect();
    if (!connected.ok()) {
      if (!opts_.reconnect) {
        result = connected.With("connecting to the backup");
        break;
      }
      if (!driver_->GuestLives()) {
        result = Status::Closed(facts_.identity + " went away while unprotected; replication ends");
        break;
      }
      SetUnprotected("no backup: " + connected.ToString());
      spdlog::warn("UNPROTECTED: no backup ({}); retrying in {}", connected.ToString(), FormatDuration(backoff));
      WaitOrStop(backoff);
      backoff = std::min(backoff * 2, opts_.reconnect_max);
      continue;
    }
    backoff = opts_.reconnect_min;
    Status s = driver_->RunSession(*this);
    if (relinquished_epoch_ != 0) {
      result = FinishRelinquish();
      break;
    }
    if (final_committed_) {
      result = FinishHandover(last_epoch_used_.load());
      break;
    }
    if (final_taken_) {
      // The final epoch was not acked: the driver resumed the guest.
      std::lock_guard<std::mutex> lock(ops_mu_);
      handover_req_.done = true;
      handover_req_.status = (s.ok() ? Status::Closed("replication ended before the final epoch was acked")
                                     : s)
                                 .With("switchover: final epoch " + std::to_string(last_epoch_used_.load()) +
                                       " not acked; the guest was resumed");
      ops_cv_.notify_all();
      events::Switchover(opts_.events, last_epoch_used_.load(), false, handover_req_.status.ToString());
    }
    {
      // A switchover asked for during the session but not taken by it.
      std::lock_guard<std::mutex> lock(ops_mu_);
      if (handover_req_.pending && !handover_req_.done && !handover_req_.taken) {
        handover_req_.done = true;
        handover_req_.status = Status::Closed("the backup session ended before the final checkpoint: switchover "
                                              "refused");
        ops_cv_.notify_all();
      }
    }
    if (s.ok()) break;  // NextEpoch said stop
    // A stop during the first epoch's commit leaves a healthy session: it
    // ends below with BYE, not as a lost backup.
    if (stopping() && sender_ && sender_->healthy()) break;
    const bool backup = backup_failed_ || (sender_ && !sender_->healthy());
    if (!backup && !driver_->GuestLives()) {
      result = s;  // the guest failed: nothing left to protect
      guest_ended = true;
      break;
    }
    LoseBackup(s);
    if (!opts_.reconnect) {
      result = s;
      break;
    }
    if (!driver_->GuestLives()) {
      result = Status::Closed(facts_.identity + " went away; replication ends").With(s.ToString());
      break;
    }
  }
  FailPendingOps(Status::Closed("replication stopped"));
  if (sender_) {
    Status bye = guest_ended ? sender_->Stop(protocol::ByeReason::kGuestShutdown, result.message()) : sender_->Stop();
    if (!bye.ok()) {
      spdlog::warn("stopping replication: {}", bye.ToString());
    } else {
      spdlog::info("replication stopped cleanly after epoch {}; the backup will not fail over",
                   last_acked_.load());
    }
    sender_.reset();
    SetSession(nullptr);
  }
  protected_.store(false);
  if (relinquished_epoch_ != 0) return result;  // its output was dropped; the device stays plugged
  Status rel = output_.ReleaseAll();
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    output_state_ = output_.Describe() + " (released: replication ended)";
  }
  if (!result.ok()) return result;
  return rel;
}

std::optional<uint64_t> PrimaryController::HandOverPoint() const {
  // The backup's checkpoint is the guest only if nothing the world saw is
  // newer: acked in this session, every release since then protected.
  const int64_t acked = last_acked_.load();
  if (!sender_ || !protected_.load() || acked < static_cast<int64_t>(session_first_epoch_)) return std::nullopt;
  return static_cast<uint64_t>(acked);
}

void PrimaryController::Relinquish(uint64_t epoch, Status why, bool hand_over) {
  if (relinquished_epoch_ != 0) return;  // the first word stands
  relinquished_epoch_ = epoch;
  relinquish_why_ = std::move(why);
  relinquish_hand_over_ = hand_over;
  spdlog::error("epoch {} cannot be committed and the guest must not run on here: {}", epoch,
                relinquish_why_.ToString());
}

Status PrimaryController::FinishRelinquish() {
  const uint64_t epoch = relinquished_epoch_;
  const int64_t acked = last_acked_.load();
  // Nothing the guest produced after its last acked epoch may leave: this
  // copy never runs on, and a backup that takes over resumes before it.
  Status dropped = output_.Discard();
  if (!dropped.ok()) {
    spdlog::error("output commit: dropping the output of the epochs after {}: {} (the plug still holds it, and "
                  "removing the plug at exit drops it)",
                  acked, dropped.ToString());
  }
  const bool hand_over = relinquish_hand_over_ && HandOverPoint().has_value();
  const std::string text = "epoch " + std::to_string(epoch) + " cannot be committed: " + relinquish_why_.message();
  std::string outcome;
  if (hand_over) {
    // On a session that failed meanwhile the sender cuts instead of saying
    // BYE, and the backup fails over on the silence: the same outcome.
    Status bye = sender_->Stop(protocol::ByeReason::kHandover, text);
    handed_over_.store(true);
    outcome = "handed over to the backup, which resumes the guest from epoch " + std::to_string(acked) +
              " (taken before the failure; the output of later epochs was dropped)" +
              (bye.ok() ? "" : "; the handover message was not delivered (" + bye.ToString() +
                                   "), so the backup fails over on its own after its timeout");
    events::Switchover(opts_.events, static_cast<uint64_t>(acked), bye.ok(), "relinquished: " + text);
  } else {
    if (sender_) (void)sender_->Stop(protocol::ByeReason::kGuestShutdown, text);
    if (HandOverPoint().has_value()) {
      outcome = "this copy could not be marked as one that must never run again, so a later replicator could "
                "resume it beside the backup's";
    } else {
      outcome = acked < 0 ? "the backup holds no checkpoint"
                          : "the backup's checkpoint (epoch " + std::to_string(acked) +
                                ") is older than what the guest's output already showed the world";
    }
    outcome += ", so it does not take over: the guest stays suspended here for the operator "
               "(docs/FAILURE-MODEL.md §7a)";
  }
  sender_.reset();
  SetSession(nullptr);
  protected_.store(false);
  SetUnprotected(text + "; " + outcome);
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    output_state_ = output_.Describe() + (dropped.ok() ? " (unacked output dropped: relinquished)"
                                                       : " (dropping the unacked output failed: relinquished)");
    // A switchover asked for meanwhile (perhaps this was its final epoch)
    // did not happen as asked: the operator hears what did.
    if (handover_req_.pending && !handover_req_.done) {
      handover_req_.done = true;
      handover_req_.status =
          Status::Error(relinquish_why_.code(), "no switchover: the guest was relinquished instead (" + text + "); " +
                                                    outcome);
    }
  }
  ops_cv_.notify_all();
  spdlog::error("RELINQUISHED: {}; {}", text, outcome);
  return Status::Error(relinquish_why_.code(), text + "; " + outcome);
}

void PrimaryController::FailPendingOps(const Status& why) {
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    if (region_req_.pending && !region_req_.done) {
      region_req_.status = why;
      region_req_.done = true;
    }
    if (handover_req_.pending && !handover_req_.done) {
      handover_req_.status = why.With("before the switchover");
      handover_req_.done = true;
    }
  }
  ops_cv_.notify_all();
}

// The final epoch of a planned switchover was acked, and the driver left
// its guest paused (and unable to run here again): the backup activates
// from exactly this epoch on BYE kHandover. Without the BYE (a broken
// link) it fails over from that same epoch after its timeout.
Status PrimaryController::FinishHandover(uint64_t epoch) {
  Status bye = sender_->Stop(protocol::ByeReason::kHandover);
  sender_.reset();
  SetSession(nullptr);
  protected_.store(false);
  handed_over_.store(true);
  Status rel = output_.ReleaseAll();  // the backup holds everything it carried
  const Status outcome =
      bye.ok() ? Status::Ok()
               : bye.With("the handover message was not delivered; the backup fails over from the final epoch "
                          "on its own");
  events::Switchover(opts_.events, epoch, true, bye.ok() ? "handed over" : outcome.ToString());
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    handover_req_.done = true;
    handover_req_.status = Status::Ok();
    handover_req_.epoch = epoch;
    output_state_ = output_.Describe() + " (released: handed over)";
  }
  ops_cv_.notify_all();
  spdlog::warn("SWITCHOVER: the backup holds epoch {} and takes over; this copy stays paused{}", epoch,
               bye.ok() ? "" : " (" + outcome.ToString() + ")");
  return rel;
}

// ---- EpochSession: pacing ------------------------------------------------------------

// Between epochs, when the sender's digest is exactly the last epoch sent and
// nothing is being added to it.
void PrimaryController::ServeOps() {
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

// Operator pause: no checkpoints, guest running unprotected, output released
// (nobody will ever ack what it would wait for). A session stays up on
// heartbeats and the dirty log keeps accumulating, so the first epoch after
// resume carries everything written meanwhile; without a session none is
// started until resume.
void PrimaryController::PausedWait() {
  if (!paused_logged_) {
    paused_logged_ = true;
    protected_.store(false);
    spdlog::error("PAUSED by operator after epoch {}: {} runs UNPROTECTED until `resume`", epoch_.load(),
                  facts_.identity);
    Status rel = output_.ReleaseAll();
    if (!rel.ok()) spdlog::error("output commit: {}", rel.ToString());
    std::lock_guard<std::mutex> lock(ops_mu_);
    output_state_ = output_.Describe() + " (released: paused)";
  }
  std::this_thread::sleep_for(milliseconds(20));
}

EpochSession::Next PrimaryController::NextEpoch() {
  for (;;) {
    ServeOps();
    if (EndDue()) return Next::kStop;
    if (paused_.load()) {
      if (sender_ && !sender_->healthy()) return Next::kCheckpoint;  // the epoch fails, the session ends
      PausedWait();
      continue;
    }
    if (paused_logged_) {
      paused_logged_ = false;
      spdlog::warn("resumed by operator: the next checkpoint carries everything dirtied while paused");
    }
    {
      std::lock_guard<std::mutex> lock(ops_mu_);
      if (handover_req_.pending && !handover_req_.done && !handover_req_.taken) {
        if (protected_.load() && last_acked_.load() == static_cast<int64_t>(epoch_.load())) {
          handover_req_.taken = true;
          final_taken_ = true;
          spdlog::warn("SWITCHOVER: final checkpoint {}; {} stays paused after it", epoch_.load() + 1,
                       facts_.identity);
          return Next::kFinal;  // at once, not at the next tick
        }
        // Not PROTECTED yet (the first epoch after a resume): one ordinary
        // epoch now, and its ack lets the next boundary take the request.
        // Should the session fail instead, Run refuses it.
        if (!paused_.load()) return Next::kCheckpoint;
      }
    }
    // Fixed period, counted from the previous suspend; the interval is read
    // live, so `set interval` takes effect for this very wait.
    const auto due = last_suspend_ + microseconds(interval_us_.load());
    const auto now = Clock::now();
    if (now >= due) return Next::kCheckpoint;
    std::this_thread::sleep_for(std::min<Clock::duration>(due - now, milliseconds(20)));
  }
}

Status PrimaryController::Suspended(uint64_t epoch) {
  const auto now = Clock::now();
  cur_period_ = duration_cast<microseconds>(now - last_suspend_);
  cur_disk_cut_ = microseconds(0);
  cur_protected_ = protected_.load();
  cur_output_ = output_.Describe();
  last_suspend_ = now;
  epoch_.store(epoch);
  UseEpoch(epoch);
  ++checkpoints_;
  Status oc = output_.Checkpoint(epoch);
  {
    // The guest is paused: no second Describe(), no message unless it failed.
    std::lock_guard<std::mutex> lock(ops_mu_);
    output_state_ = cur_output_;
  }
  if (oc.ok()) return oc;
  return oc.With("output commit boundary of epoch " + std::to_string(epoch));
}

Status PrimaryController::GuestPaused(uint64_t epoch) {
  if (opts_.disks == nullptr) return Status::Ok();
  const bool first = epoch == session_first_epoch_;
  DiskSessionCopy copy;
  if (first && sender_) {
    copy.stream = sender_->disk_sync_agreed();
    copy.held = sender_->backup_disks_held();
    copy.digests = sender_->TakeBackupDiskDigests();
    if (sender_->disk_delta_agreed()) copy.lineages = session_disk_lineages_;
  }
  const auto t0 = Clock::now();
  Status st = opts_.disks->Paused(epoch, first, copy);
  cur_disk_cut_ = duration_cast<microseconds>(Clock::now() - t0);
  if (!st.ok()) {
    // Not the backup's fault, but the session cannot go on: a resync.
    backup_failed_.store(true);
    spdlog::warn("epoch {}: {}; ending the session (the backup resynchronises)", epoch, st.ToString());
  }
  return st;
}

void PrimaryController::Reached(Phase phase, uint64_t epoch) {
  if (opts_.phase_hook) opts_.phase_hook(phase, epoch);
}

// ---- EpochSession: data path -----------------------------------------------------------

void PrimaryController::UseEpoch(uint64_t epoch) {
  uint64_t seen = last_epoch_used_.load();
  while (seen < epoch && !last_epoch_used_.compare_exchange_weak(seen, epoch)) {
  }
}

Status PrimaryController::BeginEpoch(uint64_t epoch) {
  UseEpoch(epoch);
  open_epoch_ = epoch;
  ROMULUS_RETURN_IF_ERROR(BackupError(sender_->BeginEpoch(epoch)));
  // A `set cache-size` from the control socket: CACHE_RESIZE must be the
  // epoch's first frame, before its first page or state.
  CacheResizeRequest req;
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    if (!cache_req_.cache) return Status::Ok();
    req = std::move(cache_req_);
    cache_req_ = CacheResizeRequest{};
    if (req.generation != session_.generation) return Status::Ok();
  }
  ROMULUS_RETURN_IF_ERROR(
      BackupError(sender_->ResizeCache(req.pages, std::move(req.cache)).With("resizing the page cache")));
  active_cache_pages_.store(req.pages);
  spdlog::info("page cache resized to {} at epoch {} (primary and backup)", FormatSize(req.pages * kPageSize),
               epoch);
  return Status::Ok();
}

Status PrimaryController::AddPage(uint64_t pfn, const uint8_t* page) {
  return BackupError(sender_->AddPage(pfn, page));
}

Status PrimaryController::AddState(std::span<const uint8_t> record) {
  return BackupError(sender_->AddState(record));
}

bool PrimaryController::SkipKnownZeroPage(uint64_t pfn) { return sender_->SkipKnownZeroPage(pfn); }

uint64_t PrimaryController::epoch_pages_kept() const { return sender_->epoch_pages_kept(); }

Result<EpochWireStats> PrimaryController::EndEpoch() {
  if (opts_.disks != nullptr) {
    // Disk N is complete once no request tagged <= N is in flight: at most
    // one local I/O per disk, off the guest's pause, bounded like a small
    // epoch's send.
    Status d = opts_.disks->SendEpoch(open_epoch_, *sender_, Clock::now() + opts_.ack_timeout, nullptr);
    if (!d.ok()) {
      backup_failed_.store(true);
      spdlog::warn("epoch {}: disk part: {}; ending the session (the backup resynchronises)", open_epoch_,
                   d.ToString());
      return d;
    }
  }
  auto w = sender_->EndEpoch();
  if (!w.ok()) backup_failed_.store(true);
  return w;
}

// ---- EpochSession: commit -------------------------------------------------------------

Status PrimaryController::Commit(uint64_t epoch, EpochStats* st) {
  Reached(Phase::kBeforeCommit, epoch);
  // The session's first epoch carries the whole guest: its commit takes as
  // long as the backup needs (its disk, libxenguest), while the backup is
  // alive (heartbeats). Later epochs are small; an ack later than
  // --ack-timeout there means a stuck receive loop (PROTOCOL.md §6.1). The
  // budget counts from EPOCH_END written. A stop requested during the
  // first epoch ends that wait; the session stays up for BYE.
  Status net = epoch == session_first_epoch_ ? sender_->WaitAck(epoch, CheckpointSender::kWhileAlive, stop_)
                                             : sender_->WaitAck(epoch, opts_.ack_timeout);
  if (!net.ok()) {
    if (!(stopping() && sender_->healthy())) backup_failed_.store(true);
    return net.With("waiting for the backup's ack of epoch " + std::to_string(epoch));
  }
  st->acked = true;
  st->ack_latency = sender_->last_ack_latency();
  last_acked_.store(static_cast<int64_t>(epoch));
  last_ack_ns_.store(NowNs());
  if (opts_.disks != nullptr) opts_.disks->Acked(epoch);
  if (final_taken_) final_committed_ = true;
  if (opts_.disks != nullptr && !opts_.disks->WholeAt(epoch)) {
    // The backup holds this epoch, but its disks are still being copied
    // (DISK.md §7.1): it could not resume the guest. The output is
    // released as an unprotected guest's is.
    const uint32_t pm = opts_.disks->sync_permille();
    SetUnprotected("the backup's copy of the disks is being made (" + std::to_string(pm / 10) +
                   "%): it holds no checkpoint it could resume yet");
  } else if (!protected_.exchange(true)) {
    spdlog::info("PROTECTED: backup holds epoch {}", epoch);
    unprotected_event_ = false;
    events::Protected(opts_.events, epoch);
  }
  Status rel = output_.Release(epoch);
  Reached(Phase::kAfterCommit, epoch);
  // A release that fails leaves the guest's output stuck: the session
  // cannot go on holding it.
  return rel.With("releasing the output of epoch " + std::to_string(epoch));
}

void PrimaryController::Publish(const EpochStats& taken) {
  EpochStats st = taken;
  if (st.epoch == epoch_.load()) {
    st.protected_ = cur_protected_;
    st.output_commit = cur_output_;
    st.period = cur_period_;
    st.disk_cut = cur_disk_cut_;
  }
  st.has_disks = opts_.disks != nullptr && !opts_.disks->empty();
  if (stats_) stats_->Epoch(st);
  // An unacked epoch ends its session: LoseBackup says why, with the
  // backup's reason rather than "not acked".
  if (!st.acked) protected_.store(false);
  std::string line = EpochStatsJson(st);
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    totals_.Add(st);
    last_epoch_json_ = std::move(line);
    totals_json_ = TotalStatsJson(totals_);
  }
  if (opts_.on_epoch) opts_.on_epoch(st);
}

}  // namespace romulus::replicator

#include "xen/xen_primary.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/units.h"
#include "events/catalog.h"
#include "protocol/messages.h"
#include "replicator/stats.h"
#include "xen/stream_split.h"
#include "xen/stream_v2.h"
#include "xen/xen_cli.h"
#include "xen/xen_env.h"
#include "xen/xen_primary_state.h"

namespace romulus::xen {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// ---- StagingQueue ---------------------------------------------------------------

StagingQueue::StagingQueue(size_t block_bytes, size_t max_blocks)
    : block_bytes_(block_bytes), max_blocks_(std::max<size_t>(max_blocks, 2)) {}

StagingQueue::Block* StagingQueue::GetFree() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (aborted_) return nullptr;
    if (!free_.empty()) {
      Block* b = free_.back();
      free_.pop_back();
      return b;
    }
    if (all_.size() < max_blocks_) {
      auto b = std::make_unique<Block>();
      b->data.reset(new uint8_t[block_bytes_]);
      all_.push_back(std::move(b));
      return all_.back().get();
    }
    cv_.wait(lock);
  }
}

void StagingQueue::PushFull(Block* b) {
  std::lock_guard<std::mutex> lock(mu_);
  full_.push_back(b);
  high_water_ = std::max(high_water_, full_.size());
  cv_.notify_all();
}

StagingQueue::Block* StagingQueue::PopFull() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return aborted_ || closed_ || !full_.empty(); });
  if (aborted_ || full_.empty()) return nullptr;
  Block* b = full_.front();
  full_.pop_front();
  return b;
}

void StagingQueue::Recycle(Block* b) {
  std::lock_guard<std::mutex> lock(mu_);
  b->len = 0;
  free_.push_back(b);
  cv_.notify_all();
}

void StagingQueue::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

void StagingQueue::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  cv_.notify_all();
}

size_t StagingQueue::allocated_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return all_.size();
}

size_t StagingQueue::high_water_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return high_water_;
}

// ---- The replication session ------------------------------------------------------

namespace {

const char* ShutdownReasonName(unsigned r) {
  switch (r) {
    case SHUTDOWN_poweroff: return "poweroff";
    case SHUTDOWN_reboot: return "reboot";
    case SHUTDOWN_suspend: return "suspend";
    case SHUTDOWN_crash: return "crash";
    case SHUTDOWN_watchdog: return "watchdog";
    default: return "unknown";
  }
}

struct EpochTimes {
  Clock::time_point suspend_requested, suspended, resumed;
  bool protected_ = false;    // a backup held the previous epoch at this suspend
  std::string output_commit;  // OutputCommit::Describe() at this suspend
};

const char kNoOutputCommit[] = "none (output not committed)";
// Under the domain's xenstore directory, written by a switchover: the epoch
// the backup took over from.
const char kHandedOverNode[] = "romulus-handed-over";

class Session : public EpochSink {
 public:
  Session(const XenReplicateOptions& opts, XenHandles* h, const DomainFacts& dom,
          EpochTransport* sender, replicator::OutputCommit* output,
          const std::atomic<bool>* stop, XenPrimaryState* live, replicator::StatsWriter* stats,
          uint64_t epoch_base, Clock::time_point run_started)
      : opts_(opts), h_(h), dom_(dom), sender_(sender), output_(output), stop_(stop), live_(live),
        stats_(stats), base_(epoch_base), run_started_(run_started),
        queue_(1u << 20, std::max<uint64_t>(opts.staging_bytes >> 20, 4)),
        splitter_(this), parser_(&splitter_), checkpoints_(epoch_base) {}

  Status Run(ReplicateSummary* summary);
  // After Run: the session ended on purpose (stop, duration, max epochs,
  // switchover), not because something failed.
  bool ended_cleanly() const { return clean_stop_; }
  // The last epoch number used on the wire (begun, perhaps never ended): the
  // next session must start after it.
  uint64_t last_epoch() const { return std::max(checkpoints_, worker_epoch_); }

  // EpochSink (worker thread).
  Status BeginEpoch(uint64_t epoch) override;
  Status AddState(std::span<const uint8_t> blob) override { return sender_->AddState(blob); }
  Status AddPage(uint64_t pfn, const uint8_t* page) override {
    Status s = sender_->AddPage(pfn, page);
    if (++worker_pages_ == 1) Hook(replicator::Phase::kStreaming, worker_epoch_);
    return s;
  }
  Status EndEpoch(uint64_t epoch) override;

 private:
  static int SuspendCb(void* d) { return static_cast<Session*>(d)->Suspend(); }
  static int PostcopyCb(void* d) { return static_cast<Session*>(d)->Postcopy(); }
  static int CheckpointCb(void* d) { return static_cast<Session*>(d)->Checkpoint(); }
  int Suspend();
  int Postcopy();
  int Checkpoint();

  void ReaderLoop(int fd);
  void WorkerLoop();
  void SetError(Status s);
  Status error() const;
  void DrainWatch();
  void RecordEpoch(uint64_t n, const replicator::EpochWireStats& w, bool acked, Clock::time_point t0);
  bool StopRequested() const;
  // Between epochs: sleeps to the next period, or while the operator paused
  // checkpointing. False when the session should stop cleanly instead.
  bool WaitForNextEpoch();
  void Hook(replicator::Phase p, uint64_t epoch) const {
    if (opts_.phase_hook) opts_.phase_hook(p, epoch);
  }
  std::string OutputDescribe() const { return output_ ? output_->Describe() : kNoOutputCommit; }
  void Cleanup(bool guest_may_be_suspended);

  const XenReplicateOptions& opts_;
  XenHandles* h_;
  DomainFacts dom_;
  EpochTransport* sender_;
  replicator::OutputCommit* output_;
  const std::atomic<bool>* stop_;
  XenPrimaryState* live_;  // interval, pause, status and stats for the control socket
  replicator::StatsWriter* stats_;  // --stats-json lines, human lines, totals
  struct xs_handle* watch_xsh_ = nullptr;
  int tee_fd_ = -1;
  // Epochs are numbered across sessions: the v2 stream's checkpoint k of this
  // session is epoch base_ + k on the wire, in stats and in hooks.
  const uint64_t base_;
  const Clock::time_point run_started_;  // the first session's start (--duration)

  StagingQueue queue_;
  StreamSplitter splitter_;
  StreamParser parser_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status error_;                 // first failure anywhere
  uint64_t epoch_ended_ = 0;     // last epoch the worker handed to EndEpoch
  replicator::EpochWireStats last_wire_;
  Clock::time_point ended_at_;   // when EndEpoch (EPOCH_END written) returned for epoch_ended_
  uint64_t read_bytes_ = 0;

  // Worker thread only: the epoch being streamed and its pages so far.
  uint64_t worker_epoch_ = 0;
  uint64_t worker_pages_ = 0;

  // xc_domain_save thread only.
  uint64_t checkpoints_;  // the last epoch checkpointed (starts at base_)
  EpochTimes cur_;
  Clock::time_point started_;
  Clock::time_point previous_suspend_;  // suspend request of the previous epoch (epoch 1: start)
  uint64_t stream_bytes_at_checkpoint_ = 0;  // read_bytes_ at the previous checkpoint
  bool clean_stop_ = false;
  bool final_ = false;        // planned switchover: this epoch is the last, the domain stays suspended
  bool handed_over_ = false;  // the final epoch was acked
  std::vector<microseconds> pauses_;  // stopped time (suspended -> resumed), for the summary
  ReplicateSummary sum_;
};

void Session::SetError(Status s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_.ok()) error_ = s;
  cv_.notify_all();
}

Status Session::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

Status Session::BeginEpoch(uint64_t stream_checkpoint) {
  const uint64_t epoch = base_ + stream_checkpoint;
  worker_epoch_ = epoch;
  worker_pages_ = 0;
  ROMULUS_RETURN_IF_ERROR(sender_->BeginEpoch(epoch));
  // A `set cache-size` from the control socket: CACHE_RESIZE must be the
  // epoch's first frame, before its first page or state.
  uint64_t cache_pages = 0;
  if (auto fresh = live_->TakeCacheRequest(&cache_pages)) {
    ROMULUS_RETURN_IF_ERROR(sender_->ResizeCache(cache_pages, std::move(fresh)));
    live_->set_cache_size(cache_pages * 4096);
    fprintf(stderr, "romulus: page cache resized to %s from epoch %llu, on both ends\n",
            FormatSize(cache_pages * 4096).c_str(), (unsigned long long)epoch);
  }
  if (stream_checkpoint != 1) return Status::Ok();
  // The backup creates its domain from this before the stream starts.
  std::string info = "name=" + dom_.name + "\nuuid=" + dom_.uuid + "\nmax_vcpus=" +
                     std::to_string(dom_.max_vcpus) + "\nmax_memkb=" + std::to_string(dom_.max_memkb) +
                     "\ntarget_kb=" + std::to_string(dom_.target_kb) + "\nguest_pages=" +
                     std::to_string(dom_.guest_pages) + "\nhvm=0\n";
  // The NICs, for the backup to recreate at activation (validated by ReadVifs).
  if (auto vifs = VifInfoLines(dom_.vifs); vifs.ok()) info += *vifs;
  std::vector<uint8_t> blob;
  WrapEnvelope(EnvelopeKind::kDomainInfo,
               std::span(reinterpret_cast<const uint8_t*>(info.data()), info.size()), &blob);
  return sender_->AddState(blob);
}

Status Session::EndEpoch(uint64_t stream_checkpoint) {
  auto w = sender_->EndEpoch();
  if (!w.ok()) return w.status();
  std::lock_guard<std::mutex> lock(mu_);
  epoch_ended_ = base_ + stream_checkpoint;
  last_wire_ = *w;
  ended_at_ = Clock::now();
  cv_.notify_all();
  return Status::Ok();
}

// Drains the pipe at memory speed: read() into staging blocks, nothing else.
void Session::ReaderLoop(int fd) {
  for (;;) {
    StagingQueue::Block* b = queue_.GetFree();
    if (!b) break;
    ssize_t n;
    do {
      n = read(fd, b->data.get(), queue_.block_bytes());
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      if (n < 0) SetError(Status::FromErrno("reading the migration stream pipe", errno));
      queue_.Recycle(b);
      break;
    }
    b->len = size_t(n);
    if (tee_fd_ >= 0 && write(tee_fd_, b->data.get(), b->len) != ssize_t(b->len)) {
      SetError(Status::FromErrno("writing --tee-stream " + opts_.tee_path, errno));
      close(tee_fd_);
      tee_fd_ = -1;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      read_bytes_ += uint64_t(n);
    }
    queue_.PushFull(b);
  }
  queue_.Close();
}

// Parses and sends. After a failure it keeps draining so that
// xc_domain_save never blocks on a full pipe.
void Session::WorkerLoop() {
  bool failed = false;
  while (StagingQueue::Block* b = queue_.PopFull()) {
    if (!failed) {
      Status s = parser_.Feed(std::span<const uint8_t>(b->data.get(), b->len));
      if (!s.ok()) {
        failed = true;
        SetError(s.With("replicating the migration stream"));
      }
    }
    queue_.Recycle(b);
  }
}

void Session::DrainWatch() {
  for (;;) {
    char** ev = xs_check_watch(watch_xsh_);
    if (!ev) break;
    free(ev);
  }
}

int Session::Suspend() {
  const uint64_t epoch = checkpoints_ + 1;
  Hook(replicator::Phase::kBeforeSuspend, epoch);
  if (!final_ && live_->TakeSwitchover()) {
    final_ = true;
    fprintf(stderr, "romulus: SWITCHOVER: final checkpoint %llu; domain %s stays suspended after it\n",
            (unsigned long long)epoch, dom_.name.c_str());
  }
  cur_ = EpochTimes{};
  cur_.suspend_requested = Clock::now();
  cur_.protected_ = live_->protected_now();
  cur_.output_commit = OutputDescribe();
  live_->EpochStarted(epoch, cur_.output_commit);
  if (output_) {
    Status s = output_->Checkpoint(epoch);
    if (!s.ok()) {
      SetError(s.With("output commit at suspend"));
      return 0;
    }
  }
  DrainWatch();
  const std::string ctl = "/local/domain/" + std::to_string(dom_.domid) + "/control/shutdown";
  Status w = XsWrite(h_->xsh(), XBT_NULL, ctl, "suspend");
  if (!w.ok()) {
    SetError(w.With("asking the guest to suspend"));
    return 0;
  }
  const auto deadline = cur_.suspend_requested + opts_.suspend_timeout;
  for (;;) {
    auto info = GetDomainInfo(h_->xch(), dom_.domid);
    if (!info.ok()) {
      SetError(info.status().With("waiting for the guest to suspend (domain gone?)"));
      return 0;
    }
    if (info->dying) {
      SetError(Status::Closed("domain " + dom_.name + " is being destroyed"));
      return 0;
    }
    if (info->shutdown) {
      if (info->shutdown_reason == SHUTDOWN_suspend) break;
      SetError(Status::Closed("domain " + dom_.name + " shut down (" +
                              ShutdownReasonName(info->shutdown_reason) + ") instead of suspending"));
      return 0;
    }
    auto now = Clock::now();
    if (now >= deadline) {
      // Withdraw the request so the guest does not suspend later on its own.
      (void)XsWrite(h_->xsh(), XBT_NULL, ctl, "");
      SetError(Status::Timeout(
          "guest will not suspend: domain " + dom_.name + " did not reach SHUTDOWN_suspend within " +
          std::to_string(opts_.suspend_timeout.count()) +
          " ms of control/shutdown=suspend (does its kernel have Xen PV suspend support, is it "
          "hung or busy?)"));
      return 0;
    }
    // @releaseDomain fires when the domain changes shutdown state; the short
    // poll bound is a safety net should a watch event be missed.
    int ms = int(std::min<int64_t>(duration_cast<milliseconds>(deadline - now).count() + 1, 10));
    struct pollfd p = {xs_fileno(watch_xsh_), POLLIN, 0};
    poll(&p, 1, ms);
    DrainWatch();
  }
  cur_.suspended = Clock::now();
  // libxenguest writes this epoch's dirty pages after we return, while the
  // guest stays suspended.
  Hook(replicator::Phase::kAfterSuspend, epoch);
  return 1;
}

int Session::Postcopy() {
  const uint64_t epoch = checkpoints_ + 1;  // Checkpoint() counts it next
  // The dirty pages are in the pipe (perhaps not yet on the wire).
  Hook(replicator::Phase::kBeforeResume, epoch);
  if (final_) {
    // Planned switchover: this copy must not run past the final checkpoint.
    cur_.resumed = Clock::now();
    return 1;
  }
  // Cooperative resume: the guest sees its suspend hypercall return "cancelled"
  // and runs on with its devices connected.
  if (xc_domain_resume(h_->xch(), dom_.domid, 1) != 0) {
    SetError(Status::FromErrno("xc_domain_resume(" + std::to_string(dom_.domid) + ", fast)", errno));
    return 0;
  }
  // Without XS_RESUME, xenstored would fire no @releaseDomain at the next suspend.
  if (!xs_resume_domain(h_->xsh(), dom_.domid)) {
    fprintf(stderr, "romulus: warning: xs_resume_domain(%u) failed: %s\n", dom_.domid, strerror(errno));
  }
  cur_.resumed = Clock::now();
  Hook(replicator::Phase::kAfterResume, epoch);
  return 1;
}

void Session::RecordEpoch(uint64_t n, const replicator::EpochWireStats& w, bool acked, Clock::time_point t0) {
  const auto now = Clock::now();
  XenEpochFacts f;
  f.epoch = n;
  f.acked = acked;
  f.protected_ = cur_.protected_;
  f.previous_suspend = previous_suspend_;
  f.suspend_requested = cur_.suspend_requested;
  f.suspended = cur_.suspended;
  f.resumed = cur_.resumed;
  f.ack_wait = duration_cast<microseconds>(now - t0);
  f.output_commit = cur_.output_commit;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Measured here rather than in the transport, so any transport has it.
    if (acked && epoch_ended_ == n) f.ack_latency = duration_cast<microseconds>(now - ended_at_);
    // libxenguest writes nothing while the checkpoint callback runs, and the
    // worker has consumed the CHECKPOINT record: read_bytes_ ends exactly at it.
    f.stream_bytes = read_bytes_ - stream_bytes_at_checkpoint_;
    stream_bytes_at_checkpoint_ = read_bytes_;
  }
  previous_suspend_ = cur_.suspend_requested;
  replicator::EpochStats e = MakeXenEpochStats(w, f);
  if (acked) {  // the summary counts acked checkpoints only
    pauses_.push_back(duration_cast<microseconds>(cur_.resumed - cur_.suspended));
    sum_.epochs = n;
    sum_.pages += w.pages;
    sum_.wire_bytes += w.wire_bytes;
  }
  stats_->Epoch(e);
  // Events on the transitions only: every epoch is in the stats already.
  const bool was_protected = live_->protected_now();
  live_->Published(e, now);
  if (acked && !was_protected) events::Protected(opts_.events, n);
  if (!acked && was_protected) events::Unprotected(opts_.events, "epoch " + std::to_string(n) + " was not acked");
  if (opts_.on_epoch) opts_.on_epoch(e);
}

bool Session::StopRequested() const {
  return (stop_ && stop_->load()) ||
         (opts_.duration.count() > 0 && Clock::now() - run_started_ >= opts_.duration);
}

bool Session::WaitForNextEpoch() {
  bool paused = false;
  for (;;) {
    if (StopRequested()) return false;
    if (live_->paused()) {
      if (!paused) {
        // Like the engine's pause: the guest runs on UNPROTECTED, log-dirty
        // stays on (the next epoch carries everything dirtied meanwhile), the
        // session stays up on heartbeats, and held output is released (nobody
        // will ack the epoch it would wait for).
        paused = true;
        std::string out = OutputDescribe();
        if (output_) {
          Status r = output_->ReleaseAll();
          if (!r.ok()) fprintf(stderr, "romulus: output commit: %s\n", r.ToString().c_str());
          out += " (released: paused)";
        }
        live_->Unprotected(out);
        events::Paused(opts_.events, true);
        fprintf(stderr, "romulus: PAUSED by operator after epoch %llu: domain %s runs UNPROTECTED until `resume`\n",
                (unsigned long long)checkpoints_, dom_.name.c_str());
      }
      std::this_thread::sleep_for(milliseconds(20));
      continue;
    }
    if (paused) {
      paused = false;
      events::Paused(opts_.events, false);
      fprintf(stderr, "romulus: resumed by operator: the next checkpoint carries everything dirtied while paused\n");
    }
    // Fixed period, counted from the previous suspend request; the interval
    // is read live, so `set interval` takes effect for this very wait.
    const auto next = cur_.suspend_requested + live_->interval();
    const auto now = Clock::now();
    if (now >= next) return true;
    std::this_thread::sleep_for(std::min<Clock::duration>(next - now, milliseconds(20)));
  }
}

int Session::Checkpoint() {
  const uint64_t n = ++checkpoints_;
  const auto t0 = Clock::now();
  // The session's first epoch carries the whole memory (live pass): it may
  // take as long as the backup (libxenguest applying the burst) needs, while
  // the backup is alive; the sender fails the session on its silence
  // (PROTOCOL.md §6.1). Later epochs are small and get --ack-timeout.
  const bool first = n == base_ + 1;
  const milliseconds budget = opts_.ack_timeout;
  replicator::EpochWireStats wire;
  {
    // The CHECKPOINT record is in the pipe; wait for the worker to send it.
    std::unique_lock<std::mutex> lock(mu_);
    auto sent = [&] { return epoch_ended_ >= n || !error_.ok(); };
    if (first) {
      while (!cv_.wait_for(lock, milliseconds(100), sent)) {
        if (stop_ && stop_->load()) {
          error_ = Status::Closed("stop requested during the first epoch of the session");
          break;
        }
      }
    } else if (!cv_.wait_until(lock, t0 + budget, sent)) {
      error_ = Status::Timeout("epoch " + std::to_string(n) + " not sent within " +
                               std::to_string(budget.count()) + " ms (network too slow or stalled)");
    }
    if (!error_.ok()) return 0;
    wire = last_wire_;
  }
  Hook(replicator::Phase::kBeforeCommit, n);  // EPOCH_END n written, ack not yet read
  // --ack-timeout counts from EPOCH_END written (PROTOCOL.md §6.1), as for
  // the simulated guest: time spent sending the epoch on a loaded host is
  // not held against the backup's ack (it once left 23 ms for it).
  Status s = first ? sender_->WaitAck(n, replicator::CheckpointSender::kWhileAlive, stop_)
                   : sender_->WaitAck(n, budget);
  if (!s.ok()) {
    RecordEpoch(n, wire, /*acked=*/false, t0);
    SetError(s.With("waiting for the backup's ack of epoch " + std::to_string(n)));
    return 0;
  }
  Status released = output_ ? output_->Release(n) : Status::Ok();
  Hook(replicator::Phase::kAfterCommit, n);  // acked and released, stats line not yet written
  RecordEpoch(n, wire, /*acked=*/true, t0);
  if (!released.ok()) {
    SetError(released.With("releasing output of epoch " + std::to_string(n)));
    return 0;
  }

  if (final_) {
    // The backup holds the final epoch: end the save and hand over (Run).
    handed_over_ = true;
    clean_stop_ = true;
    return 0;
  }
  bool done = StopRequested() || (opts_.max_epochs && n >= opts_.max_epochs) || !WaitForNextEpoch();
  if (done) {
    clean_stop_ = true;
    return 0;
  }
  return 1;
}

void Session::Cleanup(bool guest_may_be_suspended) {
  auto info = GetDomainInfo(h_->xch(), dom_.domid);
  if (!info.ok()) return;  // domain gone: nothing to repair
  if (guest_may_be_suspended && info->shutdown && info->shutdown_reason == SHUTDOWN_suspend) {
    // LAB-NOTES pitfall 8: a save that died mid-checkpoint leaves the primary
    // suspended (---ss-). Resume it so the guest keeps running unprotected.
    if (xc_domain_resume(h_->xch(), dom_.domid, 1) == 0) {
      xs_resume_domain(h_->xsh(), dom_.domid);
      fprintf(stderr, "romulus: resumed domain %s, which the failed checkpoint left suspended\n",
              dom_.name.c_str());
    } else {
      fprintf(stderr, "romulus: ERROR: domain %s is left suspended and xc_domain_resume failed: %s\n",
              dom_.name.c_str(), strerror(errno));
    }
  }
  // Log-dirty mode costs the guest a fault per first write; never leave it on.
  xc_shadow_control(h_->xch(), dom_.domid, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0);
}

Status Session::Run(ReplicateSummary* summary) {
  started_ = Clock::now();
  previous_suspend_ = started_;
  // Epoch 1 starts now: libxenguest's live pass is part of it.
  live_->EpochStarted(base_ + 1, OutputDescribe());
  watch_xsh_ = xs_open(0);
  if (!watch_xsh_ || !xs_watch(watch_xsh_, "@releaseDomain", "romulus")) {
    return Status::FromErrno("watching @releaseDomain in xenstore", errno);
  }

  if (!opts_.tee_path.empty()) {
    tee_fd_ = open(opts_.tee_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tee_fd_ < 0) return Status::FromErrno("opening " + opts_.tee_path, errno);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno("pipe2", errno);
  // A large pipe lets libxenguest write a batch (up to 4 MiB) without waiting
  // for our reader to be scheduled. Try 4 MiB, settle for what is allowed.
  for (int sz : {4 << 20, 1 << 20, 256 << 10}) {
    if (fcntl(fds[1], F_SETPIPE_SZ, sz) >= 0) break;
  }

  std::thread reader([&] { ReaderLoop(fds[0]); });
  std::thread worker([&] { WorkerLoop(); });

  struct save_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.suspend = &Session::SuspendCb;
  cb.postcopy = &Session::PostcopyCb;
  cb.checkpoint = &Session::CheckpointCb;
  cb.data = this;
  // XCFLAGS_LIVE is mandatory: without it log-dirty is never enabled and the
  // checkpointed stream carries no PAGE_DATA at all (LAB-NOTES).
  int rc = xc_domain_save(h_->xch(), fds[1], dom_.domid, XCFLAGS_LIVE, &cb, XC_STREAM_REMUS, -1);
  int save_errno = errno;
  close(fds[1]);  // the reader sees EOF once it drained everything
  reader.join();
  worker.join();
  close(fds[0]);
  if (tee_fd_ >= 0) close(tee_fd_);
  xs_unwatch(watch_xsh_, "@releaseDomain", "romulus");
  xs_close(watch_xsh_);
  watch_xsh_ = nullptr;

  Status err = error();
  Cleanup(!clean_stop_);
  live_->Unprotected(OutputDescribe() + (output_ ? " (released: replication ended)" : ""));

  // Summary.
  if (!pauses_.empty()) {
    auto p = pauses_;
    std::sort(p.begin(), p.end());
    sum_.pause_median = p[p.size() / 2];
    sum_.pause_max = p.back();
  }
  if (summary) *summary = sum_;

  if (handed_over_) {
    // All the guest's output is held by the backup now; BYE "handover" makes
    // it activate from the final epoch. Without the BYE (a broken link) it
    // fails over from that same epoch after its timeout: either way this
    // copy must stay suspended.
    if (output_) (void)output_->ReleaseAll();
    // Marks this copy as stale for any later replicator, which would
    // otherwise resume a suspended domain (two live copies). Only dom0 can
    // read or change it; it goes with the domain's directory on destroy.
    const std::string mark = "/local/domain/" + std::to_string(dom_.domid) + "/" + kHandedOverNode;
    if (!XsWrite(h_->xsh(), XBT_NULL, mark, std::to_string(checkpoints_)).ok()) {
      fprintf(stderr, "romulus: warning: could not mark domain %s as handed over (%s)\n", dom_.name.c_str(), mark.c_str());
    }
    Status bye = sender_->Handover();
    live_->SwitchoverDone(bye.ok() ? Status::Ok()
                                   : bye.With("the handover message was not delivered; the backup fails over "
                                              "from the final epoch on its own"),
                          checkpoints_);
    fprintf(stderr, "romulus: SWITCHOVER: the backup holds epoch %llu and takes over; domain %s is left "
            "suspended (destroy it once the backup runs the guest)\n",
            (unsigned long long)checkpoints_, dom_.name.c_str());
    return bye;
  }
  live_->SwitchoverDone(err.ok() ? Status::Closed("replication ended before the final checkpoint was acked; "
                                                  "the domain was resumed")
                                 : err.With("final checkpoint not acked; the domain was resumed"),
                        checkpoints_);
  if (clean_stop_) {
    if (output_) (void)output_->ReleaseAll();
    if (!err.ok()) fprintf(stderr, "romulus: warning: %s\n", err.ToString().c_str());
    // BYE: the backup stops without failing over.
    return sender_->Stop();
  }
  // Not a clean stop: the backup will fail over (we never say BYE). Let the
  // guest's output through: it is unprotected from now on.
  if (output_) (void)output_->ReleaseAll();
  if (!err.ok()) return err;
  if (h_->LogContains("Failed to enable logdirty")) {
    return Status::Unsupported(
        "Failed to enable logdirty for domain " + dom_.name +
        ": the hypervisor cannot track a PV guest's dirty pages. Debian's Xen 4.17.7+ security "
        "build has no shadow paging (XSA-495); boot a hypervisor built with CONFIG_SHADOW_PAGING=y "
        "(see docs/XEN-STREAM.md, \"Errors\") [" + h_->RecentErrors() + "]");
  }
  std::string why = h_->RecentErrors();
  return Status::IoError("xc_domain_save failed (rc " + std::to_string(rc) + ", " + strerror(save_errno) +
                         ")" + (why.empty() ? "" : ": " + why));
}

// A domain worth protecting further: not gone, dying or shutting down (a
// suspended one is resumed by the session's clean-up).
bool DomainLives(XenHandles& h, uint32_t domid) {
  auto info = GetDomainInfo(h.xch(), domid);
  return info.ok() && !info->dying && !(info->shutdown && info->shutdown_reason != SHUTDOWN_suspend);
}

}  // namespace

Status RunReplicateDomainWith(const XenReplicateOptions& opts, const TransportFactory& connect,
                              replicator::OutputCommit* output, const std::atomic<bool>* stop,
                              ReplicateSummary* summary) {
  if (opts.interval.count() <= 0) return Status::InvalidArgument("--interval must be positive");
  auto h = XenHandles::Open(opts.verbose);
  if (!h.ok()) return h.status();
  ROMULUS_RETURN_IF_ERROR(CheckVersionMatch((*h)->xch()));
  auto dom = ResolveDomain(**h, opts.domain);
  if (!dom.ok()) return dom.status();
  if (dom->hvm) {
    return Status::Unsupported("domain " + dom->name + " is HVM; Romulus replicates PV guests only for now");
  }
  if (dom->dying || (dom->shutdown && dom->shutdown_reason != SHUTDOWN_suspend)) {
    return Status::InvalidArgument("domain " + dom->name + " is shutting down");
  }
  if (dom->shutdown && dom->shutdown_reason == SHUTDOWN_suspend) {
    const std::string handed = XsRead((*h)->xsh(), "/local/domain/" + std::to_string(dom->domid) + "/" + kHandedOverNode);
    if (!handed.empty()) {
      return Status::InvalidArgument("domain " + dom->name + " was handed over to its backup at epoch " + handed +
                                     " (romulus switchover): it must not run here again; destroy it (xl destroy " +
                                     std::to_string(dom->domid) + ")");
    }
    // A previous replicator died with the guest suspended: resume it first.
    if (xc_domain_resume((*h)->xch(), dom->domid, 1) != 0) {
      return Status::FromErrno("domain " + dom->name + " is suspended and cannot be resumed", errno);
    }
    xs_resume_domain((*h)->xsh(), dom->domid);
  }

  XenPrimaryState own;
  XenPrimaryState* live = opts.live ? opts.live : &own;
  live->Begin(dom->name, dom->domid, opts.interval,
              output ? output->Describe() : std::string(kNoOutputCommit));
  if (opts.on_domain) ROMULUS_RETURN_IF_ERROR(opts.on_domain(dom->name));
  // Before connecting: a bad path must not cost the backup a session.
  replicator::StatsWriter stats;
  if (!opts.stats_path.empty() && !stats.OpenJson(opts.stats_path)) {
    return Status::FromErrno("opening --stats-json " + opts.stats_path, errno);
  }
  stats.set_human(opts.human_stats);
  stats.set_human_min_gap(opts.human_min_gap);

  replicator::GuestInfo gi;
  gi.guest_pages = dom->guest_pages;
  gi.identity = dom->name;
  gi.first_epoch = 1;
  gi.capabilities = protocol::kCapXenStream;
  auto sender = connect(gi);
  if (!sender.ok()) return sender.status().With("connecting to the backup");

  fprintf(stderr, "romulus: replicating domain %s (domid %u, %u vCPU, %llu pages) every %s\n",
          dom->name.c_str(), dom->domid, dom->max_vcpus, (unsigned long long)dom->guest_pages,
          FormatDuration(live->interval()).c_str());
  const auto run_started = Clock::now();
  uint64_t last_epoch = 0;
  Status s;
  for (;;) {
    live->SetCacheLimits((*sender)->CanResizeCache(), (*sender)->BackupMaxCachePages(), dom->guest_pages);
    Session session(opts, h->get(), *dom, sender->get(), output, stop, live, &stats, last_epoch, run_started);
    s = session.Run(summary);
    last_epoch = session.last_epoch();
    if (!opts.reconnect || session.ended_cleanly() || (stop && stop->load())) break;
    // Only a lost backup is worth a new session; a domain that is gone or
    // shutting down ends the replication.
    if (!DomainLives(**h, dom->domid)) break;
    live->SetUnprotectedReason("backup lost after epoch " + std::to_string(last_epoch) + ": " + s.ToString());
    events::Unprotected(opts.events, "backup lost after epoch " + std::to_string(last_epoch) + ": " + s.ToString());
    fprintf(stderr, "romulus: backup lost after epoch %llu (%s): domain %s runs UNPROTECTED; reconnecting\n",
            (unsigned long long)last_epoch, s.ToString().c_str(), dom->name.c_str());
    sender->reset();  // closes the old connection
    uint64_t dropped_pages = 0;
    if (live->TakeCacheRequest(&dropped_pages)) {
      fprintf(stderr, "romulus: a pending `set cache-size %s` was dropped with the lost session\n",
              FormatSize(dropped_pages * 4096).c_str());
    }
    // A new session is a new v2 stream from the whole memory (libxenguest
    // cannot splice onto the old one); its epochs continue the numbering.
    gi.first_epoch = last_epoch + 1;
    gi.resync_reason = 1;  // the backup reconnected after a loss
    auto backoff = opts.reconnect_min;
    bool gone = false;
    for (;;) {
      sender = connect(gi);
      if (sender.ok() || (stop && stop->load())) break;
      if ((gone = !DomainLives(**h, dom->domid))) break;  // nothing left to protect
      live->SetUnprotectedReason("no backup: " + sender.status().ToString());
      fprintf(stderr, "romulus: UNPROTECTED: no backup (%s); retrying in %s\n",
              sender.status().ToString().c_str(), FormatDuration(backoff).c_str());
      for (auto until = Clock::now() + backoff; Clock::now() < until && !(stop && stop->load());) {
        std::this_thread::sleep_for(milliseconds(20));
      }
      backoff = std::min(backoff * 2, opts.reconnect_max);
    }
    if (gone) {
      s = Status::Closed("domain " + dom->name + " went away while unprotected; replication ends");
      break;
    }
    if (stop && stop->load()) {  // stopped while unprotected
      if (sender.ok()) (void)(*sender)->Stop();  // BYE: no failover of a session that never ran
      s = Status::Ok();
      break;
    }
    live->CountResync();
    fprintf(stderr, "romulus: reconnected to the backup: session from epoch %llu, full resync of %s\n",
            (unsigned long long)gi.first_epoch, FormatSize(dom->guest_pages * 4096).c_str());
  }
  stats.Totals(live->totals());
  return s;
}

}  // namespace romulus::xen

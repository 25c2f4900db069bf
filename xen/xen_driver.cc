// The Xen checkpoint driver: one session runs xc_domain_save(XC_STREAM_REMUS)
// with our callbacks and taps its migration-v2 output into the session's
// page path (replicator/checkpoint_driver.h):
//
//   xc_domain_save ──pipe──▶ reader thread ──StagingQueue──▶ worker thread
//   (callbacks:                (read() into         (StreamParser ->
//    suspend/postcopy/          reused 1 MiB         StreamSplitter ->
//    checkpoint: pacing          blocks: memcpy       EpochSession data path,
//    and commit)                 speed only)          which may block on the network)
//
// An HVM guest's device model (qemu-xen) is stopped and saved inside the
// pause and continued before the guest (docs/DEVICE-MODEL.md §2); its state
// travels in the epoch as a STATE record of kind 6.
//
// The reader never touches the network, so the guest's suspended window
// (libxenguest writes the dirty pages while the guest is suspended) costs a
// memcpy of the dirty set, not a network transfer. Policy (when to
// checkpoint, pause, switchover, acks, reconnect) is the controller's; what
// is here is how a Xen domain is suspended, read and resumed.
//
// (Over 500 lines on purpose: the three callbacks, the pipe reader and the
// stream worker share one session's state and its locking; split, each part
// would need the others' internals.)
#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "buffer/staging_queue.h"
#include "common/thread_name.h"
#include "devicemodel/checkpoint_pause.h"
#include "devicemodel/device_state_file.h"
#include "devicemodel/writeback_watch.h"
#include "protocol/messages.h"
#include "xen/hypervisor_log.h"
#include "xen/stream_split.h"
#include "xen/stream_v2.h"
#include "xen/vbd_spec.h"
#include "xen/xen_env.h"
#include "xen/xen_epoch_stats.h"
#include "xen/xen_facade.h"

namespace romulus::xen {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using replicator::EpochSession;
using replicator::Phase;

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

// Under the domain's xenstore directory, written by a switchover: the epoch
// the backup took over from.
const char kHandedOverNode[] = "romulus-handed-over";

std::string HandedOverPath(uint32_t domid) {
  return "/local/domain/" + std::to_string(domid) + "/" + kHandedOverNode;
}

// Under the domain's xenstore directory, written when a checkpoint found
// that the guest lost a write it saw complete (Session::Relinquish): why
// this copy is kept suspended. A later replicator refuses to resume it.
const char kKeptSuspendedNode[] = "romulus-kept-suspended";

std::string KeptSuspendedPath(uint32_t domid) {
  return "/local/domain/" + std::to_string(domid) + "/" + kKeptSuspendedNode;
}

// How the replicator suspends a guest ("hypervisor" or "guest"), written
// before the first suspend and whenever it changes, keyed by the guest's
// UUID (a reused domid is another guest) under dom0's own directory (the
// guest cannot write it): a replicator that finds the guest left suspended
// resumes it the way it was suspended, not the way a fresh reading says
// (PV drivers that came up between the two would say "guest" of a guest the
// hypervisor suspended).
std::string SuspendWayPath(const std::string& uuid) { return "/local/domain/0/romulus/suspend-way/" + uuid; }

// A domain worth protecting further: not gone, dying or shutting down (a
// suspended one is resumed by the session's clean-up).
bool DomainLives(XenHandles& h, uint32_t domid) {
  auto info = GetDomainInfo(h.xch(), domid);
  return info.ok() && !info->dying && !(info->shutdown && info->shutdown_reason != SHUTDOWN_suspend);
}

// A domain that shut down when it was asked to suspend: what the hypervisor
// logged about it (its lines go to the log, the gist into the error), e.g. a
// PVH guest's triple fault, which Xen reports as SHUTDOWN_reboot.
std::string HypervisorSaysAbout(XenHandles& h, const DomainFacts& dom, const char* reason) {
  DomainLogExcerpt ex = ExcerptForDomain(ReadConsoleRing(h.xch()), dom.domid);
  for (const std::string& l : ex.lines) spdlog::error("hypervisor log, d{}: {}", dom.domid, l);
  return ExplainUnexpectedShutdown(ex, dom.domid, reason);
}

// Each emulated disk (IDE or AHCI)'s file (the primary QEMU's -drive) is the block
// device blkback serves the same disk from (the vbd's physical-device,
// major:minor in hex as libxl and the block scripts write it): then QEMU and
// the PV path are one disk, the replicated one, as on the backup.
Status CheckIdeFilesAreTheVbds(XenHandles& h, uint32_t domid, const devicemodel::DeviceModelConfig& c,
                               const std::vector<std::string>& vdevs) {
  for (size_t k = 0; k < c.ide_disks.size() && k < c.ide_files.size(); k++) {
    auto vdev = devicemodel::IdeDiskVdev(c.ide_disks[k], vdevs);
    if (!vdev.ok()) return vdev.status();
    auto devid = VbdDevid(*vdev);
    if (!devid.ok()) return devid.status();
    const std::string node = VbdBackendPath(domid, *devid) + "/physical-device";
    const std::string pd = XsRead(h.xsh(), node);
    struct stat st;
    const std::string& file = c.ide_files[k];
    if (::stat(file.c_str(), &st) != 0 || !S_ISBLK(st.st_mode) ||
        !PhysicalDeviceIs(pd, major(st.st_rdev), minor(st.st_rdev))) {
      return Status::Unsupported("emulated disk " + std::to_string(c.ide_disks[k]) + " is " + file +
                                 ", not the block device vbd " + *vdev + " is served from (" + node + " = \"" +
                                 pd.substr(0, 32) + "\"): QEMU and blkback must share the replicated disk");
    }
  }
  return Status::Ok();
}

// How the guest is suspended now (ChooseSuspendWay over what the hypervisor
// and xenstore say), and so how a suspended one is resumed: a guest the
// hypervisor suspended made no suspend hypercall, so a cooperative resume
// (fast), which sets that hypercall's return value in its registers, would
// corrupt it wherever an event channel callback is set (an HVM guest with
// PV drivers asleep in an ACPI S state).
SuspendWay ReadSuspendWay(XenHandles& h, const DomainFacts& dom) {
  uint64_t callback_irq = 0, acpi_s_state = 0;
  bool announces = false;
  if (dom.type == GuestType::kHvm) {
    // A parameter that cannot be read counts as absent: libxl's reading.
    (void)xc_hvm_param_get(h.xch(), dom.domid, HVM_PARAM_CALLBACK_IRQ, &callback_irq);
    (void)xc_hvm_param_get(h.xch(), dom.domid, HVM_PARAM_ACPI_S_STATE, &acpi_s_state);
    announces = XsRead(h.xsh(), "/local/domain/" + std::to_string(dom.domid) + "/control/feature-suspend") == "1";
  }
  return ChooseSuspendWay(dom.type, announces, callback_irq, acpi_s_state);
}

// One xc_domain_save run: one backup session.
class Session : public EpochSink {
 public:
  // `dm_file`: where an HVM guest's device model saves its state each epoch
  // (the driver's, reused across sessions); null for PV and PVH guests.
  // `dm_stopped`: the driver's "a cont failed, the device model may be
  // stopped" flag, which outlives a session (the guest is then kept
  // suspended until a checkpoint continues the device model again).
  // `writeback`: an HVM guest's emulated disks (IDE or AHCI) (null: none).
  // `kept_suspended`: the driver's "this copy must never run on" reason
  // (empty: none), which outlives the session.
  Session(const XenDriverOptions& opts, XenHandles* h, const DomainFacts& dom, EpochSession& s,
          devicemodel::DeviceStateFile* dm_file, bool* dm_stopped, devicemodel::WritebackWatch* writeback,
          std::string* kept_suspended)
      : opts_(opts), h_(h), dom_(dom), s_(s), base_(s.first_epoch() - 1),
        queue_(1u << 20, std::max<uint64_t>(opts.staging_bytes >> 20, 4)),
        splitter_(this), parser_(&splitter_), dm_file_(dm_file), dm_stopped_(dm_stopped), writeback_(writeback),
        kept_suspended_(kept_suspended),
        dm_endpoint_(devicemodel::LibxlDeviceModelEndpoint(dom.domid, dom.uuid)), checkpoints_(base_) {}

  Status Run();

  // EpochSink (worker thread): the splitter's epochs, numbered from 1 in
  // this v2 stream, are base_ + k on the wire.
  Status BeginEpoch(uint64_t stream_checkpoint) override;
  Status AddState(std::span<const uint8_t> blob) override { return s_.AddState(blob); }
  Status AddPage(uint64_t pfn, const uint8_t* page) override {
    Status st = s_.AddPage(pfn, page);
    if (++worker_pages_ == 1) s_.Reached(Phase::kStreaming, worker_epoch_);
    return st;
  }
  Status EndEpoch(uint64_t stream_checkpoint) override;

 private:
  static int SuspendCb(void* d) { return static_cast<Session*>(d)->Suspend(); }
  static int PostcopyCb(void* d) { return static_cast<Session*>(d)->Postcopy(); }
  static int CheckpointCb(void* d) { return static_cast<Session*>(d)->Checkpoint(); }
  // libxenguest's HVM save asks the device model to start and stop tracking
  // its own writes to guest memory. A PVH guest has no device model: there
  // is nothing to switch (libxl answers the same way).
  static int SwitchQemuLogdirtyCb(uint32_t, unsigned enable, void* d) {
    return static_cast<Session*>(d)->SwitchQemuLogdirty(enable != 0);
  }
  int Suspend();
  int Postcopy();
  int Checkpoint();
  int SwitchQemuLogdirty(bool enable);
  // Inside the pause (xc_domain_save's thread): stop and save the device
  // model, hand its state to the worker for `epoch`. On failure
  // *unresponsive says whether the device model itself did not answer
  // (devicemodel::PauseFailure): then this copy must not run on.
  Status PauseDeviceModel(uint64_t epoch, bool* unresponsive);
  // Ends the open pause (cont, disconnect, unlock): before the guest resumes,
  // and before anything else needs libxl's lock (libxenguest's clean-up
  // switches QEMU's dirty log off). A failed cont marks the device model
  // stopped. Without an open pause: nothing to do.
  Status ReleaseDeviceModel();
  // The worker, at the epoch's end: the state of `epoch` as a kind-6 record.
  Status AddDeviceModelState(uint64_t epoch);
  // Inside the pause, after the device model's stop: did every write the
  // guest saw complete through an emulated disk reach it? If not, the
  // guest is relinquished (kept suspended for good) and false returned.
  bool EmulatedWritesReachedTheDisks(uint64_t epoch);
  // Inside the pause: this copy must never run again (`why`), so `epoch` is
  // never committed, the guest stays suspended for good (recorded in
  // xenstore) and, if the record was written and the backup holds a
  // checkpoint of this session, it is handed over (FAILURE-MODEL §7a).
  void RelinquishGuest(uint64_t epoch, const Status& why);

  void ReaderLoop(int fd);
  void WorkerLoop();
  void SetError(Status s);
  Status error() const;
  void DrainWatch();
  // Waits until the worker sent EPOCH_END n; fills *wire.
  Status WaitSent(uint64_t n, bool first, replicator::EpochWireStats* wire);
  void Cleanup(bool guest_may_be_suspended);

  const XenDriverOptions& opts_;
  XenHandles* h_;
  const DomainFacts& dom_;
  EpochSession& s_;
  struct xs_handle* watch_xsh_ = nullptr;
  int tee_fd_ = -1;
  const uint64_t base_;  // the v2 stream's checkpoint k is epoch base_ + k

  buffer::StagingQueue queue_;
  StreamSplitter splitter_;
  StreamParser parser_;

  // HVM guests only (dm_file_ non-null). xc_domain_save's thread: the pause
  // from Suspend to Postcopy, and the buffer the state is read into.
  devicemodel::DeviceStateFile* const dm_file_;
  bool* const dm_stopped_;
  // This session's pause found the device model silent (devicemodel::
  // PauseFailure::unresponsive): nothing more is asked of it.
  bool dm_unresponsive_ = false;
  devicemodel::WritebackWatch* const writeback_;
  std::string* const kept_suspended_;
  const devicemodel::DeviceModelEndpoint dm_endpoint_;
  std::unique_ptr<devicemodel::DeviceModelPause> dm_pause_;
  std::vector<uint8_t> dm_read_;
  std::vector<uint8_t> dm_blob_;  // worker: the kind-6 envelope (capacity reused)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status error_;                 // first failure anywhere
  uint64_t epoch_ended_ = 0;     // last epoch the worker sent EPOCH_END for
  replicator::EpochWireStats last_wire_;
  uint64_t read_bytes_ = 0;
  // An HVM guest's device state, from Suspend(N) to the worker's EndEpoch(N)
  // (swapped with dm_read_: no copy, both capacities kept).
  std::vector<uint8_t> dm_state_;
  uint64_t dm_state_epoch_ = 0;

  // Worker thread only: the epoch being streamed and its pages so far.
  uint64_t worker_epoch_ = 0;
  uint64_t worker_pages_ = 0;

  // xc_domain_save thread only.
  uint64_t checkpoints_;  // the last epoch checkpointed (starts at base_)
  XenEpochFacts cur_;
  uint64_t stream_bytes_at_checkpoint_ = 0;  // read_bytes_ at the previous checkpoint
  bool clean_stop_ = false;
  bool final_ = false;        // planned switchover: this epoch is the last, the domain stays suspended
  // How this epoch's suspend was done (Resume must match it: a guest the
  // hypervisor suspended is resumed without touching its registers), and
  // how the last one was, to log a change once.
  SuspendWay way_ = SuspendWay::kAskGuest;
  bool way_logged_ = false;
  bool handed_over_ = false;  // the final epoch was acked
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
  ROMULUS_RETURN_IF_ERROR(s_.BeginEpoch(epoch));
  if (stream_checkpoint != 1) return Status::Ok();
  // The backup creates its domain from this before the stream starts.
  // "hvm=1" comes first among the type keys on purpose: a backup too old to
  // know PVH refuses it cleanly instead of building a PV domain.
  std::string info = "name=" + dom_.name + "\nuuid=" + dom_.uuid + "\nmax_vcpus=" +
                     std::to_string(dom_.max_vcpus) + "\nmax_memkb=" + std::to_string(dom_.max_memkb) +
                     "\ntarget_kb=" + std::to_string(dom_.target_kb) + "\nguest_pages=" +
                     std::to_string(dom_.guest_pages) + "\nhvm=" + (dom_.type == GuestType::kPv ? "0" : "1") +
                     "\ntype=" + GuestTypeName(dom_.type) + "\n";
  if (dom_.type != GuestType::kPv) {
    info += "hap=" + std::to_string(dom_.hap ? 1 : 0) + "\nemu_flags=" + std::to_string(dom_.emulation_flags) +
            "\nmisc_flags=" + std::to_string(dom_.misc_flags) + "\ntimer_mode=" + std::to_string(dom_.timer_mode) +
            "\npaging_pool_kb=" + std::to_string(dom_.paging_pool_kb) + "\n";
  }
  if (dom_.device_model) {
    info += "hpet=" + std::to_string(dom_.hpet_enabled ? 1 : 0) + "\nvpt_align=" +
            std::to_string(dom_.vpt_align ? 1 : 0) + "\n" + devicemodel::DeviceModelInfoLines(*dom_.device_model);
  }
  // The NICs, for the backup to recreate at activation (validated by ReadVifs).
  if (auto vifs = VifInfoLines(dom_.vifs); vifs.ok()) info += *vifs;
  std::vector<uint8_t> blob;
  WrapEnvelope(EnvelopeKind::kDomainInfo,
               std::span(reinterpret_cast<const uint8_t*>(info.data()), info.size()), &blob);
  return s_.AddState(blob);
}

Status Session::EndEpoch(uint64_t stream_checkpoint) {
  // Before the end, so the epoch digest covers it and the backup commits it
  // with this epoch's memory or not at all.
  if (dm_file_) ROMULUS_RETURN_IF_ERROR(AddDeviceModelState(base_ + stream_checkpoint));
  auto w = s_.EndEpoch();
  if (!w.ok()) return w.status();
  std::lock_guard<std::mutex> lock(mu_);
  epoch_ended_ = base_ + stream_checkpoint;
  last_wire_ = *w;
  cv_.notify_all();
  return Status::Ok();
}

// Drains the pipe at memory speed: read() into staging blocks, nothing else.
void Session::ReaderLoop(int fd) {
  for (;;) {
    buffer::StagingQueue::Block* b = queue_.GetFree();
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
  while (buffer::StagingQueue::Block* b = queue_.PopFull()) {
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
  s_.Reached(Phase::kBeforeSuspend, epoch);
  cur_ = XenEpochFacts{};
  cur_.epoch = epoch;
  cur_.suspend_requested = Clock::now();
  // The output-commit boundary comes before the guest is asked to stop:
  // whatever it sends from here on is held until this epoch is acked.
  Status oc = s_.Suspended(epoch);
  if (!oc.ok()) {
    SetError(oc);
    return 0;
  }
  DrainWatch();
  const std::string ctl = "/local/domain/" + std::to_string(dom_.domid) + "/control/shutdown";
  // Read at every epoch, as libxl does: an HVM guest's PV drivers come up
  // during its boot (or never), long after the session began.
  const SuspendWay way = ReadSuspendWay(*h_, dom_);
  if (!way_logged_ || way != way_) {
    spdlog::info("{} guest {}: {}", GuestTypeName(dom_.type), dom_.name,
                 way == SuspendWay::kHypervisor
                     ? "no PV drivers answer (no control/feature-suspend, HVM_PARAM_CALLBACK_IRQ 0; or asleep "
                       "in an ACPI S state): the hypervisor suspends it at each checkpoint (xc_domain_shutdown)"
                     : "suspended by its own kernel at each checkpoint (control/shutdown)");
    way_logged_ = true;
    Status rec = XsWrite(h_->xsh(), XBT_NULL, SuspendWayPath(dom_.uuid),
                         way == SuspendWay::kHypervisor ? "hypervisor" : "guest");
    if (!rec.ok()) {
      spdlog::warn("could not record how domain {} is suspended ({}): a replicator that finds it left suspended "
                   "reads it anew", dom_.name, rec.ToString());
    }
  }
  way_ = way;
  // An HVM guest kept suspended because its device model could not be
  // continued is asked nothing: a request it read once resumed would
  // suspend it again behind our back.
  bool already = false;
  if (dm_stopped_ && *dm_stopped_) {
    auto info = GetDomainInfo(h_->xch(), dom_.domid);
    already = info.ok() && info->shutdown && info->shutdown_reason == SHUTDOWN_suspend;
  }
  Status w = Status::Ok();
  if (already) {
  } else if (way == SuspendWay::kHypervisor) {
    if (xc_domain_shutdown(h_->xch(), dom_.domid, SHUTDOWN_suspend) != 0) {
      w = Status::FromErrno("xc_domain_shutdown(" + std::to_string(dom_.domid) + ", SHUTDOWN_suspend)", errno);
    }
  } else {
    w = XsWrite(h_->xsh(), XBT_NULL, ctl, "suspend");
  }
  if (!w.ok()) {
    SetError(w.With("suspending the guest"));
    return 0;
  }
  const auto deadline = cur_.suspend_requested + opts_.suspend_timeout;
  for (;;) {
    auto info = GetDomainInfo(h_->xch(), dom_.domid);
    if (!info.ok()) {
      // (xl's monitor destroys a domain that shut down with reason reboot to restart it)
      SetError(info.status().With("waiting for the guest to suspend (domain gone?" +
                                  HypervisorSaysAbout(*h_, dom_, "") + ")"));
      return 0;
    }
    if (info->dying) {
      SetError(Status::Closed("domain " + dom_.name + " is being destroyed" + HypervisorSaysAbout(*h_, dom_, "")));
      return 0;
    }
    if (info->shutdown) {
      if (info->shutdown_reason == SHUTDOWN_suspend) break;
      const char* reason = ShutdownReasonName(info->shutdown_reason);
      SetError(Status::Closed("domain " + dom_.name + " shut down (" + reason + ") instead of suspending" +
                              HypervisorSaysAbout(*h_, dom_, reason)));
      return 0;
    }
    auto now = Clock::now();
    if (now >= deadline) {
      if (way == SuspendWay::kHypervisor) {
        // Xen defers the shutdown while a vCPU waits for an emulated I/O:
        // cancel it, or it completes later and leaves the guest stopped.
        (void)xc_domain_resume(h_->xch(), dom_.domid, 0);
        SetError(Status::Timeout("guest will not suspend: domain " + dom_.name +
                                 " did not reach SHUTDOWN_suspend within " +
                                 std::to_string(opts_.suspend_timeout.count()) +
                                 " ms of the hypervisor's suspend (a vCPU stuck in emulated I/O? its device "
                                 "model hung?); the suspend was cancelled"));
        return 0;
      }
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
  if (dm_file_) {
    // The guest is stopped; its emulated devices now stop too (no DMA while
    // the checkpoint is cut), and their state joins this epoch.
    bool unresponsive = false;
    Status dm = PauseDeviceModel(epoch, &unresponsive);
    if (!dm.ok()) {
      // Nothing more is asked of a silent device model in this session (the
      // dirty-log clean-up would wait out another deadline).
      dm_unresponsive_ = unresponsive;
      if (unresponsive && s_.HandOverPoint()) {
        // A device model stuck in its stop (a disk that hangs its drain or
        // flush) or gone: the guest cannot run on here, and whether the
        // writes it saw complete in this epoch reached its disks is
        // unknown. The backup's last checkpoint of this session predates
        // them (the previous stop flushed everything completed until
        // then): it is the guest (docs/DEVICE-MODEL.md §2.3).
        RelinquishGuest(epoch, dm);
        return 0;
      }
      // QEMU answered (an error), libxl held its lock, or there is no
      // checkpoint of this session to hand over: the session ends. A
      // device model that could not be continued keeps the guest suspended
      // and the next session's pause retries it (a stall that passes costs
      // no failover); otherwise the guest runs on, unprotected (Cleanup).
      (void)ReleaseDeviceModel();
      SetError(dm);
      return 0;
    }
    if (!EmulatedWritesReachedTheDisks(epoch)) return 0;
  }
  // The guest's vCPUs are stopped: nothing it does can complete a disk
  // request in this epoch any more, so the disks' epoch clocks advance here
  // and the disk cut is the memory cut (docs/DISK.md §3, §4). A request
  // still in the ring is part of this epoch's memory image and blkfront
  // re-issues it after a failover.
  Status gp = s_.GuestPaused(epoch);
  if (!gp.ok()) {
    (void)ReleaseDeviceModel();
    SetError(gp);
    return 0;
  }
  // libxenguest writes this epoch's dirty pages after we return, while the
  // guest stays suspended.
  s_.Reached(Phase::kAfterSuspend, epoch);
  return 1;
}

int Session::Postcopy() {
  const uint64_t epoch = checkpoints_ + 1;  // Checkpoint() counts it next
  // The dirty pages are in the pipe (perhaps not yet on the wire).
  s_.Reached(Phase::kBeforeResume, epoch);
  if (dm_pause_) {
    // Devices before vCPUs: the guest must never run on a stopped device
    // model. (After a final epoch too: that copy stays suspended, and its
    // device model unlocked, until it is destroyed.)
    const auto t0 = Clock::now();
    Status dm = ReleaseDeviceModel();
    cur_.dm_resume = duration_cast<microseconds>(Clock::now() - t0);
    if (!dm.ok()) {
      SetError(dm);
      return 0;
    }
  }
  if (final_) {
    // Planned switchover: this copy must not run past the final checkpoint.
    cur_.resumed = Clock::now();
    return 1;
  }
  // Cooperative resume: the guest sees its suspend hypercall return "cancelled"
  // and runs on with its devices connected. A guest the hypervisor suspended
  // made no hypercall: it is only unpaused (libxenguest's HVM resume), its
  // registers untouched, even if PV drivers came up in between.
  const int fast = way_ == SuspendWay::kHypervisor ? 0 : 1;
  if (xc_domain_resume(h_->xch(), dom_.domid, fast) != 0) {
    SetError(Status::FromErrno("xc_domain_resume(" + std::to_string(dom_.domid) + (fast ? ", fast)" : ")"), errno));
    return 0;
  }
  // Without XS_RESUME, xenstored would fire no @releaseDomain at the next suspend.
  if (!xs_resume_domain(h_->xsh(), dom_.domid)) {
    spdlog::warn("xs_resume_domain({}) failed: {}", dom_.domid, strerror(errno));
  }
  cur_.resumed = Clock::now();
  s_.Reached(Phase::kAfterResume, epoch);
  return 1;
}

Status Session::PauseDeviceModel(uint64_t epoch, bool* unresponsive) {
  const auto t0 = Clock::now();
  const std::string whose = "epoch " + std::to_string(epoch) + ", HVM guest " + dom_.name;
  devicemodel::PauseFailure failure;
  auto p = devicemodel::DeviceModelPause::Begin(dm_endpoint_, dm_file_, transport::DeadlineIn(opts_.device_model_timeout),
                                                &failure);
  if (!p.ok()) {
    if (failure.left_stopped) *dm_stopped_ = true;
    *unresponsive = failure.unresponsive;
    return p.status().With(whose + ": pausing its device model");
  }
  dm_pause_ = std::move(*p);
  Status rd = dm_file_->ReadInto(&dm_read_);
  if (!rd.ok()) return rd.With(whose + ": the device model's state");
  cur_.device_model = true;
  cur_.dm_save = duration_cast<microseconds>(Clock::now() - t0);
  cur_.dm_state_bytes = dm_read_.size();
  std::lock_guard<std::mutex> lock(mu_);
  dm_state_.swap(dm_read_);
  dm_state_epoch_ = epoch;
  return Status::Ok();
}

bool Session::EmulatedWritesReachedTheDisks(uint64_t epoch) {
  if (!writeback_ || writeback_->size() == 0) return true;
  const auto t0 = Clock::now();
  // Bounded like the device model's own stop: a device that hangs must not
  // hold the guest suspended for ever.
  Status wb = writeback_->Check(transport::DeadlineIn(opts_.device_model_timeout));
  cur_.dm_flush = duration_cast<microseconds>(Clock::now() - t0);
  if (wb.ok()) return true;
  // The guest's memory now believes data its disk lacks: this epoch must
  // never be committed, and this copy must never run on (it would build on
  // the lost write). The backup's last checkpoint, taken before the write,
  // is the guest (docs/DEVICE-MODEL.md §2.2).
  RelinquishGuest(epoch, wb.With("emulated disk of " + dom_.name));
  return false;
}

void Session::RelinquishGuest(uint64_t epoch, const Status& why) {
  // Recorded before the backup may run the guest, where any later
  // replicator looks first: it must never resume this copy beside the
  // backup's. Without the record the guest is not handed over.
  const std::optional<uint64_t> point = s_.HandOverPoint();
  // The handed-over record alone makes a later replicator refuse this copy.
  const bool hand_over =
      point && XsWrite(h_->xsh(), XBT_NULL, HandedOverPath(dom_.domid), std::to_string(*point)).ok();
  *kept_suspended_ = why.ToString() + (hand_over ? "; handed over to its backup, which resumes epoch " +
                                                       std::to_string(*point)
                                                 : "; not handed over to a backup");
  const bool kept_recorded =
      XsWrite(h_->xsh(), XBT_NULL, KeptSuspendedPath(dom_.domid), kept_suspended_->substr(0, 1024)).ok();
  if (point && !hand_over) {
    spdlog::error("could not record in xenstore ({}) that domain {} was handed over: not handing it over to the "
                  "backup, which would otherwise run it beside this copy",
                  HandedOverPath(dom_.domid), dom_.name);
  }
  if (!kept_recorded) {
    spdlog::error("could not record in xenstore ({}) why domain {} must never run again{}", KeptSuspendedPath(dom_.domid),
                  dom_.name, hand_over ? " (the handed-over record keeps a later replicator from resuming it)" : "");
  }
  // A pause still open is ended: QEMU runs on (its devices idle: the vCPUs
  // stay suspended), so `xl` can still manage or destroy the domain.
  (void)ReleaseDeviceModel();
  s_.Relinquish(epoch, why, hand_over);
  SetError(why);
}

Status Session::ReleaseDeviceModel() {
  if (!dm_pause_) return Status::Ok();
  Status st = dm_pause_->End(transport::DeadlineIn(opts_.device_model_timeout));
  dm_pause_.reset();  // End ran: nothing is left for its destructor
  *dm_stopped_ = !st.ok();
  if (st.ok()) return st;
  return st.With("HVM guest " + dom_.name + " stays suspended: its device model may be stopped");
}

Status Session::AddDeviceModelState(uint64_t epoch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dm_state_epoch_ != epoch) {
      return Status::Internal("epoch " + std::to_string(epoch) + " of HVM guest " + dom_.name +
                              " ends without its device model's state (last saved for epoch " +
                              std::to_string(dm_state_epoch_) + ")");
    }
    WrapEnvelope(EnvelopeKind::kDeviceModelState, dm_state_, &dm_blob_);
  }
  return s_.AddState(dm_blob_);
}

int Session::SwitchQemuLogdirty(bool enable) {
  if (!dm_file_) return 0;  // PVH: no device model
  if (!enable && dm_unresponsive_) {
    // libxenguest's clean-up after the pause that found the device model
    // unresponsive: asking again would only hold the handover back by the
    // whole deadline. The guest stays suspended; QEMU's tracking is moot.
    spdlog::warn("not switching the device model's dirty log off for HVM guest {}: it did not answer", dom_.name);
    return 0;
  }
  // libxenguest's clean-up after a checkpoint failed inside the pause: the
  // pause still holds libxl's lock, which this connection needs too.
  (void)ReleaseDeviceModel();
  const auto deadline = transport::DeadlineIn(std::max(opts_.device_model_timeout, milliseconds(10000)));
  Status st = devicemodel::WithLockedDeviceModel(
      dm_endpoint_, deadline, [&](devicemodel::DeviceModel& dm) { return dm.SetGlobalDirtyLog(enable, deadline); });
  if (st.ok()) return 0;
  // Without it the pages QEMU writes (emulated DMA) would be missing from the
  // checkpoints; at the end of a save a failure only costs QEMU's tracking.
  const std::string what = std::string("switching the device model's dirty log ") + (enable ? "on" : "off") +
                           " for HVM guest " + dom_.name;
  if (!enable) {
    spdlog::warn("{}: {}", what, st.ToString());
    return 0;
  }
  SetError(st.With(what));
  return -1;
}

Status Session::WaitSent(uint64_t n, bool first, replicator::EpochWireStats* wire) {
  std::unique_lock<std::mutex> lock(mu_);
  auto sent = [&] { return epoch_ended_ >= n || !error_.ok(); };
  if (first) {
    // The session's first epoch carries the whole memory (live pass): it
    // takes as long as the backup needs while it is alive; the sender
    // fails the session on its silence (PROTOCOL.md §6.1).
    while (!cv_.wait_for(lock, milliseconds(100), sent)) {
      if (s_.stopping()) return Status::Closed("stop requested during the first epoch of the session");
    }
  } else if (!cv_.wait_for(lock, s_.ack_timeout(), sent)) {
    return Status::Timeout("epoch " + std::to_string(n) + " not sent within " +
                           std::to_string(s_.ack_timeout().count()) + " ms (network too slow or stalled)");
  }
  if (!error_.ok()) return error_;
  *wire = last_wire_;
  return Status::Ok();
}

int Session::Checkpoint() {
  const uint64_t n = ++checkpoints_;
  const auto t0 = Clock::now();
  replicator::EpochWireStats wire;
  Status st = WaitSent(n, n == base_ + 1, &wire);
  {
    // libxenguest writes nothing while this callback runs, and the worker
    // has consumed the CHECKPOINT record: read_bytes_ ends exactly at it.
    std::lock_guard<std::mutex> lock(mu_);
    cur_.stream_bytes = read_bytes_ - stream_bytes_at_checkpoint_;
    stream_bytes_at_checkpoint_ = read_bytes_;
  }
  if (!st.ok()) {
    SetError(st);
    return 0;
  }
  replicator::EpochStats e = MakeXenEpochStats(wire, cur_);
  Status c = s_.Commit(n, &e);
  // From the callback's entry to the ack: what libxenguest waited for.
  for (auto& [key, value] : e.extra) {
    if (key == "ack_wait_us") value = static_cast<uint64_t>(duration_cast<microseconds>(Clock::now() - t0).count());
  }
  s_.Publish(e);
  if (!c.ok()) {
    SetError(c);
    return 0;
  }
  if (final_) {
    // The backup holds the final epoch: end the save; the domain stays suspended.
    handed_over_ = true;
    clean_stop_ = true;
    return 0;
  }
  switch (s_.NextEpoch()) {
    case EpochSession::Next::kStop:
      clean_stop_ = true;
      return 0;
    case EpochSession::Next::kFinal:
      final_ = true;
      break;
    case EpochSession::Next::kCheckpoint:
      break;
  }
  return 1;
}

void Session::Cleanup(bool guest_may_be_suspended) {
  auto info = GetDomainInfo(h_->xch(), dom_.domid);
  if (!info.ok()) return;  // domain gone: nothing to repair
  if (!kept_suspended_->empty() && info->shutdown && info->shutdown_reason == SHUTDOWN_suspend) {
    spdlog::error("domain {} stays suspended for good: {} (the RELINQUISHED line below says what the backup does; "
                  "docs/FAILURE-MODEL.md §7a)",
                  dom_.name, *kept_suspended_);
  } else if (guest_may_be_suspended && info->shutdown && info->shutdown_reason == SHUTDOWN_suspend) {
    // LAB-NOTES pitfall 8: a save that died mid-checkpoint leaves the primary
    // suspended (---ss-). Resume it so the guest keeps running unprotected,
    // unless its device model could not be continued: a guest whose
    // emulated devices are stopped (QEMU's ioreq server off) must not run
    // (libxl does not resume it either). The next session's checkpoint
    // continues the device model and then resumes the guest.
    if (dm_stopped_ && *dm_stopped_) {
      spdlog::error("domain {} stays suspended: its device model (QEMU, {}) could not be continued; the next "
                    "checkpoint retries, or continue it by hand (xl qemu-monitor-command {} cont) and restart "
                    "romulus, which resumes the guest",
                    dom_.name, dm_endpoint_.qmp_socket, dom_.name);
    } else if (xc_domain_resume(h_->xch(), dom_.domid, way_ == SuspendWay::kHypervisor ? 0 : 1) == 0) {
      xs_resume_domain(h_->xsh(), dom_.domid);
      spdlog::warn("resumed domain {}, which the failed checkpoint left suspended", dom_.name);
    } else {
      spdlog::error("domain {} is left suspended and xc_domain_resume failed: {}", dom_.name, strerror(errno));
    }
  }
  // Log-dirty mode costs the guest a fault per first write; never leave it on.
  xc_shadow_control(h_->xch(), dom_.domid, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0);
}

Status Session::Run() {
  watch_xsh_ = xs_open(0);
  if (!watch_xsh_ || !xs_watch(watch_xsh_, "@releaseDomain", "romulus")) {
    if (watch_xsh_) xs_close(watch_xsh_);
    return Status::FromErrno("watching @releaseDomain in xenstore", errno);
  }
  if (!opts_.tee_path.empty()) {
    tee_fd_ = open(opts_.tee_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tee_fd_ < 0) {
      xs_close(watch_xsh_);
      return Status::FromErrno("opening --tee-stream " + opts_.tee_path, errno);
    }
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    const int e = errno;
    if (tee_fd_ >= 0) close(tee_fd_);
    xs_close(watch_xsh_);
    return Status::FromErrno("pipe2", e);
  }
  // A large pipe lets libxenguest write a batch (up to 4 MiB) without waiting
  // for our reader to be scheduled. Try 4 MiB, settle for what is allowed.
  for (int sz : {4 << 20, 1 << 20, 256 << 10}) {
    if (fcntl(fds[1], F_SETPIPE_SZ, sz) >= 0) break;
  }

  // The calling thread runs libxenguest's save (log-dirty, mapping, the
  // stream's writes); these two read and parse that stream.
  std::thread reader([&] {
    NameThisThread("save-reader");
    ReaderLoop(fds[0]);
  });
  std::thread worker([&] {
    NameThisThread("save-parser");
    WorkerLoop();
  });

  struct save_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.suspend = &Session::SuspendCb;
  cb.postcopy = &Session::PostcopyCb;
  cb.checkpoint = &Session::CheckpointCb;
  if (dom_.type != GuestType::kPv) cb.switch_qemu_logdirty = &Session::SwitchQemuLogdirtyCb;
  cb.data = this;
  // XCFLAGS_LIVE is mandatory: without it log-dirty is never enabled and the
  // checkpointed stream carries no PAGE_DATA at all (LAB-NOTES).
  int rc = xc_domain_save(h_->xch(), fds[1], dom_.domid, XCFLAGS_LIVE, &cb, XC_STREAM_REMUS, -1);
  int save_errno = errno;
  // A pause that a failed checkpoint left open continues the device model
  // before the clean-up below may resume the guest.
  (void)ReleaseDeviceModel();
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
  if (handed_over_) {
    // Marks this copy as stale for any later replicator, which would
    // otherwise resume a suspended domain (two live copies). Only dom0 can
    // read or change it; it goes with the domain's directory on destroy.
    if (!XsWrite(h_->xsh(), XBT_NULL, HandedOverPath(dom_.domid), std::to_string(checkpoints_)).ok()) {
      spdlog::warn("could not mark domain {} as handed over ({})", dom_.name, HandedOverPath(dom_.domid));
    }
    spdlog::warn("domain {} is left suspended (destroy it once the backup runs the guest)", dom_.name);
    return Status::Ok();
  }
  if (clean_stop_) {
    if (!err.ok()) spdlog::warn("{}", err.ToString());
    return Status::Ok();
  }
  if (!err.ok()) return err;
  if (h_->LogContains("Failed to enable logdirty")) {
    // OpenXenDriver checks the host's paging capabilities first; this is
    // what is left: a hypervisor that claims them and still refuses.
    return Status::Unsupported(
        "Failed to enable logdirty for domain " + dom_.name + " (a " + GuestTypeName(dom_.type) +
        " guest): the hypervisor cannot track its dirty pages" +
        (dom_.type == GuestType::kPv ? " (PV guests need shadow paging: CONFIG_SHADOW_PAGING=y)" : "") + " [" +
        h_->RecentErrors() + "]");
  }
  std::string why = h_->RecentErrors();
  return Status::IoError("xc_domain_save failed (rc " + std::to_string(rc) + ", " + strerror(save_errno) + ")" +
                         (why.empty() ? "" : ": " + why));
}

class XenDriver final : public replicator::CheckpointDriver {
 public:
  XenDriver(XenDriverOptions opts, std::unique_ptr<XenHandles> h, DomainFacts dom, uint32_t xen_release,
            std::optional<devicemodel::DeviceStateFile> dm_file, std::optional<devicemodel::WritebackWatch> writeback)
      : opts_(std::move(opts)), h_(std::move(h)), dom_(std::move(dom)), xen_release_(xen_release),
        dm_file_(std::move(dm_file)), writeback_(std::move(writeback)) {}

  replicator::GuestFacts facts() const override {
    replicator::GuestFacts f;
    f.backend = "xen";
    f.identity = dom_.name;
    f.guest_pages = dom_.guest_pages;
    f.capabilities = protocol::kCapXenStream;
    f.xen_release = xen_release_;
    f.domain = dom_.name;
    f.domid = dom_.domid;
    f.guest_type = GuestTypeName(dom_.type);
    f.disks = opts_.disks;
    // Epoch 1's writes may make no progress for long while the backup's
    // libxenguest applies a burst: only the backup's silence ends them.
    f.unbounded_first_epoch_writes = true;
    // A Xen epoch's ack includes the backup's libxenguest applying it.
    f.min_ack_timeout = milliseconds(1000);
    return f;
  }

  Status RunSession(EpochSession& s) override {
    if (!kept_suspended_.empty()) return Status::Storage(kept_suspended_ + ": the guest is kept suspended");
    Session session(opts_, h_.get(), dom_, s, dm_file_ ? &*dm_file_ : nullptr, &dm_stopped_,
                    writeback_ ? &*writeback_ : nullptr, &kept_suspended_);
    return session.Run();
  }

  bool GuestLives() override { return DomainLives(*h_, dom_.domid); }

 private:
  const XenDriverOptions opts_;
  std::unique_ptr<XenHandles> h_;
  const DomainFacts dom_;
  const uint32_t xen_release_;
  std::optional<devicemodel::DeviceStateFile> dm_file_;  // HVM guests: one memfd for every epoch
  bool dm_stopped_ = false;  // a cont failed: the device model may be stopped (RunSession's thread only)
  // HVM guests with emulated disks: opened before the first checkpoint,
  // so every later write-back error reaches it.
  std::optional<devicemodel::WritebackWatch> writeback_;
  std::string kept_suspended_;  // why this copy must never run on (empty: it may)
};

}  // namespace

Result<std::unique_ptr<replicator::CheckpointDriver>> OpenXenDriver(const XenDriverOptions& opts) {
  auto h = XenHandles::Open(opts.verbose);
  if (!h.ok()) return h.status();
  ROMULUS_RETURN_IF_ERROR(CheckVersionMatch((*h)->xch()));
  auto release = HypervisorRelease((*h)->xch());
  if (!release.ok()) return release.status();
  auto dom = ResolveDomain(**h, opts.domain);
  if (!dom.ok()) return dom.status();
  std::optional<devicemodel::DeviceStateFile> dm_file;
  std::optional<devicemodel::WritebackWatch> writeback;
  const devicemodel::DeviceModelEndpoint dm_endpoint = devicemodel::LibxlDeviceModelEndpoint(dom->domid, dom->uuid);
  if (dom->type == GuestType::kHvm) {
    // Its device model must be libxl's qemu-xen in this dom0, reached over
    // libxl's QMP socket (docs/DEVICE-MODEL.md §6): a stub-domain or
    // qemu-traditional device model has none.
    const std::string& qmp = dm_endpoint.qmp_socket;
    struct stat st;
    const bool found = stat(qmp.c_str(), &st) == 0;
    const int stat_errno = errno;
    if (!found || !S_ISSOCK(st.st_mode)) {
      return Status::Unsupported("domain " + dom->name + " is an HVM guest whose device model has no QMP socket at " +
                                 qmp + " (" + (found ? "not a socket" : strerror(stat_errno)) +
                                 "): Romulus checkpoints an HVM guest's devices through the qemu-xen device model "
                                 "libxl starts in dom0 (device_model_version=\"qemu-xen\", no stub domain)");
    }
    auto f = devicemodel::DeviceStateFile::Create(opts.max_device_state);
    if (!f.ok()) return f.status().With("the device state file of HVM guest " + dom->name);
    dm_file.emplace(std::move(*f));
  }
  if (dom->dying || (dom->shutdown && dom->shutdown_reason != SHUTDOWN_suspend)) {
    return Status::InvalidArgument("domain " + dom->name + " is shutting down");
  }
  if (dom->shutdown && dom->shutdown_reason == SHUTDOWN_suspend) {
    const std::string kept = XsRead((*h)->xsh(), KeptSuspendedPath(dom->domid));
    const std::string handed = XsRead((*h)->xsh(), HandedOverPath(dom->domid));
    if (!kept.empty()) {
      const std::string d = std::to_string(dom->domid);
      return Status::InvalidArgument(
          "domain " + dom->name + " was kept suspended by a replicator: " + kept + ". " +
          (!handed.empty()
               ? "Its backup took over from epoch " + handed + ": destroy this copy (xl destroy " + d + ")"
               : "No backup took it over: destroy it, or, to run it on as it is (with whatever it lost), remove "
                 "the record "
                 "(xenstore-rm " + KeptSuspendedPath(dom->domid) + ") and start romulus again, which resumes it") +
          " (docs/FAILURE-MODEL.md §7a)");
    }
    if (!handed.empty()) {
      return Status::InvalidArgument("domain " + dom->name + " was handed over to its backup at epoch " + handed +
                                     " (romulus switchover): it must not run here again; destroy it (xl destroy " +
                                     std::to_string(dom->domid) + ")");
    }
    // A previous replicator died with the guest suspended: resume it first
    // (an HVM guest's device model before it: it may have been stopped too).
    if (dm_file) {
      const auto deadline = transport::DeadlineIn(milliseconds(10000));
      Status cont = devicemodel::WithLockedDeviceModel(
          dm_endpoint, deadline, [&](devicemodel::DeviceModel& dm) { return dm.Continue(deadline); });
      if (!cont.ok()) {
        return cont.With("domain " + dom->name +
                         " is suspended and its device model cannot be continued: not resuming it on stopped devices");
      }
    }
    // Resumed the way it was suspended (as recorded; else as it would be
    // now): its registers untouched when the hypervisor suspended it (no
    // hypercall to return from).
    const std::string recorded = XsRead((*h)->xsh(), SuspendWayPath(dom->uuid));
    const bool by_hypervisor = recorded == "hypervisor" ||
                               (recorded != "guest" && ReadSuspendWay(**h, *dom) == SuspendWay::kHypervisor);
    if (xc_domain_resume((*h)->xch(), dom->domid, by_hypervisor ? 0 : 1) != 0) {
      return Status::FromErrno("domain " + dom->name + " is suspended and cannot be resumed", errno);
    }
    xs_resume_domain((*h)->xsh(), dom->domid);
    spdlog::warn("resumed domain {}, which a previous replicator left suspended ({}, {})", dom->name,
                 by_hypervisor ? "suspended by the hypervisor: resumed without touching its registers"
                               : "suspended by its kernel: resumed as from a cancelled suspend",
                 recorded.empty() ? "read now: no record" : "as recorded");
  }
  // The refusals an operator can fix come after that resume: a guest left
  // suspended by a dead replicator must not stay suspended because this
  // one was given a wrong flag.
  {
    auto caps = GetHostCaps((*h)->xch());
    if (!caps.ok()) return caps.status();
    ROMULUS_RETURN_IF_ERROR(CheckCanProtect(*caps, dom->type, dom->hap, dom->name));
  }
  if (dm_file) {
    // The backup starts the same devices at failover, from these facts: a
    // device it could not start (AHCI, a CD-ROM, a display other than VNC)
    // is refused here, before any checkpoint nobody could resume.
    auto config = ReadDeviceModelConfig(**h, dom->domid);
    if (!config.ok()) return config.status().With("cannot protect HVM guest " + dom->name);
    dom->device_model = *config;
    for (size_t k = 0; k < config->nics.size() && k < config->nic_taps.size(); k++) {
      const auto& nic = config->nics[k];
      spdlog::info("HVM guest {}: emulated NIC {} ({}, mac {}) on tap {}", dom->name, nic.devid, nic.model, nic.mac,
                   EmulatedNicInterface(config->nic_taps[k], nic.devid, dom->vif_places));
    }
    // QEMU on the backup gives each emulated disk the backup's copy of
    // it: one that is not replicated could not be started there, and one
    // whose file is not the block device blkback serves that disk from
    // would be another disk's copy.
    std::vector<std::string> replicated;
    for (const auto& d : opts.disks) replicated.push_back(d.name);
    ROMULUS_RETURN_IF_ERROR(devicemodel::CheckEmulatedDisks(*config, replicated).With("cannot protect HVM guest " + dom->name));
    ROMULUS_RETURN_IF_ERROR(CheckIdeFilesAreTheVbds(**h, dom->domid, *config, replicated)
                                .With("cannot protect HVM guest " + dom->name));
    if (!config->ide_files.empty()) {
      auto w = devicemodel::WritebackWatch::Open(config->ide_files);
      if (!w.ok()) return w.status().With("cannot protect HVM guest " + dom->name);
      writeback.emplace(std::move(*w));
    }
  }
  {
    // Output commit covers every interface the guest sends on, or none.
    std::vector<std::string> taps;
    if (dom->device_model) {
      const auto& dm = *dom->device_model;
      for (size_t k = 0; k < dm.nics.size() && k < dm.nic_taps.size(); k++) {
        taps.push_back(EmulatedNicInterface(dm.nic_taps[k], dm.nics[k].devid, dom->vif_places));
      }
    }
    ROMULUS_RETURN_IF_ERROR(CheckEveryInterfaceBuffered(GuestInterfaces(dom->domid, dom->vif_places, taps),
                                                        opts.buffered_interfaces)
                                .With("cannot protect domain " + dom->name));
  }
  if (dm_file) {
    // Its release, from its QMP greeting, for the backup to compare with
    // its own (an older QEMU cannot load the state): libxl's lock, bounded.
    // After the checks above, whose refusals say more than a hung QEMU.
    const auto deadline = transport::DeadlineIn(milliseconds(10000));
    Status greeted = devicemodel::WithLockedDeviceModel(dm_endpoint, deadline, [&](devicemodel::DeviceModel& dm) {
      auto v = devicemodel::ParseQemuVersion(dm.qmp().qemu_version());
      if (v.ok()) dom->device_model->qemu = *v;
      return Status::Ok();
    });
    if (!greeted.ok()) {
      return greeted.With("cannot protect HVM guest " + dom->name + ": asking its device model's release");
    }
    if (!dom->device_model->qemu.known()) {
      spdlog::warn("HVM guest {}: its device model's QMP greeting names no QEMU release ({}): the backup cannot "
                   "compare its own", dom->name, dm_endpoint.qmp_socket);
    }
  }
  spdlog::info("protecting domain {} (domid {}, {}, {} vCPU, {} pages)", dom->name, dom->domid,
               GuestTypeName(dom->type), dom->max_vcpus, dom->guest_pages);
  return std::unique_ptr<replicator::CheckpointDriver>(
      new XenDriver(opts, std::move(*h), std::move(*dom), *release, std::move(dm_file), std::move(writeback)));
}

}  // namespace romulus::xen

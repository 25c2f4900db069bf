// The primary's two halves, in the manner of Xen's migration v2 (one common
// algorithm, per-guest-type operations):
//
//   PrimaryController (replicator/primary_controller.h)   policy, written once:
//     connect, handshake, reconnect with back-off, resync numbering, cache
//     fallback and live resize, pause, switchover, output commit, kill-points,
//     stats, status, events, the control socket's answers.
//   CheckpointDriver (this file)                          mechanism, per guest type:
//     how one session's epochs are taken — suspend, harvest, copy, resume —
//     and fed to the session's page path.
//
// Two drivers exist: TimerDriver (replicator/timer_driver.h: any GuestSource,
// the controller's timer paces it) and XenDriver (xen/xen_driver.h:
// xc_domain_save's callbacks pace it and its v2 stream carries the pages).
//
// A driver runs one session at a time, on a thread of its own choosing, and
// talks to the controller only through EpochSession. The calls of one epoch,
// in order (the data-path calls may come from another thread than the
// others, but never concurrently with each other):
//
//   [NextEpoch]  Reached(s)  Suspended(N)  GuestPaused(N)  Reached(s2)  ... Reached(r)
//   [resume]  Reached(r2)                              checkpoint thread
//   BeginEpoch(N)  AddPage/AddState*  EndEpoch(N)      data path
//   Commit(N, &st)  Publish(st)  NextEpoch()           checkpoint thread
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/messages.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/phase.h"
#include "replicator/stats.h"

namespace romulus::replicator {

// What the controller offers a driver for one session (one connected backup).
class EpochSession {
 public:
  virtual ~EpochSession() = default;

  // The number of the session's first epoch: epochs are numbered across
  // sessions, so a resync continues the count.
  virtual uint64_t first_epoch() const = 0;

  // ---- Pacing (checkpoint thread) ----
  enum class Next {
    kCheckpoint,  // take the next epoch
    kFinal,       // planned switchover: take it and leave the guest paused
    kStop,        // end the session cleanly (stop, --duration, --epochs)
  };
  // After an epoch's Publish: blocks until the next epoch is due — the
  // interval counts from the previous suspend; an operator pause waits here
  // with the guest running UNPROTECTED — and says what it is. The driver
  // takes the session's first epoch without asking.
  virtual Next NextEpoch() = 0;
  // The guest of `epoch` is paused: the output-commit boundary. Must come
  // before anything the guest does after the pause can leave the host.
  virtual Status Suspended(uint64_t epoch) = 0;
  // The guest of `epoch` is paused and can complete no more disk requests
  // (docs/DISK.md §3): the disks' epoch clocks advance here, so the disk
  // cut is the memory cut. Not at Suspended for Xen: that precedes the
  // suspend request; a Xen driver calls this once the domain is seen
  // suspended. The TimerDriver calls it right after its pause. An error
  // ends the session (a disk that cannot be captured needs a resync).
  // Default: nothing (a controller without disks).
  virtual Status GuestPaused(uint64_t epoch) {
    (void)epoch;
    return Status::Ok();
  }
  // A kill-point (docs/FAILURE-MODEL.md): drills and tests act here.
  virtual void Reached(Phase phase, uint64_t epoch) = 0;
  // A stop was requested: a driver blocked on its guest gives up waiting.
  virtual bool stopping() const = 0;

  // ---- Data path (one thread at a time) ----
  // Opens `epoch` on the wire (and a pending live cache resize with it).
  virtual Status BeginEpoch(uint64_t epoch) = 0;
  virtual Status AddPage(uint64_t pfn, const uint8_t* page) = 0;
  virtual Status AddState(std::span<const uint8_t> record) = 0;
  // For a page the driver knows to be all zero without reading it: true
  // when the backup holds zeros there already (nothing to send).
  virtual bool SkipKnownZeroPage(uint64_t pfn) = 0;
  // Pages of the open epoch the backup held already (first sync).
  virtual uint64_t epoch_pages_kept() const = 0;
  // The epoch's disk part (DISK frames, one DISK_END per disk; the
  // controller's, after waiting for the epoch's disk requests), then
  // EPOCH_END: the epoch's wire statistics.
  virtual Result<EpochWireStats> EndEpoch() = 0;

  // ---- Commit (checkpoint thread) ----
  // After EndEpoch: waits for the backup's ack (the session's first epoch,
  // the whole guest, as long as the backup is alive; later ones at most
  // --ack-timeout), releases the epoch's output and fills st's ack fields.
  // An error means the backup is lost: the driver ends the session.
  virtual Status Commit(uint64_t epoch, EpochStats* st) = 0;
  // Every epoch's record, acked or not: stats, totals, metrics, status.
  // The controller fills what it knows (protected, output_commit, period:
  // from Suspended to Suspended); the driver measures the guest's side
  // (suspend, pause, dirty_pages, extra) and the wire's (ApplyWireStats).
  virtual void Publish(const EpochStats& st) = 0;
  // --ack-timeout: also the bound on sending a small epoch.
  virtual std::chrono::milliseconds ack_timeout() const = 0;

  // ---- The guest cannot go on here (checkpoint thread) ----
  // The epoch the backup would resume if the guest were handed over now: a
  // checkpoint of this session, taken while PROTECTED (nothing the world
  // saw is newer). nullopt: none.
  virtual std::optional<uint64_t> HandOverPoint() const = 0;
  // Epoch `epoch` (suspended, not yet streamed) cannot be committed, and
  // the guest must never run on from this copy: e.g. an emulated disk lost
  // a write the guest saw complete (devicemodel/writeback_watch.h), so its
  // memory believes data its disk lacks. The driver keeps the guest
  // suspended for good and ends the session with `why`. The controller
  // then drops the output of every unacked epoch (OutputCommit::Discard)
  // and, if `hand_over` and HandOverPoint() still names an epoch, hands
  // the guest over (BYE handover: the backup resumes that checkpoint);
  // otherwise it ends replication and the guest waits for the operator.
  // `hand_over` is the driver's word that it recorded, where any later
  // replicator looks, that this copy must never run again: without that
  // record a later one could resume it beside the backup's. Replication
  // ends either way, with `why`.
  virtual void Relinquish(uint64_t epoch, Status why, bool hand_over) = 0;
};

// What a driver says about its guest (status, handshake).
struct GuestFacts {
  std::string backend;                 // "sim", "xen"
  std::string identity;                // sent in HELLO; names the guest in status
  uint64_t guest_pages = 0;
  uint64_t capabilities = 0;           // protocol::kCap* the sessions use
  std::optional<std::string> domain;   // Xen: the domain's name
  std::optional<uint32_t> domid;
  std::optional<std::string> guest_type;  // Xen: "pv" or "pvh" (xen::GuestTypeName)
  // Xen: the release that saves the guest (protocol::XenRelease), named in
  // the HELLO so an older backup refuses (kCapXenRelease); 0 otherwise.
  uint32_t xen_release = 0;
  // The guest's disks, replicated with its memory (docs/DISK.md). Non-empty
  // needs ControllerOptions::disks for the same disks.
  std::vector<protocol::DiskInfo> disks;
  // The first epoch writes the whole guest and may make no progress for
  // long while the backup applies it (libxenguest): only the backup's
  // silence ends it (SenderOptions::first_epoch_write_timeout = 0).
  bool unbounded_first_epoch_writes = false;
  // Shortest --ack-timeout that makes sense for this guest type.
  std::chrono::milliseconds min_ack_timeout{0};
};

class CheckpointDriver {
 public:
  virtual ~CheckpointDriver() = default;
  virtual GuestFacts facts() const = 0;
  // Runs one session until NextEpoch says kStop (Ok), a kFinal epoch was
  // committed (Ok: the guest stays paused and cannot run here again), or
  // something failed (the error). On return the guest runs — unless a final
  // epoch was committed — and nothing of the session is left behind (Xen:
  // log-dirty off, a suspended domain resumed).
  virtual Status RunSession(EpochSession& session) = 0;
  // After a failed session: is there still a guest to protect? false ends
  // the replication (a simulated guest whose own call failed, a Xen domain
  // that is gone or shutting down).
  virtual bool GuestLives() = 0;
};

// Copies the wire part of an epoch's record.
void ApplyWireStats(const EpochWireStats& wire, EpochStats* st);

}  // namespace romulus::replicator

// PlugQdisc: output commit through the kernel's sch_plug queueing discipline,
// the mechanism Remus introduced for exactly this job (Linux 3.4+,
// CONFIG_NET_SCH_PLUG, module sch_plug).
//
// sch_plug queues every packet and only dequeues on command:
//   TCQ_PLUG_BUFFER            close the open buffer: a boundary ("what is queued
//                              so far is one epoch"); packets after it are the next
//   TCQ_PLUG_RELEASE_ONE       let out the packets up to the oldest closed boundary
//   TCQ_PLUG_RELEASE_INDEFINITE  stop buffering; everything flows
// Checkpoint(N) places a boundary while the guest is paused, Release(N) (the
// backup acked N) releases it, ReleaseAll() on a clean stop. Every command is a
// synchronous netlink request: when Checkpoint() returns, the boundary is in the
// kernel, before the engine resumes the guest.
//
// Until the first Checkpoint() output flows: the plug is installed released
// (RELEASE_INDEFINITE). No backup state exists yet that this output could
// contradict, and holding it would cut the guest off the network for the whole
// initial synchronisation (seconds to minutes). Output released before the
// suspend of epoch N is part of N's history, so a failover to N is consistent.
// The first Checkpoint() plugs (BUFFER ends RELEASE_INDEFINITE); from then on
// output produced after the suspend of N leaves only after Release(N). The same
// holds after ReleaseAll(): the next Checkpoint() plugs again (reconnection).
//
// The kernel keeps ONE closed boundary (pkts_last_epoch) plus the open buffer
// (see plug_epochs.h): when Checkpoint(N+1) comes while N is still unacked, no
// boundary is placed; N+1's output stays in the open buffer and is released
// with the next boundary placed (at Checkpoint(N+2) or later). Output is never
// released early; with acks that lag past the next suspend it is released up to
// one epoch late (counted in PlugStats::coalesced). Remus never hit this: it
// waits for the ack before the next suspend.
//
// Where the plug sits:
//   Create(dev)        the root egress qdisc of DEV: the simulated guest's device,
//                      a veth or tap whose egress IS the guest's output.
//   CreateForVif(vif)  a Xen netback vif: the guest's transmit arrives as the vif's
//                      INGRESS, which has no queue to plug. As Remus did: an ingress
//                      qdisc on the vif, a u32 match-all filter whose mirred action
//                      redirects every packet to the egress of an IFB device that
//                      Romulus creates, and the plug as that IFB's root qdisc. IFB
//                      re-injects released packets into the vif's receive path,
//                      so bridging/routing behind the vif is unchanged
//                      (ifb_redirect.h).
//
// Files: this class is the output-commit state machine (which command when,
// under one mutex, with PlugEpochs deciding); ifb_redirect.{h,cc} the vif's
// IFB redirect; rtnl.{h,cc} the libnl plumbing both use.
//
// Ownership and crash safety: everything installed is marked as Romulus'
// (plug handle major 0x524d/0x524e, "RM"; IFB named rmb-<vif> with ifalias
// "romulus-netbuf <vif>"; the filter at priority 0x524d). Close() removes it all;
// after a crash (SIGKILL leaves the plug closed and the guest's network stalled)
// the next Create*/CleanupStale* on the same device removes the leftovers first.
// Something on the device that Romulus does not own is never touched: Create
// refuses with a clear error instead.
//
// Not thread-compatible by accident: calls may come from the epoch thread and
// the ack thread concurrently; a mutex orders them.
//
// Network namespaces: the netlink socket is opened in the caller's network
// namespace at Create time; all later commands go to that namespace.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "netbuf/ifb_redirect.h"
#include "netbuf/plug_epochs.h"
#include "replicator/output_commit.h"

struct nl_sock;

namespace romulus::netbuf {

// Handles are major:minor; a qdisc handle has minor 0. Two majors so that
// Discard() can atomically swap a fresh plug in place of the old one.
inline constexpr uint32_t kPlugHandleA = 0x524d0000;  // "RM"
inline constexpr uint32_t kPlugHandleB = 0x524e0000;

struct PlugOptions {
  // Bytes the plug may hold before it drops (the kernel default is
  // tx_queue_len * MTU: 48 KB on an IFB, far too little for a 100 ms epoch of
  // a busy guest). Drops are visible in Stats::kernel_drops.
  uint32_t limit_bytes = 16u << 20;
  // On Close() after ReleaseAll(), wait up to this long for the queue to drain
  // before deleting the qdisc (deleting drops what is still queued).
  int drain_ms = 200;
};

struct PlugStats {
  uint64_t boundaries = 0;      // TCQ_PLUG_BUFFER sent
  uint64_t releases = 0;        // TCQ_PLUG_RELEASE_ONE sent
  uint64_t coalesced = 0;       // checkpoints whose boundary was merged into a later one
  uint64_t stale_removed = 0;   // leftovers of a crashed run removed at Create
  uint64_t undrained = 0;       // plugging after pass-through found packets still queued
  // From the kernel (RTNL_TC_* statistics of the plug qdisc), at the time of Stats().
  uint64_t kernel_qlen = 0;     // packets queued now
  uint64_t kernel_backlog = 0;  // bytes queued now
  uint64_t kernel_drops = 0;    // packets dropped by the plug (over limit_bytes)
  uint64_t kernel_packets = 0;  // packets dequeued (released) so far
};

class PlugQdisc final : public replicator::OutputCommit {
 public:
  // Plugs DEV's egress (root qdisc). A stale Romulus plug on DEV is removed
  // first; a foreign root qdisc (non-default, not ours) is refused.
  static Result<std::unique_ptr<PlugQdisc>> Create(const std::string& dev,
                                                   const PlugOptions& opts = {});
  // Plugs the guest's transmit of a Xen vif through an IFB (see above).
  static Result<std::unique_ptr<PlugQdisc>> CreateForVif(const std::string& vif,
                                                         const PlugOptions& opts = {});

  PlugQdisc(const PlugQdisc&) = delete;
  PlugQdisc& operator=(const PlugQdisc&) = delete;
  // Close(); errors are logged, not thrown.
  ~PlugQdisc() override;

  // OutputCommit.
  Status Checkpoint(uint64_t epoch) override;
  Status Release(uint64_t epoch) override;
  Status ReleaseAll() override;
  // Failover / fencing, or a guest relinquished to its backup: every packet
  // not yet released is dropped and never leaves; the device stays plugged
  // (a fresh plug is swapped in atomically, so not even a packet sent during
  // the swap escapes).
  Status Discard() override;
  std::string Describe() const override;
  bool commits_output() const override { return true; }

  // Removes everything Romulus installed. Output not released by then is
  // dropped (after ReleaseAll, the queue gets opts.drain_ms to drain first).
  // Idempotent.
  Status Close();

  // Device whose root qdisc is the plug (the IFB for a vif).
  const std::string& plug_device() const { return plug_dev_; }
  // Device the guest's output comes from (== plug_device() unless a vif).
  const std::string& guest_device() const { return guest_dev_; }
  // Counters plus a fresh read of the kernel's qdisc statistics.
  Result<PlugStats> Stats();

 private:
  PlugQdisc() = default;
  Status PlugCommand(int action) REQUIRES(mu_);  // TCQ_PLUG_* on the live plug
  Status CloseLocked() REQUIRES(mu_);
  Status StartPassThrough() EXCLUDES(mu_);  // RELEASE_INDEFINITE right after installing
  // Waits up to MAX_MS for the plug's queue to empty; returns what is left.
  int DrainLocked(int max_ms) REQUIRES(mu_);
  static constexpr int kDrainAtPlugMs = 20;

  // Set by Create*, before the object is shared, and constant afterwards:
  // the devices, the options, what the cleanup found, the redirect (whose
  // Remove() runs under mu_).
  std::string guest_dev_, plug_dev_;
  int plug_ifindex_ = 0;
  std::optional<IfbRedirect> redirect_;  // vif mode only
  PlugOptions opts_;
  uint64_t stale_removed_ = 0;

  // Changed by the epoch and ack threads (and Close).
  mutable std::mutex mu_;
  nl_sock* sock_ GUARDED_BY(mu_) = nullptr;
  bool closed_ GUARDED_BY(mu_) = false;
  uint32_t handle_ GUARDED_BY(mu_) = kPlugHandleA;
  PlugStats stats_ GUARDED_BY(mu_);  // only the counters PlugEpochs does not keep
  PlugEpochs epochs_ GUARDED_BY(mu_);
};

// Remove leftovers of a crashed Romulus run on DEV (a plug with Romulus'
// handle). Nothing found is not an error. Create calls it itself; the CLI
// may call it for an explicit cleanup. (For a vif: CleanupStaleVif,
// ifb_redirect.h.)
Status CleanupStale(const std::string& dev, int* removed = nullptr);

}  // namespace romulus::netbuf

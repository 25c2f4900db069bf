#include "netbuf/plug_qdisc.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <thread>

#ifdef ROMULUS_HAVE_LIBNL
#include <linux/pkt_sched.h>
#include <netlink/errno.h>
#include <netlink/route/qdisc/plug.h>
#include <netlink/route/tc.h>

#include "netbuf/rtnl.h"
#endif

namespace romulus::netbuf {

#ifndef ROMULUS_HAVE_LIBNL

Result<std::unique_ptr<PlugQdisc>> PlugQdisc::Create(const std::string&, const PlugOptions&) {
  return Status::Unsupported("Romulus was built without libnl-route-3: no network buffering");
}
Result<std::unique_ptr<PlugQdisc>> PlugQdisc::CreateForVif(const std::string&,
                                                           const PlugOptions&) {
  return Status::Unsupported("Romulus was built without libnl-route-3: no network buffering");
}
PlugQdisc::~PlugQdisc() = default;
Status PlugQdisc::Checkpoint(uint64_t) { return Status::Unsupported("no libnl"); }
Status PlugQdisc::Release(uint64_t) { return Status::Unsupported("no libnl"); }
Status PlugQdisc::ReleaseAll() { return Status::Unsupported("no libnl"); }
std::string PlugQdisc::Describe() const { return "sch_plug (unavailable: built without libnl)"; }
Status PlugQdisc::Discard() { return Status::Unsupported("no libnl"); }
Status PlugQdisc::Close() { return Status::Ok(); }
Result<PlugStats> PlugQdisc::Stats() { return Status::Unsupported("no libnl"); }
Status PlugQdisc::PlugCommand(int) { return Status::Unsupported("no libnl"); }
Status PlugQdisc::CloseLocked() { return Status::Ok(); }
Status PlugQdisc::StartPassThrough() { return Status::Ok(); }
int PlugQdisc::DrainLocked(int) { return 0; }
Status CleanupStale(const std::string&, int*) { return Status::Ok(); }

#else  // ROMULUS_HAVE_LIBNL

namespace {

using rtnl::NlError;
using rtnl::QdiscAt;
using rtnl::QdiscPtr;

constexpr const char* kNoPlugHelp =
    "the kernel has no sch_plug (CONFIG_NET_SCH_PLUG); on Debian load it with "
    "`modprobe sch_plug`; this machine's kernel may lack it entirely";

bool IsOurPlugHandle(uint32_t h) { return h == kPlugHandleA || h == kPlugHandleB; }

QdiscPtr NewPlug(int ifindex, uint32_t handle, uint32_t limit) {
  QdiscPtr q(rtnl_qdisc_alloc());
  if (!q) return q;
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_ROOT);
  rtnl_tc_set_handle(TC_CAST(q.get()), handle);
  rtnl_tc_set_kind(TC_CAST(q.get()), "plug");
  // sch_plug's init reads the limit from the options whatever the action is;
  // without it libnl would send limit 0 and the plug would drop everything.
  rtnl_qdisc_plug_set_limit(q.get(), static_cast<int>(limit));
  return q;
}

// Installs a plug as root of IFINDEX. FLAGS: NLM_F_CREATE|NLM_F_EXCL for a new
// one, NLM_F_CREATE|NLM_F_REPLACE to swap one in atomically.
Status AddPlug(nl_sock* sock, int ifindex, const std::string& dev, uint32_t handle,
               uint32_t limit, int flags) {
  QdiscPtr q = NewPlug(ifindex, handle, limit);
  if (!q) return Status::IoError("netlink: out of memory");
  int err = rtnl_qdisc_add(sock, q.get(), flags);
  if (err == -NLE_OBJ_NOTFOUND) {
    // RTNETLINK "Specified qdisc kind is unknown" is ENOENT, which libnl maps
    // to NLE_OBJ_NOTFOUND: the device exists (resolved above), the kind does not.
    return Status::Unsupported(std::string("cannot plug ") + dev + ": " + kNoPlugHelp);
  }
  if (err < 0) return NlError("adding a plug qdisc as root of " + dev, err);
  return Status::Ok();
}

}  // namespace

Status CleanupStale(const std::string& dev, int* removed) {
  if (removed) *removed = 0;
  auto sock = rtnl::Connect();
  if (!sock.ok()) return sock.status();
  auto ifindex = rtnl::IfindexOf(sock->get(), dev);
  if (!ifindex.ok()) return ifindex.status();
  auto root = QdiscAt(sock->get(), *ifindex, TC_H_ROOT);
  if (!root.ok()) return root.status();
  if (!*root) return Status::Ok();
  uint32_t handle = rtnl_tc_get_handle(TC_CAST(root->get()));
  const char* kind = rtnl_tc_get_kind(TC_CAST(root->get()));
  if (!IsOurPlugHandle(handle) || !kind || std::string(kind) != "plug") return Status::Ok();
  spdlog::warn("netbuf: removing a stale romulus plug on {} (left by a run that did not exit cleanly; "
               "its unreleased output is dropped)", dev);
  ROMULUS_RETURN_IF_ERROR(
      rtnl::DeleteQdisc(sock->get(), *ifindex, TC_H_ROOT, handle, "plug", "stale plug on " + dev));
  if (removed) *removed = 1;
  return Status::Ok();
}

// Create and CreateForVif fill in a PlugQdisc no other thread can see yet,
// so they set its guarded members without taking mu_.
Result<std::unique_ptr<PlugQdisc>> PlugQdisc::Create(const std::string& dev, const PlugOptions& opts)
    NO_THREAD_SAFETY_ANALYSIS {
  auto sock = rtnl::Connect();
  if (!sock.ok()) return sock.status();
  auto ifindex = rtnl::IfindexOf(sock->get(), dev);
  if (!ifindex.ok()) return ifindex.status();
  int removed = 0;
  ROMULUS_RETURN_IF_ERROR(CleanupStale(dev, &removed));
  // Refuse to replace a root qdisc someone configured (handle != 0: the
  // kernel's default qdiscs have handle 0 and come back when ours is deleted).
  auto root = QdiscAt(sock->get(), *ifindex, TC_H_ROOT);
  if (!root.ok()) return root.status();
  if (*root && rtnl_tc_get_handle(TC_CAST(root->get())) != 0) {
    const char* kind = rtnl_tc_get_kind(TC_CAST(root->get()));
    char h[16];
    std::snprintf(h, sizeof(h), "%x:", rtnl_tc_get_handle(TC_CAST(root->get())) >> 16);
    return Status::InvalidArgument(dev + " already has a root qdisc Romulus did not install (" +
                                   (kind ? kind : "?") + " " + h +
                                   "); remove it (`tc qdisc del dev " + dev +
                                   " root`) or buffer another device");
  }
  ROMULUS_RETURN_IF_ERROR(AddPlug(sock->get(), *ifindex, dev, kPlugHandleA, opts.limit_bytes,
                                  NLM_F_CREATE | NLM_F_EXCL));
  std::unique_ptr<PlugQdisc> p(new PlugQdisc());
  p->sock_ = sock->release();
  p->guest_dev_ = p->plug_dev_ = dev;
  p->plug_ifindex_ = *ifindex;
  p->handle_ = kPlugHandleA;
  p->opts_ = opts;
  p->stale_removed_ = removed;
  Status s = p->StartPassThrough();
  if (!s.ok()) return s;  // ~PlugQdisc removes the plug
  return p;
}

Result<std::unique_ptr<PlugQdisc>> PlugQdisc::CreateForVif(const std::string& vif, const PlugOptions& opts)
    NO_THREAD_SAFETY_ANALYSIS {
  auto sock = rtnl::Connect();
  if (!sock.ok()) return sock.status();
  auto vif_index = rtnl::IfindexOf(sock->get(), vif);
  if (!vif_index.ok()) return vif_index.status();
  int removed = 0;
  ROMULUS_RETURN_IF_ERROR(CleanupStaleVif(vif, &removed));

  std::unique_ptr<PlugQdisc> p(new PlugQdisc());
  IfbRedirect& redirect = p->redirect_.emplace(vif, *vif_index);
  p->guest_dev_ = vif;
  p->plug_dev_ = redirect.ifb();
  p->handle_ = kPlugHandleA;
  p->opts_ = opts;
  p->stale_removed_ = removed;

  auto ifb_index = redirect.CreateIfb(sock->get());
  if (!ifb_index.ok()) return ifb_index.status();
  p->plug_ifindex_ = *ifb_index;
  p->sock_ = sock->release();  // from here on, p's Close() undoes what was done

  // Plug first, redirect last: no packet ever reaches an unplugged IFB.
  Status s = AddPlug(p->sock_, p->plug_ifindex_, p->plug_dev_, kPlugHandleA, opts.limit_bytes,
                     NLM_F_CREATE | NLM_F_EXCL);
  if (s.ok()) s = p->StartPassThrough();
  if (s.ok()) s = redirect.Redirect(p->sock_);
  if (!s.ok()) {
    Status c = p->Close();
    if (!c.ok()) spdlog::warn("netbuf: cleanup after failed set-up of {}: {}", vif, c.ToString());
    return s;
  }
  return p;
}

int PlugQdisc::DrainLocked(int max_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_ms);
  for (;;) {
    auto q = QdiscAt(sock_, plug_ifindex_, TC_H_ROOT);
    if (!q.ok() || !*q) return 0;
    int qlen = static_cast<int>(rtnl_tc_get_stat(TC_CAST(q->get()), RTNL_TC_QLEN));
    if (qlen == 0 || std::chrono::steady_clock::now() >= deadline) return qlen;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

Status PlugQdisc::StartPassThrough() {
  std::lock_guard<std::mutex> lock(mu_);
  ROMULUS_RETURN_IF_ERROR(PlugCommand(TCQ_PLUG_RELEASE_INDEFINITE));
  epochs_.CommitReleaseAll();
  return Status::Ok();
}

PlugQdisc::~PlugQdisc() {
  Status s = Close();
  if (!s.ok()) spdlog::warn("netbuf: tear-down of {}: {}", Describe(), s.ToString());
}

Status PlugQdisc::PlugCommand(int action) {
  if (closed_) return Status::InvalidArgument("netbuf: plug on " + plug_dev_ + " is closed");
  QdiscPtr q = NewPlug(plug_ifindex_, handle_, opts_.limit_bytes);
  if (!q) return Status::IoError("netlink: out of memory");
  int err = 0;
  const char* name = "?";
  switch (action) {
    case TCQ_PLUG_BUFFER: err = rtnl_qdisc_plug_buffer(q.get()); name = "buffer"; break;
    case TCQ_PLUG_RELEASE_ONE: err = rtnl_qdisc_plug_release_one(q.get()); name = "release one"; break;
    case TCQ_PLUG_RELEASE_INDEFINITE:
      err = rtnl_qdisc_plug_release_indefinite(q.get());
      name = "release indefinite";
      break;
    default: return Status::Internal("netbuf: unknown plug action");
  }
  if (err < 0) return NlError("netbuf: preparing plug command", err);
  // No NLM_F_CREATE: this changes the existing plug (sch_plug's ->change) and
  // fails loudly if someone deleted it under us, rather than creating a new one.
  err = rtnl_qdisc_add(sock_, q.get(), 0);
  if (err < 0) return NlError(std::string("netbuf: plug ") + name + " on " + plug_dev_, err);
  return Status::Ok();
}

namespace {
int KernelAction(PlugAction a) {
  switch (a) {
    case PlugAction::kBuffer: return TCQ_PLUG_BUFFER;
    case PlugAction::kReleaseOne: return TCQ_PLUG_RELEASE_ONE;
    case PlugAction::kReleaseIndefinite: return TCQ_PLUG_RELEASE_INDEFINITE;
    case PlugAction::kNone: break;
  }
  return -1;
}
}  // namespace

Status PlugQdisc::Checkpoint(uint64_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  auto a = epochs_.OnCheckpoint(epoch);
  if (!a.ok()) return a.status();
  if (*a == PlugAction::kBuffer && epochs_.released_all()) {
    // Leaving RELEASE_INDEFINITE: packets enqueued in that mode are not counted
    // by sch_plug, so any still queued when BUFFER closes the plug would sit
    // at the head uncounted, and every later RELEASE_ONE would fall short by
    // that many (late, never early, but for good). The guest is paused now: let
    // the queue empty first.
    int left = DrainLocked(kDrainAtPlugMs);
    if (left > 0) {
      ++stats_.undrained;
      spdlog::warn("netbuf: {} packet(s) still queued on {} when plugging for epoch {}; "
                   "released output lags by that many until the next ReleaseAll",
                   left, plug_dev_, epoch);
    }
  }
  if (*a != PlugAction::kNone) ROMULUS_RETURN_IF_ERROR(PlugCommand(KernelAction(*a)));
  epochs_.CommitCheckpoint(epoch, *a);
  return Status::Ok();
}

Status PlugQdisc::Release(uint64_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  auto a = epochs_.OnRelease(epoch);
  if (!a.ok()) return a.status();
  if (*a != PlugAction::kNone) ROMULUS_RETURN_IF_ERROR(PlugCommand(KernelAction(*a)));
  epochs_.CommitRelease(*a);
  return Status::Ok();
}

Status PlugQdisc::ReleaseAll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return Status::Ok();
  ROMULUS_RETURN_IF_ERROR(PlugCommand(TCQ_PLUG_RELEASE_INDEFINITE));
  epochs_.CommitReleaseAll();
  return Status::Ok();
}

Status PlugQdisc::Discard() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return Status::Ok();
  // Graft a fresh (closed) plug over the old one in one RTM_NEWQDISC: the old
  // qdisc is destroyed with its queue, and at no instant is the device unplugged.
  uint32_t next = handle_ == kPlugHandleA ? kPlugHandleB : kPlugHandleA;
  ROMULUS_RETURN_IF_ERROR(AddPlug(sock_, plug_ifindex_, plug_dev_, next, opts_.limit_bytes,
                                  NLM_F_CREATE | NLM_F_REPLACE));
  handle_ = next;
  epochs_.CommitDiscard();
  return Status::Ok();
}

Status PlugQdisc::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  return CloseLocked();
}

Status PlugQdisc::CloseLocked() {
  if (closed_ || !sock_) return Status::Ok();
  closed_ = true;
  if (epochs_.released_all() && opts_.drain_ms > 0) {
    // Released output is the guest's; give it the chance to leave before the
    // qdisc (and whatever it still holds) is deleted.
    (void)DrainLocked(opts_.drain_ms);
  }
  // Vif: redirect off first, then the IFB (deleting it destroys the plug and
  // its queue). Otherwise the plug is all there is.
  Status first = redirect_ ? redirect_->Remove(sock_)
                           : rtnl::DeleteQdisc(sock_, plug_ifindex_, TC_H_ROOT, handle_, "plug",
                                               "plug on " + plug_dev_);
  nl_socket_free(sock_);
  sock_ = nullptr;
  return first;
}

std::string PlugQdisc::Describe() const {
  if (redirect_) {
    return "sch_plug on " + plug_dev_ + " (IFB carrying " + guest_dev_ + "'s transmit)";
  }
  return "sch_plug on " + plug_dev_;
}

Result<PlugStats> PlugQdisc::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  PlugStats s;
  s.boundaries = epochs_.boundaries();
  s.releases = epochs_.releases();
  s.coalesced = epochs_.coalesced();
  s.stale_removed = stale_removed_;
  s.undrained = stats_.undrained;
  if (closed_ || !sock_) return s;
  auto q = QdiscAt(sock_, plug_ifindex_, TC_H_ROOT);
  if (!q.ok()) return q.status();
  if (!*q || rtnl_tc_get_handle(TC_CAST(q->get())) != handle_) {
    return Status::IoError("netbuf: the plug on " + plug_dev_ + " is gone (removed by someone else?)");
  }
  rtnl_tc* tc = TC_CAST(q->get());
  s.kernel_qlen = rtnl_tc_get_stat(tc, RTNL_TC_QLEN);
  s.kernel_backlog = rtnl_tc_get_stat(tc, RTNL_TC_BACKLOG);
  s.kernel_drops = rtnl_tc_get_stat(tc, RTNL_TC_DROPS);
  s.kernel_packets = rtnl_tc_get_stat(tc, RTNL_TC_PACKETS);
  return s;
}

#endif  // ROMULUS_HAVE_LIBNL

}  // namespace romulus::netbuf

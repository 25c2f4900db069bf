#include "netbuf/plug_qdisc.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#ifdef ROMULUS_HAVE_LIBNL
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/plug.h>
#include <netlink/route/tc.h>
#endif

namespace romulus::netbuf {

namespace {

constexpr const char* kNoPlugHelp =
    "the kernel has no sch_plug (CONFIG_NET_SCH_PLUG); on Debian load it with "
    "`modprobe sch_plug`; this machine's kernel may lack it entirely";

// Stable 32-bit FNV-1a: a vif name too long for "rmb-<vif>" maps to the same
// IFB name in every run, so a crashed run's IFB is found again.
uint32_t Fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

bool IsOurPlugHandle(uint32_t h) { return h == kPlugHandleA || h == kPlugHandleB; }

}  // namespace

std::string IfbNameFor(const std::string& vif) {
  std::string name = std::string(kIfbPrefix) + vif;
  if (name.size() <= 15) return name;  // IFNAMSIZ - 1
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08x", Fnv1a(vif));
  return std::string(kIfbPrefix) + hex;
}

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
Status CleanupStaleVif(const std::string&, int*) { return Status::Ok(); }

#else  // ROMULUS_HAVE_LIBNL

namespace {

// RAII for libnl's refcounted objects and the socket.
struct SockDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct LinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct QdiscDeleter {
  void operator()(rtnl_qdisc* q) const { rtnl_qdisc_put(q); }
};
struct ClsDeleter {
  void operator()(rtnl_cls* c) const { rtnl_cls_put(c); }
};
using SockPtr = std::unique_ptr<nl_sock, SockDeleter>;
using CachePtr = std::unique_ptr<nl_cache, CacheDeleter>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using QdiscPtr = std::unique_ptr<rtnl_qdisc, QdiscDeleter>;
using ClsPtr = std::unique_ptr<rtnl_cls, ClsDeleter>;

// libnl returns -NLE_*; turn it into a Status that tells an operator what to do.
Status NlError(const std::string& what, int err) {
  err = std::abs(err);
  if (err == NLE_PERM) {
    return Status::IoError(what + ": permission denied (needs root or CAP_NET_ADMIN)");
  }
  return Status::IoError(what + ": " + nl_geterror(err));
}

Result<SockPtr> Connect() {
  SockPtr sock(nl_socket_alloc());
  if (!sock) return Status::IoError("netlink: cannot allocate a socket");
  int err = nl_connect(sock.get(), NETLINK_ROUTE);
  if (err < 0) return NlError("netlink: connect NETLINK_ROUTE", err);
  return sock;
}

// Looks a device up by name in the socket's namespace. Not found -> nullptr, Ok.
Result<LinkPtr> FindLink(nl_sock* sock, const std::string& name) {
  rtnl_link* link = nullptr;
  int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &link);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return LinkPtr();
  if (err < 0) return NlError("looking up network interface '" + name + "'", err);
  return LinkPtr(link);
}

Result<int> IfindexOf(nl_sock* sock, const std::string& name) {
  if (name.empty() || name.size() > 15 || name.find('/') != std::string::npos ||
      name.find_first_of(" \t\n") != std::string::npos) {
    return Status::InvalidArgument("'" + name + "' is not a valid network interface name");
  }
  auto link = FindLink(sock, name);
  if (!link.ok()) return link.status();
  if (!*link) {
    return Status::InvalidArgument("no network interface named '" + name +
                                   "' (in this network namespace)");
  }
  return rtnl_link_get_ifindex(link->get());
}

// The qdisc attached at PARENT of IFINDEX, or nullptr.
Result<QdiscPtr> QdiscAt(nl_sock* sock, int ifindex, uint32_t parent) {
  nl_cache* raw = nullptr;
  int err = rtnl_qdisc_alloc_cache(sock, &raw);
  if (err < 0) return NlError("listing qdiscs", err);
  CachePtr cache(raw);
  return QdiscPtr(rtnl_qdisc_get_by_parent(cache.get(), ifindex, parent));
}

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

Status DeleteQdisc(nl_sock* sock, int ifindex, uint32_t parent, uint32_t handle,
                   const char* kind, const std::string& what) {
  QdiscPtr q(rtnl_qdisc_alloc());
  if (!q) return Status::IoError("netlink: out of memory");
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), parent);
  rtnl_tc_set_handle(TC_CAST(q.get()), handle);
  rtnl_tc_set_kind(TC_CAST(q.get()), kind);
  int err = rtnl_qdisc_delete(sock, q.get());
  // Already gone (device deleted, someone else removed it): the goal is met.
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV || err == -NLE_INVAL) return Status::Ok();
  if (err < 0) return NlError("deleting " + what, err);
  return Status::Ok();
}

constexpr uint32_t kIngressHandle = 0xffff0000;  // TC_H_MAJ(TC_H_INGRESS)

// Our u32 filter on VIF's ingress (there is one, unless a crash
// interrupted a Create). Also reports whether other filters exist there.
struct IngressScan {
  bool has_ingress = false;
  int ours = 0;
  int foreign = 0;
};

Result<IngressScan> ScanIngress(nl_sock* sock, int ifindex) {
  IngressScan scan;
  auto ingress = QdiscAt(sock, ifindex, TC_H_INGRESS);
  if (!ingress.ok()) return ingress.status();
  if (!*ingress) return scan;
  scan.has_ingress = true;
  nl_cache* raw = nullptr;
  int err = rtnl_cls_alloc_cache(sock, ifindex, kIngressHandle, &raw);
  if (err < 0) return NlError("listing ingress filters", err);
  CachePtr cache(raw);
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* cls = reinterpret_cast<rtnl_cls*>(o);
    // A u32 filter shows up as several objects (hash table, key node), all at
    // the priority Romulus reserves.
    if (rtnl_cls_get_prio(cls) == kFilterPrio) {
      ++scan.ours;
    } else {
      ++scan.foreign;
    }
  }
  return scan;
}

Status DeleteOurFilter(nl_sock* sock, int ifindex) {
  ClsPtr cls(rtnl_cls_alloc());
  if (!cls) return Status::IoError("netlink: out of memory");
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(cls.get()), kIngressHandle);
  rtnl_cls_set_prio(cls.get(), kFilterPrio);
  rtnl_cls_set_protocol(cls.get(), ETH_P_ALL);
  int err = rtnl_cls_delete(sock, cls.get(), 0);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV || err == -NLE_INVAL) return Status::Ok();
  if (err < 0) return NlError("deleting the romulus ingress filter", err);
  return Status::Ok();
}

Status AddRedirectFilter(nl_sock* sock, int vif_ifindex, int ifb_ifindex, const std::string& vif) {
  ClsPtr cls(rtnl_cls_alloc());
  rtnl_act* act = rtnl_act_alloc();
  if (!cls || !act) {
    if (act) rtnl_act_put(act);
    return Status::IoError("netlink: out of memory");
  }
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), vif_ifindex);
  rtnl_tc_set_parent(TC_CAST(cls.get()), kIngressHandle);
  // u32 "match u32 0 0" (match everything), as Remus did: cls_u32 is in every
  // distribution kernel, cls_matchall (4.8+) is not always built.
  rtnl_tc_set_kind(TC_CAST(cls.get()), "u32");
  rtnl_cls_set_prio(cls.get(), kFilterPrio);
  rtnl_cls_set_protocol(cls.get(), ETH_P_ALL);
  rtnl_tc_set_kind(TC_CAST(act), "mirred");
  rtnl_mirred_set_action(act, TCA_EGRESS_REDIR);
  // STOLEN: the packet is consumed here and continues only via the IFB.
  rtnl_mirred_set_policy(act, TC_ACT_STOLEN);
  rtnl_mirred_set_ifindex(act, static_cast<uint32_t>(ifb_ifindex));
  int err = rtnl_u32_add_key_uint32(cls.get(), 0, 0, 0, 0);
  if (err >= 0) err = rtnl_u32_set_cls_terminal(cls.get());
  if (err >= 0) err = rtnl_u32_add_action(cls.get(), act);
  rtnl_act_put(act);  // the classifier holds its own reference
  if (err < 0) return NlError("building the u32+mirred redirect", err);
  err = rtnl_cls_add(sock, cls.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err == -NLE_OBJ_NOTFOUND) {
    return Status::Unsupported("cannot redirect " + vif +
                               "'s transmit: the kernel lacks cls_u32 or act_mirred "
                               "(CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED; "
                               "`modprobe cls_u32 act_mirred`)");
  }
  if (err < 0) return NlError("adding the u32+mirred filter on " + vif + " ingress", err);
  return Status::Ok();
}

Status AddIngress(nl_sock* sock, int ifindex, const std::string& vif) {
  QdiscPtr q(rtnl_qdisc_alloc());
  if (!q) return Status::IoError("netlink: out of memory");
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_INGRESS);
  rtnl_tc_set_handle(TC_CAST(q.get()), kIngressHandle);
  rtnl_tc_set_kind(TC_CAST(q.get()), "ingress");
  int err = rtnl_qdisc_add(sock, q.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err == -NLE_OBJ_NOTFOUND) {
    return Status::Unsupported("cannot add an ingress qdisc on " + vif +
                               ": the kernel lacks sch_ingress (CONFIG_NET_SCH_INGRESS; "
                               "`modprobe sch_ingress`)");
  }
  if (err < 0) return NlError("adding an ingress qdisc on " + vif, err);
  return Status::Ok();
}

// Creates the IFB, marks it as ours, brings it up. Returns its ifindex.
Result<int> AddIfb(nl_sock* sock, const std::string& ifb, const std::string& vif) {
  LinkPtr link(rtnl_link_alloc());
  if (!link) return Status::IoError("netlink: out of memory");
  rtnl_link_set_name(link.get(), ifb.c_str());
  int err = rtnl_link_set_type(link.get(), "ifb");
  if (err < 0) return NlError("preparing IFB " + ifb, err);
  err = rtnl_link_add(sock, link.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_OPNOTSUPP) {
    return Status::Unsupported("cannot create IFB device " + ifb +
                               ": the kernel lacks ifb (CONFIG_IFB; `modprobe ifb`)");
  }
  if (err < 0) return NlError("creating IFB device " + ifb, err);
  // The alias cannot ride on RTM_NEWLINK (only a change sets IFLA_IFALIAS).
  auto created = FindLink(sock, ifb);
  if (!created.ok()) return created.status();
  if (!*created) return Status::IoError("IFB " + ifb + " vanished right after creation");
  LinkPtr change(rtnl_link_alloc());
  if (!change) return Status::IoError("netlink: out of memory");
  std::string alias = std::string(kIfbAliasPrefix) + vif;
  rtnl_link_set_ifalias(change.get(), alias.c_str());
  rtnl_link_set_flags(change.get(), IFF_UP);
  err = rtnl_link_change(sock, created->get(), change.get(), 0);
  int ifindex = rtnl_link_get_ifindex(created->get());
  if (err < 0) {
    rtnl_link_delete(sock, created->get());
    return NlError("marking and bringing up IFB " + ifb, err);
  }
  return ifindex;
}

}  // namespace

Status CleanupStale(const std::string& dev, int* removed) {
  if (removed) *removed = 0;
  auto sock = Connect();
  if (!sock.ok()) return sock.status();
  auto ifindex = IfindexOf(sock->get(), dev);
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
      DeleteQdisc(sock->get(), *ifindex, TC_H_ROOT, handle, "plug", "stale plug on " + dev));
  if (removed) *removed = 1;
  return Status::Ok();
}

Status CleanupStaleVif(const std::string& vif, int* removed) {
  if (removed) *removed = 0;
  auto sock = Connect();
  if (!sock.ok()) return sock.status();
  int n = 0;
  // 1. Our redirect on the vif first: once the IFB is gone it would black-hole
  //    the guest's transmit.
  auto vif_link = FindLink(sock->get(), vif);
  if (!vif_link.ok()) return vif_link.status();
  if (*vif_link) {
    int ifindex = rtnl_link_get_ifindex(vif_link->get());
    auto scan = ScanIngress(sock->get(), ifindex);
    if (!scan.ok()) return scan.status();
    if (scan->ours > 0) {
      spdlog::warn("netbuf: removing a stale romulus redirect on {} ingress", vif);
      ROMULUS_RETURN_IF_ERROR(DeleteOurFilter(sock->get(), ifindex));
      ++n;
      // We cannot know who added the ingress qdisc; remove it only if nothing
      // else uses it.
      if (scan->foreign == 0) {
        ROMULUS_RETURN_IF_ERROR(DeleteQdisc(sock->get(), ifindex, TC_H_INGRESS, kIngressHandle,
                                            "ingress", "ingress qdisc on " + vif));
      }
    }
  }
  // 2. Our IFB (its plug, and the output it held, go with it).
  std::string ifb = IfbNameFor(vif);
  auto ifb_link = FindLink(sock->get(), ifb);
  if (!ifb_link.ok()) return ifb_link.status();
  if (*ifb_link) {
    const char* alias = rtnl_link_get_ifalias(ifb_link->get());
    std::string want = std::string(kIfbAliasPrefix) + vif;
    if (!alias || want != alias) {
      return Status::InvalidArgument("a device named " + ifb + " exists but is not Romulus' (ifalias '" +
                                     (alias ? alias : "") + "', expected '" + want +
                                     "'); remove it or rename it");
    }
    spdlog::warn("netbuf: removing stale romulus IFB {} (left by a run that did not exit cleanly)", ifb);
    int err = rtnl_link_delete(sock->get(), ifb_link->get());
    if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) {
      return NlError("deleting stale IFB " + ifb, err);
    }
    ++n;
  }
  if (removed) *removed = n;
  return Status::Ok();
}

Result<std::unique_ptr<PlugQdisc>> PlugQdisc::Create(const std::string& dev,
                                                     const PlugOptions& opts) {
  auto sock = Connect();
  if (!sock.ok()) return sock.status();
  auto ifindex = IfindexOf(sock->get(), dev);
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
  p->guest_ifindex_ = p->plug_ifindex_ = *ifindex;
  p->handle_ = kPlugHandleA;
  p->opts_ = opts;
  p->stale_removed_ = removed;
  Status s = p->StartPassThrough();
  if (!s.ok()) return s;  // ~PlugQdisc removes the plug
  return p;
}

Result<std::unique_ptr<PlugQdisc>> PlugQdisc::CreateForVif(const std::string& vif,
                                                           const PlugOptions& opts) {
  auto sock = Connect();
  if (!sock.ok()) return sock.status();
  auto vif_index = IfindexOf(sock->get(), vif);
  if (!vif_index.ok()) return vif_index.status();
  int removed = 0;
  ROMULUS_RETURN_IF_ERROR(CleanupStaleVif(vif, &removed));
  const std::string ifb = IfbNameFor(vif);

  std::unique_ptr<PlugQdisc> p(new PlugQdisc());
  p->guest_dev_ = vif;
  p->plug_dev_ = ifb;
  p->guest_ifindex_ = *vif_index;
  p->vif_mode_ = true;
  p->handle_ = kPlugHandleA;
  p->opts_ = opts;
  p->stale_removed_ = removed;

  auto ifb_index = AddIfb(sock->get(), ifb, vif);
  if (!ifb_index.ok()) return ifb_index.status();
  p->plug_ifindex_ = *ifb_index;
  p->sock_ = sock->release();  // from here on, p's Close() undoes what was done

  // Plug first, redirect last: no packet ever reaches an unplugged IFB.
  Status s = AddPlug(p->sock_, p->plug_ifindex_, ifb, kPlugHandleA, opts.limit_bytes,
                     NLM_F_CREATE | NLM_F_EXCL);
  if (s.ok()) s = p->StartPassThrough();
  if (s.ok()) {
    auto scan = ScanIngress(p->sock_, p->guest_ifindex_);
    s = scan.status();
    if (s.ok() && !scan->has_ingress) {
      s = AddIngress(p->sock_, p->guest_ifindex_, vif);
      p->created_ingress_ = s.ok();
    }
  }
  if (s.ok()) s = AddRedirectFilter(p->sock_, p->guest_ifindex_, p->plug_ifindex_, vif);
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
  Status first;
  auto note = [&first](Status s) {
    if (!s.ok() && first.ok()) first = s;
  };
  if (vif_mode_) {
    // Redirect off first, then the IFB (deleting it destroys the plug and its queue).
    note(DeleteOurFilter(sock_, guest_ifindex_));
    if (created_ingress_) {
      note(DeleteQdisc(sock_, guest_ifindex_, TC_H_INGRESS, kIngressHandle, "ingress",
                       "ingress qdisc on " + guest_dev_));
    }
    if (plug_ifindex_ > 0) {
      LinkPtr link(rtnl_link_alloc());
      if (link) {
        rtnl_link_set_ifindex(link.get(), plug_ifindex_);
        int err = rtnl_link_delete(sock_, link.get());
        if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) {
          note(NlError("deleting IFB " + plug_dev_, err));
        }
      }
    }
  } else {
    note(DeleteQdisc(sock_, plug_ifindex_, TC_H_ROOT, handle_, "plug", "plug on " + plug_dev_));
  }
  nl_socket_free(sock_);
  sock_ = nullptr;
  return first;
}

std::string PlugQdisc::Describe() const {
  if (vif_mode_) {
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

#include "netbuf/ifb_redirect.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <utility>

#ifdef ROMULUS_HAVE_LIBNL
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <netlink/errno.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/tc.h>

#include "netbuf/rtnl.h"
#endif

namespace romulus::netbuf {

namespace {

// Stable 32-bit FNV-1a: a vif name too long for "rmb-<vif>" maps to the same
// IFB name in every run, so a crashed run's IFB is found again.
uint32_t Fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

}  // namespace

std::string IfbNameFor(const std::string& vif) {
  std::string name = std::string(kIfbPrefix) + vif;
  if (name.size() <= 15) return name;  // IFNAMSIZ - 1
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08x", Fnv1a(vif));
  return std::string(kIfbPrefix) + hex;
}

IfbRedirect::IfbRedirect(std::string vif, int vif_ifindex)
    : vif_(std::move(vif)), ifb_(IfbNameFor(vif_)), vif_ifindex_(vif_ifindex) {}

#ifndef ROMULUS_HAVE_LIBNL

Status CleanupStaleVif(const std::string&, int* removed) {
  if (removed) *removed = 0;
  return Status::Ok();
}
Result<int> IfbRedirect::CreateIfb(nl_sock*) { return Status::Unsupported("no libnl"); }
Status IfbRedirect::Redirect(nl_sock*) { return Status::Unsupported("no libnl"); }
Status IfbRedirect::Remove(nl_sock*) { return Status::Ok(); }

#else  // ROMULUS_HAVE_LIBNL

namespace {

using rtnl::CachePtr;
using rtnl::ClsPtr;
using rtnl::LinkPtr;
using rtnl::NlError;
using rtnl::QdiscPtr;

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
  auto ingress = rtnl::QdiscAt(sock, ifindex, TC_H_INGRESS);
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

}  // namespace

Status CleanupStaleVif(const std::string& vif, int* removed) {
  if (removed) *removed = 0;
  auto sock = rtnl::Connect();
  if (!sock.ok()) return sock.status();
  int n = 0;
  // 1. Our redirect on the vif first: once the IFB is gone it would black-hole
  //    the guest's transmit.
  auto vif_link = rtnl::FindLink(sock->get(), vif);
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
        ROMULUS_RETURN_IF_ERROR(rtnl::DeleteQdisc(sock->get(), ifindex, TC_H_INGRESS, kIngressHandle,
                                                  "ingress", "ingress qdisc on " + vif));
      }
    }
  }
  // 2. Our IFB (its plug, and the output it held, go with it).
  std::string ifb = IfbNameFor(vif);
  auto ifb_link = rtnl::FindLink(sock->get(), ifb);
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
    ROMULUS_RETURN_IF_ERROR(rtnl::DeleteLink(sock->get(), ifb_link->get(), "stale IFB " + ifb));
    ++n;
  }
  if (removed) *removed = n;
  return Status::Ok();
}

Result<int> IfbRedirect::CreateIfb(nl_sock* sock) {
  LinkPtr link(rtnl_link_alloc());
  if (!link) return Status::IoError("netlink: out of memory");
  rtnl_link_set_name(link.get(), ifb_.c_str());
  int err = rtnl_link_set_type(link.get(), "ifb");
  if (err < 0) return NlError("preparing IFB " + ifb_, err);
  err = rtnl_link_add(sock, link.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_OPNOTSUPP) {
    return Status::Unsupported("cannot create IFB device " + ifb_ +
                               ": the kernel lacks ifb (CONFIG_IFB; `modprobe ifb`)");
  }
  if (err < 0) return NlError("creating IFB device " + ifb_, err);
  // The alias cannot ride on RTM_NEWLINK (only a change sets IFLA_IFALIAS).
  auto created = rtnl::FindLink(sock, ifb_);
  if (!created.ok()) return created.status();
  if (!*created) return Status::IoError("IFB " + ifb_ + " vanished right after creation");
  LinkPtr change(rtnl_link_alloc());
  if (!change) return Status::IoError("netlink: out of memory");
  std::string alias = std::string(kIfbAliasPrefix) + vif_;
  rtnl_link_set_ifalias(change.get(), alias.c_str());
  rtnl_link_set_flags(change.get(), IFF_UP);
  err = rtnl_link_change(sock, created->get(), change.get(), 0);
  int ifindex = rtnl_link_get_ifindex(created->get());
  if (err < 0) {
    rtnl_link_delete(sock, created->get());
    return NlError("marking and bringing up IFB " + ifb_, err);
  }
  ifb_ifindex_ = ifindex;
  return ifindex;
}

Status IfbRedirect::Redirect(nl_sock* sock) {
  auto scan = ScanIngress(sock, vif_ifindex_);
  if (!scan.ok()) return scan.status();
  if (!scan->has_ingress) {
    Status s = AddIngress(sock, vif_ifindex_, vif_);
    created_ingress_ = s.ok();
    ROMULUS_RETURN_IF_ERROR(s);
  }
  return AddRedirectFilter(sock, vif_ifindex_, ifb_ifindex_, vif_);
}

Status IfbRedirect::Remove(nl_sock* sock) {
  Status first;
  auto note = [&first](Status s) {
    if (!s.ok() && first.ok()) first = s;
  };
  note(DeleteOurFilter(sock, vif_ifindex_));
  if (created_ingress_) {
    note(rtnl::DeleteQdisc(sock, vif_ifindex_, TC_H_INGRESS, kIngressHandle, "ingress",
                           "ingress qdisc on " + vif_));
  }
  if (ifb_ifindex_ > 0) {
    LinkPtr link(rtnl_link_alloc());
    if (link) {
      rtnl_link_set_ifindex(link.get(), ifb_ifindex_);
      note(rtnl::DeleteLink(sock, link.get(), "IFB " + ifb_));
    }
  }
  return first;
}

#endif  // ROMULUS_HAVE_LIBNL

}  // namespace romulus::netbuf

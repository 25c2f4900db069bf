// rtnetlink plumbing shared by the plug (plug_qdisc.cc) and the IFB redirect
// (ifb_redirect.cc): RAII for libnl's objects, errors an operator can act on,
// device and qdisc lookups, deletions that treat "already gone" as done.
//
// Internal to netbuf/ and only with libnl-route-3 (ROMULUS_HAVE_LIBNL): it
// includes libnl's headers, which nothing outside netbuf/ should see.
#pragma once

#include <netlink/netlink.h>
#include <netlink/route/classifier.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace romulus::netbuf::rtnl {

// libnl's objects are refcounted and its socket must be freed: unique_ptr
// with the matching put/free so no error path leaks one.
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
Status NlError(const std::string& what, int err);

// A NETLINK_ROUTE socket in the caller's network namespace.
Result<SockPtr> Connect();

// Looks a device up by name in the socket's namespace. Not found -> nullptr, Ok.
Result<LinkPtr> FindLink(nl_sock* sock, const std::string& name);

// The ifindex of NAME; an invalid or unknown name is InvalidArgument.
Result<int> IfindexOf(nl_sock* sock, const std::string& name);

// The qdisc attached at PARENT of IFINDEX, or nullptr.
Result<QdiscPtr> QdiscAt(nl_sock* sock, int ifindex, uint32_t parent);

// Deletes the qdisc of KIND at PARENT/HANDLE of IFINDEX. Already gone (device
// deleted, someone else removed it) is Ok: the goal is met. WHAT names it in
// the error.
Status DeleteQdisc(nl_sock* sock, int ifindex, uint32_t parent, uint32_t handle,
                   const char* kind, const std::string& what);

// Deletes the device LINK identifies (by name or ifindex); already gone is Ok.
Status DeleteLink(nl_sock* sock, rtnl_link* link, const std::string& what);

}  // namespace romulus::netbuf::rtnl

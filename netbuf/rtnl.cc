// Compiled only with libnl-route-3 (see rtnl.h).
#ifdef ROMULUS_HAVE_LIBNL

#include "netbuf/rtnl.h"

#include <netlink/errno.h>
#include <netlink/route/tc.h>

#include <cstdlib>

namespace romulus::netbuf::rtnl {

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

Result<QdiscPtr> QdiscAt(nl_sock* sock, int ifindex, uint32_t parent) {
  nl_cache* raw = nullptr;
  int err = rtnl_qdisc_alloc_cache(sock, &raw);
  if (err < 0) return NlError("listing qdiscs", err);
  CachePtr cache(raw);
  return QdiscPtr(rtnl_qdisc_get_by_parent(cache.get(), ifindex, parent));
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
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV || err == -NLE_INVAL) return Status::Ok();
  if (err < 0) return NlError("deleting " + what, err);
  return Status::Ok();
}

Status DeleteLink(nl_sock* sock, rtnl_link* link, const std::string& what) {
  int err = rtnl_link_delete(sock, link);
  if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) return NlError("deleting " + what, err);
  return Status::Ok();
}

}  // namespace romulus::netbuf::rtnl

#endif  // ROMULUS_HAVE_LIBNL

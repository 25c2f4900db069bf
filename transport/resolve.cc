#include "transport/resolve.h"

#include <netdb.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "common/thread_annotations.h"
#include "common/thread_name.h"

namespace romulus::transport::internal {
namespace {

std::atomic<int> g_outstanding{0};

Result<AddrList> GetAddrInfo(const std::string& host, uint16_t port, int flags) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_text = std::to_string(port);
  int gai = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
  if (gai != 0) {
    std::string why = gai == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(gai);
    return Status::IoError("cannot resolve '" + host + "': " + why);
  }
  AddrList out;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    ResolvedAddr a;
    std::memcpy(&a.addr, ai->ai_addr, ai->ai_addrlen);
    a.len = ai->ai_addrlen;
    a.family = ai->ai_family;
    a.socktype = ai->ai_socktype;
    a.protocol = ai->ai_protocol;
    out.push_back(a);
  }
  ::freeaddrinfo(res);
  if (out.empty()) return Status::IoError("no address for '" + host + "'");
  return out;
}

// What the caller and the resolver thread share; whoever leaves last frees it.
struct Lookup {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<AddrList>> answer GUARDED_BY(mu);
};

}  // namespace

Result<AddrList> SystemResolve(const std::string& host, uint16_t port) {
  return GetAddrInfo(host, port, 0);
}

int OutstandingLookups() { return g_outstanding.load(); }

Result<AddrList> ResolveWithin(const std::string& host, uint16_t port,
                               std::chrono::milliseconds timeout, const ResolverFn& resolver) {
  // A numeric address never blocks: no thread, no timeout to hit.
  auto numeric = GetAddrInfo(host, port, AI_NUMERICHOST);
  if (numeric.ok()) return numeric;

  if (g_outstanding.load() >= kMaxAbandonedLookups) {
    return Status::Timeout("resolving '" + host + "': " + std::to_string(kMaxAbandonedLookups) +
                           " earlier lookups are still stuck in the resolver");
  }
  auto lookup = std::make_shared<Lookup>();
  g_outstanding.fetch_add(1);
  try {
    std::thread([lookup, resolver, host, port] {
      NameThisThread("resolver");
      Result<AddrList> r = resolver(host, port);
      {
        std::lock_guard<std::mutex> lock(lookup->mu);
        lookup->answer.emplace(std::move(r));
      }
      lookup->cv.notify_all();
      g_outstanding.fetch_sub(1);
    }).detach();
  } catch (const std::system_error& e) {
    g_outstanding.fetch_sub(1);
    return Status::IoError("resolving '" + host + "': cannot start a resolver thread: " + e.what());
  }
  std::unique_lock<std::mutex> lock(lookup->mu);
  if (!lookup->cv.wait_for(lock, timeout, [&]() REQUIRES(lookup->mu) { return lookup->answer.has_value(); })) {
    return Status::Timeout("resolving '" + host + "' took longer than " +
                           std::to_string(timeout.count()) + " ms (is the DNS resolver reachable?)");
  }
  return std::move(*lookup->answer);
}

}  // namespace romulus::transport::internal

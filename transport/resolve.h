// Internal to transport/: host name resolution with a deadline.
//
// getaddrinfo() has no timeout and a broken resolver can hold it for many
// seconds per attempt; a primary looking for its backup must fail with a
// clear Timeout instead, within its connect timeout. Numeric addresses never
// leave the calling thread; names are resolved on a detached thread whose
// answer is dropped if it comes late.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::transport::internal {

struct ResolvedAddr {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = 0;
  int socktype = 0;
  int protocol = 0;
};
using AddrList = std::vector<ResolvedAddr>;

// A blocking resolver: the system one, or a stand-in from a test.
using ResolverFn = std::function<Result<AddrList>(const std::string& host, uint16_t port)>;

// getaddrinfo (stream sockets, any family). IoError "cannot resolve 'HOST': ...".
Result<AddrList> SystemResolve(const std::string& host, uint16_t port);

// At most this many lookups may be left running after their caller gave up;
// beyond that ResolveWithin fails at once rather than pile up threads stuck
// in a dead resolver.
inline constexpr int kMaxAbandonedLookups = 8;

// Numeric hosts are parsed in place; names go to `resolver` on a detached
// thread. Timeout "resolving 'HOST' took longer than N ms" when it does not
// answer within `timeout`.
Result<AddrList> ResolveWithin(const std::string& host, uint16_t port,
                               std::chrono::milliseconds timeout,
                               const ResolverFn& resolver = SystemResolve);

// Lookups currently running on resolver threads (for tests).
int OutstandingLookups();

}  // namespace romulus::transport::internal

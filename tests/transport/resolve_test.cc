// Name resolution with a deadline (Connect's first step).
#include "transport/resolve.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "test_util.h"

namespace romulus::transport::internal {
namespace {

using namespace std::chrono_literals;

// Waits (bounded) until no lookup thread is left, so tests that count
// threads are not disturbed by ours.
void WaitNoLookups() {
  Deadline until = DeadlineIn(10s);
  while (OutstandingLookups() > 0 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(OutstandingLookups(), 0);
}

ResolverFn MustNotBeCalled() {
  return [](const std::string& host, uint16_t) -> Result<AddrList> {
    ADD_FAILURE() << "resolver called for numeric host " << host;
    return Status::Internal("called");
  };
}

TEST(Resolve, NumericHostsNeverReachTheResolver) {
  auto v4 = ResolveWithin("127.0.0.1", 7000, 1s, MustNotBeCalled());
  ASSERT_TRUE(v4.ok()) << v4.status().ToString();
  ASSERT_FALSE(v4->empty());
  EXPECT_EQ((*v4)[0].family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&(*v4)[0].addr)->sin_port), 7000);
  auto v6 = ResolveWithin("::1", 7000, 1s, MustNotBeCalled());
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ((*v6)[0].family, AF_INET6);
}

TEST(Resolve, NamesGoToTheResolver) {
  auto fake = [](const std::string& host, uint16_t port) -> Result<AddrList> {
    EXPECT_EQ(host, "backup.example");
    return ResolveWithin("10.1.2.3", port, 1s, MustNotBeCalled());
  };
  auto r = ResolveWithin("backup.example", 7000, 5s, fake);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)[0].family, AF_INET);
  WaitNoLookups();
}

TEST(Resolve, ResolverErrorIsReported) {
  auto fails = [](const std::string& host, uint16_t) -> Result<AddrList> {
    return Status::IoError("cannot resolve '" + host + "': Name or service not known");
  };
  auto r = ResolveWithin("nope.example", 7000, 5s, fails);
  EXPECT_EQ(r.status().code(), Code::kIoError);
  EXPECT_NE(r.status().message().find("cannot resolve 'nope.example'"), std::string::npos);
  WaitNoLookups();
}

// A resolver that hangs until released, like getaddrinfo on a dead DNS server.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu);
      open = true;
    }
    cv.notify_all();
  }
};
// The lookup thread shares the gate, so it outlives the test if it must.
ResolverFn Hanging(std::shared_ptr<Gate> gate) {
  return [gate](const std::string&, uint16_t port) -> Result<AddrList> {
    {
      std::unique_lock<std::mutex> lock(gate->mu);
      gate->cv.wait_for(lock, 30s, [&] { return gate->open; });
    }
    return ResolveWithin("10.0.0.1", port, 1s, MustNotBeCalled());
  };
}

TEST(Resolve, SlowResolverTimesOutClearly) {
  auto gate = std::make_shared<Gate>();
  auto t0 = Clock::now();
  auto r = ResolveWithin("slow.example", 7000, 100ms, Hanging(gate));
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_NE(r.status().message().find("resolving 'slow.example' took longer than 100 ms"), std::string::npos)
      << r.status().ToString();
  EXPECT_LT(secs, 20.0);  // bounded, not the resolver's 30 s
  std::printf("[ figures ] hanging resolver abandoned after %.3f s (budget 0.1 s)\n", secs);
  gate->Open();  // the late answer is dropped; the thread ends
  WaitNoLookups();
}

TEST(Resolve, AbandonedLookupsAreBounded) {
  auto gate = std::make_shared<Gate>();
  for (int i = 0; i < kMaxAbandonedLookups; ++i) {
    EXPECT_EQ(ResolveWithin("slow.example", 1, 10ms, Hanging(gate)).status().code(), Code::kTimeout);
  }
  EXPECT_EQ(OutstandingLookups(), kMaxAbandonedLookups);
  auto r = ResolveWithin("slow.example", 1, 10s, Hanging(gate));
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_NE(r.status().message().find("still stuck"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(OutstandingLookups(), kMaxAbandonedLookups);  // no new thread
  gate->Open();
  WaitNoLookups();
  // Numeric hosts never depend on the resolver threads.
  EXPECT_TRUE(ResolveWithin("127.0.0.1", 1, 1s, MustNotBeCalled()).ok());
}

TEST(Resolve, ConnectToAnUnresolvableNameSaysSo) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto c = Connect("no-such-host.invalid", 7000, sec, 20s);
  ASSERT_FALSE(c.ok());
  // The system resolver answers NXDOMAIN quickly here; on a host without
  // a reachable DNS it would be the Timeout instead. Either names the host.
  EXPECT_TRUE(c.status().code() == Code::kIoError || c.status().code() == Code::kTimeout)
      << c.status().ToString();
  EXPECT_NE(c.status().message().find("'no-such-host.invalid'"), std::string::npos) << c.status().ToString();
  WaitNoLookups();
}

}  // namespace
}  // namespace romulus::transport::internal

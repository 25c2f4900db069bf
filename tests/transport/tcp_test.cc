// Plain TCP (--insecure) and fd-pair streams over real sockets.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "test_util.h"
#include "transport/fd_stream.h"

namespace romulus::transport {
namespace {

using namespace std::chrono_literals;

TEST(Tcp, InsecureRoundTrip) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto c = testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.server.ok()) << c.server.status().ToString();
  ASSERT_TRUE(c.client.ok()) << c.client.status().ToString();
  auto& cl = *c.client;
  auto& sv = *c.server;
  EXPECT_NE(cl->Peer().find("tcp 127.0.0.1:"), std::string::npos) << cl->Peer();

  std::vector<uint8_t> msg(1 << 20);
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = uint8_t(i * 13);
  std::thread w([&] { EXPECT_TRUE(cl->WriteAll(msg, DeadlineIn(10s)).ok()); });
  std::vector<uint8_t> got(msg.size());
  ASSERT_TRUE(sv->ReadExact(got, DeadlineIn(10s)).ok());
  w.join();
  EXPECT_EQ(got, msg);

  // Gather write arrives as one contiguous sequence.
  const uint8_t a[] = {1, 2, 3}, b[] = {4, 5};
  const std::span<const uint8_t> parts[] = {a, b};
  ASSERT_TRUE(sv->WriteAllV(parts, DeadlineIn(5s)).ok());
  uint8_t back[5];
  ASSERT_TRUE(cl->ReadExact(back, DeadlineIn(5s)).ok());
  EXPECT_EQ(back[3], 4);
}

TEST(Tcp, ReadTimeoutLeavesStreamUsable) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto c = testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  uint8_t b[4];
  auto r = (*c.server)->ReadSome(b, DeadlineIn(30ms));
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  ASSERT_TRUE((*c.client)->WriteAll(std::span<const uint8_t>(b, 4), DeadlineIn(5s)).ok());
  EXPECT_TRUE((*c.server)->ReadExact(b, DeadlineIn(5s)).ok());
}

TEST(Tcp, WriteTimeoutWhenPeerDoesNotRead) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto c = testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  std::vector<uint8_t> big(64 << 20);  // far more than the socket buffers hold
  Status st = (*c.client)->WriteAll(big, DeadlineIn(300ms));
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
}

TEST(Tcp, PeerCloseGivesClosed) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto c = testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  (*c.client)->Close();
  uint8_t b[4];
  auto r = (*c.server)->ReadSome(b, DeadlineIn(5s));
  EXPECT_EQ(r.status().code(), Code::kClosed);
}

TEST(Tcp, ShutdownWakesBlockedReaderAndWriter) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto c = testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  auto& s = *c.server;
  std::thread reader([&] {
    uint8_t b[4];
    auto r = s->ReadSome(b, DeadlineIn(30s));
    EXPECT_EQ(r.status().code(), Code::kClosed) << r.status().ToString();
  });
  std::thread writer([&] {
    std::vector<uint8_t> big(64 << 20);
    Status st = s->WriteAll(big, DeadlineIn(30s));
    EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
  });
  std::this_thread::sleep_for(50ms);  // let both block (not a correctness bound)
  s->Shutdown();
  reader.join();
  writer.join();
}

TEST(Tcp, AcceptTimeoutAndShutdown) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  auto l = Listener::Bind("127.0.0.1", 0, sec);
  ASSERT_TRUE(l.ok());
  EXPECT_NE((*l)->port(), 0);
  EXPECT_EQ((*l)->Accept(DeadlineIn(30ms)).status().code(), Code::kTimeout);
  std::thread t([&] { (*l)->Shutdown(); });
  EXPECT_EQ((*l)->Accept(DeadlineIn(30s)).status().code(), Code::kClosed);
  t.join();
}

TEST(Tcp, ConnectRefused) {
  auto sec = testing::LoadOrDie(testing::Insecure());
  uint16_t port;
  {
    auto l = Listener::Bind("127.0.0.1", 0, sec);
    ASSERT_TRUE(l.ok());
    port = (*l)->port();
  }  // closed: nothing listens there now
  auto c = Connect("127.0.0.1", port, sec, 5s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kIoError) << c.status().ToString();
}

TEST(FdStream, SocketPairRoundTripAndEof) {
  int sv[2];
  ASSERT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
  auto a = OpenFdStream(sv[0], sv[0], "a", true);
  auto b = OpenFdStream(sv[1], sv[1], "b", true);
  ASSERT_TRUE(a.ok() && b.ok());
  const uint8_t msg[] = {9, 8, 7};
  ASSERT_TRUE((*a)->WriteAll(msg, DeadlineIn(5s)).ok());
  uint8_t got[3];
  ASSERT_TRUE((*b)->ReadExact(got, DeadlineIn(5s)).ok());
  EXPECT_EQ(got[2], 7);
  EXPECT_EQ((*b)->ReadSome(got, DeadlineIn(20ms)).status().code(), Code::kTimeout);
  (*a)->Close();
  EXPECT_EQ((*b)->ReadSome(got, DeadlineIn(5s)).status().code(), Code::kClosed);
}

TEST(FdStream, PipesLikeStdio) {
  int to_child[2], from_child[2];
  ASSERT_EQ(0, ::pipe(to_child));
  ASSERT_EQ(0, ::pipe(from_child));
  // "our" end reads from_child and writes to_child; the "peer" is the reverse.
  auto ours = OpenFdStream(from_child[0], to_child[1], "stdio-test", true);
  auto peer = OpenFdStream(to_child[0], from_child[1], "peer", true);
  ASSERT_TRUE(ours.ok() && peer.ok());
  const uint8_t msg[] = {1, 2, 3, 4};
  ASSERT_TRUE((*ours)->WriteAll(msg, DeadlineIn(5s)).ok());
  uint8_t got[4];
  ASSERT_TRUE((*peer)->ReadExact(got, DeadlineIn(5s)).ok());
  EXPECT_EQ(got[3], 4);
  std::thread t([&] { (*ours)->Shutdown(); });
  EXPECT_EQ((*ours)->ReadSome(got, DeadlineIn(30s)).status().code(), Code::kClosed);
  t.join();
  // Writing into a pipe whose reader is gone: Closed, not SIGPIPE.
  (*ours)->Close();
  Status st;
  std::vector<uint8_t> big(1 << 20);
  st = (*peer)->WriteAll(big, DeadlineIn(5s));
  EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
}

}  // namespace
}  // namespace romulus::transport

// TLS 1.3 over loopback: PSK and certificates, refusals, and the
// one-reader/one-writer concurrency contract under load.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "protocol/frame_io.h"
#include "test_util.h"

namespace romulus::transport {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;
using testing::WriteFile;

const std::string kKeyA = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const std::string kKeyB = "aa1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

class TlsPsk : public ::testing::Test {
 protected:
  void SetUp() override {
    key_a_ = testing::LoadOrDie(testing::PskConfig(WriteFile(dir_.File("a.key"), kKeyA + "\n")));
    key_b_ = testing::LoadOrDie(testing::PskConfig(WriteFile(dir_.File("b.key"), kKeyB + "\n")));
    insecure_ = testing::LoadOrDie(testing::Insecure());
    ASSERT_TRUE(key_a_ && key_b_ && insecure_);
  }
  TempDir dir_;
  std::shared_ptr<SecurityContext> key_a_, key_b_, insecure_;
};

TEST_F(TlsPsk, RoundTrip) {
  auto c = testing::ConnectPair(key_a_, key_a_);
  ASSERT_TRUE(c.server.ok()) << c.server.status().ToString();
  ASSERT_TRUE(c.client.ok()) << c.client.status().ToString();
  auto& cl = *c.client;
  auto& sv = *c.server;
  EXPECT_NE(cl->Peer().find("tls-psk"), std::string::npos);

  std::vector<uint8_t> msg(3 << 20);  // spans many TLS records and encrypt chunks
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = uint8_t(i ^ (i >> 9));
  std::thread w([&] { EXPECT_TRUE(cl->WriteAll(msg, DeadlineIn(20s)).ok()); });
  std::vector<uint8_t> got(msg.size());
  ASSERT_TRUE(sv->ReadExact(got, DeadlineIn(20s)).ok());
  w.join();
  EXPECT_EQ(got, msg);

  const uint8_t reply[] = {'o', 'k'};
  ASSERT_TRUE(sv->WriteAll(reply, DeadlineIn(5s)).ok());
  uint8_t back[2];
  ASSERT_TRUE(cl->ReadExact(back, DeadlineIn(5s)).ok());
  EXPECT_EQ(back[1], 'k');
}

TEST_F(TlsPsk, WrongKeyRefusedOnBothSides) {
  auto c = testing::ConnectPair(key_a_, key_b_);
  ASSERT_FALSE(c.server.ok());
  ASSERT_FALSE(c.client.ok());
  EXPECT_EQ(c.server.status().code(), Code::kUnauthenticated) << c.server.status().ToString();
  EXPECT_EQ(c.client.status().code(), Code::kUnauthenticated) << c.client.status().ToString();
}

TEST_F(TlsPsk, PlaintextClientRefusedByTlsServer) {
  auto listener = Listener::Bind("127.0.0.1", 0, key_a_);
  ASSERT_TRUE(listener.ok());
  auto client = Connect("127.0.0.1", (*listener)->port(), insecure_, 5s);
  ASSERT_TRUE(client.ok());  // plain TCP connects fine...
  // ...and speaks first, like a primary sending HELLO.
  protocol::FrameWriter w(client->get());
  protocol::Hello hello;
  hello.identity = "vm";
  hello.guest_pages = 1;
  (void)w.Send(hello, 0);
  auto st = testing::WaitForStats(**listener, [](const ListenerStats& s) { return s.dropped > 0; });
  ASSERT_EQ(st.dropped, 1u);
  EXPECT_EQ(st.last_drop.code(), Code::kUnauthenticated) << st.last_drop.ToString();
  EXPECT_NE(st.last_drop.message().find("does not speak TLS"), std::string::npos)
      << st.last_drop.ToString();
  // The refused peer never comes out of Accept.
  EXPECT_EQ((*listener)->Accept(DeadlineIn(100ms)).status().code(), Code::kTimeout);
  // The plaintext client sees a refusal, never a HELLO_ACK.
  buffer::ReusableBuffer buf(0, 1 << 20);
  protocol::FrameReader r(client->get(), &buf);
  auto f = r.Next(DeadlineIn(10s));
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.status().code() == Code::kUnauthenticated || f.status().code() == Code::kClosed)
      << f.status().ToString();
}

TEST_F(TlsPsk, TlsClientAgainstPlaintextServerIsNamed) {
  auto listener = Listener::Bind("127.0.0.1", 0, insecure_);
  ASSERT_TRUE(listener.ok());
  auto client = std::async(std::launch::async, [&] {
    return Connect("127.0.0.1", (*listener)->port(), key_a_, 5s);
  });
  auto server = (*listener)->Accept(DeadlineIn(10s));
  ASSERT_TRUE(server.ok());
  buffer::ReusableBuffer buf(0, 1 << 20);
  protocol::FrameReader r(server->get(), &buf);
  auto f = r.Next(DeadlineIn(10s));
  EXPECT_EQ(f.status().code(), Code::kUnauthenticated) << f.status().ToString();
  (*server)->Close();
  auto c = client.get();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kUnauthenticated) << c.status().ToString();
}

TEST_F(TlsPsk, SilentPeerHitsHandshakeTimeout) {
  ListenerOptions opts;
  opts.handshake_timeout = 200ms;
  auto listener = Listener::Bind("127.0.0.1", 0, key_a_, opts);
  ASSERT_TRUE(listener.ok());
  // A raw TCP connection that never says anything.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((*listener)->port());
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(0, ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa));
  timeval tv{10, 0};  // bounds the recv below should the listener never close it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto st = testing::WaitForStats(**listener, [](const ListenerStats& s) { return s.dropped > 0 && s.pending == 0; });
  EXPECT_EQ(st.dropped, 1u);
  EXPECT_EQ(st.last_drop.code(), Code::kTimeout) << st.last_drop.ToString();
  EXPECT_EQ(st.pending, 0u);
  // The listener closed it: the peer sees EOF.
  char b;
  EXPECT_EQ(::recv(fd, &b, 1, 0), 0);
  ::close(fd);
  EXPECT_EQ((*listener)->Accept(DeadlineIn(50ms)).status().code(), Code::kTimeout);
}

TEST_F(TlsPsk, TimeoutAndPeerClose) {
  auto c = testing::ConnectPair(key_a_, key_a_);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  uint8_t b[8];
  EXPECT_EQ((*c.server)->ReadSome(b, DeadlineIn(30ms)).status().code(), Code::kTimeout);
  // Clean close (close_notify) ...
  (*c.client)->Shutdown();
  EXPECT_EQ((*c.server)->ReadSome(b, DeadlineIn(5s)).status().code(), Code::kClosed);

  // ... and an abrupt one (no close_notify).
  auto d = testing::ConnectPair(key_a_, key_a_);
  ASSERT_TRUE(d.server.ok() && d.client.ok());
  (*d.client)->Close();
  auto r = (*d.server)->ReadSome(b, DeadlineIn(5s));
  EXPECT_EQ(r.status().code(), Code::kClosed) << r.status().ToString();
}

TEST_F(TlsPsk, ShutdownWakesBlockedReader) {
  auto c = testing::ConnectPair(key_a_, key_a_);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  auto& s = *c.server;
  std::thread reader([&] {
    uint8_t b[4];
    EXPECT_EQ(s->ReadSome(b, DeadlineIn(30s)).status().code(), Code::kClosed);
  });
  std::this_thread::sleep_for(20ms);
  s->Shutdown();
  reader.join();
}

// The contract the engine relies on: one thread reads frames while another
// writes them, on each end, in both directions at once, with a third thread
// (heartbeats) also writing through the same FrameWriter.
TEST_F(TlsPsk, ConcurrentReaderAndWritersBothDirections) {
  auto c = testing::ConnectPair(key_a_, key_a_);
  ASSERT_TRUE(c.server.ok() && c.client.ok());
  constexpr int kFrames = 300;
  auto payload = [](int i, int side) {
    std::vector<uint8_t> v(1000 + (i * 7919) % 200000);
    for (size_t k = 0; k < v.size(); ++k) v[k] = uint8_t(k * 3 + i + side * 101);
    return v;
  };
  auto run_side = [&](Stream* s, int side) {
    protocol::FrameWriter w(s, 30s);
    std::atomic<bool> stop{false};
    std::thread beats([&] {
      uint64_t n = 0;
      while (!stop.load()) {
        if (!w.Send(protocol::Heartbeat{n++, 0, 0}, 0).ok()) return;
        std::this_thread::sleep_for(1ms);
      }
    });
    std::thread writer([&] {
      for (int i = 0; i < kFrames; ++i) {
        ASSERT_TRUE(w.Write(protocol::FrameType::kPages, i, payload(i, side)).ok());
      }
    });
    buffer::ReusableBuffer buf(0, 1 << 20);
    protocol::FrameReader r(s, &buf);
    int pages = 0;
    while (pages < kFrames) {
      auto f = r.Next(DeadlineIn(60s));
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      if (f->type() != protocol::FrameType::kPages) continue;
      auto want = payload(pages, 1 - side);
      ASSERT_EQ(f->epoch(), uint64_t(pages));
      ASSERT_TRUE(std::equal(want.begin(), want.end(), f->payload.begin(), f->payload.end()));
      ++pages;
    }
    writer.join();
    stop = true;
    beats.join();
  };
  std::thread a([&] { run_side(c.client->get(), 0); });
  std::thread b([&] { run_side(c.server->get(), 1); });
  a.join();
  b.join();
}

class TlsCert : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::MakeCa(dir_, "one") || !testing::MakeCa(dir_, "two")) {
      GTEST_SKIP() << "openssl CLI unavailable: cannot make a test CA";
    }
  }
  TempDir dir_;
};

TEST_F(TlsCert, MutualAuthenticationRoundTrip) {
  auto sec = testing::LoadOrDie(testing::CertConfig(dir_, "one", "one"));
  ASSERT_TRUE(sec);
  auto c = testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.server.ok()) << c.server.status().ToString();
  ASSERT_TRUE(c.client.ok()) << c.client.status().ToString();
  EXPECT_NE((*c.client)->Peer().find("tls-cert"), std::string::npos);
  const uint8_t msg[] = {1, 2, 3};
  ASSERT_TRUE((*c.client)->WriteAll(msg, DeadlineIn(5s)).ok());
  uint8_t got[3];
  ASSERT_TRUE((*c.server)->ReadExact(got, DeadlineIn(5s)).ok());
  EXPECT_EQ(got[2], 3);
}

TEST_F(TlsCert, PeerNameIsChecked) {
  Security good = testing::CertConfig(dir_, "one", "one");
  good.peer_name = "127.0.0.1";
  Security bad = good;
  bad.peer_name = "backup.example";
  auto server = testing::LoadOrDie(testing::CertConfig(dir_, "one", "one"));
  auto ok = testing::ConnectPair(server, testing::LoadOrDie(good));
  EXPECT_TRUE(ok.client.ok()) << ok.client.status().ToString();
  auto no = testing::ConnectPair(server, testing::LoadOrDie(bad));
  EXPECT_EQ(no.client.status().code(), Code::kUnauthenticated);
}

TEST_F(TlsCert, CertificateFromAnotherCaRefused) {
  auto server = testing::LoadOrDie(testing::CertConfig(dir_, "one", "one"));
  // Client has a valid chain, but from CA "two", which the server doesn't trust
  // (and it does trust "one", so it accepts the server).
  Security cs = testing::CertConfig(dir_, "two", "one");
  auto client = testing::LoadOrDie(cs);
  ASSERT_TRUE(server && client);
  auto c = testing::ConnectPair(server, client);
  ASSERT_FALSE(c.server.ok());
  EXPECT_EQ(c.server.status().code(), Code::kUnauthenticated) << c.server.status().ToString();
  // TLS 1.3: the client may finish its side before the server's verdict;
  // it learns of the refusal on its first read at the latest.
  if (c.client.ok()) {
    uint8_t b[1];
    auto r = (*c.client)->ReadSome(b, DeadlineIn(5s));
    EXPECT_FALSE(r.ok());
  } else {
    EXPECT_EQ(c.client.status().code(), Code::kUnauthenticated);
  }
}

TEST_F(TlsCert, PrivateKeyOwnedByAnotherUserIsRefused) {
  Security s = testing::CertConfig(dir_, "one", "one");
  if (::chown(s.key_file.c_str(), 65534, static_cast<gid_t>(-1)) != 0) {
    GTEST_SKIP() << "cannot chown (not root)";
  }
  auto ctx = SecurityContext::Load(s);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), Code::kInvalidArgument);
  EXPECT_NE(ctx.status().message().find("private key file '" + s.key_file + "' is owned by uid 65534, expected uid " +
                                        std::to_string(::geteuid())),
            std::string::npos)
      << ctx.status().ToString();
}

TEST_F(TlsCert, PskClientCannotTalkToCertServer) {
  auto server = testing::LoadOrDie(testing::CertConfig(dir_, "one", "one"));
  auto client = testing::LoadOrDie(testing::PskConfig(WriteFile(dir_.File("k"), kKeyA + "\n")));
  auto c = testing::ConnectPair(server, client);
  EXPECT_FALSE(c.server.ok());
  EXPECT_EQ(c.client.status().code(), Code::kUnauthenticated) << c.client.status().ToString();
}

}  // namespace
}  // namespace romulus::transport

// NbdServer against a raw socket speaking bytes written by hand: what a
// well-behaved client library will not send — malformed handshakes, silent
// and vanishing clients, hostile lengths, unknown options and commands.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <thread>

#include "disk/nbd_server.h"
#include "tests/disk/disk_test_util.h"

namespace romulus::disk {
namespace {

using namespace std::chrono_literals;
using testing::GetBE;
using testing::Pattern;
using testing::PutBE;
using testing::RawClient;
using testing::ReadFile;
using testing::RecordingSink;
using testing::TempDir;
using testing::WriteFile;

constexpr uint64_t kDiskSize = 1u << 20;
constexpr uint32_t kMaxRequest = 256 * 1024;
constexpr uint32_t kFixed = 1, kNoZeroes = 2;
constexpr uint16_t kRead = 0, kWrite = 1, kDisc = 2, kFlush = 3;

class NbdRawTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/disk.img";
    model_ = Pattern(kDiskSize, 7);
    WriteFile(path_, model_);
    BackingStoreOptions so;
    so.max_request = kMaxRequest;
    store_ = std::move(*BackingStore::Open(path_, so));
    NbdServerOptions no;
    no.export_name = "d";
    no.handshake_timeout = 300ms;  // a deadline the server enforces, not a pass criterion
    no.payload_timeout = 300ms;
    no.max_options = 8;
    server_ = std::move(*NbdServer::Create(store_.get(), &clock_, &sink_, no));
    int sv[2];
    ASSERT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    client_ = std::make_unique<RawClient>(sv[1]);
    thread_ = std::thread([this, fd = sv[0]] { status_ = server_->Serve(fd); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      server_->Stop();
      thread_.join();
    }
  }
  Status Join() {
    thread_.join();
    return status_;
  }
  // Handshake by EXPORT_NAME with NO_ZEROES.
  void Connect() {
    client_->Greet(kFixed | kNoZeroes);
    uint64_t size = 0;
    uint16_t flags = 0;
    client_->ExportName("d", &size, &flags);
    ASSERT_EQ(size, kDiskSize);
    ASSERT_EQ(flags & 1, 1);
  }
  // Nothing was written to the file and nothing reported.
  void ExpectUntouched() {
    EXPECT_TRUE(sink_.events().empty());
    EXPECT_EQ(ReadFile(path_), model_);
    EXPECT_EQ(clock_.in_flight(), 0u);
  }

  TempDir dir_;
  std::string path_;
  std::vector<uint8_t> model_;
  EpochCounter clock_{1};
  RecordingSink sink_;
  std::unique_ptr<BackingStore> store_;
  std::unique_ptr<NbdServer> server_;
  std::unique_ptr<RawClient> client_;
  std::thread thread_;
  Status status_;
};

TEST_F(NbdRawTest, UnknownClientFlagsDropTheConnection) {
  client_->Greet(0x10);
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("client flags"), std::string::npos) << st.message();
  EXPECT_TRUE(client_->AtEof());
}

TEST_F(NbdRawTest, BadOptionMagicDropsTheConnection) {
  client_->Greet(kFixed);
  std::vector<uint8_t> junk;
  PutBE(&junk, 0x4142434445464748ull, 8);  // not IHAVEOPT
  PutBE(&junk, 7, 4);
  PutBE(&junk, 0, 4);
  ASSERT_TRUE(client_->Send(junk));
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("IHAVEOPT"), std::string::npos);
}

TEST_F(NbdRawTest, HugeOptionLengthIsRefusedUnread) {
  client_->Greet(kFixed);
  std::vector<uint8_t> o;
  PutBE(&o, 0x49484156454F5054ull, 8);
  PutBE(&o, 7, 4);
  PutBE(&o, 0xfffffff0u, 4);  // 4 GiB of "data" announced, none sent
  ASSERT_TRUE(client_->Send(o));
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kOutOfRange) << st.ToString();
  EXPECT_NE(st.message().find("4294967280"), std::string::npos) << st.message();
}

TEST_F(NbdRawTest, SilentClientTimesOut) {
  // Connects, reads the greeting, sends nothing.
  EXPECT_EQ(client_->Recv(18).size(), 18u);
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  EXPECT_TRUE(client_->AtEof());
  ExpectUntouched();
}

TEST_F(NbdRawTest, ClientSilentAfterItsFlagsTimesOut) {
  client_->Greet(kFixed);
  std::vector<uint8_t> half = {0x49, 0x48, 0x41};  // three bytes of an option header
  ASSERT_TRUE(client_->Send(half));
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
}

TEST_F(NbdRawTest, TooManyOptionsDropTheConnection) {
  client_->Greet(kFixed);
  for (int i = 0; i < 8; ++i) {
    client_->SendOption(3, {});  // LIST, answered every time
    auto r = client_->RecvOptionReply();
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.type, 2u);  // NBD_REP_SERVER
    ASSERT_EQ(client_->RecvOptionReply().type, 1u);  // ACK
  }
  // The ninth is never read: the server drops the connection first (so
  // this send may well fail).
  std::vector<uint8_t> ninth;
  PutBE(&ninth, 0x49484156454F5054ull, 8);
  PutBE(&ninth, 3, 4);
  PutBE(&ninth, 0, 4);
  (void)client_->Send(ninth);
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kOutOfRange) << st.ToString();
  EXPECT_TRUE(client_->AtEof());
}

TEST_F(NbdRawTest, UnsupportedAndInvalidOptionsGetErrorRepliesThenGoWorks) {
  client_->Greet(kFixed | kNoZeroes);
  for (uint32_t opt : {5u /*STARTTLS*/, 8u /*STRUCTURED_REPLY*/, 10u, 99u}) {
    client_->SendOption(opt, {});
    auto r = client_->RecvOptionReply();
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.option, opt);
    EXPECT_EQ(r.type, 0x80000001u) << opt;  // NBD_REP_ERR_UNSUP
  }
  client_->SendOption(3, {1, 2});  // LIST with data
  EXPECT_EQ(client_->RecvOptionReply().type, 0x80000003u);  // ERR_INVALID
  // INFO whose count does not match its data.
  std::vector<uint8_t> bad;
  PutBE(&bad, 1, 4);
  bad.push_back('d');
  PutBE(&bad, 5, 2);
  client_->SendOption(6, bad);
  EXPECT_EQ(client_->RecvOptionReply().type, 0x80000003u);
  // GO for a name this server does not have.
  std::vector<uint8_t> other;
  PutBE(&other, 1, 4);
  other.push_back('x');
  PutBE(&other, 0, 2);
  client_->SendOption(7, other);
  auto unknown = client_->RecvOptionReply();
  EXPECT_EQ(unknown.type, 0x80000006u);  // ERR_UNKNOWN
  EXPECT_NE(std::string(unknown.data.begin(), unknown.data.end()).find("'x'"), std::string::npos);
  // GO for "d" with no info requests: INFO_EXPORT then ACK, transmission.
  std::vector<uint8_t> good;
  PutBE(&good, 1, 4);
  good.push_back('d');
  PutBE(&good, 0, 2);
  client_->SendOption(7, good);
  auto info = client_->RecvOptionReply();
  ASSERT_EQ(info.type, 3u);
  ASSERT_EQ(info.data.size(), 12u);
  EXPECT_EQ(GetBE(info.data.data(), 2), 0u);
  EXPECT_EQ(GetBE(info.data.data() + 2, 8), kDiskSize);
  EXPECT_EQ(client_->RecvOptionReply().type, 1u);
  client_->SendRequest(0, kRead, 5, 0, 16);
  EXPECT_EQ(client_->RecvReply(5), 0u);
  auto data = client_->Recv(16);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), model_.begin()));
  client_->SendRequest(0, kDisc, 6, 0, 0);
  EXPECT_TRUE(Join().ok()) << status_.ToString();
}

TEST_F(NbdRawTest, ExportNameWithoutNoZeroesSendsThe124Zeroes) {
  client_->Greet(kFixed);
  client_->SendOption(1, {'d'});
  auto r = client_->Recv(134);
  ASSERT_EQ(r.size(), 134u);
  EXPECT_EQ(GetBE(r.data(), 8), kDiskSize);
  for (size_t i = 10; i < 134; ++i) ASSERT_EQ(r[i], 0);
  client_->SendRequest(0, kFlush, 1, 0, 0);
  EXPECT_EQ(client_->RecvReply(1), 0u);
  client_->Close();  // a close between requests is a clean end
  EXPECT_TRUE(Join().ok()) << status_.ToString();
}

TEST_F(NbdRawTest, ExportNameForAnotherExportDrops) {
  client_->Greet(kFixed);
  client_->SendOption(1, {'z', 'z'});
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_TRUE(client_->AtEof());
}

TEST_F(NbdRawTest, ClientVanishingInAWritePayloadWritesAndReportsNothing) {
  Connect();
  client_->SendRequest(0, kWrite, 9, 4096, 65536, Pattern(1000, 1));  // 1000 of 65536 bytes
  client_->Close();
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
  EXPECT_NE(st.message().find("1000 of 65536"), std::string::npos) << st.message();
  ExpectUntouched();
}

TEST_F(NbdRawTest, ClientStallingInAWritePayloadTimesOut) {
  Connect();
  client_->SendRequest(0, kWrite, 9, 0, 4096, Pattern(10, 1));
  Status st = Join();  // the client is still connected, just silent
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  ExpectUntouched();
}

TEST_F(NbdRawTest, ClientVanishingInARequestHeader) {
  Connect();
  std::vector<uint8_t> part;
  PutBE(&part, 0x25609513, 4);
  PutBE(&part, 0, 6);
  ASSERT_TRUE(client_->Send(part));
  client_->Close();
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
  EXPECT_NE(st.message().find("10 of 28"), std::string::npos) << st.message();
}

TEST_F(NbdRawTest, ClientStallingInARequestHeaderTimesOut) {
  Connect();
  std::vector<uint8_t> part;
  PutBE(&part, 0x25609513, 4);
  PutBE(&part, 0, 6);
  ASSERT_TRUE(client_->Send(part));
  Status st = Join();  // connected, 10 of 28 bytes sent, then silent
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  EXPECT_NE(st.message().find("10 of 28"), std::string::npos) << st.message();
  ExpectUntouched();
}

TEST_F(NbdRawTest, AClientIdleLongerThanThePayloadTimeoutIsKept) {
  Connect();
  // Idle between requests is not a stall: the server's read times out with
  // nothing read and it waits again. Three payload timeouts of silence.
  std::this_thread::sleep_for(3 * 300ms);
  auto data = Pattern(100, 8);
  client_->SendRequest(0, kWrite, 21, 300, 100, data);
  EXPECT_EQ(client_->RecvReply(21), 0u);
  client_->SendRequest(0, kDisc, 22, 0, 0);
  EXPECT_TRUE(Join().ok()) << status_.ToString();
  std::copy(data.begin(), data.end(), model_.begin() + 300);
  EXPECT_EQ(ReadFile(path_), model_);
}

TEST_F(NbdRawTest, AWritePayloadArrivingPageByPageLandsWhole) {
  Connect();
  // As Linux's nbd.ko sends it: the header, then one send per 4 KiB page,
  // with a pause in the middle so the server's read waits across arrivals.
  auto data = Pattern(kMaxRequest, 9);
  std::vector<uint8_t> hdr;
  PutBE(&hdr, 0x25609513, 4);
  PutBE(&hdr, 0, 2);
  PutBE(&hdr, kWrite, 2);
  PutBE(&hdr, 23, 8);
  PutBE(&hdr, 4096, 8);
  PutBE(&hdr, kMaxRequest, 4);
  ASSERT_TRUE(client_->Send(hdr));
  for (size_t off = 0; off < data.size(); off += 4096) {
    if (off == data.size() / 2) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(client_->Send(std::vector<uint8_t>(data.begin() + off, data.begin() + off + 4096)));
  }
  EXPECT_EQ(client_->RecvReply(23), 0u);
  client_->SendRequest(0, kDisc, 24, 0, 0);
  EXPECT_TRUE(Join().ok()) << status_.ToString();
  ASSERT_EQ(sink_.events().size(), 1u);
  std::copy(data.begin(), data.end(), model_.begin() + 4096);
  EXPECT_EQ(ReadFile(path_), model_);
}

TEST_F(NbdRawTest, BadRequestMagicDrops) {
  Connect();
  std::vector<uint8_t> q(28, 0);
  q[0] = 0x25;
  q[1] = 0x60;
  q[2] = 0x95;
  q[3] = 0x14;
  ASSERT_TRUE(client_->Send(q));
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  ExpectUntouched();
}

TEST_F(NbdRawTest, OversizeWritePayloadIsDiscardedAndTheStreamStaysInStep) {
  Connect();
  auto payload = Pattern(kMaxRequest + 1, 3);
  std::thread sender([&] { client_->SendRequest(0, kWrite, 11, 0, kMaxRequest + 1, payload); });
  EXPECT_EQ(client_->RecvReply(11), 22u);  // EINVAL, after the payload was read and dropped
  sender.join();
  // Beyond the end, with its payload: ENOSPC, also discarded.
  client_->SendRequest(0, kWrite, 12, kDiskSize - 10, 20, Pattern(20, 4));
  EXPECT_EQ(client_->RecvReply(12), 28u);
  // Unknown command and a bad flag: EINVAL, no payload assumed.
  client_->SendRequest(0, 9, 13, 0, 0);
  EXPECT_EQ(client_->RecvReply(13), 22u);
  client_->SendRequest(0x8000, kRead, 14, 0, 1);
  EXPECT_EQ(client_->RecvReply(14), 22u);
  // Still in step: a real write lands.
  auto good = Pattern(100, 5);
  client_->SendRequest(0, kWrite, 15, 200, 100, good);
  EXPECT_EQ(client_->RecvReply(15), 0u);
  client_->SendRequest(0, kDisc, 16, 0, 0);
  EXPECT_TRUE(Join().ok()) << status_.ToString();
  ASSERT_EQ(sink_.events().size(), 1u);
  std::copy(good.begin(), good.end(), model_.begin() + 200);
  EXPECT_EQ(ReadFile(path_), model_);
}

TEST_F(NbdRawTest, ARefusedPayloadTrickledChunkByChunkIsDroppedAfterThePayloadTimeout) {
  Connect();
  // A refused WRITE (too long) whose payload arrives 64 KiB at a time, each
  // chunk well inside the socket's read timeout: the discard as a whole is
  // bounded by one payload_timeout (it holds the request's tag and lock).
  client_->SendRequest(0, kWrite, 18, 0, kMaxRequest * 8);
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    const std::vector<uint8_t> chunk(64 * 1024, 0x5a);
    while (!stop.load() && client_->Send(chunk)) std::this_thread::sleep_for(100ms);
  });
  Status st = Join();
  stop.store(true);
  client_->Close();  // ends the trickler's next send
  trickle.join();
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  EXPECT_NE(st.message().find("refused WRITE"), std::string::npos) << st.message();
  ExpectUntouched();
}

TEST_F(NbdRawTest, HostileWriteLengthIsNeverAllocated) {
  Connect();
  // 4 GiB announced; the server reads it in bounded chunks to stay in step
  // and gives up when the client goes away.
  client_->SendRequest(0, kWrite, 17, 0, 0xffffffffu, Pattern(100000, 6));
  client_->Close();
  Status st = Join();
  EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
  EXPECT_NE(st.message().find("refused WRITE"), std::string::npos) << st.message();
  ExpectUntouched();
}

TEST_F(NbdRawTest, ZeroLengthRequestsDoNothing) {
  Connect();
  client_->SendRequest(0, kWrite, 1, 0, 0);
  EXPECT_EQ(client_->RecvReply(1), 0u);
  client_->SendRequest(0, 4 /*TRIM*/, 2, 0, 0);
  EXPECT_EQ(client_->RecvReply(2), 0u);
  client_->SendRequest(0, kRead, 3, kDiskSize, 0);
  EXPECT_EQ(client_->RecvReply(3), 0u);
  client_->SendRequest(0, kDisc, 4, 0, 0);
  EXPECT_TRUE(Join().ok());
  ExpectUntouched();
}

}  // namespace
}  // namespace romulus::disk

namespace romulus::disk {
namespace {

TEST_F(NbdRawTest, ASecondConcurrentServeIsRefused) {
  EXPECT_EQ(client_->Recv(18).size(), 18u);  // the first Serve is in its handshake
  int sv[2];
  ASSERT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  Status st = server_->Serve(sv[0]);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  RawClient other(sv[1]);
  EXPECT_TRUE(other.AtEof());  // its fd was closed, nothing sent
  client_->Close();
  EXPECT_EQ(Join().code(), Code::kClosed);
}

}  // namespace
}  // namespace romulus::disk

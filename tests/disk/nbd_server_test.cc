// NbdServer driven by libnbd (Debian's NBD client library) over a
// socketpair: data path, flags, refusals, and what the DiskWriteSink sees,
// with which epoch tags.
#include "disk/nbd_server.h"

#include <gtest/gtest.h>
#include <libnbd.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "tests/disk/disk_test_util.h"

namespace romulus::disk {
namespace {

using testing::Latch;
using testing::Pattern;
using testing::ReadFile;
using testing::RecordingSink;
using testing::SinkEvent;
using testing::TempDir;
using testing::WriteFile;

constexpr uint64_t kDiskSize = 4u << 20;
constexpr uint32_t kMaxRequest = 1u << 20;

// One export over a file, one server thread, one libnbd handle.
class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(BackingStoreOptions{}, NbdServerOptions{}); }

  void Start(BackingStoreOptions so, NbdServerOptions no, bool connect = true) {
    path_ = dir_.path() + "/disk.img";
    model_ = Pattern(kDiskSize, 99);
    WriteFile(path_, model_);
    so.max_request = kMaxRequest;
    auto store = BackingStore::Open(path_, so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    auto server = NbdServer::Create(store_.get(), &clock_, &sink_, no);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    int sv[2];
    ASSERT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    client_fd_ = sv[1];
    thread_ = std::thread([this, fd = sv[0]] { serve_status_ = server_->Serve(fd); });
    h_ = nbd_create();
    ASSERT_NE(h_, nullptr);
    if (connect) {
      ASSERT_EQ(nbd_connect_socket(h_, client_fd_), 0) << nbd_get_error();
    }
  }

  // Ends the client (DISC) and returns what Serve returned.
  Status Finish() {
    if (h_) {
      (void)nbd_shutdown(h_, 0);
      nbd_close(h_);  // closes the socket
      h_ = nullptr;
    }
    if (thread_.joinable()) thread_.join();
    return serve_status_;
  }

  void TearDown() override {
    if (h_ || thread_.joinable()) {
      if (server_) server_->Stop();
      (void)Finish();
    }
  }

  void Write(uint64_t off, const std::vector<uint8_t>& data, uint32_t flags = 0) {
    ASSERT_EQ(nbd_pwrite(h_, data.data(), data.size(), off, flags), 0) << nbd_get_error();
    std::copy(data.begin(), data.end(), model_.begin() + off);
  }
  std::vector<uint8_t> Read(uint64_t off, size_t len) {
    std::vector<uint8_t> buf(len);
    EXPECT_EQ(nbd_pread(h_, buf.data(), len, off, 0), 0) << nbd_get_error();
    return buf;
  }
  bool Equals(uint64_t off, const std::vector<uint8_t>& got) {
    return std::equal(got.begin(), got.end(), model_.begin() + off);
  }

  TempDir dir_;
  std::string path_;
  std::vector<uint8_t> model_;
  EpochCounter clock_{1};
  RecordingSink sink_;
  std::unique_ptr<BackingStore> store_;
  std::unique_ptr<NbdServer> server_;
  std::thread thread_;
  Status serve_status_;
  int client_fd_ = -1;
  nbd_handle* h_ = nullptr;
};

TEST_F(NbdServerTest, ExportSizeAndFlags) {
  EXPECT_EQ(nbd_get_size(h_), static_cast<int64_t>(kDiskSize));
  EXPECT_EQ(nbd_is_read_only(h_), 0);
  EXPECT_EQ(nbd_can_flush(h_), 1);
  EXPECT_EQ(nbd_can_fua(h_), 1);
  EXPECT_EQ(nbd_can_trim(h_), 1);
  EXPECT_EQ(nbd_can_zero(h_), 1);
  EXPECT_EQ(nbd_can_multi_conn(h_), 0);  // one client, one connection
  EXPECT_EQ(nbd_can_cache(h_), 0);
  EXPECT_EQ(nbd_can_df(h_), 0);          // simple replies only
  // libnbd asks for the block size in NBD_OPT_GO; the server's answer:
  EXPECT_EQ(nbd_get_block_size(h_, LIBNBD_SIZE_MINIMUM), 1);
  EXPECT_EQ(nbd_get_block_size(h_, LIBNBD_SIZE_PREFERRED), 4096);
  EXPECT_EQ(nbd_get_block_size(h_, LIBNBD_SIZE_MAXIMUM), static_cast<int64_t>(kMaxRequest));
  EXPECT_TRUE(Finish().ok()) << serve_status_.ToString();
}

TEST_F(NbdServerTest, ReadAfterWriteAlignedAndNot) {
  EXPECT_TRUE(Equals(0, Read(0, 65536)));  // what the file held
  Write(4096, Pattern(8192, 1));
  Write(12345, Pattern(1000, 2));
  Write(kDiskSize - 3, Pattern(3, 3));
  Write(100000, Pattern(kMaxRequest, 4));  // the largest request allowed
  EXPECT_TRUE(Equals(0, Read(0, kMaxRequest)));
  EXPECT_TRUE(Equals(kDiskSize - kMaxRequest, Read(kDiskSize - kMaxRequest, kMaxRequest)));
  EXPECT_TRUE(Finish().ok()) << serve_status_.ToString();
  EXPECT_EQ(ReadFile(path_), model_);
  auto st = server_->stats();
  EXPECT_EQ(st.writes, 4u);
  EXPECT_EQ(st.bytes_written, 8192u + 1000 + 3 + kMaxRequest);
}

TEST_F(NbdServerTest, SinkSeesEveryMutationWithItsEpoch) {
  auto a = Pattern(4096, 10), b = Pattern(777, 11), c = Pattern(5000, 12);
  Write(0, a);                                   // epoch 1
  (void)Read(0, 4096);                           // reads are not reported
  EXPECT_EQ(clock_.Advance(), 1u);
  Write(8192, b, LIBNBD_CMD_FLAG_FUA);           // epoch 2, FUA
  ASSERT_EQ(nbd_flush(h_, 0), 0);                // epoch 2
  EXPECT_EQ(clock_.Advance(), 2u);
  EXPECT_EQ(clock_.Advance(), 3u);               // an epoch with no writes
  // libnbd's order is (count, offset).
  ASSERT_EQ(nbd_zero(h_, 65536, 1 << 20, LIBNBD_CMD_FLAG_NO_HOLE), 0);  // epoch 4
  ASSERT_EQ(nbd_trim(h_, 4096, 2 << 20, 0), 0);  // epoch 4
  Write(3 << 20, c);                             // epoch 4
  EXPECT_TRUE(Finish().ok());

  auto ev = sink_.events();
  ASSERT_EQ(ev.size(), 6u);
  EXPECT_EQ(ev[0].kind, SinkEvent::kWrite);
  EXPECT_EQ(ev[0].epoch, 1u);
  EXPECT_EQ(ev[0].offset, 0u);
  EXPECT_EQ(ev[0].data, a);
  EXPECT_FALSE(ev[0].fua);
  EXPECT_EQ(ev[1].kind, SinkEvent::kWrite);
  EXPECT_EQ(ev[1].epoch, 2u);
  EXPECT_EQ(ev[1].offset, 8192u);
  EXPECT_EQ(ev[1].data, b);
  EXPECT_TRUE(ev[1].fua);
  EXPECT_EQ(ev[2].kind, SinkEvent::kFlush);
  EXPECT_EQ(ev[2].epoch, 2u);
  EXPECT_EQ(ev[3].kind, SinkEvent::kZero);
  EXPECT_EQ(ev[3].epoch, 4u);
  EXPECT_EQ(ev[3].offset, 1u << 20);
  EXPECT_EQ(ev[3].length, 65536u);
  EXPECT_FALSE(ev[3].trim);
  EXPECT_EQ(ev[4].kind, SinkEvent::kZero);  // the file system punched the hole
  EXPECT_EQ(ev[4].epoch, 4u);
  EXPECT_EQ(ev[4].offset, 2u << 20);
  EXPECT_EQ(ev[4].length, 4096u);
  EXPECT_TRUE(ev[4].trim);
  EXPECT_EQ(ev[5].epoch, 4u);
  EXPECT_EQ(ev[5].data, c);
  EXPECT_EQ(clock_.in_flight(), 0u);
}

TEST_F(NbdServerTest, TrimAndZeroesReadBackAsZeroes) {
  Write(0, Pattern(1 << 20, 20));
  ASSERT_EQ(nbd_trim(h_, 65536, 131072, 0), 0);
  ASSERT_EQ(nbd_zero(h_, 1000, 300000, 0), 0);                    // may punch
  ASSERT_EQ(nbd_zero(h_, 3000, 700001, LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA), 0);
  ASSERT_EQ(nbd_trim(h_, 8192, 2 << 20, LIBNBD_CMD_FLAG_FUA), 0);
  std::fill(model_.begin() + 131072, model_.begin() + 131072 + 65536, 0);
  std::fill(model_.begin() + 300000, model_.begin() + 301000, 0);
  std::fill(model_.begin() + 700001, model_.begin() + 703001, 0);
  std::fill(model_.begin() + (2 << 20), model_.begin() + (2 << 20) + 8192, 0);
  EXPECT_TRUE(Equals(0, Read(0, kMaxRequest)));
  EXPECT_TRUE(Equals(2 << 20, Read(2 << 20, 65536)));
  EXPECT_TRUE(Finish().ok());
  EXPECT_EQ(ReadFile(path_), model_);
  // Every zeroing was reported, each trim as a trim.
  int trims = 0, zeroes = 0;
  for (const auto& e : sink_.events()) {
    if (e.kind == SinkEvent::kZero) (e.trim ? trims : zeroes)++;
  }
  EXPECT_EQ(trims, 2);
  EXPECT_EQ(zeroes, 2);
}

TEST_F(NbdServerTest, RefusedRequestsChangeNothingAndReportNothing) {
  // libnbd would refuse these itself; the server must too.
  ASSERT_EQ(nbd_set_strict_mode(h_, 0), 0);
  auto before = ReadFile(path_);
  auto big = Pattern(kMaxRequest + 4096, 30);
  EXPECT_EQ(nbd_pwrite(h_, big.data(), big.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_pwrite(h_, big.data(), 8192, kDiskSize - 4096, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ENOSPC);  // the NBD spec's answer to a write beyond the end
  std::vector<uint8_t> buf(8192);
  EXPECT_EQ(nbd_pread(h_, buf.data(), 8192, kDiskSize - 4096, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_pread(h_, big.data(), big.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_trim(h_, 8192, kDiskSize - 4096, 0), -1);
  EXPECT_EQ(nbd_zero(h_, 8192, kDiskSize - 4096, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ENOSPC);
  // A flag the command may not carry: EINVAL, nothing done.
  EXPECT_EQ(nbd_trim(h_, 4096, 0, LIBNBD_CMD_FLAG_NO_HOLE), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  // The connection is still in step: a good request works afterwards.
  auto small = Pattern(512, 31);
  Write(4096, small);
  EXPECT_TRUE(Finish().ok());
  ASSERT_EQ(sink_.events().size(), 1u);
  EXPECT_EQ(sink_.events()[0].offset, 4096u);
  std::copy(small.begin(), small.end(), before.begin() + 4096);
  EXPECT_EQ(ReadFile(path_), before);
  EXPECT_EQ(server_->stats().refused, 7u);
  EXPECT_EQ(clock_.in_flight(), 0u);
}

// The consistency argument's premise (docs/DISK.md §4): the tag is taken
// when the request is read, the report comes before the reply, and the
// epoch is drained only after the report.
TEST_F(NbdServerTest, RequestReadBeforeTheBoundaryKeepsItsTag) {
  Latch in_sink, release;
  std::atomic<bool> client_returned{false};
  std::atomic<bool> returned_before_report{false};
  std::atomic<bool> hold{true};
  sink_.on_write_hook = [&](const SinkEvent&) {
    if (!hold.load()) return;
    if (client_returned.load()) returned_before_report = true;
    in_sink.Open();
    release.Wait();
  };
  auto data = Pattern(65536, 40);
  std::thread client([&] {
    EXPECT_EQ(nbd_pwrite(h_, data.data(), data.size(), 0, 0), 0) << nbd_get_error();
    client_returned = true;
  });
  in_sink.Wait();           // the server holds the write, in epoch 1
  EXPECT_EQ(clock_.Advance(), 1u);  // the suspend: epoch 2 begins
  EXPECT_FALSE(clock_.Drained(1)) << "epoch 1 sealed while its write was still being reported";
  EXPECT_FALSE(client_returned.load()) << "the client saw completion before the report";
  hold = false;  // later writes pass straight through
  release.Open();
  client.join();
  EXPECT_FALSE(returned_before_report.load());
  EXPECT_TRUE(clock_.WaitDrained(1, std::chrono::steady_clock::now() + std::chrono::minutes(1)).ok());
  Write(65536, Pattern(10, 41));  // read after the boundary: epoch 2
  EXPECT_TRUE(Finish().ok());
  auto ev = sink_.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].epoch, 1u);
  EXPECT_EQ(ev[0].data, data);
  EXPECT_EQ(ev[1].epoch, 2u);
}

TEST_F(NbdServerTest, StopEndsAnIdleClient) {
  server_->Stop();
  thread_.join();
  EXPECT_EQ(serve_status_.code(), Code::kClosed) << serve_status_.ToString();
  nbd_close(h_);
  h_ = nullptr;
}

class NbdServerReadOnlyTest : public NbdServerTest {
 protected:
  void SetUp() override {
    BackingStoreOptions so;
    so.read_only = true;
    Start(so, NbdServerOptions{});
  }
};

TEST_F(NbdServerReadOnlyTest, WritesAreRefusedWithEperm) {
  EXPECT_EQ(nbd_is_read_only(h_), 1);
  EXPECT_EQ(nbd_can_trim(h_), 0);
  ASSERT_EQ(nbd_set_strict_mode(h_, 0), 0);
  auto d = Pattern(4096, 50);
  EXPECT_EQ(nbd_pwrite(h_, d.data(), d.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM);
  EXPECT_TRUE(Equals(0, Read(0, 4096)));
  EXPECT_TRUE(Finish().ok());
  EXPECT_TRUE(sink_.events().empty());
}

// Option haggling through libnbd's "opt mode": LIST, INFO, unknown export, ABORT.
class NbdServerOptTest : public NbdServerTest {
 protected:
  void SetUp() override {
    NbdServerOptions no;
    no.export_name = "guest1-xvda";
    no.description = "test disk";
    Start(BackingStoreOptions{}, no, /*connect=*/false);
    ASSERT_EQ(nbd_set_opt_mode(h_, true), 0);
    ASSERT_EQ(nbd_connect_socket(h_, client_fd_), 0) << nbd_get_error();
  }
};

int CollectName(void* user, const char* name, const char* description) {
  auto* v = static_cast<std::vector<std::string>*>(user);
  v->push_back(std::string(name) + "|" + description);
  return 0;
}

TEST_F(NbdServerOptTest, ListInfoAbort) {
  std::vector<std::string> names;
  nbd_list_callback cb{CollectName, &names, nullptr};
  ASSERT_EQ(nbd_opt_list(h_, cb), 1) << nbd_get_error();
  EXPECT_EQ(names, std::vector<std::string>{"guest1-xvda|test disk"});

  ASSERT_EQ(nbd_set_export_name(h_, "guest1-xvda"), 0);
  ASSERT_EQ(nbd_opt_info(h_), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_size(h_), static_cast<int64_t>(kDiskSize));

  ASSERT_EQ(nbd_set_export_name(h_, "no-such-disk"), 0);
  EXPECT_EQ(nbd_opt_info(h_), -1);  // NBD_REP_ERR_UNKNOWN; negotiation goes on
  EXPECT_EQ(nbd_get_errno(), ENOENT) << nbd_get_error();  // libnbd's rendering of ERR_UNKNOWN

  ASSERT_EQ(nbd_opt_abort(h_), 0) << nbd_get_error();
  thread_.join();
  EXPECT_TRUE(serve_status_.ok()) << serve_status_.ToString();  // an abort is a clean end
  nbd_close(h_);
  h_ = nullptr;
  EXPECT_TRUE(sink_.events().empty());
}

TEST_F(NbdServerOptTest, GoAfterAFailedGoAndTheDefaultName) {
  ASSERT_EQ(nbd_set_export_name(h_, "wrong"), 0);
  EXPECT_EQ(nbd_opt_go(h_), -1);
  ASSERT_EQ(nbd_set_export_name(h_, ""), 0);  // the default export
  ASSERT_EQ(nbd_opt_go(h_), 0) << nbd_get_error();
  Write(0, Pattern(100, 60));
  EXPECT_TRUE(Equals(0, Read(0, 100)));
  EXPECT_TRUE(Finish().ok());
  EXPECT_EQ(sink_.events().size(), 1u);
}

}  // namespace
}  // namespace romulus::disk

// devicemodel::QmpClient and DeviceModel (docs/DEVICE-MODEL.md) against a
// real QEMU (Debian's qemu-system-x86, which scripts/setup installs; TCG,
// no guest): greeting, run states, stop/cont, the device state saved to a
// file and into a descriptor passed with add-fd (a reused memfd), QEMU's
// dirty log switch, QMP errors, and a QEMU that dies. Then
// against a scripted peer on a socketpair for what a broken or hostile peer
// can do: no greeting, garbage, an endless line, a reply to another
// command, a connection closed mid-answer. Every case ends in a clear
// Status, never a crash or an unbounded allocation.
#include "devicemodel/device_model.h"
#include "devicemodel/device_state_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "common/subprocess.h"
#include "tests/devicemodel/real_qemu.h"
#include "tests/devicemodel/recv_fds.h"
#include "transport/fd_stream.h"

namespace romulus::devicemodel {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using transport::DeadlineIn;

TEST_F(RealQemu, StopSaveTheDeviceStateAndContinue) {
  EXPECT_FALSE(dm_->qmp().qemu_version().empty());
  EXPECT_NE(dm_->qmp().qemu_version().find('.'), std::string::npos) << dm_->qmp().qemu_version();
  auto st = dm_->RunState(DeadlineIn(10000ms));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(*st, "prelaunch");
  ASSERT_TRUE(dm_->Stop(DeadlineIn(10000ms)).ok());
  const std::string state = dir_ + "/devices.state";
  Status s = dm_->SaveDevicesState(state, DeadlineIn(30000ms));
  ASSERT_TRUE(s.ok()) << s.ToString();
  // QEMU's migration stream: "QEVM", then version 3.
  std::ifstream in(state, std::ios::binary);
  char head[8] = {};
  in.read(head, sizeof head);
  ASSERT_EQ(in.gcount(), 8) << "the device state file is empty";
  EXPECT_EQ(std::string(head, 4), "QEVM");
  EXPECT_EQ(head[7], 3);
  EXPECT_GT(fs::file_size(state), 1024u) << "no device sections";
  ASSERT_TRUE(dm_->SetGlobalDirtyLog(true, DeadlineIn(10000ms)).ok());
  ASSERT_TRUE(dm_->SetGlobalDirtyLog(false, DeadlineIn(10000ms)).ok());
  ASSERT_TRUE(dm_->Continue(DeadlineIn(10000ms)).ok());
  st = dm_->RunState(DeadlineIn(10000ms));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, "running");
  ASSERT_TRUE(dm_->Stop(DeadlineIn(10000ms)).ok());
  st = dm_->RunState(DeadlineIn(10000ms));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, "paused");
  // The STOP/RESUME events arrived among the answers and were kept.
  bool saw_stop = false;
  for (const auto& e : dm_->qmp().TakeEvents()) saw_stop |= e.value("event", "") == "STOP";
  EXPECT_TRUE(saw_stop);
}

// QEMU closes a removed fd set's descriptor only while the guest runs, when
// a monitor lets go of it: after `cont` and a disconnect (a checkpoint's
// QMP connection is per operation, DEVICE-MODEL.md §6), none may be left.
// Before that QEMU still lists them (7.2), so that is when this looks.
void ExpectNoFdSetsOnceRunningAndDisconnected(std::unique_ptr<DeviceModel>& dm, const std::string& sock) {
  ASSERT_TRUE(dm->Continue(DeadlineIn(10000ms)).ok());
  dm.reset();
  auto c = QmpClient::Connect(sock, DeadlineIn(10000ms));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  dm = std::make_unique<DeviceModel>(std::move(*c));
  auto sets = dm->qmp().Execute("query-fdsets", nullptr, DeadlineIn(10000ms));
  ASSERT_TRUE(sets.ok()) << sets.status().ToString();
  EXPECT_TRUE(sets->is_array() && sets->empty()) << "an fd set left in QEMU: " << sets->dump();
}

// As libxl does it: the state goes into a descriptor handed over with
// add-fd, epoch after epoch into the same reused in-memory file.
// A device model without VNC: QueryVnc says so (the backup then writes no
// console/vnc-* nodes).
TEST_F(RealQemu, QueryVncWithoutAServerIsUnsupported) {
  auto vnc = dm_->QueryVnc(DeadlineIn(10000ms));
  EXPECT_EQ(vnc.status().code(), Code::kUnsupported) << vnc.status().ToString();
}

TEST_F(RealQemu, TheDeviceStateGoesIntoADescriptorEpochAfterEpoch) {
  ASSERT_TRUE(dm_->Stop(DeadlineIn(10000ms)).ok());
  auto file = DeviceStateFile::Create(size_t{16} << 20);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  std::vector<uint8_t> state;
  size_t first = 0;
  for (int epoch = 0; epoch < 3; ++epoch) {
    ASSERT_TRUE(file->Reset().ok());
    Status s = dm_->SaveDevicesStateToFd(file->write_fd(), DeadlineIn(30000ms));
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << Log();
    Status r = file->ReadInto(&state);
    ASSERT_TRUE(r.ok()) << r.ToString();
    ASSERT_GT(state.size(), 1024u) << "no device sections";
    EXPECT_EQ(std::string(state.begin(), state.begin() + 4), "QEVM");
    EXPECT_EQ(state[7], 3);
    if (epoch == 0) first = state.size();
    // Reset rewound QEMU's descriptor too: each epoch's file holds one state, not all of them.
    EXPECT_LT(state.size(), first + first / 2) << "epoch " << epoch;
  }
  // And the path-based save writes the same stream.
  const std::string path = dir_ + "/devices.state";
  ASSERT_TRUE(dm_->SaveDevicesState(path, DeadlineIn(30000ms)).ok());
  EXPECT_EQ(fs::file_size(path), first);
  ExpectNoFdSetsOnceRunningAndDisconnected(dm_, sock_);
}

// While the guest runs QEMU closes a removed set at once: what shows that
// every save removes its set (a disconnect alone would also clean up).
TEST_F(RealQemu, EverySaveRemovesItsFdSet) {
  ASSERT_TRUE(dm_->Continue(DeadlineIn(10000ms)).ok());
  auto file = DeviceStateFile::Create(size_t{16} << 20);
  ASSERT_TRUE(file.ok());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(file->Reset().ok());
    Status s = dm_->SaveDevicesStateToFd(file->write_fd(), DeadlineIn(30000ms));
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  auto sets = dm_->qmp().Execute("query-fdsets", nullptr, DeadlineIn(10000ms));
  ASSERT_TRUE(sets.ok()) << sets.status().ToString();
  EXPECT_TRUE(sets->is_array() && sets->empty()) << "an fd set left in QEMU: " << sets->dump();
}

TEST_F(RealQemu, AStateBeyondItsBoundOrAWrongDescriptorIsAnErrorAndNoFdSetIsLeft) {
  ASSERT_TRUE(dm_->Stop(DeadlineIn(10000ms)).ok());
  auto small = DeviceStateFile::Create(100);
  ASSERT_TRUE(small.ok());
  ASSERT_TRUE(dm_->SaveDevicesStateToFd(small->write_fd(), DeadlineIn(30000ms)).ok());
  std::vector<uint8_t> state;
  Status r = small->ReadInto(&state);
  EXPECT_EQ(r.code(), Code::kOutOfRange) << r.ToString();
  EXPECT_NE(r.message().find("bound of 100"), std::string::npos) << r.ToString();
  // A read-only descriptor: QEMU finds none it may write in the set, says so,
  // and the set is still removed.
  const int ro = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(ro, 0);
  Status s = dm_->SaveDevicesStateToFd(ro, DeadlineIn(30000ms));
  ::close(ro);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("/dev/fdset/"), std::string::npos) << s.ToString();
  EXPECT_TRUE(dm_->RunState(DeadlineIn(10000ms)).ok()) << "the connection stays usable";
  // An empty file (nothing was saved since Reset) is not a state.
  ASSERT_TRUE(small->Reset().ok());
  EXPECT_EQ(small->ReadInto(&state).code(), Code::kCorruption);
  ExpectNoFdSetsOnceRunningAndDisconnected(dm_, sock_);
}

TEST_F(RealQemu, QmpErrorsAreStatusesNamingQemusReason) {
  Result<nlohmann::json> r = dm_->qmp().Execute("frobnicate", nullptr, DeadlineIn(10000ms));
  ASSERT_EQ(r.status().code(), Code::kUnsupported) << r.status().ToString();
  EXPECT_NE(r.status().message().find("frobnicate"), std::string::npos);
  EXPECT_NE(r.status().message().find("CommandNotFound"), std::string::npos);
  // A state file QEMU cannot create: QEMU's own sentence, and the
  // connection stays usable.
  Status s = dm_->SaveDevicesState("/nonexistent/dir/state", DeadlineIn(10000ms));
  ASSERT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("xen-save-devices-state"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("/nonexistent/dir/state"), std::string::npos) << s.message();
  EXPECT_TRUE(dm_->RunState(DeadlineIn(10000ms)).ok());
}

TEST_F(RealQemu, ADeadDeviceModelIsAClearError) {
  KillAndReap(pid_);
  pid_ = -1;
  Status s = dm_->Stop(DeadlineIn(10000ms));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.code() == Code::kClosed || s.code() == Code::kIoError) << s.ToString();
  EXPECT_NE(s.message().find(sock_), std::string::npos) << s.message();
  // And stays one.
  EXPECT_EQ(dm_->Stop(DeadlineIn(1000ms)).code(), Code::kClosed);
}

// A scripted peer: writes `script` on one end of a socketpair (then closes
// it unless keep_open), while the client reads the other.
class FakePeer {
 public:
  FakePeer(std::string script, bool keep_open) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_fd_ = sv[0];
    peer_fd_ = sv[1];
    writer_ = std::thread([this, script = std::move(script), keep_open] {
      size_t off = 0;
      while (off < script.size()) {
        ssize_t n = ::send(peer_fd_, script.data() + off, script.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      if (!keep_open) ::shutdown(peer_fd_, SHUT_WR);
    });
  }
  ~FakePeer() {
    ::shutdown(peer_fd_, SHUT_RDWR);
    writer_.join();
    ::close(peer_fd_);
  }
  // unix_socket: tell the client its stream is a Unix socket (descriptors
  // can be passed).
  Result<std::unique_ptr<QmpClient>> Open(std::chrono::milliseconds d, bool unix_socket = false) {
    auto s = transport::OpenFdStream(client_fd_, client_fd_, "fake QMP", true);
    if (!s.ok()) return s.status();
    return QmpClient::Open(std::move(*s), "fake QMP", DeadlineIn(d), unix_socket ? client_fd_ : -1);
  }
  int peer_fd() const { return peer_fd_; }

 private:
  int client_fd_ = -1, peer_fd_ = -1;
  std::thread writer_;
};

const char kGreeting[] = R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})"
                         "\n";

// A peer that never stops talking (an event storm) must not hold a call
// past its deadline: the call ends with Timeout while the storm still runs
// (it lasts 50 times the deadline).
TEST(QmpPeerTest, AnEndlessStreamOfEventsEndsACallAtItsDeadline) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::atomic<bool> stop{false}, storm_over{false};
  std::thread storm([&] {
    const std::string hello = std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n";
    (void)!::send(sv[1], hello.data(), hello.size(), MSG_NOSIGNAL);
    const std::string ev = "{\"event\": \"RTC_CHANGE\", \"data\": {\"offset\": 1}}\n\n";
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (!stop && std::chrono::steady_clock::now() < until) {
      if (::send(sv[1], ev.data(), ev.size(), MSG_NOSIGNAL) <= 0) break;
    }
    storm_over = true;
  });
  auto stream = transport::OpenFdStream(sv[0], sv[0], "storm", true);
  ASSERT_TRUE(stream.ok());
  auto c = QmpClient::Open(std::move(*stream), "storm", DeadlineIn(5000ms));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("query-status", nullptr, DeadlineIn(200ms));
  const bool over = storm_over;
  EXPECT_EQ(r.status().code(), Code::kTimeout) << r.status().ToString();
  EXPECT_FALSE(over) << "the call only ended when the peer stopped talking";
  EXPECT_EQ((*c)->TakeEvents().size(), kMaxQmpEvents);
  EXPECT_GT((*c)->dropped_events(), 0u);
  stop = true;
  c->reset();  // closes the client's end: the storm's next write fails
  storm.join();
  ::close(sv[1]);
}

// A device model that serves another client accepts nobody else, and
// QEMU's socket has a backlog of one: once the backlog is full a plain
// connect() would sleep until someone accepts, with the guest suspended
// (Begin runs inside the checkpoint's pause). The connect ends at the
// caller's deadline instead, naming the socket.
TEST(QmpPeerTest, ASocketThatAcceptsNobodyEndsTheConnectAtItsDeadline) {
  const ScopedTempDir dir;
  const std::string path = dir.path + "/qmp.sock";
  const int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, path.data(), path.size());
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 0), 0);  // never accepted: the backlog fills at once
  std::vector<int> queued;
  for (int i = 0; i < 16; ++i) {  // fill it (Linux queues backlog + 1)
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      ::close(fd);
      break;
    }
    queued.push_back(fd);
  }
  ASSERT_FALSE(queued.empty());
  ASSERT_LT(queued.size(), 16u) << "the backlog never filled";
  // On a thread of its own: a connect that blocks fails the test at once
  // instead of hanging it (the thread is left behind, blocked, until exit).
  auto done = std::make_shared<std::promise<Status>>();
  std::future<Status> result = done->get_future();
  std::thread([path, done] { done->set_value(QmpClient::Connect(path, DeadlineIn(300ms)).status()); }).detach();
  ASSERT_EQ(result.wait_for(10s), std::future_status::ready) << "connect() blocked on a full backlog";
  const Status c = result.get();
  EXPECT_EQ(c.code(), Code::kTimeout) << c.ToString();
  EXPECT_NE(c.message().find(path), std::string::npos) << c.ToString();
  for (int fd : queued) ::close(fd);
  // Accepted (and let go), the queue has room again: the connect goes
  // through, then waits for a greeting nobody sends: a timeout of the
  // greeting, not of the connect.
  for (size_t i = 0; i < queued.size(); ++i) {
    const int a = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (a >= 0) ::close(a);
  }
  auto again = QmpClient::Connect(path, DeadlineIn(200ms));
  EXPECT_EQ(again.status().code(), Code::kTimeout);
  EXPECT_NE(again.status().message().find("greeting"), std::string::npos) << again.status().ToString();
  ::close(lfd);
}

TEST(QmpPeerTest, ABrokenOrHostilePeerIsAClearErrorNeverACrash) {
  {  // silence: a timeout
    FakePeer p("", true);
    auto c = p.Open(200ms);
    EXPECT_EQ(c.status().code(), Code::kTimeout) << c.status().ToString();
  }
  {  // not JSON
    FakePeer p("SSH-2.0-OpenSSH_9.2\n", true);
    auto c = p.Open(5000ms);
    EXPECT_EQ(c.status().code(), Code::kCorruption) << c.status().ToString();
  }
  {  // JSON but not an object; an object but not a greeting; a QMP member that is no object
    FakePeer p("[1,2,3]\n", true);
    EXPECT_EQ(p.Open(5000ms).status().code(), Code::kCorruption);
    FakePeer q("{\"hello\": 1}\n", true);
    EXPECT_EQ(q.Open(5000ms).status().code(), Code::kCorruption);
    FakePeer r("{\"QMP\": 5}\n", true);
    auto c = r.Open(5000ms);
    EXPECT_EQ(c.status().code(), Code::kCorruption);
    EXPECT_NE(c.status().message().find("not a QMP greeting: {\"QMP\": 5}"), std::string::npos)
        << "the error quotes the line as received: " << c.status().ToString();
  }
  {  // nesting that would make a parser, a copy or a dump recurse: refused before parsing
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    FakePeer p("{\"QMP\": " + deep + "}\n", true);
    auto c = p.Open(5000ms);
    EXPECT_EQ(c.status().code(), Code::kCorruption) << c.status().ToString();
    EXPECT_NE(c.status().message().find("nested deeper than"), std::string::npos) << c.status().ToString();
    FakePeer q(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"return\": " + deep + ", \"id\": 2}\n", true);
    auto d = q.Open(5000ms);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ((*d)->Execute("query-status", nullptr, DeadlineIn(5000ms)).status().code(), Code::kCorruption);
    // Brackets inside strings are text, not nesting.
    FakePeer r(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"return\": \"" + std::string(1000, '[') +
                   "\\\"[\", \"id\": 2}\n",
               true);
    auto e = r.Open(5000ms);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    auto ok = (*e)->Execute("query-status", nullptr, DeadlineIn(5000ms));
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_EQ(ok->get<std::string>().size(), 1002u);
  }
  {  // an endless line: refused at the bound, not buffered without end
    FakePeer p(std::string(kMaxQmpMessage + 8192, 'x'), true);
    auto c = p.Open(10000ms);
    EXPECT_EQ(c.status().code(), Code::kCorruption) << c.status().ToString();
    EXPECT_NE(c.status().message().find("longer than"), std::string::npos) << c.status().ToString();
  }
  {  // closed mid-answer
    FakePeer p(std::string(kGreeting) + "{\"retu", false);
    auto c = p.Open(5000ms);
    EXPECT_EQ(c.status().code(), Code::kClosed) << c.status().ToString();
  }
  {  // an answer to another command; an error whose fields have wrong types
    FakePeer p(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"return\": {}, \"id\": 99}\n", true);
    auto c = p.Open(5000ms);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ((*c)->qemu_version(), "7.2.0");
    auto r = (*c)->Execute("stop", nullptr, DeadlineIn(5000ms));
    EXPECT_EQ(r.status().code(), Code::kCorruption) << r.status().ToString();
    EXPECT_EQ((*c)->Execute("stop", nullptr, DeadlineIn(100ms)).status().code(), Code::kClosed)
        << "a connection out of step must not be reused";
    FakePeer q(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"error\": {\"class\": 7, \"desc\": [1]}, \"id\": 2}\n",
               true);
    auto d = q.Open(5000ms);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    auto e = (*d)->Execute("stop", nullptr, DeadlineIn(5000ms));
    EXPECT_EQ(e.status().code(), Code::kInvalidArgument) << e.status().ToString();
  }
  {  // an event larger than kMaxQmpEventBytes is dropped and counted, not kept
    FakePeer p(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"event\": \"BIG\", \"data\": \"" +
                   std::string(kMaxQmpEventBytes, 'x') + "\"}\n{\"return\": {}, \"id\": 2}\n",
               true);
    auto c = p.Open(5000ms);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE((*c)->Execute("stop", nullptr, DeadlineIn(5000ms)).ok());
    EXPECT_TRUE((*c)->TakeEvents().empty());
    EXPECT_EQ((*c)->dropped_events(), 1u);
  }
  {  // an argument that is not UTF-8 (a file name): refused before sending, the connection usable
    FakePeer p(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"return\": {\"status\": \"paused\"}, \"id\": 2}\n",
               true);
    auto c = p.Open(5000ms);
    ASSERT_TRUE(c.ok());
    DeviceModel dm(std::move(*c));
    Status s = dm.SaveDevicesState("/tmp/state-\xff\xfe", DeadlineIn(5000ms));
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("UTF-8"), std::string::npos) << s.ToString();
    auto st = dm.RunState(DeadlineIn(5000ms));
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(*st, "paused");
  }
  {  // a descriptor passed with the command's own bytes reaches the peer; without a Unix socket: refused
    FakePeer p(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n{\"return\": {\"fdset-id\": 0, \"fd\": 9}, \"id\": 2}\n",
               true);
    auto c = p.Open(5000ms, /*unix_socket=*/true);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    auto file = DeviceStateFile::Create(4096);
    ASSERT_TRUE(file.ok());
    auto r = (*c)->ExecuteWithFd("add-fd", nlohmann::json::object(), file->write_fd(), DeadlineIn(5000ms));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)["fdset-id"], 0);
    // The peer reads both lines; the descriptor came with the second.
    char buf[4096];
    std::string got;
    int passed = -1;
    while (std::count(got.begin(), got.end(), '\n') < 2) {
      std::vector<int> fds;
      const ssize_t n = RecvWithFds(p.peer_fd(), buf, sizeof buf, &fds);
      ASSERT_GT(n, 0);
      const std::string chunk(buf, static_cast<size_t>(n));
      for (int f : fds) {
        passed = f;
        EXPECT_NE(chunk.find("add-fd"), std::string::npos) << "the descriptor came without its command: " << chunk;
      }
      got += chunk;
    }
    ASSERT_GE(passed, 0) << "no descriptor arrived";
    EXPECT_NE(got.find("\"add-fd\""), std::string::npos) << got;
    struct stat a {}, b {};
    ASSERT_EQ(::fstat(passed, &a), 0);
    ASSERT_EQ(::fstat(file->write_fd(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_EQ(::fcntl(passed, F_GETFL) & O_ACCMODE, O_WRONLY);
    ::close(passed);

    FakePeer q(std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n", true);
    auto d = q.Open(5000ms);
    ASSERT_TRUE(d.ok());
    auto e = (*d)->ExecuteWithFd("add-fd", nlohmann::json::object(), file->write_fd(), DeadlineIn(5000ms));
    EXPECT_EQ(e.status().code(), Code::kInvalidArgument) << e.status().ToString();
  }
  {  // events before the answer are kept, at most kMaxQmpEvents of them
    std::string script = std::string(kGreeting) + "{\"return\": {}, \"id\": 1}\n";
    for (size_t i = 0; i < kMaxQmpEvents + 10; ++i) script += "{\"event\": \"E" + std::to_string(i) + "\"}\n";
    script += "{\"return\": {\"status\": \"paused\"}, \"id\": 2}\n";
    FakePeer p(script, true);
    auto c = p.Open(5000ms);
    ASSERT_TRUE(c.ok());
    DeviceModel dm(std::move(*c));
    auto st = dm.RunState(DeadlineIn(5000ms));
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(*st, "paused");
    auto ev = dm.qmp().TakeEvents();
    ASSERT_EQ(ev.size(), kMaxQmpEvents);
    EXPECT_EQ(ev.back()["event"], "E" + std::to_string(kMaxQmpEvents + 9)) << "not the newest kept";
    EXPECT_TRUE(dm.qmp().TakeEvents().empty());
  }
}

}  // namespace
}  // namespace romulus::devicemodel

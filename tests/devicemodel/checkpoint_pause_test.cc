// devicemodel::QmpLock and DeviceModelPause (docs/DEVICE-MODEL.md §2, §6):
// libxl's QMP lock taken, waited for within a deadline and taken anew when
// its file is replaced; one checkpoint's pause against a real QEMU (stopped
// and saved under the lock, continued and released at End, continued even
// when abandoned), and a lock someone else holds; against a scripted QMP
// server, a pause whose connection failed mid-way (a hung save, a stop
// never answered) continued over a new connection.
#include "devicemodel/checkpoint_pause.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "disk/export_socket.h"
#include "tests/devicemodel/real_qemu.h"
#include "tests/devicemodel/recv_fds.h"

namespace romulus::devicemodel {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using transport::DeadlineIn;

// Whether another open file could take `path`'s flock right now.
bool LockIsFree(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return true;  // no file, no holder
  const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return free;
}

TEST(QmpLockTest, TheLibxlPathAndAHolderMakesUsWaitUntilTheDeadline) {
  EXPECT_EQ(LibxlQmpLockPath("/var/lib/xen", 7, "4d1d6b28-0c2a-4e57-9b38-2f3c3c7c0b2e"),
            "/var/lib/xen/userdata-l.7.4d1d6b28-0c2a-4e57-9b38-2f3c3c7c0b2e.qmp-socket-lock");
  const DeviceModelEndpoint ep = LibxlDeviceModelEndpoint(7, "4d1d6b28-0c2a-4e57-9b38-2f3c3c7c0b2e");
  EXPECT_EQ(ep.qmp_socket, "/var/run/xen/qmp-libxl-7") << "libxl's monitor, not xenstat's";
  EXPECT_EQ(ep.lock_path, LibxlQmpLockPath("/var/lib/xen", 7, "4d1d6b28-0c2a-4e57-9b38-2f3c3c7c0b2e"));
  const ScopedTempDir scoped;
  const std::string& dir = scoped.path;
  const std::string path = dir + "/userdata-l.7.u.qmp-socket-lock";
  {
    auto a = QmpLock::Acquire(path, DeadlineIn(1000ms));  // created when missing
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    EXPECT_FALSE(LockIsFree(path));
    const auto t0 = std::chrono::steady_clock::now();
    auto b = QmpLock::Acquire(path, DeadlineIn(100ms));
    EXPECT_EQ(b.status().code(), Code::kTimeout) << b.status().ToString();
    EXPECT_NE(b.status().message().find(path), std::string::npos) << b.status().ToString();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "the wait is bounded by the deadline";
  }
  EXPECT_TRUE(LockIsFree(path)) << "released with the object";
  EXPECT_FALSE(fs::exists(path)) << "libxl's protocol: the holder unlinks the file before it unlocks";
  // A waiter gets the lock once the holder lets go.
  const int holder = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_EQ(::flock(holder, LOCK_EX), 0);
  std::thread release([holder] {
    std::this_thread::sleep_for(50ms);  // the waiter is not told; it must keep trying
    ::close(holder);
  });
  auto c = QmpLock::Acquire(path, DeadlineIn(10000ms));
  release.join();
  EXPECT_TRUE(c.ok()) << c.status().ToString();
}

// libxl removes a destroyed domain's userdata, and a new file may appear
// under the same name: the lock of the old, unlinked file excludes nobody,
// so the waiter locks the file that is there when it gets its turn.
TEST(QmpLockTest, ALockFileReplacedWhileWaitingIsTakenAnew) {
  const ScopedTempDir scoped;
  const std::string& dir = scoped.path;
  const std::string path = dir + "/lock";
  const int old_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_EQ(::flock(old_fd, LOCK_EX), 0);
  struct stat old_st {};
  ASSERT_EQ(::fstat(old_fd, &old_st), 0);
  Result<QmpLock> got = Status::Closed("not run");
  std::thread waiter([&] { got = QmpLock::Acquire(path, DeadlineIn(10000ms)); });
  // Until the waiter has the old file open (a second descriptor of it in
  // this process), bounded.
  const auto until = std::chrono::steady_clock::now() + 10s;
  bool opened = false;
  while (!opened && std::chrono::steady_clock::now() < until) {
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      struct stat st {};
      if (std::to_string(old_fd) != e.path().filename().string() && ::stat(e.path().c_str(), &st) == 0 &&
          st.st_ino == old_st.st_ino && st.st_dev == old_st.st_dev) {
        opened = true;
      }
    }
    if (!opened) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(opened) << "the waiter never opened the lock file";
  ASSERT_EQ(::unlink(path.c_str()), 0);
  const int new_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(new_fd, 0);
  ::close(old_fd);  // the waiter gets the old file's lock, sees it replaced
  waiter.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_FALSE(::flock(new_fd, LOCK_EX | LOCK_NB) == 0) << "the waiter holds the lock of the file now named";
  ::close(new_fd);
}

// A running guest's device model (cont out of -S first), the fixture's
// client gone so the pause can have the socket.
class PauseTest : public RealQemu {
 protected:
  void SetUp() override {
    RealQemu::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(dm_->Continue(DeadlineIn(10000ms)).ok());
    dm_.reset();
    endpoint_ = {sock_, dir_ + "/userdata-l.1.u.qmp-socket-lock"};
    auto f = DeviceStateFile::Create(size_t{16} << 20);
    ASSERT_TRUE(f.ok());
    file_ = std::make_unique<DeviceStateFile>(std::move(*f));
  }
  std::string RunStateFromANewClient() {
    auto c = QmpClient::Connect(sock_, DeadlineIn(10000ms));
    if (!c.ok()) return "connect: " + c.status().ToString();
    DeviceModel dm(std::move(*c));
    auto st = dm.RunState(DeadlineIn(10000ms));
    return st.ok() ? *st : st.status().ToString();
  }

  DeviceModelEndpoint endpoint_;
  std::unique_ptr<DeviceStateFile> file_;
};

TEST_F(PauseTest, StopsAndSavesUnderTheLockThenContinuesAndLetsGo) {
  for (int epoch = 0; epoch < 2; ++epoch) {
    auto p = DeviceModelPause::Begin(endpoint_, file_.get(), DeadlineIn(30000ms));
    ASSERT_TRUE(p.ok()) << p.status().ToString() << "\n" << Log();
    auto st = (*p)->device_model().RunState(DeadlineIn(10000ms));
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(*st, "paused");
    EXPECT_FALSE(LockIsFree(endpoint_.lock_path)) << "xl must wait while the pause has the device model";
    std::vector<uint8_t> state;
    ASSERT_TRUE(file_->ReadInto(&state).ok());
    EXPECT_EQ(std::string(state.begin(), state.begin() + 4), "QEVM");
    ASSERT_TRUE((*p)->End(DeadlineIn(10000ms)).ok());
    EXPECT_TRUE(LockIsFree(endpoint_.lock_path));
    EXPECT_EQ(RunStateFromANewClient(), "running") << "epoch " << epoch;
  }
}

TEST_F(PauseTest, AnAbandonedPauseStillContinuesTheDeviceModel) {
  {
    auto p = DeviceModelPause::Begin(endpoint_, file_.get(), DeadlineIn(30000ms));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
  }  // the checkpoint failed after Begin: no End
  EXPECT_TRUE(LockIsFree(endpoint_.lock_path));
  EXPECT_EQ(RunStateFromANewClient(), "running");
}

TEST_F(PauseTest, ALockHeldElsewhereIsATimeoutAndTheDeviceModelIsUntouched) {
  const int holder = ::open(endpoint_.lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_EQ(::flock(holder, LOCK_EX), 0);
  PauseFailure failure{true, true};
  auto p = DeviceModelPause::Begin(endpoint_, file_.get(), DeadlineIn(200ms), &failure);
  EXPECT_EQ(p.status().code(), Code::kTimeout) << p.status().ToString();
  // libxl busy is not a device model that fails: the guest may run on.
  EXPECT_FALSE(failure.unresponsive);
  EXPECT_FALSE(failure.left_stopped);
  ::close(holder);
  EXPECT_EQ(RunStateFromANewClient(), "running");
  // A socket nobody serves (a device model that is gone): a clear error
  // naming it, nothing stopped, and the device model reported unresponsive.
  DeviceModelEndpoint nowhere{dir_ + "/absent.sock", ""};
  auto q = DeviceModelPause::Begin(nowhere, file_.get(), DeadlineIn(1000ms), &failure);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("absent.sock"), std::string::npos) << q.status().ToString();
  EXPECT_TRUE(failure.unresponsive);
  EXPECT_FALSE(failure.left_stopped);
}

TEST_F(PauseTest, AFailureAfterTheStopContinuesTheDeviceModelAndSaysWhichStep) {
  // A state file that cannot be written (its descriptors gone, as a moved-from
  // one): Begin has stopped QEMU by then, fails at the save, and leaves the
  // device model running again.
  DeviceStateFile moved = std::move(*file_);
  PauseFailure failure{true, true};
  auto p = DeviceModelPause::Begin(endpoint_, file_.get(), DeadlineIn(30000ms), &failure);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("saving the device model's state"), std::string::npos)
      << p.status().ToString();
  EXPECT_FALSE(failure.unresponsive) << "QEMU answered and was continued";
  EXPECT_FALSE(failure.left_stopped);
  EXPECT_TRUE(LockIsFree(endpoint_.lock_path));
  EXPECT_EQ(RunStateFromANewClient(), "running");
}

// A QMP server on a Unix socket, one connection at a time as QEMU serves
// them, that answers every command but those in `hang_on` (comma-separated;
// never answered, as a QEMU that hangs in them) and those in `error_on`
// (answered with a GenericError), and records each connection's commands.
class ScriptedQmpServer {
 public:
  ScriptedQmpServer(const std::string& path, std::string hang_on, std::string error_on = "")
      : hang_on_(std::move(hang_on)), error_on_(std::move(error_on)) {
    auto fd = disk::ListenUnix(path, "scripted QMP", 4);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    listen_fd_ = fd.ok() ? *fd : -1;
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedQmpServer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }
  std::vector<std::vector<std::string>> commands() {
    std::lock_guard<std::mutex> l(mu_);
    return commands_;
  }

 private:
  bool WaitReadable(int fd) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  void Send(int fd, const std::string& line) { (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL); }
  void Serve() {
    while (listen_fd_ >= 0 && WaitReadable(listen_fd_)) {
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      {
        std::lock_guard<std::mutex> l(mu_);
        commands_.emplace_back();
      }
      Send(c, R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})" "\n");
      std::string buf;
      while (WaitReadable(c)) {
        char chunk[4096];
        std::vector<int> passed;
        const ssize_t n = RecvWithFds(c, chunk, sizeof chunk, &passed);
        for (int f : passed) ::close(f);
        if (n <= 0) break;  // the client let go
        buf.append(chunk, static_cast<size_t>(n));
        for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
          auto req = nlohmann::json::parse(buf.substr(0, nl), nullptr, false);
          buf.erase(0, nl + 1);
          if (req.is_discarded() || !req.contains("execute")) continue;
          const std::string cmd = req["execute"].get<std::string>();
          {
            std::lock_guard<std::mutex> l(mu_);
            commands_.back().push_back(cmd);
          }
          if (("," + hang_on_ + ",").find("," + cmd + ",") != std::string::npos) continue;
          if (("," + error_on_ + ",").find("," + cmd + ",") != std::string::npos) {
            const nlohmann::json err = {{"class", "GenericError"}, {"desc", "scripted refusal of " + cmd}};
            Send(c, nlohmann::json{{"error", err}, {"id", req["id"]}}.dump() + "\n");
            continue;
          }
          nlohmann::json ret = nlohmann::json::object();
          if (cmd == "add-fd") ret = {{"fdset-id", 0}, {"fd", 9}};
          Send(c, nlohmann::json{{"return", ret}, {"id", req["id"]}}.dump() + "\n");
        }
      }
      ::close(c);
    }
  }

  std::string hang_on_;
  std::string error_on_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::vector<std::string>> commands_;
  std::thread thread_;
};

// One DeviceModelPause::Begin against a ScriptedQmpServer, and what it
// returned and left behind: whether libxl's lock is free afterwards, and
// each connection's commands. The failure starts as {true, true}: Begin
// resets it first, so a flag still set was set by Begin.
struct ScriptedPause {
  Status status;
  PauseFailure failure{true, true};
  bool lock_free = false;
  std::vector<std::vector<std::string>> commands;
};
struct Script {
  std::string hang_on;                         // never answered (comma-separated)
  std::string error_on;                        // answered with an error
  bool lock = true;                            // libxl's lock file in the endpoint
  bool lock_held = false;                      // someone else holds it throughout
  std::chrono::milliseconds deadline{1000};
};
ScriptedPause RunScriptedPause(const Script& script) {
  const ScopedTempDir scoped;
  const DeviceModelEndpoint ep{scoped.path + "/qmp.sock", script.lock ? scoped.path + "/lock" : ""};
  ScriptedQmpServer server(ep.qmp_socket, script.hang_on, script.error_on);
  ScriptedPause r;
  int holder = -1;
  if (script.lock_held) {
    holder = ::open(ep.lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    EXPECT_EQ(::flock(holder, LOCK_EX), 0);
  }
  auto file = DeviceStateFile::Create(4096);
  EXPECT_TRUE(file.ok());
  if (file.ok()) {
    auto p = DeviceModelPause::Begin(ep, &*file, DeadlineIn(script.deadline), &r.failure);
    r.status = p.status();
  }  // (a pause that began is ended here, before the lock is looked at)
  if (holder >= 0) ::close(holder);
  r.lock_free = ep.lock_path.empty() || LockIsFree(ep.lock_path);
  server.Stop();
  r.commands = server.commands();
  return r;
}
using Commands = std::vector<std::string>;

// A device model that hangs in the save: the pause's connection times out
// (and is unusable: a late answer could not be told from the next), yet
// the device model must be continued, so the cont goes over a new one.
TEST(DeviceModelPauseTest, AConnectionThatFailedDuringThePauseIsReplacedForTheCont) {
  const ScriptedPause r = RunScriptedPause({.hang_on = "xen-save-devices-state"});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_FALSE(r.failure.left_stopped) << "the cont went through";
  EXPECT_FALSE(r.failure.unresponsive) << "QEMU answered the cont: it runs the guest's devices again";
  EXPECT_TRUE(r.lock_free);
  ASSERT_EQ(r.commands.size(), 2u) << "no second connection for the cont";
  EXPECT_EQ(r.commands[0], (Commands{"qmp_capabilities", "stop", "add-fd", "xen-save-devices-state"}));
  EXPECT_EQ(r.commands[1], (Commands{"qmp_capabilities", "cont"}));
}

// A stop whose answer never comes may still have stopped QEMU: the
// abandoned pause continues it all the same.
TEST(DeviceModelPauseTest, AStopWithoutAnAnswerIsContinuedToo) {
  const ScriptedPause r = RunScriptedPause({.hang_on = "stop", .lock = false});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_FALSE(r.failure.left_stopped);
  EXPECT_FALSE(r.failure.unresponsive);
  ASSERT_EQ(r.commands.size(), 2u);
  EXPECT_EQ(r.commands[0], (Commands{"qmp_capabilities", "stop"}));
  EXPECT_EQ(r.commands[1], (Commands{"qmp_capabilities", "cont"}));
}

// A device model that hangs in the save and then in the cont too: Begin
// says the device model may stay stopped (the driver then keeps the guest
// suspended rather than run it on stopped devices), and lets go of the lock.
TEST(DeviceModelPauseTest, AContThatFailsTooSaysTheDeviceModelMayStayStopped) {
  const ScriptedPause r = RunScriptedPause({.hang_on = "xen-save-devices-state,cont"});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_TRUE(r.failure.left_stopped);
  EXPECT_TRUE(r.failure.unresponsive);
  EXPECT_NE(r.status.message().find("may stay stopped"), std::string::npos) << r.status.ToString();
  EXPECT_TRUE(r.lock_free);
  ASSERT_EQ(r.commands.size(), 2u);
  EXPECT_EQ(r.commands[1], (Commands{"qmp_capabilities", "cont"}));
}

// A disk that hangs QEMU's drain or flush hangs its `stop`, and its main
// loop with it: neither the stop nor the cont is ever answered. Begin says
// the device model is unresponsive and may stay stopped (the driver then
// relinquishes the guest, docs/DEVICE-MODEL.md §2.3), and lets go of the lock.
TEST(DeviceModelPauseTest, AStopAndAContThatHangSayTheDeviceModelIsUnresponsive) {
  const ScriptedPause r = RunScriptedPause({.hang_on = "stop,cont"});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_TRUE(r.failure.unresponsive);
  EXPECT_TRUE(r.failure.left_stopped);
  EXPECT_NE(r.status.message().find("stopping the device model"), std::string::npos) << r.status.ToString();
  EXPECT_TRUE(r.lock_free);
  ASSERT_EQ(r.commands.size(), 2u);
  EXPECT_EQ(r.commands[0], (Commands{"qmp_capabilities", "stop"}));
  EXPECT_EQ(r.commands[1], (Commands{"qmp_capabilities", "cont"}));
}

// A device model that accepts connections (the kernel queues them) but never
// greets, as a SIGSTOPped or wedged QEMU: unresponsive, nothing was stopped,
// the lock is let go.
TEST(DeviceModelPauseTest, ADeviceModelThatNeverGreetsIsUnresponsive) {
  const ScopedTempDir scoped;
  const std::string& dir = scoped.path;
  const DeviceModelEndpoint ep{dir + "/qmp.sock", dir + "/lock"};
  auto listener = disk::ListenUnix(ep.qmp_socket, "silent QMP", 4);
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  auto file = DeviceStateFile::Create(4096);
  ASSERT_TRUE(file.ok());
  PauseFailure failure;
  auto p = DeviceModelPause::Begin(ep, &*file, DeadlineIn(1000ms), &failure);
  ::close(*listener);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(failure.unresponsive);
  EXPECT_FALSE(failure.left_stopped) << "no stop was ever sent";
  EXPECT_NE(p.status().message().find("QMP socket"), std::string::npos) << p.status().ToString();
  EXPECT_TRUE(LockIsFree(ep.lock_path));
}

// QEMU's monitor greets from its own I/O thread even while its main loop is
// blocked (a drain that waits for a hung disk), and then never answers
// qmp_capabilities: unresponsive, nothing stopped.
TEST(DeviceModelPauseTest, ACapabilitiesNegotiationThatHangsIsUnresponsive) {
  const ScriptedPause r = RunScriptedPause({.hang_on = "qmp_capabilities"});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_TRUE(r.failure.unresponsive);
  EXPECT_FALSE(r.failure.left_stopped);
  EXPECT_TRUE(r.lock_free);
  ASSERT_EQ(r.commands.size(), 1u);
  EXPECT_EQ(r.commands[0], (Commands{"qmp_capabilities"}));
}

// libxl busy (its lock held past half the deadline) is not a device model
// that fails: not unresponsive, and QEMU is never asked anything.
TEST(DeviceModelPauseTest, ALockHeldElsewhereIsNotUnresponsive) {
  const ScriptedPause r = RunScriptedPause({.lock_held = true, .deadline = 400ms});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_FALSE(r.failure.unresponsive);
  EXPECT_FALSE(r.failure.left_stopped);
  EXPECT_TRUE(r.commands.empty()) << "QEMU was asked something without the lock";
}

// A stop that hangs, then a cont QEMU answers with an error: QEMU's main loop
// runs, so it is not unresponsive, but it may stay stopped (the driver keeps
// the guest suspended for the next session to retry).
TEST(DeviceModelPauseTest, AContQemuRefusesLeavesItStoppedButNotUnresponsive) {
  const ScriptedPause r = RunScriptedPause({.hang_on = "stop", .error_on = "cont"});
  EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  EXPECT_TRUE(r.failure.left_stopped);
  EXPECT_FALSE(r.failure.unresponsive);
  EXPECT_NE(r.status.message().find("scripted refusal of cont"), std::string::npos) << r.status.ToString();
  ASSERT_EQ(r.commands.size(), 2u);
  EXPECT_EQ(r.commands[1], (Commands{"qmp_capabilities", "cont"}));
}

}  // namespace
}  // namespace romulus::devicemodel

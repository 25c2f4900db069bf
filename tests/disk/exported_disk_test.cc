// ExportedDisk (disk/exported_disk.h): the real `romulus disk-export`
// process, started detached, served over its real sockets (libnbd reads the
// image through the NBD socket, RemoteDiskTap attaches to the tap). The
// kernel NBD client is the one part that cannot run here (this host's
// kernel has no nbd module): a small script stands in for nbd-client and
// records how it was called; the Xen lab runs the real one
// (xen-disk-replication-scenario, drill `reverse`).
#include "disk/exported_disk.h"

#include <gtest/gtest.h>
#include <libnbd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/subprocess.h"
#include "disk/export_socket.h"
#include "disk/remote_disk_tap.h"
#include "tests/disk/disk_test_util.h"

namespace romulus::disk {
namespace {

using testing::Pattern;
using testing::TempDir;
using testing::WriteFile;

constexpr uint64_t kSize = 1u << 20;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Running: exists and is not a zombie (a child of ours SIGTERMed but not
// reaped still answers kill(pid, 0)).
bool Alive(pid_t pid) {
  const std::string stat = Slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// A hex signal set of /proc/PID/status ("SigBlk", "SigIgn") has `sig`.
bool StatusHasSignal(pid_t pid, const std::string& field, int sig) {
  std::istringstream in(Slurp("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      const unsigned long long mask = std::stoull(line.substr(field.size() + 1), nullptr, 16);
      return (mask >> (sig - 1)) & 1;
    }
  }
  ADD_FAILURE() << "no " << field << " in /proc/" << pid << "/status";
  return true;
}

// Reads 8 KiB at 64 KiB through the export's NBD socket.
std::vector<uint8_t> ReadThroughNbd(const std::string& socket) {
  std::vector<uint8_t> got(8192);
  struct nbd_handle* h = nbd_create();
  EXPECT_NE(h, nullptr);
  if (!h) return {};
  EXPECT_EQ(nbd_set_export_name(h, "xvdb"), 0);
  if (nbd_connect_unix(h, socket.c_str()) != 0 || nbd_get_size(h) != static_cast<int64_t>(kSize) ||
      nbd_pread(h, got.data(), got.size(), 65536, 0) != 0) {
    ADD_FAILURE() << nbd_get_error();
    got.clear();
  }
  (void)nbd_shutdown(h, 0);
  nbd_close(h);
  return got;
}

class ExportedDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = dir_.path() + "/guest1.xvdb.img";
    content_ = Pattern(kSize, 7);
    WriteFile(image_, content_);
    // The stand-in nbd-client: logs its arguments; connecting "creates" the
    // device node; fails while FAIL exists.
    client_ = dir_.path() + "/nbd-client";
    std::ofstream(client_) << "#!/bin/sh\n"
                              "echo \"$*\" >> "
                           << dir_.path() << "/calls\n"
                                             "[ \"$1\" = -d ] && exit 0\n"
                                             "[ -e "
                           << dir_.path() << "/FAIL ] && { echo 'Error: Socket failed: Device or resource busy'; exit 1; }\n"
                                             ": > \"$3\"\n";
    ASSERT_EQ(::chmod(client_.c_str(), 0755), 0);
    // Three NBD devices, nbd0 connected (a pid attribute), nbd1 and nbd2 free.
    sysfs_ = dir_.path() + "/sys";
    for (const char* d : {"", "/nbd0", "/nbd1", "/nbd2", "/loop0"}) ::mkdir((sysfs_ + d).c_str(), 0755);
    std::ofstream(sysfs_ + "/nbd0/pid") << "123\n";
    // nbd1's request queue as nbd.ko creates it (nbd2 has none: a kernel
    // without the attributes).
    ::mkdir((sysfs_ + "/nbd1/queue").c_str(), 0755);
    std::ofstream(sysfs_ + "/nbd1/queue/max_sectors_kb") << "128\n";
    std::ofstream(sysfs_ + "/nbd1/queue/max_hw_sectors_kb") << "32768\n";
    devdir_ = dir_.path() + "/dev";
    ::mkdir(devdir_.c_str(), 0755);
    opts_.romulus = std::string(ROMULUS_BINARY_DIR) + "/cli/romulus";
    opts_.nbd_client = client_;
    opts_.sysfs_block = sysfs_;
    opts_.dev_dir = devdir_;
  }
  void TearDown() override {
    for (pid_t p : leftover_) StopAndReap(p, std::chrono::milliseconds(5000));
  }
  std::string Calls() { return Slurp(dir_.path() + "/calls"); }

  TempDir dir_;
  std::string image_, client_, sysfs_, devdir_;
  std::vector<uint8_t> content_;
  ExportedDiskOptions opts_;
  std::vector<pid_t> leftover_;
};

TEST(FreeNbdDevicesTest, OnlyUnconnectedNbdDevicesInNumberOrder) {
  TempDir dir;
  const std::string sys = dir.path();
  for (const char* d : {"/nbd10", "/nbd2", "/nbd0", "/nbd1", "/nbdx", "/loop3", "/nbd"}) ::mkdir((sys + d).c_str(), 0755);
  std::ofstream(sys + "/nbd1/pid") << "42\n";
  EXPECT_EQ(FreeNbdDevices(sys), (std::vector<int>{0, 2, 10}));
  EXPECT_TRUE(FreeNbdDevices(sys + "/absent").empty());
}

TEST(RaiseNbdMaxRequestTest, RaisesToTheWantedSizeCappedByTheDeviceAndNeverLowers) {
  TempDir dir;
  const std::string sys = dir.path();
  auto queue = [&](int k, const char* now, const char* hw) {
    const std::string q = sys + "/nbd" + std::to_string(k) + "/queue";
    ::mkdir((sys + "/nbd" + std::to_string(k)).c_str(), 0755);
    ::mkdir(q.c_str(), 0755);
    std::ofstream(q + "/max_sectors_kb") << now;
    std::ofstream(q + "/max_hw_sectors_kb") << hw;
  };
  auto value = [&](int k) { return Slurp(sys + "/nbd" + std::to_string(k) + "/queue/max_sectors_kb"); };
  queue(0, "128\n", "32768\n");
  auto got = RaiseNbdMaxRequest(sys, 0, 1024);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, 1024u);
  EXPECT_EQ(value(0), "1024\n");
  // A device whose hardware limit is lower gets its limit.
  queue(1, "128\n", "512\n");
  got = RaiseNbdMaxRequest(sys, 1, 1024);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, 512u);
  EXPECT_EQ(value(1), "512\n");
  // One an operator already raised further is left alone.
  queue(2, "4096\n", "32768\n");
  got = RaiseNbdMaxRequest(sys, 2, 1024);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, 4096u);
  EXPECT_EQ(value(2), "4096\n");
}

TEST(RaiseNbdMaxRequestTest, AMissingOrUnreadableAttributeIsAnError) {
  TempDir dir;
  const std::string sys = dir.path();
  auto got = RaiseNbdMaxRequest(sys, 3, 1024);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kIoError);
  EXPECT_NE(got.status().message().find("nbd3/queue/max_sectors_kb"), std::string::npos) << got.status().message();
  ::mkdir((sys + "/nbd3").c_str(), 0755);
  ::mkdir((sys + "/nbd3/queue").c_str(), 0755);
  std::ofstream(sys + "/nbd3/queue/max_sectors_kb") << "128\n";
  std::ofstream(sys + "/nbd3/queue/max_hw_sectors_kb") << "lots\n";
  got = RaiseNbdMaxRequest(sys, 3, 1024);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("max_hw_sectors_kb"), std::string::npos) << got.status().message();
  EXPECT_EQ(Slurp(sys + "/nbd3/queue/max_sectors_kb"), "128\n") << "nothing written without the limit";
}

TEST_F(ExportedDiskTest, ServesTheImageOnTheFirstFreeDeviceAndOutlivesItsOwnerOnceServed) {
  // A descriptor of ours without close-on-exec must not reach the export
  // (a listening socket of restore's would stay bound after it exits).
  int ours[2];
  ASSERT_EQ(::pipe(ours), 0);
  // Nor our blocked or ignored signals (restore blocks SIGINT/SIGTERM for
  // sigwait: an export with that mask could only be SIGKILLed).
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
  struct sigaction ign {}, old_hup {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGHUP, &ign, &old_hup), 0);
  pid_t pid = -1;
  std::string nbd_socket;
  {
    auto d = ExportedDisk::Start(image_, "xvdb", opts_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    pid = (*d)->export_pid();
    leftover_.push_back(pid);
    EXPECT_EQ((*d)->path(), devdir_ + "/nbd1");
    EXPECT_EQ((*d)->tap_socket(), image_ + ".tap");
    EXPECT_EQ(Calls(), "-unix " + image_ + ".nbd " + devdir_ + "/nbd1 -N xvdb\n");
    EXPECT_EQ(Slurp(sysfs_ + "/nbd1/queue/max_sectors_kb"), "1024\n") << "1 MiB requests (kNbdMaxRequestKib)";
    EXPECT_EQ(::getsid(pid), pid) << "the export runs in its own session";
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGHUP, &old_hup, nullptr);
    EXPECT_FALSE(StatusHasSignal(pid, "SigBlk", SIGUSR2)) << "the export inherited our blocked signals";
    EXPECT_FALSE(StatusHasSignal(pid, "SigIgn", SIGHUP)) << "the export inherited our ignored SIGHUP";
    nbd_socket = (*d)->nbd_socket();
    struct stat pst;
    ASSERT_EQ(::fstat(ours[0], &pst), 0);
    const std::string pipe_name = "pipe:[" + std::to_string(pst.st_ino) + "]";
    for (int fd = 0; fd < 64; ++fd) {
      char buf[256];
      const std::string link = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
      const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
      if (n > 0) {
        EXPECT_NE(std::string(buf, n), pipe_name) << "fd " << fd << " of the export is ours";
      }
    }

    // The real export serves the image over NBD under the disk's name...
    const std::vector<uint8_t> got = ReadThroughNbd((*d)->nbd_socket());
    EXPECT_TRUE(got.size() == 8192 && std::equal(got.begin(), got.end(), content_.begin() + 65536));
    // ... and a replicator can attach to its tap.
    auto tap = RemoteDiskTap::Connect((*d)->tap_socket());
    ASSERT_TRUE(tap.ok()) << tap.status().ToString();
    EXPECT_EQ((*tap)->info().name, "xvdb");
    EXPECT_EQ((*tap)->info().size_bytes, kSize);
    tap->reset();

    (*d)->Served();
  }
  // The guest depends on it now: it outlives its owner, serves on, and was
  // not disconnected.
  EXPECT_TRUE(Alive(pid));
  const std::vector<uint8_t> again = ReadThroughNbd(nbd_socket);
  EXPECT_TRUE(again.size() == 8192 && std::equal(again.begin(), again.end(), content_.begin() + 65536));
  EXPECT_EQ(Calls().find("-d "), std::string::npos) << Calls();
  ::close(ours[0]);
  ::close(ours[1]);
}

TEST_F(ExportedDiskTest, UntilServedItsOwnerTakesItAllDown) {
  pid_t pid = -1;
  {
    auto d = ExportedDisk::Start(image_, "xvdb", opts_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    pid = (*d)->export_pid();
    leftover_.push_back(pid);
    ASSERT_TRUE(Alive(pid));
  }
  EXPECT_FALSE(Alive(pid)) << "a failed activation leaves its export running";
  EXPECT_NE(Calls().find("-d " + devdir_ + "/nbd1\n"), std::string::npos) << Calls();
  EXPECT_TRUE(CheckUnixSocketPath(image_ + ".nbd", "NBD socket").ok()) << "nobody serves the socket any more";
}

TEST_F(ExportedDiskTest, AClientThatFailsOnEveryDeviceLeavesNothingRunning) {
  std::ofstream(dir_.path() + "/FAIL") << "";
  auto d = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("exit 1"), std::string::npos) << d.status().ToString();
  EXPECT_NE(d.status().message().find("Device or resource busy"), std::string::npos) << d.status().ToString();
  EXPECT_NE(d.status().message().find(devdir_ + "/nbd2"), std::string::npos) << "both free devices were tried";
  EXPECT_EQ(Calls(), "-unix " + image_ + ".nbd " + devdir_ + "/nbd1 -N xvdb\n-unix " + image_ + ".nbd " + devdir_ +
                         "/nbd2 -N xvdb\n");
  EXPECT_TRUE(CheckUnixSocketPath(image_ + ".nbd", "NBD socket").ok()) << "the export still serves";
}

TEST_F(ExportedDiskTest, AHungClientIsKilledAndTheNextDeviceTried) {
  // The kernel handshake can stall; the guest waits paused meanwhile.
  std::ofstream(client_) << "#!/bin/sh\necho \"$*\" >> " << dir_.path() << "/calls\n[ \"$1\" = -d ] && exit 0\nexec sleep 30\n";
  opts_.client_timeout = std::chrono::milliseconds(300);
  auto d = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("still running after 300 ms"), std::string::npos) << d.status().ToString();
  EXPECT_NE(Calls().find("/nbd2 -N xvdb"), std::string::npos) << Calls();
  EXPECT_TRUE(CheckUnixSocketPath(image_ + ".nbd", "NBD socket").ok()) << "the export still serves";
}

// A client killed after the kernel took its configuration: the device names
// our client in its pid attribute and is disconnected again before the next
// device is tried. A device another client took meanwhile (another pid) is
// not ours to disconnect.
TEST_F(ExportedDiskTest, ADeviceLeftConnectedByAKilledClientIsDisconnectedAndAnotherClientsIsNot) {
  // nbd1: "configured" by this very client, which then hangs; nbd2: taken by
  // another process (pid 1) while this client fails.
  std::ofstream(client_) << "#!/bin/sh\necho \"$*\" >> " << dir_.path() << "/calls\n"
                         << "[ \"$1\" = -d ] && exit 0\n"
                         << "case \"$3\" in */nbd1) echo $$ > " << sysfs_ << "/nbd1/pid; exec sleep 30;; esac\n"
                         << "echo 1 > " << sysfs_ << "/nbd2/pid\n"
                         << "echo 'Error: Device or resource busy'; exit 1\n";
  opts_.client_timeout = std::chrono::milliseconds(300);
  auto d = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_FALSE(d.ok());
  const std::string calls = Calls();
  EXPECT_NE(calls.find("-d " + devdir_ + "/nbd1\n"), std::string::npos) << "nbd1 left connected: " << calls;
  EXPECT_EQ(calls.find("-d " + devdir_ + "/nbd2"), std::string::npos) << "another client's nbd2 disconnected: " << calls;
  EXPECT_LT(calls.find("-d " + devdir_ + "/nbd1"), calls.find("/nbd2 -N xvdb")) << "not disconnected before moving on";
  EXPECT_NE(d.status().message().find("exit 1"), std::string::npos) << d.status().ToString();
  EXPECT_EQ(NbdClientPid(sysfs_, 2), 1);
  EXPECT_EQ(NbdClientPid(sysfs_, 3), -1);
}

TEST_F(ExportedDiskTest, ADeviceWhoseRequestSizeCannotBeRaisedStillServes) {
  // nbd1 taken: the first free device is nbd2, which has no queue attributes.
  std::ofstream(sysfs_ + "/nbd1/pid") << "1\n";
  auto d = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_TRUE(d.ok()) << "only throughput depends on the request size: " << d.status().ToString();
  leftover_.push_back((*d)->export_pid());
  EXPECT_EQ((*d)->path(), devdir_ + "/nbd2");
  const std::vector<uint8_t> got = ReadThroughNbd((*d)->nbd_socket());
  EXPECT_TRUE(got.size() == 8192 && std::equal(got.begin(), got.end(), content_.begin() + 65536));
}

TEST_F(ExportedDiskTest, NoFreeDeviceIsSaidBeforeAnythingStarts) {
  std::ofstream(sysfs_ + "/nbd1/pid") << "1\n";
  std::ofstream(sysfs_ + "/nbd2/pid") << "1\n";
  auto d = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("no free NBD device"), std::string::npos) << d.status().ToString();
  struct stat st;
  EXPECT_NE(::stat((image_ + ".export.log").c_str(), &st), 0) << "an export was started";
}

TEST_F(ExportedDiskTest, AnImageAlreadyExportedIsRefused) {
  auto first = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  leftover_.push_back((*first)->export_pid());
  (*first)->Served();
  // Two exports of one image would each log half of the guest's writes.
  auto second = ExportedDisk::Start(image_, "xvdb", opts_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kInvalidArgument) << second.status().ToString();
  EXPECT_EQ(Calls(), "-unix " + image_ + ".nbd " + devdir_ + "/nbd1 -N xvdb\n") << "no second client ran";
}

TEST_F(ExportedDiskTest, AnExportThatCannotStartIsReportedWithItsLog) {
  auto d = ExportedDisk::Start(dir_.path() + "/absent.img", "xvdb", opts_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("exited before it was ready"), std::string::npos) << d.status().ToString();
  EXPECT_NE(d.status().message().find("absent.img.export.log"), std::string::npos) << d.status().ToString();
  EXPECT_EQ(Calls(), "");
}

TEST_F(ExportedDiskTest, ASocketPathTooLongIsRefusedBeforeAnythingRuns) {
  const std::string deep = dir_.path() + "/" + std::string(100, 'd');
  ASSERT_EQ(::mkdir(deep.c_str(), 0755), 0);
  const std::string image = deep + "/guest1.xvdb.img";
  WriteFile(image, content_);
  auto d = ExportedDisk::Start(image, "xvdb", opts_);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kInvalidArgument) << d.status().ToString();
  struct stat st;
  EXPECT_NE(::stat((image + ".export.log").c_str(), &st), 0) << "an export was started";
  EXPECT_EQ(Calls(), "");
}

}  // namespace
}  // namespace romulus::disk

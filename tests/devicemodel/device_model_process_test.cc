// devicemodel::SpawnDetached: the device model the backup starts at
// failover outlives the backup (not our child, its own session), sees only
// the descriptor it is handed and its log, and an exec that fails is an
// error naming the binary. A shell script stands in for QEMU: what is
// tested is the starting, not QEMU (the real one is started in the Xen lab,
// docs/DEVICE-MODEL.md §3).
#include "devicemodel/device_model_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/devicemodel/real_qemu.h"

namespace romulus::devicemodel {
namespace {

using namespace std::chrono_literals;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Bounded: the script writes its report last, through a rename.
bool WaitForFile(const std::string& path) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < until) {
    if (::access(path.c_str(), F_OK) == 0) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST(SpawnDetached, HandsOnOneDescriptorAndOutlivesItsStarter) {
  ScopedTempDir dir;
  const std::string script = dir.path + "/fake-qemu";
  {
    std::ofstream s(script);
    // Reports its arguments, its environment, the state read from the
    // descriptor "-incoming fd:N" names, its open descriptors, its parent
    // and session; says something on stdout and stderr.
    s << "#!/bin/sh\n"
         "out=\"$REPORT\"\n"
         "fd=''\n"
         "prev=''\n"
         "for a in \"$@\"; do [ \"$prev\" = -incoming ] && fd=${a#fd:}; prev=$a; done\n"
         "{ echo \"args=$*\"; echo \"env=$(env | sort | tr '\\n' ' ')\";\n"
         "  echo \"state=$(cat /proc/$$/fd/$fd)\"; echo \"fds=$(ls /proc/$$/fd | sort -n | tr '\\n' ' ')\";\n"
         "  echo \"ppid=$(awk '{print $4}' /proc/$$/stat)\"; echo \"sid=$(awk '{print $6}' /proc/$$/stat)\";\n"
         "  echo \"pid=$$\"; } >\"$out.tmp\"\n"
         "echo to-stdout; echo to-stderr >&2\n"
         "mv \"$out.tmp\" \"$out\"\n";
  }
  ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  // Numbers no shell uses for itself (dash keeps its own at 10 and up,
  // command substitutions take the lowest free), so the listing is clear.
  const int state = ::fcntl(memfd_create("state", MFD_CLOEXEC), F_DUPFD_CLOEXEC, 40);
  ASSERT_GE(state, 40);
  ASSERT_EQ(::write(state, "QEVM-state", 10), 10);
  ASSERT_EQ(::lseek(state, 0, SEEK_SET), 0);
  // A descriptor of ours that must not leak (not close-on-exec on purpose).
  const int leak = ::fcntl(::open("/dev/null", O_RDONLY), F_DUPFD, 50);
  ASSERT_GE(leak, 50);

  SpawnSpec spec;
  spec.binary = script;
  spec.args = {"-xen-domid", "7", "-incoming", "fd:" + std::to_string(state), "-m", "128"};
  spec.env = {"REPORT=" + dir.path + "/report", "XEN_DOMAIN_ID=7", "PATH=/usr/bin:/bin"};
  spec.log_path = dir.path + "/qemu-dm.log";
  spec.inherit_fd = state;
  auto pid = SpawnDetached(spec);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ASSERT_TRUE(WaitForFile(dir.path + "/report"));
  const std::string report = Slurp(dir.path + "/report");
  EXPECT_NE(report.find("args=-xen-domid 7 -incoming fd:" + std::to_string(state) + " -m 128\n"), std::string::npos)
      << report;
  EXPECT_NE(report.find("state=QEVM-state\n"), std::string::npos) << report;
  EXPECT_NE(report.find("XEN_DOMAIN_ID=7"), std::string::npos) << report;
  EXPECT_EQ(report.find("HOME="), std::string::npos) << "the environment is the spec's only: " << report;
  // 0-2, the state, and the one ls itself opens to read /proc: nothing else.
  const std::string fds = report.substr(report.find("fds=") + 4, report.find('\n', report.find("fds=")) - report.find("fds=") - 4);
  EXPECT_EQ(fds.find(" " + std::to_string(leak) + " "), std::string::npos) << fds;
  EXPECT_NE(fds.find(" " + std::to_string(state) + " "), std::string::npos) << fds;
  EXPECT_NE(report.find("pid=" + std::to_string(pid->pid()) + "\n"), std::string::npos) << report;
  EXPECT_EQ(report.find("ppid=" + std::to_string(::getpid()) + "\n"), std::string::npos) << "not our child: " << report;
  // A session of its own (its starter's: a non-leader never gets a
  // controlling terminal), not ours: a signal to our process group or a
  // hang-up of our terminal does not reach it.
  EXPECT_EQ(report.find("sid=" + std::to_string(::getsid(0)) + "\n"), std::string::npos) << report;
  EXPECT_EQ(report.find("sid=" + std::to_string(pid->pid()) + "\n"), std::string::npos) << "not a leader: " << report;
  // stdout and stderr went to the log (written before the report's rename).
  const std::string log = Slurp(spec.log_path);
  EXPECT_NE(log.find("to-stdout\n"), std::string::npos) << log;
  EXPECT_NE(log.find("to-stderr\n"), std::string::npos) << log;
  ::close(state);
  ::close(leak);
}

TEST(SpawnDetached, AFailedExecIsAnErrorNamingTheBinary) {
  ScopedTempDir dir;
  SpawnSpec spec;
  spec.binary = dir.path + "/no-such-qemu";
  spec.log_path = dir.path + "/log";
  auto pid = SpawnDetached(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_NE(pid.status().message().find("no-such-qemu"), std::string::npos) << pid.status().ToString();
  EXPECT_NE(pid.status().ToString().find("No such file"), std::string::npos) << pid.status().ToString();

  const std::string plain = dir.path + "/not-executable";
  std::ofstream(plain) << "#!/bin/sh\n";
  spec.binary = plain;
  pid = SpawnDetached(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_NE(pid.status().ToString().find("Permission denied"), std::string::npos) << pid.status().ToString();

  spec.binary = "relative/qemu";
  EXPECT_EQ(SpawnDetached(spec).status().code(), Code::kInvalidArgument);
  spec.binary = "/bin/true";
  spec.log_path = dir.path + "/no-such-dir/log";  // the log cannot be opened: the child says so
  pid = SpawnDetached(spec);
  ASSERT_FALSE(pid.ok());
  EXPECT_NE(pid.status().ToString().find("No such file"), std::string::npos) << pid.status().ToString();
}

// A detached `sh -c SCRIPT`, its log in `dir`.
Result<ProcessRef> SpawnShell(const ScopedTempDir& dir, const std::string& script) {
  SpawnSpec spec;
  spec.binary = "/bin/sh";
  spec.args = {"-c", script};
  spec.log_path = dir.path + "/log";
  return SpawnDetached(spec);
}

// A detached `sleep 30`, its log in `dir`.
Result<ProcessRef> SpawnSleeper(const ScopedTempDir& dir) {
  SpawnSpec spec;
  spec.binary = "/bin/sleep";
  spec.args = {"30"};
  spec.log_path = dir.path + "/log";
  return SpawnDetached(spec);
}

// Reaped by init (or the subreaper), not by us: a bounded wait until gone.
bool GoneWithin20s(const ProcessRef& p) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (p.Alive() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  return !p.Alive();
}

TEST(ProcessRefTest, FollowsTheProcessItHolds) {
  ScopedTempDir dir;
  auto p = SpawnSleeper(dir);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_TRUE(p->valid());
  EXPECT_TRUE(p->Alive());
  EXPECT_TRUE(p->Signal(0));
  // A second hold on the same process sees the same.
  ProcessRef again = ProcessRef::Open(p->pid());
  ASSERT_TRUE(again.valid());
  EXPECT_TRUE(again.Alive());
  ASSERT_TRUE(p->Signal(SIGKILL));
  EXPECT_TRUE(GoneWithin20s(*p));
  EXPECT_TRUE(GoneWithin20s(again));
  // Gone: no signal reaches anything, whatever runs under that number now.
  EXPECT_FALSE(p->Signal(0));
  // Moved: the new owner holds it, the old one nothing.
  ProcessRef moved = std::move(again);
  EXPECT_FALSE(again.valid());
  EXPECT_TRUE(moved.valid());
  moved.Reset();
  EXPECT_FALSE(moved.valid());
  EXPECT_FALSE(moved.Alive());
  EXPECT_FALSE(moved.Signal(0));
}

TEST(ProcessRefTest, NoProcessNoHold) {
  EXPECT_FALSE(ProcessRef::Open(0).valid());
  EXPECT_FALSE(ProcessRef::Open(-1).valid());
  // Past the kernel's pid_max (at most 2^22): never a process.
  EXPECT_FALSE(ProcessRef::Open(0x7ffffff0).valid());
  ProcessRef none;
  none.Stop(10ms);  // nothing to stop, nothing waited for
  EXPECT_FALSE(none.Alive());
}

TEST(ProcessRefTest, StopEndsAProcessThatIgnoresSigterm) {
  ScopedTempDir dir;
  // Exits on SIGTERM: ended by it, well before the grace.
  auto polite = SpawnSleeper(dir);
  ASSERT_TRUE(polite.ok()) << polite.status().ToString();
  polite->Stop(20s);
  EXPECT_FALSE(polite->Alive()) << "SIGTERM did not end sleep within the 20 s grace";
  // Ignores SIGTERM (the trap is set before the ready file is written, so
  // the SIGTERM cannot arrive first): SIGKILL after the grace.
  const std::string ready = dir.path + "/ready";
  auto stubborn = SpawnShell(dir, "trap '' TERM; : > " + ready + "; while :; do sleep 1; done");
  ASSERT_TRUE(stubborn.ok()) << stubborn.status().ToString();
  ASSERT_TRUE(WaitForFile(ready));
  ASSERT_TRUE(stubborn->Signal(SIGTERM));
  EXPECT_TRUE(stubborn->Alive()) << "the trap did not hold: the test proves nothing";
  stubborn->Stop(100ms);
  EXPECT_TRUE(GoneWithin20s(*stubborn)) << "still running after Stop's SIGKILL";
}

TEST(ProcessArgv, ReadsAnotherProcesssCommandLine) {
  ScopedTempDir dir;
  auto p = SpawnSleeper(dir);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto argv = ReadProcessArgv(p->pid());
  p->Signal(SIGKILL);
  ASSERT_TRUE(argv.ok()) << argv.status().ToString();
  EXPECT_EQ(*argv, (std::vector<std::string>{"/bin/sleep", "30"}));
  // Gone: an error, not an empty command line.
  ASSERT_TRUE(GoneWithin20s(*p));
  EXPECT_EQ(ReadProcessArgv(p->pid()).status().code(), Code::kIoError);
}

TEST(ProcessArgv, ServesOnlyTheDomainItNames) {
  const std::vector<std::string> qemu = {"/usr/bin/qemu-system-i386", "-xen-domid", "12", "-no-shutdown"};
  EXPECT_TRUE(ArgvServesDomain(qemu, 12));
  EXPECT_FALSE(ArgvServesDomain(qemu, 1));    // "12" is not "1"
  EXPECT_FALSE(ArgvServesDomain(qemu, 120));
  EXPECT_FALSE(ArgvServesDomain({"/bin/sleep", "12"}, 12));     // a reused pid
  EXPECT_FALSE(ArgvServesDomain({"qemu", "-xen-domid"}, 12));   // no value
  EXPECT_FALSE(ArgvServesDomain({}, 0));
}

TEST(ProcessArgv, PidsAsXenstoreHoldsThem) {
  EXPECT_EQ(*ParsePid("4242"), 4242);
  EXPECT_EQ(*ParsePid("2147483647"), 2147483647);
  for (const char* bad : {"", "0", "-1", "12a", " 12", "2147483648", "99999999999", "0x10"}) {
    EXPECT_EQ(ParsePid(bad).status().code(), Code::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace romulus::devicemodel

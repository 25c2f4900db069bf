// WritebackWatch (devicemodel/writeback_watch.h) against a real write-back
// error: a loop device whose image lives on a tmpfs too small for it, so
// the kernel's write-back of a buffered write fails (ENOSPC under the loop
// driver, EIO on the device). What QEMU does with cache=writeback is done
// here by hand: a buffered write on a descriptor of its own, then the flush
// its `stop` makes, whose error it ignores.
#include "devicemodel/writeback_watch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "xen/loop_device.h"

// <linux/fs.h>'s, which clashes with <sys/mount.h> in glibc 2.36.
#ifndef FIFREEZE
#define FIFREEZE _IOWR('X', 119, int)
#define FITHAW _IOWR('X', 120, int)
#endif

namespace romulus::devicemodel {
namespace {

// A tmpfs of `bytes` on a fresh directory, removed at the end; skips the
// test where loop devices or mounts are not possible (not root).
class SmallTmpfs {
 public:
  explicit SmallTmpfs(uint64_t bytes) {
    char tmpl[] = "/tmp/romulus-wbw-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    const std::string opts = "size=" + std::to_string(bytes);
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    why_ = mounted_ ? "" : std::strerror(errno);
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  bool ok() const { return mounted_; }
  const std::string& dir() const { return dir_; }
  const std::string& why() const { return why_; }

 private:
  std::string dir_, why_;
  bool mounted_ = false;
};

bool CanUseLoop(std::string* why) {
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    *why = std::string("no /dev/loop-control (") + std::strerror(errno) + "): needs root and loop";
    return false;
  }
  ::close(ctl);
  return true;
}

// A sparse image of `image_bytes` on `fs`, attached to a loop device.
std::unique_ptr<xen::LoopDevice> LoopOver(const SmallTmpfs& fs, uint64_t image_bytes) {
  const std::string image = fs.dir() + "/disk.img";
  int fd = ::open(image.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::ftruncate(fd, off_t(image_bytes)) != 0) return nullptr;
  ::close(fd);
  auto loop = xen::LoopDevice::Attach(image);
  return loop.ok() ? std::move(*loop) : nullptr;
}

// A bound for flushes that must return (the test's safety net, never what
// it asserts).
transport::Deadline Soon() { return transport::DeadlineIn(std::chrono::seconds(30)); }

// Writes `bytes` of non-zero data at 0 through the page cache.
bool BufferedWrite(int fd, size_t bytes) {
  std::vector<uint8_t> data(bytes, 0xa5);
  return ::pwrite(fd, data.data(), data.size(), 0) == ssize_t(data.size());
}

TEST(WritebackWatchTest, ReportsTheErrorTheDeviceModelsOwnFlushSwallowed) {
  std::string why;
  if (!CanUseLoop(&why)) GTEST_SKIP() << why;
  SmallTmpfs fs(256 << 10);
  if (!fs.ok()) GTEST_SKIP() << "cannot mount a tmpfs here: " << fs.why();
  auto loop = LoopOver(fs, 8 << 20);  // 8 MiB image, 256 KiB of room under it
  ASSERT_NE(loop, nullptr);

  auto watch = WritebackWatch::Open({loop->path()});
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  EXPECT_EQ(watch->size(), 1u);
  ASSERT_TRUE(watch->Check(Soon()).ok()) << "nothing written yet";

  // QEMU: the guest's write completes into the page cache...
  int qemu = ::open(loop->path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(qemu, 0) << std::strerror(errno);
  ASSERT_TRUE(BufferedWrite(qemu, 2 << 20)) << std::strerror(errno);
  // ...and its stop's flush fails, which qmp_stop ignores. The error is
  // reported to QEMU's descriptor once: its next flush (the guest's own
  // FLUSH) succeeds, so the guest never hears of it.
  EXPECT_NE(::fdatasync(qemu), 0) << "the image cannot hold 2 MiB: the write-back must fail";
  EXPECT_EQ(::fdatasync(qemu), 0) << "a write-back error is reported once per descriptor";
  ::close(qemu);

  // The watch's own descriptor still hears of it, once.
  Status st = watch->Check(Soon());
  ASSERT_FALSE(st.ok()) << "the lost write went unnoticed";
  EXPECT_EQ(st.code(), Code::kStorage) << st.ToString();
  EXPECT_NE(st.message().find(loop->path()), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("a write the guest saw complete never reached it"), std::string::npos) << st.ToString();
  EXPECT_TRUE(watch->Check(Soon()).ok()) << "each error is reported once";
}

TEST(WritebackWatchTest, WritesThatReachTheDiskAreNoError) {
  std::string why;
  if (!CanUseLoop(&why)) GTEST_SKIP() << why;
  SmallTmpfs fs(4 << 20);
  if (!fs.ok()) GTEST_SKIP() << "cannot mount a tmpfs here: " << fs.why();
  auto loop = LoopOver(fs, 1 << 20);  // room for all of it
  ASSERT_NE(loop, nullptr);
  auto watch = WritebackWatch::Open({loop->path()});
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  int qemu = ::open(loop->path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(qemu, 0);
  ASSERT_TRUE(BufferedWrite(qemu, 512 << 10));
  EXPECT_EQ(::fdatasync(qemu), 0);
  ::close(qemu);
  EXPECT_TRUE(watch->Check(Soon()).ok());
}

// Every file is checked even after one fails: an error not read now is
// lost for good (reported once per descriptor).
TEST(WritebackWatchTest, ChecksEveryFileAfterAFailure) {
  std::string why;
  if (!CanUseLoop(&why)) GTEST_SKIP() << why;
  SmallTmpfs full(256 << 10), roomy(4 << 20);
  if (!full.ok() || !roomy.ok()) GTEST_SKIP() << "cannot mount a tmpfs here";
  auto a = LoopOver(full, 8 << 20);
  auto b = LoopOver(roomy, 8 << 20);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  auto watch = WritebackWatch::Open({a->path(), b->path()});
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  // Only a fails at first.
  int qa = ::open(a->path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(qa, 0);
  ASSERT_TRUE(BufferedWrite(qa, 2 << 20));
  Status first = watch->Check(Soon());
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.message().find(a->path()), std::string::npos) << first.ToString();
  ::close(qa);

  // Both fail now; the first error is a's, and b's was read all the same.
  int qa2 = ::open(a->path().c_str(), O_RDWR | O_CLOEXEC);
  int qb = ::open(b->path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(qa2, 0);
  ASSERT_GE(qb, 0);
  ASSERT_TRUE(BufferedWrite(qa2, 2 << 20));
  ASSERT_TRUE(BufferedWrite(qb, 6 << 20));  // 6 MiB into 4 MiB of room
  Status both = watch->Check(Soon());
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.message().find(a->path()), std::string::npos) << both.ToString();
  EXPECT_TRUE(watch->Check(Soon()).ok()) << "b's error was consumed by the failed check, not left for later";
  ::close(qa2);
  ::close(qb);
}

// A device that stops answering, for real: a loop device whose image lives
// on an ext4 that is frozen (FIFREEZE). The loop driver's writes of a
// flushed page then wait until the thaw, and so does every fdatasync of
// the device, uninterruptibly, as with a hung NBD server.
class HangingDevice {
 public:
  HangingDevice() : fs_(64 << 20) { Make(); }
  ~HangingDevice() {
    Thaw();
    upper_.reset();
    if (mounted_) ::umount2(mnt_.c_str(), MNT_DETACH);
    if (!mnt_.empty()) ::rmdir(mnt_.c_str());
  }
  bool ok() const { return upper_ != nullptr; }
  const std::string& why() const { return why_; }
  const std::string& path() const { return upper_->path(); }
  // What QEMU does with a guest's write (a buffered write of 1 MiB, not yet
  // on the device), then the freeze: the next flush of the device hangs.
  bool DirtyThenFreeze() {
    int qemu = ::open(path().c_str(), O_RDWR | O_CLOEXEC);
    if (qemu < 0) return false;
    const bool written = BufferedWrite(qemu, 1 << 20);
    ::close(qemu);
    return written && Ioctl(FIFREEZE) && (frozen_ = true);
  }
  void Thaw() {
    if (frozen_ && Ioctl(FITHAW)) frozen_ = false;
  }

 private:
  void Make() {
    if (!CanUseLoop(&why_)) return;
    if (!fs_.ok()) {
      why_ = "cannot mount a tmpfs here: " + fs_.why();
      return;
    }
    const std::string image = fs_.dir() + "/ext4.img";
    int fd = ::open(image.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, 32 << 20) != 0) return fail("cannot make the ext4 image");
    ::close(fd);
    if (std::system(("mkfs.ext4 -q -F " + image + " >/dev/null 2>&1").c_str()) != 0) {
      return fail("mkfs.ext4 failed (e2fsprogs, scripts/setup)");
    }
    auto lower = xen::LoopDevice::Attach(image);
    if (!lower.ok()) return fail(lower.status().ToString());
    lower_ = std::move(*lower);
    mnt_ = fs_.dir() + "/m";
    if (::mkdir(mnt_.c_str(), 0700) != 0) return fail("mkdir");
    if (::mount(lower_->path().c_str(), mnt_.c_str(), "ext4", 0, nullptr) != 0) {
      return fail(std::string("mounting the ext4: ") + std::strerror(errno));
    }
    mounted_ = true;
    const std::string disk = mnt_ + "/disk.img";
    fd = ::open(disk.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, 8 << 20) != 0) return fail("cannot make the disk image");
    ::close(fd);
    auto upper = xen::LoopDevice::Attach(disk);
    if (!upper.ok()) return fail(upper.status().ToString());
    upper_ = std::move(*upper);
  }
  void fail(const std::string& why) { why_ = why; }
  bool Ioctl(unsigned long op) {
    int d = ::open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return false;
    const bool ok = ::ioctl(d, op, 0) == 0;
    ::close(d);
    return ok;
  }
  SmallTmpfs fs_;
  std::unique_ptr<xen::LoopDevice> lower_, upper_;
  std::string mnt_, why_;
  bool mounted_ = false, frozen_ = false;
};

// A hung device costs the pause the deadline, not forever; the watch says
// so at once until the flush returns, and then works again.
TEST(WritebackWatchTest, AHungDeviceTimesOutAndIsNamed) {
  HangingDevice dev;
  if (!dev.ok()) GTEST_SKIP() << dev.why();
  auto watch = WritebackWatch::Open({dev.path()});
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  ASSERT_TRUE(dev.DirtyThenFreeze()) << std::strerror(errno);

  Status st = watch->Check(transport::DeadlineIn(std::chrono::milliseconds(300)));
  ASSERT_FALSE(st.ok()) << "a flush of a frozen device returned";
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  EXPECT_NE(st.message().find(dev.path()), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("whether the guest's writes reached it is unknown"), std::string::npos)
      << st.ToString();
  // Still hung: answered at once, no second flush stacked behind the first.
  Status again = watch->Check(Soon());
  EXPECT_EQ(again.code(), Code::kTimeout) << again.ToString();

  dev.Thaw();
  // The device answers again: the stuck flush returns, and the next round
  // (the data is on the device now) is clean.
  Status after = Status::Timeout("not yet");
  for (int i = 0; i < 300 && after.code() == Code::kTimeout; ++i) {
    after = watch->Check(Soon());
    if (after.code() == Code::kTimeout) ::usleep(100 * 1000);
  }
  EXPECT_TRUE(after.ok()) << after.ToString();
}

// A watch destroyed while its flush hangs does not wait for the device.
TEST(WritebackWatchTest, DestroyingAWatchDoesNotWaitForAHungDevice) {
  HangingDevice dev;
  if (!dev.ok()) GTEST_SKIP() << dev.why();
  {
    auto watch = WritebackWatch::Open({dev.path()});
    ASSERT_TRUE(watch.ok()) << watch.status().ToString();
    ASSERT_TRUE(dev.DirtyThenFreeze()) << std::strerror(errno);
    EXPECT_EQ(watch->Check(transport::DeadlineIn(std::chrono::milliseconds(200))).code(), Code::kTimeout);
  }  // the destructor returns with the flush still stuck (else this test hangs until ctest's timeout)
  dev.Thaw();
}

// The threads of this process, by /proc/self/task.
std::set<std::string> Tasks() {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) out.insert(e.path().filename());
  return out;
}

// The flush thread takes no signal: `replicate` opens the watch before its
// signal watcher blocks SIGINT/SIGTERM, and a default action taken on this
// thread would end the process in the middle of an epoch.
TEST(WritebackWatchTest, TheFlushThreadTakesNoSignal) {
  char path[] = "/tmp/romulus-wbw-file-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  const std::set<std::string> before = Tasks();
  auto watch = WritebackWatch::Open({path});
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  int checked = 0;
  for (const std::string& tid : Tasks()) {
    if (before.count(tid)) continue;
    std::ifstream status("/proc/self/task/" + tid + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("SigBlk:", 0) != 0) continue;
      const unsigned long long blocked = std::stoull(line.substr(7), nullptr, 16);
      EXPECT_TRUE(blocked & (1ull << (SIGTERM - 1))) << "thread " << tid << ": " << line;
      EXPECT_TRUE(blocked & (1ull << (SIGINT - 1))) << "thread " << tid << ": " << line;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 1) << "one flush thread per watch";
  EXPECT_TRUE(watch->Check(Soon()).ok());
  ::unlink(path);
}

TEST(WritebackWatchTest, AFileThatCannotBeOpenedIsNamed) {
  auto watch = WritebackWatch::Open({"/nonexistent/romulus-disk"});
  ASSERT_FALSE(watch.ok());
  EXPECT_NE(watch.status().message().find("/nonexistent/romulus-disk"), std::string::npos)
      << watch.status().ToString();
}

}  // namespace
}  // namespace romulus::devicemodel

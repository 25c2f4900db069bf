// WritebackWatch (devicemodel/writeback_watch.h) against a real write-back
// error: a loop device whose image lives on a tmpfs too small for it, so
// the kernel's write-back of a buffered write fails (ENOSPC under the loop
// driver, EIO on the device). What QEMU does with cache=writeback is done
// here by hand: a buffered write on a descriptor of its own, then the flush
// its `stop` makes, whose error it ignores.
#include "devicemodel/writeback_watch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "xen/loop_device.h"

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
  ASSERT_TRUE(watch->Check().ok()) << "nothing written yet";

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
  Status st = watch->Check();
  ASSERT_FALSE(st.ok()) << "the lost write went unnoticed";
  EXPECT_EQ(st.code(), Code::kStorage) << st.ToString();
  EXPECT_NE(st.message().find(loop->path()), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("a write the guest saw complete never reached it"), std::string::npos) << st.ToString();
  EXPECT_TRUE(watch->Check().ok()) << "each error is reported once";
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
  EXPECT_TRUE(watch->Check().ok());
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
  Status first = watch->Check();
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
  Status both = watch->Check();
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.message().find(a->path()), std::string::npos) << both.ToString();
  EXPECT_TRUE(watch->Check().ok()) << "b's error was consumed by the failed check, not left for later";
  ::close(qa2);
  ::close(qb);
}

TEST(WritebackWatchTest, AFileThatCannotBeOpenedIsNamed) {
  auto watch = WritebackWatch::Open({"/nonexistent/romulus-disk"});
  ASSERT_FALSE(watch.ok());
  EXPECT_NE(watch.status().message().find("/nonexistent/romulus-disk"), std::string::npos)
      << watch.status().ToString();
}

}  // namespace
}  // namespace romulus::devicemodel

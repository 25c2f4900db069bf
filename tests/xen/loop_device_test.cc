// A loop device over a disk image (xen/loop_device.h), attached with the
// kernel's ioctls: what blkback will open is the image itself, and the
// device is set to detach itself (autoclear) once nobody holds it.
#include "xen/loop_device.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace romulus::xen {
namespace {

std::string SysfsRead(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

TEST(LoopDeviceTest, AttachesTheImageReadWriteWithAutoclear) {
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) GTEST_SKIP() << "no /dev/loop-control here (" << std::strerror(errno) << "): needs root and loop";
  ::close(ctl);
  char tmpl[] = "/tmp/romulus-loop-XXXXXX";
  int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  const std::string image = tmpl;
  ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
  std::vector<uint8_t> block(4096, 0x5a);
  ASSERT_EQ(::pwrite(fd, block.data(), block.size(), 8192), 4096);

  auto loop = LoopDevice::Attach(image);
  ASSERT_TRUE(loop.ok()) << loop.status().ToString();
  const LoopDevice& d = **loop;
  struct stat st;
  ASSERT_EQ(::stat(d.path().c_str(), &st), 0);
  ASSERT_TRUE(S_ISBLK(st.st_mode));
  EXPECT_EQ(::major(st.st_rdev), d.dev_major());  // what physical-device will say
  EXPECT_EQ(::minor(st.st_rdev), d.dev_minor());
  const std::string sys = "/sys/block/loop" + std::to_string(d.number()) + "/loop/";
  EXPECT_EQ(SysfsRead(sys + "backing_file"), image);
  EXPECT_EQ(SysfsRead(sys + "autoclear"), "1");
  EXPECT_EQ(SysfsRead("/sys/block/loop" + std::to_string(d.number()) + "/ro"), "0");
  EXPECT_EQ(SysfsRead("/sys/block/loop" + std::to_string(d.number()) + "/size"), std::to_string((1 << 20) / 512));

  // Reads through the device see the image; writes land in it.
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(::pread(d.fd(), got.data(), got.size(), 8192), 4096);
  EXPECT_EQ(got, block);
  std::vector<uint8_t> other(4096, 0xc3);
  ASSERT_EQ(::pwrite(d.fd(), other.data(), other.size(), 0), 4096);
  ASSERT_EQ(::fsync(d.fd()), 0);
  ASSERT_EQ(::pread(fd, got.data(), got.size(), 0), 4096);
  EXPECT_EQ(got, other);

  loop->reset();
  ::close(fd);
  ::unlink(tmpl);
}

TEST(LoopDeviceTest, MissingImageIsAStorageError) {
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) GTEST_SKIP() << "no /dev/loop-control here";
  ::close(ctl);
  auto loop = LoopDevice::Attach("/nonexistent/romulus/xvdb.img");
  ASSERT_FALSE(loop.ok());
  EXPECT_EQ(loop.status().code(), Code::kStorage);
  EXPECT_NE(loop.status().message().find("/nonexistent/romulus/xvdb.img"), std::string::npos);
}

}  // namespace
}  // namespace romulus::xen

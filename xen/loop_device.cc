#include "xen/loop_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace romulus::xen {

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

// /dev/loopN, created from sysfs' major:minor where no devtmpfs made it
// (a minimal or containerised dom0).
int OpenLoopNode(int n, std::string* path) {
  *path = "/dev/loop" + std::to_string(n);
  int fd = ::open(path->c_str(), O_RDWR | O_CLOEXEC);
  if (fd >= 0 || errno != ENOENT) return fd;
  std::ifstream in("/sys/devices/virtual/block/loop" + std::to_string(n) + "/dev");
  unsigned maj = 0, min = 0;
  char colon = 0;
  if (!(in >> maj >> colon >> min) || colon != ':') {
    errno = ENOENT;
    return -1;
  }
  if (::mknod(path->c_str(), S_IFBLK | 0600, makedev(maj, min)) != 0 && errno != EEXIST) return -1;
  return ::open(path->c_str(), O_RDWR | O_CLOEXEC);
}

// Binds the image to the loop device, with autoclear.
int Configure(int loop_fd, int image_fd, const std::string& image) {
  struct loop_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.fd = static_cast<uint32_t>(image_fd);
  cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
  std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE, "%s", image.c_str());
  if (::ioctl(loop_fd, LOOP_CONFIGURE, &cfg) == 0) return 0;
  if (errno != EINVAL && errno != ENOTTY) return -1;
  // Before Linux 5.8: bind, then set the flags (a moment without autoclear,
  // during which we hold the device open anyway).
  if (::ioctl(loop_fd, LOOP_SET_FD, image_fd) != 0) return -1;
  struct loop_info64 info;
  std::memset(&info, 0, sizeof info);
  info.lo_flags = LO_FLAGS_AUTOCLEAR;
  std::snprintf(reinterpret_cast<char*>(info.lo_file_name), LO_NAME_SIZE, "%s", image.c_str());
  if (::ioctl(loop_fd, LOOP_SET_STATUS64, &info) != 0) {
    const int err = errno;
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    errno = err;
    return -1;
  }
  return 0;
}

}  // namespace

Result<std::unique_ptr<LoopDevice>> LoopDevice::Attach(const std::string& image) {
  Fd img{::open(image.c_str(), O_RDWR | O_CLOEXEC)};
  if (img.fd < 0) return Status::StorageErrno("opening disk image " + image + " for its loop device", errno);
  Fd ctl{::open("/dev/loop-control", O_RDWR | O_CLOEXEC)};
  if (ctl.fd < 0) return Status::StorageErrno("/dev/loop-control (is the loop module loaded?)", errno);
  // Another process may take the free device between GET_FREE and the
  // bind (EBUSY): ask again, a bounded number of times.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int n = ::ioctl(ctl.fd, LOOP_CTL_GET_FREE);
    if (n < 0) return Status::StorageErrno("LOOP_CTL_GET_FREE (no free loop device)", errno);
    std::string path;
    Fd loop{OpenLoopNode(n, &path)};
    if (loop.fd < 0) return Status::StorageErrno("opening " + path, errno);
    if (Configure(loop.fd, img.fd, image) != 0) {
      if (errno == EBUSY) continue;
      return Status::StorageErrno("attaching " + image + " to " + path, errno);
    }
    struct stat st;
    if (::fstat(loop.fd, &st) != 0) return Status::StorageErrno("stat " + path, errno);
    std::unique_ptr<LoopDevice> d(new LoopDevice());
    d->path_ = path;
    d->number_ = n;
    d->major_ = ::major(st.st_rdev);
    d->minor_ = ::minor(st.st_rdev);
    d->fd_ = loop.release();
    return d;
  }
  return Status::Storage("attaching " + image + ": every free loop device was taken by someone else, 16 times");
}

Result<uint64_t> LoopDevice::Sectors() const {
  uint64_t bytes = 0;
  if (::ioctl(fd_, BLKGETSIZE64, &bytes) != 0) return Status::StorageErrno("BLKGETSIZE64 on " + path_, errno);
  return bytes / 512;
}

LoopDevice::~LoopDevice() {
  if (fd_ >= 0) ::close(fd_);  // autoclear: detached now unless blkback holds it
}

}  // namespace romulus::xen

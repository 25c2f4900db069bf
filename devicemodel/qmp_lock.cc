#include "devicemodel/qmp_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>
#include <utility>

namespace romulus::devicemodel {

std::string LibxlQmpLockPath(const std::string& xen_lib_dir, uint32_t domid, const std::string& uuid) {
  return xen_lib_dir + "/userdata-l." + std::to_string(domid) + "." + uuid + ".qmp-socket-lock";
}

namespace {

// Whether `path` still names the file open on `fd`.
bool StillNamed(int fd, const std::string& path) {
  struct stat a {}, b {};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

Result<QmpLock> QmpLock::Acquire(const std::string& path, transport::Deadline deadline) {
  // flock has no timeout: non-blocking attempts, backing off from 1 ms to
  // 16 ms (the holder is usually a short xl operation), until the deadline.
  auto backoff = std::chrono::milliseconds(1);
  for (;;) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return Status::FromErrno("opening the QMP lock " + path, errno);
    for (;;) {
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) break;
      const int err = errno;
      if (err == EINTR) continue;
      if (err != EWOULDBLOCK) {
        ::close(fd);
        return Status::FromErrno("locking " + path, err);
      }
      const auto now = transport::Clock::now();
      if (now >= deadline) {
        ::close(fd);
        return Status::Timeout("the QMP lock " + path +
                               " is held by another process (xl, or another replicator of this guest) "
                               "past the deadline");
      }
      std::this_thread::sleep_for(std::min<transport::Clock::duration>(backoff, deadline - now));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(16));
    }
    if (StillNamed(fd, path)) return QmpLock(fd, path);
    ::close(fd);  // replaced while we waited: lock the file that is there now
    if (transport::Clock::now() >= deadline) {
      return Status::Timeout("the QMP lock " + path + " kept being replaced until the deadline");
    }
  }
}

QmpLock::QmpLock(QmpLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}

QmpLock& QmpLock::operator=(QmpLock&& o) noexcept {
  if (this != &o) {
    Release();
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
  }
  return *this;
}

QmpLock::~QmpLock() { Release(); }

void QmpLock::Release() {
  if (fd_ < 0) return;
  // libxl's protocol: the holder unlinks the file, then unlocks. A waiter
  // then finds the file it locked no longer named and takes a new one, and
  // no lock files pile up. Only the file we hold is unlinked.
  if (StillNamed(fd_, path_)) ::unlink(path_.c_str());
  ::close(fd_);  // closing the last descriptor releases the flock
  fd_ = -1;
}

}  // namespace romulus::devicemodel

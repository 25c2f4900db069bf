#include "common/positional_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace romulus {

Status PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::StorageErrno(what, errno);
    }
    if (w == 0) return Status::StorageErrno(what, EIO);
    p += w;
    off += static_cast<uint64_t>(w);
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status PwritevAll(int fd, std::vector<struct iovec>& iov, uint64_t off, const std::string& what) {
  size_t first = 0;
  while (first < iov.size()) {
    ssize_t w = ::pwritev(fd, iov.data() + first, static_cast<int>(iov.size() - first), static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::StorageErrno(what, errno);
    }
    if (w == 0) return Status::StorageErrno(what, EIO);
    off += static_cast<uint64_t>(w);
    size_t left = static_cast<size_t>(w);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left > 0) {  // part of one buffer went out
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return Status::Ok();
}

Status PreadAll(int fd, uint8_t* p, size_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::StorageErrno(what, errno);
    }
    if (r == 0) return Status::Storage(what + ": unexpected end of file");
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status ReserveFileRange(int fd, uint64_t off, uint64_t len, bool* supported, const std::string& what) {
  if (::fallocate(fd, 0, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) return Status::Ok();
  if (errno == EOPNOTSUPP) {
    *supported = false;
    return Status::Ok();
  }
  return Status::StorageErrno(what, errno);
}

}  // namespace romulus

#include "disk/backing_store.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace romulus::disk {
namespace {

// The buffer's memory alignment: enough for O_DIRECT on any device (logical
// blocks are 512 or 4096 bytes).
constexpr size_t kBufferAlign = 4096;
// The offset alignment used for regular files: always valid for O_DIRECT,
// whatever the file system's device (its logical block size divides it).
constexpr uint32_t kFileAlign = 4096;

bool Unsupported(int err) { return err == EOPNOTSUPP || err == ENOTTY || err == ENODEV; }

}  // namespace

Result<std::unique_ptr<BackingStore>> BackingStore::Open(const std::string& path,
                                                         const BackingStoreOptions& options) {
  if (options.max_request == 0 || options.max_request > (1u << 30)) {
    return Status::InvalidArgument("disk " + path + ": max_request must be 1 byte … 1 GiB");
  }
  std::unique_ptr<BackingStore> s(new BackingStore());
  s->options_ = options;
  s->path_ = path;
  const int base = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;

  int fd = ::open(path.c_str(), base);
  if (fd < 0) return Status::StorageErrno("opening disk " + path, errno);
  struct stat st {};
  if (::fstat(fd, &st) < 0) {
    int err = errno;
    ::close(fd);
    return Status::StorageErrno("stat of disk " + path, err);
  }
  if (S_ISBLK(st.st_mode)) {
    s->block_device_ = true;
    uint64_t bytes = 0;
    int lbs = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) < 0 || ::ioctl(fd, BLKSSZGET, &lbs) < 0) {
      int err = errno;
      ::close(fd);
      return Status::StorageErrno("size of block device " + path, err);
    }
    s->size_ = bytes;
    s->align_ = lbs > 0 ? static_cast<uint32_t>(lbs) : 512;
  } else if (S_ISREG(st.st_mode)) {
    s->size_ = static_cast<uint64_t>(st.st_size);
    s->align_ = kFileAlign;
  } else {
    ::close(fd);
    return Status::InvalidArgument("disk " + path + " is neither a regular file nor a block device");
  }
  if (s->align_ > kBufferAlign || (s->align_ & (s->align_ - 1)) != 0) {
    ::close(fd);
    return Status::Unsupported("disk " + path + ": logical block size " + std::to_string(s->align_) +
                               " is not a power of two <= 4096");
  }

  // O_DIRECT: tried, and probed with one aligned read, because some file
  // systems accept the flag at open and refuse the first I/O.
  std::string why_not;
  if (options.direct == DirectIo::kOff) {
    why_not = "O_DIRECT off by configuration";
  } else if (s->size_ % s->align_ != 0) {
    // The last block could not be written whole without growing the file.
    why_not = "size is not a multiple of " + std::to_string(s->align_) + " bytes";
  } else {
    int dfd = ::open(path.c_str(), base | O_DIRECT);
    if (dfd < 0) {
      why_not = std::string("O_DIRECT refused: ") + std::strerror(errno);
    } else {
      void* probe = nullptr;
      if (::posix_memalign(&probe, kBufferAlign, kBufferAlign) != 0) {
        ::close(dfd);
        ::close(fd);
        return Status::Storage("disk " + path + ": out of memory for the probe block");
      }
      ssize_t n = s->size_ >= s->align_ ? ::pread(dfd, probe, s->align_, 0) : 0;
      int err = errno;
      std::free(probe);
      if (n < 0) {
        why_not = std::string("O_DIRECT read refused: ") + std::strerror(err);
        ::close(dfd);
      } else {
        ::close(fd);
        fd = dfd;
        s->direct_ = true;
      }
    }
  }
  if (!s->direct_) {
    if (options.direct == DirectIo::kRequire) {
      ::close(fd);
      return Status::Unsupported("disk " + path + ": " + why_not + " (O_DIRECT required)");
    }
    s->align_ = 1;
    s->io_mode_ = "buffered (" + why_not + "; FLUSH and FUA still fdatasync)";
  } else {
    s->io_mode_ = "O_DIRECT, " + std::to_string(s->align_) + "-byte blocks";
  }
  s->fd_ = fd;

  // The bounce buffer: the largest request plus one block on each side for
  // the read-modify-write of unaligned edges; allocated once, here.
  s->bounce_size_ = size_t{options.max_request} + 2 * kBufferAlign;
  void* bounce = nullptr;
  void* scratch = nullptr;
  if (::posix_memalign(&bounce, kBufferAlign, s->bounce_size_) != 0 ||
      ::posix_memalign(&scratch, kBufferAlign, kBufferAlign) != 0) {
    std::free(bounce);
    return Status::Storage("disk " + path + ": cannot allocate " + std::to_string(s->bounce_size_) +
                           " bytes of I/O buffer");
  }
  s->bounce_ = static_cast<uint8_t*>(bounce);
  s->scratch_ = static_cast<uint8_t*>(scratch);
  return s;
}

BackingStore::~BackingStore() {
  if (fd_ >= 0) ::close(fd_);
  std::free(bounce_);
  std::free(scratch_);
}

Status BackingStore::Fail(const std::string& what, int err) {
  last_errno_ = err;
  return Status::StorageErrno("disk " + path_ + ": " + what, err);
}

bool BackingStore::InBounds(uint64_t offset, uint64_t length) const {
  return offset <= size_ && length <= size_ - offset;
}

Status BackingStore::PreadFull(uint8_t* buf, size_t len, uint64_t offset) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd_, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail("read at " + std::to_string(offset + done), errno);
    }
    if (n == 0) return Fail("short read at " + std::to_string(offset + done) + " (store shrank?)", EIO);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status BackingStore::PwriteFull(const uint8_t* buf, size_t len, uint64_t offset, bool dsync) {
  size_t done = 0;
  bool use_flag = dsync && dsync_flag_works_;
  while (done < len) {
    ssize_t n;
    if (use_flag) {
      iovec iov{const_cast<uint8_t*>(buf + done), len - done};
      n = ::pwritev2(fd_, &iov, 1, static_cast<off_t>(offset + done), RWF_DSYNC);
      if (n < 0 && errno == EOPNOTSUPP) {
        dsync_flag_works_ = false;  // an old kernel: pwrite, then fdatasync
        use_flag = false;
        continue;
      }
    } else {
      n = ::pwrite(fd_, buf + done, len - done, static_cast<off_t>(offset + done));
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail("write at " + std::to_string(offset + done), errno);
    }
    if (n == 0) return Fail("write at " + std::to_string(offset + done) + " wrote nothing", EIO);
    done += static_cast<size_t>(n);
  }
  if (dsync && !use_flag) return Flush();
  return Status::Ok();
}

Result<std::span<const uint8_t>> BackingStore::Read(uint64_t offset, uint32_t length) {
  if (length > options_.max_request || !InBounds(offset, length)) {
    last_errno_ = EINVAL;
    return Status::InvalidArgument("disk " + path_ + ": read of " + std::to_string(length) +
                                   " bytes at " + std::to_string(offset) + " is out of bounds");
  }
  pending_ = false;
  if (length == 0) return std::span<const uint8_t>();
  uint64_t a_off = offset / align_ * align_;
  uint64_t a_end = (offset + length + align_ - 1) / align_ * align_;
  ROMULUS_RETURN_IF_ERROR(PreadFull(bounce_, a_end - a_off, a_off));
  return std::span<const uint8_t>(bounce_ + (offset - a_off), length);
}

std::span<uint8_t> BackingStore::WriteBuffer(uint64_t offset, uint32_t length) {
  pending_ = false;
  if (length > options_.max_request || !InBounds(offset, length)) return {};
  pending_ = true;
  pending_offset_ = offset;
  pending_length_ = length;
  return std::span<uint8_t>(bounce_ + (offset % align_), length);
}

Status BackingStore::Write(uint64_t offset, uint32_t length, bool fua) {
  if (options_.read_only) return Fail("write to a read-only disk", EPERM);
  if (!pending_ || pending_offset_ != offset || pending_length_ != length) {
    last_errno_ = EINVAL;
    return Status::Internal("disk " + path_ + ": Write without a matching WriteBuffer");
  }
  pending_ = false;
  if (length == 0) return Status::Ok();
  uint64_t a_off = offset / align_ * align_;
  uint64_t end = offset + length;
  uint64_t a_end = (end + align_ - 1) / align_ * align_;
  // Read-modify-write of the edge blocks: the payload already sits at
  // bounce_ + (offset - a_off); the bytes around it come from the store.
  if (offset != a_off) {
    ROMULUS_RETURN_IF_ERROR(PreadFull(scratch_, align_, a_off));
    std::memcpy(bounce_, scratch_, offset - a_off);
  }
  if (end != a_end) {
    uint64_t tail = a_end - align_;
    ROMULUS_RETURN_IF_ERROR(PreadFull(scratch_, align_, tail));
    std::memcpy(bounce_ + (end - a_off), scratch_ + (end - tail), a_end - end);
  }
  return PwriteFull(bounce_, a_end - a_off, a_off, fua);
}

Status BackingStore::ZeroFill(uint64_t offset, uint64_t length) {
  while (length > 0) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length, options_.max_request));
    std::span<uint8_t> buf = WriteBuffer(offset, n);
    std::memset(buf.data(), 0, buf.size());
    ROMULUS_RETURN_IF_ERROR(Write(offset, n, false));
    offset += n;
    length -= n;
  }
  return Status::Ok();
}

Status BackingStore::WriteZeroes(uint64_t offset, uint64_t length, bool may_punch, bool fua) {
  if (options_.read_only) return Fail("zeroing a read-only disk", EPERM);
  if (!InBounds(offset, length)) {
    last_errno_ = ENOSPC;
    return Status::InvalidArgument("disk " + path_ + ": zeroing beyond the end");
  }
  if (length == 0) return Status::Ok();
  bool done = false;
  // Cheapest first: a hole (when allowed), a zero range, then written zeros.
  // EINVAL too means "not for this range here" (a block device refuses
  // ranges not aligned to its blocks): fall through to the next way.
  const int modes[2] = {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE};
  for (int i = may_punch ? 0 : 1; i < 2 && !done; ++i) {
    if (::fallocate(fd_, modes[i], static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) {
      done = true;
    } else if (!Unsupported(errno) && errno != EINVAL) {
      return Fail("zeroing " + std::to_string(length) + " bytes at " + std::to_string(offset), errno);
    }
  }
  if (!done) ROMULUS_RETURN_IF_ERROR(ZeroFill(offset, length));
  return fua ? Flush() : Status::Ok();
}

Result<bool> BackingStore::Trim(uint64_t offset, uint64_t length, bool fua) {
  if (options_.read_only) return Fail("trimming a read-only disk", EPERM);
  if (!InBounds(offset, length)) {
    last_errno_ = EINVAL;
    return Status::InvalidArgument("disk " + path_ + ": trim beyond the end");
  }
  if (length == 0) return false;
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    if (Unsupported(errno) || errno == EINVAL) return false;  // advisory: data kept
    return Fail("punching " + std::to_string(length) + " bytes at " + std::to_string(offset), errno);
  }
  if (fua) ROMULUS_RETURN_IF_ERROR(Flush());
  return true;
}

Status BackingStore::Flush() {
  while (::fdatasync(fd_) != 0) {
    if (errno != EINTR) return Fail("fdatasync", errno);
  }
  return Status::Ok();
}

uint64_t BackingStore::DataFrom(uint64_t offset) const {
  if (offset >= size_) return size_;
  const off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
  if (at < 0) return errno == ENXIO ? size_ : offset;  // ENXIO: a hole up to the end
  return std::min<uint64_t>(static_cast<uint64_t>(at), size_);
}

}  // namespace romulus::disk

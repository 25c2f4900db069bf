#include "devicemodel/device_state_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "common/positional_io.h"

namespace romulus::devicemodel {

Result<DeviceStateFile> DeviceStateFile::Create(size_t max_bytes) {
  if (max_bytes == 0) return Status::InvalidArgument("device state: a bound of 0 bytes admits no state");
  const int rfd = ::memfd_create("romulus-device-state", MFD_CLOEXEC);
  if (rfd < 0) return Status::FromErrno("device state: memfd_create", errno);
  // A second open file of the same memfd, write-only (the access mode QEMU
  // asks of an fd set it writes to), through /proc's link to it.
  const std::string self = "/proc/self/fd/" + std::to_string(rfd);
  const int wfd = ::open(self.c_str(), O_WRONLY | O_CLOEXEC);
  if (wfd < 0) {
    const int err = errno;
    ::close(rfd);
    return Status::FromErrno("device state: reopening the memfd write-only (" + self + "; is /proc mounted?)", err);
  }
  return DeviceStateFile(rfd, wfd, max_bytes);
}

DeviceStateFile::DeviceStateFile(DeviceStateFile&& o) noexcept
    : read_fd_(std::exchange(o.read_fd_, -1)), write_fd_(std::exchange(o.write_fd_, -1)), max_bytes_(o.max_bytes_) {}

DeviceStateFile& DeviceStateFile::operator=(DeviceStateFile&& o) noexcept {
  if (this != &o) {
    CloseFds();
    read_fd_ = std::exchange(o.read_fd_, -1);
    write_fd_ = std::exchange(o.write_fd_, -1);
    max_bytes_ = o.max_bytes_;
  }
  return *this;
}

DeviceStateFile::~DeviceStateFile() { CloseFds(); }

void DeviceStateFile::CloseFds() {
  if (read_fd_ >= 0) ::close(read_fd_);
  if (write_fd_ >= 0) ::close(write_fd_);
  read_fd_ = write_fd_ = -1;
}

Status DeviceStateFile::Reset() {
  if (::ftruncate(read_fd_, 0) != 0) return Status::FromErrno("device state: emptying the memfd", errno);
  if (::lseek(write_fd_, 0, SEEK_SET) != 0) return Status::FromErrno("device state: rewinding the memfd", errno);
  return Status::Ok();
}

Status DeviceStateFile::ReadInto(std::vector<uint8_t>* out) const {
  struct stat st {};
  if (::fstat(read_fd_, &st) != 0) return Status::FromErrno("device state: fstat of the memfd", errno);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size == 0) return Status::Corruption("device state: the device model wrote nothing");
  if (size > max_bytes_) {
    return Status::OutOfRange("device state: the device model wrote " + std::to_string(size) +
                              " bytes, more than the bound of " + std::to_string(max_bytes_));
  }
  out->resize(static_cast<size_t>(size));
  return PreadAll(read_fd_, out->data(), out->size(), 0, "device state memfd");
}

}  // namespace romulus::devicemodel

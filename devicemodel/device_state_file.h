// DeviceStateFile: the in-memory file (memfd) an HVM guest's device model
// writes one checkpoint's device state into (DeviceModel::
// SaveDevicesStateToFd), reused epoch after epoch and read back bounded.
// Nothing touches a file system: the state goes from QEMU to Romulus'
// memory, and a crash leaves nothing behind.
//
// Two descriptors of one file: QEMU takes only an O_WRONLY one for its fd
// set (write_fd), Romulus reads through the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"

namespace romulus::devicemodel {

class DeviceStateFile {
 public:
  // A state larger than `max_bytes` is refused when read (OutOfRange).
  static Result<DeviceStateFile> Create(size_t max_bytes);
  DeviceStateFile(DeviceStateFile&& o) noexcept;
  DeviceStateFile& operator=(DeviceStateFile&& o) noexcept;
  DeviceStateFile(const DeviceStateFile&) = delete;
  DeviceStateFile& operator=(const DeviceStateFile&) = delete;
  ~DeviceStateFile();

  // Empties the file and rewinds the write descriptor: call before each
  // save. The write descriptor is the one to hand QEMU (it gets its own
  // copy of the same open file, whose offset this rewinds).
  Status Reset();
  int write_fd() const { return write_fd_; }

  // What was written since Reset, into *out (resized; its capacity is kept
  // from epoch to epoch). An empty file is Corruption (QEMU answered but
  // wrote nothing), one over max_bytes OutOfRange, both naming the size.
  Status ReadInto(std::vector<uint8_t>* out) const;
  size_t max_bytes() const { return max_bytes_; }

 private:
  DeviceStateFile(int read_fd, int write_fd, size_t max_bytes)
      : read_fd_(read_fd), write_fd_(write_fd), max_bytes_(max_bytes) {}
  void CloseFds();
  int read_fd_ = -1;
  int write_fd_ = -1;
  size_t max_bytes_ = 0;
};

}  // namespace romulus::devicemodel

// A loop block device over a disk image, for blkback (docs/DISK.md §8):
// attached with the kernel's loop ioctls (LOOP_CTL_GET_FREE, then
// LOOP_CONFIGURE, or LOOP_SET_FD + LOOP_SET_STATUS64 on kernels before
// 5.8), never by running losetup. Linux-only, Xen-free.
//
// LO_FLAGS_AUTOCLEAR: the device detaches from the image when its last
// opener closes it. The LoopDevice keeps it open until it is destroyed, so
// it stays attached until blkback has opened it (blkback then holds it for
// the guest's life, and the device goes away with the guest's disk); a
// device blkback never opened goes away with the LoopDevice. The owner must
// therefore see blkback open it before letting go (XenReplica waits for
// blkback's physical_device attribute before it unpauses the guest).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "disk/block_device.h"

namespace romulus::xen {

class LoopDevice final : public disk::BlockDevice {
 public:
  // Attaches image (read-write) to a free loop device. Storage on failure
  // (no /dev/loop-control, no free device, the image cannot be opened).
  static Result<std::unique_ptr<LoopDevice>> Attach(const std::string& image);
  ~LoopDevice() override;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  const std::string& path() const override { return path_; }  // "/dev/loop3"
  int number() const { return number_; }
  uint32_t dev_major() const override { return major_; }
  uint32_t dev_minor() const override { return minor_; }
  int fd() const { return fd_; }
  // The device's size now (BLKGETSIZE64), in 512-byte sectors: 0 once it
  // lost its image.
  Result<uint64_t> Sectors() const override;

 private:
  LoopDevice() = default;
  std::string path_;
  int number_ = -1;
  int fd_ = -1;
  uint32_t major_ = 0, minor_ = 0;
};

}  // namespace romulus::xen

// A block device over a disk image, as a hypervisor's disk backend opens it:
// what blkback is given for one disk of an activated guest (docs/DISK.md
// §8).
//
// Two kinds exist: a loop device over the backup's image (xen/loop_device.h,
// the default: nothing outside this process), and the image served by a
// `romulus disk-export` through the kernel NBD client (disk/exported_disk.h),
// which lets the activated guest's writes be replicated again
// (restore --reverse-to, docs/DISK.md §8b).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace romulus::disk {

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  virtual const std::string& path() const = 0;  // "/dev/loop3", "/dev/nbd1"
  virtual uint32_t dev_major() const = 0;
  virtual uint32_t dev_minor() const = 0;
  // The device's size now, in 512-byte sectors (0 once it lost its image).
  virtual Result<uint64_t> Sectors() const = 0;
  // blkback holds the device for the guest: from now on the guest depends
  // on it, so whatever serves it must outlive its owner.
  virtual void Served() {}
};

// At activation, the device for one disk image (`vdev`: "xvdb"). Returning
// null means "a loop device over the image" (the default, also the fallback
// when the kind asked for cannot be made: a guest must not stay paused
// because its disk could not be made replicable).
using BlockDeviceFactory =
    std::function<std::unique_ptr<BlockDevice>(const std::string& image, const std::string& vdev)>;

}  // namespace romulus::disk

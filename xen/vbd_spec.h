// The guest's virtual block devices as the backup recreates them at
// activation (docs/DISK.md §8): which disk names it accepts, the xenstore
// device number each one has, and the xenstore nodes that make dom0's
// blkback serve an image to the activated guest. Xen-free and pure, so it
// is unit-tested without a hypervisor (tests/xen/vbd_spec_test.cc); the
// writing is xen/xen_replica.cc.
//
// Names (a disk's name comes from the primary's HELLO and becomes a file
// name and a vdev, so only these are accepted, whole disks only):
//   xvd[a-z]{1,2}  Xen virtual disks 0..701 (a=0 … z=25, aa=26 … zz=701)
//   sd[a-p]        SCSI-style disks 0..15
//   hd[a-d]        IDE-style disks 0..3
// Device numbers (Xen's docs/man/xen-vbd-interface.7, partition 0):
//   xvd, disk < 16     202 << 8 | disk << 4        (xvda 51712, xvdb 51728)
//   xvd, disk >= 16    1 << 28 | disk << 8
//   sd                 8 << 8 | disk << 4
//   hd, disks 0..1     3 << 8 | disk << 6
//   hd, disks 2..3     22 << 8 | (disk - 2) << 6
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace romulus::xen {

// The xenstore device number of a whole-disk vdev name; InvalidArgument
// naming the accepted forms for anything else (partitions, upper case,
// paths, "xvda1", "xvdaaa", "sdq", "nvme0n1").
Result<uint32_t> VbdDevid(std::string_view vdev);

// One disk of the activated guest, served by blkback from a block device
// (disk/block_device.h: a loop device over the backup's image, or its disk export).
struct VbdDevice {
  std::string vdev;        // "xvdb"
  uint32_t devid = 0;      // VbdDevid(vdev)
  std::string params;      // what backs it, for people reading xenstore: the image path
  uint32_t major = 0, minor = 0;  // the block device blkback opens (physical-device)
};

using XsNodes = std::vector<std::pair<std::string, std::string>>;

// The nodes a PV disk needs, as libxl writes them for phy: disks, in the
// order they are written (one transaction): the backend directory
// /local/domain/0/backend/vbd/<domid>/<devid> (frontend, frontend-id,
// online, state 1, params, type phy, mode w, dev, physical-device
// "<major hex>:<minor hex>", removable 0, bootable 1, device-type disk)
// and the frontend directory /local/domain/<domid>/device/vbd/<devid>
// (backend, backend-id 0, state 1, virtual-device, device-type disk).
// blkback opens the device as soon as physical-device is there: no hotplug
// script is involved (the block script's only job is to find that number).
XsNodes VbdBackendNodes(uint32_t domid, const VbdDevice& d);
XsNodes VbdFrontendNodes(uint32_t domid, const VbdDevice& d);
std::string VbdBackendPath(uint32_t domid, uint32_t devid);
std::string VbdFrontendPath(uint32_t domid, uint32_t devid);

// blkback has opened a disk's block device once it has published the
// device's sysfs attribute /sys/bus/xen-backend/devices/vbd-<domid>-<devid>/
// physical_device ("<major hex>:<minor hex>"). Until then the only opener of
// the loop device is the backup, and an autoclear loop device detaches
// when the backup lets go: blkback would then open an unbound device and
// announce 0 sectors, and the resumed guest's blkfront would shrink the
// disk to nothing (every write ENOSPC; found in the lab, docs/DISK.md §8).
std::string VbdBackendSysfsPhysicalDevice(uint32_t domid, uint32_t devid);
// Whether a vbd backend's physical-device node ("<major hex>:<minor hex>",
// as libxl and the block scripts write it) names the block device
// major:minor: how the primary checks that an HVM guest's emulated IDE disk
// is the device blkback serves the same disk from. Strict: hex digits only,
// one colon, nothing else.
bool PhysicalDeviceIs(const std::string& node_value, uint32_t major, uint32_t minor);
// Where blkback writes why it gave up on a disk (xenbus' fatal-error node).
std::string VbdBackendErrorPath(uint32_t domid, uint32_t devid);

// What the backup makes of one look at a new disk's backend while it
// waits for blkback, before it lets the guest run.
enum class VbdBackendProgress {
  kWaiting,  // blkback has not opened the device yet
  kServed,   // blkback holds the device it was given
  kFailed,   // blkback gave up (state Closing/Closed), holds another device, or the device is empty
};
struct VbdBackendLook {
  std::string state;            // the backend's xenstore state node, "" when unreadable
  bool sysfs_present = false;   // VbdBackendSysfsPhysicalDevice exists
  std::string sysfs_physical;   // its contents when present
  uint64_t device_sectors = 0;  // the size of the device the backup attached
};
// Why, in words, when kFailed (and for the timeout message otherwise).
VbdBackendProgress JudgeVbdBackend(const VbdDevice& d, const VbdBackendLook& look, std::string* why);

}  // namespace romulus::xen

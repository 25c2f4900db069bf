#include "xen/vbd_spec.h"

#include <cstdio>
#include <cstdlib>

namespace romulus::xen {

namespace {

constexpr const char* kAccepted = "whole-disk names xvd[a-z] or xvd[a-z][a-z], sd[a-p] or hd[a-d]";

bool AllLower(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < 'a' || c > 'z') return false;
  }
  return true;
}

// "a" = 0 … "z" = 25, "aa" = 26 … "zz" = 701 (bijective base 26, as Xen
// and Linux name their xvd disks).
uint32_t DiskIndex(std::string_view letters) {
  uint32_t n = 0;
  for (char c : letters) n = n * 26 + uint32_t(c - 'a' + 1);
  return n - 1;
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%x", v);
  return buf;
}

}  // namespace

Result<uint32_t> VbdDevid(std::string_view vdev) {
  auto refuse = [&] {
    std::string shown(vdev.substr(0, 32));
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    }
    return Status::InvalidArgument("disk name \"" + shown + "\" is not a vdev this backup accepts (" + kAccepted +
                                   "): it names the image file and the activated guest's virtual disk");
  };
  if (vdev.size() >= 4 && vdev.size() <= 5 && vdev.substr(0, 3) == "xvd" && AllLower(vdev.substr(3))) {
    const uint32_t disk = DiskIndex(vdev.substr(3));
    if (disk < 16) return (uint32_t{202} << 8) | (disk << 4);
    return (uint32_t{1} << 28) | (disk << 8);
  }
  if (vdev.size() == 3 && vdev.substr(0, 2) == "sd" && vdev[2] >= 'a' && vdev[2] <= 'p') {
    return (uint32_t{8} << 8) | (uint32_t(vdev[2] - 'a') << 4);
  }
  if (vdev.size() == 3 && vdev.substr(0, 2) == "hd" && vdev[2] >= 'a' && vdev[2] <= 'd') {
    const uint32_t disk = uint32_t(vdev[2] - 'a');
    if (disk < 2) return (uint32_t{3} << 8) | (disk << 6);
    return (uint32_t{22} << 8) | ((disk - 2) << 6);
  }
  return refuse();
}

std::string VbdBackendPath(uint32_t domid, uint32_t devid) {
  return "/local/domain/0/backend/vbd/" + std::to_string(domid) + "/" + std::to_string(devid);
}

std::string VbdFrontendPath(uint32_t domid, uint32_t devid) {
  return "/local/domain/" + std::to_string(domid) + "/device/vbd/" + std::to_string(devid);
}

XsNodes VbdBackendNodes(uint32_t domid, const VbdDevice& d) {
  const std::string be = VbdBackendPath(domid, d.devid);
  return {
      {be + "/frontend", VbdFrontendPath(domid, d.devid)},
      {be + "/frontend-id", std::to_string(domid)},
      {be + "/online", "1"},
      {be + "/state", "1"},  // XenbusStateInitialising
      {be + "/params", d.params},
      {be + "/type", "phy"},
      {be + "/mode", "w"},
      {be + "/dev", d.vdev},
      {be + "/removable", "0"},
      {be + "/bootable", "1"},
      {be + "/device-type", "disk"},
      // blkback opens this device when its watch sees the node (all of
      // them appear at once: one transaction), reading mode and device-type.
      {be + "/physical-device", Hex(d.major) + ":" + Hex(d.minor)},
  };
}

XsNodes VbdFrontendNodes(uint32_t domid, const VbdDevice& d) {
  const std::string fe = VbdFrontendPath(domid, d.devid);
  return {
      {fe + "/backend", VbdBackendPath(domid, d.devid)},
      {fe + "/backend-id", "0"},
      {fe + "/state", "1"},
      {fe + "/virtual-device", std::to_string(d.devid)},
      {fe + "/device-type", "disk"},
  };
}

}  // namespace romulus::xen

namespace romulus::xen {

std::string VbdBackendSysfsPhysicalDevice(uint32_t domid, uint32_t devid) {
  return "/sys/bus/xen-backend/devices/vbd-" + std::to_string(domid) + "-" + std::to_string(devid) +
         "/physical_device";
}

std::string VbdBackendErrorPath(uint32_t domid, uint32_t devid) {
  return "/local/domain/0/error/backend/vbd/" + std::to_string(domid) + "/" + std::to_string(devid) + "/error";
}

VbdBackendProgress JudgeVbdBackend(const VbdDevice& d, const VbdBackendLook& look, std::string* why) {
  char expected[32];
  std::snprintf(expected, sizeof expected, "%x:%x", d.major, d.minor);
  // xenbus states 5 and 6 (Closing, Closed): blkback called the device
  // fatal (it writes why under /local/domain/0/error) and will not serve it.
  if (look.state == "5" || look.state == "6") {
    *why = "blkback closed the disk (backend state " + look.state + ")";
    return VbdBackendProgress::kFailed;
  }
  if (look.device_sectors == 0) {
    *why = "the device over the image (" + d.params + ") has 0 sectors";
    return VbdBackendProgress::kFailed;
  }
  if (!look.sysfs_present) {
    *why = "blkback has not opened " + std::string(expected) + " (backend state " +
           (look.state.empty() ? std::string("unreadable") : look.state) + ")";
    return VbdBackendProgress::kWaiting;
  }
  std::string got = look.sysfs_physical;
  while (!got.empty() && (got.back() == '\n' || got.back() == ' ')) got.pop_back();
  if (got != expected) {
    *why = "blkback holds device " + got + ", not " + expected;
    return VbdBackendProgress::kFailed;
  }
  why->clear();
  return VbdBackendProgress::kServed;
}

bool PhysicalDeviceIs(const std::string& node_value, uint32_t major, uint32_t minor) {
  const size_t colon = node_value.find(':');
  if (colon == std::string::npos) return false;
  auto hex = [](const std::string& s, uint32_t* out) {
    if (s.empty() || s.size() > 8 || s.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return false;
    *out = static_cast<uint32_t>(std::strtoul(s.c_str(), nullptr, 16));
    return true;
  };
  uint32_t ma = 0, mi = 0;
  return hex(node_value.substr(0, colon), &ma) && hex(node_value.substr(colon + 1), &mi) && ma == major &&
         mi == minor;
}

}  // namespace romulus::xen

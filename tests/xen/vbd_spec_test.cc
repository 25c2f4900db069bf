// The backup's VBDs (xen/vbd_spec.h): which disk names it accepts, their
// xenstore device numbers (Xen's xen-vbd-interface(7)), and the exact nodes
// that make blkback serve an image to the activated guest.
#include "xen/vbd_spec.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace romulus::xen {
namespace {

uint32_t Devid(const std::string& vdev) {
  auto r = VbdDevid(vdev);
  EXPECT_TRUE(r.ok()) << vdev << ": " << r.status().ToString();
  return r.ok() ? *r : 0;
}

TEST(VbdSpecTest, XvdNumbersAsXenDefinesThem) {
  EXPECT_EQ(Devid("xvda"), 51712u);  // 202 << 8
  EXPECT_EQ(Devid("xvdb"), 51728u);  // 202 << 8 | 1 << 4
  EXPECT_EQ(Devid("xvdp"), (202u << 8) | (15u << 4));
  // Disk 16 on: the extended form, 1 << 28 | disk << 8.
  EXPECT_EQ(Devid("xvdq"), (1u << 28) | (16u << 8));
  EXPECT_EQ(Devid("xvdz"), (1u << 28) | (25u << 8));
  EXPECT_EQ(Devid("xvdaa"), (1u << 28) | (26u << 8));
  EXPECT_EQ(Devid("xvdba"), (1u << 28) | (52u << 8));
  EXPECT_EQ(Devid("xvdzz"), (1u << 28) | (701u << 8));
}

TEST(VbdSpecTest, ScsiAndIdeStyleNames) {
  EXPECT_EQ(Devid("sda"), 8u << 8);
  EXPECT_EQ(Devid("sdb"), (8u << 8) | (1u << 4));
  EXPECT_EQ(Devid("sdp"), (8u << 8) | (15u << 4));
  EXPECT_EQ(Devid("hda"), 3u << 8);
  EXPECT_EQ(Devid("hdb"), (3u << 8) | (1u << 6));
  EXPECT_EQ(Devid("hdc"), 22u << 8);
  EXPECT_EQ(Devid("hdd"), (22u << 8) | (1u << 6));
}

TEST(VbdSpecTest, RefusesWhatCouldNotBeAFileNameAndAVdev) {
  for (const char* bad : {"", "xvd", "xvda1", "xvdaaa", "XVDA", "xvdA", "sdq", "sd", "hde", "hd", "nvme0n1",
                          "../xvda", "xvd/a", "xvda ", " xvda", "xvda\n", "vda", "xvd-a", "d0p0", "51712"}) {
    auto r = VbdDevid(bad);
    ASSERT_FALSE(r.ok()) << "\"" << bad << "\" was accepted as " << *r;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("xvd[a-z]"), std::string::npos) << r.status().message();
  }
  // A name with control bytes is shown, not echoed raw.
  auto r = VbdDevid(std::string("xv\x1b[2Jd"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find('\x1b'), std::string::npos);
}

TEST(VbdSpecTest, BlkbackNodesForOneDisk) {
  VbdDevice d;
  d.vdev = "xvdb";
  d.devid = 51728;
  d.params = "/var/lib/romulus/g1--incoming.xvdb.img";
  d.major = 7;
  d.minor = 3;
  const std::string be = "/local/domain/0/backend/vbd/12/51728";
  const std::string fe = "/local/domain/12/device/vbd/51728";
  EXPECT_EQ(VbdBackendPath(12, 51728), be);
  EXPECT_EQ(VbdFrontendPath(12, 51728), fe);
  const XsNodes want_be = {
      {be + "/frontend", fe},
      {be + "/frontend-id", "12"},
      {be + "/online", "1"},
      {be + "/state", "1"},
      {be + "/params", "/var/lib/romulus/g1--incoming.xvdb.img"},
      {be + "/type", "phy"},
      {be + "/mode", "w"},
      {be + "/dev", "xvdb"},
      {be + "/removable", "0"},
      {be + "/bootable", "1"},
      {be + "/device-type", "disk"},
      {be + "/physical-device", "7:3"},
  };
  EXPECT_EQ(VbdBackendNodes(12, d), want_be);
  const XsNodes want_fe = {
      {fe + "/backend", be},
      {fe + "/backend-id", "0"},
      {fe + "/state", "1"},
      {fe + "/virtual-device", "51728"},
      {fe + "/device-type", "disk"},
  };
  EXPECT_EQ(VbdFrontendNodes(12, d), want_fe);
}

TEST(VbdSpecTest, PhysicalDeviceIsHex) {
  VbdDevice d;
  d.vdev = "xvda";
  d.devid = 51712;
  d.major = 259;
  d.minor = 26;
  std::map<std::string, std::string> nodes;
  for (const auto& [k, v] : VbdBackendNodes(1, d)) nodes[k] = v;
  EXPECT_EQ(nodes["/local/domain/0/backend/vbd/1/51712/physical-device"], "103:1a");
}

// The backup lets the activated guest run only once blkback holds the very
// device it was given, with a non-zero size (the ENOSPC found in the lab).
TEST(VbdSpecTest, JudgesBlkbackBeforeTheGuestRuns) {
  VbdDevice d;
  d.vdev = "xvdb";
  d.devid = 51728;
  d.major = 7;
  d.minor = 26;
  EXPECT_EQ(VbdBackendSysfsPhysicalDevice(3, 51728), "/sys/bus/xen-backend/devices/vbd-3-51728/physical_device");
  EXPECT_EQ(VbdBackendErrorPath(3, 51728), "/local/domain/0/error/backend/vbd/3/51728/error");
  std::string why;
  VbdBackendLook look;
  look.state = "1";
  look.device_sectors = 2048;
  EXPECT_EQ(JudgeVbdBackend(d, look, &why), VbdBackendProgress::kWaiting);
  EXPECT_NE(why.find("7:1a"), std::string::npos) << why;
  look.state = "2";
  look.sysfs_present = true;
  look.sysfs_physical = "7:1a\n";
  EXPECT_EQ(JudgeVbdBackend(d, look, &why), VbdBackendProgress::kServed);
  EXPECT_TRUE(why.empty());
  look.sysfs_physical = "7:1b\n";  // somebody else's device
  EXPECT_EQ(JudgeVbdBackend(d, look, &why), VbdBackendProgress::kFailed);
  EXPECT_NE(why.find("7:1b"), std::string::npos) << why;
  look.sysfs_physical = "7:1a\n";
  look.device_sectors = 0;  // the loop device lost its image
  EXPECT_EQ(JudgeVbdBackend(d, look, &why), VbdBackendProgress::kFailed);
  look.device_sectors = 2048;
  for (const char* closed : {"5", "6"}) {
    look.state = closed;
    EXPECT_EQ(JudgeVbdBackend(d, look, &why), VbdBackendProgress::kFailed) << closed;
    EXPECT_NE(why.find("state"), std::string::npos) << why;
  }
  look.state = "";
  look.sysfs_present = false;
  EXPECT_EQ(JudgeVbdBackend(d, look, &why), VbdBackendProgress::kWaiting);
  EXPECT_NE(why.find("unreadable"), std::string::npos) << why;
}

// The primary's check that an emulated IDE disk is the vbd's own device.
TEST(PhysicalDeviceIs, OnlyTheExactMajorMinor) {
  EXPECT_TRUE(PhysicalDeviceIs("2b:0", 43, 0));    // /dev/nbd0, as block-lab and libxl write it
  EXPECT_TRUE(PhysicalDeviceIs("7:1f", 7, 31));    // a loop device
  EXPECT_TRUE(PhysicalDeviceIs("FE:10", 254, 16));
  EXPECT_FALSE(PhysicalDeviceIs("2b:1", 43, 0));   // another nbd device
  EXPECT_FALSE(PhysicalDeviceIs("2c:0", 43, 0));
  for (const char* bad : {"", "2b", ":0", "2b:", "2b:0:0", "2b:0 ", " 2b:0", "0x2b:0", "2b:0\n", "-1:0",
                          "123456789:0", "/dev/nbd0"}) {
    EXPECT_FALSE(PhysicalDeviceIs(bad, 43, 0)) << bad;
  }
}

}  // namespace
}  // namespace romulus::xen

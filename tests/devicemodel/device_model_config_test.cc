// devicemodel::DeviceModelConfig (docs/DEVICE-MODEL.md §3.1): the typed
// facts the primary reads from its device model's command line, carried in
// the domain info, and the backup's own command line built from them.
#include "devicemodel/device_model_config.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/devicemodel/real_qemu.h"

namespace romulus::devicemodel {
namespace {

// What libxl 4.17 started for the Xen lab's HVM guest (xl create; an
// `xl restore` adds "-incoming fd:15"), read from /proc/PID/cmdline in the
// lab on 2026-12-06.
std::vector<std::string> LabArgs() {
  return {"/usr/libexec/xen-qemu-system-i386", "-xen-domid", "1", "-no-shutdown", "-chardev",
          "socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-1,server=on,wait=off", "-mon",
          "chardev=libxl-cmd,mode=control", "-chardev",
          "socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-1,server=on,wait=off", "-mon",
          "chardev=libxenstat-cmd,mode=control", "-nodefaults", "-no-user-config", "-name", "guest1", "-vnc", "none",
          "-display", "none", "-kernel", "/lab/domu/vmlinuz", "-initrd", "/lab/domu/initrd.gz", "-append",
          "console=ttyS0 quiet ", "-serial", "file:/run/lab/hvm-probe/guest1.serial", "-boot", "order=cda", "-net",
          "none", "-machine", "xenfv,suppress-vmdesc=on", "-m", "128"};
}

std::map<std::string, std::string> Info(const std::string& lines) {
  std::map<std::string, std::string> out;
  std::istringstream in(lines);
  std::string l;
  while (std::getline(in, l)) {
    auto eq = l.find('=');
    if (eq != std::string::npos) out[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return out;
}

// Where the backup runs the lab guest's device model (domid 7, state on fd 9).
IncomingDeviceModel LabWhere() {
  IncomingDeviceModel where;
  where.domid = 7;
  where.name = "guest1--incoming";
  where.serial_files = {"/var/log/xen/serial-guest1.log"};
  where.kernel = "/lab/domu/vmlinuz";
  where.state_fd = 9;
  return where;
}

// The lab's command line with `extra` appended must be refused with `code`,
// the message naming `said` ("" : any message).
void ExpectRefused(const std::vector<std::string>& extra, Code code, const std::string& said = "") {
  auto argv = LabArgs();
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto r = ParseDeviceModelArgs(argv);
  const std::string what = extra[0] + (extra.size() > 1 ? " " + extra[1] : "");
  ASSERT_FALSE(r.ok()) << what;
  EXPECT_EQ(r.status().code(), code) << what << ": " << r.status().ToString();
  EXPECT_NE(r.status().message().find(said), std::string::npos) << r.status().ToString();
}

TEST(DeviceModelConfig, ParsesTheLabsLibxlCommandLine) {
  const auto argv = LabArgs();
  auto c = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->platform_pci);
  EXPECT_TRUE(c->suppress_vmdesc);
  EXPECT_EQ(c->max_ram_below_4g, 0u);
  EXPECT_EQ(c->memory_mib, 128u);
  EXPECT_EQ(c->vcpus, 1u);
  EXPECT_EQ(c->maxcpus, 1u);
  EXPECT_TRUE(c->acpi);
  ASSERT_EQ(c->serials.size(), 1u);
  EXPECT_EQ(c->serials[0], DeviceModelConfig::Serial::kFile);
  EXPECT_EQ(c->kernel, "/lab/domu/vmlinuz");  // booted directly: QEMU has a fw_cfg device
}

TEST(DeviceModelConfig, ARestoredDeviceModelsIncomingIsIgnored) {
  auto argv = LabArgs();
  argv.insert(argv.end() - 4, {"-incoming", "fd:15"});
  auto a = ParseDeviceModelArgs(argv);
  auto b = ParseDeviceModelArgs(LabArgs());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b);
}

TEST(DeviceModelConfig, TypedOptions) {
  auto argv = LabArgs();
  argv.insert(argv.end(), {"-smp", "2,maxcpus=4", "-no-acpi", "-serial", "pty", "-serial", "/dev/null", "-serial",
                           "none", "-machine", "pc,accel=xen,suppress-vmdesc=off,max-ram-below-4g=3221225472"});
  auto c = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->platform_pci);
  EXPECT_FALSE(c->suppress_vmdesc);
  EXPECT_EQ(c->max_ram_below_4g, 3221225472u);
  EXPECT_EQ(c->vcpus, 2u);
  EXPECT_EQ(c->maxcpus, 4u);
  EXPECT_FALSE(c->acpi);
  ASSERT_EQ(c->serials.size(), 3u);  // "none" is no port
  EXPECT_EQ(c->serials[1], DeviceModelConfig::Serial::kPty);
  EXPECT_EQ(c->serials[2], DeviceModelConfig::Serial::kNull);
}

// Devices the backup cannot reproduce yet are refused, naming them, so the
// primary says why instead of sending checkpoints nobody can resume.
TEST(DeviceModelConfig, RefusesWhatTheBackupCannotReproduce) {
  const struct {
    std::vector<std::string> extra;
    const char* said;
  } cases[] = {
      {{"-device", "ivshmem-plain,memdev=hostmem"}, "an emulated device"},
      {{"-device", "qxl-vga,vram_size_mb=64,ram_size_mb=64"}, "an emulated device"},
      {{"-drive", "file=/dev/vg/disk,if=ide,index=0,media=disk,format=raw"}, "an emulated disk"},
      {{"-netdev", "type=tap,id=net0,ifname=vif1.0-emu"}, "do not pair up"},
      {{"-device", "rtl8139,id=nic0,netdev=net0,mac=00:16:3e:00:00:01"}, "do not pair up"},
      {{"-device", "rtl8139,id=nic0,netdev=net0,mac=00:16:3e:00:00:01", "-netdev", "type=tap,id=net1,ifname=x"},
       "has no tap netdev net0"},
      {{"-netdev", "type=user,id=net0"}, "network backend"},
      {{"-netdev", "type=tap,id=net0,ifname=vif1.0-emu,vhost=on"}, "vhost=on"},
      {{"-device", "e1000,id=nic0,netdev=net0,mac=00:16:3e:00:00:01", "-netdev", "type=tap,id=net0,ifname=t",
        "-device", "VGA,vgamem_mb=8"},
       "after an emulated NIC"},
      {{"-device", "VGA,vgamem_mb=8", "-device", "cirrus-vga,vgamem_mb=8"}, "two display adapters"},
      {{"-vnc", "127.0.0.1:0,websocket=on"}, "websocket=on"},
      {{"-display", "sdl"}, "a display"},
      {{"-vga", "std"}, "a display"},
      {{"-usb"}, "USB"},
      {{"-soundhw", "ac97"}, "sound"},
      {{"-chardev", "socket,id=serial0,path=/tmp/x,server=on"}, "not one of libxl's QMP sockets"},
      {{"-serial", "tcp:127.0.0.1:4555"}, "serial port"},
      {{"-machine", "q35"}, "machine"},
      {{"-machine", "xenfv,igd-passthru=on"}, "igd-passthru"},
      {{"-machine", "pc"}, "without accel=xen"},
      {{"/var/lib/disk.img"}, "a disk image?"},
      {{"-frobnicate"}, "an option Romulus does not know"},
      {{"-xen-domid-restrict"}, "dm_restrict"},
      {{"-runas", "1234:1234"}, "dm_restrict"},
      {{"-sandbox", "on,obsolete=deny"}, "dm_restrict"},
  };
  for (const auto& c : cases) ExpectRefused(c.extra, Code::kUnsupported, c.said);
  std::vector<std::string> five = LabArgs();
  for (int i = 0; i < 4; i++) five.insert(five.end(), {"-serial", "pty"});
  EXPECT_EQ(ParseDeviceModelArgs(five).status().code(), Code::kUnsupported);
}

TEST(DeviceModelConfig, MalformedValuesAreCorruption) {
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
           {"-m", "12x"}, {"-m", "0"}, {"-m", "99999999999"}, {"-smp", "0"}, {"-smp", "4,maxcpus=2"},
           {"-smp", "2,cores=2"}, {"-smp", "9999"}, {"-machine", "xenfv,max-ram-below-4g=lots"},
           {"-kernel", "vmlinuz"}, {"-kernel", "/boot/a,b"}, {"-kernel", "/boot/../etc/shadow"}, {"-m"},
           {"-device", "VGA,vgamem_mb=0"}, {"-device", "VGA,vgamem_mb=1024"}, {"-device", "VGA"},
           {"-netdev", "id=net0,ifname=t"},
           {"-device", "cirrus-vga,vgamem_mb=8,vgamem_mb=8"}, {"-device", "VGA,vgamem_mb=8,addr=3"},
           {"-device", "e1000,id=nic0,netdev=net1,mac=00:16:3e:00:00:01"},
           {"-device", "e1000,id=nic0,netdev=net0,mac=00:16:3E:00:00:01"},
           {"-device", "e1000,id=nic0,netdev=net0"}, {"-device", "e1000,id=nic999,netdev=net999,mac=00:16:3e:00:00:01"},
           {"-device", "e1000,id=nic0,netdev=net0,mac=00:16:3e:00:00:01,addr=4"},
           {"-netdev", "type=tap,id=net0"}, {"-netdev", "type=tap,id=eth0,ifname=t"}, {"-netdev", "tap,id=net0"},
           {"-netdev", "type=tap,id=net0,ifname=a-name-far-too-long"}, {"-netdev", "type=tap,id=net0,ifname=a/b"},
           {"-netdev", "type=tap,id=net0,ifname=.."},
           {"-vnc", "nowhere"}, {"-vnc", "127.0.0.1:0,to"}, {"-k", "EN-US"}, {"-k", "en_us;rm"}, {"-k", "-"}}) {
    ExpectRefused(extra, Code::kCorruption);
  }
  auto argv = LabArgs();
  argv.erase(argv.end() - 2, argv.end());  // no -m
  EXPECT_EQ(ParseDeviceModelArgs(argv).status().code(), Code::kCorruption);
  argv = LabArgs();
  argv.erase(argv.end() - 4, argv.end() - 2);  // no -machine
  EXPECT_EQ(ParseDeviceModelArgs(argv).status().code(), Code::kUnsupported);
}

// What libxl 4.17 starts for an HVM guest with xl's defaults for the
// display and an emulated NIC (vnc=1, keymap="en-us", vga="cirrus"
// videoram=8, vif=['model=e1000,mac=…']): libxl_dm.c's order.
std::vector<std::string> DisplayArgs() {
  std::vector<std::string> a = LabArgs();
  auto vnc = std::find(a.begin(), a.end(), "-vnc");
  *(vnc + 1) = "127.0.0.1:0,to=99";
  a.insert(vnc + 4, {"-k", "en-us"});  // after -display none
  auto boot = std::find(a.begin(), a.end(), "-boot");
  boot = a.insert(boot, {"-device", "cirrus-vga,vgamem_mb=8"}) + 2;
  auto net = std::find(boot, a.end(), "-net");
  a.erase(net, net + 2);  // libxl's "-net none" is only for a guest without emulated NICs
  a.insert(a.end() - 4, {"-device", "e1000,id=nic0,netdev=net0,mac=00:16:3e:4c:00:02", "-netdev",
                         "type=tap,id=net0,ifname=vif1.0-emu,br=xenbr0,script=no,downscript=no", "-device",
                         "rtl8139,id=nic2,netdev=net2,mac=00:16:3e:4c:00:04", "-netdev",
                         "type=tap,id=net2,ifname=vif1.2-emu,br=xenbr1,script=no,downscript=no"});
  return a;
}

TEST(DeviceModelConfig, ParsesLibxlsDisplayAndEmulatedNics) {
  auto c = ParseDeviceModelArgs(DisplayArgs());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->vga, DeviceModelConfig::Vga::kCirrus);
  EXPECT_EQ(c->vgamem_mib, 8u);
  EXPECT_EQ(c->vnc, DeviceModelConfig::Vnc::kOpen);
  EXPECT_EQ(c->keymap, "en-us");
  ASSERT_EQ(c->nics.size(), 2u);
  EXPECT_EQ(c->nics[0], (DeviceModelConfig::Nic{0, "e1000", "00:16:3e:4c:00:02"}));
  EXPECT_EQ(c->nics[1], (DeviceModelConfig::Nic{2, "rtl8139", "00:16:3e:4c:00:04"}));
  // Where each NIC's output comes out on the primary: its tap, in the NICs' order.
  EXPECT_EQ(c->nic_taps, (std::vector<std::string>{"vif1.0-emu", "vif1.2-emu"}));
  EXPECT_EQ(c->memory_mib, 128u);
  // A password on the primary's VNC, and the standard adapter.
  auto argv = DisplayArgs();
  *(std::find(argv.begin(), argv.end(), "-vnc") + 1) = "0.0.0.0:5,password=on,to=99";
  *(std::find(argv.begin(), argv.end(), "cirrus-vga,vgamem_mb=8")) = "VGA,vgamem_mb=16";
  c = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->vnc, DeviceModelConfig::Vnc::kPassword);
  EXPECT_EQ(c->vga, DeviceModelConfig::Vga::kStd);
  EXPECT_EQ(c->vgamem_mib, 16u);
}

// Where the backup's device model serves the display and the NICs: its own
// taps (named for the replica's domid), VNC on loopback whatever the
// primary listened on, a password still required; the facts parse back.
TEST(DeviceModelConfig, IncomingArgsRecreateTheDisplayAndNics) {
  auto argv = DisplayArgs();
  *(std::find(argv.begin(), argv.end(), "-vnc") + 1) = "0.0.0.0:5,password=on,to=99";
  auto c = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  IncomingDeviceModel where = LabWhere();
  auto a = IncomingDeviceModelArgs(*c, where);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto has = [&](const std::vector<std::string>& seq) {
    return std::search(a->begin(), a->end(), seq.begin(), seq.end()) != a->end();
  };
  EXPECT_TRUE(has({"-vnc", "127.0.0.1:0,password=on,to=99"}));
  EXPECT_TRUE(has({"-k", "en-us"}));
  EXPECT_TRUE(has({"-device", "cirrus-vga,vgamem_mb=8", "-device", "e1000,id=nic0,netdev=net0,mac=00:16:3e:4c:00:02",
                   "-netdev", "type=tap,id=net0,ifname=vif7.0-emu,script=no,downscript=no", "-device",
                   "rtl8139,id=nic2,netdev=net2,mac=00:16:3e:4c:00:04", "-netdev",
                   "type=tap,id=net2,ifname=vif7.2-emu,script=no,downscript=no"}));
  EXPECT_FALSE(has({"-net", "none"}));
  EXPECT_EQ(EmulatedNicTap(7, 2), "vif7.2-emu");
  std::vector<std::string> back = {"qemu"};
  back.insert(back.end(), a->begin(), a->end());
  auto again = ParseDeviceModelArgs(back);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == *c);
}

// Version 2 only when there is something version 1 cannot say: a guest
// without display or emulated NICs still fails over to an older backup.
TEST(DeviceModelConfig, DisplayAndNicsTravelAsVersion2) {
  auto c = ParseDeviceModelArgs(DisplayArgs());
  ASSERT_TRUE(c.ok());
  const std::string lines = DeviceModelInfoLines(*c);
  EXPECT_NE(lines.find("dm_version=2\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("dm_nics=0/e1000/00:16:3e:4c:00:02,2/rtl8139/00:16:3e:4c:00:04\n"), std::string::npos) << lines;
  auto back = DeviceModelConfigFromInfo(Info(lines));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == *c);
  auto plain = ParseDeviceModelArgs(LabArgs());
  ASSERT_TRUE(plain.ok());
  const std::string v1 = DeviceModelInfoLines(*plain);
  EXPECT_NE(v1.find("dm_version=1\n"), std::string::npos) << v1;
  EXPECT_EQ(v1.find("dm_vga"), std::string::npos) << v1;
  // Each of the new facts alone makes it version 2.
  for (int i = 0; i < 4; i++) {
    DeviceModelConfig d = *plain;
    if (i == 0) d.vnc = DeviceModelConfig::Vnc::kOpen;
    if (i == 1) d.keymap = "de";
    if (i == 2) d.vga = DeviceModelConfig::Vga::kStd, d.vgamem_mib = 8;
    if (i == 3) d.nics = {{5, "e1000", "00:16:3e:00:00:05"}};
    const std::string l = DeviceModelInfoLines(d);
    EXPECT_NE(l.find("dm_version=2\n"), std::string::npos) << i;
    auto r = DeviceModelConfigFromInfo(Info(l));
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().ToString();
    EXPECT_TRUE(*r == d) << i;
  }
  // Damaged version-2 facts.
  for (const char* bad : {"dm_vga=qxl", "dm_vga=none", "dm_vgamem_mib=0", "dm_vgamem_mib=999", "dm_vnc=on",
                          "dm_keymap=EN", "dm_keymap=../../etc", "dm_nics=0/e1000", "dm_nics=0/ivshmem/00:16:3e:00:00:01",
                          "dm_nics=0/e1000/00:16:3E:00:00:01", "dm_nics=256/e1000/00:16:3e:00:00:01",
                          "dm_nics=1/e1000/00:16:3e:00:00:01,1/e1000/00:16:3e:00:00:02", "dm_nics=,",
                          "dm_nics=0/e1000/00:16:3e:00:00:01/x"}) {
    auto info = Info(lines);
    const std::string b = bad;
    info[b.substr(0, b.find('='))] = b.substr(b.find('=') + 1);
    EXPECT_EQ(DeviceModelConfigFromInfo(info).status().code(), Code::kCorruption) << bad;
  }
  for (const char* key : {"dm_vga", "dm_vgamem_mib", "dm_vnc", "dm_keymap", "dm_nics"}) {
    auto info = Info(lines);
    info.erase(key);
    EXPECT_EQ(DeviceModelConfigFromInfo(info).status().code(), Code::kCorruption) << key;
  }
  std::string many = "dm_nics=";
  for (int i = 0; i < 17; i++) many += (i ? "," : "") + std::to_string(i) + "/e1000/00:16:3e:00:00:01";
  auto info = Info(lines);
  info["dm_nics"] = many.substr(8);
  EXPECT_EQ(DeviceModelConfigFromInfo(info).status().code(), Code::kCorruption);
}

// The display and NIC options the backup builds, given to a real QEMU
// (Debian's qemu-system-x86_64, no Xen: the taps become user-mode
// netdevs, which need no privileges): QEMU accepts them, its VNC server
// is on loopback, and the PCI devices are in the order of the options
// (the slots the checkpoint's device state names).
class RealQemuWithDisplayAndNics : public RealQemu {
 protected:
  std::vector<std::string> ExtraArgs() const override {
    auto c = ParseDeviceModelArgs(DisplayArgs());
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    IncomingDeviceModel where = LabWhere();
    where.serial_files = {"/dev/null"};
    auto a = IncomingDeviceModelArgs(*c, where);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    std::vector<std::string> out;
    for (size_t i = 0; a.ok() && i + 1 < a->size(); i++) {
      const std::string& opt = (*a)[i];
      std::string v = (*a)[i + 1];
      if (opt == "-netdev") v = v.substr(0, v.find(",ifname=")).replace(0, 8, "type=user");
      if (opt == "-device" || opt == "-netdev" || opt == "-vnc" || opt == "-k") out.insert(out.end(), {opt, v});
    }
    return out;
  }
};

TEST_F(RealQemuWithDisplayAndNics, QemuTakesTheBackupsDisplayAndNicOptions) {
  auto vnc = dm_->QueryVnc(DeadlineIn(10000ms));
  ASSERT_TRUE(vnc.ok()) << vnc.status().ToString() << "\n" << Log();
  EXPECT_EQ(vnc->host, "127.0.0.1");
  EXPECT_GE(vnc->port, 5900u);
  auto pci = dm_->qmp().Execute("query-pci", nullptr, DeadlineIn(10000ms));
  ASSERT_TRUE(pci.ok()) << pci.status().ToString();
  // Vendor:device of the adapter and NICs, in slot order.
  std::vector<std::string> seen;
  for (const auto& bus : *pci) {
    for (const auto& d : bus["devices"]) {
      const int vendor = d["id"]["vendor"].get<int>(), device = d["id"]["device"].get<int>();
      if (vendor == 0x1013 && device == 0x00b8) seen.push_back("cirrus-vga");
      if (vendor == 0x8086 && device == 0x100e) seen.push_back("e1000");
      if (vendor == 0x10ec && device == 0x8139) seen.push_back("rtl8139");
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"cirrus-vga", "e1000", "rtl8139"})) << pci->dump().substr(0, 400);
}

// DisplayArgs with libxl's AHCI disks (hdtype="ahci") on ports `a` and `b`
// (files /dev/nbd0 and /dev/nbd1): the controller after the NICs, then per
// disk its -drive and its ide-hd port.
std::vector<std::string> AhciArgs(unsigned a, unsigned b) {
  std::vector<std::string> argv = DisplayArgs();
  std::vector<std::string> disks = {"-device", "ahci,id=ahci0"};
  const std::pair<unsigned, const char*> ports[] = {{a, "/dev/nbd0"}, {b, "/dev/nbd1"}};
  for (const auto& [n, file] : ports) {
    const std::string id = std::to_string(n);
    disks.insert(disks.end(), {"-drive", std::string("file=") + file + ",if=none,id=ahcidisk-" + id +
                                             ",format=raw,cache=writeback",
                               "-device", "ide-hd,bus=ahci0." + id + ",unit=0,drive=ahcidisk-" + id});
  }
  argv.insert(argv.end() - 4, disks.begin(), disks.end());
  return argv;
}

// The same with AHCI disks: QEMU takes the backup's controller and ports on
// real files, and the controller's PCI slot comes after the NICs, as on the
// primary (libxl's order).
class RealQemuWithAhciDisks : public RealQemu {
 protected:
  void SetUp() override {
    for (int k = 0; k < 2; k++) {
      char tmpl[] = "/tmp/romulus-ahci-XXXXXX";
      int fd = ::mkstemp(tmpl);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
      ::close(fd);
      images_.push_back(tmpl);
    }
    RealQemu::SetUp();
  }
  void TearDown() override {
    RealQemu::TearDown();
    for (const auto& i : images_) ::unlink(i.c_str());
  }
  std::vector<std::string> ExtraArgs() const override {
    auto c = ParseDeviceModelArgs(AhciArgs(0, 3));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    IncomingDeviceModel where = LabWhere();
    where.serial_files = {"/dev/null"};
    where.ide_paths = {{0, images_[0]}, {3, images_[1]}};
    auto a = IncomingDeviceModelArgs(*c, where);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    std::vector<std::string> out;
    for (size_t i = 0; a.ok() && i + 1 < a->size(); i++) {
      const std::string& opt = (*a)[i];
      std::string v = (*a)[i + 1];
      if (opt == "-netdev") v = v.substr(0, v.find(",ifname=")).replace(0, 8, "type=user");
      if (opt == "-device" || opt == "-netdev" || opt == "-drive") out.insert(out.end(), {opt, v});
    }
    return out;
  }
  std::vector<std::string> images_;
};

TEST_F(RealQemuWithAhciDisks, QemuTakesTheBackupsAhciControllerAndPorts) {
  auto pci = dm_->qmp().Execute("query-pci", nullptr, DeadlineIn(10000ms));
  ASSERT_TRUE(pci.ok()) << pci.status().ToString() << "\n" << Log();
  std::vector<std::string> seen;
  for (const auto& bus : *pci) {
    for (const auto& d : bus["devices"]) {
      const int vendor = d["id"]["vendor"].get<int>(), device = d["id"]["device"].get<int>();
      if (vendor == 0x1013 && device == 0x00b8) seen.push_back("cirrus-vga");
      if (vendor == 0x8086 && device == 0x100e) seen.push_back("e1000");
      if (vendor == 0x10ec && device == 0x8139) seen.push_back("rtl8139");
      // (the test machine may have an AHCI controller of its own: ours is ahci0)
      if (vendor == 0x8086 && device == 0x2922 && d.value("qdev_id", "") == "ahci0") seen.push_back("ahci");
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"cirrus-vga", "e1000", "rtl8139", "ahci"})) << pci->dump().substr(0, 400);
  auto block = dm_->qmp().Execute("query-block", nullptr, DeadlineIn(10000ms));
  ASSERT_TRUE(block.ok()) << block.status().ToString();
  std::map<std::string, std::string> files;
  for (const auto& b : *block) {
    if (b.contains("inserted")) files[b["device"].get<std::string>()] = b["inserted"]["file"].get<std::string>();
  }
  EXPECT_EQ(files["ahcidisk-0"], images_[0]) << block->dump().substr(0, 600);
  EXPECT_EQ(files["ahcidisk-3"], images_[1]) << block->dump().substr(0, 600);
}

// libxl gives every HVM disk numbered 0..3 an emulated IDE slot as well
// (file=…,if=ide,index=I,media=disk,format=raw,cache=writeback).
TEST(DeviceModelConfig, IdeDisksAreSlotsOfReplicatedDisks) {
  auto argv = LabArgs();
  argv.insert(argv.end() - 4, {"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw,cache=writeback", "-drive",
                               "file=/dev/nbd1,if=ide,index=2,media=disk,format=raw,cache=writeback"});
  auto c = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->ide_disks, (std::vector<unsigned>{0, 2}));
  EXPECT_EQ(c->ide_files, (std::vector<std::string>{"/dev/nbd0", "/dev/nbd1"}));  // the primary's own, never sent
  const std::string lines = DeviceModelInfoLines(*c);
  EXPECT_NE(lines.find("dm_version=2\n"), std::string::npos);
  EXPECT_NE(lines.find("dm_ide=0,2\n"), std::string::npos) << lines;
  auto back = DeviceModelConfigFromInfo(Info(lines));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == *c);
  // The backup gives QEMU its copies, never the primary's paths.
  IncomingDeviceModel where = LabWhere();
  where.ide_paths = {{0, "/dev/loop3"}, {2, "/dev/loop4"}};
  auto a = IncomingDeviceModelArgs(*c, where);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_NE(std::find(a->begin(), a->end(), "file=/dev/loop3,if=ide,index=0,media=disk,format=raw,cache=writeback"),
            a->end());
  EXPECT_NE(std::find(a->begin(), a->end(), "file=/dev/loop4,if=ide,index=2,media=disk,format=raw,cache=writeback"),
            a->end());
  std::vector<std::string> re = {"qemu"};
  re.insert(re.end(), a->begin(), a->end());
  auto again = ParseDeviceModelArgs(re);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == *c);
  where.ide_paths.erase(2);
  EXPECT_EQ(IncomingDeviceModelArgs(*c, where).status().code(), Code::kInvalidArgument);
  where.ide_paths[2] = "/dev/loop4,if=none";  // a comma would add options of its own
  EXPECT_EQ(IncomingDeviceModelArgs(*c, where).status().code(), Code::kInvalidArgument);
  // Slot I is disk number I of the session: hdX or xvdX, exactly one.
  const std::vector<std::string> session = {"xvda", "hdc", "xvdb"};
  EXPECT_EQ(*IdeDiskVdev(0, session), "xvda");
  EXPECT_EQ(*IdeDiskVdev(2, session), "hdc");
  EXPECT_TRUE(CheckEmulatedDisks(*c, session).ok());
  Status missing = CheckEmulatedDisks(*c, std::vector<std::string>{"xvda"});
  EXPECT_EQ(missing.code(), Code::kUnsupported);
  EXPECT_NE(missing.message().find("emulated disk 2 (hdc/xvdc)"), std::string::npos) << missing.ToString();
  EXPECT_EQ(IdeDiskVdev(0, std::vector<std::string>{"hda", "xvda"}).status().code(), Code::kUnsupported);
  EXPECT_EQ(IdeDiskVdev(1, std::vector<std::string>{"sdb", "xvdbb"}).status().code(), Code::kUnsupported);
  for (const char* bad : {"dm_ide=4", "dm_ide=0,0", "dm_ide=x", "dm_ide=0,1,2,3,0", "dm_ide=,"}) {
    auto info = Info(lines);
    info["dm_ide"] = std::string(bad).substr(7);
    EXPECT_EQ(DeviceModelConfigFromInfo(info).status().code(), Code::kCorruption) << bad;
  }
}

// What the backup could not give QEMU, or that would not be consistent.
TEST(DeviceModelConfig, OtherEmulatedDisksAreRefused) {
  const struct {
    std::vector<std::string> extra;
    const char* said;
  } cases[] = {
      {{"-drive", "if=none,readonly=on,id=ide-5632", "-device", "ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0"},
       "CD-ROM"},
      {{"-drive", "file=/dev/nbd0,if=ide,index=1,media=cdrom,format=raw"}, "CD-ROM"},
      {{"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw,cache=writeback,readonly=yes"}, "read-only"},
      {{"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw"}, "default cache mode"},
      {{"-drive", "file=/dev/nbd0,if=none,id=ahcidisk-0,format=raw,cache=writeback"}, "do not pair up"},
      {{"-device", "ahci,id=ahci0", "-drive", "file=/dev/nbd0,if=none,id=ahcidisk-0,format=raw,cache=writeback"},
       "do not pair up (1 drives, 0 ports)"},
      {{"-device", "ahci,id=ahci0", "-drive", "file=/dev/nbd0,if=none,id=ahcidisk-1,format=raw,cache=writeback",
        "-device", "ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-0"},
       "ahcidisk-1 has no port"},
      {{"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw,cache=writeback", "-device", "ahci,id=ahci0",
        "-drive", "file=/dev/nbd1,if=none,id=ahcidisk-1,format=raw,cache=writeback", "-device",
        "ide-hd,bus=ahci0.1,unit=0,drive=ahcidisk-1"},
       "IDE and AHCI disks both"},
      {{"-drive", "file=/dev/nbd0,if=none,id=scsi0,format=raw,cache=writeback"}, "not SCSI"},
      {{"-device", "scsi-hd,drive=scsi0,scsi-id=0"}, "SCSI disk"},
      {{"-drive", "file=/var/lib/g.qcow2,if=ide,index=0,media=disk,format=qcow2,cache=writeback"}, "raw disks"},
      {{"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw,cache=unsafe"}, "cache=\"unsafe\""},
      {{"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw,cache=writeback,aio=native"}, "aio=native"},
  };
  for (const auto& c : cases) ExpectRefused(c.extra, Code::kUnsupported, c.said);
  for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
           {"-drive", "file=/dev/nbd0,if=ide,index=4,media=disk,format=raw,cache=writeback"},
           {"-drive", "file=nbd0,if=ide,index=0,media=disk,format=raw,cache=writeback"},
           {"-drive", "if=ide,index=0,media=disk,format=raw,cache=writeback"},
           {"-drive", "file=/dev/nbd0,if=ide,index=0,media=disk,format=raw,cache=writeback", "-drive",
            "file=/dev/nbd1,if=ide,index=0,media=disk,format=raw,cache=writeback"},
           // AHCI as libxl never writes it
           {"-device", "ahci,id=ahci1"}, {"-device", "ahci,id=ahci0", "-device", "ahci,id=ahci0"},
           {"-device", "ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-0"},  // before the controller
           {"-device", "ahci,id=ahci0", "-device", "ide-hd,bus=ahci0.0,unit=1,drive=ahcidisk-0"},
           {"-device", "ahci,id=ahci0", "-device", "ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-1"},
           {"-device", "ahci,id=ahci0", "-device", "ide-hd,bus=ahci0.6,unit=0,drive=ahcidisk-6"},
           {"-device", "ahci,id=ahci0", "-device", "ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-0", "-device",
            "ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-0"},
           {"-drive", "file=/dev/nbd0,if=none,id=ahcidisk-6,format=raw,cache=writeback"},
           {"-drive", "file=/dev/nbd0,if=none,id=ahcidisk-0,index=0,format=raw,cache=writeback"},
           {"-drive", "file=nbd0,if=none,id=ahcidisk-0,format=raw,cache=writeback"},
           {"-drive", "file=/dev/nbd0,if=none,id=ahcidisk-0,format=raw,cache=writeback", "-drive",
            "file=/dev/nbd1,if=none,id=ahcidisk-0,format=raw,cache=writeback"},
           {"-drive", "file=/dev/nbd0,if=ide,index=0,id=x,media=disk,format=raw,cache=writeback"}}) {
    ExpectRefused(extra, Code::kCorruption);
  }
}

// hdtype="ahci": libxl gives disks 0..5 a port each of one AHCI controller
// (libxl_dm.c: -device ahci,id=ahci0 after the NICs, then per disk N
// -drive if=none,id=ahcidisk-N and -device ide-hd,bus=ahci0.N). They
// travel as version 3 (an older backup would start them on IDE), and the
// backup starts the same controller and ports on its copies.
TEST(DeviceModelConfig, AhciDisksArePortsOfReplicatedDisks) {
  const auto argv = AhciArgs(0, 5);
  auto c = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->disk_bus, DeviceModelConfig::DiskBus::kAhci);
  EXPECT_EQ(c->ide_disks, (std::vector<unsigned>{0, 5}));
  EXPECT_EQ(c->ide_files, (std::vector<std::string>{"/dev/nbd0", "/dev/nbd1"}));
  const std::string lines = DeviceModelInfoLines(*c);
  EXPECT_NE(lines.find("dm_version=3\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("dm_disk_bus=ahci\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("dm_ide=0,5\n"), std::string::npos) << lines;
  auto back = DeviceModelConfigFromInfo(Info(lines));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == *c);
  // The same facts on IDE are a different guest.
  DeviceModelConfig ide = *c;
  ide.disk_bus = DeviceModelConfig::DiskBus::kIde;
  EXPECT_FALSE(ide == *c);
  // The backup: the controller after the NICs, each port on its own copy.
  IncomingDeviceModel where = LabWhere();
  where.ide_paths = {{0, "/dev/loop3"}, {5, "/dev/loop4"}};
  auto a = IncomingDeviceModelArgs(*c, where);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto ctl = std::find(a->begin(), a->end(), "ahci,id=ahci0");
  ASSERT_NE(ctl, a->end());
  EXPECT_GT(ctl - a->begin(), std::find(a->begin(), a->end(), "-netdev") - a->begin()) << "after the NICs";
  EXPECT_NE(std::find(a->begin(), a->end(), "file=/dev/loop4,if=none,id=ahcidisk-5,format=raw,cache=writeback"),
            a->end());
  EXPECT_NE(std::find(a->begin(), a->end(), "ide-hd,bus=ahci0.5,unit=0,drive=ahcidisk-5"), a->end());
  std::vector<std::string> re = {"qemu"};
  re.insert(re.end(), a->begin(), a->end());
  auto again = ParseDeviceModelArgs(re);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == *c);
  // Port 5 is disk number 5: only xvdf (libxl's hd names stop at hdd).
  EXPECT_EQ(*IdeDiskVdev(5, std::vector<std::string>{"xvda", "xvdf"}), "xvdf");
  EXPECT_FALSE(IdeDiskVdev(5, std::vector<std::string>{"hdf"}).ok());
  EXPECT_TRUE(CheckEmulatedDisks(*c, std::vector<std::string>{"xvda", "xvdf"}).ok());
  // A device after the controller would shift the backup's PCI slots.
  auto late = argv;
  late.insert(late.end() - 4, {"-device", "rtl8139,id=nic3,netdev=net3,mac=00:16:3e:4c:00:05", "-netdev",
                               "type=tap,id=net3,ifname=vif1.3-emu"});
  EXPECT_EQ(ParseDeviceModelArgs(late).status().code(), Code::kUnsupported);
  // From the network: slots up to 5 on AHCI, up to 3 on IDE.
  for (const char* bad : {"dm_ide=6", "dm_ide=0,1,2,3,4,5,0", "dm_disk_bus=sata", "dm_disk_bus="}) {
    auto info = Info(lines);
    const std::string kv = bad;
    info[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
    EXPECT_EQ(DeviceModelConfigFromInfo(info).status().code(), Code::kCorruption) << bad;
  }
  auto v2 = Info(lines);
  v2["dm_version"] = "2";
  EXPECT_EQ(DeviceModelConfigFromInfo(v2).status().code(), Code::kCorruption) << "slot 5 on IDE";
  // hdtype="ahci" without a disk on the controller: libxl still adds it, and
  // so must the backup (its PCI slot).
  auto bare = LabArgs();
  bare.insert(bare.end() - 4, {"-device", "ahci,id=ahci0"});
  auto b = ParseDeviceModelArgs(bare);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->disk_bus, DeviceModelConfig::DiskBus::kAhci);
  EXPECT_TRUE(b->ide_disks.empty());
  const std::string bare_lines = DeviceModelInfoLines(*b);
  EXPECT_NE(bare_lines.find("dm_version=3\n"), std::string::npos) << bare_lines;
  auto bare_back = DeviceModelConfigFromInfo(Info(bare_lines));
  ASSERT_TRUE(bare_back.ok()) << bare_back.status().ToString();
  EXPECT_TRUE(*bare_back == *b);
  auto bare_args = IncomingDeviceModelArgs(*b, LabWhere());
  ASSERT_TRUE(bare_args.ok()) << bare_args.status().ToString();
  EXPECT_NE(std::find(bare_args->begin(), bare_args->end(), "ahci,id=ahci0"), bare_args->end());
  // An unknown device after the controller is refused as what it is.
  auto pv = bare;
  pv.insert(pv.end() - 4, {"-device", "xen-pvdevice,device-id=0xc000"});
  auto refused = ParseDeviceModelArgs(pv);
  EXPECT_EQ(refused.status().code(), Code::kUnsupported);
  EXPECT_NE(refused.status().message().find("emulated device"), std::string::npos) << refused.status().ToString();
}

TEST(DeviceModelConfig, InfoLinesRoundTrip) {
  DeviceModelConfig c;
  c.platform_pci = false;
  c.suppress_vmdesc = true;
  c.max_ram_below_4g = 1u << 30;
  c.memory_mib = 4096;
  c.vcpus = 3;
  c.maxcpus = 8;
  c.acpi = false;
  c.serials = {DeviceModelConfig::Serial::kFile, DeviceModelConfig::Serial::kNull, DeviceModelConfig::Serial::kPty};
  c.kernel = "/k";  // short paths too (found by domain_info_fuzz: a 2-byte path once threw)
  c.qemu = {7, 2, 19};
  auto back = DeviceModelConfigFromInfo(Info(DeviceModelInfoLines(c)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == c);
  c.serials.clear();
  c.kernel.clear();
  c.qemu = {};  // unknown: no dm_qemu line, read back as unknown
  EXPECT_EQ(DeviceModelInfoLines(c).find("dm_qemu"), std::string::npos);
  back = DeviceModelConfigFromInfo(Info(DeviceModelInfoLines(c)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->serials.empty());
  EXPECT_TRUE(back->kernel.empty());
  EXPECT_FALSE(back->qemu.known());
}

TEST(QemuVersion, ParsedFromGreetingAndBanner) {
  auto v = ParseQemuVersion("7.2.19");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, (QemuVersion{7, 2, 19}));
  EXPECT_EQ(v->ToString(), "7.2.19");
  for (const char* bad : {"", "7", "7.2", "7.2.", "7..2", "7.2.19.1", "7.2.x", "-7.2.1", "12345.0.0", "?.?.?",
                          "7.2.19 "}) {
    EXPECT_EQ(ParseQemuVersion(bad).status().code(), Code::kInvalidArgument) << bad;
  }
  // Debian 12's qemu-system-xen (the lab's), and a build without a package suffix.
  auto deb = QemuVersionFromBanner("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)");
  ASSERT_TRUE(deb.ok()) << deb.status().ToString();
  EXPECT_EQ(*deb, (QemuVersion{7, 2, 19}));
  EXPECT_EQ(*QemuVersionFromBanner("QEMU emulator version 9.2.0"), (QemuVersion{9, 2, 0}));
  EXPECT_FALSE(QemuVersionFromBanner("flaky-qemu: refusing to start").ok());
  EXPECT_FALSE(QemuVersionFromBanner("QEMU emulator version (unknown)").ok());
}

// QEMU loads its own and older releases' device state, not newer ones.
TEST(QemuVersion, AnOlderBackupQemuIsRefused) {
  const QemuVersion v72{7, 2, 19}, v72old{7, 2, 5}, v80{8, 0, 0}, v92{9, 2, 0}, unknown{};
  EXPECT_TRUE(CheckDeviceModelVersions(v72, true, v72).ok());
  EXPECT_TRUE(CheckDeviceModelVersions(v72, true, v72old).ok());  // a stable update: same machine versions
  EXPECT_TRUE(CheckDeviceModelVersions(v72, true, v92).ok());
  Status older = CheckDeviceModelVersions(v92, true, v72);
  EXPECT_EQ(older.code(), Code::kUnsupported);
  EXPECT_NE(older.message().find("QEMU 9.2.0"), std::string::npos) << older.ToString();
  EXPECT_NE(older.message().find("QEMU 7.2.19"), std::string::npos) << older.ToString();
  EXPECT_NE(older.message().find("9.2 or later"), std::string::npos) << older.ToString();
  EXPECT_EQ(CheckDeviceModelVersions(v80, true, v72).code(), Code::kUnsupported);
  EXPECT_TRUE(CheckDeviceModelVersions(unknown, true, v72).ok());
  EXPECT_TRUE(CheckDeviceModelVersions(v92, true, unknown).ok());
}

// Machine "pc" (xen_platform_pci=0) is each release's newest i440fx: only
// the same major.minor loads its state.
TEST(QemuVersion, AnUnpinnedMachineNeedsTheSameRelease) {
  const QemuVersion v72{7, 2, 19}, v72old{7, 2, 5}, v92{9, 2, 0};
  EXPECT_TRUE(CheckDeviceModelVersions(v72, false, v72old).ok());
  Status newer = CheckDeviceModelVersions(v72, false, v92);
  EXPECT_EQ(newer.code(), Code::kUnsupported);
  EXPECT_NE(newer.message().find("\"pc\""), std::string::npos) << newer.ToString();
  EXPECT_NE(newer.message().find("install QEMU 7.2 on the backup"), std::string::npos) << newer.ToString();
  EXPECT_EQ(CheckDeviceModelVersions(v92, false, v72).code(), Code::kUnsupported);
}

// The record comes from the network: every field checked.
TEST(DeviceModelConfig, DamagedInfoIsRefused) {
  DeviceModelConfig c;
  c.memory_mib = 128;
  c.serials = {DeviceModelConfig::Serial::kFile};
  const std::string good = DeviceModelInfoLines(c);
  EXPECT_EQ(DeviceModelConfigFromInfo(Info("name=x\n")).status().code(), Code::kCorruption);
  EXPECT_EQ(DeviceModelConfigFromInfo(Info(good + "dm_version=4\n")).status().code(), Code::kUnsupported);
  EXPECT_EQ(DeviceModelConfigFromInfo(Info(good + "dm_version=3\n")).status().code(), Code::kCorruption)
      << "version 3 says its disk bus";
  for (const char* bad : {"dm_machine=q35", "dm_machine=", "dm_suppress_vmdesc=2", "dm_acpi=yes",
                          "dm_memory_mib=0", "dm_memory_mib=-1", "dm_memory_mib=99999999999999",
                          "dm_vcpus=0", "dm_vcpus=3", "dm_maxcpus=600", "dm_max_ram_below_4g=8589934592",
                          "dm_serials=pty,tcp", "dm_serials=pty,pty,pty,pty,pty", "dm_serials=,",
                          "dm_kernel=vmlinuz", "dm_kernel=/boot/x,if=none", "dm_kernel=/boot/../etc/shadow",
                          "dm_kernel=/..", "dm_kernel=/", "dm_kernel=/boot/..", "dm_qemu=", "dm_qemu=7.2",
                          "dm_qemu=0.0.0", "dm_qemu=7.2.19-deb", "dm_qemu=99999.1.1"}) {
    auto r = DeviceModelConfigFromInfo(Info(good + bad + "\n"));
    EXPECT_EQ(r.status().code(), Code::kCorruption) << bad << ": " << r.status().ToString();
  }
  for (const char* key :
       {"dm_machine", "dm_memory_mib", "dm_vcpus", "dm_maxcpus", "dm_serials", "dm_acpi", "dm_kernel"}) {
    auto info = Info(good);
    info.erase(key);
    EXPECT_EQ(DeviceModelConfigFromInfo(info).status().code(), Code::kCorruption) << key;
  }
}


TEST(DeviceModelConfig, IncomingArgsAreLibxlsForARestore) {
  auto c = ParseDeviceModelArgs(LabArgs());
  ASSERT_TRUE(c.ok());
  const IncomingDeviceModel where = LabWhere();
  auto a = IncomingDeviceModelArgs(*c, where);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const std::vector<std::string> want = {
      "-xen-domid", "7", "-no-shutdown", "-chardev",
      "socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-7,server=on,wait=off", "-mon",
      "chardev=libxl-cmd,mode=control", "-chardev",
      "socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-7,server=on,wait=off", "-mon",
      "chardev=libxenstat-cmd,mode=control", "-nodefaults", "-no-user-config", "-name", "guest1--incoming", "-vnc",
      "none", "-display", "none", "-serial", "file:/var/log/xen/serial-guest1.log", "-net", "none", "-kernel", "/lab/domu/vmlinuz", "-incoming",
      "fd:9", "-machine", "xenfv,suppress-vmdesc=on", "-m", "128"};
  EXPECT_EQ(*a, want);
  // What the backup builds parses back to the same facts (argv[0] added).
  std::vector<std::string> argv = {"qemu"};
  argv.insert(argv.end(), a->begin(), a->end());
  auto again = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == *c);
  // Several vCPUs, no ACPI, the other machine.
  c->vcpus = 2;
  c->maxcpus = 4;
  c->acpi = false;
  c->platform_pci = false;
  a = IncomingDeviceModelArgs(*c, where);
  ASSERT_TRUE(a.ok());
  argv = {"qemu"};
  argv.insert(argv.end(), a->begin(), a->end());
  again = ParseDeviceModelArgs(argv);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == *c);
}

TEST(DeviceModelConfig, IncomingArgsRefuseWhatQemuWouldMisread) {
  auto c = ParseDeviceModelArgs(LabArgs());
  ASSERT_TRUE(c.ok());
  const IncomingDeviceModel where = LabWhere();
  IncomingDeviceModel w = where;
  w.name = "a,b";  // QEMU would read ",b" as an option of -name
  EXPECT_EQ(IncomingDeviceModelArgs(*c, w).status().code(), Code::kInvalidArgument);
  w = where;
  w.serial_files = {"/tmp/x,append=on"};
  EXPECT_EQ(IncomingDeviceModelArgs(*c, w).status().code(), Code::kInvalidArgument);
  w = where;
  w.serial_files.clear();  // a file port needs a file
  EXPECT_EQ(IncomingDeviceModelArgs(*c, w).status().code(), Code::kInvalidArgument);
  w = where;
  w.kernel.clear();  // a directly booted guest's QEMU needs a kernel to have its fw_cfg device
  EXPECT_EQ(IncomingDeviceModelArgs(*c, w).status().code(), Code::kInvalidArgument);
  w = where;
  w.state_fd = -1;
  EXPECT_EQ(IncomingDeviceModelArgs(*c, w).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace romulus::devicemodel

namespace romulus::devicemodel {
namespace {

// The kernel path comes from the primary; QEMU runs as root on the backup.
TEST(AllowedGuestKernel, OnlyRegularFilesInsideAnAllowedDirectory) {
  ScopedTempDir t;
  namespace fs = std::filesystem;
  fs::create_directories(t.path + "/boot");
  fs::create_directories(t.path + "/secret");
  std::ofstream(t.path + "/boot/vmlinuz") << "kernel";
  std::ofstream(t.path + "/secret/shadow") << "root:x";
  fs::create_symlink(t.path + "/secret/shadow", t.path + "/boot/link-out");
  fs::create_symlink(t.path + "/boot/vmlinuz", t.path + "/secret/link-in");
  const std::vector<std::string> dirs = {t.path + "/boot"};

  auto ok = AllowedGuestKernel(t.path + "/boot/vmlinuz", dirs);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(*ok, fs::canonical(t.path + "/boot/vmlinuz").string());
  // A link from elsewhere to an allowed file is that file.
  auto in = AllowedGuestKernel(t.path + "/secret/link-in", dirs);
  ASSERT_TRUE(in.ok()) << in.status().ToString();
  EXPECT_EQ(*in, *ok);

  for (const std::string& bad : {t.path + "/secret/shadow", t.path + "/boot/link-out",
                                 t.path + "/boot/../secret/shadow", t.path + "/boot", t.path + "/boot/missing",
                                 t.path + "/bootx/vmlinuz"}) {
    auto r = AllowedGuestKernel(bad, dirs);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kUnsupported) << r.status().ToString();
  }
  auto r = AllowedGuestKernel(t.path + "/secret/shadow", dirs);
  EXPECT_NE(r.status().message().find("--guest-kernel-dir"), std::string::npos) << r.status().ToString();
  EXPECT_FALSE(AllowedGuestKernel(t.path + "/boot/vmlinuz", {}).ok()) << "no directory allows nothing";
  // A prefix that is not a directory boundary allows nothing more.
  EXPECT_FALSE(AllowedGuestKernel(t.path + "/boot/vmlinuz", {t.path + "/bo"}).ok());
}

}  // namespace
}  // namespace romulus::devicemodel

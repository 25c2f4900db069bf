// An HVM guest's device model as typed facts (docs/DEVICE-MODEL.md §3.1).
//
// The backup must start a device model whose devices are exactly the
// primary's, or the checkpoint's QEVM state does not load. The primary
// reads what its device model was started with (libxl's command line) and
// describes it here, in typed fields; the backup builds its own command
// line from those fields. A command line never travels: one taken from the
// network would let a hostile primary run anything with the backup's
// privileges. Whatever the parser does not know is refused with its name,
// so an unsupported device (an emulated disk, USB, sound, …) is a clear
// refusal on the primary, never a replica that cannot resume.
//
// Pure functions: parsed, validated and fuzzed without a Xen host.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::devicemodel {

// A QEMU release, as its QMP greeting and `--version` give it. All zero:
// unknown (a primary that did not say).
struct QemuVersion {
  unsigned major = 0, minor = 0, micro = 0;
  bool known() const { return major != 0 || minor != 0 || micro != 0; }
  std::string ToString() const;
  friend bool operator==(const QemuVersion&, const QemuVersion&) = default;
};

// "7.2.19" (each part at most 9999); kInvalidArgument otherwise.
Result<QemuVersion> ParseQemuVersion(const std::string& text);
// The release in `qemu-system-i386 --version`'s first line ("QEMU emulator
// version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"); kInvalidArgument if none.
Result<QemuVersion> QemuVersionFromBanner(const std::string& banner);
// Whether the backup's device model can load a state the primary's saves:
// QEMU loads states of its own release and older ones, not newer ones, so
// a backup whose QEMU (major.minor) is older than the primary's is refused
// at session start (kUnsupported, saying what to install) instead of
// failing at failover. That holds for a pinned machine type only: libxl's
// "xenfv" is one (an alias of xenfv-4.2), but "pc" (xen_platform_pci=0) is
// each QEMU's newest i440fx machine, so then the releases must be equal
// (major.minor). Unknown on either side: Ok (nothing to compare).
Status CheckDeviceModelVersions(const QemuVersion& primary, bool pinned_machine, const QemuVersion& backup);

struct DeviceModelConfig {
  // libxl's two HVM machines: "xenfv" (with the Xen platform PCI device,
  // the default) or "pc,accel=xen" (xen_platform_pci=0).
  bool platform_pci = true;
  bool suppress_vmdesc = true;     // libxl always sets it; the state then has no vmdescription
  uint64_t max_ram_below_4g = 0;   // mmio_hole; 0: QEMU's default
  uint64_t memory_mib = 0;         // -m: the guest's RAM minus video memory
  unsigned vcpus = 1;              // -smp N (online at boot)
  unsigned maxcpus = 1;            // -smp …,maxcpus=M (QEMU binds an ioreq channel per vCPU)
  bool acpi = true;                // -no-acpi clears it (no PIIX4 power management)
  // The emulated serial ports, in order (each one is a device in the state).
  enum class Serial { kPty, kFile, kNull };
  std::vector<Serial> serials;
  // A guest booted directly (xl's kernel= for HVM: -kernel): QEMU then has
  // a fw_cfg device, which the state carries, so the backup's must have one
  // too, and QEMU creates it only while loading a kernel. Its contents do
  // not matter after boot; the backup loads the same path only from a
  // directory it allows (restore --guest-kernel-dir). "" when not.
  std::string kernel;
  // The display adapter (xl's vga=): a device in the state. Its video RAM
  // is guest memory on Xen (libxenguest carries it with the rest), so only
  // its size travels. libxl adds it before any emulated NIC.
  enum class Vga { kNone, kCirrus, kStd };
  Vga vga = Vga::kNone;
  unsigned vgamem_mib = 0;  // -device cirrus-vga|VGA,vgamem_mb=N; 0 with kNone
  // A VNC server (xl's vnc=1) is no device, so it is not in the state: the
  // backup serves its own, on loopback only (a listen address from the
  // network is never used), with a password required when the primary's
  // had one (the password itself never appears on a command line).
  enum class Vnc { kNone, kOpen, kPassword };
  Vnc vnc = Vnc::kNone;
  std::string keymap;  // -k LANG (xl's keymap=), "" when none
  // Emulated NICs (xl's type=ioemu vifs, an HVM guest's default): each a
  // -device MODEL with a tap netdev that QEMU creates as
  // vif<domid>.<devid>-emu. The tap shares vif <devid>'s backend nodes
  // (its bridge), so the backup attaches it with the same hotplug script.
  // A guest with PV drivers unplugs them at boot; one without uses them.
  struct Nic {
    unsigned devid = 0;
    std::string model;  // one of the QEMU NIC models Romulus knows (e1000, rtl8139, …)
    std::string mac;    // "xx:xx:xx:xx:xx:xx", lower case
    friend bool operator==(const Nic&, const Nic&) = default;
  };
  std::vector<Nic> nics;  // in the primary's order (QEMU's PCI slots follow it)
  // Emulated disks (xl gives every HVM disk numbered 0..3, hd[a-d] or
  // xvd[a-d], an IDE slot too, which the guest uses until its PV drivers
  // unplug it; with hdtype="ahci", disks 0..5, xvd[a-f] too, get a port of
  // one AHCI controller instead): the slots or ports, in the primary's
  // order. The primary's path is its own (the replicated disk's NBD
  // device); the backup gives QEMU its copy of the same disk, so each slot
  // must be one of the session's replicated disks (CheckEmulatedDisks).
  // Raw images only.
  enum class DiskBus { kIde, kAhci };
  DiskBus disk_bus = DiskBus::kIde;
  std::vector<unsigned> ide_disks;
  // The primary's own file for each of ide_disks (its NBD device), kept to
  // check it is the device blkback serves that disk from. Never sent, not
  // compared: the backup's are its own.
  std::vector<std::string> ide_files;
  // The primary's tap for each of nics, in that order, as its device model
  // was started with it (-netdev ifname=; libxl's vif<domid>.<devid>-emu,
  // which the hotplug script renames after a vifname=:
  // xen::EmulatedNicInterface). Never sent, not compared: the backup names
  // its own.
  std::vector<std::string> nic_taps;
  // The primary's running QEMU (its QMP greeting), compared with the
  // backup's at session start. Not from the command line: the parser leaves
  // it unknown. Optional in the domain info (dm_qemu).
  QemuVersion qemu;
};

inline bool operator==(const DeviceModelConfig& a, const DeviceModelConfig& b) {
  return a.platform_pci == b.platform_pci && a.suppress_vmdesc == b.suppress_vmdesc &&
         a.max_ram_below_4g == b.max_ram_below_4g && a.memory_mib == b.memory_mib && a.vcpus == b.vcpus &&
         a.maxcpus == b.maxcpus && a.acpi == b.acpi && a.serials == b.serials && a.kernel == b.kernel &&
         a.qemu == b.qemu && a.vga == b.vga && a.vgamem_mib == b.vgamem_mib && a.vnc == b.vnc &&
         a.keymap == b.keymap && a.nics == b.nics && a.ide_disks == b.ide_disks && a.disk_bus == b.disk_bus;
}

// The highest emulated disk slot of a bus: IDE 3 (hda…hdd), AHCI 5 (libxl's six ports).
unsigned MaxEmulatedDiskSlot(DeviceModelConfig::DiskBus bus);

// The session disk (its vdev, one of `vdevs`) behind emulated disk slot
// `index` (an IDE slot or an AHCI port): libxl gives disk number I
// (hda…hdd, xvda…xvdf) slot I. kUnsupported when none of them is, or
// when two are (hda and xvda).
Result<std::string> IdeDiskVdev(unsigned index, std::span<const std::string> vdevs);
// Every emulated IDE disk of `c` has its replicated disk among `vdevs` (a
// backup refuses at session start a guest whose emulated disk it could
// not give QEMU at failover).
Status CheckEmulatedDisks(const DeviceModelConfig& c, std::span<const std::string> vdevs);

// The tap QEMU creates for emulated NIC `devid` of domain `domid` (libxl's
// name; the vif's with "-emu").
std::string EmulatedNicTap(uint32_t domid, unsigned devid);

// The facts in a running device model's argument vector (as
// /proc/PID/cmdline gives it, argv[0] included). kUnsupported naming the
// first option this replicator cannot reproduce on the backup (an emulated
// disk, a display other than VNC, sound or USB, or anything unknown);
// kCorruption for a malformed value.
Result<DeviceModelConfig> ParseDeviceModelArgs(std::span<const std::string> argv);

// The domain-info lines ("dm_…=value\n") and their strict inverse (every
// value checked, bounded: the record comes from the network). FromInfo
// returns kCorruption for a damaged record, kUnsupported for a newer
// primary's facts this backup does not know (dm_version). Version 1 is
// written when the guest has no display and no emulated NIC (what every
// backup understands), version 2 otherwise.
std::string DeviceModelInfoLines(const DeviceModelConfig& c);
Result<DeviceModelConfig> DeviceModelConfigFromInfo(const std::map<std::string, std::string>& info);

// Where the backup's device model runs and what it writes.
struct IncomingDeviceModel {
  uint32_t domid = 0;
  std::string name;             // the replica's name (-name)
  std::string qmp_dir = "/var/run/xen";  // libxl's sockets: qmp-libxl-D, qmp-libxenstat-D
  std::vector<std::string> serial_files;  // one per kFile port, the backup's own paths
  std::string kernel;           // the file -kernel loads when the config has one (the backup's choice)
  std::map<unsigned, std::string> ide_paths;  // emulated IDE slot -> the block device of the backup's copy
  int state_fd = -1;            // the checkpoint's QEVM state, read by -incoming fd:N
};

// The argument vector (without argv[0]) for a device model that loads the
// checkpoint's device state and then runs the guest's devices: libxl's
// arguments for an incoming HVM guest, from the typed facts only.
// kInvalidArgument when `where` lacks a serial file a kFile port needs or
// the kernel a directly booted guest's device model needs.
Result<std::vector<std::string>> IncomingDeviceModelArgs(const DeviceModelConfig& c,
                                                         const IncomingDeviceModel& where);

// A path a primary may name and QEMU may be given: absolute, at most 4096
// printable characters, no comma (QEMU's option separator), no "..".
bool PlainAbsolutePath(const std::string& path);

// The backup's policy for the kernel a directly booted guest's device model
// loads: `named` (the primary's path) resolved, a regular file inside one
// of `dirs` (also resolved); else kUnsupported saying which directories
// are allowed (restore --guest-kernel-dir).
Result<std::string> AllowedGuestKernel(const std::string& named, const std::vector<std::string>& dirs);

}  // namespace romulus::devicemodel

#include "devicemodel/device_model_config.h"

#include <limits.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <utility>

namespace romulus::devicemodel {

namespace {

constexpr unsigned kMaxVcpus = 512;         // far above HVM_MAX_VCPUS (128)
constexpr uint64_t kMaxMemoryMib = 1u << 24;  // 16 TiB
constexpr size_t kMaxSerials = 4;           // COM1-COM4
constexpr size_t kMaxNics = 16;             // xen/vif_spec.h's kMaxVifs
constexpr unsigned kMaxNicDevid = 255;      // and its kMaxVifDevid
constexpr uint64_t kMaxVgaMemMib = 512;     // QEMU's VGA takes at most 512 MiB (vgamem_mb)

// QEMU's NIC models an HVM guest may have (xl's model=). A model names the
// device QEMU creates on the backup, so only these travel.
constexpr const char* kNicModels[] = {"e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "i82551",
                                      "i82557b", "i82559er", "virtio-net-pci", "vmxnet3"};

bool KnownNicModel(const std::string& m) {
  for (const char* k : kNicModels) {
    if (m == k) return true;
  }
  return false;
}

// The domain info's words for the enumerations: one table each, read by
// both directions (DeviceModelInfoLines writes them, FromInfo parses them).
template <typename E>
using Words = std::initializer_list<std::pair<E, const char*>>;
const Words<DeviceModelConfig::Serial> kSerialWords = {
    {DeviceModelConfig::Serial::kPty, "pty"}, {DeviceModelConfig::Serial::kFile, "file"},
    {DeviceModelConfig::Serial::kNull, "null"}};
const Words<DeviceModelConfig::Vga> kVgaWords = {
    {DeviceModelConfig::Vga::kNone, "none"}, {DeviceModelConfig::Vga::kCirrus, "cirrus"},
    {DeviceModelConfig::Vga::kStd, "std"}};
const Words<DeviceModelConfig::Vnc> kVncWords = {
    {DeviceModelConfig::Vnc::kNone, "none"}, {DeviceModelConfig::Vnc::kOpen, "open"},
    {DeviceModelConfig::Vnc::kPassword, "password"}};

template <typename E>
std::string WordOf(const Words<E>& words, E e) {
  for (const auto& [v, w] : words) {
    if (v == e) return w;
  }
  return "?";
}

template <typename E>
bool FromWord(const Words<E>& words, const std::string& w, E* out) {
  for (const auto& [v, word] : words) {
    if (w == word) {
      *out = v;
      return true;
    }
  }
  return false;
}

// "xx:xx:xx:xx:xx:xx", lower-case hex (libxl's format).
bool IsMac(const std::string& s) {
  if (s.size() != 17) return false;
  for (size_t i = 0; i < s.size(); i++) {
    const char ch = s[i];
    if (i % 3 == 2 ? ch != ':' : !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  }
  return true;
}

// A VNC keyboard layout as QEMU names its keymap files: "en-us", "de", "fr-ch".
bool IsKeymap(const std::string& s) {
  if (s.size() < 2 || s.size() > 8) return false;
  for (char ch : s) {
    if (!((ch >= 'a' && ch <= 'z') || ch == '-')) return false;
  }
  return s.front() != '-' && s.back() != '-';
}

// Digits only, no sign, no suffix, at most `max`.
bool ParseNumber(const std::string& s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  const unsigned long long v = strtoull(s.c_str(), nullptr, 10);
  if (errno == ERANGE || v > max) return false;
  *out = v;
  return true;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

// At most 80 printable characters of a value, for a message.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 80; i++) out += (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  if (s.size() > 80) out += "…";
  return out + "\"";
}

Status Malformed(const std::string& opt, const std::string& value) {
  return Status::Corruption("device model option -" + opt + " " + Quote(value) + " is malformed");
}

Status ParseMachine(const std::string& v, DeviceModelConfig* c) {
  const std::vector<std::string> parts = Split(v, ',');
  bool accel_xen = false;
  if (parts[0] == "xenfv") {
    c->platform_pci = true;
    accel_xen = true;
  } else if (parts[0] == "pc") {
    c->platform_pci = false;
  } else {
    return Status::Unsupported("device model machine " + Quote(parts[0]) +
                               " (Romulus replicates libxl's HVM machines, xenfv and pc with accel=xen)");
  }
  c->suppress_vmdesc = false;
  for (size_t i = 1; i < parts.size(); i++) {
    const size_t eq = parts[i].find('=');
    const std::string k = parts[i].substr(0, eq), val = eq == std::string::npos ? "" : parts[i].substr(eq + 1);
    if (k == "accel" && val == "xen") {
      accel_xen = true;
    } else if (k == "suppress-vmdesc" && (val == "on" || val == "off")) {
      c->suppress_vmdesc = val == "on";
    } else if (k == "max-ram-below-4g") {
      if (!ParseNumber(val, uint64_t{1} << 32, &c->max_ram_below_4g) || c->max_ram_below_4g == 0) {
        return Malformed("machine", v);
      }
    } else {
      return Status::Unsupported("device model machine option " + Quote(parts[i]) + " is not replicated");
    }
  }
  if (!accel_xen) return Status::Unsupported("device model machine " + Quote(v) + " without accel=xen");
  return Status::Ok();
}

Status ParseSmp(const std::string& v, DeviceModelConfig* c) {
  const std::vector<std::string> parts = Split(v, ',');
  uint64_t n = 0, max = 0;
  if (parts.size() > 2 || !ParseNumber(parts[0], kMaxVcpus, &n) || n == 0) return Malformed("smp", v);
  max = n;
  if (parts.size() == 2) {
    if (parts[1].rfind("maxcpus=", 0) != 0 || !ParseNumber(parts[1].substr(8), kMaxVcpus, &max) || max < n) {
      return Malformed("smp", v);
    }
  }
  c->vcpus = unsigned(n);
  c->maxcpus = unsigned(max);
  return Status::Ok();
}

Status ParseSerial(const std::string& v, DeviceModelConfig* c) {
  if (v == "none") return Status::Ok();  // no port at all
  DeviceModelConfig::Serial s;
  if (v == "pty") {
    s = DeviceModelConfig::Serial::kPty;
  } else if (v.rfind("file:", 0) == 0 && v.size() > 5) {
    s = DeviceModelConfig::Serial::kFile;
  } else if (v == "null" || v == "/dev/null") {
    s = DeviceModelConfig::Serial::kNull;
  } else {
    return Status::Unsupported("device model serial port " + Quote(v) +
                               " (Romulus replicates pty, file: and null serial ports)");
  }
  if (c->serials.size() == kMaxSerials) return Status::Unsupported("more than 4 serial ports");
  c->serials.push_back(s);
  return Status::Ok();
}


// key=value options after a device's driver name; false on a part without '='
// or a key given twice.
bool Options(const std::vector<std::string>& parts, size_t from, std::map<std::string, std::string>* out) {
  for (size_t i = from; i < parts.size(); i++) {
    const size_t eq = parts[i].find('=');
    if (eq == std::string::npos || eq == 0) return false;
    if (!out->emplace(parts[i].substr(0, eq), parts[i].substr(eq + 1)).second) return false;
  }
  return true;
}

// "nic3" / "net3" -> 3 (at most kMaxNicDevid).
bool DevidAfter(const std::string& v, const char* prefix, unsigned* devid) {
  const std::string p = prefix;
  uint64_t n = 0;
  if (v.rfind(p, 0) != 0 || !ParseNumber(v.substr(p.size()), kMaxNicDevid, &n)) return false;
  *devid = unsigned(n);
  return true;
}

// -device: the display adapter libxl adds for vga="cirrus"/"stdvga", or an
// emulated NIC (MODEL,id=nicN,netdev=netN,mac=M). Anything else is a device
// the backup cannot reproduce.
// What the options of libxl's AHCI disks said, put together at the end
// (hdtype="ahci": -device ahci,id=ahci0, then per disk N a -drive
// if=none,id=ahcidisk-N and a -device ide-hd,bus=ahci0.N,unit=0,drive=ahcidisk-N).
struct AhciSeen {
  bool controller = false;
  std::vector<unsigned> ports;                              // from the ide-hd devices
  std::vector<std::pair<unsigned, std::string>> drives;     // slot, file
};

Status ParseDevice(const std::string& v, DeviceModelConfig* c, AhciSeen* ahci) {
  const std::vector<std::string> parts = Split(v, ',');
  const std::string& driver = parts[0];
  std::map<std::string, std::string> o;
  if (driver == "ahci") {
    if (v != "ahci,id=ahci0" || ahci->controller) return Malformed("device", v);
    ahci->controller = true;
    return Status::Ok();
  }
  if (driver == "ide-hd") {
    // On the AHCI controller only: libxl's IDE disks are -drive if=ide.
    unsigned port = 0, drive = 0;
    if (!Options(parts, 1, &o) || o.size() != 3 || o["unit"] != "0" || !DevidAfter(o["bus"], "ahci0.", &port) ||
        !DevidAfter(o["drive"], "ahcidisk-", &drive) || port != drive ||
        port > MaxEmulatedDiskSlot(DeviceModelConfig::DiskBus::kAhci) || !ahci->controller ||
        std::find(ahci->ports.begin(), ahci->ports.end(), port) != ahci->ports.end()) {
      return Malformed("device", v);
    }
    ahci->ports.push_back(port);
    return Status::Ok();
  }
  if (driver == "ide-cd" || driver == "scsi-hd" || driver == "lsi53c895a") {
    return Status::Unsupported("the device model has an emulated " +
                               std::string(driver == "ide-cd" ? "CD-ROM drive" : "SCSI disk") + " (-device " +
                               Quote(v) + "): Romulus replicates libxl's IDE and AHCI disks (hdtype=\"ide\" or "
                               "\"ahci\") and no CD-ROM");
  }
  // QEMU numbers PCI slots in the order of -device: the backup adds the
  // adapter, the NICs and then the AHCI controller, as libxl does.
  auto after_controller = [&] {
    return Status::Unsupported("the device model has a device after its AHCI controller (-device " + Quote(v) +
                               "): not libxl's order, and the backup's PCI slots would not line up");
  };
  if (driver == "cirrus-vga" || driver == "VGA") {
    if (ahci->controller) return after_controller();
    if (!Options(parts, 1, &o) || o.size() != 1 || !o.count("vgamem_mb")) return Malformed("device", v);
    uint64_t mib = 0;
    if (!ParseNumber(o["vgamem_mb"], kMaxVgaMemMib, &mib) || mib == 0) return Malformed("device", v);
    if (c->vga != DeviceModelConfig::Vga::kNone) return Status::Unsupported("the device model has two display adapters");
    // QEMU numbers PCI slots in the order of -device: the backup adds the
    // adapter first, as libxl does, so one after a NIC would not line up.
    if (!c->nics.empty()) {
      return Status::Unsupported("the device model's display adapter comes after an emulated NIC (not libxl's order)");
    }
    c->vga = driver == "VGA" ? DeviceModelConfig::Vga::kStd : DeviceModelConfig::Vga::kCirrus;
    c->vgamem_mib = unsigned(mib);
    return Status::Ok();
  }
  if (!KnownNicModel(driver)) {
    return Status::Unsupported("the device model has an emulated device (-device " + Quote(v) +
                               "), which Romulus cannot yet start on the backup: protect HVM guests whose emulated "
                               "devices are libxl's IDE disks, NICs and a VGA adapter with VNC");
  }
  if (ahci->controller) return after_controller();
  DeviceModelConfig::Nic nic;
  unsigned netdev = 0;
  if (!Options(parts, 1, &o) || o.size() != 3 || !DevidAfter(o["id"], "nic", &nic.devid) ||
      !DevidAfter(o["netdev"], "net", &netdev) || netdev != nic.devid || !IsMac(o["mac"])) {
    return Malformed("device", v);
  }
  nic.model = driver;
  nic.mac = o["mac"];
  for (const auto& n : c->nics) {
    if (n.devid == nic.devid) return Malformed("device", v);
  }
  if (c->nics.size() == kMaxNics) return Status::Unsupported("more than 16 emulated NICs");
  c->nics.push_back(nic);
  return Status::Ok();
}

// -drive: an emulated IDE disk as libxl gives it
// (file=PATH,if=ide,index=I,media=disk,format=raw,cache=writeback), or an
// AHCI disk's (file=PATH,if=none,id=ahcidisk-N,format=raw,cache=writeback,
// its port a -device ide-hd). CD-ROMs are not replicated.
Status ParseDrive(const std::string& v, DeviceModelConfig* c, AhciSeen* ahci) {
  std::map<std::string, std::string> o;
  if (!Options(Split(v, ','), 0, &o)) return Malformed("drive", v);
  auto get = [&](const char* k) {
    auto it = o.find(k);
    return it == o.end() ? std::string() : it->second;
  };
  const std::string media = get("media"), iface = get("if"), format = get("format"), cache = get("cache");
  if (media == "cdrom" || (o.count("readonly") && get("readonly") != "off")) {
    return Status::Unsupported("the device model has an emulated CD-ROM or read-only disk (-drive " + Quote(v) +
                               "), which Romulus does not replicate: remove it from the guest's config");
  }
  const bool on_ahci = iface == "none" && get("id").rfind("ahcidisk-", 0) == 0;
  if (iface != "ide" && !on_ahci) {
    return Status::Unsupported("the device model has an emulated disk on " + Quote(iface) + " (-drive " + Quote(v) +
                               "): Romulus replicates libxl's IDE and AHCI disks, not SCSI");
  }
  if (format != "raw") {
    return Status::Unsupported("the device model has an emulated disk of format " + Quote(format) +
                               ": Romulus replicates raw disks (phy: on the disk export's NBD device)");
  }
  // cache=unsafe ignores flushes: the device model's stop at each checkpoint
  // would then not put its completed writes on the disk before the cut.
  if (cache != "writeback" && cache != "none" && cache != "writethrough" && cache != "directsync") {
    return Status::Unsupported("the device model has an emulated disk with " +
                               (cache.empty() ? std::string("QEMU's default cache mode") : "cache=" + Quote(cache)) +
                               ": Romulus replicates libxl's cache=writeback (and none, writethrough, directsync), "
                               "whose flushes QEMU honours at every checkpoint");
  }
  for (const auto& [k, val] : o) {
    if (k != "file" && k != "if" && k != "index" && k != "media" && k != "format" && k != "cache" && k != "readonly" &&
        k != "id") {
      return Status::Unsupported("device model -drive option " + Quote(k + "=" + val) + " is not replicated");
    }
  }
  if (on_ahci) {
    unsigned slot = 0;
    if (o.count("index") || o.count("media") || !DevidAfter(get("id"), "ahcidisk-", &slot) ||
        slot > MaxEmulatedDiskSlot(DeviceModelConfig::DiskBus::kAhci) || !PlainAbsolutePath(get("file"))) {
      return Malformed("drive", v);
    }
    for (const auto& d : ahci->drives) {
      if (d.first == slot) return Malformed("drive", v);
    }
    ahci->drives.emplace_back(slot, get("file"));
    return Status::Ok();
  }
  uint64_t index = 0;
  if (o.count("id") || media != "disk" || !ParseNumber(get("index"), MaxEmulatedDiskSlot(DeviceModelConfig::DiskBus::kIde), &index) ||
      !PlainAbsolutePath(get("file"))) {
    return Malformed("drive", v);
  }
  if (std::find(c->ide_disks.begin(), c->ide_disks.end(), unsigned(index)) != c->ide_disks.end()) {
    return Malformed("drive", v);
  }
  c->ide_disks.push_back(unsigned(index));
  c->ide_files.push_back(get("file"));
  return Status::Ok();
}

// -netdev: the tap of an emulated NIC, as libxl gives it
// (type=tap,id=netN,ifname=…,br=…,script=…,downscript=…). Its id pairs it
// with its NIC; its ifname is where the NIC's output comes out on the
// primary (output commit must plug it). The backup names its own tap and
// attaches it with its own hotplug script.
Status ParseNetdev(const std::string& v, std::vector<std::pair<unsigned, std::string>>* taps) {
  std::map<std::string, std::string> o;
  if (!Options(Split(v, ','), 0, &o)) return Malformed("netdev", v);
  if (!o.count("type")) return Malformed("netdev", v);
  if (o["type"] != "tap") {
    return Status::Unsupported("the device model has an emulated NIC on a " + Quote(o["type"]) +
                               " network backend (Romulus replicates libxl's tap backends)");
  }
  unsigned devid = 0;
  // An interface name: 1..15 characters, none of them '/', ':' or space (the kernel's dev_valid_name).
  const std::string& ifname = o["ifname"];
  if (!DevidAfter(o["id"], "net", &devid) || ifname.empty() || ifname.size() > 15 ||
      ifname.find_first_of("/: \t\n") != std::string::npos || ifname == "." || ifname == "..") {
    return Malformed("netdev", v);
  }
  for (const auto& [k, val] : o) {
    if (k != "type" && k != "id" && k != "ifname" && k != "br" && k != "script" && k != "downscript") {
      return Status::Unsupported("device model -netdev option " + Quote(k + "=" + val) + " is not replicated");
    }
  }
  for (const auto& t : *taps) {
    if (t.first == devid) return Malformed("netdev", v);
  }
  taps->emplace_back(devid, ifname);
  return Status::Ok();
}

// -vnc ADDR:DISPLAY[,password=on][,to=N] (libxl's), or none.
Status ParseVnc(const std::string& v, DeviceModelConfig* c) {
  if (v == "none") return Status::Ok();
  const std::vector<std::string> parts = Split(v, ',');
  if (parts[0].find(':') == std::string::npos) return Malformed("vnc", v);
  std::map<std::string, std::string> o;
  if (!Options(parts, 1, &o)) return Malformed("vnc", v);
  c->vnc = DeviceModelConfig::Vnc::kOpen;
  for (const auto& [k, val] : o) {
    uint64_t n = 0;
    if (k == "password" && val == "on") {
      c->vnc = DeviceModelConfig::Vnc::kPassword;
    } else if (k == "to" && ParseNumber(val, 65535, &n)) {
      // findunused: which port the backup's server gets is its own business
    } else {
      return Status::Unsupported("device model -vnc option " + Quote(k + "=" + val) +
                                 " is not replicated (Romulus replicates libxl's VNC: password and to=)");
    }
  }
  return Status::Ok();
}

// The one chardev/monitor pair libxl adds per QMP socket; anything else
// could back a device.
bool IsLibxlQmp(const std::string& opt, const std::string& v) {
  for (const char* id : {"libxl-cmd", "libxenstat-cmd"}) {
    if (opt == "chardev" && v.rfind(std::string("socket,id=") + id + ",", 0) == 0) return true;
    if (opt == "mon" && v == std::string("chardev=") + id + ",mode=control") return true;
  }
  return false;
}

// Options that only matter when the guest boots or for how dom0 runs the
// process, never for the devices the state describes: the backup sets its
// own (or none).
bool IgnoredWithValue(const std::string& opt) {
  for (const char* o : {"xen-domid", "name", "boot", "initrd", "append", "incoming", "pidfile"}) {
    if (opt == o) return true;
  }
  return false;
}

bool IgnoredFlag(const std::string& opt) {
  for (const char* o : {"no-shutdown", "nodefaults", "no-user-config", "S"}) {
    if (opt == o) return true;
  }
  return false;
}

std::string Why(const std::string& opt) {
  if (opt == "device") return "an emulated device";
  if (opt == "drive" || opt == "hda" || opt == "hdb" || opt == "hdc" || opt == "hdd" || opt == "cdrom") {
    return "an emulated disk";
  }
  if (opt == "net" || opt == "netdev" || opt == "nic") return "an emulated NIC";
  if (opt == "vga" || opt == "display" || opt == "spice" || opt == "sdl" || opt == "nographic") {
    return "a display";
  }
  if (opt == "usb" || opt == "usbdevice") return "USB";
  if (opt == "soundhw" || opt == "audiodev") return "sound";
  if (opt == "xen-domid-restrict" || opt == "runas" || opt == "chroot" || opt == "sandbox") {
    // The backup would run it as root, unconfined: refused rather than
    // silently weakened.
    return "libxl's dm_restrict confinement, which the backup's device model does not reproduce yet";
  }
  return "an option Romulus does not know";
}

}  // namespace

Result<DeviceModelConfig> ParseDeviceModelArgs(std::span<const std::string> argv) {
  DeviceModelConfig c;
  bool have_machine = false, have_memory = false;
  std::vector<std::pair<unsigned, std::string>> taps;  // the -netdev ids seen, with their ifnames
  AhciSeen ahci;
  for (size_t i = 1; i < argv.size(); i++) {
    const std::string& a = argv[i];
    if (a.size() < 2 || a[0] != '-') {
      return Status::Unsupported("device model argument " + Quote(a) + " (a disk image?) is not replicated");
    }
    const std::string opt = a.substr(a[1] == '-' ? 2 : 1);
    if (IgnoredFlag(opt)) continue;
    if (opt == "no-acpi") {
      c.acpi = false;
      continue;
    }
    const bool typed = opt == "machine" || opt == "M" || opt == "m" || opt == "smp" || opt == "serial" ||
                       opt == "kernel" || opt == "device" || opt == "netdev" || opt == "vnc" || opt == "k" ||
                       opt == "drive";
    const bool none_only = opt == "display" || opt == "net";
    if (!typed && !none_only && !IgnoredWithValue(opt) && opt != "chardev" && opt != "mon") {
      return Status::Unsupported("the device model has " + Why(opt) + " (-" + opt + (i + 1 < argv.size() ? " " + Quote(argv[i + 1]) : "") +
                                 "), which Romulus cannot yet start on the backup: protect HVM guests whose "
                                 "emulated devices are libxl's IDE disks, NICs and a VGA adapter with VNC");
    }
    if (i + 1 == argv.size()) return Status::Corruption("device model option -" + opt + " without its value");
    const std::string& v = argv[++i];
    if (opt == "machine" || opt == "M") {
      ROMULUS_RETURN_IF_ERROR(ParseMachine(v, &c));
      have_machine = true;
    } else if (opt == "m") {
      const std::string n = v.rfind("size=", 0) == 0 ? v.substr(5) : v;
      if (!ParseNumber(n, kMaxMemoryMib, &c.memory_mib) || c.memory_mib == 0) return Malformed(opt, v);
      have_memory = true;
    } else if (opt == "smp") {
      ROMULUS_RETURN_IF_ERROR(ParseSmp(v, &c));
    } else if (opt == "serial") {
      ROMULUS_RETURN_IF_ERROR(ParseSerial(v, &c));
    } else if (opt == "kernel") {
      if (!PlainAbsolutePath(v)) return Malformed(opt, v);
      c.kernel = v;
    } else if (opt == "device") {
      ROMULUS_RETURN_IF_ERROR(ParseDevice(v, &c, &ahci));
    } else if (opt == "netdev") {
      ROMULUS_RETURN_IF_ERROR(ParseNetdev(v, &taps));
    } else if (opt == "drive") {
      ROMULUS_RETURN_IF_ERROR(ParseDrive(v, &c, &ahci));
    } else if (opt == "vnc") {
      ROMULUS_RETURN_IF_ERROR(ParseVnc(v, &c));
    } else if (opt == "k") {
      if (!IsKeymap(v)) return Malformed(opt, v);
      c.keymap = v;
    } else if (none_only) {
      if (v != "none") {
        return Status::Unsupported("the device model has " + Why(opt) + " (-" + opt + " " + Quote(v) +
                                   "), which Romulus cannot yet start on the backup");
      }
    } else if ((opt == "chardev" || opt == "mon") && !IsLibxlQmp(opt, v)) {
      return Status::Unsupported("device model -" + opt + " " + Quote(v) +
                                 " is not one of libxl's QMP sockets and is not replicated");
    }
  }
  if (!have_machine) return Status::Unsupported("the device model has no -machine: not one libxl started for an HVM guest");
  if (!have_memory) return Status::Corruption("the device model has no -m (memory size)");
  // libxl's AHCI disks: the controller, and each drive with its port.
  if (ahci.controller || !ahci.ports.empty() || !ahci.drives.empty()) {
    if (!c.ide_disks.empty()) {
      return Status::Unsupported("the device model has IDE and AHCI disks both (not libxl's: hdtype is one or the other)");
    }
    // (libxl adds the controller for hdtype="ahci" even without a disk on it)
    if (!ahci.controller || ahci.ports.size() != ahci.drives.size()) {
      return Status::Unsupported("the device model's AHCI controller, drives and ports do not pair up (" +
                                 std::to_string(ahci.drives.size()) + " drives, " + std::to_string(ahci.ports.size()) +
                                 " ports)");
    }
    for (const auto& [slot, file] : ahci.drives) {
      if (std::find(ahci.ports.begin(), ahci.ports.end(), slot) == ahci.ports.end()) {
        return Status::Unsupported("AHCI drive ahcidisk-" + std::to_string(slot) + " has no port ahci0." +
                                   std::to_string(slot));
      }
      c.ide_disks.push_back(slot);
      c.ide_files.push_back(file);
    }
    c.disk_bus = DeviceModelConfig::DiskBus::kAhci;
  }
  // Each NIC on its own tap, each tap behind a NIC.
  if (taps.size() != c.nics.size()) {
    return Status::Unsupported("the device model's emulated NICs and tap netdevs do not pair up (" +
                               std::to_string(c.nics.size()) + " NICs, " + std::to_string(taps.size()) + " taps)");
  }
  for (const auto& n : c.nics) {
    auto t = std::find_if(taps.begin(), taps.end(), [&](const auto& p) { return p.first == n.devid; });
    if (t == taps.end()) {
      return Status::Unsupported("emulated NIC nic" + std::to_string(n.devid) + " has no tap netdev net" +
                                 std::to_string(n.devid));
    }
    c.nic_taps.push_back(t->second);
  }
  return c;
}

unsigned MaxEmulatedDiskSlot(DeviceModelConfig::DiskBus bus) {
  return bus == DeviceModelConfig::DiskBus::kAhci ? 5 : 3;
}

Result<std::string> IdeDiskVdev(unsigned index, std::span<const std::string> vdevs) {
  const char letter = char('a' + index);
  std::string found;
  for (const std::string& v : vdevs) {
    // libxl's hd names stop at hdd; xvd names go on (an AHCI port 4 or 5 is xvde or xvdf).
    const bool hd = index <= 3 && v == std::string("hd") + letter;
    if (index > 5 || (!hd && v != std::string("xvd") + letter)) continue;
    if (!found.empty()) {
      return Status::Unsupported("emulated IDE disk " + std::to_string(index) + " could be " + found + " or " + v);
    }
    found = v;
  }
  if (found.empty()) {
    return Status::Unsupported("the HVM guest's emulated disk " + std::to_string(index) + " (" +
                               (index <= 3 ? std::string("hd") + letter + "/" : std::string()) + "xvd" + letter +
                               ") is not among the disks this session replicates: QEMU on the backup "
                               "would have no copy of it (replicate --disk-tap for that disk)");
  }
  return found;
}

Status CheckEmulatedDisks(const DeviceModelConfig& c, std::span<const std::string> vdevs) {
  for (unsigned i : c.ide_disks) {
    auto v = IdeDiskVdev(i, vdevs);
    if (!v.ok()) return v.status();
  }
  return Status::Ok();
}

std::string EmulatedNicTap(uint32_t domid, unsigned devid) {
  return "vif" + std::to_string(domid) + "." + std::to_string(devid) + "-emu";
}

std::string DeviceModelInfoLines(const DeviceModelConfig& c) {
  std::string serials;
  for (DeviceModelConfig::Serial s : c.serials) {
    if (!serials.empty()) serials += ',';
    serials += WordOf(kSerialWords, s);
  }
  // Version 2 only when it says more than version 1 could: a guest without
  // a display or an emulated NIC still fails over to an older backup.
  const bool v2 = c.vga != DeviceModelConfig::Vga::kNone || c.vnc != DeviceModelConfig::Vnc::kNone ||
                  !c.keymap.empty() || !c.nics.empty() || !c.ide_disks.empty() ||
                  c.disk_bus != DeviceModelConfig::DiskBus::kIde;
  // Version 3 only for AHCI disks: an older backup would start them on IDE.
  const bool v3 = c.disk_bus == DeviceModelConfig::DiskBus::kAhci;
  std::string more;
  if (v2) {
    std::string ide;
    for (unsigned i : c.ide_disks) ide += (ide.empty() ? "" : ",") + std::to_string(i);
    std::string nics;
    for (const auto& n : c.nics) {
      if (!nics.empty()) nics += ',';
      nics += std::to_string(n.devid) + "/" + n.model + "/" + n.mac;
    }
    more = "dm_vga=" + WordOf(kVgaWords, c.vga) + "\ndm_vgamem_mib=" + std::to_string(c.vgamem_mib) +
           "\ndm_vnc=" + WordOf(kVncWords, c.vnc) +
           "\ndm_keymap=" + c.keymap + "\ndm_nics=" + nics + "\ndm_ide=" + ide + "\n";
    if (v3) more += "dm_disk_bus=ahci\n";
  }
  return std::string(v3 ? "dm_version=3" : v2 ? "dm_version=2" : "dm_version=1") + "\ndm_machine=" + std::string(c.platform_pci ? "xenfv" : "pc") +
         "\ndm_suppress_vmdesc=" + (c.suppress_vmdesc ? "1" : "0") +
         "\ndm_max_ram_below_4g=" + std::to_string(c.max_ram_below_4g) +
         "\ndm_memory_mib=" + std::to_string(c.memory_mib) + "\ndm_vcpus=" + std::to_string(c.vcpus) +
         "\ndm_maxcpus=" + std::to_string(c.maxcpus) + "\ndm_acpi=" + (c.acpi ? "1" : "0") +
         "\ndm_serials=" + serials + "\ndm_kernel=" + c.kernel + "\n" +
         (c.qemu.known() ? "dm_qemu=" + c.qemu.ToString() + "\n" : std::string()) + more;
}

std::string QemuVersion::ToString() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(micro);
}

Result<QemuVersion> ParseQemuVersion(const std::string& text) {
  QemuVersion v;
  unsigned* parts[3] = {&v.major, &v.minor, &v.micro};
  size_t pos = 0;
  for (int i = 0; i < 3; i++) {
    size_t end = pos;
    while (end < text.size() && end - pos < 5 && text[end] >= '0' && text[end] <= '9') end++;
    const size_t len = end - pos;
    const bool last = i == 2;
    if (len == 0 || len > 4 || (last ? end != text.size() : (end >= text.size() || text[end] != '.'))) {
      return Status::InvalidArgument("not a QEMU version: " + Quote(text.substr(0, 40)));
    }
    *parts[i] = unsigned(std::stoul(text.substr(pos, len)));
    pos = end + 1;
  }
  return v;
}

Result<QemuVersion> QemuVersionFromBanner(const std::string& banner) {
  static const std::string kPrefix = "QEMU emulator version ";
  const size_t at = banner.find(kPrefix);
  if (at == std::string::npos) return Status::InvalidArgument("no \"" + kPrefix + "\" in " + Quote(banner.substr(0, 80)));
  const size_t from = at + kPrefix.size();
  size_t end = from;
  while (end < banner.size() && end - from < 16 && (banner[end] == '.' || (banner[end] >= '0' && banner[end] <= '9'))) {
    end++;
  }
  return ParseQemuVersion(banner.substr(from, end - from));
}

Status CheckDeviceModelVersions(const QemuVersion& primary, bool pinned_machine, const QemuVersion& backup) {
  if (!primary.known() || !backup.known()) return Status::Ok();
  const auto mine = std::tie(backup.major, backup.minor), theirs = std::tie(primary.major, primary.minor);
  const bool refused = pinned_machine ? mine < theirs : mine != theirs;
  if (!refused) return Status::Ok();
  const std::string pair = "the primary's device model is QEMU " + primary.ToString() +
                           ", this backup's (restore --device-model) is QEMU " + backup.ToString();
  const std::string wanted = std::to_string(primary.major) + "." + std::to_string(primary.minor);
  if (!pinned_machine) {
    return Status::Unsupported(pair + ": the guest's machine is \"pc\" (xen_platform_pci=0), which each QEMU release "
                               "defines anew, so its device state loads only into the same release; install QEMU " +
                               wanted + " on the backup");
  }
  return Status::Unsupported(pair + ": an older QEMU cannot load a newer one's device state, so this guest could not "
                             "fail over here; install QEMU " + wanted + " or later on the backup");
}

Result<std::string> AllowedGuestKernel(const std::string& named, const std::vector<std::string>& dirs) {
  // The primary names the path; QEMU, running as root here, would read it
  // into the guest's firmware interface. Resolved (symlinks, "..") before
  // the check, so only files inside an allowed directory are ever read.
  char resolved[PATH_MAX];
  if (realpath(named.c_str(), resolved) == nullptr) {
    return Status::Unsupported("the HVM guest was booted directly from kernel " + named +
                               ", which its device model needs on this backup too (" + strerror(errno) +
                               "; install the same kernel file here)");
  }
  struct stat st;
  const bool regular = ::stat(resolved, &st) == 0 && S_ISREG(st.st_mode);
  for (const std::string& dir : dirs) {
    char d[PATH_MAX];
    if (realpath(dir.c_str(), d) == nullptr) continue;
    const std::string prefix = std::string(d) == "/" ? "/" : std::string(d) + "/";
    // QEMU reads the resolved path: it must be one QEMU reads as given.
    if (regular && std::string(resolved).rfind(prefix, 0) == 0 && PlainAbsolutePath(resolved)) {
      return std::string(resolved);
    }
  }
  std::string allowed;
  for (const std::string& dir : dirs) allowed += (allowed.empty() ? "" : ", ") + dir;
  return Status::Unsupported("the HVM guest was booted directly from kernel " + named +
                             (regular ? "" : " (not a regular file)") + ", outside the directories its device model may "
                             "load a kernel from (" + (allowed.empty() ? "none" : allowed) +
                             "; restore --guest-kernel-dir DIR)");
}

bool PlainAbsolutePath(const std::string& path) {
  if (path.size() < 2 || path.size() > 4096 || path[0] != '/') return false;
  for (char ch : path) {
    if (ch < 0x20 || ch == 0x7f || ch == ',') return false;
  }
  return path.find("/../") == std::string::npos && !path.ends_with("/..");
}

// Version 2's facts: the display adapter, VNC, the keymap, emulated NICs.
template <typename Get>
Status DisplayAndNicsFromInfo(const Get& get, DeviceModelConfig* c) {
  const std::string* vga = get("dm_vga");
  const std::string* vgamem = get("dm_vgamem_mib");
  const std::string* vnc = get("dm_vnc");
  const std::string* keymap = get("dm_keymap");
  const std::string* nics = get("dm_nics");
  const std::string* ide = get("dm_ide");
  if (!vga || !vgamem || !vnc || !keymap || !nics || !ide) {
    return Status::Corruption("domain info: device model facts of version 2 without dm_vga, dm_vgamem_mib, dm_vnc, "
                              "dm_keymap, dm_nics or dm_ide");
  }
  const unsigned max_slot = MaxEmulatedDiskSlot(c->disk_bus);
  if (!ide->empty()) {
    if (size_t(std::count(ide->begin(), ide->end(), ',')) > max_slot) {
      return Status::Corruption("domain info: more than " + std::to_string(max_slot + 1) + " dm_ide slots");
    }
    const std::vector<std::string> slots = Split(*ide, ',');
    for (const std::string& slot : slots) {
      uint64_t i = 0;
      if (!ParseNumber(slot, max_slot, &i) ||
          std::find(c->ide_disks.begin(), c->ide_disks.end(), unsigned(i)) != c->ide_disks.end()) {
        return Status::Corruption("domain info: bad dm_ide " + Quote(*ide));
      }
      c->ide_disks.push_back(unsigned(i));
    }
  }
  if (!FromWord(kVgaWords, *vga, &c->vga)) return Status::Corruption("domain info: bad dm_vga " + Quote(*vga));
  uint64_t mib = 0;
  const bool adapter = c->vga != DeviceModelConfig::Vga::kNone;
  if (!ParseNumber(*vgamem, kMaxVgaMemMib, &mib) || (mib == 0) == adapter) {
    return Status::Corruption("domain info: bad dm_vgamem_mib " + Quote(*vgamem) + " for dm_vga " + Quote(*vga));
  }
  c->vgamem_mib = unsigned(mib);
  if (!FromWord(kVncWords, *vnc, &c->vnc)) return Status::Corruption("domain info: bad dm_vnc " + Quote(*vnc));
  if (!keymap->empty() && !IsKeymap(*keymap)) return Status::Corruption("domain info: bad dm_keymap " + Quote(*keymap));
  c->keymap = *keymap;
  if (nics->empty()) return Status::Ok();
  // Counted before splitting: the record may be megabytes of commas.
  if (size_t(std::count(nics->begin(), nics->end(), ',')) >= kMaxNics) {
    return Status::Corruption("domain info: more than 16 dm_nics");
  }
  const std::vector<std::string> list = Split(*nics, ',');
  for (const std::string& item : list) {
    const std::vector<std::string> f = Split(item, '/');
    DeviceModelConfig::Nic n;
    uint64_t devid = 0;
    if (f.size() != 3 || !ParseNumber(f[0], kMaxNicDevid, &devid) || !KnownNicModel(f[1]) || !IsMac(f[2])) {
      return Status::Corruption("domain info: bad dm_nics entry " + Quote(item));
    }
    n.devid = unsigned(devid);
    n.model = f[1];
    n.mac = f[2];
    for (const auto& other : c->nics) {
      if (other.devid == n.devid) return Status::Corruption("domain info: dm_nics names nic" + f[0] + " twice");
    }
    c->nics.push_back(n);
  }
  return Status::Ok();
}

Result<DeviceModelConfig> DeviceModelConfigFromInfo(const std::map<std::string, std::string>& info) {
  auto get = [&](const char* k) -> const std::string* {
    auto it = info.find(k);
    return it == info.end() ? nullptr : &it->second;
  };
  const std::string* version = get("dm_version");
  if (!version) return Status::Corruption("domain info: an HVM guest without its device model's facts (dm_version)");
  if (*version != "1" && *version != "2" && *version != "3") {
    return Status::Unsupported("domain info: device model facts of version " + Quote(*version) +
                               " (a newer primary? this backup knows versions 1 to 3)");
  }
  DeviceModelConfig c;
  if (*version == "3") {
    // Version 3: version 2 and the bus of the emulated disks.
    const std::string* bus = get("dm_disk_bus");
    if (!bus || *bus != "ahci") return Status::Corruption("domain info: device model facts of version 3 without dm_disk_bus=ahci");
    c.disk_bus = DeviceModelConfig::DiskBus::kAhci;
  }
  auto number = [&](const char* k, uint64_t min, uint64_t max, uint64_t* out) -> Status {
    const std::string* v = get(k);
    if (!v || !ParseNumber(*v, max, out) || *out < min) {
      return Status::Corruption(std::string("domain info: missing or bad ") + k + (v ? " " + Quote(*v) : ""));
    }
    return Status::Ok();
  };
  auto flag = [&](const char* k, bool* out) -> Status {
    uint64_t v = 0;
    ROMULUS_RETURN_IF_ERROR(number(k, 0, 1, &v));
    *out = v == 1;
    return Status::Ok();
  };
  const std::string* machine = get("dm_machine");
  if (!machine || (*machine != "xenfv" && *machine != "pc")) {
    return Status::Corruption("domain info: bad dm_machine" + (machine ? " " + Quote(*machine) : std::string()));
  }
  c.platform_pci = *machine == "xenfv";
  ROMULUS_RETURN_IF_ERROR(flag("dm_suppress_vmdesc", &c.suppress_vmdesc));
  ROMULUS_RETURN_IF_ERROR(flag("dm_acpi", &c.acpi));
  ROMULUS_RETURN_IF_ERROR(number("dm_max_ram_below_4g", 0, uint64_t{1} << 32, &c.max_ram_below_4g));
  ROMULUS_RETURN_IF_ERROR(number("dm_memory_mib", 1, kMaxMemoryMib, &c.memory_mib));
  uint64_t vcpus = 0, maxcpus = 0;
  ROMULUS_RETURN_IF_ERROR(number("dm_vcpus", 1, kMaxVcpus, &vcpus));
  ROMULUS_RETURN_IF_ERROR(number("dm_maxcpus", 1, kMaxVcpus, &maxcpus));
  if (vcpus > maxcpus) return Status::Corruption("domain info: dm_vcpus above dm_maxcpus");
  c.vcpus = unsigned(vcpus);
  c.maxcpus = unsigned(maxcpus);
  const std::string* kernel = get("dm_kernel");
  if (!kernel || (!kernel->empty() && !PlainAbsolutePath(*kernel))) {
    return Status::Corruption("domain info: missing or bad dm_kernel" + (kernel ? " " + Quote(*kernel) : std::string()));
  }
  c.kernel = *kernel;
  if (const std::string* qemu = get("dm_qemu")) {
    auto v = ParseQemuVersion(*qemu);
    if (!v.ok() || !v->known()) return Status::Corruption("domain info: bad dm_qemu " + Quote(*qemu));
    c.qemu = *v;
  }
  if (*version != "1") ROMULUS_RETURN_IF_ERROR(DisplayAndNicsFromInfo(get, &c));
  const std::string* serials = get("dm_serials");
  if (!serials) return Status::Corruption("domain info: missing dm_serials");
  if (!serials->empty()) {
    if (size_t(std::count(serials->begin(), serials->end(), ',')) >= kMaxSerials) {
      return Status::Corruption("domain info: more than 4 dm_serials");
    }
    const std::vector<std::string> kinds = Split(*serials, ',');
    for (const std::string& k : kinds) {
      DeviceModelConfig::Serial port;
      if (!FromWord(kSerialWords, k, &port)) return Status::Corruption("domain info: bad dm_serials " + Quote(*serials));
      c.serials.push_back(port);
    }
  }
  return c;
}

Result<std::vector<std::string>> IncomingDeviceModelArgs(const DeviceModelConfig& c,
                                                         const IncomingDeviceModel& where) {
  // QEMU splits option values at commas: a name or path with one would
  // smuggle in options of its own.
  auto plain = [](const std::string& s) { return !s.empty() && s.find(',') == std::string::npos; };
  if (!plain(where.name) || !plain(where.qmp_dir)) {
    return Status::InvalidArgument("device model name or QMP directory empty or with a comma");
  }
  if (where.state_fd < 0) return Status::InvalidArgument("no device state descriptor for -incoming");
  const std::string d = std::to_string(where.domid);
  std::vector<std::string> a = {"-xen-domid", d, "-no-shutdown"};
  // libxl's two QMP sockets: xl (and Romulus) talk to qmp-libxl-D.
  struct { const char* id; const char* socket; } qmp[] = {{"libxl-cmd", "qmp-libxl-"},
                                                          {"libxenstat-cmd", "qmp-libxenstat-"}};
  for (const auto& q : qmp) {
    a.insert(a.end(), {"-chardev",
                       std::string("socket,id=") + q.id + ",path=" + where.qmp_dir + "/" + q.socket + d +
                           ",server=on,wait=off",
                       "-mon", std::string("chardev=") + q.id + ",mode=control"});
  }
  // VNC on loopback only, whatever the primary listened on: an address
  // from the network is not opened here (DEVICE-MODEL.md §3.1).
  std::string vnc = "none";
  if (c.vnc != DeviceModelConfig::Vnc::kNone) {
    vnc = std::string("127.0.0.1:0") + (c.vnc == DeviceModelConfig::Vnc::kPassword ? ",password=on" : "") + ",to=99";
  }
  a.insert(a.end(), {"-nodefaults", "-no-user-config", "-name", where.name, "-vnc", vnc, "-display", "none"});
  if (!c.keymap.empty()) a.insert(a.end(), {"-k", c.keymap});
  size_t file = 0;
  for (DeviceModelConfig::Serial s : c.serials) {
    std::string v;
    switch (s) {
      case DeviceModelConfig::Serial::kPty: v = "pty"; break;
      case DeviceModelConfig::Serial::kNull: v = "null"; break;
      case DeviceModelConfig::Serial::kFile:
        if (file == where.serial_files.size() || !plain(where.serial_files[file])) {
          return Status::InvalidArgument("no usable file for serial port " + std::to_string(file));
        }
        v = "file:" + where.serial_files[file++];
        break;
    }
    a.insert(a.end(), {"-serial", v});
  }
  if (c.vga != DeviceModelConfig::Vga::kNone) {
    a.insert(a.end(), {"-device", std::string(c.vga == DeviceModelConfig::Vga::kStd ? "VGA" : "cirrus-vga") +
                                      ",vgamem_mb=" + std::to_string(c.vgamem_mib)});
  }
  for (const auto& n : c.nics) {
    const std::string id = std::to_string(n.devid);
    a.insert(a.end(), {"-device", n.model + ",id=nic" + id + ",netdev=net" + id + ",mac=" + n.mac, "-netdev",
                       "type=tap,id=net" + id + ",ifname=" + EmulatedNicTap(where.domid, n.devid) +
                           ",script=no,downscript=no"});
  }
  if (c.nics.empty()) a.insert(a.end(), {"-net", "none"});
  const bool ahci = c.disk_bus == DeviceModelConfig::DiskBus::kAhci;
  if (ahci) a.insert(a.end(), {"-device", "ahci,id=ahci0"});  // after the NICs, with or without disks, as libxl
  for (unsigned i : c.ide_disks) {
    auto it = where.ide_paths.find(i);
    if (it == where.ide_paths.end() || !PlainAbsolutePath(it->second)) {
      return Status::InvalidArgument("no usable block device for emulated disk " + std::to_string(i));
    }
    const std::string n = std::to_string(i);
    if (ahci) {
      a.insert(a.end(), {"-drive", "file=" + it->second + ",if=none,id=ahcidisk-" + n + ",format=raw,cache=writeback",
                         "-device", "ide-hd,bus=ahci0." + n + ",unit=0,drive=ahcidisk-" + n});
    } else {
      a.insert(a.end(), {"-drive", "file=" + it->second + ",if=ide,index=" + n + ",media=disk,format=raw,cache=writeback"});
    }
  }
  if (!c.kernel.empty()) {
    if (!PlainAbsolutePath(where.kernel)) return Status::InvalidArgument("no usable kernel for a directly booted guest");
    a.insert(a.end(), {"-kernel", where.kernel});
  }
  if (!c.acpi) a.push_back("-no-acpi");
  if (c.maxcpus > 1) {
    a.insert(a.end(), {"-smp", c.vcpus == c.maxcpus ? std::to_string(c.vcpus)
                                                     : std::to_string(c.vcpus) + ",maxcpus=" + std::to_string(c.maxcpus)});
  }
  a.insert(a.end(), {"-incoming", "fd:" + std::to_string(where.state_fd)});
  std::string machine = c.platform_pci ? "xenfv" : "pc,accel=xen";
  if (c.suppress_vmdesc) machine += ",suppress-vmdesc=on";
  if (c.max_ram_below_4g) machine += ",max-ram-below-4g=" + std::to_string(c.max_ram_below_4g);
  a.insert(a.end(), {"-machine", machine, "-m", std::to_string(c.memory_mib)});
  return a;
}

}  // namespace romulus::devicemodel

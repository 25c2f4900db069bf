#include "xen/vif_spec.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace romulus::xen {

namespace {

bool ValidMac(const std::string& m) {
  if (m.size() != 17) return false;
  for (size_t i = 0; i < m.size(); ++i) {
    const bool colon = i % 3 == 2;
    if (colon ? m[i] != ':' : !std::isxdigit(static_cast<unsigned char>(m[i]))) return false;
  }
  return true;
}

// Linux interface-name rules, narrowed to what a bridge name needs.
bool ValidBridge(const std::string& b) {
  if (b.empty() || b.size() > 15) return false;
  for (char c : b) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<std::string> VifInfoLines(const std::vector<VifSpec>& vifs) {
  if (vifs.size() > kMaxVifs) return Status::InvalidArgument("more than " + std::to_string(kMaxVifs) + " vifs");
  std::string out;
  for (const VifSpec& v : vifs) {
    if (v.devid > kMaxVifDevid) return Status::InvalidArgument("vif devid " + std::to_string(v.devid));
    if (!ValidMac(v.mac)) return Status::InvalidArgument("vif " + std::to_string(v.devid) + ": bad mac \"" + v.mac + "\"");
    if (!v.bridge.empty() && !ValidBridge(v.bridge)) {
      return Status::InvalidArgument("vif " + std::to_string(v.devid) + ": bad bridge name \"" + v.bridge + "\"");
    }
    if (!v.vifname.empty() && !ValidBridge(v.vifname)) {
      return Status::InvalidArgument("vif " + std::to_string(v.devid) + ": bad vifname \"" + v.vifname + "\"");
    }
    out += "vif." + std::to_string(v.devid) + "=" + Lower(v.mac) + (v.bridge.empty() ? "" : " " + v.bridge) + "\n";
    if (!v.vifname.empty()) out += "vifname." + std::to_string(v.devid) + "=" + v.vifname + "\n";
  }
  return out;
}

Result<std::vector<VifSpec>> VifSpecsFromInfo(const std::map<std::string, std::string>& info) {
  std::vector<VifSpec> out;
  for (auto it = info.lower_bound("vif."); it != info.end() && it->first.rfind("vif.", 0) == 0; ++it) {
    const std::string num = it->first.substr(4);
    if (num.empty() || num.size() > 3 || num.find_first_not_of("0123456789") != std::string::npos ||
        std::strtoul(num.c_str(), nullptr, 10) > kMaxVifDevid) {
      return Status::Corruption("domain info: bad vif key \"" + it->first.substr(0, 16) + "\"");
    }
    if (out.size() == kMaxVifs) return Status::Corruption("domain info: more than " + std::to_string(kMaxVifs) + " vifs");
    VifSpec v;
    v.devid = unsigned(std::strtoul(num.c_str(), nullptr, 10));
    const std::string& val = it->second;
    const size_t sp = val.find(' ');
    v.mac = Lower(val.substr(0, sp));
    if (sp != std::string::npos) v.bridge = val.substr(sp + 1);
    if (!ValidMac(v.mac)) return Status::Corruption("domain info: " + it->first + ": bad mac");
    if (sp != std::string::npos && !ValidBridge(v.bridge)) {
      return Status::Corruption("domain info: " + it->first + ": bad bridge name");
    }
    if (auto n = info.find("vifname." + num); n != info.end()) {
      if (!ValidBridge(n->second)) return Status::Corruption("domain info: " + n->first + ": bad interface name");
      v.vifname = n->second;
    }
    out.push_back(std::move(v));
  }
  // A vifname for no vif is a damaged record, not a name to drop silently.
  for (auto it = info.lower_bound("vifname."); it != info.end() && it->first.rfind("vifname.", 0) == 0; ++it) {
    const std::string num = it->first.substr(8);
    if (info.count("vif." + num) == 0) {
      return Status::Corruption("domain info: \"" + it->first.substr(0, 20) + "\" names no vif");
    }
  }
  // The map orders "vif.10" before "vif.2".
  std::sort(out.begin(), out.end(), [](const VifSpec& a, const VifSpec& b) { return a.devid < b.devid; });
  return out;
}

std::optional<uint32_t> VifBackendDomain(const std::string& backend_path, uint32_t domid, unsigned devid) {
  const std::string prefix = "/local/domain/";
  const std::string tail = "/backend/vif/" + std::to_string(domid) + "/" + std::to_string(devid);
  if (backend_path.size() <= prefix.size() + tail.size() || backend_path.rfind(prefix, 0) != 0 ||
      !backend_path.ends_with(tail)) {
    return std::nullopt;
  }
  const std::string b = backend_path.substr(prefix.size(), backend_path.size() - prefix.size() - tail.size());
  if (b.empty() || b.size() > 5 || b.find_first_not_of("0123456789") != std::string::npos || (b.size() > 1 && b[0] == '0')) {
    return std::nullopt;
  }
  const unsigned long n = std::stoul(b);
  if (n >= 0x7ff0) return std::nullopt;  // DOMID_FIRST_RESERVED: not a domain
  return uint32_t(n);
}

std::string EmulatedNicInterface(const std::string& qemu_tap, unsigned devid, const std::vector<VifPlace>& vifs) {
  for (const VifPlace& v : vifs) {
    if (v.devid == devid && v.backend_domid == 0 && !v.vifname.empty()) return v.vifname + "-emu";
  }
  return qemu_tap;
}

std::vector<GuestInterface> GuestInterfaces(uint32_t domid, const std::vector<VifPlace>& vifs,
                                            const std::vector<std::string>& emulated_taps) {
  std::vector<GuestInterface> out;
  for (const VifPlace& v : vifs) {
    std::string name = "vif" + std::to_string(domid) + "." + std::to_string(v.devid);
    // A driver domain's netback names its own interface; only dom0's vifname matters here.
    if (v.backend_domid == 0 && !v.vifname.empty()) name = v.vifname;
    out.push_back(GuestInterface{std::move(name), v.backend_domid});
  }
  for (const std::string& tap : emulated_taps) out.push_back(GuestInterface{tap, 0});
  return out;
}

Status CheckEveryInterfaceBuffered(const std::vector<GuestInterface>& guest, const std::vector<std::string>& buffered) {
  if (buffered.empty()) return Status::Ok();  // output commit is off, and said so loudly
  std::string given;
  for (const std::string& b : buffered) given += (given.empty() ? "" : ", ") + b;
  for (const GuestInterface& i : guest) {
    if (i.backend_domid != 0) {
      const std::string where = i.backend_domid == kUnknownBackendDomain
                                    ? "whose backend dom0's xenstore does not name"
                                    : "whose netback runs in domain " + std::to_string(i.backend_domid) + ", not dom0";
      return Status::InvalidArgument("the guest also sends on " + i.name + ", " + where +
                                     ": its output never passes this host's plugs (--netbuf-vif " + given +
                                     ") and would leave before the backup holds its epoch; output commit needs "
                                     "every NIC served by dom0");
    }
    if (std::find(buffered.begin(), buffered.end(), i.name) == buffered.end()) {
      return Status::InvalidArgument("the guest also sends on " + i.name + ", which is not buffered (--netbuf-vif " +
                                     given + "): its output there would leave before the backup holds its epoch; add "
                                     "--netbuf-vif " + i.name);
    }
  }
  return Status::Ok();
}

}  // namespace romulus::xen

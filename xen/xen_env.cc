#include "xen/xen_env.h"

#include <spdlog/spdlog.h>
#include <algorithm>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <cstdarg>

#include "devicemodel/device_model_process.h"
#include "xen/xen_facade.h"

#ifndef ROMULUS_XEN_TOOLS_VERSION
#define ROMULUS_XEN_TOOLS_VERSION "unknown"
#endif

namespace romulus::xen {

// libxentoollog calls back with a pointer to `hook.base`; `hook` is a plain C
// struct (standard layout), so casting that pointer back to it is defined.
struct LoggerHook {
  xentoollog_logger base;
  XenHandles::Logger* owner;
};

struct XenHandles::Logger {
  LoggerHook hook;
  xentoollog_level print_level;
  mutable std::mutex mu;
  std::deque<std::string> recent;

  static void VMessage(xentoollog_logger* l, xentoollog_level level, int errnoval, const char* context,
                       const char* format, va_list al) {
    Logger* self = reinterpret_cast<LoggerHook*>(l)->owner;
    char msg[1024];
    vsnprintf(msg, sizeof msg, format, al);
    std::string line = std::string(context ? context : "xen") + ": " + msg;
    if (errnoval >= 0) line += std::string(": ") + strerror(errnoval);
    if (level >= self->print_level) {
      spdlog::log(level >= XTL_ERROR  ? spdlog::level::err
                  : level >= XTL_WARN ? spdlog::level::warn
                                      : spdlog::level::debug,
                  "{}", line);
    }
    if (level >= XTL_WARN) {
      std::lock_guard<std::mutex> lock(self->mu);
      self->recent.push_back(line);
      if (self->recent.size() > 16) self->recent.pop_front();
    }
  }
  static void Destroy(xentoollog_logger*) {}
};

std::string XenHandles::RecentErrors() const {
  std::lock_guard<std::mutex> lock(logger_->mu);
  std::string out;
  for (auto& l : logger_->recent) out += (out.empty() ? "" : "; ") + l;
  return out;
}

bool XenHandles::LogContains(const std::string& needle) const {
  std::lock_guard<std::mutex> lock(logger_->mu);
  for (auto& l : logger_->recent)
    if (l.find(needle) != std::string::npos) return true;
  return false;
}

Result<std::unique_ptr<XenHandles>> XenHandles::Open(bool verbose) {
  std::unique_ptr<XenHandles> h(new XenHandles());
  h->logger_ = new Logger();
  h->logger_->hook.base.vmessage = &Logger::VMessage;
  h->logger_->hook.base.progress = nullptr;
  h->logger_->hook.base.destroy = &Logger::Destroy;
  h->logger_->hook.owner = h->logger_;
  h->logger_->print_level = verbose ? XTL_DETAIL : XTL_ERROR;
  h->xch_ = xc_interface_open(&h->logger_->hook.base, &h->logger_->hook.base, 0);
  if (!h->xch_) {
    int err = errno;
    return Status::FromErrno(
        "cannot open the hypervisor interface (xc_interface_open; run as root in dom0 with "
        "/dev/xen/privcmd present — is the xen-privcmd module loaded?)", err);
  }
  h->xsh_ = xs_open(0);
  if (!h->xsh_) {
    int err = errno;
    return Status::FromErrno("cannot connect to xenstored (xs_open; is xenstored running?)", err);
  }
  return h;
}

XenHandles::~XenHandles() {
  if (xsh_) xs_close(xsh_);
  if (xch_) xc_interface_close(xch_);
  delete logger_;
}

std::string FormatUuid(const uint8_t u[16]) {
  char b[40];
  snprintf(b, sizeof b, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
           u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  return b;
}

std::string XsRead(struct xs_handle* xsh, const std::string& path) {
  unsigned int len = 0;
  char* v = static_cast<char*>(xs_read(xsh, XBT_NULL, path.c_str(), &len));
  if (!v) return "";
  std::string s(v, len);
  free(v);
  return s;
}

Status XsWrite(struct xs_handle* xsh, xs_transaction_t t, const std::string& path, const std::string& value) {
  if (!xs_write(xsh, t, path.c_str(), value.data(), unsigned(value.size()))) {
    return Status::FromErrno("xenstore write " + path, errno);
  }
  return Status::Ok();
}

void XsTxn::Fail() {
  ok_ = false;
  errno_ = errno;
}

void XsTxn::Remove(const std::string& path) {
  if (ok_) xs_rm(xs_, t_, path.c_str());
}

void XsTxn::MakeDir(const std::string& path, std::initializer_list<struct xs_permissions> perms) {
  if (!ok_) return;
  std::vector<struct xs_permissions> p(perms);
  if (!xs_mkdir(xs_, t_, path.c_str()) || !xs_set_permissions(xs_, t_, path.c_str(), p.data(), unsigned(p.size()))) {
    Fail();
  }
}

void XsTxn::Write(const std::string& path, const std::string& value) {
  if (ok_ && !xs_write(xs_, t_, path.c_str(), value.data(), unsigned(value.size()))) Fail();
}

Status XsTransact(struct xs_handle* xsh, const std::string& what, const std::function<void(XsTxn&)>& body) {
  for (int attempt = 0; attempt < 5; attempt++) {
    xs_transaction_t t = xs_transaction_start(xsh);
    if (t == XBT_NULL) return Status::FromErrno("xenstore transaction for " + what, errno);
    XsTxn txn(xsh, t);
    body(txn);
    if (!txn.ok()) {
      xs_transaction_end(xsh, t, true);
      return Status::FromErrno("writing " + what, txn.error());
    }
    if (xs_transaction_end(xsh, t, false)) return Status::Ok();
    if (errno != EAGAIN) return Status::FromErrno("committing " + what, errno);
  }
  return Status::IoError("writing " + what + ": the xenstore transaction conflicted with other writers 5 times");
}

std::string ReadConsoleRing(xc_interface* xch, size_t max_bytes) {
  // XEN_SYSCTL_readconsole copies from the ring's oldest byte on; incremental
  // reads continue from the index the previous one returned (Xen restarts at
  // the oldest byte should the ring have overtaken it). Never cleared.
  std::string tail;
  std::vector<char> buf(64u << 10);
  uint32_t index = 0;
  for (int i = 0; i < 1024; ++i) {  // bound: 64 MiB of log
    unsigned int n = unsigned(buf.size());
    if (xc_readconsolering(xch, buf.data(), &n, 0, i > 0 ? 1 : 0, &index) != 0 || n == 0) break;
    tail.append(buf.data(), std::min<size_t>(n, buf.size()));
    if (tail.size() > max_bytes) tail.erase(0, tail.size() - max_bytes);
    if (n < buf.size()) break;
  }
  return tail;
}

SuspendWay ChooseSuspendWay(GuestType type, bool announces_suspend, uint64_t callback_irq, uint64_t acpi_s_state) {
  if (type != GuestType::kHvm) return SuspendWay::kAskGuest;
  if (acpi_s_state != 0) return SuspendWay::kHypervisor;  // asleep: nothing in it would answer
  return announces_suspend || callback_irq != 0 ? SuspendWay::kAskGuest : SuspendWay::kHypervisor;
}

const char* SuspendWayName(SuspendWay w) {
  return w == SuspendWay::kHypervisor ? "hypervisor" : "ask-guest";
}

const char* GuestTypeName(GuestType t) {
  switch (t) {
    case GuestType::kPv: return "pv";
    case GuestType::kPvh: return "pvh";
    case GuestType::kHvm: return "hvm";
  }
  return "?";
}

GuestType DomInfo::type() const {
  if (!hvm) return GuestType::kPv;
  // Xen accepts exactly LAPIC-only emulation for a PVH domU
  // (emulation_flags_ok): that is what makes it PVH, not a libxl label.
  return emulation_flags == XEN_X86_EMU_LAPIC ? GuestType::kPvh : GuestType::kHvm;
}

Result<DomInfo> GetDomainInfo(xc_interface* xch, uint32_t domid) {
  xc_domaininfo_t raw;
  memset(&raw, 0, sizeof raw);
  int n = xc_domain_getinfolist(xch, domid, 1, &raw);
  if (n < 0) return Status::FromErrno("xc_domain_getinfolist(" + std::to_string(domid) + ")", errno);
  // The call lists domains from `domid` upwards: a gone domain answers with
  // the next one.
  if (n != 1 || raw.domain != domid) {
    return Status::InvalidArgument("domain " + std::to_string(domid) + " does not exist");
  }
  DomInfo d;
  d.domid = raw.domain;
  d.dying = raw.flags & XEN_DOMINF_dying;
  d.shutdown = raw.flags & XEN_DOMINF_shutdown;
  d.shutdown_reason = (raw.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask;
  d.paused = raw.flags & XEN_DOMINF_paused;
  d.hvm = raw.flags & XEN_DOMINF_hvm_guest;
  d.hap = raw.flags & XEN_DOMINF_hap;
  d.max_vcpu_id = raw.max_vcpu_id;
  d.max_memkb = uint64_t(raw.max_pages) * (XC_PAGE_SIZE / 1024);
  memcpy(d.handle, raw.handle, sizeof d.handle);
  d.emulation_flags = raw.arch_config.emulation_flags;
  d.misc_flags = raw.arch_config.misc_flags;
  return d;
}

Result<HostCaps> GetHostCaps(xc_interface* xch) {
  xc_physinfo_t info;
  memset(&info, 0, sizeof info);
  if (xc_physinfo(xch, &info) != 0) return Status::FromErrno("xc_physinfo", errno);
  HostCaps c;
  c.hvm = info.capabilities & XEN_SYSCTL_PHYSCAP_hvm;
  c.hap = info.capabilities & XEN_SYSCTL_PHYSCAP_hap;
  c.shadow = info.capabilities & XEN_SYSCTL_PHYSCAP_shadow;
  return c;
}

Status CheckCanProtect(const HostCaps& caps, GuestType type, bool hap, const std::string& domain) {
  if (type == GuestType::kPv && !caps.shadow) {
    return Status::Unsupported(
        "domain " + domain + " is a PV guest and this hypervisor has no shadow paging, which Xen needs "
        "to track a PV guest's dirty pages (Debian's stock hypervisors, 4.17.7+ and 4.20, are compiled "
        "without it: XSA-495). Run PVH guests (type=\"pvh\": their dirty pages are tracked by HAP), or boot a "
        "hypervisor built with CONFIG_SHADOW_PAGING=y (docs/XEN-STREAM.md, \"Guest types\")");
  }
  if (type != GuestType::kPv && !hap && !caps.shadow) {
    return Status::Unsupported("domain " + domain + " runs without hardware-assisted paging and this "
                               "hypervisor has no shadow paging to track its dirty pages");
  }
  return Status::Ok();
}

uint64_t MinPagingPoolKb(uint64_t max_memkb, unsigned vcpus) {
  return 4 * (256 * uint64_t(vcpus) + 2 * (max_memkb / 1024));
}

namespace {

// The domain's PV NICs as its frontend directory names them.
// Fills f->vifs (dom0's, describable: the backup recreates them) and
// f->vif_places (every one: output commit must see them all). From dom0's
// own records only: the guest can write its frontend directory
// (device/vif/N, its backend and backend-id too), so a path read there
// could make dom0 read another vif's nodes, or recreate its NIC on a
// bridge of the guest's choosing. libxl records each vif's backend in
// /libxl/<domid>/device/vif/<devid>/backend; a domain libxl did not start
// has its dom0-served vifs under dom0's backend directory.
void ReadVifs(const XenHandles& h, uint32_t domid, DomainFacts* f) {
  std::vector<VifSpec>& out = f->vifs;
  const std::string d = std::to_string(domid);
  const std::string libxl_dir = "/libxl/" + d + "/device/vif";
  const std::string dom0_dir = "/local/domain/0/backend/vif/" + d;
  unsigned int num = 0;
  char** ents = xs_directory(h.xsh(), XBT_NULL, libxl_dir.c_str(), &num);
  const bool from_libxl = ents != nullptr;
  if (!from_libxl) ents = xs_directory(h.xsh(), XBT_NULL, dom0_dir.c_str(), &num);
  for (unsigned i = 0; ents && i < num; i++) {
    const std::string e = ents[i];
    if (e.empty() || e.size() > 3 || e.find_first_not_of("0123456789") != std::string::npos) continue;
    VifSpec v;
    v.devid = unsigned(std::stoul(e));
    const std::string backend = from_libxl ? XsRead(h.xsh(), libxl_dir + "/" + e + "/backend") : dom0_dir + "/" + e;
    const std::optional<uint32_t> bdom = VifBackendDomain(backend, domid, v.devid);
    VifPlace place;
    place.devid = v.devid;
    place.backend_domid = bdom.value_or(kUnknownBackendDomain);
    if (place.backend_domid == 0) place.vifname = XsRead(h.xsh(), backend + "/vifname");
    f->vif_places.push_back(place);
    if (place.backend_domid != 0) {
      spdlog::warn("vif {} of domain {} is not served by dom0 (backend \"{}\"): the backup will not recreate it",
                   e, domid, backend.substr(0, 80));
      continue;
    }
    v.mac = XsRead(h.xsh(), backend + "/mac");
    v.bridge = XsRead(h.xsh(), backend + "/bridge");
    v.vifname = place.vifname;
    if (!v.vifname.empty() && !VifInfoLines({v}).ok()) {
      // A name Linux accepts but the record does not carry: the NIC is
      // still recreated, under the default name.
      spdlog::warn("vif {} of domain {}: its vifname \"{}\" is not carried to the backup (1 to 15 of "
                   "[A-Za-z0-9_.-]); the backup names it vif<domid>.{}",
                   e, domid, v.vifname.substr(0, 32), e);
      v.vifname.clear();
    }
    if (!VifInfoLines({v}).ok() || out.size() == kMaxVifs) {
      spdlog::warn("vif {} of domain {} (mac \"{}\", bridge \"{}\", vifname \"{}\") cannot be described to the "
                   "backup: it will not be recreated there", e, domid, v.mac, v.bridge, v.vifname);
      continue;
    }
    out.push_back(v);
  }
  free(ents);
}

}  // namespace

Result<DomainFacts> ResolveDomain(const XenHandles& h, const std::string& name_or_id) {
  if (name_or_id.empty()) return Status::InvalidArgument("no domain given (--domain NAME|DOMID)");
  uint32_t domid = 0;
  bool numeric = name_or_id.find_first_not_of("0123456789") == std::string::npos && name_or_id.size() < 6;
  if (numeric) {
    domid = uint32_t(std::stoul(name_or_id));
  } else {
    // Names live in xenstore only; several domains may transiently share one
    // (a migration's incoming domain): take the lowest live domid.
    unsigned int num = 0;
    char** ents = xs_directory(h.xsh(), XBT_NULL, "/local/domain", &num);
    bool found = false;
    for (unsigned i = 0; ents && i < num && !found; i++) {
      std::string n = XsRead(h.xsh(), std::string("/local/domain/") + ents[i] + "/name");
      if (n == name_or_id) {
        domid = uint32_t(strtoul(ents[i], nullptr, 10));
        found = true;
      }
    }
    free(ents);
    if (!found) {
      return Status::InvalidArgument("no domain named \"" + name_or_id + "\" (see `xl list`)");
    }
  }
  if (domid == 0) return Status::InvalidArgument("refusing to replicate dom0");
  auto info = GetDomainInfo(h.xch(), domid);
  if (!info.ok()) return info.status();
  DomainFacts f;
  f.domid = domid;
  f.name = XsRead(h.xsh(), "/local/domain/" + std::to_string(domid) + "/name");
  if (f.name.empty()) f.name = "domain-" + std::to_string(domid);
  memcpy(f.handle, info->handle, 16);
  f.uuid = FormatUuid(f.handle);
  f.type = info->type();
  f.hap = info->hap;
  f.emulation_flags = info->emulation_flags;
  f.misc_flags = info->misc_flags;
  f.max_vcpus = info->max_vcpu_id + 1;
  f.max_memkb = info->max_memkb;
  std::string target = XsRead(h.xsh(), "/local/domain/" + std::to_string(domid) + "/memory/target");
  f.target_kb = target.empty() ? f.max_memkb : strtoull(target.c_str(), nullptr, 10);
  f.shutdown = info->shutdown;
  f.shutdown_reason = info->shutdown_reason;
  f.dying = info->dying;
  if (info->hvm) {
    uint64_t v = 0;
    if (xc_hvm_param_get(h.xch(), domid, HVM_PARAM_TIMER_MODE, &v) == 0) f.timer_mode = v;
    uint64_t pool = 0;
    if (xc_get_paging_mempool_size(h.xch(), domid, &pool) == 0) f.paging_pool_kb = pool / 1024;
    if (f.type == GuestType::kHvm) {
      if (xc_hvm_param_get(h.xch(), domid, HVM_PARAM_HPET_ENABLED, &v) == 0) f.hpet_enabled = v;
      if (xc_hvm_param_get(h.xch(), domid, HVM_PARAM_VPT_ALIGN, &v) == 0) f.vpt_align = v;
    }
  }
  ReadVifs(h, domid, &f);
  xen_pfn_t gpfn = 0;
  if (xc_domain_maximum_gpfn(h.xch(), domid, &gpfn) < 0) {
    return Status::FromErrno("xc_domain_maximum_gpfn(" + std::to_string(domid) + ")", errno);
  }
  // For an HVM container it is the highest populated gfn: with PVH the
  // special pages (store, console, ...) sit just below 4 GiB, so a small
  // guest still spans about a million pfns (8 MiB of per-page digest).
  // For a PV domain Xen answers with shared_info's arch.max_pfn, which the
  // guest kernel itself writes while it sets up its p2m: 0 until then (seen in
  // the lab on a guest still booting: "1 pages", then "pfn 1 beyond the
  // guest's 1 pages" in the first PAGE_DATA). libxenguest sizes its p2m from
  // the same field, but the pages of the static maximum always fit: take the
  // larger of the two.
  f.guest_pages = std::max<uint64_t>(uint64_t(gpfn) + 1, (f.max_memkb + 3) / 4);
  return f;
}

Result<devicemodel::DeviceModelConfig> ReadDeviceModelConfig(const XenHandles& h, uint32_t domid) {
  const std::string node = "/local/domain/" + std::to_string(domid) + "/image/device-model-pid";
  const std::string pid = XsRead(h.xsh(), node);
  auto num = devicemodel::ParsePid(pid);
  if (!num.ok()) return Status::Unsupported("no device model process named at " + node + " (" + num.status().message() + ")");
  auto argv = devicemodel::ReadProcessArgv(*num);
  if (!argv.ok()) return argv.status().With("the device model (pid " + pid + ")");
  auto c = devicemodel::ParseDeviceModelArgs(*argv);
  if (!c.ok()) return c.status().With("the device model (pid " + pid + ")");
  return c;
}

Result<std::string> HypervisorVersion(xc_interface* xch) {
  int v = xc_version(xch, XENVER_version, nullptr);
  if (v < 0) return Status::FromErrno("xc_version", errno);
  xen_extraversion_t extra;
  memset(extra, 0, sizeof extra);
  xc_version(xch, XENVER_extraversion, &extra);
  extra[sizeof extra - 1] = 0;
  return std::to_string(v >> 16) + "." + std::to_string(v & 0xffff) + extra;
}

Result<uint32_t> HypervisorRelease(xc_interface* xch) {
  int v = xc_version(xch, XENVER_version, nullptr);
  if (v <= 0) return Status::FromErrno("xc_version", v < 0 ? errno : EINVAL);
  return static_cast<uint32_t>(v);
}

Status CheckVersionMatch(xc_interface* xch) {
  int v = xc_version(xch, XENVER_version, nullptr);
  if (v < 0) return Status::FromErrno("xc_version", errno);
  std::string built = ROMULUS_XEN_TOOLS_VERSION;  // e.g. "4.17.0" from pkg-config
  std::string running = std::to_string(v >> 16) + "." + std::to_string(v & 0xffff);
  if (built != "unknown" && built.rfind(running + ".", 0) != 0 && built != running) {
    return Status::Unsupported("Xen version mismatch: the hypervisor is " + running +
                               " but Romulus was built against the Xen " + built +
                               " tools; libxenctrl's domctl interface is version-locked, rebuild "
                               "Romulus against this host's libxen-dev");
  }
  return Status::Ok();
}

Result<std::string> ProbeXen() {
  auto h = XenHandles::Open(false);
  if (!h.ok()) return h.status();
  auto v = HypervisorVersion((*h)->xch());
  if (!v.ok()) return v.status();
  ROMULUS_RETURN_IF_ERROR(CheckVersionMatch((*h)->xch()));
  std::string out = "Xen " + *v + " (tools " + ROMULUS_XEN_TOOLS_VERSION + ")";
  auto caps = GetHostCaps((*h)->xch());
  if (caps.ok()) {
    // What the operator wants to know first: which guests this host can protect.
    std::string can;
    if (caps->shadow) can += "pv ";
    if (caps->hvm && (caps->hap || caps->shadow)) can += "pvh hvm ";
    out += "; paging:" + std::string(caps->hap ? " hap" : "") + (caps->shadow ? " shadow" : "") +
           "; protects: " + (can.empty() ? "none" : can.substr(0, can.size() - 1));
    if (!caps->shadow) out += " (no shadow paging: PV guests cannot be protected on this hypervisor)";
  }
  return out;
}

}  // namespace romulus::xen

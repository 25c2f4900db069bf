#include "xen/incoming_device_model.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "common/positional_io.h"
#include "common/subprocess.h"
#include "devicemodel/device_model.h"
#include "devicemodel/device_model_process.h"
#include "devicemodel/qmp_client.h"

namespace romulus::xen {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string DmDir(uint32_t domid) { return "/local/domain/0/device-model/" + std::to_string(domid); }

// The checkpoint's state in an anonymous file QEMU reads from the start
// (pwrite leaves the offset QEMU inherits at 0).
Result<int> StateMemfd(std::span<const uint8_t> state) {
  const int fd = memfd_create("romulus-device-state", MFD_CLOEXEC);
  if (fd < 0) return Status::FromErrno("memfd_create for the device state", errno);
  if (Status st = PwriteAll(fd, state.data(), state.size(), 0, "the device state's memfd"); !st.ok()) {
    close(fd);
    return st;
  }
  return fd;
}

// The last lines of the device model's log, for an error.
std::string LogTail(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) {
    lines.push_back(l);
    if (lines.size() > 6) lines.erase(lines.begin());
  }
  std::string out;
  for (const std::string& l : lines) out += (out.empty() ? "" : " | ") + l.substr(0, 200);
  return out.empty() ? "(empty)" : out;
}

Status WaitRunning(XenHandles* h, uint32_t domid, const devicemodel::ProcessRef& dm, Clock::time_point until) {
  const std::string node = DmDir(domid) + "/state";
  for (;;) {
    if (XsRead(h->xsh(), node) == "running") return Status::Ok();
    if (!dm.Alive()) return Status::IoError("the device model exited while starting");
    if (Clock::now() >= until) return Status::Timeout("the device model never reported \"running\" at " + node);
    std::this_thread::sleep_for(20ms);
  }
}

// QEMU loads the state and starts the machine itself (no -S); a QEMU that
// ended up paused (an older one, or a load still settling) is continued.
Status RunDevices(uint32_t domid, Clock::time_point until) {
  const std::string sock = "/var/run/xen/qmp-libxl-" + std::to_string(domid);
  const transport::Deadline deadline = until;
  auto qmp = devicemodel::QmpClient::Connect(sock, deadline);
  if (!qmp.ok()) return qmp.status().With("connecting to its QMP socket " + sock);
  devicemodel::DeviceModel dm(std::move(*qmp));
  for (;;) {
    auto state = dm.RunState(deadline);
    if (!state.ok()) return state.status().With("asking its run state");
    if (*state == "running") return Status::Ok();
    if (*state != "inmigrate") {
      ROMULUS_RETURN_IF_ERROR(dm.Continue(deadline).With("continuing it (run state \"" + *state + "\")"));
      continue;
    }
    if (Clock::now() >= until) return Status::Timeout("the device model is still loading the device state");
    std::this_thread::sleep_for(20ms);
  }
}

// Where the replica's VNC server listens, in the guest's console/vnc-listen
// and console/vnc-port as libxl writes them (`xl vncviewer` reads them).
// Not an activation failure: the devices run; only the viewer's shortcut
// is missing, and the log says where the server is, or why not.
void PublishVnc(XenHandles* h, uint32_t domid, const std::string& name, Clock::time_point until) {
  const std::string sock = "/var/run/xen/qmp-libxl-" + std::to_string(domid);
  const transport::Deadline deadline = until;
  auto qmp = devicemodel::QmpClient::Connect(sock, deadline);
  Result<devicemodel::DeviceModel::VncServer> vnc = Status::Closed("not asked");
  if (qmp.ok()) {
    devicemodel::DeviceModel dm(std::move(*qmp));
    vnc = dm.QueryVnc(deadline);
  } else {
    vnc = qmp.status();
  }
  if (!vnc.ok()) {
    spdlog::warn("device model of {}: where its VNC server listens is unknown ({}): xl vncviewer will not find it",
                 name, vnc.status().ToString());
    return;
  }
  const std::string console = "/local/domain/" + std::to_string(domid) + "/console";
  Status st = XsWrite(h->xsh(), XBT_NULL, console + "/vnc-listen", vnc->host);
  if (st.ok()) st = XsWrite(h->xsh(), XBT_NULL, console + "/vnc-port", std::to_string(vnc->port));
  if (!st.ok()) spdlog::warn("device model of {}: its VNC address not written to xenstore: {}", name, st.ToString());
  spdlog::info("device model of {}: VNC on {}:{} (loopback only; xl vncviewer {})", name, vnc->host, vnc->port, name);
}

}  // namespace

Result<devicemodel::ProcessRef> StartIncomingDeviceModel(XenHandles* h, uint32_t domid, const std::string& name,
                                       const devicemodel::DeviceModelConfig& config,
                                       std::span<const uint8_t> state, const IncomingDeviceModelOptions& opts) {
  const auto t0 = Clock::now();
  const auto until = t0 + opts.wait;
  if (state.empty()) return Status::Internal("no device state to start HVM domain " + std::to_string(domid) + " from");
  auto fd = StateMemfd(state);
  if (!fd.ok()) return fd.status();
  devicemodel::IncomingDeviceModel where;
  where.domid = domid;
  where.name = name;
  where.state_fd = *fd;
  where.kernel = opts.kernel;
  where.ide_paths = opts.ide_paths;
  size_t files = 0;
  for (auto s : config.serials) {
    if (s != devicemodel::DeviceModelConfig::Serial::kFile) continue;
    where.serial_files.push_back(opts.log_dir + "/serial-" + name + (files ? "-" + std::to_string(files) : "") + ".log");
    files++;
  }
  auto args = devicemodel::IncomingDeviceModelArgs(config, where);
  if (!args.ok()) {
    close(*fd);
    return args.status();
  }
  // libxl's nodes for a device model it started: QEMU reports its state
  // under device-model/D; xl finds it (QMP, `xl destroy`) through /libxl/D
  // and the guest's image/device-model-pid. A stale state is removed first:
  // only this QEMU's "running" counts.
  const std::string dom = "/local/domain/" + std::to_string(domid);
  const struct xs_permissions owner{0, XS_PERM_NONE}, guest_reads{domid, XS_PERM_READ};
  Status xs = XsTransact(h->xsh(), "the device model's xenstore nodes", [&](XsTxn& t) {
    t.Remove(DmDir(domid));
    t.MakeDir(DmDir(domid), {owner, guest_reads});
    t.Write("/libxl/" + std::to_string(domid) + "/dm-version", "qemu_xen");
    t.Write("/libxl/" + std::to_string(domid) + "/type", "hvm");
  });
  if (!xs.ok()) {
    close(*fd);
    return xs;
  }
  devicemodel::SpawnSpec spec;
  spec.binary = opts.binary;
  spec.args = std::move(*args);
  spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "XEN_QEMU_CONSOLE_LIMIT=1048576",
              "XEN_DOMAIN_ID=" + std::to_string(domid)};
  spec.log_path = opts.log_dir + "/qemu-dm-" + name + ".log";
  spec.inherit_fd = *fd;
  auto dm = devicemodel::SpawnDetached(spec);
  close(*fd);  // QEMU has its own copy
  if (!dm.ok()) {
    StopIncomingDeviceModel(h, domid, devicemodel::ProcessRef());
    return dm.status();
  }
  (void)XsWrite(h->xsh(), XBT_NULL, dom + "/image/device-model-pid", std::to_string(dm->pid()));
  spdlog::info("device model of {} (domid {}): {} pid {}, {} bytes of device state, log {}{}", name, domid,
               opts.binary, dm->pid(), state.size(), spec.log_path,
               where.serial_files.empty() ? "" : ", serial port into " + where.serial_files[0]);
  Status st = WaitRunning(h, domid, *dm, until);
  if (st.ok()) st = RunDevices(domid, until);
  if (!st.ok()) {
    StopIncomingDeviceModel(h, domid, *dm);
    return st.With("starting the device model of " + name + " (log " + spec.log_path + ": " +
                   LogTail(spec.log_path) + ")");
  }
  spdlog::info("device model of {} runs the checkpoint's devices ({} ms)", name,
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
  if (config.vnc != devicemodel::DeviceModelConfig::Vnc::kNone) PublishVnc(h, domid, name, Clock::now() + 5s);
  return std::move(*dm);
}

void StopIncomingDeviceModel(XenHandles* h, uint32_t domid, const devicemodel::ProcessRef& dm) {
  // SIGTERM first: QEMU then takes down its ioreq server, which a retried
  // activation's QEMU would otherwise find beside its own. Bounded.
  dm.Stop(3s);
  xs_rm(h->xsh(), XBT_NULL, ("/local/domain/" + std::to_string(domid) + "/image/device-model-pid").c_str());
  xs_rm(h->xsh(), XBT_NULL, DmDir(domid).c_str());
  xs_rm(h->xsh(), XBT_NULL, ("/libxl/" + std::to_string(domid)).c_str());
  for (const char* sock : {"qmp-libxl-", "qmp-libxenstat-"}) {
    unlink(("/var/run/xen/" + std::string(sock) + std::to_string(domid)).c_str());
  }
}

void StopLeftoverDeviceModel(XenHandles* h, uint32_t domid) {
  const std::string node = "/local/domain/" + std::to_string(domid) + "/image/device-model-pid";
  const std::string text = XsRead(h->xsh(), node);
  devicemodel::ProcessRef dm;
  if (auto num = devicemodel::ParsePid(text); num.ok()) {
    // Held first, its command line read second, and still running third:
    // then the command line read was of the process held (a number reused
    // after the hold would be another process, and the held one gone).
    dm = devicemodel::ProcessRef::Open(*num);
    auto argv = devicemodel::ReadProcessArgv(*num);
    if (dm.Alive() && argv.ok() && devicemodel::ArgvServesDomain(*argv, domid)) {
      spdlog::warn("stopping the device model (pid {}) a stopped predecessor left for domid {}", *num, domid);
    } else {
      dm.Reset();
    }
  }
  StopIncomingDeviceModel(h, domid, dm);
}

Result<devicemodel::QemuVersion> DeviceModelBinaryVersion(const std::string& binary) {
  // Its output into a directory of our own (RunToExit writes beside the
  // log's name, which must not be one another user could plant a link at).
  char dir[] = "/tmp/romulus-qemu-version-XXXXXX";
  if (mkdtemp(dir) == nullptr) return Status::FromErrno("a temporary directory for the device model's --version", errno);
  const std::string log = std::string(dir) + "/version.log";
  const int rc = RunToExit({binary, "--version"}, log, 10s);
  std::string banner;
  {
    std::ifstream in(log);
    std::getline(in, banner);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (rc != 0) {
    return Status::InvalidArgument(binary + " --version exited " + std::to_string(rc) + " (" + banner.substr(0, 120) + ")");
  }
  return devicemodel::QemuVersionFromBanner(banner);
}

}  // namespace romulus::xen

// DeviceModel: the QMP operations a checkpoint of an HVM guest needs from
// its device model (QEMU, device_model_version="qemu-xen"), typed, each
// with a deadline. docs/DEVICE-MODEL.md says when each is used:
//   primary, every epoch, guest suspended:  Stop, SaveDevicesState, (resume) Continue
//   primary, while replicating:             SetGlobalDirtyLog(true) — QEMU's own
//                                           writes to guest memory are logged dirty
//   backup, at activation:                  LoadDevicesState, Continue
// Mechanism only: the policy (when, and what a failure means for the
// checkpoint) lives in the driver that calls it.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "devicemodel/qmp_client.h"

namespace romulus::devicemodel {

class DeviceModel {
 public:
  explicit DeviceModel(std::unique_ptr<QmpClient> qmp) : qmp_(std::move(qmp)) {}

  // QEMU's run state ("running", "paused", "prelaunch", "inmigrate", …).
  Result<std::string> RunState(transport::Deadline deadline);
  Status Stop(transport::Deadline deadline);
  Status Continue(transport::Deadline deadline);
  // Writes the device state (not RAM: the hypervisor's stream carries that)
  // to `path`, a file QEMU itself opens and creates. Stopped first.
  Status SaveDevicesState(const std::string& path, transport::Deadline deadline);
  // The same into `fd`, handed to QEMU with QMP add-fd and named
  // /dev/fdset/N, as libxl does: QEMU opens no path of ours, which is what
  // works under dm_restrict (chroot, another uid). QEMU opens the set for
  // writing only and takes only a descriptor of that access mode, so `fd`
  // must be O_WRONLY (DeviceStateFile::write_fd). The set is removed
  // afterwards whatever happened; a removal that fails is an error too (QEMU
  // would keep one descriptor per epoch). QEMU closes a removed set's
  // descriptor only while the guest runs: at once when removed then, else
  // when a monitor disconnects after `cont` (a per-checkpoint connection).
  // Tests: RealQemu.EverySaveRemovesItsFdSet and the epoch test.
  Status SaveDevicesStateToFd(int fd, transport::Deadline deadline);
  // Loads a state SaveDevicesState wrote (a device model of the same
  // machine, started for an incoming guest).
  Status LoadDevicesState(const std::string& path, transport::Deadline deadline);
  Status SetGlobalDirtyLog(bool enable, transport::Deadline deadline);
  // Where its VNC server listens (query-vnc), for the guest's console/vnc-*
  // nodes that `xl vncviewer` reads. kUnsupported when VNC is off;
  // kCorruption for an answer without a plain host and a numeric port.
  struct VncServer {
    std::string host;
    unsigned port = 0;
  };
  Result<VncServer> QueryVnc(transport::Deadline deadline);

  QmpClient& qmp() { return *qmp_; }

 private:
  Status Run(const std::string& command, const nlohmann::json& arguments, transport::Deadline deadline);
  std::unique_ptr<QmpClient> qmp_;
};

}  // namespace romulus::devicemodel

// DeviceModelPause: what an HVM guest's device model does in one
// checkpoint's pause (docs/DEVICE-MODEL.md §2), for the primary's driver:
//   Begin  (the guest is suspended)  take libxl's QMP lock, connect, stop
//          QEMU's emulation, save the device state into the guest's
//          DeviceStateFile (the caller reads it back: ReadInto)
//   End    (before the guest resumes)  cont, disconnect, release the lock
// One object per pause, so `xl` gets the socket between checkpoints (QEMU
// serves one QMP client at a time). Destroyed without End (a checkpoint
// that failed half-way) it still continues the device model it stopped: a
// guest must never run on stopped devices.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "devicemodel/device_model.h"
#include "devicemodel/device_state_file.h"
#include "devicemodel/qmp_lock.h"

namespace romulus::devicemodel {

// Where one guest's device model is reached.
struct DeviceModelEndpoint {
  std::string qmp_socket;  // libxl's: /var/run/xen/qmp-libxl-DOMID
  std::string lock_path;   // LibxlQmpLockPath(...); empty: no lock (tests, a QEMU not started by libxl)
};

// The device model libxl started for domain `domid` (qemu-xen in dom0): its
// libxl QMP socket and libxl's lock for it (Debian's XEN_RUN_DIR
// /var/run/xen and XEN_LIB_DIR /var/lib/xen).
DeviceModelEndpoint LibxlDeviceModelEndpoint(uint32_t domid, const std::string& uuid);

// One operation as libxl does each: libxl's lock (when the endpoint names
// one; at most half of `deadline`'s time is spent waiting for it), a
// connection, `op`, then both let go (so `xl` gets the one-client socket
// again). Everything by `deadline`.
Status WithLockedDeviceModel(const DeviceModelEndpoint& endpoint, transport::Deadline deadline,
                             const std::function<Status(DeviceModel&)>& op);

// What a failed DeviceModelPause::Begin left behind, for the caller's
// policy (docs/DEVICE-MODEL.md §2.3).
struct PauseFailure {
  // A stop was sent and the cont that followed failed: the device model
  // may still be stopped, and the guest must not run as if all were well.
  bool left_stopped = false;
  // The device model was silent (kTimeout: no answer by the deadline;
  // kClosed: nothing at its socket, or it hung up) once libxl's lock was
  // ours: at the connection, the greeting or qmp_capabilities; or in the
  // stop or the save and then in the cont as well (left_stopped too). A
  // stuck or dead device model. Never set for a lock held elsewhere
  // (libxl busy), for anything QEMU answered (an error, garbage: its main
  // loop runs), or when a cont went through.
  bool unresponsive = false;
};

class DeviceModelPause {
 public:
  // Everything by `deadline`. A failure leaves the device model as it was
  // (continued again if this stopped it) and says which step failed; *file
  // is then undefined, and *failure (optional) says what was left behind.
  static Result<std::unique_ptr<DeviceModelPause>> Begin(const DeviceModelEndpoint& endpoint, DeviceStateFile* file,
                                                         transport::Deadline deadline,
                                                         PauseFailure* failure = nullptr);
  // cont, then lets go of the connection and the lock. A connection that
  // failed during the pause (a timeout, EOF) is replaced for the cont, under
  // the same lock. An error means the device model may still be stopped:
  // the caller must not resume the guest as if all were well (it says so;
  // the guest's pause policy decides). Once only.
  Status End(transport::Deadline deadline);
  ~DeviceModelPause();
  DeviceModelPause(const DeviceModelPause&) = delete;
  DeviceModelPause& operator=(const DeviceModelPause&) = delete;

  // The connection of the pause (tests); REQUIRES: End not called yet.
  DeviceModel& device_model() { return *dm_; }

 private:
  DeviceModelPause(DeviceModelEndpoint endpoint, std::unique_ptr<QmpLock> lock, std::unique_ptr<DeviceModel> dm)
      : endpoint_(std::move(endpoint)), lock_(std::move(lock)), dm_(std::move(dm)) {}
  // cont on the pause's connection, or on a new one when that one failed.
  Status ContinueNow(transport::Deadline deadline);

  DeviceModelEndpoint endpoint_;
  std::unique_ptr<QmpLock> lock_;  // outlives dm_: released after the disconnect
  std::unique_ptr<DeviceModel> dm_;
  // Set before `stop` is sent (a stop whose answer is lost may still have
  // stopped QEMU; `cont` of a running QEMU changes nothing).
  bool stopped_ = false;
  bool ended_ = false;
};

}  // namespace romulus::devicemodel

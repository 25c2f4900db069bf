#include "devicemodel/checkpoint_pause.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace romulus::devicemodel {

namespace {
// How long a pause that is being abandoned waits for `cont`.
constexpr std::chrono::milliseconds kAbandonCont{2000};

// A failure that is the device model's silence: no answer by the deadline,
// or no one (any more) at its socket. An answer, even an error or garbage,
// means QEMU's main loop runs.
bool IsSilence(const Status& st) { return st.code() == Code::kTimeout || st.code() == Code::kClosed; }

// A guest's device model as every use of its QMP socket takes it: the lock,
// then a connection. The lock outlives the connection (member order).
struct LockedDeviceModel {
  std::unique_ptr<QmpLock> lock;
  std::unique_ptr<DeviceModel> dm;
};

// *connect_failed (optional): the lock was had (or none is used), the
// connection or QEMU's greeting was not.
Result<LockedDeviceModel> OpenLockedDeviceModel(const DeviceModelEndpoint& endpoint, transport::Deadline deadline,
                                                bool* connect_failed = nullptr) {
  LockedDeviceModel out;
  if (!endpoint.lock_path.empty()) {
    // At most half the time for the wait: what the caller does next keeps the rest.
    const auto now = transport::Clock::now();
    const transport::Deadline lock_deadline = deadline > now ? now + (deadline - now) / 2 : deadline;
    Result<QmpLock> l = QmpLock::Acquire(endpoint.lock_path, lock_deadline);
    if (!l.ok()) return l.status();
    out.lock = std::make_unique<QmpLock>(std::move(*l));
  }
  Result<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(endpoint.qmp_socket, deadline);
  if (!qmp.ok()) {
    if (connect_failed) *connect_failed = true;
    return qmp.status().With("the device model's QMP socket");
  }
  out.dm = std::make_unique<DeviceModel>(std::move(*qmp));
  return out;
}

}  // namespace

DeviceModelEndpoint LibxlDeviceModelEndpoint(uint32_t domid, const std::string& uuid) {
  DeviceModelEndpoint ep;
  ep.qmp_socket = "/var/run/xen/qmp-libxl-" + std::to_string(domid);
  ep.lock_path = LibxlQmpLockPath("/var/lib/xen", domid, uuid);
  return ep;
}

Status WithLockedDeviceModel(const DeviceModelEndpoint& endpoint, transport::Deadline deadline,
                             const std::function<Status(DeviceModel&)>& op) {
  Result<LockedDeviceModel> opened = OpenLockedDeviceModel(endpoint, deadline);
  if (!opened.ok()) return opened.status();
  return op(*opened->dm);
}

Result<std::unique_ptr<DeviceModelPause>> DeviceModelPause::Begin(const DeviceModelEndpoint& endpoint,
                                                                  DeviceStateFile* file,
                                                                  transport::Deadline deadline,
                                                                  PauseFailure* failure) {
  PauseFailure ignored;
  if (failure == nullptr) failure = &ignored;
  *failure = PauseFailure{};
  bool connect_failed = false;
  Result<LockedDeviceModel> opened = OpenLockedDeviceModel(endpoint, deadline, &connect_failed);
  if (!opened.ok()) {
    failure->unresponsive = connect_failed && IsSilence(opened.status());
    return opened.status();
  }
  std::unique_ptr<DeviceModelPause> p(new DeviceModelPause(endpoint, std::move(opened->lock), std::move(opened->dm)));
  // From here on a failed step continues the device model before returning.
  p->stopped_ = true;
  auto abandon = [&](Status why) -> Status {
    Status cont = p->End(transport::DeadlineIn(kAbandonCont));
    if (cont.ok()) return why;
    failure->left_stopped = true;
    // Silent for the step and for the cont: whatever QEMU is doing (a drain
    // that waits for a hung disk, a crash), it is not running the guest's
    // devices, and nothing says it will again.
    failure->unresponsive = IsSilence(why) && IsSilence(cont);
    return why.With("the device model may stay stopped (continuing it failed too: " + cont.message() + ")");
  };
  Status st = p->dm_->Stop(deadline);
  if (!st.ok()) return abandon(st.With("stopping the device model"));
  st = file->Reset();
  if (st.ok()) st = p->dm_->SaveDevicesStateToFd(file->write_fd(), deadline);
  if (!st.ok()) return abandon(st.With("saving the device model's state"));
  return p;
}

Status DeviceModelPause::ContinueNow(transport::Deadline deadline) {
  if (dm_ && !dm_->qmp().broken()) {
    Status st = dm_->Continue(deadline);
    // QEMU answered (an error of its own, or ok): another connection would
    // get the same answer.
    if (st.ok() || !dm_->qmp().broken()) return st;
  }
  // The pause's connection failed (a timeout, EOF): a new one, still under
  // the lock, only for the cont.
  dm_.reset();
  Result<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(endpoint_.qmp_socket, deadline);
  if (!qmp.ok()) return qmp.status().With("reconnecting to continue the device model");
  dm_ = std::make_unique<DeviceModel>(std::move(*qmp));
  return dm_->Continue(deadline);
}

Status DeviceModelPause::End(transport::Deadline deadline) {
  if (ended_) return Status::Internal("DeviceModelPause::End called twice");
  ended_ = true;
  Status st = stopped_ ? ContinueNow(deadline) : Status::Ok();
  if (st.ok()) stopped_ = false;
  dm_.reset();
  lock_.reset();
  return st.ok() ? st : st.With("continuing the device model");
}

DeviceModelPause::~DeviceModelPause() {
  if (stopped_ && !ended_) {
    Status st = ContinueNow(transport::DeadlineIn(kAbandonCont));
    if (!st.ok()) spdlog::error("the device model stays stopped after a failed checkpoint: {}", st.ToString());
  }
}

}  // namespace romulus::devicemodel

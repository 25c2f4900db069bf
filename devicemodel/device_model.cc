#include "devicemodel/device_model.h"

namespace romulus::devicemodel {

using nlohmann::json;

Status DeviceModel::Run(const std::string& command, const json& arguments, transport::Deadline deadline) {
  Result<json> r = qmp_->Execute(command, arguments, deadline);
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::string> DeviceModel::RunState(transport::Deadline deadline) {
  Result<json> r = qmp_->Execute("query-status", nullptr, deadline);
  if (!r.ok()) return r.status();
  auto it = r->is_object() ? r->find("status") : r->end();
  if (!r->is_object() || it == r->end() || !it->is_string()) {
    return Status::Corruption(qmp_->name() + ": query-status answered without a status: " + r->dump().substr(0, 200));
  }
  return it->get<std::string>();
}

Status DeviceModel::Stop(transport::Deadline deadline) { return Run("stop", nullptr, deadline); }

Status DeviceModel::Continue(transport::Deadline deadline) { return Run("cont", nullptr, deadline); }

Status DeviceModel::SaveDevicesState(const std::string& path, transport::Deadline deadline) {
  return Run("xen-save-devices-state", {{"filename", path}, {"live", false}}, deadline);
}

Status DeviceModel::LoadDevicesState(const std::string& path, transport::Deadline deadline) {
  return Run("xen-load-devices-state", {{"filename", path}}, deadline);
}

Status DeviceModel::SetGlobalDirtyLog(bool enable, transport::Deadline deadline) {
  return Run("xen-set-global-dirty-log", {{"enable", enable}}, deadline);
}

}  // namespace romulus::devicemodel

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

Result<DeviceModel::VncServer> DeviceModel::QueryVnc(transport::Deadline deadline) {
  Result<json> r = qmp_->Execute("query-vnc", nullptr, deadline);
  if (!r.ok()) return r.status();
  if (!r->is_object() || !r->contains("enabled") || !(*r)["enabled"].is_boolean()) {
    return Status::Corruption(qmp_->name() + ": query-vnc answered " + r->dump().substr(0, 200));
  }
  if (!(*r)["enabled"].get<bool>()) return Status::Unsupported(qmp_->name() + " has no VNC server");
  VncServer v;
  const json& host = (*r)["host"];
  const json& service = (*r)["service"];
  if (!host.is_string() || !service.is_string()) {
    return Status::Corruption(qmp_->name() + ": query-vnc without host and service: " + r->dump().substr(0, 200));
  }
  v.host = host.get<std::string>();
  const std::string port = service.get<std::string>();
  // Both go into xenstore: bounded, printable, a port in range.
  const bool plain_host = !v.host.empty() && v.host.size() <= 64 &&
                          v.host.find_first_not_of("0123456789abcdefABCDEF.:") == std::string::npos;
  if (!plain_host || port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return Status::Corruption(qmp_->name() + ": query-vnc names host " + v.host.substr(0, 64) + " port " +
                              port.substr(0, 16));
  }
  v.port = unsigned(std::stoul(port));
  return v;
}

Status DeviceModel::Stop(transport::Deadline deadline) { return Run("stop", nullptr, deadline); }

Status DeviceModel::Continue(transport::Deadline deadline) { return Run("cont", nullptr, deadline); }

Status DeviceModel::SaveDevicesState(const std::string& path, transport::Deadline deadline) {
  return Run("xen-save-devices-state", {{"filename", path}, {"live", false}}, deadline);
}

Status DeviceModel::SaveDevicesStateToFd(int fd, transport::Deadline deadline) {
  Result<json> added = qmp_->ExecuteWithFd("add-fd", {{"opaque", "romulus device state"}}, fd, deadline);
  if (!added.ok()) return added.status();
  auto id = added->is_object() ? added->find("fdset-id") : added->end();
  if (!added->is_object() || id == added->end() || !id->is_number_integer() || id->get<int64_t>() < 0) {
    return Status::Corruption(qmp_->name() + ": add-fd answered without an fd set: " + added->dump().substr(0, 200));
  }
  const int64_t set = id->get<int64_t>();
  Status saved =
      Run("xen-save-devices-state", {{"filename", "/dev/fdset/" + std::to_string(set)}, {"live", false}}, deadline);
  Status removed = Run("remove-fd", {{"fdset-id", set}}, deadline);
  if (!saved.ok()) return saved;
  return removed;
}

Status DeviceModel::LoadDevicesState(const std::string& path, transport::Deadline deadline) {
  return Run("xen-load-devices-state", {{"filename", path}}, deadline);
}

Status DeviceModel::SetGlobalDirtyLog(bool enable, transport::Deadline deadline) {
  return Run("xen-set-global-dirty-log", {{"enable", enable}}, deadline);
}

}  // namespace romulus::devicemodel

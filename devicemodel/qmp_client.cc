#include "devicemodel/qmp_client.h"

#include <unistd.h>

#include <utility>

#include "disk/export_socket.h"
#include "transport/fd_stream.h"

namespace romulus::devicemodel {

using nlohmann::json;

namespace {

// A member's string value, or "?" when absent or not a string: nothing a
// peer sends may throw (nlohmann's value() does on a type mismatch).
std::string StringField(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "?";
}

}  // namespace

QmpClient::QmpClient(std::unique_ptr<transport::Stream> stream, std::string name)
    : stream_(std::move(stream)), name_(std::move(name)) {}

QmpClient::~QmpClient() {
  if (stream_) stream_->Close();
}

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path, transport::Deadline deadline) {
  const std::string what = "QMP socket " + socket_path;
  Result<int> fd = disk::ConnectUnix(socket_path, what);
  if (!fd.ok()) return fd.status();
  auto stream = transport::OpenFdStream(*fd, *fd, what, /*own_fds=*/true);
  if (!stream.ok()) {
    ::close(*fd);
    return stream.status();
  }
  return Open(std::move(*stream), what, deadline);
}

Result<std::unique_ptr<QmpClient>> QmpClient::Open(std::unique_ptr<transport::Stream> stream, std::string name,
                                                   transport::Deadline deadline) {
  std::unique_ptr<QmpClient> c(new QmpClient(std::move(stream), std::move(name)));
  Result<json> greeting = c->ReadMessage(deadline);
  if (!greeting.ok()) return greeting.status().With("reading QEMU's greeting on " + c->name_);
  const json* qmp = greeting->contains("QMP") ? &(*greeting)["QMP"] : nullptr;
  if (qmp == nullptr || !qmp->is_object()) {
    return Status::Corruption(c->name_ + ": the peer's first message is not a QMP greeting: " +
                              greeting->dump().substr(0, 200));
  }
  auto v = qmp->find("version");
  if (v != qmp->end() && v->is_object()) {
    auto q = v->find("qemu");
    if (q != v->end() && q->is_object()) {
      auto part = [&](const char* k) {
        auto it = q->find(k);
        return it != q->end() && it->is_number_integer() ? std::to_string(it->get<int64_t>()) : std::string("?");
      };
      c->version_ = part("major") + "." + part("minor") + "." + part("micro");
    }
  }
  Result<json> caps = c->Execute("qmp_capabilities", nullptr, deadline);
  if (!caps.ok()) return caps.status().With("negotiating QMP capabilities on " + c->name_);
  return c;
}

Result<json> QmpClient::ReadMessage(transport::Deadline deadline) {
  while (true) {
    const size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      json m = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (m.is_discarded() || !m.is_object()) {
        broken_ = true;
        return Status::Corruption(name_ + ": not a QMP message: " + line.substr(0, 200));
      }
      return m;
    }
    if (buf_.size() > kMaxQmpMessage) {
      broken_ = true;
      return Status::Corruption(name_ + ": a QMP message longer than " + std::to_string(kMaxQmpMessage) + " bytes");
    }
    char chunk[4096];
    Result<size_t> n = stream_->ReadSome({reinterpret_cast<uint8_t*>(chunk), sizeof chunk}, deadline);
    if (!n.ok()) {
      if (n.status().code() != Code::kTimeout) broken_ = true;
      if (n.status().code() == Code::kClosed) {
        return Status::Closed(name_ + ": QEMU closed the connection (did the device model exit?)");
      }
      return n.status().With(name_);
    }
    buf_.append(chunk, *n);
  }
}

Result<json> QmpClient::Execute(const std::string& command, const json& arguments, transport::Deadline deadline) {
  if (broken_) return Status::Closed(name_ + ": the connection failed earlier; reconnect");
  const uint64_t id = next_id_++;
  json req = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  const std::string line = req.dump() + "\n";
  Status w = stream_->WriteAll({reinterpret_cast<const uint8_t*>(line.data()), line.size()}, deadline);
  if (!w.ok()) {
    broken_ = true;
    return w.With(name_ + ": sending " + command);
  }
  while (true) {
    Result<json> m = ReadMessage(deadline);
    if (!m.ok()) {
      // A reply may still come after a timeout; it could not be told from
      // the next command's, so the connection is done with.
      broken_ = true;
      return m.status().With("waiting for QEMU's answer to " + command);
    }
    if (m->contains("event")) {
      if (events_.size() == kMaxQmpEvents) events_.pop_front();
      events_.push_back(std::move(*m));
      continue;
    }
    if (!m->contains("id") || (*m)["id"] != id) {
      broken_ = true;
      return Status::Corruption(name_ + ": an answer to another command than " + command + ": " +
                                m->dump().substr(0, 200));
    }
    if (m->contains("return")) return (*m)["return"];
    if (m->contains("error") && (*m)["error"].is_object()) {
      const json& e = (*m)["error"];
      const std::string cls = StringField(e, "class");
      const std::string desc = StringField(e, "desc");
      const std::string text = name_ + ": " + command + ": " + cls + ": " + desc;
      if (cls == "CommandNotFound") return Status::Unsupported(text);
      return Status::InvalidArgument(text);
    }
    broken_ = true;
    return Status::Corruption(name_ + ": an answer with neither return nor error: " + m->dump().substr(0, 200));
  }
}

std::vector<json> QmpClient::TakeEvents() {
  std::vector<json> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

}  // namespace romulus::devicemodel

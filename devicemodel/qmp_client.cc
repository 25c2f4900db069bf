#include "devicemodel/qmp_client.h"

#include <unistd.h>

#include <algorithm>

#include <utility>

#include "disk/export_socket.h"
#include "transport/fd_passing.h"
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

// Deepest nesting of arrays and objects in `line` (strings skipped), so a
// hostile line is refused before a parser, copy or dump could recurse on
// it; stops counting past `limit`.
size_t NestingDepth(const std::string& line, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : line) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// What a message said, for an error: its first bytes as received (never a
// re-serialisation of what the peer sent).
std::string Excerpt(const std::string& line) { return line.substr(0, 200); }

}  // namespace

QmpClient::QmpClient(std::unique_ptr<transport::Stream> stream, std::string name, int socket_fd)
    : stream_(std::move(stream)), name_(std::move(name)), socket_fd_(socket_fd) {}

QmpClient::~QmpClient() {
  if (stream_) stream_->Close();
}

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path, transport::Deadline deadline) {
  const std::string what = "QMP socket " + socket_path;
  Result<int> fd = disk::ConnectUnix(socket_path, "QMP socket", deadline);
  if (!fd.ok()) return fd.status();
  auto stream = transport::OpenFdStream(*fd, *fd, what, /*own_fds=*/true);
  if (!stream.ok()) {
    ::close(*fd);
    return stream.status();
  }
  return Open(std::move(*stream), what, deadline, *fd);
}

Result<std::unique_ptr<QmpClient>> QmpClient::Open(std::unique_ptr<transport::Stream> stream, std::string name,
                                                   transport::Deadline deadline, int socket_fd) {
  std::unique_ptr<QmpClient> c(new QmpClient(std::move(stream), std::move(name), socket_fd));
  std::string raw;
  Result<json> greeting = c->ReadMessage(deadline, &raw);
  if (!greeting.ok()) return greeting.status().With("reading QEMU's greeting on " + c->name_);
  const json* qmp = greeting->contains("QMP") ? &(*greeting)["QMP"] : nullptr;
  if (qmp == nullptr || !qmp->is_object()) {
    return Status::Corruption(c->name_ + ": the peer's first message is not a QMP greeting: " +
                              Excerpt(raw));
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

Result<json> QmpClient::ReadMessage(transport::Deadline deadline, std::string* raw) {
  while (true) {
    const size_t nl = buf_.find('\n', scanned_);
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      scanned_ = 0;
      if (line.size() > kMaxQmpMessage) {
        broken_ = true;
        return Status::Corruption(name_ + ": a QMP message longer than " + std::to_string(kMaxQmpMessage) + " bytes");
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) {
        if (NestingDepth(line, kMaxQmpDepth) > kMaxQmpDepth) {
          broken_ = true;
          return Status::Corruption(name_ + ": a QMP message nested deeper than " + std::to_string(kMaxQmpDepth) +
                                    " levels: " + Excerpt(line));
        }
        json m = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (m.is_discarded() || !m.is_object()) {
          broken_ = true;
          return Status::Corruption(name_ + ": not a QMP message: " + Excerpt(line));
        }
        if (raw != nullptr) *raw = std::move(line);
        return m;
      }
    } else {
      scanned_ = buf_.size();
      if (buf_.size() > kMaxQmpMessage) {
        broken_ = true;
        return Status::Corruption(name_ + ": a QMP message longer than " + std::to_string(kMaxQmpMessage) + " bytes");
      }
    }
    // Checked on every turn: a peer that never stops sending (events, blank
    // lines) must not hold the caller past its deadline.
    if (transport::Clock::now() >= deadline) {
      return Status::Timeout(name_ + ": no complete answer by the deadline");
    }
    if (nl != std::string::npos) continue;  // a blank line: look at what follows
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
  return Exchange(command, arguments, -1, deadline);
}

Result<json> QmpClient::ExecuteWithFd(const std::string& command, const json& arguments, int pass_fd,
                                      transport::Deadline deadline) {
  if (socket_fd_ < 0) {
    return Status::InvalidArgument(name_ + ": " + command + " passes a descriptor, which needs a Unix socket");
  }
  if (pass_fd < 0) return Status::InvalidArgument(name_ + ": " + command + ": no descriptor to pass");
  return Exchange(command, arguments, pass_fd, deadline);
}

Result<json> QmpClient::Exchange(const std::string& command, const json& arguments, int pass_fd,
                                 transport::Deadline deadline) {
  if (broken_) return Status::Closed(name_ + ": the connection failed earlier; reconnect");
  const uint64_t id = next_id_;
  json req = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  std::string line;
  try {
    line = req.dump() + "\n";
  } catch (const json::exception&) {  // a string that is not UTF-8 (a file name): nothing sent
    return Status::InvalidArgument(name_ + ": " + command + ": an argument is not valid UTF-8");
  }
  ++next_id_;
  const std::span<const uint8_t> bytes{reinterpret_cast<const uint8_t*>(line.data()), line.size()};
  Status w = pass_fd >= 0 ? transport::SendWithFd(socket_fd_, bytes, pass_fd, deadline, name_)
                          : stream_->WriteAll(bytes, deadline);
  if (!w.ok()) {
    broken_ = true;
    return w.With(name_ + ": sending " + command);
  }
  std::string raw;
  while (true) {
    Result<json> m = ReadMessage(deadline, &raw);
    if (!m.ok()) {
      // A reply may still come after a timeout; it could not be told from
      // the next command's, so the connection is done with.
      broken_ = true;
      return m.status().With("waiting for QEMU's answer to " + command);
    }
    if (m->contains("event")) {
      if (raw.size() > kMaxQmpEventBytes) {
        ++dropped_events_;
        continue;
      }
      if (events_.size() == kMaxQmpEvents) {
        events_.pop_front();
        ++dropped_events_;
      }
      events_.push_back(std::move(*m));
      continue;
    }
    auto idv = m->find("id");
    if (idv == m->end() || *idv != id) {
      broken_ = true;
      return Status::Corruption(name_ + ": an answer to another command than " + command + ": " + Excerpt(raw));
    }
    auto ret = m->find("return");
    if (ret != m->end()) return std::move(*ret);
    auto err = m->find("error");
    if (err != m->end() && err->is_object()) {
      const std::string cls = StringField(*err, "class");
      const std::string desc = StringField(*err, "desc");
      const std::string text = name_ + ": " + command + ": " + cls + ": " + desc;
      if (cls == "CommandNotFound") return Status::Unsupported(text);
      return Status::InvalidArgument(text);
    }
    broken_ = true;
    return Status::Corruption(name_ + ": an answer with neither return nor error: " + Excerpt(raw));
  }
}

std::vector<json> QmpClient::TakeEvents() {
  std::vector<json> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

}  // namespace romulus::devicemodel

#include "replicator/control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include "common/thread_name.h"
#include "common/units.h"
#include "control/replies.h"
#include "events/event_log.h"
#include "replicator/primary_controller.h"

namespace romulus::replicator {

using std::chrono::milliseconds;

ControlHandler ForRole(control::Role role, ControlHandler dispatch) {
  return [role, dispatch = std::move(dispatch)](const control::Request& r) -> ControlReply {
    if (!control::Supports(role, r)) return control::Refusal(role, r);
    if (std::holds_alternative<control::HelpReq>(r)) return control::HelpReply(role);
    return dispatch(r);
  };
}

ControlHandler WithEventWaits(ControlHandler inner, const events::EventLog* log, const std::atomic<bool>* cancel) {
  return [inner = std::move(inner), log, cancel](const control::Request& r) -> ControlReply {
    const auto* w = std::get_if<control::WaitReq>(&r);
    if (w == nullptr) return inner(r);
    if (log == nullptr) return ControlReply::Fail("wait: this process keeps no events");
    auto e = log->WaitFor(w->event, w->after, w->within, cancel);
    if (!e) {
      return ControlReply::Fail("wait: no '" + w->event + "' event after seq " + std::to_string(w->after) +
                                " within " + FormatDuration(std::chrono::duration_cast<std::chrono::microseconds>(w->within)));
    }
    return ControlReply::Ok(control::Json{{"event", *e}});
  };
}

ControlReply HandleWords(const ControlHandler& handler, const std::vector<std::string>& words) {
  auto req = control::ParseRequest(words);
  if (!req.ok()) return ControlReply::Usage(req.status().message());
  try {
    return handler(*req);
  } catch (const std::exception& e) {
    // A handler bug must not take the replication down with it.
    return ControlReply::Fail(std::string("internal error: ") + e.what());
  }
}

namespace {

// Fills a sockaddr_un; false if the path does not fit.
bool MakeAddr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr->sun_path) return false;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

void SetTimeouts(int fd, milliseconds t) {
  timeval tv{};
  tv.tv_sec = t.count() / 1000;
  tv.tv_usec = (t.count() % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

struct ControlServer::Impl {
  int listen_fd = -1;
  int wake[2] = {-1, -1};  // pipe: the destructor wakes the poll
  std::thread thread;
  // One thread per client, at most kMaxClients at once, so that a request
  // that waits (digest, failover, switchover) never blocks `status`.
  static constexpr size_t kMaxClients = 8;
  std::mutex mu;
  struct Client {
    std::thread thread;
    bool done = false;  // GUARDED_BY(mu)
  };
  std::list<std::shared_ptr<Client>> clients;  // GUARDED_BY(mu)
  void Reap() {  // REQUIRES(mu)
    for (auto it = clients.begin(); it != clients.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = clients.erase(it);
      } else {
        ++it;
      }
    }
  }
};

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const std::string& path, ControlHandler handler) {
  sockaddr_un addr;
  if (!MakeAddr(path, &addr)) {
    return Status::InvalidArgument("control socket path '" + path + "' is empty or longer than " +
                                   std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  struct stat sb;
  if (lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      return Status::InvalidArgument("control socket path " + path + " exists and is not a socket");
    }
    // A socket file: live (someone accepts) or stale (left by a dead process).
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      close(probe);
      if (live) return Status::InvalidArgument("control socket " + path + " is in use by a running romulus");
    }
    if (unlink(path.c_str()) != 0) return Status::FromErrno("removing stale control socket " + path, errno);
    spdlog::info("removed stale control socket {}", path);
  }
  std::unique_ptr<ControlServer> s(new ControlServer());
  s->path_ = path;
  s->handler_ = std::move(handler);
  s->impl_ = std::make_unique<Impl>();
  Impl& im = *s->impl_;
  im.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (im.listen_fd < 0) return Status::FromErrno("control socket", errno);
  // 0600 from the start: no window in which others could connect.
  mode_t old = umask(0177);
  int rc = bind(im.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  umask(old);
  if (rc != 0) {
    close(im.listen_fd);
    im.listen_fd = -1;
    return Status::FromErrno("binding control socket " + path, err);
  }
  chmod(path.c_str(), 0600);
  if (listen(im.listen_fd, 8) != 0 || pipe2(im.wake, O_CLOEXEC) != 0) {
    err = errno;
    close(im.listen_fd);
    im.listen_fd = -1;
    unlink(path.c_str());
    return Status::FromErrno("listening on control socket " + path, err);
  }
  ControlServer* raw = s.get();
  im.thread = std::thread([raw] {
    NameThisThread("ctl-accept");
    raw->Loop();
  });
  spdlog::info("control socket {} (romulus ctl --socket {} status)", path, path);
  return s;
}

ControlServer::~ControlServer() {
  if (!impl_) return;
  if (impl_->wake[1] >= 0) (void)!write(impl_->wake[1], "x", 1);
  if (impl_->thread.joinable()) impl_->thread.join();
  // Requests in progress finish (each is bounded by its own timeout).
  std::list<std::shared_ptr<Impl::Client>> clients;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    clients.swap(impl_->clients);
  }
  for (auto& c : clients) c->thread.join();
  if (impl_->listen_fd >= 0) {
    close(impl_->listen_fd);
    unlink(path_.c_str());
  }
  for (int fd : impl_->wake) {
    if (fd >= 0) close(fd);
  }
}

std::string ControlServer::HandleLine(std::string_view line) const {
  auto words = control::SplitRequestLine(line);
  if (!words.ok()) return RenderControlReply(ControlReply::Usage(words.status().message()));
  return RenderControlReply(HandleWords(handler_, *words));
}

void ControlServer::Loop() {
  Impl& im = *impl_;
  while (true) {
    pollfd fds[2] = {{im.listen_fd, POLLIN, 0}, {im.wake[0], POLLIN, 0}};
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = accept4(im.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(im.mu);
    im.Reap();
    if (im.clients.size() >= Impl::kMaxClients) {
      SetTimeouts(fd, milliseconds(500));
      (void)WriteAll(fd, RenderControlReply(ControlReply::Fail("busy: " + std::to_string(Impl::kMaxClients) +
                                                               " control requests in progress; try again")) +
                             "\n");
      close(fd);
      continue;
    }
    auto client = std::make_shared<Impl::Client>();
    im.clients.push_back(client);
    client->thread = std::thread([this, fd, client] {
      NameThisThread("ctl-client");
      Serve(fd);
      std::lock_guard<std::mutex> done_lock(impl_->mu);
      client->done = true;
    });
  }
}

void ControlServer::Serve(int fd) const {
  // One bounded line; a client that says nothing for 2 s is dropped.
  SetTimeouts(fd, milliseconds(2000));
  std::string req;
  char buf[256];
  bool too_long = false, complete = false;
  while (!complete) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    req.append(buf, static_cast<size_t>(r));
    complete = req.find('\n') != std::string::npos;
    if (req.size() >= kMaxControlRequest && !complete) {
      too_long = true;
      break;
    }
  }
  std::string reply;
  if (too_long) {
    reply = RenderControlReply(ControlReply::Usage("request longer than " +
                                                   std::to_string(kMaxControlRequest - 1) + " bytes"));
  } else if (!req.empty()) {
    reply = HandleLine(std::string_view(req).substr(0, req.find('\n')));
  }
  if (!reply.empty()) {
    SetTimeouts(fd, milliseconds(2000));
    (void)WriteAll(fd, reply + "\n");
  }
  close(fd);
}

Result<std::string> ControlCall(const std::string& path, const std::string& request, milliseconds timeout) {
  sockaddr_un addr;
  if (!MakeAddr(path, &addr)) return Status::InvalidArgument("control socket path '" + path + "' is invalid");
  if (request.size() + 1 > kMaxControlRequest) return Status::InvalidArgument("request too long");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    close(fd);
    if (err == ENOENT) return Status::Closed("no such socket " + path + " (is romulus running with --control-socket?)");
    if (err == ECONNREFUSED) return Status::Closed("romulus is not running (stale control socket " + path + ")");
    return Status::FromErrno("connecting to " + path, err);
  }
  SetTimeouts(fd, timeout);
  if (!WriteAll(fd, request + "\n")) {
    int err = errno;
    close(fd);
    return Status::FromErrno("sending to " + path, err);
  }
  std::string reply;
  char buf[4096];
  while (reply.size() < kMaxControlReply) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      close(fd);
      if (err == EAGAIN || err == EWOULDBLOCK) {
        return Status::Timeout("no answer from " + path + " within " +
                               FormatDuration(std::chrono::duration_cast<std::chrono::microseconds>(timeout)));
      }
      return Status::FromErrno("reading from " + path, err);
    }
    if (r == 0) break;
    reply.append(buf, static_cast<size_t>(r));
    if (reply.find('\n') != std::string::npos) break;
  }
  close(fd);
  auto nl = reply.find('\n');
  if (nl == std::string::npos) return Status::Corruption("incomplete answer from " + path);
  return reply.substr(0, nl);
}

std::string DefaultControlSocket(const std::string& guest_identity) {
  const char* dir = "/run/romulus";
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(dir, W_OK) != 0) return "";
  std::string name;
  for (char c : guest_identity) {
    bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                c == '_' || c == '.';
    name.push_back(keep ? c : '_');
  }
  if (name.empty() || name[0] == '.') name = "guest" + name;
  if (name.size() > 64) name.resize(64);
  return std::string(dir) + "/" + name + ".sock";
}

namespace {

// `set cache-size` after the controller tried it: `applied_live` is its
// outcome (true: next epoch on both ends, false: next session) or why not —
// InvalidArgument (above the backup's limit) is the operator's mistake
// (usage), anything else a failure that changed nothing.
ControlReply CacheSizeReply(uint64_t bytes, const Result<bool>& applied_live) {
  if (!applied_live.ok()) {
    if (applied_live.status().code() == Code::kInvalidArgument) {
      return ControlReply::Usage("set cache-size: " + applied_live.status().message());
    }
    return ControlReply::Fail("set cache-size: " + applied_live.status().message() + "; nothing changed");
  }
  if (*applied_live) {
    spdlog::info("control: cache size {} from the next epoch, on both ends", FormatSize(bytes));
    return ControlReply::Ok(control::CacheSizeLiveJson(bytes));
  }
  spdlog::info("control: cache size {} from the next session (resync)", FormatSize(bytes));
  return ControlReply::Ok(control::CacheSizeNextSessionJson(bytes));
}

// Every request here is one the role has (ForRole refused the others).
struct PrimaryDispatch {
  PrimaryController* primary;
  const std::function<void()>& on_switchover;

  ControlReply operator()(const control::StatusReq&) const {
    return ControlReply::Ok(control::ToJson(primary->StatusView()));
  }
  ControlReply operator()(const control::StatsReq&) const {
    auto j = control::StatsJson(primary->StatsJson());
    if (!j.ok()) return ControlReply::Fail("stats: " + j.status().message());
    return ControlReply::Ok(std::move(*j));
  }
  ControlReply operator()(const control::SetIntervalReq& r) const {
    primary->SetInterval(r.interval);
    spdlog::info("control: checkpoint interval set to {} from the next epoch", FormatDuration(r.interval));
    return ControlReply::Ok(control::IntervalSetJson(r.interval));
  }
  ControlReply operator()(const control::SetCacheSizeReq& r) const {
    return CacheSizeReply(r.bytes, primary->SetCacheSize(r.bytes));
  }
  ControlReply operator()(const control::PauseReq&) const { return Pause(true); }
  ControlReply operator()(const control::ResumeReq&) const { return Pause(false); }
  ControlReply operator()(const control::DigestReq& r) const {
    auto d = primary->RegionDigestsAt(r.epoch, r.regions, milliseconds(20000));
    if (!d.ok()) return ControlReply::Fail(d.status().message());
    return ControlReply::Ok(control::ToJson(control::DigestAnswer{d->epoch, d->digest, d->guest_pages, d->regions}));
  }
  ControlReply operator()(const control::SwitchoverReq&) const {
    auto e = primary->Handover(milliseconds(60000));
    if (!e.ok()) return ControlReply::Fail("switchover: " + e.status().message());
    if (on_switchover) on_switchover();
    return ControlReply::Ok(control::SwitchoverJson(*e, "paused here; the backup activates from final_epoch"));
  }
  // Not commands of a primary: ForRole answers them first.
  template <typename Other>
  ControlReply operator()(const Other& r) const {
    return control::Refusal(control::Role::kPrimary, control::Request(r));
  }

  ControlReply Pause(bool paused) const {
    primary->SetPaused(paused);
    spdlog::warn("control: {} requested", paused ? "pause" : "resume");
    return ControlReply::Ok(control::PausedJson(paused));
  }
};

}  // namespace

ControlHandler PrimaryControlHandler(PrimaryController* primary, std::function<void()> on_switchover) {
  return ForRole(control::Role::kPrimary,
                 [primary, on_switchover = std::move(on_switchover)](const control::Request& r) -> ControlReply {
                   return std::visit(PrimaryDispatch{primary, on_switchover}, r);
                 });
}

}  // namespace romulus::replicator

#include "events/event_log.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace romulus::events {

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

EventLog::EventLog(std::string role) : role_(std::move(role)) {}

EventLog::~EventLog() {
  if (fd_ >= 0) ::close(fd_);
}

bool EventLog::Open(const std::string& path) {
  // O_APPEND: each line is one write() at the end of the file, so a restarted
  // process (or a reader tailing the file) never loses what was logged before.
  // Read access only to look at the last byte (below); write-only will do.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EACCES) fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  path_ = path;
  // A predecessor killed mid-line left a torn last line: our first line must
  // not be glued to it (readers skip the torn one, not ours). When the last
  // byte cannot be read, assume torn: an empty line costs nothing.
  struct stat st {};
  char last = '\n';
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && ::pread(fd, &last, 1, st.st_size - 1) != 1) {
    last = 0;
  }
  torn_ = last != '\n';
  return true;
}

uint64_t EventLog::Emit(std::string_view type, const Json& fields) {
  Json e;
  e["event"] = std::string(type);
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) e[it.key()] = it.value();
  }
  e["time_ms"] = NowMs();
  std::lock_guard<std::mutex> lock(mu_);
  e["seq"] = ++seq_;
  e["role"] = role_;
  // Invalid UTF-8 (a peer's text) is replaced, never a throw.
  WriteLine(e.dump(-1, ' ', false, Json::error_handler_t::replace));
  kept_.push_back(std::move(e));
  if (kept_.size() > kKeep) kept_.pop_front();
  cv_.notify_all();
  return seq_;
}

std::optional<Json> EventLog::WaitFor(std::string_view type, uint64_t after, std::chrono::milliseconds timeout,
                                      const std::atomic<bool>* cancel) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    for (const Json& e : kept_) {
      if (e["seq"].get<uint64_t>() > after && (type.empty() || e["event"].get<std::string>() == type)) return e;
    }
    if (cancel && cancel->load()) return std::nullopt;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    // Wake up now and then to look at `cancel`.
    cv_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
  }
}

uint64_t EventLog::last_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seq_;
}

bool EventLog::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !failing_;
}

uint64_t EventLog::failed_writes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_writes_;
}

bool EventLog::WriteAll(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      if (done > 0) torn_ = true;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

bool EventLog::WriteLine(const std::string& line) {
  if (fd_ < 0) return true;
  if (WriteAll((torn_ ? "\n" : "") + line + "\n")) {
    torn_ = false;
    if (failing_) {
      spdlog::warn("--events-json {}: writing works again ({} event(s) lost)", path_, failed_writes_);
      failing_ = false;
    }
    return true;
  }
  const int err = errno;
  ++failed_writes_;
  if (!failing_) {
    // Once per run of failures: a full disk must not flood the log too.
    spdlog::error("--events-json {}: cannot write an event: {} (carrying on; events are lost until writing works "
                  "again)",
                  path_, std::strerror(err));
    failing_ = true;
  }
  return false;
}

}  // namespace romulus::events

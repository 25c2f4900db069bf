#include "cli/restore_events.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/digest.h"

namespace romulus::cli {

namespace {
std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}
long long NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

EventLog::~EventLog() {
  if (fd_ >= 0) close(fd_);
}

bool EventLog::Open(const std::string& path) {
  // O_APPEND: each line is one write() at the end of the file, so a restarted
  // backup (or a reader tailing the file) never loses what was logged before.
  // Read access only to look at the last byte (below); a write-only file will do.
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EACCES) fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  fd_ = fd;
  path_ = path;
  // A predecessor killed mid-line left a torn last line: our first line must
  // not be glued to it (readers skip the torn one, not ours). When the last
  // byte cannot be read, assume torn: an empty line costs nothing.
  struct stat st {};
  char last = '\n';
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1) {
    last = 0;
  }
  torn_ = last != '\n';
  return true;
}

bool EventLog::WriteAll(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd_, data.data() + done, data.size() - done);
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

bool EventLog::Line(const std::string& json) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return true;
  const bool was_torn = torn_;
  if (WriteAll((was_torn ? "\n" : "") + json + "\n")) {
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
    spdlog::error("--events-json {}: cannot write an event: {} (the backup carries on; events are lost until "
                  "writing works again)",
                  path_, std::strerror(err));
    failing_ = true;
  }
  return false;
}

bool EventLog::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !failing_;
}

uint64_t EventLog::failed_writes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_writes_;
}

bool EventLog::Commit(uint64_t epoch, uint64_t digest) {
  return Line("{\"event\":\"commit\",\"epoch\":" + std::to_string(epoch) + ",\"digest\":\"" + DigestHex(digest) +
              "\",\"time_ms\":" + std::to_string(NowMs()) + "}");
}

bool EventLog::Failover(const std::string& reason, uint64_t epoch, uint64_t digest, bool activated) {
  return Line("{\"event\":\"failover\",\"reason\":\"" + Escape(reason) + "\",\"last_committed_epoch\":" +
              std::to_string(epoch) + ",\"digest\":\"" + DigestHex(digest) + "\",\"activated\":" +
              (activated ? "true" : "false") + ",\"time_ms\":" + std::to_string(NowMs()) + "}");
}

bool EventLog::Stop(uint64_t epoch, uint64_t digest) {
  return Line("{\"event\":\"stop\",\"last_committed_epoch\":" + std::to_string(epoch) + ",\"digest\":\"" +
              DigestHex(digest) + "\",\"time_ms\":" + std::to_string(NowMs()) + "}");
}

}  // namespace romulus::cli
